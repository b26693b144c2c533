use super::*;
use crate::meta::{Object, ObjectMeta};
use crate::resources::felix::LogSeverity;
use crate::resources::{parse_documents, AnyResource};

fn config(name: &str, spec: BgpConfigurationSpec) -> BgpConfiguration {
    Object::new(ObjectMeta::named(name), spec)
}

fn config_errors(name: &str, spec: BgpConfigurationSpec) -> ValidationErrors {
    config(name, spec).validate().err().unwrap_or_default()
}

fn dur(s: &str) -> Option<Duration> {
    Some(s.parse().unwrap())
}

fn community(name: &str, value: &str) -> Community {
    Community {
        name: name.into(),
        value: value.into(),
    }
}

fn advert(cidr: &str, communities: &[&str]) -> PrefixAdvertisement {
    PrefixAdvertisement {
        cidr: cidr.parse().unwrap(),
        communities: communities.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn config_defaults_and_keys() {
    let c = config("default", BgpConfigurationSpec::default());
    c.validate().unwrap();
    assert_eq!(c.key(), "config/bgp");
    assert_eq!(
        config("node.worker-1", BgpConfigurationSpec::default()).key(),
        "config/bgp/node.worker-1"
    );
    let s = &c.spec;
    assert_eq!(s.as_number(), 64512);
    assert!(s.node_to_node_mesh_enabled());
    assert_eq!(s.listen_port(), 179);
    assert_eq!(s.log_severity(), LogSeverity::Info);
    assert_eq!(s.bind_mode(), BindMode::None);
    assert_eq!(s.node_mesh_max_restart_time(), StdDuration::from_secs(120));
    for bad in ["global", "node.", "node.UPPER"] {
        assert!(
            config_errors(bad, BgpConfigurationSpec::default()).mentions("metadata.name"),
            "{bad}"
        );
    }
}

#[test]
fn config_numbers() {
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            as_number: Some(0),
            listen_port: Some(0),
            ..Default::default()
        },
    );
    assert!(
        e.mentions("spec.asNumber") && e.mentions("spec.listenPort"),
        "{e}"
    );
}

#[test]
fn per_node_config_may_not_set_global_fields() {
    let spec = BgpConfigurationSpec {
        as_number: Some(65001),
        node_to_node_mesh_enabled: Some(false),
        service_cluster_ips: vec![ServiceIpBlock {
            cidr: "10.96.0.0/12".parse().unwrap(),
        }],
        bind_mode: Some(BindMode::NodeIp),
        ..Default::default()
    };
    assert!(config_errors("default", spec.clone()).is_empty());
    let e = config_errors("node.worker-1", spec);
    for f in [
        "spec.asNumber",
        "spec.nodeToNodeMeshEnabled",
        "spec.serviceClusterIPs",
        "spec.bindMode",
    ] {
        assert!(e.mentions(f), "{f}: {e}");
    }
    let overrides = BgpConfigurationSpec {
        listen_port: Some(1179),
        log_severity_screen: Some(LogSeverity::Debug),
        communities: vec![community("rack", "65001:100")],
        prefix_advertisements: vec![advert("10.65.0.0/16", &["rack"])],
        ..Default::default()
    };
    assert!(config_errors("node.worker-1", overrides).is_empty());
}

#[test]
fn service_cidrs_must_be_masked() {
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            service_external_ips: vec![
                ServiceIpBlock {
                    cidr: "104.244.42.129/32".parse().unwrap(),
                },
                ServiceIpBlock {
                    cidr: "172.217.3.1/24".parse().unwrap(),
                },
            ],
            ..Default::default()
        },
    );
    assert!(
        e.mentions("spec.serviceExternalIPs[1].cidr")
            && !e.mentions("spec.serviceExternalIPs[0].cidr"),
        "{e}"
    );
}

#[test]
fn community_values() {
    assert_eq!(
        CommunityValue::parse("65001:100"),
        Ok(CommunityValue::Standard(65001, 100))
    );
    assert_eq!(
        CommunityValue::parse("4200000000:1:2"),
        Ok(CommunityValue::Large(4_200_000_000, 1, 2))
    );
    for bad in [
        "65536:1",
        "1:65536",
        "4294967296:1:1",
        "a:b",
        "1",
        "1:2:3:4",
        ":1",
        "1:-1",
    ] {
        assert!(CommunityValue::parse(bad).is_err(), "{bad}");
    }
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            communities: vec![
                community("ok", "1:1"),
                community("bad", "70000:1"),
                community("ok", "2:2"),
            ],
            prefix_advertisements: vec![advert("10.0.0.0/8", &["ok"])],
            ..Default::default()
        },
    );
    assert!(e.mentions("spec.communities[1].value"), "{e}");
    assert!(e.mentions("spec.communities[2].name"), "duplicate: {e}");
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            communities: vec![community("Bad_Name", "1:1")],
            ..Default::default()
        },
    );
    assert!(e.mentions("spec.communities[0].name"), "{e}");
    assert!(e.mentions("spec.communities"), "defined but unused: {e}");
}

#[test]
fn prefix_advertisements_reference_defined_communities() {
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            communities: vec![community("rack-a", "65001:10")],
            prefix_advertisements: vec![
                advert("10.65.0.0/16", &["rack-a", "65001:20", "1:2:3"]),
                advert("10.66.0.1/16", &["undefined-name"]),
            ],
            ..Default::default()
        },
    );
    assert!(
        !e.mentions("spec.prefixAdvertisements[0].communities[0]"),
        "{e}"
    );
    assert!(e.mentions("spec.prefixAdvertisements[1].cidr"), "{e}");
    assert!(
        e.mentions("spec.prefixAdvertisements[1].communities[0]"),
        "{e}"
    );
}

#[test]
fn mesh_settings_need_the_mesh() {
    let spec = BgpConfigurationSpec {
        node_to_node_mesh_enabled: Some(false),
        node_mesh_password: Some(BgpPassword {
            env: Some("MESH_PW".into()),
            file: None,
        }),
        node_mesh_max_restart_time: dur("2m"),
        ..Default::default()
    };
    let e = config_errors("default", spec);
    assert!(
        e.mentions("spec.nodeMeshPassword") && e.mentions("spec.nodeMeshMaxRestartTime"),
        "{e}"
    );
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            node_mesh_max_restart_time: dur("2h"),
            ..Default::default()
        },
    );
    assert!(e.mentions("spec.nodeMeshMaxRestartTime"), "{e}");
    let e = config_errors(
        "default",
        BgpConfigurationSpec {
            node_mesh_password: Some(BgpPassword::default()),
            ..Default::default()
        },
    );
    assert!(e.mentions("spec.nodeMeshPassword"), "{e}");
}

#[test]
fn node_overlay_takes_only_overridable_fields() {
    let global = BgpConfigurationSpec {
        as_number: Some(63400),
        listen_port: Some(178),
        communities: vec![community("c", "1:1")],
        prefix_advertisements: vec![advert("10.0.0.0/8", &["c"])],
        ..Default::default()
    };
    let node = BgpConfigurationSpec {
        listen_port: Some(1179),
        communities: vec![community("d", "2:2")],
        prefix_advertisements: vec![advert("10.1.0.0/16", &["d", "3:3"])],
        ..Default::default()
    };
    let eff = global.overlay(&node);
    assert_eq!((eff.as_number(), eff.listen_port()), (63400, 1179));
    assert_eq!(
        eff.resolved_prefix_advertisements(),
        vec![(
            "10.1.0.0/16".parse().unwrap(),
            vec![
                CommunityValue::Standard(2, 2),
                CommunityValue::Standard(3, 3)
            ]
        )]
    );
    assert_eq!(global.overlay(&BgpConfigurationSpec::default()), global);
}

fn parse(yaml: &str) -> Vec<AnyResource> {
    parse_documents(yaml, "bgp.yaml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn yaml_round_trip_of_calico_examples() {
    // Calico's documented BGPConfiguration and BGPPeer samples, under Trellis' apiVersion.
    let yaml = r#"
apiVersion: trellis.dev/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: true
  nodeMeshMaxRestartTime: 120s
  asNumber: 63400
  serviceClusterIPs:
    - cidr: 10.96.0.0/12
  serviceExternalIPs:
    - cidr: 104.244.42.129/32
    - cidr: 172.217.3.0/24
  listenPort: 178
  bindMode: NodeIP
  communities:
    - name: bgp-large-community
      value: 63400:300:100
  prefixAdvertisements:
    - cidr: 172.218.4.0/26
      communities:
        - bgp-large-community
        - 63400:120
---
apiVersion: trellis.dev/v1
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 10.50.1.1:1179
  asNumber: 65101
  nodeSelector: rack == 'rack1'
  keepOriginalNextHop: true
  password:
    env: TOR_PASSWORD
  keepaliveTime: 10s
  holdTime: 30s
  maxRestartTime: 15m
  sourceAddress: None
  numAllowedLocalASNumbers: 1
  ttlSecurity: 1
---
apiVersion: trellis.dev/v1
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
"#;
    let objs = parse(yaml);
    assert_eq!(objs.len(), 3);
    for o in &objs {
        o.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", o.describe()));
    }
    let AnyResource::BgpConfiguration(c) = &objs[0] else {
        panic!("{:?}", objs[0])
    };
    assert_eq!(c.spec.as_number(), 63400);
    assert_eq!(c.spec.bind_mode(), BindMode::NodeIp);
    assert_eq!(
        c.spec.resolved_prefix_advertisements()[0].1,
        vec![
            CommunityValue::Large(63400, 300, 100),
            CommunityValue::Standard(63400, 120)
        ]
    );
    let AnyResource::BgpPeer(p) = &objs[1] else {
        panic!("{:?}", objs[1])
    };
    assert_eq!(p.key(), "bgppeers/rack1-tor");
    assert_eq!(p.spec.peer_address().unwrap().port, Some(1179));
    assert_eq!(p.spec.max_restart_time(), StdDuration::from_secs(900));
    assert_eq!(p.spec.source_address(), SourceAddress::None);

    for o in &objs {
        let json = serde_json::to_string(&o.to_json()).unwrap();
        assert_eq!(&parse(&json)[0], o, "{json}");
    }
    let json = objs[1].to_json();
    assert_eq!(json["spec"]["peerIP"], "10.50.1.1:1179");
    assert_eq!(json["spec"]["maxRestartTime"], "15m");
    assert_eq!(json["spec"]["numAllowedLocalASNumbers"], 1);
    assert_eq!(
        objs[0].to_json()["spec"]["serviceClusterIPs"][0]["cidr"],
        "10.96.0.0/12"
    );
}

#[test]
fn calico_only_fields_are_rejected_by_name() {
    let yaml = "
apiVersion: trellis.dev/v1
kind: BGPPeer
metadata: {name: p}
spec:
  peerIP: 10.0.0.1
  asNumber: 1
  password:
    secretKeyRef: {name: s, key: k}
";
    let e = parse_documents(yaml, "t").unwrap_err();
    assert!(e.message.contains("secretKeyRef"), "{e}");
    let yaml = "
apiVersion: trellis.dev/v1
kind: BGPConfiguration
metadata: {name: default}
spec:
  asnumber: 1
";
    let e = parse_documents(yaml, "t").unwrap_err();
    assert!(e.message.contains("asnumber"), "{e}");
}
