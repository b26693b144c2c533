//! RFC 7606 (revised error handling for UPDATE messages): what to do with a decoded UPDATE.
//!
//! Pure functions. [`crate::wire::Decoder`] frames every path attribute itself, hands each one
//! to netgauze separately and records the ones that fail as [`MalformedAttribute`]s (they are
//! left out of the decoded UPDATE); [`classify`] then picks the approach of RFC 7606 section 2
//! for the whole message. When several errors are present the most severe approach wins
//! (RFC 7606 section 3): session reset > treat-as-withdraw > attribute discard.
//!
//! What the caller does with each [`Handling`]:
//! - [`Handling::Normal`] and [`Handling::AttributeDiscard`]: process the UPDATE as usual (the
//!   discarded attributes are already gone from the decoded message; log the list);
//! - [`Handling::TreatAsWithdraw`]: withdraw every prefix in [`routes_to_withdraw`] -- all of
//!   the message's routes, reachable or not -- and install nothing (RFC 7606 section 2);
//! - session reset: the decoder returns `Err(WireError)` carrying the NOTIFICATION to send.

use std::fmt;

use ipnet::IpNet;
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, UpdateMessageError};
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttribute, PathAttributeValue};
use netgauze_bgp_pkt::update::BgpUpdateMessage;

/// Path attribute type codes (IANA "BGP Path Attributes").
pub mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const IPV6_EXTENDED_COMMUNITIES: u8 = 25;
    pub const AIGP: u8 = 26;
    pub const LARGE_COMMUNITIES: u8 = 32;
    pub const ONLY_TO_CUSTOMER: u8 = 35;
    pub const PREFIX_SID: u8 = 40;
}

/// A short name for an attribute type code, for log lines and error messages.
pub fn attribute_name(type_code: u8) -> &'static str {
    match type_code {
        code::ORIGIN => "ORIGIN",
        code::AS_PATH => "AS_PATH",
        code::NEXT_HOP => "NEXT_HOP",
        code::MULTI_EXIT_DISC => "MULTI_EXIT_DISC",
        code::LOCAL_PREF => "LOCAL_PREF",
        code::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        code::AGGREGATOR => "AGGREGATOR",
        code::COMMUNITIES => "COMMUNITIES",
        code::ORIGINATOR_ID => "ORIGINATOR_ID",
        code::CLUSTER_LIST => "CLUSTER_LIST",
        code::MP_REACH_NLRI => "MP_REACH_NLRI",
        code::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
        code::EXTENDED_COMMUNITIES => "EXTENDED_COMMUNITIES",
        code::AS4_PATH => "AS4_PATH",
        code::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        code::IPV6_EXTENDED_COMMUNITIES => "IPV6_EXTENDED_COMMUNITIES",
        code::AIGP => "AIGP",
        code::LARGE_COMMUNITIES => "LARGE_COMMUNITIES",
        code::ONLY_TO_CUSTOMER => "ONLY_TO_CUSTOMER",
        code::PREFIX_SID => "BGP_PREFIX_SID",
        _ => "unknown attribute",
    }
}

/// The session facts the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateContext {
    /// The peer is in our AS (LOCAL_PREF is only accepted over iBGP, RFC 7606 7.5).
    pub ibgp: bool,
    /// Both ends sent the 4-octet AS capability (RFC 6793).
    pub asn4: bool,
}

/// A path attribute the decoder could not accept; it is absent from the decoded UPDATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedAttribute {
    pub type_code: u8,
    pub flags: u8,
    /// Byte offset of the attribute's flags octet from the start of the message.
    pub offset: usize,
    pub problem: AttributeProblem,
    /// The whole attribute (flags, type, length, value): the Data of a NOTIFICATION
    /// (RFC 4271 6.3).
    pub bytes: Box<[u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeProblem {
    /// A second (or later) occurrence of the same type code (RFC 7606 3.g).
    Duplicate,
    /// The Optional bit is clear but we do not know the type (RFC 4271 6.3).
    UnrecognizedWellKnown,
    /// Optional/Transitive/Partial bits conflict with the attribute's definition (RFC 7606 3.c).
    Flags(String),
    /// The attribute length is not one the attribute allows.
    Length(String),
    /// The value does not parse (bad ORIGIN code, AS_PATH segment overrun, ...).
    Value(String),
    /// Not malformed: an MP_REACH_NLRI/MP_UNREACH_NLRI for an address family we do not carry
    /// (only IPv4/IPv6 unicast); ignored like any route of an unnegotiated family.
    UnsupportedFamily { afi: u16, safi: u8 },
}

impl fmt::Display for MalformedAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = attribute_name(self.type_code);
        let at = format!(
            "{name} (type {}) at byte offset {}",
            self.type_code, self.offset
        );
        match &self.problem {
            AttributeProblem::Duplicate => write!(f, "duplicate {at}"),
            AttributeProblem::UnrecognizedWellKnown => {
                write!(f, "unrecognized well-known attribute {at}")
            }
            AttributeProblem::Flags(why) => {
                write!(f, "bad flags {:#04x} on {at}: {why}", self.flags)
            }
            AttributeProblem::Length(why) => write!(f, "bad length of {at}: {why}"),
            AttributeProblem::Value(why) => write!(f, "malformed {at}: {why}"),
            AttributeProblem::UnsupportedFamily { afi, safi } => {
                write!(f, "ignored {at}: AFI {afi} SAFI {safi} is not carried")
            }
        }
    }
}

/// An attribute removed under "attribute discard" (RFC 7606 section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub type_code: u8,
    pub reason: String,
    /// The attribute is well-formed and still in the message ([`apply_discards`] removes it);
    /// `false` for malformed attributes and duplicates, which the decoder never kept.
    pub in_message: bool,
}

/// The outcome of RFC 7606 classification for an UPDATE that does not reset the session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Handling {
    /// Nothing wrong: process the UPDATE.
    #[default]
    Normal,
    /// RFC 7606 section 2 "attribute discard": the listed attributes were removed; process the
    /// rest of the UPDATE normally.
    AttributeDiscard(Vec<Discarded>),
    /// RFC 7606 section 2 "treat-as-withdraw": withdraw every route in the message, from the
    /// NLRI field and MP_REACH_NLRI alike ([`routes_to_withdraw`]). For an UPDATE that only
    /// withdraws, this is ordinary withdrawal processing.
    TreatAsWithdraw {
        reason: String,
        /// Attributes also discarded, for the log line.
        discarded: Vec<Discarded>,
    },
}

impl Handling {
    /// The attributes that were discarded, whatever the approach.
    pub fn discarded(&self) -> &[Discarded] {
        match self {
            Handling::Normal => &[],
            Handling::AttributeDiscard(d) | Handling::TreatAsWithdraw { discarded: d, .. } => d,
        }
    }
}

/// RFC 7606 section 2 "session reset": send `notification` and close the session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionReset {
    pub notification: BgpNotificationMessage,
    pub reason: String,
}

/// Classifies an UPDATE decoded by [`crate::wire::Decoder`] (which also passes the attributes
/// it rejected as `malformed`).
///
/// Rules (RFC 7606 unless noted):
/// - 3.g: MP_REACH_NLRI/MP_UNREACH_NLRI more than once: session reset (Malformed Attribute
///   List); any other duplicate: discard all but the first;
/// - MP_REACH_NLRI/MP_UNREACH_NLRI of a family other than IPv4/IPv6 unicast: discarded
///   unparsed (not an RFC 7606 rule: we do not negotiate other families);
/// - 3.h, 7.11, 7.12: a malformed MP_REACH_NLRI/MP_UNREACH_NLRI: session reset (Optional
///   Attribute Error, RFC 4760 7); we do not implement "AFI/SAFI disable";
/// - RFC 4271 6.3: an unrecognized well-known attribute: session reset;
/// - 3.c: conflicting Optional/Transitive/Partial flags: treat-as-withdraw;
/// - 7.1-7.4, 7.8-7.10, 7.14, 7.15, RFC 8092 5, RFC 9234 5, RFC 8669 6: malformed ORIGIN,
///   AS_PATH, NEXT_HOP, MULTI_EXIT_DISC, COMMUNITIES, ORIGINATOR_ID, CLUSTER_LIST,
///   (IPv6) EXTENDED_COMMUNITIES, LARGE_COMMUNITIES, ONLY_TO_CUSTOMER, BGP_PREFIX_SID:
///   treat-as-withdraw; so is any other malformed attribute without a rule of its own;
/// - 7.5: LOCAL_PREF from an eBGP peer: discard (malformed or not); malformed over iBGP:
///   treat-as-withdraw;
/// - 7.6, 7.7, RFC 6793 6: malformed ATOMIC_AGGREGATE, AGGREGATOR, AS4_AGGREGATOR, AS4_PATH:
///   attribute discard;
/// - RFC 6793 4.1: AS4_PATH/AS4_AGGREGATOR from a peer that negotiated 4-octet ASNs: discard;
/// - 3.d: ORIGIN or AS_PATH missing, or NEXT_HOP missing while the NLRI field is not empty,
///   in an UPDATE that carries reachable routes: treat-as-withdraw.
///
/// The decoder resets the session itself, before classification, when the message cannot be
/// taken apart: Withdrawn Routes or Total Attribute Length too large (RFC 4271 6.3), an
/// attribute overrunning the path attributes (RFC 7606 4 prefers treat-as-withdraw, but the
/// MP_REACH_NLRI/MP_UNREACH_NLRI we would have to withdraw may be among the lost bytes), or
/// a syntactically wrong NLRI field (RFC 7606 5.3).
pub fn classify(
    update: &BgpUpdateMessage,
    malformed: &[MalformedAttribute],
    ctx: &UpdateContext,
) -> Result<Handling, SessionReset> {
    let mut discarded = Vec::new();
    let mut withdraw_reasons: Vec<String> = Vec::new();

    for attr in malformed {
        match verdict(attr, ctx) {
            Verdict::Reset(notification) => {
                return Err(SessionReset {
                    notification,
                    reason: attr.to_string(),
                })
            }
            Verdict::Withdraw => withdraw_reasons.push(attr.to_string()),
            Verdict::Discard => discarded.push(Discarded {
                type_code: attr.type_code,
                reason: attr.to_string(),
                in_message: false,
            }),
        }
    }

    for attr in update.path_attributes() {
        let type_code = type_code_of(attr);
        let why = match type_code {
            // RFC 7606 7.5: LOCAL_PREF from an external peer is discarded.
            code::LOCAL_PREF if !ctx.ibgp => "LOCAL_PREF received from an eBGP peer",
            // RFC 6793 4.1: NEW speakers do not exchange AS4_PATH/AS4_AGGREGATOR.
            code::AS4_PATH | code::AS4_AGGREGATOR if ctx.asn4 => {
                "received from a peer that negotiated 4-octet AS numbers"
            }
            _ => continue,
        };
        discarded.push(Discarded {
            type_code,
            reason: format!("{}: {why}", attribute_name(type_code)),
            in_message: true,
        });
    }

    // RFC 7606 3.d: well-known mandatory attributes. A malformed one counts as missing, but
    // it has already caused treat-as-withdraw.
    if has_reachable_nlri(update) {
        let present = |c: u8| {
            update
                .path_attributes()
                .iter()
                .any(|a| type_code_of(a) == c)
        };
        let mut required = vec![code::ORIGIN, code::AS_PATH];
        // RFC 4760 3: NEXT_HOP is only mandatory for routes in the NLRI field.
        if !update.nlri().is_empty() {
            required.push(code::NEXT_HOP);
        }
        for c in required {
            if !present(c) && !malformed.iter().any(|m| m.type_code == c) {
                withdraw_reasons.push(format!(
                    "missing well-known mandatory attribute {}",
                    attribute_name(c)
                ));
            }
        }
    }

    Ok(if !withdraw_reasons.is_empty() {
        Handling::TreatAsWithdraw {
            reason: withdraw_reasons.join("; "),
            discarded,
        }
    } else if !discarded.is_empty() {
        Handling::AttributeDiscard(discarded)
    } else {
        Handling::Normal
    })
}

enum Verdict {
    Discard,
    Withdraw,
    Reset(BgpNotificationMessage),
}

fn verdict(attr: &MalformedAttribute, ctx: &UpdateContext) -> Verdict {
    let data = || attr.bytes.clone();
    let update_error =
        |e: UpdateMessageError| Verdict::Reset(BgpNotificationMessage::UpdateMessageError(e));
    let is_mp = matches!(attr.type_code, code::MP_REACH_NLRI | code::MP_UNREACH_NLRI);
    match &attr.problem {
        // RFC 7606 3.g
        AttributeProblem::Duplicate if is_mp => {
            update_error(UpdateMessageError::MalformedAttributeList {
                value: Box::new([]),
            })
        }
        AttributeProblem::Duplicate | AttributeProblem::UnsupportedFamily { .. } => {
            Verdict::Discard
        }
        AttributeProblem::UnrecognizedWellKnown => {
            update_error(UpdateMessageError::UnrecognizedWellKnownAttribute { value: data() })
        }
        // RFC 7606 3.h: we cannot find the MP NLRI, so we cannot withdraw them either.
        _ if is_mp => update_error(UpdateMessageError::OptionalAttributeError { value: data() }),
        // RFC 7606 7.5: eBGP LOCAL_PREF is discarded, whatever its shape.
        _ if attr.type_code == code::LOCAL_PREF && !ctx.ibgp => Verdict::Discard,
        // RFC 7606 3.c, unless the attribute's own rule says otherwise (none of ours does).
        AttributeProblem::Flags(_) => Verdict::Withdraw,
        AttributeProblem::Length(_) | AttributeProblem::Value(_) => match attr.type_code {
            // RFC 7606 7.6, 7.7; RFC 6793 6.
            code::ATOMIC_AGGREGATE | code::AGGREGATOR | code::AS4_AGGREGATOR | code::AS4_PATH => {
                Verdict::Discard
            }
            _ => Verdict::Withdraw,
        },
    }
}

/// Removes the well-formed attributes `handling` discards ([`Discarded::in_message`]).
pub fn apply_discards(update: BgpUpdateMessage, handling: &Handling) -> BgpUpdateMessage {
    let strip: Vec<u8> = handling
        .discarded()
        .iter()
        .filter(|d| d.in_message)
        .map(|d| d.type_code)
        .collect();
    if strip.is_empty() {
        return update;
    }
    let attrs: Vec<PathAttribute> = update
        .path_attributes()
        .iter()
        .filter(|a| !strip.contains(&type_code_of(a)))
        .cloned()
        .collect();
    BgpUpdateMessage::new(
        update.withdraw_routes().to_vec(),
        attrs,
        update.nlri().to_vec(),
    )
}

/// The type code of a decoded attribute.
pub fn type_code_of(attr: &PathAttribute) -> u8 {
    match attr.path_attribute_type() {
        Ok(t) => t as u8,
        Err(c) => c,
    }
}

/// Does the UPDATE announce anything (NLRI field or MP_REACH_NLRI with NLRI)?
pub fn has_reachable_nlri(update: &BgpUpdateMessage) -> bool {
    !update.nlri().is_empty()
        || update.path_attributes().iter().any(|a| match a.value() {
            PathAttributeValue::MpReach(mp) => !mp_reach_is_empty(mp),
            _ => false,
        })
}

fn mp_reach_is_empty(mp: &MpReach) -> bool {
    match mp {
        MpReach::Ipv4Unicast { nlri, .. } => nlri.is_empty(),
        MpReach::Ipv6Unicast { nlri, .. } => nlri.is_empty(),
        // Families we do not negotiate: treat as carrying routes, conservatively.
        _ => false,
    }
}

/// Every IPv4/IPv6 unicast prefix the UPDATE mentions -- withdrawn routes, MP_UNREACH_NLRI,
/// the NLRI field and MP_REACH_NLRI -- in that order, as carried (no host-bit masking, no
/// de-duplication). Under [`Handling::TreatAsWithdraw`] the caller withdraws all of them
/// (RFC 7606 section 2). Other address families are skipped: we only negotiate unicast.
pub fn routes_to_withdraw(update: &BgpUpdateMessage) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = update
        .withdraw_routes()
        .iter()
        .map(|a| IpNet::V4(a.network().address()))
        .collect();
    for attr in update.path_attributes() {
        if let PathAttributeValue::MpUnreach(mp) = attr.value() {
            match mp {
                MpUnreach::Ipv4Unicast { nlri } => {
                    out.extend(nlri.iter().map(|a| IpNet::V4(a.network().address())))
                }
                MpUnreach::Ipv6Unicast { nlri } => {
                    out.extend(nlri.iter().map(|a| IpNet::V6(a.network().address())))
                }
                _ => {}
            }
        }
    }
    out.extend(
        update
            .nlri()
            .iter()
            .map(|a| IpNet::V4(a.network().address())),
    );
    for attr in update.path_attributes() {
        if let PathAttributeValue::MpReach(mp) = attr.value() {
            match mp {
                MpReach::Ipv4Unicast { nlri, .. } => {
                    out.extend(nlri.iter().map(|a| IpNet::V4(a.network().address())))
                }
                MpReach::Ipv6Unicast { nlri, .. } => {
                    out.extend(nlri.iter().map(|a| IpNet::V6(a.network().address())))
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "revised_errors_tests.rs"]
mod tests;
