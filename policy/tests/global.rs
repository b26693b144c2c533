//! GlobalNetworkPolicy semantics (Calico's), alone and with NetworkPolicies, as truth tables over
//! the cluster of `semantics.rs`: namespaces x, y, z (label `ns`), pods a, b, c in each (label
//! `pod`), each with an IPv4 address 10.0.N.P and an IPv6 one fd00::N:P. Rows are sources,
//! columns destinations, in the order x/a x/b x/c y/a ... z/c; `1` allowed, `0` denied.

mod cluster;

use cluster::*;
use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_policy::{
    compile_global_policy, trace, Action, Decision, Packet, PacketDetail, PolicyId, Proto,
};

/// Policies applying to namespace x only.
const ON_X: &str = "namespaceSelector: ns == 'x'";

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

/// Into x: only each pod to itself.
const X_ISOLATED: &str = "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111
000 111 111";

/// Into x: everything but from y.
const X_BUT_FROM_Y: &str = "
111 111 111
111 111 111
111 111 111
000 111 111
000 111 111
000 111 111
111 111 111
111 111 111
111 111 111";

#[test]
fn a_deny_of_order_100_overrides_a_network_policy_allow() {
    let allow_all_into_x = np("allow-all", "x", "{podSelector: {}, ingress: [{}]}");
    assert_table(&allow_all_into_x, TCP_80, ALL);
    let deny_from_y = gnp(
        "deny-from-y",
        &format!(
            "{{order: 100, {ON_X}, ingress: [{{action: Deny, source: {{namespaceSelector: ns == 'y'}}}}]}}"
        ),
    );
    assert_table(&(allow_all_into_x + &deny_from_y), TCP_80, X_BUT_FROM_Y);
    // Without an order it comes after the NetworkPolicy (order 1000), whose allow wins.
    let unordered = gnp(
        "deny-from-y",
        &format!(
            "{{{ON_X}, ingress: [{{action: Deny, source: {{namespaceSelector: ns == 'y'}}}}]}}"
        ),
    );
    assert_table(
        &(np("allow-all", "x", "{podSelector: {}, ingress: [{}]}") + &unordered),
        TCP_80,
        ALL,
    );
}

#[test]
fn an_allow_of_order_100_opens_what_a_network_policy_default_deny_closes() {
    let deny_all = np("deny-all", "x", "{podSelector: {}}");
    assert_table(&deny_all, TCP_80, X_ISOLATED);
    let from_c = gnp(
        "from-c",
        &format!(
            "{{order: 100, {ON_X}, ingress: [{{action: Allow, source: {{selector: pod == 'c'}}}}]}}"
        ),
    );
    // The source selector spans every namespace.
    assert_table(
        &(deny_all + &from_c),
        TCP_80,
        "
100 111 111
010 111 111
111 111 111
000 111 111
000 111 111
111 111 111
000 111 111
000 111 111
111 111 111",
    );
}

#[test]
fn pass_hands_over_to_the_namespace_default_even_though_a_later_policy_denies() {
    let policies = np("deny-all", "x", "{podSelector: {}}")
        + &gnp(
            "pass-y",
            &format!(
                "{{order: 100, {ON_X}, ingress: [{{action: Pass, source: {{namespaceSelector: ns == 'y'}}}}]}}"
            ),
        );
    assert_table(
        &policies,
        TCP_80,
        "
100 111 111
010 111 111
001 111 111
111 111 111
111 111 111
111 111 111
000 111 111
000 111 111
000 111 111",
    );
    let model = cluster();
    let t = trace(
        &compile(&policies, &model),
        &model,
        &Packet {
            src: ip_of(1, 0, false),
            dst: ip_of(0, 0, false),
            proto: Proto::Tcp,
            port: 80,
        },
    );
    assert_eq!(
        t.ingress,
        Some(Decision::Rule {
            policy: PolicyId::Global {
                name: "pass-y".into()
            },
            direction: trellis_policy::Direction::Ingress,
            index: 0,
            action: Action::Pass,
        })
    );
}

#[test]
fn log_goes_on_to_the_next_rule() {
    let policies = gnp(
        "log-then-allow",
        &format!(
            "{{order: 10, {ON_X}, ingress: [{{action: Log}}, {{action: Allow, source: {{selector: pod == 'a'}}}}]}}"
        ),
    );
    assert_table(
        &policies,
        TCP_80,
        "
111 111 111
010 111 111
001 111 111
111 111 111
000 111 111
000 111 111
111 111 111
000 111 111
000 111 111",
    );
    let model = cluster();
    let t = trace(
        &compile(&policies, &model),
        &model,
        &Packet {
            src: ip_of(2, 0, false),
            dst: ip_of(0, 1, false),
            proto: Proto::Tcp,
            port: 80,
        },
    );
    assert!(
        matches!(
            t.ingress,
            Some(Decision::Rule {
                index: 1,
                action: Action::Allow,
                ..
            })
        ),
        "{t:?}"
    );
}

#[test]
fn not_nets_matches_addresses_outside_every_net() {
    let policies = gnp(
        "not-y",
        &format!("{{{ON_X}, ingress: [{{action: Allow, source: {{notNets: [10.0.2.0/24]}}}}]}}"),
    );
    assert_table(&policies, TCP_80, X_BUT_FROM_Y);
    // notNets of the other family do not restrict IPv6 at all.
    assert_table(&policies, Probe { v6: true, ..TCP_80 }, ALL);
    let nets = gnp(
        "only-y",
        &format!(
            "{{{ON_X}, ingress: [{{action: Allow, source: {{nets: [10.0.2.0/24, 10.0.3.1]}}}}]}}"
        ),
    );
    assert_table(
        &nets,
        TCP_80,
        "
100 111 111
010 111 111
001 111 111
111 111 111
111 111 111
111 111 111
111 111 111
000 111 111
000 111 111",
    );
}

#[test]
fn not_ports_and_not_protocol() {
    let not_80 = gnp(
        "tcp-not-80",
        &format!(
            "{{{ON_X}, ingress: [{{action: Allow, protocol: TCP, destination: {{notPorts: [80, '1000:2000']}}}}]}}"
        ),
    );
    assert_table(&not_80, TCP_80, X_ISOLATED);
    assert_table(&not_80, probe(Proto::Tcp, 1500), X_ISOLATED);
    assert_table(&not_80, probe(Proto::Tcp, 81), ALL);
    assert_table(&not_80, probe(Proto::Udp, 81), X_ISOLATED);
    let not_udp = gnp(
        "not-udp",
        &format!("{{{ON_X}, ingress: [{{action: Allow, notProtocol: UDP}}]}}"),
    );
    assert_table(&not_udp, TCP_80, ALL);
    assert_table(&not_udp, probe(Proto::Udp, 81), X_ISOLATED);
    // By number, the same.
    let not_17 = gnp(
        "not-17",
        &format!("{{{ON_X}, ingress: [{{action: Allow, notProtocol: 17}}]}}"),
    );
    assert_table(&not_17, probe(Proto::Udp, 81), X_ISOLATED);
    assert_table(&not_17, probe(Proto::Number(47), 0), ALL);
}

#[test]
fn ip_version_4_leaves_ipv6_to_the_default_deny() {
    let v4 = gnp(
        "v4-only",
        &format!("{{{ON_X}, ingress: [{{action: Allow, ipVersion: 4}}]}}"),
    );
    assert_table(&v4, TCP_80, ALL);
    assert_table(&v4, Probe { v6: true, ..TCP_80 }, X_ISOLATED);
}

#[test]
fn namespace_selectors_on_the_policy_and_on_an_entity() {
    // Applies to pods b of x and y; admits only pods b of z.
    let policies = gnp(
        "b-from-zb",
        "{selector: pod == 'b', namespaceSelector: \"ns in {'x', 'y'}\", ingress: [{action: Allow, source: {selector: pod == 'b', namespaceSelector: ns == 'z'}}]}",
    );
    assert_table(
        &policies,
        TCP_80,
        "
101 101 111
111 101 111
101 101 111
101 101 111
101 111 111
101 101 111
101 101 111
111 111 111
101 101 111",
    );
    // A namespaceSelector alone: every pod of those namespaces.
    let from_z = gnp(
        "from-z",
        &format!(
            "{{{ON_X}, ingress: [{{action: Allow, source: {{namespaceSelector: ns == 'z'}}}}]}}"
        ),
    );
    assert_table(
        &from_z,
        TCP_80,
        "
100 111 111
010 111 111
001 111 111
000 111 111
000 111 111
000 111 111
111 111 111
111 111 111
111 111 111",
    );
    // Calico's namespace label works in pod selectors; notSelector excludes cluster-wide.
    let not_own = gnp(
        "not-x",
        &format!(
            "{{{ON_X}, ingress: [{{action: Allow, source: {{notSelector: projectcalico.org/namespace == 'y'}}}}]}}"
        ),
    );
    assert_table(&not_own, TCP_80, X_BUT_FROM_Y);
}

#[test]
fn source_ports_match_the_sending_end() {
    let policies = gnp(
        "from-dns",
        &format!(
            "{{{ON_X}, ingress: [{{action: Allow, protocol: UDP, source: {{ports: [53]}}}}]}}"
        ),
    );
    let dns = |sport| Probe {
        detail: PacketDetail { sport, icmp: None },
        ..probe(Proto::Udp, 40000)
    };
    assert_table(&policies, dns(Some(53)), ALL);
    assert_table(&policies, dns(Some(54)), X_ISOLATED);
    // Unknown: a port no rule names.
    assert_table(&policies, dns(None), X_ISOLATED);
}

#[test]
fn icmp_type_and_code() {
    let policies = gnp(
        "ping",
        &format!(
            "{{{ON_X}, ingress: [{{action: Allow, protocol: ICMP, icmp: {{type: 8, code: 0}}}}, {{action: Allow, protocol: ICMP, notICMP: {{type: 3}}}}]}}"
        ),
    );
    let icmp = |t, c| Probe {
        detail: PacketDetail {
            sport: None,
            icmp: Some((t, c)),
        },
        ..probe(Proto::Icmp, 0)
    };
    assert_table(&policies, icmp(8, 0), ALL);
    assert_table(&policies, icmp(0, 0), ALL);
    assert_table(&policies, icmp(3, 1), X_ISOLATED);
}

#[test]
fn egress_deny_to_nets_before_an_allow() {
    let policies = gnp(
        "no-z",
        &format!(
            "{{order: 1, {ON_X}, types: [Egress], egress: [{{action: Deny, destination: {{nets: [10.0.3.0/24]}}}}, {{action: Allow}}]}}"
        ),
    );
    assert_table(
        &policies,
        TCP_80,
        "
111 111 000
111 111 000
111 111 000
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111
111 111 111",
    );
}

#[test]
fn a_bad_selector_names_its_field() {
    let yaml = gnp(
        "bad",
        "{ingress: [{action: Allow, source: {selector: \"pod == \"}}]}",
    );
    let AnyResource::GlobalNetworkPolicy(p) = parse_documents(&yaml, "t.yaml").unwrap().remove(0)
    else {
        panic!()
    };
    let err = compile_global_policy(&p, &cluster()).unwrap_err();
    assert_eq!(err.field, "spec.ingress[0].source.selector", "{err}");
}
