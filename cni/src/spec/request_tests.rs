use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::spec::env::{CNI_ARGS, CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS, CNI_PATH};

fn run(vars: &[(&str, &str)], stdin: &str) -> Result<Request, Failure> {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    parse_request(&|k| map.get(k).map(|v| v.to_string()), stdin)
}

fn attachment_env(command: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        (CNI_COMMAND, command),
        (CNI_CONTAINERID, "default-web"),
        (CNI_NETNS, "/proc/77/ns/net"),
        (CNI_IFNAME, "eth0"),
        (
            CNI_ARGS,
            "K8S_POD_NAME=web;IgnoreUnknown=1;K8S_POD_NAMESPACE=default",
        ),
        (CNI_PATH, "/opt/cni/bin"),
    ]
}

const CONF_1_0_0: &str = r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"trellis","ipam":{"type":"trellis-ipam"}}"#;

fn error_json(f: &Failure) -> Value {
    serde_json::from_str(&f.to_json()).unwrap()
}

#[test]
fn add_request() {
    let Ok(Request::Command(inv)) = run(&attachment_env("ADD"), CONF_1_0_0) else {
        panic!()
    };
    assert_eq!(inv.command(), Command::Add);
    assert_eq!(inv.version(), CniVersion::V1_0_0);
    assert_eq!(inv.env.args.pod(), Some(("default", "web")));
    assert_eq!(inv.conf.name, "k8s-pod-network");
}

#[test]
fn version_request_ignores_everything_else() {
    let r = run(&[(CNI_COMMAND, "VERSION")], r#"{"cniVersion":"0.4.0"}"#).unwrap();
    let Request::Version(info) = r else { panic!() };
    assert_eq!(info.cni_version, "0.4.0");
    // Not a configuration at all: still answered.
    assert!(matches!(
        run(&[(CNI_COMMAND, "VERSION")], "junk"),
        Ok(Request::Version(_))
    ));
}

#[test]
fn env_errors_are_answered_in_the_callers_version() {
    let f = run(&[(CNI_COMMAND, "ADD")], CONF_1_0_0).unwrap_err();
    assert_eq!(f.version, Some(CniVersion::V1_0_0));
    let v = error_json(&f);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["code"], 4);
    assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
    assert!(!f.is_missing_command());
}

#[test]
fn missing_command_is_recognisable() {
    let f = run(&[], CONF_1_0_0).unwrap_err();
    assert!(f.is_missing_command());
    assert_eq!(f.cni_error().code, 4);
}

#[test]
fn config_errors_keep_the_callers_version() {
    let stdin = r#"{"cniVersion":"0.4.0","name":"n","type":"trellis","mtu":"big"}"#;
    let f = run(&attachment_env("ADD"), stdin).unwrap_err();
    let v = error_json(&f);
    assert_eq!(
        (v["cniVersion"].as_str(), v["code"].as_u64()),
        (Some("0.4.0"), Some(6))
    );
    assert_eq!(
        v["msg"],
        "network configuration: mtu: expected an integer, found a string"
    );
}

#[test]
fn unsupported_versions_are_answered_in_the_newest() {
    let stdin = r#"{"cniVersion":"0.3.1","name":"n","type":"trellis"}"#;
    let f = run(&attachment_env("ADD"), stdin).unwrap_err();
    assert_eq!(f.version, None);
    let v = error_json(&f);
    assert_eq!(
        (v["cniVersion"].as_str(), v["code"].as_u64()),
        (Some("1.1.0"), Some(1))
    );
}

#[test]
fn gc_and_status_need_a_1_1_0_configuration() {
    for (command, vars) in [
        ("GC", vec![(CNI_COMMAND, "GC"), (CNI_PATH, "/opt/cni/bin")]),
        ("STATUS", vec![(CNI_COMMAND, "STATUS")]),
    ] {
        let f = run(&vars, CONF_1_0_0).unwrap_err();
        assert!(matches!(f.error, RequestError::Version(_)), "{command}");
        let v = error_json(&f);
        assert_eq!(
            (v["cniVersion"].as_str(), v["code"].as_u64()),
            (Some("1.0.0"), Some(1))
        );

        let conf_1_1_0 = CONF_1_0_0.replace("1.0.0", "1.1.0");
        let Ok(Request::Command(inv)) = run(&vars, &conf_1_1_0) else {
            panic!("{command}")
        };
        assert_eq!(inv.env.attachment, None);
    }
}

#[test]
fn del_with_empty_netns_and_prev_result() {
    let mut vars = attachment_env("DEL");
    vars.retain(|(k, _)| *k != CNI_NETNS);
    vars.push((CNI_NETNS, ""));
    let stdin = r#"{"cniVersion":"1.0.0","name":"n","type":"trellis",
        "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.7/32"}]}}"#;
    let Ok(Request::Command(inv)) = run(&vars, stdin) else {
        panic!()
    };
    assert_eq!(inv.env.netns(), None);
    assert_eq!(inv.conf.prev_result.unwrap().ips.len(), 1);
}
