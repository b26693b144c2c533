//! Unit tests of the pure IPIP netlink side: message values, what a dump of them reads back, the
//! filters that keep foreign routes out, and the tunl0 plan.

use rtnetlink::packet_core::{
    Emitable, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{InfoKind, LinkInfo};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteHeader};

use super::*;
use crate::dataplane::fixtures::{a, a4, net};
use crate::dataplane::vxlan_msg::{address_message, parse_address};

fn spec() -> IpipDeviceSpec {
    IpipDeviceSpec {
        name: "tunl0".into(),
        mtu: 1480,
        address: a4("10.244.0.1"),
    }
}

/// Encodes a message as the kernel would see it and decodes it back as a dump would.
fn over_the_wire<T: Emitable + Parseable<[u8]>>(m: &T) -> T {
    let mut buf = vec![0; m.buffer_len()];
    m.emit(&mut buf);
    T::parse(&buf).unwrap()
}

#[test]
fn create_is_an_exclusive_ipip_link_named_tunl0_up_with_the_mtu() {
    let r = create_tunnel(&spec());
    assert_eq!(
        r.flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    );
    let RouteNetlinkMessage::NewLink(m) = &r.message else {
        panic!("{r:?}")
    };
    assert!(m
        .attributes
        .contains(&LinkAttribute::IfName("tunl0".into())));
    assert!(m.attributes.contains(&LinkAttribute::Mtu(1480)));
    assert!(m.attributes.iter().any(|at| matches!(
        at,
        LinkAttribute::LinkInfo(infos) if infos.contains(&LinkInfo::Kind(InfoKind::IpIp))
    )));
    // No local or remote: the device must be the catch-all tunnel, like the kernel's own tunl0.
    assert!(!format!("{m:?}").contains("Remote"), "{m:?}");
    let seen = parse_tunnel_link(&over_the_wire(m));
    assert!(seen.is_ipip() && seen.up, "{seen:?}");
    assert_eq!(seen.mtu, Some(1480));
}

#[test]
fn modify_sets_mtu_and_up_in_place_without_a_kind() {
    let r = modify_tunnel(7, &spec());
    assert_eq!(r.flags & NLM_F_CREATE, 0, "must not create");
    let RouteNetlinkMessage::NewLink(m) = &r.message else {
        panic!("{r:?}")
    };
    assert_eq!(m.header.index, 7);
    let seen = parse_tunnel_link(m);
    assert_eq!(
        (seen.mtu, seen.up, seen.kind.as_str()),
        (Some(1480), true, "")
    );
    assert_eq!(r.what, "set tunl0 mtu 1480 up");
}

#[test]
fn the_tunnel_address_is_a_host_address_on_tunl0() {
    assert_eq!(tunnel_address(&spec()), net("10.244.0.1/32"));
    let m = over_the_wire(&address_message(7, tunnel_address(&spec())));
    assert_eq!(parse_address(&m), Some((7, net("10.244.0.1/32"))));
}

#[test]
fn route_is_onlink_via_the_node_out_of_tunl0_with_proto_80_and_metric_5() {
    let m = ipip_route_message(7, net("10.244.1.0/26"), a("192.0.2.2"));
    assert_eq!(u8::from(m.header.protocol), 80);
    assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
    assert_eq!(m.header.destination_prefix_length, 26);
    assert!(m.header.flags.contains(RouteFlags::Onlink), "RTNH_F_ONLINK");
    assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
    assert!(m.attributes.contains(&RouteAttribute::Priority(5)));
    assert!(m
        .attributes
        .contains(&RouteAttribute::Gateway(RouteAddress::Inet(a4(
            "192.0.2.2"
        )))));
    assert_eq!(
        parse_ipip_route(&over_the_wire(&m), 7),
        Some((net("10.244.1.0/26"), a("192.0.2.2")))
    );
    let add = add_ipip_route(7, net("10.244.1.0/26"), a("192.0.2.2"), false);
    assert_eq!(add.flags & NLM_F_REPLACE, 0);
    assert_ne!(add.flags & NLM_F_EXCL, 0);
    assert_eq!(
        add.what,
        "add route 10.244.1.0/26 via 192.0.2.2 dev tunl0 onlink proto 80 metric 5"
    );
    let replace = add_ipip_route(7, net("10.244.1.0/26"), a("192.0.2.2"), true);
    assert_ne!(replace.flags & NLM_F_REPLACE, 0);
    let RouteNetlinkMessage::DelRoute(d) =
        delete_ipip_route(7, net("10.244.1.0/26"), a("192.0.2.2")).message
    else {
        panic!()
    };
    assert_eq!(
        d, m,
        "the delete names device, gateway, protocol and metric"
    );
}

#[test]
fn the_route_reader_ignores_what_is_not_ours() {
    let ours = ipip_route_message(7, net("10.244.1.0/26"), a("192.0.2.2"));
    assert_eq!(parse_ipip_route(&ours, 8), None, "another device");
    let mut other_proto = ours.clone();
    other_proto.header.protocol = RouteProtocol::Static;
    assert_eq!(parse_ipip_route(&other_proto, 7), None);
    let mut other_metric = ours.clone();
    other_metric
        .attributes
        .retain(|at| !matches!(at, RouteAttribute::Priority(_)));
    assert_eq!(parse_ipip_route(&other_metric, 7), None, "metric 0");
    let mut other_table = ours.clone();
    other_table.attributes.push(RouteAttribute::Table(100));
    assert_eq!(parse_ipip_route(&other_table, 7), None);
}

#[test]
#[should_panic(expected = "IPv4 only")]
fn an_ipv6_route_through_ipip_is_a_bug() {
    ipip_route_message(7, net("fd00:244::40/122"), a("2001:db8::2"));
}

fn observed() -> ObservedTunnel {
    ObservedTunnel {
        index: 7,
        kind: "ipip".into(),
        mtu: Some(1480),
        up: true,
        addresses: vec![net("10.244.0.1/32")],
    }
}

#[test]
fn tunnel_plan_table() {
    let d = spec();
    let with = |f: fn(&mut ObservedTunnel)| {
        let mut o = observed();
        f(&mut o);
        plan_tunnel(Some(&d), Some(&o))
    };
    assert_eq!(plan_tunnel(None, None), TunnelAction::Nothing);
    assert_eq!(
        plan_tunnel(None, Some(&observed())),
        TunnelAction::Nothing,
        "tunl0 stays when no pool uses IPIP"
    );
    assert_eq!(plan_tunnel(Some(&d), None), TunnelAction::Create);
    assert_eq!(
        plan_tunnel(Some(&d), Some(&observed())),
        TunnelAction::Nothing
    );
    assert_eq!(
        with(|o| o.kind = "gre".into()),
        TunnelAction::Foreign {
            kind: "type gre".into()
        }
    );
    // The module's own tunl0: MTU 1480 would match, but it is down and has no address.
    assert_eq!(
        with(|o| {
            o.up = false;
            o.mtu = Some(1500);
            o.addresses = vec![net("10.244.9.1/32"), net("fd00::1/128")];
        }),
        TunnelAction::Modify {
            index: 7,
            link: true,
            add_address: Some(net("10.244.0.1/32")),
            remove_addresses: vec![net("10.244.9.1/32")],
        }
    );
}
