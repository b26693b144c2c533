//! OPEN messages: what we propose (capabilities, hold time, identifiers) and what a session
//! agrees on once the peer's OPEN arrives (RFC 4271 6.2, RFC 5492, RFC 4760, RFC 6793, RFC 4724).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, OpenMessageError};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};

use crate::family::Family;

pub const BGP_VERSION: u8 = 4;

/// What this end of a session proposes in its OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenConfig {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    /// The ASN the peer must announce (RFC 4271 6.2 "Bad Peer AS").
    pub peer_asn: u32,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs; `None` = a third of the negotiated hold time (RFC
    /// 4271 4.4). Never more than that third, so a peer proposing a shorter hold time is safe.
    pub keepalive: Option<u16>,
    pub families: BTreeSet<Family>,
    /// Advertise the graceful restart capability (RFC 4724); `None` = not GR-capable.
    pub graceful_restart: Option<LocalGracefulRestart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalGracefulRestart {
    /// Seconds the peer should keep our routes after our session drops.
    pub restart_time: u16,
    /// The R bit: we have just restarted (set in the first OPEN after a restart).
    pub restarting: bool,
    /// The F bit for every family: our forwarding state (kernel routes) survived the restart.
    pub forwarding_preserved: bool,
}

/// The peer's graceful restart capability, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGracefulRestart {
    pub restart_time: u16,
    /// The peer has just restarted (R bit).
    pub restarting: bool,
    /// Families the peer preserves state for, with its F bit.
    pub families: BTreeMap<Family, bool>,
}

/// What both ends agreed on; fixed for the lifetime of an Established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    /// min(ours, theirs) in seconds; 0 means neither hold timer nor keepalives.
    pub hold_time: u16,
    pub keepalive: u16,
    pub families: BTreeSet<Family>,
    /// Both sides sent the 4-octet AS capability (RFC 6793).
    pub asn4: bool,
    pub route_refresh: bool,
    pub peer_graceful_restart: Option<PeerGracefulRestart>,
    pub local_graceful_restart: bool,
}

impl Negotiated {
    pub fn is_ibgp(&self, local_asn: u32) -> bool {
        self.peer_asn == local_asn
    }
}

/// Why a received OPEN was refused: the NOTIFICATION to send and a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OPEN from peer refused: {reason}")]
pub struct OpenError {
    pub reason: String,
    pub notification: BgpNotificationMessage,
}

impl OpenConfig {
    /// Our OPEN message (RFC 4271 4.2), capabilities in one optional parameter (RFC 5492).
    pub fn message(&self) -> BgpOpenMessage {
        let my_as = u16::try_from(self.local_asn).unwrap_or(AS_TRANS);
        let mut caps: Vec<BgpCapability> = self
            .families
            .iter()
            .map(|f| {
                BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                    f.address_type(),
                ))
            })
            .collect();
        caps.push(BgpCapability::RouteRefresh);
        caps.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
            self.local_asn,
        )));
        if let Some(gr) = self.graceful_restart {
            let families: Vec<_> = self
                .families
                .iter()
                .map(|f| {
                    GracefulRestartAddressFamily::new(gr.forwarding_preserved, f.address_type())
                })
                .collect();
            caps.push(BgpCapability::GracefulRestartCapability(
                GracefulRestartCapability::new(gr.restarting, false, gr.restart_time, families),
            ));
        }
        BgpOpenMessage::new(
            my_as,
            self.hold_time,
            self.router_id,
            vec![BgpOpenMessageParameter::new_capabilities(caps)],
        )
    }

    /// Checks the peer's OPEN (RFC 4271 6.2) and computes what the session runs with.
    pub fn negotiate(&self, open: &BgpOpenMessage) -> Result<Negotiated, OpenError> {
        if open.version() != BGP_VERSION {
            return Err(OpenError {
                reason: format!("BGP version {} (only 4 is supported)", open.version()),
                // RFC 4271 6.2: the data is the largest locally supported version, 2 octets.
                notification: open_error(OpenMessageError::UnsupportedVersionNumber {
                    value: vec![0, BGP_VERSION].into(),
                }),
            });
        }
        let caps = open.capabilities();
        let asn4_cap = caps.iter().find_map(|c| match c {
            BgpCapability::FourOctetAs(a) => Some(a.asn4()),
            _ => None,
        });
        let peer_asn = asn4_cap.unwrap_or(u32::from(open.my_as()));
        if peer_asn != self.peer_asn {
            return Err(OpenError {
                reason: format!("peer AS {peer_asn}, configured {}", self.peer_asn),
                notification: open_error(OpenMessageError::BadPeerAs {
                    value: open.my_as().to_be_bytes().into(),
                }),
            });
        }
        let peer_id = open.bgp_id();
        // RFC 6286 2.1: non-zero; for iBGP it must differ from ours.
        if peer_id.is_unspecified() || (peer_asn == self.local_asn && peer_id == self.router_id) {
            return Err(OpenError {
                reason: format!(
                    "BGP identifier {peer_id} is zero or equals ours on an iBGP session"
                ),
                notification: open_error(OpenMessageError::BadBgpIdentifier {
                    value: peer_id.octets().into(),
                }),
            });
        }
        let peer_hold = open.hold_time();
        if peer_hold == 1 || peer_hold == 2 {
            return Err(OpenError {
                reason: format!("hold time {peer_hold} s (must be 0 or at least 3)"),
                notification: open_error(OpenMessageError::UnacceptableHoldTime {
                    value: peer_hold.to_be_bytes().into(),
                }),
            });
        }
        let hold_time = peer_hold.min(self.hold_time);
        let peer_families: BTreeSet<Family> = {
            let mp: Vec<_> = caps
                .iter()
                .filter_map(|c| match c {
                    BgpCapability::MultiProtocolExtensions(mp) => Some(mp.address_type()),
                    _ => None,
                })
                .collect();
            if mp.is_empty() {
                // RFC 4760 8: a peer without the capability carries IPv4 unicast only.
                BTreeSet::from([Family::Ipv4Unicast])
            } else {
                mp.into_iter()
                    .filter_map(Family::from_address_type)
                    .collect()
            }
        };
        let families: BTreeSet<Family> = self
            .families
            .intersection(&peer_families)
            .copied()
            .collect();
        if families.is_empty() {
            return Err(OpenError {
                reason: format!(
                    "no address family in common (ours {:?}, the peer's {:?})",
                    self.families, peer_families
                ),
                notification: open_error(OpenMessageError::UnsupportedCapability {
                    value: vec![].into(),
                }),
            });
        }
        let route_refresh = caps.iter().any(|c| {
            matches!(
                c,
                BgpCapability::RouteRefresh | BgpCapability::CiscoRouteRefresh
            )
        });
        let peer_graceful_restart = caps.iter().find_map(|c| match c {
            BgpCapability::GracefulRestartCapability(gr) => Some(PeerGracefulRestart {
                restart_time: gr.time(),
                restarting: gr.restart(),
                families: gr
                    .address_families()
                    .iter()
                    .filter_map(|f| {
                        Family::from_address_type(f.address_type())
                            .map(|fam| (fam, f.forwarding_state()))
                    })
                    .collect(),
            }),
            _ => None,
        });
        Ok(Negotiated {
            peer_asn,
            peer_id,
            hold_time,
            // A non-zero hold time is at least 3 s, so its third is at least 1 s.
            keepalive: match self.keepalive {
                Some(k) if hold_time != 0 => k.clamp(1, hold_time / 3),
                _ => hold_time / 3,
            },
            families,
            asn4: asn4_cap.is_some(),
            route_refresh,
            peer_graceful_restart,
            local_graceful_restart: self.graceful_restart.is_some(),
        })
    }
}

fn open_error(e: OpenMessageError) -> BgpNotificationMessage {
    BgpNotificationMessage::OpenMessageError(e)
}

#[cfg(test)]
#[path = "open_tests.rs"]
mod tests;
