//! BGPPeer and BGPConfiguration, following Calico v3's resources of the same names.
//!
//! A BGPPeer ([`peer`]) says which nodes (`node`, `nodeSelector`, or all) peer with which speakers
//! (`peerIP`, or the nodes matched by `peerSelector`, which is how route reflectors are wired).
//! The BGPConfiguration ([`config`]) named `default` holds cluster-wide settings; `node.NODENAME`
//! objects override the few settings Calico lets a node override.

use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use super::duration::Duration;
use crate::validation::ValidationErrors;

pub mod config;
pub mod peer;

pub use config::{
    BgpConfiguration, BgpConfigurationSpec, BindMode, Community, CommunityValue,
    PrefixAdvertisement, ServiceIpBlock, DEFAULT_AS_NUMBER, DEFAULT_LISTEN_PORT,
};
pub use peer::{BgpPeer, BgpPeerSpec, PeerAddress, SourceAddress, DEFAULT_HOLD_TIME};

/// Graceful restart time when none is configured (BIRD's default, which Calico inherits).
pub const DEFAULT_MAX_RESTART_TIME: StdDuration = StdDuration::from_secs(120);

/// RFC 4724 section 3: the graceful-restart Restart Time is a 12-bit count of seconds.
const MAX_RESTART_SECS: u64 = 4095;

/// Where a BGP password (TCP MD5 signature, RFC 2385) comes from. Exactly one of the two is set.
/// Trellis reads secrets from the agent's own environment or files (e.g. a mounted Secret), never
/// from the datastore, so the password itself is never stored in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPassword {
    /// Absolute path of a file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Name of an environment variable of the agent holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// 4-byte AS numbers (RFC 6793): anything but 0, which RFC 7607 reserves.
pub(crate) fn check_as_number(errs: &mut ValidationErrors, field: &str, asn: Option<u32>) {
    if asn == Some(0) {
        errs.add(
            field,
            "must be between 1 and 4294967295; AS 0 is reserved (RFC 7607)",
        );
    }
}

pub(crate) fn check_password(errs: &mut ValidationErrors, field: &str, p: &BgpPassword) {
    match (&p.file, &p.env) {
        (Some(_), Some(_)) | (None, None) => errs.add(
            field,
            "set exactly one of file (a path) or env (a variable name)",
        ),
        (Some(file), None) => {
            if !file.starts_with('/') || file.contains('\0') {
                errs.add(
                    format!("{field}.file"),
                    format!("{file:?} must be an absolute path"),
                );
            }
        }
        (None, Some(env)) => {
            // POSIX portable environment variable names.
            let b = env.as_bytes();
            let ok = !b.is_empty()
                && !b[0].is_ascii_digit()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if !ok {
                errs.add(
                    format!("{field}.env"),
                    format!(
                        "{env:?} is not a variable name: letters, digits and '_', not \
                         starting with a digit"
                    ),
                );
            }
        }
    }
}

/// Hold and keepalive timers travel and run in whole seconds (RFC 4271 4.2, 4.4).
pub(crate) fn whole_seconds(errs: &mut ValidationErrors, field: &str, d: &Duration) -> Option<u64> {
    if d.as_std().subsec_nanos() != 0 {
        errs.add(
            field,
            format!("{d} is not a whole number of seconds; BGP timers count seconds"),
        );
        return None;
    }
    Some(d.as_std().as_secs())
}

pub(crate) fn check_restart_time(errs: &mut ValidationErrors, field: &str, d: Option<&Duration>) {
    let Some(d) = d else { return };
    match whole_seconds(errs, field, d) {
        Some(s) if s > MAX_RESTART_SECS => errs.add(
            field,
            format!(
                "must be at most {MAX_RESTART_SECS}s (12-bit Restart Time, RFC 4724 3), got {s}s"
            ),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod peer_tests;
