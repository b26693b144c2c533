//! CNI error results (SPEC.md section 5 "Error") and the reserved error codes.
//!
//! A failing plugin prints `{"cniVersion", "code", "msg", "details"}` on stdout and exits non-zero.
//! Codes 0-99 are reserved by the spec; 100 and up are the plugin's own.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::version::CniVersion;

/// The first code a plugin may use for its own errors (SPEC.md: "Values of 100+ can be freely
/// used for plugin specific errors").
pub const FIRST_PLUGIN_CODE: u32 = 100;

/// The well-known error codes of SPEC.md section 5 (50 and 51 exist since 1.1.0, for STATUS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the configuration's `cniVersion` is not one the plugin speaks.
    IncompatibleVersion,
    /// 2: a network configuration field the plugin does not support; the message must name the
    /// key and its value.
    UnsupportedField,
    /// 3: the container is unknown; the runtime need not clean up after it.
    UnknownContainer,
    /// 4: invalid necessary environment variables; the message must name them.
    InvalidEnvironment,
    /// 5: I/O failure, e.g. reading the configuration from stdin.
    IoFailure,
    /// 6: failed to decode content (configuration, version, result).
    DecodingFailure,
    /// 7: the network configuration fails validation.
    InvalidNetworkConfig,
    /// 11: a transient condition; the runtime should retry later.
    TryAgainLater,
    /// 50: the plugin cannot service ADD requests (STATUS).
    PluginNotAvailable,
    /// 51: the plugin is not available and existing containers may have limited connectivity.
    LimitedConnectivity,
}

impl ErrorCode {
    /// Every well-known code, in numeric order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::IncompatibleVersion,
        ErrorCode::UnsupportedField,
        ErrorCode::UnknownContainer,
        ErrorCode::InvalidEnvironment,
        ErrorCode::IoFailure,
        ErrorCode::DecodingFailure,
        ErrorCode::InvalidNetworkConfig,
        ErrorCode::TryAgainLater,
        ErrorCode::PluginNotAvailable,
        ErrorCode::LimitedConnectivity,
    ];

    /// The number put in the `code` field.
    pub const fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
        }
    }

    /// The well-known code with this number, if any.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The spec's short description, used as `msg` when nothing more specific is known.
    pub const fn description(self) -> &'static str {
        match self {
            ErrorCode::IncompatibleVersion => "incompatible CNI version",
            ErrorCode::UnsupportedField => "unsupported field in network configuration",
            ErrorCode::UnknownContainer => "container unknown or does not exist",
            ErrorCode::InvalidEnvironment => "invalid necessary environment variables",
            ErrorCode::IoFailure => "I/O failure",
            ErrorCode::DecodingFailure => "failed to decode content",
            ErrorCode::InvalidNetworkConfig => "invalid network configuration",
            ErrorCode::TryAgainLater => "try again later",
            ErrorCode::PluginNotAvailable => "the plugin is not available",
            ErrorCode::LimitedConnectivity => {
                "the plugin is not available, existing containers may have limited connectivity"
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

/// A CNI error result. `msg` is short and specific (it names the variable, field or socket);
/// `details` may say more, or be empty.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl CniError {
    /// An error with a well-known code.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code: code.code(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// An error with a plugin-specific code (100 and up; smaller numbers are reserved and are
    /// moved up to [`FIRST_PLUGIN_CODE`] so a plugin code never masquerades as a well-known one).
    pub fn plugin(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code: code.max(FIRST_PLUGIN_CODE),
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The well-known code, if `code` is one.
    pub fn well_known(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code)
    }

    /// Whether the runtime should retry (code 11).
    pub fn is_transient(&self) -> bool {
        self.code == ErrorCode::TryAgainLater.code()
    }

    /// The error as the JSON object a plugin prints, in the caller's version. `None` (the version
    /// could not be told, or it is what failed) falls back to the newest supported version.
    pub fn to_json(&self, version: Option<CniVersion>) -> String {
        serde_json::to_string(&self.versioned(version)).expect("plain strings always serialize")
    }

    /// A serializable view of the error in `version` (see [`CniError::to_json`]).
    pub fn versioned(&self, version: Option<CniVersion>) -> VersionedError<'_> {
        VersionedError {
            cni_version: version.unwrap_or(CniVersion::LATEST),
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        }
    }

    /// Reads an error printed by another plugin (a delegated IPAM plugin), to pass it on.
    /// `None` if `output` is not an error object.
    pub fn from_json(output: &str) -> Option<CniError> {
        serde_json::from_str(output).ok()
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// An error rendered in one CNI version. Field order is the spec's: `cniVersion`, `code`, `msg`,
/// `details` (always present, the spec lists it as a key of the object).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct VersionedError<'a> {
    #[serde(rename = "cniVersion")]
    pub cni_version: CniVersion,
    pub code: u32,
    pub msg: &'a str,
    pub details: &'a str,
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
