//! Wiring a pod's network namespace: what `trellis` ADD, DEL and CHECK do to the kernel.
//!
//! A pod gets a routed veth pair (Calico's model, no bridge):
//!
//! ```text
//!  node netns                                 pod netns
//!  trellisXXXXXXXX  mac ee:ee:ee:ee:ee:ee  <=veth=>  eth0
//!    fe80::ecee:eeff:feee:eeee/64 nodad             10.65.0.2/32, fd00::2/128 nodad
//!    proxy_arp=1, forwarding=1 (v4 and v6)          169.254.1.1 dev eth0 scope link
//!  10.65.0.2 dev trellisXXXXXXXX scope link         default via 169.254.1.1 dev eth0
//!  fd00::2 dev trellisXXXXXXXX                      default via fe80::ecee:eeff:feee:eeee
//!                                                   permanent neighbours 169.254.1.1 and
//!                                                   fe80::ecee:eeff:feee:eeee -> ee:ee:ee:ee:ee:ee
//! ```
//!
//! - The veth is created with one netlink request whose peer carries `IFLA_NET_NS_FD`, so the
//!   container side is born in the pod netns (no move, no rename).
//! - The pod's gateways are the host veth itself: 169.254.1.1 and the host veth's link-local
//!   address, both resolved by permanent neighbour entries to the host veth's fixed MAC. The pod
//!   therefore never depends on proxy ARP or NDP answers from the node (ENVIRONMENT.md, "Proxy
//!   ARP pitfall"); proxy_arp stays on for anything else that ARPs through the veth.
//! - The host veth's IPv6 address generation is turned off and its link-local address is added
//!   with `nodad`, so it is usable immediately: the node needs it as the source of its neighbour
//!   solicitations towards the pod, and a kernel-generated one would be tentative for ~1 s.
//!
//! # Threads and namespaces
//! Namespaces belong to OS threads. Every operation works through one dedicated thread per
//! namespace (`netns.rs`, the only module that calls `setns`), each with its own netlink socket;
//! the caller's thread never changes namespace:
//!
//! ```text
//!  caller --jobs--> node thread: setns(node netns), rtnetlink socket, node's /proc/sys/net
//!         --jobs--> pod thread:  setns(pod netns), rtnetlink socket
//! ```
//! Requests on a socket are pipelined: all are written before the first answer is read.
//!
//! # Public API
//! - [`add`] wires a [`PodSpec`] and returns what it created ([`Wired`]); on any failure it
//!   removes what it created and reports the failed step with its input;
//! - [`del`] removes a pod's wiring; idempotent, and succeeds when the pod netns is gone;
//! - [`check`] reports every [`Problem`] with a pod's wiring;
//! - [`host_veth_name`] names the host-side veth.

mod error;
mod kernel;
mod names;
mod netns;
mod observe;
mod ops;
mod plan;

#[cfg(test)]
mod fake;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use error::{Problem, Side, WiringError};
pub use names::{host_veth_name, DEFAULT_HOST_VETH_PREFIX};
pub use plan::{Neighbour, Route, GATEWAY_V4, GATEWAY_V6, HOST_VETH_MAC};

/// What ADD wires and CHECK verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// The node's network namespace; `None` is the namespace of the calling thread.
    pub node_netns: Option<PathBuf>,
    /// The pod's network namespace (`CNI_NETNS`).
    pub pod_netns: PathBuf,
    /// The container-side interface name (`CNI_IFNAME`, usually `eth0`).
    pub ifname: String,
    /// The host-side veth name, from [`host_veth_name`].
    pub host_ifname: String,
    /// The pod's addresses; each is put on the container interface as a /32 or /128 whatever
    /// the prefix of the block it came from.
    pub addresses: Vec<IpAddr>,
    /// MTU of both veth ends.
    pub mtu: u32,
}

/// What [`add`] created, for the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub ifname: String,
    /// The container interface's index inside the pod netns.
    pub container_ifindex: u32,
    pub container_mac: [u8; 6],
}

/// ADD: creates the veth pair and configures both ends (see the module documentation).
///
/// An existing host veth with the same name is taken as a leftover of an earlier ADD of the same
/// pod (the name is derived from the pod) and replaced. On failure everything created is removed
/// again and the error names the step and its input; if that removal fails too, the error is a
/// [`WiringError::RollbackFailed`] carrying both.
pub fn add(spec: &PodSpec) -> Result<Wired, WiringError> {
    ops::add(&kernel::Host, spec)
}

/// DEL: removes the veth pair (and with it the host routes and everything inside the pod netns).
///
/// Finds the pair by `host_ifname` in the node netns, or else by `ifname` inside `pod_netns`.
/// Succeeds when nothing is left to delete, including when `pod_netns` is `None`, no longer
/// exists, or is no longer a network namespace. Interfaces that are not veths are left alone.
pub fn del(
    node_netns: Option<&Path>,
    pod_netns: Option<&Path>,
    ifname: &str,
    host_ifname: &str,
    addresses: &[IpAddr],
) -> Result<(), WiringError> {
    ops::del(
        &kernel::Host,
        node_netns,
        pod_netns,
        ifname,
        host_ifname,
        addresses,
    )
}

/// CHECK: verifies both ends of the wiring; [`WiringError::Check`] lists every [`Problem`].
pub fn check(spec: &PodSpec) -> Result<(), WiringError> {
    ops::check(&kernel::Host, spec)
}
