//! BGPConfiguration: the cluster's AS, mesh, listen port, advertised service ranges and
//! communities; `node.NODENAME` objects override a few of them for one node.

use std::time::Duration as StdDuration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::DEFAULT_MAX_RESTART_TIME;
use super::{check_as_number, check_password, check_restart_time, BgpPassword};
use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::resources::duration::Duration;
use crate::resources::felix::{check_config_name, ConfigScope, LogSeverity, GLOBAL_CONFIG_NAME};
use crate::validation::{check_dns_subdomain, ValidationErrors};

/// Calico's default AS for nodes without their own (a private AS, RFC 6996).
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// RFC 4271 section 8 (and IANA): BGP listens on TCP 179.
pub const DEFAULT_LISTEN_PORT: u16 = 179;

/// Which local addresses the speaker listens on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BindMode {
    /// All addresses.
    #[default]
    None,
    /// Only the node's BGP address.
    #[serde(rename = "NodeIP")]
    NodeIp,
}

/// A route's community, parsed from `AA:NN` (RFC 1997, 16-bit halves) or `AA:NN:MM` (RFC 8092
/// large community, three 32-bit parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommunityValue {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl CommunityValue {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let all_digits = parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let out_of_range = |bits| format!("{text:?}: each part must fit in {bits} bits");
        match parts.as_slice() {
            [a, n] if all_digits => match (a.parse(), n.parse()) {
                (Ok(a), Ok(n)) => Ok(Self::Standard(a, n)),
                _ => Err(out_of_range(16)),
            },
            [a, n, m] if all_digits => match (a.parse(), n.parse(), m.parse()) {
                (Ok(a), Ok(n), Ok(m)) => Ok(Self::Large(a, n, m)),
                _ => Err(out_of_range(32)),
            },
            _ => Err(format!(
                "{text:?} is not a community: use \"AA:NN\" (standard) or \"AA:NN:MM\" (large)"
            )),
        }
    }
}

/// A named community value, referenced by name from `prefixAdvertisements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

/// Communities to attach when advertising routes within `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixAdvertisement {
    pub cidr: IpNet,
    /// Names from `communities` or literal `AA:NN` / `AA:NN:MM` values.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// A service address range to advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceIpBlock {
    pub cidr: IpNet,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The AS of nodes that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceIpBlock>,
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceIpBlock>,
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceIpBlock>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// Password of the node-to-node mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    /// Graceful restart time of the node-to-node mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
}

pub type BgpConfiguration = Object<BgpConfigurationSpec>;

impl Spec for BgpConfigurationSpec {
    const KIND: &'static str = "BGPConfiguration";
    const KEY_PREFIX: &'static str = keys::BGP_CONFIG;

    fn validate(&self, meta: &ObjectMeta, errs: &mut ValidationErrors) {
        check_config_name(errs, Self::KIND, &meta.name);
        if let Some(ConfigScope::Node(_)) = ConfigScope::of(&meta.name) {
            self.check_node_overrides(errs);
        }
        check_as_number(errs, "spec.asNumber", self.as_number);
        if self.listen_port == Some(0) {
            errs.add(
                "spec.listenPort",
                "must be a port between 1 and 65535, got 0",
            );
        }
        for (field, blocks) in [
            ("spec.serviceClusterIPs", &self.service_cluster_ips),
            ("spec.serviceExternalIPs", &self.service_external_ips),
            (
                "spec.serviceLoadBalancerIPs",
                &self.service_load_balancer_ips,
            ),
        ] {
            for (i, b) in blocks.iter().enumerate() {
                check_masked(errs, &format!("{field}[{i}].cidr"), &b.cidr);
            }
        }
        self.check_communities(errs);
        // Calico: mesh-only settings make no sense with the mesh switched off.
        if self.node_to_node_mesh_enabled == Some(false) {
            if self.node_mesh_password.is_some() {
                errs.add(
                    "spec.nodeMeshPassword",
                    "cannot be set when nodeToNodeMeshEnabled is false",
                );
            }
            if self.node_mesh_max_restart_time.is_some() {
                errs.add(
                    "spec.nodeMeshMaxRestartTime",
                    "cannot be set when nodeToNodeMeshEnabled is false",
                );
            }
        }
        if let Some(p) = &self.node_mesh_password {
            check_password(errs, "spec.nodeMeshPassword", p);
        }
        check_restart_time(
            errs,
            "spec.nodeMeshMaxRestartTime",
            self.node_mesh_max_restart_time.as_ref(),
        );
    }

    /// `config/bgp` for `default`, `config/bgp/node.NODENAME` for a node's overrides.
    fn key(&self, meta: &ObjectMeta) -> String {
        if meta.name == GLOBAL_CONFIG_NAME {
            keys::BGP_CONFIG.to_string()
        } else {
            format!("{}/{}", keys::BGP_CONFIG, meta.name)
        }
    }
}

impl BgpConfigurationSpec {
    /// Calico lets `node.NAME` objects override only logSeverityScreen, listenPort and
    /// prefixAdvertisements (with the communities those reference); the rest is cluster-wide.
    fn check_node_overrides(&self, errs: &mut ValidationErrors) {
        let global_only = [
            ("spec.asNumber", self.as_number.is_some()),
            (
                "spec.nodeToNodeMeshEnabled",
                self.node_to_node_mesh_enabled.is_some(),
            ),
            (
                "spec.serviceClusterIPs",
                !self.service_cluster_ips.is_empty(),
            ),
            (
                "spec.serviceExternalIPs",
                !self.service_external_ips.is_empty(),
            ),
            (
                "spec.serviceLoadBalancerIPs",
                !self.service_load_balancer_ips.is_empty(),
            ),
            ("spec.nodeMeshPassword", self.node_mesh_password.is_some()),
            (
                "spec.nodeMeshMaxRestartTime",
                self.node_mesh_max_restart_time.is_some(),
            ),
            ("spec.bindMode", self.bind_mode.is_some()),
        ];
        for (field, set) in global_only {
            if set {
                errs.add(
                    field,
                    "only the cluster-wide \"default\" BGPConfiguration may set this; a node's \
                     object overrides only logSeverityScreen, listenPort and prefixAdvertisements \
                     (set a node's own AS on its Node resource)",
                );
            }
        }
    }

    fn check_communities(&self, errs: &mut ValidationErrors) {
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.communities.iter().enumerate() {
            let field = format!("spec.communities[{i}].name");
            check_dns_subdomain(errs, &field, &c.name);
            if !names.insert(c.name.as_str()) {
                errs.add(field, format!("{:?} is defined twice", c.name));
            }
            if let Err(reason) = CommunityValue::parse(&c.value) {
                errs.add(format!("spec.communities[{i}].value"), reason);
            }
        }
        if !self.communities.is_empty() && self.prefix_advertisements.is_empty() {
            errs.add(
                "spec.communities",
                "defined but not used: no prefixAdvertisements refer to them",
            );
        }
        for (i, pa) in self.prefix_advertisements.iter().enumerate() {
            check_masked(
                errs,
                &format!("spec.prefixAdvertisements[{i}].cidr"),
                &pa.cidr,
            );
            for (j, c) in pa.communities.iter().enumerate() {
                if !names.contains(c.as_str()) && CommunityValue::parse(c).is_err() {
                    errs.add(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!(
                            "{c:?} is neither a community defined in spec.communities nor an \
                             AA:NN or AA:NN:MM value"
                        ),
                    );
                }
            }
        }
    }

    /// The effective settings for a node: `node`'s overridable fields where set, else `self`'s.
    pub fn overlay(&self, node: &Self) -> Self {
        let mut out = self.clone();
        out.log_severity_screen = node.log_severity_screen.or(self.log_severity_screen);
        out.listen_port = node.listen_port.or(self.listen_port);
        if !node.prefix_advertisements.is_empty() {
            out.prefix_advertisements = node.prefix_advertisements.clone();
            out.communities = node.communities.clone();
        }
        out
    }

    pub fn as_number(&self) -> u32 {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    pub fn node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(DEFAULT_LISTEN_PORT)
    }

    pub fn log_severity(&self) -> LogSeverity {
        self.log_severity_screen.unwrap_or_default()
    }

    pub fn bind_mode(&self) -> BindMode {
        self.bind_mode.unwrap_or_default()
    }

    pub fn node_mesh_max_restart_time(&self) -> StdDuration {
        self.node_mesh_max_restart_time
            .as_ref()
            .map_or(DEFAULT_MAX_RESTART_TIME, Duration::as_std)
    }

    /// Each advertised prefix with its communities resolved to values; names that do not resolve
    /// (an object that failed validation) are skipped.
    pub fn resolved_prefix_advertisements(&self) -> Vec<(IpNet, Vec<CommunityValue>)> {
        let lookup = |c: &str| {
            let text = self
                .communities
                .iter()
                .find(|d| d.name == c)
                .map_or(c, |d| d.value.as_str());
            CommunityValue::parse(text).ok()
        };
        self.prefix_advertisements
            .iter()
            .map(|pa| {
                (
                    pa.cidr,
                    pa.communities.iter().filter_map(|c| lookup(c)).collect(),
                )
            })
            .collect()
    }
}

fn check_masked(errs: &mut ValidationErrors, field: &str, cidr: &IpNet) {
    if cidr.trunc() != *cidr {
        errs.add(
            field,
            format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
        );
    }
}
