//! Bad NetworkPolicy input (issue 5): a policy with an invalid selector, port, CIDR or protocol
//! is refused by `trellisctl apply` with the field named. Every bad policy comes as the second
//! document of a file whose first document is good (a new policy, an update of the stored one,
//! or a Namespace relabel): apply is all or nothing, so neither is written, every node's `table
//! inet trellis` stays byte-identical, and the probes give the same table as before. Needs root.

mod lab_support;
mod netpol_support;

use std::time::Duration;

use lab_support::ok;
use netpol_support::{assert_matches, NetpolLab, Port};

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: x}}\nspec: {spec}\n"
    )
}

/// Good first documents, each of which would change what the cluster holds.
fn good_documents() -> [String; 3] {
    [
        // A new policy admitting everything into x: the probes would change.
        policy("good", "{podSelector: {}, ingress: [{}]}"),
        // The stored policy made default-deny egress instead of ingress: x would reach nothing.
        policy("deny-x", "{podSelector: {}, policyTypes: [Egress]}"),
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {ns: y, team: blue}}\n"
            .to_string(),
    ]
}

/// `(what, spec of the bad policy, the field the error must name)`.
const BAD: &[(&str, &str, &str)] = &[
    // Selectors.
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
        "Exists with values",
        "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists, values: [x]}]}}]}]}",
        "spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values",
    ),
    (
        "a label value with a space",
        "{podSelector: {matchLabels: {pod: 'a b'}}}",
        "spec.podSelector.matchLabels[pod]",
    ),
    (
        "a label key starting with a dash",
        "{podSelector: {matchExpressions: [{key: -pod, operator: Exists}]}}",
        "spec.podSelector.matchExpressions[0].key",
    ),
    // Ports.
    (
        "port 0",
        "{podSelector: {}, ingress: [{ports: [{port: 0}]}]}",
        "spec.ingress[0].ports[0].port",
    ),
    (
        "port 70000",
        "{podSelector: {}, ingress: [{ports: [{port: 80}, {port: 70000}]}]}",
        "spec.ingress[0].ports[1].port",
    ),
    (
        "a port name with an underscore",
        "{podSelector: {}, ingress: [{ports: [{port: serve_80}]}]}",
        "spec.ingress[0].ports[0].port",
    ),
    (
        "a port name of 16 characters",
        "{podSelector: {}, ingress: [{ports: [{port: serve-80-tcp-abc}]}]}",
        "spec.ingress[0].ports[0].port",
    ),
    (
        "a port number written as a string",
        "{podSelector: {}, ingress: [{ports: [{port: '80'}]}]}",
        "spec.ingress[0].ports[0].port",
    ),
    (
        "endPort below port",
        "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: 81, endPort: 80}]}]}",
        "spec.egress[0].ports[0].endPort",
    ),
    (
        "endPort with a named port",
        "{podSelector: {}, ingress: [{}, {ports: [{port: serve-80-tcp, endPort: 90}]}]}",
        "spec.ingress[1].ports[0].endPort",
    ),
    // CIDRs.
    (
        "a CIDR with a /33",
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}",
        "spec.ingress[0].from[0].ipBlock.cidr",
    ),
    (
        "a CIDR that is not one",
        "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}, {ipBlock: {cidr: not-a-cidr}}]}]}",
        "spec.egress[0].to[1].ipBlock.cidr",
    ),
    (
        "a CIDR with a leading zero",
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 010.244.0.0/16}}]}]}",
        "spec.ingress[0].from[0].ipBlock.cidr",
    ),
    (
        "an except outside the CIDR",
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]}",
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    (
        "an except as large as the CIDR",
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24, 10.244.0.0/16]}}]}]}",
        "spec.ingress[0].from[0].ipBlock.except[1]",
    ),
    // Protocols.
    (
        "protocol ICMP",
        "{podSelector: {}, ingress: [{ports: [{protocol: ICMP, port: 80}]}]}",
        "spec.ingress[0].ports[0].protocol",
    ),
    (
        "protocol in lower case",
        "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{protocol: tcp}]}]}",
        "spec.egress[0].ports[0].protocol",
    ),
];

/// `nft list table inet trellis` of every node, in node order.
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

/// Every NetworkPolicy and Namespace as stored, resource versions included: any write shows.
fn stored(lab: &NetpolLab) -> String {
    let get = |kind: &str| ok(&["ctl", &lab.name, "--", "get", kind, "-A", "-o", "json"]);
    get("networkpolicy") + &get("namespace")
}

/// The first line where the tables of one node differ, for the failure message.
fn first_difference(before: &[String], after: &[String]) -> String {
    for (node, (b, a)) in before.iter().zip(after).enumerate() {
        if b != a {
            let line = b
                .lines()
                .zip(a.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(b.lines().count().min(a.lines().count()));
            return format!(
                "node-{}: line {}: before {:?}, after {:?}",
                node + 1,
                line + 1,
                b.lines().nth(line),
                a.lines().nth(line)
            );
        }
    }
    "no difference".to_string()
}

#[test]
fn bad_policies_are_refused_with_the_field_named_and_change_nothing() {
    let lab = NetpolLab::up();
    let ports = [Port::tcp(80), Port::udp(81)];
    lab.apply(&policy("deny-x", "{podSelector: {}}"));
    let mut deny_x = lab.reachability(&ports, true);
    deny_x.expect_to("x/*", false).allow_loopback();
    lab.assert_enforced(&deny_x, Duration::from_secs(15));
    let tables_before = tables(&lab);
    assert!(
        tables_before
            .iter()
            .all(|t| t.contains("table inet trellis")),
        "{tables_before:?}"
    );
    let stored_before = stored(&lab);
    let good = good_documents();
    let path = std::env::temp_dir().join(format!("{}-bad.yaml", lab.name));
    for (i, (what, bad, field)) in BAD.iter().enumerate() {
        let yaml = format!("{}{}", good[i % good.len()], policy("bad", bad));
        std::fs::write(&path, &yaml).unwrap();
        let (applied, out) = lab_support::lab(&[
            "ctl",
            &lab.name,
            "--",
            "apply",
            "-f",
            path.to_str().unwrap(),
        ]);
        assert!(!applied, "{what}: accepted\n{yaml}{out}");
        eprintln!("{what}: {}", out.trim());
        assert!(
            out.contains(field),
            "{what}: the error does not name {field}:\n{out}"
        );
        assert!(
            // `NetworkPolicy bad` from the parser, `NetworkPolicy x/bad` from validation.
            out.contains("document 2 (NetworkPolicy ") && out.contains("bad): spec."),
            "{what}: the error does not name the document:\n{out}"
        );
        assert_eq!(
            stored(&lab),
            stored_before,
            "{what}: something was written by\n{yaml}"
        );
        let after = tables(&lab);
        assert!(
            after == tables_before,
            "{what}: a node's table changed: {}",
            first_difference(&tables_before, &after)
        );
    }
    let _ = std::fs::remove_file(&path);
    // Give the agents time to act on anything they might have seen, then compare again.
    std::thread::sleep(Duration::from_secs(2));
    let after = tables(&lab);
    assert!(
        after == tables_before,
        "a node's table changed: {}",
        first_difference(&tables_before, &after)
    );
    assert_matches(&deny_x, &lab.probe(&ports));

    // The good documents alone are accepted and do change the dataplane: the checks above
    // could have seen a write.
    std::fs::write(&path, good.concat()).unwrap();
    ok(&[
        "ctl",
        &lab.name,
        "--",
        "apply",
        "-f",
        path.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_ne!(stored(&lab), stored_before);
    let mut x_egress_denied = lab.reachability(&ports, true);
    x_egress_denied.expect_from("x/*", false).allow_loopback();
    lab.assert_enforced(&x_egress_denied, Duration::from_secs(15));
    assert!(tables(&lab) != tables_before, "the tables did not change");
}
