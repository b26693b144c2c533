//! The network configuration the plugin reads on stdin: one plugin's entry of the conflist, with
//! `cniVersion` and `name` inserted by the runtime, plus `runtimeConfig`, `prevResult` (chaining,
//! CHECK, DEL) or `cni.dev/valid-attachments` (GC) (SPEC.md section 3, "Deriving request
//! configuration").
//!
//! Error codes: not JSON, or a field of the wrong JSON type: 6 (failed to decode content); a
//! required field missing or a value out of bounds: 7 (invalid network configuration); an
//! unsupported `cniVersion`: 1. Messages name the field (`runtimeConfig.portMappings[1].hostPort`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::Value;

use super::args::{CniArgs, RequestedIp};
use super::error::{CniError, ErrorCode};
use super::ipam::Ipam;
use super::json::{self, index, FieldError, Obj};
use super::result::{CniResult, Dns, ResultError};
use super::runtime::RuntimeConfig;
use super::version::{CniVersion, VersionError};

/// Where the node agent listens unless `agent_socket` says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/trellis/agent.sock";

/// The smallest MTU an IPv4 interface may have (RFC 791).
pub const MIN_MTU: u32 = 68;

/// The keys read into [`NetConf`] fields; everything else lands in [`NetConf::extra`].
const KNOWN_KEYS: [&str; 15] = [
    "cniVersion",
    "name",
    "type",
    "ipam",
    "dns",
    "prevResult",
    "runtimeConfig",
    "capabilities",
    "cni.dev/valid-attachments",
    "mtu",
    "agent_socket",
    "log_level",
    "log_file_path",
    "nodename",
    // `args` is read for `args.cni.ips` but also kept whole in `extra` (see below).
    "args",
];

/// One plugin's request configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The network's name.
    pub name: String,
    /// The plugin binary's name (`trellis`).
    pub plugin_type: String,
    pub ipam: Option<Ipam>,
    /// `dns`: settings to put in results.
    pub dns: Dns,
    /// `prevResult`, parsed; present when chained after another plugin, and on CHECK and DEL.
    pub prev_result: Option<CniResult>,
    /// `prevResult` as given.
    pub raw_prev_result: Option<Value>,
    pub runtime_config: RuntimeConfig,
    /// `capabilities`: the runtime should strip it, `ctr run --cni` does not.
    pub capabilities: BTreeMap<String, bool>,
    /// `cni.dev/valid-attachments` (GC): `None` when the key is absent.
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// `args.cni.ips` (CONVENTIONS.md): addresses asked for through `args`.
    pub args_ips: Vec<RequestedIp>,
    /// `mtu`: `None` (absent or 0) lets the agent decide.
    pub mtu: Option<u32>,
    /// `agent_socket`, default [`DEFAULT_AGENT_SOCKET`].
    pub agent_socket: PathBuf,
    pub log_level: Option<LogLevel>,
    pub log_file_path: Option<PathBuf>,
    /// `nodename`: the node's name if it is not the host name.
    pub nodename: Option<String>,
    /// Every other key (datastore settings, `args`, ...), as given.
    pub extra: BTreeMap<String, Value>,
}

/// One still-valid attachment listed for GC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GcAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// `log_level`, case-insensitive; Calico's and logrus' names are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" | "none" => Ok(LogLevel::Off),
            "panic" | "fatal" | "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "{s:?} is not a log level (off, error, warning, info, debug, trace)"
            )),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration Trellis cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("network configuration is not valid JSON: {0}")]
    Syntax(String),
    #[error("network configuration: {0}")]
    Version(#[from] VersionError),
    #[error("network configuration: {0}")]
    Field(#[from] FieldError),
    #[error("network configuration: {}", prev_result_message(.0))]
    PrevResult(ResultError),
}

fn prev_result_message(e: &ResultError) -> String {
    match e {
        // The path already starts with `prevResult.`.
        ResultError::Field(f) => f.to_string(),
        ResultError::Version(v) => format!("prevResult: {v}"),
        ResultError::Syntax(s) => format!("prevResult: {s}"),
    }
}

impl ConfigError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ConfigError::Syntax(_) => ErrorCode::DecodingFailure,
            ConfigError::Version(e) => e.code(),
            ConfigError::Field(f) if f.is_type_error() => ErrorCode::DecodingFailure,
            ConfigError::Field(_) => ErrorCode::InvalidNetworkConfig,
            ConfigError::PrevResult(e) => e.code(),
        }
    }
}

impl From<ConfigError> for CniError {
    fn from(e: ConfigError) -> CniError {
        CniError::new(e.code(), e.to_string())
    }
}

impl NetConf {
    /// Parses the configuration read from stdin.
    pub fn parse(stdin: &str) -> Result<NetConf, ConfigError> {
        let value = json::parse_document(stdin).map_err(ConfigError::Syntax)?;
        NetConf::from_value(&value)
    }

    /// Reads a configuration already parsed as JSON. `cniVersion` is checked first, so a
    /// configuration of another version fails with CNI error 1 whatever else is in it.
    pub fn from_value(value: &Value) -> Result<NetConf, ConfigError> {
        let obj = Obj::new(value, "")?;
        let cni_version = match obj.non_empty_str("cniVersion")? {
            None => return Err(VersionError::Missing.into()),
            Some(v) => CniVersion::parse(v)?,
        };
        let name = obj.required_str("name")?;
        validate_network_name(name).map_err(|r| FieldError::invalid("name", r))?;
        let plugin_type = obj.required_str("type")?;
        if plugin_type.contains(['/', '\\']) {
            return Err(FieldError::invalid(
                "type",
                format!("{plugin_type:?} must be a binary name, without '/' or '\\'"),
            )
            .into());
        }

        let ipam = obj.obj("ipam")?.map(|o| Ipam::from_obj(&o)).transpose()?;
        let dns = match obj.obj("dns")? {
            Some(d) => Dns::from_obj(&d)?,
            None => Dns::default(),
        };
        let raw_prev_result = obj.get("prevResult").cloned();
        let prev_result = raw_prev_result
            .as_ref()
            .map(|v| CniResult::from_value(v, "prevResult"))
            .transpose()
            .map_err(ConfigError::PrevResult)?;
        let runtime_config = match obj.obj("runtimeConfig")? {
            Some(rc) => RuntimeConfig::from_obj(&rc)?,
            None => RuntimeConfig::default(),
        };

        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            plugin_type: plugin_type.to_string(),
            ipam,
            dns,
            prev_result,
            raw_prev_result,
            runtime_config,
            capabilities: capabilities(&obj)?,
            valid_attachments: valid_attachments(&obj)?,
            args_ips: args_ips(&obj)?,
            mtu: mtu(&obj)?,
            agent_socket: agent_socket(&obj)?,
            log_level: obj.parsed("log_level", |s| s.parse())?,
            log_file_path: obj.non_empty_str("log_file_path")?.map(PathBuf::from),
            nodename: obj.non_empty_str("nodename")?.map(str::to_string),
            extra: obj
                .map
                .iter()
                .filter(|(k, _)| k.as_str() == "args" || !KNOWN_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The addresses asked for, by precedence: `runtimeConfig.ips` (the `ips` capability), then
    /// `args.cni.ips`, then `CNI_ARGS` `IP=` (CONVENTIONS.md: a plugin that understands `args`
    /// must ignore the equivalent `CNI_ARGS` field).
    pub fn requested_ips<'a>(&'a self, cni_args: &'a CniArgs) -> &'a [RequestedIp] {
        [&self.runtime_config.ips, &self.args_ips, &cni_args.ips]
            .into_iter()
            .find(|ips| !ips.is_empty())
            .map_or(&[], |ips| ips.as_slice())
    }
}

/// SPEC.md: a network name "must start with an alphanumeric character, optionally followed by any
/// combination of one or more alphanumeric characters, underscore, dot (.) or hyphen (-)".
pub fn validate_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        ))
    }
}

fn capabilities(obj: &Obj<'_>) -> Result<BTreeMap<String, bool>, FieldError> {
    let Some(caps) = obj.obj("capabilities")? else {
        return Ok(BTreeMap::new());
    };
    caps.map
        .keys()
        .filter_map(|k| caps.bool(k).transpose().map(|b| b.map(|b| (k.clone(), b))))
        .collect()
}

fn valid_attachments(obj: &Obj<'_>) -> Result<Option<Vec<GcAttachment>>, FieldError> {
    let Some(items) = obj.array("cni.dev/valid-attachments")? else {
        return Ok(None);
    };
    let path = obj.at("cni.dev/valid-attachments");
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let a = Obj::new(item, index(&path, i))?;
            Ok(GcAttachment {
                container_id: a.required_str("containerID")?.to_string(),
                ifname: a.required_str("ifname")?.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn args_ips(obj: &Obj<'_>) -> Result<Vec<RequestedIp>, FieldError> {
    let Some(args) = obj.obj("args")? else {
        return Ok(Vec::new());
    };
    let Some(cni) = args.obj("cni")? else {
        return Ok(Vec::new());
    };
    let path = cni.at("ips");
    cni.str_list("ips")?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|r| FieldError::invalid(index(&path, i), r))
        })
        .collect()
}

fn mtu(obj: &Obj<'_>) -> Result<Option<u32>, FieldError> {
    match obj.uint("mtu", u16::MAX.into())? {
        None | Some(0) => Ok(None),
        Some(m) if m < u64::from(MIN_MTU) => Err(FieldError::invalid(
            obj.at("mtu"),
            format!("{m} is below the minimum MTU of {MIN_MTU}"),
        )),
        Some(m) => Ok(Some(m as u32)),
    }
}

fn agent_socket(obj: &Obj<'_>) -> Result<PathBuf, FieldError> {
    match obj.non_empty_str("agent_socket")? {
        None => Ok(PathBuf::from(DEFAULT_AGENT_SOCKET)),
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        Some(p) => Err(FieldError::invalid(
            obj.at("agent_socket"),
            format!("{p:?} is not an absolute path"),
        )),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
