//! Pure netlink side of the VXLAN manager: what the kernel reports, parsed into plain values
//! (`parse_*`), the requests that change it, built with rtnetlink's builders (`create_link`,
//! `add_route`, ...), and the device plan. No I/O here, so all of it is unit-tested without root;
//! `vxlan_apply` sends the requests.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::vxlan::{MacAddr, VxlanDeviceSpec, VxlanFamily, ROUTE_PROTOCOL};

const NUD_PERMANENT: u16 = 0x80;

// ---------------------------------------------------------------------------------------------
// What the kernel has.

/// The link named like our device, as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedDevice {
    pub index: u32,
    pub is_vxlan: bool,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    pub learning: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub up: bool,
    /// Addresses on the link, IPv6 link-local ones (the kernel's own) left out.
    pub addresses: Vec<IpNet>,
}

/// Entries on our device that belong to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelEntries {
    pub neighbours: BTreeMap<IpAddr, MacAddr>,
    pub fdb: BTreeMap<MacAddr, Ipv4Addr>,
    pub routes: BTreeMap<IpNet, IpAddr>,
}

/// Reads a link message (addresses are filled in separately).
pub fn parse_link(msg: &LinkMessage) -> ObservedDevice {
    let mut dev = ObservedDevice {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..ObservedDevice::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(m) => dev.mtu = Some(*m),
            LinkAttribute::Address(a) => dev.mac = MacAddr::from_slice(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => dev.is_vxlan = *kind == InfoKind::Vxlan,
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(v) => dev.vni = Some(*v),
                                    InfoVxlan::Port(p) => dev.port = Some(*p),
                                    InfoVxlan::Local(l) => dev.local = Some(*l),
                                    InfoVxlan::Learning(l) => dev.learning = Some(*l),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    dev
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// The address (with prefix) of an address message, and the link it is on. IPv6 link-local
/// addresses are the kernel's (every link that comes up gets one) and are not reported.
pub fn parse_address(msg: &AddressMessage) -> Option<(u32, IpNet)> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match (a, want_local) {
            (AddressAttribute::Local(ip), true) | (AddressAttribute::Address(ip), false) => {
                Some(*ip)
            }
            _ => None,
        })
    };
    let ip = pick(true).or_else(|| pick(false))?;
    if is_ipv6_link_local(&ip) {
        return None;
    }
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    Some((msg.header.index, net))
}

fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & NUD_PERMANENT != 0
}

/// NDA_DST. netlink-packet-route decodes it by the message's family, so in an AF_BRIDGE (FDB)
/// message an IPv4 remote arrives as 4 raw bytes.
fn neighbour_dst(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice())
                .ok()
                .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
        }
        _ => None,
    })
}

fn neighbour_lladdr(msg: &NeighbourMessage) -> Option<MacAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => MacAddr::from_slice(l),
        _ => None,
    })
}

/// A permanent ARP (IPv4) or NDP (IPv6) entry on link `index`: ours. Entries the kernel learnt
/// are left alone.
pub fn parse_neighbour(msg: &NeighbourMessage, index: u32) -> Option<(IpAddr, MacAddr)> {
    let h = &msg.header;
    if !matches!(h.family, AddressFamily::Inet | AddressFamily::Inet6)
        || h.ifindex != index
        || !is_permanent(h.state)
    {
        return None;
    }
    Some((neighbour_dst(msg)?, neighbour_lladdr(msg)?))
}

/// A permanent FDB entry of the VXLAN device itself (NTF_SELF) with a remote IPv4 destination.
pub fn parse_fdb(msg: &NeighbourMessage, index: u32) -> Option<(MacAddr, Ipv4Addr)> {
    let h = &msg.header;
    if h.family != AddressFamily::Bridge
        || h.ifindex != index
        || !is_permanent(h.state)
        || !h.flags.contains(NeighbourFlags::Own)
    {
        return None;
    }
    match neighbour_dst(msg)? {
        IpAddr::V4(dst) => Some((neighbour_lladdr(msg)?, dst)),
        IpAddr::V6(_) => None,
    }
}

/// A main-table unicast route with protocol [`ROUTE_PROTOCOL`]: the kind every route manager
/// of the agent owns; each then keeps its own by device or metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedRoute {
    pub dst: IpNet,
    /// A gateway of the route's family, if any.
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// `RTA_PRIORITY`; 0 when absent.
    pub metric: u32,
}

/// The route if it is main table, protocol [`ROUTE_PROTOCOL`], unicast; else `None`.
pub fn parse_owned_route(msg: &RouteMessage) -> Option<OwnedRoute> {
    let h = &msg.header;
    let v6 = match h.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut table = u32::from(h.table);
    let mut dst = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let (mut oif, mut gateway, mut metric) = (None, None, 0);
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Destination(RouteAddress::Inet(d)) if !v6 => dst = IpAddr::V4(*d),
            RouteAttribute::Destination(RouteAddress::Inet6(d)) if v6 => dst = IpAddr::V6(*d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) if !v6 => gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) if v6 => gateway = Some(IpAddr::V6(*g)),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || u8::from(h.protocol) != ROUTE_PROTOCOL
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    Some(OwnedRoute {
        dst: IpNet::new(dst, h.destination_prefix_length).ok()?,
        gateway,
        oif,
        metric,
    })
}

/// A route of the VXLAN manager: [`parse_owned_route`], out of link `index`, with a gateway.
pub fn parse_route(msg: &RouteMessage, index: u32) -> Option<(IpNet, IpAddr)> {
    let r = parse_owned_route(msg)?;
    if r.oif != Some(index) {
        return None;
    }
    Some((r.dst, r.gateway?))
}

// ---------------------------------------------------------------------------------------------
// What to send: pure builders.

/// One netlink request, built purely; [`VxlanNetlink::send`] executes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub message: RouteNetlinkMessage,
    pub flags: u16,
    /// What the request does, for logs and errors (`add route 10.244.1.0/26 via ...`).
    pub what: String,
}

pub(super) const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
pub(super) const ADD_OR_REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
pub(super) const CHANGE_OR_DELETE: u16 = NLM_F_REQUEST | NLM_F_ACK;

impl Request {
    /// Whether this request deletes something (a "not found" answer then means it is done).
    pub fn is_delete(&self) -> bool {
        matches!(
            self.message,
            RouteNetlinkMessage::DelLink(_)
                | RouteNetlinkMessage::DelAddress(_)
                | RouteNetlinkMessage::DelNeighbour(_)
                | RouteNetlinkMessage::DelRoute(_)
        )
    }
}

/// `ip link add NAME address MAC mtu MTU up type vxlan id VNI dstport PORT local IP nolearning`
pub fn link_create_message(d: &VxlanDeviceSpec) -> LinkMessage {
    LinkVxlan::new(&d.name, d.vni)
        .port(d.port)
        .local(d.local)
        .learning(false)
        .mtu(d.mtu)
        .address(d.mac.octets().to_vec())
        .up()
        .build()
}

pub fn create_link(d: &VxlanDeviceSpec) -> Request {
    Request {
        message: RouteNetlinkMessage::NewLink(link_create_message(d)),
        flags: ADD,
        what: format!(
            "create {} (vni {}, port {}, local {}, mac {}, mtu {})",
            d.name, d.vni, d.port, d.local, d.mac, d.mtu
        ),
    }
}

/// MTU, MAC and up, changed in place on link `index` (RTM_NEWLINK without NLM_F_CREATE).
pub fn modify_link(index: u32, d: &VxlanDeviceSpec) -> Request {
    Request {
        message: RouteNetlinkMessage::NewLink(
            LinkUnspec::new_with_index(index)
                .mtu(d.mtu)
                .address(d.mac.octets().to_vec())
                .up()
                .build(),
        ),
        flags: CHANGE_OR_DELETE,
        what: format!("set {} mtu {} address {} up", d.name, d.mtu, d.mac),
    }
}

pub fn delete_link(index: u32, name: &str) -> Request {
    Request {
        message: RouteNetlinkMessage::DelLink(LinkUnspec::new_with_index(index).build()),
        flags: CHANGE_OR_DELETE,
        what: format!("delete link {name} (index {index})"),
    }
}

pub fn address_message(index: u32, net: IpNet) -> AddressMessage {
    match net {
        IpNet::V4(n) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(n.addr(), n.prefix_len())
            .build(),
        IpNet::V6(n) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(n.addr(), n.prefix_len())
            .build(),
    }
}

pub fn add_address(index: u32, net: IpNet, name: &str) -> Request {
    Request {
        message: RouteNetlinkMessage::NewAddress(address_message(index, net)),
        flags: ADD_OR_REPLACE,
        what: format!("add address {net} to {name}"),
    }
}

pub fn delete_address(index: u32, net: IpNet, name: &str) -> Request {
    Request {
        message: RouteNetlinkMessage::DelAddress(address_message(index, net)),
        flags: CHANGE_OR_DELETE,
        what: format!("delete address {net} from {name}"),
    }
}

/// `ip neigh replace IP lladdr MAC dev DEV nud permanent` (ARP for IPv4, NDP for IPv6)
pub fn neighbour_message(index: u32, ip: IpAddr, mac: MacAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    let (family, dst) = match ip {
        IpAddr::V4(v4) => (AddressFamily::Inet, NeighbourAddress::Inet(v4)),
        IpAddr::V6(v6) => (AddressFamily::Inet6, NeighbourAddress::Inet6(v6)),
    };
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes = vec![
        NeighbourAttribute::Destination(dst),
        NeighbourAttribute::LinkLayerAddress(mac.octets().to_vec()),
    ];
    m
}

/// The device a neighbour or route of `ip`'s family lives on, for the request texts.
fn dev_of(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => VxlanFamily::V4.device(),
        IpAddr::V6(_) => VxlanFamily::V6.device(),
    }
}

pub fn add_neighbour(index: u32, ip: IpAddr, mac: MacAddr) -> Request {
    Request {
        message: RouteNetlinkMessage::NewNeighbour(neighbour_message(index, ip, mac)),
        flags: ADD_OR_REPLACE,
        what: format!("add neighbour {ip} lladdr {mac} dev {}", dev_of(&ip)),
    }
}

pub fn delete_neighbour(index: u32, ip: IpAddr, mac: MacAddr) -> Request {
    Request {
        message: RouteNetlinkMessage::DelNeighbour(neighbour_message(index, ip, mac)),
        flags: CHANGE_OR_DELETE,
        what: format!("delete neighbour {ip} dev {}", dev_of(&ip)),
    }
}

/// `bridge fdb replace MAC dev DEV dst IP self permanent` (AF_BRIDGE, NTF_SELF: the entry goes to
/// the VXLAN device's own forwarding table, not to a bridge it might be enslaved to).
pub fn fdb_message(index: u32, mac: MacAddr, dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.octets().to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
    ];
    m
}

/// The FDB destination is the IPv4 underlay for both families; `family` names the device.
pub fn add_fdb(index: u32, mac: MacAddr, dst: Ipv4Addr, family: VxlanFamily) -> Request {
    Request {
        message: RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, dst)),
        flags: ADD_OR_REPLACE,
        what: format!("add fdb {mac} dst {dst} dev {}", family.device()),
    }
}

pub fn delete_fdb(index: u32, mac: MacAddr, dst: Ipv4Addr, family: VxlanFamily) -> Request {
    Request {
        message: RouteNetlinkMessage::DelNeighbour(fdb_message(index, mac, dst)),
        flags: CHANGE_OR_DELETE,
        what: format!("delete fdb {mac} dst {dst} dev {}", family.device()),
    }
}

/// `ip route add BLOCK via VTEP dev DEV onlink proto 80` in the main table. Block and gateway
/// are of one family (the desired state is computed per family); a mixed pair is a bug.
pub fn route_message(index: u32, block: IpNet, via: IpAddr) -> RouteMessage {
    let proto = RouteProtocol::from(ROUTE_PROTOCOL);
    match (block, via) {
        (IpNet::V4(b), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(b.network(), b.prefix_len())
            .gateway(g)
            .output_interface(index)
            .protocol(proto)
            .onlink()
            .build(),
        (IpNet::V6(b), IpAddr::V6(g)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(b.network(), b.prefix_len())
            .gateway(g)
            .output_interface(index)
            .protocol(proto)
            .onlink()
            .build(),
        _ => panic!("route {block} via {via}: gateway of another address family"),
    }
}

/// `replace` only for a route we already own: a new route is added with NLM_F_EXCL, so a foreign
/// route with the same destination makes the add fail instead of being overwritten.
pub fn add_route(index: u32, block: IpNet, via: IpAddr, replace: bool) -> Request {
    Request {
        message: RouteNetlinkMessage::NewRoute(route_message(index, block, via)),
        flags: if replace { ADD_OR_REPLACE } else { ADD },
        what: format!(
            "{} route {block} via {via} dev {} onlink proto {ROUTE_PROTOCOL}",
            if replace { "replace" } else { "add" },
            dev_of(&via)
        ),
    }
}

/// The message names protocol, device and gateway, so the kernel deletes only our route.
pub fn delete_route(index: u32, block: IpNet, via: IpAddr) -> Request {
    Request {
        message: RouteNetlinkMessage::DelRoute(route_message(index, block, via)),
        flags: CHANGE_OR_DELETE,
        what: format!(
            "delete route {block} via {via} dev {} proto {ROUTE_PROTOCOL}",
            dev_of(&via)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The device plan: pure.

/// What to do with the device this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    Nothing,
    Create,
    /// The link exists with parameters that cannot be changed in place.
    Recreate {
        index: u32,
        reason: String,
    },
    Delete {
        index: u32,
    },
    Modify {
        index: u32,
        /// MTU, MAC or up differ.
        link: bool,
        add_address: Option<IpNet>,
        remove_addresses: Vec<IpNet>,
    },
}

/// Why an existing link cannot serve as the device (VNI, port, local address and learning are
/// fixed at creation, as Calico treats them), or `None`.
pub fn recreate_reason(d: &VxlanDeviceSpec, o: &ObservedDevice) -> Option<String> {
    if !o.is_vxlan {
        return Some("it is not a VXLAN link".into());
    }
    if o.vni != Some(d.vni) {
        return Some(format!("VNI is {:?}, want {}", o.vni, d.vni));
    }
    if o.port != Some(d.port) {
        return Some(format!("port is {:?}, want {}", o.port, d.port));
    }
    if o.local != Some(d.local) {
        return Some(format!("local is {:?}, want {}", o.local, d.local));
    }
    if o.learning == Some(true) {
        return Some("learning is on".into());
    }
    None
}

pub fn plan_device(
    desired: Option<&VxlanDeviceSpec>,
    observed: Option<&ObservedDevice>,
) -> DeviceAction {
    match (desired, observed) {
        (None, None) => DeviceAction::Nothing,
        (None, Some(o)) => DeviceAction::Delete { index: o.index },
        (Some(_), None) => DeviceAction::Create,
        (Some(d), Some(o)) => {
            if let Some(reason) = recreate_reason(d, o) {
                return DeviceAction::Recreate {
                    index: o.index,
                    reason,
                };
            }
            let want = IpNet::from(d.address);
            let link = o.mtu != Some(d.mtu) || o.mac != Some(d.mac) || !o.up;
            let add_address = (!o.addresses.contains(&want)).then_some(want);
            // Addresses of the other family are not ours to judge.
            let remove_addresses: Vec<IpNet> = o
                .addresses
                .iter()
                .filter(|a| **a != want && a.addr().is_ipv4() == want.addr().is_ipv4())
                .copied()
                .collect();
            if !link && add_address.is_none() && remove_addresses.is_empty() {
                DeviceAction::Nothing
            } else {
                DeviceAction::Modify {
                    index: o.index,
                    link,
                    add_address,
                    remove_addresses,
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "vxlan_msg_tests.rs"]
mod tests;
