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
//!    IFNAME vmap @<dir>-dispatch        interface -> jump <dir>-via-<hash>, for interfaces
//!                                       that some policy selects (others: no verdict, accept)
//!  chain <dir>-via-<hash>: the policies selecting those interfaces, in order:
//!    no decision yet: jump <policy>-<dir>; ...; still no decision: drop
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
//! elements (pods in hash sets, ipBlocks in interval sets of their own): a pod created,
//! deleted or relabelled changes elements, never rules. Host-to-pod traffic leaves through the
//! output hook and is not filtered: a node always reaches its pods.
//!
//! The state is built as [`Objects`]: one group per policy ([`render_policy`]) and one for the
//! dispatch ([`render_dispatch`]), written whole ([`write_whole`]) or as the difference from
//! what the kernel has ([`write_changes`]).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::{CompiledPolicy, Direction, IpBlock, PolicyId};
use crate::model::{Endpoint, Model};

mod objects;
mod rule;

pub use objects::{write_changes, write_whole, Chain, Changes, ElementOp, Objects, Set};

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

const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

/// The set of the interfaces of node `node` a policy selects in direction `d`.
fn selected_set(p: &CompiledPolicy, d: Direction) -> String {
    format!("{}-{}-selected", policy_name(&p.id), dir_tag(d))
}

/// The complete policy state of node `node` as one transaction (see [`write_whole`]).
pub fn render_node(policies: &[CompiledPolicy], model: &Model, node: &str) -> String {
    let mut sorted: Vec<&CompiledPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let rendered: Vec<Objects> = sorted
        .iter()
        .map(|p| render_policy(p, model, node))
        .collect();
    let pairs: Vec<(&CompiledPolicy, &Objects)> =
        sorted.iter().copied().zip(rendered.iter()).collect();
    let local = model.endpoints.values().filter(|e| e.node == node);
    let dispatch = render_dispatch(&pairs, local);
    let mut parts: Vec<&Objects> = rendered.iter().collect();
    parts.push(&dispatch);
    write_whole(&parts)
}

/// One policy's objects on node `node`: per direction it governs, the set of this node's
/// interfaces it selects, its chain `<name>-in|eg`, and the sets its rules use.
pub fn render_policy(p: &CompiledPolicy, model: &Model, node: &str) -> Objects {
    let mut out = Objects::default();
    let name = policy_name(&p.id);
    for d in DIRECTIONS {
        let Some(pd) = p.direction(d) else { continue };
        let selected = selected_set(p, d);
        out.define_set(&selected, "ifname", false);
        let mut local = std::collections::BTreeSet::new();
        for k in &pd.selected {
            if let Some(e) = model.endpoints.get(k).filter(|e| e.node == node) {
                out.add_element(&selected, quote(&e.iface));
                local.insert(k.clone());
            }
        }
        let chain = format!("{name}-{}", dir_tag(d));
        let mut text = String::new();
        for r in &pd.rules {
            rule::render_rule(
                &mut text,
                &mut out,
                model,
                &format!("{chain}-r{}", r.index),
                d,
                r,
                &local,
            );
        }
        out.add_chain(
            chain,
            format!("comment {};", quote(&format!("{} {d}", p.id))),
            text.lines().map(str::to_string).collect(),
        );
    }
    out
}

/// The name of the chain that runs, in order, the policy chains `chains` of direction `tag`.
fn via_chain(tag: &str, chains: &[String]) -> String {
    let h = chains
        .iter()
        .flat_map(|c| c.bytes().chain([b' ']))
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    format!("{tag}-via-{h:08x}")
}

/// Whether `name` is a dispatch chain made by [`render_dispatch`] for some combination of
/// policies (`eg-via-…`, `in-via-…`).
pub fn is_via_chain(name: &str) -> bool {
    name.starts_with("eg-via-") || name.starts_with("in-via-")
}

/// The objects every policy hangs off: the hook; the anti-spoofing sets of the `local`
/// endpoints; and per direction a verdict map from each local interface that some policy
/// selects to the chain running exactly the policies that select it, in order, then dropping
/// what none of them allowed. Interfaces with the same policies share that chain, so a pod
/// relabelled into a combination another pod already has is map elements only. `policies`
/// are in evaluation order, each with its rendered objects (their selected sets say which
/// local interfaces they apply to).
pub fn render_dispatch<'a>(
    policies: &[(&CompiledPolicy, &Objects)],
    local: impl IntoIterator<Item = &'a Endpoint>,
) -> Objects {
    let mut out = Objects::default();
    out.define_set("local-endpoints", "ifname", false);
    out.define_set("endpoint-addrs4", "ifname . ipv4_addr", false);
    out.define_set("endpoint-addrs6", "ifname . ipv6_addr", false);
    for e in local {
        out.add_element("local-endpoints", quote(&e.iface));
        for ip in &e.ips {
            let set = if ip.is_ipv4() {
                "endpoint-addrs4"
            } else {
                "endpoint-addrs6"
            };
            out.add_element(set, format!("{} . {ip}", quote(&e.iface)));
        }
    }
    let clear = format!("meta mark set meta mark & {:#010x}", !MARK_DECIDED);
    for d in DIRECTIONS {
        let tag = dir_tag(d);
        let (ifkey, base) = match d {
            Direction::Egress => ("iifname", "from-endpoint"),
            Direction::Ingress => ("oifname", "to-endpoint"),
        };
        // Interface -> the policy chains that apply to it, in order.
        let mut applying: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (p, objects) in policies {
            if p.direction(d).is_none() {
                continue;
            }
            let Some(set) = objects.sets.get(&selected_set(p, d)) else {
                continue;
            };
            for iface in &set.elements {
                applying
                    .entry(iface)
                    .or_default()
                    .push(format!("{}-{tag}", policy_name(&p.id)));
            }
        }
        let map = format!("{tag}-dispatch");
        out.define_set(&map, "ifname : verdict", false);
        let mut vias = std::collections::BTreeMap::new();
        for (iface, chains) in &applying {
            let via = via_chain(tag, chains);
            out.add_element(&map, format!("{iface} : jump {via}"));
            vias.entry(via).or_insert(chains);
        }
        for (via, chains) in vias {
            let mut rules: Vec<String> = chains
                .iter()
                .map(|c| format!("meta mark & {MARK_DECIDED:#010x} == 0 jump {c}"))
                .collect();
            // Some policy applies: what none allowed (or passed) is dropped.
            rules.push(format!("meta mark & {MARK_DECIDED:#010x} == 0 drop"));
            out.add_chain(via, String::new(), rules);
        }
        let mut rules = Vec::new();
        if d == Direction::Egress {
            rules.push("meta nfproto ipv4 iifname . ip saddr != @endpoint-addrs4 drop".to_string());
            rules
                .push("meta nfproto ipv6 iifname . ip6 saddr != @endpoint-addrs6 drop".to_string());
        }
        rules.push(clear.clone());
        rules.push(format!("{ifkey} vmap @{map}"));
        rules.push(clear.clone());
        out.add_chain(base.to_string(), String::new(), rules);
    }
    out.add_chain(
        "policy-forward".to_string(),
        "type filter hook forward priority filter; policy accept;".to_string(),
        [
            "ct state established,related accept",
            "ct state invalid drop",
            "iifname @local-endpoints jump from-endpoint",
            "oifname @local-endpoints jump to-endpoint",
        ]
        .map(str::to_string)
        .to_vec(),
    );
    out
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

/// A double-quoted nft string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
