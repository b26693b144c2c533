//! Unit tests of the pure netlink side: message values, what a dump of them reads back, the
//! filters that keep foreign entries out, and the device plan.

use rtnetlink::packet_core::{Emitable, Parseable};
use rtnetlink::packet_route::route::RouteFlags;

use super::*;
use crate::dataplane::fixtures::{a, a4, device, mac, net};
use crate::dataplane::vxlan::{VxlanDeviceSpec, VXLAN_V6_DEVICE};

// --- messages --------------------------------------------------------------------------------

#[test]
fn create_link_message_carries_every_fixed_parameter() {
    let r = create_link(&device());
    assert_eq!(
        r.flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    );
    let RouteNetlinkMessage::NewLink(m) = &r.message else {
        panic!("{r:?}")
    };
    assert!(m
        .attributes
        .contains(&LinkAttribute::IfName("vxlan.trellis".into())));
    assert!(m.attributes.contains(&LinkAttribute::Mtu(1450)));
    assert!(m
        .attributes
        .contains(&LinkAttribute::Address(vec![0x66, 0, 0, 0, 0, 1])));
    // What we send is what the reader understands: parse it back.
    let seen = parse_link(m);
    assert!(seen.is_vxlan && seen.up);
    assert_eq!(seen.vni, Some(4096));
    assert_eq!(seen.port, Some(4789));
    assert_eq!(seen.local, Some(a4("192.0.2.1")));
    assert_eq!(seen.learning, Some(false));
    assert_eq!(recreate_reason(&device(), &seen), None);
}

#[test]
fn modify_link_changes_in_place() {
    let r = modify_link(7, &device());
    assert_eq!(r.flags & NLM_F_CREATE, 0, "must not create");
    let RouteNetlinkMessage::NewLink(m) = &r.message else {
        panic!("{r:?}")
    };
    assert_eq!(m.header.index, 7);
    let seen = parse_link(m);
    assert_eq!(
        (seen.mtu, seen.mac, seen.up),
        (Some(1450), Some(device().mac), true)
    );
    assert!(
        !seen.is_vxlan,
        "no link kind: the kernel must not re-type the link"
    );
}

#[test]
fn route_message_is_onlink_in_main_with_our_protocol() {
    let m = route_message(7, net("10.244.1.0/26"), a("10.244.1.1"));
    assert_eq!(m.header.protocol, RouteProtocol::Other(80));
    assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
    assert_eq!(m.header.destination_prefix_length, 26);
    assert!(m.header.flags.contains(RouteFlags::Onlink));
    assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
    assert!(m
        .attributes
        .contains(&RouteAttribute::Gateway(RouteAddress::Inet(a4(
            "10.244.1.1"
        )))));
    assert_eq!(
        parse_route(&m, 7),
        Some((net("10.244.1.0/26"), a("10.244.1.1")))
    );
    // A new route never replaces (a foreign route with that destination makes it fail); a route
    // we own is replaced in place.
    let add = add_route(7, net("10.244.1.0/26"), a("10.244.1.1"), false);
    assert_eq!(add.flags & NLM_F_REPLACE, 0);
    assert_ne!(add.flags & NLM_F_EXCL, 0);
    let replace = add_route(7, net("10.244.1.0/26"), a("10.244.1.1"), true);
    assert_ne!(replace.flags & NLM_F_REPLACE, 0);
    // The delete names protocol, device and gateway: the kernel matches on all three.
    let RouteNetlinkMessage::DelRoute(d) =
        delete_route(7, net("10.244.1.0/26"), a("10.244.1.1")).message
    else {
        panic!()
    };
    assert_eq!(d, m);
}

#[test]
fn neighbour_and_fdb_messages_are_permanent() {
    let m2 = mac("66:00:00:00:00:02");
    let n = neighbour_message(7, a("10.244.1.1"), m2);
    assert_eq!(n.header.family, AddressFamily::Inet);
    assert_eq!(n.header.state, NeighbourState::Permanent);
    assert_eq!(parse_neighbour(&n, 7), Some((a("10.244.1.1"), m2)));
    let f = fdb_message(7, m2, a4("192.0.2.2"));
    assert_eq!(f.header.family, AddressFamily::Bridge);
    assert_eq!(f.header.state, NeighbourState::Permanent);
    assert!(f.header.flags.contains(NeighbourFlags::Own), "NTF_SELF");
    assert_eq!(parse_fdb(&f, 7), Some((m2, a4("192.0.2.2"))));
    assert_ne!(
        add_neighbour(7, a("10.244.1.1"), m2).flags & NLM_F_REPLACE,
        0
    );
}

#[test]
fn readers_ignore_what_is_not_ours() {
    let ours = route_message(7, net("10.244.1.0/26"), a("10.244.1.1"));
    let mut other_proto = ours.clone();
    other_proto.header.protocol = RouteProtocol::Static;
    assert_eq!(parse_route(&other_proto, 7), None);
    assert_eq!(parse_route(&ours, 8), None, "another device");
    let mut other_table = ours.clone();
    other_table.header.table = 100;
    assert_eq!(parse_route(&other_table, 7), None);
    let mut big_table = ours.clone();
    big_table.attributes.push(RouteAttribute::Table(1000));
    assert_eq!(parse_route(&big_table, 7), None);

    let m2 = mac("66:00:00:00:00:02");
    let mut learnt = neighbour_message(7, a("10.244.1.1"), m2);
    learnt.header.state = NeighbourState::Reachable;
    assert_eq!(parse_neighbour(&learnt, 7), None);
    assert_eq!(
        parse_neighbour(&neighbour_message(7, a("10.244.1.1"), m2), 8),
        None
    );
    let mut noarp_permanent = neighbour_message(7, a("10.244.1.1"), m2);
    noarp_permanent.header.state = NeighbourState::Other(0xc0);
    assert!(parse_neighbour(&noarp_permanent, 7).is_some());
    let mut bridge_port_entry = fdb_message(7, m2, a4("192.0.2.2"));
    bridge_port_entry.header.flags = NeighbourFlags::Controller;
    assert_eq!(parse_fdb(&bridge_port_entry, 7), None);
}

/// Encodes a message as the kernel would see it and decodes it back as a dump would.
fn over_the_wire<T: Emitable + Parseable<[u8]>>(m: &T) -> T {
    let mut buf = vec![0; m.buffer_len()];
    m.emit(&mut buf);
    T::parse(&buf).unwrap()
}

#[test]
fn what_we_send_is_what_a_dump_reads_back_over_the_wire() {
    // Dumps are decoded from bytes, where e.g. an FDB entry's NDA_DST loses its IPv4 typing.
    let m2 = mac("66:00:00:00:00:02");
    let f = over_the_wire(&fdb_message(7, m2, a4("192.0.2.2")));
    assert_eq!(parse_fdb(&f, 7), Some((m2, a4("192.0.2.2"))));
    let n = over_the_wire(&neighbour_message(7, a("10.244.1.1"), m2));
    assert_eq!(parse_neighbour(&n, 7), Some((a("10.244.1.1"), m2)));
    let r = over_the_wire(&route_message(7, net("10.244.1.0/26"), a("10.244.1.1")));
    assert_eq!(
        parse_route(&r, 7),
        Some((net("10.244.1.0/26"), a("10.244.1.1")))
    );
    let ad = over_the_wire(&address_message(7, net("10.244.0.1/32")));
    assert_eq!(parse_address(&ad), Some((7, net("10.244.0.1/32"))));
    let l = over_the_wire(&link_create_message(&device()));
    assert_eq!(recreate_reason(&device(), &parse_link(&l)), None);
}

// --- device plan -----------------------------------------------------------------------------

fn observed() -> ObservedDevice {
    ObservedDevice {
        index: 7,
        is_vxlan: true,
        vni: Some(4096),
        port: Some(4789),
        local: Some(a4("192.0.2.1")),
        learning: Some(false),
        mtu: Some(1450),
        mac: Some(device().mac),
        up: true,
        addresses: vec![net("10.244.0.1/32")],
    }
}

#[test]
fn device_plan_table() {
    let d = device();
    let with = |f: fn(&mut ObservedDevice)| {
        let mut o = observed();
        f(&mut o);
        plan_device(Some(&d), Some(&o))
    };
    assert_eq!(plan_device(None, None), DeviceAction::Nothing);
    assert_eq!(
        plan_device(None, Some(&observed())),
        DeviceAction::Delete { index: 7 }
    );
    assert_eq!(plan_device(Some(&d), None), DeviceAction::Create);
    assert_eq!(
        plan_device(Some(&d), Some(&observed())),
        DeviceAction::Nothing
    );
    for (f, why) in [
        ((|o| o.vni = Some(1)) as fn(&mut ObservedDevice), "VNI"),
        (|o| o.port = Some(8472), "port"),
        (|o| o.local = Some("192.0.2.9".parse().unwrap()), "local"),
        (|o| o.learning = Some(true), "learning"),
        (|o| o.is_vxlan = false, "not a VXLAN"),
    ] {
        match with(f) {
            DeviceAction::Recreate { index: 7, reason } => {
                assert!(reason.contains(why), "{reason}")
            }
            other => panic!("{why}: {other:?}"),
        }
    }
    assert_eq!(
        with(|o| o.mtu = Some(1500)),
        DeviceAction::Modify {
            index: 7,
            link: true,
            add_address: None,
            remove_addresses: vec![]
        }
    );
    assert_eq!(
        with(|o| o.addresses = vec![net("10.244.9.1/32"), net("10.244.0.1/24")]),
        DeviceAction::Modify {
            index: 7,
            link: false,
            add_address: Some(net("10.244.0.1/32")),
            remove_addresses: vec![net("10.244.9.1/32"), net("10.244.0.1/24")]
        }
    );
}

// --- IPv6 (vxlan6.trellis) --------------------------------------------------------------------

#[test]
fn ipv6_messages_round_trip_over_the_wire() {
    let m2 = mac("66:00:00:00:00:02");
    let n = neighbour_message(7, a("fd00:244::41"), m2);
    assert_eq!(n.header.family, AddressFamily::Inet6);
    assert_eq!(n.header.state, NeighbourState::Permanent);
    let n = over_the_wire(&n);
    assert_eq!(parse_neighbour(&n, 7), Some((a("fd00:244::41"), m2)));
    assert_eq!(parse_neighbour(&n, 8), None, "another device");

    let r = route_message(7, net("fd00:244::40/122"), a("fd00:244::41"));
    assert_eq!(r.header.address_family, AddressFamily::Inet6);
    assert!(r.header.flags.contains(RouteFlags::Onlink));
    assert_eq!(u8::from(r.header.protocol), ROUTE_PROTOCOL);
    let r = over_the_wire(&r);
    assert_eq!(
        parse_route(&r, 7),
        Some((net("fd00:244::40/122"), a("fd00:244::41")))
    );
    let mut foreign = r.clone();
    foreign.header.protocol = RouteProtocol::Kernel;
    assert_eq!(parse_route(&foreign, 7), None, "the kernel's IPv6 routes");

    let ad = over_the_wire(&address_message(7, net("fd00:244::1/128")));
    assert_eq!(ad.header.family, AddressFamily::Inet6);
    assert_eq!(parse_address(&ad), Some((7, net("fd00:244::1/128"))));
    let ll = address_message(7, net("fe80::1/64"));
    assert_eq!(
        parse_address(&ll),
        None,
        "link-local addresses are the kernel's"
    );

    assert_eq!(
        add_route(7, net("fd00:244::40/122"), a("fd00:244::41"), false).what,
        "add route fd00:244::40/122 via fd00:244::41 dev vxlan6.trellis onlink proto 80"
    );
    assert_eq!(
        add_fdb(7, m2, a4("192.0.2.2"), VxlanFamily::V6).what,
        "add fdb 66:00:00:00:00:02 dst 192.0.2.2 dev vxlan6.trellis"
    );
    assert_eq!(
        add_neighbour(7, a("fd00:244::41"), m2).what,
        "add neighbour fd00:244::41 lladdr 66:00:00:00:00:02 dev vxlan6.trellis"
    );
}

#[test]
fn ipv6_device_is_created_and_addressed_with_a_host_prefix() {
    let d = VxlanDeviceSpec {
        name: VXLAN_V6_DEVICE.into(),
        vni: 6096,
        port: 4789,
        address: a("fd00:244::1"),
        ..device()
    };
    let seen = parse_link(&over_the_wire(&link_create_message(&d)));
    assert_eq!((seen.vni, seen.port), (Some(6096), Some(4789)));
    assert_eq!(seen.local, Some(a4("192.0.2.1")), "IPv4 underlay");
    assert_eq!(recreate_reason(&d, &seen), None);
    // An IPv4 address someone put on the IPv6 device is not ours to remove.
    let o = ObservedDevice {
        vni: Some(6096),
        addresses: vec![net("192.0.2.99/32")],
        ..observed()
    };
    assert_eq!(
        plan_device(Some(&d), Some(&o)),
        DeviceAction::Modify {
            index: 7,
            link: false,
            add_address: Some(net("fd00:244::1/128")),
            remove_addresses: vec![],
        }
    );
}
