//! What happens to one packet, and why: evaluated on the IR (see the crate documentation for
//! the rules), naming the policy and rule that decided each direction.

use std::fmt;
use std::net::IpAddr;

use crate::ir::{Action, CompiledPolicy, CompiledRule, Direction, PolicyId, PortMatch};
use crate::model::{Endpoint, Model, Proto};

/// The first packet of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    /// Destination port (0 for protocols without ports).
    pub port: u16,
}

/// How one direction was decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No policy applies to the endpoint in this direction: allowed.
    NotIsolated,
    /// A rule matched.
    Rule {
        policy: PolicyId,
        direction: Direction,
        index: usize,
        action: Action,
    },
    /// Policies apply and none of their rules matched: denied.
    DefaultDeny { policies: Vec<PolicyId> },
    /// From the endpoint's own node: always allowed (kubelet probes).
    FromOwnNode { node: String },
    /// A pod talking to itself: the packet never leaves it.
    Loopback,
}

impl Decision {
    pub fn allows(&self) -> bool {
        match self {
            Decision::NotIsolated | Decision::FromOwnNode { .. } | Decision::Loopback => true,
            Decision::Rule { action, .. } => matches!(action, Action::Allow | Action::Pass),
            Decision::DefaultDeny { .. } => false,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::NotIsolated => f.write_str("no policy applies: allowed"),
            Decision::Rule {
                policy,
                direction,
                index,
                action,
            } => write!(f, "{policy} {direction} rule {index}: {action:?}"),
            Decision::DefaultDeny { policies } => {
                let names: Vec<String> = policies.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "isolated by {} and no rule matched: denied",
                    names.join(", ")
                )
            }
            Decision::FromOwnNode { node } => {
                write!(f, "from its own node {node}: always allowed")
            }
            Decision::Loopback => f.write_str("a pod to itself: never leaves the pod"),
        }
    }
}

/// The verdict on a packet: each direction that applies, and the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Egress of the sending endpoint (`None`: the source is not an endpoint).
    pub egress: Option<Decision>,
    /// Ingress of the receiving endpoint (`None`: the destination is not an endpoint).
    pub ingress: Option<Decision>,
}

impl Trace {
    pub fn allowed(&self) -> bool {
        self.egress.as_ref().is_none_or(Decision::allows)
            && self.ingress.as_ref().is_none_or(Decision::allows)
    }
}

/// Traces `pkt` through `policies` (in any order: they are sorted here).
pub fn trace(policies: &[CompiledPolicy], model: &Model, pkt: &Packet) -> Trace {
    let mut sorted: Vec<&CompiledPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let src = model.endpoint_of(pkt.src);
    let dst = model.endpoint_of(pkt.dst);
    if let (Some(s), Some(d)) = (src, dst) {
        if s.key == d.key {
            return Trace {
                egress: Some(Decision::Loopback),
                ingress: Some(Decision::Loopback),
            };
        }
    }
    let to = Peer {
        ip: pkt.dst,
        endpoint: dst,
    };
    let from = Peer {
        ip: pkt.src,
        endpoint: src,
    };
    let egress = src.map(|e| decide(&sorted, e, Direction::Egress, to, dst, pkt));
    let ingress = dst.map(|e| match model.host_of(pkt.src) {
        Some(node) if node == e.node => Decision::FromOwnNode {
            node: node.to_string(),
        },
        _ => decide(&sorted, e, Direction::Ingress, from, dst, pkt),
    });
    Trace { egress, ingress }
}

/// One direction for endpoint `me`; `peer` is the other end, `dst` the endpoint receiving the
/// packet (for named ports).
fn decide(
    sorted: &[&CompiledPolicy],
    me: &Endpoint,
    direction: Direction,
    peer: Peer,
    dst: Option<&Endpoint>,
    pkt: &Packet,
) -> Decision {
    let mut applying = Vec::new();
    for p in sorted {
        let Some(d) = p.direction(direction) else {
            continue;
        };
        if !d.selected.contains(&me.key) {
            continue;
        }
        applying.push(p.id.clone());
        for rule in &d.rules {
            if !rule_matches(rule, peer, dst, pkt) {
                continue;
            }
            match rule.action {
                Action::Log => continue,
                action => {
                    return Decision::Rule {
                        policy: p.id.clone(),
                        direction,
                        index: rule.index,
                        action,
                    }
                }
            }
        }
    }
    if applying.is_empty() {
        Decision::NotIsolated
    } else {
        Decision::DefaultDeny { policies: applying }
    }
}

/// The other end: its address, and the endpoint holding it if any.
#[derive(Debug, Clone, Copy)]
struct Peer<'a> {
    ip: IpAddr,
    endpoint: Option<&'a Endpoint>,
}

fn rule_matches(rule: &CompiledRule, peer: Peer, dst: Option<&Endpoint>, pkt: &Packet) -> bool {
    let peer_ok = rule.peers.as_ref().is_none_or(|p| {
        p.blocks.iter().any(|b| b.contains(peer.ip))
            || peer.endpoint.is_some_and(|e| p.endpoints.contains(&e.key))
    });
    let port_ok = rule
        .ports
        .as_ref()
        .is_none_or(|ports| ports.iter().any(|m| port_matches(m, dst, pkt)));
    peer_ok && port_ok
}

fn port_matches(m: &PortMatch, dst: Option<&Endpoint>, pkt: &Packet) -> bool {
    match m {
        PortMatch::Protocol(p) => *p == pkt.proto,
        PortMatch::Range { proto, first, last } => {
            *proto == pkt.proto && (*first..=*last).contains(&pkt.port)
        }
        PortMatch::Named {
            proto, resolved, ..
        } => *proto == pkt.proto && dst.is_some_and(|d| resolved.get(&d.key) == Some(&pkt.port)),
    }
}
