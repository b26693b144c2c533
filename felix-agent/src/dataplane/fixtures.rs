//! Values the dataplane's unit tests build over and over: addresses, a VXLAN device, nodes
//! and pools.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use trellis_datastore::meta::ObjectMeta;
use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
use trellis_datastore::resources::{EncapMode, IpPool, IpPoolSpec, Node, NodeSpec};

use super::vxlan::{vtep_mac_for, MacAddr, VxlanDeviceSpec, VXLAN_DEVICE};

pub fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// This node's IPv4 VXLAN device: underlay 192.0.2.1, VTEP 10.244.0.1.
pub fn device() -> VxlanDeviceSpec {
    VxlanDeviceSpec {
        name: VXLAN_DEVICE.into(),
        vni: 4096,
        port: 4789,
        local: a4("192.0.2.1"),
        mtu: 1450,
        mac: mac("66:00:00:00:00:01"),
        address: a("10.244.0.1"),
    }
}

/// A node with an underlay address and, when `vtep` is given, an IPv4 VTEP and its MAC.
pub fn node(name: &str, underlay: &str, vtep: Option<&str>) -> Node {
    Node::new(
        ObjectMeta::named(name),
        NodeSpec {
            addresses: vec![NodeAddress {
                address: underlay.parse().unwrap(),
                kind: NodeAddressType::InternalIP,
            }],
            ipv4_vxlan_tunnel_addr: vtep.map(|v| v.parse().unwrap()),
            vxlan_tunnel_mac_addr: vtep.map(|_| vtep_mac_for(name)),
            ..NodeSpec::default()
        },
    )
}

pub fn pool(name: &str, cidr: &str, mode: EncapMode) -> IpPool {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.vxlan_mode = mode;
    IpPool::new(ObjectMeta::named(name), spec)
}
