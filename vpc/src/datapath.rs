//! The node side of VPC-native mode: policy routing and NAT that make a pod on an ENI address
//! send its traffic out of the right ENI, as the AWS VPC CNI does (`pkg/networkutils` there).
//! The pod's veth and its `/32` route in the main table are the CNI's (as in overlay mode);
//! everything here sits around them.
//!
//! ```text
//!  Eni[] + PodAttachment[] + VpcDatapathConfig
//!     │ desired::compute_desired (pure)            nft::render_nft (pure)
//!     ▼                                               ▼
//!  DesiredDatapath ── plan::plan(desired, observed) ──► Request[]        nft text
//!     ▲                                 (pure)           │                │
//!  apply::reconcile: read rules, links, IPv4 routes ─────┘ send each      run_nft: `nft -f -`
//!                    via dyn DatapathNetlink (rtnetlink | fake in tests)   (one transaction)
//! ```
//!
//! What the kernel ends up with (IPv4; AWS's IPv6 mode puts every pod on the primary ENI):
//! - `to POD/32 lookup main` at priority 512 for every pod, so traffic towards a pod always
//!   finds its veth route, whatever source rule follows;
//! - `fwmark MARK/MARK lookup main` at 1024: connections marked by the nft chain (arrived on the
//!   primary interface, or pod traffic to be SNATed) are routed by the main table, i.e. out of
//!   the primary ENI;
//! - `from POD/32 lookup TABLE(ENI)` at 1536 for pods on a secondary ENI, where the ENI's table
//!   holds `default via GW dev ENI` and `GW/32 dev ENI scope link`, so the VPC sees the pod's
//!   address leave the ENI it is assigned to (its source/destination check drops it otherwise);
//! - the kernel's own subnet route of each secondary ENI is removed from the main table (AWS
//!   does the same), so node traffic to the subnet keeps using the primary ENI.
//!
//! Priorities and the table numbering are AWS's (`network.go`: `ToContainerRulePriority`,
//! `hostRulePriority`, `FromPodRulePriority`; route table = device number + 1), so nodes and
//! tools that know the AWS layout read ours the same way.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub mod apply;
pub mod desired;
pub mod msg;
pub mod nft;
pub mod plan;

#[cfg(test)]
mod fake;

pub use apply::{reconcile, ApplyError, ApplyStats, DatapathNetlink, RtDatapathNetlink};
pub use desired::{compute_desired, DesiredDatapath, DesiredError, NextHop, RuleKey};
pub use nft::{render_nft, run_nft, NftError};

/// `to POD/32 lookup main` (AWS `ToContainerRulePriority`).
pub const TO_POD_PRIORITY: u32 = 512;
/// `fwmark MARK/MARK lookup main` (AWS `hostRulePriority`).
pub const MAIN_ENI_MARK_PRIORITY: u32 = 1024;
/// `from POD/32 lookup TABLE(ENI)` (AWS `FromPodRulePriority`).
pub const FROM_POD_PRIORITY: u32 = 1536;
/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;
/// AWS's default connection mark (`AWS_VPC_K8S_CNI_CONNMARK`, 0x80).
pub const DEFAULT_CONNMARK: u32 = 0x80;
/// AWS's default ENI MTU (`AWS_VPC_ENI_MTU`): jumbo frames inside a VPC.
pub const DEFAULT_ENI_MTU: u32 = 9001;

/// The routing table of the ENI with this device number. AWS's convention (`network.go`:
/// `tableNumber = deviceNumber + 1`): device 0 is the primary ENI, which uses the main table,
/// so the first secondary ENI (device 1) gets table 2.
pub fn eni_table(device_number: u32) -> u32 {
    device_number + 1
}

/// The VPC router of a subnet answers on its first host address (AWS reserves `.1`).
pub fn subnet_gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1))
}

/// An ENI attached to this node, as IMDS and EC2 describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    /// `eni-…`, for messages.
    pub id: String,
    /// The interface's name in the node's network namespace.
    pub if_name: String,
    /// EC2's attachment device index; 0 is the primary ENI.
    pub device_number: u32,
    /// MAC address, for messages (the agent finds the interface by it, as AWS does).
    pub mac: String,
    pub subnet: Ipv4Net,
    /// The subnet's router, normally [`subnet_gateway`] of `subnet`.
    pub gateway: Ipv4Addr,
    pub primary: bool,
}

impl Eni {
    /// An ENI whose gateway is its subnet's first host.
    pub fn new(
        id: &str,
        if_name: &str,
        device_number: u32,
        mac: &str,
        subnet: Ipv4Net,
        primary: bool,
    ) -> Self {
        Self {
            id: id.to_string(),
            if_name: if_name.to_string(),
            device_number,
            mac: mac.to_string(),
            subnet: subnet.trunc(),
            gateway: subnet_gateway(subnet),
            primary,
        }
    }
}

/// A pod holding one ENI address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodAttachment {
    pub ip: IpAddr,
    /// Host side of the pod's veth, for messages (the CNI made it and its `/32` route).
    pub host_veth: String,
    /// The ENI `ip` is assigned to.
    pub eni_id: String,
}

/// Node-wide settings of the VPC datapath (the AWS VPC CNI's environment variables in brackets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcDatapathConfig {
    /// The VPC's IPv4 CIDRs: traffic to them is never SNATed.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// More destinations that are not SNATed (`AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`).
    pub exclude_snat_cidrs: Vec<Ipv4Net>,
    /// A NAT gateway does SNAT; pods leave with their own address by their own ENI
    /// (`AWS_VPC_K8S_CNI_EXTERNALSNAT`).
    pub external_snat: bool,
    /// The primary ENI's interface name in the node namespace.
    pub primary_if: String,
    /// The primary ENI's primary address: the SNAT source.
    pub primary_ip: Ipv4Addr,
    /// The connection mark bit(s) (`AWS_VPC_K8S_CNI_CONNMARK`, default 0x80).
    pub connmark: u32,
    /// Host-side veth names start with this (`AWS_VPC_K8S_CNI_VETHPREFIX`; ours is "trellis").
    pub pod_if_prefix: String,
    /// MTU set on secondary ENIs (`AWS_VPC_ENI_MTU`).
    pub eni_mtu: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_device_number_plus_one_and_gateway_is_the_first_host() {
        assert_eq!(eni_table(1), 2);
        assert_eq!(eni_table(0), 1);
        assert_eq!(
            subnet_gateway("10.0.32.0/19".parse().unwrap()),
            Ipv4Addr::new(10, 0, 32, 1)
        );
        let eni = Eni::new(
            "eni-1",
            "eth1",
            1,
            "0a:00:00:00:00:01",
            "10.0.33.7/19".parse().unwrap(),
            false,
        );
        assert_eq!(eni.subnet, "10.0.32.0/19".parse::<Ipv4Net>().unwrap());
        assert_eq!(eni.gateway, Ipv4Addr::new(10, 0, 32, 1));
    }
}
