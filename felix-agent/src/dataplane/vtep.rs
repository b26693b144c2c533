//! This node's VXLAN tunnel endpoint: an address from one of its blocks (held by an IPAM handle
//! of kind VxlanTunnel, as Calico does) and a MAC, both recorded in its Node so other nodes can
//! program ARP, FDB and routes towards it.

use std::net::{IpAddr, Ipv4Addr};

use trellis_datastore::codec;
use trellis_datastore::resources::ipam::{AllocationAttributes, AllocationKind};
use trellis_datastore::resources::{EncapMode, IpPoolSpec, NodeSpec};
use trellis_datastore::{keys, Datastore, DatastoreError};
use trellis_ipam::{AssignRequest, IpamError, NodeIpam};

use super::vxlan::vtep_mac_for;

/// The IPAM handle holding a node's VTEP address.
pub fn vtep_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
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

/// Makes sure the node has a VTEP address and MAC when an enabled IPv4 pool uses VXLAN.
/// Returns the VTEP address, or `None` when no pool needs one. Idempotent.
pub async fn ensure_vtep(
    ds: &dyn Datastore,
    ipam: &NodeIpam,
    node: &str,
) -> Result<Option<Ipv4Addr>, VtepError> {
    let dse = |source| VtepError::Datastore {
        node: node.to_string(),
        source,
    };
    let pools = codec::list_objects::<IpPoolSpec>(ds).await.map_err(dse)?;
    let vxlan_pools: Vec<String> = pools
        .iter()
        .filter(|p| {
            p.value.spec.cidr.addr().is_ipv4()
                && !p.value.spec.disabled
                && p.value.spec.vxlan_mode != EncapMode::Never
        })
        .map(|p| p.value.metadata.name.clone())
        .collect();
    if vxlan_pools.is_empty() {
        return Ok(None);
    }
    let handle = vtep_handle(node);
    let held = trellis_ipam::store::addresses_of(ds, &handle)
        .await
        .map_err(|source| VtepError::Ipam {
            node: node.to_string(),
            source,
        })?;
    let held_v4: Vec<Ipv4Addr> = held
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    let address = match held_v4.first() {
        Some(a) => *a,
        None => {
            let req = AssignRequest {
                handle: handle.clone(),
                attrs: AllocationAttributes {
                    kind: AllocationKind::VxlanTunnel,
                    node: Some(node.to_string()),
                    ..Default::default()
                },
                num_v4: 1,
                v4_pools: vxlan_pools,
                ..Default::default()
            };
            let got = ipam
                .auto_assign(&req)
                .await
                .map_err(|source| VtepError::Ipam {
                    node: node.to_string(),
                    source,
                })?;
            match got.v4.first() {
                Some(IpAddr::V4(a)) => *a,
                _ => unreachable!("auto_assign returns the IPv4 address it was asked for"),
            }
        }
    };
    let mac = vtep_mac_for(node).to_string();
    loop {
        let current = codec::get_object::<NodeSpec>(ds, &keys::node(node))
            .await
            .map_err(dse)?;
        let Some(mut n) = current else {
            return Err(VtepError::NoNode {
                node: node.to_string(),
            });
        };
        if n.value.spec.ipv4_vxlan_tunnel_addr == Some(address)
            && n.value.spec.vxlan_tunnel_mac_addr.as_deref() == Some(mac.as_str())
        {
            return Ok(Some(address));
        }
        n.value.spec.ipv4_vxlan_tunnel_addr = Some(address);
        n.value.spec.vxlan_tunnel_mac_addr = Some(mac.clone());
        let value = codec::encode_object(&n.value).map_err(dse)?;
        match ds.update(&n.key, value, n.revision).await {
            Ok(_) => {
                tracing::info!(%node, vtep = %address, %mac, "recorded VXLAN tunnel endpoint");
                return Ok(Some(address));
            }
            Err(e) if e.lost_race() => continue,
            Err(e) => return Err(dse(e)),
        }
    }
}
