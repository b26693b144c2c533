//! The IR as one nftables transaction for one node, inside `table inet trellis` (shared with
//! the NAT manager, whose objects are left alone).
//!
//! ```text
//!  chain policy-forward (hook forward, priority filter, policy accept)
//!    ct state established,related accept           replies of allowed connections
//!    ct state invalid drop
//!    iifname @local-endpoints jump from-endpoint   egress of the sending pod, anti-spoofing
//!    oifname @local-endpoints jump to-endpoint     ingress of the receiving pod
//!  chain from-endpoint / to-endpoint
//!    (anti-spoofing: a pod's packets carry its own address: iifname . saddr in @endpoint-addrs)
//!    clear the decision bits of the mark
//!    for each policy in order: IFNAME in @<policy>-<dir>-selected, no decision yet: jump
//!    no decision and IFNAME in @<dir>-isolated: drop
//!  chain <policy>-<dir>: one rule per (rule, family, port alternative):
//!    [saddr|daddr in @<policy>-<dir>-r<N>-peer4/6] [port match] -> decision
//! ```
//! Allow and Pass set a mark bit and return; Deny drops; Log logs and goes on. Which pods a
//! policy selects, who its peers are and what a named port means on each pod are set
//! elements: a pod created, deleted or relabelled changes elements, never rules. Host-to-pod
//! traffic leaves through the output hook and is not filtered: a node always reaches its pods.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::{Action, CompiledPolicy, CompiledRule, Direction, IpBlock, PolicyId, PortMatch};
use crate::model::{EndpointKey, Model};

pub const TABLE: &str = "inet trellis";
/// Mark bits: a policy allowed the packet, or passed it on.
pub const MARK_ALLOW: u32 = 0x0001_0000;
pub const MARK_PASS: u32 = 0x0002_0000;
const MARK_DECIDED: u32 = MARK_ALLOW | MARK_PASS;

/// A short, stable name for a policy's chains and sets: `np-` or `gnp-` and a hash.
pub fn policy_name(id: &PolicyId) -> String {
    let (prefix, text) = match id {
        PolicyId::Namespaced { namespace, name } => ("np", format!("{namespace}/{name}")),
        PolicyId::Global { name } => ("gnp", name.clone()),
    };
    // FNV-1a 32: stable across builds and runs.
    let h = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{prefix}-{h:08x}")
}

fn dir_tag(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    }
}

/// The complete policy state of node `node` as one transaction: objects are created if
/// missing, then flushed and refilled, so the kernel swaps old for new atomically.
pub fn render_node(policies: &[CompiledPolicy], model: &Model, node: &str) -> String {
    let mut sorted: Vec<&CompiledPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let local: Vec<_> = model
        .endpoints
        .values()
        .filter(|e| e.node == node)
        .collect();
    let mut out = format!("add table {TABLE}\n");
    let mut sets = Sets::default();
    // Endpoints of this node and their addresses.
    sets.define("local-endpoints", "ifname", false);
    sets.define("endpoint-addrs4", "ifname . ipv4_addr", false);
    sets.define("endpoint-addrs6", "ifname . ipv6_addr", false);
    for e in &local {
        sets.add("local-endpoints", quote(&e.iface));
        for ip in &e.ips {
            let set = if ip.is_ipv4() {
                "endpoint-addrs4"
            } else {
                "endpoint-addrs6"
            };
            sets.add(set, format!("{} . {ip}", quote(&e.iface)));
        }
    }
    let iface_of = |k: &EndpointKey| {
        model
            .endpoints
            .get(k)
            .filter(|e| e.node == node)
            .map(|e| quote(&e.iface))
    };
    let mut chains = String::new();
    for d in [Direction::Egress, Direction::Ingress] {
        let (tag, ifkey) = (
            dir_tag(d),
            if d == Direction::Egress {
                "iifname"
            } else {
                "oifname"
            },
        );
        let isolated = format!("{tag}-isolated");
        sets.define(&isolated, "ifname", false);
        let base = if d == Direction::Egress {
            "from-endpoint"
        } else {
            "to-endpoint"
        };
        let mut body = String::new();
        if d == Direction::Egress {
            body.push_str("meta nfproto ipv4 iifname . ip saddr != @endpoint-addrs4 drop\n");
            body.push_str("meta nfproto ipv6 iifname . ip6 saddr != @endpoint-addrs6 drop\n");
        }
        let _ = writeln!(body, "meta mark set meta mark & {:#010x}", !MARK_DECIDED);
        for p in &sorted {
            let Some(pd) = p.direction(d) else { continue };
            let name = policy_name(&p.id);
            let selected = format!("{name}-{tag}-selected");
            sets.define(&selected, "ifname", false);
            for k in &pd.selected {
                if let Some(i) = iface_of(k) {
                    sets.add(&selected, i.clone());
                    sets.add(&isolated, i);
                }
            }
            let chain = format!("{name}-{tag}");
            let _ = writeln!(
                body,
                "meta mark & {MARK_DECIDED:#010x} == 0 {ifkey} @{selected} jump {chain}"
            );
            let mut rules = String::new();
            for r in &pd.rules {
                render_rule(
                    &mut rules,
                    &mut sets,
                    model,
                    &format!("{chain}-r{}", r.index),
                    d,
                    r,
                );
            }
            let _ = writeln!(
                chains,
                "add chain {TABLE} {chain} {{ comment {}; }}",
                quote(&format!("{} {d}", p.id))
            );
            let _ = writeln!(chains, "flush chain {TABLE} {chain}");
            for line in rules.lines() {
                let _ = writeln!(chains, "add rule {TABLE} {chain} {line}");
            }
        }
        let _ = writeln!(
            body,
            "meta mark & {MARK_DECIDED:#010x} == 0 {ifkey} @{isolated} drop"
        );
        let _ = writeln!(body, "meta mark set meta mark & {:#010x}", !MARK_DECIDED);
        let _ = writeln!(chains, "add chain {TABLE} {base}");
        let _ = writeln!(chains, "flush chain {TABLE} {base}");
        for line in body.lines() {
            let _ = writeln!(chains, "add rule {TABLE} {base} {line}");
        }
    }
    out.push_str(&sets.render());
    out.push_str(&chains);
    let _ = writeln!(
        out,
        "add chain {TABLE} policy-forward {{ type filter hook forward priority filter; policy accept; }}"
    );
    let _ = writeln!(out, "flush chain {TABLE} policy-forward");
    for line in [
        "ct state established,related accept",
        "ct state invalid drop",
        "iifname @local-endpoints jump from-endpoint",
        "oifname @local-endpoints jump to-endpoint",
    ] {
        let _ = writeln!(out, "add rule {TABLE} policy-forward {line}");
    }
    out
}

/// One compiled rule: a line per (address family, port alternative) as needed.
fn render_rule(
    out: &mut String,
    sets: &mut Sets,
    model: &Model,
    prefix: &str,
    d: Direction,
    r: &CompiledRule,
) {
    let verdict = match r.action {
        Action::Allow => format!("meta mark set meta mark | {MARK_ALLOW:#010x} return"),
        Action::Pass => format!("meta mark set meta mark | {MARK_PASS:#010x} return"),
        Action::Deny => "drop".to_string(),
        Action::Log => format!("log prefix {}", quote(&format!("trellis {prefix} "))),
    };
    let peer_dir = if d == Direction::Ingress {
        "saddr"
    } else {
        "daddr"
    };
    // The address matches: none (any peer), or one per family with members.
    let mut addr_matches: Vec<String> = Vec::new();
    match &r.peers {
        None => addr_matches.push(String::new()),
        Some(peers) => {
            for (fam, ty, v4) in [("ip", "ipv4_addr", true), ("ip6", "ipv6_addr", false)] {
                let set = format!("{prefix}-peer{}", if v4 { 4 } else { 6 });
                sets.define(&set, ty, true);
                for k in &peers.endpoints {
                    for ip in model
                        .endpoints
                        .get(k)
                        .map(|e| e.ips.as_slice())
                        .unwrap_or(&[])
                    {
                        if ip.is_ipv4() == v4 {
                            sets.add(&set, ip.to_string());
                        }
                    }
                }
                for b in &peers.blocks {
                    for range in block_ranges(b)
                        .into_iter()
                        .filter(|(s, _)| s.is_ipv4() == v4)
                    {
                        sets.add(&set, format!("{}-{}", range.0, range.1));
                    }
                }
                // The rule exists even while the set is empty: a pod may join it later.
                addr_matches.push(format!("{fam} {peer_dir} @{set} "));
            }
        }
    }
    let mut port_matches: Vec<String> = Vec::new();
    match &r.ports {
        None => port_matches.push(String::new()),
        Some(ports) => {
            for (i, m) in ports.iter().enumerate() {
                match m {
                    PortMatch::Protocol(p) => port_matches.push(format!("meta l4proto {p} ")),
                    PortMatch::Range { proto, first, last } if first == last => {
                        port_matches.push(format!("meta l4proto {proto} th dport {first} "))
                    }
                    PortMatch::Range { proto, first, last } => {
                        port_matches.push(format!("meta l4proto {proto} th dport {first}-{last} "))
                    }
                    PortMatch::Named {
                        proto, resolved, ..
                    } => {
                        for (fam, ty, v4) in
                            [("ip", "ipv4_addr", true), ("ip6", "ipv6_addr", false)]
                        {
                            let set = format!("{prefix}-port{i}-{}", if v4 { 4 } else { 6 });
                            sets.define(&set, &format!("{ty} . inet_proto . inet_service"), false);
                            for (k, port) in resolved {
                                for ip in model
                                    .endpoints
                                    .get(k)
                                    .map(|e| e.ips.as_slice())
                                    .unwrap_or(&[])
                                {
                                    if ip.is_ipv4() == v4 {
                                        sets.add(&set, format!("{ip} . {proto} . {port}"));
                                    }
                                }
                            }
                            port_matches
                                .push(format!("{fam} daddr . meta l4proto . th dport @{set} "));
                        }
                    }
                }
            }
        }
    }
    for a in &addr_matches {
        for p in &port_matches {
            // An IPv4 peer set with an IPv6 named-port set can never both match.
            let fam_a = a.split_whitespace().next();
            let fam_p = p
                .split_whitespace()
                .next()
                .filter(|f| *f == "ip" || *f == "ip6");
            if let (Some(x), Some(y)) = (fam_a, fam_p) {
                if x != y {
                    continue;
                }
            }
            let _ = writeln!(out, "{a}{p}{verdict}");
        }
    }
}

/// An ipBlock as address ranges: the CIDR with every `except` cut out.
pub fn block_ranges(b: &IpBlock) -> Vec<(IpAddr, IpAddr)> {
    let to_u128 = |a: IpAddr| match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let v4 = b.cidr.addr().is_ipv4();
    let from_u128 = |n: u128| -> IpAddr {
        if v4 {
            IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(n))
        }
    };
    let span = |n: &IpNet| (to_u128(n.network()), to_u128(n.broadcast()));
    let mut ranges = vec![span(&b.cidr)];
    let mut cuts: Vec<(u128, u128)> = b
        .except
        .iter()
        .filter(|e| e.addr().is_ipv4() == v4)
        .map(span)
        .collect();
    cuts.sort();
    for (cs, ce) in cuts {
        let mut next = Vec::new();
        for (s, e) in ranges {
            if ce < s || cs > e {
                next.push((s, e));
                continue;
            }
            if cs > s {
                next.push((s, cs - 1));
            }
            if ce < e {
                next.push((ce + 1, e));
            }
        }
        ranges = next;
    }
    ranges
        .into_iter()
        .map(|(s, e)| (from_u128(s), from_u128(e)))
        .collect()
}

/// Named sets and their elements, rendered in name order.
#[derive(Debug, Default)]
struct Sets {
    defs: std::collections::BTreeMap<String, (String, bool, BTreeSet<String>)>,
}

impl Sets {
    fn define(&mut self, name: &str, ty: &str, interval: bool) {
        self.defs
            .entry(name.to_string())
            .or_insert_with(|| (ty.to_string(), interval, BTreeSet::new()));
    }

    fn add(&mut self, name: &str, element: String) {
        if let Some((_, _, elems)) = self.defs.get_mut(name) {
            elems.insert(element);
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, (ty, interval, elems)) in &self.defs {
            let flags = if *interval {
                " flags interval; auto-merge;"
            } else {
                ""
            };
            let _ = writeln!(out, "add set {TABLE} {name} {{ type {ty};{flags} }}");
            let _ = writeln!(out, "flush set {TABLE} {name}");
            if !elems.is_empty() {
                let list: Vec<&str> = elems.iter().map(String::as_str).collect();
                let _ = writeln!(out, "add element {TABLE} {name} {{ {} }}", list.join(", "));
            }
        }
        out
    }
}

/// A double-quoted nft string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
