//! DEL: release the addresses and remove the interfaces. Idempotent: an unknown container, an
//! empty or vanished CNI_NETNS, a second DEL all succeed.

use std::net::IpAddr;
use std::path::Path;

use trellis_agent_api::DelRequest;

use super::pod::{self, wiring_error};
use super::{agent, agent_error, delegate};
use crate::spec::{CniError, Invocation, Ipam};
use crate::wiring;

pub fn del(inv: &Invocation, stdin: &str) -> Result<(), CniError> {
    let attachment = pod::attachment(inv)?;
    let pod_known = inv.env.args.pod().is_some();
    let pod = pod::pod(inv, &attachment);
    let client = agent(inv)?;
    if let Some(Ipam::Delegated(d)) = &inv.conf.ipam {
        delegate::exec(inv, &d.plugin_type, "DEL", stdin)?;
    }
    // The agent releases the addresses and tells which host veth the endpoint had (the only way
    // to find it when the runtime sends neither the pod name nor the netns, as `ctr` does).
    let out = client
        .del(&DelRequest {
            attachment: attachment.clone(),
            pod: pod_known.then(|| pod.clone()),
        })
        .map_err(agent_error)?;
    let host_ifname = match out.host_ifname {
        Some(h) => h,
        None => pod::host_ifname(&pod)?,
    };
    let addresses: Vec<IpAddr> = out.addresses.iter().map(|n| n.addr()).collect();
    let netns = inv.env.netns().filter(|n| !n.is_empty()).map(Path::new);
    wiring::del(None, netns, &attachment.ifname, &host_ifname, &addresses).map_err(wiring_error)
}
