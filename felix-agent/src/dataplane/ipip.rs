//! The desired IPIP state of this node, computed purely from a view of the cluster (Calico's
//! `ipip_mgr` semantics; no I/O here: `ipip_msg` builds the requests, `ipip_apply` sends them).
//!
//! For this node, while some IPv4 pool has an `ipipMode` other than `Never`: the device `tunl0`
//! (the kernel's fallback IPIP device: local and remote "any", so one device carries the tunnels
//! to every node), up, with MTU = underlay MTU - [`IPIP_OVERHEAD`] and this node's IPIP tunnel
//! address (`ipv4IPIPTunnelAddr`, from one of its blocks, see `vtep::ensure_ipip_tunnel_addr`)
//! as a /32. For every block of another node inside a pool that encapsulates towards it:
//! `BLOCK via REMOTE_NODE_IP dev tunl0 onlink proto 80 metric 5`. The gateway of a route through
//! an NBMA IPIP device is the outer destination, so no per-node state is needed beyond the route.
//!
//! IPIP carries IPv4 only (RFC 2003); the datastore refuses an IPv6 pool with `ipipMode`, and
//! IPv6 blocks are skipped here anyway.
//!
//! A remote node counts once it has recorded its own tunnel address: its agent has then seen
//! the pool use IPIP and brings its `tunl0` up (without one its kernel drops IPIP packets).
//! Until then, and while this node has no address either, a block on the same subnet keeps its
//! direct route (`direct`): make before break, as for VXLAN.
//!
//! The metric keeps these routes apart from the VXLAN manager's (0) and the direct ones (10) for
//! the same block: the kernel refuses a second IPv4 route with the same destination, TOS and
//! metric, and a pool switched between the modes briefly has both.
//!
//! When no pool uses IPIP any more the routes go but `tunl0` stays, with its address, as Calico
//! leaves it: the device belongs to the kernel module, and removing it would not unload that.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use trellis_datastore::resources::{EncapMode, IpPool, Node};

use super::vxlan::{local_subnet, pool_for, ClusterView, VxlanConfig};

/// The kernel's fallback IPIP device (Calico uses it too).
pub const IPIP_DEVICE: &str = "tunl0";
/// Bytes IPIP adds to a packet: one outer IPv4 header (RFC 2003 section 3).
pub const IPIP_OVERHEAD: u32 = 20;
/// Metric of every IPIP route (see the module documentation).
pub const IPIP_ROUTE_METRIC: u32 = 5;

/// How `tunl0` should look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipDeviceSpec {
    pub name: String,
    pub mtu: u32,
    /// This node's tunnel address, configured as a /32.
    pub address: Ipv4Addr,
}

/// Everything the IPIP manager wants in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpipDesired {
    /// `None`: no pool uses IPIP; `tunl0` is then left as it is.
    pub device: Option<IpipDeviceSpec>,
    /// Remote block -> the remote node's underlay IPv4 (the outer destination).
    pub routes: BTreeMap<IpNet, IpAddr>,
    /// Names of the pools using IPIP, for messages ("cannot create tunl0 for pool ...").
    pub pools: Vec<String>,
}

/// Why the desired state cannot be computed yet: the manager then leaves the kernel as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpipNotReady {
    #[error("a pool uses IPIP but node {0} is not in the datastore yet")]
    NoLocalNode(String),
    #[error("a pool uses IPIP but node {0} has no ipv4IPIPTunnelAddr yet")]
    NoTunnelAddr(String),
}

/// A condition of the node that keeps IPIP from working at all, reported by name through the
/// agent's status and logs (not retried every pass, see `ipip_apply`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpipError {
    /// `RTM_NEWLINK` of kind `ipip` answered EOPNOTSUPP: no ipip module (iproute2 prints
    /// "Unknown device type").
    #[error(
        "kernel has no ipip support: cannot create {IPIP_DEVICE} for {} {}",
        if pools.len() == 1 { "pool" } else { "pools" },
        pools.join(", ")
    )]
    NoKernelSupport { pools: Vec<String> },
    /// A link called `tunl0` exists but is not an IPIP device; it is not ours to replace.
    #[error("{IPIP_DEVICE} exists but is not an IPIP device ({kind}); IPIP pools cannot work")]
    NotIpip { kind: String },
}

/// Whether `pool` uses IPIP at all (IPv4 pools only).
pub fn uses_ipip(pool: &IpPool) -> bool {
    pool.spec.ipip_mode != EncapMode::Never && pool.spec.cidr.addr().is_ipv4()
}

/// Whether traffic from this node (in `subnet`, if known) to a block of `pool` on the node at
/// `remote` goes through IPIP. `CrossSubnet` encapsulates unless both nodes are known to share
/// the subnet (encapsulating works across any underlay, not encapsulating does not).
pub fn ipip_towards(pool: &IpPool, subnet: Option<Ipv4Net>, remote: Ipv4Addr) -> bool {
    match pool.spec.ipip_mode {
        EncapMode::Never => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !subnet.is_some_and(|s| s.contains(&remote)),
    }
}

/// Whether IPIP can carry traffic between `local` and `remote`: both have recorded a tunnel
/// address (see the module documentation).
pub fn ipip_ready(local: &Node, remote: &Node) -> bool {
    local.spec.ipv4_ipip_tunnel_addr.is_some() && remote.spec.ipv4_ipip_tunnel_addr.is_some()
}

/// Computes the desired IPIP state of node `cfg.node_name`; `mtu` is `tunl0`'s.
pub fn compute_ipip_desired(
    view: &ClusterView,
    cfg: &VxlanConfig,
    mtu: u32,
) -> Result<IpipDesired, IpipNotReady> {
    let pools: Vec<String> = view
        .pools
        .values()
        .filter(|p| uses_ipip(p))
        .map(|p| p.name().to_string())
        .collect();
    if pools.is_empty() {
        return Ok(IpipDesired::default());
    }
    let me = &cfg.node_name;
    let local = view
        .nodes
        .get(me)
        .ok_or_else(|| IpipNotReady::NoLocalNode(me.clone()))?;
    let address = local
        .spec
        .ipv4_ipip_tunnel_addr
        .ok_or_else(|| IpipNotReady::NoTunnelAddr(me.clone()))?;
    let subnet = local_subnet(cfg, local);
    let mut routes = BTreeMap::new();
    for (block, owner) in &view.blocks {
        let IpNet::V4(_) = block else {
            continue;
        };
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
        if ipip_towards(pool, subnet, remote4) && ipip_ready(local, remote) {
            routes.insert(*block, IpAddr::V4(remote4));
        }
    }
    Ok(IpipDesired {
        device: Some(IpipDeviceSpec {
            name: IPIP_DEVICE.to_string(),
            mtu,
            address,
        }),
        routes,
        pools,
    })
}

#[cfg(test)]
#[path = "ipip_tests.rs"]
mod tests;
