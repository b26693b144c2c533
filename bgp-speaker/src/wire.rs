//! The BGP wire layer: framing (RFC 4271 4.1), decoding and encoding on `netgauze-bgp-pkt`,
//! and the RFC 7606 classification of every UPDATE ([`crate::revised_errors`]).
//!
//! ```text
//! socket bytes --frame_len--> one frame --Decoder::decode--> Inbound { message, handling }
//!                                                        \-> WireError (NOTIFICATION to send)
//! BgpMessage --encode_for_peer(asn4)--> bytes
//! ```
//!
//! UPDATEs are not handed to netgauze whole. With `fail_on_malformed_path_attr = false`
//! netgauze 0.13 tries to skip a bad attribute, but its resynchronisation (`handle_path_error`
//! in `wire/deserializer/update.rs`) is wrong for several errors: after an ORIGIN or NEXT_HOP
//! with a bad length it resumes in the middle of the attribute (or 4 bytes past a 3-byte
//! NEXT_HOP), after a bad EXTENDED_COMMUNITIES/CLUSTER_LIST/... it skips the *next*
//! attribute as well, and a COMMUNITIES whose length is not a multiple of 4 fails the whole
//! message. So [`Decoder`] frames each attribute itself (type, flags, length), gives netgauze one
//! attribute at a time, and records failures as [`MalformedAttribute`]s with exact offsets.
//!
//! Other netgauze 0.13 defects the fuzzer found, and our guards: the Source AS extended
//! community is written with the Route Target sub-type (`source_as_workaround`); a
//! MultipleLabels capability parsed from a bad OPEN, and an `MpReach::Unknown`, are written
//! with a header length that disagrees with the bytes (so [`encode`] checks every message it
//! writes, and the decoder ignores MP_REACH/MP_UNREACH of families we do not carry).
//!
//! AS numbers: netgauze's serializer writes an AS_PATH with 2- or 4-octet ASNs according to
//! the `AsPath` variant it is given (`As2PathSegments`/`As4PathSegments`), and AGGREGATOR
//! likewise; it has no notion of the session. [`encode_for_peer`] rewrites UPDATEs for the
//! peer's capability (RFC 6793 4.2.2): to a 2-octet peer, AS_TRANS in AS_PATH/AGGREGATOR plus
//! AS4_PATH/AS4_AGGREGATOR; to a 4-octet peer, 4-octet AS_PATH and no AS4_* attributes.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, MessageHeaderError, UpdateMessageError,
};
use netgauze_bgp_pkt::path_attribute::{
    Aggregator, As2Aggregator, As2PathSegment, As4Aggregator, As4Path, As4PathSegment, AsPath,
    AsPathSegmentType, ExtendedCommunities, MpReach, MpUnreach, PathAttribute, PathAttributeValue,
    UnknownAttribute,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::{BgpMessageParsingError, BgpParsingContext};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::{ParseFrom, ParseFromWithOneInput};
use netgauze_parse_utils::WritablePdu;

use crate::revised_errors::{
    self, attribute_name, code, AttributeProblem, Handling, MalformedAttribute, UpdateContext,
};

/// Marker (16), length (2), type (1): RFC 4271 4.1.
pub const HEADER_LEN: usize = 19;
/// RFC 4271 4.1; we do not negotiate RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;
const MARKER_LEN: usize = 16;

const MSG_OPEN: u8 = 1;
const MSG_UPDATE: u8 = 2;
const MSG_NOTIFICATION: u8 = 3;
const MSG_KEEPALIVE: u8 = 4;
const MSG_ROUTE_REFRESH: u8 = 5;

const AFI_IPV4: u16 = 1;
const AFI_IPV6: u16 = 2;
const SAFI_UNICAST: u8 = 1;

const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_EXTENDED_LENGTH: u8 = 0x10;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer sent something we must not accept. Send `notification` (if any: RFC 4271 6.4
    /// forbids answering a NOTIFICATION with one) and close the session.
    #[error("malformed BGP message: {reason}")]
    Malformed {
        notification: Option<BgpNotificationMessage>,
        reason: String,
    },
    /// We could not serialize a message (a bug or an oversized UPDATE, not the peer's fault).
    #[error("cannot encode BGP message: {0}")]
    Encode(String),
}

impl WireError {
    /// The NOTIFICATION to send to the peer, if any.
    pub fn notification(&self) -> Option<&BgpNotificationMessage> {
        match self {
            WireError::Malformed { notification, .. } => notification.as_ref(),
            WireError::Encode(_) => None,
        }
    }

    fn header(error: MessageHeaderError, reason: String) -> Self {
        WireError::Malformed {
            notification: Some(BgpNotificationMessage::MessageHeaderError(error)),
            reason,
        }
    }

    fn update(error: UpdateMessageError, reason: String) -> Self {
        WireError::Malformed {
            notification: Some(BgpNotificationMessage::UpdateMessageError(error)),
            reason,
        }
    }
}

/// The length of the message at the start of `buf`, once its 19-byte header has arrived
/// (`None`: read more). A bad marker is reported as soon as its first wrong byte is in, a bad
/// length as soon as the length field is (RFC 4271 6.1), before waiting for the body.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let marker = &buf[..buf.len().min(MARKER_LEN)];
    if let Some(i) = marker.iter().position(|b| *b != 0xff) {
        return Err(WireError::header(
            MessageHeaderError::ConnectionNotSynchronized {
                value: Box::new([]),
            },
            format!(
                "marker byte at offset {i} is {:#04x}, expected 16 bytes of 0xff",
                marker[i]
            ),
        ));
    }
    if buf.len() < MARKER_LEN + 2 {
        return Ok(None);
    }
    let raw_len = [buf[16], buf[17]];
    let len = usize::from(u16::from_be_bytes(raw_len));
    let bad_length = |why: String| {
        WireError::header(
            MessageHeaderError::BadMessageLength {
                value: Box::new(raw_len),
            },
            format!("message length {len} at offset 16 {why}"),
        )
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_length(format!(
            "is outside {HEADER_LEN}..={MAX_MESSAGE_LEN} (RFC 4271 4.1)"
        )));
    }
    let Some(&msg_type) = buf.get(18) else {
        return Ok(None);
    };
    // RFC 4271 6.1: per-type minimum (and fixed) lengths are header errors too.
    let (min, max, name) = match msg_type {
        MSG_OPEN => (29, MAX_MESSAGE_LEN, "OPEN"),
        MSG_UPDATE => (23, MAX_MESSAGE_LEN, "UPDATE"),
        MSG_NOTIFICATION => (21, MAX_MESSAGE_LEN, "NOTIFICATION"),
        MSG_KEEPALIVE => (19, 19, "KEEPALIVE"),
        // RFC 2918 3; longer ones carry RFC 5291 ORFs, which netgauze checks.
        MSG_ROUTE_REFRESH => (23, MAX_MESSAGE_LEN, "ROUTE-REFRESH"),
        other => {
            return Err(WireError::header(
                MessageHeaderError::BadMessageType {
                    value: Box::new([other]),
                },
                format!("unknown message type {other} at offset 18"),
            ))
        }
    };
    if !(min..=max).contains(&len) {
        return Err(bad_length(format!(
            "is invalid for a {name} (must be {min}..={max}, RFC 4271 6.1)"
        )));
    }
    Ok(Some(len))
}

/// A decoded message and, for UPDATEs, what RFC 7606 says to do with it (always
/// [`Handling::Normal`] for other types). Session resets come back as `Err(WireError)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub message: BgpMessage,
    pub handling: Handling,
}

/// Decodes the frames of one session. Start with [`Decoder::new`]; after the OPEN exchange call
/// [`Decoder::set_asn4`] with the negotiated 4-octet AS capability (RFC 6793).
#[derive(Debug, Clone)]
pub struct Decoder {
    ctx: BgpParsingContext,
    ibgp: bool,
}

impl Decoder {
    /// `ibgp`: the peer is in our AS (decides LOCAL_PREF handling, RFC 7606 7.5).
    pub fn new(ibgp: bool) -> Self {
        let ctx = BgpParsingContext::new(
            false,
            HashMap::new(),
            HashMap::new(),
            // RFC 4271 6.3: a non-unicast prefix SHOULD be ignored, not fatal.
            false,
            false,
            // A malformed capability in an OPEN refuses the session (nothing to lose yet).
            true,
            // netgauze collects path attribute errors instead of failing; unused by us since
            // we parse attributes one at a time, but keeps netgauze's UPDATE path lenient.
            false,
        );
        Decoder { ctx, ibgp }
    }

    pub fn set_asn4(&mut self, asn4: bool) {
        self.ctx.set_asn4(asn4);
    }

    pub fn asn4(&self) -> bool {
        self.ctx.asn4()
    }

    pub fn ibgp(&self) -> bool {
        self.ibgp
    }

    /// Decodes exactly one message (a frame whose length [`frame_len`] returned). Never panics.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Inbound, WireError> {
        let Some(len) = frame_len(frame)? else {
            return Err(WireError::header(
                MessageHeaderError::BadMessageLength {
                    value: Box::new([]),
                },
                format!(
                    "frame of {} bytes is shorter than a BGP header",
                    frame.len()
                ),
            ));
        };
        if frame.len() != len {
            return Err(WireError::header(
                MessageHeaderError::BadMessageLength {
                    value: Box::new((len as u16).to_be_bytes()),
                },
                format!("frame has {} bytes but its header says {len}", frame.len()),
            ));
        }
        if frame[18] == MSG_UPDATE {
            return self.decode_update(frame);
        }
        let mut reader = SliceReader::new(frame);
        let parsed = BgpMessage::parse(&mut reader, &mut self.ctx);
        self.ctx.reset_parsing_errors();
        match parsed {
            Ok(message) => Ok(Inbound {
                message,
                handling: Handling::Normal,
            }),
            Err(e) => Err(WireError::Malformed {
                notification: notification_for(&e, frame),
                reason: e.to_string(),
            }),
        }
    }

    fn decode_update(&mut self, frame: &[u8]) -> Result<Inbound, WireError> {
        let end = frame.len();
        let too_long = |what: &str, at: usize, n: usize| {
            // RFC 4271 6.3: Withdrawn Routes Length or Total Attribute Length too large.
            WireError::update(
                UpdateMessageError::MalformedAttributeList {
                    value: Box::new([]),
                },
                format!("{what} {n} at offset {at} runs past the end of the {end}-byte UPDATE"),
            )
        };
        // frame_len guarantees end >= 23, so both length fields exist once checked.
        let w_start = HEADER_LEN + 2;
        let w_len = read_u16(frame, HEADER_LEN);
        let w_end = w_start + w_len;
        if w_end + 2 > end {
            return Err(too_long("withdrawn routes length", HEADER_LEN, w_len));
        }
        let a_len = read_u16(frame, w_end);
        let a_start = w_end + 2;
        let a_end = a_start + a_len;
        if a_end > end {
            return Err(too_long("total path attribute length", w_end, a_len));
        }

        let withdrawn = parse_ipv4_prefixes(frame, w_start, w_end, "withdrawn routes")?;
        let nlri = parse_ipv4_prefixes(frame, a_end, end, "NLRI")?;
        let (attributes, malformed) = self.parse_attributes(frame, a_start, a_end)?;

        let update = BgpUpdateMessage::new(withdrawn, attributes, nlri);
        let ctx = UpdateContext {
            ibgp: self.ibgp,
            asn4: self.asn4(),
        };
        match revised_errors::classify(&update, &malformed, &ctx) {
            Ok(handling) => Ok(Inbound {
                message: BgpMessage::Update(revised_errors::apply_discards(update, &handling)),
                handling,
            }),
            Err(reset) => Err(WireError::Malformed {
                notification: Some(reset.notification),
                reason: reset.reason,
            }),
        }
    }

    /// Walks the path attributes in `frame[start..end]`. Framing errors (an attribute that
    /// does not fit) reset the session; errors inside one attribute are collected.
    fn parse_attributes(
        &mut self,
        frame: &[u8],
        start: usize,
        end: usize,
    ) -> Result<(Vec<PathAttribute>, Vec<MalformedAttribute>), WireError> {
        let mut attributes = Vec::new();
        let mut malformed = Vec::new();
        let mut seen = [false; 256];
        let mut pos = start;
        while pos < end {
            let left = end - pos;
            let flags = frame[pos];
            let header = if flags & FLAG_EXTENDED_LENGTH != 0 {
                4
            } else {
                3
            };
            if left < header {
                // RFC 7606 4 (second case); reset for the reason given below.
                return Err(WireError::update(
                    UpdateMessageError::MalformedAttributeList { value: Box::new([]) },
                    format!(
                        "{left} trailing byte(s) at offset {pos} are too short for a path attribute header"
                    ),
                ));
            }
            let type_code = frame[pos + 1];
            let value_len = if header == 4 {
                read_u16(frame, pos + 2)
            } else {
                usize::from(frame[pos + 2])
            };
            let attr_end = pos + header + value_len;
            if attr_end > end {
                // RFC 7606 4 (first case) asks for treat-as-withdraw, but the attributes after
                // this point (MP_REACH_NLRI among them, maybe) are lost, so we cannot know
                // which routes to withdraw: session reset, as RFC 4271 6.3 says.
                return Err(WireError::update(
                    UpdateMessageError::AttributeLengthError {
                        value: frame[pos..end].into(),
                    },
                    format!(
                        "{} (type {type_code}) at offset {pos} has length {value_len}, but only {} byte(s) remain in the path attributes (which end at offset {end})",
                        attribute_name(type_code),
                        left - header,
                    ),
                ));
            }
            let bytes = &frame[pos..attr_end];
            let problem = if std::mem::replace(&mut seen[usize::from(type_code)], true) {
                Some(AttributeProblem::Duplicate)
            } else {
                match self.parse_attribute(frame, pos, bytes, flags, type_code, value_len) {
                    Ok(attr) => {
                        attributes.push(attr);
                        None
                    }
                    Err(problem) => Some(problem),
                }
            };
            if let Some(problem) = problem {
                malformed.push(MalformedAttribute {
                    type_code,
                    flags,
                    offset: pos,
                    problem,
                    bytes: bytes.into(),
                });
            }
            pos = attr_end;
        }
        Ok((attributes, malformed))
    }

    /// One attribute, `bytes` = flags, type, length and value, at `frame[offset..]`.
    fn parse_attribute(
        &mut self,
        frame: &[u8],
        offset: usize,
        bytes: &[u8],
        flags: u8,
        type_code: u8,
        value_len: usize,
    ) -> Result<PathAttribute, AttributeProblem> {
        check_length(type_code, value_len, self.asn4())?;
        if matches!(type_code, code::MP_REACH_NLRI | code::MP_UNREACH_NLRI) {
            // We carry IPv4 and IPv6 unicast only; anything else is ignored unparsed (less of
            // netgauze's parsers exposed, and its encoder gets MpReach::Unknown wrong).
            let value = &bytes[bytes.len() - value_len..];
            if let [afi_hi, afi_lo, safi, ..] = *value {
                let afi = u16::from_be_bytes([afi_hi, afi_lo]);
                if !matches!((afi, safi), (AFI_IPV4 | AFI_IPV6, SAFI_UNICAST)) {
                    return Err(AttributeProblem::UnsupportedFamily { afi, safi });
                }
            }
        }
        let mut reader = reader_at(frame, offset, offset + bytes.len());
        let attr = PathAttribute::parse(&mut reader, &mut self.ctx).map_err(|e| {
            use netgauze_bgp_pkt::wire::deserializer::path_attribute::PathAttributeParsingError as E;
            match e {
                E::InvalidPathAttribute { .. } => AttributeProblem::Flags(e.to_string()),
                other => AttributeProblem::Value(other.to_string()),
            }
        })?;
        self.ctx.reset_parsing_errors();
        let attr = clear_host_bits(attr);
        let attr = source_as_workaround(&attr).unwrap_or(attr);
        if !reader.is_empty() {
            return Err(AttributeProblem::Length(format!(
                "{} unparsed byte(s) at the end of the value",
                reader.remaining()
            )));
        }
        if let PathAttributeValue::UnknownAttribute(_) = attr.value() {
            if type_code == code::AS4_AGGREGATOR {
                // netgauze does not know AS4_AGGREGATOR: RFC 6793 makes it optional transitive.
                if flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != FLAG_OPTIONAL | FLAG_TRANSITIVE {
                    return Err(AttributeProblem::Flags(
                        "AS4_AGGREGATOR must be optional transitive".into(),
                    ));
                }
            } else if flags & FLAG_OPTIONAL == 0 {
                return Err(AttributeProblem::UnrecognizedWellKnown);
            }
        }
        Ok(attr)
    }
}

/// netgauze 0.13 writes the Source AS extended community (RFC 6514, sub-type 0x09, two- and
/// four-octet AS-specific) with the Route Target sub-type 0x02, turning it into a route
/// target. We hold it as `Unassigned { sub_type: 9 }`, which is written as received.
/// `None` when `attr` has no Source AS community.
fn source_as_workaround(attr: &PathAttribute) -> Option<PathAttribute> {
    use netgauze_bgp_pkt::community::{
        ExtendedCommunity as Ec, TransitiveFourOctetExtendedCommunity as Four,
        TransitiveTwoOctetExtendedCommunity as Two,
    };
    const SOURCE_AS: u8 = 0x09;
    let PathAttributeValue::ExtendedCommunities(list) = attr.value() else {
        return None;
    };
    let is_source_as = |c: &Ec| {
        matches!(
            c,
            Ec::TransitiveTwoOctet(Two::SourceAs { .. })
                | Ec::TransitiveFourOctet(Four::SourceAs { .. })
        )
    };
    if !list.communities().iter().any(is_source_as) {
        return None;
    }
    let fixed: Vec<Ec> = list
        .communities()
        .iter()
        .map(|c| match *c {
            Ec::TransitiveTwoOctet(Two::SourceAs {
                global_admin,
                local_admin,
            }) => Ec::TransitiveTwoOctet(Two::Unassigned {
                sub_type: SOURCE_AS,
                global_admin,
                local_admin,
            }),
            Ec::TransitiveFourOctet(Four::SourceAs {
                global_admin,
                local_admin,
            }) => Ec::TransitiveFourOctet(Four::Unassigned {
                sub_type: SOURCE_AS,
                global_admin,
                local_admin,
            }),
            other => other,
        })
        .collect();
    PathAttribute::from(
        attr.optional(),
        attr.transitive(),
        attr.partial(),
        attr.extended_length(),
        PathAttributeValue::ExtendedCommunities(ExtendedCommunities::new(fixed)),
    )
    .ok()
}

/// Clears the host bits of unicast prefixes in MP_REACH/MP_UNREACH, as for the NLRI field
/// (RFC 4271 4.3); other families are left as netgauze parsed them.
fn clear_host_bits(attr: PathAttribute) -> PathAttribute {
    fn v4(nlri: &[Ipv4UnicastAddress]) -> Box<[Ipv4UnicastAddress]> {
        nlri.iter()
            .map(
                |a| match Ipv4Unicast::from_net(a.network().address().trunc()) {
                    Ok(n) => Ipv4UnicastAddress::new(a.path_id(), n),
                    Err(_) => *a,
                },
            )
            .collect()
    }
    fn v6(nlri: &[Ipv6UnicastAddress]) -> Box<[Ipv6UnicastAddress]> {
        nlri.iter()
            .map(
                |a| match Ipv6Unicast::from_net(a.network().address().trunc()) {
                    Ok(n) => Ipv6UnicastAddress::new(a.path_id(), n),
                    Err(_) => *a,
                },
            )
            .collect()
    }
    let value = match attr.value() {
        PathAttributeValue::MpReach(MpReach::Ipv4Unicast {
            next_hop,
            next_hop_local,
            nlri,
        }) => PathAttributeValue::MpReach(MpReach::Ipv4Unicast {
            next_hop: *next_hop,
            next_hop_local: *next_hop_local,
            nlri: v4(nlri),
        }),
        PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
            next_hop_global,
            next_hop_local,
            nlri,
        }) => PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
            next_hop_global: *next_hop_global,
            next_hop_local: *next_hop_local,
            nlri: v6(nlri),
        }),
        PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri: v4(nlri) })
        }
        PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: v6(nlri) })
        }
        _ => return attr,
    };
    PathAttribute::from(
        attr.optional(),
        attr.transitive(),
        attr.partial(),
        attr.extended_length(),
        value,
    )
    .unwrap_or(attr)
}

/// Length rules we check before netgauze sees the attribute: netgauze accepts some wrong
/// lengths (an ORIGINATOR_ID of 5 bytes parses) and knows nothing of AS4_AGGREGATOR.
fn check_length(type_code: u8, len: usize, asn4: bool) -> Result<(), AttributeProblem> {
    enum Rule {
        Exactly(usize),
        NonZeroMultipleOf(usize),
    }
    let rule = match type_code {
        code::ORIGIN => Rule::Exactly(1),
        code::NEXT_HOP
        | code::MULTI_EXIT_DISC
        | code::LOCAL_PREF
        | code::ORIGINATOR_ID
        | code::ONLY_TO_CUSTOMER => Rule::Exactly(4),
        code::ATOMIC_AGGREGATE => Rule::Exactly(0),
        // RFC 6793 4.1: 4-octet ASN in AGGREGATOR between NEW speakers.
        code::AGGREGATOR => Rule::Exactly(if asn4 { 8 } else { 6 }),
        code::AS4_AGGREGATOR => Rule::Exactly(8),
        // RFC 7606 7.8, 7.10, 7.14, 7.15; RFC 8092 5.
        code::COMMUNITIES | code::CLUSTER_LIST => Rule::NonZeroMultipleOf(4),
        code::EXTENDED_COMMUNITIES => Rule::NonZeroMultipleOf(8),
        code::IPV6_EXTENDED_COMMUNITIES => Rule::NonZeroMultipleOf(20),
        code::LARGE_COMMUNITIES => Rule::NonZeroMultipleOf(12),
        _ => return Ok(()),
    };
    match rule {
        Rule::Exactly(n) if len != n => Err(AttributeProblem::Length(format!(
            "length {len}, expected {n}"
        ))),
        Rule::NonZeroMultipleOf(n) if len == 0 || len.checked_rem(n) != Some(0) => Err(
            AttributeProblem::Length(format!("length {len}, expected a non-zero multiple of {n}")),
        ),
        _ => Ok(()),
    }
}

/// A reader over `buf[start..end]` whose offsets count from the start of `buf`, so netgauze's
/// error messages name offsets in the message (`SliceReader::new_with_offset` is test-only).
fn reader_at(buf: &[u8], start: usize, end: usize) -> SliceReader<'_> {
    let mut reader = SliceReader::new(buf.get(..end).unwrap_or_default());
    if reader.read_bytes(start).is_err() {
        return SliceReader::new(&[]);
    }
    reader
}

fn read_u16(buf: &[u8], at: usize) -> usize {
    match buf.get(at..at + 2) {
        Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
        None => 0,
    }
}

/// IPv4 prefixes of the withdrawn routes or NLRI field. A syntax error resets the session
/// (RFC 7606 5.3; subcode Invalid Network Field, RFC 4271 6.3); a prefix that is not unicast
/// is ignored (RFC 4271 6.3).
fn parse_ipv4_prefixes(
    frame: &[u8],
    start: usize,
    end: usize,
    field: &str,
) -> Result<Vec<Ipv4UnicastAddress>, WireError> {
    let mut reader = reader_at(frame, start, end);
    let mut out = Vec::new();
    while !reader.is_empty() {
        let at = reader.offset();
        let net = Ipv4Net::parse(&mut reader)
            .map_err(|e| {
                WireError::update(
                    UpdateMessageError::InvalidNetworkField {
                        value: Box::new([]),
                    },
                    format!("in {field}, prefix at offset {at}: {e}"),
                )
            })?
            // RFC 4271 4.3: the trailing bits are irrelevant (netgauze keeps them on decode
            // but clears them on encode).
            .trunc();
        match Ipv4Unicast::from_net(net) {
            Ok(unicast) => out.push(Ipv4UnicastAddress::new_no_path_id(unicast)),
            Err(_) => tracing::debug!(%net, field, "ignoring non-unicast IPv4 prefix"),
        }
    }
    Ok(out)
}

/// The NOTIFICATION for a netgauze error in a non-UPDATE message; `None` for a bad
/// NOTIFICATION (RFC 4271 6.4: never answer a NOTIFICATION with one).
fn notification_for(e: &BgpMessageParsingError, frame: &[u8]) -> Option<BgpNotificationMessage> {
    match e {
        BgpMessageParsingError::BgpNotificationMessageParsingError(_) => None,
        // Header problems are caught by frame_len; a bare EOF here means a body shorter than
        // its fields say, i.e. the message length is wrong (netgauze says "Unspecific").
        BgpMessageParsingError::Parse(_) => Some(BgpNotificationMessage::MessageHeaderError(
            MessageHeaderError::BadMessageLength {
                value: frame.get(16..18).unwrap_or_default().into(),
            },
        )),
        other => Some(BgpNotificationMessage::from(other.clone())),
    }
}

/// Serializes a message exactly as given (netgauze's `WritablePdu::write`); refuses messages
/// over 4096 bytes. For UPDATEs to a peer, prefer [`encode_for_peer`].
pub fn encode(msg: &BgpMessage) -> Result<Vec<u8>, WireError> {
    if let BgpMessage::Update(u) = msg {
        if u.path_attributes()
            .iter()
            .any(|a| source_as_workaround(a).is_some())
        {
            let attrs: Vec<PathAttribute> = u
                .path_attributes()
                .iter()
                .map(|a| source_as_workaround(a).unwrap_or_else(|| a.clone()))
                .collect();
            let fixed =
                BgpUpdateMessage::new(u.withdraw_routes().to_vec(), attrs, u.nlri().to_vec());
            return encode(&BgpMessage::Update(fixed));
        }
    }
    let mut out = Vec::with_capacity(msg.len());
    msg.write(&mut out)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    if out.len() > MAX_MESSAGE_LEN {
        return Err(WireError::Encode(format!(
            "{} bytes is over the {MAX_MESSAGE_LEN}-byte limit (extended messages are not negotiated)",
            out.len()
        )));
    }
    // netgauze 0.13 can disagree with itself: a MultipleLabels capability parsed from a
    // malformed OPEN is written with a header length one more than the bytes it writes.
    // Never put such a message on the wire.
    if read_u16(&out, MARKER_LEN) != out.len() {
        return Err(WireError::Encode(format!(
            "netgauze wrote {} bytes under a header length of {}",
            out.len(),
            read_u16(&out, MARKER_LEN)
        )));
    }
    Ok(out)
}

/// Serializes a message for a peer with (`asn4`) or without the 4-octet AS capability: UPDATEs
/// go through [`as_path_for_peer`] first.
pub fn encode_for_peer(msg: &BgpMessage, asn4: bool) -> Result<Vec<u8>, WireError> {
    match msg {
        BgpMessage::Update(update) => encode(&BgpMessage::Update(as_path_for_peer(update, asn4))),
        other => encode(other),
    }
}

/// Rewrites AS_PATH, AGGREGATOR, AS4_PATH and AS4_AGGREGATOR for the peer's AS-number size
/// (RFC 6793 4.2.2). Input may use either representation: a 2-octet AS_PATH with an AS4_PATH
/// is first merged ([`merge_as4_path`]).
/// - `asn4`: AS_PATH with 4-octet ASNs, 4-octet AGGREGATOR, no AS4_* (RFC 6793 4.1);
/// - otherwise: AS_PATH with 2-octet ASNs and AS_TRANS (23456) for the ones that do not fit,
///   plus an AS4_PATH with the real path when any did not fit; the same for AGGREGATOR and
///   AS4_AGGREGATOR.
pub fn as_path_for_peer(update: &BgpUpdateMessage, asn4: bool) -> BgpUpdateMessage {
    let path = effective_as_path(update);
    let aggregator = effective_aggregator(update);
    let mut attrs = Vec::with_capacity(update.path_attributes().len() + 2);
    let mut as4_path = None;
    let mut as4_aggregator = None;
    for attr in update.path_attributes() {
        let flags = (attr.optional(), attr.transitive(), attr.partial());
        match attr.value() {
            PathAttributeValue::As4Path(_) => {}
            PathAttributeValue::UnknownAttribute(u) if u.code() == code::AS4_AGGREGATOR => {}
            PathAttributeValue::AsPath(_) => {
                let segments = path.clone().unwrap_or_default();
                let value = if asn4 {
                    AsPath::As4PathSegments(segments.into())
                } else {
                    let (two, needs_as4) = to_as2_segments(&segments);
                    if needs_as4 {
                        as4_path = Some(As4Path::new(segments));
                    }
                    AsPath::As2PathSegments(two.into())
                };
                push_attr(&mut attrs, flags, PathAttributeValue::AsPath(value));
            }
            PathAttributeValue::Aggregator(_) => {
                let Some((asn, origin)) = aggregator else {
                    continue;
                };
                let value = if asn4 {
                    Aggregator::As4Aggregator(As4Aggregator::new(asn, origin))
                } else {
                    let two = u16::try_from(asn).unwrap_or(AS_TRANS);
                    if u32::from(two) != asn {
                        let mut raw = asn.to_be_bytes().to_vec();
                        raw.extend_from_slice(&origin.octets());
                        as4_aggregator = Some(UnknownAttribute::new(code::AS4_AGGREGATOR, raw));
                    }
                    Aggregator::As2Aggregator(As2Aggregator::new(two, origin))
                };
                push_attr(&mut attrs, flags, PathAttributeValue::Aggregator(value));
            }
            _ => attrs.push(attr.clone()),
        }
    }
    // RFC 6793: both optional transitive.
    if let Some(p) = as4_path {
        push_attr(
            &mut attrs,
            (true, true, false),
            PathAttributeValue::As4Path(p),
        );
    }
    if let Some(a) = as4_aggregator {
        push_attr(
            &mut attrs,
            (true, true, false),
            PathAttributeValue::UnknownAttribute(a),
        );
    }
    BgpUpdateMessage::new(
        update.withdraw_routes().to_vec(),
        attrs,
        update.nlri().to_vec(),
    )
}

fn push_attr(
    attrs: &mut Vec<PathAttribute>,
    (optional, transitive, partial): (bool, bool, bool),
    value: PathAttributeValue,
) {
    // Extended length when the value might not fit one octet (as the serializer needs it).
    let extended = value_len_hint(&value) > 255;
    match PathAttribute::from(optional, transitive, partial, extended, value) {
        Ok(a) => attrs.push(a),
        // Only reachable if we got the flags of our own attributes wrong.
        Err((_, e)) => tracing::error!(%e, "dropping an attribute with inconsistent flags"),
    }
}

fn value_len_hint(value: &PathAttributeValue) -> usize {
    match value {
        PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) => {
            s.iter().map(|x| 2 + 2 * x.as_numbers().len()).sum()
        }
        PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => {
            s.iter().map(|x| 2 + 4 * x.as_numbers().len()).sum()
        }
        PathAttributeValue::As4Path(p) => p
            .segments()
            .iter()
            .map(|x| 2 + 4 * x.as_numbers().len())
            .sum(),
        _ => 0,
    }
}

fn to_as2_segments(segments: &[As4PathSegment]) -> (Vec<As2PathSegment>, bool) {
    let mut needs_as4 = false;
    let two = segments
        .iter()
        .map(|s| {
            let asns: Vec<u16> = s
                .as_numbers()
                .iter()
                .map(|asn| {
                    u16::try_from(*asn).unwrap_or_else(|_| {
                        needs_as4 = true;
                        AS_TRANS
                    })
                })
                .collect();
            As2PathSegment::new(s.segment_type(), asns)
        })
        .collect();
    (two, needs_as4)
}

/// The AS path with 4-octet ASNs: the AS_PATH itself if it is 4-octet, otherwise the 2-octet
/// AS_PATH merged with AS4_PATH (RFC 6793 4.2.3). `None` without an AS_PATH.
pub fn effective_as_path(update: &BgpUpdateMessage) -> Option<Vec<As4PathSegment>> {
    let mut as_path = None;
    let mut as4_path = None;
    for attr in update.path_attributes() {
        match attr.value() {
            PathAttributeValue::AsPath(p) => as_path = Some(p),
            PathAttributeValue::As4Path(p) => as4_path = Some(p),
            _ => {}
        }
    }
    match as_path? {
        AsPath::As4PathSegments(s) => Some(s.to_vec()),
        AsPath::As2PathSegments(s) => {
            // RFC 6793 4.2.3: an AS4_PATH is ignored when the AGGREGATOR is not AS_TRANS.
            let aggregator_overrides = update.path_attributes().iter().any(|a| {
                matches!(a.value(), PathAttributeValue::Aggregator(Aggregator::As2Aggregator(g)) if *g.asn() != AS_TRANS)
            });
            match as4_path {
                Some(p) if !aggregator_overrides => Some(merge_as4_path(s, p.segments())),
                _ => Some(widen(s)),
            }
        }
    }
}

fn widen(segments: &[As2PathSegment]) -> Vec<As4PathSegment> {
    segments
        .iter()
        .map(|s| {
            let asns: Vec<u32> = s.as_numbers().iter().map(|a| u32::from(*a)).collect();
            As4PathSegment::new(s.segment_type(), asns)
        })
        .collect()
}

fn path_count(segments: impl Iterator<Item = (AsPathSegmentType, usize)>) -> usize {
    // RFC 4271 9.1.2.2: an AS_SET counts as one.
    segments
        .map(|(t, n)| match t {
            AsPathSegmentType::AsSet => 1,
            AsPathSegmentType::AsSequence => n,
        })
        .sum()
}

/// RFC 6793 4.2.3: if the AS_PATH holds fewer ASNs than AS4_PATH, ignore AS4_PATH; otherwise
/// keep the leading ASNs of AS_PATH that AS4_PATH does not cover (the OLD speakers it crossed)
/// and append AS4_PATH.
pub fn merge_as4_path(
    as_path: &[As2PathSegment],
    as4_path: &[As4PathSegment],
) -> Vec<As4PathSegment> {
    let n2 = path_count(
        as_path
            .iter()
            .map(|s| (s.segment_type(), s.as_numbers().len())),
    );
    let n4 = path_count(
        as4_path
            .iter()
            .map(|s| (s.segment_type(), s.as_numbers().len())),
    );
    if n2 < n4 {
        return widen(as_path);
    }
    let mut keep = n2 - n4;
    let mut out = Vec::new();
    for s in widen(as_path) {
        if keep == 0 {
            break;
        }
        match s.segment_type() {
            AsPathSegmentType::AsSet => {
                keep -= 1;
                out.push(s);
            }
            AsPathSegmentType::AsSequence => {
                let take = keep.min(s.as_numbers().len());
                keep -= take;
                out.push(As4PathSegment::new(
                    AsPathSegmentType::AsSequence,
                    s.as_numbers()[..take].to_vec(),
                ));
            }
        }
    }
    out.extend(as4_path.iter().cloned());
    out
}

/// The AGGREGATOR (ASN, address) with AS4_AGGREGATOR applied (RFC 6793 4.2.3): only in
/// place of a 2-octet AGGREGATOR of AS_TRANS; next to any other AGGREGATOR it is ignored.
pub fn effective_aggregator(update: &BgpUpdateMessage) -> Option<(u32, Ipv4Addr)> {
    let mut aggregator = None;
    let mut as_trans = false;
    let mut as4 = None;
    for attr in update.path_attributes() {
        match attr.value() {
            PathAttributeValue::Aggregator(Aggregator::As2Aggregator(a)) => {
                as_trans = *a.asn() == AS_TRANS;
                aggregator = Some((u32::from(*a.asn()), a.origin()))
            }
            PathAttributeValue::Aggregator(Aggregator::As4Aggregator(a)) => {
                as_trans = false;
                aggregator = Some((*a.asn(), a.origin()))
            }
            PathAttributeValue::UnknownAttribute(u) if u.code() == code::AS4_AGGREGATOR => {
                if let Ok(v) = <[u8; 8]>::try_from(u.value()) {
                    let asn = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                    as4 = Some((asn, Ipv4Addr::new(v[4], v[5], v[6], v[7])));
                }
            }
            _ => {}
        }
    }
    match as4 {
        Some(four) if as_trans => Some(four),
        _ => aggregator,
    }
}

/// The fuzz entry point (`fuzz/fuzz_targets/decode.rs`; replayed by `tests/fuzz_corpus.rs`).
///
/// Splits `data` into frames with [`frame_len`] and decodes each with both AS-number sizes.
/// Every message that decodes must re-encode, and decode again to the same message; an UPDATE
/// rewritten by [`encode_for_peer`] must decode too. Panics when one of those invariants
/// breaks: that is the bug report.
pub fn fuzz_decode_roundtrip(data: &[u8]) {
    for (asn4, ibgp) in [(false, false), (true, true)] {
        let mut decoder = Decoder::new(ibgp);
        decoder.set_asn4(asn4);
        let mut rest = data;
        // The same input also as one frame, whatever its header says.
        let _ = decoder.decode(data);
        while let Ok(Some(len)) = frame_len(rest) {
            let Some(frame) = rest.get(..len) else {
                break;
            };
            rest = &rest[len..];
            let Ok(inbound) = decoder.decode(frame) else {
                continue;
            };
            let bytes = match encode(&inbound.message) {
                Ok(b) => b,
                // We never send a peer's OPEN back, and netgauze cannot re-encode some odd
                // capabilities faithfully (encode refuses them, see there).
                Err(_) if matches!(inbound.message, BgpMessage::Open(_)) => continue,
                Err(e) => panic!("re-encoding {:?} failed: {e}", inbound.message),
            };
            match decoder.decode(&bytes) {
                Ok(again) => assert_eq!(
                    again.message, inbound.message,
                    "decode(encode(m)) != m for frame {frame:02x?}, re-encoded as {bytes:02x?}"
                ),
                Err(e) => panic!(
                    "re-encoded message does not decode: {e}; frame {frame:02x?}, re-encoded as {bytes:02x?}"
                ),
            }
            for peer_asn4 in [false, true] {
                let Ok(bytes) = encode_for_peer(&inbound.message, peer_asn4) else {
                    continue; // e.g. an added AS4_PATH pushes it over 4096 bytes
                };
                let mut peer = Decoder::new(ibgp);
                peer.set_asn4(peer_asn4);
                if let Err(e) = peer.decode(&bytes) {
                    panic!(
                        "encode_for_peer(asn4={peer_asn4}) output does not decode: {e}; frame {frame:02x?}, output {bytes:02x?}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
