//! The difference between the desired datapath and what the kernel has, as an ordered list of
//! writes. Pure, so every decision about what is ours and what changes is unit-tested.
//!
//! Order (make before break): ENI links up, ENI-table routes, new rules; then stale rules,
//! stale ENI-table routes, and last the kernel's subnet routes of secondary ENIs. A pod's
//! `from` rule thus never points at an empty table, and a rule that changes table gets its new
//! copy before the old one goes.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

use super::desired::{DesiredDatapath, NextHop, RuleKey};
use super::msg::{
    add_rule, add_table_route, delete_route, delete_rule, is_kernel_subnet_route, set_link_up_mtu,
    ObservedLink, ObservedRoute, Request,
};
use rtnetlink::packet_route::route::RouteScope;

/// What a read of the kernel found, already narrowed to the kinds of objects we own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Our rules (see `parse_owned_rule`), duplicates kept: each copy is a separate kernel rule.
    pub rules: Vec<(RuleKey, u32)>,
    /// Links by name.
    pub links: BTreeMap<String, ObservedLink>,
    /// IPv4 unicast routes of all tables.
    pub routes: Vec<ObservedRoute>,
}

/// The writes to make, and what could not be planned (an ENI whose interface is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub requests: Vec<Request>,
    pub problems: Vec<String>,
}

/// Compares `desired` with `observed`. Only rules we own, the tables of desired ENIs and the
/// main-table subnet routes of desired secondary ENIs are considered.
pub fn plan(desired: &DesiredDatapath, observed: &Observed) -> Plan {
    let mut out = Plan::default();
    let mut route_deletes = Vec::new();

    for (name, want) in &desired.links {
        let Some(link) = observed.links.get(name) else {
            out.problems.push(format!(
                "ENI {} (MAC {}) has no interface {name} in this network namespace",
                want.eni_id, want.mac
            ));
            continue;
        };
        if !link.up || link.mtu != Some(want.mtu) {
            out.requests.push(set_link_up_mtu(link, want.mtu));
        }
    }

    for (table, routes) in &desired.tables {
        let mut kept: BTreeSet<Ipv4Net> = BTreeSet::new();
        for r in observed.routes.iter().filter(|r| r.table == *table) {
            let matches = routes
                .get(&r.dst)
                .is_some_and(|hop| same_route(r, hop, observed) && !kept.contains(&r.dst));
            if matches {
                kept.insert(r.dst);
            } else {
                route_deletes.push(delete_route(r, &if_name_of(r.oif, observed)));
            }
        }
        // On-link routes first: the kernel checks a gateway against the routes it has.
        let mut missing: Vec<_> = routes.iter().filter(|(d, _)| !kept.contains(d)).collect();
        missing.sort_by_key(|(_, hop)| hop.gateway.is_some());
        for (dst, hop) in missing {
            // A missing link was reported above; its table waits for it.
            if let Some(link) = observed.links.get(&hop.if_name) {
                out.requests
                    .push(add_table_route(*table, *dst, hop, link.index));
            }
        }
    }

    let mut found: BTreeSet<RuleKey> = BTreeSet::new();
    let mut rule_deletes = Vec::new();
    for (key, table) in &observed.rules {
        if desired.rules.get(key) == Some(table) && found.insert(*key) {
            continue;
        }
        rule_deletes.push(delete_rule(*key, *table));
    }
    for (key, table) in desired.rules.iter().filter(|(k, _)| !found.contains(k)) {
        out.requests.push(add_rule(*key, *table));
    }
    out.requests.extend(rule_deletes);
    out.requests.extend(route_deletes);

    for (name, want) in &desired.links {
        let Some(link) = observed.links.get(name) else {
            continue;
        };
        for r in observed
            .routes
            .iter()
            .filter(|r| is_kernel_subnet_route(r, want.subnet, link.index))
        {
            out.requests.push(delete_route(r, name));
        }
    }
    out
}

/// Whether the kernel's route is the one we want: same next hop on the same link, the scope
/// that implies, metric 0.
fn same_route(r: &ObservedRoute, hop: &NextHop, observed: &Observed) -> bool {
    let scope = if hop.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    let oif = observed.links.get(&hop.if_name).map(|l| l.index);
    r.gateway == hop.gateway && r.oif.is_some() && r.oif == oif && r.scope == scope && r.metric == 0
}

fn if_name_of(oif: Option<u32>, observed: &Observed) -> String {
    oif.and_then(|i| observed.links.values().find(|l| l.index == i))
        .map_or_else(|| format!("#{}", oif.unwrap_or(0)), |l| l.name.clone())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
