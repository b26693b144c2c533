//! BGPPeer: who peers with whom, and the session's timers and protections.

use std::net::IpAddr;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use super::DEFAULT_MAX_RESTART_TIME;
use super::{check_as_number, check_password, check_restart_time, whole_seconds, BgpPassword};
use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::resources::duration::Duration;
use crate::selector::Selector;
use crate::validation::{check_dns_subdomain, ValidationErrors};

/// RFC 4271 section 10 suggests a 90 s hold time; keepalives then default to a third of it (4.4).
pub const DEFAULT_HOLD_TIME: StdDuration = StdDuration::from_secs(90);

/// RFC 4271 section 4.2: the Hold Time is a 2-octet count of seconds.
const MAX_HOLD_SECS: u64 = u16::MAX as u64;

/// Which local address BGP sessions to a peer come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceAddress {
    /// The node's BGP address (Calico's default).
    #[default]
    #[serde(rename = "UseNodeIP")]
    UseNodeIp,
    /// Let the kernel choose.
    None,
}

/// `peerIP` parsed: `IP`, `IPv4:PORT` or `[IPv6]:PORT` (Calico's accepted forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress {
    pub ip: IpAddr,
    /// `None`: the standard port.
    pub port: Option<u16>,
}

impl PeerAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad_port = || format!("{text:?} has an invalid port; ports are 1-65535");
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(bad_port)
        };
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self { ip, port: None });
        }
        if let Some(rest) = text.strip_prefix('[') {
            if let Some((ip, p)) = rest.split_once("]:") {
                if let Ok(ip) = ip.parse::<std::net::Ipv6Addr>() {
                    return Ok(Self {
                        ip: IpAddr::V6(ip),
                        port: Some(port(p)?),
                    });
                }
            }
        } else if let Some((ip, p)) = text.rsplit_once(':') {
            if let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() {
                return Ok(Self {
                    ip: IpAddr::V4(ip),
                    port: Some(port(p)?),
                });
            }
        }
        Err(format!(
            "{text:?} is not an IP address, \"IPv4:PORT\" or \"[IPv6]:PORT\""
        ))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The one node that peers; empty (and no `nodeSelector`) means every node: a global peer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Selector over Node labels choosing the nodes that peer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, rename = "peerIP", skip_serializing_if = "String::is_empty")]
    pub peer_ip: String,
    /// Selector over Node labels choosing Trellis nodes to peer with (their AS comes from them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Do not rewrite the next hop of routes passed to this peer (route-reflector clients).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<Duration>,
    /// Graceful restart (RFC 4724): how long the peer keeps our routes while we restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// How many times our own AS may appear in a received AS path (relaxes loop prevention).
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<u32>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
}

pub type BgpPeer = Object<BgpPeerSpec>;

impl Spec for BgpPeerSpec {
    const KIND: &'static str = "BGPPeer";
    const KEY_PREFIX: &'static str = keys::BGP_PEERS;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut ValidationErrors) {
        if !self.node.is_empty() {
            check_dns_subdomain(errs, "spec.node", &self.node);
            if !self.node_selector.is_empty() {
                errs.add("spec.node", "set node or nodeSelector, not both");
            }
        }
        check_selector(errs, "spec.nodeSelector", &self.node_selector);
        match (self.peer_ip.is_empty(), self.peer_selector.is_empty()) {
            (false, false) => errs.add("spec.peerIP", "set peerIP or peerSelector, not both"),
            (true, true) => errs.add("spec.peerIP", "one of peerIP or peerSelector is required"),
            _ => {}
        }
        if !self.peer_ip.is_empty() {
            match PeerAddress::parse(&self.peer_ip) {
                Ok(a) if a.ip.is_unspecified() || a.ip.is_multicast() => errs.add(
                    "spec.peerIP",
                    format!("{} cannot be a BGP peer: it is not a unicast address", a.ip),
                ),
                Ok(_) => {}
                Err(reason) => errs.add("spec.peerIP", reason),
            }
        }
        check_selector(errs, "spec.peerSelector", &self.peer_selector);
        check_as_number(errs, "spec.asNumber", self.as_number);
        if self.as_number.is_none() && !self.peer_ip.is_empty() {
            errs.add(
                "spec.asNumber",
                "required with peerIP: the AS number of the remote speaker",
            );
        }
        if self.as_number.is_some() && !self.peer_selector.is_empty() {
            errs.add(
                "spec.asNumber",
                "must be empty with peerSelector: each selected node's own AS is used",
            );
        }
        if let Some(p) = &self.password {
            check_password(errs, "spec.password", p);
        }
        check_timers(errs, self.hold_time.as_ref(), self.keepalive_time.as_ref());
        check_restart_time(errs, "spec.maxRestartTime", self.max_restart_time.as_ref());
        if self.ttl_security == Some(0) {
            errs.add(
                "spec.ttlSecurity",
                "must be a hop count between 1 and 255, got 0",
            );
        }
    }
}

impl BgpPeerSpec {
    /// True when the peer applies to every node (neither `node` nor `nodeSelector`).
    pub fn is_global(&self) -> bool {
        self.node.is_empty() && self.node_selector.is_empty()
    }

    /// `peerIP` parsed; `None` for a `peerSelector` peer (or an invalid object).
    pub fn peer_address(&self) -> Option<PeerAddress> {
        PeerAddress::parse(&self.peer_ip).ok()
    }

    pub fn hold_time(&self) -> StdDuration {
        self.hold_time
            .as_ref()
            .map_or(DEFAULT_HOLD_TIME, Duration::as_std)
    }

    /// RFC 4271 4.4: a third of the hold time unless configured; none at all when it is zero.
    pub fn keepalive_time(&self) -> StdDuration {
        match &self.keepalive_time {
            Some(k) => k.as_std(),
            None => StdDuration::from_secs(self.hold_time().as_secs() / 3),
        }
    }

    pub fn max_restart_time(&self) -> StdDuration {
        self.max_restart_time
            .as_ref()
            .map_or(DEFAULT_MAX_RESTART_TIME, Duration::as_std)
    }

    pub fn source_address(&self) -> SourceAddress {
        self.source_address.unwrap_or_default()
    }

    pub fn num_allowed_local_as_numbers(&self) -> u32 {
        self.num_allowed_local_as_numbers.unwrap_or(0)
    }
}

fn check_selector(errs: &mut ValidationErrors, field: &str, text: &str) {
    if !text.is_empty() {
        if let Err(e) = Selector::parse(text) {
            errs.add(field, format!("invalid selector {text:?}: {e}"));
        }
    }
}

fn check_timers(
    errs: &mut ValidationErrors,
    hold: Option<&Duration>,
    keepalive: Option<&Duration>,
) {
    let hold_secs = match hold {
        None => Some(DEFAULT_HOLD_TIME.as_secs()),
        Some(h) => whole_seconds(errs, "spec.holdTime", h),
    };
    // RFC 4271 4.2: "the Hold Time MUST be either zero or at least three seconds".
    let hold_secs = match hold_secs {
        Some(s) if s != 0 && !(3..=MAX_HOLD_SECS).contains(&s) => {
            errs.add(
                "spec.holdTime",
                format!(
                    "must be 0 (no keepalives) or 3s-{MAX_HOLD_SECS}s (RFC 4271 4.2), got {s}s"
                ),
            );
            None
        }
        other => other,
    };
    let Some(k) = keepalive else { return };
    let Some(k_secs) = whole_seconds(errs, "spec.keepaliveTime", k) else {
        return;
    };
    match hold_secs {
        // RFC 4271 4.4: with a zero hold time, KEEPALIVEs MUST NOT be sent.
        Some(0) if k_secs != 0 => errs.add(
            "spec.keepaliveTime",
            "must be 0 or unset when holdTime is 0 (RFC 4271 4.4)",
        ),
        Some(h) if h != 0 && (k_secs == 0 || k_secs >= h) => errs.add(
            "spec.keepaliveTime",
            format!(
                "must be at least 1s and shorter than the hold time ({h}s), got {k_secs}s; \
                 RFC 4271 4.4 suggests a third of it"
            ),
        ),
        _ => {}
    }
}
