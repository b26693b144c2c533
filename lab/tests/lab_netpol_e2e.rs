//! Kubernetes' NetworkPolicy e2e suite (`test/e2e/network/netpol/network_policy.go`, the
//! `ginkgo.It` cases of "NetworkPolicy between server and client" and its UDP variant) as truth
//! tables over the lab's 9 pods (namespaces x, y, z; pods a, b, c on three nodes), each probed
//! with real connections and computed by `trellisctl policy trace`, which must agree
//! (`NetpolLab::assert_enforced`). Each case applies its policies the way the suite creates
//! them (explicit `policyTypes`, as its `SetSpecIngressRules`/`SetSpecEgressRules` set), checks
//! the ports the suite probes, then deletes them and checks every pod reaches every pod again
//! before the next case. One lab per test function: a lab is expensive.
//!
//! Differences from the suite, none of which changes a verdict:
//! - The suite ignores loopback (a pod to itself); here it is always connected (`allow_loopback`),
//!   because such connections never leave the pod's `lo`.
//! - The suite's `namespaceLabelKey` is `kubernetes.io/metadata.name`, which every Namespace has
//!   here too (set by the datastore), so "...using default ns label" with matchLabels is the
//!   same policy as "allow traffic only from a different namespace, based on NamespaceSelector"
//!   and is run once, under both names.
//! - The suite has no endPort case of its own (only API validation in network_policy_api.go);
//!   the issue asks for endPort, so two cases below ("endPort: ...") are ours, marked as such,
//!   as is one on named ports resolved per destination pod ("named port: ...").
//!
//! Skipped, with the reason:
//! - The three SCTP cases ("NetworkPolicy between server and client using SCTP": default-deny-
//!   ingress, Ports, PodSelector and NamespaceSelector): they probe SCTP, and this kernel has no
//!   SCTP sockets (`Protocol not supported`, see ENVIRONMENT.md); the pods report it when serving.
//!   The two cases that only *write* SCTP into a policy and probe TCP are run (they are the
//!   security-relevant ones: SCTP must not be read as TCP).
//! - network_legacy.go (the older suite) and the Service/host-network variants: they need
//!   Services (kube-proxy) or host-network pods, which the lab does not have.
//! - network_policy_api.go: API-server CRUD and validation, not connectivity (bad input is
//!   covered by `trellisctl apply`'s own tests).
//!
//! Needs root.

mod lab_support;
mod netpol_support;

use std::time::{Duration, Instant};

use lab_support::ok;
use netpol_support::{NetpolLab, Port, Reachability};

const CONVERGE: Duration = Duration::from_secs(15);
const TCP80: Port = Port {
    proto: netpol_support::Proto::Tcp,
    port: 80,
};
const TCP81: Port = Port {
    proto: netpol_support::Proto::Tcp,
    port: 81,
};
const UDP80: Port = Port {
    proto: netpol_support::Proto::Udp,
    port: 80,
};
const UDP81: Port = Port {
    proto: netpol_support::Proto::Udp,
    port: 81,
};

/// A NetworkPolicy document, Kubernetes form.
fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// Every pod reaches every pod on `ports`, changed by `f`; then loopback connected.
fn table(lab: &NetpolLab, ports: &[Port], f: impl FnOnce(&mut Reachability)) -> Reachability {
    let mut r = lab.reachability(ports, true);
    f(&mut r);
    r.allow_loopback();
    r
}

/// A policy of a case: (namespace, name, spec).
type Policy<'a> = (&'a str, &'a str, &'a str);

/// Times and names a case in the test's output.
struct Case {
    title: String,
    start: Instant,
}

impl Case {
    fn start(title: &str) -> Case {
        eprintln!("== {title}");
        Case {
            title: title.to_string(),
            start: Instant::now(),
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            eprintln!("   ok in {:.1?}: {}", self.start.elapsed(), self.title);
        }
    }
}

fn apply(lab: &NetpolLab, policies: &[Policy]) {
    for (ns, name, spec) in policies {
        lab.apply(&np(ns, name, spec));
    }
}

/// Deletes `policies` and waits until every pod reaches every pod on `ports` again.
fn delete_all(lab: &NetpolLab, policies: &[Policy], ports: &[Port]) {
    for (ns, name, _) in policies.iter().rev() {
        lab.delete_policy(ns, name);
    }
    lab.assert_converges(&lab.reachability(ports, true), CONVERGE);
}

/// The common shape: create `policies`, validate `expected`, clean up.
fn case(lab: &NetpolLab, title: &str, policies: &[Policy], expected: &Reachability) {
    let _case = Case::start(title);
    apply(lab, policies);
    lab.assert_enforced(expected, CONVERGE);
    delete_all(lab, policies, expected.ports());
}

fn label_pod(lab: &NetpolLab, pod: &str, change: &str) {
    ok(&["ctl", &lab.name, "--", "label", "pod", pod, change]);
}

/// Namespace `ns` with labels `ns: NAME` plus `extra` (`k: v, ...`), replacing its labels.
fn label_namespace(lab: &NetpolLab, ns: &str, extra: &str) {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    lab.apply(&format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}{extra}}}}}\n"
    ));
}

fn ip(lab: &NetpolLab, id: &str) -> String {
    lab.pods
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("no pod {id}"))
        .ip
        .clone()
}

const NS_Y: &str = "{matchLabels: {kubernetes.io/metadata.name: y}}";
const NS_NOT_X: &str =
    "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}";

/// Ingress: default deny, pod and namespace selectors and their combinations, matchExpressions,
/// ports, named ports, stacked policies, protocols (TCP, UDP, SCTP in a policy), endPort.
#[test]
fn e2e_ingress_selectors_ports_and_protocols() {
    let lab = NetpolLab::up();
    let t = Instant::now();
    let p80 = [TCP80];

    case(
        &lab,
        "should support a 'default-deny-ingress' policy",
        &[(
            "x",
            "deny-ingress",
            "{podSelector: {}, policyTypes: [Ingress]}",
        )],
        &table(&lab, &p80, |r| {
            r.expect_to("x/*", false);
        }),
    );
    case(
        &lab,
        "should support a 'default-deny-all' policy",
        &[(
            "x",
            "deny-all",
            "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        )],
        &table(&lab, &p80, |r| {
            r.expect_to("x/*", false).expect_from("x/*", false);
        }),
    );
    let a_from_b = table(&lab, &p80, |r| {
        r.expect_to("x/a", false).expect("x/b", "x/a", true);
    });
    case(
        &lab,
        "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
        &[("x", "x-a-allows-x-b",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}], policyTypes: [Ingress]}")],
        &a_from_b,
    );
    case(
        &lab,
        "should enforce policy to allow ingress traffic for a target",
        &[
            ("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}"),
            ("x", "allow-all-to-a",
             "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}], policyTypes: [Ingress]}"),
        ],
        &table(&lab, &p80, |r| {
            r.expect_to("x/b", false).expect_to("x/c", false);
        }),
    );
    case(
        &lab,
        "should enforce policy to allow ingress traffic from pods in all namespaces",
        &[("x", "allow-from-another-ns",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {}}}]}], policyTypes: [Ingress]}")],
        &table(&lab, &p80, |_| {}),
    );
    let a_from_y = table(&lab, &p80, |r| {
        r.expect("x/*", "x/a", false).expect("z/*", "x/a", false);
    });
    case(
        &lab,
        "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector \
         (= should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label)",
        &[("x", "allow-client-a-via-ns-selector",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}}}]}}], policyTypes: [Ingress]}}"))],
        &a_from_y,
    );
    case(
        &lab,
        "should enforce policy based on PodSelector with MatchExpressions",
        &[("x", "x-a-allows-x-b",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}], policyTypes: [Ingress]}")],
        &a_from_b,
    );
    case(
        &lab,
        "should enforce policy based on NamespaceSelector with MatchExpressions",
        &[("x", "allow-ns-y-match-selector",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [y]}]}}]}], policyTypes: [Ingress]}")],
        &a_from_y,
    );
    case(
        &lab,
        "should enforce policy based on PodSelector or NamespaceSelector",
        &[("x", "allow-ns-y-match-selector",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_NOT_X}}}, {{podSelector: {{matchLabels: {{pod: b}}}}}}]}}], policyTypes: [Ingress]}}"))],
        &table(&lab, &p80, |r| {
            r.expect("x/a", "x/a", false).expect("x/c", "x/a", false);
        }),
    );
    case(
        &lab,
        "should enforce policy based on PodSelector and NamespaceSelector",
        &[("x", "allow-ns-y-podselector-and-nsselector",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_NOT_X}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}], policyTypes: [Ingress]}}"))],
        &table(&lab, &p80, |r| {
            r.expect_to("x/a", false)
                .expect("y/b", "x/a", true)
                .expect("z/b", "x/a", true);
        }),
    );
    case(
        &lab,
        "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
        &[("x", "allow-ns-y-z-pod-b-c",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_NOT_X}, podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]}}], policyTypes: [Ingress]}}"))],
        &table(&lab, &p80, |r| {
            r.expect("x/*", "x/a", false)
                .expect("y/a", "x/a", false)
                .expect("z/a", "x/a", false);
        }),
    );
    case(
        &lab,
        "should enforce policy based on any PodSelectors",
        &[("x", "allow-ns-x-pod-b-c",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}], policyTypes: [Ingress]}")],
        &table(&lab, &p80, |r| {
            r.expect_to("x/a", false)
                .expect("x/b", "x/a", true)
                .expect("x/c", "x/a", true);
        }),
    );
    let ya_to_xa = |ports: &[Port]| {
        table(&lab, ports, |r| {
            r.expect_to("x/a", false).expect("y/a", "x/a", true);
        })
    };
    case(
        &lab,
        "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        &[("x", "allow-ns-y-pod-a-via-namespace-pod-selector",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}], policyTypes: [Ingress]}}"))],
        &ya_to_xa(&p80),
    );
    let y_on = |port: u16| {
        format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}}}], ports: [{{port: {port}, protocol: TCP}}]}}], policyTypes: [Ingress]}}")
    };
    case(
        &lab,
        "should enforce policy based on Ports",
        &[("x", "allow-client-a-via-ns-selector", &y_on(81))],
        &table(&lab, &[TCP81], |r| {
            r.expect("x/*", "x/a", false).expect("z/*", "x/a", false);
        }),
    );
    {
        let _case =
            Case::start("should enforce multiple, stacked policies with overlapping podSelectors");
        let ports = [TCP80, TCP81];
        let p81 = y_on(81);
        let p80 = y_on(80);
        apply(&lab, &[("x", "allow-client-a-via-ns-selector", &p81)]);
        let mut allow = table(&lab, &ports, |r| {
            r.on(TCP81)
                .expect("x/*", "x/a", false)
                .expect("z/*", "x/a", false);
            r.on(TCP80).expect_to("x/a", false);
        });
        lab.assert_enforced(&allow, CONVERGE);
        apply(&lab, &[("x", "allow-client-a-via-ns-selector-80", &p80)]);
        allow.on(TCP80).expect("y/*", "x/a", true);
        lab.assert_enforced(&allow, CONVERGE);
        delete_all(
            &lab,
            &[
                ("x", "allow-client-a-via-ns-selector", &p81),
                ("x", "allow-client-a-via-ns-selector-80", &p80),
            ],
            &ports,
        );
    }
    case(
        &lab,
        "should support allow-all policy",
        &[(
            "x",
            "allow-all",
            "{podSelector: {}, ingress: [{}], policyTypes: [Ingress]}",
        )],
        &table(&lab, &[TCP80, TCP81], |_| {}),
    );
    case(
        &lab,
        "should allow ingress access on one named port",
        &[(
            "x",
            "allow-all",
            "{podSelector: {}, ingress: [{ports: [{port: serve-81-tcp}]}], policyTypes: [Ingress]}",
        )],
        &table(&lab, &[TCP80, TCP81], |r| {
            r.on(TCP80).expect_to("x/*", false);
        }),
    );
    {
        // Ours: a named port resolves per destination pod. x/b swaps the numbers behind
        // serve-80-tcp and serve-81-tcp, so the suite's policy above admits TCP 80 to x/b
        // and TCP 81 to x/a and x/c; restoring x/b's ports restores the suite's table.
        let _case =
            Case::start("named port: resolved per destination pod, and a pod's ports updated");
        let policy = (
            "x",
            "allow-all",
            "{podSelector: {}, ingress: [{ports: [{port: serve-81-tcp}]}], policyTypes: [Ingress]}",
        );
        let ports = [TCP80, TCP81];
        let set_ports = |items: &[String]| {
            let mut args = vec!["ctl", &lab.name, "--", "ports", "pod", "x/b"];
            args.extend(items.iter().map(String::as_str));
            ok(&args);
        };
        let swapped: Vec<String> = netpol_support::named_ports()
            .into_iter()
            .map(|p| match p.as_str() {
                "serve-80-tcp=80/TCP" => "serve-80-tcp=81/TCP".to_string(),
                "serve-81-tcp=81/TCP" => "serve-81-tcp=80/TCP".to_string(),
                _ => p,
            })
            .collect();
        assert_ne!(
            swapped,
            netpol_support::named_ports(),
            "no TCP port names to swap"
        );
        set_ports(&swapped);
        apply(&lab, &[policy]);
        lab.assert_enforced(
            &table(&lab, &ports, |r| {
                r.on(TCP80).expect_to("x/a", false).expect_to("x/c", false);
                r.on(TCP81).expect_to("x/b", false);
            }),
            CONVERGE,
        );
        set_ports(&netpol_support::named_ports());
        lab.assert_enforced(
            &table(&lab, &ports, |r| {
                r.on(TCP80).expect_to("x/*", false);
            }),
            CONVERGE,
        );
        delete_all(&lab, &[policy], &ports);
    }
    case(
        &lab,
        "should allow ingress access from namespace on one named port",
        &[("x", "allow-client-a-via-ns-selector-80",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}}}], ports: [{{port: serve-80-tcp, protocol: TCP}}]}}], policyTypes: [Ingress]}}"))],
        &table(&lab, &[TCP80, TCP81], |r| {
            r.on(TCP80)
                .expect("x/*", "x/a", false)
                .expect("z/*", "x/a", false);
            r.on(TCP81).expect_to("x/a", false);
        }),
    );
    case(
        &lab,
        "should deny ingress from pods on other namespaces",
        &[(
            "x",
            "deny-empty-policy",
            "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {}}}]}], policyTypes: [Ingress]}",
        )],
        &table(&lab, &p80, |r| {
            r.expect("y/*", "x/*", false).expect("z/*", "x/*", false);
        }),
    );
    case(
        &lab,
        "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
        &[(
            "x",
            "allow-ingress-by-proto",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: TCP}]}], policyTypes: [Ingress]}",
        )],
        &table(&lab, &[TCP80, UDP80], |r| {
            r.on(UDP80).expect_to("x/a", false);
        }),
    );
    {
        let _case = Case::start(
            "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
        );
        let only80 = (
            "x",
            "allow-ingress-port-80",
            "{podSelector: {}, ingress: [{ports: [{port: 80}]}], policyTypes: [Ingress]}",
        );
        let all = (
            "x",
            "allow-ingress",
            "{podSelector: {}, ingress: [{}], policyTypes: [Ingress]}",
        );
        apply(&lab, &[only80]);
        lab.assert_enforced(
            &table(&lab, &[TCP81], |r| {
                r.expect_to("x/*", false);
            }),
            CONVERGE,
        );
        apply(&lab, &[all]);
        lab.assert_enforced(&table(&lab, &[TCP81], |_| {}), CONVERGE);
        delete_all(&lab, &[only80, all], &[TCP81]);
    }
    case(
        &lab,
        "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
        &[
            ("x", "deny-ingress", "{podSelector: {}, policyTypes: [Ingress]}"),
            ("x", "allow-only-sctp-ingress-on-port-81",
             "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: SCTP}]}], policyTypes: [Ingress]}"),
        ],
        &table(&lab, &[TCP81], |r| {
            r.expect_to("x/*", false);
        }),
    );
    case(
        &lab,
        "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
        &[("x", "allow-only-sctp-ingress-on-port-80",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80, protocol: SCTP}]}], policyTypes: [Ingress]}")],
        &table(&lab, &[TCP81], |r| {
            r.expect_to("x/a", false);
        }),
    );
    // The suite probes TCP 81 only; UDP 81, which the policy admits, is probed too.
    case(
        &lab,
        "should not allow access by TCP when a policy specifies only UDP",
        &[("x", "allow-only-udp-ingress-on-port-81",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: UDP}]}], policyTypes: [Ingress]}")],
        &table(&lab, &[TCP81, UDP81], |r| {
            r.on(TCP81).expect_to("x/a", false);
        }),
    );
    // "NetworkPolicy between server and client using UDP".
    case(
        &lab,
        "UDP: should support a 'default-deny-ingress' policy",
        &[("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}")],
        &table(&lab, &[UDP80], |r| {
            r.expect_to("x/*", false);
        }),
    );
    case(
        &lab,
        "UDP: should enforce policy based on Ports",
        &[("x", "allow-ingress-on-port-81-ns-x",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}}}], ports: [{{port: 81, protocol: UDP}}]}}], policyTypes: [Ingress]}}"))],
        &table(&lab, &[UDP81], |r| {
            r.expect("x/*", "x/a", false).expect("z/*", "x/a", false);
        }),
    );
    case(
        &lab,
        "UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        &[("x", "allow-ns-y-pod-a-via-namespace-pod-selector",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}], policyTypes: [Ingress]}}"))],
        &ya_to_xa(&[UDP80]),
    );
    // Ours: endPort (the suite has no connectivity case for it).
    case(
        &lab,
        "endPort: ingress from namespace y on TCP 80-81 admits both ports and not UDP",
        &[("x", "allow-y-tcp-80-81",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{namespaceSelector: {NS_Y}}}], ports: [{{port: 80, endPort: 81, protocol: TCP}}]}}], policyTypes: [Ingress]}}"))],
        &table(&lab, &[TCP80, TCP81, UDP80], |r| {
            r.on(TCP80).expect("x/*", "x/a", false).expect("z/*", "x/a", false);
            r.on(TCP81).expect("x/*", "x/a", false).expect("z/*", "x/a", false);
            r.on(UDP80).expect_to("x/a", false);
        }),
    );
    eprintln!(
        "e2e_ingress_selectors_ports_and_protocols: {:.1?}",
        t.elapsed()
    );
}

/// Egress, ipBlock with except, policy update and delete, pod and namespace relabels, ingress
/// and egress together and independent.
#[test]
fn e2e_egress_ipblock_updates_and_relabels() {
    let lab = NetpolLab::up();
    let t = Instant::now();
    let p80 = [TCP80];

    case(
        &lab,
        "should allow egress access on one named port",
        &[(
            "x",
            "allow-egress",
            "{podSelector: {}, egress: [{ports: [{port: serve-80-tcp}]}], policyTypes: [Egress]}",
        )],
        &table(&lab, &[TCP80, TCP81], |r| {
            r.on(TCP81).expect_from("x/*", false);
        }),
    );
    {
        let _case = Case::start("should enforce updated policy");
        let name = "allow-all-mutate-to-deny-all";
        lab.apply(&np(
            "x",
            name,
            "{podSelector: {}, ingress: [{}], policyTypes: [Ingress]}",
        ));
        lab.assert_enforced(&table(&lab, &[TCP81], |_| {}), CONVERGE);
        lab.apply(&np(
            "x",
            name,
            "{podSelector: {}, ingress: [], policyTypes: [Ingress]}",
        ));
        lab.assert_enforced(
            &table(&lab, &[TCP81], |r| {
                r.expect_to("x/*", false);
            }),
            CONVERGE,
        );
        delete_all(&lab, &[("x", name, "")], &[TCP81]);
    }
    {
        let _case = Case::start("should allow ingress access from updated namespace");
        let policy = (
            "x",
            "allow-client-a-via-ns-selector",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}], policyTypes: [Ingress]}",
        );
        apply(&lab, &[policy]);
        let mut expected = table(&lab, &p80, |r| {
            r.expect_to("x/a", false);
        });
        lab.assert_enforced(&expected, CONVERGE);
        label_namespace(&lab, "y", "ns2: updated");
        expected.expect("y/*", "x/a", true);
        lab.assert_enforced(&expected, CONVERGE);
        label_namespace(&lab, "y", "");
        delete_all(&lab, &[policy], &p80);
    }
    {
        let _case = Case::start("should allow ingress access from updated pod");
        let policy = (
            "x",
            "allow-client-a-via-pod-selector",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}], policyTypes: [Ingress]}",
        );
        apply(&lab, &[policy]);
        let mut expected = table(&lab, &p80, |r| {
            r.expect_to("x/a", false);
        });
        lab.assert_enforced(&expected, CONVERGE);
        label_pod(&lab, "x/b", "pod2=updated");
        expected.expect("x/b", "x/a", true);
        lab.assert_enforced(&expected, CONVERGE);
        label_pod(&lab, "x/b", "pod2-");
        delete_all(&lab, &[policy], &p80);
    }
    {
        let _case = Case::start("should deny ingress access to updated pod");
        let policy = (
            "x",
            "deny-ingress-via-label-selector",
            "{podSelector: {matchLabels: {target: isolated}}, policyTypes: [Ingress]}",
        );
        apply(&lab, &[policy]);
        lab.assert_enforced(&table(&lab, &p80, |_| {}), CONVERGE);
        label_pod(&lab, "x/a", "target=isolated");
        lab.assert_enforced(
            &table(&lab, &p80, |r| {
                r.expect_to("x/a", false);
            }),
            CONVERGE,
        );
        label_pod(&lab, "x/a", "target-");
        delete_all(&lab, &[policy], &p80);
    }
    case(
        &lab,
        "should deny egress from pods based on PodSelector",
        &[(
            "x",
            "deny-egress-pod-a",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}",
        )],
        &table(&lab, &p80, |r| {
            r.expect_from("x/a", false);
        }),
    );
    case(
        &lab,
        "should deny egress from all pods in a namespace",
        &[(
            "x",
            "deny-egress-ns-x",
            "{podSelector: {}, policyTypes: [Egress]}",
        )],
        &table(&lab, &p80, |r| {
            r.expect_from("x/*", false);
        }),
    );
    case(
        &lab,
        "should work with Ingress, Egress specified together",
        &[("x", "allow-client-a-via-pod-selector",
            "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}], egress: [{ports: [{port: 80}]}], policyTypes: [Egress, Ingress]}")],
        &table(&lab, &[TCP80, TCP81], |r| {
            r.on(TCP80).expect_to("x/a", false).expect("x/b", "x/a", true);
            r.on(TCP81)
                .expect_to("x/a", false)
                .expect_from("x/a", false)
                .expect("x/b", "x/a", true);
        }),
    );
    let from_xa = "[{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]";
    case(
        &lab,
        "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
        &[
            ("x", "allow-to-ns-y-pod-a",
             "{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}, podSelector: {matchLabels: {pod: a}}}]}], policyTypes: [Egress]}"),
            ("y", "allow-from-xa-on-ya-match-selector",
             &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: {from_xa}, policyTypes: [Ingress]}}")),
            ("y", "allow-from-xa-on-yb-match-selector",
             &format!("{{podSelector: {{matchLabels: {{pod: b}}}}, ingress: {from_xa}, policyTypes: [Ingress]}}")),
        ],
        &table(&lab, &p80, |r| {
            r.expect_from("x/a", false)
                .expect_to("y/a", false)
                .expect("x/a", "y/a", true)
                .expect_to("y/b", false);
        }),
    );
    case(
        &lab,
        "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
        &[("x", "allow-to-ns-y-pod-a",
            "{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}, podSelector: {matchLabels: {pod: a}}}]}], policyTypes: [Egress]}")],
        &table(&lab, &p80, |r| {
            r.expect_from("x/a", false).expect("x/a", "y/a", true);
        }),
    );
    {
        let _case = Case::start(
            "should enforce multiple egress policies with egress allow-all policy taking precedence",
        );
        let only80 = (
            "x",
            "allow-egress-port-80",
            "{podSelector: {}, egress: [{ports: [{port: 80}]}], policyTypes: [Egress]}",
        );
        let all = (
            "x",
            "allow-egress",
            "{podSelector: {}, egress: [{}], policyTypes: [Egress]}",
        );
        apply(&lab, &[only80]);
        lab.assert_enforced(
            &table(&lab, &[TCP81], |r| {
                r.expect_from("x/*", false);
            }),
            CONVERGE,
        );
        apply(&lab, &[all]);
        lab.assert_enforced(&table(&lab, &[TCP81], |_| {}), CONVERGE);
        delete_all(&lab, &[only80, all], &[TCP81]);
    }
    // Deletion is checked by every case; this one is the suite's own.
    case(
        &lab,
        "should stop enforcing policies after they are deleted",
        &[(
            "x",
            "deny-all",
            "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        )],
        &table(&lab, &p80, |r| {
            r.expect_from("x/*", false).expect_to("x/*", false);
        }),
    );
    let (xa, xb, yb) = (ip(&lab, "x/a"), ip(&lab, "x/b"), ip(&lab, "y/b"));
    case(
        &lab,
        "should allow egress access to server in CIDR block",
        &[("x", "allow-client-a-via-cidr-egress-rule",
            &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, egress: [{{to: [{{ipBlock: {{cidr: {yb}/32}}}}]}}], policyTypes: [Egress]}}"))],
        &table(&lab, &p80, |r| {
            r.expect_from("x/a", false).expect("x/a", "y/b", true);
        }),
    );
    // The suite writes the CIDR as x/a's address with a /4 prefix (host bits set), which the
    // Kubernetes API accepts.
    let except = format!("{{podSelector: {{matchLabels: {{pod: a}}}}, egress: [{{to: [{{ipBlock: {{cidr: {xa}/4, except: [{xb}/32]}}}}]}}], policyTypes: [Egress]}}");
    let b_excepted = table(&lab, &p80, |r| {
        r.expect("x/a", "x/b", false);
    });
    case(
        &lab,
        "should enforce except clause while egress access to server in CIDR block",
        &[("x", "allow-client-a-via-cidr-egress-rule", &except)],
        &b_excepted,
    );
    {
        let _case = Case::start(
            "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        );
        let name = "allow-client-a-via-cidr-egress-rule";
        lab.apply(&np("x", name, &except));
        lab.assert_enforced(&b_excepted, CONVERGE);
        lab.apply(&np("x", name, &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, egress: [{{to: [{{ipBlock: {{cidr: {xb}/32}}}}]}}], policyTypes: [Egress]}}")));
        lab.assert_enforced(
            &table(&lab, &p80, |r| {
                r.expect_from("x/a", false).expect("x/a", "x/b", true);
            }),
            CONVERGE,
        );
        delete_all(&lab, &[("x", name, "")], &p80);
    }
    {
        let _case = Case::start("should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector");
        let egress = (
            "x",
            "allow-egress-for-target",
            "{podSelector: {matchLabels: {pod: a}}, egress: [{}], policyTypes: [Egress]}",
        );
        let deny = (
            "x",
            "deny-ingress-via-label-selector",
            "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress]}",
        );
        apply(&lab, &[egress]);
        lab.assert_enforced(&table(&lab, &p80, |_| {}), CONVERGE);
        apply(&lab, &[deny]);
        lab.assert_enforced(
            &table(&lab, &p80, |r| {
                r.expect_to("x/a", false);
            }),
            CONVERGE,
        );
        delete_all(&lab, &[egress, deny], &p80);
    }
    case(
        &lab,
        "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
        &[("x", "allow-ns-y-match-selector-for-immutable-ns-label",
            "{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]}}]}], policyTypes: [Egress]}")],
        &table(&lab, &p80, |r| {
            r.expect("x/a", "y/*", false);
        }),
    );
    // Ours: endPort on egress, UDP.
    case(
        &lab,
        "endPort: egress from x on UDP 81-90 only",
        &[(
            "x",
            "allow-egress-udp-81-90",
            "{podSelector: {}, egress: [{ports: [{port: 81, endPort: 90, protocol: UDP}]}], policyTypes: [Egress]}",
        )],
        &table(&lab, &[UDP80, UDP81, TCP81], |r| {
            r.on(UDP80).expect_from("x/*", false);
            r.on(TCP81).expect_from("x/*", false);
        }),
    );
    eprintln!(
        "e2e_egress_ipblock_updates_and_relabels: {:.1?}",
        t.elapsed()
    );
}
