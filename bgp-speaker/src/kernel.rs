//! Kernel route sync: installs the Loc-RIB's best paths into this node's routing table under
//! protocol [`RTPROT_TRELLIS_BGP`], and never writes a route it did not install.
//!
//! ```text
//!  Loc-RIB best paths ──upsert/remove/set_desired──► KernelSync (desired, installed, dirty)
//!                                                        │ msg (pure): RouteRequest, parse_route
//!                                                        ▼
//!                               dyn RouteTable ── RtNetlinkTable (the only I/O) | fake in tests
//! ```
//!
//! A reconcile of desired against actual, as Calico's route table does it: the first
//! [`KernelSync::apply`], and the first after any failure, dumps the routes with our protocol in
//! our table and adopts them, then only the difference is written. A restarted speaker therefore
//! leaves in place the routes its previous incarnation installed (nothing is flushed; forwarding
//! continues through a graceful restart), and writes nothing at all when its desired set matches.
//!
//! Routes of other protocols are never deleted or replaced:
//! - deletes name prefix, table, protocol and metric, and the kernel matches on all four;
//! - a prefix we do not hold yet is added with `NLM_F_CREATE|NLM_F_EXCL`, not `NLM_F_REPLACE`.
//!   A replace would overwrite whatever route has the same prefix, table, TOS and metric,
//!   whatever its protocol; the exclusive create makes the kernel itself refuse (`EEXIST`) when
//!   such a route exists, atomically, with no window between a check and the write. The refusal
//!   becomes [`KernelError::Conflict`], logged, and the prefix stays uninstalled (retried on
//!   every pass, so it goes in once the other route is gone);
//! - `NLM_F_REPLACE` is used only for a route the last dump showed as ours (should someone
//!   delete our route and put theirs in its exact slot between a dump and our replace, the
//!   replace would overwrite it; [`KernelSync::request_resync`] on a timer keeps that window
//!   short, and a distinct metric makes it unlikely in the first place);
//! - the metric (default [`DEFAULT_METRIC`]) keeps us out of the slots that `ip route add`
//!   (metric 0 for IPv4, 1024 for IPv6) and the agent's own dataplane routes use, so a static
//!   route for the same prefix normally coexists with ours, and the lower metric carries traffic.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;

#[path = "kernel_batch.rs"]
mod batch;
#[path = "kernel_msg.rs"]
mod msg;
#[path = "kernel_netlink.rs"]
mod netlink;
#[path = "kernel_sync.rs"]
mod sync;

pub use batch::BATCH;
pub use msg::{delete_request, parse_route, route_message, write_request, RouteOp, RouteRequest};
pub use netlink::RtNetlinkTable;
pub use sync::{flush_ours, ApplyStats, KernelSync};

/// Our `rtm_protocol`. Trellis' agent programs its dataplane routes (VXLAN, direct) with 80, so
/// the speaker's routes can be told apart from them. `/etc/iproute2/rt_protos` names 186 `bgp`
/// (FRR's zebra installs BGP routes with it, and FRR's `rt_protos.d/frr.conf` takes 186-197),
/// 12 `bird` and 11 `zebra`; 81 is in none of them, so a routing daemon sharing the node never
/// takes our routes for its own, nor we its. `ip route show proto 81` lists ours.
pub const RTPROT_TRELLIS_BGP: u8 = 81;

/// The main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;

/// Default metric of our routes: not 0 (IPv4 `ip route add`), 1024 (IPv6 `ip route add`) nor 10
/// (the agent's direct routes), so routes of other owners for the same prefix coexist with ours.
pub const DEFAULT_METRIC: u32 = 20;

/// errno values (Linux).
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;

/// One next hop: `via GATEWAY [dev IFINDEX] [onlink]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    pub gateway: IpAddr,
    /// Required for an IPv6 link-local gateway and with `onlink`; otherwise the kernel picks the
    /// device from its route to the gateway (and a dumped route then names it: a desired `None`
    /// matches any device).
    pub ifindex: Option<u32>,
    /// The gateway is on the link even without a connected route to it (`RTNH_F_ONLINK`).
    pub onlink: bool,
}

impl NextHop {
    pub fn via(gateway: IpAddr) -> Self {
        Self {
            gateway,
            ifindex: None,
            onlink: false,
        }
    }

    pub fn dev(self, ifindex: u32) -> Self {
        Self {
            ifindex: Some(ifindex),
            ..self
        }
    }

    pub fn onlink(self) -> Self {
        Self {
            onlink: true,
            ..self
        }
    }

    /// Whether a next hop read from the kernel is this one.
    fn satisfied_by(&self, installed: &NextHop) -> bool {
        self.gateway == installed.gateway
            && self.onlink == installed.onlink
            && self.ifindex.is_none_or(|i| installed.ifindex == Some(i))
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "via {}", self.gateway)?;
        if let Some(i) = self.ifindex {
            write!(f, " dev #{i}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// A route to install: one next hop (`RTA_GATEWAY`) or several (one `RTA_MULTIPATH` ECMP route).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelRoute {
    pub prefix: IpNet,
    pub next_hops: Vec<NextHop>,
}

impl KernelRoute {
    /// The route in canonical form: host bits cleared, next hops sorted and deduplicated.
    pub fn new(prefix: IpNet, next_hops: impl IntoIterator<Item = NextHop>) -> Self {
        let mut next_hops: Vec<NextHop> = next_hops.into_iter().collect();
        next_hops.sort();
        next_hops.dedup();
        Self {
            prefix: prefix.trunc(),
            next_hops,
        }
    }

    /// Why the kernel could not take this route, or `Ok`.
    pub fn validate(&self) -> Result<(), KernelError> {
        let invalid = |reason: String| KernelError::InvalidRoute {
            prefix: self.prefix,
            reason,
        };
        if self.next_hops.is_empty() {
            return Err(invalid("no next hop".into()));
        }
        for nh in &self.next_hops {
            if nh.gateway.is_ipv4() != self.prefix.addr().is_ipv4() {
                return Err(invalid(format!(
                    "next hop {nh} is of another address family"
                )));
            }
            if let IpAddr::V6(g) = nh.gateway {
                if g.is_unicast_link_local() && nh.ifindex.is_none() {
                    return Err(invalid(format!(
                        "link-local next hop {nh} needs an interface index"
                    )));
                }
            }
            if nh.onlink && nh.ifindex.is_none() {
                return Err(invalid(format!(
                    "onlink next hop {nh} needs an interface index"
                )));
            }
            if nh.gateway.is_unspecified() || nh.gateway.is_multicast() {
                return Err(invalid(format!("next hop {nh} is not a unicast address")));
            }
        }
        Ok(())
    }

    /// Whether the route read from the kernel is this one.
    fn satisfied_by(&self, installed: &KernelRoute) -> bool {
        self.prefix == installed.prefix
            && self.next_hops.len() == installed.next_hops.len()
            && self
                .next_hops
                .iter()
                .zip(&installed.next_hops)
                .all(|(want, have)| want.satisfied_by(have))
    }

    fn next_hops_text(&self) -> String {
        let hops: Vec<String> = self.next_hops.iter().map(ToString::to_string).collect();
        hops.join(", ")
    }
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.prefix, self.next_hops_text())
    }
}

/// A route of ours as a dump shows it; the metric matters to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    pub route: KernelRoute,
    pub metric: u32,
}

/// Where the routes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSyncConfig {
    /// Routing table id; [`MAIN_TABLE`] by default.
    pub table: u32,
    /// Metric (`RTA_PRIORITY`) of every route; see [`DEFAULT_METRIC`]. Not 0: the kernel turns
    /// IPv6 metric 0 into 1024, so the routes would never match what was asked for.
    pub metric: u32,
}

impl Default for KernelSyncConfig {
    fn default() -> Self {
        Self {
            table: MAIN_TABLE,
            metric: DEFAULT_METRIC,
        }
    }
}

/// A failed netlink exchange: the errno when the kernel answered with one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .errno {
    Some(e) => std::io::Error::from_raw_os_error(*e).to_string(),
    None => .detail.clone(),
})]
pub struct NetlinkFailure {
    /// Positive errno (e.g. 101 for ENETUNREACH).
    pub errno: Option<i32>,
    pub detail: String,
}

impl NetlinkFailure {
    pub fn errno(errno: i32) -> Self {
        Self {
            errno: Some(errno),
            detail: std::io::Error::from_raw_os_error(errno).to_string(),
        }
    }
}

impl From<rtnetlink::Error> for NetlinkFailure {
    fn from(e: rtnetlink::Error) -> Self {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => Some(-m.raw_code()),
            _ => None,
        };
        Self {
            errno,
            detail: e.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("invalid kernel sync config: {0}")]
    InvalidConfig(String),
    #[error("route {prefix} cannot be installed: {reason}")]
    InvalidRoute { prefix: IpNet, reason: String },
    #[error("{} invalid routes: {}", .0.len(), join(.0))]
    InvalidRoutes(Vec<KernelError>),
    #[error("cannot open a netlink route socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("dump of the routes with protocol {RTPROT_TRELLIS_BGP} in table {table}: {source}")]
    Dump {
        table: u32,
        #[source]
        source: NetlinkFailure,
    },
    /// A write the kernel refused; `what` names prefix, next hops, metric and table.
    #[error("{what}: {source}")]
    Write {
        prefix: IpNet,
        what: String,
        #[source]
        source: NetlinkFailure,
    },
    #[error(
        "{prefix} not installed: table {table} already has a route for it with metric {metric} \
         of another protocol, which is left alone"
    )]
    Conflict {
        prefix: IpNet,
        table: u32,
        metric: u32,
    },
    /// Some writes of a pass failed; the others were applied.
    #[error("{} of {} route writes failed: {}", .failures.len(), .stats.writes, join(.failures))]
    Apply {
        failures: Vec<KernelError>,
        stats: ApplyStats,
    },
}

fn join(errors: &[KernelError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

/// The kernel as the sync needs it (object safe; [`RtNetlinkTable`] is the real one).
#[async_trait]
pub trait RouteTable: Send + Sync {
    /// Every route with protocol [`RTPROT_TRELLIS_BGP`] in table `table`, both address
    /// families, as [`parse_route`] reads them.
    async fn dump_ours(&self, table: u32) -> Result<Vec<InstalledRoute>, NetlinkFailure>;
    /// Sends one request and waits for the kernel's answer.
    async fn send(&self, request: &RouteRequest) -> Result<(), NetlinkFailure>;
    /// Sends `requests` (at most [`BATCH`]) and returns each one's answer, in order. By
    /// default one at a time; the netlink table packs them into one datagram.
    async fn send_batch(&self, requests: &[RouteRequest]) -> Vec<Result<(), NetlinkFailure>> {
        send_each(self, requests).await
    }
}

/// [`RouteTable::send`] for each request in turn.
pub async fn send_each<T: RouteTable + ?Sized>(
    table: &T,
    requests: &[RouteRequest],
) -> Vec<Result<(), NetlinkFailure>> {
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        out.push(table.send(r).await);
    }
    out
}

#[cfg(test)]
#[path = "kernel_fake.rs"]
pub(crate) mod fake;

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
