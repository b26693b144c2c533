use std::collections::BTreeMap;
use std::net::IpAddr;

use trellis_datastore::resources::bgp::{BgpConfigurationSpec, BgpPassword, BgpPeerSpec};
use trellis_datastore::resources::node::{NodeAddress, NodeAddressType, NodeBgpSpec};
use trellis_datastore::resources::{BgpPeer, Node, NodeSpec};
use trellis_datastore::ObjectMeta;

use super::{desired_peers, PeerKind};

fn node(name: &str, addrs: &[&str], labels: &[(&str, &str)], bgp: Option<NodeBgpSpec>) -> Node {
    let mut meta = ObjectMeta::named(name);
    meta.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Node::new(
        meta,
        NodeSpec {
            addresses: addrs
                .iter()
                .map(|a| NodeAddress {
                    address: a.parse().unwrap(),
                    kind: NodeAddressType::TrellisNodeIP,
                })
                .collect(),
            bgp,
            ..Default::default()
        },
    )
}

fn nodes(list: Vec<Node>) -> BTreeMap<String, Node> {
    list.into_iter()
        .map(|n| (n.metadata.name.clone(), n))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn peer(name: &str, spec: BgpPeerSpec) -> BgpPeer {
    BgpPeer::new(ObjectMeta::named(name), spec)
}

fn no_mesh() -> BgpConfigurationSpec {
    BgpConfigurationSpec {
        node_to_node_mesh_enabled: Some(false),
        ..Default::default()
    }
}

fn rr(cluster: &str) -> Option<NodeBgpSpec> {
    Some(NodeBgpSpec {
        route_reflector_cluster_id: Some(cluster.parse().unwrap()),
        ..Default::default()
    })
}

#[test]
fn the_mesh_peers_every_node_per_family_and_only_the_lower_address_connects() {
    let ns = nodes(vec![
        node("n1", &["10.0.0.1", "fd00::1"], &[], None),
        node("n2", &["10.0.0.2", "fd00::2"], &[], None),
        node(
            "n3",
            &["10.0.0.3"],
            &[],
            Some(NodeBgpSpec {
                as_number: Some(65003),
                ..Default::default()
            }),
        ),
    ]);
    let cfg = BgpConfigurationSpec::default();
    let p = desired_peers("n1", &ns, &[], &cfg);
    let addrs: Vec<IpAddr> = p.keys().copied().collect();
    assert_eq!(addrs, [ip("10.0.0.2"), ip("10.0.0.3"), ip("fd00::2")]);
    let n2 = &p[&ip("10.0.0.2")];
    assert_eq!(
        (n2.asn, n2.kind, n2.passive),
        (64512, PeerKind::Mesh, false)
    );
    assert_eq!(n2.local_addr, Some(ip("10.0.0.1")));
    assert_eq!(n2.restart_time, Some(120));
    assert_eq!(p[&ip("10.0.0.3")].asn, 65003, "a node's own AS");
    assert_eq!(p[&ip("fd00::2")].local_addr, Some(ip("fd00::1")));
    // From the highest address every mesh session is passive: the others connect.
    let p = desired_peers("n3", &ns, &[], &cfg);
    assert_eq!(p.len(), 2);
    assert!(p.values().all(|d| d.passive && d.kind == PeerKind::Mesh));
    assert!(desired_peers("n1", &ns, &[], &no_mesh()).is_empty());
    assert!(desired_peers("unknown", &ns, &[], &cfg).is_empty());
}

#[test]
fn mesh_password_and_restart_time_come_from_the_configuration() {
    let ns = nodes(vec![
        node("n1", &["10.0.0.1"], &[], None),
        node("n2", &["10.0.0.2"], &[], None),
    ]);
    let cfg = BgpConfigurationSpec {
        node_mesh_password: Some(BgpPassword {
            env: Some("MESH_PW".into()),
            file: None,
        }),
        node_mesh_max_restart_time: Some("300s".parse().unwrap()),
        ..Default::default()
    };
    let p = &desired_peers("n1", &ns, &[], &cfg)[&ip("10.0.0.2")];
    assert_eq!(p.restart_time, Some(300));
    assert_eq!(p.password.as_ref().unwrap().env.as_deref(), Some("MESH_PW"));
}

#[test]
fn route_reflectors_from_one_selector_peering_in_both_directions() {
    let ns = nodes(vec![
        node(
            "rr1",
            &["10.0.0.1"],
            &[("route-reflector", "true")],
            rr("1.1.1.1"),
        ),
        node(
            "rr2",
            &["10.0.0.2"],
            &[("route-reflector", "true")],
            rr("1.1.1.1"),
        ),
        node("c1", &["10.0.0.11"], &[], None),
        node("c2", &["10.0.0.12"], &[], None),
    ]);
    let bp = [peer(
        "peer-with-route-reflectors",
        BgpPeerSpec {
            node_selector: "all()".into(),
            peer_selector: "route-reflector == 'true'".into(),
            ..Default::default()
        },
    )];
    let cfg = no_mesh();
    let c1 = desired_peers("c1", &ns, &bp, &cfg);
    let kinds: Vec<_> = c1.values().map(|p| (p.addr, p.kind, p.rr_client)).collect();
    assert_eq!(
        kinds,
        [
            (ip("10.0.0.1"), PeerKind::RouteReflector, false),
            (ip("10.0.0.2"), PeerKind::RouteReflector, false),
        ],
        "a client peers with both reflectors and nothing else"
    );
    assert_eq!(
        c1[&ip("10.0.0.1")].source,
        "BGPPeer peer-with-route-reflectors"
    );
    let rr1 = desired_peers("rr1", &ns, &bp, &cfg);
    let kinds: Vec<_> = rr1
        .values()
        .map(|p| (p.addr, p.kind, p.rr_client))
        .collect();
    assert_eq!(
        kinds,
        [
            (ip("10.0.0.2"), PeerKind::RouteReflector, false),
            (ip("10.0.0.11"), PeerKind::RrClient, true),
            (ip("10.0.0.12"), PeerKind::RrClient, true),
        ],
        "a reflector serves every client and peers with the other reflector of its cluster"
    );
    // Both ends agree on who connects.
    assert!(!rr1[&ip("10.0.0.11")].passive);
    assert!(c1[&ip("10.0.0.1")].passive);
}

#[test]
fn explicit_peers_by_scope_with_node_specific_winning() {
    let ns = nodes(vec![
        node("n1", &["10.0.0.1"], &[("rack", "a")], None),
        node("n2", &["10.0.1.1"], &[("rack", "b")], None),
    ]);
    let tor = |name: &str, node: &str, sel: &str, peer_ip: &str, asn: u32| {
        peer(
            name,
            BgpPeerSpec {
                node: node.into(),
                node_selector: sel.into(),
                peer_ip: peer_ip.into(),
                as_number: Some(asn),
                ..Default::default()
            },
        )
    };
    let bp = [
        tor("everyone", "", "", "10.0.0.254", 65000),
        tor("rack-a", "", "rack == 'a'", "10.0.0.253:1790", 65001),
        tor("rack-b", "", "rack == 'b'", "10.0.1.253", 65002),
        // The same address as the global peer: the node-specific one wins.
        tor("n1-override", "n1", "", "10.0.0.254", 65099),
        // Our own address is never a peer.
        tor("self", "n1", "", "10.0.0.1", 65000),
    ];
    let p = desired_peers("n1", &ns, &bp, &no_mesh());
    let got: Vec<_> = p
        .values()
        .map(|d| (d.addr, d.port, d.asn, d.kind, d.source.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                ip("10.0.0.253"),
                1790,
                65001,
                PeerKind::Node,
                "BGPPeer rack-a"
            ),
            (
                ip("10.0.0.254"),
                179,
                65099,
                PeerKind::Node,
                "BGPPeer n1-override"
            ),
        ]
    );
    assert_eq!(p[&ip("10.0.0.254")].local_addr, Some(ip("10.0.0.1")));
    let p = desired_peers("n2", &ns, &bp, &no_mesh());
    let got: Vec<_> = p.values().map(|d| (d.addr, d.kind)).collect();
    assert_eq!(
        got,
        [
            (ip("10.0.0.254"), PeerKind::Global),
            (ip("10.0.1.253"), PeerKind::Node)
        ]
    );
}

#[test]
fn a_bgp_peer_carries_its_timers_and_protections() {
    let ns = nodes(vec![node("n1", &["10.0.0.1"], &[], None)]);
    let bp = [peer(
        "tor",
        BgpPeerSpec {
            peer_ip: "10.0.0.254".into(),
            as_number: Some(65000),
            keep_original_next_hop: true,
            password: Some(BgpPassword {
                file: Some("/etc/trellis/bgp-password".into()),
                env: None,
            }),
            keepalive_time: Some("10s".parse().unwrap()),
            hold_time: Some("30s".parse().unwrap()),
            max_restart_time: Some("60s".parse().unwrap()),
            source_address: Some(trellis_datastore::resources::bgp::SourceAddress::None),
            num_allowed_local_as_numbers: Some(1),
            ttl_security: Some(1),
            ..Default::default()
        },
    )];
    let p = &desired_peers("n1", &ns, &bp, &no_mesh())[&ip("10.0.0.254")];
    assert!(p.keep_next_hop);
    assert_eq!(
        (p.hold_time, p.keepalive, p.restart_time),
        (Some(30), Some(10), Some(60))
    );
    assert_eq!(p.local_addr, None);
    assert_eq!(p.allow_local_as, 1);
    assert_eq!(p.ttl_security, Some(1));
    assert_eq!(
        p.password.as_ref().unwrap().file.as_deref(),
        Some("/etc/trellis/bgp-password")
    );
}
