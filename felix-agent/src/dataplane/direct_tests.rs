use rtnetlink::packet_route::route::RouteAttribute;
use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
use trellis_datastore::resources::Node;

use super::*;
use crate::dataplane::fixtures::{a, net, node, pool};
use crate::dataplane::vxlan::compute_desired;
use crate::dataplane::ClusterUpdate;

fn cfg() -> VxlanConfig {
    VxlanConfig {
        node_name: "node-1".into(),
        mtu: 1450,
        underlay_subnet: Some(net("192.0.2.0/24")),
    }
}

fn with_v6(mut n: Node, v6: &str) -> Node {
    n.spec.addresses.push(NodeAddress {
        address: v6.parse().unwrap(),
        kind: NodeAddressType::InternalIP,
    });
    n
}

/// node-1 (local) and node-2 share 192.0.2.0/24; node-3 is behind a router. Each holds a
/// block of `mode`'s pool; one block has lost its node.
fn cluster(mode: EncapMode) -> ClusterView {
    let mut v = ClusterView::default();
    for u in [
        ClusterUpdate::NodeUpdated(node("node-1", "192.0.2.1", Some("10.244.0.1"))),
        ClusterUpdate::NodeUpdated(node("node-2", "192.0.2.2", Some("10.244.1.1"))),
        ClusterUpdate::NodeUpdated(node("node-3", "198.51.100.3", Some("10.244.2.1"))),
        ClusterUpdate::PoolUpdated(pool("default", "10.244.0.0/16", mode)),
        ClusterUpdate::BlockUpdated(net("10.244.0.0/26"), Some("node-1".into())),
        ClusterUpdate::BlockUpdated(net("10.244.1.0/26"), Some("node-2".into())),
        ClusterUpdate::BlockUpdated(net("10.244.2.0/26"), Some("node-3".into())),
        ClusterUpdate::BlockUpdated(net("10.244.3.0/26"), None),
    ] {
        v.apply(&u);
    }
    v
}

#[test]
fn never_routes_only_nodes_on_the_local_subnet() {
    let routes = compute_direct_routes(&cluster(EncapMode::Never), &cfg()).unwrap();
    // node-3 is behind a router: without BGP nothing would carry its block there.
    assert_eq!(
        routes,
        BTreeMap::from([(net("10.244.1.0/26"), a("192.0.2.2"))])
    );
}

#[test]
fn always_needs_no_direct_route() {
    let routes = compute_direct_routes(&cluster(EncapMode::Always), &cfg()).unwrap();
    assert!(routes.is_empty(), "{routes:?}");
}

#[test]
fn a_switch_to_vxlan_keeps_direct_routes_until_both_vteps_exist() {
    let mut view = cluster(EncapMode::Always);
    // node-2 has not recorded its VTEP yet (its agent has not seen the new pool mode).
    view.apply(&ClusterUpdate::NodeUpdated(node(
        "node-2",
        "192.0.2.2",
        None,
    )));
    let routes = compute_direct_routes(&view, &cfg()).unwrap();
    assert_eq!(
        routes,
        BTreeMap::from([(net("10.244.1.0/26"), a("192.0.2.2"))])
    );
    assert!(!compute_desired(&view, &cfg())
        .unwrap()
        .routes
        .contains_key(&net("10.244.1.0/26")));
    // Nor has this node: every on-link block stays direct.
    view.apply(&ClusterUpdate::NodeUpdated(node(
        "node-1",
        "192.0.2.1",
        None,
    )));
    view.apply(&ClusterUpdate::NodeUpdated(node(
        "node-2",
        "192.0.2.2",
        Some("10.244.1.1"),
    )));
    let routes = compute_direct_routes(&view, &cfg()).unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
}

#[test]
fn cross_subnet_splits_remote_blocks_between_direct_and_vxlan() {
    let view = cluster(EncapMode::CrossSubnet);
    let direct = compute_direct_routes(&view, &cfg()).unwrap();
    let vxlan = compute_desired(&view, &cfg()).unwrap().routes;
    assert_eq!(
        direct,
        BTreeMap::from([(net("10.244.1.0/26"), a("192.0.2.2"))])
    );
    assert_eq!(
        vxlan,
        BTreeMap::from([(net("10.244.2.0/26"), a("10.244.2.1"))])
    );
}

/// [`cluster`] with the pool in `ipipMode` `mode` (vxlanMode Never), every node having
/// recorded an IPIP tunnel address when `tunnel_addrs`.
fn ipip_cluster(mode: EncapMode, tunnel_addrs: bool) -> ClusterView {
    let mut view = cluster(EncapMode::Never);
    let mut p = pool("default", "10.244.0.0/16", EncapMode::Never);
    p.spec.ipip_mode = mode;
    view.apply(&ClusterUpdate::PoolUpdated(p));
    for (name, ip, t) in [
        ("node-1", "192.0.2.1", "10.244.0.2"),
        ("node-2", "192.0.2.2", "10.244.1.2"),
        ("node-3", "198.51.100.3", "10.244.2.2"),
    ] {
        let mut n = node(name, ip, None);
        n.spec.ipv4_ipip_tunnel_addr = tunnel_addrs.then(|| t.parse().unwrap());
        view.apply(&ClusterUpdate::NodeUpdated(n));
    }
    view
}

#[test]
fn ipip_always_needs_no_direct_route_once_both_nodes_have_tunnel_addresses() {
    let routes = compute_direct_routes(&ipip_cluster(EncapMode::Always, true), &cfg()).unwrap();
    assert!(routes.is_empty(), "{routes:?}");
}

#[test]
fn a_switch_to_ipip_keeps_direct_routes_until_both_tunnel_addresses_exist() {
    let mut view = ipip_cluster(EncapMode::Always, false);
    let routes = compute_direct_routes(&view, &cfg()).unwrap();
    assert_eq!(
        routes,
        BTreeMap::from([(net("10.244.1.0/26"), a("192.0.2.2"))])
    );
    // This node has its address, node-2 not yet: still direct.
    let mut n1 = node("node-1", "192.0.2.1", None);
    n1.spec.ipv4_ipip_tunnel_addr = Some("10.244.0.2".parse().unwrap());
    view.apply(&ClusterUpdate::NodeUpdated(n1));
    assert_eq!(compute_direct_routes(&view, &cfg()).unwrap().len(), 1);
}

#[test]
fn ipip_cross_subnet_routes_same_subnet_nodes_directly() {
    let view = ipip_cluster(EncapMode::CrossSubnet, true);
    let direct = compute_direct_routes(&view, &cfg()).unwrap();
    let ipip = crate::dataplane::ipip::compute_ipip_desired(&view, &cfg(), 1480)
        .unwrap()
        .routes;
    assert_eq!(
        direct,
        BTreeMap::from([(net("10.244.1.0/26"), a("192.0.2.2"))])
    );
    assert_eq!(
        ipip,
        BTreeMap::from([(net("10.244.2.0/26"), a("198.51.100.3"))])
    );
}

#[test]
fn never_in_both_modes_routes_directly_as_before() {
    let view = ipip_cluster(EncapMode::Never, true);
    assert_eq!(
        compute_direct_routes(&view, &cfg()).unwrap(),
        compute_direct_routes(&cluster(EncapMode::Never), &cfg()).unwrap()
    );
}

#[test]
fn ipv6_blocks_go_via_the_remote_ipv6_address_when_it_has_one() {
    let mut view = cluster(EncapMode::Never);
    for u in [
        ClusterUpdate::PoolUpdated(pool("v6", "fd00:244::/64", EncapMode::Never)),
        ClusterUpdate::NodeUpdated(with_v6(node("node-2", "192.0.2.2", None), "2001:db8::2")),
        ClusterUpdate::BlockUpdated(net("fd00:244::40/122"), Some("node-2".into())),
        // node-4 shares the subnet but has no IPv6 address: its IPv6 block stays unrouted.
        ClusterUpdate::NodeUpdated(node("node-4", "192.0.2.4", None)),
        ClusterUpdate::BlockUpdated(net("fd00:244::80/122"), Some("node-4".into())),
        ClusterUpdate::BlockUpdated(net("10.244.4.0/26"), Some("node-4".into())),
    ] {
        view.apply(&u);
    }
    let routes = compute_direct_routes(&view, &cfg()).unwrap();
    assert_eq!(
        routes,
        BTreeMap::from([
            (net("10.244.1.0/26"), a("192.0.2.2")),
            (net("10.244.4.0/26"), a("192.0.2.4")),
            (net("fd00:244::40/122"), a("2001:db8::2")),
        ])
    );
}

#[test]
fn missing_local_node_is_not_ready_and_unknown_subnet_routes_nothing() {
    let mut view = cluster(EncapMode::Never);
    view.apply(&ClusterUpdate::NodeDeleted("node-1".into()));
    assert_eq!(
        compute_direct_routes(&view, &cfg()),
        Err(DirectNotReady::NoLocalNode("node-1".into()))
    );
    let no_subnet = VxlanConfig {
        underlay_subnet: None,
        ..cfg()
    };
    let routes = compute_direct_routes(&cluster(EncapMode::Never), &no_subnet).unwrap();
    assert!(routes.is_empty(), "{routes:?}");
}

#[test]
fn requests_parse_back_and_foreign_routes_do_not_parse() {
    for (block, via) in [
        (net("10.244.1.0/26"), a("192.0.2.2")),
        (net("fd00:244::40/122"), a("2001:db8::2")),
    ] {
        for req in [
            add_direct_route(block, via, false),
            add_direct_route(block, via, true),
            delete_direct_route(block, via),
        ] {
            let (RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m)) =
                &req.message
            else {
                panic!("{req:?}")
            };
            assert_eq!(parse_direct_route(m), Some((block, via)), "{}", req.what);
        }
    }
    assert_eq!(
        add_direct_route(net("10.244.1.0/26"), a("192.0.2.2"), false).what,
        "add route 10.244.1.0/26 via 192.0.2.2 proto 80 metric 10"
    );
    let mut other_metric = direct_route_message(net("10.244.1.0/26"), a("192.0.2.2"));
    other_metric
        .attributes
        .retain(|a| !matches!(a, RouteAttribute::Priority(_)));
    assert_eq!(
        parse_direct_route(&other_metric),
        None,
        "metric 0 is not ours"
    );
    let mut other_proto = direct_route_message(net("10.244.1.0/26"), a("192.0.2.2"));
    other_proto.header.protocol = RouteProtocol::Static;
    assert_eq!(
        parse_direct_route(&other_proto),
        None,
        "proto static is not ours"
    );
    let mut other_table = direct_route_message(net("10.244.1.0/26"), a("192.0.2.2"));
    other_table.attributes.push(RouteAttribute::Table(100));
    assert_eq!(
        parse_direct_route(&other_table),
        None,
        "table 100 is not ours"
    );
}
