use std::collections::BTreeMap;

use ipnet::IpNet;
use trellis_datastore::resources::bgp::{
    BgpConfigurationSpec, Community, PrefixAdvertisement, ServiceIpBlock,
};
use trellis_datastore::resources::ipam::{Allocation, AllocationAttributes};
use trellis_datastore::resources::{IpPool, IpPoolSpec, IpamBlockSpec};
use trellis_datastore::ObjectMeta;

use super::desired_originations;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn block(cidr: &str, node: Option<&str>, allocs: &[(u32, &str)]) -> IpamBlockSpec {
    IpamBlockSpec {
        cidr: net(cidr),
        affinity: node.map(|n| format!("host:{n}")),
        allocations: allocs
            .iter()
            .map(|(ord, node)| {
                (
                    *ord,
                    Allocation {
                        handle: format!("h{ord}"),
                        attributes: AllocationAttributes {
                            node: Some(node.to_string()),
                            ..Default::default()
                        },
                    },
                )
            })
            .collect(),
        unallocated: vec![],
    }
}

fn pool(name: &str, cidr: &str, export: bool) -> IpPool {
    let mut spec = IpPoolSpec::new(net(cidr));
    spec.disable_bgp_export = !export;
    IpPool::new(ObjectMeta::named(name), spec)
}

fn prefixes(m: &BTreeMap<IpNet, trellis_bgp_speaker::speaker::LocalRoute>) -> Vec<String> {
    m.keys().map(ToString::to_string).collect()
}

#[test]
fn own_blocks_aggregate_and_borrowed_addresses_go_as_host_routes() {
    let blocks = [
        block("10.244.0.0/26", Some("n1"), &[]),
        block("10.244.0.64/26", Some("n1"), &[]),
        block("10.244.1.0/26", Some("n1"), &[]),
        block("10.244.2.0/26", Some("n2"), &[(5, "n1"), (6, "n2")]),
        block("fd00:10:244::/122", Some("n1"), &[]),
        block("10.244.3.0/26", None, &[]),
    ];
    let pools = [pool("default", "10.244.0.0/16", true)];
    let got = desired_originations("n1", &blocks, &pools, &BgpConfigurationSpec::default());
    assert_eq!(
        prefixes(&got),
        [
            "10.244.0.0/25",
            "10.244.1.0/26",
            "10.244.2.5/32",
            "fd00:10:244::/122"
        ]
    );
    assert!(got.values().all(|r| r.communities.is_empty()));
    // n2 owns its block and not the address n1 borrowed from it.
    let got = desired_originations("n2", &blocks, &pools, &BgpConfigurationSpec::default());
    assert_eq!(prefixes(&got), ["10.244.2.0/26"]);
}

#[test]
fn pools_with_bgp_export_disabled_are_not_advertised() {
    let blocks = [
        block("10.244.0.0/26", Some("n1"), &[]),
        block("10.250.0.0/26", Some("n1"), &[]),
    ];
    let pools = [
        pool("default", "10.244.0.0/16", true),
        pool("private", "10.250.0.0/16", false),
    ];
    let got = desired_originations("n1", &blocks, &pools, &BgpConfigurationSpec::default());
    assert_eq!(prefixes(&got), ["10.244.0.0/26"]);
}

#[test]
fn service_ranges_and_communities() {
    let cfg = BgpConfigurationSpec {
        service_cluster_ips: vec![ServiceIpBlock {
            cidr: net("10.96.0.0/12"),
        }],
        service_external_ips: vec![ServiceIpBlock {
            cidr: net("192.0.2.0/24"),
        }],
        service_load_balancer_ips: vec![ServiceIpBlock {
            cidr: net("198.51.100.0/24"),
        }],
        communities: vec![Community {
            name: "pods".into(),
            value: "64512:100".into(),
        }],
        prefix_advertisements: vec![
            PrefixAdvertisement {
                cidr: net("10.244.0.0/16"),
                communities: vec!["pods".into(), "64512:1:2".into()],
            },
            PrefixAdvertisement {
                cidr: net("10.244.0.0/24"),
                communities: vec!["65000:7".into(), "pods".into()],
            },
        ],
        ..Default::default()
    };
    let blocks = [
        block("10.244.0.0/26", Some("n1"), &[]),
        block("10.244.9.0/26", Some("n1"), &[]),
    ];
    let got = desired_originations("n1", &blocks, &[], &cfg);
    assert_eq!(
        prefixes(&got),
        [
            "10.96.0.0/12",
            "10.244.0.0/26",
            "10.244.9.0/26",
            "192.0.2.0/24",
            "198.51.100.0/24"
        ]
    );
    let first = &got[&net("10.244.0.0/26")];
    assert_eq!(first.communities, [64512 << 16 | 100, 65000 << 16 | 7]);
    assert_eq!(first.large_communities, [(64512, 1, 2)]);
    let other = &got[&net("10.244.9.0/26")];
    assert_eq!(other.communities, [64512 << 16 | 100]);
    assert!(got[&net("10.96.0.0/12")].communities.is_empty());
}
