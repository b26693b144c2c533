use serde_json::{json, Value};

use super::*;

#[test]
fn parses_exactly_the_supported_versions() {
    assert_eq!(CniVersion::parse("0.4.0"), Ok(CniVersion::V0_4_0));
    assert_eq!(CniVersion::parse("1.0.0"), Ok(CniVersion::V1_0_0));
    assert_eq!(CniVersion::parse("1.1.0"), Ok(CniVersion::V1_1_0));
    assert_eq!("1.1.0".parse::<CniVersion>(), Ok(CniVersion::V1_1_0));
    for v in CniVersion::ALL {
        assert_eq!(CniVersion::parse(v.as_str()), Ok(v));
        assert_eq!(v.to_string(), v.as_str());
    }
}

#[test]
fn other_versions_are_unsupported_or_malformed() {
    for v in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "1.2.0", "2.0.0", "10.0.0",
    ] {
        assert_eq!(
            CniVersion::parse(v),
            Err(VersionError::Unsupported(v.into())),
            "{v}"
        );
    }
    for v in [
        "",
        "1.0",
        "1",
        "v1.0.0",
        "1.0.0-rc1",
        "1.0.0 ",
        "1..0",
        "a.b.c",
        "1.0.0.0",
    ] {
        assert_eq!(
            CniVersion::parse(v),
            Err(VersionError::Malformed(v.into())),
            "{v:?}"
        );
    }
}

#[test]
fn version_errors_are_code_1_and_list_what_is_supported() {
    let errors = [
        VersionError::Missing,
        VersionError::Unsupported("0.3.1".into()),
        VersionError::Malformed("x".into()),
        VersionError::CommandNotInVersion {
            command: Command::Gc,
            version: CniVersion::V1_0_0,
        },
    ];
    for e in errors {
        let cni: CniError = e.clone().into();
        assert_eq!(cni.code, 1, "{e}");
        assert_eq!(cni.msg, e.to_string());
    }
    let msg = VersionError::Unsupported("0.3.1".into()).to_string();
    assert!(
        msg.contains("\"0.3.1\"") && msg.contains("0.4.0, 1.0.0, 1.1.0"),
        "{msg}"
    );
    let msg = VersionError::CommandNotInVersion {
        command: Command::Status,
        version: CniVersion::V0_4_0,
    }
    .to_string();
    assert!(msg.contains("STATUS") && msg.contains("0.4.0"), "{msg}");
}

#[test]
fn versions_are_ordered_oldest_first() {
    assert!(CniVersion::V0_4_0 < CniVersion::V1_0_0);
    assert!(CniVersion::V1_0_0 < CniVersion::V1_1_0);
    assert_eq!(CniVersion::LATEST, *CniVersion::ALL.iter().max().unwrap());
}

#[test]
fn gc_and_status_need_1_1_0() {
    use CniVersion::*;
    for v in CniVersion::ALL {
        for c in [Command::Add, Command::Del, Command::Check, Command::Version] {
            assert!(v.supports(c), "{c} in {v}");
            assert_eq!(v.check_command(c), Ok(()));
        }
        for c in [Command::Gc, Command::Status] {
            assert_eq!(v.supports(c), v == V1_1_0, "{c} in {v}");
        }
    }
    assert_eq!(
        V1_0_0.check_command(Command::Gc),
        Err(VersionError::CommandNotInVersion {
            command: Command::Gc,
            version: V1_0_0
        })
    );
}

#[test]
fn result_shape_flags_per_version() {
    use CniVersion::*;
    assert_eq!(
        CniVersion::ALL.map(|v| (v.has_ip_version_field(), v.has_extended_fields())),
        [(true, false), (false, false), (false, true)]
    );
    assert!(V0_4_0.has_ip_version_field());
}

#[test]
fn version_answer_echoes_the_requested_version() {
    for requested in ["0.4.0", "1.0.0", "1.1.0"] {
        let info = VersionInfo::from_stdin(&format!(r#"{{"cniVersion":"{requested}"}}"#));
        assert_eq!(
            info.to_json(),
            format!(
                r#"{{"cniVersion":"{requested}","supportedVersions":["0.4.0","1.0.0","1.1.0"]}}"#
            )
        );
    }
}

#[test]
fn version_answer_for_an_unsupported_version_still_lists_the_supported_ones() {
    // SPEC.md: cniVersion is "the value of cniVersion specified on input"; the runtime sees it is
    // not among supportedVersions.
    let info = VersionInfo::from_stdin(r#"{"cniVersion":"0.3.1"}"#);
    let v: Value = serde_json::from_str(&info.to_json()).unwrap();
    assert_eq!(
        v,
        json!({"cniVersion": "0.3.1", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn version_answer_without_a_usable_version_is_the_latest() {
    for stdin in [
        "",
        "{}",
        "not json",
        r#"{"cniVersion": 1}"#,
        r#"{"cniVersion": "garbage"}"#,
        r#"{"cniVersion": ""}"#,
        "[]",
    ] {
        let info = VersionInfo::from_stdin(stdin);
        assert_eq!(info.cni_version, "1.1.0", "{stdin:?}");
        assert_eq!(info.supported_versions, ["0.4.0", "1.0.0", "1.1.0"]);
    }
}

#[test]
fn caller_version_reads_only_cni_version() {
    // The rest of the document may be broken: errors are still answered in the caller's version.
    assert_eq!(
        caller_version(r#"{"cniVersion":"0.4.0","name":7,"type":[]}"#),
        Some(CniVersion::V0_4_0)
    );
    assert_eq!(
        caller_version(r#"{"cniVersion":"1.0.0"}"#),
        Some(CniVersion::V1_0_0)
    );
    assert_eq!(caller_version(r#"{"cniVersion":"0.3.1"}"#), None);
    assert_eq!(caller_version(r#"{"name":"x"}"#), None);
    assert_eq!(caller_version(r#"{"cniVersion":"1.0.0""#), None);
    assert_eq!(caller_version(""), None);
}

#[test]
fn versions_serialize_as_strings() {
    assert_eq!(
        serde_json::to_string(&CniVersion::ALL).unwrap(),
        r#"["0.4.0","1.0.0","1.1.0"]"#
    );
}
