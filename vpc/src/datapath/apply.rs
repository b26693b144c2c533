//! The kernel side of the VPC datapath: every pass reads the rules, links and IPv4 routes of the
//! namespace, plans the difference against the desired state (`plan`), and sends only that.
//! Nothing is flushed and nothing we do not own is written, so an agent restart re-creates
//! nothing and a removed pod loses exactly its own rules.
//!
//! Reading on every pass (rather than tracking what was written, as the overlay managers do)
//! costs one rule dump and one route dump of a node's few hundred entries, and makes every pass
//! a resync: a rule someone deleted by hand comes back on the next one.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::rule::RuleMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use super::desired::DesiredDatapath;
use super::msg::{parse_link, parse_owned_rule, parse_route, Request};
use super::plan::{plan, Observed};

/// The kernel operations the datapath needs (a fake stands in for unit tests).
#[async_trait]
pub trait DatapathNetlink: Send {
    /// Every policy rule of both families.
    async fn read_rules(&mut self) -> Result<Vec<RuleMessage>, rtnetlink::Error>;
    async fn read_links(&mut self) -> Result<Vec<LinkMessage>, rtnetlink::Error>;
    /// IPv4 routes of every table.
    async fn read_routes(&mut self) -> Result<Vec<RouteMessage>, rtnetlink::Error>;
    async fn send(&mut self, request: &Request) -> Result<(), rtnetlink::Error>;
}

/// [`DatapathNetlink`] over an rtnetlink connection (in the netns its socket was opened in).
#[derive(Debug, Clone)]
pub struct RtDatapathNetlink {
    handle: Handle,
}

impl RtDatapathNetlink {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }
}

#[async_trait]
impl DatapathNetlink for RtDatapathNetlink {
    async fn read_rules(&mut self) -> Result<Vec<RuleMessage>, rtnetlink::Error> {
        let mut out: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await?;
        let v6: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(IpVersion::V6)
            .execute()
            .try_collect()
            .await?;
        out.extend(v6);
        Ok(out)
    }

    async fn read_links(&mut self) -> Result<Vec<LinkMessage>, rtnetlink::Error> {
        self.handle.link().get().execute().try_collect().await
    }

    async fn read_routes(&mut self) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
        // Without NETLINK_GET_STRICT_CHK the kernel ignores the header's table and dumps all.
        let dump = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.handle.route().get(dump).execute().try_collect().await
    }

    async fn send(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        let mut msg = NetlinkMessage::from(request.message.clone());
        msg.header.flags = request.flags;
        let mut answers = self.handle.request(msg)?;
        while let Some(answer) = answers.next().await {
            // An ACK is an error message without a code.
            if let NetlinkPayload::Error(e) = answer.payload {
                if e.code.is_some() {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Every successful write, in `ip` words.
    pub writes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading {what} from the kernel: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    /// The pass went on after each problem; what worked stays done.
    #[error("the VPC datapath is incomplete after {writes} writes: {}", problems.join("; "))]
    Incomplete {
        writes: usize,
        problems: Vec<String>,
    },
}

// errno values the kernel answers a delete of something already gone with.
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

fn already_gone(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if matches!(-m.raw_code(), ENOENT | ESRCH | ENODEV))
}

/// Reads what the kernel has, sends the difference to `desired`, and reports each write. A
/// failed write does not stop the pass; all failures of the pass are returned together.
///
/// A link brought up only then gets its kernel subnet route, so a pass that changed a link
/// reads and plans once more to remove it (the problems reported are those of the last round,
/// which re-plans everything).
pub async fn reconcile(
    nl: &mut dyn DatapathNetlink,
    desired: &DesiredDatapath,
) -> Result<ApplyStats, ApplyError> {
    let mut stats = ApplyStats::default();
    let mut problems = Vec::new();
    for _round in 0..2 {
        let planned = plan(desired, &observe(nl).await?);
        let links_changed = planned
            .requests
            .iter()
            .any(|r| matches!(r.message, RouteNetlinkMessage::SetLink(_)));
        problems = planned.problems;
        for req in planned.requests {
            let is_delete = matches!(
                req.message,
                RouteNetlinkMessage::DelRule(_) | RouteNetlinkMessage::DelRoute(_)
            );
            match nl.send(&req).await {
                Ok(()) => {
                    tracing::debug!(what = %req.what, "VPC datapath write");
                    stats.writes.push(req.what);
                }
                Err(e) if is_delete && already_gone(&e) => {}
                Err(e) => {
                    tracing::warn!(what = %req.what, error = %e, "VPC datapath write failed");
                    problems.push(format!("{}: {e}", req.what));
                }
            }
        }
        if !links_changed {
            break;
        }
    }
    if problems.is_empty() {
        Ok(stats)
    } else {
        Err(ApplyError::Incomplete {
            writes: stats.writes.len(),
            problems,
        })
    }
}

/// One read of everything the plan looks at, narrowed to what we own.
async fn observe(nl: &mut dyn DatapathNetlink) -> Result<Observed, ApplyError> {
    let read = |what| move |source| ApplyError::Read { what, source };
    let rules = nl.read_rules().await.map_err(read("policy rules"))?;
    let links = nl.read_links().await.map_err(read("links"))?;
    let routes = nl.read_routes().await.map_err(read("IPv4 routes"))?;
    Ok(Observed {
        rules: rules.iter().filter_map(parse_owned_rule).collect(),
        links: links
            .iter()
            .filter_map(parse_link)
            .map(|l| (l.name.clone(), l))
            .collect(),
        routes: routes.iter().filter_map(parse_route).collect(),
    })
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
