use super::*;

fn ours() -> OpenConfig {
    OpenConfig {
        local_asn: 64512,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        peer_asn: 64512,
        hold_time: 90,
        keepalive: None,
        families: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
        graceful_restart: Some(LocalGracefulRestart {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: true,
        }),
    }
}

/// A peer's OPEN built by the same code, with its own identity.
fn theirs(asn: u32, id: [u8; 4], hold: u16, families: &[Family]) -> BgpOpenMessage {
    OpenConfig {
        local_asn: asn,
        router_id: Ipv4Addr::from(id),
        peer_asn: 0,
        hold_time: hold,
        keepalive: None,
        families: families.iter().copied().collect(),
        graceful_restart: None,
    }
    .message()
}

fn notification_of(r: Result<Negotiated, OpenError>) -> BgpNotificationMessage {
    r.expect_err("OPEN must be refused").notification
}

#[test]
fn agrees_on_the_smaller_hold_time_and_the_common_families() {
    let n = ours()
        .negotiate(&theirs(64512, [10, 0, 0, 2], 30, &[Family::Ipv4Unicast]))
        .unwrap();
    assert_eq!(n.hold_time, 30);
    assert_eq!(n.keepalive, 10);
    assert_eq!(n.families, BTreeSet::from([Family::Ipv4Unicast]));
    assert!(n.asn4 && n.route_refresh && n.local_graceful_restart);
    assert!(n.is_ibgp(64512));
    assert_eq!(n.peer_graceful_restart, None);
}

#[test]
fn a_configured_keepalive_is_used_up_to_a_third_of_the_negotiated_hold_time() {
    let peer = theirs(64512, [10, 0, 0, 2], 90, &Family::ALL);
    let mut c = ours();
    c.keepalive = Some(5);
    assert_eq!(c.negotiate(&peer).unwrap().keepalive, 5);
    // 60 s keepalives against a 90 s hold time would let the peer's timer run out.
    c.keepalive = Some(60);
    assert_eq!(c.negotiate(&peer).unwrap().keepalive, 30);
    let peer = theirs(64512, [10, 0, 0, 2], 0, &Family::ALL);
    assert_eq!(c.negotiate(&peer).unwrap().keepalive, 0);
}

#[test]
fn hold_time_zero_means_no_keepalives() {
    let n = ours()
        .negotiate(&theirs(64512, [10, 0, 0, 2], 0, &Family::ALL))
        .unwrap();
    assert_eq!((n.hold_time, n.keepalive), (0, 0));
}

#[test]
fn a_four_octet_asn_travels_as_as_trans_plus_the_capability() {
    let mut c = ours();
    c.local_asn = 4_200_000_000;
    let open = c.message();
    assert_eq!(open.my_as(), AS_TRANS);
    assert_eq!(open.my_asn4(), 4_200_000_000);
    let mut peer = ours();
    peer.peer_asn = 4_200_000_000;
    peer.router_id = Ipv4Addr::new(10, 0, 0, 9);
    assert_eq!(peer.negotiate(&open).unwrap().peer_asn, 4_200_000_000);
}

#[test]
fn a_peer_without_multiprotocol_capability_carries_ipv4_only() {
    let open = BgpOpenMessage::new(64512, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]);
    let n = ours().negotiate(&open).unwrap();
    assert_eq!(n.families, BTreeSet::from([Family::Ipv4Unicast]));
    assert!(!n.asn4 && !n.route_refresh);
}

#[test]
fn wrong_peer_as_is_bad_peer_as() {
    let n = notification_of(ours().negotiate(&theirs(64513, [10, 0, 0, 2], 90, &Family::ALL)));
    assert!(matches!(
        n,
        BgpNotificationMessage::OpenMessageError(OpenMessageError::BadPeerAs { .. })
    ));
}

#[test]
fn ibgp_peer_with_our_identifier_or_zero_is_bad_bgp_identifier() {
    for id in [[10, 0, 0, 1], [0, 0, 0, 0]] {
        let n = notification_of(ours().negotiate(&theirs(64512, id, 90, &Family::ALL)));
        assert!(matches!(
            n,
            BgpNotificationMessage::OpenMessageError(OpenMessageError::BadBgpIdentifier { .. })
        ));
    }
    // eBGP may share the identifier (RFC 6286 2.1).
    let mut c = ours();
    c.peer_asn = 65001;
    assert!(c
        .negotiate(&theirs(65001, [10, 0, 0, 1], 90, &Family::ALL))
        .is_ok());
}

#[test]
fn hold_time_one_or_two_is_unacceptable() {
    for hold in [1, 2] {
        let n =
            notification_of(ours().negotiate(&theirs(64512, [10, 0, 0, 2], hold, &Family::ALL)));
        assert_eq!(
            n,
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnacceptableHoldTime {
                value: hold.to_be_bytes().into()
            })
        );
    }
}

#[test]
fn version_other_than_four_names_the_supported_version() {
    // The netgauze type fixes version 4 at construction; a decoded OPEN can carry any version.
    let mut json = serde_json::to_value(theirs(64512, [10, 0, 0, 2], 90, &Family::ALL)).unwrap();
    json["version"] = 3.into();
    let open: BgpOpenMessage = serde_json::from_value(json).unwrap();
    let e = ours().negotiate(&open).unwrap_err();
    assert!(e.reason.contains("version 3"), "{e}");
    assert_eq!(
        e.notification,
        BgpNotificationMessage::OpenMessageError(OpenMessageError::UnsupportedVersionNumber {
            value: vec![0, 4].into()
        })
    );
}

#[test]
fn no_common_family_is_refused() {
    let mut c = ours();
    c.families = BTreeSet::from([Family::Ipv6Unicast]);
    let open = BgpOpenMessage::new(64512, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]);
    let e = c.negotiate(&open).unwrap_err();
    assert!(e.reason.contains("no address family in common"), "{e}");
}

#[test]
fn graceful_restart_capability_round_trips() {
    let open = ours().message();
    let mut peer = ours();
    peer.router_id = Ipv4Addr::new(10, 0, 0, 2);
    let gr = peer
        .negotiate(&open)
        .unwrap()
        .peer_graceful_restart
        .unwrap();
    assert_eq!(gr.restart_time, 120);
    assert!(!gr.restarting);
    assert_eq!(
        gr.families,
        BTreeMap::from([(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, true)])
    );
}
