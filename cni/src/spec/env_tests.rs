use std::collections::HashMap;

use super::*;

/// An environment made of `(name, value)` pairs.
fn env(vars: &[(&str, &str)]) -> Result<CniEnv, EnvError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CniEnv::from_lookup(&|k| map.get(k).cloned())
}

/// Everything ADD needs, with `command` instead.
fn full(command: &str) -> Vec<(&str, &str)> {
    vec![
        (CNI_COMMAND, command),
        (CNI_CONTAINERID, "default-busybox1"),
        (CNI_NETNS, "/proc/4242/ns/net"),
        (CNI_IFNAME, "eth0"),
        (
            CNI_ARGS,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod",
        ),
        (CNI_PATH, "/opt/cni/bin:/usr/lib/cni"),
    ]
}

fn without<'a>(vars: &[(&'a str, &'a str)], name: &str) -> Vec<(&'a str, &'a str)> {
    vars.iter().copied().filter(|(k, _)| *k != name).collect()
}

#[test]
fn requirement_table_matches_the_spec() {
    use Need::{Optional as O, Required as R, Unused as U};
    // Rows: VARIABLES; columns: ADD, DEL, CHECK, VERSION, GC, STATUS.
    let table = [
        (CNI_COMMAND, [R, R, R, R, R, R]),
        (CNI_CONTAINERID, [R, R, R, U, U, U]),
        (CNI_NETNS, [R, O, R, U, U, U]),
        (CNI_IFNAME, [R, R, R, U, U, U]),
        (CNI_ARGS, [O, O, O, U, U, U]),
        (CNI_PATH, [O, O, O, U, R, O]),
    ];
    for (var, needs) in table {
        for (command, need) in Command::ALL.into_iter().zip(needs) {
            assert_eq!(command.need(var), need, "{var} for {command}");
        }
    }
    assert_eq!(Command::Add.need("CNI_NETNS_OVERRIDE"), Need::Unused);
}

#[test]
fn every_command_parses_with_everything_set() {
    for command in Command::ALL {
        let e = env(&full(command.as_str())).unwrap();
        assert_eq!(e.command, command);
        assert_eq!(
            e.attachment.is_some(),
            command.has_attachment(),
            "{command}"
        );
        if command.has_attachment() {
            assert_eq!(e.container_id(), Some("default-busybox1"));
            assert_eq!(e.netns(), Some("/proc/4242/ns/net"));
            assert_eq!(e.ifname(), Some("eth0"));
            assert_eq!(e.args.pod(), Some(("ns", "pod")));
        } else {
            assert_eq!(e.container_id(), None);
            assert_eq!(e.args, CniArgs::default(), "{command} ignores CNI_ARGS");
        }
        let expected_path: Vec<PathBuf> = if command == Command::Version {
            vec![]
        } else {
            vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()]
        };
        assert_eq!(e.path, expected_path, "{command}");
    }
}

#[test]
fn each_required_variable_is_named_when_missing() {
    for command in Command::ALL {
        for var in VARIABLES.into_iter().filter(|v| *v != CNI_COMMAND) {
            let result = env(&without(&full(command.as_str()), var));
            if command.need(var) == Need::Required {
                let err = result.unwrap_err();
                assert_eq!(
                    err,
                    EnvError::Missing {
                        command,
                        vars: vec![var]
                    },
                    "{command} without {var}"
                );
                assert!(err.to_string().contains(var));
                assert_eq!(err.variables(), vec![var]);
            } else {
                assert!(result.is_ok(), "{command} without {var}: {result:?}");
            }
        }
    }
}

#[test]
fn all_missing_variables_are_named_at_once() {
    let err = env(&[(CNI_COMMAND, "ADD")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ADD needs environment variables that are not set: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME"
    );
    assert_eq!(CniError::from(err).code, 4);
}

#[test]
fn del_accepts_an_empty_netns() {
    // What `ctr run --cni` and containerd send on DEL.
    let mut vars = full("DEL");
    vars.retain(|(k, _)| *k != CNI_NETNS);
    vars.push((CNI_NETNS, ""));
    let e = env(&vars).unwrap();
    assert_eq!(e.netns(), None);
    assert_eq!(e.container_id(), Some("default-busybox1"));
}

#[test]
fn add_and_check_reject_an_empty_netns() {
    for command in ["ADD", "CHECK"] {
        let mut vars = without(&full(command), CNI_NETNS);
        vars.push((CNI_NETNS, ""));
        assert!(
            matches!(env(&vars), Err(EnvError::Missing { vars, .. }) if vars == [CNI_NETNS]),
            "{command}"
        );
    }
}

#[test]
fn gc_needs_only_command_and_path() {
    let e = env(&[(CNI_COMMAND, "GC"), (CNI_PATH, "/opt/cni/bin")]).unwrap();
    assert_eq!(e.attachment, None);
    assert_eq!(e.path, vec![PathBuf::from("/opt/cni/bin")]);
    assert_eq!(
        env(&[(CNI_COMMAND, "GC")]),
        Err(EnvError::Missing {
            command: Command::Gc,
            vars: vec![CNI_PATH]
        })
    );
}

#[test]
fn status_and_version_need_only_the_command() {
    for command in ["STATUS", "VERSION"] {
        let e = env(&[(CNI_COMMAND, command)]).unwrap();
        assert_eq!(e.attachment, None);
        assert!(e.path.is_empty());
    }
}

#[test]
fn unused_variables_are_not_validated() {
    for command in ["VERSION", "GC", "STATUS"] {
        let e = env(&[
            (CNI_COMMAND, command),
            (CNI_CONTAINERID, "-bad id-"),
            (CNI_IFNAME, "much/too/long/name"),
            (CNI_ARGS, "garbage"),
            (CNI_PATH, "/bin"),
        ]);
        assert!(e.is_ok(), "{command}: {e:?}");
    }
}

#[test]
fn command_is_checked_first() {
    assert_eq!(env(&[]), Err(EnvError::MissingCommand));
    assert_eq!(env(&[(CNI_COMMAND, "")]), Err(EnvError::MissingCommand));
    for bad in ["add", "Add", "DELETE", "STATUS ", "UPDATE"] {
        assert_eq!(
            env(&[(CNI_COMMAND, bad)]),
            Err(EnvError::UnknownCommand(bad.into())),
            "{bad:?}"
        );
    }
    let err = EnvError::UnknownCommand("UPDATE".into());
    assert_eq!(err.variables(), vec![CNI_COMMAND]);
    assert_eq!(CniError::from(err).code, 4);
}

#[test]
fn commands_round_trip_their_names() {
    for c in Command::ALL {
        assert_eq!(Command::parse(c.as_str()), Some(c));
        assert_eq!(c.to_string(), c.as_str());
    }
    assert!(!Command::Version.reads_config());
    assert!(Command::Status.reads_config());
}

#[test]
fn container_ids() {
    for ok in [
        "a",
        "0",
        "default-busybox1",
        "k8s.io-3f2a",
        "abc_DEF.1-2",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ] {
        assert_eq!(validate_container_id(ok), Ok(()), "{ok:?}");
    }
    for bad in [
        "", "-abc", "_abc", ".abc", "abc def", "abc/def", "abc:def", "é", "a\u{e9}",
    ] {
        assert!(validate_container_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn interface_names() {
    for ok in ["eth0", "a", "net1", "123456789012345", "eth-0.100", "é"] {
        assert_eq!(validate_ifname(ok), Ok(()), "{ok:?}");
    }
    for bad in [
        "",
        ".",
        "..",
        "1234567890123456",
        "eth/0",
        "eth:0",
        "eth 0",
        "eth\t0",
        "eth0\n",
        // 8 two-byte characters: 16 bytes.
        "éééééééé",
    ] {
        assert!(validate_ifname(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn invalid_values_name_the_variable() {
    let mut vars = without(&full("ADD"), CNI_IFNAME);
    vars.push((CNI_IFNAME, "much-too-long-name"));
    let err = env(&vars).unwrap_err();
    assert!(matches!(
        err,
        EnvError::Invalid {
            var: CNI_IFNAME,
            ..
        }
    ));
    assert!(
        err.to_string()
            .starts_with("CNI_IFNAME=\"much-too-long-name\""),
        "{err}"
    );

    let mut vars = without(&full("DEL"), CNI_CONTAINERID);
    vars.push((CNI_CONTAINERID, "bad id"));
    let err = env(&vars).unwrap_err();
    assert_eq!(err.variables(), vec![CNI_CONTAINERID]);
    assert_eq!(CniError::from(err).code, 4);
}

#[test]
fn bad_cni_args_are_an_environment_error() {
    let mut vars = without(&full("ADD"), CNI_ARGS);
    vars.push((CNI_ARGS, "K8S_POD_NAME=a;FOO=bar"));
    let err = env(&vars).unwrap_err();
    assert!(
        matches!(err, EnvError::Args(ArgsError::Unknown(_))),
        "{err:?}"
    );
    assert_eq!(err.variables(), vec![CNI_ARGS]);
    let cni = CniError::from(err);
    assert_eq!(cni.code, 4);
    assert!(
        cni.msg.contains("CNI_ARGS") && cni.msg.contains("FOO=bar"),
        "{}",
        cni.msg
    );
}

#[test]
fn cni_path_splitting() {
    assert_eq!(split_path(""), Vec::<PathBuf>::new());
    assert_eq!(split_path(":"), Vec::<PathBuf>::new());
    assert_eq!(
        split_path("/opt/cni/bin::/usr/lib/cni:"),
        vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
}
