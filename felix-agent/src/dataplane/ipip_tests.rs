//! Unit tests of the IPIP desired state and of the manager over the in-memory kernel. No root.

use std::collections::BTreeMap;

use futures::executor::block_on;
use trellis_datastore::resources::Node;

use super::*;
use crate::dataplane::fake::FakeNetlink;
use crate::dataplane::fixtures::{a, net, node};
use crate::dataplane::ipip_apply::IpipManager;
use crate::dataplane::ClusterUpdate;

fn cfg() -> VxlanConfig {
    VxlanConfig {
        node_name: "node-1".into(),
        mtu: 1450,
        underlay_subnet: Some(net("192.0.2.0/24")),
    }
}

fn ipip_node(name: &str, underlay: &str, tunnel: Option<&str>) -> Node {
    let mut n = node(name, underlay, None);
    n.spec.ipv4_ipip_tunnel_addr = tunnel.map(|t| t.parse().unwrap());
    n
}

fn ipip_pool(name: &str, cidr: &str, mode: EncapMode) -> IpPool {
    let mut p = crate::dataplane::fixtures::pool(name, cidr, EncapMode::Never);
    p.spec.ipip_mode = mode;
    p
}

/// node-1 (local) and node-2 share 192.0.2.0/24, node-3 is behind a router; a block each in
/// the `mode` pool, and one block without a node.
fn cluster(mode: EncapMode) -> ClusterView {
    let mut v = ClusterView::default();
    for u in [
        ClusterUpdate::NodeUpdated(ipip_node("node-1", "192.0.2.1", Some("10.244.0.1"))),
        ClusterUpdate::NodeUpdated(ipip_node("node-2", "192.0.2.2", Some("10.244.1.1"))),
        ClusterUpdate::NodeUpdated(ipip_node("node-3", "198.51.100.3", Some("10.244.2.1"))),
        ClusterUpdate::PoolUpdated(ipip_pool("default", "10.244.0.0/16", mode)),
        ClusterUpdate::BlockUpdated(net("10.244.0.0/26"), Some("node-1".into())),
        ClusterUpdate::BlockUpdated(net("10.244.1.0/26"), Some("node-2".into())),
        ClusterUpdate::BlockUpdated(net("10.244.2.0/26"), Some("node-3".into())),
        ClusterUpdate::BlockUpdated(net("10.244.3.0/26"), None),
    ] {
        v.apply(&u);
    }
    v
}

fn desired(v: &ClusterView) -> IpipDesired {
    compute_ipip_desired(v, &cfg(), 1480).unwrap()
}

#[test]
fn always_routes_every_remote_block_via_its_node_through_tunl0() {
    let d = desired(&cluster(EncapMode::Always));
    assert_eq!(
        d.device,
        Some(IpipDeviceSpec {
            name: "tunl0".into(),
            mtu: 1480,
            address: "10.244.0.1".parse().unwrap(),
        })
    );
    // Our own block and the orphaned one get no route.
    assert_eq!(
        d.routes,
        BTreeMap::from([
            (net("10.244.1.0/26"), a("192.0.2.2")),
            (net("10.244.2.0/26"), a("198.51.100.3")),
        ])
    );
    assert_eq!(d.pools, vec!["default".to_string()]);
}

#[test]
fn cross_subnet_encapsulates_only_towards_other_subnets() {
    let d = desired(&cluster(EncapMode::CrossSubnet));
    assert!(d.device.is_some(), "tunl0 serves the cross-subnet nodes");
    assert_eq!(
        d.routes,
        BTreeMap::from([(net("10.244.2.0/26"), a("198.51.100.3"))])
    );
    // Unknown local subnet: every node counts as remote.
    let c = VxlanConfig {
        underlay_subnet: None,
        ..cfg()
    };
    let d = compute_ipip_desired(&cluster(EncapMode::CrossSubnet), &c, 1480).unwrap();
    assert_eq!(d.routes.len(), 2);
}

#[test]
fn no_ipip_pool_wants_nothing_and_vxlan_pools_are_not_ours() {
    assert_eq!(desired(&cluster(EncapMode::Never)), IpipDesired::default());
    let mut v = cluster(EncapMode::Never);
    v.apply(&ClusterUpdate::PoolUpdated(
        crate::dataplane::fixtures::pool("default", "10.244.0.0/16", EncapMode::Always),
    ));
    assert_eq!(desired(&v), IpipDesired::default());
}

#[test]
fn remote_nodes_without_a_tunnel_address_are_not_routed_yet() {
    let mut v = cluster(EncapMode::Always);
    v.apply(&ClusterUpdate::NodeUpdated(ipip_node(
        "node-2",
        "192.0.2.2",
        None,
    )));
    assert_eq!(
        desired(&v).routes,
        BTreeMap::from([(net("10.244.2.0/26"), a("198.51.100.3"))])
    );
}

#[test]
fn local_node_missing_or_without_tunnel_address_is_not_ready() {
    let mut v = cluster(EncapMode::Always);
    v.apply(&ClusterUpdate::NodeUpdated(ipip_node(
        "node-1",
        "192.0.2.1",
        None,
    )));
    assert_eq!(
        compute_ipip_desired(&v, &cfg(), 1480),
        Err(IpipNotReady::NoTunnelAddr("node-1".into()))
    );
    v.apply(&ClusterUpdate::NodeDeleted("node-1".into()));
    assert_eq!(
        compute_ipip_desired(&v, &cfg(), 1480),
        Err(IpipNotReady::NoLocalNode("node-1".into()))
    );
}

#[test]
fn ipv6_blocks_and_pools_never_go_through_ipip() {
    let mut v = cluster(EncapMode::Always);
    // The datastore refuses this pool; the manager must not trip over it either.
    v.apply(&ClusterUpdate::PoolUpdated(ipip_pool(
        "v6",
        "fd00:244::/64",
        EncapMode::Always,
    )));
    v.apply(&ClusterUpdate::BlockUpdated(
        net("fd00:244::40/122"),
        Some("node-2".into()),
    ));
    let d = desired(&v);
    assert!(d.routes.keys().all(|b| b.addr().is_ipv4()), "{d:?}");
    assert_eq!(d.pools, vec!["default".to_string()]);
}

#[test]
fn the_missing_module_error_names_feature_device_and_pools() {
    let one = IpipError::NoKernelSupport {
        pools: vec!["default-ipv4".into()],
    };
    assert_eq!(
        one.to_string(),
        "kernel has no ipip support: cannot create tunl0 for pool default-ipv4"
    );
    let two = IpipError::NoKernelSupport {
        pools: vec!["a".into(), "b".into()],
    };
    assert_eq!(
        two.to_string(),
        "kernel has no ipip support: cannot create tunl0 for pools a, b"
    );
}

// --- the manager ------------------------------------------------------------------------------

fn manager() -> IpipManager {
    IpipManager::new(cfg(), 1480)
}

fn feed(m: &mut IpipManager, mode: EncapMode) {
    for (_, n) in cluster(mode).nodes {
        m.on_update(&ClusterUpdate::NodeUpdated(n));
    }
    for (b, o) in cluster(mode).blocks {
        m.on_update(&ClusterUpdate::BlockUpdated(b, o));
    }
    m.on_update(&ClusterUpdate::PoolUpdated(ipip_pool(
        "default",
        "10.244.0.0/16",
        mode,
    )));
}

#[test]
fn manager_does_nothing_but_one_read_without_an_ipip_pool() {
    let mut k = FakeNetlink::new();
    let mut m = manager();
    feed(&mut m, EncapMode::Never);
    assert!(k.sent.is_empty() && k.reads == 0, "on_update did I/O");
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert!(k.sent.is_empty(), "{:?}", k.take_sent());
    assert!(k.tunnel.is_none(), "tunl0 created without an IPIP pool");
    assert!(!m.has_pending_work());
}

#[test]
fn manager_programs_then_a_switch_away_removes_routes_and_leaves_tunl0() {
    let mut k = FakeNetlink::new();
    let mut m = manager();
    feed(&mut m, EncapMode::Always);
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(
        k.take_sent(),
        vec![
            "create tunl0 (type ipip, mtu 1480)",
            "add address 10.244.0.1/32 to tunl0",
            "add route 10.244.1.0/26 via 192.0.2.2 dev tunl0 onlink proto 80 metric 5",
            "add route 10.244.2.0/26 via 198.51.100.3 dev tunl0 onlink proto 80 metric 5",
        ]
    );
    assert_eq!(m.routes_programmed(), 2);
    assert!(!m.has_pending_work());

    // A restarted agent reads tunl0 and its routes and writes nothing.
    let mut again = manager();
    feed(&mut again, EncapMode::Always);
    block_on(again.complete_deferred_work_with(&mut k)).unwrap();
    assert!(k.take_sent().is_empty());
    assert!(again.last_stats().resynced);

    // CrossSubnet: the same-subnet node's route goes (the direct manager takes it over).
    m.on_update(&ClusterUpdate::PoolUpdated(ipip_pool(
        "default",
        "10.244.0.0/16",
        EncapMode::CrossSubnet,
    )));
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(
        k.take_sent(),
        vec!["delete route 10.244.1.0/26 via 192.0.2.2 dev tunl0 proto 80 metric 5"]
    );

    // Switched away from IPIP: every route goes, tunl0 stays with its address.
    m.on_update(&ClusterUpdate::PoolUpdated(ipip_pool(
        "default",
        "10.244.0.0/16",
        EncapMode::Never,
    )));
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(
        k.take_sent(),
        vec!["delete route 10.244.2.0/26 via 198.51.100.3 dev tunl0 proto 80 metric 5"]
    );
    assert!(k.ipip_routes.is_empty());
    assert!(k.tunnel.is_some(), "tunl0 is left, as Calico leaves it");
    assert_eq!(m.problem(), None);
}

#[test]
fn manager_without_kernel_support_reports_the_named_error_once_and_retries_on_resync() {
    let mut k = FakeNetlink::new();
    k.ipip_supported = false;
    let mut m = manager();
    feed(&mut m, EncapMode::Always);
    block_on(m.complete_deferred_work_with(&mut k)).expect("a missing module is not a failed pass");
    assert_eq!(k.take_sent(), vec!["create tunl0 (type ipip, mtu 1480)"]);
    assert_eq!(
        m.problem().map(|p| p.to_string()).as_deref(),
        Some("kernel has no ipip support: cannot create tunl0 for pool default")
    );
    assert_eq!(m.routes_programmed(), 0);
    // Not retried on every pass (no busy loop, no log flood) ...
    assert!(!m.has_pending_work());
    m.on_update(&ClusterUpdate::BlockUpdated(
        net("10.244.4.0/26"),
        Some("node-2".into()),
    ));
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert!(k.take_sent().is_empty(), "retried on a block change");
    // ... but on the periodic resync, which finds the module loaded meanwhile.
    k.ipip_supported = true;
    m.request_resync();
    assert!(m.has_pending_work());
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    assert_eq!(m.problem(), None);
    assert_eq!(m.routes_programmed(), 3);
}

#[test]
fn manager_adopts_the_tunl0_the_module_creates_on_load() {
    let mut k = FakeNetlink::new();
    k.ipip_module_loaded = false;
    let mut m = manager();
    feed(&mut m, EncapMode::Always);
    block_on(m.complete_deferred_work_with(&mut k)).unwrap();
    let sent = k.take_sent();
    assert_eq!(
        sent[..3],
        [
            "create tunl0 (type ipip, mtu 1480)",
            "set tunl0 mtu 1480 up",
            "add address 10.244.0.1/32 to tunl0",
        ],
        "{sent:#?}"
    );
    let t = k.tunnel.as_ref().unwrap();
    assert_eq!((t.mtu, t.up), (Some(1480), true));
    assert_eq!(m.routes_programmed(), 2);
    assert_eq!(m.problem(), None);
}
