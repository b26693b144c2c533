use std::net::IpAddr;

use rtnetlink::packet_route::route::RouteProtocol;

use super::*;
use crate::datapath::desired::compute_desired;
use crate::datapath::fake::{config, enis, pods};
use crate::datapath::msg::parse_route;
use crate::datapath::MAIN_TABLE;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn link(index: u32, name: &str, up: bool, mtu: u32) -> (String, ObservedLink) {
    let l = ObservedLink {
        index,
        name: name.into(),
        up,
        mtu: Some(mtu),
    };
    (name.to_string(), l)
}

fn whats(p: &Plan) -> Vec<&str> {
    p.requests.iter().map(|r| r.what.as_str()).collect()
}

/// A fresh node: eth0 (index 2) up, eth1 (index 3) down at 1500 with its kernel subnet route.
fn fresh() -> Observed {
    let subnet_route =
        crate::datapath::fake::kernel_subnet_route("10.90.2.0/24".parse().unwrap(), 3);
    Observed {
        rules: vec![],
        links: [link(2, "eth0", true, 9001), link(3, "eth1", false, 1500)].into(),
        routes: vec![parse_route(&subnet_route).unwrap()],
    }
}

#[test]
fn a_fresh_node_gets_everything_in_make_before_break_order() {
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let p = plan(&d, &fresh());
    assert_eq!(p.problems, Vec::<String>::new());
    assert_eq!(
        whats(&p),
        vec![
            "set link eth1 up mtu 9001",
            "replace route 10.90.2.1/32 dev eth1 scope link table 2",
            "replace route 0.0.0.0/0 via 10.90.2.1 dev eth1 table 2",
            "add rule priority 512 to 10.90.1.20 lookup main",
            "add rule priority 512 to 10.90.2.20 lookup main",
            "add rule priority 1024 fwmark 0x80/0x80 lookup main",
            "add rule priority 1536 from 10.90.2.20 lookup 2",
            "delete route 10.90.2.0/24 dev eth1 proto Kernel table 254",
        ]
    );
}

/// What the kernel holds after `plan` of `d` on a fresh node was applied.
fn converged(d: &DesiredDatapath) -> Observed {
    let mut o = fresh();
    let eth1 = o.links.get_mut("eth1").unwrap();
    (eth1.up, eth1.mtu) = (true, Some(9001));
    o.routes.clear();
    for (table, routes) in &d.tables {
        for (dst, hop) in routes {
            o.routes.push(ObservedRoute {
                table: *table,
                dst: *dst,
                gateway: hop.gateway,
                oif: Some(3),
                scope: if hop.gateway.is_some() {
                    RouteScope::Universe
                } else {
                    RouteScope::Link
                },
                protocol: RouteProtocol::Static,
                metric: 0,
            });
        }
    }
    o.rules = d.rules.iter().map(|(k, t)| (*k, *t)).collect();
    o
}

#[test]
fn a_converged_node_needs_nothing() {
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    assert_eq!(plan(&d, &converged(&d)), Plan::default());
}

#[test]
fn removing_a_pod_deletes_exactly_its_rules() {
    let before = compute_desired(&config(), &enis(), &pods()).unwrap();
    let after = compute_desired(&config(), &enis(), &pods()[..1]).unwrap();
    let p = plan(&after, &converged(&before));
    assert_eq!(
        whats(&p),
        vec![
            "delete rule priority 512 to 10.90.2.20 lookup main",
            "delete rule priority 1536 from 10.90.2.20 lookup 2",
        ]
    );
}

#[test]
fn wrong_duplicate_and_stray_entries_are_corrected() {
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let mut o = converged(&d);
    // The pod's `from` rule points at a stale table, a `to` rule exists twice, and a rule of
    // a pod that is gone is left over.
    o.rules
        .retain(|(k, _)| *k != RuleKey::FromPod(ip("10.90.2.20")));
    o.rules.push((RuleKey::FromPod(ip("10.90.2.20")), 5));
    o.rules.push((RuleKey::ToPod(ip("10.90.1.20")), MAIN_TABLE));
    o.rules.push((RuleKey::ToPod(ip("10.90.2.99")), MAIN_TABLE));
    // The ENI table's default route goes the wrong way, and it holds a stray route.
    let default = o
        .routes
        .iter_mut()
        .find(|r| r.dst.prefix_len() == 0)
        .unwrap();
    default.gateway = Some("10.90.2.254".parse().unwrap());
    o.routes.push(ObservedRoute {
        table: 2,
        dst: "192.0.2.0/24".parse().unwrap(),
        gateway: None,
        oif: Some(2),
        scope: RouteScope::Link,
        protocol: RouteProtocol::Boot,
        metric: 0,
    });
    let p = plan(&d, &o);
    assert_eq!(
        whats(&p),
        vec![
            "replace route 0.0.0.0/0 via 10.90.2.1 dev eth1 table 2",
            "add rule priority 1536 from 10.90.2.20 lookup 2",
            // Deletions come in the kernel's order.
            "delete rule priority 1536 from 10.90.2.20 lookup 5",
            "delete rule priority 512 to 10.90.1.20 lookup main",
            "delete rule priority 512 to 10.90.2.99 lookup main",
            "delete route 0.0.0.0/0 via 10.90.2.254 dev eth1 proto Static table 2",
            "delete route 192.0.2.0/24 dev eth0 proto Boot table 2",
        ]
    );
}

#[test]
fn a_missing_eni_interface_is_reported_and_the_rest_still_planned() {
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let mut o = fresh();
    o.links.remove("eth1");
    o.routes.clear();
    let p = plan(&d, &o);
    assert_eq!(
        p.problems,
        vec!["ENI eni-b (MAC 0a:00:00:00:00:0b) has no interface eth1 in this network namespace"]
    );
    assert_eq!(whats(&p).len(), 4, "{:?}", whats(&p));
    assert!(whats(&p).iter().all(|w| w.starts_with("add rule")));
}

#[test]
fn routes_of_other_tables_and_the_primary_subnet_route_are_left_alone() {
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let mut o = converged(&d);
    let primary = crate::datapath::fake::kernel_subnet_route("10.90.1.0/24".parse().unwrap(), 2);
    o.routes.push(parse_route(&primary).unwrap());
    o.routes.push(ObservedRoute {
        table: 100,
        dst: "0.0.0.0/0".parse().unwrap(),
        gateway: Some("10.90.1.1".parse().unwrap()),
        oif: Some(2),
        scope: RouteScope::Universe,
        protocol: RouteProtocol::Boot,
        metric: 0,
    });
    assert_eq!(plan(&d, &o), Plan::default());
}
