use std::net::Ipv6Addr;

use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::path_attribute::{As2Aggregator, UnknownAttribute};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::WritablePdu;

use super::*;

fn both() -> BTreeSet<Family> {
    BTreeSet::from(Family::ALL)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn attrs(next_hop: &str) -> Attrs {
    Attrs {
        origin: Origin::Igp,
        as_path: AsPath(vec![Segment::Sequence(vec![64512, 4_200_000_000])]),
        next_hop: next_hop.parse().unwrap(),
        link_local_next_hop: None,
        med: Some(5),
        local_pref: Some(200),
        atomic_aggregate: true,
        aggregator: Some((64512, Ipv4Addr::new(10, 0, 0, 1))),
        communities: vec![0xfde8_0001],
        large_communities: vec![(64512, 1, 2)],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 9)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 7)],
    }
}

fn ok((r, e): (RouteUpdate, Option<UpdateError>)) -> RouteUpdate {
    assert_eq!(e, None);
    r
}

fn encoded_len(u: &BgpUpdateMessage) -> usize {
    let mut buf = Vec::new();
    BgpMessage::Update(u.clone()).write(&mut buf).unwrap();
    buf.len()
}

#[test]
fn ipv4_announcement_round_trips_with_every_attribute() {
    let a = attrs("10.0.0.1");
    let prefixes = vec![net("10.244.1.0/26"), net("10.244.2.64/26")];
    let msgs = announce(Family::Ipv4Unicast, &a, &prefixes, true);
    assert_eq!(msgs.len(), 1);
    let r = ok(from_wire(&msgs[0], &both()));
    assert_eq!(r.announced, prefixes);
    assert_eq!(r.attrs, Some(a));
    assert!(r.withdrawn.is_empty() && r.end_of_rib.is_none());
}

#[test]
fn ipv6_announcement_carries_global_and_link_local_next_hops() {
    let mut a = attrs("fd00::1");
    a.link_local_next_hop = Some("fe80::1".parse::<Ipv6Addr>().unwrap());
    let prefixes = vec![net("fd00:10:244::/122")];
    let msgs = announce(Family::Ipv6Unicast, &a, &prefixes, true);
    assert!(msgs[0].nlri().is_empty(), "IPv6 goes in MP_REACH");
    let r = ok(from_wire(&msgs[0], &both()));
    assert_eq!(r.announced, prefixes);
    assert_eq!(r.attrs, Some(a));
}

/// A peer without 4-octet ASNs gets AS_TRANS in AS_PATH and AGGREGATOR, and the real
/// values in AS4_PATH and AS4_AGGREGATOR (RFC 6793 4.2.2); reading that back restores them.
#[test]
fn a_peer_without_asn4_gets_as_trans_and_as4_path_and_we_reconstruct_it() {
    let mut a = attrs("10.0.0.1");
    // A 4-octet aggregator: AGGREGATOR carries AS_TRANS, so AS4_PATH counts (4.2.3).
    a.aggregator = Some((4_200_000_001, Ipv4Addr::new(10, 0, 0, 1)));
    let msgs = announce(Family::Ipv4Unicast, &a, &[net("10.1.0.0/24")], false);
    let pa = msgs[0].path_attributes();
    assert!(pa.iter().any(|p| matches!(
        p.value(),
        PathAttributeValue::AsPath(WireAsPath::As2PathSegments(s))
            if s[0].as_numbers() == [64512, AS_TRANS]
    )));
    assert!(pa.iter().any(|p| matches!(
        p.value(),
        PathAttributeValue::Aggregator(Aggregator::As2Aggregator(g)) if *g.asn() == AS_TRANS
    )));
    assert!(pa
        .iter()
        .any(|p| matches!(p.value(), PathAttributeValue::As4Path(_))));
    let r = ok(from_wire(&msgs[0], &both()));
    assert_eq!(r.attrs, Some(a));
}

/// An UPDATE as a 2-octet peer sends it: AS_PATH [64512, AS_TRANS], AS4_PATH
/// [4200000000], and the given 2-octet AGGREGATOR ASN with AS4_AGGREGATOR 4200000001.
fn from_old_speaker(aggregator_asn: u16) -> BgpUpdateMessage {
    let mut a = attrs("10.0.0.1");
    a.aggregator = None;
    let u = announce(Family::Ipv4Unicast, &a, &[net("10.1.0.0/24")], false).remove(0);
    let mut pa = u.path_attributes().to_vec();
    let origin = Ipv4Addr::new(10, 0, 0, 1);
    let mut raw = 4_200_000_001u32.to_be_bytes().to_vec();
    raw.extend_from_slice(&origin.octets());
    for value in [
        PathAttributeValue::Aggregator(Aggregator::As2Aggregator(As2Aggregator::new(
            aggregator_asn,
            origin,
        ))),
        PathAttributeValue::UnknownAttribute(UnknownAttribute::new(
            crate::revised_errors::code::AS4_AGGREGATOR,
            raw,
        )),
    ] {
        pa.push(PathAttribute::from(true, true, false, false, value).unwrap());
    }
    BgpUpdateMessage::new(vec![], pa, u.nlri().to_vec())
}

#[test]
fn rfc6793_4_2_3_an_aggregator_other_than_as_trans_voids_as4_path_and_as4_aggregator() {
    let r = ok(from_wire(&from_old_speaker(64999), &both()));
    let attrs = r.attrs.unwrap();
    assert_eq!(
        attrs.as_path,
        AsPath(vec![Segment::Sequence(vec![64512, u32::from(AS_TRANS)])])
    );
    assert_eq!(attrs.aggregator, Some((64999, Ipv4Addr::new(10, 0, 0, 1))));
}

#[test]
fn rfc6793_4_2_3_an_as_trans_aggregator_takes_as4_aggregator_and_as4_path() {
    let r = ok(from_wire(&from_old_speaker(AS_TRANS), &both()));
    let attrs = r.attrs.unwrap();
    assert_eq!(
        attrs.as_path,
        AsPath(vec![Segment::Sequence(vec![64512, 4_200_000_000])])
    );
    assert_eq!(
        attrs.aggregator,
        Some((4_200_000_001, Ipv4Addr::new(10, 0, 0, 1)))
    );
}

#[test]
fn withdrawals_and_end_of_rib_for_both_families() {
    let w4 = withdraw(Family::Ipv4Unicast, &[net("10.244.1.0/26")]);
    let r = ok(from_wire(&w4[0], &both()));
    assert_eq!(r.withdrawn, vec![net("10.244.1.0/26")]);
    let w6 = withdraw(Family::Ipv6Unicast, &[net("fd00::/64")]);
    let r = ok(from_wire(&w6[0], &both()));
    assert_eq!(r.withdrawn, vec![net("fd00::/64")]);
    for f in Family::ALL {
        let r = ok(from_wire(&end_of_rib(f), &both()));
        assert_eq!(r.end_of_rib, Some(f));
    }
}

#[test]
fn nlri_of_families_not_negotiated_are_ignored() {
    let msgs = announce(
        Family::Ipv6Unicast,
        &attrs("fd00::1"),
        &[net("fd00::/64")],
        true,
    );
    let only_v4 = BTreeSet::from([Family::Ipv4Unicast]);
    let r = ok(from_wire(&msgs[0], &only_v4));
    assert!(r.announced.is_empty());
}

#[test]
fn missing_mandatory_attributes_withdraw_the_announced_prefixes() {
    // RFC 7606 3.d.
    let nlri = v4_nlri(&[net("10.9.0.0/24")]);
    let u = BgpUpdateMessage::new(vec![], vec![], nlri);
    let (r, e) = from_wire(&u, &both());
    let e = e.expect("an error");
    assert_eq!(
        e,
        UpdateError::MissingAttribute {
            attribute: "AS_PATH",
            prefixes: 1
        }
    );
    assert_eq!(r.withdrawn, vec![net("10.9.0.0/24")]);
    assert!(r.announced.is_empty() && r.attrs.is_none());
    // With ORIGIN and AS_PATH but no NEXT_HOP.
    let mut pa = common_attributes(&attrs("10.0.0.1"));
    pa.retain(|p| !matches!(p.value(), PathAttributeValue::NextHop(_)));
    let u = BgpUpdateMessage::new(vec![], pa, v4_nlri(&[net("10.9.0.0/24")]));
    let (_, e) = from_wire(&u, &both());
    let e = e.expect("an error");
    assert!(e.to_string().contains("NEXT_HOP"), "{e}");
}

#[test]
fn many_prefixes_are_split_into_messages_within_4096_bytes() {
    let a = attrs("10.0.0.1");
    let v4: Vec<IpNet> = (0..5000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 6)), 26).unwrap())
        })
        .collect();
    let msgs = announce(Family::Ipv4Unicast, &a, &v4, true);
    assert!(msgs.len() > 1);
    let total: usize = msgs.iter().map(|m| m.nlri().len()).sum();
    assert_eq!(total, 5000);
    assert!(msgs.iter().all(|m| encoded_len(m) <= 4096));
    let v6: Vec<IpNet> = (0..1000u128)
        .map(|i| {
            IpNet::V6(
                ipnet::Ipv6Net::new(Ipv6Addr::from((0xfd00u128 << 112) + (i << 6)), 122).unwrap(),
            )
        })
        .collect();
    let msgs = announce(Family::Ipv6Unicast, &attrs("fd00::1"), &v6, true);
    assert!(msgs.iter().all(|m| encoded_len(m) <= 4096));
    let w = withdraw(Family::Ipv6Unicast, &v6);
    assert!(w.iter().all(|m| encoded_len(m) <= 4096));
    let w = withdraw(Family::Ipv4Unicast, &v4);
    assert!(w.iter().all(|m| encoded_len(m) <= 4096));
}

#[test]
fn treat_as_withdraw_moves_announcements_to_withdrawals() {
    let r = RouteUpdate {
        withdrawn: vec![net("10.0.1.0/24")],
        announced: vec![net("10.0.2.0/24")],
        attrs: Some(attrs("10.0.0.1")),
        end_of_rib: None,
    }
    .treat_as_withdraw();
    assert_eq!(r.withdrawn, vec![net("10.0.1.0/24"), net("10.0.2.0/24")]);
    assert!(r.announced.is_empty() && r.attrs.is_none());
}
