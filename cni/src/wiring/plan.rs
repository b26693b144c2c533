//! What a wired pod consists of ([`Layout`]) and the netlink requests that build and remove it.
//!
//! Pure: nothing here does I/O, so every message is unit-tested without root (STYLE 5). The
//! requests are executed by [`super::kernel`], one batch per namespace.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::address::{AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::{
    AddressMessageBuilder, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// The pod's IPv4 gateway: a link-local address no one owns, resolved by a permanent neighbour
/// entry to the host veth (Calico's 169.254.1.1).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The host veth's MAC address. Fixed, as in Calico, so every pod's gateway resolves alike.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];

/// The pod's IPv6 gateway: the host veth's link-local address, the EUI-64 address of
/// [`HOST_VETH_MAC`] (what the kernel would generate; added explicitly, without DAD).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// Protocol of the routes ADD installs: `boot`, what `ip route add` uses.
const ROUTE_PROTOCOL: RouteProtocol = RouteProtocol::Boot;

/// A main-table unicast route through the interface it is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    /// `scope link` (IPv4 only: the kernel keeps every IPv6 route at scope global).
    pub scope_link: bool,
}

impl Route {
    /// A route to `dst` straight out of the interface: `scope link` for IPv4.
    pub fn direct(dst: IpNet) -> Route {
        Route {
            dst,
            via: None,
            scope_link: matches!(dst, IpNet::V4(_)),
        }
    }

    /// The default route of `gateway`'s family via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Route {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::V4(Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(Ipv6Net::default()),
        };
        Route {
            dst,
            via: Some(gateway),
            scope_link: false,
        }
    }

    /// The route in `ip route` syntax with its device: `default via 169.254.1.1 dev eth0`.
    pub fn on(&self, ifname: &str) -> String {
        let mut text = match self.dst.prefix_len() {
            0 => "default".to_owned(),
            _ => self.dst.to_string(),
        };
        if let Some(via) = self.via {
            text.push_str(&format!(" via {via}"));
        }
        text.push_str(&format!(" dev {ifname}"));
        if self.scope_link {
            text.push_str(" scope link");
        }
        text
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.on("");
        f.write_str(&text.replace(" dev ", ""))
    }
}

/// A permanent neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

impl fmt::Display for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mac;
        write!(
            f,
            "{} lladdr {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} permanent",
            self.ip, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A value written under /proc/sys/net of the node netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sysctl {
    pub path: String,
    pub value: &'static str,
}

/// One netlink request and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// What the request does, with its input, for error messages: "add route ... dev eth0".
    pub step: String,
    pub message: RouteNetlinkMessage,
    pub flags: u16,
    /// Errors that mean "already done" (deleting something already gone).
    pub tolerate: &'static [Errno],
}

impl Request {
    fn new(step: String, message: RouteNetlinkMessage, flags: u16) -> Request {
        Request {
            step,
            message,
            flags,
            tolerate: &[],
        }
    }
}

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const CHANGE: u16 = NLM_F_REQUEST | NLM_F_ACK;

/// Everything a wired pod has, derived from its addresses alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub ifname: String,
    pub host_ifname: String,
    pub mtu: u32,
    pub pod_addresses: Vec<IpNet>,
    /// In the order they must be added: a gateway's own route before the route via it.
    pub pod_routes: Vec<Route>,
    pub pod_neighbours: Vec<Neighbour>,
    pub host_addresses: Vec<IpNet>,
    pub host_routes: Vec<Route>,
    pub host_sysctls: Vec<Sysctl>,
}

impl Layout {
    pub fn new(ifname: &str, host_ifname: &str, addresses: &[IpAddr], mtu: u32) -> Layout {
        let v4 = addresses.iter().any(IpAddr::is_ipv4);
        let v6 = addresses.iter().any(IpAddr::is_ipv6);
        let hosts: Vec<IpNet> = addresses.iter().map(|a| IpNet::from(*a)).collect();
        let mut pod_routes = Vec::new();
        let mut pod_neighbours = Vec::new();
        let mut host_addresses = Vec::new();
        let mut host_sysctls = Vec::new();
        if v4 {
            pod_routes.push(Route::direct(IpNet::from(IpAddr::V4(GATEWAY_V4))));
            pod_routes.push(Route::default_via(IpAddr::V4(GATEWAY_V4)));
            pod_neighbours.push(Neighbour {
                ip: IpAddr::V4(GATEWAY_V4),
                mac: HOST_VETH_MAC,
            });
            for knob in ["proxy_arp", "forwarding"] {
                host_sysctls.push(Sysctl {
                    path: format!("/proc/sys/net/ipv4/conf/{host_ifname}/{knob}"),
                    value: "1",
                });
            }
        }
        if v6 {
            pod_routes.push(Route::default_via(IpAddr::V6(GATEWAY_V6)));
            pod_neighbours.push(Neighbour {
                ip: IpAddr::V6(GATEWAY_V6),
                mac: HOST_VETH_MAC,
            });
            host_addresses.push(IpNet::V6(
                Ipv6Net::new(GATEWAY_V6, 64).expect("64 is a valid IPv6 prefix length"),
            ));
            host_sysctls.push(Sysctl {
                path: format!("/proc/sys/net/ipv6/conf/{host_ifname}/forwarding"),
                value: "1",
            });
        }
        Layout {
            ifname: ifname.to_owned(),
            host_ifname: host_ifname.to_owned(),
            mtu,
            host_routes: hosts.iter().map(|h| Route::direct(*h)).collect(),
            pod_addresses: hosts,
            pod_routes,
            pod_neighbours,
            host_addresses,
            host_sysctls,
        }
    }

    fn has_ipv6(&self) -> bool {
        self.pod_addresses.iter().any(|a| matches!(a, IpNet::V6(_)))
    }

    /// Creates the pair in one request, the container end already inside the pod netns
    /// (`pod_netns_fd`). Both ends stay down: the kernel cannot open the peer while it creates
    /// it (veth_open fails with ENOTCONN), and the host end's IPv6 settings must come first.
    pub fn create_veth(&self, pod_netns_fd: RawFd) -> Request {
        let peer = LinkUnspec::new_with_name(&self.ifname)
            .mtu(self.mtu)
            .setns_by_fd(pod_netns_fd)
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(self.host_ifname.clone())
            .mtu(self.mtu)
            .address(HOST_VETH_MAC.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        Request::new(
            format!(
                "create veth {} (mtu {}) with peer {} in the pod netns",
                self.host_ifname, self.mtu, self.ifname
            ),
            RouteNetlinkMessage::NewLink(message),
            CREATE,
        )
    }

    /// Host side, after creation: IPv6 address generation off, up, link-local address, routes.
    pub fn host_setup(&self, host_index: u32) -> Vec<Request> {
        let name = &self.host_ifname;
        let mut requests = Vec::new();
        if self.has_ipv6() {
            // Before the link comes up, or the kernel generates a tentative link-local address.
            let message = LinkUnspec::new_with_index(host_index)
                .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                )]))
                .build();
            requests.push(Request::new(
                format!("set addrgenmode none on {name}"),
                RouteNetlinkMessage::SetLink(message),
                CHANGE,
            ));
        }
        let up = LinkUnspec::new_with_index(host_index).up().build();
        requests.push(Request::new(
            format!("set {name} up"),
            RouteNetlinkMessage::SetLink(up),
            CHANGE,
        ));
        requests.extend(
            self.host_addresses
                .iter()
                .map(|a| add_address(host_index, name, *a)),
        );
        requests.extend(
            self.host_routes
                .iter()
                .map(|r| add_route(host_index, name, r)),
        );
        requests
    }

    /// Pod side: up, addresses, then the gateway route, neighbours and default routes.
    pub fn pod_setup(&self, pod_index: u32) -> Vec<Request> {
        let name = &self.ifname;
        let up = LinkUnspec::new_with_index(pod_index).up().build();
        let mut requests = vec![Request::new(
            format!("set {name} up"),
            RouteNetlinkMessage::SetLink(up),
            CHANGE,
        )];
        requests.extend(
            self.pod_addresses
                .iter()
                .map(|a| add_address(pod_index, name, *a)),
        );
        // The scope-link route to a gateway must exist before a route via that gateway.
        let (direct, via): (Vec<&Route>, Vec<&Route>) =
            self.pod_routes.iter().partition(|r| r.via.is_none());
        requests.extend(direct.into_iter().map(|r| add_route(pod_index, name, r)));
        requests.extend(
            self.pod_neighbours
                .iter()
                .map(|n| add_neighbour(pod_index, name, n)),
        );
        requests.extend(via.into_iter().map(|r| add_route(pod_index, name, r)));
        requests
    }

    /// Removes the host routes (when the host veth's index is known) and the pair. Deleting
    /// the veth alone would take the routes along; the explicit deletions match the host veth
    /// as output interface, so a route another pod's veth owns is never touched.
    pub fn teardown(&self, host_index: Option<u32>) -> Vec<Request> {
        let mut requests = Vec::new();
        if let Some(index) = host_index {
            requests.extend(
                self.host_routes
                    .iter()
                    .map(|r| delete_route(index, &self.host_ifname, r)),
            );
        }
        requests.push(delete_link(&self.host_ifname));
        requests
    }
}

/// RTM_GETLINK for one interface by name.
pub(crate) fn get_link(name: &str) -> Request {
    Request::new(
        format!("look up interface {name}"),
        RouteNetlinkMessage::GetLink(LinkUnspec::new_with_name(name).build()),
        NLM_F_REQUEST,
    )
}

/// RTM_DELLINK by name; an interface already gone counts as deleted.
pub(crate) fn delete_link(name: &str) -> Request {
    Request {
        tolerate: &[Errno::ENODEV],
        ..Request::new(
            format!("delete veth {name}"),
            RouteNetlinkMessage::DelLink(LinkUnspec::new_with_name(name).build()),
            CHANGE,
        )
    }
}

/// Dumps of all addresses, routes and neighbours (all families; filtered by the reader).
pub(crate) fn dumps() -> Vec<Request> {
    let dump = NLM_F_REQUEST | NLM_F_DUMP;
    vec![
        Request::new(
            "list addresses".to_owned(),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            dump,
        ),
        Request::new(
            "list routes".to_owned(),
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            dump,
        ),
        Request::new(
            "list neighbours".to_owned(),
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            dump,
        ),
    ]
}

fn add_address(index: u32, name: &str, address: IpNet) -> Request {
    let message = address_message(index, address);
    let nodad = if address.addr().is_ipv6() {
        " nodad"
    } else {
        ""
    };
    Request::new(
        format!("add address {address}{nodad} to {name}"),
        RouteNetlinkMessage::NewAddress(message),
        CREATE,
    )
}

pub(crate) fn address_message(index: u32, address: IpNet) -> AddressMessage {
    match address {
        IpNet::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a.addr(), a.prefix_len())
            .build(),
        IpNet::V6(a) => {
            let mut message = AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a.addr(), a.prefix_len())
                .build();
            // Duplicate address detection would keep the address unusable for about a second.
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
        }
    }
}

fn add_route(index: u32, name: &str, route: &Route) -> Request {
    Request::new(
        format!("add route {}", route.on(name)),
        RouteNetlinkMessage::NewRoute(route_message(index, route, ROUTE_PROTOCOL)),
        CREATE,
    )
}

fn delete_route(index: u32, name: &str, route: &Route) -> Request {
    let mut message = route_message(index, route, RouteProtocol::Unspec);
    // Like `ip route del`: any scope matches; the output interface must be ours.
    message.header.scope = RouteScope::NoWhere;
    Request {
        tolerate: &[Errno::ESRCH, Errno::ENODEV],
        ..Request::new(
            format!("delete route {}", route.on(name)),
            RouteNetlinkMessage::DelRoute(message),
            CHANGE,
        )
    }
}

pub(crate) fn route_message(index: u32, route: &Route, protocol: RouteProtocol) -> RouteMessage {
    let scope = if route.scope_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    let mut message = match (route.dst, route.via) {
        (IpNet::V4(dst), via) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len());
            if let Some(IpAddr::V4(gateway)) = via {
                b = b.gateway(gateway);
            }
            b.build()
        }
        (IpNet::V6(dst), via) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len());
            if let Some(IpAddr::V6(gateway)) = via {
                b = b.gateway(gateway);
            }
            b.build()
        }
    };
    message.header.scope = scope;
    message.header.protocol = protocol;
    message.header.kind = RouteType::Unicast;
    message.attributes.push(RouteAttribute::Oif(index));
    message
}

fn add_neighbour(index: u32, name: &str, neighbour: &Neighbour) -> Request {
    // Replace, not exclusive: an incomplete entry the kernel made on its own must not fail ADD.
    Request::new(
        format!("add neighbour {neighbour} dev {name}"),
        RouteNetlinkMessage::NewNeighbour(neighbour_message(index, neighbour)),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
}

pub(crate) fn neighbour_message(index: u32, neighbour: &Neighbour) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    let (family, destination) = match neighbour.ip {
        IpAddr::V4(ip) => (AddressFamily::Inet, NeighbourAddress::Inet(ip)),
        IpAddr::V6(ip) => (AddressFamily::Inet6, NeighbourAddress::Inet6(ip)),
    };
    message.header.family = family;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message.header.kind = RouteType::Unspec;
    message.attributes = vec![
        NeighbourAttribute::Destination(destination),
        NeighbourAttribute::LinkLayerAddress(neighbour.mac.to_vec()),
    ];
    message
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
