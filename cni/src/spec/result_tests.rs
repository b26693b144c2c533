use serde_json::json;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A result using every field any version has.
fn full() -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                mac: Some("ee:ee:ee:ee:ee:ee".into()),
                ..Interface::new("trl1a2b3c4d5e6")
            },
            Interface {
                name: "eth0".into(),
                mac: Some("aa:bb:cc:dd:ee:ff".into()),
                mtu: Some(1450),
                sandbox: Some("/proc/4242/ns/net".into()),
                socket_path: Some("/run/vhost/eth0.sock".into()),
                pci_id: Some("0000:04:00.5".into()),
            },
        ],
        ips: vec![
            IpConfig::new(net("10.244.1.5/32"), Some(1)),
            IpConfig {
                gateway: Some(ip("fd00:10:244::1")),
                ..IpConfig::new(net("fd00:10:244::5/128"), Some(1))
            },
        ],
        routes: vec![
            Route::new(net("0.0.0.0/0"), Some(ip("169.254.1.1"))),
            Route {
                scope: Some(253),
                ..Route::new(net("169.254.1.1/32"), None)
            },
            Route {
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(100),
                table: Some(254),
                ..Route::new(net("::/0"), Some(ip("fe80::ecee:eeff:feee:eeee")))
            },
        ],
        dns: Dns {
            nameservers: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            search: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        },
    }
}

const GOLDEN_1_1_0: &str = r#"{
  "cniVersion": "1.1.0",
  "interfaces": [
    {
      "name": "trl1a2b3c4d5e6",
      "mac": "ee:ee:ee:ee:ee:ee"
    },
    {
      "name": "eth0",
      "mac": "aa:bb:cc:dd:ee:ff",
      "mtu": 1450,
      "sandbox": "/proc/4242/ns/net",
      "socketPath": "/run/vhost/eth0.sock",
      "pciID": "0000:04:00.5"
    }
  ],
  "ips": [
    {
      "interface": 1,
      "address": "10.244.1.5/32"
    },
    {
      "interface": 1,
      "address": "fd00:10:244::5/128",
      "gateway": "fd00:10:244::1"
    }
  ],
  "routes": [
    {
      "dst": "0.0.0.0/0",
      "gw": "169.254.1.1"
    },
    {
      "dst": "169.254.1.1/32",
      "scope": 253
    },
    {
      "dst": "::/0",
      "gw": "fe80::ecee:eeff:feee:eeee",
      "mtu": 1400,
      "advmss": 1360,
      "priority": 100,
      "table": 254
    }
  ],
  "dns": {
    "nameservers": [
      "10.96.0.10"
    ],
    "domain": "cluster.local",
    "search": [
      "default.svc.cluster.local"
    ],
    "options": [
      "ndots:5"
    ]
  }
}"#;

const GOLDEN_1_0_0: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"trl1a2b3c4d5e6","mac":"ee:ee:ee:ee:ee:ee"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/proc/4242/ns/net"}],"ips":[{"interface":1,"address":"10.244.1.5/32"},{"interface":1,"address":"fd00:10:244::5/128","gateway":"fd00:10:244::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"169.254.1.1/32"},{"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"}],"dns":{"nameservers":["10.96.0.10"],"domain":"cluster.local","search":["default.svc.cluster.local"],"options":["ndots:5"]}}"#;

const GOLDEN_0_4_0: &str = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"trl1a2b3c4d5e6","mac":"ee:ee:ee:ee:ee:ee"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/proc/4242/ns/net"}],"ips":[{"version":"4","interface":1,"address":"10.244.1.5/32"},{"version":"6","interface":1,"address":"fd00:10:244::5/128","gateway":"fd00:10:244::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"169.254.1.1/32"},{"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"}],"dns":{"nameservers":["10.96.0.10"],"domain":"cluster.local","search":["default.svc.cluster.local"],"options":["ndots:5"]}}"#;

#[test]
fn golden_rendering_per_version() {
    let r = full();
    assert_eq!(r.to_json_pretty(CniVersion::V1_1_0), GOLDEN_1_1_0);
    assert_eq!(r.to_json(CniVersion::V1_0_0), GOLDEN_1_0_0);
    assert_eq!(r.to_json(CniVersion::V0_4_0), GOLDEN_0_4_0);
    let compact: serde_json::Value = serde_json::from_str(&r.to_json(CniVersion::V1_1_0)).unwrap();
    let pretty: serde_json::Value = serde_json::from_str(GOLDEN_1_1_0).unwrap();
    assert_eq!(compact, pretty);
}

#[test]
fn the_answer_is_in_the_version_asked_for() {
    // containerd 1.6 rejects "1.1.0" when its configuration said "0.4.0" or "1.0.0".
    for v in CniVersion::ALL {
        let out: serde_json::Value = serde_json::from_str(&full().to_json(v)).unwrap();
        assert_eq!(out["cniVersion"], v.as_str());
    }
}

#[test]
fn empty_parts_are_left_out() {
    let r = CniResult::default();
    assert_eq!(r.to_json(CniVersion::V1_0_0), r#"{"cniVersion":"1.0.0"}"#);
    let r = CniResult {
        ips: vec![IpConfig::new(net("10.1.0.5/16"), None)],
        ..CniResult::default()
    };
    assert_eq!(
        r.to_json(CniVersion::V0_4_0),
        r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/16"}]}"#
    );
}

#[test]
fn every_version_round_trips_what_it_can_carry() {
    let r = full();
    for v in CniVersion::ALL {
        let back = CniResult::parse(&r.to_json(v)).unwrap();
        assert_eq!(back, r.restricted_to(v), "{v}");
        assert_eq!(CniResult::parse(&r.to_json_pretty(v)).unwrap(), back);
    }
    assert_eq!(r.restricted_to(CniVersion::V1_1_0), r);
    assert_eq!(
        r.restricted_to(CniVersion::V0_4_0),
        r.restricted_to(CniVersion::V1_0_0)
    );
}

#[test]
fn conversions_between_versions() {
    let r = full();
    let goldens = [
        (CniVersion::V0_4_0, GOLDEN_0_4_0.to_string()),
        (CniVersion::V1_0_0, GOLDEN_1_0_0.to_string()),
        (CniVersion::V1_1_0, r.to_json(CniVersion::V1_1_0)),
    ];
    for (from, text) in &goldens {
        let parsed = CniResult::parse(text).unwrap();
        for (to, expected) in &goldens {
            let converted = parsed.to_json(*to);
            if from == &CniVersion::V1_1_0 || to != &CniVersion::V1_1_0 {
                assert_eq!(&converted, expected, "{from} -> {to}");
            } else {
                // Up to 1.1.0 from an older version: nothing to invent, the extras stay unset.
                assert_eq!(
                    converted,
                    r.restricted_to(*from).to_json(*to),
                    "{from} -> {to}"
                );
            }
        }
    }
    // 0.4.0 -> 1.0.0 -> 1.1.0 -> 0.4.0 is lossless for what 0.4.0 carries.
    let mut text = GOLDEN_0_4_0.to_string();
    for v in [CniVersion::V1_0_0, CniVersion::V1_1_0, CniVersion::V0_4_0] {
        text = CniResult::parse(&text).unwrap().to_json(v);
    }
    assert_eq!(text, GOLDEN_0_4_0);
}

#[test]
fn reads_the_spec_example_result() {
    // SPEC.md appendix: the bridge plugin's ADD result.
    let r = CniResult::parse(
        r#"{
        "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
        ],
        "dns": {"nameservers": ["10.1.0.1"]}
    }"#,
    )
    .unwrap();
    assert_eq!(r.interfaces.len(), 3);
    assert_eq!(r.interface_index("eth0"), Some(2));
    assert_eq!(r.interface_index("eth1"), None);
    assert_eq!(r.ips[0].interface, Some(2));
    assert_eq!(r.ips[0].address.addr(), ip("10.1.0.5"));
    assert_eq!(r.ips[0].address.prefix_len(), 16);
    assert_eq!(r.ips[0].gateway, Some(ip("10.1.0.1")));
    assert_eq!(r.routes, vec![Route::new(net("0.0.0.0/0"), None)]);
    assert_eq!(r.dns.nameservers, ["10.1.0.1"]);
}

#[test]
fn reads_ipam_results_without_interfaces() {
    // host-local 1.1.1 answering a 0.4.0 request: `version` in ips, empty dns object.
    let r = CniResult::parse(
        r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.22.0.7/16","gateway":"10.22.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
    )
    .unwrap();
    assert!(r.interfaces.is_empty());
    assert_eq!(r.ips[0].interface, None);
    assert!(r.dns.is_empty());
    assert_eq!(
        r.to_json(CniVersion::V1_0_0),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.22.0.7/16","gateway":"10.22.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}"#
    );
}

#[test]
fn empty_strings_and_nulls_are_absent() {
    let r = CniResult::parse(
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"","sandbox":null}],
            "ips":[{"address":"10.0.0.2/24","gateway":""}],"routes":null,"dns":null}"#,
    )
    .unwrap();
    assert_eq!(r.interfaces, vec![Interface::new("eth0")]);
    assert_eq!(r.ips[0].gateway, None);
    assert!(r.routes.is_empty() && r.dns.is_empty());
}

#[test]
fn older_result_versions_of_the_same_format_are_read() {
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let text = format!(r#"{{"cniVersion":"{v}","ips":[{{"address":"10.0.0.2/24"}}]}}"#);
        assert!(CniResult::parse(&text).is_ok(), "{v}");
    }
    for v in ["0.1.0", "0.2.0", "2.0.0"] {
        let err = CniResult::parse(&format!(r#"{{"cniVersion":"{v}","ip4":{{}}}}"#)).unwrap_err();
        assert!(matches!(err, ResultError::Version(_)), "{v}: {err:?}");
        assert_eq!(CniError::from(err).code, 1);
    }
}

#[test]
fn decoding_errors_name_the_field() {
    let cases = [
        (
            json!({"ips": [{"address": "10.0.0.2"}]}),
            "ips[0].address: \"10.0.0.2\" is not an address with a prefix length (CIDR)",
        ),
        (
            json!({"ips": [{"gateway": "10.0.0.1"}]}),
            "ips[0].address: required field is missing",
        ),
        (
            json!({"ips": [{"address": "10.0.0.2/24", "gateway": "x"}]}),
            "ips[0].gateway: \"x\" is not an IP address",
        ),
        (
            json!({"ips": [{"address": "10.0.0.2/24", "interface": -1}]}),
            "ips[0].interface: -1 is not a non-negative integer",
        ),
        (
            json!({"ips": [{"address": "10.0.0.2/24", "interface": "0"}]}),
            "ips[0].interface: expected an integer, found a string",
        ),
        (
            json!({"ips": [{"address": "10.0.0.2/24", "version": "6"}]}),
            "ips[0].version: \"6\" does not match address 10.0.0.2/24 (IPv4)",
        ),
        (
            json!({"ips": [{"address": "fd00::2/64", "version": "5"}]}),
            "ips[0].version: \"5\" does not match address fd00::2/64 (IPv6)",
        ),
        (
            json!({"routes": [{"gw": "10.0.0.1"}]}),
            "routes[0].dst: required field is missing",
        ),
        (
            json!({"routes": [{"dst": "0.0.0.0/0", "scope": 300}]}),
            "routes[0].scope: 300 is larger than 255",
        ),
        (
            json!({"routes": [{"dst": "0.0.0.0/0", "table": 1.5}]}),
            "routes[0].table: 1.5 is not a non-negative integer",
        ),
        (
            json!({"interfaces": [{"mac": "aa:bb:cc:dd:ee:ff"}]}),
            "interfaces[0].name: required field is missing",
        ),
        (
            json!({"interfaces": {}}),
            "interfaces: expected an array, found an object",
        ),
        (
            json!({"dns": {"nameservers": "10.0.0.1"}}),
            "dns.nameservers: expected an array, found a string",
        ),
        (
            json!({"cniVersion": 1}),
            "cniVersion: expected a string, found a number",
        ),
        (json!([]), "(document): expected an object, found an array"),
    ];
    for (input, message) in cases {
        let err = CniResult::from_value(&input, "").unwrap_err();
        assert_eq!(err.to_string(), format!("result {message}"), "{input}");
        assert_eq!(err.code(), ErrorCode::DecodingFailure, "{input}");
    }
    let err = CniResult::from_value(&json!({"ips": [{}]}), "prevResult").unwrap_err();
    assert_eq!(
        err.to_string(),
        "result prevResult.ips[0].address: required field is missing"
    );
}

#[test]
fn syntax_errors_are_decoding_failures() {
    let err = CniResult::parse("{\"ips\": [").unwrap_err();
    assert!(matches!(err, ResultError::Syntax(_)));
    assert_eq!(CniError::from(err).code, 6);
}

#[test]
fn extended_fields_are_detected() {
    let r = full();
    assert!(!r.routes[0].has_extended_fields());
    assert!(r.routes[1].has_extended_fields());
    assert!(r.routes[2].has_extended_fields());
    assert_eq!(
        r.ips.iter().map(IpConfig::family).collect::<Vec<_>>(),
        ["4", "6"]
    );
}
