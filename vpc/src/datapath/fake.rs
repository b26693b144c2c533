//! An in-memory kernel for unit tests of the VPC datapath: it holds rule, link and route
//! messages as the kernel would report them, applies requests the way the kernel does, and
//! records them.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use rtnetlink::packet_core::{ErrorMessage, NLM_F_EXCL};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::RouteMessageBuilder;

use super::apply::DatapathNetlink;
use super::msg::{parse_owned_rule, parse_route, Request};
use super::MAIN_TABLE;

#[derive(Debug, Default)]
pub struct FakeKernel {
    pub rules: Vec<RuleMessage>,
    pub links: Vec<LinkMessage>,
    pub routes: Vec<RouteMessage>,
    pub sent: Vec<Request>,
    /// Requests for which this returns true fail with `fail_errno` (EPERM when 0).
    pub fail: Option<fn(&Request) -> bool>,
    pub fail_errno: i32,
}

pub fn kernel_error(errno: i32) -> rtnetlink::Error {
    let mut e = ErrorMessage::default();
    e.code = std::num::NonZeroI32::new(-errno);
    rtnetlink::Error::NetlinkError(e)
}

/// A link as the kernel reports it.
pub fn link(index: u32, name: &str, up: bool, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m
}

/// The route the kernel adds for an address's subnet: `SUBNET dev OIF proto kernel scope link`.
pub fn kernel_subnet_route(subnet: Ipv4Net, oif: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(MAIN_TABLE)
        .destination_prefix(subnet.network(), subnet.prefix_len())
        .output_interface(oif)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::Kernel)
        .build()
}

/// What the kernel adds to every rule it reports (and a parser must tolerate).
fn as_reported(mut m: RuleMessage) -> RuleMessage {
    m.attributes
        .push(RuleAttribute::SuppressPrefixLen(u32::MAX));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Unspec));
    m
}

fn same_rule(a: &RuleMessage, b: &RuleMessage) -> bool {
    match (parse_owned_rule(a), parse_owned_rule(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl FakeKernel {
    /// The `what` of every request sent, then forgets them.
    pub fn take_sent(&mut self) -> Vec<String> {
        self.sent.drain(..).map(|r| r.what).collect()
    }

    /// Adds a rule as someone else (or an earlier run) made it.
    pub fn add_rule(&mut self, m: RuleMessage) {
        self.rules.push(as_reported(m));
    }

    fn apply(&mut self, req: &Request) -> Result<(), rtnetlink::Error> {
        match &req.message {
            RouteNetlinkMessage::NewRule(m) => {
                if req.flags & NLM_F_EXCL != 0 && self.rules.iter().any(|r| same_rule(r, m)) {
                    return Err(kernel_error(17)); // EEXIST
                }
                self.rules.push(as_reported(m.clone()));
            }
            RouteNetlinkMessage::DelRule(m) => {
                let i = self.rules.iter().position(|r| same_rule(r, m));
                self.rules.remove(i.ok_or_else(|| kernel_error(2))?);
            }
            RouteNetlinkMessage::NewRoute(m) => {
                let new = parse_route(m).expect("an IPv4 unicast route");
                self.routes.retain(|r| {
                    parse_route(r).is_none_or(|o| {
                        (o.table, o.dst, o.metric) != (new.table, new.dst, new.metric)
                    })
                });
                self.routes.push(m.clone());
            }
            RouteNetlinkMessage::DelRoute(m) => {
                let del = parse_route(m).expect("an IPv4 unicast route");
                let i = self.routes.iter().position(|r| {
                    parse_route(r).is_some_and(|o| {
                        (o.table, o.dst, o.metric, o.gateway, o.scope)
                            == (del.table, del.dst, del.metric, del.gateway, del.scope)
                            && (del.oif.is_none() || o.oif == del.oif)
                    })
                });
                self.routes.remove(i.ok_or_else(|| kernel_error(3))?);
            }
            RouteNetlinkMessage::SetLink(m) => {
                let l = self
                    .links
                    .iter_mut()
                    .find(|l| l.header.index == m.header.index)
                    .ok_or_else(|| kernel_error(19))?;
                if m.header.change_mask.contains(LinkFlags::Up) {
                    l.header
                        .flags
                        .set(LinkFlags::Up, m.header.flags.contains(LinkFlags::Up));
                }
                for a in &m.attributes {
                    if let LinkAttribute::Mtu(v) = a {
                        l.attributes.retain(|x| !matches!(x, LinkAttribute::Mtu(_)));
                        l.attributes.push(LinkAttribute::Mtu(*v));
                    }
                }
            }
            other => panic!("the fake kernel does not handle {other:?}"),
        }
        Ok(())
    }
}

#[async_trait]
impl DatapathNetlink for FakeKernel {
    async fn read_rules(&mut self) -> Result<Vec<RuleMessage>, rtnetlink::Error> {
        Ok(self.rules.clone())
    }

    async fn read_links(&mut self) -> Result<Vec<LinkMessage>, rtnetlink::Error> {
        Ok(self.links.clone())
    }

    async fn read_routes(&mut self) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
        Ok(self.routes.clone())
    }

    async fn send(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        self.sent.push(request.clone());
        if self.fail.is_some_and(|f| f(request)) {
            return Err(kernel_error(if self.fail_errno == 0 {
                1
            } else {
                self.fail_errno
            }));
        }
        self.apply(request)
    }
}

/// A node with a primary ENI (eth0, 10.90.1.0/24) and a secondary one (eth1, device 1,
/// 10.90.2.0/24) in VPC 10.90.0.0/16.
pub fn config() -> super::VpcDatapathConfig {
    super::VpcDatapathConfig {
        vpc_cidrs: vec!["10.90.0.0/16".parse().unwrap()],
        exclude_snat_cidrs: vec![],
        external_snat: false,
        primary_if: "eth0".into(),
        primary_ip: Ipv4Addr::new(10, 90, 1, 10),
        connmark: super::DEFAULT_CONNMARK,
        pod_if_prefix: "trellis".into(),
        eni_mtu: super::DEFAULT_ENI_MTU,
    }
}

pub fn enis() -> Vec<super::Eni> {
    vec![
        super::Eni::new(
            "eni-a",
            "eth0",
            0,
            "0a:00:00:00:00:0a",
            "10.90.1.0/24".parse().unwrap(),
            true,
        ),
        super::Eni::new(
            "eni-b",
            "eth1",
            1,
            "0a:00:00:00:00:0b",
            "10.90.2.0/24".parse().unwrap(),
            false,
        ),
    ]
}

/// Pod `ip` with host veth `veth` on ENI `eni`.
pub fn pod(ip: &str, veth: &str, eni: &str) -> super::PodAttachment {
    super::PodAttachment {
        ip: ip.parse().unwrap(),
        host_veth: veth.into(),
        eni_id: eni.into(),
    }
}

/// One pod on each ENI.
pub fn pods() -> Vec<super::PodAttachment> {
    vec![
        pod("10.90.1.20", "trellisp1", "eni-a"),
        pod("10.90.2.20", "trellisp2", "eni-b"),
    ]
}
