use serde_json::{json, Value};

use super::*;

/// SPEC.md section 5 "Error": code and the start of its description.
const SPEC_TABLE: [(u32, ErrorCode); 10] = [
    (1, ErrorCode::IncompatibleVersion),
    (2, ErrorCode::UnsupportedField),
    (3, ErrorCode::UnknownContainer),
    (4, ErrorCode::InvalidEnvironment),
    (5, ErrorCode::IoFailure),
    (6, ErrorCode::DecodingFailure),
    (7, ErrorCode::InvalidNetworkConfig),
    (11, ErrorCode::TryAgainLater),
    (50, ErrorCode::PluginNotAvailable),
    (51, ErrorCode::LimitedConnectivity),
];

#[test]
fn well_known_codes_match_the_spec_table() {
    for (number, code) in SPEC_TABLE {
        assert_eq!(code.code(), number, "{code:?}");
        assert_eq!(ErrorCode::from_code(number), Some(code));
    }
    assert_eq!(ErrorCode::ALL.len(), SPEC_TABLE.len());
    for unknown in [0, 8, 9, 10, 12, 49, 52, 99, 100, 999] {
        assert_eq!(ErrorCode::from_code(unknown), None, "{unknown}");
    }
}

#[test]
fn every_code_renders_in_every_version() {
    for code in ErrorCode::ALL {
        for version in CniVersion::ALL {
            let err = CniError::new(code, code.description()).with_details("more");
            let v: Value = serde_json::from_str(&err.to_json(Some(version))).unwrap();
            assert_eq!(
                v,
                json!({
                    "cniVersion": version.as_str(),
                    "code": code.code(),
                    "msg": code.description(),
                    "details": "more",
                }),
                "{code:?} in {version}"
            );
        }
    }
}

#[test]
fn rendering_is_golden_with_spec_key_order() {
    let err = CniError::new(ErrorCode::InvalidNetworkConfig, "Invalid Configuration")
        .with_details("Network 192.168.0.0/31 too small to allocate from.");
    assert_eq!(
        err.to_json(Some(CniVersion::V1_0_0)),
        r#"{"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"Network 192.168.0.0/31 too small to allocate from."}"#
    );
}

#[test]
fn empty_details_are_still_rendered() {
    let err = CniError::new(ErrorCode::TryAgainLater, "agent socket /x unreachable");
    assert_eq!(
        err.to_json(Some(CniVersion::V0_4_0)),
        r#"{"cniVersion":"0.4.0","code":11,"msg":"agent socket /x unreachable","details":""}"#
    );
}

#[test]
fn unknown_caller_version_falls_back_to_the_newest() {
    let err = CniError::new(ErrorCode::IncompatibleVersion, "no");
    let v: Value = serde_json::from_str(&err.to_json(None)).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn plugin_codes_start_at_100() {
    assert_eq!(CniError::plugin(100, "x").code, 100);
    assert_eq!(CniError::plugin(123, "x").code, 123);
    assert_eq!(CniError::plugin(7, "x").code, FIRST_PLUGIN_CODE);
    assert_eq!(CniError::plugin(123, "x").well_known(), None);
    assert_eq!(
        CniError::new(ErrorCode::IoFailure, "x").well_known(),
        Some(ErrorCode::IoFailure)
    );
}

#[test]
fn transient_is_code_11_only() {
    for code in ErrorCode::ALL {
        let transient = CniError::new(code, "x").is_transient();
        assert_eq!(transient, code == ErrorCode::TryAgainLater, "{code:?}");
    }
}

#[test]
fn display_joins_msg_and_details() {
    let bare = CniError::new(ErrorCode::IoFailure, "reading stdin");
    assert_eq!(bare.to_string(), "CNI error 5: reading stdin");
    let full = bare.with_details("broken pipe");
    assert_eq!(full.to_string(), "CNI error 5: reading stdin; broken pipe");
    assert_eq!(
        ErrorCode::DecodingFailure.to_string(),
        "6 (failed to decode content)"
    );
}

#[test]
fn reads_a_delegated_plugins_error() {
    // host-local prints libcni's types.Error, which has no cniVersion and omits empty details.
    let err = CniError::from_json(r#"{"code": 11, "msg": "lock held"}"#).unwrap();
    assert_eq!(err, CniError::new(ErrorCode::TryAgainLater, "lock held"));
    let err = CniError::from_json(
        r#"{"cniVersion":"1.0.0","code":999,"msg":"failed","details":"no free addresses"}"#,
    )
    .unwrap();
    assert_eq!((err.code, err.details.as_str()), (999, "no free addresses"));
    assert_eq!(
        CniError::from_json(r#"{"cniVersion":"1.0.0","ips":[]}"#),
        None
    );
    assert_eq!(CniError::from_json("not json"), None);
}
