//! Node: a host running trellis-agent, with the addresses other nodes use to reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::validation::ValidationErrors;

pub type Node = Object<NodeSpec>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeAddressType {
    InternalIP,
    ExternalIP,
    /// The address the agent autodetected for node-to-node traffic.
    TrellisNodeIP,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: IpAddr,
    #[serde(rename = "type")]
    pub kind: NodeAddressType,
}

/// BGP identity of a node (Calico's `spec.bgp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// Underlay address with its subnet length, e.g. `192.0.2.10/24` (host bits expected).
    #[serde(
        default,
        rename = "ipv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<IpNet>,
    #[serde(
        default,
        rename = "ipv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<IpNet>,
    /// Overrides the cluster AS number for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Set on route reflector nodes (RFC 4456 CLUSTER_ID).
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// VTEP address of the node's `vxlan.trellis` device (from one of its blocks).
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<Ipv6Addr>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
}

impl NodeSpec {
    /// The node's IPv4 underlay address: the BGP address if set, else the first IPv4 address.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let bgp = self
            .bgp
            .as_ref()
            .and_then(|b| b.ipv4_address)
            .and_then(|n| match n.addr() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            });
        bgp.or_else(|| {
            self.addresses.iter().find_map(|a| match a.address {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
        })
    }
}

impl NodeSpec {
    /// The node's IPv6 underlay address: the BGP address if set, else the first global IPv6
    /// address (link-local ones name no node).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        let usable = |a: &Ipv6Addr| (a.segments()[0] & 0xffc0) != 0xfe80;
        let bgp = self
            .bgp
            .as_ref()
            .and_then(|b| b.ipv6_address)
            .and_then(|n| match n.addr() {
                IpAddr::V6(a) if usable(&a) => Some(a),
                _ => None,
            });
        bgp.or_else(|| {
            self.addresses.iter().find_map(|a| match a.address {
                IpAddr::V6(v6) if usable(&v6) => Some(v6),
                _ => None,
            })
        })
    }
}

/// Checks `aa:bb:cc:dd:ee:ff`.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Spec for NodeSpec {
    const KIND: &'static str = "Node";
    const KEY_PREFIX: &'static str = keys::NODES;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut ValidationErrors) {
        if let Some(bgp) = &self.bgp {
            if let Some(a) = bgp.ipv4_address {
                if !matches!(a, IpNet::V4(_)) {
                    errs.add(
                        "spec.bgp.ipv4Address",
                        format!("{a} is not an IPv4 address"),
                    );
                }
            }
            if let Some(a) = bgp.ipv6_address {
                if !matches!(a, IpNet::V6(_)) {
                    errs.add(
                        "spec.bgp.ipv6Address",
                        format!("{a} is not an IPv6 address"),
                    );
                }
            }
            if bgp.as_number == Some(0) {
                errs.add(
                    "spec.bgp.asNumber",
                    "AS 0 is reserved (RFC 7607); use 1-4294967295",
                );
            }
        }
        for (i, a) in self.addresses.iter().enumerate() {
            if a.address.is_unspecified() || a.address.is_multicast() {
                errs.add(
                    format!("spec.addresses[{i}].address"),
                    format!("{} is not a unicast host address", a.address),
                );
            }
        }
        for (field, mac) in [
            ("spec.vxlanTunnelMACAddr", &self.vxlan_tunnel_mac_addr),
            ("spec.vxlanTunnelMACAddrV6", &self.vxlan_tunnel_mac_addr_v6),
        ] {
            if let Some(m) = mac {
                if !is_mac(m) {
                    errs.add(
                        field,
                        format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{parse_documents, AnyResource};

    fn node(spec: &str) -> Node {
        let text = format!(
            "apiVersion: trellis.dev/v1\nkind: Node\nmetadata:\n  name: node-1\nspec:\n{spec}"
        );
        match parse_documents(&text, "t").unwrap().remove(0) {
            AnyResource::Node(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid_node_and_ipv4_choice() {
        let n = node(
            "  addresses:\n  - {address: 192.0.2.10, type: InternalIP}\n  bgp:\n    ipv4Address: 198.51.100.7/24\n    asNumber: 64512\n  vxlanTunnelMACAddr: 66:aa:00:11:22:33\n",
        );
        n.validate().unwrap();
        assert_eq!(n.spec.ipv4(), Some("198.51.100.7".parse().unwrap()));
        let n = node("  addresses:\n  - {address: 'fd00::1', type: InternalIP}\n  - {address: 192.0.2.10, type: InternalIP}\n");
        assert_eq!(n.spec.ipv4(), Some("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn ipv6_choice_skips_link_local() {
        let n = node("  addresses:\n  - {address: 'fe80::1', type: InternalIP}\n  - {address: 192.0.2.10, type: InternalIP}\n  - {address: '2001:db8::10', type: InternalIP}\n");
        assert_eq!(n.spec.ipv6(), Some("2001:db8::10".parse().unwrap()));
        let n = node("  addresses:\n  - {address: '2001:db8::10', type: InternalIP}\n  bgp:\n    ipv6Address: '2001:db8:1::7/64'\n");
        assert_eq!(n.spec.ipv6(), Some("2001:db8:1::7".parse().unwrap()));
        let n = node("  addresses:\n  - {address: 192.0.2.10, type: InternalIP}\n");
        assert_eq!(n.spec.ipv6(), None);
    }

    #[test]
    fn invalid_fields_are_named() {
        let e = node("  bgp:\n    ipv4Address: 'fd00::1/64'\n    asNumber: 0\n")
            .validate()
            .unwrap_err();
        assert!(
            e.mentions("spec.bgp.ipv4Address") && e.mentions("spec.bgp.asNumber"),
            "{e}"
        );
        let e = node("  vxlanTunnelMACAddr: 66:aa:00\n")
            .validate()
            .unwrap_err();
        assert!(e.mentions("spec.vxlanTunnelMACAddr"), "{e}");
        let e = node("  addresses:\n  - {address: 0.0.0.0, type: InternalIP}\n")
            .validate()
            .unwrap_err();
        assert!(e.mentions("spec.addresses[0].address"), "{e}");
        let mut n = node("  {}\n");
        n.metadata.name = "Node_1".into();
        assert!(n.validate().unwrap_err().mentions("metadata.name"));
    }
}
