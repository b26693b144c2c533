use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::packet_core::{
    Emitable, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHopFlags,
    RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;

use super::*;
use crate::kernel::{InstalledRoute, KernelRoute, NextHop, DEFAULT_METRIC, MAIN_TABLE};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(prefix: &str, hops: &[NextHop]) -> KernelRoute {
    KernelRoute::new(prefix.parse().unwrap(), hops.iter().copied())
}

fn build(r: &KernelRoute) -> RouteMessage {
    route_message(r, MAIN_TABLE, DEFAULT_METRIC).unwrap()
}

/// Through the wire format and back, as a dump would deliver it.
fn wire(msg: &RouteMessage) -> RouteMessage {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    RouteMessage::parse(&buf[..]).unwrap()
}

fn attrs_without_hops(msg: &RouteMessage) -> Vec<RouteAttribute> {
    msg.attributes
        .iter()
        .filter(|a| !matches!(a, RouteAttribute::MultiPath(_)))
        .cloned()
        .collect()
}

#[test]
fn single_next_hop_v4_is_a_gateway_route_with_our_protocol_and_metric() {
    let msg = build(&route("10.244.1.0/26", &[NextHop::via(ip("192.0.2.2"))]));
    let h = &msg.header;
    assert_eq!(h.address_family, AddressFamily::Inet);
    assert_eq!(h.destination_prefix_length, 26);
    assert_eq!(h.table, RouteHeader::RT_TABLE_MAIN);
    assert_eq!(h.protocol, RouteProtocol::Other(81));
    assert_eq!(h.scope, RouteScope::Universe);
    assert_eq!(h.kind, RouteType::Unicast);
    assert!(!h.flags.contains(RouteFlags::Onlink));
    assert_eq!(
        msg.attributes,
        vec![
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 244, 1, 0))),
            RouteAttribute::Priority(DEFAULT_METRIC),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 2))),
        ]
    );
}

#[test]
fn v6_link_local_next_hop_carries_its_interface() {
    let msg = build(&route(
        "2001:db8:1::/64",
        &[NextHop::via(ip("fe80::2")).dev(7)],
    ));
    assert_eq!(msg.header.address_family, AddressFamily::Inet6);
    assert_eq!(msg.header.destination_prefix_length, 64);
    assert_eq!(
        attrs_without_hops(&msg),
        vec![
            RouteAttribute::Destination(RouteAddress::Inet6("2001:db8:1::".parse().unwrap())),
            RouteAttribute::Priority(DEFAULT_METRIC),
            RouteAttribute::Gateway(RouteAddress::Inet6("fe80::2".parse().unwrap())),
            RouteAttribute::Oif(7),
        ]
    );
}

#[test]
fn several_next_hops_make_one_multipath_route() {
    let msg = build(&route(
        "10.244.2.0/26",
        &[
            NextHop::via(ip("198.51.100.2")).dev(4),
            NextHop::via(ip("192.0.2.2")).dev(3),
        ],
    ));
    assert!(!msg
        .attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Oif(_))));
    let hops = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::MultiPath(h) => Some(h.clone()),
            _ => None,
        })
        .expect("RTA_MULTIPATH");
    // In canonical (sorted) order.
    let seen: Vec<(u32, Vec<RouteAttribute>)> = hops
        .iter()
        .map(|h| (h.interface_index, h.attributes.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                3,
                vec![RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                    192, 0, 2, 2
                )))]
            ),
            (
                4,
                vec![RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                    198, 51, 100, 2
                )))]
            ),
        ]
    );
    assert!(hops.iter().all(|h| h.flags.is_empty() && h.hops == 0));
}

#[test]
fn onlink_is_a_header_flag_for_one_hop_and_a_next_hop_flag_for_several() {
    let single = build(&route(
        "10.244.3.0/26",
        &[NextHop::via(ip("203.0.113.1")).dev(3).onlink()],
    ));
    assert!(single.header.flags.contains(RouteFlags::Onlink));
    let multi = build(&route(
        "10.244.3.0/26",
        &[
            NextHop::via(ip("203.0.113.1")).dev(3).onlink(),
            NextHop::via(ip("203.0.113.2")).dev(3),
        ],
    ));
    assert!(!multi.header.flags.contains(RouteFlags::Onlink));
    let RouteAttribute::MultiPath(hops) = multi
        .attributes
        .iter()
        .find(|a| matches!(a, RouteAttribute::MultiPath(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(hops[0].flags.contains(RouteNextHopFlags::Onlink));
    assert!(!hops[1].flags.contains(RouteNextHopFlags::Onlink));
}

#[test]
fn a_table_above_255_goes_in_rta_table() {
    let r = route("10.0.0.0/8", &[NextHop::via(ip("192.0.2.2"))]);
    let msg = route_message(&r, 1000, 30).unwrap();
    assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
    assert!(msg.attributes.contains(&RouteAttribute::Priority(30)));
    assert_eq!(parse_route(&wire(&msg), 1000).map(|i| i.metric), Some(30));
    assert_eq!(parse_route(&wire(&msg), MAIN_TABLE), None);
    let small = route_message(&r, 100, 30).unwrap();
    assert_eq!(small.header.table, 100);
}

#[test]
fn request_flags_create_exclusively_and_replace_only_when_asked() {
    let r = route("10.0.0.0/8", &[NextHop::via(ip("192.0.2.2"))]);
    let create = write_request(&r, MAIN_TABLE, 20, false).unwrap();
    let replace = write_request(&r, MAIN_TABLE, 20, true).unwrap();
    let delete = delete_request(r.prefix, MAIN_TABLE, 20);
    assert_eq!(
        create.flags(),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    );
    assert_eq!(
        replace.flags(),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    );
    assert_eq!(delete.flags(), NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(
        create.what,
        "add route 10.0.0.0/8 via 192.0.2.2 proto 81 metric 20 table 254"
    );
    assert_eq!(
        replace.what,
        "replace route 10.0.0.0/8 via 192.0.2.2 proto 81 metric 20 table 254"
    );
}

#[test]
fn a_delete_names_prefix_protocol_metric_and_table_but_no_next_hop() {
    let req = delete_request("2001:db8::/48".parse().unwrap(), MAIN_TABLE, 20);
    assert_eq!(req.op, RouteOp::Delete);
    assert_eq!(req.message.header.protocol, RouteProtocol::Other(81));
    assert_eq!(req.message.header.table, RouteHeader::RT_TABLE_MAIN);
    assert_eq!(
        req.message.attributes,
        vec![
            RouteAttribute::Destination(RouteAddress::Inet6("2001:db8::".parse().unwrap())),
            RouteAttribute::Priority(20),
        ]
    );
    assert_eq!(
        req.what,
        "delete route 2001:db8::/48 proto 81 metric 20 table 254"
    );
}

#[test]
fn built_routes_parse_back_to_themselves() {
    let cases = [
        route("10.244.1.0/26", &[NextHop::via(ip("192.0.2.2"))]),
        route(
            "10.244.1.0/26",
            &[NextHop::via(ip("192.0.2.2")).dev(3).onlink()],
        ),
        route(
            "10.244.2.0/26",
            &[
                NextHop::via(ip("192.0.2.2")).dev(3),
                NextHop::via(ip("198.51.100.2")).dev(4).onlink(),
            ],
        ),
        route("2001:db8:1::/64", &[NextHop::via(ip("fe80::2")).dev(7)]),
        route(
            "2001:db8:2::/64",
            &[
                NextHop::via(ip("2001:db8:a::2")).dev(3),
                NextHop::via(ip("2001:db8:b::2")).dev(4),
            ],
        ),
        route("0.0.0.0/0", &[NextHop::via(ip("192.0.2.1"))]),
    ];
    for r in cases {
        let parsed = parse_route(&wire(&build(&r)), MAIN_TABLE);
        assert_eq!(
            parsed,
            Some(InstalledRoute {
                route: r.clone(),
                metric: DEFAULT_METRIC
            }),
            "{r}"
        );
    }
}

#[test]
fn routes_of_other_protocols_tables_or_types_are_not_ours() {
    let r = route("10.99.0.0/24", &[NextHop::via(ip("192.0.2.2"))]);
    let ours = build(&r);
    for proto in [
        RouteProtocol::Static,
        RouteProtocol::Bgp,
        RouteProtocol::Other(80),
    ] {
        let mut m = ours.clone();
        m.header.protocol = proto;
        assert_eq!(parse_route(&m, MAIN_TABLE), None, "{proto:?}");
    }
    assert_eq!(parse_route(&ours, 100), None);
    let mut local = ours.clone();
    local.header.table = RouteHeader::RT_TABLE_MAIN;
    local.header.kind = RouteType::Local;
    assert_eq!(parse_route(&local, MAIN_TABLE), None);
}

#[test]
fn a_dumped_multipath_route_is_read_in_canonical_order_with_its_flags() {
    // As the kernel reports an ECMP route: next hops in its own order, one of them onlink and
    // marked link-down (a flag we do not own), metric attribute present.
    let hops = vec![
        rtnetlink::RouteNextHopBuilder::new_ipv6()
            .via(ip("2001:db8:b::2"))
            .unwrap()
            .interface(4)
            .flags(RouteNextHopFlags::Onlink | RouteNextHopFlags::Linkdown)
            .build(),
        rtnetlink::RouteNextHopBuilder::new_ipv6()
            .via(ip("2001:db8:a::2"))
            .unwrap()
            .interface(3)
            .build(),
    ];
    let msg = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix("2001:db8:5::".parse().unwrap(), 64)
        .protocol(RouteProtocol::Other(81))
        .priority(20)
        .multipath(hops)
        .build();
    let got = parse_route(&wire(&msg), MAIN_TABLE).unwrap();
    assert_eq!(
        got.route.next_hops,
        vec![
            NextHop::via(ip("2001:db8:a::2")).dev(3),
            NextHop::via(ip("2001:db8:b::2")).dev(4).onlink(),
        ]
    );
}

#[test]
fn invalid_routes_are_refused_before_any_message_is_built() {
    let bad = [
        (
            route("2001:db8::/64", &[NextHop::via(ip("fe80::1"))]),
            "link-local",
        ),
        (
            route("10.0.0.0/8", &[NextHop::via(ip("2001:db8::1"))]),
            "another address family",
        ),
        (route("10.0.0.0/8", &[]), "no next hop"),
        (
            route("10.0.0.0/8", &[NextHop::via(ip("192.0.2.1")).onlink()]),
            "onlink",
        ),
    ];
    for (r, why) in bad {
        let err = route_message(&r, MAIN_TABLE, 20).unwrap_err().to_string();
        assert!(
            err.contains(why) && err.contains(&r.prefix.to_string()),
            "{err}"
        );
    }
}
