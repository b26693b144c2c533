//! `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`, in any order.
//!
//! containerd's CRI plugin sends `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;
//! K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`, not always in that order. Unknown keys are an
//! error unless `IgnoreUnknown` is true, wherever it appears (libcni's `LoadArgs` rule). `IP=`
//! requests addresses (CONVENTIONS.md: `IP=<ip>[/<prefix>]`; a comma-separated list is accepted
//! for dual stack, as host-local does).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::error::{CniError, ErrorCode};

pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";
pub const K8S_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
pub const K8S_POD_INFRA_CONTAINER_ID: &str = "K8S_POD_INFRA_CONTAINER_ID";
pub const K8S_POD_UID: &str = "K8S_POD_UID";
pub const IP: &str = "IP";

/// The keys Trellis understands.
pub const KNOWN_KEYS: [&str; 6] = [
    IGNORE_UNKNOWN,
    K8S_POD_NAMESPACE,
    K8S_POD_NAME,
    K8S_POD_INFRA_CONTAINER_ID,
    K8S_POD_UID,
    IP,
];

/// A requested address, `ip` or `ip/prefix`. The prefix is kept as given; Trellis itself gives
/// pods host addresses (/32, /128) and only uses `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestedIp {
    pub addr: IpAddr,
    pub prefix_len: Option<u8>,
}

impl FromStr for RequestedIp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => None,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(format!("{s:?} has a prefix length outside 0-{max}")),
            },
        };
        Ok(RequestedIp { addr, prefix_len })
    }
}

impl fmt::Display for RequestedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(p) => write!(f, "{}/{p}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// `CNI_ARGS`, parsed. Empty values count as absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ignore_unknown: bool,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// `IP=`, in the order given.
    pub ips: Vec<RequestedIp>,
    /// Keys Trellis does not know, kept (in order) when `IgnoreUnknown` allowed them.
    pub ignored: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `KEY=VALUE;KEY=VALUE`. Empty segments (a trailing `;`) are skipped; a segment
    /// without exactly one `=` is an error, as is a key given twice.
    pub fn parse(raw: &str) -> Result<CniArgs, ArgsError> {
        let mut args = CniArgs::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut unknown: Vec<(String, String)> = Vec::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let mut parts = pair.split('=');
            let (key, value) = match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(v), None) if !k.is_empty() => (k, v),
                _ => return Err(ArgsError::MalformedPair(pair.to_string())),
            };
            if seen.contains(&key) {
                return Err(ArgsError::Duplicate(key.to_string()));
            }
            seen.push(key);
            let non_empty = || Some(value.to_string()).filter(|v| !v.is_empty());
            match key {
                IGNORE_UNKNOWN => args.ignore_unknown = parse_bool(key, value)?,
                K8S_POD_NAMESPACE => args.pod_namespace = non_empty(),
                K8S_POD_NAME => args.pod_name = non_empty(),
                K8S_POD_INFRA_CONTAINER_ID => args.pod_infra_container_id = non_empty(),
                K8S_POD_UID => args.pod_uid = non_empty(),
                IP => args.ips = parse_ips(value)?,
                _ => unknown.push((key.to_string(), value.to_string())),
            }
        }
        if !unknown.is_empty() && !args.ignore_unknown {
            return Err(ArgsError::Unknown(
                unknown
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ));
        }
        args.ignored = unknown;
        Ok(args)
    }

    /// `(namespace, name)` of the Kubernetes pod, when the runtime gave both.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.pod_namespace.as_deref()?, self.pod_name.as_deref()?))
    }
}

/// libcni's `UnmarshallableBool`: "1"/"true" and "0"/"false", any case.
fn parse_bool(key: &str, value: &str) -> Result<bool, ArgsError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(ArgsError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: "is not a boolean (1, true, 0, false)".to_string(),
        }),
    }
}

fn parse_ips(value: &str) -> Result<Vec<RequestedIp>, ArgsError> {
    value
        .split(',')
        .map(|ip| {
            ip.trim().parse().map_err(|reason| ArgsError::InvalidValue {
                key: IP.to_string(),
                value: value.to_string(),
                reason,
            })
        })
        .collect()
}

/// A `CNI_ARGS` Trellis cannot accept. CNI error 4: `CNI_ARGS` is an environment variable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("pair {0:?} is not KEY=VALUE")]
    MalformedPair(String),
    #[error("key {0} is given more than once")]
    Duplicate(String),
    #[error("{key}={value:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown args {} (set IgnoreUnknown=1 to allow them)", .0.join(", "))]
    Unknown(Vec<String>),
}

impl ArgsError {
    /// Always [`ErrorCode::InvalidEnvironment`].
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::InvalidEnvironment
    }
}

impl From<ArgsError> for CniError {
    fn from(e: ArgsError) -> CniError {
        CniError::new(e.code(), format!("CNI_ARGS: {e}"))
    }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
