//! One compiled rule as nft rule lines and the sets they use.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::objects::Objects;
use super::{block_ranges, quote, MARK_ALLOW, MARK_PASS};
use crate::ir::{Action, CompiledRule, Direction, EntityMatch, IcmpMatch, IpFamily, PortMatch};
use crate::model::{EndpointKey, Model};

/// One compiled rule: a line per (address family, port alternative) as needed. `local_dests`:
/// in ingress, the packet's destination is one of these (the node's pods the policy selects),
/// so a named port's set needs only their numbers, not every pod's in the cluster.
pub(super) fn render_rule(
    out: &mut String,
    sets: &mut Objects,
    model: &Model,
    prefix: &str,
    d: Direction,
    r: &CompiledRule,
    local_dests: &BTreeSet<EndpointKey>,
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
    let mut addr_matches: Vec<Alt> = Vec::new();
    match &r.peers {
        None => addr_matches.push(Alt::any()),
        Some(peers) => {
            for (fam, ty, v4) in [("ip", "ipv4_addr", true), ("ip6", "ipv6_addr", false)] {
                let n = if v4 { 4 } else { 6 };
                // Pods: single addresses in a hash set, so a pod coming or going is one
                // element added or deleted.
                if peers.by_selector {
                    let set = format!("{prefix}-peer{n}");
                    sets.define_set(&set, ty, false);
                    for k in &peers.endpoints {
                        for ip in endpoint_ips(model, k) {
                            if ip.is_ipv4() == v4 {
                                sets.add_element(&set, ip.to_string());
                            }
                        }
                    }
                    // The rule exists even while the set is empty: a pod may join it later.
                    addr_matches.push(Alt::pinned(v4, format!("{fam} {peer_dir} @{set} ")));
                }
                // ipBlocks: ranges in an interval set of their own, which only the policy
                // changes.
                let ranges: Vec<(IpAddr, IpAddr)> = peers
                    .blocks
                    .iter()
                    .flat_map(block_ranges)
                    .filter(|(s, _)| s.is_ipv4() == v4)
                    .collect();
                if !ranges.is_empty() {
                    let set = format!("{prefix}-net{n}");
                    sets.define_set(&set, ty, true);
                    for (s, e) in ranges {
                        sets.add_element(&set, format!("{s}-{e}"));
                    }
                    addr_matches.push(Alt::pinned(v4, format!("{fam} {peer_dir} @{set} ")));
                }
            }
        }
    }
    let mut port_matches: Vec<Alt> = Vec::new();
    match &r.ports {
        None => port_matches.push(Alt::any()),
        Some(ports) => {
            for (i, m) in ports.iter().enumerate() {
                match m {
                    PortMatch::Protocol(p) => {
                        port_matches.push(Alt::text(format!("meta l4proto {p} ")))
                    }
                    PortMatch::Range { proto, first, last } if first == last => port_matches
                        .push(Alt::text(format!("meta l4proto {proto} th dport {first} "))),
                    PortMatch::Range { proto, first, last } => port_matches.push(Alt::text(
                        format!("meta l4proto {proto} th dport {first}-{last} "),
                    )),
                    PortMatch::Named {
                        proto, resolved, ..
                    } => {
                        for (fam, ty, v4) in
                            [("ip", "ipv4_addr", true), ("ip6", "ipv6_addr", false)]
                        {
                            let set = format!("{prefix}-port{i}-{}", if v4 { 4 } else { 6 });
                            sets.define_set(
                                &set,
                                &format!("{ty} . inet_proto . inet_service"),
                                false,
                            );
                            let dests = resolved
                                .iter()
                                .filter(|(k, _)| d == Direction::Egress || local_dests.contains(k));
                            for (k, port) in dests {
                                for ip in endpoint_ips(model, k) {
                                    if ip.is_ipv4() == v4 {
                                        sets.add_element(&set, format!("{ip} . {proto} . {port}"));
                                    }
                                }
                            }
                            port_matches.push(Alt::pinned(
                                v4,
                                format!("{fam} daddr . meta l4proto . th dport @{set} "),
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut terms = vec![addr_matches, port_matches];
    global_terms(&mut terms, sets, model, prefix, r);
    // One line per choice of an alternative from every term, of one family: an IPv4 peer set
    // with an IPv6 named-port set can never both match.
    let mut lines: Vec<(Option<IpFamily>, bool, String)> = vec![(None, false, String::new())];
    for term in &terms {
        let mut next = Vec::new();
        for (fam, pinned, text) in &lines {
            for alt in term {
                let fam = match (*fam, alt.family) {
                    (Some(a), Some(b)) if a != b => continue,
                    (a, b) => a.or(b),
                };
                next.push((fam, *pinned || alt.pins, format!("{text}{}", alt.text)));
            }
        }
        lines = next;
    }
    for (fam, pinned, text) in lines {
        let nfproto = match (fam, pinned) {
            (Some(IpFamily::V4), false) => "meta nfproto ipv4 ",
            (Some(IpFamily::V6), false) => "meta nfproto ipv6 ",
            _ => "",
        };
        let _ = writeln!(out, "{nfproto}{text}{verdict}");
    }
}

/// One alternative of a rule term: nft match text, the family it is for, and whether the text
/// itself restricts the packet to that family (else the line says `meta nfproto`).
struct Alt {
    family: Option<IpFamily>,
    pins: bool,
    text: String,
}

impl Alt {
    fn any() -> Self {
        Alt::text(String::new())
    }

    fn text(text: String) -> Self {
        Alt {
            family: None,
            pins: false,
            text,
        }
    }

    fn pinned(v4: bool, text: String) -> Self {
        Alt {
            family: Some(if v4 { IpFamily::V4 } else { IpFamily::V6 }),
            pins: true,
            text,
        }
    }

    /// Only packets of `family`, without a match of its own.
    fn family(family: IpFamily) -> Self {
        Alt {
            family: Some(family),
            pins: false,
            text: String::new(),
        }
    }
}

const FAMILIES: [(IpFamily, &str, &str, &str); 2] = [
    (IpFamily::V4, "ip", "ipv4_addr", "4"),
    (IpFamily::V6, "ip6", "ipv6_addr", "6"),
];

/// The GlobalNetworkPolicy matches of `r`, as terms (each a list of alternatives).
fn global_terms(
    terms: &mut Vec<Vec<Alt>>,
    sets: &mut Objects,
    model: &Model,
    prefix: &str,
    r: &CompiledRule,
) {
    if let Some(f) = r.ip_version {
        terms.push(vec![Alt::family(f)]);
    }
    if let Some(p) = r.protocol {
        terms.push(vec![Alt::text(format!("meta l4proto {p} "))]);
    }
    if let Some(p) = r.not_protocol {
        terms.push(vec![Alt::text(format!("meta l4proto != {p} "))]);
    }
    let icmp_kw = |m: &IcmpMatch| match m.family {
        IpFamily::V4 => "icmp",
        IpFamily::V6 => "icmpv6",
    };
    if let Some(m) = &r.icmp {
        let kw = icmp_kw(m);
        let mut text = format!("{kw} type {} ", m.icmp_type);
        if let Some(c) = m.code {
            let _ = write!(text, "{kw} code {c} ");
        }
        terms.push(vec![Alt::pinned(m.family == IpFamily::V4, text)]);
    }
    if let Some(m) = &r.not_icmp {
        // not (type and code) = another type, or this type with another code: disjoint lines.
        let (kw, v4) = (icmp_kw(m), m.family == IpFamily::V4);
        let mut alts = vec![Alt::pinned(v4, format!("{kw} type != {} ", m.icmp_type))];
        if let Some(c) = m.code {
            alts.push(Alt::pinned(
                v4,
                format!("{kw} type {} {kw} code != {c} ", m.icmp_type),
            ));
        }
        terms.push(alts);
    }
    for (m, tag, addr, port) in [
        (&r.source, "src", "saddr", "sport"),
        (&r.destination, "dst", "daddr", "dport"),
    ] {
        let end = End {
            sets: &mut *sets,
            model,
            prefix: format!("{prefix}-{tag}"),
            addr,
            port,
        };
        end.terms(terms, m);
    }
}

/// Renders one end's [`EntityMatch`].
struct End<'a> {
    sets: &'a mut Objects,
    model: &'a Model,
    /// Set names start with this.
    prefix: String,
    addr: &'static str,
    port: &'static str,
}

impl End<'_> {
    fn terms(mut self, terms: &mut Vec<Vec<Alt>>, m: &EntityMatch) {
        if let Some(keys) = &m.endpoints {
            terms.push(self.endpoint_sets("sel", "", keys));
        }
        if let Some(keys) = &m.not_endpoints {
            terms.push(self.endpoint_sets("notsel", "!= ", keys));
        }
        if let Some(nets) = &m.nets {
            // Only the families with networks can match.
            terms.push(self.net_sets("nets", "", nets, false));
        }
        if !m.not_nets.is_empty() {
            // A family without networks here passes.
            terms.push(self.net_sets("notnets", "!= ", &m.not_nets, true));
        }
        if let Some(ports) = &m.ports {
            let mut alts = Vec::new();
            if let Some(list) = numeric_ports(ports) {
                alts.push(Alt::text(format!("th {} {list} ", self.port)));
            }
            if ports.iter().any(|p| matches!(p, PortMatch::Named { .. })) {
                alts.extend(self.named_sets("ports", "", ports));
            }
            terms.push(alts);
        }
        if let Some(list) = numeric_ports(&m.not_ports) {
            terms.push(vec![Alt::text(format!("th {} != {list} ", self.port))]);
        }
        if m.not_ports
            .iter()
            .any(|p| matches!(p, PortMatch::Named { .. }))
        {
            terms.push(self.named_sets("notports", "!= ", &m.not_ports));
        }
    }

    fn endpoint_sets(&mut self, what: &str, op: &str, keys: &BTreeSet<EndpointKey>) -> Vec<Alt> {
        let mut alts = Vec::new();
        for (fam, kw, ty, n) in FAMILIES {
            let set = format!("{}-{what}{n}", self.prefix);
            self.sets.define_set(&set, ty, false);
            for ip in keys.iter().flat_map(|k| endpoint_ips(self.model, k)) {
                if IpFamily::of(*ip) == fam {
                    self.sets.add_element(&set, ip.to_string());
                }
            }
            // The rule exists even while the set is empty: a pod may join it later.
            alts.push(Alt::pinned(
                fam == IpFamily::V4,
                format!("{kw} {} {op}@{set} ", self.addr),
            ));
        }
        alts
    }

    /// `nets` by family; with `others_pass`, a family without any matches unconditionally.
    fn net_sets(&mut self, what: &str, op: &str, nets: &[IpNet], others_pass: bool) -> Vec<Alt> {
        let mut alts = Vec::new();
        for (fam, kw, ty, n) in FAMILIES {
            let mine: Vec<&IpNet> = nets
                .iter()
                .filter(|net| IpFamily::of(net.addr()) == fam)
                .collect();
            if mine.is_empty() {
                if others_pass {
                    alts.push(Alt::family(fam));
                }
                continue;
            }
            let set = format!("{}-{what}{n}", self.prefix);
            self.sets.define_set(&set, ty, true);
            for net in mine {
                self.sets.add_element(&set, net.to_string());
            }
            alts.push(Alt::pinned(
                fam == IpFamily::V4,
                format!("{kw} {} {op}@{set} ", self.addr),
            ));
        }
        alts
    }

    /// The named ports of `ports` as `address . protocol . port` sets, one per family.
    fn named_sets(&mut self, what: &str, op: &str, ports: &[PortMatch]) -> Vec<Alt> {
        let mut alts = Vec::new();
        for (fam, kw, ty, n) in FAMILIES {
            let set = format!("{}-{what}{n}", self.prefix);
            self.sets
                .define_set(&set, &format!("{ty} . inet_proto . inet_service"), false);
            for p in ports {
                let PortMatch::Named {
                    proto, resolved, ..
                } = p
                else {
                    continue;
                };
                for (k, port) in resolved {
                    for ip in endpoint_ips(self.model, k) {
                        if IpFamily::of(*ip) == fam {
                            self.sets
                                .add_element(&set, format!("{ip} . {proto} . {port}"));
                        }
                    }
                }
            }
            alts.push(Alt::pinned(
                fam == IpFamily::V4,
                format!(
                    "{kw} {} . meta l4proto . th {} {op}@{set} ",
                    self.addr, self.port
                ),
            ));
        }
        alts
    }
}

fn endpoint_ips<'a>(model: &'a Model, k: &EndpointKey) -> &'a [IpAddr] {
    model
        .endpoints
        .get(k)
        .map(|e| e.ips.as_slice())
        .unwrap_or(&[])
}

/// The numeric ports of `ports` as an nft value: `80`, `1-2` or `{ 80, 1-2 }`; `None` if none.
fn numeric_ports(ports: &[PortMatch]) -> Option<String> {
    let list: Vec<String> = ports
        .iter()
        .filter_map(|p| match p {
            PortMatch::Range { first, last, .. } if first == last => Some(first.to_string()),
            PortMatch::Range { first, last, .. } => Some(format!("{first}-{last}")),
            _ => None,
        })
        .collect();
    match list.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => Some(format!("{{ {} }}", list.join(", "))),
    }
}
