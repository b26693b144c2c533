//! GlobalNetworkPolicy: Calico's cluster-wide policy (`projectcalico.org/v3` schema, served as
//! `trellis.dev/v1`), minus tiers, `doNotTrack`, `preDNAT`, `applyOnForward`, HTTP matches and
//! service matches, which are rejected as unknown fields rather than silently ignored.
//!
//! Validation follows Calico's `libcalico-go/lib/validator/v3/validator.go` (`validateRule`,
//! `validateGlobalNetworkPolicySpec`) and the CRD's CEL rules in
//! `api/pkg/apis/projectcalico/v3/policy_common.go`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};

use super::label_selector::null_as_default;
use super::network_policy::{reject_leading_zero, PolicyType};
use crate::meta::{Object, ObjectMeta, Spec};
use crate::selector::{Expr, Selector};
use crate::validation::ValidationErrors;

mod numorstring;
pub use numorstring::{IpProtocol, Port};

pub type GlobalNetworkPolicy = Object<GlobalNetworkPolicySpec>;

/// CRD limits (`+kubebuilder:validation:MaxItems` / `MaxLength`).
const MAX_RULES: usize = 1024;
const MAX_SELECTOR_LEN: usize = 1024;
const MAX_NETS: usize = 256;
const MAX_PORTS: usize = 50;

const NEED_PORT_PROTO: &str = "and port ranges need protocol TCP, UDP or SCTP";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    /// Lower orders apply first; absent means "last" (after every ordered policy).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_order"
    )]
    pub order: Option<f64>,
    /// Calico selector of the endpoints the policy applies to; empty = `all()`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub selector: String,
    /// Calico selector over namespace labels; empty = every namespace (and host endpoints).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub namespace_selector: String,
    /// Empty means defaulted, see [`GlobalNetworkPolicySpec::effective_types`].
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub types: Vec<PolicyType>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ingress: Vec<Rule>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub egress: Vec<Rule>,
}

/// One rule: match criteria and what to do on a match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    /// 4 or 6: restricts the rule to one IP family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IpProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<IpProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    /// Log the packet and continue with the next rule.
    Log,
    /// Skip the rest of this policy's rules and go on to the next policy (or profile).
    Pass,
}

/// `icmp: {type, code}`; `code` needs `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpFields {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

/// Source or destination match. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub selector: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub not_selector: String,
    /// May be exactly `global()`: then `selector` picks non-namespaced endpoints (host endpoints).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub namespace_selector: String,
    /// CIDRs or bare addresses (a bare address is a /32 or /128).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub nets: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub not_nets: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ports: Vec<Port>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub not_ports: Vec<Port>,
}

impl Spec for GlobalNetworkPolicySpec {
    const KIND: &'static str = "GlobalNetworkPolicy";
    const KEY_PREFIX: &'static str = "globalpolicies/";

    fn validate(&self, meta: &ObjectMeta, errs: &mut ValidationErrors) {
        // Calico: a DNS label, optionally after a tier name and '.'; the subdomain check in
        // ObjectMeta covers the characters, so only the number of dots is left.
        if meta.name.matches('.').count() > 1 {
            let reason = "must be a DNS label, optionally after a tier name and '.'";
            errs.add("metadata.name", format!("{:?}: {reason}", meta.name));
        }
        if let Some(order) = self.order {
            if !order.is_finite() || order < 0.0 {
                errs.add(
                    "spec.order",
                    format!("must be a finite number >= 0, got {order}"),
                );
            }
        }
        check_selector(errs, "spec.selector", &self.selector, GlobalUse::Forbidden);
        check_selector(
            errs,
            "spec.namespaceSelector",
            &self.namespace_selector,
            GlobalUse::Forbidden,
        );
        for (i, t) in self.types.iter().enumerate() {
            if self.types[..i].contains(t) {
                errs.add(
                    format!("spec.types[{i}]"),
                    format!("'{t:?}' type specified more than once"),
                );
            }
        }
        for (name, rules) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            if rules.len() > MAX_RULES {
                errs.add(
                    format!("spec.{name}"),
                    format!("at most {MAX_RULES} rules, got {}", rules.len()),
                );
            }
            for (i, rule) in rules.iter().enumerate() {
                rule.validate(&format!("spec.{name}[{i}]"), errs);
            }
        }
    }
}

impl GlobalNetworkPolicySpec {
    /// `types`, or Calico's default when empty (`defaults.defaultPolicyTypesField`): Egress
    /// alone if there are egress rules but no ingress rules, both if there are both, else Ingress.
    pub fn effective_types(&self) -> Vec<PolicyType> {
        if !self.types.is_empty() {
            let mut t = self.types.clone();
            t.sort();
            t.dedup();
            return t;
        }
        match (self.ingress.is_empty(), self.egress.is_empty()) {
            (_, true) => vec![PolicyType::Ingress],
            (true, false) => vec![PolicyType::Egress],
            (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
        }
    }
}

impl Rule {
    /// A rule with only an action: matches every packet.
    pub fn new(action: Action) -> Self {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
        }
    }

    fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        if let Some(v) = self.ip_version {
            if v != 4 && v != 6 {
                errs.add(
                    format!("{path}.ipVersion"),
                    format!("must be 4 or 6, got {v}"),
                );
            }
        }
        for (field, proto) in [
            ("protocol", self.protocol),
            ("notProtocol", self.not_protocol),
        ] {
            let Some(p) = proto else { continue };
            if p == IpProtocol::Number(0) {
                errs.add(
                    format!("{path}.{field}"),
                    "protocol number must be between 1 and 255",
                );
            }
            // CEL: "protocol ICMP requires ipVersion 4" / "protocol ICMPv6 requires ipVersion 6".
            match (p.number(), self.ip_version) {
                (1, Some(6)) => errs.add(
                    format!("{path}.{field}"),
                    "ICMP is IPv4-only; use ICMPv6 with ipVersion 6",
                ),
                (58, Some(4)) => errs.add(
                    format!("{path}.{field}"),
                    "ICMPv6 is IPv6-only; use ICMP with ipVersion 4",
                ),
                _ => {}
            }
        }
        for (field, icmp) in [("icmp", &self.icmp), ("notICMP", &self.not_icmp)] {
            let Some(icmp) = icmp else { continue };
            if !self.protocol.is_some_and(|p| matches!(p.number(), 1 | 58)) {
                errs.add(
                    format!("{path}.{field}"),
                    "ICMP fields require protocol ICMP or ICMPv6",
                );
            }
            icmp.validate(&format!("{path}.{field}"), errs);
        }
        self.validate_ports(path, errs);
        self.validate_nets(path, errs);
        self.source
            .validate_selectors(&format!("{path}.source"), errs);
        self.destination
            .validate_selectors(&format!("{path}.destination"), errs);
    }

    /// `validateRule`: numeric ports need a protocol with ports (TCP, UDP, SCTP); named ports
    /// may go without a protocol (the named port carries one) but not with a portless one.
    fn validate_ports(&self, path: &str, errs: &mut ValidationErrors) {
        for (side, entity) in [("source", &self.source), ("destination", &self.destination)] {
            for (field, ports) in [("ports", &entity.ports), ("notPorts", &entity.not_ports)] {
                let list = format!("{path}.{side}.{field}");
                if ports.len() > MAX_PORTS {
                    errs.add(
                        &list,
                        format!("at most {MAX_PORTS} entries, got {}", ports.len()),
                    );
                }
                let numeric = ports.iter().any(|p| matches!(p, Port::Range { .. }));
                match self.protocol {
                    None if numeric => errs.add(&list, format!("numeric ports {NEED_PORT_PROTO}")),
                    Some(p) if !p.supports_ports() && !ports.is_empty() => {
                        errs.add(&list, format!("ports {NEED_PORT_PROTO}, not {p}"))
                    }
                    _ => {}
                }
                for (k, port) in ports.iter().enumerate() {
                    port.validate(&format!("{list}[{k}]"), errs);
                }
            }
        }
    }

    /// `validateRule`'s `scanNets`: each entry a masked CIDR or an address, matching `ipVersion`,
    /// one family across the whole rule, and no catch-all in a negated list.
    fn validate_nets(&self, path: &str, errs: &mut ValidationErrors) {
        let (mut seen_v4, mut seen_v6) = (false, false);
        let lists = [
            ("source.nets", &self.source.nets, false),
            ("source.notNets", &self.source.not_nets, true),
            ("destination.nets", &self.destination.nets, false),
            ("destination.notNets", &self.destination.not_nets, true),
        ];
        for (field, nets, negated) in lists {
            let list = format!("{path}.{field}");
            if nets.len() > MAX_NETS {
                errs.add(
                    &list,
                    format!("at most {MAX_NETS} entries, got {}", nets.len()),
                );
            }
            let (mut v4, mut v6) = (false, false);
            for (k, text) in nets.iter().enumerate() {
                let entry = format!("{list}[{k}]");
                let Some(net) = parse_net(errs, &entry, text) else {
                    continue;
                };
                let version = if matches!(net, IpNet::V4(_)) { 4 } else { 6 };
                v4 |= version == 4;
                v6 |= version == 6;
                if let Some(v) = self.ip_version.filter(|&v| v != version) {
                    errs.add(
                        &entry,
                        format!("IPv{version} network {text:?} in a rule with ipVersion {v}"),
                    );
                }
                if negated && net.prefix_len() == 0 {
                    errs.add(
                        &entry,
                        format!(
                            "{text:?} matches every address, so negating it matches no traffic"
                        ),
                    );
                }
            }
            if (v4 && seen_v6) || (v6 && seen_v4) || (v4 && v6) {
                errs.add(&list, "rule contains both IPv4 and IPv6 networks");
            }
            seen_v4 |= v4;
            seen_v6 |= v6;
        }
    }
}

impl EntityRule {
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }

    fn validate_selectors(&self, path: &str, errs: &mut ValidationErrors) {
        check_selector(
            errs,
            &format!("{path}.selector"),
            &self.selector,
            GlobalUse::Forbidden,
        );
        check_selector(
            errs,
            &format!("{path}.notSelector"),
            &self.not_selector,
            GlobalUse::Forbidden,
        );
        check_selector(
            errs,
            &format!("{path}.namespaceSelector"),
            &self.namespace_selector,
            GlobalUse::OnlyAlone,
        );
    }
}

impl IcmpFields {
    fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        if let Some(t) = self.icmp_type {
            if !(0..=254).contains(&t) {
                errs.add(
                    format!("{path}.type"),
                    format!("must be between 0 and 254, got {t}"),
                );
            }
        }
        if let Some(c) = self.code {
            if !(0..=255).contains(&c) {
                errs.add(
                    format!("{path}.code"),
                    format!("must be between 0 and 255, got {c}"),
                );
            }
            if self.icmp_type.is_none() {
                errs.add(
                    format!("{path}.code"),
                    "ICMP code specified without an ICMP type",
                );
            }
        }
    }
}

/// Whole orders are written as integers (`order: 100`), as users write them, so that objects
/// round-trip unchanged.
fn serialize_order<S: Serializer>(order: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match *order {
        Some(o) if o.fract() == 0.0 && o.abs() < 1e15 => serializer.serialize_i64(o as i64),
        Some(o) => serializer.serialize_f64(o),
        None => serializer.serialize_none(),
    }
}

/// Where `global()` may appear in a selector field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GlobalUse {
    Forbidden,
    /// Only as the whole selector (an entity rule's `namespaceSelector`).
    OnlyAlone,
}

fn check_selector(errs: &mut ValidationErrors, field: &str, text: &str, global: GlobalUse) {
    if text.len() > MAX_SELECTOR_LEN {
        errs.add(
            field,
            format!(
                "must be at most {MAX_SELECTOR_LEN} characters, got {}",
                text.len()
            ),
        );
        return;
    }
    match Selector::parse(text) {
        Err(e) => errs.add(field, e.to_string()),
        Ok(sel) if sel.uses_global() => match global {
            GlobalUse::Forbidden => errs.add(
                field,
                "global() can only be used in a rule's namespaceSelector",
            ),
            GlobalUse::OnlyAlone if *sel.root() != Expr::Global => {
                errs.add(field, "global() cannot be combined with other selectors")
            }
            GlobalUse::OnlyAlone => {}
        },
        Ok(_) => {}
    }
}

/// Calico `validateIPNetwork`: a CIDR with no host bits set, or a bare address.
fn parse_net(errs: &mut ValidationErrors, field: &str, text: &str) -> Option<IpNet> {
    if reject_leading_zero(errs, field, text) {
        return None;
    }
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            errs.add(
                field,
                format!("{text:?} has host bits set; did you mean {}?", net.trunc()),
            );
            return None;
        }
        return Some(net);
    }
    match text.parse::<std::net::IpAddr>() {
        Ok(addr) => Some(IpNet::from(addr)),
        Err(_) => {
            errs.add(field, format!("{text:?} is not a valid CIDR or IP address"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
