//! CHECK: the interfaces, addresses and routes of the previous result really exist.

use std::path::PathBuf;

use super::pod::{self, wiring_error};
use crate::spec::{CniError, ErrorCode, Invocation};
use crate::wiring::{self, PodSpec};

pub fn check(inv: &Invocation) -> Result<(), CniError> {
    let attachment = pod::attachment(inv)?;
    let pod = pod::pod(inv, &attachment);
    let netns = inv.env.netns().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is required for CHECK",
        )
    })?;
    let prev = inv.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "CHECK needs prevResult (the result of the ADD)",
        )
    })?;
    // Our container interface in the previous result: the one with a sandbox and CNI_IFNAME.
    let container = prev
        .interfaces
        .iter()
        .position(|i| i.name == attachment.ifname && i.sandbox.is_some());
    let addresses = prev
        .ips
        .iter()
        .filter(|ip| container.is_none() || ip.interface == container)
        .map(|ip| ip.address.addr())
        .collect();
    let mtu = container
        .and_then(|i| prev.interfaces[i].mtu)
        .or(inv.conf.mtu)
        .unwrap_or(0);
    let host_ifname = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name.starts_with(wiring::DEFAULT_HOST_VETH_PREFIX))
        .map(|i| i.name.clone())
        .map_or_else(|| pod::host_ifname(&pod), Ok)?;
    let spec = PodSpec {
        node_netns: None,
        pod_netns: PathBuf::from(netns),
        ifname: attachment.ifname,
        host_ifname,
        addresses,
        mtu,
    };
    wiring::check(&spec).map_err(|e| match e {
        wiring::WiringError::Check { .. } => CniError::plugin(100, e.to_string()),
        other => wiring_error(other),
    })
}
