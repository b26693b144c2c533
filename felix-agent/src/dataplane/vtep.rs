//! This node's tunnel addresses. VXLAN: an address from one of its blocks (held by an IPAM handle
//! of kind VxlanTunnel, as Calico does) and a MAC, both recorded in its Node so other nodes can
//! program ARP, FDB and routes towards it. IPIP: an address from one of its blocks held by the
//! handle `ipip-tunnel-addr-NODE` (kind IpipTunnel), recorded as `ipv4IPIPTunnelAddr` and put on
//! `tunl0`, as Calico's `allocateip` does; other nodes take its presence as the sign that this
//! node decapsulates IPIP (see `ipip`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use trellis_datastore::codec;
use trellis_datastore::resources::ipam::{AllocationAttributes, AllocationKind};
use trellis_datastore::resources::{EncapMode, IpPoolSpec, Node, NodeSpec};
use trellis_datastore::{keys, Datastore, DatastoreError};
use trellis_ipam::{AssignRequest, IpamError, NodeIpam};

use super::vxlan::VxlanFamily;

/// The IPAM handle holding a node's VTEP address.
pub fn vtep_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// The IPAM handle holding a node's IPv6 VTEP address (Calico's name).
pub fn vtep_handle_v6(node: &str) -> String {
    format!("vxlan-v6-tunnel-addr-{node}")
}

#[derive(Debug, thiserror::Error)]
pub enum VtepError {
    #[error("VTEP of node {node}: {source}")]
    Datastore {
        node: String,
        source: DatastoreError,
    },
    #[error("VTEP address of node {node}: {source}")]
    Ipam { node: String, source: IpamError },
    #[error("VTEP of node {node}: the node is not registered")]
    NoNode { node: String },
}

/// The IPAM handle holding a node's IPIP tunnel address (Calico's name).
pub fn ipip_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// This node's VTEPs, one per pod address family that needs VXLAN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vteps {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// The node with them recorded: as stored after [`record_vteps`] (`resourceVersion`
    /// included, as a watch delivers it), or as it will be stored after [`plan_vteps`]; `None`
    /// when no family needs VXLAN.
    pub node: Option<Node>,
}

/// Makes sure this node has a VTEP for each address family with an enabled pool whose
/// `vxlanMode` is not `Never`: [`plan_vteps`] then [`record_vteps`].
pub async fn ensure_vtep(
    ds: &dyn Datastore,
    ipam: &NodeIpam,
    node: &str,
) -> Result<Vteps, VtepError> {
    let mut vteps = plan_vteps(ds, ipam, node).await?;
    if let Some(stored) = record_vteps(ds, node, &vteps).await? {
        vteps.node = Some(stored);
    }
    Ok(vteps)
}

/// The VTEP of each address family with an enabled pool whose `vxlanMode` is not `Never`: an
/// address held by [`vtep_handle`] (IPv4) or [`vtep_handle_v6`] (IPv6), allocated now if none is
/// held (kept across restarts), and the node as it will be once [`record_vteps`] has written
/// them into `spec.ipv4VXLANTunnelAddr` / `spec.vxlanTunnelMACAddr` and
/// `spec.ipv6VXLANTunnelAddr` / `spec.vxlanTunnelMACAddrV6`. The Node is not written: the
/// agent builds its VXLAN devices from this first, so that no other node sends to a VTEP whose
/// device does not exist yet. Families without such a pool are left as they are.
pub async fn plan_vteps(
    ds: &dyn Datastore,
    ipam: &NodeIpam,
    node: &str,
) -> Result<Vteps, VtepError> {
    let dse = |source| VtepError::Datastore {
        node: node.to_string(),
        source,
    };
    let pools = codec::list_objects::<IpPoolSpec>(ds).await.map_err(dse)?;
    let vxlan_pools = |family: VxlanFamily| -> Vec<String> {
        pools
            .iter()
            .filter(|p| {
                family.has_net(&p.value.spec.cidr)
                    && !p.value.spec.disabled
                    && p.value.spec.vxlan_mode != EncapMode::Never
            })
            .map(|p| p.value.metadata.name.clone())
            .collect()
    };
    let mut out = Vteps::default();
    for family in [VxlanFamily::V4, VxlanFamily::V6] {
        let pools = vxlan_pools(family);
        if pools.is_empty() {
            continue;
        }
        match vtep_address(ipam, ds, node, family, pools).await? {
            IpAddr::V4(a) => out.v4 = Some(a),
            IpAddr::V6(a) => out.v6 = Some(a),
        }
    }
    if out.v4.is_none() && out.v6.is_none() {
        return Ok(out);
    }
    let Some(mut stored) = codec::get_object::<NodeSpec>(ds, &keys::node(node))
        .await
        .map_err(dse)?
    else {
        return Err(VtepError::NoNode {
            node: node.to_string(),
        });
    };
    stored.value = with_vteps(stored.value, &out);
    out.node = Some(stored.value);
    Ok(out)
}

/// Writes `vteps` (from [`plan_vteps`]) into the stored Node; returns the node as stored, or
/// `None` when there is nothing to record.
pub async fn record_vteps(
    ds: &dyn Datastore,
    node: &str,
    vteps: &Vteps,
) -> Result<Option<Node>, VtepError> {
    if vteps.v4.is_none() && vteps.v6.is_none() {
        return Ok(None);
    }
    update_node(ds, node, |spec| set_vteps(spec, node, vteps))
        .await
        .map(Some)
}

/// `node` with each VTEP of `vteps` and its family's MAC in its spec (as [`record_vteps`] will
/// store them).
pub fn with_vteps(mut node: Node, vteps: &Vteps) -> Node {
    let name = node.metadata.name.clone();
    set_vteps(&mut node.spec, &name, vteps);
    node
}

/// Puts each VTEP of `vteps` and its family's MAC into `spec`; whether anything changed.
fn set_vteps(spec: &mut NodeSpec, node: &str, vteps: &Vteps) -> bool {
    let mut changed = false;
    let families = [
        (VxlanFamily::V4, vteps.v4.map(IpAddr::V4)),
        (VxlanFamily::V6, vteps.v6.map(IpAddr::V6)),
    ];
    for (family, address) in families {
        let Some(address) = address else { continue };
        let mac = family.default_mac(node).to_string();
        let (addr_now, mac_slot) = match (family, address) {
            (VxlanFamily::V4, IpAddr::V4(a)) => (
                spec.ipv4_vxlan_tunnel_addr.replace(a).map(IpAddr::V4),
                &mut spec.vxlan_tunnel_mac_addr,
            ),
            (VxlanFamily::V6, IpAddr::V6(a)) => (
                spec.ipv6_vxlan_tunnel_addr.replace(a).map(IpAddr::V6),
                &mut spec.vxlan_tunnel_mac_addr_v6,
            ),
            _ => unreachable!("the VTEP address is of its family"),
        };
        let mac_now = mac_slot.replace(mac.clone());
        if addr_now != Some(address) || mac_now.as_deref() != Some(mac.as_str()) {
            tracing::info!(%node, vtep = %address, %mac, device = family.device(), "VXLAN tunnel endpoint");
            changed = true;
        }
    }
    changed
}

/// The address `family`'s VTEP handle holds, or a new one from `pools`.
async fn vtep_address(
    ipam: &NodeIpam,
    ds: &dyn Datastore,
    node: &str,
    family: VxlanFamily,
    pools: Vec<String>,
) -> Result<IpAddr, VtepError> {
    let handle = match family {
        VxlanFamily::V4 => vtep_handle(node),
        VxlanFamily::V6 => vtep_handle_v6(node),
    };
    let v6 = family == VxlanFamily::V6;
    tunnel_address(
        ipam,
        ds,
        node,
        handle,
        AllocationKind::VxlanTunnel,
        v6,
        pools,
    )
    .await
}

/// The address of `v6`'s family that `handle` holds, or a new one of kind `kind` from `pools`
/// (an affine block of this node first, as for pods).
async fn tunnel_address(
    ipam: &NodeIpam,
    ds: &dyn Datastore,
    node: &str,
    handle: String,
    kind: AllocationKind,
    v6: bool,
    pools: Vec<String>,
) -> Result<IpAddr, VtepError> {
    let ipam_err = |source| VtepError::Ipam {
        node: node.to_string(),
        source,
    };
    let held = trellis_ipam::store::addresses_of(ds, &handle)
        .await
        .map_err(ipam_err)?;
    if let Some(a) = held.iter().find(|ip| ip.is_ipv6() == v6) {
        return Ok(*a);
    }
    let req = AssignRequest {
        handle,
        attrs: AllocationAttributes {
            kind,
            node: Some(node.to_string()),
            ..Default::default()
        },
        num_v4: usize::from(!v6),
        num_v6: usize::from(v6),
        v4_pools: if v6 { Vec::new() } else { pools.clone() },
        v6_pools: if v6 { pools } else { Vec::new() },
    };
    let got = ipam.auto_assign(&req).await.map_err(ipam_err)?;
    let got = if v6 { &got.v6 } else { &got.v4 };
    Ok(*got
        .first()
        .expect("auto_assign returns the address it was asked for"))
}

/// Makes sure this node has an IPIP tunnel address when an enabled IPv4 pool has an `ipipMode`
/// other than `Never`: an address held by [`ipip_handle`], recorded in
/// `spec.ipv4IPIPTunnelAddr`. Returns the node as stored, or `None` when no pool uses IPIP (an
/// address held from before is kept, as the VTEP is: switching back needs no new allocation).
pub async fn ensure_ipip_tunnel_addr(
    ds: &dyn Datastore,
    ipam: &NodeIpam,
    node: &str,
) -> Result<Option<Node>, VtepError> {
    let dse = |source| VtepError::Datastore {
        node: node.to_string(),
        source,
    };
    let pools: Vec<String> = codec::list_objects::<IpPoolSpec>(ds)
        .await
        .map_err(dse)?
        .into_iter()
        .filter(|p| {
            let s = &p.value.spec;
            s.cidr.addr().is_ipv4() && !s.disabled && s.ipip_mode != EncapMode::Never
        })
        .map(|p| p.value.metadata.name)
        .collect();
    if pools.is_empty() {
        return Ok(None);
    }
    let handle = ipip_handle(node);
    let address = tunnel_address(
        ipam,
        ds,
        node,
        handle,
        AllocationKind::IpipTunnel,
        false,
        pools,
    )
    .await?;
    let IpAddr::V4(address) = address else {
        unreachable!("an IPv4 allocation")
    };
    update_node(ds, node, |spec| {
        if spec.ipv4_ipip_tunnel_addr == Some(address) {
            return false;
        }
        spec.ipv4_ipip_tunnel_addr = Some(address);
        tracing::info!(%node, address = %address, "recorded IPIP tunnel address");
        true
    })
    .await
    .map(Some)
}

/// Applies `change` to the stored Node (compare-and-swap, retried on a lost race); `change`
/// returns whether it changed anything. Returns the node as stored.
async fn update_node(
    ds: &dyn Datastore,
    node: &str,
    mut change: impl FnMut(&mut NodeSpec) -> bool,
) -> Result<Node, VtepError> {
    let dse = |source| VtepError::Datastore {
        node: node.to_string(),
        source,
    };
    loop {
        let current = codec::get_object::<NodeSpec>(ds, &keys::node(node))
            .await
            .map_err(dse)?;
        let Some(mut n) = current else {
            return Err(VtepError::NoNode {
                node: node.to_string(),
            });
        };
        if !change(&mut n.value.spec) {
            return Ok(n.value);
        }
        let value = codec::encode_object(&n.value).map_err(dse)?;
        match ds.update(&n.key, value, n.revision).await {
            Ok(revision) => {
                n.value.metadata.resource_version = Some(revision.to_string());
                return Ok(n.value);
            }
            Err(e) if e.lost_race() => continue,
            Err(e) => return Err(dse(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trellis_datastore::memory::MemoryDatastore;
    use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
    use trellis_datastore::resources::{IpPool, Node};
    use trellis_datastore::ObjectMeta;

    use super::*;
    use crate::dataplane::vxlan::{vtep_mac_for, vtep_mac_v6_for};

    async fn put<T: serde::Serialize>(ds: &dyn Datastore, key: &str, obj: &T) {
        ds.put(key, serde_json::to_vec(obj).unwrap()).await.unwrap();
    }

    async fn pool(ds: &dyn Datastore, name: &str, cidr: &str, mode: EncapMode) {
        let mut p = IpPool::new(
            ObjectMeta::named(name),
            IpPoolSpec::new(cidr.parse().unwrap()),
        );
        p.spec.vxlan_mode = mode;
        put(ds, &format!("ippools/{name}"), &p).await;
    }

    /// Node n1 at 172.30.0.1, as the agent registers it.
    async fn node_n1(ds: &dyn Datastore) {
        let spec = NodeSpec {
            addresses: vec![NodeAddress {
                address: "172.30.0.1".parse().unwrap(),
                kind: NodeAddressType::TrellisNodeIP,
            }],
            ..Default::default()
        };
        put(ds, "nodes/n1", &Node::new(ObjectMeta::named("n1"), spec)).await;
    }

    #[tokio::test]
    async fn dual_stack_node_gets_a_vtep_per_family_once() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        pool(ds.as_ref(), "v4", "10.244.0.0/16", EncapMode::Always).await;
        pool(ds.as_ref(), "v6", "fd00:244::/64", EncapMode::Never).await;
        node_n1(ds.as_ref()).await;
        let ipam = NodeIpam::new(ds.clone(), "n1");

        let only_v4 = ensure_vtep(ds.as_ref(), &ipam, "n1").await.unwrap();
        assert!(only_v4.v4.is_some() && only_v4.v6.is_none(), "{only_v4:?}");

        pool(ds.as_ref(), "v6", "fd00:244::/64", EncapMode::CrossSubnet).await;
        let both = ensure_vtep(ds.as_ref(), &ipam, "n1").await.unwrap();
        assert_eq!(both.v4, only_v4.v4, "the IPv4 VTEP is kept");
        let v6 = both.v6.expect("an IPv6 VTEP");
        assert!("fd00:244::/64"
            .parse::<ipnet::Ipv6Net>()
            .unwrap()
            .contains(&v6));
        assert_eq!(
            trellis_ipam::store::addresses_of(ds.as_ref(), &vtep_handle_v6("n1"))
                .await
                .unwrap(),
            vec![IpAddr::V6(v6)]
        );
        let n = codec::get_object::<NodeSpec>(ds.as_ref(), &keys::node("n1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.value.spec.ipv6_vxlan_tunnel_addr, Some(v6));
        assert_eq!(
            n.value.spec.vxlan_tunnel_mac_addr_v6,
            Some(vtep_mac_v6_for("n1"))
        );
        assert_eq!(n.value.spec.vxlan_tunnel_mac_addr, Some(vtep_mac_for("n1")));
        assert_eq!(both.node.as_ref(), Some(&n.value), "the node as stored");

        let again = ensure_vtep(ds.as_ref(), &ipam, "n1").await.unwrap();
        assert_eq!(again, both, "idempotent");
        let report = trellis_ipam::check(ds.as_ref()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }

    #[tokio::test]
    async fn ipip_pool_gets_a_tunnel_address_from_the_node_block_once() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        pool(ds.as_ref(), "v4", "10.244.0.0/16", EncapMode::Never).await;
        node_n1(ds.as_ref()).await;
        let ipam = NodeIpam::new(ds.clone(), "n1");
        assert_eq!(
            ensure_ipip_tunnel_addr(ds.as_ref(), &ipam, "n1")
                .await
                .unwrap(),
            None,
            "no IPIP pool: no address"
        );
        let mut p = IpPool::new(
            ObjectMeta::named("v4"),
            IpPoolSpec::new("10.244.0.0/16".parse().unwrap()),
        );
        p.spec.ipip_mode = EncapMode::CrossSubnet;
        put(ds.as_ref(), "ippools/v4", &p).await;
        let n = ensure_ipip_tunnel_addr(ds.as_ref(), &ipam, "n1")
            .await
            .unwrap()
            .expect("the node as stored");
        let addr = n
            .spec
            .ipv4_ipip_tunnel_addr
            .expect("an IPIP tunnel address");
        assert!("10.244.0.0/16"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&addr));
        assert_eq!(
            trellis_ipam::store::addresses_of(ds.as_ref(), &ipip_handle("n1"))
                .await
                .unwrap(),
            vec![IpAddr::V4(addr)]
        );
        assert_eq!(
            n.spec.ipv4_vxlan_tunnel_addr, None,
            "no VTEP for an IPIP pool"
        );
        let again = ensure_ipip_tunnel_addr(ds.as_ref(), &ipam, "n1")
            .await
            .unwrap();
        assert_eq!(again, Some(n), "idempotent");
        let report = trellis_ipam::check(ds.as_ref()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }
}
