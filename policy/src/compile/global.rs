//! GlobalNetworkPolicy -> [`CompiledPolicy`], with Calico's semantics:
//! - the policy applies to endpoints matching `selector` in namespaces matching
//!   `namespaceSelector` (either empty: all); `order` absent sorts last;
//! - `types` absent: see `GlobalNetworkPolicySpec::effective_types`;
//! - a rule matches when everything it names holds: `ipVersion`, `protocol`, `notProtocol`,
//!   `icmp`, `notICMP`, and its `source` and `destination`;
//! - in an entity, `selector` and `namespaceSelector` together pick endpoints (pods matching the
//!   first in namespaces matching the second; an empty one all; `global()`, host endpoints,
//!   none here), `notSelector` excludes endpoints cluster-wide (Calico does not scope it by
//!   namespace), `nets`/`notNets` match any / none of their CIDRs, `ports`/`notPorts` that end's
//!   port (source ports for `source`), needing a protocol with ports for numbers;
//! - a named port without a rule protocol is a TCP one (Felix's `rule_scanner.go` default).
//!
//! Selectors see pod labels plus `projectcalico.org/namespace`, as Calico's do.

use std::collections::BTreeSet;

use ipnet::IpNet;
use trellis_datastore::resources::global_policy::{
    Action as GnpAction, EntityRule, IcmpFields, Port, Rule,
};
use trellis_datastore::resources::network_policy::PolicyType;
use trellis_datastore::resources::GlobalNetworkPolicy;
use trellis_datastore::selector::{Expr, Selector};

use super::{resolve_named, CompileError, FieldError};
use crate::ir::{
    Action, CompiledPolicy, CompiledRule, EntityMatch, IcmpMatch, IpFamily, PolicyDirection,
    PolicyId, PortMatch,
};
use crate::model::{Endpoint, EndpointKey, Model, Proto};

/// The label Calico gives every workload endpoint: its namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";

/// Compiles one GlobalNetworkPolicy against `model`.
pub fn compile_global_policy(
    gnp: &GlobalNetworkPolicy,
    model: &Model,
) -> Result<CompiledPolicy, CompileError> {
    let id = PolicyId::Global {
        name: gnp.metadata.name.clone(),
    };
    let err = |(field, reason): FieldError| CompileError {
        policy: id.to_string(),
        field,
        reason,
    };
    let spec = &gnp.spec;
    let selector = parse_selector("spec.selector", &spec.selector).map_err(err)?;
    let ns_selector =
        parse_selector("spec.namespaceSelector", &spec.namespace_selector).map_err(err)?;
    let selected: BTreeSet<EndpointKey> = model
        .endpoints
        .values()
        .filter(|e| {
            model.namespace_matches(&e.key.namespace, |l| ns_selector.matches(l))
                && pod_matches(&selector, e)
        })
        .map(|e| e.key.clone())
        .collect();
    let types = spec.effective_types();
    let direction = |ty: PolicyType, path: &str, rules: &[Rule]| {
        if !types.contains(&ty) {
            return Ok(None);
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                compile_rule(i, r, model).map_err(|(f, r)| (format!("spec.{path}[{i}].{f}"), r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(PolicyDirection {
            selected: selected.clone(),
            rules,
        }))
    };
    Ok(CompiledPolicy {
        ingress: direction(PolicyType::Ingress, "ingress", &spec.ingress).map_err(err)?,
        egress: direction(PolicyType::Egress, "egress", &spec.egress).map_err(err)?,
        order: spec.order,
        id,
    })
}

fn parse_selector(field: &str, text: &str) -> Result<Selector, FieldError> {
    Selector::parse(text).map_err(|e| (field.to_string(), e.to_string()))
}

/// A pod's labels as a Calico selector sees them.
fn pod_matches(sel: &Selector, e: &Endpoint) -> bool {
    sel.matches_with(|k| match k {
        NAMESPACE_LABEL => Some(e.key.namespace.as_str()),
        _ => e.labels.get(k).map(String::as_str),
    })
}

fn compile_rule(index: usize, r: &Rule, model: &Model) -> Result<CompiledRule, FieldError> {
    let action = match r.action {
        GnpAction::Allow => Action::Allow,
        GnpAction::Deny => Action::Deny,
        GnpAction::Log => Action::Log,
        GnpAction::Pass => Action::Pass,
    };
    let ip_version = match r.ip_version {
        None => None,
        Some(4) => Some(IpFamily::V4),
        Some(6) => Some(IpFamily::V6),
        Some(v) => return Err(("ipVersion".into(), format!("must be 4 or 6, got {v}"))),
    };
    let protocol = r.protocol.map(Proto::from);
    let icmp = |field: &str, f: Option<IcmpFields>| -> Result<Option<IcmpMatch>, FieldError> {
        let Some(IcmpFields { icmp_type, code }) = f else {
            return Ok(None);
        };
        let family = match protocol {
            Some(Proto::Icmp) => IpFamily::V4,
            Some(Proto::IcmpV6) => IpFamily::V6,
            _ => return Err((field.into(), "needs protocol ICMP or ICMPv6".into())),
        };
        let byte = |n: i32, what: &str| {
            u8::try_from(n).map_err(|_| (format!("{field}.{what}"), format!("{n} is not 0-255")))
        };
        // `{}` (no type) matches every ICMP packet, which `protocol` already says.
        let Some(t) = icmp_type else { return Ok(None) };
        Ok(Some(IcmpMatch {
            family,
            icmp_type: byte(t, "type")?,
            code: code.map(|c| byte(c, "code")).transpose()?,
        }))
    };
    Ok(CompiledRule {
        ip_version,
        protocol,
        not_protocol: r.not_protocol.map(Proto::from),
        icmp: icmp("icmp", r.icmp)?,
        not_icmp: icmp("notICMP", r.not_icmp)?,
        source: compile_entity(&r.source, protocol, model)
            .map_err(|(f, e)| (format!("source.{f}"), e))?,
        destination: compile_entity(&r.destination, protocol, model)
            .map_err(|(f, e)| (format!("destination.{f}"), e))?,
        ..CompiledRule::any(index, action)
    })
}

fn compile_entity(
    e: &EntityRule,
    protocol: Option<Proto>,
    model: &Model,
) -> Result<EntityMatch, FieldError> {
    let endpoints_of = |sel: &Selector, ns: Option<&Selector>| -> BTreeSet<EndpointKey> {
        model
            .endpoints
            .values()
            .filter(|ep| {
                ns.is_none_or(|ns| model.namespace_matches(&ep.key.namespace, |l| ns.matches(l)))
            })
            .filter(|ep| pod_matches(sel, ep))
            .map(|ep| ep.key.clone())
            .collect()
    };
    let mut out = EntityMatch::default();
    if !e.selector.is_empty() || !e.namespace_selector.is_empty() {
        let sel = parse_selector("selector", &e.selector)?;
        let ns = parse_selector("namespaceSelector", &e.namespace_selector)?;
        // `global()`: non-namespaced (host) endpoints, which the model has none of.
        out.endpoints = Some(if *ns.root() == Expr::Global {
            BTreeSet::new()
        } else {
            endpoints_of(&sel, Some(&ns))
        });
    }
    if !e.not_selector.is_empty() {
        let sel = parse_selector("notSelector", &e.not_selector)?;
        out.not_endpoints = Some(endpoints_of(&sel, None));
    }
    if !e.nets.is_empty() {
        out.nets = Some(parse_nets("nets", &e.nets)?);
    }
    out.not_nets = parse_nets("notNets", &e.not_nets)?;
    if !e.ports.is_empty() {
        out.ports = Some(compile_ports("ports", &e.ports, protocol, model)?);
    }
    out.not_ports = compile_ports("notPorts", &e.not_ports, protocol, model)?;
    Ok(out)
}

/// CIDRs, or bare addresses as /32 and /128.
fn parse_nets(field: &str, nets: &[String]) -> Result<Vec<IpNet>, FieldError> {
    nets.iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    (
                        format!("{field}[{i}]"),
                        format!("{text:?} is not a CIDR or address"),
                    )
                })
        })
        .collect()
}

fn compile_ports(
    field: &str,
    ports: &[Port],
    protocol: Option<Proto>,
    model: &Model,
) -> Result<Vec<PortMatch>, FieldError> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Port::Range { min, max } => match protocol.filter(|p| p.has_ports()) {
                Some(proto) if *min > 0 && min <= max => Ok(PortMatch::Range {
                    proto,
                    first: *min,
                    last: *max,
                }),
                Some(_) => Err((format!("{field}[{i}]"), format!("{p} is not a port range"))),
                None => Err((
                    format!("{field}[{i}]"),
                    "numeric ports need protocol TCP, UDP or SCTP".into(),
                )),
            },
            Port::Named(name) => {
                let proto = protocol.unwrap_or(Proto::Tcp);
                Ok(PortMatch::Named {
                    proto,
                    name: name.clone(),
                    resolved: resolve_named(name, proto, model),
                })
            }
        })
        .collect()
}
