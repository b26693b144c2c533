//! Routes to other nodes' blocks without encapsulation, computed from the datastore: for a pool
//! with `vxlanMode: Never` and `ipipMode: Never`, or `CrossSubnet` (either) towards a node in
//! this node's subnet, `BLOCK via REMOTE_NODE_IP proto 80 metric 10` in the main table. Pure: no I/O
//! here, see `direct_apply` for the kernel side.
//!
//! Only nodes sharing this node's underlay subnet get a route: their address is on-link, so the
//! kernel can hand the packet straight to them. A node behind a router needs the router to know
//! the pod CIDRs, which is BGP's job; without it such a block stays unrouted (as in Calico with
//! BGP off), and a pool that must reach it should use VXLAN or CrossSubnet.
//!
//! IPv6 blocks go via the remote node's IPv6 underlay address: the kernel accepts neither
//! `RTA_VIA` nor an IPv4 nexthop object on an IPv6 route (both tried on 6.18: "IPv6 does not
//! support RTA_VIA attribute", "IPv6 routes can not use an IPv4 nexthop"), so a node without an
//! IPv6 address gets no IPv6 direct routes.
//!
//! A block whose pool wants VXLAN keeps its direct route while VXLAN cannot carry it yet (this
//! node or the remote one has no VTEP of the block's family, as right after a pool is switched
//! from `Never`): make before break. Once both VTEPs exist the VXLAN manager, which runs first in
//! a pass, installs its route and this one goes. IPIP likewise: the direct route stays until both
//! nodes have recorded an IPIP tunnel address (see `ipip::ipip_ready`).
//!
//! The metric keeps these routes apart from the VXLAN manager's (metric 0 for IPv4, the kernel's
//! 1024 for IPv6) and the IPIP manager's (5) for the same block: the kernel refuses a second route with the same
//! destination, TOS and metric, so without it switching a pool between VXLAN and no
//! encapsulation would fail whenever the manager adding its route ran before the one deleting
//! its own. With distinct metrics both may exist for the moment of a switch, and the lower one
//! carries the traffic.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::RouteMessageBuilder;
use trellis_datastore::resources::EncapMode;

use super::ipip::{ipip_ready, ipip_towards};
use super::vxlan::{
    local_subnet, pool_for, remote_vtep, vxlan_towards, ClusterView, VxlanConfig, VxlanFamily,
};
use super::vxlan_msg::{parse_owned_route, Request, ADD, ADD_OR_REPLACE, CHANGE_OR_DELETE};
use super::ROUTE_PROTOCOL;

/// Metric of every direct route (see the module documentation).
pub const DIRECT_ROUTE_METRIC: u32 = 10;

/// Why the direct routes cannot be computed yet; the manager then leaves the kernel alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectNotReady {
    #[error("node {0} is not in the datastore yet")]
    NoLocalNode(String),
}

/// Desired direct routes of node `cfg.node_name`: remote block -> the remote node's address.
pub fn compute_direct_routes(
    view: &ClusterView,
    cfg: &VxlanConfig,
) -> Result<BTreeMap<IpNet, IpAddr>, DirectNotReady> {
    let me = &cfg.node_name;
    let local = view
        .nodes
        .get(me)
        .ok_or_else(|| DirectNotReady::NoLocalNode(me.clone()))?;
    let mut routes = BTreeMap::new();
    // Without a known subnet no node is known to be on-link.
    let Some(subnet) = local_subnet(cfg, local) else {
        return Ok(routes);
    };
    for (block, owner) in &view.blocks {
        let Some(owner) = owner.as_deref().filter(|o| o != me) else {
            continue;
        };
        let (Some(pool), Some(remote)) = (pool_for(&view.pools, block), view.nodes.get(owner))
        else {
            continue;
        };
        let Some(remote4) = remote.spec.ipv4() else {
            continue;
        };
        let family = match block {
            IpNet::V4(_) => VxlanFamily::V4,
            IpNet::V6(_) => VxlanFamily::V6,
        };
        let encapsulated = if pool.spec.ipip_mode != EncapMode::Never {
            // IPIP carries IPv4 only; the datastore refuses IPv6 pools with an ipipMode.
            family == VxlanFamily::V4
                && ipip_towards(pool, Some(subnet), remote4)
                && ipip_ready(local, remote)
        } else {
            vxlan_towards(pool, Some(subnet), remote4)
                && family.vtep_addr(local).is_some()
                && remote_vtep(remote, family).is_some()
        };
        if encapsulated || !subnet.contains(&remote4) {
            continue;
        }
        let via = match block {
            IpNet::V4(_) => Some(IpAddr::V4(remote4)),
            IpNet::V6(_) => remote.spec.ipv6().map(IpAddr::V6),
        };
        if let Some(via) = via {
            routes.insert(*block, via);
        }
    }
    Ok(routes)
}

/// `ip route add BLOCK via GW proto 80 metric 10` in the main table; the kernel picks the
/// device from its connected route to `GW`.
pub fn direct_route_message(block: IpNet, via: IpAddr) -> RouteMessage {
    let proto = RouteProtocol::from(ROUTE_PROTOCOL);
    match (block, via) {
        (IpNet::V4(b), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(b.network(), b.prefix_len())
            .gateway(g)
            .protocol(proto)
            .priority(DIRECT_ROUTE_METRIC)
            .build(),
        (IpNet::V6(b), IpAddr::V6(g)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(b.network(), b.prefix_len())
            .gateway(g)
            .protocol(proto)
            .priority(DIRECT_ROUTE_METRIC)
            .build(),
        _ => panic!("direct route {block} via {via}: gateway of another address family"),
    }
}

/// A new route is added with NLM_F_EXCL (a foreign route with our destination and metric makes
/// it fail rather than be overwritten); one we own is replaced.
pub fn add_direct_route(block: IpNet, via: IpAddr, replace: bool) -> Request {
    Request {
        message: RouteNetlinkMessage::NewRoute(direct_route_message(block, via)),
        flags: if replace { ADD_OR_REPLACE } else { ADD },
        what: format!(
            "{} route {block} via {via} proto {ROUTE_PROTOCOL} metric {DIRECT_ROUTE_METRIC}",
            if replace { "replace" } else { "add" }
        ),
    }
}

/// Names gateway, protocol and metric, so the kernel deletes only our route.
pub fn delete_direct_route(block: IpNet, via: IpAddr) -> Request {
    Request {
        message: RouteNetlinkMessage::DelRoute(direct_route_message(block, via)),
        flags: CHANGE_OR_DELETE,
        what: format!(
            "delete route {block} via {via} proto {ROUTE_PROTOCOL} metric {DIRECT_ROUTE_METRIC}"
        ),
    }
}

/// A direct route of ours: [`parse_owned_route`] with metric [`DIRECT_ROUTE_METRIC`] and a
/// gateway.
pub fn parse_direct_route(msg: &RouteMessage) -> Option<(IpNet, IpAddr)> {
    let r = parse_owned_route(msg)?;
    if r.metric != DIRECT_ROUTE_METRIC {
        return None;
    }
    Some((r.dst, r.gateway?))
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
