//! Bad NetworkPolicy input (issue 5): a policy with an invalid selector, port, CIDR or protocol
//! is refused by `trellisctl apply` with the field named; nothing is written (not even the good
//! documents of the same file), every node's `table inet trellis` stays byte-identical, and the
//! probes give the same table. Needs root.

mod lab_support;
mod netpol_support;

use std::time::Duration;

use lab_support::ok;
use netpol_support::{NetpolLab, Port};

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: x}}\nspec: {spec}\n"
    )
}

fn tables(lab: &NetpolLab) -> Vec<String> {
    ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| {
            ok(&[
                "node", "exec", &lab.name, n, "--", "nft", "list", "table", "inet", "trellis",
            ])
        })
        .collect()
}

#[test]
fn bad_policies_are_refused_with_the_field_named_and_change_nothing() {
    let lab = NetpolLab::up();
    let ports = [Port::tcp(80), Port::udp(81)];
    lab.apply(&policy("deny-x", "{podSelector: {}}"));
    let mut deny_x = lab.reachability(&ports, true);
    deny_x.expect_to("x/*", false).allow_loopback();
    lab.assert_enforced(&deny_x, Duration::from_secs(15));
    let before = tables(&lab);
    let listed = ok(&["ctl", &lab.name, "--", "get", "networkpolicy", "-A"]);
    let good = policy("good", "{podSelector: {}, ingress: [{}]}");
    for (what, bad, field) in [
        (
            "an unknown selector operator",
            "{podSelector: {matchExpressions: [{key: pod, operator: Foo, values: [a]}]}}",
            "spec.podSelector.matchExpressions[0].operator",
        ),
        (
            "In without values",
            "{podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In}]}}]}]}",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
        ),
        (
            "port 0",
            "{podSelector: {}, ingress: [{ports: [{port: 0}]}]}",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "port 70000",
            "{podSelector: {}, ingress: [{ports: [{port: 70000}]}]}",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "a CIDR with a /33",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "an except outside the CIDR",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]}",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            "protocol ICMP",
            "{podSelector: {}, ingress: [{ports: [{protocol: ICMP, port: 80}]}]}",
            "spec.ingress[0].ports[0].protocol",
        ),
    ] {
        // The good document first: an all-or-nothing apply must not write it either.
        let yaml = format!("{good}{}", policy("bad", bad));
        let path = std::env::temp_dir().join(format!("{}-bad.yaml", lab.name));
        std::fs::write(&path, yaml).unwrap();
        let (applied, out) = lab_support::lab(&["ctl", &lab.name, "--", "apply", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(!applied, "{what}: accepted\n{out}");
        assert!(out.contains(field), "{what}: the error does not name {field}:\n{out}");
        assert_eq!(
            ok(&["ctl", &lab.name, "--", "get", "networkpolicy", "-A"]),
            listed,
            "{what}: something was written"
        );
    }
    // Give the agents time to act on anything they might have seen, then compare.
    std::thread::sleep(Duration::from_secs(2));
    assert!(tables(&lab) == before, "{}", "a node's table changed");
    assert_matches_probes(&lab, &deny_x);
}

fn assert_matches_probes(lab: &NetpolLab, expected: &netpol_support::Reachability) {
    netpol_support::assert_matches(expected, &lab.probe(expected.ports()));
}
