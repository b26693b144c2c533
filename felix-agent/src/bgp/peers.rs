//! Who this node peers with, computed from the datastore. Pure.
//!
//! Calico's rules, which operators already know:
//! - **Node-to-node mesh** (BGPConfiguration `nodeToNodeMeshEnabled`, default on): every node
//!   peers with every other node, over IPv4 where both have an IPv4 address and over IPv6 where
//!   both have an IPv6 one. Each node's AS is its Node's `spec.bgp.asNumber`, else the cluster's
//!   (64512). Mesh sessions are one-way: of two nodes, the one with the lower address connects
//!   and the other only listens, so the pair never races two connections (RFC 4271 6.8).
//! - **BGPPeer with `peerIP`**: the nodes it applies to (`node`, `nodeSelector`, or all when
//!   neither is set) peer with that address and AS.
//! - **BGPPeer with `peerSelector`**: the nodes it applies to peer with every node the selector
//!   matches, and, the other way round, a node the selector matches peers with every node the
//!   BGPPeer applies to. So the one object Calico documents for route reflectors
//!   (`nodeSelector: all()`, `peerSelector: route-reflector == 'true'`) wires clients to
//!   reflectors and reflectors to clients and to each other.
//! - **Route reflection** (RFC 4456): a node with `spec.bgp.routeReflectorClusterID` reflects;
//!   a node-to-node peer without the same cluster id is its client. Two reflectors of one
//!   cluster are plain iBGP peers of each other.
//! - One session per address: a node-specific BGPPeer wins over a global one, which wins over
//!   the mesh; among equals the first by name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use trellis_datastore::resources::bgp::{BgpConfigurationSpec, BgpPassword, SourceAddress};
use trellis_datastore::resources::{BgpPeer, Node};
use trellis_datastore::selector::Selector;

/// How a session came to be, as `trellisctl node status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Node-to-node mesh.
    Mesh,
    /// A route reflector this node is a client of, or another reflector of its cluster.
    RouteReflector,
    /// A client of this node, a route reflector.
    RrClient,
    /// A BGPPeer that applies to every node.
    Global,
    /// A BGPPeer for this node (`node` or `nodeSelector`).
    Node,
}

impl PeerKind {
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Mesh => "mesh",
            PeerKind::RouteReflector => "rr",
            PeerKind::RrClient => "rr-client",
            PeerKind::Global => "global",
            PeerKind::Node => "node",
        }
    }

    /// Which source wins when two want a session to the same address.
    fn precedence(self) -> u8 {
        match self {
            PeerKind::Mesh => 0,
            PeerKind::Global => 1,
            PeerKind::RouteReflector | PeerKind::RrClient | PeerKind::Node => 2,
        }
    }
}

/// One session this node wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub addr: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub kind: PeerKind,
    /// What asked for it: `mesh` or `BGPPeer NAME`.
    pub source: String,
    pub passive: bool,
    pub rr_client: bool,
    pub keep_next_hop: bool,
    /// Source address of our connections; `None` = the kernel chooses.
    pub local_addr: Option<IpAddr>,
    pub hold_time: Option<u16>,
    pub keepalive: Option<u16>,
    pub restart_time: Option<u16>,
    pub password: Option<BgpPassword>,
    pub ttl_security: Option<u8>,
    pub allow_local_as: u8,
}

impl DesiredPeer {
    /// A session to `addr` with every optional setting at its default.
    fn new(addr: IpAddr, asn: u32, kind: PeerKind, source: String) -> Self {
        DesiredPeer {
            addr,
            port: trellis_datastore::resources::bgp::DEFAULT_LISTEN_PORT,
            asn,
            kind,
            source,
            passive: false,
            rr_client: false,
            keep_next_hop: false,
            local_addr: None,
            hold_time: None,
            keepalive: None,
            restart_time: None,
            password: None,
            ttl_security: None,
            allow_local_as: 0,
        }
    }
}

/// A node's BGP identity as the peering rules need it.
#[derive(Debug, Clone, Copy)]
struct Speaker<'a> {
    node: &'a Node,
    asn: u32,
    v4: Option<Ipv4Addr>,
    v6: Option<std::net::Ipv6Addr>,
    cluster_id: Option<Ipv4Addr>,
}

impl<'a> Speaker<'a> {
    fn of(node: &'a Node, cfg: &BgpConfigurationSpec) -> Self {
        let bgp = node.spec.bgp.as_ref();
        Speaker {
            node,
            asn: bgp
                .and_then(|b| b.as_number)
                .unwrap_or_else(|| cfg.as_number()),
            v4: node.spec.ipv4(),
            v6: node.spec.ipv6(),
            cluster_id: bgp.and_then(|b| b.route_reflector_cluster_id),
        }
    }

    fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }

    /// Our address of `addr`'s family.
    fn address_like(&self, addr: IpAddr) -> Option<IpAddr> {
        match addr {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

fn secs(d: &trellis_datastore::resources::duration::Duration) -> u16 {
    u16::try_from(d.as_std().as_secs()).unwrap_or(u16::MAX)
}

/// The sessions of node `me`, by peer address.
pub fn desired_peers(
    me: &str,
    nodes: &BTreeMap<String, Node>,
    bgp_peers: &[BgpPeer],
    cfg: &BgpConfigurationSpec,
) -> BTreeMap<IpAddr, DesiredPeer> {
    let Some(local) = nodes.get(me).map(|n| Speaker::of(n, cfg)) else {
        return BTreeMap::new();
    };
    let others: Vec<Speaker> = nodes
        .values()
        .filter(|n| n.metadata.name != me)
        .map(|n| Speaker::of(n, cfg))
        .collect();
    let mut out: BTreeMap<IpAddr, DesiredPeer> = BTreeMap::new();
    let mut offer = |p: DesiredPeer| {
        if local.addresses().any(|a| a == p.addr) {
            return;
        }
        match out.get(&p.addr) {
            Some(have) if have.kind.precedence() >= p.kind.precedence() => {}
            _ => {
                out.insert(p.addr, p);
            }
        }
    };
    if cfg.node_to_node_mesh_enabled() {
        for other in &others {
            for p in node_to_node(&local, other, PeerKind::Mesh, "mesh".into(), None) {
                offer(DesiredPeer {
                    restart_time: Some(
                        u16::try_from(cfg.node_mesh_max_restart_time().as_secs())
                            .unwrap_or(u16::MAX),
                    ),
                    password: cfg.node_mesh_password.clone(),
                    ..p
                });
            }
        }
    }
    // Sorted by name so that "first by name" holds among equals.
    let mut sorted: Vec<&BgpPeer> = bgp_peers.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for bp in sorted {
        let source = format!("BGPPeer {}", bp.metadata.name);
        let scope = if bp.spec.is_global() {
            PeerKind::Global
        } else {
            PeerKind::Node
        };
        if applies_to(bp, local.node) {
            if let Some(a) = bp.spec.peer_address() {
                let Some(asn) = bp.spec.as_number else {
                    continue;
                };
                let local_addr = match bp.spec.source_address() {
                    SourceAddress::UseNodeIp => local.address_like(a.ip),
                    SourceAddress::None => None,
                };
                offer(with_peer_settings(
                    bp,
                    DesiredPeer {
                        port: a
                            .port
                            .unwrap_or(trellis_datastore::resources::bgp::DEFAULT_LISTEN_PORT),
                        local_addr,
                        ..DesiredPeer::new(a.ip, asn, scope, source.clone())
                    },
                ));
            } else if let Some(sel) = selector(&bp.spec.peer_selector) {
                for other in others
                    .iter()
                    .filter(|o| sel.matches(&o.node.metadata.labels))
                {
                    for p in node_to_node(&local, other, scope, source.clone(), Some(bp)) {
                        offer(p);
                    }
                }
            }
        }
        // The other direction of a peerSelector peering.
        let selected_by_peer_selector = selector(&bp.spec.peer_selector)
            .is_some_and(|s| s.matches(&local.node.metadata.labels));
        if selected_by_peer_selector {
            for other in others.iter().filter(|o| applies_to(bp, o.node)) {
                for p in node_to_node(&local, other, scope, source.clone(), Some(bp)) {
                    offer(p);
                }
            }
        }
    }
    out
}

fn selector(text: &str) -> Option<Selector> {
    if text.is_empty() {
        return None;
    }
    Selector::parse(text)
        .map_err(|e| tracing::warn!(selector = text, error = %e, "ignoring an invalid selector"))
        .ok()
}

/// Whether BGPPeer `bp` applies to `node` (`node`, `nodeSelector`, or every node).
fn applies_to(bp: &BgpPeer, node: &Node) -> bool {
    if !bp.spec.node.is_empty() {
        return bp.spec.node == node.metadata.name;
    }
    if bp.spec.node_selector.is_empty() {
        return true;
    }
    selector(&bp.spec.node_selector).is_some_and(|s| s.matches(&node.metadata.labels))
}

/// Sessions between two Trellis nodes: one per address family both have.
fn node_to_node(
    local: &Speaker,
    other: &Speaker,
    scope: PeerKind,
    source: String,
    bp: Option<&BgpPeer>,
) -> Vec<DesiredPeer> {
    let (kind, rr_client) = match (local.cluster_id, other.cluster_id) {
        _ if scope == PeerKind::Mesh => (scope, false),
        (Some(mine), theirs) if theirs != Some(mine) => (PeerKind::RrClient, true),
        // A reflector we are a client of, or one of our own cluster.
        (_, Some(_)) => (PeerKind::RouteReflector, false),
        _ => (scope, false),
    };
    let pairs = [
        (local.v4.map(IpAddr::V4), other.v4.map(IpAddr::V4)),
        (local.v6.map(IpAddr::V6), other.v6.map(IpAddr::V6)),
    ];
    pairs
        .into_iter()
        .filter_map(|pair| match pair {
            (Some(mine), Some(theirs)) => Some((mine, theirs)),
            _ => None,
        })
        .map(|(mine, theirs)| {
            let p = DesiredPeer {
                // One-way: the lower address connects (see the module documentation).
                passive: theirs < mine,
                rr_client,
                local_addr: Some(mine),
                ..DesiredPeer::new(theirs, other.asn, kind, source.clone())
            };
            match bp {
                Some(bp) => with_peer_settings(bp, p),
                None => p,
            }
        })
        .collect()
}

/// The BGPPeer's timers and protections.
fn with_peer_settings(bp: &BgpPeer, p: DesiredPeer) -> DesiredPeer {
    let s = &bp.spec;
    DesiredPeer {
        keep_next_hop: s.keep_original_next_hop,
        hold_time: s.hold_time.as_ref().map(secs),
        keepalive: s.keepalive_time.as_ref().map(secs),
        restart_time: s.max_restart_time.as_ref().map(secs),
        password: s.password.clone(),
        ttl_security: s.ttl_security,
        allow_local_as: u8::try_from(s.num_allowed_local_as_numbers()).unwrap_or(u8::MAX),
        local_addr: match s.source_address() {
            SourceAddress::UseNodeIp => p.local_addr,
            SourceAddress::None => None,
        },
        ..p
    }
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
