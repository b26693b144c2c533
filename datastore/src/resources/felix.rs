//! FelixConfiguration: the node agent's settings, Calico-compatible in names and defaults.
//!
//! As in Calico, the object named `default` holds cluster-wide values and `node.NODENAME` holds one
//! node's overrides; [`FelixConfigurationSpec::overlay`] merges them field by field. Every field is
//! optional so "unset" (take the default) differs from "set to the default value"; the typed
//! accessors return the effective value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use super::duration::Duration;
use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::validation::{check_dns_subdomain, ValidationErrors};

/// Name of the cluster-wide configuration object (Calico's convention).
pub const GLOBAL_CONFIG_NAME: &str = "default";
/// Prefix of per-node configuration names: `node.NODENAME`.
pub const NODE_CONFIG_PREFIX: &str = "node.";

/// Which nodes a `default` / `node.NODENAME` configuration object applies to. Shared by
/// FelixConfiguration and BGPConfiguration, which use the same naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigScope<'a> {
    Global,
    Node(&'a str),
}

impl<'a> ConfigScope<'a> {
    /// Reads an object name; `None` if it is neither `default` nor `node.NAME`.
    pub fn of(name: &'a str) -> Option<Self> {
        if name == GLOBAL_CONFIG_NAME {
            return Some(Self::Global);
        }
        match name.strip_prefix(NODE_CONFIG_PREFIX) {
            Some(node) if !node.is_empty() => Some(Self::Node(node)),
            _ => None,
        }
    }

    /// The object name for this scope.
    pub fn object_name(self) -> String {
        match self {
            Self::Global => GLOBAL_CONFIG_NAME.to_string(),
            Self::Node(node) => format!("{NODE_CONFIG_PREFIX}{node}"),
        }
    }
}

/// Checks that a configuration object is named `default` or `node.NODENAME` with a valid node name.
pub(crate) fn check_config_name(errs: &mut ValidationErrors, kind: &str, name: &str) {
    match ConfigScope::of(name) {
        Some(ConfigScope::Global) => {}
        Some(ConfigScope::Node(node)) => check_dns_subdomain(errs, "metadata.name", node),
        None => errs.add(
            "metadata.name",
            format!(
                "a {kind} must be named {GLOBAL_CONFIG_NAME:?} (cluster-wide) or \
                 \"{NODE_CONFIG_PREFIX}NODENAME\" (one node), got {name:?}"
            ),
        ),
    }
}

/// Log levels as Calico spells them (`logSeverityScreen`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum LogSeverity {
    Trace,
    Debug,
    #[default]
    Info,
    Warning,
    Error,
    Fatal,
}

impl LogSeverity {
    /// The `tracing` level to filter at; `tracing` has no "fatal", so Fatal logs errors only.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            Self::Trace => tracing::Level::TRACE,
            Self::Debug => tracing::Level::DEBUG,
            Self::Info => tracing::Level::INFO,
            Self::Warning => tracing::Level::WARN,
            Self::Error | Self::Fatal => tracing::Level::ERROR,
        }
    }
}

/// How the agent writes logs (Trellis-specific; Calico has no equivalent field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// What happens to traffic from a pod to its own host after policy (Calico
/// `defaultEndpointToHostAction`): Drop blocks it, Accept allows it, Return hands it to the host's
/// own input rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndpointToHostAction {
    #[default]
    Drop,
    Accept,
    Return,
}

/// Kernel routing tables the agent may use (e.g. per-ENI tables in VPC-native mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTableRange {
    pub min: u32,
    pub max: u32,
}

/// A component's liveness/readiness timeout override (Calico `healthTimeoutOverrides`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthTimeoutOverride {
    pub name: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<u16>,
    /// How often the route tables are resynced from the kernel; zero turns the periodic resync off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<Duration>,
    /// How often the `inet trellis` table is checked against the kernel. Calico's
    /// `iptablesRefreshInterval` is read into it: Trellis has no iptables dataplane.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "iptablesRefreshInterval"
    )]
    pub nftables_refresh_interval: Option<Duration>,
    /// Unset means "automatic": the device exists when some IP pool uses VXLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    #[serde(default, rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<u32>,
    /// 0 or unset: detected from the underlay minus the 50-byte VXLAN overhead.
    #[serde(default, rename = "vxlanMTU", skip_serializing_if = "Option::is_none")]
    pub vxlan_mtu: Option<u32>,
    #[serde(
        default,
        rename = "vxlanMTUV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_mtu_v6: Option<u32>,
    /// Unset means "automatic": the device exists when some IP pool uses IPIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_enabled: Option<bool>,
    /// 0 or unset: detected from the underlay minus the 20-byte IPIP overhead.
    #[serde(default, rename = "ipipMTU", skip_serializing_if = "Option::is_none")]
    pub ipip_mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint_to_host_action: Option<EndpointToHostAction>,
    /// SNAT source for `natOutgoing` pools instead of the egress interface's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_address: Option<IpAddr>,
    /// Source ports used when masquerading: `"N:M"` or a single `"N"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_range: Option<RouteTableRange>,
    /// Source address put on routes to local pods (so the pod sees that address as its peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_source_address: Option<IpAddr>,
    #[serde(
        default,
        rename = "deviceRouteSourceAddressIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_route_source_address_ipv6: Option<IpAddr>,
    /// Accepted only as `false`, so Calico configurations that spell it out still apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_enabled: Option<bool>,
    /// Accepted only as `false`, like `bpfEnabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
    /// Prefix(es) of host-side pod interface names, comma-separated as in Calico.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_prefix: Option<String>,
    /// How often the agent reports its status to the datastore; zero turns reporting off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_overrides: Option<Vec<HealthTimeoutOverride>>,
}

pub type FelixConfiguration = Object<FelixConfigurationSpec>;

pub const DEFAULT_HEALTH_PORT: u16 = 9099;
pub const DEFAULT_PROMETHEUS_METRICS_PORT: u16 = 9091;
/// IANA-assigned VXLAN port (RFC 7348 section 5).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Calico's default VNI, so mixed or migrated clusters agree on the wire.
pub const DEFAULT_VXLAN_VNI: u32 = 4096;
pub const DEFAULT_INTERFACE_PREFIX: &str = "trellis";
/// Calico's defaults for the route and iptables refresh and the status report.
pub const DEFAULT_ROUTE_REFRESH_INTERVAL: StdDuration = StdDuration::from_secs(90);
pub const DEFAULT_NFTABLES_REFRESH_INTERVAL: StdDuration = StdDuration::from_secs(180);
pub const DEFAULT_REPORTING_INTERVAL: StdDuration = StdDuration::from_secs(30);
pub const DEFAULT_ROUTE_TABLE_RANGE: RouteTableRange = RouteTableRange { min: 1, max: 250 };

/// RFC 7348 section 5: the VNI is a 24-bit field.
const MAX_VXLAN_VNI: u32 = (1 << 24) - 1;
/// RFC 791: every IPv4 host must accept 576-byte datagrams, so no link may be smaller.
const MIN_MTU_V4: u32 = 576;
/// RFC 8200 section 5: IPv6 requires links of at least 1280 bytes.
const MIN_MTU_V6: u32 = 1280;
/// Jumbo frames; nothing Trellis runs on carries more.
const MAX_MTU: u32 = 9000;
/// Linux reserves tables 253 (default), 254 (main) and 255 (local); Calico stops at 250.
const MAX_ROUTE_TABLE: u32 = 250;
/// IFNAMSIZ is 16 bytes including the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

impl Spec for FelixConfigurationSpec {
    const KIND: &'static str = "FelixConfiguration";
    const KEY_PREFIX: &'static str = keys::FELIX_CONFIG;

    fn validate(&self, meta: &ObjectMeta, errs: &mut ValidationErrors) {
        check_config_name(errs, Self::KIND, &meta.name);
        for (field, port) in [
            ("spec.healthPort", self.health_port),
            ("spec.prometheusMetricsPort", self.prometheus_metrics_port),
            ("spec.vxlanPort", self.vxlan_port),
        ] {
            if port == Some(0) {
                errs.add(field, "must be a port between 1 and 65535, got 0");
            }
        }
        if self.prometheus_metrics_enabled() && self.prometheus_metrics_port() == self.health_port()
        {
            errs.add(
                "spec.prometheusMetricsPort",
                format!(
                    "{} is also the health port; the two servers cannot share it",
                    self.prometheus_metrics_port()
                ),
            );
        }
        if let Some(vni) = self.vxlan_vni {
            if !(1..=MAX_VXLAN_VNI).contains(&vni) {
                errs.add(
                    "spec.vxlanVNI",
                    format!("must be between 1 and {MAX_VXLAN_VNI} (24 bits, RFC 7348), got {vni}"),
                );
            }
        }
        check_mtu(
            errs,
            "spec.vxlanMTU",
            self.vxlan_mtu,
            MIN_MTU_V4,
            "IPv4 (RFC 791)",
        );
        check_mtu(
            errs,
            "spec.ipipMTU",
            self.ipip_mtu,
            MIN_MTU_V4,
            "IPv4 (RFC 791)",
        );
        check_mtu(
            errs,
            "spec.vxlanMTUV6",
            self.vxlan_mtu_v6,
            MIN_MTU_V6,
            "IPv6 (RFC 8200)",
        );
        check_v4(errs, "spec.natOutgoingAddress", self.nat_outgoing_address);
        check_v4(
            errs,
            "spec.deviceRouteSourceAddress",
            self.device_route_source_address,
        );
        if let Some(addr) = self.device_route_source_address_ipv6 {
            if !addr.is_ipv6() {
                errs.add(
                    "spec.deviceRouteSourceAddressIPv6",
                    format!("must be an IPv6 address, got {addr}"),
                );
            }
        }
        if let Some(text) = &self.nat_port_range {
            if let Err(reason) = parse_port_range(text) {
                errs.add("spec.natPortRange", reason);
            }
        }
        if let Some(r) = self.route_table_range {
            if r.min < 1 || r.max > MAX_ROUTE_TABLE || r.min > r.max {
                errs.add(
                    "spec.routeTableRange",
                    format!(
                        "must satisfy 1 <= min <= max <= {MAX_ROUTE_TABLE} (tables 253-255 \
                         belong to the kernel), got {}-{}",
                        r.min, r.max
                    ),
                );
            }
        }
        if self.bpf_enabled == Some(true) {
            errs.add(
                "spec.bpfEnabled",
                "the eBPF dataplane is not supported: Trellis enforces policy with nftables; \
                 remove the field or set it to false",
            );
        }
        if self.wireguard_enabled == Some(true) {
            errs.add(
                "spec.wireguardEnabled",
                "WireGuard encryption is not supported: the kernel Trellis targets here lacks the \
                 wireguard module; remove the field or set it to false",
            );
        }
        if let Some(prefixes) = &self.interface_prefix {
            check_interface_prefixes(errs, prefixes);
        }
        if let Some(overrides) = &self.health_timeout_overrides {
            check_health_overrides(errs, overrides);
        }
    }
}

fn check_mtu(errs: &mut ValidationErrors, field: &str, mtu: Option<u32>, min: u32, family: &str) {
    match mtu {
        None | Some(0) => {}
        Some(m) if (min..=MAX_MTU).contains(&m) => {}
        Some(m) => errs.add(
            field,
            format!(
                "must be 0 (detect from the underlay) or between {min} and {MAX_MTU} for \
                 {family}, got {m}"
            ),
        ),
    }
}

fn check_v4(errs: &mut ValidationErrors, field: &str, addr: Option<IpAddr>) {
    if let Some(IpAddr::V6(a)) = addr {
        errs.add(field, format!("must be an IPv4 address, got {a}"));
    }
}

/// Calico's `natPortRange` syntax: `"N"` or `"N:M"` with 1 <= N <= M <= 65535.
fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = text.split_once(':').unwrap_or((text, text));
    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    match (parse(lo), parse(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
        _ => Err(format!(
            "must be \"MIN:MAX\" or a single port, with 1 <= MIN <= MAX <= 65535, got {text:?}"
        )),
    }
}

fn check_interface_prefixes(errs: &mut ValidationErrors, prefixes: &str) {
    for p in prefixes.split(',') {
        // The agent recognises pod interfaces by these prefixes; one that fills IFNAMSIZ on its
        // own leaves no room for the per-pod suffix, and Linux refuses names with '/', ':' or
        // whitespace (net/core/dev.c dev_valid_name).
        let ok = !p.is_empty()
            && p.len() < MAX_IFNAME_LEN
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            errs.add(
                "spec.interfacePrefix",
                format!(
                    "each comma-separated prefix must be 1-{} letters, digits, '-', '_' or '.', \
                     got {p:?}",
                    MAX_IFNAME_LEN - 1
                ),
            );
        }
    }
}

fn check_health_overrides(errs: &mut ValidationErrors, overrides: &[HealthTimeoutOverride]) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, o) in overrides.iter().enumerate() {
        let field = format!("spec.healthTimeoutOverrides[{i}].name");
        // Calico's rule: names are the health reporter names, letters, digits, '_', '-', ' '.
        let ok = !o.name.is_empty()
            && o.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b' '));
        if !ok {
            errs.add(
                &field,
                format!("{:?} must be letters, digits, '_', '-' or spaces", o.name),
            );
        } else if !seen.insert(o.name.as_str()) {
            errs.add(&field, format!("{:?} is listed twice", o.name));
        }
    }
}

impl FelixConfigurationSpec {
    /// The effective settings for one node: `node`'s fields where set, else `self`'s (Calico's
    /// precedence of `node.NAME` over `default`).
    pub fn overlay(&self, node: &Self) -> Self {
        macro_rules! pick {
            ($($f:ident),* $(,)?) => {
                Self { $($f: node.$f.as_ref().or(self.$f.as_ref()).cloned(),)* }
            };
        }
        pick!(
            log_severity_screen,
            log_format,
            health_port,
            prometheus_metrics_enabled,
            prometheus_metrics_port,
            route_refresh_interval,
            nftables_refresh_interval,
            vxlan_enabled,
            vxlan_port,
            vxlan_vni,
            vxlan_mtu,
            vxlan_mtu_v6,
            ipip_enabled,
            ipip_mtu,
            default_endpoint_to_host_action,
            nat_outgoing_address,
            nat_port_range,
            route_table_range,
            device_route_source_address,
            device_route_source_address_ipv6,
            bpf_enabled,
            wireguard_enabled,
            interface_prefix,
            reporting_interval,
            health_timeout_overrides,
        )
    }

    pub fn log_severity(&self) -> LogSeverity {
        self.log_severity_screen.unwrap_or_default()
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or_default()
    }

    pub fn health_port(&self) -> u16 {
        self.health_port.unwrap_or(DEFAULT_HEALTH_PORT)
    }

    /// Off unless enabled, as in Calico.
    pub fn prometheus_metrics_enabled(&self) -> bool {
        self.prometheus_metrics_enabled.unwrap_or(false)
    }

    pub fn prometheus_metrics_port(&self) -> u16 {
        self.prometheus_metrics_port
            .unwrap_or(DEFAULT_PROMETHEUS_METRICS_PORT)
    }

    pub fn route_refresh_interval(&self) -> StdDuration {
        self.route_refresh_interval
            .as_ref()
            .map_or(DEFAULT_ROUTE_REFRESH_INTERVAL, Duration::as_std)
    }

    pub fn nftables_refresh_interval(&self) -> StdDuration {
        self.nftables_refresh_interval
            .as_ref()
            .map_or(DEFAULT_NFTABLES_REFRESH_INTERVAL, Duration::as_std)
    }

    /// `None`: decide from the IP pools.
    pub fn vxlan_enabled(&self) -> Option<bool> {
        self.vxlan_enabled
    }

    pub fn vxlan_port(&self) -> u16 {
        self.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT)
    }

    pub fn vxlan_vni(&self) -> u32 {
        self.vxlan_vni.unwrap_or(DEFAULT_VXLAN_VNI)
    }

    /// `None`: detect from the underlay.
    pub fn vxlan_mtu(&self) -> Option<u32> {
        self.vxlan_mtu.filter(|m| *m != 0)
    }

    /// `None`: detect from the underlay.
    pub fn vxlan_mtu_v6(&self) -> Option<u32> {
        self.vxlan_mtu_v6.filter(|m| *m != 0)
    }

    /// `None`: decide from the IP pools.
    pub fn ipip_enabled(&self) -> Option<bool> {
        self.ipip_enabled
    }

    /// `None`: detect from the underlay.
    pub fn ipip_mtu(&self) -> Option<u32> {
        self.ipip_mtu.filter(|m| *m != 0)
    }

    pub fn default_endpoint_to_host_action(&self) -> EndpointToHostAction {
        self.default_endpoint_to_host_action.unwrap_or_default()
    }

    pub fn nat_outgoing_address(&self) -> Option<Ipv4Addr> {
        match self.nat_outgoing_address {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        }
    }

    /// `None`: let the kernel pick source ports.
    pub fn nat_port_range(&self) -> Option<RangeInclusive<u16>> {
        self.nat_port_range
            .as_deref()
            .and_then(|t| parse_port_range(t).ok())
    }

    pub fn route_table_range(&self) -> RangeInclusive<u32> {
        let r = self.route_table_range.unwrap_or(DEFAULT_ROUTE_TABLE_RANGE);
        r.min..=r.max
    }

    pub fn device_route_source_address(&self) -> Option<Ipv4Addr> {
        match self.device_route_source_address {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        }
    }

    pub fn device_route_source_address_ipv6(&self) -> Option<Ipv6Addr> {
        match self.device_route_source_address_ipv6 {
            Some(IpAddr::V6(a)) => Some(a),
            _ => None,
        }
    }

    /// The host-side interface prefixes that mark pod interfaces.
    pub fn interface_prefixes(&self) -> Vec<&str> {
        self.interface_prefix
            .as_deref()
            .unwrap_or(DEFAULT_INTERFACE_PREFIX)
            .split(',')
            .collect()
    }

    /// Zero means "do not report".
    pub fn reporting_interval(&self) -> StdDuration {
        self.reporting_interval
            .as_ref()
            .map_or(DEFAULT_REPORTING_INTERVAL, Duration::as_std)
    }

    /// The overridden timeout of health reporter `name`, if any.
    pub fn health_timeout(&self, name: &str) -> Option<StdDuration> {
        self.health_timeout_overrides
            .as_ref()?
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.timeout.as_std())
    }
}

#[cfg(test)]
mod tests;
