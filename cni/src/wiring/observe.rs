//! Reading the kernel's answers back into the terms of [`super::plan`], and comparing them with
//! a [`Layout`] for CHECK. Pure.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::{Problem, Side};
use super::plan::{Layout, Neighbour, Route};

/// An interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub veth: bool,
}

pub(crate) fn parse_link(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        mac: None,
        mtu: None,
        up: message.header.flags.contains(LinkFlags::Up),
        veth: false,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::LinkInfo(infos) => {
                link.veth = infos
                    .iter()
                    .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    link
}

/// Addresses, main-table routes and permanent neighbours of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    pub addresses: Vec<IpNet>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
}

impl Observed {
    /// Keeps what belongs to interface `index` out of full dumps.
    pub fn of(index: u32, messages: &[RouteNetlinkMessage]) -> Observed {
        let mut observed = Observed::default();
        for message in messages {
            match message {
                RouteNetlinkMessage::NewAddress(m) => {
                    if let Some((i, address)) = parse_address(m) {
                        if i == index {
                            observed.addresses.push(address);
                        }
                    }
                }
                RouteNetlinkMessage::NewRoute(m) => {
                    if let Some((i, route)) = parse_route(m) {
                        if i == index {
                            observed.routes.push(route);
                        }
                    }
                }
                RouteNetlinkMessage::NewNeighbour(m) => {
                    if let Some((i, neighbour)) = parse_neighbour(m) {
                        if i == index {
                            observed.neighbours.push(neighbour);
                        }
                    }
                }
                _ => {}
            }
        }
        observed
    }
}

/// The interface index and address of an RTM_NEWADDR. For IPv4 `IFA_LOCAL` is the interface's
/// own address (`IFA_ADDRESS` is the peer's on point-to-point links).
pub(crate) fn parse_address(message: &AddressMessage) -> Option<(u32, IpNet)> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let net = IpNet::new(ip, message.header.prefix_len).ok()?;
    Some((message.header.index, net))
}

/// The output interface and route of an RTM_NEWROUTE, for main-table unicast routes only.
pub(crate) fn parse_route(message: &RouteMessage) -> Option<(u32, Route)> {
    let header = &message.header;
    if header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => via = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match (dst, header.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) => IpAddr::from([0u8; 16]),
        (None, _) => return None,
    };
    let dst = IpNet::new(dst, header.destination_prefix_length).ok()?;
    Some((
        oif?,
        Route {
            dst,
            via,
            scope_link: header.scope == RouteScope::Link,
        },
    ))
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The interface index and entry of an RTM_NEWNEIGH, for permanent IP neighbours only.
pub(crate) fn parse_neighbour(message: &NeighbourMessage) -> Option<(u32, Neighbour)> {
    if message.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
            }
            _ => {}
        }
    }
    Some((message.header.ifindex, Neighbour { ip: ip?, mac: mac? }))
}

/// What a layout expects on one side's interface, named for CHECK's report.
pub(crate) struct Expected<'a> {
    pub side: Side,
    pub name: &'a str,
    pub mtu: u32,
    pub addresses: &'a [IpNet],
    pub routes: &'a [Route],
    pub neighbours: &'a [Neighbour],
}

impl Layout {
    pub(crate) fn expected(&self, side: Side) -> Expected<'_> {
        match side {
            Side::Node => Expected {
                side,
                name: &self.host_ifname,
                mtu: self.mtu,
                addresses: &self.host_addresses,
                routes: &self.host_routes,
                neighbours: &[],
            },
            Side::Pod => Expected {
                side,
                name: &self.ifname,
                mtu: self.mtu,
                addresses: &self.pod_addresses,
                routes: &self.pod_routes,
                neighbours: &self.pod_neighbours,
            },
        }
    }
}

/// Every difference between what `expected` wants and the interface `link` with `observed`
/// on it; extra addresses, routes and neighbours are not problems.
pub(crate) fn problems(expected: &Expected<'_>, link: &Link, observed: &Observed) -> Vec<Problem> {
    let side = expected.side;
    let name = || expected.name.to_owned();
    let mut problems = Vec::new();
    if !link.veth {
        problems.push(Problem::NotAVeth { side, name: name() });
    }
    if !link.up {
        problems.push(Problem::LinkDown { side, name: name() });
    }
    if link.mtu != Some(expected.mtu) {
        problems.push(Problem::Mtu {
            side,
            name: name(),
            expected: expected.mtu,
            actual: link.mtu,
        });
    }
    for address in expected.addresses {
        if !observed.addresses.contains(address) {
            problems.push(Problem::AddressMissing {
                side,
                name: name(),
                address: *address,
            });
        }
    }
    for route in expected.routes {
        if !observed.routes.contains(route) {
            problems.push(Problem::RouteMissing {
                side,
                name: name(),
                route: route.clone(),
            });
        }
    }
    for neighbour in expected.neighbours {
        if !observed.neighbours.contains(neighbour) {
            problems.push(Problem::NeighbourMissing {
                side,
                name: name(),
                neighbour: neighbour.clone(),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netlink_packet_route::route::RouteProtocol;

    use super::*;
    use crate::wiring::plan::{address_message, neighbour_message, route_message, GATEWAY_V4};

    fn layout() -> Layout {
        let addresses = [
            IpAddr::V4(Ipv4Addr::new(10, 65, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        ];
        Layout::new("eth0", "trellis01234567", &addresses, 1450)
    }

    /// What the kernel would answer for a pod wired as `layout` on interface 7.
    fn wired_pod(layout: &Layout) -> Vec<RouteNetlinkMessage> {
        let mut messages = Vec::new();
        for a in &layout.pod_addresses {
            messages.push(RouteNetlinkMessage::NewAddress(address_message(7, *a)));
        }
        for r in &layout.pod_routes {
            let message = route_message(7, r, RouteProtocol::Boot);
            messages.push(RouteNetlinkMessage::NewRoute(message));
        }
        for n in &layout.pod_neighbours {
            messages.push(RouteNetlinkMessage::NewNeighbour(neighbour_message(7, n)));
        }
        // Another interface's state must not count.
        let other = Route::direct("10.65.0.3/32".parse().unwrap());
        let message = route_message(8, &other, RouteProtocol::Boot);
        messages.push(RouteNetlinkMessage::NewRoute(message));
        messages
    }

    fn pod_link() -> Link {
        Link {
            index: 7,
            mac: Some([2, 0, 0, 0, 0, 7]),
            mtu: Some(1450),
            up: true,
            veth: true,
        }
    }

    #[test]
    fn messages_read_back_as_what_was_planned() {
        let layout = layout();
        let observed = Observed::of(7, &wired_pod(&layout));
        assert_eq!(observed.addresses, layout.pod_addresses);
        assert_eq!(observed.routes, layout.pod_routes);
        assert_eq!(observed.neighbours, layout.pod_neighbours);
        let expected = layout.expected(Side::Pod);
        assert_eq!(problems(&expected, &pod_link(), &observed), vec![]);
    }

    #[test]
    fn every_missing_item_is_named() {
        let layout = layout();
        let mut observed = Observed::of(7, &wired_pod(&layout));
        observed
            .routes
            .retain(|r| r.via != Some(IpAddr::V4(GATEWAY_V4)));
        observed.neighbours.clear();
        let link = Link {
            up: false,
            mtu: Some(1500),
            ..pod_link()
        };
        let found = problems(&layout.expected(Side::Pod), &link, &observed);
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "pod netns: eth0 is down",
                "pod netns: eth0 has MTU 1500, expected 1450",
                "pod netns: route `default via 169.254.1.1 dev eth0` is missing",
                "pod netns: neighbour `169.254.1.1 lladdr ee:ee:ee:ee:ee:ee permanent dev eth0` \
                 is missing",
                "pod netns: neighbour `fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee \
                 permanent dev eth0` is missing",
            ]
        );
    }

    #[test]
    fn non_permanent_neighbours_and_other_tables_are_ignored() {
        let layout = layout();
        let mut neighbour = neighbour_message(7, &layout.pod_neighbours[0]);
        neighbour.header.state = NeighbourState::Reachable;
        let mut route = route_message(7, &layout.pod_routes[0], RouteProtocol::Boot);
        route.header.table = 255; // RT_TABLE_LOCAL
        let observed = Observed::of(
            7,
            &[
                RouteNetlinkMessage::NewNeighbour(neighbour),
                RouteNetlinkMessage::NewRoute(route),
            ],
        );
        assert_eq!(observed, Observed::default());
    }
}
