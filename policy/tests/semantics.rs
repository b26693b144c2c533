//! Kubernetes NetworkPolicy semantics, case by case, as truth tables over the Kubernetes e2e
//! cluster: namespaces x, y, z (label `ns`), pods a, b, c in each (label `pod`), a on node-1,
//! b on node-2, c on node-3. Each table has a row per source and a column per destination, in
//! the order x/a x/b x/c y/a ... z/c; `1` allowed, `0` denied. A pod to itself is always `1`.

mod cluster;

use std::net::IpAddr;

use cluster::*;
use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_policy::{compile_network_policy, trace, Decision, Packet, Proto};

const ALL: &str = "
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111";

#[test]
fn without_policies_everything_is_allowed() {
    assert_table("", probe(Proto::Tcp, 80), ALL);
}

#[test]
fn default_deny_ingress_isolates_only_the_policy_namespace() {
    let p = "
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}}
";
    assert_table(
        p,
        probe(Proto::Tcp, 80),
        "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111",
    );
}

fn policy(name: &str, ns: &str, spec: &str) -> String {
    np(name, ns, spec)
}

#[test]
fn no_rules_isolates_and_one_empty_rule_allows_everything() {
    let isolated = "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111";
    assert_table(
        &policy("p", "x", "{podSelector: {}, ingress: []}"),
        probe(Proto::Tcp, 80),
        isolated,
    );
    assert_table(
        &policy("p", "x", "{podSelector: {}, ingress: [{}]}"),
        probe(Proto::Tcp, 80),
        ALL,
    );
    // A rule with an empty from and empty ports is the same as {}.
    assert_table(
        &policy(
            "p",
            "x",
            "{podSelector: {}, ingress: [{from: [], ports: []}]}",
        ),
        probe(Proto::Tcp, 80),
        ALL,
    );
}

#[test]
fn pod_and_namespace_selector_in_one_peer_and_else_or() {
    // Only y/b reaches x/a.
    assert_table(&policy(
            "and",
            "x",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}",
        ), probe(Proto::Tcp, 80),
        "
111 111 111
011 111 111
011 111 111
011 111 111
111 111 111
011 111 111
011 111 111
011 111 111
011 111 111",
    );
    // All of y, or pod b of x (the policy's own namespace).
    assert_table(&policy(
            "or",
            "x",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]}",
        ), probe(Proto::Tcp, 80),
        "
111 111 111
111 111 111
011 111 111
111 111 111
111 111 111
111 111 111
011 111 111
011 111 111
011 111 111",
    );
}

#[test]
fn match_expressions_in_not_in_exists_does_not_exist() {
    let only_a_b_into_x = "
111 111 111
111 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111";
    assert_table(&policy(
            "in",
            "x",
            "{podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}}]}]}",
        ), probe(Proto::Tcp, 80),
        only_a_b_into_x,
    );
    assert_table(&policy(
            "notin",
            "x",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [y]}]}}]}]}",
        ), probe(Proto::Tcp, 80),
        "
111 111 111
111 111 111
111 111 111
000 111 111
000 111 111
000 111 111
111 111 111
111 111 111
111 111 111",
    );
    assert_table(&policy(
            "exists",
            "x",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}}]}]}",
        ), probe(Proto::Tcp, 80),
        ALL,
    );
    assert_table(&policy(
            "doesnotexist",
            "x",
            "{podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}}]}]}",
        ), probe(Proto::Tcp, 80),
        "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111",
    );
}

#[test]
fn ip_block_with_except() {
    // x/a admits 10.0.0.0/16 except y's 10.0.2.0/24.
    assert_table(&policy(
            "cidr",
            "x",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]}]}",
        ), probe(Proto::Tcp, 80),
        "
111 111 111
111 111 111
111 111 111
011 111 111
011 111 111
011 111 111
111 111 111
111 111 111
111 111 111",
    );
}

#[test]
fn named_ports_resolve_on_each_destination_pod() {
    // "web" is 80 on every pod but x/b, where it is 81.
    let p = policy(
        "web",
        "x",
        "{podSelector: {}, ingress: [{ports: [{port: web}]}]}",
    );
    assert_table(
        &p,
        probe(Proto::Tcp, 80),
        "
101 111 111
111 111 111
101 111 111
101 111 111
101 111 111
101 111 111
101 111 111
101 111 111
101 111 111",
    );
    assert_table(
        &p,
        probe(Proto::Tcp, 81),
        "
110 111 111
010 111 111
011 111 111
010 111 111
010 111 111
010 111 111
010 111 111
010 111 111
010 111 111",
    );
    // The protocol is part of the name: "web" is TCP, so UDP 80 is not it.
    assert_table(
        &p,
        probe(Proto::Udp, 80),
        "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111",
    );
}

const X_OPEN: &str = ALL;
const X_CLOSED: &str = "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111";

#[test]
fn end_port_ranges_and_a_protocol_without_port() {
    let range = policy(
        "range",
        "x",
        "{podSelector: {}, ingress: [{ports: [{protocol: TCP, port: 80, endPort: 81}]}]}",
    );
    assert_table(&range, probe(Proto::Tcp, 80), X_OPEN);
    assert_table(&range, probe(Proto::Tcp, 81), X_OPEN);
    assert_table(&range, probe(Proto::Tcp, 82), X_CLOSED);
    assert_table(&range, probe(Proto::Udp, 80), X_CLOSED);
    let udp = policy(
        "udp",
        "x",
        "{podSelector: {}, ingress: [{ports: [{protocol: UDP}]}]}",
    );
    assert_table(&udp, probe(Proto::Udp, 80), X_OPEN);
    assert_table(&udp, probe(Proto::Udp, 81), X_OPEN);
    assert_table(&udp, probe(Proto::Tcp, 80), X_CLOSED);
    // No protocol: TCP.
    let default_tcp = policy(
        "tcp",
        "x",
        "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}",
    );
    assert_table(&default_tcp, probe(Proto::Tcp, 80), X_OPEN);
    assert_table(&default_tcp, probe(Proto::Udp, 80), X_CLOSED);
    // SCTP compiles and is told apart from TCP.
    let sctp = policy(
        "sctp",
        "x",
        "{podSelector: {}, ingress: [{ports: [{protocol: SCTP, port: 80}]}]}",
    );
    assert_table(&sctp, probe(Proto::Sctp, 80), X_OPEN);
    assert_table(&sctp, probe(Proto::Tcp, 80), X_CLOSED);
}

#[test]
fn egress_is_independent_of_ingress() {
    // x/a may send only to namespace y.
    assert_table(&policy(
            "egress",
            "x",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
        ), probe(Proto::Tcp, 80),
        "
100 111 000
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111",
    );
    // Egress isolation without rules: x's pods send nowhere; ingress into x is untouched.
    assert_table(
        &policy(
            "deny-egress",
            "x",
            "{podSelector: {}, policyTypes: [Egress]}",
        ),
        probe(Proto::Tcp, 80),
        "
100 000 000
010 000 000
001 000 000
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111",
    );
    // policyTypes absent: Ingress always, Egress because there is an egress rule.
    assert_table(
        &policy("both", "x", "{podSelector: {}, egress: [{}]}"),
        probe(Proto::Tcp, 80),
        X_CLOSED,
    );
}

#[test]
fn stacked_policies_are_a_union() {
    let p = policy(
        "from-y",
        "x",
        "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
    ) + &policy(
        "from-z",
        "x",
        "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}",
    );
    assert_table(
        &p,
        probe(Proto::Tcp, 80),
        "
111 111 111
011 111 111
011 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111",
    );
}

#[test]
fn the_node_reaches_its_own_pods_whatever_the_policy() {
    let model = cluster();
    let compiled = compile(&policy("deny", "x", "{podSelector: {}}"), &model);
    let from_node1 = |dst: IpAddr| Packet {
        src: "192.168.0.1".parse().unwrap(),
        dst,
        proto: Proto::Tcp,
        port: 8080,
    };
    let to_own = trace(&compiled, &model, &from_node1(ip_of(0, 0, false)));
    assert!(to_own.allowed());
    assert_eq!(
        to_own.ingress,
        Some(Decision::FromOwnNode {
            node: "node-1".into()
        })
    );
    // x/b runs on node-2: node-1 is just another source there.
    let to_other = trace(&compiled, &model, &from_node1(ip_of(0, 1, false)));
    assert!(!to_other.allowed());
    assert_eq!(
        to_other.ingress.unwrap().to_string(),
        "isolated by NetworkPolicy x/deny and no rule matched: denied"
    );
}

#[test]
fn a_trace_names_the_deciding_rule() {
    let model = cluster();
    let compiled = compile(
        &policy(
            "web",
            "x",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}, {ports: [{port: web}]}]}",
        ),
        &model,
    );
    let t = trace(
        &compiled,
        &model,
        &Packet {
            src: ip_of(1, 0, false),
            dst: ip_of(0, 0, false),
            proto: Proto::Tcp,
            port: 80,
        },
    );
    assert!(t.allowed());
    assert_eq!(t.egress, Some(Decision::NotIsolated));
    assert_eq!(
        t.ingress.unwrap().to_string(),
        "NetworkPolicy x/web ingress rule 1: Allow"
    );
}

#[test]
fn a_bad_cidr_is_refused_naming_the_field() {
    let model = cluster();
    let docs = parse_documents(
        &policy(
            "bad",
            "x",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}",
        ),
        "bad.yaml",
    )
    .unwrap();
    let AnyResource::NetworkPolicy(np) = &docs[0] else {
        panic!()
    };
    let e = compile_network_policy(np, &model).unwrap_err();
    assert_eq!(e.field, "spec.ingress[0].from[0].ipBlock.cidr", "{e}");
    assert!(e.to_string().starts_with("NetworkPolicy x/bad: "), "{e}");
}
