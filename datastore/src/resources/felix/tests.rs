use super::*;
use crate::resources::{parse_documents, AnyResource};

fn felix(name: &str, spec: FelixConfigurationSpec) -> FelixConfiguration {
    Object::new(ObjectMeta::named(name), spec)
}

/// Validation errors of a spec under the name `default`.
fn errors(spec: FelixConfigurationSpec) -> ValidationErrors {
    felix("default", spec).validate().err().unwrap_or_default()
}

fn parse_one(yaml: &str) -> FelixConfiguration {
    match parse_documents(yaml, "test.yaml").unwrap().pop() {
        Some(AnyResource::FelixConfiguration(o)) => o,
        other => panic!("expected a FelixConfiguration, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let s = FelixConfigurationSpec::default();
    assert_eq!(s.log_severity(), LogSeverity::Info);
    assert_eq!(s.log_format(), LogFormat::Human);
    assert_eq!(s.health_port(), 9099);
    assert!(!s.prometheus_metrics_enabled());
    assert_eq!(s.prometheus_metrics_port(), 9091);
    assert_eq!(s.route_refresh_interval(), StdDuration::from_secs(90));
    assert_eq!(s.nftables_refresh_interval(), StdDuration::from_secs(180));
    assert_eq!(s.vxlan_enabled(), None);
    assert_eq!(s.vxlan_port(), 4789);
    assert_eq!(s.vxlan_vni(), 4096);
    assert_eq!(
        (s.vxlan_mtu(), s.vxlan_mtu_v6(), s.ipip_mtu()),
        (None, None, None)
    );
    assert_eq!(s.ipip_enabled(), None);
    assert_eq!(
        s.default_endpoint_to_host_action(),
        EndpointToHostAction::Drop
    );
    assert_eq!(s.nat_outgoing_address(), None);
    assert_eq!(s.nat_port_range(), None);
    assert_eq!(s.route_table_range(), 1..=250);
    assert_eq!(s.device_route_source_address(), None);
    assert_eq!(s.interface_prefixes(), vec!["trellis"]);
    assert_eq!(s.reporting_interval(), StdDuration::from_secs(30));
    assert_eq!(s.health_timeout("InternalDataplaneMainLoop"), None);
    assert!(felix("default", s).validate().is_ok());
}

#[test]
fn key_layout_and_names() {
    let o = felix("default", FelixConfigurationSpec::default());
    assert_eq!(o.key(), "config/felix/default");
    let o = felix("node.worker-1", FelixConfigurationSpec::default());
    assert_eq!(o.key(), "config/felix/node.worker-1");
    assert!(o.validate().is_ok());

    for bad in ["global", "node.", "node.Bad_Name", "worker-1"] {
        let e = felix(bad, FelixConfigurationSpec::default())
            .validate()
            .unwrap_err();
        assert!(e.mentions("metadata.name"), "{bad}: {e}");
    }
    assert_eq!(ConfigScope::of("default"), Some(ConfigScope::Global));
    assert_eq!(ConfigScope::of("node.a"), Some(ConfigScope::Node("a")));
    assert_eq!(ConfigScope::of("node."), None);
    assert_eq!(ConfigScope::Node("a").object_name(), "node.a");
}

#[test]
fn ports_must_be_nonzero() {
    let e = errors(FelixConfigurationSpec {
        health_port: Some(0),
        prometheus_metrics_port: Some(0),
        vxlan_port: Some(0),
        ..Default::default()
    });
    assert!(
        e.mentions("spec.healthPort") && e.mentions("spec.prometheusMetricsPort"),
        "{e}"
    );
    assert!(e.mentions("spec.vxlanPort"), "{e}");
}

#[test]
fn metrics_and_health_ports_must_differ_when_metrics_on() {
    let spec = FelixConfigurationSpec {
        prometheus_metrics_port: Some(9099),
        ..Default::default()
    };
    assert!(errors(spec.clone()).is_empty(), "metrics off: no clash");
    let e = errors(FelixConfigurationSpec {
        prometheus_metrics_enabled: Some(true),
        ..spec
    });
    assert!(e.mentions("spec.prometheusMetricsPort"), "{e}");
}

#[test]
fn vni_is_24_bits() {
    for bad in [0, 1 << 24] {
        let e = errors(FelixConfigurationSpec {
            vxlan_vni: Some(bad),
            ..Default::default()
        });
        assert!(e.mentions("spec.vxlanVNI"), "{bad}: {e}");
    }
    assert!(errors(FelixConfigurationSpec {
        vxlan_vni: Some((1 << 24) - 1),
        ..Default::default()
    })
    .is_empty());
}

#[test]
fn mtus_are_zero_or_in_range() {
    let ok = FelixConfigurationSpec {
        vxlan_mtu: Some(1450),
        ipip_mtu: Some(0),
        vxlan_mtu_v6: Some(1280),
        ..Default::default()
    };
    assert!(errors(ok.clone()).is_empty());
    assert_eq!(
        (ok.vxlan_mtu(), ok.ipip_mtu(), ok.vxlan_mtu_v6()),
        (Some(1450), None, Some(1280))
    );

    let e = errors(FelixConfigurationSpec {
        vxlan_mtu: Some(575),
        ipip_mtu: Some(9001),
        vxlan_mtu_v6: Some(1279),
        ..Default::default()
    });
    assert!(
        e.mentions("spec.vxlanMTU") && e.mentions("spec.ipipMTU") && e.mentions("spec.vxlanMTUV6"),
        "{e}"
    );
    assert!(e.to_string().contains("RFC 8200"), "{e}");
}

#[test]
fn addresses_have_the_right_family() {
    let e = errors(FelixConfigurationSpec {
        nat_outgoing_address: Some("fd00::1".parse().unwrap()),
        device_route_source_address: Some("fd00::2".parse().unwrap()),
        device_route_source_address_ipv6: Some("10.0.0.1".parse().unwrap()),
        ..Default::default()
    });
    assert!(e.mentions("spec.natOutgoingAddress"), "{e}");
    assert!(e.mentions("spec.deviceRouteSourceAddress"), "{e}");
    assert!(e.mentions("spec.deviceRouteSourceAddressIPv6"), "{e}");

    let ok = FelixConfigurationSpec {
        nat_outgoing_address: Some("192.0.2.10".parse().unwrap()),
        device_route_source_address_ipv6: Some("fd00::2".parse().unwrap()),
        ..Default::default()
    };
    assert!(errors(ok.clone()).is_empty());
    assert_eq!(
        ok.nat_outgoing_address(),
        Some(Ipv4Addr::new(192, 0, 2, 10))
    );
    assert_eq!(
        ok.device_route_source_address_ipv6(),
        Some("fd00::2".parse().unwrap())
    );
}

#[test]
fn nat_port_range() {
    for (text, want) in [
        ("32768:65535", 32768..=65535),
        ("1024", 1024..=1024),
        ("1:1", 1..=1),
    ] {
        let s = FelixConfigurationSpec {
            nat_port_range: Some(text.into()),
            ..Default::default()
        };
        assert!(errors(s.clone()).is_empty(), "{text}");
        assert_eq!(s.nat_port_range(), Some(want));
    }
    for bad in ["0:100", "200:100", "1:65536", "a:b", "", "1:2:3"] {
        let e = errors(FelixConfigurationSpec {
            nat_port_range: Some(bad.into()),
            ..Default::default()
        });
        assert!(e.mentions("spec.natPortRange"), "{bad:?}: {e}");
    }
}

#[test]
fn route_table_range() {
    let ok = FelixConfigurationSpec {
        route_table_range: Some(RouteTableRange { min: 10, max: 250 }),
        ..Default::default()
    };
    assert!(errors(ok.clone()).is_empty());
    assert_eq!(ok.route_table_range(), 10..=250);
    for (min, max) in [(0, 10), (10, 251), (1, 255), (20, 10)] {
        let e = errors(FelixConfigurationSpec {
            route_table_range: Some(RouteTableRange { min, max }),
            ..Default::default()
        });
        assert!(e.mentions("spec.routeTableRange"), "{min}-{max}: {e}");
    }
}

#[test]
fn bpf_and_wireguard_are_refused_with_a_reason() {
    let off = FelixConfigurationSpec {
        bpf_enabled: Some(false),
        wireguard_enabled: Some(false),
        ..Default::default()
    };
    assert!(errors(off).is_empty());
    let e = errors(FelixConfigurationSpec {
        bpf_enabled: Some(true),
        wireguard_enabled: Some(true),
        ..Default::default()
    });
    assert!(
        e.mentions("spec.bpfEnabled") && e.mentions("spec.wireguardEnabled"),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("not supported") && text.contains("nftables"),
        "{text}"
    );
    assert!(text.contains("lacks the wireguard module"), "{text}");
}

#[test]
fn interface_prefixes() {
    let s = FelixConfigurationSpec {
        interface_prefix: Some("cali,tap".into()),
        ..Default::default()
    };
    assert!(errors(s.clone()).is_empty());
    assert_eq!(s.interface_prefixes(), vec!["cali", "tap"]);
    for bad in ["", "a,,b", "has space", "slash/x", "fifteen-chars-x"] {
        let e = errors(FelixConfigurationSpec {
            interface_prefix: Some(bad.into()),
            ..Default::default()
        });
        assert!(e.mentions("spec.interfacePrefix"), "{bad:?}: {e}");
    }
}

#[test]
fn health_timeout_overrides() {
    let o = |name: &str, t: &str| HealthTimeoutOverride {
        name: name.into(),
        timeout: t.parse().unwrap(),
    };
    let ok = FelixConfigurationSpec {
        health_timeout_overrides: Some(vec![
            o("InternalDataplaneMainLoop", "1m"),
            o("calc graph", "30s"),
        ]),
        ..Default::default()
    };
    assert!(errors(ok.clone()).is_empty());
    assert_eq!(
        ok.health_timeout("InternalDataplaneMainLoop"),
        Some(StdDuration::from_secs(60))
    );

    let e = errors(FelixConfigurationSpec {
        health_timeout_overrides: Some(vec![o("ok", "1s"), o("bad/name", "1s"), o("ok", "2s")]),
        ..Default::default()
    });
    assert!(e.mentions("spec.healthTimeoutOverrides[1].name"), "{e}");
    assert!(e.mentions("spec.healthTimeoutOverrides[2].name"), "{e}");
}

#[test]
fn node_config_overlays_global() {
    let global = FelixConfigurationSpec {
        log_severity_screen: Some(LogSeverity::Warning),
        vxlan_vni: Some(5000),
        route_refresh_interval: Some("60s".parse().unwrap()),
        ..Default::default()
    };
    let node = FelixConfigurationSpec {
        log_severity_screen: Some(LogSeverity::Debug),
        health_port: Some(9199),
        ..Default::default()
    };
    let eff = global.overlay(&node);
    assert_eq!(eff.log_severity(), LogSeverity::Debug);
    assert_eq!(eff.health_port(), 9199);
    assert_eq!(eff.vxlan_vni(), 5000);
    assert_eq!(eff.route_refresh_interval(), StdDuration::from_secs(60));
    assert_eq!(eff.vxlan_port(), 4789);
}

#[test]
fn yaml_round_trip_of_a_calico_style_config() {
    let yaml = r#"
apiVersion: trellis.dev/v1
kind: FelixConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  logFormat: json
  healthPort: 9099
  prometheusMetricsEnabled: true
  prometheusMetricsPort: 9091
  routeRefreshInterval: 1m30s
  iptablesRefreshInterval: 90s
  vxlanEnabled: true
  vxlanPort: 4789
  vxlanVNI: 4096
  vxlanMTU: 1450
  vxlanMTUV6: 1430
  ipipEnabled: false
  ipipMTU: 0
  defaultEndpointToHostAction: Accept
  natOutgoingAddress: 192.0.2.1
  natPortRange: 32768:65535
  routeTableRange: {min: 1, max: 250}
  deviceRouteSourceAddress: 10.0.0.1
  bpfEnabled: false
  wireguardEnabled: false
  interfacePrefix: trellis
  reportingInterval: 0s
  healthTimeoutOverrides:
  - name: InternalDataplaneMainLoop
    timeout: 2m
"#;
    let o = parse_one(yaml);
    o.validate().unwrap();
    let s = &o.spec;
    assert_eq!(s.log_format(), LogFormat::Json);
    assert_eq!(s.route_refresh_interval(), StdDuration::from_secs(90));
    assert_eq!(
        s.nftables_refresh_interval(),
        StdDuration::from_secs(90),
        "iptablesRefreshInterval alias"
    );
    assert_eq!(s.vxlan_enabled(), Some(true));
    assert_eq!(
        s.default_endpoint_to_host_action(),
        EndpointToHostAction::Accept
    );
    assert_eq!(s.nat_port_range(), Some(32768..=65535));
    assert_eq!(s.reporting_interval(), StdDuration::ZERO);
    assert_eq!(
        s.health_timeout("InternalDataplaneMainLoop"),
        Some(StdDuration::from_secs(120))
    );

    // Written back, durations keep the user's spelling and the fields Calico's names.
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(json["spec"]["routeRefreshInterval"], "1m30s");
    assert_eq!(json["spec"]["nftablesRefreshInterval"], "90s");
    assert_eq!(json["spec"]["vxlanVNI"], 4096);
    assert_eq!(json["spec"]["vxlanMTUV6"], 1430);
    assert_eq!(json["spec"]["ipipMTU"], 0);
    let again = parse_one(&serde_json::to_string(&json).unwrap());
    assert_eq!(again, o);
}

#[test]
fn typos_and_bad_values_are_parse_errors_naming_the_field() {
    let doc = |spec: &str| {
        format!(
            "apiVersion: trellis.dev/v1\nkind: FelixConfiguration\n\
             metadata: {{name: default}}\nspec:\n  {spec}\n"
        )
    };
    let e = parse_documents(&doc("vxlanVni: 4096"), "t").unwrap_err();
    assert!(e.message.contains("vxlanVni"), "{e}");
    let e = parse_documents(&doc("routeRefreshInterval: 90"), "t").unwrap_err();
    assert!(
        e.message.contains("spec.routeRefreshInterval") && e.message.contains("\"90s\""),
        "{e}"
    );
    let e = parse_documents(&doc("logSeverityScreen: Verbose"), "t").unwrap_err();
    assert!(e.message.contains("spec.logSeverityScreen"), "{e}");
}
