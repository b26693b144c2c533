//! What happens to one packet, and why: evaluated on the IR (see the crate documentation for
//! the rules), naming the policy and rule that decided each direction.

use std::fmt;
use std::net::IpAddr;

use crate::ir::{
    Action, CompiledPolicy, CompiledRule, Direction, EntityMatch, IpFamily, PolicyId, PortMatch,
};
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

/// What a [`Packet`] leaves out, for GlobalNetworkPolicy rules that match on it. `None` is
/// unknown, taken as a value no rule names: `ports`/`icmp` do not match it, `notPorts`/`notICMP`
/// do (an ephemeral source port is what a client normally has).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketDetail {
    pub sport: Option<u16>,
    /// ICMP or ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
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

/// Traces `pkt` through `policies` (in any order: they are sorted here), its source port and
/// ICMP fields unknown.
pub fn trace(policies: &[CompiledPolicy], model: &Model, pkt: &Packet) -> Trace {
    trace_detailed(policies, model, pkt, &PacketDetail::default())
}

/// [`trace`] with the source port and ICMP type and code known.
pub fn trace_detailed(
    policies: &[CompiledPolicy],
    model: &Model,
    pkt: &Packet,
    detail: &PacketDetail,
) -> Trace {
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
    let ends = Ends {
        from,
        to,
        pkt,
        detail,
    };
    let egress = src.map(|e| decide(&sorted, e, Direction::Egress, &ends));
    let ingress = dst.map(|e| match model.host_of(pkt.src) {
        Some(node) if node == e.node => Decision::FromOwnNode {
            node: node.to_string(),
        },
        _ => decide(&sorted, e, Direction::Ingress, &ends),
    });
    Trace { egress, ingress }
}

/// One direction for endpoint `me`.
fn decide(
    sorted: &[&CompiledPolicy],
    me: &Endpoint,
    direction: Direction,
    ends: &Ends,
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
            if !rule_matches(rule, direction, ends) {
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

/// Both ends of the packet being traced.
struct Ends<'a> {
    from: Peer<'a>,
    to: Peer<'a>,
    pkt: &'a Packet,
    detail: &'a PacketDetail,
}

fn rule_matches(rule: &CompiledRule, direction: Direction, ends: &Ends) -> bool {
    let (pkt, dst) = (ends.pkt, ends.to.endpoint);
    let peer = match direction {
        Direction::Ingress => ends.from,
        Direction::Egress => ends.to,
    };
    let proto = pkt.proto.number();
    let icmp_is = |m: &crate::ir::IcmpMatch| {
        ends.detail
            .icmp
            .is_some_and(|(t, c)| IpFamily::of(pkt.src) == m.family && m.matches(t, c))
    };
    let global_ok = rule.ip_version.is_none_or(|v| v == IpFamily::of(pkt.src))
        && rule.protocol.is_none_or(|p| p.number() == proto)
        && rule.not_protocol.is_none_or(|p| p.number() != proto)
        && rule.icmp.as_ref().is_none_or(icmp_is)
        && rule.not_icmp.as_ref().is_none_or(|m| !icmp_is(m))
        && entity_matches(&rule.source, ends.from, ends.detail.sport, pkt.proto)
        && entity_matches(&rule.destination, ends.to, Some(pkt.port), pkt.proto);
    let peer_ok = rule.peers.as_ref().is_none_or(|p| {
        p.blocks.iter().any(|b| b.contains(peer.ip))
            || peer.endpoint.is_some_and(|e| p.endpoints.contains(&e.key))
    });
    let port_ok = rule
        .ports
        .as_ref()
        .is_none_or(|ports| ports.iter().any(|m| port_matches(m, dst, pkt)));
    global_ok && peer_ok && port_ok
}

/// One end against an entity match; `port` is that end's port (`None`: unknown).
fn entity_matches(m: &EntityMatch, end: Peer, port: Option<u16>, proto: Proto) -> bool {
    let in_set =
        |set: &std::collections::BTreeSet<_>| end.endpoint.is_some_and(|e| set.contains(&e.key));
    let in_nets = |nets: &[ipnet::IpNet]| nets.iter().any(|n| n.contains(&end.ip));
    let port_is =
        |pm: &PortMatch| port.is_some_and(|n| end_port_matches(pm, end.endpoint, proto, n));
    m.endpoints.as_ref().is_none_or(in_set)
        && !m.not_endpoints.as_ref().is_some_and(in_set)
        && m.nets.as_deref().is_none_or(in_nets)
        && !in_nets(&m.not_nets)
        && m.ports.as_ref().is_none_or(|ps| ps.iter().any(port_is))
        && !m.not_ports.iter().any(port_is)
}

/// A port match on the end holding `endpoint` (named ports resolve there).
fn end_port_matches(m: &PortMatch, endpoint: Option<&Endpoint>, proto: Proto, port: u16) -> bool {
    match m {
        PortMatch::Protocol(p) => p.number() == proto.number(),
        PortMatch::Range {
            proto: p,
            first,
            last,
        } => p.number() == proto.number() && (*first..=*last).contains(&port),
        PortMatch::Named {
            proto: p, resolved, ..
        } => {
            p.number() == proto.number()
                && endpoint.is_some_and(|e| resolved.get(&e.key) == Some(&port))
        }
    }
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
