use serde_json::json;

use super::*;
use crate::resources::{parse_documents, AnyResource};

fn parse_policy(yaml: &str) -> NetworkPolicy {
    let mut docs = parse_documents(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 1);
    match docs.remove(0) {
        AnyResource::NetworkPolicy(p) => p,
        other => panic!("expected a NetworkPolicy, got {}", other.describe()),
    }
}

/// `apiVersion` and `kind` lines, then `rest`.
fn doc(rest: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{rest}")
}

fn parse_error(yaml: &str) -> String {
    parse_documents(yaml, "test.yaml")
        .expect_err("should not parse")
        .to_string()
}

/// Validation errors of a spec given as JSON.
fn errors(spec: serde_json::Value) -> ValidationErrors {
    let spec: NetworkPolicySpec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
    let mut errs = ValidationErrors::new();
    spec.validate(&ObjectMeta::namespaced("default", "p"), &mut errs);
    errs
}

fn assert_valid(spec: serde_json::Value) {
    let e = errors(spec.clone());
    assert!(e.is_empty(), "{spec} should be valid: {e}");
}

fn assert_error(spec: serde_json::Value, field: &str) {
    let e = errors(spec.clone());
    assert!(
        e.mentions(field),
        "{spec} should have an error at {field}, got: {e:?}"
    );
}

/// Parses, validates, and checks that serializing gives back exactly what was written.
fn round_trip(yaml: &str) -> NetworkPolicy {
    let policy = parse_policy(yaml);
    policy.validate().unwrap_or_else(|e| panic!("{e}"));
    let written: serde_json::Value = serde_norway::from_str(yaml).unwrap();
    assert_eq!(
        serde_json::to_value(&policy).unwrap(),
        written,
        "round trip changed the object"
    );
    policy
}

// Kubernetes docs, "The NetworkPolicy resource".
const DOCS_EXAMPLE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Ingress
    - Egress
  ingress:
    - from:
        - ipBlock:
            cidr: 172.17.0.0/16
            except:
              - 172.17.1.0/24
        - namespaceSelector:
            matchLabels:
              project: myproject
        - podSelector:
            matchLabels:
              role: frontend
      ports:
        - protocol: TCP
          port: 6379
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 5978
"#;

#[test]
fn docs_example() {
    let p = round_trip(DOCS_EXAMPLE);
    assert_eq!(p.key(), "policies/default/test-network-policy");
    assert_eq!(
        p.spec.effective_policy_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
    let rule = &p.spec.ingress_rules()[0];
    assert_eq!(rule.peers().len(), 3);
    assert_eq!(
        rule.peers()[0].ip_block.as_ref().unwrap().except,
        vec!["172.17.1.0/24"]
    );
    assert_eq!(rule.port_list()[0].port, Some(IntOrString::Int(6379)));
    assert_eq!(rule.port_list()[0].effective_protocol(), Protocol::Tcp);
    assert!(p
        .spec
        .pod_selector
        .matches(&[("role".to_string(), "db".to_string())].into()));
}

#[test]
fn default_deny_ingress() {
    let p = round_trip(&doc("metadata:\n  name: default-deny-ingress\n\
         spec:\n  podSelector: {}\n  policyTypes:\n  - Ingress\n"));
    // No namespace: stored under "default".
    assert_eq!(p.key(), "policies/default/default-deny-ingress");
    assert!(p.spec.pod_selector.is_empty());
    assert!(p.spec.ingress_rules().is_empty());
    assert_eq!(p.spec.effective_policy_types(), vec![PolicyType::Ingress]);
}

#[test]
fn allow_all_egress() {
    let p = round_trip(&doc(
        "metadata:\n  name: allow-all-egress\n  namespace: prod\n\
         spec:\n  podSelector: {}\n  egress:\n  - {}\n  policyTypes:\n  - Egress\n",
    ));
    assert_eq!(p.key(), "policies/prod/allow-all-egress");
    let rule = &p.spec.egress_rules()[0];
    assert_eq!(rule, &NetworkPolicyEgressRule::default());
    assert!(rule.peers().is_empty() && rule.port_list().is_empty());
    assert_eq!(p.spec.effective_policy_types(), vec![PolicyType::Egress]);
}

#[test]
fn named_port_and_port_range() {
    let p = round_trip(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-and-range
  namespace: shop
spec:
  podSelector:
    matchExpressions:
    - {key: app, operator: In, values: [web, api]}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: ingress-nginx
      podSelector:
        matchLabels:
          app.kubernetes.io/name: ingress-nginx
    ports:
    - port: http
    - protocol: UDP
      port: dns-udp
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 32000
      endPort: 32768
    - protocol: SCTP
"#,
    );
    let ports = p.spec.ingress_rules()[0].port_list();
    assert_eq!(ports[0].port, Some(IntOrString::String("http".into())));
    assert_eq!(
        ports[0].protocol, None,
        "the TCP default is not written back"
    );
    assert_eq!(ports[1].effective_protocol(), Protocol::Udp);
    assert_eq!(
        p.spec.egress_rules()[0].port_list()[0].end_port,
        Some(32768)
    );
    // Egress rules present and no policyTypes: both directions.
    assert_eq!(
        p.spec.effective_policy_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
}

#[test]
fn absent_and_empty_lists_round_trip_distinctly() {
    // `from: []` and an absent `from` both mean "all sources", but are written back as given.
    let p = round_trip(&doc(
        "metadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - from: []\n    ports: []\n\
         \x20 - {}\n  egress: []\n  policyTypes: []\n",
    ));
    let rules = p.spec.ingress_rules();
    assert_eq!(rules[0].from, Some(vec![]));
    assert_eq!(rules[1].from, None);
    assert!(rules[0].peers().is_empty() && rules[1].peers().is_empty());
    assert_eq!(p.spec.egress, Some(vec![]));
    // `policyTypes: []` is defaulted like an absent one; `egress: []` has no rules.
    assert_eq!(p.spec.effective_policy_types(), vec![PolicyType::Ingress]);

    let absent = round_trip(&doc("metadata: {name: p}\nspec:\n  podSelector: {}\n"));
    assert_eq!(absent.spec.ingress, None);
    assert_eq!(absent.spec.egress, None);
}

#[test]
fn null_pod_selector_is_empty() {
    // `podSelector:` with nothing after it is YAML null; Kubernetes treats it as `{}`.
    let p = parse_policy(&doc("metadata: {name: p}\nspec:\n  podSelector:\n"));
    assert!(p.spec.pod_selector.is_empty());
    // Missing spec entirely is also accepted (every field defaults).
    let p = parse_policy(&doc("metadata: {name: p}\n"));
    assert_eq!(p.spec, NetworkPolicySpec::default());
}

#[test]
fn effective_policy_types_defaulting() {
    let spec = |v| serde_json::from_value::<NetworkPolicySpec>(v).unwrap();
    use PolicyType::*;
    assert_eq!(spec(json!({})).effective_policy_types(), vec![Ingress]);
    assert_eq!(
        spec(json!({"ingress": [{}]})).effective_policy_types(),
        vec![Ingress]
    );
    assert_eq!(
        spec(json!({"egress": [{}]})).effective_policy_types(),
        vec![Ingress, Egress]
    );
    assert_eq!(
        spec(json!({"egress": []})).effective_policy_types(),
        vec![Ingress]
    );
    assert_eq!(
        spec(json!({"policyTypes": ["Egress"], "ingress": [{}]})).effective_policy_types(),
        vec![Egress]
    );
    assert_eq!(
        spec(json!({"policyTypes": ["Egress", "Ingress"]})).effective_policy_types(),
        vec![Ingress, Egress]
    );
}

#[test]
fn pod_selector_is_validated() {
    assert_error(
        json!({"podSelector": {"matchLabels": {"bad key": "x"}}}),
        "spec.podSelector.matchLabels[bad key]",
    );
    assert_error(
        json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        "spec.podSelector.matchExpressions[0].values",
    );
}

#[test]
fn peer_selectors_are_validated() {
    assert_error(
        json!({"ingress": [{"from": [{}, {"podSelector": {
            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
        }}]}]}),
        "spec.ingress[0].from[1].podSelector.matchExpressions[0].values",
    );
    assert_error(
        json!({"egress": [{"to": [
            {"namespaceSelector": {"matchLabels": {"team": "not valid"}}}
        ]}]}),
        "spec.egress[0].to[0].namespaceSelector.matchLabels[team]",
    );
}

#[test]
fn peer_must_name_something() {
    assert_error(
        json!({"ingress": [{"from": [{"podSelector": {}}, {}]}]}),
        "spec.ingress[0].from[1]",
    );
    assert_error(json!({"egress": [{"to": [{}]}]}), "spec.egress[0].to[0]");
    // An empty selector is something: all pods / all namespaces.
    assert_valid(json!({"ingress": [{"from": [{"namespaceSelector": {}}]}]}));
    assert_valid(json!({"ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]}));
}

#[test]
fn ip_block_stands_alone() {
    let block = json!({"cidr": "10.0.0.0/8"});
    assert_error(
        json!({"ingress": [{"from": [{"ipBlock": block, "podSelector": {}}]}]}),
        "spec.ingress[0].from[0]",
    );
    assert_error(
        json!({"egress": [{"to": [{"ipBlock": block, "namespaceSelector": {}}]}]}),
        "spec.egress[0].to[0]",
    );
    assert_valid(json!({"egress": [{"to": [{"ipBlock": block}]}]}));
}

#[test]
fn ip_block_cidr_must_be_valid() {
    for bad in [
        "",
        "10.0.0.0",
        "10.0.0.0/33",
        "300.0.0.0/8",
        "fd00::/129",
        "010.0.0.0/8",
        "10.0.0.0/08",
        "::ffff:10.01.0.0/104",
        "nonsense",
    ] {
        assert_error(
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": bad}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        );
    }
    // Missing cidr is reported by validation at the field, not as a parse error.
    assert_error(
        json!({"ingress": [{"from": [{"ipBlock": {}}]}]}),
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    for good in [
        "0.0.0.0/0",
        "10.1.2.3/32",
        "fd00::/64",
        "::/0",
        "10.0.0.1/24",
        "10.100.0.0/16",
        "0::/0",
        "fd00:0::/64",
    ] {
        assert_valid(json!({"ingress": [{"from": [{"ipBlock": {"cidr": good}}]}]}));
    }
}

#[test]
fn except_must_be_strict_subset_of_cidr() {
    fn with_except(cidr: &str, except: &[&str]) -> serde_json::Value {
        json!({"egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": except}}]}]})
    }
    assert_valid(with_except(
        "172.17.0.0/16",
        &["172.17.1.0/24", "172.17.2.128/25"],
    ));
    assert_valid(with_except("fd00::/48", &["fd00:0:0:1::/64"]));
    // Host bits in except are cleared before comparing, as upstream's sloppy parse does.
    assert_valid(with_except("10.0.0.0/8", &["10.1.2.3/16"]));
    for (cidr, except) in [
        ("172.17.0.0/16", "172.17.0.0/16"), // equal, not strict
        ("172.17.0.0/16", "172.0.0.0/8"),   // larger
        ("172.17.0.0/16", "10.0.0.0/24"),   // outside
        ("172.17.0.0/16", "fd00::/64"),     // other family
        ("fd00::/48", "10.0.0.0/24"),       // other family
        ("172.17.0.0/16", "172.17.1.0"),    // not a CIDR
    ] {
        let spec = with_except(cidr, &["172.17.9.0/24", except]);
        let e = errors(spec);
        assert!(
            e.mentions("spec.egress[0].to[0].ipBlock.except[1]"),
            "{cidr} except {except}: {e}"
        );
        if cidr.starts_with("172.17") {
            assert!(!e.mentions("spec.egress[0].to[0].ipBlock.except[0]"), "{e}");
        }
    }
}

#[test]
fn port_numbers_in_range() {
    let port = |p: serde_json::Value| json!({"ingress": [{"ports": [{"port": 80}, {"port": p}]}]});
    for bad in [json!(0), json!(65536), json!(-1)] {
        assert_error(port(bad), "spec.ingress[0].ports[1].port");
    }
    assert_valid(port(json!(1)));
    assert_valid(port(json!(65535)));
    // Port only with protocol, and protocol only: both fine.
    assert_valid(json!({"egress": [{"ports": [{"protocol": "UDP"}]}]}));
}

#[test]
fn named_ports_follow_iana_svc_name() {
    let port = |name: &str| json!({"egress": [{"ports": [{"port": name}]}]});
    for good in ["http", "h2c", "web-8080", "a", "x1234567890abcd"] {
        assert_valid(port(good));
    }
    for bad in [
        "",
        "HTTP",
        "http_alt",
        "8080",
        "-http",
        "http-",
        "we--b",
        "a234567890123456",
        "ht tp",
    ] {
        assert_error(port(bad), "spec.egress[0].ports[0].port");
    }
}

#[test]
fn end_port_rules() {
    let p = |v: serde_json::Value| json!({"ingress": [{"ports": [v]}]});
    assert_valid(p(json!({"port": 32000, "endPort": 32768})));
    assert_valid(p(json!({"port": 80, "endPort": 80})));
    // Below port.
    assert_error(
        p(json!({"port": 32000, "endPort": 31999})),
        "spec.ingress[0].ports[0].endPort",
    );
    // Out of range.
    assert_error(
        p(json!({"port": 32000, "endPort": 70000})),
        "spec.ingress[0].ports[0].endPort",
    );
    // With a named port.
    assert_error(
        p(json!({"port": "http", "endPort": 90})),
        "spec.ingress[0].ports[0].endPort",
    );
    // Without a port.
    assert_error(
        p(json!({"protocol": "TCP", "endPort": 90})),
        "spec.ingress[0].ports[0].endPort",
    );
}

#[test]
fn policy_types_at_most_two_and_distinct() {
    assert_error(
        json!({"policyTypes": ["Ingress", "Egress", "Ingress"]}),
        "spec.policyTypes",
    );
    assert_error(
        json!({"policyTypes": ["Egress", "Egress"]}),
        "spec.policyTypes[1]",
    );
    assert_valid(json!({"policyTypes": ["Egress", "Ingress"]}));
    assert_valid(json!({"policyTypes": []}));
}

#[test]
fn all_errors_are_collected() {
    let e = errors(json!({
        "ingress": [{"ports": [{"port": 0}], "from": [{}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "bad"}}]}],
    }));
    assert_eq!(e.errors.len(), 3, "{e}");
    assert!(e.mentions("spec.ingress[0].ports[0].port"));
    assert!(e.mentions("spec.ingress[0].from[0]"));
    assert!(e.mentions("spec.egress[0].to[0].ipBlock.cidr"));
}

/// Values Kubernetes refuses by enum (protocol, policy type, operator) and unknown fields fail at
/// parse time with the path in the message.
#[test]
fn schema_errors_name_the_field() {
    let doc = |spec: &str| doc(&format!("metadata: {{name: p}}\nspec: {spec}\n"));
    let cases = [
        (
            r#"{ingress: [{ports: [{protocol: ICMP}]}]}"#,
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            r#"{ingress: [{ports: [{protocol: tcp}]}]}"#,
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            r#"{policyTypes: [Ingress, Forward]}"#,
            "spec.policyTypes[1]",
        ),
        (
            r#"{podSelector: {matchExpressions: [{key: a, operator: Equals}]}}"#,
            "spec.podSelector.matchExpressions[0].operator",
        ),
        (r#"{ingress: [{form: []}]}"#, "form"),
        (r#"{podSelctor: {}}"#, "podSelctor"),
        (
            r#"{egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, exclude: []}}]}]}"#,
            "exclude",
        ),
        (
            r#"{ingress: [{ports: [{port: 3000000000}]}]}"#,
            "spec.ingress[0].ports[0].port",
        ),
        (
            r#"{ingress: [{ports: [{port: 80.5}]}]}"#,
            "spec.ingress[0].ports[0].port",
        ),
    ];
    for (spec, needle) in cases {
        let msg = parse_error(&doc(spec));
        assert!(
            msg.contains(needle),
            "{spec}: {msg:?} should mention {needle}"
        );
    }
}

#[test]
fn string_digits_are_a_port_name_as_upstream() {
    // IntOrString from a JSON string stays a string, and "80" is not a valid port name.
    let p = parse_policy(&doc(
        "metadata: {name: p}\nspec:\n  ingress:\n  - ports:\n    - port: \"80\"\n",
    ));
    assert_eq!(
        p.spec.ingress_rules()[0].port_list()[0].port,
        Some(IntOrString::String("80".into()))
    );
    let e = p.validate().unwrap_err();
    assert!(e.mentions("spec.ingress[0].ports[0].port"), "{e}");
}

#[test]
fn wrong_api_version_is_rejected() {
    let p = parse_policy(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n",
    );
    assert!(p.validate().unwrap_err().mentions("apiVersion"));
}
