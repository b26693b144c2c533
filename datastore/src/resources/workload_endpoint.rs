//! WorkloadEndpoint: one pod interface as the CNI plugin wired it, Calico's resource of the same
//! name. The agent's policy and route managers read these; IPAM garbage collection compares their
//! `handleID`s with the allocations it holds.
//!
//! Stored at `workloadendpoints/NODE/NAMESPACE/POD/ENDPOINT` so an agent lists (and watches) only
//! its own node's endpoints with one prefix.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::validation::{
    check_dns_label, check_dns_subdomain, check_label_key, check_label_value, ValidationErrors,
};

/// The IPAM handle owning a pod interface's addresses: `CONTAINERID.IFNAME`. The CNI plugin and
/// IPAM both build it here so an ADD's allocation and a DEL's release name the same handle.
pub fn ipam_handle(container_id: &str, ifname: &str) -> String {
    format!("{container_id}.{ifname}")
}

/// Calico's endpoint name: `NODE-k8s-POD-ENDPOINT`, with each `-` inside a part doubled so the
/// parts stay recoverable (`node1-k8s-my--nginx-eth0`). Trellis keys endpoints by their spec, not
/// their name; this gives producers one name to agree on.
pub fn workload_endpoint_name(node: &str, orchestrator: &str, pod: &str, endpoint: &str) -> String {
    [node, orchestrator, pod, endpoint]
        .iter()
        .map(|p| p.replace('-', "--"))
        .collect::<Vec<_>>()
        .join("-")
}

/// Transport protocols a named container port can use (those Kubernetes allows on a port).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// A container port; named ones are what NetworkPolicy's named ports resolve against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// IANA_SVC_NAME; may be empty only for a pure hostPort mapping (as in Calico).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub protocol: PortProtocol,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// A 1:1 NAT (floating IP) onto one of the endpoint's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: IpAddr,
    #[serde(rename = "externalIP")]
    pub external_ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    /// Node the pod runs on.
    #[serde(default)]
    pub node: String,
    #[serde(default = "default_orchestrator")]
    pub orchestrator: String,
    /// Pod name; the namespace is `metadata.namespace`.
    #[serde(default)]
    pub pod: String,
    /// Container-side interface name (CNI_IFNAME, usually `eth0`).
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, rename = "containerID")]
    pub container_id: String,
    /// Host-side veth name.
    #[serde(default)]
    pub interface_name: String,
    /// MAC of the container-side interface, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The pod's addresses as host routes (`/32`, `/128`).
    #[serde(default)]
    pub ip_networks: Vec<IpNet>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    /// The pod's labels, which policy selectors match (kept apart from the endpoint object's own
    /// metadata labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    /// IPAM handle owning `ipNetworks`, see [`ipam_handle`].
    #[serde(default, rename = "handleID")]
    pub handle_id: String,
}

fn default_orchestrator() -> String {
    "k8s".to_string()
}

impl Default for WorkloadEndpointSpec {
    fn default() -> Self {
        Self {
            node: String::new(),
            orchestrator: default_orchestrator(),
            pod: String::new(),
            endpoint: String::new(),
            container_id: String::new(),
            interface_name: String::new(),
            mac: String::new(),
            ip_networks: Vec::new(),
            ip_nats: Vec::new(),
            labels: BTreeMap::new(),
            service_account_name: String::new(),
            ports: Vec::new(),
            handle_id: String::new(),
        }
    }
}

pub type WorkloadEndpoint = Object<WorkloadEndpointSpec>;

/// IFNAMSIZ is 16 bytes including the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

impl Spec for WorkloadEndpointSpec {
    const KIND: &'static str = "WorkloadEndpoint";
    const NAMESPACED: bool = true;
    const KEY_PREFIX: &'static str = keys::WORKLOAD_ENDPOINTS;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut ValidationErrors) {
        check_dns_subdomain(errs, "spec.node", &self.node);
        check_dns_label(errs, "spec.orchestrator", &self.orchestrator);
        check_dns_subdomain(errs, "spec.pod", &self.pod);
        check_ifname(errs, "spec.endpoint", &self.endpoint);
        check_ifname(errs, "spec.interfaceName", &self.interface_name);
        check_container_id(errs, &self.container_id);
        if !self.mac.is_empty() {
            match parse_mac(&self.mac) {
                None => errs.add(
                    "spec.mac",
                    format!(
                        "{:?} is not a MAC address like \"aa:bb:cc:dd:ee:ff\"",
                        self.mac
                    ),
                ),
                // The I/G bit: a group address cannot be an interface's own address.
                Some(m) if m[0] & 1 == 1 => errs.add(
                    "spec.mac",
                    format!("{} is a multicast MAC address", self.mac),
                ),
                Some(_) => {}
            }
        }
        self.check_networks(errs);
        for (k, v) in &self.labels {
            check_label_key(errs, &format!("spec.labels[{k}]"), k);
            check_label_value(errs, &format!("spec.labels[{k}]"), v);
        }
        if !self.service_account_name.is_empty() {
            check_dns_subdomain(errs, "spec.serviceAccountName", &self.service_account_name);
        }
        for (i, p) in self.ports.iter().enumerate() {
            check_port(errs, i, p);
        }
        check_handle(errs, &self.handle_id);
    }

    fn key(&self, meta: &ObjectMeta) -> String {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        crate::keys::workload_endpoint(&self.node, ns, &self.pod, &self.endpoint)
    }
}

impl WorkloadEndpointSpec {
    fn check_networks(&self, errs: &mut ValidationErrors) {
        if self.ip_networks.is_empty() {
            errs.add(
                "spec.ipNetworks",
                "a pod endpoint needs at least one address",
            );
        }
        for (i, net) in self.ip_networks.iter().enumerate() {
            let field = format!("spec.ipNetworks[{i}]");
            // Each pod address is routed to the veth on its own (a /32 or /128 host route);
            // a wider prefix would claim neighbours' addresses for this pod.
            if net.prefix_len() != net.max_prefix_len() {
                errs.add(
                    &field,
                    format!("{net} must be a single address (/{})", net.max_prefix_len()),
                );
            } else if self.ip_networks[..i].contains(net) {
                errs.add(&field, format!("{net} is listed twice"));
            }
        }
        for (i, nat) in self.ip_nats.iter().enumerate() {
            // Calico: a NAT maps onto one of the endpoint's own addresses, within one family.
            if !self
                .ip_networks
                .iter()
                .any(|n| n.contains(&nat.internal_ip))
            {
                errs.add(
                    format!("spec.ipNATs[{i}].internalIP"),
                    format!(
                        "{} is not one of the endpoint's ipNetworks",
                        nat.internal_ip
                    ),
                );
            }
            if nat.internal_ip.is_ipv4() != nat.external_ip.is_ipv4() {
                errs.add(
                    format!("spec.ipNATs[{i}].externalIP"),
                    "must be the same IP version as internalIP",
                );
            }
        }
    }

    /// The pod's addresses.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ip_networks.iter().map(IpNet::addr)
    }

    /// The MAC as bytes, if set and well-formed.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        parse_mac(&self.mac)
    }

    /// The port named `name` for `protocol` (what a policy's named port resolves to here).
    pub fn named_port(&self, name: &str, protocol: PortProtocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// Linux's rule (net/core/dev.c `dev_valid_name`): 1-15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace. `/` would also break the datastore key.
fn check_ifname(errs: &mut ValidationErrors, field: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if !ok {
        errs.add(
            field,
            format!(
                "{name:?} is not a valid interface name: 1-{MAX_IFNAME_LEN} characters without \
                 '/', ':' or whitespace"
            ),
        );
    }
}

/// Calico's container ID rule: alphanumerics and '-', starting and ending alphanumeric.
fn check_container_id(errs: &mut ValidationErrors, id: &str) {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
    if !ok {
        errs.add(
            "spec.containerID",
            format!("{id:?} must be letters, digits and '-', starting and ending alphanumeric"),
        );
    }
}

/// The handle becomes the key `ipam/handles/ID`, so it must be one path segment.
fn check_handle(errs: &mut ValidationErrors, handle: &str) {
    if handle.is_empty() {
        errs.add(
            "spec.handleID",
            "required: the IPAM handle owning the addresses (CONTAINERID.IFNAME)",
        );
    } else if handle.len() > 253
        || handle
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        errs.add(
            "spec.handleID",
            format!("{handle:?} must be at most 253 characters without '/' or whitespace"),
        );
    }
}

/// Kubernetes' IANA_SVC_NAME rule (RFC 6335 5.1): 1-15 lower-case letters, digits and '-', at
/// least one letter, no leading, trailing or doubled '-'.
fn is_iana_svc_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn check_port(errs: &mut ValidationErrors, i: usize, p: &EndpointPort) {
    if p.name.is_empty() {
        if p.host_port.is_none() {
            errs.add(
                format!("spec.ports[{i}].name"),
                "required unless hostPort is set",
            );
        }
    } else if !is_iana_svc_name(&p.name) {
        errs.add(
            format!("spec.ports[{i}].name"),
            format!(
                "{:?} is not a port name: 1-15 lower-case letters, digits and '-', with a letter, \
                 no leading, trailing or doubled '-' (IANA_SVC_NAME)",
                p.name
            ),
        );
    }
    if p.port == 0 {
        errs.add(
            format!("spec.ports[{i}].port"),
            "must be between 1 and 65535, got 0",
        );
    }
    if p.host_port == Some(0) {
        errs.add(
            format!("spec.ports[{i}].hostPort"),
            "must be between 1 and 65535, got 0",
        );
    }
}

/// Six octets separated by ':' or '-' (the forms `ip link` and Windows print).
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let sep = if text.contains('-') { '-' } else { ':' };
    let mut out = [0u8; 6];
    let mut parts = text.split(sep);
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests;
