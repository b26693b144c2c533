use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};

use super::*;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 65, 0, 2));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));

fn dual() -> Layout {
    Layout::new("eth0", "trellisc440f455", &[V4, V6], 1450)
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn steps(requests: &[Request]) -> Vec<&str> {
    requests.iter().map(|r| r.step.as_str()).collect()
}

#[test]
fn layout_of_a_dual_stack_pod() {
    let layout = dual();
    assert_eq!(
        layout.pod_addresses,
        [net("10.65.0.2/32"), net("fd00::2/128")]
    );
    let routes: Vec<String> = layout.pod_routes.iter().map(|r| r.on("eth0")).collect();
    assert_eq!(
        routes,
        [
            "169.254.1.1/32 dev eth0 scope link",
            "default via 169.254.1.1 dev eth0",
            "default via fe80::ecee:eeff:feee:eeee dev eth0",
        ]
    );
    let neighbours: Vec<String> = layout
        .pod_neighbours
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        neighbours,
        [
            "169.254.1.1 lladdr ee:ee:ee:ee:ee:ee permanent",
            "fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee permanent",
        ]
    );
    assert_eq!(layout.host_addresses, [net("fe80::ecee:eeff:feee:eeee/64")]);
    let host_routes: Vec<String> = layout.host_routes.iter().map(|r| r.on("h")).collect();
    assert_eq!(
        host_routes,
        ["10.65.0.2/32 dev h scope link", "fd00::2/128 dev h"]
    );
    let sysctls: Vec<(&str, &str)> = layout
        .host_sysctls
        .iter()
        .map(|s| (s.path.as_str(), s.value))
        .collect();
    assert_eq!(
        sysctls,
        [
            ("/proc/sys/net/ipv4/conf/trellisc440f455/proxy_arp", "1"),
            ("/proc/sys/net/ipv4/conf/trellisc440f455/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/trellisc440f455/forwarding", "1"),
        ]
    );
}

#[test]
fn ipv4_only_pod_has_no_ipv6_state() {
    let layout = Layout::new("eth0", "h", &[V4], 1500);
    assert!(layout.host_addresses.is_empty());
    assert_eq!(layout.pod_routes.len(), 2);
    assert_eq!(layout.host_sysctls.len(), 2);
    // No IPv6 setting on the host veth: the node may have IPv6 disabled.
    assert_eq!(
        steps(&layout.host_setup(5)),
        ["set h up", "add route 10.65.0.2/32 dev h scope link"]
    );
}

#[test]
fn the_link_local_gateway_is_the_eui64_address_of_the_host_mac() {
    // EUI-64: flip the universal/local bit of the first byte, insert ff:fe in the middle.
    let m = HOST_VETH_MAC;
    let eui = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    let mut octets = [0u8; 16];
    octets[0] = 0xfe;
    octets[1] = 0x80;
    octets[8..].copy_from_slice(&eui);
    assert_eq!(Ipv6Addr::from(octets), GATEWAY_V6);
}

#[test]
fn veth_is_created_with_its_peer_in_the_pod_netns() {
    let request = dual().create_veth(42);
    assert_eq!(
        request.flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    );
    let RouteNetlinkMessage::NewLink(link) = &request.message else {
        panic!("not a NewLink: {:?}", request.message);
    };
    // The host end stays down until its IPv6 settings are in.
    assert!(!link.header.flags.contains(LinkFlags::Up));
    assert!(link
        .attributes
        .contains(&LinkAttribute::IfName("trellisc440f455".into())));
    assert!(link.attributes.contains(&LinkAttribute::Mtu(1450)));
    assert!(link
        .attributes
        .contains(&LinkAttribute::Address(vec![0xee; 6])));
    let infos = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .expect("IFLA_LINKINFO");
    assert!(infos.contains(&LinkInfo::Kind(InfoKind::Veth)));
    let peer: &LinkMessage = infos
        .iter()
        .find_map(|i| match i {
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) => Some(peer),
            _ => None,
        })
        .expect("VETH_INFO_PEER");
    assert!(!peer.header.flags.contains(LinkFlags::Up));
    assert!(peer
        .attributes
        .contains(&LinkAttribute::IfName("eth0".into())));
    assert!(peer.attributes.contains(&LinkAttribute::Mtu(1450)));
    assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(42)));
    serializes(&request);
}

#[test]
fn host_setup_turns_off_address_generation_before_going_up() {
    let requests = dual().host_setup(9);
    assert_eq!(
        steps(&requests),
        [
            "set addrgenmode none on trellisc440f455",
            "set trellisc440f455 up",
            "add address fe80::ecee:eeff:feee:eeee/64 nodad to trellisc440f455",
            "add route 10.65.0.2/32 dev trellisc440f455 scope link",
            "add route fd00::2/128 dev trellisc440f455",
        ]
    );
    let RouteNetlinkMessage::SetLink(link) = &requests[0].message else {
        panic!("not a SetLink");
    };
    assert_eq!(link.header.index, 9);
    assert_eq!(
        link.attributes,
        [LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]
        )])]
    );
    let RouteNetlinkMessage::NewAddress(address) = &requests[2].message else {
        panic!("not a NewAddress");
    };
    assert!(address.header.flags.contains(AddressHeaderFlags::Nodad));
    assert_eq!(address.header.index, 9);
    for request in &requests {
        serializes(request);
    }
}

#[test]
fn pod_setup_adds_the_gateway_route_and_neighbours_before_default_routes() {
    let requests = dual().pod_setup(3);
    assert_eq!(
        steps(&requests),
        [
            "set eth0 up",
            "add address 10.65.0.2/32 to eth0",
            "add address fd00::2/128 nodad to eth0",
            "add route 169.254.1.1/32 dev eth0 scope link",
            "add neighbour 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee permanent dev eth0",
            "add neighbour fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee permanent dev eth0",
            "add route default via 169.254.1.1 dev eth0",
            "add route default via fe80::ecee:eeff:feee:eeee dev eth0",
        ]
    );
    let RouteNetlinkMessage::NewAddress(v4) = &requests[1].message else {
        panic!("not a NewAddress");
    };
    assert_eq!(v4.header.prefix_len, 32);
    assert!(v4.attributes.contains(&AddressAttribute::Local(V4)));
    let RouteNetlinkMessage::NewRoute(gateway) = &requests[3].message else {
        panic!("not a NewRoute");
    };
    assert_eq!(gateway.header.scope, RouteScope::Link);
    assert_eq!(gateway.header.protocol, RouteProtocol::Boot);
    assert!(gateway.attributes.contains(&RouteAttribute::Oif(3)));
    let RouteNetlinkMessage::NewNeighbour(neighbour) = &requests[4].message else {
        panic!("not a NewNeighbour");
    };
    assert_eq!(neighbour.header.state, NeighbourState::Permanent);
    assert!(neighbour
        .attributes
        .contains(&NeighbourAttribute::LinkLayerAddress(vec![0xee; 6])));
    let RouteNetlinkMessage::NewRoute(default6) = &requests[7].message else {
        panic!("not a NewRoute");
    };
    assert_eq!(default6.header.destination_prefix_length, 0);
    assert!(default6
        .attributes
        .contains(&RouteAttribute::Gateway(RouteAddress::Inet6(GATEWAY_V6))));
    for request in &requests[1..] {
        assert_eq!(roundtrip(request), request.message, "{}", request.step);
    }
}

#[test]
fn teardown_deletes_only_routes_through_the_host_veth_then_the_pair() {
    let requests = dual().teardown(Some(9));
    assert_eq!(
        steps(&requests),
        [
            "delete route 10.65.0.2/32 dev trellisc440f455 scope link",
            "delete route fd00::2/128 dev trellisc440f455",
            "delete veth trellisc440f455",
        ]
    );
    let RouteNetlinkMessage::DelRoute(route) = &requests[0].message else {
        panic!("not a DelRoute");
    };
    assert!(route.attributes.contains(&RouteAttribute::Oif(9)));
    assert_eq!(route.header.scope, RouteScope::NoWhere);
    assert_eq!(route.header.protocol, RouteProtocol::Unspec);
    assert_eq!(requests[0].tolerate, [Errno::ESRCH, Errno::ENODEV]);
    assert_eq!(requests[2].tolerate, [Errno::ENODEV]);
    // Without the index (the host end was never found) only the pair is deleted.
    assert_eq!(
        steps(&dual().teardown(None)),
        ["delete veth trellisc440f455"]
    );
}

/// Emits the request as the socket would, without panicking on inconsistent lengths.
fn serializes(request: &Request) -> Vec<u8> {
    let mut message = NetlinkMessage::from(request.message.clone());
    message.header.flags = request.flags;
    message.finalize();
    let mut buffer = vec![0; message.buffer_len()];
    message.serialize(&mut buffer);
    buffer
}

/// Emits and parses back the request's message.
fn roundtrip(request: &Request) -> RouteNetlinkMessage {
    let bytes = serializes(request);
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).expect("parses");
    match parsed.payload {
        NetlinkPayload::InnerMessage(message) => message,
        other => panic!("unexpected payload {other:?}"),
    }
}
