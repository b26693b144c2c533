//! Scenarios shared by the in-memory and the real-etcd test binaries: each takes a fresh,
//! empty datastore and asserts IPAM behaviour end to end.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use trellis_datastore::codec;
use trellis_datastore::resources::ipam::{AllocationAttributes, IpamConfigSpec};
use trellis_datastore::resources::workload_endpoint::WorkloadEndpointSpec;
use trellis_datastore::resources::{
    IpPool, IpPoolSpec, IpamConfig, Node, NodeSpec, WorkloadEndpoint,
};
use trellis_datastore::{keys, Datastore, ObjectMeta};
use trellis_ipam::{check, gc, AssignRequest, IpamError, NodeIpam};

pub async fn put_pool(ds: &dyn Datastore, name: &str, cidr: &str, block: Option<u8>) -> IpPool {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.block_size = block;
    let pool = IpPool::new(ObjectMeta::named(name), spec);
    pool.validate().unwrap();
    ds.put(&pool.key(), codec::encode_object(&pool).unwrap())
        .await
        .unwrap();
    pool
}

pub async fn put_node(ds: &dyn Datastore, name: &str) {
    let node = Node::new(ObjectMeta::named(name), NodeSpec::default());
    ds.put(&node.key(), codec::encode_object(&node).unwrap())
        .await
        .unwrap();
}

pub async fn put_config(ds: &dyn Datastore, strict: bool, max_blocks: u32) {
    let cfg = IpamConfig::new(
        ObjectMeta::named("default"),
        IpamConfigSpec {
            strict_affinity: strict,
            max_blocks_per_host: max_blocks,
            auto_allocate_blocks: true,
        },
    );
    ds.put(&cfg.key(), codec::encode_object(&cfg).unwrap())
        .await
        .unwrap();
}

/// A workload endpoint for `handle` using `ips`, as the CNI path would write it.
pub async fn put_endpoint(ds: &dyn Datastore, node: &str, pod: &str, handle: &str, ips: &[IpAddr]) {
    let spec = WorkloadEndpointSpec {
        node: node.to_string(),
        orchestrator: "k8s".into(),
        pod: pod.to_string(),
        endpoint: "eth0".into(),
        container_id: handle.split('.').next().unwrap().to_string(),
        interface_name: "trellis0123456".into(),
        ip_networks: ips.iter().map(|ip| ipnet::IpNet::from(*ip)).collect(),
        handle_id: handle.to_string(),
        ..Default::default()
    };
    let wep = WorkloadEndpoint::new(ObjectMeta::namespaced("default", pod), spec);
    ds.put(&wep.key(), codec::encode_object(&wep).unwrap())
        .await
        .unwrap();
}

pub fn ipam(ds: &Arc<dyn Datastore>, node: &str) -> NodeIpam {
    NodeIpam::new(ds.clone(), node).with_topology_ttl(Duration::ZERO)
}

pub fn v4(handle: &str, n: usize) -> AssignRequest {
    AssignRequest {
        handle: handle.into(),
        num_v4: n,
        attrs: AllocationAttributes::default(),
        ..Default::default()
    }
}

async fn block_count(ds: &dyn Datastore) -> usize {
    ds.list(keys::IPAM_BLOCKS).await.unwrap().items.len()
}

// ---- scenarios -------------------------------------------------------------------------------

pub async fn claims_a_block_then_fills_it(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.0.0.0/16", Some(29)).await;
    put_node(ds.as_ref(), "n1").await;
    let n1 = ipam(&ds, "n1");
    let mut seen = BTreeSet::new();
    for i in 0..8 {
        let a = n1.auto_assign(&v4(&format!("c{i}.eth0"), 1)).await.unwrap();
        assert!(seen.insert(a.v4[0]));
    }
    assert_eq!(
        block_count(ds.as_ref()).await,
        1,
        "eight /32s fit in one /29"
    );
    let a = n1.auto_assign(&v4("c8.eth0", 1)).await.unwrap();
    assert!(seen.insert(a.v4[0]));
    assert_eq!(
        block_count(ds.as_ref()).await,
        2,
        "a full block makes the node claim another"
    );
    let aff = ds.list(&keys::affinities_of("n1")).await.unwrap();
    assert_eq!(aff.items.len(), 2);
}

pub async fn dual_stack_and_ipv6(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "v4", "10.1.0.0/16", None).await;
    put_pool(ds.as_ref(), "v6", "fd00:1::/64", None).await;
    let n1 = ipam(&ds, "n1");
    let req = AssignRequest {
        handle: "c1.eth0".into(),
        num_v4: 1,
        num_v6: 1,
        ..Default::default()
    };
    let a = n1.auto_assign(&req).await.unwrap();
    assert!(a.v4[0].is_ipv4() && a.v6[0].is_ipv6());
    let handle = trellis_ipam::store::get_handle(ds.as_ref(), "c1.eth0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.value.spec.blocks.values().sum::<u32>(), 2);
    let released = n1.release_handle("c1.eth0").await.unwrap();
    assert_eq!(released.len(), 2);
    assert!(trellis_ipam::store::get_handle(ds.as_ref(), "c1.eth0")
        .await
        .unwrap()
        .is_none());
    assert!(
        n1.release_handle("c1.eth0").await.unwrap().is_empty(),
        "release is idempotent"
    );
}

pub async fn failed_request_changes_nothing(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "v4", "10.2.0.0/24", None).await; // no IPv6 pool
    let n1 = ipam(&ds, "n1");
    let req = AssignRequest {
        handle: "c1.eth0".into(),
        num_v4: 1,
        num_v6: 1,
        ..Default::default()
    };
    let err = n1.auto_assign(&req).await.unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    assert!(
        err.to_string().contains("IPv6") && err.to_string().contains("n1"),
        "{err}"
    );
    let r = check(ds.as_ref()).await.unwrap();
    assert_eq!(
        r.allocations, 0,
        "the IPv4 address taken before the IPv6 failure was given back"
    );
    assert!(ds.list(keys::IPAM_HANDLES).await.unwrap().items.is_empty());
}

pub async fn single_address_pool_exhausts(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "one", "192.0.2.7/32", Some(32)).await;
    let n1 = ipam(&ds, "n1");
    let a = n1.auto_assign(&v4("a.eth0", 1)).await.unwrap();
    assert_eq!(a.v4, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
    let err = n1.auto_assign(&v4("b.eth0", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    n1.release_handle("a.eth0").await.unwrap();
    assert_eq!(
        n1.auto_assign(&v4("b.eth0", 1)).await.unwrap().v4,
        a.v4,
        "freed address is reusable"
    );
}

pub async fn borrows_when_the_pool_has_no_free_block(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.3.0.0/28", Some(29)).await; // two /29 blocks
    let (n1, n2, n3) = (ipam(&ds, "n1"), ipam(&ds, "n2"), ipam(&ds, "n3"));
    n1.auto_assign(&v4("a.eth0", 1)).await.unwrap();
    n2.auto_assign(&v4("b.eth0", 1)).await.unwrap();
    // Both blocks are claimed; n3 borrows.
    let got = n3.auto_assign(&v4("c.eth0", 3)).await.unwrap();
    assert_eq!(got.v4.len(), 3);
    assert!(
        ds.list(&keys::affinities_of("n3"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "n3 claimed nothing"
    );
    // Everything: 16 addresses; 5 used; take the remaining 11 then fail.
    n3.auto_assign(&v4("d.eth0", 11)).await.unwrap();
    let err = n3.auto_assign(&v4("e.eth0", 1)).await.unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
    let r = check(ds.as_ref()).await.unwrap();
    assert_eq!(r.allocations, 16);
    assert!(
        r.duplicates.is_empty() && r.handle_problems.is_empty() && r.block_problems.is_empty(),
        "{r}"
    );
}

pub async fn strict_affinity_forbids_borrowing(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.4.0.0/28", Some(29)).await;
    put_config(ds.as_ref(), true, 0).await;
    ipam(&ds, "n1").auto_assign(&v4("a.eth0", 1)).await.unwrap();
    ipam(&ds, "n2").auto_assign(&v4("b.eth0", 1)).await.unwrap();
    let err = ipam(&ds, "n3")
        .auto_assign(&v4("c.eth0", 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("strictAffinity"), "{err}");
    assert_eq!(
        check(ds.as_ref()).await.unwrap().allocations,
        2,
        "nothing was taken"
    );
}

pub async fn max_blocks_per_host(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.5.0.0/24", Some(30)).await;
    put_config(ds.as_ref(), false, 2).await;
    let n1 = ipam(&ds, "n1");
    n1.auto_assign(&v4("a.eth0", 8)).await.unwrap(); // two /30 blocks
    assert_eq!(
        ds.list(&keys::affinities_of("n1"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // A third block would exceed the limit; another node's block is borrowed from instead.
    ipam(&ds, "n2").auto_assign(&v4("b.eth0", 1)).await.unwrap();
    n1.auto_assign(&v4("c.eth0", 1)).await.unwrap();
    assert_eq!(
        ds.list(&keys::affinities_of("n1"))
            .await
            .unwrap()
            .items
            .len(),
        2,
        "limit held"
    );
    put_config(ds.as_ref(), true, 2).await;
    let err = n1.auto_assign(&v4("d.eth0", 3)).await.unwrap_err();
    assert!(err.to_string().contains("maxBlocksPerHost is 2"), "{err}");
}

pub async fn assign_specific_ip(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.6.0.0/16", None).await;
    let n1 = ipam(&ds, "n1");
    let ip: IpAddr = "10.6.3.9".parse().unwrap();
    n1.assign_ip(ip, "fixed.eth0", &AllocationAttributes::default())
        .await
        .unwrap();
    let err = ipam(&ds, "n2")
        .assign_ip(ip, "other.eth0", &AllocationAttributes::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IpamError::AlreadyAllocated { handle, .. } if handle == "fixed.eth0"),
        "{err}"
    );
    let err = n1
        .assign_ip(
            "10.7.0.1".parse().unwrap(),
            "x.eth0",
            &AllocationAttributes::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NotInPool { .. }), "{err}");
    assert_eq!(n1.release_ips(&[ip]).await.unwrap(), vec![ip]);
    assert!(
        n1.release_ips(&[ip]).await.unwrap().is_empty(),
        "second release is a no-op"
    );
}

pub async fn empty_extra_blocks_are_released(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.8.0.0/24", Some(30)).await;
    put_node(ds.as_ref(), "n1").await;
    let n1 = ipam(&ds, "n1");
    for i in 0..5 {
        n1.auto_assign(&v4(&format!("c{i}.eth0"), 1)).await.unwrap();
    }
    assert_eq!(block_count(ds.as_ref()).await, 2);
    // Emptying the first block while the second has room gives the first back.
    for i in 0..4 {
        n1.release_handle(&format!("c{i}.eth0")).await.unwrap();
    }
    assert_eq!(block_count(ds.as_ref()).await, 1);
    // The node's last block is kept even when empty.
    n1.release_handle("c4.eth0").await.unwrap();
    assert_eq!(block_count(ds.as_ref()).await, 1);
    let r = check(ds.as_ref()).await.unwrap();
    assert!(r.is_clean(), "{r}");
}

pub async fn check_finds_leaks_and_gc_cleans(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.9.0.0/16", None).await;
    put_node(ds.as_ref(), "n1").await;
    put_node(ds.as_ref(), "gone").await;
    let n1 = ipam(&ds, "n1");
    let used = n1.auto_assign(&v4("used.eth0", 1)).await.unwrap();
    put_endpoint(ds.as_ref(), "n1", "used", "used.eth0", &used.v4).await;
    n1.auto_assign(&v4("leaked.eth0", 1)).await.unwrap();
    ipam(&ds, "gone")
        .auto_assign(&v4("g.eth0", 1))
        .await
        .unwrap();
    ds.delete(&keys::node("gone"), None).await.unwrap();

    let r = check(ds.as_ref()).await.unwrap();
    assert_eq!(r.leaks.len(), 2, "{r}");
    assert!(r.leaks.iter().any(|l| l.handle == "leaked.eth0"));
    assert_eq!(r.missing_node_affinities.len(), 1, "{r}");
    assert!(r.duplicates.is_empty());

    let g = gc(ds.as_ref(), Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        g.young_leaks, 2,
        "fresh leaks are kept during the grace period"
    );
    assert_eq!(g.affinities_released.len(), 1);
    let g = gc(ds.as_ref(), Duration::ZERO).await.unwrap();
    assert_eq!(g.released.len(), 2, "{g}");
    let r = check(ds.as_ref()).await.unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.allocations, 1, "the used address stays");
}

pub async fn disabled_pool_is_not_used(ds: Arc<dyn Datastore>) {
    let mut pool = put_pool(ds.as_ref(), "p", "10.10.0.0/16", None).await;
    pool.spec.disabled = true;
    ds.put(&pool.key(), codec::encode_object(&pool).unwrap())
        .await
        .unwrap();
    let err = ipam(&ds, "n1")
        .auto_assign(&v4("a.eth0", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
}

pub async fn release_after_someone_else_released(ds: Arc<dyn Datastore>) {
    put_pool(ds.as_ref(), "p", "10.11.0.0/16", None).await;
    put_node(ds.as_ref(), "n1").await;
    let n1 = ipam(&ds, "n1");
    let a = n1.auto_assign(&v4("a.eth0", 1)).await.unwrap();
    let b = n1.auto_assign(&v4("b.eth0", 1)).await.unwrap();
    // An operator (another process) releases a.eth0: n1's remembered revisions are now stale.
    assert_eq!(
        ipam(&ds, "ctl").release_handle("a.eth0").await.unwrap(),
        a.v4
    );
    assert!(
        n1.release_handle("a.eth0").await.unwrap().is_empty(),
        "nothing left to release"
    );
    // b.eth0's block changed under n1 too; its release must still free exactly b's address.
    assert_eq!(n1.release_handle("b.eth0").await.unwrap(), b.v4);
    let r = check(ds.as_ref()).await.unwrap();
    assert!(r.is_clean() && r.allocations == 0, "{r}");
}

/// Runs every scenario, each on a datastore from `fresh`.
#[macro_export]
macro_rules! scenario_tests {
    ($fresh:path) => {
        $crate::scenario_tests!(@each $fresh;
            claims_a_block_then_fills_it, dual_stack_and_ipv6, failed_request_changes_nothing,
            single_address_pool_exhausts, borrows_when_the_pool_has_no_free_block,
            strict_affinity_forbids_borrowing, max_blocks_per_host, assign_specific_ip,
            empty_extra_blocks_are_released, check_finds_leaks_and_gc_cleans, disabled_pool_is_not_used,
            release_after_someone_else_released);
    };
    (@each $fresh:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                common::$name($fresh(stringify!($name)).await).await;
            }
        )*
    };
}
