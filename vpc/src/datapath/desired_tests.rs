use std::collections::BTreeMap;

use super::*;
use crate::datapath::fake::{config, enis, pod, pods};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn one_pod_per_eni_gives_the_aws_rules_and_one_table() {
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let want_rules = BTreeMap::from([
        (RuleKey::ToPod(ip("10.90.1.20")), MAIN_TABLE),
        (RuleKey::ToPod(ip("10.90.2.20")), MAIN_TABLE),
        (RuleKey::MainEniMark(0x80), MAIN_TABLE),
        // Secondary ENI device 1 -> table 2; the primary-ENI pod has no `from` rule.
        (RuleKey::FromPod(ip("10.90.2.20")), 2),
    ]);
    assert_eq!(d.rules, want_rules);
    let hop = |gw: Option<&str>| NextHop {
        gateway: gw.map(|g| g.parse().unwrap()),
        if_name: "eth1".into(),
    };
    let want_table = BTreeMap::from([
        ("0.0.0.0/0".parse().unwrap(), hop(Some("10.90.2.1"))),
        ("10.90.2.1/32".parse().unwrap(), hop(None)),
    ]);
    assert_eq!(d.tables, BTreeMap::from([(2, want_table)]));
    assert_eq!(
        d.links,
        BTreeMap::from([(
            "eth1".to_string(),
            EniLink {
                eni_id: "eni-b".into(),
                mac: "0a:00:00:00:00:0b".into(),
                subnet: "10.90.2.0/24".parse().unwrap(),
                mtu: 9001
            }
        )])
    );
    assert_eq!(
        RuleKey::FromPod(ip("10.90.2.20")).to_string(),
        "priority 1536 from 10.90.2.20"
    );
}

#[test]
fn no_pods_still_gives_the_mark_rule_and_the_eni_tables() {
    let d = compute_desired(&config(), &enis(), &[]).unwrap();
    assert_eq!(
        d.rules,
        BTreeMap::from([(RuleKey::MainEniMark(0x80), MAIN_TABLE)])
    );
    assert_eq!(d.tables.keys().copied().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn an_ipv6_pod_on_the_primary_eni_gets_a_128_to_rule() {
    let d = compute_desired(
        &config(),
        &enis(),
        &[pod("2001:db8::5", "trellisv6", "eni-a")],
    )
    .unwrap();
    assert_eq!(
        d.rules.get(&RuleKey::ToPod(ip("2001:db8::5"))),
        Some(&MAIN_TABLE)
    );
    assert_eq!(d.rules.len(), 2);
}

#[test]
fn bad_inputs_are_named() {
    let cfg = config();
    let err = |enis: &[Eni], pods: &[PodAttachment]| {
        compute_desired(&cfg, enis, pods).unwrap_err().to_string()
    };

    let mut no_primary = enis();
    no_primary[0].primary = false;
    assert_eq!(
        err(&no_primary, &[]),
        r#"no primary ENI among ["eni-a", "eni-b"]"#
    );

    let mut two_primaries = enis();
    two_primaries[1].primary = true;
    assert_eq!(
        err(&two_primaries, &[]),
        r#"more than one primary ENI: ["eni-a", "eni-b"]"#
    );

    let mut same_device = enis();
    same_device[1].device_number = 0;
    assert_eq!(
        err(&same_device, &[]),
        "ENIs eni-a and eni-b share device number 0"
    );

    let mut same_if = enis();
    same_if[1].if_name = "eth0".into();
    assert_eq!(
        err(&same_if, &[]),
        "ENIs eni-a and eni-b share interface eth0"
    );

    let mut bad_gw = enis();
    bad_gw[1].gateway = "10.90.3.1".parse().unwrap();
    assert_eq!(
        err(&bad_gw, &[]),
        "ENI eni-b: gateway 10.90.3.1 is not a host of its subnet 10.90.2.0/24"
    );
    bad_gw[1].gateway = "10.90.2.0".parse().unwrap();
    assert!(err(&bad_gw, &[]).contains("gateway 10.90.2.0 is not a host"));

    assert_eq!(
        err(&enis(), &[pod("10.90.9.9", "trellisx", "eni-zz")]),
        "pod 10.90.9.9 (veth trellisx) is on ENI eni-zz, which is not attached to this node"
    );
    assert_eq!(
        err(
            &enis(),
            &[
                pod("10.90.2.20", "trellisa", "eni-b"),
                pod("10.90.2.20", "trellisb", "eni-b")
            ]
        ),
        "pod address 10.90.2.20 is claimed by veth trellisa and by veth trellisb"
    );
    assert!(err(&enis(), &[pod("2001:db8::5", "trellisv6", "eni-b")])
        .contains("IPv6 address on secondary ENI eni-b"));

    let zero = VpcDatapathConfig {
        connmark: 0,
        ..config()
    };
    assert_eq!(
        compute_desired(&zero, &enis(), &[]),
        Err(DesiredError::ZeroConnmark)
    );
    let tiny = VpcDatapathConfig {
        eni_mtu: 60,
        ..config()
    };
    assert_eq!(
        compute_desired(&tiny, &enis(), &[]),
        Err(DesiredError::MtuTooSmall(60))
    );
}
