//! NetworkPolicy conformance over the lab (issue 5), probing half: namespaces x, y, z with pods
//! a, b, c on three nodes, every ordered pod pair probed with real TCP and UDP connections and
//! compared with a truth table (see `netpol_support`). Needs root, except the harness's own
//! unit tests at the end.

mod lab_support;
mod netpol_support;

use lab_support::ok;
use netpol_support::{assert_matches, check, render, NetpolLab, Port, Reachability};

#[test]
fn without_policies_every_pod_reaches_every_pod_on_every_port() {
    let lab = NetpolLab::up();
    eprint!("{}", lab.serve_report);
    // This kernel has no SCTP sockets: the servers say so per port, and SCTP is left out of the
    // probes by name rather than counted as passing.
    if !lab.sctp {
        eprintln!("SCTP skipped: the pods could not serve it (see above)");
    }
    let mut ports = vec![Port::tcp(80), Port::tcp(81), Port::udp(80), Port::udp(81)];
    if lab.sctp {
        ports.extend([Port::sctp(80), Port::sctp(81)]);
    }
    let expected = lab.reachability(&ports, true);
    assert_matches(&expected, &lab.probe(&ports));

    // The harness can see a failure: nothing listens on 82, so TCP is refused (RST) and UDP is
    // answered with ICMP port unreachable, everywhere...
    let closed = [Port::tcp(82), Port::udp(82)];
    let actual = lab.probe(&closed);
    assert_matches(&lab.reachability(&closed, false), &actual);
    // ...and expecting otherwise fails, with the table.
    let message = check(&lab.reachability(&closed, true), &actual)
        .expect_err("a wrong expectation must fail");
    assert!(
        message.contains("162 of 162 probes not as expected") && message.contains(" refused "),
        "{message}"
    );
}

const CONVERGE: std::time::Duration = std::time::Duration::from_secs(15);

fn policy(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// The first cases of the Kubernetes netpol e2e suite, enforced by the agents (`--policy`) and
/// probed with real connections: default deny, a stacked allow by namespace selector and
/// port, a pod relabel, and deletion.
#[test]
fn policies_are_enforced_with_real_packets() {
    let lab = NetpolLab::up();
    let ports = [Port::tcp(80), Port::udp(81)];
    // Default deny ingress in x.
    lab.apply(&policy("deny-all", "x", "{podSelector: {}}"));
    let mut deny_x = lab.reachability(&ports, true);
    deny_x.expect_to("x/*", false).allow_loopback();
    lab.assert_enforced(&deny_x, CONVERGE);
    // Stacked: x/a also admits namespace y, on TCP 80 only.
    lab.apply(&policy(
        "a-from-y",
        "x",
        "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}",
    ));
    let mut from_y = deny_x.clone();
    from_y.on(Port::tcp(80)).expect("y/*", "x/a", true);
    lab.assert_enforced(&from_y, CONVERGE);
    // A pod relabel: x/b admits pods labelled role=client in any namespace; none is, until
    // z/c gets the label.
    lab.apply(&policy(
        "b-from-clients",
        "x",
        "{podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]}]}",
    ));
    lab.assert_enforced(&from_y, CONVERGE);
    ok(&["ctl", &lab.name, "--", "label", "pod", "z/c", "role=client"]);
    let mut client = from_y.clone();
    client.expect("z/c", "x/b", true);
    lab.assert_enforced(&client, CONVERGE);
    // Deleting the policies one by one undoes each.
    lab.delete_policy("x", "b-from-clients");
    lab.delete_policy("x", "a-from-y");
    lab.assert_enforced(&deny_x, CONVERGE);
    lab.delete_policy("x", "deny-all");
    lab.assert_enforced(&lab.reachability(&ports, true), CONVERGE);
}

fn pods() -> Vec<String> {
    ["x", "y", "z"]
        .iter()
        .flat_map(|ns| ["a", "b", "c"].map(|p| format!("{ns}/{p}")))
        .collect()
}

#[test]
fn builders_set_the_cells_they_name() {
    let ports = [Port::tcp(80), Port::udp(81)];
    let mut r = Reachability::new(&pods(), &ports, true);
    r.expect_to("x/*", false).allow_loopback();
    r.on(Port::udp(81)).expect("y/a", "x/b", true);
    r.expect_from("*/c", false);
    assert!(!r.get("y/a", "x/a", Port::tcp(80)));
    assert!(r.get("x/a", "x/a", Port::udp(81)), "loopback");
    assert!(r.get("y/a", "x/b", Port::udp(81)));
    assert!(!r.get("y/a", "x/b", Port::tcp(80)), "only on udp/81");
    assert!(r.get("y/a", "z/b", Port::tcp(80)));
    assert!(
        !r.get("z/c", "z/c", Port::tcp(80)),
        "expect_from after loopback"
    );
    let mut all = Reachability::new(&pods(), &ports, false);
    all.expect_all(true);
    assert_eq!(all, Reachability::new(&pods(), &ports, true));
}

#[test]
#[should_panic(expected = "selects no pod pair")]
fn a_selector_that_matches_no_pod_is_a_mistake() {
    Reachability::new(&pods(), &[Port::tcp(80)], true).expect_to("w/*", false);
}

#[test]
fn a_mismatch_prints_every_port_s_full_table() {
    let ports = [Port::tcp(80), Port::udp(80)];
    let expected = Reachability::new(&pods(), &ports, true);
    let mut actual = expected.clone();
    actual.on(Port::udp(80)).expect("y/b", "z/c", false);
    let text = render(&expected, &actual);
    eprintln!("{text}");
    assert!(
        text.starts_with("1 of 162 probes not as expected"),
        "{text}"
    );
    assert!(
        text.contains("\ntcp/80\n") && text.contains("\nudp/80\n"),
        "{text}"
    );
    // The y/b row of udp/80: expected all 1, actual 0 under z/c, comparison X there.
    let row = text
        .lines()
        .filter(|l| l.starts_with("y/b"))
        .nth(1)
        .unwrap();
    assert_eq!(
        row,
        "y/b 1   1   1   1   1   1   1   1   1     | y/b 1   1   1   1   1   1   1   1   0     | y/b .   .   .   .   .   .   .   .   X   "
    );
    assert!(
        text.contains("udp/80 y/b -> z/c: expected connected"),
        "{text}"
    );
    assert!(std::panic::catch_unwind(|| assert_matches(&expected, &actual)).is_err());
}
