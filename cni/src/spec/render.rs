//! Rendering a [`CniResult`] in one CNI version, with a fixed key order (libcni's):
//! `cniVersion, interfaces, ips, routes, dns`; interfaces `name, mac, mtu, sandbox, socketPath,
//! pciID`; ips `version, interface, address, gateway`; routes `dst, gw, mtu, advmss, priority,
//! table, scope`. Empty lists, an empty `dns` and absent optional fields are left out.
//!
//! | field                                   | 0.4.0 | 1.0.0 | 1.1.0 |
//! |-----------------------------------------|-------|-------|-------|
//! | `ips[].version`                         | yes   |       |       |
//! | `interfaces[].mtu/socketPath/pciID`     |       |       | yes   |
//! | `routes[].mtu/advmss/priority/table/scope` |    |       | yes   |

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::result::{CniResult, Dns};
use super::version::CniVersion;

/// A result bound to the version it is rendered in; serialize it anywhere (stdout, a buffer).
#[derive(Clone, Copy, Debug)]
pub struct VersionedResult<'a> {
    pub result: &'a CniResult,
    pub version: CniVersion,
}

impl CniResult {
    /// This result in `version`, ready to serialize.
    pub fn versioned(&self, version: CniVersion) -> VersionedResult<'_> {
        VersionedResult {
            result: self,
            version,
        }
    }

    /// Compact JSON in `version` (always the version the plugin was called with).
    pub fn to_json(&self, version: CniVersion) -> String {
        serde_json::to_string(&self.versioned(version)).expect("results always serialize")
    }

    /// Indented JSON in `version`, as libcni-based plugins print it.
    pub fn to_json_pretty(&self, version: CniVersion) -> String {
        serde_json::to_string_pretty(&self.versioned(version)).expect("results always serialize")
    }
}

impl Serialize for VersionedResult<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = self.version;
        let extended = v.has_extended_fields();
        let r = self.result;
        let wire = WireResult {
            cni_version: v,
            interfaces: r
                .interfaces
                .iter()
                .map(|i| WireInterface {
                    name: &i.name,
                    mac: i.mac.as_deref(),
                    mtu: i.mtu.filter(|_| extended),
                    sandbox: i.sandbox.as_deref(),
                    socket_path: i.socket_path.as_deref().filter(|_| extended),
                    pci_id: i.pci_id.as_deref().filter(|_| extended),
                })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| WireIp {
                    version: Some(ip.family()).filter(|_| v.has_ip_version_field()),
                    interface: ip.interface,
                    address: &ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: r
                .routes
                .iter()
                .map(|rt| WireRoute {
                    dst: &rt.dst,
                    gw: rt.gw,
                    mtu: rt.mtu.filter(|_| extended),
                    advmss: rt.advmss.filter(|_| extended),
                    priority: rt.priority.filter(|_| extended),
                    table: rt.table.filter(|_| extended),
                    scope: rt.scope.filter(|_| extended),
                })
                .collect(),
            dns: &r.dns,
        };
        wire.serialize(serializer)
    }
}

/// CIDRs as `addr/prefix` strings, whatever serde features ipnet was built with.
fn as_display<S: Serializer>(net: &&IpNet, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(net)
}

fn dns_is_empty(dns: &&Dns) -> bool {
    dns.is_empty()
}

#[derive(Serialize)]
struct WireResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: CniVersion,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<WireInterface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRoute<'a>>,
    #[serde(skip_serializing_if = "dns_is_empty")]
    dns: &'a Dns,
}

#[derive(Serialize)]
struct WireInterface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
    #[serde(rename = "socketPath", skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireIp<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    #[serde(serialize_with = "as_display")]
    address: &'a IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize)]
struct WireRoute<'a> {
    #[serde(serialize_with = "as_display")]
    dst: &'a IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u8>,
}
