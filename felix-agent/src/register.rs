//! Registering this node in the datastore: create its Node, or update the addresses of an
//! existing one while keeping everything else (labels, BGP settings) an operator set.

use std::net::IpAddr;

use trellis_datastore::codec;
use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
use trellis_datastore::resources::{Node, NodeSpec};
use trellis_datastore::{keys, Datastore, DatastoreError, ObjectMeta};

/// Writes the node with `addresses` (its IPv4 and, on a dual-stack underlay, IPv6 address) as
/// its Trellis node IPs; an empty slice leaves the recorded addresses alone. Retries a lost
/// compare-and-swap.
pub async fn register_node(
    ds: &dyn Datastore,
    name: &str,
    addresses: &[IpAddr],
) -> Result<Node, DatastoreError> {
    loop {
        let current = codec::get_object::<NodeSpec>(ds, &keys::node(name)).await?;
        let (mut node, revision) = match current {
            Some(v) => (v.value, Some(v.revision)),
            None => (
                Node::new(ObjectMeta::named(name), NodeSpec::default()),
                None,
            ),
        };
        if !addresses.is_empty() {
            node.spec
                .addresses
                .retain(|a| a.kind != NodeAddressType::TrellisNodeIP);
            for (i, ip) in addresses.iter().enumerate() {
                node.spec.addresses.insert(
                    i,
                    NodeAddress {
                        address: *ip,
                        kind: NodeAddressType::TrellisNodeIP,
                    },
                );
            }
        }
        let value = codec::encode_object(&node)?;
        let res = match revision {
            Some(rev) => ds.update(&node.key(), value, rev).await,
            None => ds.create(&node.key(), value).await,
        };
        match res {
            Ok(_) => return Ok(node),
            Err(e) if e.lost_race() => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_datastore::memory::MemoryDatastore;

    #[tokio::test]
    async fn registration_keeps_operator_fields() {
        let ds = MemoryDatastore::new();
        let n = register_node(&ds, "node-1", &["192.0.2.1".parse().unwrap()])
            .await
            .unwrap();
        assert_eq!(n.spec.ipv4(), Some("192.0.2.1".parse().unwrap()));
        // An operator labels the node; the agent restarts with a new address.
        let mut stored = codec::get_object::<NodeSpec>(&ds, "nodes/node-1")
            .await
            .unwrap()
            .unwrap();
        stored
            .value
            .metadata
            .labels
            .insert("rack".into(), "a".into());
        ds.put("nodes/node-1", codec::encode_object(&stored.value).unwrap())
            .await
            .unwrap();
        let n = register_node(
            &ds,
            "node-1",
            &["192.0.2.9".parse().unwrap(), "2001:db8::9".parse().unwrap()],
        )
        .await
        .unwrap();
        assert_eq!(n.metadata.labels.get("rack").map(String::as_str), Some("a"));
        assert_eq!(n.spec.addresses.len(), 2, "{:?}", n.spec.addresses);
        assert_eq!(n.spec.ipv4(), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(n.spec.ipv6(), Some("2001:db8::9".parse().unwrap()));
        // Restarted without an IPv6 address: the old one goes.
        let n = register_node(&ds, "node-1", &["192.0.2.9".parse().unwrap()])
            .await
            .unwrap();
        assert_eq!(n.spec.ipv6(), None);
    }
}
