//! Pure netlink side of the IPIP manager: `tunl0` and its routes as the kernel reports them
//! (`parse_*`), the requests that change them, and the device plan. No I/O here, so all of it is
//! unit-tested without root; `ipip_apply` sends the requests.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkIpIp, LinkUnspec, RouteMessageBuilder};

use super::ipip::{IpipDeviceSpec, IPIP_DEVICE, IPIP_ROUTE_METRIC};
use super::vxlan_msg::{parse_owned_route, Request, ADD, ADD_OR_REPLACE, CHANGE_OR_DELETE};
use super::ROUTE_PROTOCOL;

// ---------------------------------------------------------------------------------------------
// What the kernel has.

/// The link called `tunl0`, as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTunnel {
    pub index: u32,
    /// `IFLA_INFO_KIND`, e.g. `ipip` (empty when the kernel sent none).
    pub kind: String,
    pub mtu: Option<u32>,
    pub up: bool,
    /// Addresses on the link (IPv6 link-local ones left out).
    pub addresses: Vec<IpNet>,
}

impl ObservedTunnel {
    pub fn is_ipip(&self) -> bool {
        self.kind == "ipip"
    }
}

/// Reads a link message (addresses are filled in separately).
pub fn parse_tunnel_link(msg: &LinkMessage) -> ObservedTunnel {
    let mut t = ObservedTunnel {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..ObservedTunnel::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(m) => t.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        t.kind = kind.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// A route of the IPIP manager: main table, protocol 80, out of link `index` (tunl0), metric
/// [`IPIP_ROUTE_METRIC`], with an IPv4 gateway. Routes of other metrics on tunl0 are not ours.
pub fn parse_ipip_route(msg: &RouteMessage, index: u32) -> Option<(IpNet, IpAddr)> {
    let r = parse_owned_route(msg)?;
    if r.oif != Some(index) || r.metric != IPIP_ROUTE_METRIC {
        return None;
    }
    match r.gateway? {
        gw @ IpAddr::V4(_) => Some((r.dst, gw)),
        IpAddr::V6(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// What to send: pure builders.

/// `ip link add tunl0 mtu MTU up type ipip`: local and remote stay "any", which is what the
/// kernel's fallback device has. On a kernel with the ipip module loaded, tunl0 already exists
/// (the module creates it in every namespace) and this answers EEXIST; without the module the
/// kernel loads it for this request, or answers EOPNOTSUPP when it cannot.
pub fn tunnel_create_message(d: &IpipDeviceSpec) -> LinkMessage {
    LinkIpIp::new(&d.name).mtu(d.mtu).up().build()
}

pub fn create_tunnel(d: &IpipDeviceSpec) -> Request {
    Request {
        message: RouteNetlinkMessage::NewLink(tunnel_create_message(d)),
        flags: ADD,
        what: format!("create {} (type ipip, mtu {})", d.name, d.mtu),
    }
}

/// `ip link set dev tunl0 mtu MTU up`, in place on link `index` (no NLM_F_CREATE, no kind).
pub fn modify_tunnel(index: u32, d: &IpipDeviceSpec) -> Request {
    Request {
        message: RouteNetlinkMessage::NewLink(
            LinkUnspec::new_with_index(index).mtu(d.mtu).up().build(),
        ),
        flags: CHANGE_OR_DELETE,
        what: format!("set {} mtu {} up", d.name, d.mtu),
    }
}

/// The tunnel address as a host route on tunl0.
pub fn tunnel_address(d: &IpipDeviceSpec) -> IpNet {
    IpNet::from(IpAddr::V4(d.address))
}

/// `ip route add BLOCK via NODE_IP dev tunl0 onlink proto 80 metric 5` in the main table.
pub fn ipip_route_message(index: u32, block: IpNet, via: IpAddr) -> RouteMessage {
    let (IpNet::V4(b), IpAddr::V4(g)) = (block, via) else {
        panic!("IPIP route {block} via {via}: IPIP carries IPv4 only");
    };
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(b.network(), b.prefix_len())
        .gateway(g)
        .output_interface(index)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .priority(IPIP_ROUTE_METRIC)
        .onlink()
        .build()
}

/// `replace` only for a route we already own: a new one is added with NLM_F_EXCL, so a foreign
/// route with the same destination and metric makes the add fail instead of being overwritten.
pub fn add_ipip_route(index: u32, block: IpNet, via: IpAddr, replace: bool) -> Request {
    Request {
        message: RouteNetlinkMessage::NewRoute(ipip_route_message(index, block, via)),
        flags: if replace { ADD_OR_REPLACE } else { ADD },
        what: format!(
            "{} route {block} via {via} dev {IPIP_DEVICE} onlink proto {ROUTE_PROTOCOL} metric \
             {IPIP_ROUTE_METRIC}",
            if replace { "replace" } else { "add" }
        ),
    }
}

/// Names device, gateway, protocol and metric, so the kernel deletes only our route.
pub fn delete_ipip_route(index: u32, block: IpNet, via: IpAddr) -> Request {
    Request {
        message: RouteNetlinkMessage::DelRoute(ipip_route_message(index, block, via)),
        flags: CHANGE_OR_DELETE,
        what: format!(
            "delete route {block} via {via} dev {IPIP_DEVICE} proto {ROUTE_PROTOCOL} metric \
             {IPIP_ROUTE_METRIC}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The device plan: pure.

/// What to do with tunl0 this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelAction {
    Nothing,
    Create,
    /// A link called tunl0 that is not IPIP: reported, never replaced.
    Foreign {
        kind: String,
    },
    Modify {
        index: u32,
        /// MTU or up differ.
        link: bool,
        add_address: Option<IpNet>,
        remove_addresses: Vec<IpNet>,
    },
}

/// `desired` `None` (no pool uses IPIP) leaves the device as it is, whatever it looks like.
pub fn plan_tunnel(
    desired: Option<&IpipDeviceSpec>,
    observed: Option<&ObservedTunnel>,
) -> TunnelAction {
    let Some(d) = desired else {
        return TunnelAction::Nothing;
    };
    let Some(o) = observed else {
        return TunnelAction::Create;
    };
    if !o.is_ipip() {
        return TunnelAction::Foreign {
            kind: if o.kind.is_empty() {
                "no link kind".into()
            } else {
                format!("type {}", o.kind)
            },
        };
    }
    let want = tunnel_address(d);
    let link = o.mtu != Some(d.mtu) || !o.up;
    let add_address = (!o.addresses.contains(&want)).then_some(want);
    // Other IPv4 addresses on tunl0 are a previous tunnel address (Calico removes them too);
    // IPv6 ones are not ours to judge.
    let remove_addresses: Vec<IpNet> = o
        .addresses
        .iter()
        .filter(|a| **a != want && a.addr().is_ipv4())
        .copied()
        .collect();
    if !link && add_address.is_none() && remove_addresses.is_empty() {
        TunnelAction::Nothing
    } else {
        TunnelAction::Modify {
            index: o.index,
            link,
            add_address,
            remove_addresses,
        }
    }
}

#[cfg(test)]
#[path = "ipip_msg_tests.rs"]
mod tests;
