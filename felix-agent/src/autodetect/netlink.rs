//! Reading the interface snapshot and the `can-reach=` route lookup from the kernel over
//! rtnetlink, in the calling thread's network namespace (the agent runs in the node's).
//!
//! Message decoding is split from the socket (`interface_of`, `address_of`, `lookup_of`) so it
//! is unit-tested on built messages without root.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;

use super::select::{InterfaceInfo, RouteLookup};

/// errno values the kernel answers RTM_GETROUTE with when there is no route.
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open an rtnetlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("rtnetlink {request} failed: {source}")]
    Request {
        request: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no route to {destination} (RTM_GETROUTE answered {errno})")]
    NoRoute {
        destination: IpAddr,
        errno: io::Error,
    },
    #[error("RTM_GETROUTE for {destination} returned no route")]
    EmptyRouteReply { destination: IpAddr },
}

/// An rtnetlink connection opened in the current thread's network namespace. The connection
/// task runs on the current tokio runtime and is aborted on drop.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    /// Opens the socket; must be called inside a tokio runtime.
    pub fn open() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        let task = tokio::spawn(connection);
        Ok(Self { handle, task })
    }

    /// Every link with its flags, MTU and addresses (both families), in ifindex order.
    pub async fn interfaces(&self) -> Result<Vec<InterfaceInfo>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request {
                request: "RTM_GETLINK dump",
                source,
            })?;
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request {
                request: "RTM_GETADDR dump",
                source,
            })?;
        Ok(snapshot(&links, &addresses))
    }

    /// Asks the kernel how it would send to `destination` (`ip route get DEST`).
    pub async fn route_to(&self, destination: IpAddr) -> Result<RouteLookup, NetlinkError> {
        let reply = self
            .handle
            .route()
            .get(route_get_message(destination))
            .execute()
            .try_next()
            .await
            .map_err(|source| match &source {
                rtnetlink::Error::NetlinkError(msg)
                    if [-ENETUNREACH, -EHOSTUNREACH].contains(&msg.raw_code()) =>
                {
                    NetlinkError::NoRoute {
                        destination,
                        errno: msg.to_io(),
                    }
                }
                _ => NetlinkError::Request {
                    request: "RTM_GETROUTE",
                    source,
                },
            })?;
        reply
            .map(|msg| lookup_of(destination, &msg))
            .ok_or(NetlinkError::EmptyRouteReply { destination })
    }
}

/// The RTM_GETROUTE request for one destination: a host-length RTA_DST, nothing else.
pub fn route_get_message(destination: IpAddr) -> RouteMessage {
    let len = match destination {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination, len)
        .expect("a host-length prefix of the address's own family is valid")
        .build()
}

/// Joins link and address dumps into interfaces sorted by ifindex. Addresses of links not in
/// the link dump (a link removed between the two dumps) are dropped.
pub fn snapshot(links: &[LinkMessage], addresses: &[AddressMessage]) -> Vec<InterfaceInfo> {
    let mut by_index: BTreeMap<u32, InterfaceInfo> = links
        .iter()
        .filter_map(interface_of)
        .map(|i| (i.index, i))
        .collect();
    for (index, addr) in addresses.iter().filter_map(address_of) {
        if let Some(iface) = by_index.get_mut(&index) {
            iface.addresses.push(addr);
        }
    }
    by_index.into_values().collect()
}

/// A link message as an interface without addresses; `None` if it carries no name.
pub fn interface_of(msg: &LinkMessage) -> Option<InterfaceInfo> {
    let mut name = None;
    let mut mtu = 0;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    Some(InterfaceInfo {
        name: name?,
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
        mtu,
        addresses: Vec::new(),
    })
}

/// An address message as (ifindex, address/prefix). IFA_LOCAL is the interface's own address;
/// IFA_ADDRESS is the peer's on point-to-point links, so it is used only without IFA_LOCAL (as
/// iproute2 does; IPv6 sends only IFA_ADDRESS).
pub fn address_of(msg: &AddressMessage) -> Option<(u32, IpNet)> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    Some((msg.header.index, net))
}

/// The preferred source (RTA_PREFSRC) and output interface (RTA_OIF) of a route reply.
pub fn lookup_of(destination: IpAddr, msg: &RouteMessage) -> RouteLookup {
    let mut lookup = RouteLookup {
        destination,
        source: None,
        output_interface: None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => {
                lookup.source = Some(IpAddr::V4(*ip))
            }
            RouteAttribute::PrefSource(RouteAddress::Inet6(ip)) => {
                lookup.source = Some(IpAddr::V6(*ip))
            }
            RouteAttribute::Oif(index) => lookup.output_interface = Some(*index),
            _ => {}
        }
    }
    lookup
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::AddressFamily;

    fn link(index: u32, name: &str, mtu: u32, flags: LinkFlags) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = flags;
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg
    }

    fn addr(index: u32, prefix_len: u8, attrs: Vec<AddressAttribute>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix_len;
        msg.attributes = attrs;
        msg
    }

    #[test]
    fn snapshot_joins_links_and_addresses() {
        let links = vec![
            link(2, "eth0", 1500, LinkFlags::Up | LinkFlags::LowerUp),
            link(1, "lo", 65536, LinkFlags::Up | LinkFlags::Loopback),
            link(3, "eth1", 9000, LinkFlags::empty()),
        ];
        let v4 = "10.0.0.5".parse().unwrap();
        let peer = "10.0.0.1".parse().unwrap();
        let v6 = "2001:db8::5".parse().unwrap();
        let addresses = vec![
            // Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer's.
            addr(
                2,
                24,
                vec![AddressAttribute::Address(peer), AddressAttribute::Local(v4)],
            ),
            addr(2, 64, vec![AddressAttribute::Address(v6)]),
            addr(9, 8, vec![AddressAttribute::Address(v4)]),
        ];
        let s = snapshot(&links, &addresses);
        assert_eq!(
            s.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["lo", "eth0", "eth1"]
        );
        assert_eq!(
            s[1],
            InterfaceInfo {
                name: "eth0".into(),
                index: 2,
                up: true,
                loopback: false,
                mtu: 1500,
                addresses: vec![
                    "10.0.0.5/24".parse().unwrap(),
                    "2001:db8::5/64".parse().unwrap()
                ],
            }
        );
        assert!(s[0].loopback && s[0].up);
        assert!(!s[2].up && s[2].addresses.is_empty());
    }

    #[test]
    fn route_get_asks_for_a_host_route() {
        let msg = route_get_message("203.0.113.9".parse().unwrap());
        assert_eq!(msg.header.address_family, AddressFamily::Inet);
        assert_eq!(msg.header.destination_prefix_length, 32);
        assert!(msg
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "203.0.113.9".parse().unwrap()
            ))));
        let msg = route_get_message("2001:db8::9".parse().unwrap());
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(msg.header.destination_prefix_length, 128);
    }

    #[test]
    fn route_reply_gives_source_and_output_interface() {
        let dest: IpAddr = "203.0.113.9".parse().unwrap();
        let mut reply = RouteMessage::default();
        reply.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("203.0.113.9".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::PrefSource(RouteAddress::Inet("10.0.0.5".parse().unwrap())),
        ];
        assert_eq!(
            lookup_of(dest, &reply),
            RouteLookup {
                destination: dest,
                source: Some("10.0.0.5".parse().unwrap()),
                output_interface: Some(4),
            }
        );
        assert_eq!(lookup_of(dest, &RouteMessage::default()).source, None);
    }
}
