//! The pure netlink side of the kernel sync: route messages built with rtnetlink's
//! `RouteMessageBuilder`, the requests that carry them, and the parser of dumped routes. No I/O
//! here, so all of it is unit-tested without root; an [`RouteTable`](super::RouteTable) sends
//! the requests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags,
    RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{RouteMessageBuilder, RouteNextHopBuilder};

use super::{InstalledRoute, KernelError, KernelRoute, NextHop, RTPROT_TRELLIS_BGP};

/// What a request does to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp {
    /// `RTM_NEWROUTE` with `NLM_F_CREATE|NLM_F_EXCL`: fails with `EEXIST` if any route (of any
    /// protocol) holds the same prefix, table, TOS and metric.
    Create,
    /// `RTM_NEWROUTE` with `NLM_F_CREATE|NLM_F_REPLACE`: only for a route we own.
    Replace,
    /// `RTM_DELROUTE` naming prefix, table, protocol and metric.
    Delete,
}

/// One request, built purely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequest {
    pub op: RouteOp,
    pub prefix: IpNet,
    pub message: RouteMessage,
    /// What the request does, for logs and errors (`replace route 10.0.0.0/24 via ...`).
    pub what: String,
}

impl RouteRequest {
    /// Netlink header flags to send the message with.
    pub fn flags(&self) -> u16 {
        NLM_F_REQUEST
            | NLM_F_ACK
            | match self.op {
                RouteOp::Create => NLM_F_CREATE | NLM_F_EXCL,
                RouteOp::Replace => NLM_F_CREATE | NLM_F_REPLACE,
                RouteOp::Delete => 0,
            }
    }
}

fn protocol() -> RouteProtocol {
    RouteProtocol::from(RTPROT_TRELLIS_BGP)
}

fn hop(family: AddressFamily, nh: &NextHop) -> Result<RouteNextHop, String> {
    let mut b = RouteNextHopBuilder::new(family)
        .via(nh.gateway)
        .map_err(|e| format!("next hop {nh}: {e}"))?;
    if let Some(i) = nh.ifindex {
        b = b.interface(i);
    }
    if nh.onlink {
        b = b.onlink();
    }
    Ok(b.build())
}

/// The `RTM_NEWROUTE` message: `PREFIX via GW [dev I] [onlink] proto 81 metric M table T`, or
/// with several next hops one ECMP route (`nexthop via ... nexthop via ...`, `RTA_MULTIPATH`).
pub fn route_message(
    route: &KernelRoute,
    table: u32,
    metric: u32,
) -> Result<RouteMessage, KernelError> {
    route.validate()?;
    let invalid = |reason: String| KernelError::InvalidRoute {
        prefix: route.prefix,
        reason,
    };
    let mut msg = base_message(route.prefix, table, metric);
    match route.next_hops.as_slice() {
        [nh] => {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(nh.gateway)));
            if let Some(i) = nh.ifindex {
                msg.attributes.push(RouteAttribute::Oif(i));
            }
            if nh.onlink {
                msg.header.flags.insert(RouteFlags::Onlink);
            }
        }
        hops => {
            let family = msg.header.address_family;
            let hops = hops
                .iter()
                .map(|nh| hop(family, nh))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            msg.attributes.push(RouteAttribute::MultiPath(hops));
        }
    }
    Ok(msg)
}

/// Destination, table, protocol, metric: all a delete needs, the start of every route.
fn base_message(prefix: IpNet, table: u32, metric: u32) -> RouteMessage {
    match prefix {
        IpNet::V4(p) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(p.network(), p.prefix_len())
            .table_id(table)
            .protocol(protocol())
            .priority(metric)
            .build(),
        IpNet::V6(p) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(p.network(), p.prefix_len())
            .table_id(table)
            .protocol(protocol())
            .priority(metric)
            .build(),
    }
}

/// Creates (`replace == false`: the kernel refuses if the slot is taken) or replaces our route.
pub fn write_request(
    route: &KernelRoute,
    table: u32,
    metric: u32,
    replace: bool,
) -> Result<RouteRequest, KernelError> {
    let (op, verb) = if replace {
        (RouteOp::Replace, "replace")
    } else {
        (RouteOp::Create, "add")
    };
    Ok(RouteRequest {
        op,
        prefix: route.prefix,
        message: route_message(route, table, metric)?,
        what: format!(
            "{verb} route {} proto {RTPROT_TRELLIS_BGP} metric {metric} table {table}",
            route
        ),
    })
}

/// Deletes our route for `prefix` with `metric`, all its next hops: the kernel matches protocol
/// and metric, so a route of another owner is never hit.
pub fn delete_request(prefix: IpNet, table: u32, metric: u32) -> RouteRequest {
    RouteRequest {
        op: RouteOp::Delete,
        prefix,
        message: base_message(prefix, table, metric),
        what: format!(
            "delete route {prefix} proto {RTPROT_TRELLIS_BGP} metric {metric} table {table}"
        ),
    }
}

/// A unicast route of any protocol, read from a message: (table, protocol, route with metric).
/// Next hops without a gateway are left out (we never install such).
pub(crate) fn decode_route(msg: &RouteMessage) -> Option<(u32, u8, InstalledRoute)> {
    let h = &msg.header;
    if !matches!(h.address_family, AddressFamily::Inet | AddressFamily::Inet6)
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    let v6 = h.address_family == AddressFamily::Inet6;
    let mut table = u32::from(h.table);
    let mut dst: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let (mut metric, mut gateway, mut oif, mut hops) = (0, None, None, None);
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Destination(d) => dst = address(d, v6)?,
            RouteAttribute::Gateway(g) => gateway = address(g, v6),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(m) => hops = Some(m),
            _ => {}
        }
    }
    let next_hops: Vec<NextHop> = match hops {
        Some(hops) => hops
            .iter()
            .filter_map(|nh| {
                let gateway = nh.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => address(g, v6),
                    _ => None,
                })?;
                Some(NextHop {
                    gateway,
                    ifindex: (nh.interface_index != 0).then_some(nh.interface_index),
                    onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                })
            })
            .collect(),
        None => gateway
            .map(|gateway| NextHop {
                gateway,
                ifindex: oif,
                onlink: h.flags.contains(RouteFlags::Onlink),
            })
            .into_iter()
            .collect(),
    };
    let prefix = IpNet::new(dst, h.destination_prefix_length).ok()?;
    Some((
        table,
        u8::from(h.protocol),
        InstalledRoute {
            route: KernelRoute::new(prefix, next_hops),
            metric,
        },
    ))
}

/// An address of the route's family.
fn address(a: &RouteAddress, v6: bool) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) if !v6 => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) if v6 => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The dumped route if it is a unicast route with protocol [`RTPROT_TRELLIS_BGP`] in table
/// `table`; `None` for anything else, which the sync then never touches.
pub fn parse_route(msg: &RouteMessage, table: u32) -> Option<InstalledRoute> {
    let (t, proto, route) = decode_route(msg)?;
    (t == table && proto == RTPROT_TRELLIS_BGP).then_some(route)
}

#[cfg(test)]
#[path = "kernel_msg_tests.rs"]
mod tests;
