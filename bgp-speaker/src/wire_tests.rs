use std::net::{Ipv4Addr, Ipv6Addr};

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::Community;
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::nlri::{Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::{CeaseError, OpenMessageError};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    ClusterId, ClusterList, Communities, LocalPreference, MpReach, MpUnreach,
    MultiExitDiscriminator, NextHop, Origin, Originator,
};
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_iana::address_family::AddressType;

use super::*;

/// The first attribute of `msg` with this type code.
fn attr(msg: &BgpMessage, type_code: u8) -> Option<PathAttribute> {
    let BgpMessage::Update(u) = msg else {
        return None;
    };
    u.path_attributes()
        .iter()
        .find(|a| revised_errors::type_code_of(a) == type_code)
        .cloned()
}

fn pa(optional: bool, transitive: bool, value: PathAttributeValue) -> PathAttribute {
    PathAttribute::from(optional, transitive, false, false, value).expect("valid flags")
}

fn v4(s: &str) -> Ipv4UnicastAddress {
    Ipv4UnicastAddress::new_no_path_id(
        Ipv4Unicast::from_net(s.parse().expect("net")).expect("unicast"),
    )
}

fn v6(s: &str) -> Ipv6UnicastAddress {
    Ipv6UnicastAddress::new(
        None,
        Ipv6Unicast::from_net(s.parse().expect("net")).expect("unicast"),
    )
}

fn decoder(asn4: bool, ibgp: bool) -> Decoder {
    let mut d = Decoder::new(ibgp);
    d.set_asn4(asn4);
    d
}

/// decode(encode(m)) == m with a Normal handling.
fn roundtrip(msg: BgpMessage, asn4: bool) -> Vec<u8> {
    let bytes = encode(&msg).expect("encode");
    assert_eq!(frame_len(&bytes).expect("header"), Some(bytes.len()));
    let inbound = decoder(asn4, true).decode(&bytes).expect("decode");
    assert_eq!(inbound.message, msg);
    assert_eq!(inbound.handling, Handling::Normal);
    bytes
}

fn header(len: u16, msg_type: u8) -> Vec<u8> {
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&len.to_be_bytes());
    b.push(msg_type);
    b
}

fn open(asn: u16, caps: Vec<BgpCapability>) -> BgpMessage {
    BgpMessage::Open(BgpOpenMessage::new(
        asn,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    ))
}

#[test]
fn keepalive_is_sixteen_ff_then_length_19_and_type_4() {
    let bytes = roundtrip(BgpMessage::KeepAlive, false);
    assert_eq!(bytes, header(19, 4));
}

#[test]
fn open_with_capabilities_roundtrips() {
    let msg = open(
        AS_TRANS,
        vec![
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv4Unicast,
            )),
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv6Unicast,
            )),
            BgpCapability::FourOctetAs(FourOctetAsCapability::new(4_200_000_001)),
            BgpCapability::RouteRefresh,
            BgpCapability::GracefulRestartCapability(GracefulRestartCapability::new(
                true,
                false,
                120,
                vec![
                    GracefulRestartAddressFamily::new(true, AddressType::Ipv4Unicast),
                    GracefulRestartAddressFamily::new(false, AddressType::Ipv6Unicast),
                ],
            )),
        ],
    );
    // OPEN parsing does not depend on the AS size.
    roundtrip(msg.clone(), false);
    roundtrip(msg, true);
}

#[test]
fn open_fixture_from_rfc_layout() {
    // RFC 4271 4.2 + RFC 5492: version 4, AS 65001, hold 90, id 192.0.2.1, one optional
    // parameter (type 2, capabilities) holding route refresh (code 2, length 0).
    let mut b = header(33, 1);
    b.extend_from_slice(&[4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 4, 2, 2, 2, 0]);
    let msg = open(65001, vec![BgpCapability::RouteRefresh]);
    assert_eq!(encode(&msg).expect("encode"), b);
    assert_eq!(
        decoder(false, false).decode(&b).expect("decode").message,
        msg
    );
}

#[test]
fn notification_fixture_and_roundtrip() {
    let msg = BgpMessage::Notification(BgpNotificationMessage::CeaseError(
        CeaseError::AdministrativeShutdown {
            value: Box::new([]),
        },
    ));
    let bytes = roundtrip(msg, false);
    // RFC 4271 4.5: code 6 (Cease), RFC 4486 subcode 2 (Administrative Shutdown).
    let mut expected = header(21, 3);
    expected.extend_from_slice(&[6, 2]);
    assert_eq!(bytes, expected);

    roundtrip(
        BgpMessage::Notification(BgpNotificationMessage::OpenMessageError(
            OpenMessageError::BadPeerAs {
                value: Box::new([0xfd, 0xe9]),
            },
        )),
        true,
    );
}

#[test]
fn route_refresh_fixture_and_roundtrip() {
    let msg = BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(
        AddressType::Ipv6Unicast,
        RouteRefreshSubcode::NormalRequest,
    ));
    let bytes = roundtrip(msg, false);
    // RFC 2918 3: AFI 2, reserved 0, SAFI 1.
    let mut expected = header(23, 5);
    expected.extend_from_slice(&[0, 2, 0, 1]);
    assert_eq!(bytes, expected);
}

fn full_v4_update(asn4: bool) -> BgpMessage {
    let as_path = if asn4 {
        AsPath::As4PathSegments(
            vec![As4PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![65001, 4_200_000_001],
            )]
            .into(),
        )
    } else {
        AsPath::As2PathSegments(
            vec![As2PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![65001, 65002],
            )]
            .into(),
        )
    };
    BgpMessage::Update(BgpUpdateMessage::new(
        vec![v4("192.0.2.0/24")],
        vec![
            pa(false, true, PathAttributeValue::Origin(Origin::IGP)),
            pa(false, true, PathAttributeValue::AsPath(as_path)),
            pa(
                false,
                true,
                PathAttributeValue::NextHop(NextHop::new(Ipv4Addr::new(10, 0, 0, 1))),
            ),
            pa(
                true,
                false,
                PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(50)),
            ),
            pa(
                false,
                true,
                PathAttributeValue::LocalPreference(LocalPreference::new(200)),
            ),
            pa(
                true,
                true,
                PathAttributeValue::Communities(Communities::new(vec![
                    Community::new(0xfde9_0001),
                    Community::new(0xffff_ff01),
                ])),
            ),
            pa(
                true,
                false,
                PathAttributeValue::Originator(Originator::new(Ipv4Addr::new(10, 0, 0, 9))),
            ),
            pa(
                true,
                false,
                PathAttributeValue::ClusterList(ClusterList::new(vec![
                    ClusterId::new(Ipv4Addr::new(10, 0, 0, 100)),
                    ClusterId::new(Ipv4Addr::new(10, 0, 0, 101)),
                ])),
            ),
        ],
        vec![v4("10.1.0.0/16"), v4("10.2.3.0/24"), v4("0.0.0.0/0")],
    ))
}

#[test]
fn update_with_ipv4_nlri_and_all_common_attributes_roundtrips() {
    roundtrip(full_v4_update(false), false);
    roundtrip(full_v4_update(true), true);
}

#[test]
fn update_with_mp_reach_link_local_and_mp_unreach_roundtrips() {
    let reach = BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![
            pa(
                true,
                false,
                PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                    next_hop_global: "2001:db8::1".parse().expect("v6"),
                    next_hop_local: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                    nlri: vec![v6("2001:db8:1::/48"), v6("2001:db8:2::/64")].into(),
                }),
            ),
            pa(false, true, PathAttributeValue::Origin(Origin::Incomplete)),
            pa(
                false,
                true,
                PathAttributeValue::AsPath(AsPath::As4PathSegments(Box::new([]))),
            ),
        ],
        vec![],
    ));
    let bytes = roundtrip(reach, true);
    // RFC 4760 3 / RFC 2545 3: next hop length 32 = global + link-local.
    let nh_len_at = bytes
        .windows(3)
        .position(|w| w == [0, 2, 1])
        .expect("AFI 2 SAFI 1")
        + 3;
    assert_eq!(bytes[nh_len_at], 32);

    let unreach = BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![pa(
            true,
            false,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                nlri: vec![v6("2001:db8:1::/48")].into(),
            }),
        )],
        vec![],
    ));
    roundtrip(unreach, true);
}

#[test]
fn end_of_rib_markers() {
    // RFC 4724 2: IPv4 unicast EoR is the minimal UPDATE.
    let v4_eor = BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], vec![]));
    let bytes = roundtrip(v4_eor.clone(), false);
    let mut expected = header(23, 2);
    expected.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(bytes, expected);

    // Other families: an UPDATE with only an empty MP_UNREACH_NLRI.
    let v6_eor = BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![pa(
            true,
            false,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: Box::new([]) }),
        )],
        vec![],
    ));
    let bytes = roundtrip(v6_eor.clone(), false);
    let mut expected = header(29, 2);
    // withdrawn 0, attrs 6: flags 0x80, type 15, len 3, AFI 2, SAFI 1.
    expected.extend_from_slice(&[0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
    assert_eq!(bytes, expected);

    let eor = |m: &BgpMessage| match m {
        BgpMessage::Update(u) => u.end_of_rib(),
        _ => None,
    };
    assert_eq!(eor(&v4_eor), Some(AddressType::Ipv4Unicast));
    assert_eq!(eor(&v6_eor), Some(AddressType::Ipv6Unicast));
}

#[test]
fn update_fixture_written_from_rfc_4271() {
    let mut b = header(0, 2);
    b.extend_from_slice(&[0, 0]); // no withdrawn routes
    let attrs = [
        0x40, 1, 1, 0, // ORIGIN IGP
        0x40, 2, 4, 2, 1, 0xfd, 0xe9, // AS_PATH: AS_SEQUENCE of 1: 65001 (2-octet)
        0x40, 3, 4, 10, 0, 0, 1, // NEXT_HOP 10.0.0.1
    ];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(&attrs);
    b.extend_from_slice(&[16, 10, 1]); // 10.1.0.0/16
    let len = b.len() as u16;
    b[16..18].copy_from_slice(&len.to_be_bytes());

    let msg = BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![
            pa(false, true, PathAttributeValue::Origin(Origin::IGP)),
            pa(
                false,
                true,
                PathAttributeValue::AsPath(AsPath::As2PathSegments(
                    vec![As2PathSegment::new(
                        AsPathSegmentType::AsSequence,
                        vec![65001],
                    )]
                    .into(),
                )),
            ),
            pa(
                false,
                true,
                PathAttributeValue::NextHop(NextHop::new(Ipv4Addr::new(10, 0, 0, 1))),
            ),
        ],
        vec![v4("10.1.0.0/16")],
    ));
    assert_eq!(encode(&msg).expect("encode"), b);
    let inbound = decoder(false, false).decode(&b).expect("decode");
    assert_eq!(inbound.message, msg);
    assert_eq!(inbound.handling, Handling::Normal);
}

#[test]
fn frame_len_waits_for_the_header_and_checks_it_early() {
    let ka = header(19, 4);
    for n in 0..19 {
        assert_eq!(
            frame_len(&ka[..n]).expect("prefix is fine"),
            None,
            "{n} bytes"
        );
    }
    assert_eq!(frame_len(&ka).expect("ok"), Some(19));
    let mut two = ka.clone();
    two.extend_from_slice(&ka);
    assert_eq!(frame_len(&two).expect("ok"), Some(19));

    // A wrong marker byte is reported as soon as it arrives.
    let err = frame_len(&[0xff, 0xff, 0x00]).expect_err("bad marker");
    assert!(matches!(
        err.notification(),
        Some(BgpNotificationMessage::MessageHeaderError(
            MessageHeaderError::ConnectionNotSynchronized { .. }
        ))
    ));
    assert!(err.to_string().contains("offset 2"), "{err}");

    // A bad length is reported before the type byte (let alone the body) arrives.
    for bad in [0u16, 18, 4097, 65535] {
        let mut b = vec![0xff; 16];
        b.extend_from_slice(&bad.to_be_bytes());
        let err = frame_len(&b).expect_err("bad length");
        assert_eq!(
            err.notification(),
            Some(&BgpNotificationMessage::MessageHeaderError(
                MessageHeaderError::BadMessageLength {
                    value: bad.to_be_bytes().into()
                }
            )),
            "{bad}"
        );
    }
}

#[test]
fn frame_len_checks_type_and_per_type_lengths() {
    let err = frame_len(&header(19, 9)).expect_err("type 9");
    assert_eq!(
        err.notification(),
        Some(&BgpNotificationMessage::MessageHeaderError(
            MessageHeaderError::BadMessageType {
                value: Box::new([9])
            }
        ))
    );
    for (len, t) in [(20, 4), (28, 1), (22, 2), (20, 3), (22, 5)] {
        let err = frame_len(&header(len, t)).expect_err("too short for its type");
        assert!(
            matches!(
                err.notification(),
                Some(BgpNotificationMessage::MessageHeaderError(
                    MessageHeaderError::BadMessageLength { .. }
                ))
            ),
            "len {len} type {t}: {err}"
        );
    }
}

#[test]
fn decode_rejects_a_frame_of_the_wrong_size() {
    let mut b = header(19, 4);
    b.push(0);
    assert!(decoder(false, false).decode(&b).is_err());
    assert!(decoder(false, false).decode(&b[..10]).is_err());
}

#[test]
fn bad_notification_is_not_answered_with_a_notification() {
    // Error code 0 does not exist (RFC 4271 4.5).
    let mut b = header(21, 3);
    b.extend_from_slice(&[0, 0]);
    let err = decoder(false, false).decode(&b).expect_err("error code 0");
    assert_eq!(err.notification(), None, "{err}");
}

#[test]
fn bad_open_version_gets_an_open_message_error() {
    let mut b = header(29, 1);
    b.extend_from_slice(&[3, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, 0]);
    let err = decoder(false, false).decode(&b).expect_err("version 3");
    assert!(matches!(
        err.notification(),
        Some(BgpNotificationMessage::OpenMessageError(
            OpenMessageError::UnsupportedVersionNumber { .. }
        ))
    ));
}

#[test]
fn encode_refuses_messages_over_4096_bytes() {
    let nlri: Vec<_> = (0..1100u32)
        .map(|i| v4(&format!("10.{}.{}.0/24", i / 256, i % 256)))
        .collect();
    let msg = BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], nlri));
    assert!(matches!(encode(&msg), Err(WireError::Encode(_))));
}

fn as4_update() -> BgpUpdateMessage {
    BgpUpdateMessage::new(
        vec![],
        vec![
            pa(false, true, PathAttributeValue::Origin(Origin::IGP)),
            pa(
                false,
                true,
                PathAttributeValue::AsPath(AsPath::As4PathSegments(
                    vec![
                        As4PathSegment::new(
                            AsPathSegmentType::AsSequence,
                            vec![65001, 4_200_000_001],
                        ),
                        As4PathSegment::new(AsPathSegmentType::AsSet, vec![65010, 4_200_000_002]),
                    ]
                    .into(),
                )),
            ),
            pa(
                false,
                true,
                PathAttributeValue::NextHop(NextHop::new(Ipv4Addr::new(10, 0, 0, 1))),
            ),
            pa(
                true,
                true,
                PathAttributeValue::Aggregator(Aggregator::As4Aggregator(As4Aggregator::new(
                    4_200_000_001,
                    Ipv4Addr::new(10, 0, 0, 7),
                ))),
            ),
        ],
        vec![v4("10.1.0.0/16")],
    )
}

#[test]
fn old_peer_gets_as_trans_and_as4_path() {
    let msg = BgpMessage::Update(as4_update());
    let bytes = encode_for_peer(&msg, false).expect("encode");
    // AS_PATH with 2-octet ASNs (RFC 6793 4.2.2): SEQ [65001, AS_TRANS], SET [65010, AS_TRANS].
    let as_path = [
        0x40, 2, 12, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0, 1, 2, 0xfd, 0xf2, 0x5b, 0xa0,
    ];
    assert!(
        bytes.windows(as_path.len()).any(|w| w == as_path),
        "{bytes:02x?}"
    );
    // AGGREGATOR AS_TRANS 10.0.0.7, and AS4_AGGREGATOR 4200000001 10.0.0.7.
    let aggregator = [0xc0, 7, 6, 0x5b, 0xa0, 10, 0, 0, 7];
    assert!(
        bytes.windows(aggregator.len()).any(|w| w == aggregator),
        "{bytes:02x?}"
    );
    let as4_aggregator = [0xc0, 18, 8, 0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 7];
    assert!(
        bytes
            .windows(as4_aggregator.len())
            .any(|w| w == as4_aggregator),
        "{bytes:02x?}"
    );

    // An OLD speaker's view, and the path a NEW speaker reconstructs from it.
    let inbound = decoder(false, false).decode(&bytes).expect("decode");
    assert_eq!(inbound.handling, Handling::Normal);
    let BgpMessage::Update(seen) = &inbound.message else {
        panic!("not an update")
    };
    let as4 = attr(&inbound.message, code::AS4_PATH).expect("AS4_PATH");
    assert!(as4.optional() && as4.transitive());
    assert_eq!(effective_as_path(seen), effective_as_path(&as4_update()));
    assert_eq!(
        effective_aggregator(seen),
        Some((4_200_000_001, Ipv4Addr::new(10, 0, 0, 7)))
    );

    // Passing it on to a NEW peer restores the 4-octet AS_PATH and drops AS4_*.
    let again = encode_for_peer(&inbound.message, true).expect("encode");
    let new_view = decoder(true, false).decode(&again).expect("decode").message;
    assert_eq!(new_view, msg);
}

/// RFC 6793 4.1: AS4_AGGREGATOR from a NEW speaker (4-octet AGGREGATOR) is discarded, even
/// when its AGGREGATOR happens to be AS 23456.
#[test]
fn as4_aggregator_next_to_a_4_octet_aggregator_is_ignored() {
    let agg = |asn| {
        pa(
            true,
            true,
            PathAttributeValue::Aggregator(Aggregator::As4Aggregator(As4Aggregator::new(
                asn,
                Ipv4Addr::new(10, 0, 0, 7),
            ))),
        )
    };
    let as4_aggregator = pa(
        true,
        true,
        PathAttributeValue::UnknownAttribute(UnknownAttribute::new(
            code::AS4_AGGREGATOR,
            vec![0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 9],
        )),
    );
    let u = BgpUpdateMessage::new(
        vec![],
        vec![agg(u32::from(AS_TRANS)), as4_aggregator],
        vec![],
    );
    assert_eq!(
        effective_aggregator(&u),
        Some((u32::from(AS_TRANS), Ipv4Addr::new(10, 0, 0, 7)))
    );
}

#[test]
fn old_peer_without_large_asns_gets_no_as4_attributes() {
    let mut u = as4_update();
    u = BgpUpdateMessage::new(
        vec![],
        u.path_attributes()
            .iter()
            .filter(|a| {
                !matches!(
                    a.value(),
                    PathAttributeValue::Aggregator(_) | PathAttributeValue::AsPath(_)
                )
            })
            .cloned()
            .chain([pa(
                false,
                true,
                PathAttributeValue::AsPath(AsPath::As4PathSegments(
                    vec![As4PathSegment::new(
                        AsPathSegmentType::AsSequence,
                        vec![65001, 65002],
                    )]
                    .into(),
                )),
            )])
            .collect::<Vec<_>>(),
        u.nlri().to_vec(),
    );
    let out = as_path_for_peer(&u, false);
    assert!(out
        .path_attributes()
        .iter()
        .all(|a| !matches!(a.value(), PathAttributeValue::As4Path(_))));
    assert!(out.path_attributes().iter().any(|a| matches!(
        a.value(),
        PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) if s[0].as_numbers() == [65001, 65002]
    )));
}

#[test]
fn new_peer_gets_4_octet_path_from_2_octet_input() {
    let u = BgpUpdateMessage::new(
        vec![],
        vec![pa(
            false,
            true,
            PathAttributeValue::AsPath(AsPath::As2PathSegments(
                vec![As2PathSegment::new(
                    AsPathSegmentType::AsSequence,
                    vec![65001],
                )]
                .into(),
            )),
        )],
        vec![],
    );
    let out = as_path_for_peer(&u, true);
    assert!(matches!(
        out.path_attributes()[0].value(),
        PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) if s[0].as_numbers() == [65001]
    ));
}

#[test]
fn merge_as4_path_follows_rfc_6793_4_2_3() {
    let seq2 = |v: Vec<u16>| As2PathSegment::new(AsPathSegmentType::AsSequence, v);
    let seq4 = |v: Vec<u32>| As4PathSegment::new(AsPathSegmentType::AsSequence, v);
    // Two OLD speakers (100, 200) prepended after the path left 4-octet land.
    let merged = merge_as4_path(
        &[seq2(vec![100, 200, AS_TRANS, 300])],
        &[seq4(vec![4_200_000_001, 300])],
    );
    assert_eq!(
        merged,
        vec![seq4(vec![100, 200]), seq4(vec![4_200_000_001, 300])]
    );
    // AS4_PATH longer than AS_PATH: ignored.
    let merged = merge_as4_path(&[seq2(vec![100])], &[seq4(vec![1, 2])]);
    assert_eq!(merged, vec![seq4(vec![100])]);
}

#[test]
fn truncations_and_bit_flips_of_fixtures_never_panic() {
    let mut samples = vec![
        encode(&full_v4_update(false)).expect("encode"),
        encode(&full_v4_update(true)).expect("encode"),
        encode_for_peer(&BgpMessage::Update(as4_update()), false).expect("encode"),
        encode(&open(65001, vec![BgpCapability::RouteRefresh])).expect("encode"),
    ];
    samples.push(header(19, 4));
    for s in samples {
        for cut in 0..s.len() {
            fuzz_decode_roundtrip(&s[..cut]);
        }
        for i in HEADER_LEN..s.len() {
            for bit in 0..8 {
                let mut m = s.clone();
                m[i] ^= 1 << bit;
                fuzz_decode_roundtrip(&m);
            }
        }
    }
}

/// Writes the seed corpus for the fuzzer: `TRELLIS_WRITE_FUZZ_SEEDS=1 cargo test ... seeds`.
#[test]
fn write_fuzz_seeds() {
    if std::env::var_os("TRELLIS_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut seeds = vec![
        ("keepalive", header(19, 4)),
        (
            "update-v4-as2",
            encode(&full_v4_update(false)).expect("encode"),
        ),
        (
            "update-v4-as4",
            encode(&full_v4_update(true)).expect("encode"),
        ),
        (
            "update-as-trans",
            encode_for_peer(&BgpMessage::Update(as4_update()), false).expect("encode"),
        ),
        (
            "open",
            encode(&open(
                AS_TRANS,
                vec![
                    BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                        AddressType::Ipv6Unicast,
                    )),
                    BgpCapability::FourOctetAs(FourOctetAsCapability::new(4_200_000_001)),
                    BgpCapability::RouteRefresh,
                    BgpCapability::GracefulRestartCapability(GracefulRestartCapability::new(
                        false,
                        false,
                        120,
                        vec![GracefulRestartAddressFamily::new(
                            true,
                            AddressType::Ipv4Unicast,
                        )],
                    )),
                ],
            ))
            .expect("encode"),
        ),
    ];
    let mut eor = header(29, 2);
    eor.extend_from_slice(&[0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
    seeds.push(("eor-v6", eor));
    let mut notif = header(21, 3);
    notif.extend_from_slice(&[6, 2]);
    seeds.push(("notification", notif));
    let mut rr = header(23, 5);
    rr.extend_from_slice(&[0, 1, 0, 1]);
    seeds.push(("route-refresh", rr));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write");
    }
}

#[test]
fn source_as_extended_community_keeps_its_sub_type() {
    use netgauze_bgp_pkt::community::{
        ExtendedCommunity, TransitiveFourOctetExtendedCommunity as Four,
    };
    use netgauze_bgp_pkt::path_attribute::ExtendedCommunities;
    let source_as = ExtendedCommunity::TransitiveFourOctet(Four::SourceAs {
        global_admin: 4_200_000_001,
        local_admin: 7,
    });
    let msg = BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![pa(
            true,
            true,
            PathAttributeValue::ExtendedCommunities(ExtendedCommunities::new(vec![source_as])),
        )],
        vec![],
    ));
    let bytes = encode(&msg).expect("encode");
    // RFC 5668: type 0x02 (transitive four-octet AS-specific), RFC 6514 sub-type 0x09.
    let wire = [0xc0, 16, 8, 0x02, 0x09, 0xfa, 0x56, 0xea, 0x01, 0, 7];
    assert!(bytes.windows(wire.len()).any(|w| w == wire), "{bytes:02x?}");
    let decoded = decoder(true, true).decode(&bytes).expect("decode").message;
    assert_eq!(encode(&decoded).expect("encode"), bytes);
}
