use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::rule::RuleHeader;

use super::*;
use crate::datapath::fake::{kernel_subnet_route, link};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn rule_messages_carry_priority_selector_and_table() {
    let m = rule_message(RuleKey::FromPod(ip("10.90.2.20")), 2);
    assert_eq!(m.header.family, AddressFamily::Inet);
    assert_eq!(
        (m.header.src_len, m.header.dst_len, m.header.table),
        (32, 0, 2)
    );
    assert_eq!(m.header.action, RuleAction::ToTable);
    assert_eq!(
        m.attributes,
        vec![
            RuleAttribute::Priority(1536),
            RuleAttribute::Table(2),
            RuleAttribute::Source(ip("10.90.2.20")),
        ]
    );
    let m = rule_message(RuleKey::ToPod(ip("2001:db8::5")), MAIN_TABLE);
    assert_eq!(
        (m.header.family, m.header.dst_len),
        (AddressFamily::Inet6, 128)
    );
    let m = rule_message(RuleKey::MainEniMark(0x80), MAIN_TABLE);
    assert!(m.attributes.contains(&RuleAttribute::FwMark(0x80)));
    assert!(m.attributes.contains(&RuleAttribute::FwMask(0x80)));
    assert_eq!(
        add_rule(RuleKey::MainEniMark(0x80), 254).what,
        "add rule priority 1024 fwmark 0x80/0x80 lookup main"
    );
    assert_eq!(
        delete_rule(RuleKey::FromPod(ip("10.90.2.20")), 2).what,
        "delete rule priority 1536 from 10.90.2.20 lookup 2"
    );
    assert_eq!(add_rule(RuleKey::ToPod(ip("10.90.2.20")), 254).flags, ADD);
}

#[test]
fn our_rules_parse_back_and_foreign_ones_do_not() {
    for (key, table) in [
        (RuleKey::ToPod(ip("10.90.1.20")), MAIN_TABLE),
        (RuleKey::FromPod(ip("10.90.2.20")), 2),
        (RuleKey::MainEniMark(0x40), MAIN_TABLE),
        (RuleKey::ToPod(ip("2001:db8::5")), MAIN_TABLE),
        (RuleKey::FromPod(ip("10.90.2.21")), 300),
    ] {
        let mut m = rule_message(key, table);
        m.attributes
            .push(RuleAttribute::SuppressPrefixLen(u32::MAX));
        assert_eq!(parse_owned_rule(&m), Some((key, table)), "{key}");
    }
    let foreign = |edit: fn(&mut RuleMessage)| {
        let mut m = rule_message(RuleKey::ToPod(ip("10.90.1.20")), MAIN_TABLE);
        edit(&mut m);
        parse_owned_rule(&m)
    };
    // A /24 selector at our priority.
    assert_eq!(foreign(|m| m.header.dst_len = 24), None);
    // Our selector at another priority.
    assert_eq!(
        foreign(|m| m.attributes[0] = RuleAttribute::Priority(600)),
        None
    );
    // An extra selector (iif), an inverted rule, a TOS, another action.
    assert_eq!(
        foreign(|m| m.attributes.push(RuleAttribute::Iifname("eth0".into()))),
        None
    );
    assert_eq!(foreign(|m| m.header.flags = RuleFlags::Invert), None);
    assert_eq!(foreign(|m| m.header.tos = 4), None);
    assert_eq!(foreign(|m| m.header.action = RuleAction::Blackhole), None);
    // A mark rule that looks up another table is not ours.
    let mut m = rule_message(RuleKey::MainEniMark(0x80), 100);
    m.header.table = 100;
    assert_eq!(parse_owned_rule(&m), None);
    // The kernel's default rules (local, main, default) are not ours.
    let mut main = RuleMessage::default();
    main.header = RuleHeader {
        action: RuleAction::ToTable,
        table: 254,
        ..RuleHeader::default()
    };
    main.attributes = vec![RuleAttribute::Priority(32766), RuleAttribute::Table(254)];
    assert_eq!(parse_owned_rule(&main), None);
}

#[test]
fn table_routes_round_trip_through_the_parser() {
    let gw = Ipv4Addr::new(10, 90, 2, 1);
    let hop = NextHop {
        gateway: Some(gw),
        if_name: "eth1".into(),
    };
    let req = add_table_route(2, "0.0.0.0/0".parse().unwrap(), &hop, 7);
    assert_eq!(
        req.what,
        "replace route 0.0.0.0/0 via 10.90.2.1 dev eth1 table 2"
    );
    assert_eq!(req.flags, ADD_OR_REPLACE);
    let RouteNetlinkMessage::NewRoute(m) = &req.message else {
        panic!("{req:?}")
    };
    let r = parse_route(m).unwrap();
    assert_eq!(
        (r.table, r.dst, r.gateway, r.oif, r.scope),
        (
            2,
            "0.0.0.0/0".parse().unwrap(),
            Some(gw),
            Some(7),
            RouteScope::Universe
        )
    );

    let on_link = NextHop {
        gateway: None,
        if_name: "eth1".into(),
    };
    let req = add_table_route(2, "10.90.2.1/32".parse().unwrap(), &on_link, 7);
    assert_eq!(
        req.what,
        "replace route 10.90.2.1/32 dev eth1 scope link table 2"
    );
    let RouteNetlinkMessage::NewRoute(m) = &req.message else {
        panic!("{req:?}")
    };
    assert_eq!(parse_route(m).unwrap().scope, RouteScope::Link);
    // Tables above 255 travel in the attribute.
    let m = table_route_message(1000, "0.0.0.0/0".parse().unwrap(), Some(gw), 7);
    assert_eq!(m.header.table, 0);
    assert_eq!(parse_route(&m).unwrap().table, 1000);
}

#[test]
fn the_kernel_subnet_route_is_recognised_and_deleted_exactly() {
    let subnet = "10.90.2.0/24".parse().unwrap();
    let r = parse_route(&kernel_subnet_route(subnet, 7)).unwrap();
    assert!(is_kernel_subnet_route(&r, subnet, 7));
    assert!(
        !is_kernel_subnet_route(&r, subnet, 8),
        "another interface's route"
    );
    let mut static_route = r.clone();
    static_route.protocol = RouteProtocol::Static;
    assert!(
        !is_kernel_subnet_route(&static_route, subnet, 7),
        "not the kernel's"
    );
    let req = delete_route(&r, "eth1");
    assert_eq!(
        req.what,
        "delete route 10.90.2.0/24 dev eth1 proto Kernel table 254"
    );
    let RouteNetlinkMessage::DelRoute(m) = &req.message else {
        panic!("{req:?}")
    };
    assert_eq!(parse_route(m), Some(r));
    // Local and broadcast routes are skipped.
    let mut local = kernel_subnet_route(subnet, 7);
    local.header.kind = RouteType::Local;
    local.header.table = 255;
    assert_eq!(parse_route(&local), None);
}

#[test]
fn links_parse_and_get_set_up_with_their_mtu() {
    let l = parse_link(&link(7, "eth1", false, 1500)).unwrap();
    assert_eq!(
        l,
        ObservedLink {
            index: 7,
            name: "eth1".into(),
            up: false,
            mtu: Some(1500)
        }
    );
    let req = set_link_up_mtu(&l, 9001);
    assert_eq!(req.what, "set link eth1 up mtu 9001");
    let RouteNetlinkMessage::SetLink(m) = &req.message else {
        panic!("{req:?}")
    };
    assert_eq!(m.header.index, 7);
    assert!(m.header.flags.contains(LinkFlags::Up) && m.header.change_mask.contains(LinkFlags::Up));
    assert!(m.attributes.contains(&LinkAttribute::Mtu(9001)));
}
