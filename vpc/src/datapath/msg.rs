//! Netlink messages of the VPC datapath, built and parsed without I/O: rules, ENI-table routes,
//! the kernel's subnet route of an ENI, and ENI link settings. `apply` sends them.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use super::desired::{NextHop, RuleKey};
use super::{FROM_POD_PRIORITY, MAIN_ENI_MARK_PRIORITY, MAIN_TABLE, TO_POD_PRIORITY};

/// Create; fail if an identical object exists (never overwrite what someone else made).
pub const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
/// Create or replace a route with the same table, destination, TOS and metric.
pub const ADD_OR_REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
/// Deletes and link changes.
pub const CHANGE_OR_DELETE: u16 = NLM_F_REQUEST | NLM_F_ACK;

/// One kernel write: the message, its netlink flags, and what it does in `ip` words (for logs,
/// errors and test assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub message: RouteNetlinkMessage,
    pub flags: u16,
    pub what: String,
}

fn family_and_len(ip: IpAddr) -> (AddressFamily, u8) {
    match ip {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    }
}

/// The rule message of `key` looking up `table`.
pub fn rule_message(key: RuleKey, table: u32) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.action = RuleAction::ToTable;
    // Tables above 255 only fit the attribute; the kernel reads the attribute when present.
    m.header.table = u8::try_from(table).unwrap_or(0);
    m.attributes.push(RuleAttribute::Priority(key.priority()));
    m.attributes.push(RuleAttribute::Table(table));
    match key {
        RuleKey::ToPod(ip) => {
            (m.header.family, m.header.dst_len) = family_and_len(ip);
            m.attributes.push(RuleAttribute::Destination(ip));
        }
        RuleKey::FromPod(ip) => {
            (m.header.family, m.header.src_len) = family_and_len(ip);
            m.attributes.push(RuleAttribute::Source(ip));
        }
        RuleKey::MainEniMark(mark) => {
            m.header.family = AddressFamily::Inet;
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(mark));
        }
    }
    m
}

fn rule_words(key: RuleKey, table: u32) -> String {
    let table = if table == MAIN_TABLE {
        "main".to_string()
    } else {
        table.to_string()
    };
    format!("rule {key} lookup {table}")
}

pub fn add_rule(key: RuleKey, table: u32) -> Request {
    Request {
        message: RouteNetlinkMessage::NewRule(rule_message(key, table)),
        flags: ADD,
        what: format!("add {}", rule_words(key, table)),
    }
}

/// Names priority, selector and table, so only that rule goes.
pub fn delete_rule(key: RuleKey, table: u32) -> Request {
    Request {
        message: RouteNetlinkMessage::DelRule(rule_message(key, table)),
        flags: CHANGE_OR_DELETE,
        what: format!("delete {}", rule_words(key, table)),
    }
}

/// A rule this datapath owns, with the table it looks up: priority 512 with only a /32 or /128
/// destination, 1536 with only such a source, or 1024 with only an fwmark (any value, so a
/// changed connmark setting replaces the old rule) and lookup main. Anything else is not ours.
pub fn parse_owned_rule(m: &RuleMessage) -> Option<(RuleKey, u32)> {
    // `not` (invert) or a TOS selector make it someone else's rule.
    if m.header.action != RuleAction::ToTable
        || m.header.flags.contains(RuleFlags::Invert)
        || m.header.tos != 0
    {
        return None;
    }
    let (mut prio, mut table, mut src, mut dst, mut mark, mut other) =
        (0, u32::from(m.header.table), None, None, None, false);
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => prio = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Source(ip) => src = Some(*ip),
            RuleAttribute::Destination(ip) => dst = Some(*ip),
            RuleAttribute::FwMark(v) => mark = Some(*v),
            // The kernel reports these on every rule; "unset" is all ones.
            RuleAttribute::FwMask(_) | RuleAttribute::Protocol(_) => {}
            RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            _ => other = true,
        }
    }
    if other {
        return None;
    }
    let host_len = |ip: IpAddr| family_and_len(ip).1;
    let key = match (prio, src, dst, mark) {
        (TO_POD_PRIORITY, None, Some(ip), None)
            if m.header.dst_len == host_len(ip) && m.header.src_len == 0 =>
        {
            RuleKey::ToPod(ip)
        }
        (FROM_POD_PRIORITY, Some(ip), None, None)
            if m.header.src_len == host_len(ip) && m.header.dst_len == 0 =>
        {
            RuleKey::FromPod(ip)
        }
        (MAIN_ENI_MARK_PRIORITY, None, None, Some(v)) if table == MAIN_TABLE => {
            RuleKey::MainEniMark(v)
        }
        _ => return None,
    };
    Some((key, table))
}

/// An IPv4 unicast route as the kernel reports it (the fields the datapath compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    pub table: u32,
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub metric: u32,
}

/// Reads an IPv4 unicast route; other families and types (local, broadcast, ...) give `None`.
pub fn parse_route(m: &RouteMessage) -> Option<ObservedRoute> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut r = ObservedRoute {
        table: u32::from(m.header.table),
        dst: Ipv4Net::default(),
        gateway: None,
        oif: None,
        scope: m.header.scope,
        protocol: m.header.protocol,
        metric: 0,
    };
    let mut dst = Ipv4Addr::UNSPECIFIED;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => r.gateway = Some(*ip),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.metric = *p,
            _ => {}
        }
    }
    r.dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

/// `DST [via GW] dev OIF table T`: scope link without a gateway, universe with one.
pub fn table_route_message(
    table: u32,
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: u32,
) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(table)
        .destination_prefix(dst.network(), dst.prefix_len())
        .output_interface(oif);
    let m = match gateway {
        Some(gw) => b.gateway(gw).build(),
        None => b.scope(RouteScope::Link).build(),
    };
    big_table(m, table)
}

/// A table above 255 travels only in the attribute; the header says "unspecified" (as
/// iproute2 sends it) rather than the builder's default, main.
fn big_table(mut m: RouteMessage, table: u32) -> RouteMessage {
    if table > 255 {
        m.header.table = 0;
    }
    m
}

fn route_words(table: u32, dst: Ipv4Net, hop: &NextHop) -> String {
    match hop.gateway {
        Some(gw) => format!("route {dst} via {gw} dev {} table {table}", hop.if_name),
        None => format!("route {dst} dev {} scope link table {table}", hop.if_name),
    }
}

/// Adds a route to an ENI table, replacing one with the same destination (the table is ours).
pub fn add_table_route(table: u32, dst: Ipv4Net, hop: &NextHop, oif: u32) -> Request {
    Request {
        message: RouteNetlinkMessage::NewRoute(table_route_message(table, dst, hop.gateway, oif)),
        flags: ADD_OR_REPLACE,
        what: format!("replace {}", route_words(table, dst, hop)),
    }
}

/// Deletes exactly the observed route (table, destination, metric, next hop, scope, protocol).
pub fn delete_route(r: &ObservedRoute, if_name: &str) -> Request {
    let mut m = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(r.table)
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .scope(r.scope)
        .protocol(r.protocol)
        .priority(r.metric);
    if let Some(gw) = r.gateway {
        m = m.gateway(gw);
    }
    if let Some(oif) = r.oif {
        m = m.output_interface(oif);
    }
    let hop = match r.gateway {
        Some(gw) => format!(" via {gw}"),
        None => String::new(),
    };
    Request {
        message: RouteNetlinkMessage::DelRoute(big_table(m.build(), r.table)),
        flags: CHANGE_OR_DELETE,
        what: format!(
            "delete route {}{hop} dev {if_name} proto {:?} table {}",
            r.dst, r.protocol, r.table
        ),
    }
}

/// Whether `r` is the kernel's own route to an ENI's subnet in the main table (AWS removes it
/// for secondary ENIs, so that node traffic to the subnet does not leave by them).
pub fn is_kernel_subnet_route(r: &ObservedRoute, subnet: Ipv4Net, oif: u32) -> bool {
    r.table == MAIN_TABLE
        && r.dst == subnet
        && r.oif == Some(oif)
        && r.gateway.is_none()
        && r.protocol == RouteProtocol::Kernel
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub mtu: Option<u32>,
}

pub fn parse_link(m: &LinkMessage) -> Option<ObservedLink> {
    let mut name = None;
    let mut mtu = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(v) => mtu = Some(*v),
            _ => {}
        }
    }
    Some(ObservedLink {
        index: m.header.index,
        name: name?,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu,
    })
}

/// `ip link set dev NAME up mtu MTU`.
pub fn set_link_up_mtu(link: &ObservedLink, mtu: u32) -> Request {
    let msg = LinkUnspec::new_with_index(link.index).up().mtu(mtu).build();
    Request {
        message: RouteNetlinkMessage::SetLink(msg),
        flags: CHANGE_OR_DELETE,
        what: format!("set link {} up mtu {mtu}", link.name),
    }
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
