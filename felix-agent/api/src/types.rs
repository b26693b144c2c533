//! Messages of the agent API.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Identifies one pod interface: the IPAM handle is derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// ADD, first half: addresses for a pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddRequest {
    pub attachment: Attachment,
    pub pod: PodRef,
    #[serde(default = "yes")]
    pub assign_ipv4: bool,
    #[serde(default)]
    pub assign_ipv6: bool,
    /// Restrict to these pools (names or CIDRs).
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// Exact addresses asked for (CNI_ARGS `IP=` or the `ips` capability) instead of automatic
    /// assignment.
    #[serde(default)]
    pub requested: Vec<IpAddr>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResponse {
    /// The pod's addresses as host routes (`/32`, `/128`).
    pub addresses: Vec<IpNet>,
    /// MTU for the pod's interface: underlay MTU minus encapsulation overhead.
    pub mtu: u32,
    /// Name of the node the agent runs on.
    pub node: String,
}

/// ADD, second half: the pod is wired; the agent records its WorkloadEndpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRequest {
    pub attachment: Attachment,
    pub pod: PodRef,
    /// Host-side veth.
    pub host_ifname: String,
    /// MAC of the container-side interface.
    pub mac: String,
    pub addresses: Vec<IpNet>,
}

/// DEL: release the interface's addresses and forget its endpoint. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelRequest {
    pub attachment: Attachment,
    /// Known when the runtime passes CNI_ARGS; lets the agent find the endpoint directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelResponse {
    pub released: Vec<IpAddr>,
    /// Host veth and addresses of the endpoint that was removed, so the plugin can clean up
    /// the node side even when the runtime gave no pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
}

/// GC: release every attachment of this node not in `valid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    pub valid: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcResponse {
    /// Attachments whose addresses were released.
    pub released: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    pub ready: bool,
    /// Why not ready (empty when ready).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub node: String,
    /// MTU for pod interfaces on this node.
    #[serde(default)]
    pub mtu: u32,
    /// Dataplane features this node cannot provide, each named with its cause (e.g. "kernel has
    /// no ipip support: cannot create tunl0 for pool default-ipv4"). They do not make the node
    /// unready: pods of the other pools work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataplane_problems: Vec<String>,
    /// The BGP speaker, when the agent runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpStatus>,
    /// The ENI pool, when the node runs the VPC-native backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<VpcStatus>,
}

/// The node's ENI pool (VPC-native backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcStatus {
    pub instance_id: String,
    pub instance_type: String,
    /// The AWS formula's pods for this type and mode (capped as the EKS calculator does):
    /// what kubelet's --max-pods should be.
    pub max_pods: u32,
    /// Attached ENIs, by device index.
    pub enis: Vec<VpcEniStatus>,
    /// Pool addresses in all, held by pods, and cooling down after a release.
    pub addresses: u32,
    pub assigned: u32,
    pub cooling: u32,
    /// The last EC2 problem, one line (throttling, a limit, a full subnet); none when the last
    /// pass worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcEniStatus {
    pub id: String,
    pub device_index: u32,
    pub mac: String,
    /// The node's interface for it; none while the ENI waits to appear on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// The node's BGP speaker: identity, sessions, and what reached the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpStatus {
    pub asn: u32,
    pub router_id: String,
    pub listen_port: u16,
    /// Set on a route reflector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reflector_cluster_id: Option<String>,
    pub peers: Vec<BgpPeerStatus>,
    /// Prefixes this node originates.
    pub prefixes_originated: usize,
    /// Learned routes in the kernel (protocol 81).
    pub routes_installed: usize,
    /// After a restart, routes the previous run installed are kept until every peer has sent
    /// its table (graceful restart); false once that is over.
    pub restart_pending: bool,
    /// What keeps part of BGP from working, each naming its cause (a peer's unreadable password
    /// file, a listen port in use, next hops the node cannot reach).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One BGP session, as `trellisctl node status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerStatus {
    pub address: std::net::IpAddr,
    pub port: u16,
    pub asn: u32,
    /// mesh, rr (a reflector of ours), rr-client, global or node.
    #[serde(rename = "type")]
    pub kind: String,
    /// What configured it: `mesh` or `BGPPeer NAME`.
    pub source: String,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Unix seconds when the session entered its state.
    pub since: u64,
    pub prefixes_received: usize,
    pub prefixes_advertised: usize,
    /// The peer is restarting; its routes are kept as stale meanwhile.
    #[serde(default)]
    pub stale: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Body of every failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// The CNI error code the plugin should report (e.g. 11 = try again later).
    pub code: u32,
    pub message: String,
}
