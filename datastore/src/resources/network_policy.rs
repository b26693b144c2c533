//! Kubernetes `networking.k8s.io/v1` NetworkPolicy, schema unchanged so users apply the YAML they
//! already have. Validation follows the apiserver's `ValidateNetworkPolicySpec`
//! (`pkg/apis/networking/validation/validation.go`); defaulting (`policyTypes`, TCP) is exposed
//! through accessors instead of rewriting what was written, so objects round-trip.

use std::fmt;

use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::label_selector::{null_as_default, LabelSelector};
use crate::meta::{Object, ObjectMeta, Spec, NETWORKING_API_VERSION};
use crate::validation::ValidationErrors;

pub type NetworkPolicy = Object<NetworkPolicySpec>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Pods (in the policy's namespace) the policy applies to; `{}` selects all of them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pod_selector: LabelSelector,
    /// `None` (absent) and `Some([])` are kept apart only so the object round-trips; upstream
    /// treats both as "defaulted", see [`NetworkPolicySpec::effective_policy_types`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    /// `ingress: []` (or absent) allows no ingress; `ingress: [{}]` allows all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
}

/// Direction a policy isolates; shared with `GlobalNetworkPolicy.types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    /// Absent or empty: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
    /// Absent or empty: every source. Kept apart for round trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<NetworkPolicyPeer>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
    /// Absent or empty: every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<NetworkPolicyPeer>>,
}

/// One source or destination. Valid peers set `ipBlock` alone, or one or both selectors (both:
/// pods matching `podSelector` in namespaces matching `namespaceSelector`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    /// Required upstream; defaulted so that absence is reported by validation at `ipBlock.cidr`.
    #[serde(default)]
    pub cidr: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// Absent means TCP (upstream `SetDefaults_NetworkPolicyPort`); see
    /// [`Self::effective_protocol`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Absent: every port of the protocol. A name refers to a container port of the selected pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// Last port of the range `port..=endPort`; only with a numeric `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

/// The protocols a NetworkPolicy port may name (upstream `ValidateNetworkPolicyPort`).
/// Anything else fails to parse, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

/// Kubernetes `intstr.IntOrString`: a port number or a named container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl Spec for NetworkPolicySpec {
    const KIND: &'static str = "NetworkPolicy";
    const API_VERSION: &'static str = NETWORKING_API_VERSION;
    const NAMESPACED: bool = true;
    const KEY_PREFIX: &'static str = "policies/";

    fn validate(&self, _meta: &ObjectMeta, errs: &mut ValidationErrors) {
        self.pod_selector.validate("spec.podSelector", errs);
        for (i, rule) in self.ingress.iter().flatten().enumerate() {
            let path = format!("spec.ingress[{i}]");
            validate_ports(rule.ports.as_deref(), &path, errs);
            validate_peers(rule.from.as_deref(), &format!("{path}.from"), errs);
        }
        for (i, rule) in self.egress.iter().flatten().enumerate() {
            let path = format!("spec.egress[{i}]");
            validate_ports(rule.ports.as_deref(), &path, errs);
            validate_peers(rule.to.as_deref(), &format!("{path}.to"), errs);
        }
        self.validate_policy_types(errs);
    }
}

impl NetworkPolicySpec {
    /// The directions the policy isolates, in the order `[Ingress, Egress]`. When `policyTypes`
    /// is absent or empty, upstream defaulting applies (`SetDefaults_NetworkPolicy`): Ingress
    /// always, Egress only if there is at least one egress rule.
    pub fn effective_policy_types(&self) -> Vec<PolicyType> {
        let (ingress, egress) = match self.policy_types.as_deref() {
            Some(types) if !types.is_empty() => (
                types.contains(&PolicyType::Ingress),
                types.contains(&PolicyType::Egress),
            ),
            _ => (true, self.egress.as_ref().is_some_and(|e| !e.is_empty())),
        };
        let mut out = Vec::with_capacity(2);
        if ingress {
            out.push(PolicyType::Ingress);
        }
        if egress {
            out.push(PolicyType::Egress);
        }
        out
    }

    /// Ingress rules as a slice (absent = none).
    pub fn ingress_rules(&self) -> &[NetworkPolicyIngressRule] {
        self.ingress.as_deref().unwrap_or_default()
    }

    /// Egress rules as a slice (absent = none).
    pub fn egress_rules(&self) -> &[NetworkPolicyEgressRule] {
        self.egress.as_deref().unwrap_or_default()
    }

    fn validate_policy_types(&self, errs: &mut ValidationErrors) {
        let Some(types) = &self.policy_types else {
            return;
        };
        // Upstream stops at "more than two" and then checks each value; the values themselves
        // are enforced by the `PolicyType` enum at parse time.
        if types.len() > 2 {
            errs.add(
                "spec.policyTypes",
                format!(
                    "may not specify more than two policyTypes, got {}",
                    types.len()
                ),
            );
            return;
        }
        // Upstream accepts `[Ingress, Ingress]` (two entries, both allowed); we refuse the
        // duplicate because it is always a typo for `[Ingress, Egress]`.
        if let [a, b] = types.as_slice() {
            if a == b {
                errs.add("spec.policyTypes[1]", format!("duplicate value {a:?}"));
            }
        }
    }
}

impl NetworkPolicyIngressRule {
    /// Sources; empty means every source (absent and `from: []` mean the same upstream).
    pub fn peers(&self) -> &[NetworkPolicyPeer] {
        self.from.as_deref().unwrap_or_default()
    }

    /// Ports; empty means every port.
    pub fn port_list(&self) -> &[NetworkPolicyPort] {
        self.ports.as_deref().unwrap_or_default()
    }
}

impl NetworkPolicyEgressRule {
    /// Destinations; empty means every destination.
    pub fn peers(&self) -> &[NetworkPolicyPeer] {
        self.to.as_deref().unwrap_or_default()
    }

    /// Ports; empty means every port.
    pub fn port_list(&self) -> &[NetworkPolicyPort] {
        self.ports.as_deref().unwrap_or_default()
    }
}

impl NetworkPolicyPort {
    /// The protocol, TCP when absent.
    pub fn effective_protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => serializer.serialize_i32(*i),
            IntOrString::String(s) => serializer.serialize_str(s),
        }
    }
}

/// As upstream: a JSON number is the int form (it must fit an int32), a JSON string is the string
/// form even when it holds digits (`"80"` is then rejected as a port name by validation).
impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = IntOrString;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("port number {v} does not fit in 32 bits")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("port number {v} does not fit in 32 bits")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `ValidateNetworkPolicyPort` for every entry of `rule.ports`.
fn validate_ports(
    ports: Option<&[NetworkPolicyPort]>,
    rule_path: &str,
    errs: &mut ValidationErrors,
) {
    for (i, p) in ports.unwrap_or_default().iter().enumerate() {
        let path = format!("{rule_path}.ports[{i}]");
        match &p.port {
            Some(IntOrString::Int(port)) => {
                check_port_number(errs, &format!("{path}.port"), *port);
                if let Some(end) = p.end_port {
                    if end < *port {
                        errs.add(
                            format!("{path}.endPort"),
                            format!("must be greater than or equal to `port` ({port}), got {end}"),
                        );
                    }
                    check_port_number(errs, &format!("{path}.endPort"), end);
                }
            }
            Some(IntOrString::String(name)) => {
                if p.end_port.is_some() {
                    errs.add(
                        format!("{path}.endPort"),
                        "may not be specified when `port` is non-numeric",
                    );
                }
                check_port_name(errs, &format!("{path}.port"), name);
            }
            None => {
                if p.end_port.is_some() {
                    errs.add(
                        format!("{path}.endPort"),
                        "may not be specified when `port` is not specified",
                    );
                }
            }
        }
    }
}

/// `ValidateNetworkPolicyPeer` for every peer of a rule; `list_path` is `spec.ingress[i].from`.
fn validate_peers(
    peers: Option<&[NetworkPolicyPeer]>,
    list_path: &str,
    errs: &mut ValidationErrors,
) {
    for (i, peer) in peers.unwrap_or_default().iter().enumerate() {
        let path = format!("{list_path}[{i}]");
        if let Some(s) = &peer.pod_selector {
            s.validate(&format!("{path}.podSelector"), errs);
        }
        if let Some(s) = &peer.namespace_selector {
            s.validate(&format!("{path}.namespaceSelector"), errs);
        }
        if let Some(b) = &peer.ip_block {
            validate_ip_block(b, &format!("{path}.ipBlock"), errs);
        }
        let selectors = usize::from(peer.pod_selector.is_some())
            + usize::from(peer.namespace_selector.is_some());
        match (selectors, peer.ip_block.is_some()) {
            (0, false) => errs.add(
                path,
                "must specify a peer: podSelector, namespaceSelector or ipBlock",
            ),
            (1.., true) => errs.add(path, "may not specify both ipBlock and another peer"),
            _ => {}
        }
    }
}

/// `ValidateIPBlock`: `cidr` must parse; every `except` entry must be a strict subset of it.
/// Like the apiserver's default (non-strict) parsing, host bits may be set (`10.0.0.1/24`
/// means `10.0.0.0/24`), since existing objects use that form.
fn validate_ip_block(block: &IpBlock, path: &str, errs: &mut ValidationErrors) {
    let cidr_path = format!("{path}.cidr");
    if block.cidr.is_empty() {
        errs.add(cidr_path, "required");
        return;
    }
    let Some(cidr) = parse_cidr(errs, &cidr_path, &block.cidr) else {
        return;
    };
    for (i, text) in block.except.iter().enumerate() {
        let except_path = format!("{path}.except[{i}]");
        let Some(except) = parse_cidr(errs, &except_path, text) else {
            continue;
        };
        let same_family = matches!(
            (cidr, except),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        );
        if !same_family {
            errs.add(
                except_path,
                format!(
                    "{text:?} is not the same IP family as `cidr` {:?}",
                    block.cidr
                ),
            );
        } else if !cidr.contains(&except.network()) || cidr.prefix_len() >= except.prefix_len() {
            errs.add(
                except_path,
                format!(
                    "{text:?} must be a strict subset of `cidr` {:?}",
                    block.cidr
                ),
            );
        }
    }
}

/// Parses `a.b.c.d/n` or `x::/n`, returning the network with host bits cleared.
fn parse_cidr(errs: &mut ValidationErrors, field: &str, text: &str) -> Option<IpNet> {
    if reject_leading_zero(errs, field, text) {
        return None;
    }
    match text.parse::<IpNet>() {
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            errs.add(
                field,
                format!("{text:?} is not a valid CIDR (e.g. 10.0.0.0/16 or fd00::/64)"),
            );
            None
        }
    }
}

/// Adds an error and returns true if `text` has a leading zero in a dotted quad or prefix length.
pub(crate) fn reject_leading_zero(errs: &mut ValidationErrors, field: &str, text: &str) -> bool {
    let found = has_leading_zero(text);
    if found {
        errs.add(
            field,
            format!("{text:?}: leading zeros are ambiguous (octal?), remove them"),
        );
    }
    found
}

/// Whether a dotted-quad or prefix length has a leading zero (`010.0.0.0/8`, `10.0.0.0/08`).
/// ipnet reads those as decimal, other tools as octal; Go's parser (1.17+) and the apiserver's
/// strict CIDR validation refuse them for that reason (CVE-2021-29923), and so do we.
fn has_leading_zero(text: &str) -> bool {
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let v4_part = if addr.contains(':') {
        addr.rsplit(':').next().unwrap_or_default()
    } else {
        addr
    };
    let v4_octets = v4_part
        .contains('.')
        .then(|| v4_part.split('.'))
        .into_iter()
        .flatten();
    v4_octets
        .chain(std::iter::once(prefix))
        .any(|n| n.len() > 1 && n.starts_with('0'))
}

/// `validation.IsValidPortNum`.
fn check_port_number(errs: &mut ValidationErrors, field: &str, port: i32) {
    if !(1..=65535).contains(&port) {
        errs.add(
            field,
            format!("must be between 1 and 65535, inclusive, got {port}"),
        );
    }
}

/// `validation.IsValidPortName`: an IANA_SVC_NAME (RFC 6335 section 5.1) restricted to lower
/// case: 1-15 of `[a-z0-9-]`, at least one letter, no leading, trailing or doubled `-`.
/// Every violated rule is reported, as upstream does.
pub(crate) fn check_port_name(errs: &mut ValidationErrors, field: &str, name: &str) {
    let mut problems = Vec::new();
    if name.len() > 15 {
        problems.push("must be no more than 15 characters");
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        problems.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        problems.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        problems.push("must not begin or end with a hyphen");
    }
    for p in problems {
        errs.add(field, format!("port name {name:?} {p}"));
    }
}

#[cfg(test)]
mod tests;
