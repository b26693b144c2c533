//! The desired VXLAN state of this node, computed purely from a view of the cluster
//! (Calico's `vxlan_mgr` semantics; no I/O here, see `vxlan_apply` for the kernel side).
//!
//! For this node: the device `vxlan.trellis` (VNI 4096, UDP 4789, local = underlay IPv4, learning
//! off, MAC = the node's `vxlanTunnelMACAddr`, address = its VTEP IP /32). For every other node
//! with a VTEP (IP + MAC) and an underlay IPv4: a permanent ARP entry `VTEP_IP -> VTEP_MAC` and a
//! permanent FDB entry `VTEP_MAC -> dst UNDERLAY_IP` on the device, and for each of its blocks
//! inside a pool that encapsulates towards it, `BLOCK via VTEP_IP dev vxlan.trellis onlink`.
//!
//! IPv6 pods get the same on a second device, `vxlan6.trellis` ([`VxlanFamily::V6`]: VNI 6096,
//! IPv6 VTEP `ipv6VXLANTunnelAddr`, MAC `vxlanTunnelMACAddrV6`, NDP entries and IPv6 routes).
//! Its routes and NDP entries name the remote VTEP by the EUI-64 link-local address of its MAC
//! ([`VxlanFamily::gateway`]), not by its VTEP address: the VTEP address lies inside the remote
//! node's block, and while a direct route for that block exists (the moment a pool switches from
//! `Never` to VXLAN) the kernel refuses an IPv6 `onlink` route through a gateway that another
//! device's route covers (`ip6_route_check_nh_onlink`: EINVAL, "Nexthop has invalid gateway or
//! device mismatch"). A link-local gateway is never looked up, and it never appears on the wire
//! either: the permanent NDP entry turns it into the MAC, as the VTEP address did.
//! Unlike Calico's `vxlan-v6.calico`, its outer packets go over the IPv4 underlay (the lab's
//! underlay has no IPv6), so `local` and the FDB destinations are IPv4 for both families.
//! Two choices, both tried in a scratch namespace on the 6.18 kernel:
//! - the name: `vxlan-v6.trellis` is 16 bytes and the kernel rejects it (IFNAMSIZ is 16 with the
//!   NUL), hence `vxlan6.trellis`;
//! - the port: two VXLAN devices with the same `local` IPv4 and port 4789 but different VNIs are
//!   both accepted and brought up (they share one UDP socket, demultiplexed by VNI), so the IPv6
//!   device keeps the IANA port 4789 as Calico does; no second port has to be opened in firewalls.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use sha1::{Digest, Sha1};
use trellis_datastore::resources::{EncapMode, IpPool, Node};

use super::ClusterUpdate;

/// Name of the VXLAN device (Calico's is `vxlan.calico`).
pub const VXLAN_DEVICE: &str = "vxlan.trellis";
/// VNI of the device (Calico's default).
pub const VXLAN_VNI: u32 = 4096;
/// IANA VXLAN port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;
/// Name of the IPv6 VXLAN device (Calico's `vxlan-v6.calico`; ours must fit IFNAMSIZ).
pub const VXLAN_V6_DEVICE: &str = "vxlan6.trellis";
/// VNI of the IPv6 device (Calico's default).
pub const VXLAN_V6_VNI: u32 = 6096;
/// UDP port of the IPv6 device: the same as the IPv4 one (see the module documentation).
pub const VXLAN_V6_PORT: u16 = 4789;
/// Bytes VXLAN adds to a packet: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Route protocol (`rtm_protocol`) of every route the VXLAN manager installs. The agent reads and
/// deletes only main-table routes with this protocol on `vxlan.trellis`, so routes of anyone else
/// (the kernel, DHCP, BGP daemons, an operator's `ip route add`) are never touched. 80 is the
/// number Calico's Felix uses for its routes: it is unassigned in iproute2's `rt_protos`, and a
/// node migrated from Calico has its old `vxlan.calico` routes on another device, which the
/// device check keeps out of our hands.
pub const ROUTE_PROTOCOL: u8 = 80;

/// Which pod address family a VXLAN device carries (its underlay is IPv4 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VxlanFamily {
    V4,
    V6,
}

impl VxlanFamily {
    pub fn device(self) -> &'static str {
        match self {
            Self::V4 => VXLAN_DEVICE,
            Self::V6 => VXLAN_V6_DEVICE,
        }
    }

    pub fn vni(self) -> u32 {
        match self {
            Self::V4 => VXLAN_VNI,
            Self::V6 => VXLAN_V6_VNI,
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Self::V4 => VXLAN_PORT,
            Self::V6 => VXLAN_V6_PORT,
        }
    }

    /// Whether `ip` (a VTEP, a route gateway) is of this family.
    pub fn has_addr(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Self::V4, IpAddr::V4(_)) | (Self::V6, IpAddr::V6(_))
        )
    }

    pub fn has_net(self, net: &IpNet) -> bool {
        self.has_addr(&net.addr())
    }

    /// The node's VTEP address of this family.
    pub fn vtep_addr(self, node: &Node) -> Option<IpAddr> {
        match self {
            Self::V4 => node.spec.ipv4_vxlan_tunnel_addr.map(IpAddr::V4),
            Self::V6 => node.spec.ipv6_vxlan_tunnel_addr.map(IpAddr::V6),
        }
    }

    /// The node's VTEP MAC of this family, as recorded.
    pub fn vtep_mac(self, node: &Node) -> Option<&str> {
        match self {
            Self::V4 => node.spec.vxlan_tunnel_mac_addr.as_deref(),
            Self::V6 => node.spec.vxlan_tunnel_mac_addr_v6.as_deref(),
        }
    }

    /// The next hop that routes and ARP/NDP entries use for a remote VTEP: its address for
    /// IPv4, the EUI-64 link-local address of its MAC for IPv6 (see the module documentation).
    pub fn gateway(self, vtep: IpAddr, mac: MacAddr) -> IpAddr {
        match self {
            Self::V4 => vtep,
            Self::V6 => IpAddr::V6(mac.eui64_link_local()),
        }
    }

    /// The MAC the registration writes for `node` on this family's device.
    pub fn default_mac(self, node: &str) -> MacAddr {
        match self {
            Self::V4 => vtep_mac_addr_for(node),
            Self::V6 => vtep_mac_addr_v6_for(node),
        }
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Bit 0 of the first octet clear (IEEE 802 individual address).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 0x01 == 0
    }

    /// Bit 1 of the first octet set (IEEE 802 locally administered address).
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }

    /// `fe80::` + the modified EUI-64 interface identifier (RFC 4291 appendix A): the link-local
    /// address a link with this MAC gets by default.
    pub fn eui64_link_local(&self) -> Ipv6Addr {
        let [a, b, c, d, e, f] = self.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            a ^ 0x02,
            b,
            c,
            0xff,
            0xfe,
            d,
            e,
            f,
        ])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// A stable VTEP MAC for a node: the first 6 bytes of SHA-1 of the node name, made a locally
/// administered unicast address. Calico draws a random MAC once and stores it on the Node; a
/// deterministic one serves the same purpose (unique per node with overwhelming probability,
/// 46 random bits) and needs no read-modify-write to stay stable across agent restarts or
/// reinstalls, so the registration code can always write the same value.
pub fn vtep_mac_for(node_name: &str) -> String {
    vtep_mac_addr_for(node_name).to_string()
}

/// [`vtep_mac_for`] as a [`MacAddr`].
pub fn vtep_mac_addr_for(node_name: &str) -> MacAddr {
    let digest = Sha1::digest(node_name.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & !0x01) | 0x02;
    MacAddr(mac)
}

/// The IPv6 device's MAC: as [`vtep_mac_addr_for`], from `NODE/v6`, so the two devices of a node
/// have different MACs (Calico draws one random MAC per device).
pub fn vtep_mac_addr_v6_for(node_name: &str) -> MacAddr {
    vtep_mac_addr_for(&format!("{node_name}/v6"))
}

/// [`vtep_mac_addr_v6_for`] as text.
pub fn vtep_mac_v6_for(node_name: &str) -> String {
    vtep_mac_addr_v6_for(node_name).to_string()
}

/// How this node's VXLAN is configured (from the agent's configuration, not the datastore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// This node's name in the datastore.
    pub node_name: String,
    /// MTU of the device: the underlay MTU minus [`VXLAN_OVERHEAD`].
    pub mtu: u32,
    /// The underlay subnet of this node, for `CrossSubnet` pools. `None`: take it from the node's
    /// `spec.bgp.ipv4Address`; when that is missing too, every remote node counts as being in
    /// another subnet (encapsulating works across any underlay, not encapsulating does not).
    pub underlay_subnet: Option<IpNet>,
}

/// What the VXLAN manager knows about the cluster: nodes, block affinities and pools.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, Node>,
    /// Block CIDR -> the node it is affine to.
    pub blocks: BTreeMap<IpNet, Option<String>>,
    pub pools: BTreeMap<String, IpPool>,
}

impl ClusterView {
    /// Folds an update in; returns whether anything changed (replayed watch events do not).
    pub fn apply(&mut self, update: &ClusterUpdate) -> bool {
        match update {
            ClusterUpdate::NodeUpdated(node) => {
                let name = node.name().to_string();
                if self.nodes.get(&name) == Some(node) {
                    return false;
                }
                self.nodes.insert(name, node.clone());
                true
            }
            ClusterUpdate::NodeDeleted(name) => self.nodes.remove(name).is_some(),
            ClusterUpdate::BlockUpdated(cidr, node) => {
                self.blocks.insert(*cidr, node.clone()).as_ref() != Some(node)
            }
            ClusterUpdate::BlockDeleted(cidr) => self.blocks.remove(cidr).is_some(),
            ClusterUpdate::PoolUpdated(pool) => {
                let name = pool.name().to_string();
                if self.pools.get(&name) == Some(pool) {
                    return false;
                }
                self.pools.insert(name, pool.clone());
                true
            }
            ClusterUpdate::PoolDeleted(name) => self.pools.remove(name).is_some(),
        }
    }
}

/// The device this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDeviceSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Source address of the outer packets: this node's underlay IPv4.
    pub local: Ipv4Addr,
    pub mtu: u32,
    pub mac: MacAddr,
    /// The VTEP address, configured as a host route (/32 or /128).
    pub address: IpAddr,
}

/// Everything the VXLAN manager wants in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanDesired {
    /// `None`: no pool needs VXLAN, so there should be no device (and nothing on it).
    pub device: Option<VxlanDeviceSpec>,
    /// Permanent ARP (IPv4) or NDP (IPv6) entries: remote VTEP IP -> remote VTEP MAC.
    pub neighbours: BTreeMap<IpAddr, MacAddr>,
    /// Permanent FDB entries: remote VTEP MAC -> remote underlay IP.
    pub fdb: BTreeMap<MacAddr, Ipv4Addr>,
    /// Routes: remote block -> via remote VTEP IP, onlink.
    pub routes: BTreeMap<IpNet, IpAddr>,
}

/// Why the desired state cannot be computed yet. The manager then leaves the kernel as it is
/// (Calico does the same until its node has a VTEP): tearing down a working device because this
/// node's record is momentarily incomplete would cut running pods off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("a pool uses VXLAN but node {0} is not in the datastore yet")]
    NoLocalNode(String),
    #[error("a pool uses VXLAN but node {0} has no IPv4 underlay address")]
    NoUnderlay(String),
    #[error("a pool uses VXLAN but node {0} has no ipv4VXLANTunnelAddr yet")]
    NoVtep(String),
    #[error("an IPv6 pool uses VXLAN but node {0} has no ipv6VXLANTunnelAddr yet")]
    NoVtepV6(String),
}

/// A remote node's tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Vtep {
    ip: IpAddr,
    mac: MacAddr,
    underlay: Ipv4Addr,
}

pub(super) fn remote_vtep(node: &Node, family: VxlanFamily) -> Option<Vtep> {
    Some(Vtep {
        ip: family.vtep_addr(node)?,
        mac: family.vtep_mac(node)?.parse().ok()?,
        underlay: node.spec.ipv4()?,
    })
}

/// The pool `block` was carved from.
pub(super) fn pool_for<'a>(
    pools: &'a BTreeMap<String, IpPool>,
    block: &IpNet,
) -> Option<&'a IpPool> {
    pools.values().find(|p| p.spec.cidr.contains(block))
}

/// This node's underlay IPv4 subnet: the configured one, else its `spec.bgp.ipv4Address`.
pub(super) fn local_subnet(cfg: &VxlanConfig, local: &Node) -> Option<Ipv4Net> {
    let from_node = || local.spec.bgp.as_ref()?.ipv4_address;
    match cfg.underlay_subnet.or_else(from_node)? {
        IpNet::V4(net) => Some(net.trunc()),
        IpNet::V6(_) => None,
    }
}

/// Whether traffic from this node (in `subnet`, if known) to a block of `pool` on the node at
/// `remote` goes through VXLAN. `CrossSubnet` encapsulates unless both nodes are known to share
/// the subnet: encapsulating works across any underlay, not encapsulating does not.
pub(super) fn vxlan_towards(pool: &IpPool, subnet: Option<Ipv4Net>, remote: Ipv4Addr) -> bool {
    match pool.spec.vxlan_mode {
        EncapMode::Never => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !subnet.is_some_and(|s| s.contains(&remote)),
    }
}

/// Computes the desired IPv4 VXLAN state of node `cfg.node_name`.
pub fn compute_desired(view: &ClusterView, cfg: &VxlanConfig) -> Result<VxlanDesired, NotReady> {
    compute_desired_for(view, cfg, VxlanFamily::V4)
}

/// Computes the desired VXLAN state of node `cfg.node_name` for the pods of `family`: only pools,
/// blocks and VTEPs of that family count.
pub fn compute_desired_for(
    view: &ClusterView,
    cfg: &VxlanConfig,
    family: VxlanFamily,
) -> Result<VxlanDesired, NotReady> {
    let vxlan_needed = view
        .pools
        .values()
        .any(|p| p.spec.vxlan_mode != EncapMode::Never && family.has_net(&p.spec.cidr));
    if !vxlan_needed {
        return Ok(VxlanDesired::default());
    }
    let me = &cfg.node_name;
    let local = view
        .nodes
        .get(me)
        .ok_or_else(|| NotReady::NoLocalNode(me.clone()))?;
    let underlay = local
        .spec
        .ipv4()
        .ok_or_else(|| NotReady::NoUnderlay(me.clone()))?;
    let vtep_ip = family.vtep_addr(local).ok_or_else(|| match family {
        VxlanFamily::V4 => NotReady::NoVtep(me.clone()),
        VxlanFamily::V6 => NotReady::NoVtepV6(me.clone()),
    })?;
    // An unset or malformed MAC falls back to the deterministic one the registration writes.
    let mac = family
        .vtep_mac(local)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| family.default_mac(me));
    let mut desired = VxlanDesired {
        device: Some(VxlanDeviceSpec {
            name: family.device().to_string(),
            vni: family.vni(),
            port: family.port(),
            local: underlay,
            mtu: cfg.mtu,
            mac,
            address: vtep_ip,
        }),
        ..VxlanDesired::default()
    };
    let subnet = local_subnet(cfg, local);

    // Remote VTEPs in node-name order; on a clash of VTEP IP or MAC the first node keeps it, so
    // a misconfigured node cannot take over another one's tunnel.
    let mut vteps: BTreeMap<&str, Vtep> = BTreeMap::new();
    for (name, node) in &view.nodes {
        if name == me {
            continue;
        }
        let Some(v) = remote_vtep(node, family) else {
            continue;
        };
        let gateway = family.gateway(v.ip, v.mac);
        if v.ip == vtep_ip
            || v.mac == mac
            || desired.neighbours.contains_key(&gateway)
            || desired.fdb.contains_key(&v.mac)
        {
            tracing::warn!(node = %name, vtep = %v.ip, mac = %v.mac, "VTEP clashes with another node's; ignored");
            continue;
        }
        desired.neighbours.insert(gateway, v.mac);
        desired.fdb.insert(v.mac, v.underlay);
        vteps.insert(name, v);
    }

    for (cidr, owner) in &view.blocks {
        let (block, Some(owner)) = (cidr, owner) else {
            continue;
        };
        if !family.has_net(block) {
            continue;
        }
        let Some(v) = vteps.get(owner.as_str()) else {
            continue;
        };
        let Some(pool) = pool_for(&view.pools, block) else {
            continue;
        };
        if vxlan_towards(pool, subnet, v.underlay) {
            desired.routes.insert(*block, family.gateway(v.ip, v.mac));
        }
    }
    Ok(desired)
}

#[cfg(test)]
mod tests {
    use trellis_datastore::resources::node::NodeBgpSpec;

    use super::*;
    use crate::dataplane::delta::DeltaTracker;
    use crate::dataplane::fixtures::{a, a4, mac, net, node, pool};

    fn cfg() -> VxlanConfig {
        VxlanConfig {
            node_name: "node-1".into(),
            mtu: 1450,
            underlay_subnet: Some("192.0.2.0/24".parse().unwrap()),
        }
    }

    /// node-1 (local, 192.0.2.1) and node-2 (192.0.2.2), one Always pool, a block each.
    fn two_nodes() -> ClusterView {
        let mut v = ClusterView::default();
        for u in [
            ClusterUpdate::NodeUpdated(node("node-1", "192.0.2.1", Some("10.244.0.1"))),
            ClusterUpdate::NodeUpdated(node("node-2", "192.0.2.2", Some("10.244.1.1"))),
            ClusterUpdate::PoolUpdated(pool("default", "10.244.0.0/16", EncapMode::Always)),
            ClusterUpdate::BlockUpdated("10.244.0.0/26".parse().unwrap(), Some("node-1".into())),
            ClusterUpdate::BlockUpdated("10.244.1.0/26".parse().unwrap(), Some("node-2".into())),
        ] {
            assert!(v.apply(&u));
        }
        v
    }

    fn desired(v: &ClusterView) -> VxlanDesired {
        compute_desired(v, &cfg()).unwrap()
    }

    #[test]
    fn device_follows_the_local_node() {
        let d = desired(&two_nodes());
        assert_eq!(
            d.device,
            Some(VxlanDeviceSpec {
                name: "vxlan.trellis".into(),
                vni: 4096,
                port: 4789,
                local: a4("192.0.2.1"),
                mtu: 1450,
                mac: vtep_mac_addr_for("node-1"),
                address: a("10.244.0.1"),
            })
        );
    }

    #[test]
    fn node_added_brings_neighbour_fdb_and_routes() {
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::NodeDeleted("node-2".into()));
        let d = desired(&v);
        assert!(d.device.is_some());
        assert!(d.neighbours.is_empty() && d.fdb.is_empty() && d.routes.is_empty());

        v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-2",
            "192.0.2.2",
            Some("10.244.1.1"),
        )));
        let d = desired(&v);
        let mac2 = vtep_mac_addr_for("node-2");
        assert_eq!(d.neighbours, BTreeMap::from([(a("10.244.1.1"), mac2)]));
        assert_eq!(d.fdb, BTreeMap::from([(mac2, a4("192.0.2.2"))]));
        // Our own block gets no route: local pods have their own /32 routes.
        assert_eq!(
            d.routes,
            BTreeMap::from([(net("10.244.1.0/26"), a("10.244.1.1"))])
        );
    }

    /// [`two_nodes`] made dual-stack: an IPv6 Always pool, IPv6 VTEPs and a /122 block each.
    fn dual_stack() -> ClusterView {
        let mut v = two_nodes();
        for (name, underlay, v4, v6) in [
            ("node-1", "192.0.2.1", "10.244.0.1", "fd00:244::1"),
            ("node-2", "192.0.2.2", "10.244.1.1", "fd00:244::41"),
        ] {
            let mut n = node(name, underlay, Some(v4));
            n.spec.ipv6_vxlan_tunnel_addr = Some(v6.parse().unwrap());
            n.spec.vxlan_tunnel_mac_addr_v6 = Some(vtep_mac_v6_for(name));
            assert!(v.apply(&ClusterUpdate::NodeUpdated(n)));
        }
        for u in [
            ClusterUpdate::PoolUpdated(pool("v6", "fd00:244::/64", EncapMode::Always)),
            ClusterUpdate::BlockUpdated("fd00:244::/122".parse().unwrap(), Some("node-1".into())),
            ClusterUpdate::BlockUpdated("fd00:244::40/122".parse().unwrap(), Some("node-2".into())),
        ] {
            assert!(v.apply(&u));
        }
        v
    }

    #[test]
    fn ipv6_family_has_its_own_device_vteps_and_routes() {
        let v = dual_stack();
        let d6 = compute_desired_for(&v, &cfg(), VxlanFamily::V6).unwrap();
        let mac1 = vtep_mac_addr_v6_for("node-1");
        let mac2 = vtep_mac_addr_v6_for("node-2");
        assert_ne!(mac1, vtep_mac_addr_for("node-1"), "one MAC per device");
        assert_eq!(
            d6.device,
            Some(VxlanDeviceSpec {
                name: "vxlan6.trellis".into(),
                vni: 6096,
                port: 4789,
                local: a4("192.0.2.1"),
                mtu: 1450,
                mac: mac1,
                address: a("fd00:244::1"),
            })
        );
        // Next hop: the link-local address of node-2's MAC, not its VTEP address.
        let gw2 = IpAddr::V6(mac2.eui64_link_local());
        assert_eq!(d6.neighbours, BTreeMap::from([(gw2, mac2)]));
        assert_eq!(d6.fdb, BTreeMap::from([(mac2, a4("192.0.2.2"))]));
        assert_eq!(d6.routes, BTreeMap::from([(net("fd00:244::40/122"), gw2)]));
        // The IPv4 device sees none of it.
        let d4 = desired(&v);
        assert_eq!(d4, desired(&two_nodes()));
    }

    #[test]
    fn eui64_link_local_flips_the_universal_local_bit() {
        let m = mac("52:54:00:12:34:56");
        assert_eq!(
            m.eui64_link_local(),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(VxlanFamily::V4.gateway(a("10.244.1.1"), m), a("10.244.1.1"));
    }

    #[test]
    fn ipv6_device_needs_an_ipv6_vxlan_pool_and_the_ipv6_vtep() {
        let mut v = two_nodes();
        assert_eq!(
            compute_desired_for(&v, &cfg(), VxlanFamily::V6),
            Ok(VxlanDesired::default()),
            "IPv4 pools only: no vxlan6.trellis"
        );
        v.apply(&ClusterUpdate::PoolUpdated(pool(
            "v6",
            "fd00:244::/64",
            EncapMode::Always,
        )));
        assert_eq!(
            compute_desired_for(&v, &cfg(), VxlanFamily::V6),
            Err(NotReady::NoVtepV6("node-1".into()))
        );
        assert!(desired(&v).device.is_some(), "IPv4 is not held back");
        let mut v = dual_stack();
        v.apply(&ClusterUpdate::PoolUpdated(pool(
            "v6",
            "fd00:244::/64",
            EncapMode::Never,
        )));
        assert_eq!(
            compute_desired_for(&v, &cfg(), VxlanFamily::V6),
            Ok(VxlanDesired::default())
        );
    }

    #[test]
    fn node_without_complete_vtep_is_skipped() {
        let mut v = two_nodes();
        let mut n3 = node("node-3", "192.0.2.3", Some("10.244.2.1"));
        n3.spec.vxlan_tunnel_mac_addr = None;
        v.apply(&ClusterUpdate::NodeUpdated(n3));
        v.apply(&ClusterUpdate::BlockUpdated(
            "10.244.2.0/26".parse().unwrap(),
            Some("node-3".into()),
        ));
        let d = desired(&v);
        assert_eq!(d.neighbours.len(), 1);
        assert!(!d.routes.contains_key(&net("10.244.2.0/26")));
    }

    #[test]
    fn vtep_change_moves_every_entry() {
        let mut v = two_nodes();
        let before = desired(&v);
        let mut n2 = node("node-2", "192.0.2.22", Some("10.244.1.65"));
        n2.spec.vxlan_tunnel_mac_addr = Some("66:00:00:00:00:02".into());
        v.apply(&ClusterUpdate::NodeUpdated(n2));
        let after = desired(&v);
        let new_mac: MacAddr = "66:00:00:00:00:02".parse().unwrap();
        assert_eq!(
            after.neighbours,
            BTreeMap::from([(a("10.244.1.65"), new_mac)])
        );
        assert_eq!(after.fdb, BTreeMap::from([(new_mac, a4("192.0.2.22"))]));
        assert_eq!(after.routes[&net("10.244.1.0/26")], a("10.244.1.65"));

        // Through the trackers the change is: old ARP/FDB entries deleted, new ones added, the
        // route updated in place (same key, new next hop).
        let mut neigh = DeltaTracker::new();
        neigh.replace_all_dataplane(before.neighbours.clone());
        neigh.replace_all_desired(after.neighbours.clone());
        assert_eq!(
            neigh.pending_deletions().copied().collect::<Vec<_>>(),
            vec![a("10.244.1.1")]
        );
        let mut routes = DeltaTracker::new();
        routes.replace_all_dataplane(before.routes.clone());
        routes.replace_all_desired(after.routes.clone());
        assert_eq!(routes.pending_deletions().count(), 0);
        assert_eq!(
            routes.pending_updates().collect::<Vec<_>>(),
            vec![(&net("10.244.1.0/26"), &a("10.244.1.65"))]
        );
    }

    #[test]
    fn block_moves_between_nodes() {
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-3",
            "192.0.2.3",
            Some("10.244.2.1"),
        )));
        let block: IpNet = "10.244.1.0/26".parse().unwrap();
        v.apply(&ClusterUpdate::BlockUpdated(block, Some("node-3".into())));
        assert_eq!(desired(&v).routes[&net("10.244.1.0/26")], a("10.244.2.1"));
        // Moved to this node: no route (the CNI routes its pods).
        v.apply(&ClusterUpdate::BlockUpdated(block, Some("node-1".into())));
        assert!(!desired(&v).routes.contains_key(&net("10.244.1.0/26")));
        // Orphaned (no affinity) or deleted: no route either.
        v.apply(&ClusterUpdate::BlockUpdated(block, None));
        assert!(desired(&v).routes.is_empty());
        v.apply(&ClusterUpdate::BlockUpdated(block, Some("node-2".into())));
        assert!(v.apply(&ClusterUpdate::BlockDeleted(block)));
        assert!(desired(&v).routes.is_empty());
    }

    #[test]
    fn pool_switched_to_never_drops_routes_then_device() {
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::PoolUpdated(pool(
            "other",
            "10.245.0.0/16",
            EncapMode::Always,
        )));
        v.apply(&ClusterUpdate::BlockUpdated(
            "10.245.0.0/26".parse().unwrap(),
            Some("node-2".into()),
        ));
        assert_eq!(desired(&v).routes.len(), 2);

        v.apply(&ClusterUpdate::PoolUpdated(pool(
            "default",
            "10.244.0.0/16",
            EncapMode::Never,
        )));
        let d = desired(&v);
        assert!(d.device.is_some(), "another pool still needs VXLAN");
        assert_eq!(d.neighbours.len(), 1);
        assert_eq!(
            d.routes.keys().copied().collect::<Vec<_>>(),
            vec![net("10.245.0.0/26")]
        );

        v.apply(&ClusterUpdate::PoolUpdated(pool(
            "other",
            "10.245.0.0/16",
            EncapMode::Never,
        )));
        assert_eq!(desired(&v), VxlanDesired::default());
        // Deleting the last VXLAN pool has the same effect as switching it to Never.
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::PoolDeleted("default".into()));
        assert_eq!(desired(&v), VxlanDesired::default());
    }

    #[test]
    fn cross_subnet_encapsulates_only_across_subnets() {
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::PoolUpdated(pool(
            "default",
            "10.244.0.0/16",
            EncapMode::CrossSubnet,
        )));
        v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-3",
            "198.51.100.3",
            Some("10.244.2.1"),
        )));
        v.apply(&ClusterUpdate::BlockUpdated(
            "10.244.2.0/26".parse().unwrap(),
            Some("node-3".into()),
        ));
        let d = desired(&v);
        // node-2 shares 192.0.2.0/24: plain routing (BGP's job), no VXLAN route.
        assert_eq!(
            d.routes,
            BTreeMap::from([(net("10.244.2.0/26"), a("10.244.2.1"))])
        );
        // ARP and FDB entries exist for both: the device serves any pool needing it.
        assert_eq!(d.neighbours.len(), 2);

        // Subnet from the node's BGP address when the config does not give one.
        let mut c = cfg();
        c.underlay_subnet = None;
        let mut n1 = node("node-1", "192.0.2.1", Some("10.244.0.1"));
        n1.spec.bgp = Some(NodeBgpSpec {
            ipv4_address: Some("192.0.2.1/16".parse().unwrap()),
            ..NodeBgpSpec::default()
        });
        v.apply(&ClusterUpdate::NodeUpdated(n1));
        assert_eq!(compute_desired(&v, &c).unwrap().routes.len(), 1);
        // Unknown subnet: encapsulate to everyone.
        v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-1",
            "192.0.2.1",
            Some("10.244.0.1"),
        )));
        assert_eq!(compute_desired(&v, &c).unwrap().routes.len(), 2);
    }

    #[test]
    fn incomplete_local_node_is_not_ready_only_when_vxlan_is_used() {
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-1",
            "192.0.2.1",
            None,
        )));
        assert_eq!(
            compute_desired(&v, &cfg()),
            Err(NotReady::NoVtep("node-1".into()))
        );
        v.apply(&ClusterUpdate::NodeDeleted("node-1".into()));
        assert_eq!(
            compute_desired(&v, &cfg()),
            Err(NotReady::NoLocalNode("node-1".into()))
        );
        v.apply(&ClusterUpdate::PoolDeleted("default".into()));
        assert_eq!(compute_desired(&v, &cfg()), Ok(VxlanDesired::default()));
    }

    #[test]
    fn clashing_vteps_keep_the_first_node() {
        let mut v = two_nodes();
        v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-3",
            "192.0.2.3",
            Some("10.244.1.1"),
        )));
        v.apply(&ClusterUpdate::BlockUpdated(
            "10.244.2.0/26".parse().unwrap(),
            Some("node-3".into()),
        ));
        let d = desired(&v);
        assert_eq!(
            d.fdb.values().copied().collect::<Vec<_>>(),
            vec![a4("192.0.2.2")]
        );
        assert_eq!(d.routes.len(), 1);
    }

    #[test]
    fn replayed_updates_do_not_count_as_changes() {
        let mut v = two_nodes();
        assert!(!v.apply(&ClusterUpdate::NodeUpdated(node(
            "node-2",
            "192.0.2.2",
            Some("10.244.1.1"),
        ))));
        assert!(!v.apply(&ClusterUpdate::BlockUpdated(
            "10.244.1.0/26".parse().unwrap(),
            Some("node-2".into())
        )));
        assert!(!v.apply(&ClusterUpdate::PoolDeleted("nope".into())));
    }

    #[test]
    fn vtep_macs_are_stable_local_unicast_and_distinct() {
        let m1 = vtep_mac_addr_for("node-1");
        assert_eq!(vtep_mac_for("node-1"), m1.to_string());
        assert_eq!(vtep_mac_addr_for("node-1"), m1);
        assert!(m1.is_unicast() && m1.is_locally_administered());
        let many: std::collections::BTreeSet<MacAddr> = (0..1000)
            .map(|i| vtep_mac_addr_for(&format!("node-{i}")))
            .collect();
        assert_eq!(many.len(), 1000);
        assert!(many
            .iter()
            .all(|m| m.is_unicast() && m.is_locally_administered()));
        // Datastore validation accepts the text form.
        assert!(trellis_datastore::resources::node::is_mac(&vtep_mac_for(
            "x"
        )));
    }

    #[test]
    fn mac_parse_round_trips_and_rejects_junk() {
        let m: MacAddr = "66:aa:00:11:22:3f".parse().unwrap();
        assert_eq!(m.to_string(), "66:aa:00:11:22:3f");
        assert_eq!("66:AA:00:11:22:3F".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "66:aa:00:11:22",
            "66:aa:00:11:22:33:44",
            "6:aa:00:11:22:33",
            "zz:aa:00:11:22:33",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
