use futures::executor::block_on;
use trellis_datastore::resources::EncapMode;

use super::*;
use crate::dataplane::fake::FakeNetlink;
use crate::dataplane::fixtures::{a, net, node, pool};

fn manager() -> DirectRouteManager {
    DirectRouteManager::new(VxlanConfig {
        node_name: "node-1".into(),
        mtu: 1450,
        underlay_subnet: Some(net("192.0.2.0/24")),
    })
}

fn feed(m: &mut DirectRouteManager, mode: EncapMode) {
    for u in [
        ClusterUpdate::NodeUpdated(node("node-1", "192.0.2.1", Some("10.244.0.1"))),
        ClusterUpdate::NodeUpdated(node("node-2", "192.0.2.2", Some("10.244.1.1"))),
        ClusterUpdate::NodeUpdated(node("node-3", "192.0.2.3", Some("10.244.2.1"))),
        ClusterUpdate::PoolUpdated(pool("default", "10.244.0.0/16", mode)),
        ClusterUpdate::BlockUpdated(net("10.244.0.0/26"), Some("node-1".into())),
        ClusterUpdate::BlockUpdated(net("10.244.1.0/26"), Some("node-2".into())),
        ClusterUpdate::BlockUpdated(net("10.244.2.0/26"), Some("node-3".into())),
    ] {
        m.on_update(&u);
    }
}

#[test]
fn programs_the_difference_and_a_restart_writes_nothing() {
    let mut k = FakeNetlink::new();
    // A route of ours from an earlier run for a block that is gone now.
    k.direct_routes.insert(net("10.244.9.0/26"), a("192.0.2.9"));
    let mut m = manager();
    feed(&mut m, EncapMode::Never);
    assert!(k.sent.is_empty() && k.reads == 0, "on_update did I/O");
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(
        k.take_sent(),
        vec![
            // Additions first: make before break.
            "add route 10.244.1.0/26 via 192.0.2.2 proto 80 metric 10",
            "add route 10.244.2.0/26 via 192.0.2.3 proto 80 metric 10",
            "delete route 10.244.9.0/26 via 192.0.2.9 proto 80 metric 10",
        ]
    );
    assert!(m.last_stats().resynced);
    assert_eq!(m.routes_programmed(), 2);
    assert!(!m.has_pending_work());

    // A restarted agent reads the kernel and finds nothing to do.
    let mut restarted = manager();
    feed(&mut restarted, EncapMode::Never);
    block_on(restarted.complete_deferred_work_with(&mut k)).unwrap();
    assert!(k.take_sent().is_empty(), "a restart re-created routes");
    assert_eq!(restarted.routes_programmed(), 2);
}

#[test]
fn a_moved_block_is_replaced_and_a_switch_to_vxlan_removes_the_routes() {
    let mut k = FakeNetlink::new();
    let mut m = manager();
    feed(&mut m, EncapMode::Never);
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    k.take_sent();

    m.on_update(&ClusterUpdate::BlockUpdated(
        net("10.244.1.0/26"),
        Some("node-3".into()),
    ));
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(
        k.take_sent(),
        vec!["replace route 10.244.1.0/26 via 192.0.2.3 proto 80 metric 10"]
    );

    m.on_update(&ClusterUpdate::PoolUpdated(pool(
        "default",
        "10.244.0.0/16",
        EncapMode::Always,
    )));
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(k.take_sent().len(), 2);
    assert!(k.direct_routes.is_empty(), "{:?}", k.direct_routes);
}

#[test]
fn a_failed_write_is_reported_and_retried_after_a_resync() {
    let mut k = FakeNetlink::new();
    k.fail = Some(|r| r.what.contains("10.244.2.0/26"));
    let mut m = manager();
    feed(&mut m, EncapMode::Never);
    let err = block_on(m.complete_deferred_work_with(&mut k)).unwrap_err();
    assert!(
        err.to_string().contains("1 of 2 netlink writes failed"),
        "{err}"
    );
    assert!(m.has_pending_work());
    k.fail = None;
    k.take_sent();
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert!(m.last_stats().resynced);
    assert_eq!(
        k.take_sent(),
        vec!["add route 10.244.2.0/26 via 192.0.2.3 proto 80 metric 10"]
    );
}

#[test]
fn without_its_own_node_it_leaves_the_kernel_alone() {
    let mut k = FakeNetlink::new();
    k.direct_routes.insert(net("10.244.1.0/26"), a("192.0.2.2"));
    let mut m = manager();
    m.on_update(&ClusterUpdate::PoolUpdated(pool(
        "default",
        "10.244.0.0/16",
        EncapMode::Never,
    )));
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert!(m.not_ready().is_some());
    assert!(
        k.sent.is_empty() && k.reads == 0,
        "touched the kernel while not ready"
    );
    assert!(!m.has_pending_work());
}
