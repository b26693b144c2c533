use super::*;
use trellis_datastore::resources::{IpPoolSpec, IpamConfigSpec};
use trellis_datastore::ObjectMeta;

fn pool(name: &str, cidr: &str, block: Option<u8>) -> IpPool {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.block_size = block;
    IpPool::new(ObjectMeta::named(name), spec)
}

fn summary(cidr: &str, node: Option<&str>, free: usize) -> BlockSummary {
    BlockSummary {
        cidr: cidr.parse().unwrap(),
        node: node.map(str::to_string),
        free,
    }
}

#[test]
fn eligibility_filters_family_disabled_selector_and_request() {
    let mut disabled = pool("off", "10.9.0.0/16", None);
    disabled.spec.disabled = true;
    let mut rack_a = pool("rack-a", "10.8.0.0/16", None);
    rack_a.spec.node_selector = "rack == 'a'".into();
    let pools = vec![
        pool("v4", "10.0.0.0/16", None),
        pool("v6", "fd00::/64", None),
        disabled,
        rack_a,
    ];
    let none = BTreeMap::new();
    let names = |v: Vec<&IpPool>| {
        v.iter()
            .map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(eligible_pools(
            &pools,
            Family::V4,
            &none,
            &[],
            AllocationKind::Pod
        )),
        ["v4"]
    );
    assert_eq!(
        names(eligible_pools(
            &pools,
            Family::V6,
            &none,
            &[],
            AllocationKind::Pod
        )),
        ["v6"]
    );
    let a = BTreeMap::from([("rack".to_string(), "a".to_string())]);
    assert_eq!(
        names(eligible_pools(
            &pools,
            Family::V4,
            &a,
            &[],
            AllocationKind::Pod
        )),
        ["v4", "rack-a"]
    );
    let req = vec!["10.8.0.0/16".to_string()];
    assert_eq!(
        names(eligible_pools(
            &pools,
            Family::V4,
            &a,
            &req,
            AllocationKind::Pod
        )),
        ["rack-a"]
    );
    let req = vec!["off".to_string()];
    assert!(eligible_pools(&pools, Family::V4, &a, &req, AllocationKind::Pod).is_empty());
}

#[test]
fn affine_candidates_prefer_fuller_blocks_in_usable_pools() {
    let pools = [pool("p", "10.0.0.0/16", None)];
    let refs: Vec<&IpPool> = pools.iter().collect();
    let blocks = vec![
        summary("10.0.0.0/26", Some("n1"), 60),
        summary("10.0.0.64/26", Some("n1"), 3),
        summary("10.0.0.128/26", Some("n1"), 0),
        summary("10.0.0.192/26", Some("n2"), 64),
        summary("10.1.0.0/26", Some("n1"), 64), // pool gone or not eligible
    ];
    let c = affine_candidates("n1", &blocks, &refs);
    assert_eq!(
        c,
        vec![
            "10.0.0.64/26".parse::<IpNet>().unwrap(),
            "10.0.0.0/26".parse().unwrap()
        ]
    );
}

#[test]
fn max_blocks_per_host_and_auto_allocate() {
    let mut cfg = IpamConfigSpec::default();
    assert!(may_claim(&cfg, 1000).is_ok());
    cfg.max_blocks_per_host = 2;
    assert!(may_claim(&cfg, 1).is_ok());
    assert!(may_claim(&cfg, 2)
        .unwrap_err()
        .contains("maxBlocksPerHost is 2"));
    cfg.auto_allocate_blocks = false;
    assert!(may_claim(&cfg, 0)
        .unwrap_err()
        .contains("autoAllocateBlocks"));
}

#[test]
fn unclaimed_blocks_cover_the_pool_then_run_out() {
    let p = pool("p", "10.0.0.0/24", None); // four /26 blocks
    let mut taken = BTreeSet::new();
    for _ in 0..4 {
        let b = unclaimed_block(&p, &taken, node_seed("n1")).unwrap();
        assert!(p.spec.cidr.contains(&b) && b.prefix_len() == 26);
        assert!(taken.insert(b), "{b} handed out twice");
    }
    assert_eq!(
        unclaimed_block(&p, &taken, node_seed("n1")),
        None,
        "full pool"
    );
}

#[test]
fn single_address_pools_and_ipv6() {
    let p = pool("one", "192.0.2.7/32", Some(32));
    let b = unclaimed_block(&p, &BTreeSet::new(), 99).unwrap();
    assert_eq!(b, "192.0.2.7/32".parse::<IpNet>().unwrap());
    assert_eq!(unclaimed_block(&p, &BTreeSet::from([b]), 99), None);

    // 2^58 blocks: the search must not walk the pool.
    let p6 = pool("v6", "fd00:1::/64", None);
    let b = unclaimed_block(&p6, &BTreeSet::new(), node_seed("n1")).unwrap();
    assert!(p6.spec.cidr.contains(&b) && b.prefix_len() == 122);
    let b2 = unclaimed_block(&p6, &BTreeSet::from([b]), node_seed("n1")).unwrap();
    assert_ne!(b, b2);
    assert_ne!(node_seed("n1"), node_seed("n2"));
}

#[test]
fn borrowing_respects_strict_affinity() {
    let pools = [pool("p", "10.0.0.0/16", None)];
    let refs: Vec<&IpPool> = pools.iter().collect();
    let blocks = vec![
        summary("10.0.0.0/26", Some("n1"), 5),
        summary("10.0.0.64/26", Some("n2"), 10),
        summary("10.0.0.128/26", None, 20),
        summary("10.0.0.192/26", Some("n3"), 0),
    ];
    let mut cfg = IpamConfigSpec::default();
    let c = borrow_candidates(&cfg, "n1", &blocks, &refs);
    assert_eq!(
        c,
        vec![
            "10.0.0.128/26".parse::<IpNet>().unwrap(),
            "10.0.0.64/26".parse().unwrap()
        ]
    );
    cfg.strict_affinity = true;
    assert!(borrow_candidates(&cfg, "n1", &blocks, &refs).is_empty());
}
