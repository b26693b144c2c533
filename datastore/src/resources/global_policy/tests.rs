use serde_json::json;

use super::*;
use crate::resources::{parse_documents, AnyResource};

fn parse_policy(yaml: &str) -> GlobalNetworkPolicy {
    let mut docs = parse_documents(yaml, "gnp.yaml").unwrap_or_else(|e| panic!("{e}"));
    match docs.remove(0) {
        AnyResource::GlobalNetworkPolicy(p) => p,
        other => panic!("expected a GlobalNetworkPolicy, got {}", other.describe()),
    }
}

fn spec(v: serde_json::Value) -> GlobalNetworkPolicySpec {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn errors(v: serde_json::Value) -> ValidationErrors {
    let mut errs = ValidationErrors::new();
    spec(v).validate(&ObjectMeta::named("p"), &mut errs);
    errs
}

fn assert_valid(v: serde_json::Value) {
    let e = errors(v.clone());
    assert!(e.is_empty(), "{v} should be valid: {e}");
}

fn assert_error(v: serde_json::Value, field: &str) {
    let e = errors(v.clone());
    assert!(
        e.mentions(field),
        "{v} should have an error at {field}, got: {e:?}"
    );
}

/// A spec with one ingress rule.
fn rule(r: serde_json::Value) -> serde_json::Value {
    json!({"ingress": [r]})
}

const CALICO_STYLE: &str = r#"
apiVersion: trellis.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: allow-tcp-6379
spec:
  order: 100
  selector: role == 'database'
  types:
  - Ingress
  - Egress
  ingress:
  - action: Allow
    metadata: {}
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports:
      - 6379
  egress:
  - action: Allow
"#;

#[test]
fn unknown_rule_fields_are_rejected() {
    // `metadata` on a rule (and http, services...) is not supported: refused, not ignored.
    let err = parse_documents(CALICO_STYLE, "gnp.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.ingress[0]") && err.contains("metadata"),
        "{err}"
    );
}

#[test]
fn calico_docs_example_round_trips() {
    let yaml = CALICO_STYLE.replace("    metadata: {}\n", "");
    let p = parse_policy(&yaml);
    p.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.key(), "globalpolicies/allow-tcp-6379");
    assert_eq!(p.spec.order, Some(100.0));
    assert_eq!(
        p.spec.ingress[0].destination.ports,
        vec![Port::single(6379)]
    );
    assert_eq!(p.spec.ingress[0].protocol, Some(IpProtocol::Tcp));
    let written: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(serde_json::to_value(&p).unwrap(), written);
}

#[test]
fn rich_policy_is_valid_and_round_trips() {
    let yaml = r#"
apiVersion: trellis.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: default.rich
spec:
  order: 10.5
  selector: has(app) && env in {'prod', 'staging'}
  namespaceSelector: "!has(skip-policy)"
  ingress:
  - action: Deny
    protocol: ICMP
    ipVersion: 4
    icmp: {type: 8, code: 0}
    source:
      nets: [10.0.0.0/8, 192.168.1.1]
      notNets: [10.1.0.0/16]
  - action: Allow
    protocol: 17
    destination:
      ports: [53, "1000:2000", dns]
      notPorts: [1500]
  - action: Log
    source:
      namespaceSelector: global()
      selector: role == 'node'
  - action: Pass
    notProtocol: ICMPv6
    destination:
      ports: [http]
  egress:
  - action: Allow
    protocol: ICMPv6
    notICMP: {type: 128}
    destination:
      nets: ["fd00::/64", "fd00:1::1"]
"#;
    let p = parse_policy(yaml);
    p.validate().unwrap_or_else(|e| panic!("{e}"));
    let written: serde_json::Value = serde_norway::from_str(yaml).unwrap();
    assert_eq!(serde_json::to_value(&p).unwrap(), written);
    let ports = &p.spec.ingress[1].destination.ports;
    assert_eq!(
        ports,
        &vec![
            Port::single(53),
            Port::Range {
                min: 1000,
                max: 2000
            },
            Port::Named("dns".into())
        ]
    );
    assert_eq!(p.spec.ingress[1].protocol, Some(IpProtocol::Number(17)));
    assert!(p.spec.ingress[1].protocol.unwrap().supports_ports());
    assert_eq!(
        p.spec.effective_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
}

#[test]
fn types_default_like_calico() {
    use PolicyType::*;
    let allow = json!({"action": "Allow"});
    assert_eq!(spec(json!({})).effective_types(), vec![Ingress]);
    assert_eq!(
        spec(json!({"ingress": [allow]})).effective_types(),
        vec![Ingress]
    );
    assert_eq!(
        spec(json!({"egress": [allow]})).effective_types(),
        vec![Egress]
    );
    assert_eq!(
        spec(json!({"ingress": [allow], "egress": [allow]})).effective_types(),
        vec![Ingress, Egress]
    );
    assert_eq!(
        spec(json!({"types": ["Egress"], "ingress": [allow]})).effective_types(),
        vec![Egress]
    );
    assert_eq!(spec(json!({"types": []})).effective_types(), vec![Ingress]);
}

#[test]
fn types_must_be_distinct() {
    assert_error(json!({"types": ["Ingress", "Ingress"]}), "spec.types[1]");
    assert_valid(json!({"types": ["Egress", "Ingress"]}));
}

#[test]
fn order_finite_and_non_negative() {
    assert_error(json!({"order": -1.0}), "spec.order");
    let mut s = spec(json!({}));
    s.order = Some(f64::NAN);
    let mut e = ValidationErrors::new();
    s.validate(&ObjectMeta::named("p"), &mut e);
    assert!(e.mentions("spec.order"));
    s.order = Some(f64::INFINITY);
    let mut e = ValidationErrors::new();
    s.validate(&ObjectMeta::named("p"), &mut e);
    assert!(e.mentions("spec.order"));
    assert_valid(json!({"order": 0}));
}

#[test]
fn selectors_must_parse() {
    assert_error(json!({"selector": "a == "}), "spec.selector");
    assert_error(
        json!({"namespaceSelector": "has(x"}),
        "spec.namespaceSelector",
    );
    assert_error(
        rule(json!({"action": "Allow", "source": {"selector": "a b"}})),
        "spec.ingress[0].source.selector",
    );
    assert_error(
        rule(json!({"action": "Allow", "destination": {"notSelector": "!"}})),
        "spec.ingress[0].destination.notSelector",
    );
    assert_error(
        json!({"egress": [
            {"action": "Allow"},
            {"action": "Deny", "destination": {"namespaceSelector": "x in {"}}
        ]}),
        "spec.egress[1].destination.namespaceSelector",
    );
    let e = errors(json!({"selector": "a == "}));
    assert!(
        e.to_string()
            .contains("expected a quoted value at position 5"),
        "{e}"
    );
    assert_error(
        json!({"selector": format!("has({})", "a".repeat(1100))}),
        "spec.selector",
    );
}

#[test]
fn global_only_alone_in_rule_namespace_selector() {
    assert_error(json!({"selector": "global()"}), "spec.selector");
    assert_error(
        json!({"namespaceSelector": "global()"}),
        "spec.namespaceSelector",
    );
    assert_error(
        rule(json!({"action": "Allow", "source": {"selector": "global()"}})),
        "spec.ingress[0].source.selector",
    );
    assert_error(
        rule(json!({"action": "Allow", "source": {"namespaceSelector": "global() || has(a)"}})),
        "spec.ingress[0].source.namespaceSelector",
    );
    assert_valid(rule(
        json!({"action": "Allow", "source": {"namespaceSelector": "global()"}}),
    ));
}

#[test]
fn ip_version_is_4_or_6() {
    assert_error(
        rule(json!({"action": "Allow", "ipVersion": 5})),
        "spec.ingress[0].ipVersion",
    );
    assert_valid(rule(json!({"action": "Allow", "ipVersion": 6})));
}

#[test]
fn protocol_number_not_zero() {
    assert_error(
        rule(json!({"action": "Allow", "protocol": 0})),
        "spec.ingress[0].protocol",
    );
    assert_error(
        rule(json!({"action": "Allow", "notProtocol": "0"})),
        "spec.ingress[0].notProtocol",
    );
    assert_valid(rule(json!({"action": "Allow", "protocol": 255})));
    assert_valid(rule(json!({"action": "Allow", "protocol": "47"})));
}

#[test]
fn icmp_protocols_match_ip_version() {
    assert_error(
        rule(json!({"action": "Allow", "protocol": "ICMP", "ipVersion": 6})),
        "spec.ingress[0].protocol",
    );
    assert_error(
        rule(json!({"action": "Allow", "protocol": 58, "ipVersion": 4})),
        "spec.ingress[0].protocol",
    );
    assert_error(
        rule(json!({"action": "Allow", "notProtocol": "ICMPv6", "ipVersion": 4})),
        "spec.ingress[0].notProtocol",
    );
    assert_valid(rule(
        json!({"action": "Allow", "protocol": "ICMPv6", "ipVersion": 6}),
    ));
    assert_valid(rule(
        json!({"action": "Allow", "protocol": 1, "ipVersion": 4}),
    ));
}

#[test]
fn icmp_fields_need_an_icmp_protocol() {
    assert_error(
        rule(json!({"action": "Allow", "icmp": {"type": 8}})),
        "spec.ingress[0].icmp",
    );
    assert_error(
        rule(json!({"action": "Allow", "protocol": "TCP", "notICMP": {"type": 8}})),
        "spec.ingress[0].notICMP",
    );
    assert_valid(rule(
        json!({"action": "Allow", "protocol": 1, "icmp": {"type": 8}}),
    ));
}

#[test]
fn icmp_type_and_code_ranges() {
    let icmp =
        |v: serde_json::Value| rule(json!({"action": "Allow", "protocol": "ICMP", "icmp": v}));
    assert_error(icmp(json!({"type": 255})), "spec.ingress[0].icmp.type");
    assert_error(icmp(json!({"type": -1})), "spec.ingress[0].icmp.type");
    assert_error(
        icmp(json!({"type": 3, "code": 256})),
        "spec.ingress[0].icmp.code",
    );
    assert_error(icmp(json!({"code": 0})), "spec.ingress[0].icmp.code");
    assert_valid(icmp(json!({"type": 254, "code": 255})));
    assert_valid(icmp(json!({})));
}

#[test]
fn nets_must_be_masked_cidrs_or_addresses() {
    let nets = |v: serde_json::Value| {
        rule(json!({"action": "Allow", "destination": {"nets": ["10.0.0.0/8", v]}}))
    };
    for bad in [
        "10.0.0.1/8",
        "10.0.0.0/33",
        "nonsense",
        "",
        "fd00::1/64",
        "10.0.0.01",
        "10.0.0.0/010",
    ] {
        assert_error(nets(json!(bad)), "spec.ingress[0].destination.nets[1]");
    }
    assert_valid(nets(json!("10.1.2.3")));
    assert_valid(nets(json!("172.16.0.0/12")));
    assert_error(
        rule(json!({"action": "Allow", "source": {"notNets": ["nope"]}})),
        "spec.ingress[0].source.notNets[0]",
    );
}

#[test]
fn nets_match_ip_version_and_each_other() {
    assert_error(
        rule(json!({"action": "Allow", "ipVersion": 4, "source": {"nets": ["fd00::/64"]}})),
        "spec.ingress[0].source.nets[0]",
    );
    assert_error(
        rule(
            json!({"action": "Allow", "ipVersion": 6, "destination": {"notNets": ["10.0.0.0/8"]}}),
        ),
        "spec.ingress[0].destination.notNets[0]",
    );
    // Mixed families within one list, and across source and destination.
    assert_error(
        rule(json!({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "fd00::/64"]}})),
        "spec.ingress[0].source.nets",
    );
    assert_error(
        rule(json!({
            "action": "Allow",
            "source": {"nets": ["10.0.0.0/8"]},
            "destination": {"nets": ["fd00::/64"]}
        })),
        "spec.ingress[0].destination.nets",
    );
}

#[test]
fn negated_catch_all_is_rejected() {
    for all in ["0.0.0.0/0", "::/0"] {
        assert_error(
            rule(json!({"action": "Allow", "source": {"notNets": [all]}})),
            "spec.ingress[0].source.notNets[0]",
        );
    }
    assert_valid(rule(
        json!({"action": "Allow", "source": {"nets": ["0.0.0.0/0"]}}),
    ));
}

#[test]
fn numeric_ports_need_a_port_protocol() {
    let ports = |proto: Option<serde_json::Value>, ports: serde_json::Value| {
        let mut r = json!({"action": "Allow", "destination": {"ports": ports}});
        if let Some(p) = proto {
            r["protocol"] = p;
        }
        rule(r)
    };
    assert_error(
        ports(None, json!([80])),
        "spec.ingress[0].destination.ports",
    );
    assert_error(
        ports(None, json!(["8000:9000"])),
        "spec.ingress[0].destination.ports",
    );
    assert_error(
        ports(Some(json!("ICMP")), json!([80])),
        "spec.ingress[0].destination.ports",
    );
    // Named ports carry their protocol, but still not with a portless one.
    assert_valid(ports(None, json!(["http"])));
    assert_error(
        ports(Some(json!("ICMP")), json!(["http"])),
        "spec.ingress[0].destination.ports",
    );
    // UDPLite has ports on the wire, but Calico does not allow matching them.
    assert_error(
        ports(Some(json!("UDPLite")), json!([80])),
        "spec.ingress[0].destination.ports",
    );
    for proto in ["TCP", "UDP", "SCTP"] {
        assert_valid(ports(Some(json!(proto)), json!([80, "1:65535"])));
    }
    assert_valid(ports(Some(json!(6)), json!([80])));
    assert_valid(ports(Some(json!(132)), json!([80])));
    // notPorts too, on either side.
    assert_error(
        rule(json!({"action": "Allow", "source": {"notPorts": [22]}})),
        "spec.ingress[0].source.notPorts",
    );
}

#[test]
fn port_values_are_checked() {
    let p = |v: serde_json::Value| {
        rule(json!({"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, v]}}))
    };
    assert_error(p(json!(0)), "spec.ingress[0].destination.ports[1]");
    assert_error(p(json!("0:10")), "spec.ingress[0].destination.ports[1]");
    assert_error(
        p(json!("9000:8000")),
        "spec.ingress[0].destination.ports[1]",
    );
    assert_error(p(json!("Web_Port")), "spec.ingress[0].destination.ports[1]");
    assert_error(p(json!("80:")), "spec.ingress[0].destination.ports[1]");
    assert_valid(p(json!("8000:8000")));
    assert_valid(p(json!("65535")));
}

#[test]
fn list_limits() {
    let many_nets: Vec<String> = (0..257)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    assert_error(
        rule(json!({"action": "Allow", "source": {"nets": many_nets}})),
        "spec.ingress[0].source.nets",
    );
    let many_ports: Vec<u16> = (1..=51).collect();
    assert_error(
        rule(json!({"action": "Allow", "protocol": "TCP", "destination": {"ports": many_ports}})),
        "spec.ingress[0].destination.ports",
    );
    let many_rules = vec![json!({"action": "Allow"}); 1025];
    assert_error(json!({"egress": many_rules}), "spec.egress");
}

#[test]
fn name_may_have_one_tier_prefix() {
    let p = GlobalNetworkPolicy::new(
        ObjectMeta::named("a.b.c"),
        GlobalNetworkPolicySpec::default(),
    );
    assert!(p.validate().unwrap_err().mentions("metadata.name"));
    let p = GlobalNetworkPolicy::new(
        ObjectMeta::named("default.allow"),
        GlobalNetworkPolicySpec::default(),
    );
    p.validate().unwrap();
    let p = GlobalNetworkPolicy::new(
        ObjectMeta::namespaced("x", "allow"),
        GlobalNetworkPolicySpec::default(),
    );
    assert!(p.validate().unwrap_err().mentions("metadata.namespace"));
}

/// Enum values and unknown fields fail at parse time with the path in the message.
#[test]
fn schema_errors_name_the_field() {
    let doc = |spec: &str| {
        let header = "apiVersion: trellis.dev/v1\nkind: GlobalNetworkPolicy\n";
        format!("{header}metadata: {{name: p}}\nspec: {spec}\n")
    };
    let cases = [
        (r#"{ingress: [{action: Accept}]}"#, "spec.ingress[0].action"),
        (r#"{ingress: [{protocol: TCP}]}"#, "action"),
        (
            r#"{ingress: [{action: Allow, protocol: tcp}]}"#,
            "spec.ingress[0].protocol",
        ),
        (
            r#"{ingress: [{action: Allow, protocol: 256}]}"#,
            "spec.ingress[0].protocol",
        ),
        (
            r#"{egress: [{action: Allow, notProtocol: GRE}]}"#,
            "spec.egress[0].notProtocol",
        ),
        (
            r#"{ingress: [{action: Allow, protocol: TCP, destination: {ports: [70000]}}]}"#,
            "spec.ingress[0].destination.ports[0]",
        ),
        (
            r#"{ingress: [{action: Allow, protocol: TCP, destination: {ports: ["1:70000"]}}]}"#,
            "spec.ingress[0].destination.ports[0]",
        ),
        (r#"{types: [Forward]}"#, "spec.types[0]"),
        (r#"{doNotTrack: true}"#, "doNotTrack"),
        (r#"{preDNAT: true}"#, "preDNAT"),
        (
            r#"{ingress: [{action: Allow, source: {services: {name: x}}}]}"#,
            "services",
        ),
        (r#"{ingress: [{action: Allow, icmp: {typ: 1}}]}"#, "typ"),
    ];
    for (spec, needle) in cases {
        let msg = parse_documents(&doc(spec), "gnp.yaml")
            .expect_err(spec)
            .to_string();
        assert!(
            msg.contains(needle),
            "{spec}: {msg:?} should mention {needle}"
        );
    }
}

#[test]
fn protocol_and_port_text_forms() {
    assert_eq!(
        serde_json::to_value(IpProtocol::IcmpV6).unwrap(),
        json!("ICMPv6")
    );
    assert_eq!(
        serde_json::to_value(IpProtocol::Number(47)).unwrap(),
        json!(47)
    );
    assert_eq!(
        serde_json::from_value::<IpProtocol>(json!("47")).unwrap(),
        IpProtocol::Number(47)
    );
    assert_eq!(IpProtocol::UdpLite.number(), 136);
    assert_eq!(
        serde_json::to_value(Port::Range { min: 1, max: 2 }).unwrap(),
        json!("1:2")
    );
    assert_eq!(serde_json::to_value(Port::single(80)).unwrap(), json!(80));
    assert_eq!(
        serde_json::from_value::<Port>(json!("443")).unwrap(),
        Port::single(443)
    );
    assert_eq!(Port::Named("http".into()).to_string(), "http");
}
