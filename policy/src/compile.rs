//! Kubernetes NetworkPolicy -> [`CompiledPolicy`], with upstream semantics:
//! - the policy selects pods of its own namespace by `podSelector` (`{}` = all of them);
//! - `policyTypes` absent: Ingress, plus Egress when there is at least one egress rule;
//! - no rules (`ingress: []` or absent) isolates without allowing anything; `[{}]` allows all;
//! - a rule's `from`/`to` absent or empty means every peer; `ports` absent or empty every port;
//! - in one peer, `podSelector` and `namespaceSelector` AND together (pods matching the first
//!   in namespaces matching the second); separate peers OR; `podSelector` alone means the
//!   policy's namespace, `namespaceSelector` alone every pod of the matching namespaces;
//! - `ipBlock` matches addresses in `cidr` outside every `except`;
//! - a port without protocol is TCP; a protocol without port is every port of it; `endPort`
//!   makes a range; a named port resolves on each destination pod separately.

use std::collections::BTreeMap;

use ipnet::IpNet;
use trellis_datastore::resources::network_policy::{
    IntOrString, NetworkPolicyPeer, NetworkPolicyPort, PolicyType,
};
use trellis_datastore::resources::NetworkPolicy;

use crate::ir::{
    Action, CompiledPolicy, CompiledRule, IpBlock, Peers, PolicyDirection, PolicyId, PortMatch,
    NETWORK_POLICY_ORDER,
};
use crate::model::{EndpointKey, Model, Proto};

/// Why a policy cannot be compiled, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{policy}: {field}: {reason}")]
pub struct CompileError {
    pub policy: String,
    pub field: String,
    pub reason: String,
}

/// Compiles one NetworkPolicy against `model`.
pub fn compile_network_policy(
    np: &NetworkPolicy,
    model: &Model,
) -> Result<CompiledPolicy, CompileError> {
    let namespace = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let id = PolicyId::Namespaced {
        namespace: namespace.clone(),
        name: np.metadata.name.clone(),
    };
    let err = |field: String, reason: String| CompileError {
        policy: id.to_string(),
        field,
        reason,
    };
    let spec = &np.spec;
    let selected = model
        .endpoints
        .values()
        .filter(|e| e.key.namespace == namespace && spec.pod_selector.matches(&e.labels))
        .map(|e| e.key.clone())
        .collect::<std::collections::BTreeSet<_>>();
    let types = spec.effective_policy_types();
    let direction = |rules: Vec<(&[NetworkPolicyPeer], &[NetworkPolicyPort])>,
                     path: &str|
     -> Result<PolicyDirection, CompileError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, (peers, ports)) in rules.into_iter().enumerate() {
            let field = format!("spec.{path}[{index}]");
            let peers_key = if path == "ingress" { "from" } else { "to" };
            compiled.push(CompiledRule {
                peers: compile_peers(peers, peers_key, &namespace, model)
                    .map_err(|(f, r)| err(format!("{field}.{f}"), r))?,
                ports: compile_ports(ports, model)
                    .map_err(|(f, r)| err(format!("{field}.{f}"), r))?,
                ..CompiledRule::any(index, Action::Allow)
            });
        }
        Ok(PolicyDirection {
            selected: selected.clone(),
            rules: compiled,
        })
    };
    let ingress = if types.contains(&PolicyType::Ingress) {
        let rules = spec
            .ingress_rules()
            .iter()
            .map(|r| (r.peers(), r.port_list()))
            .collect();
        Some(direction(rules, "ingress")?)
    } else {
        None
    };
    let egress = if types.contains(&PolicyType::Egress) {
        let rules = spec
            .egress_rules()
            .iter()
            .map(|r| (r.peers(), r.port_list()))
            .collect();
        Some(direction(rules, "egress")?)
    } else {
        None
    };
    Ok(CompiledPolicy {
        id,
        order: Some(NETWORK_POLICY_ORDER),
        ingress,
        egress,
    })
}

type FieldError = (String, String);

/// `None` when `peers` is empty (every peer).
fn compile_peers(
    peers: &[NetworkPolicyPeer],
    key: &str,
    namespace: &str,
    model: &Model,
) -> Result<Option<Peers>, FieldError> {
    if peers.is_empty() {
        return Ok(None);
    }
    let mut out = Peers::default();
    for (i, p) in peers.iter().enumerate() {
        let field = |f: &str| format!("{key}[{i}].{f}");
        if let Some(block) = &p.ip_block {
            let cidr: IpNet = block
                .cidr
                .parse()
                .map_err(|e| (field("ipBlock.cidr"), format!("{:?}: {e}", block.cidr)))?;
            let mut except = Vec::with_capacity(block.except.len());
            for (j, x) in block.except.iter().enumerate() {
                except.push(x.parse::<IpNet>().map_err(|e| {
                    (
                        field(&format!("ipBlock.except[{j}]")),
                        format!("{x:?}: {e}"),
                    )
                })?);
            }
            out.blocks.push(IpBlock { cidr, except });
            continue;
        }
        out.by_selector = true;
        let in_namespace = |ns: &str| match &p.namespace_selector {
            None => ns == namespace,
            Some(sel) => model.namespace_matches(ns, |l| sel.matches(l)),
        };
        out.endpoints.extend(
            model
                .endpoints
                .values()
                .filter(|e| in_namespace(&e.key.namespace))
                .filter(|e| p.pod_selector.as_ref().is_none_or(|s| s.matches(&e.labels)))
                .map(|e| e.key.clone()),
        );
    }
    Ok(Some(out))
}

/// `None` when `ports` is empty (every protocol and port).
fn compile_ports(
    ports: &[NetworkPolicyPort],
    model: &Model,
) -> Result<Option<Vec<PortMatch>>, FieldError> {
    if ports.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let proto = Proto::from(p.effective_protocol());
        let field = |f: &str| format!("ports[{i}].{f}");
        let port = |n: i32, f: &str| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| (field(f), format!("{n} is not a port (1-65535)")))
        };
        out.push(match (&p.port, p.end_port) {
            (None, _) => PortMatch::Protocol(proto),
            (Some(IntOrString::Int(n)), None) => {
                let n = port(*n, "port")?;
                PortMatch::Range {
                    proto,
                    first: n,
                    last: n,
                }
            }
            (Some(IntOrString::Int(n)), Some(end)) => {
                let (first, last) = (port(*n, "port")?, port(end, "endPort")?);
                if last < first {
                    return Err((field("endPort"), format!("{last} is below port {first}")));
                }
                PortMatch::Range { proto, first, last }
            }
            (Some(IntOrString::String(name)), None) => PortMatch::Named {
                proto,
                name: name.clone(),
                resolved: resolve_named(name, proto, model),
            },
            (Some(IntOrString::String(_)), Some(_)) => {
                return Err((
                    field("endPort"),
                    "may not be set with a named port".to_string(),
                ))
            }
        });
    }
    Ok(Some(out))
}

/// Every endpoint's number for `name`/`proto`, where it has one.
pub(crate) fn resolve_named(name: &str, proto: Proto, model: &Model) -> BTreeMap<EndpointKey, u16> {
    model
        .endpoints
        .values()
        .filter_map(|e| e.named_port(name, proto).map(|n| (e.key.clone(), n)))
        .collect()
}

mod global;
pub use global::compile_global_policy;
