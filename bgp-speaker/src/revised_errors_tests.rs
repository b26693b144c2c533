//! Each RFC 7606 rule, on UPDATEs written byte by byte (2-octet AS session unless noted).

use netgauze_bgp_pkt::notification::{BgpNotificationMessage, UpdateMessageError};
use netgauze_bgp_pkt::path_attribute::PathAttributeValue;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

use super::*;
use crate::wire::{Decoder, Inbound, WireError};

const ORIGIN_IGP: &[u8] = &[0x40, 1, 1, 0];
/// AS_SEQUENCE [65001], 2-octet.
const AS_PATH: &[u8] = &[0x40, 2, 4, 2, 1, 0xfd, 0xe9];
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 10, 0, 0, 1];
/// 10.1.0.0/16 and 10.2.0.0/16.
const NLRI: &[u8] = &[16, 10, 1, 16, 10, 2];
/// MP_REACH_NLRI IPv6 unicast, next hop 2001:db8::1, NLRI 2001:db8:1::/48.
const MP_REACH_V6: &[u8] = &[
    0x80, 14, 28, 0, 2, 1, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 48,
    0x20, 0x01, 0x0d, 0xb8, 0, 1,
];

fn update(withdrawn: &[u8], attrs: &[&[u8]], nlri: &[u8]) -> Vec<u8> {
    let attrs: Vec<u8> = attrs.concat();
    let mut b = vec![0xff; 16];
    let len = 19 + 2 + withdrawn.len() + 2 + attrs.len() + nlri.len();
    b.extend_from_slice(&(len as u16).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(&attrs);
    b.extend_from_slice(nlri);
    b
}

fn decode_with(ibgp: bool, asn4: bool, bytes: &[u8]) -> Result<Inbound, WireError> {
    let mut d = Decoder::new(ibgp);
    d.set_asn4(asn4);
    d.decode(bytes)
}

fn decode(bytes: &[u8]) -> Result<Inbound, WireError> {
    decode_with(false, false, bytes)
}

fn ok(bytes: &[u8]) -> (BgpUpdateMessage, Handling) {
    match decode(bytes) {
        Ok(Inbound {
            message: BgpMessage::Update(u),
            handling,
        }) => (u, handling),
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

fn codes(u: &BgpUpdateMessage) -> Vec<u8> {
    u.path_attributes().iter().map(type_code_of).collect()
}

fn assert_withdraw(bytes: &[u8], needle: &str) -> BgpUpdateMessage {
    let (u, h) = ok(bytes);
    match &h {
        Handling::TreatAsWithdraw { reason, .. } => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            )
        }
        other => panic!("expected treat-as-withdraw ({needle}), got {other:?}"),
    }
    u
}

fn assert_discard(bytes: &[u8], type_code: u8) -> BgpUpdateMessage {
    let (u, h) = ok(bytes);
    match &h {
        Handling::AttributeDiscard(d) => {
            assert!(d.iter().any(|d| d.type_code == type_code), "{d:?}")
        }
        other => panic!("expected discard of {type_code}, got {other:?}"),
    }
    assert!(!codes(&u).contains(&type_code));
    u
}

fn update_error(e: &WireError) -> &UpdateMessageError {
    match e.notification() {
        Some(BgpNotificationMessage::UpdateMessageError(u)) => u,
        other => panic!("expected an UPDATE Message Error, got {other:?} ({e})"),
    }
}

fn v4_nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().expect("net")).collect()
}

#[test]
fn well_formed_update_is_normal() {
    let (u, h) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP], NLRI));
    assert_eq!(h, Handling::Normal);
    assert_eq!(codes(&u), vec![1, 2, 3]);
}

#[test]
fn origin_with_undefined_value_is_treat_as_withdraw() {
    // RFC 7606 7.1
    let u = assert_withdraw(
        &update(&[], &[&[0x40, 1, 1, 7], AS_PATH, NEXT_HOP], NLRI),
        "ORIGIN",
    );
    assert_eq!(codes(&u), vec![2, 3]);
    assert_eq!(
        routes_to_withdraw(&u),
        v4_nets(&["10.1.0.0/16", "10.2.0.0/16"])
    );
}

#[test]
fn origin_of_length_2_is_treat_as_withdraw_and_parsing_resumes_after_it() {
    let bytes = update(&[], &[&[0x40, 1, 2, 0, 0], AS_PATH, NEXT_HOP], NLRI);
    let u = assert_withdraw(&bytes, "length 2");
    assert_eq!(codes(&u), vec![2, 3]);
}

#[test]
fn netgauze_alone_loses_sync_after_a_bad_origin_length() {
    // Why the decoder frames attributes itself: netgauze 0.13 with
    // fail_on_malformed_path_attr = false resumes inside the bad ORIGIN.
    let bytes = update(&[], &[&[0x40, 1, 2, 0, 0], AS_PATH, NEXT_HOP], NLRI);
    let mut ctx = BgpParsingContext::new(
        false,
        Default::default(),
        Default::default(),
        false,
        false,
        true,
        false,
    );
    let parsed = BgpMessage::parse(&mut SliceReader::new(&bytes), &mut ctx);
    let lost_sync = match parsed {
        Err(_) => true,
        Ok(BgpMessage::Update(u)) => codes(&u) != vec![2, 3],
        Ok(_) => true,
    };
    assert!(
        lost_sync,
        "netgauze recovered; the workaround may be unnecessary now"
    );
}

#[test]
fn next_hop_of_length_3_is_treat_as_withdraw() {
    // RFC 7606 7.3
    let u = assert_withdraw(
        &update(&[], &[ORIGIN_IGP, AS_PATH, &[0x40, 3, 3, 10, 0, 0]], NLRI),
        "NEXT_HOP",
    );
    assert_eq!(codes(&u), vec![1, 2]);
}

#[test]
fn malformed_as_path_is_treat_as_withdraw() {
    // RFC 7606 7.2: segment claims 3 ASNs, carries 1; and a zero-length segment.
    assert_withdraw(
        &update(
            &[],
            &[ORIGIN_IGP, &[0x40, 2, 4, 2, 3, 0xfd, 0xe9], NEXT_HOP],
            NLRI,
        ),
        "AS_PATH",
    );
    assert_withdraw(
        &update(&[], &[ORIGIN_IGP, &[0x40, 2, 2, 2, 0], NEXT_HOP], NLRI),
        "AS_PATH",
    );
}

#[test]
fn missing_well_known_mandatory_attributes_are_treat_as_withdraw() {
    // RFC 7606 3.d
    assert_withdraw(
        &update(&[], &[ORIGIN_IGP, NEXT_HOP], NLRI),
        "missing well-known mandatory attribute AS_PATH",
    );
    assert_withdraw(
        &update(&[], &[AS_PATH, NEXT_HOP], NLRI),
        "missing well-known mandatory attribute ORIGIN",
    );
    assert_withdraw(&update(&[], &[ORIGIN_IGP, AS_PATH], NLRI), "NEXT_HOP");
    assert_withdraw(&update(&[], &[], NLRI), "ORIGIN");
}

#[test]
fn next_hop_is_not_required_with_only_mp_reach() {
    // RFC 4760 3
    let (_, h) = ok(&update(&[], &[MP_REACH_V6, ORIGIN_IGP, AS_PATH], &[]));
    assert_eq!(h, Handling::Normal);
    // ...but ORIGIN and AS_PATH are.
    let mut d = Decoder::new(false);
    let inbound = d
        .decode(&update(&[], &[MP_REACH_V6, ORIGIN_IGP], &[]))
        .expect("decode");
    assert!(matches!(inbound.handling, Handling::TreatAsWithdraw { .. }));
}

#[test]
fn no_nlri_means_no_mandatory_attributes() {
    // Withdrawals and End-of-RIB carry no path attributes.
    let (_, h) = ok(&update(&[16, 10, 1], &[], &[]));
    assert_eq!(h, Handling::Normal);
}

#[test]
fn withdraw_only_update_with_malformed_attribute_is_plain_withdrawal() {
    let bytes = update(&[16, 10, 1, 24, 192, 0, 2], &[&[0x40, 1, 1, 9]], &[]);
    let (u, h) = ok(&bytes);
    assert!(matches!(h, Handling::TreatAsWithdraw { .. }), "{h:?}");
    // Withdrawing everything in the message is exactly the withdrawal it asked for.
    assert_eq!(
        routes_to_withdraw(&u),
        v4_nets(&["10.1.0.0/16", "192.0.2.0/24"])
    );
    assert!(!has_reachable_nlri(&u));
}

#[test]
fn treat_as_withdraw_covers_mp_reach_and_nlri_field() {
    let bytes = update(
        &[8, 11],
        &[MP_REACH_V6, &[0x40, 1, 1, 5], AS_PATH, NEXT_HOP],
        &[16, 10, 1],
    );
    let u = assert_withdraw(&bytes, "ORIGIN");
    assert_eq!(
        routes_to_withdraw(&u),
        vec![
            "11.0.0.0/8".parse::<IpNet>().expect("net"),
            "10.1.0.0/16".parse().expect("net"),
            "2001:db8:1::/48".parse().expect("net"),
        ]
    );
}

#[test]
fn med_of_wrong_length_is_treat_as_withdraw() {
    // RFC 7606 7.4
    assert_withdraw(
        &update(
            &[],
            &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &[0x80, 4, 2, 0, 1]],
            NLRI,
        ),
        "MULTI_EXIT_DISC",
    );
}

#[test]
fn local_pref_rules_depend_on_ibgp() {
    // RFC 7606 7.5
    let good = [0x40, 5, 4, 0, 0, 0, 100];
    let bad = [0x40, 5, 3, 0, 0, 100];
    assert_discard(
        &update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &good], NLRI),
        5,
    );
    assert_discard(
        &update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &bad], NLRI),
        5,
    );

    let ibgp =
        |attrs: &[&[u8]]| decode_with(true, false, &update(&[], attrs, NLRI)).expect("decode");
    let inbound = ibgp(&[ORIGIN_IGP, AS_PATH, NEXT_HOP, &good]);
    assert_eq!(inbound.handling, Handling::Normal);
    let inbound = ibgp(&[ORIGIN_IGP, AS_PATH, NEXT_HOP, &bad]);
    assert!(matches!(inbound.handling, Handling::TreatAsWithdraw { .. }));
}

#[test]
fn malformed_community_attributes_are_treat_as_withdraw() {
    let base: [&[u8]; 3] = [ORIGIN_IGP, AS_PATH, NEXT_HOP];
    for (attr, name) in [
        (&[0xc0, 8, 5, 0, 0, 0, 1, 0][..], "COMMUNITIES"), // RFC 7606 7.8
        (&[0xc0, 8, 0][..], "COMMUNITIES"),                // non-zero multiple of 4
        (
            &[0xc0, 16, 7, 0, 2, 0, 1, 0, 0, 0][..],
            "EXTENDED_COMMUNITIES",
        ), // 7.14
        (
            &[0xc0, 32, 11, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0][..],
            "LARGE_COMMUNITIES",
        ), // RFC 8092
    ] {
        let mut attrs = base.to_vec();
        attrs.push(attr);
        let u = assert_withdraw(&update(&[], &attrs, NLRI), name);
        assert_eq!(codes(&u), vec![1, 2, 3]);
    }
}

#[test]
fn malformed_route_reflection_attributes_are_treat_as_withdraw() {
    // RFC 7606 7.9, 7.10
    assert_withdraw(
        &update(
            &[],
            &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &[0x80, 9, 5, 10, 0, 0, 9, 9]],
            NLRI,
        ),
        "ORIGINATOR_ID",
    );
    assert_withdraw(
        &update(
            &[],
            &[
                ORIGIN_IGP,
                AS_PATH,
                NEXT_HOP,
                &[0x80, 10, 6, 10, 0, 0, 9, 9, 9],
            ],
            NLRI,
        ),
        "CLUSTER_LIST",
    );
}

#[test]
fn malformed_aggregation_attributes_are_discarded() {
    let base: [&[u8]; 3] = [ORIGIN_IGP, AS_PATH, NEXT_HOP];
    for (attr, type_code) in [
        (&[0x40, 6, 1, 0][..], 6),                             // RFC 7606 7.6
        (&[0xc0, 7, 8, 0, 0, 0xfd, 0xe9, 10, 0, 0, 1][..], 7), // 7.7: 8 bytes on a 2-octet session
        (&[0xc0, 18, 7, 0, 0, 0xfd, 0xe9, 10, 0, 0][..], 18),  // RFC 6793 6
        (&[0xc0, 17, 2, 2, 0][..], 17),                        // AS4_PATH zero-length segment
    ] {
        let mut attrs = base.to_vec();
        attrs.push(attr);
        let u = assert_discard(&update(&[], &attrs, NLRI), type_code);
        assert_eq!(codes(&u), vec![1, 2, 3], "type {type_code}");
    }
}

#[test]
fn as4_attributes_from_a_4_octet_peer_are_discarded() {
    // RFC 6793 4.1
    let as_path4 = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
    let as4_path = [0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01];
    let inbound = decode_with(
        false,
        true,
        &update(&[], &[ORIGIN_IGP, &as_path4, NEXT_HOP, &as4_path], NLRI),
    )
    .expect("decode");
    assert!(matches!(inbound.handling, Handling::AttributeDiscard(ref d) if d[0].type_code == 17));
    let BgpMessage::Update(u) = inbound.message else {
        panic!("not an update")
    };
    assert_eq!(codes(&u), vec![1, 2, 3]);
    // From a 2-octet peer the same AS4_PATH is kept (the caller merges it).
    let (u, h) = ok(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &as4_path],
        NLRI,
    ));
    assert_eq!(h, Handling::Normal);
    assert!(codes(&u).contains(&17));
}

#[test]
fn duplicate_attribute_keeps_the_first() {
    // RFC 7606 3.g
    let (u, h) = ok(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, &[0x40, 1, 1, 2], NEXT_HOP],
        NLRI,
    ));
    assert!(
        matches!(h, Handling::AttributeDiscard(ref d) if d[0].type_code == 1),
        "{h:?}"
    );
    assert_eq!(codes(&u), vec![1, 2, 3]);
    assert!(matches!(
        u.path_attributes()[0].value(),
        PathAttributeValue::Origin(netgauze_bgp_pkt::path_attribute::Origin::IGP)
    ));
}

#[test]
fn duplicate_mp_attribute_resets_the_session() {
    // RFC 7606 3.g
    let e = decode(&update(
        &[],
        &[MP_REACH_V6, ORIGIN_IGP, AS_PATH, MP_REACH_V6],
        &[],
    ))
    .expect_err("duplicate MP_REACH");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::MalformedAttributeList { .. }
    ));
}

#[test]
fn malformed_mp_reach_resets_the_session() {
    // RFC 7606 3.h: next hop length 5 is not valid for IPv6.
    let bad = [0x80, 14, 11, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0, 0];
    let e = decode(&update(&[], &[&bad, ORIGIN_IGP, AS_PATH], &[])).expect_err("bad MP_REACH");
    assert!(
        matches!(
            update_error(&e),
            UpdateMessageError::OptionalAttributeError { .. }
        ),
        "{e}"
    );
    // MP_UNREACH_NLRI with a truncated IPv4 prefix.
    let e =
        decode(&update(&[], &[&[0x80, 15, 5, 0, 1, 1, 24, 10]], &[])).expect_err("bad MP_UNREACH");
    assert!(
        matches!(
            update_error(&e),
            UpdateMessageError::OptionalAttributeError { .. }
        ),
        "{e}"
    );
}

#[test]
fn attribute_length_overrunning_the_attributes_resets_the_session() {
    // NEXT_HOP claims 40 bytes; the message ends first.
    let bytes = update(
        &[],
        &[ORIGIN_IGP, AS_PATH, &[0x40, 3, 40, 10, 0, 0, 1]],
        &[],
    );
    let e = decode(&bytes).expect_err("overrun");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::AttributeLengthError { .. }
    ));
    let at = 19 + 2 + 2 + ORIGIN_IGP.len() + AS_PATH.len();
    assert!(e.to_string().contains(&format!("offset {at}")), "{e}");

    // Fewer than 3 bytes left for an attribute header (RFC 7606 4, second case).
    let e = decode(&update(&[], &[ORIGIN_IGP, &[0x40, 2]], &[])).expect_err("short header");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::MalformedAttributeList { .. }
    ));
}

#[test]
fn length_fields_overrunning_the_message_reset_the_session() {
    let mut b = update(&[], &[ORIGIN_IGP], &[]);
    b[21..23].copy_from_slice(&100u16.to_be_bytes()); // total attribute length
    let e = decode(&b).expect_err("attr length");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::MalformedAttributeList { .. }
    ));
    let mut b = update(&[], &[], &[]);
    b[19..21].copy_from_slice(&3u16.to_be_bytes()); // withdrawn routes length
    let e = decode(&b).expect_err("withdrawn length");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::MalformedAttributeList { .. }
    ));
}

#[test]
fn bad_nlri_resets_the_session() {
    // RFC 7606 5.3: prefix length 33.
    let e = decode(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP],
        &[33, 10, 0, 0, 0, 0],
    ))
    .expect_err("bad prefix");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::InvalidNetworkField { .. }
    ));
    // Truncated prefix.
    assert!(decode(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP], &[24, 10, 0])).is_err());
}

#[test]
fn conflicting_flags_are_treat_as_withdraw() {
    // RFC 7606 3.c: ORIGIN marked optional.
    assert_withdraw(
        &update(&[], &[&[0xc0, 1, 1, 0], AS_PATH, NEXT_HOP], NLRI),
        "flags",
    );
}

#[test]
fn unknown_attributes() {
    // Unrecognized well-known: RFC 4271 6.3 session reset.
    let e = decode(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &[0x40, 200, 1, 0]],
        NLRI,
    ))
    .expect_err("well-known 200");
    assert!(matches!(
        update_error(&e),
        UpdateMessageError::UnrecognizedWellKnownAttribute { .. }
    ));
    // Unknown optional transitive: kept (to be passed on with the Partial bit).
    let (u, h) = ok(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &[0xc0, 200, 1, 0]],
        NLRI,
    ));
    assert_eq!(h, Handling::Normal);
    assert_eq!(codes(&u), vec![1, 2, 3, 200]);
}

#[test]
fn most_severe_error_wins() {
    // A discard and a withdraw: withdraw. A withdraw and a reset: reset.
    let (_, h) = ok(&update(
        &[],
        &[&[0x40, 1, 1, 9], AS_PATH, NEXT_HOP, &[0x40, 6, 1, 0]],
        NLRI,
    ));
    assert!(matches!(h, Handling::TreatAsWithdraw { ref discarded, .. } if discarded.len() == 1));
    assert!(decode(&update(
        &[],
        &[&[0x40, 1, 1, 9], &[0x80, 15, 5, 0, 1, 1, 24, 10]],
        NLRI
    ))
    .is_err());
}

#[test]
fn mp_attributes_of_other_families_are_ignored() {
    // MP_REACH_NLRI for L2VPN EVPN (AFI 25, SAFI 70), content not even looked at.
    let evpn = [0x80, 14, 5, 0, 25, 70, 0xde, 0xad];
    let (u, h) = ok(&update(&[], &[&evpn, ORIGIN_IGP, AS_PATH, NEXT_HOP], NLRI));
    assert!(
        matches!(h, Handling::AttributeDiscard(ref d) if d[0].type_code == 14),
        "{h:?}"
    );
    assert_eq!(codes(&u), vec![1, 2, 3]);
}
