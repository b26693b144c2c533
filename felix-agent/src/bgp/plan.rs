//! From the datastore to a plan: what this node's speaker should be (AS, router id, listen
//! address, cluster id), whom it peers with, what it originates, and which learned routes go to
//! the kernel. Pure, given the watched objects.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use trellis_bgp_speaker::speaker::LocalRoute;
use trellis_datastore::keys;
use trellis_datastore::resources::bgp::{BgpConfigurationSpec, BindMode};
use trellis_datastore::resources::{
    BgpPeerSpec, EncapMode, IpPoolSpec, IpamBlockSpec, Node, NodeSpec,
};

use crate::watch_cache::WatchCache;

use super::advertise::desired_originations;
use super::kernel_filter::KernelFilter;
use super::peers::{desired_peers, DesiredPeer};

/// What the datastore says, for the BGP loop.
pub(super) const PREFIXES: [&str; 5] = [
    keys::NODES,
    keys::IPAM_BLOCKS,
    keys::IPPOOLS,
    keys::BGP_PEERS,
    keys::BGP_CONFIG,
];

#[derive(Debug, Clone)]
pub struct BgpAgentConfig {
    pub node_name: String,
    /// This node's IPv4 underlay subnet (from autodetection); otherwise the Node's
    /// `spec.bgp.ipv4Address` is used.
    pub underlay_subnet: Option<IpNet>,
    /// How often our kernel routes are re-read and repaired.
    pub resync_interval: Duration,
}

/// Settings that need a new speaker when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    pub(super) asn: u32,
    pub(super) router_id: Ipv4Addr,
    pub(super) listen: SocketAddr,
    pub(super) cluster_id: Option<Ipv4Addr>,
    pub(super) restart_time: u16,
    pub(super) next_hop_v4: Option<Ipv4Addr>,
    pub(super) next_hop_v6: Option<Ipv6Addr>,
    /// Paths are selected only through next hops on these subnets (none on a reflector,
    /// which passes on paths it does not use itself).
    pub(super) next_hop_subnets: Vec<IpNet>,
}

/// Everything the datastore asks of this node's speaker.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) settings: Settings,
    pub(super) peers: BTreeMap<IpAddr, DesiredPeer>,
    pub(super) originations: BTreeMap<IpNet, LocalRoute>,
    pub(super) filter: KernelFilter,
}

/// The effective BGPConfiguration of `me`: `default` overlaid with `node.ME`.
fn effective_config(cache: &WatchCache, me: &str) -> BgpConfigurationSpec {
    let all = cache.objects::<BgpConfigurationSpec>(keys::BGP_CONFIG);
    let find = |key: String| {
        all.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, o)| o.spec.clone())
    };
    let global = find(keys::BGP_CONFIG.to_string()).unwrap_or_default();
    match find(format!("{}/node.{me}", keys::BGP_CONFIG)) {
        Some(node) => global.overlay(&node),
        None => global,
    }
}

pub(super) fn plan(cache: &WatchCache, cfg: &BgpAgentConfig) -> Option<Plan> {
    let me = cfg.node_name.as_str();
    let bgp_cfg = effective_config(cache, me);
    let nodes: BTreeMap<String, Node> = cache
        .objects::<NodeSpec>(keys::NODES)
        .into_iter()
        .map(|(_, n)| (n.metadata.name.clone(), n))
        .collect();
    let local = nodes.get(me)?;
    let pools: Vec<_> = cache
        .objects::<IpPoolSpec>(keys::IPPOOLS)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let blocks: Vec<IpamBlockSpec> = cache
        .objects::<IpamBlockSpec>(keys::IPAM_BLOCKS)
        .into_iter()
        .map(|(_, b)| b.spec)
        .collect();
    let bgp_peers: Vec<_> = cache
        .objects::<BgpPeerSpec>(keys::BGP_PEERS)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let v4 = local.spec.ipv4();
    let v6 = local.spec.ipv6();
    let node_bgp = local.spec.bgp.clone().unwrap_or_default();
    let listen_ip = match (bgp_cfg.bind_mode(), v4) {
        (BindMode::NodeIp, Some(a)) => IpAddr::V4(a),
        _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let mut subnets: Vec<IpNet> = cfg
        .underlay_subnet
        .or(node_bgp.ipv4_address)
        .map(|n| n.trunc())
        .into_iter()
        .collect();
    subnets.extend(node_bgp.ipv6_address.map(|n| n.trunc()));
    let settings = Settings {
        asn: node_bgp.as_number.unwrap_or_else(|| bgp_cfg.as_number()),
        router_id: v4.unwrap_or_else(|| router_id_from_name(me)),
        listen: SocketAddr::new(listen_ip, bgp_cfg.listen_port()),
        cluster_id: node_bgp.route_reflector_cluster_id,
        restart_time: u16::try_from(bgp_cfg.node_mesh_max_restart_time().as_secs())
            .unwrap_or(u16::MAX),
        next_hop_v4: v4,
        next_hop_v6: v6,
        next_hop_subnets: match node_bgp.route_reflector_cluster_id {
            Some(_) => vec![],
            None => subnets.clone(),
        },
    };
    let filter = KernelFilter {
        encapsulated_pools: pools
            .iter()
            .filter(|p| {
                p.spec.vxlan_mode != EncapMode::Never || p.spec.ipip_mode != EncapMode::Never
            })
            .map(|p| p.spec.cidr)
            .collect(),
        subnets,
        own: v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(v6.map(IpAddr::V6))
            .collect(),
    };
    Some(Plan {
        settings,
        peers: desired_peers(me, &nodes, &bgp_peers, &bgp_cfg),
        originations: desired_originations(me, &blocks, &pools, &bgp_cfg),
        filter,
    })
}

/// A stable router id for a node without an IPv4 address (a hash of its name, as Calico does).
fn router_id_from_name(name: &str) -> Ipv4Addr {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Ipv4Addr::from(h | 0x0100_0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ids_from_names_are_stable_and_never_zero_based() {
        let a = router_id_from_name("node-a");
        assert_eq!(a, router_id_from_name("node-a"));
        assert_ne!(a, router_id_from_name("node-b"));
        assert!(a.octets()[0] != 0);
    }
}
