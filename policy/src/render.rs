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
//!    GlobalNetworkPolicy rules add, each only when the rule has it:
//!    [meta nfproto ipvN] [meta l4proto [!=] P] [icmp type T [icmp code C]]
//!    per end (src/dst): [ip saddr [!=] @…-src-sel4|notsel4|nets4|notnets4]
//!                       [th sport [!=] { ports }] [ip saddr . meta l4proto . th sport [!=] @…-src-ports4]
//! ```
//! A rule becomes one line per (family, alternative): port lists and named ports are
//! alternatives, and so are the two halves of a negated ICMP type and code.
//! Allow and Pass set a mark bit and return; Deny drops; Log logs and goes on. Which pods a
//! policy selects, who its peers are and what a named port means on each pod are set
//! elements: a pod created, deleted or relabelled changes elements, never rules. Host-to-pod
//! traffic leaves through the output hook and is not filtered: a node always reaches its pods.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::{
    Action, CompiledPolicy, CompiledRule, Direction, EntityMatch, IcmpMatch, IpBlock, IpFamily,
    PolicyId, PortMatch,
};
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
    let mut addr_matches: Vec<Alt> = Vec::new();
    match &r.peers {
        None => addr_matches.push(Alt::any()),
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
                addr_matches.push(Alt::pinned(v4, format!("{fam} {peer_dir} @{set} ")));
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
    sets: &mut Sets,
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
    sets: &'a mut Sets,
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
            self.sets.define(&set, ty, false);
            for ip in keys.iter().flat_map(|k| endpoint_ips(self.model, k)) {
                if IpFamily::of(*ip) == fam {
                    self.sets.add(&set, ip.to_string());
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
            self.sets.define(&set, ty, true);
            for net in mine {
                self.sets.add(&set, net.to_string());
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
                .define(&set, &format!("{ty} . inet_proto . inet_service"), false);
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
                            self.sets.add(&set, format!("{ip} . {proto} . {port}"));
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
