use super::*;

const CRI_PAIRS: [&str; 5] = [
    "IgnoreUnknown=1",
    "K8S_POD_NAMESPACE=kube-system",
    "K8S_POD_NAME=coredns-5d78c9869d-abcde",
    "K8S_POD_INFRA_CONTAINER_ID=8d3f2c0b9e1a",
    "K8S_POD_UID=0f0e1c5e-3a43-4c1e-9d55-0123456789ab",
];

fn cri_expected() -> CniArgs {
    CniArgs {
        ignore_unknown: true,
        pod_namespace: Some("kube-system".into()),
        pod_name: Some("coredns-5d78c9869d-abcde".into()),
        pod_infra_container_id: Some("8d3f2c0b9e1a".into()),
        pod_uid: Some("0f0e1c5e-3a43-4c1e-9d55-0123456789ab".into()),
        ips: vec![],
        ignored: vec![],
    }
}

/// Every ordering of `items`.
fn permutations(items: &[&'static str]) -> Vec<Vec<&'static str>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

#[test]
fn containerd_cri_args_in_every_order() {
    let all = permutations(&CRI_PAIRS);
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (120, 120));
    for order in all {
        let raw = order.join(";");
        assert_eq!(CniArgs::parse(&raw), Ok(cri_expected()), "{raw}");
    }
}

#[test]
fn ignore_unknown_applies_wherever_it_appears() {
    for raw in [
        "IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=p",
        "FOO=bar;K8S_POD_NAME=p;IgnoreUnknown=true",
        "K8S_POD_NAME=p;IgnoreUnknown=True;FOO=bar",
        "FOO=bar;IgnoreUnknown=TRUE;K8S_POD_NAME=p",
    ] {
        let args = CniArgs::parse(raw).unwrap();
        assert!(args.ignore_unknown, "{raw}");
        assert_eq!(args.pod_name.as_deref(), Some("p"));
        assert_eq!(args.ignored, vec![("FOO".to_string(), "bar".to_string())]);
    }
}

#[test]
fn unknown_keys_fail_without_ignore_unknown() {
    for raw in [
        "FOO=bar",
        "K8S_POD_NAME=p;FOO=bar;BAZ=",
        "IgnoreUnknown=0;FOO=bar",
        "FOO=bar;IgnoreUnknown=false",
        // Keys are case-sensitive, as libcni's are.
        "k8s_pod_name=p",
    ] {
        let err = CniArgs::parse(raw).unwrap_err();
        assert!(matches!(err, ArgsError::Unknown(_)), "{raw}: {err:?}");
        assert_eq!(err.code(), ErrorCode::InvalidEnvironment);
    }
    let err = CniArgs::parse("K8S_POD_NAME=p;FOO=bar;BAZ=").unwrap_err();
    assert_eq!(
        err,
        ArgsError::Unknown(vec!["FOO=bar".into(), "BAZ=".into()])
    );
    assert_eq!(
        err.to_string(),
        "unknown args FOO=bar, BAZ= (set IgnoreUnknown=1 to allow them)"
    );
}

#[test]
fn malformed_pairs_are_named() {
    for (raw, pair) in [
        ("K8S_POD_NAME", "K8S_POD_NAME"),
        ("IgnoreUnknown=1;K8S_POD_NAME", "K8S_POD_NAME"),
        ("A=B=C", "A=B=C"),
        ("=value", "=value"),
        ("K8S_POD_NAME=p;IP=10.0.0.1=x", "IP=10.0.0.1=x"),
    ] {
        let err = CniArgs::parse(raw).unwrap_err();
        assert_eq!(err, ArgsError::MalformedPair(pair.into()), "{raw}");
        assert!(err.to_string().contains(pair));
    }
    // Even IgnoreUnknown does not excuse a pair that is not KEY=VALUE.
    assert!(CniArgs::parse("IgnoreUnknown=1;junk").is_err());
}

#[test]
fn empty_input_and_empty_segments() {
    assert_eq!(CniArgs::parse(""), Ok(CniArgs::default()));
    assert_eq!(
        CniArgs::parse("K8S_POD_NAME=p;")
            .unwrap()
            .pod_name
            .as_deref(),
        Some("p")
    );
    assert_eq!(CniArgs::parse(";;"), Ok(CniArgs::default()));
}

#[test]
fn empty_values_are_absent() {
    let args = CniArgs::parse("K8S_POD_NAMESPACE=;K8S_POD_NAME=p").unwrap();
    assert_eq!(args.pod_namespace, None);
    assert_eq!(args.pod(), None);
}

#[test]
fn duplicate_keys_are_rejected() {
    assert_eq!(
        CniArgs::parse("IP=10.0.0.1;K8S_POD_NAME=p;IP=10.0.0.2"),
        Err(ArgsError::Duplicate("IP".into()))
    );
}

#[test]
fn ignore_unknown_must_be_a_boolean() {
    for (raw, want) in [("1", true), ("true", true), ("0", false), ("False", false)] {
        let args = CniArgs::parse(&format!("IgnoreUnknown={raw}")).unwrap();
        assert_eq!(args.ignore_unknown, want, "{raw}");
    }
    for raw in ["yes", "", "2", "on"] {
        let err = CniArgs::parse(&format!("IgnoreUnknown={raw}")).unwrap_err();
        assert!(
            matches!(&err, ArgsError::InvalidValue { key, .. } if key == IGNORE_UNKNOWN),
            "{raw}: {err:?}"
        );
    }
}

#[test]
fn requested_ips() {
    let args = CniArgs::parse("IP=192.168.10.4/24").unwrap();
    assert_eq!(
        args.ips,
        vec![RequestedIp {
            addr: "192.168.10.4".parse().unwrap(),
            prefix_len: Some(24)
        }]
    );
    let args = CniArgs::parse("IP=10.1.2.3,fd00::5").unwrap();
    assert_eq!(
        args.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.1.2.3", "fd00::5"]
    );
    for bad in [
        "IP=",
        "IP=10.1.2",
        "IP=10.1.2.3/33",
        "IP=fd00::1/129",
        "IP=10.0.0.1/+8",
        "IP=10.0.0.1/",
    ] {
        let err = CniArgs::parse(bad).unwrap_err();
        assert!(
            matches!(&err, ArgsError::InvalidValue { key, .. } if key == IP),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn requested_ip_display_round_trips() {
    for s in [
        "10.0.0.1",
        "10.0.0.1/32",
        "2001:db8::5",
        "2001:db8::5/64",
        "0.0.0.0/0",
    ] {
        let ip: RequestedIp = s.parse().unwrap();
        assert_eq!(ip.to_string(), s);
    }
}

#[test]
fn args_errors_become_code_4_naming_cni_args() {
    let err: CniError = ArgsError::MalformedPair("x".into()).into();
    assert_eq!(err.code, 4);
    assert_eq!(err.msg, "CNI_ARGS: pair \"x\" is not KEY=VALUE");
}
