//! ADD: addresses from the agent (or a delegated IPAM plugin), then the veth pair, then the
//! endpoint record. Each later failure undoes the earlier steps.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use trellis_agent_api::{
    AddRequest, Attachment, BlockingAgentClient, DelRequest, EndpointRequest, PodRef,
};

use super::pod::{self, wiring_error};
use super::{agent, agent_error, delegate};
use crate::spec::{CniError, CniResult, ErrorCode, Interface, Invocation, IpConfig, Ipam, Route};
use crate::wiring::{self, PodSpec, Wired};

/// Where the addresses came from, so a failure can give them back.
enum Source<'a> {
    Agent,
    Delegate(&'a str),
}

fn mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn add(inv: &Invocation, stdin: &str) -> Result<CniResult, CniError> {
    let attachment = pod::attachment(inv)?;
    let pod = pod::pod(inv, &attachment);
    let netns = inv.env.netns().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is required for ADD",
        )
    })?;
    let client = agent(inv)?;
    let host_ifname = pod::host_ifname(&pod)?;

    // 1. Addresses.
    let (source, addresses, mtu) = match &inv.conf.ipam {
        Some(Ipam::Delegated(d)) => {
            let r = delegate::add(inv, &d.plugin_type, stdin)?;
            // The agent knows the underlay MTU even when it does not hand out the addresses.
            let mtu = match inv.conf.mtu {
                Some(m) => m,
                None => client.status().map_err(agent_error)?.mtu,
            };
            let addrs: Vec<IpNet> = r
                .ips
                .iter()
                .map(|ip| IpNet::from(ip.address.addr()))
                .collect();
            (Source::Delegate(&d.plugin_type), addrs, mtu)
        }
        trellis => {
            let t = match trellis {
                Some(Ipam::Trellis(t)) => Some(t),
                _ => None,
            };
            let requested: Vec<IpAddr> = inv
                .conf
                .requested_ips(&inv.env.args)
                .iter()
                .map(|r| r.addr)
                .collect();
            let req = AddRequest {
                attachment: attachment.clone(),
                pod: pod.clone(),
                assign_ipv4: t.is_none_or(|t| t.assign_ipv4),
                assign_ipv6: t.is_some_and(|t| t.assign_ipv6),
                ipv4_pools: t
                    .map(|t| t.ipv4_pools.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                ipv6_pools: t
                    .map(|t| t.ipv6_pools.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                requested,
            };
            let got = client.add(&req).map_err(agent_error)?;
            (
                Source::Agent,
                got.addresses,
                inv.conf.mtu.unwrap_or(got.mtu),
            )
        }
    };
    let undo_addresses = |why: CniError| -> CniError {
        let undo = match source {
            Source::Agent => client
                .del(&DelRequest {
                    attachment: attachment.clone(),
                    pod: Some(pod.clone()),
                })
                .map(|_| ())
                .map_err(agent_error),
            Source::Delegate(plugin) => delegate::exec(inv, plugin, "DEL", stdin).map(|_| ()),
        };
        match undo {
            Ok(()) => why,
            Err(e) => why.with_details(format!("releasing the addresses also failed: {}", e.msg)),
        }
    };
    if mtu == 0 {
        return Err(undo_addresses(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "no MTU: set \"mtu\" in the network configuration",
        )));
    }

    // 2. The veth pair, addresses, routes.
    let spec = PodSpec {
        node_netns: None,
        pod_netns: PathBuf::from(netns),
        ifname: attachment.ifname.clone(),
        host_ifname: host_ifname.clone(),
        addresses: addresses.iter().map(IpNet::addr).collect(),
        mtu,
    };
    let wired = wiring::add(&spec).map_err(|e| undo_addresses(wiring_error(e)))?;

    // 3. The endpoint record.
    if let Err(e) = record(&client, &attachment, &pod, &wired, &addresses) {
        let e = match wiring::del(
            None,
            Some(&spec.pod_netns),
            &spec.ifname,
            &host_ifname,
            &spec.addresses,
        ) {
            Ok(()) => e,
            Err(w) => e.with_details(format!("removing the interfaces also failed: {w}")),
        };
        return Err(undo_addresses(e));
    }
    Ok(result(inv, netns, &wired, &addresses, mtu))
}

fn record(
    client: &BlockingAgentClient,
    attachment: &Attachment,
    pod: &PodRef,
    wired: &Wired,
    addresses: &[IpNet],
) -> Result<(), CniError> {
    let req = EndpointRequest {
        attachment: attachment.clone(),
        pod: pod.clone(),
        host_ifname: wired.host_ifname.clone(),
        mac: mac(wired.container_mac),
        addresses: addresses.to_vec(),
    };
    client.endpoint(&req).map_err(agent_error)
}

/// The CNI result: a chained plugin's `prevResult` (if any) plus our two interfaces, addresses
/// and default routes.
fn result(
    inv: &Invocation,
    netns: &str,
    wired: &Wired,
    addresses: &[IpNet],
    mtu: u32,
) -> CniResult {
    let mut r = inv.conf.prev_result.clone().unwrap_or_default();
    r.interfaces.push(Interface {
        name: wired.host_ifname.clone(),
        mac: Some(mac(wired.host_mac)),
        ..Default::default()
    });
    r.interfaces.push(Interface {
        name: wired.ifname.clone(),
        mac: Some(mac(wired.container_mac)),
        mtu: Some(mtu),
        sandbox: Some(netns.to_string()),
        ..Default::default()
    });
    let container = r.interfaces.len() - 1;
    for a in addresses {
        r.ips.push(IpConfig {
            address: *a,
            gateway: None,
            interface: Some(container),
        });
    }
    for default in ["0.0.0.0/0", "::/0"] {
        let dst: IpNet = default.parse().expect("constant");
        if addresses
            .iter()
            .any(|a| a.addr().is_ipv4() == dst.addr().is_ipv4())
            && !r.routes.iter().any(|x| x.dst == dst)
        {
            r.routes.push(Route {
                dst,
                gw: None,
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            });
        }
    }
    if r.dns == Default::default() {
        r.dns = inv.conf.dns.clone();
    }
    r
}
