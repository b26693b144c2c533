use serde_json::{json, Value};

use super::*;
use crate::spec::json::Problem;

fn parse(v: Value) -> Result<RuntimeConfig, FieldError> {
    RuntimeConfig::from_obj(&Obj::new(&v, "runtimeConfig")?)
}

fn mapping(host: u16, container: u16, protocol: Protocol, host_ip: Option<&str>) -> PortMapping {
    PortMapping {
        host_port: host,
        container_port: container,
        protocol,
        host_ip: host_ip.map(|ip| ip.parse().unwrap()),
    }
}

#[test]
fn port_mappings_in_conventions_camel_case() {
    let rc = parse(json!({"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8000, "containerPort": 8001, "protocol": "udp", "hostIP": "127.0.0.1"},
    ]}))
    .unwrap();
    assert_eq!(
        rc.port_mappings,
        vec![
            mapping(8080, 80, Protocol::Tcp, None),
            mapping(8000, 8001, Protocol::Udp, Some("127.0.0.1")),
        ]
    );
}

#[test]
fn port_mappings_in_containerd_cri_pascal_case() {
    // go-cni's PortMapping has no JSON tags; HostIP is "" when the pod spec sets none.
    let rc = parse(json!({"portMappings": [
        {"HostPort": 30080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
        {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": "::1"},
        {"HostPort": 9999, "ContainerPort": 9999, "Protocol": "SCTP", "HostIP": "0.0.0.0"},
    ]}))
    .unwrap();
    assert_eq!(
        rc.port_mappings,
        vec![
            mapping(30080, 80, Protocol::Tcp, None),
            mapping(5353, 53, Protocol::Udp, Some("::1")),
            mapping(9999, 9999, Protocol::Sctp, Some("0.0.0.0")),
        ]
    );
}

#[test]
fn port_mapping_spellings_may_mix_and_agree() {
    let rc = parse(json!({"portMappings": [
        {"hostPort": 80, "HostPort": 80, "ContainerPort": 8080}
    ]}))
    .unwrap();
    assert_eq!(
        rc.port_mappings,
        vec![mapping(80, 8080, Protocol::Tcp, None)]
    );
}

#[test]
fn port_mapping_errors_name_the_entry_and_key() {
    let cases = [
        (
            json!({"portMappings": [{"hostPort": 1, "containerPort": 1}, {"containerPort": 80}]}),
            "runtimeConfig.portMappings[1].hostPort: required field is missing",
        ),
        (
            json!({"portMappings": [{"HostPort": 0, "ContainerPort": 80}]}),
            "runtimeConfig.portMappings[0].HostPort: port 0 is not a port",
        ),
        (
            json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]}),
            "runtimeConfig.portMappings[0].hostPort: 70000 is larger than 65535",
        ),
        (
            json!({"portMappings": [{"hostPort": -1, "containerPort": 80}]}),
            "runtimeConfig.portMappings[0].hostPort: -1 is not a non-negative integer",
        ),
        (
            json!({"portMappings": [{"hostPort": "80", "containerPort": 80}]}),
            "runtimeConfig.portMappings[0].hostPort: expected an integer, found a string",
        ),
        (
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "Protocol": "icmp"}]}),
            "runtimeConfig.portMappings[0].Protocol: \"icmp\" is not tcp, udp or sctp",
        ),
        (
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}]}),
            "runtimeConfig.portMappings[0].hostIP: \"localhost\" is not an IP address",
        ),
        (
            json!({"portMappings": [{"hostPort": 80, "HostPort": 81, "containerPort": 80}]}),
            "runtimeConfig.portMappings[0]: both hostPort (80) and HostPort (81) are given",
        ),
        (
            json!({"portMappings": {"hostPort": 80}}),
            "runtimeConfig.portMappings: expected an array, found an object",
        ),
        (
            json!({"portMappings": ["80:80"]}),
            "runtimeConfig.portMappings[0]: expected an object, found a string",
        ),
    ];
    for (input, message) in cases {
        let err = parse(input.clone()).unwrap_err();
        assert_eq!(err.to_string(), message, "{input}");
    }
}

#[test]
fn ips_mac_and_bandwidth() {
    let rc = parse(json!({
        "ips": ["10.10.0.1/24", "3ffe:ffff:0:01ff::1"],
        "mac": "C2:11:22:33:44:55",
        "bandwidth": {"ingressRate": 2048, "ingressBurst": 1600, "egressRate": 4096, "egressBurst": 1600},
    }))
    .unwrap();
    assert_eq!(
        rc.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.10.0.1/24", "3ffe:ffff:0:1ff::1"]
    );
    assert_eq!(rc.mac.unwrap().to_string(), "c2:11:22:33:44:55");
    assert_eq!(
        rc.bandwidth,
        Some(Bandwidth {
            ingress_rate: 2048,
            ingress_burst: 1600,
            egress_rate: 4096,
            egress_burst: 1600
        })
    );
}

#[test]
fn bandwidth_from_containerd_is_pascal_case() {
    let rc = parse(
        json!({"bandwidth": {"IngressRate": 1000000, "IngressBurst": 4294967295u64,
        "EgressRate": 0, "EgressBurst": 0}}),
    )
    .unwrap();
    assert_eq!(
        rc.bandwidth,
        Some(Bandwidth {
            ingress_rate: 1_000_000,
            ingress_burst: 4_294_967_295,
            egress_rate: 0,
            egress_burst: 0
        })
    );
}

#[test]
fn other_capabilities_are_kept() {
    let rc = parse(json!({
        "dns": {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"]},
        "ipRanges": [[{"subnet": "10.1.2.0/24"}]],
        "cgroupPath": "/kubepods/pod1",
        "mac": null,
    }))
    .unwrap();
    assert_eq!(rc.mac, None);
    assert_eq!(
        rc.extra.keys().collect::<Vec<_>>(),
        ["cgroupPath", "dns", "ipRanges"]
    );
    assert_eq!(rc.extra["cgroupPath"], "/kubepods/pod1");
}

#[test]
fn bad_ips_and_macs_are_invalid_not_undecodable() {
    let err = parse(json!({"ips": ["10.0.0.1", "10.0.0.300"]})).unwrap_err();
    assert_eq!(err.path, "runtimeConfig.ips[1]");
    assert!(matches!(err.problem, Problem::Invalid(_)));
    let err = parse(json!({"ips": [5]})).unwrap_err();
    assert!(err.is_type_error());
    for bad in [
        "c2:11:22:33:44",
        "c2:11:22:33:44:55:66",
        "zz:11:22:33:44:55",
        "c211.2233.4455",
        "c2:11-22:33:44:55",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
        "c2:1:22:33:44:55",
    ] {
        let err = parse(json!({ "mac": bad })).unwrap_err();
        assert_eq!(err.path, "runtimeConfig.mac", "{bad}");
        assert!(!err.is_type_error(), "{bad}");
    }
}

#[test]
fn mac_address_forms() {
    for (input, shown) in [
        ("c2:11:22:33:44:55", "c2:11:22:33:44:55"),
        ("C2-11-22-33-44-55", "c2:11:22:33:44:55"),
        ("02:00:00:00:00:01", "02:00:00:00:00:01"),
    ] {
        assert_eq!(input.parse::<MacAddr>().unwrap().to_string(), shown);
    }
}

#[test]
fn protocols() {
    for (s, p) in [
        ("tcp", Protocol::Tcp),
        ("UDP", Protocol::Udp),
        ("Sctp", Protocol::Sctp),
    ] {
        assert_eq!(s.parse::<Protocol>(), Ok(p));
        assert_eq!(p.to_string(), s.to_ascii_lowercase());
    }
}
