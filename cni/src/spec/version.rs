//! CNI spec versions: which ones Trellis speaks, the VERSION command's answer, and the rule that
//! a plugin answers in the version it was called with.
//!
//! The rule matters in practice: containerd 1.6 (libcni 1.1) rejects a result whose `cniVersion`
//! is "1.1.0" when its configuration said "0.4.0" or "1.0.0". So every result and error is rendered
//! in the configuration's version, never in the newest one.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::env::Command;
use super::error::{CniError, ErrorCode};

/// A CNI spec version Trellis supports. Ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.4.0: adds CHECK and `prevResult` on DEL; `ips[].version` ("4"/"6") in results.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`; configuration lists only.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS, route `mtu/advmss/priority/table/scope`, interface
    /// `mtu/socketPath/pciID`.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first (the order VERSION reports them in).
    pub const ALL: [CniVersion; 3] = [CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];

    /// The newest supported version.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version string as it appears in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a `cniVersion` value. Only the exact strings of supported versions are accepted
    /// (libcni compares them as strings too).
    pub fn parse(s: &str) -> Result<CniVersion, VersionError> {
        if let Some(v) = CniVersion::ALL.into_iter().find(|v| v.as_str() == s) {
            return Ok(v);
        }
        if is_semver_core(s) {
            Err(VersionError::Unsupported(s.to_string()))
        } else {
            Err(VersionError::Malformed(s.to_string()))
        }
    }

    /// Whether a configuration in this version may be used with `command`: CHECK exists since
    /// 0.4.0 (so always here), GC and STATUS since 1.1.0.
    pub const fn supports(self, command: Command) -> bool {
        match command {
            Command::Add | Command::Del | Command::Check | Command::Version => true,
            Command::Gc | Command::Status => matches!(self, CniVersion::V1_1_0),
        }
    }

    /// [`CniVersion::supports`] as a `Result`, naming the command and version when it fails.
    pub fn check_command(self, command: Command) -> Result<(), VersionError> {
        if self.supports(command) {
            Ok(())
        } else {
            Err(VersionError::CommandNotInVersion {
                command,
                version: self,
            })
        }
    }

    /// Results carry `ips[].version` ("4" or "6") in 0.3.x/0.4.0 only.
    pub const fn has_ip_version_field(self) -> bool {
        matches!(self, CniVersion::V0_4_0)
    }

    /// Route `mtu/advmss/priority/table/scope` and interface `mtu/socketPath/pciID` exist since
    /// 1.1.0.
    pub const fn has_extended_fields(self) -> bool {
        matches!(self, CniVersion::V1_1_0)
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::parse(s)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A `cniVersion` Trellis cannot work with. Always CNI error 1 (incompatible CNI version).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// No `cniVersion` at all: per libcni that means 0.1.0.
    #[error(
        "cniVersion is missing (which means 0.1.0); supported versions: {}",
        supported_list()
    )]
    Missing,
    /// A well-formed version Trellis does not implement.
    #[error("CNI version {0:?} is not supported; supported versions: {list}", list = supported_list())]
    Unsupported(String),
    /// Not a version at all.
    #[error("cniVersion {0:?} is not a version (MAJOR.MINOR.PATCH); supported versions: {list}", list = supported_list())]
    Malformed(String),
    /// The command did not exist yet in the configuration's version.
    #[error(
        "CNI_COMMAND {command} needs cniVersion 1.1.0 or later, the configuration has {version}"
    )]
    CommandNotInVersion {
        command: Command,
        version: CniVersion,
    },
}

impl VersionError {
    /// Always [`ErrorCode::IncompatibleVersion`].
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::IncompatibleVersion
    }
}

impl From<VersionError> for CniError {
    fn from(e: VersionError) -> CniError {
        CniError::new(e.code(), e.to_string())
    }
}

fn supported_list() -> String {
    CniVersion::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `MAJOR.MINOR.PATCH` with decimal digits only (SemVer 2.0's version core).
fn is_semver_core(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The answer to CNI_COMMAND=VERSION: `{"cniVersion": ..., "supportedVersions": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version given on stdin (SPEC.md: "The value of cniVersion specified on input"), or the
    /// newest supported one when stdin gave none that is well-formed.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

impl VersionInfo {
    /// Builds the answer from VERSION's stdin. Never fails: a runtime probing versions must
    /// always learn what is supported, so unreadable input just gets the newest version echoed.
    /// A well-formed but unsupported version is echoed as given; the runtime then sees that it
    /// is missing from `supportedVersions`.
    pub fn from_stdin(stdin: &str) -> VersionInfo {
        let requested = requested_version(stdin).filter(|v| is_semver_core(v));
        VersionInfo {
            cni_version: requested.unwrap_or_else(|| CniVersion::LATEST.as_str().to_string()),
            supported_versions: CniVersion::ALL.iter().map(|v| v.as_str()).collect(),
        }
    }

    /// The answer as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings always serialize")
    }
}

/// The `cniVersion` string of a JSON object, if it has one.
fn requested_version(stdin: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}

/// The supported version the caller speaks, read from stdin without parsing anything else, so an
/// error found later (or in the environment) can still be answered in the caller's version.
/// `None` when stdin is not JSON or its version is missing or unsupported: errors then fall back
/// to the newest version.
pub fn caller_version(stdin: &str) -> Option<CniVersion> {
    CniVersion::parse(&requested_version(stdin)?).ok()
}

#[cfg(test)]
#[path = "version_tests.rs"]
mod tests;
