use serde_json::json;

use super::*;
use crate::spec::ipam::{PoolRef, TrellisIpam, TRELLIS_IPAM};
use crate::spec::json::Problem;
use crate::spec::runtime::{Bandwidth, PortMapping, Protocol};

fn parse(v: Value) -> Result<NetConf, ConfigError> {
    NetConf::from_value(&v)
}

fn trellis_ipam(conf: &NetConf) -> &TrellisIpam {
    match &conf.ipam {
        Some(Ipam::Trellis(t)) => t,
        other => panic!("not trellis-ipam: {other:?}"),
    }
}

/// What containerd's CRI plugin hands Trellis for a pod with a hostPort and a bandwidth
/// annotation: the conflist's first entry, cniVersion/name inserted, capabilities not stripped,
/// runtimeConfig PascalCase.
const CONTAINERD_CRI_ADD: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "type": "trellis",
  "log_level": "info",
  "log_file_path": "/var/log/trellis/cni.log",
  "nodename": "node-1",
  "mtu": 1450,
  "ipam": {"type": "trellis-ipam", "assign_ipv4": "true", "assign_ipv6": "true",
           "ipv4_pools": ["10.244.0.0/16", "default-ipv4-ippool"], "ipv6_pools": ["fd00:10:244::/64"]},
  "capabilities": {"portMappings": true, "bandwidth": true},
  "runtimeConfig": {
    "portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
    "bandwidth": {"IngressRate": 1000000, "IngressBurst": 2147483647, "EgressRate": 1000000, "EgressBurst": 2147483647}
  },
  "datastore_type": "etcdv3",
  "etcd_endpoints": "http://127.0.0.1:2379"
}"#;

#[test]
fn containerd_cri_add() {
    let c = NetConf::parse(CONTAINERD_CRI_ADD).unwrap();
    assert_eq!(c.cni_version, CniVersion::V1_0_0);
    assert_eq!(
        (c.name.as_str(), c.plugin_type.as_str()),
        ("k8s-pod-network", "trellis")
    );
    assert_eq!(c.mtu, Some(1450));
    assert_eq!(c.log_level, Some(LogLevel::Info));
    assert_eq!(
        c.log_file_path,
        Some(PathBuf::from("/var/log/trellis/cni.log"))
    );
    assert_eq!(c.nodename.as_deref(), Some("node-1"));
    assert_eq!(c.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
    let ipam = trellis_ipam(&c);
    assert_eq!(
        ipam.ipv4_pools,
        vec![
            PoolRef::Cidr("10.244.0.0/16".parse().unwrap()),
            PoolRef::Name("default-ipv4-ippool".into())
        ]
    );
    assert_eq!(
        ipam.ipv6_pools,
        vec![PoolRef::Cidr("fd00:10:244::/64".parse().unwrap())]
    );
    assert!(ipam.assign_ipv4 && ipam.assign_ipv6);
    assert_eq!(c.ipam.as_ref().unwrap().plugin_type(), TRELLIS_IPAM);
    assert_eq!(
        c.runtime_config.port_mappings,
        vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None
        }]
    );
    assert_eq!(
        c.runtime_config.bandwidth,
        Some(Bandwidth {
            ingress_rate: 1_000_000,
            ingress_burst: 2_147_483_647,
            egress_rate: 1_000_000,
            egress_burst: 2_147_483_647,
        })
    );
    assert_eq!(c.capabilities.get("portMappings"), Some(&true));
    assert_eq!(
        c.extra.keys().collect::<Vec<_>>(),
        ["datastore_type", "etcd_endpoints"]
    );
    assert_eq!(c.prev_result, None);
    assert_eq!(c.valid_attachments, None);
}

#[test]
fn calico_conflist_entry_with_delegated_ipam() {
    // Calico's 10-calico.conflist entry as the runtime passes it (placeholders filled in).
    let c = parse(json!({
        "cniVersion": "0.4.0", "name": "k8s-pod-network", "type": "calico",
        "log_level": "warning", "datastore_type": "kubernetes", "nodename": "worker-2",
        "mtu": 0,
        "ipam": {"type": "host-local", "subnet": "usePodCidr"},
        "policy": {"type": "k8s"},
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}
    }))
    .unwrap();
    assert_eq!(c.cni_version, CniVersion::V0_4_0);
    assert_eq!(c.mtu, None, "0 lets the agent decide");
    assert_eq!(c.log_level, Some(LogLevel::Warn));
    let Some(Ipam::Delegated(d)) = &c.ipam else {
        panic!("{:?}", c.ipam)
    };
    assert_eq!(d.plugin_type, "host-local");
    assert_eq!(
        Value::Object(d.raw.clone()),
        json!({"type": "host-local", "subnet": "usePodCidr"})
    );
    assert_eq!(
        c.extra.keys().collect::<Vec<_>>(),
        ["datastore_type", "kubernetes", "policy"]
    );
}

#[test]
fn calico_ipam_keys_with_booleans_and_defaults() {
    let c = parse(
        json!({"cniVersion": "1.1.0", "name": "n", "type": "trellis",
        "ipam": {"type": "trellis-ipam"}}),
    )
    .unwrap();
    let ipam = trellis_ipam(&c);
    assert!(
        ipam.assign_ipv4 && !ipam.assign_ipv6,
        "defaults: IPv4 yes, IPv6 no"
    );
    assert!(ipam.ipv4_pools.is_empty() && ipam.ipv6_pools.is_empty());
    let c = parse(json!({"cniVersion": "1.1.0", "name": "n", "type": "trellis",
        "ipam": {"type": "trellis-ipam", "assign_ipv4": false, "assign_ipv6": "TRUE", "custom": 1}}))
    .unwrap();
    let ipam = trellis_ipam(&c);
    assert!(!ipam.assign_ipv4 && ipam.assign_ipv6);
    assert_eq!(ipam.raw["custom"], 1);
}

#[test]
fn reference_bridge_with_host_local() {
    // SPEC.md appendix, step 1 of the ADD example.
    let c = parse(json!({
        "cniVersion": "1.1.0", "name": "dbnet", "type": "bridge", "bridge": "cni0",
        "keyA": ["some more", "plugin specific", "configuration"],
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1"},
        "dns": {"nameservers": ["10.1.0.1"]}
    }))
    .unwrap();
    assert_eq!(c.ipam.as_ref().map(Ipam::plugin_type), Some("host-local"));
    assert_eq!(c.ipam.as_ref().unwrap().raw()["subnet"], "10.1.0.0/16");
    assert_eq!(c.dns.nameservers, ["10.1.0.1"]);
    assert_eq!(c.extra.keys().collect::<Vec<_>>(), ["bridge", "keyA"]);
}

#[test]
fn chained_portmap_with_prev_result() {
    // SPEC.md appendix, step 3 of the ADD example.
    let prev = json!({
        "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/var/run/netns/blue"}
        ],
        "dns": {"nameservers": ["10.1.0.1"]}
    });
    let c = parse(json!({
        "cniVersion": "1.1.0", "name": "dbnet", "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": prev.clone()
    }))
    .unwrap();
    assert_eq!(c.raw_prev_result.as_ref(), Some(&prev));
    let r = c.prev_result.unwrap();
    assert_eq!(r.interface_index("eth0"), Some(2));
    assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/16");
    assert_eq!(c.runtime_config.port_mappings[0].host_port, 8080);
    assert_eq!(c.ipam, None);
}

#[test]
fn prev_result_in_0_4_0() {
    let c = parse(json!({
        "cniVersion": "0.4.0", "name": "n", "type": "trellis",
        "prevResult": {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"version": "4", "address": "10.0.0.9/32", "interface": 0}]}
    }))
    .unwrap();
    let r = c.prev_result.unwrap();
    assert_eq!(r.ips[0].interface, Some(0));
    assert_eq!(
        r.to_json(c.cni_version),
        r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","interface":0,"address":"10.0.0.9/32"}]}"#
    );
}

#[test]
fn gc_with_valid_attachments() {
    let c = parse(json!({
        "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "trellis",
        "ipam": {"type": "trellis-ipam"},
        "cni.dev/valid-attachments": [
            {"containerID": "d1f7a1c8e0b2", "ifname": "eth0"},
            {"containerID": "k8s.io-77aa", "ifname": "net1"}
        ]
    }))
    .unwrap();
    assert_eq!(
        c.valid_attachments,
        Some(vec![
            GcAttachment {
                container_id: "d1f7a1c8e0b2".into(),
                ifname: "eth0".into()
            },
            GcAttachment {
                container_id: "k8s.io-77aa".into(),
                ifname: "net1".into()
            },
        ])
    );
    let empty = parse(json!({"cniVersion": "1.1.0", "name": "n", "type": "t",
        "cni.dev/valid-attachments": []}))
    .unwrap();
    assert_eq!(
        empty.valid_attachments,
        Some(vec![]),
        "an empty list means: nothing is valid"
    );
}

#[test]
fn requested_ips_precedence() {
    let args = CniArgs::parse("IP=10.0.0.3").unwrap();
    let base = json!({"cniVersion": "1.0.0", "name": "n", "type": "trellis"});
    let c = parse(base.clone()).unwrap();
    assert_eq!(c.requested_ips(&args), args.ips.as_slice());
    assert!(c.requested_ips(&CniArgs::default()).is_empty());

    let mut with_args = base.clone();
    with_args["args"] = json!({"cni": {"ips": ["10.0.0.2/24"], "labels": []}});
    let c = parse(with_args).unwrap();
    assert_eq!(c.requested_ips(&args)[0].to_string(), "10.0.0.2/24");
    assert!(
        c.extra.contains_key("args"),
        "args is kept whole for others to read"
    );

    let mut with_rc = base;
    with_rc["args"] = json!({"cni": {"ips": ["10.0.0.2"]}});
    with_rc["runtimeConfig"] = json!({"ips": ["10.0.0.1"]});
    let c = parse(with_rc).unwrap();
    assert_eq!(c.requested_ips(&args)[0].to_string(), "10.0.0.1");
}

#[test]
fn agent_socket_and_log_settings() {
    let c = parse(
        json!({"cniVersion": "1.0.0", "name": "n", "type": "trellis",
        "agent_socket": "/run/trellis/a.sock", "log_level": "DEBUG", "log_file_path": ""}),
    )
    .unwrap();
    assert_eq!(c.agent_socket, PathBuf::from("/run/trellis/a.sock"));
    assert_eq!(c.log_level, Some(LogLevel::Debug));
    assert_eq!(c.log_file_path, None);
    for (s, l) in [
        ("off", LogLevel::Off),
        ("fatal", LogLevel::Error),
        ("Trace", LogLevel::Trace),
    ] {
        assert_eq!(s.parse::<LogLevel>(), Ok(l));
    }
    assert_eq!(LogLevel::Warn.to_string(), "warn");
}

/// `(input, expected CNI code, expected message)` for configurations that must be refused.
fn refused() -> Vec<(Value, u32, &'static str)> {
    let ok = |extra: Value| {
        let mut v = json!({"cniVersion": "1.0.0", "name": "net1", "type": "trellis"});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    vec![
        (json!([1]), 6, "network configuration: (document): expected an object, found an array"),
        (json!({"name": "n", "type": "t"}), 1, "network configuration: cniVersion is missing (which means 0.1.0); supported versions: 0.4.0, 1.0.0, 1.1.0"),
        (json!({"cniVersion": "0.3.1", "name": "n", "type": "t"}), 1, "network configuration: CNI version \"0.3.1\" is not supported; supported versions: 0.4.0, 1.0.0, 1.1.0"),
        (json!({"cniVersion": 1.0, "name": "n", "type": "t"}), 6, "network configuration: cniVersion: expected a string, found a number"),
        (json!({"cniVersion": "1.0.0", "type": "t"}), 7, "network configuration: name: required field is missing"),
        (json!({"cniVersion": "1.0.0", "name": "-net", "type": "t"}), 7, "network configuration: name: \"-net\" must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"),
        (json!({"cniVersion": "1.0.0", "name": "a/b", "type": "t"}), 7, "network configuration: name: \"a/b\" must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"),
        (json!({"cniVersion": "1.0.0", "name": "n"}), 7, "network configuration: type: required field is missing"),
        (json!({"cniVersion": "1.0.0", "name": "n", "type": "../bin/x"}), 7, "network configuration: type: \"../bin/x\" must be a binary name, without '/' or '\\'"),
        (ok(json!({"ipam": "trellis-ipam"})), 6, "network configuration: ipam: expected an object, found a string"),
        (ok(json!({"ipam": {}})), 7, "network configuration: ipam.type: required field is missing"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "ipv4_pools": ["fd00::/64"]}})), 7, "network configuration: ipam.ipv4_pools[0]: \"fd00::/64\" is an IPv6 CIDR"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "ipv6_pools": ["fd00::/64", "10.0.0.0/8"]}})), 7, "network configuration: ipam.ipv6_pools[1]: \"10.0.0.0/8\" is an IPv4 CIDR"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "ipv4_pools": ["10.0.0.1/8"]}})), 7, "network configuration: ipam.ipv4_pools[0]: \"10.0.0.1/8\" has host bits set (the pool is 10.0.0.0/8)"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "ipv4_pools": ["Default_Pool"]}})), 7, "network configuration: ipam.ipv4_pools[0]: \"Default_Pool\" is neither a CIDR nor a pool name (lower case letters, digits, '-', '.')"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "ipv4_pools": "default"}})), 6, "network configuration: ipam.ipv4_pools: expected an array, found a string"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "assign_ipv4": "yes"}})), 7, "network configuration: ipam.assign_ipv4: \"yes\" is not true or false"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "assign_ipv6": 1}})), 6, "network configuration: ipam.assign_ipv6: expected a boolean, found a number"),
        (ok(json!({"ipam": {"type": "trellis-ipam", "assign_ipv4": false}})), 7, "network configuration: ipam: assign_ipv4 and assign_ipv6 are both false: the pod would get no address"),
        (ok(json!({"mtu": "1450"})), 6, "network configuration: mtu: expected an integer, found a string"),
        (ok(json!({"mtu": 67})), 7, "network configuration: mtu: 67 is below the minimum MTU of 68"),
        (ok(json!({"mtu": 65536})), 7, "network configuration: mtu: 65536 is larger than 65535"),
        (ok(json!({"agent_socket": "agent.sock"})), 7, "network configuration: agent_socket: \"agent.sock\" is not an absolute path"),
        (ok(json!({"log_level": "loud"})), 7, "network configuration: log_level: \"loud\" is not a log level (off, error, warning, info, debug, trace)"),
        (ok(json!({"dns": {"search": [1]}})), 6, "network configuration: dns.search[0]: expected a string, found a number"),
        (ok(json!({"capabilities": {"portMappings": "yes"}})), 6, "network configuration: capabilities.portMappings: expected a boolean, found a string"),
        (ok(json!({"runtimeConfig": []})), 6, "network configuration: runtimeConfig: expected an object, found an array"),
        (ok(json!({"runtimeConfig": {"portMappings": [{"hostPort": 80}]}})), 7, "network configuration: runtimeConfig.portMappings[0].containerPort: required field is missing"),
        (ok(json!({"args": {"cni": {"ips": ["10.0.0"]}}})), 7, "network configuration: args.cni.ips[0]: \"10.0.0\" is not an IP address"),
        (ok(json!({"cni.dev/valid-attachments": [{"containerID": "a"}]})), 7, "network configuration: cni.dev/valid-attachments[0].ifname: required field is missing"),
        (ok(json!({"cni.dev/valid-attachments": {}})), 6, "network configuration: cni.dev/valid-attachments: expected an array, found an object"),
        (ok(json!({"prevResult": {"ips": [{"address": "10.0.0.5"}]}})), 6, "network configuration: prevResult.ips[0].address: \"10.0.0.5\" is not an address with a prefix length (CIDR)"),
        (ok(json!({"prevResult": {"cniVersion": "0.2.0", "ip4": {}}})), 1, "network configuration: prevResult: CNI version \"0.2.0\" is not supported; supported versions: 0.4.0, 1.0.0, 1.1.0"),
        (ok(json!({"prevResult": 5})), 6, "network configuration: prevResult: expected an object, found a number"),
    ]
}

#[test]
fn refused_configurations_name_the_field_and_code() {
    for (input, code, message) in refused() {
        let err = parse(input.clone()).unwrap_err();
        assert_eq!(err.to_string(), message, "{input}");
        let cni = CniError::from(err);
        assert_eq!(cni.code, code, "{input}");
        assert_eq!(cni.msg, message);
    }
}

#[test]
fn unparseable_json_is_code_6() {
    for text in ["", "{", "{\"cniVersion\": \"1.0.0\",}", "nul"] {
        let err = NetConf::parse(text).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax(_)), "{text:?}");
        assert_eq!(err.code(), ErrorCode::DecodingFailure);
    }
}

#[test]
fn version_is_checked_before_anything_else() {
    let err = parse(json!({"cniVersion": "2.0.0", "name": 5})).unwrap_err();
    assert_eq!(err.code(), ErrorCode::IncompatibleVersion);
}

#[test]
fn nulls_mean_absent() {
    let c = parse(
        json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": null,
        "mtu": null, "dns": null, "prevResult": null, "runtimeConfig": null, "nodename": null}),
    )
    .unwrap();
    assert_eq!(
        (c.ipam, c.mtu, c.prev_result, c.nodename),
        (None, None, None, None)
    );
    assert!(c.dns.is_empty());
}

#[test]
fn network_names() {
    for ok in ["k8s-pod-network", "dbnet", "a", "0net", "my_net.v2"] {
        assert!(validate_network_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-a", ".a", "a b", "a/b", "a:b"] {
        assert!(validate_network_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn field_errors_tell_type_from_value() {
    let ConfigError::Field(f) =
        parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "mtu": true})).unwrap_err()
    else {
        panic!()
    };
    assert!(matches!(
        f.problem,
        Problem::WrongType {
            expected: "an integer",
            found: "a boolean"
        }
    ));
    assert_eq!(f.path, "mtu");
}
