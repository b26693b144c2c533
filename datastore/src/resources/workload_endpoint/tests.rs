use super::*;
use crate::resources::{parse_documents, AnyResource};

const CONTAINER_ID: &str = "1337495556942031415926535";

fn spec() -> WorkloadEndpointSpec {
    WorkloadEndpointSpec {
        node: "node1".into(),
        pod: "my-nginx-b1337a".into(),
        endpoint: "eth0".into(),
        container_id: CONTAINER_ID.into(),
        interface_name: "trellis0ef24ba".into(),
        mac: "ca:fe:1d:52:bb:e9".into(),
        ip_networks: vec![
            "192.168.0.7/32".parse().unwrap(),
            "fd00::7/128".parse().unwrap(),
        ],
        handle_id: ipam_handle(CONTAINER_ID, "eth0"),
        ..Default::default()
    }
}

fn wep(spec: WorkloadEndpointSpec) -> WorkloadEndpoint {
    Object::new(
        ObjectMeta::namespaced("default", "node1-k8s-my--nginx--b1337a-eth0"),
        spec,
    )
}

fn errors(spec: WorkloadEndpointSpec) -> ValidationErrors {
    wep(spec).validate().err().unwrap_or_default()
}

#[test]
fn valid_endpoint_key_and_helpers() {
    let w = wep(spec());
    w.validate().unwrap();
    assert_eq!(
        w.key(),
        "workloadendpoints/node1/default/my-nginx-b1337a/eth0"
    );
    assert!(w.key().starts_with(&keys::workload_endpoints_of("node1")));
    assert_eq!(w.spec.orchestrator, "k8s");
    assert_eq!(w.spec.handle_id, "1337495556942031415926535.eth0");
    assert_eq!(
        w.spec.mac_bytes(),
        Some([0xca, 0xfe, 0x1d, 0x52, 0xbb, 0xe9])
    );
    let ips: Vec<IpAddr> = w.spec.ips().collect();
    assert_eq!(
        ips,
        vec![
            "192.168.0.7".parse::<IpAddr>().unwrap(),
            "fd00::7".parse().unwrap()
        ]
    );
    assert_eq!(
        workload_endpoint_name("node1", "k8s", "my-nginx-b1337a", "eth0"),
        "node1-k8s-my--nginx--b1337a-eth0"
    );
}

#[test]
fn key_uses_the_namespace() {
    let w = Object::new(ObjectMeta::namespaced("prod", "x"), spec());
    assert_eq!(w.key(), "workloadendpoints/node1/prod/my-nginx-b1337a/eth0");
}

#[test]
fn names_must_be_valid() {
    let e = errors(WorkloadEndpointSpec {
        node: "Node_1".into(),
        pod: String::new(),
        orchestrator: "K8S".into(),
        ..spec()
    });
    assert!(
        e.mentions("spec.node") && e.mentions("spec.pod") && e.mentions("spec.orchestrator"),
        "{e}"
    );
    let e = errors(WorkloadEndpointSpec {
        service_account_name: "Default SA".into(),
        ..spec()
    });
    assert!(e.mentions("spec.serviceAccountName"), "{e}");
}

#[test]
fn interface_names_fit_ifnamsiz() {
    for bad in ["", "trellis0123456789", "a/b", "eth 0", "a:b", ".", ".."] {
        let e = errors(WorkloadEndpointSpec {
            endpoint: bad.into(),
            interface_name: bad.into(),
            ..spec()
        });
        assert!(
            e.mentions("spec.endpoint") && e.mentions("spec.interfaceName"),
            "{bad:?}: {e}"
        );
    }
    assert!(errors(WorkloadEndpointSpec {
        interface_name: "trellis1234abcd".into(),
        ..spec()
    })
    .is_empty());
}

#[test]
fn container_id_and_handle() {
    for bad in ["", "-abc", "abc-", "a_b", "a.b"] {
        assert!(
            errors(WorkloadEndpointSpec {
                container_id: bad.into(),
                ..spec()
            })
            .mentions("spec.containerID"),
            "{bad:?}"
        );
    }
    for bad in ["", "a/b", "a b"] {
        assert!(
            errors(WorkloadEndpointSpec {
                handle_id: bad.into(),
                ..spec()
            })
            .mentions("spec.handleID"),
            "{bad:?}"
        );
    }
    assert_eq!(ipam_handle("abc", "net1"), "abc.net1");
}

#[test]
fn mac_format() {
    assert!(
        errors(WorkloadEndpointSpec {
            mac: String::new(),
            ..spec()
        })
        .is_empty(),
        "optional"
    );
    assert!(errors(WorkloadEndpointSpec {
        mac: "CA-FE-1D-52-BB-E9".into(),
        ..spec()
    })
    .is_empty());
    for bad in [
        "ca:fe:1d:52:bb",
        "ca:fe:1d:52:bb:e9:00",
        "cafe.1d52.bbe9",
        "zz:fe:1d:52:bb:e9",
        "+a:fe:1d:52:bb:e9",
        "01:00:5e:00:00:01",
    ] {
        assert!(
            errors(WorkloadEndpointSpec {
                mac: bad.into(),
                ..spec()
            })
            .mentions("spec.mac"),
            "{bad:?}"
        );
    }
}

#[test]
fn ip_networks_are_unique_host_routes() {
    let e = errors(WorkloadEndpointSpec {
        ip_networks: vec![],
        ..spec()
    });
    assert!(e.mentions("spec.ipNetworks"), "{e}");
    let e = errors(WorkloadEndpointSpec {
        ip_networks: vec![
            "10.0.0.1/32".parse().unwrap(),
            "10.0.0.0/24".parse().unwrap(),
            "10.0.0.1/32".parse().unwrap(),
        ],
        ..spec()
    });
    assert!(
        e.mentions("spec.ipNetworks[1]") && e.mentions("spec.ipNetworks[2]"),
        "{e}"
    );
    assert!(!e.mentions("spec.ipNetworks[0]"), "{e}");
}

#[test]
fn ip_nats_map_onto_own_addresses() {
    let nat = |i: &str, x: &str| IpNat {
        internal_ip: i.parse().unwrap(),
        external_ip: x.parse().unwrap(),
    };
    assert!(errors(WorkloadEndpointSpec {
        ip_nats: vec![nat("192.168.0.7", "203.0.113.7")],
        ..spec()
    })
    .is_empty());
    let e = errors(WorkloadEndpointSpec {
        ip_nats: vec![
            nat("192.168.0.8", "203.0.113.7"),
            nat("192.168.0.7", "2001:db8::7"),
        ],
        ..spec()
    });
    assert!(
        e.mentions("spec.ipNATs[0].internalIP") && e.mentions("spec.ipNATs[1].externalIP"),
        "{e}"
    );
}

#[test]
fn labels_are_kubernetes_labels() {
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/name".to_string(), "web".to_string());
    assert!(errors(WorkloadEndpointSpec {
        labels: labels.clone(),
        ..spec()
    })
    .is_empty());
    labels.insert("bad key".to_string(), "bad value!".to_string());
    assert!(errors(WorkloadEndpointSpec { labels, ..spec() }).mentions("spec.labels[bad key]"));
}

#[test]
fn ports() {
    let port = |name: &str, port: u16, host_port: Option<u16>| EndpointPort {
        name: name.into(),
        protocol: PortProtocol::Tcp,
        port,
        host_port,
        host_ip: None,
    };
    let ok = WorkloadEndpointSpec {
        ports: vec![
            port("http", 80, None),
            port("", 53, Some(5353)),
            port("h2c-9", 8080, None),
        ],
        ..spec()
    };
    assert!(errors(ok.clone()).is_empty());
    assert_eq!(ok.named_port("http", PortProtocol::Tcp), Some(80));
    assert_eq!(ok.named_port("http", PortProtocol::Udp), None);

    let e = errors(WorkloadEndpointSpec {
        ports: vec![
            port("", 80, None),
            port("HTTP", 80, None),
            port("1234", 80, None),
            port("a--b", 80, None),
            port("sixteen-chars-xx", 80, None),
            port("web", 0, Some(0)),
        ],
        ..spec()
    });
    for i in 0..5 {
        assert!(e.mentions(&format!("spec.ports[{i}].name")), "{i}: {e}");
    }
    assert!(
        e.mentions("spec.ports[5].port") && e.mentions("spec.ports[5].hostPort"),
        "{e}"
    );
}

#[test]
fn yaml_round_trip_of_a_calico_style_endpoint() {
    // Calico's documented sample with Trellis' apiVersion, pod labels in spec and handleID.
    let yaml = r#"
apiVersion: trellis.dev/v1
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-my--nginx--b1337a-eth0
  namespace: default
spec:
  node: node1
  orchestrator: k8s
  pod: my-nginx-b1337a
  endpoint: eth0
  containerID: "1337495556942031415926535"
  interfaceName: trellis0ef24ba
  mac: ca:fe:1d:52:bb:e9
  ipNetworks:
  - 192.168.0.0/32
  ipNATs:
  - internalIP: 192.168.0.0
    externalIP: 203.0.113.10
  labels:
    app: frontend
  serviceAccountName: default
  ports:
  - name: some-port
    port: 1234
    protocol: TCP
  - name: another-port
    port: 5432
    protocol: UDP
  - name: sctp-port
    port: 9999
    protocol: SCTP
    hostPort: 19999
    hostIP: 10.0.0.1
  handleID: 1337495556942031415926535.eth0
"#;
    let mut objs = parse_documents(yaml, "wep.yaml").unwrap();
    let Some(AnyResource::WorkloadEndpoint(w)) = objs.pop() else {
        panic!("{objs:?}")
    };
    w.validate().unwrap();
    assert_eq!(
        w.key(),
        "workloadendpoints/node1/default/my-nginx-b1337a/eth0"
    );
    assert_eq!(w.spec.ports[1].protocol, PortProtocol::Udp);
    assert_eq!(
        w.spec.named_port("sctp-port", PortProtocol::Sctp),
        Some(9999)
    );
    let json = serde_json::to_value(&w).unwrap();
    assert_eq!(json["spec"]["containerID"], CONTAINER_ID);
    assert_eq!(json["spec"]["handleID"], "1337495556942031415926535.eth0");
    assert_eq!(json["spec"]["ipNATs"][0]["externalIP"], "203.0.113.10");
    assert_eq!(json["spec"]["ports"][2]["hostIP"], "10.0.0.1");
    let again = parse_documents(&json.to_string(), "again.json").unwrap();
    assert_eq!(again, vec![AnyResource::WorkloadEndpoint(w)]);
}

#[test]
fn missing_fields_default_and_typos_fail() {
    let yaml = "
apiVersion: trellis.dev/v1
kind: WorkloadEndpoint
metadata: {name: w, namespace: ns}
spec:
  node: n
  pod: p
  endpoint: eth0
  containerID: c
  interfaceName: trellisx
  ipNetworks: [10.0.0.1/32]
  handleID: c.eth0
";
    let Some(AnyResource::WorkloadEndpoint(w)) = parse_documents(yaml, "t").unwrap().pop() else {
        panic!()
    };
    assert_eq!(w.spec.orchestrator, "k8s");
    assert_eq!(w.spec.ports[..], []);
    w.validate().unwrap();
    let typo = yaml.replace("interfaceName", "interfacename");
    let e = parse_documents(&typo, "t").unwrap_err();
    assert!(e.message.contains("interfacename"), "{e}");
    let bad_proto = yaml.replace(
        "handleID: c.eth0",
        "handleID: c.eth0\n  ports: [{name: x, port: 1, protocol: ICMP}]",
    );
    let e = parse_documents(&bad_proto, "t").unwrap_err();
    assert!(e.message.contains("spec.ports[0].protocol"), "{e}");
}
