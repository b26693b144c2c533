//! IPAM against a real etcd (Debian's etcd-server, started by the test): the shared scenarios,
//! concurrent nodes racing for blocks and addresses, and nodes that die mid-allocation.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trellis_datastore::etcd::EtcdDatastore;
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{keys, Datastore};
use trellis_ipam::{check, gc, NodeIpam};

use common::{ipam, put_endpoint, put_node, put_pool, v4};

async fn fresh(name: &str) -> Arc<dyn Datastore> {
    Arc::new(EtcdServer::shared().datastore(name).await)
}

scenario_tests!(fresh);

const NODES: usize = 8;
const PER_NODE: usize = 250;

/// One simulated node: allocate, write the endpoint (as the CNI path does), and now and then
/// delete a random earlier pod (endpoint first, then its addresses).
async fn run_node(ipam: NodeIpam, seed: u64) -> BTreeMap<String, IpAddr> {
    let ds = ipam.datastore().clone();
    let node = ipam.node().to_string();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live: BTreeMap<String, IpAddr> = BTreeMap::new();
    for i in 0..PER_NODE {
        let handle = format!("{node}-c{i}.eth0");
        let got = ipam
            .auto_assign(&v4(&handle, 1))
            .await
            .unwrap_or_else(|e| panic!("{node} allocation {i}: {e}"));
        put_endpoint(
            ds.as_ref(),
            &node,
            &format!("{node}-pod{i}"),
            &handle,
            &got.v4,
        )
        .await;
        live.insert(handle, got.v4[0]);
        if rng.random_bool(0.25) {
            let victim = live
                .keys()
                .nth(rng.random_range(0..live.len()))
                .unwrap()
                .clone();
            let pod = victim.trim_end_matches(".eth0").replace("-c", "-pod");
            ds.delete(
                &format!("{}{node}/default/{pod}/eth0", keys::WORKLOAD_ENDPOINTS),
                None,
            )
            .await
            .unwrap();
            let released = ipam.release_handle(&victim).await.unwrap();
            assert_eq!(released, vec![live.remove(&victim).unwrap()]);
        }
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_nodes_never_share_or_leak_an_address() {
    let server = EtcdServer::shared();
    let config = server.config("concurrency");
    let admin =
        Arc::new(EtcdDatastore::connect(config.clone()).await.unwrap()) as Arc<dyn Datastore>;
    // 2048 addresses in 32 blocks: the nodes claim every block, then borrow from each other.
    put_pool(admin.as_ref(), "tight", "10.40.0.0/21", Some(26)).await;
    let mut tasks = Vec::new();
    for n in 0..NODES {
        let name = format!("node-{n}");
        put_node(admin.as_ref(), &name).await;
        let ds =
            Arc::new(EtcdDatastore::connect(config.clone()).await.unwrap()) as Arc<dyn Datastore>;
        tasks.push(tokio::spawn(run_node(ipam(&ds, &name), n as u64)));
    }
    let mut all: BTreeMap<IpAddr, String> = BTreeMap::new();
    for t in tasks {
        for (handle, ip) in t.await.unwrap() {
            if let Some(other) = all.insert(ip, handle.clone()) {
                panic!("{ip} handed to both {other} and {handle}");
            }
        }
    }
    let report = check(admin.as_ref()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.allocations,
        all.len(),
        "every live pod holds exactly its address"
    );
    assert_eq!(report.endpoints, all.len());
    assert!(report.blocks <= 32);

    // A restarted agent (fresh cache) keeps allocating without duplicates.
    let restarted = ipam(&admin, "node-0");
    let got = restarted
        .auto_assign(&v4("after-restart.eth0", 4))
        .await
        .unwrap();
    for ip in &got.v4 {
        assert!(!all.contains_key(ip), "{ip} was already in use");
    }
    let report = check(admin.as_ref()).await.unwrap();
    assert_eq!(report.duplicates.len(), 0, "{report}");
    assert_eq!(
        report.leaks.len(),
        4,
        "no endpoint was written for these: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_mid_allocation_leaves_a_state_check_reports_and_gc_cleans() {
    let ds = fresh("crash").await;
    put_pool(ds.as_ref(), "p", "10.41.0.0/24", Some(28)).await;
    put_node(ds.as_ref(), "node-1").await;
    let mut rng = StdRng::seed_from_u64(7);
    // Calibrate: how long one whole ADD (fresh agent: reads, claim, allocate, endpoint) takes here.
    let started = std::time::Instant::now();
    let warm = ipam(&ds, "node-1")
        .auto_assign(&v4("warm.eth0", 1))
        .await
        .unwrap();
    put_endpoint(ds.as_ref(), "node-1", "warm", "warm.eth0", &warm.v4).await;
    let add_us = started.elapsed().as_micros() as u64;
    let mut completed = vec![("warm.eth0".to_string(), warm.v4[0])];
    // Five nodes die exactly between the two steps: allocated, endpoint never written.
    for i in 0..5u64 {
        let ds2 = ds.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let got = ipam(&ds2, "node-1")
                .auto_assign(&v4(&format!("between{i}.eth0"), 1))
                .await
                .unwrap();
            tx.send(got).unwrap();
            std::future::pending::<()>().await;
        });
        rx.await.unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    // Forty more die at random points anywhere in the ADD.
    for i in 0..40u64 {
        let ds2 = ds.clone();
        let task = tokio::spawn(async move {
            let node = ipam(&ds2, "node-1");
            let handle = format!("k{i}.eth0");
            let got = node.auto_assign(&v4(&handle, 1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await; // between the two steps
            put_endpoint(ds2.as_ref(), "node-1", &format!("pod{i}"), &handle, &got.v4).await;
            (handle, got.v4[0])
        });
        tokio::time::sleep(Duration::from_micros(
            rng.random_range(0..add_us * 3 / 2 + 2000),
        ))
        .await;
        task.abort();
        if let Ok(done) = task.await {
            completed.push(done);
        }
    }
    let report = check(ds.as_ref()).await.unwrap();
    assert!(
        report.duplicates.is_empty()
            && report.handle_problems.is_empty()
            && report.block_problems.is_empty(),
        "{report}"
    );
    assert!(report.unallocated_in_use.is_empty(), "{report}");
    let allocated = report.allocations;
    assert!(allocated >= completed.len());
    let leaked = report.leaks.len();
    assert_eq!(
        allocated - leaked,
        report.endpoints,
        "every non-leaked address has its endpoint: {report}"
    );
    assert!(
        leaked >= 5,
        "the nodes killed between allocation and endpoint leaked: {report}"
    );

    let g = gc(ds.as_ref(), Duration::ZERO).await.unwrap();
    assert_eq!(g.released.len(), leaked, "{g}");
    let after = check(ds.as_ref()).await.unwrap();
    assert!(after.is_clean(), "{after}");
    assert_eq!(after.allocations, after.endpoints);
    for (handle, ip) in &completed {
        let held = trellis_ipam::store::addresses_of(ds.as_ref(), handle)
            .await
            .unwrap();
        assert_eq!(
            held,
            vec![*ip],
            "GC must not touch {handle}, whose pod completed"
        );
    }
}
