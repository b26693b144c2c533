//! What this node originates, computed from the datastore. Pure.
//!
//! - The blocks affine to this node, aggregated: adjacent blocks merge into their covering
//!   prefix (two /26 into a /25), so peers carry one route per contiguous range, not per block.
//!   Blocks of pools with `disableBGPExport` are left out (Calico's rule).
//! - Addresses this node borrowed from another node's block, each as a host route (/32, /128):
//!   the block's owner advertises the block, and the longer prefix brings the borrowed address
//!   here (Calico does the same).
//! - The service ranges of the BGPConfiguration (`serviceClusterIPs`, `serviceExternalIPs`,
//!   `serviceLoadBalancerIPs`), from every node, so the fabric spreads them over all nodes.
//!
//! Each prefix carries the communities of every `prefixAdvertisements` entry whose CIDR contains
//! it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use trellis_bgp_speaker::speaker::LocalRoute;
use trellis_datastore::resources::bgp::{BgpConfigurationSpec, CommunityValue};
use trellis_datastore::resources::{IpPool, IpamBlockSpec};

/// The prefixes node `me` originates, with their attributes.
pub fn desired_originations(
    me: &str,
    blocks: &[IpamBlockSpec],
    pools: &[IpPool],
    cfg: &BgpConfigurationSpec,
) -> BTreeMap<IpNet, LocalRoute> {
    let exported = |net: &IpNet| {
        !pools
            .iter()
            .any(|p| p.spec.cidr.contains(net) && p.spec.disable_bgp_export)
    };
    let mut own = Vec::new();
    let mut hosts = Vec::new();
    for b in blocks.iter().filter(|b| exported(&b.cidr)) {
        if b.affine_node() == Some(me) {
            own.push(b.cidr);
            continue;
        }
        for (ordinal, alloc) in &b.allocations {
            if alloc.attributes.node.as_deref() == Some(me) {
                if let Some(addr) = nth(&b.cidr, *ordinal) {
                    hosts.push(IpNet::from(addr));
                }
            }
        }
    }
    let services = cfg
        .service_cluster_ips
        .iter()
        .chain(&cfg.service_external_ips)
        .chain(&cfg.service_load_balancer_ips)
        .map(|s| s.cidr);
    let communities = cfg.resolved_prefix_advertisements();
    IpNet::aggregate(&own)
        .into_iter()
        .chain(hosts)
        .chain(services)
        .map(|prefix| (prefix, attributes(&prefix, &communities)))
        .collect()
}

/// The `ordinal`th address of `block`.
fn nth(block: &IpNet, ordinal: u32) -> Option<IpAddr> {
    match block {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            let a = base.checked_add(ordinal)?;
            let addr = std::net::Ipv4Addr::from(a);
            n.contains(&addr).then_some(IpAddr::V4(addr))
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            let a = base.checked_add(u128::from(ordinal))?;
            let addr = std::net::Ipv6Addr::from(a);
            n.contains(&addr).then_some(IpAddr::V6(addr))
        }
    }
}

fn attributes(prefix: &IpNet, adverts: &[(IpNet, Vec<CommunityValue>)]) -> LocalRoute {
    let mut route = LocalRoute::default();
    for (_, values) in adverts.iter().filter(|(cidr, _)| cidr.contains(prefix)) {
        for v in values {
            match *v {
                CommunityValue::Standard(a, n) => {
                    route.communities.push(u32::from(a) << 16 | u32::from(n))
                }
                CommunityValue::Large(a, b, c) => route.large_communities.push((a, b, c)),
            }
        }
    }
    route.communities.sort_unstable();
    route.communities.dedup();
    route.large_communities.sort_unstable();
    route.large_communities.dedup();
    route
}

#[cfg(test)]
#[path = "advertise_tests.rs"]
mod tests;
