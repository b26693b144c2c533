//! ADD, DEL and CHECK over any [`Namespaces`]: the order of the work, rollback and idempotence.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::error::{Problem, Side, WiringError};
use super::kernel::{Namespaces, Netns};
use super::names::validate_ifname;
use super::observe::{self, Link};
use super::plan::{self, Layout, GATEWAY_V4, HOST_VETH_MAC};
use super::{PodSpec, Wired};

/// Smallest MTU of an Ethernet device carrying IPv4 (RFC 791: 68), and of IPv6 (RFC 8200: 1280).
const MIN_MTU_V4: u32 = 68;
const MIN_MTU_V6: u32 = 1280;
/// Largest MTU a veth accepts (ETH_MAX_MTU).
const MAX_MTU: u32 = 65535;

pub(crate) fn add(ns: &dyn Namespaces, spec: &PodSpec) -> Result<Wired, WiringError> {
    validate(spec)?;
    let layout = Layout::new(&spec.ifname, &spec.host_ifname, &spec.addresses, spec.mtu);
    // Both threads start here and enter their namespaces in parallel.
    let mut pod = ns.enter(Some(&spec.pod_netns), Side::Pod);
    let mut node = ns.enter(spec.node_netns.as_deref(), Side::Node);
    let pod_fd = ns.open(&spec.pod_netns)?;
    create_veth(&mut *node, &*pod, &layout, &pod_fd)?;
    drop(pod_fd);

    let mut host_index = None;
    match configure(&mut *node, &mut *pod, &layout, &mut host_index) {
        Ok(wired) => Ok(wired),
        Err(cause) => {
            let host_ifname = &layout.host_ifname;
            tracing::warn!(%host_ifname, error = %cause, "ADD failed, rolling back");
            // Deleting the host end deletes the pair, and with it everything configured on it.
            match node.apply(layout.teardown(host_index)).wait() {
                Ok(()) => Err(cause),
                Err(rollback) => Err(WiringError::RollbackFailed {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                }),
            }
        }
    }
}

/// Creates the pair. Nothing exists yet if this fails, so there is nothing to roll back.
fn create_veth(
    node: &mut dyn Netns,
    pod: &dyn Netns,
    layout: &Layout,
    pod_fd: &OwnedFd,
) -> Result<(), WiringError> {
    let create = layout.create_veth(pod_fd.as_raw_fd());
    match node.apply(vec![create.clone()]).wait() {
        Err(e) if is_errno(&e, Errno::EEXIST) => {}
        other => return other,
    }
    // EEXIST: the host name is taken in the node netns, or CNI_IFNAME in the pod netns.
    let pod_taken = || WiringError::InterfaceExists {
        netns: pod.label().to_owned(),
        name: layout.ifname.clone(),
    };
    match node.link(&layout.host_ifname).wait()? {
        None => return Err(pod_taken()),
        Some(link) if !link.veth => {
            return Err(WiringError::NotAVeth {
                netns: node.label().to_owned(),
                name: layout.host_ifname.clone(),
            })
        }
        Some(_) => {}
    }
    // The name is derived from the pod, so this veth is left over from an earlier ADD of the
    // same pod (a retry after a crash or timeout); replace it, as Calico does.
    tracing::info!(host_ifname = %layout.host_ifname, "replacing a leftover host veth");
    node.apply(vec![plan::delete_link(&layout.host_ifname)])
        .wait()?;
    match node.apply(vec![create]).wait() {
        Err(e) if is_errno(&e, Errno::EEXIST) => Err(pod_taken()),
        other => other,
    }
}

/// Everything after the pair exists; the host and the pod side are configured in parallel.
fn configure(
    node: &mut dyn Netns,
    pod: &mut dyn Netns,
    layout: &Layout,
    host_index: &mut Option<u32>,
) -> Result<Wired, WiringError> {
    let pod_link = pod.link(&layout.ifname);
    let host = node
        .link(&layout.host_ifname)
        .wait()?
        .ok_or_else(|| vanished(node, &layout.host_ifname))?;
    *host_index = Some(host.index);
    let host_setup = node.apply(layout.host_setup(host.index));
    let host_sysctls = node.write_sysctls(layout.host_sysctls.clone());

    let container = pod_link.wait().and_then(|link| {
        let link = link.ok_or_else(|| vanished(pod, &layout.ifname))?;
        pod.apply(layout.pod_setup(link.index)).wait()?;
        Ok(link)
    });
    host_setup.wait()?;
    host_sysctls.wait()?;
    let container = container?;
    Ok(Wired {
        host_ifname: layout.host_ifname.clone(),
        host_ifindex: host.index,
        host_mac: host.mac.unwrap_or(HOST_VETH_MAC),
        ifname: layout.ifname.clone(),
        container_ifindex: container.index,
        container_mac: container.mac.unwrap_or_default(),
    })
}

pub(crate) fn del(
    ns: &dyn Namespaces,
    node_netns: Option<&Path>,
    pod_netns: Option<&Path>,
    ifname: &str,
    host_ifname: &str,
    addresses: &[IpAddr],
) -> Result<(), WiringError> {
    validate_ifname("ifname", ifname)?;
    validate_ifname("host_ifname", host_ifname)?;
    let layout = Layout::new(ifname, host_ifname, addresses, 0);
    let mut node = ns.enter(node_netns, Side::Node);
    match node.link(host_ifname).wait()? {
        Some(link) if link.veth => return node.apply(layout.teardown(Some(link.index))).wait(),
        Some(_) => tracing::warn!(host_ifname, "not a veth; left alone"),
        None => {}
    }
    // No host end (another prefix then, or half of a failed ADD): look inside the pod.
    let Some(pod_netns) = pod_netns else {
        return Ok(());
    };
    let mut pod = ns.enter(Some(pod_netns), Side::Pod);
    match pod.link(ifname).wait() {
        Err(e) if e.is_netns_gone() => Ok(()),
        Err(e) => Err(e),
        Ok(Some(link)) if link.veth => pod.apply(vec![plan::delete_link(ifname)]).wait(),
        Ok(Some(_)) => {
            tracing::warn!(ifname, "not a veth; left alone");
            Ok(())
        }
        Ok(None) => Ok(()),
    }
}

pub(crate) fn check(ns: &dyn Namespaces, spec: &PodSpec) -> Result<(), WiringError> {
    validate(spec)?;
    let layout = Layout::new(&spec.ifname, &spec.host_ifname, &spec.addresses, spec.mtu);
    let mut pod = ns.enter(Some(&spec.pod_netns), Side::Pod);
    let mut node = ns.enter(spec.node_netns.as_deref(), Side::Node);
    let pod_link = pod.link(&layout.ifname);
    let host_link = node.link(&layout.host_ifname).wait()?;

    let mut problems = Vec::new();
    if host_link.is_some() {
        let paths = layout.host_sysctls.iter().map(|s| s.path.clone()).collect();
        let values = node.read_sysctls(paths).wait()?;
        for (sysctl, actual) in layout.host_sysctls.iter().zip(values) {
            if actual.as_deref() != Some(sysctl.value) {
                problems.push(Problem::Sysctl {
                    path: sysctl.path.clone(),
                    expected: sysctl.value.to_owned(),
                    actual,
                });
            }
        }
    }
    let mut found = side_problems(&mut *node, &layout, Side::Node, host_link)?;
    found.append(&mut problems);
    found.extend(side_problems(
        &mut *pod,
        &layout,
        Side::Pod,
        pod_link.wait()?,
    )?);
    if found.is_empty() {
        Ok(())
    } else {
        Err(WiringError::Check { problems: found })
    }
}

fn side_problems(
    netns: &mut dyn Netns,
    layout: &Layout,
    side: Side,
    link: Option<Link>,
) -> Result<Vec<Problem>, WiringError> {
    let expected = layout.expected(side);
    let Some(link) = link else {
        return Ok(vec![Problem::LinkMissing {
            side,
            name: expected.name.to_owned(),
        }]);
    };
    let observed = netns.observe(link.index).wait()?;
    Ok(observe::problems(&expected, &link, &observed))
}

/// Refuses what the kernel would refuse halfway through, before anything is created.
fn validate(spec: &PodSpec) -> Result<(), WiringError> {
    validate_ifname("ifname", &spec.ifname)?;
    validate_ifname("host_ifname", &spec.host_ifname)?;
    let invalid = |field, value: String, reason: &str| WiringError::InvalidSpec {
        field,
        value,
        reason: reason.to_owned(),
    };
    if spec.addresses.is_empty() {
        return Err(invalid(
            "addresses",
            "[]".to_owned(),
            "no address to give the pod",
        ));
    }
    let mut seen = HashSet::new();
    for address in &spec.addresses {
        let text = address.to_string();
        if !seen.insert(address) {
            return Err(invalid("address", text, "listed twice"));
        }
        if address.is_unspecified() || address.is_loopback() || address.is_multicast() {
            return Err(invalid("address", text, "not a unicast address"));
        }
        if *address == IpAddr::V4(GATEWAY_V4) {
            return Err(invalid("address", text, "is the pod's gateway"));
        }
    }
    let min = if spec.addresses.iter().any(IpAddr::is_ipv6) {
        MIN_MTU_V6
    } else {
        MIN_MTU_V4
    };
    if !(min..=MAX_MTU).contains(&spec.mtu) {
        return Err(invalid(
            "mtu",
            spec.mtu.to_string(),
            &format!("outside {min}..={MAX_MTU} for these addresses"),
        ));
    }
    Ok(())
}

fn is_errno(error: &WiringError, errno: Errno) -> bool {
    match error {
        WiringError::Netlink { source, .. } => source.raw_os_error() == Some(errno as i32),
        _ => false,
    }
}

fn vanished(netns: &dyn Netns, name: &str) -> WiringError {
    WiringError::Vanished {
        netns: netns.label().to_owned(),
        name: name.to_owned(),
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
