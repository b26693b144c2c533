use super::*;
use crate::meta::{Object, ObjectMeta};

fn peer(spec: BgpPeerSpec) -> BgpPeer {
    Object::new(ObjectMeta::named("tor-a"), spec)
}

/// A valid global peer to vary from.
fn base_peer() -> BgpPeerSpec {
    BgpPeerSpec {
        peer_ip: "192.0.2.1".into(),
        as_number: Some(64600),
        ..Default::default()
    }
}

fn peer_errors(spec: BgpPeerSpec) -> ValidationErrors {
    peer(spec).validate().err().unwrap_or_default()
}

fn dur(s: &str) -> Option<Duration> {
    Some(s.parse().unwrap())
}

#[test]
fn peer_defaults_and_key() {
    let p = peer(base_peer());
    p.validate().unwrap();
    assert_eq!(p.key(), "bgppeers/tor-a");
    let s = &p.spec;
    assert!(s.is_global());
    assert_eq!(
        s.peer_address(),
        Some(PeerAddress {
            ip: "192.0.2.1".parse().unwrap(),
            port: None
        })
    );
    assert_eq!(s.hold_time(), StdDuration::from_secs(90));
    assert_eq!(s.keepalive_time(), StdDuration::from_secs(30));
    assert_eq!(s.max_restart_time(), StdDuration::from_secs(120));
    assert_eq!(s.source_address(), SourceAddress::UseNodeIp);
    assert_eq!(s.num_allowed_local_as_numbers(), 0);
    let zero_hold = BgpPeerSpec {
        hold_time: dur("0s"),
        ..base_peer()
    };
    assert_eq!(zero_hold.keepalive_time(), StdDuration::ZERO);
}

#[test]
fn peer_ip_forms() {
    let ok = |s: &str| PeerAddress::parse(s).unwrap();
    assert_eq!(ok("10.0.0.1:1179").port, Some(1179));
    assert_eq!(
        ok("[fd00::1]:179"),
        PeerAddress {
            ip: "fd00::1".parse().unwrap(),
            port: Some(179)
        }
    );
    assert_eq!(ok("fd00::1").port, None);
    for bad in [
        "10.0.0.1:0",
        "10.0.0.1:70000",
        "fd00::1:179x",
        "[10.0.0.1]:179",
        "host:179",
        "[fd00::1]",
    ] {
        let e = peer_errors(BgpPeerSpec {
            peer_ip: bad.into(),
            ..base_peer()
        });
        assert!(e.mentions("spec.peerIP"), "{bad}: {e}");
    }
    for not_unicast in ["0.0.0.0", "224.0.0.5", "::"] {
        let e = peer_errors(BgpPeerSpec {
            peer_ip: not_unicast.into(),
            ..base_peer()
        });
        assert!(e.mentions("spec.peerIP"), "{not_unicast}: {e}");
    }
}

#[test]
fn peer_ip_xor_peer_selector() {
    let e = peer_errors(BgpPeerSpec {
        peer_selector: "route-reflector == 'true'".into(),
        ..base_peer()
    });
    assert!(e.mentions("spec.peerIP"), "{e}");
    let e = peer_errors(BgpPeerSpec {
        peer_ip: String::new(),
        ..base_peer()
    });
    assert!(e.mentions("spec.peerIP"), "{e}");
    let rr = BgpPeerSpec {
        peer_selector: "has(route-reflector)".into(),
        ..Default::default()
    };
    assert!(peer_errors(rr).is_empty());
}

#[test]
fn node_xor_node_selector() {
    let e = peer_errors(BgpPeerSpec {
        node: "worker-1".into(),
        node_selector: "rack == 'a'".into(),
        ..base_peer()
    });
    assert!(e.mentions("spec.node"), "{e}");
    let e = peer_errors(BgpPeerSpec {
        node: "Worker_1".into(),
        ..base_peer()
    });
    assert!(e.mentions("spec.node"), "{e}");
    let one = BgpPeerSpec {
        node: "worker-1".into(),
        ..base_peer()
    };
    assert!(!one.is_global());
    assert!(peer_errors(one).is_empty());
}

#[test]
fn selectors_must_parse() {
    let e = peer_errors(BgpPeerSpec {
        node_selector: "rack == ".into(),
        ..base_peer()
    });
    assert!(e.mentions("spec.nodeSelector"), "{e}");
    let e = peer_errors(BgpPeerSpec {
        peer_ip: String::new(),
        as_number: None,
        peer_selector: "has(".into(),
        ..Default::default()
    });
    assert!(e.mentions("spec.peerSelector"), "{e}");
    let ok = BgpPeerSpec {
        node_selector: "rack == 'a' && has(bgp)".into(),
        ..base_peer()
    };
    assert!(peer_errors(ok).is_empty());
}

#[test]
fn peer_as_number_rules() {
    let e = peer_errors(BgpPeerSpec {
        as_number: Some(0),
        ..base_peer()
    });
    assert!(e.mentions("spec.asNumber"), "{e}");
    let e = peer_errors(BgpPeerSpec {
        as_number: None,
        ..base_peer()
    });
    assert!(e.mentions("spec.asNumber"), "required with peerIP: {e}");
    let e = peer_errors(BgpPeerSpec {
        peer_selector: "has(rr)".into(),
        as_number: Some(64512),
        ..Default::default()
    });
    assert!(
        e.mentions("spec.asNumber"),
        "forbidden with peerSelector: {e}"
    );
    assert!(peer_errors(BgpPeerSpec {
        as_number: Some(u32::MAX),
        ..base_peer()
    })
    .is_empty());
}

#[test]
fn password_is_exactly_one_source() {
    let pw = |file: Option<&str>, env: Option<&str>| BgpPeerSpec {
        password: Some(BgpPassword {
            file: file.map(Into::into),
            env: env.map(Into::into),
        }),
        ..base_peer()
    };
    assert!(peer_errors(pw(Some("/etc/trellis/bgp-password"), None)).is_empty());
    assert!(peer_errors(pw(None, Some("BGP_PASSWORD"))).is_empty());
    assert!(peer_errors(pw(Some("/x"), Some("X"))).mentions("spec.password"));
    assert!(peer_errors(pw(None, None)).mentions("spec.password"));
    assert!(peer_errors(pw(Some("relative/path"), None)).mentions("spec.password.file"));
    assert!(peer_errors(pw(None, Some("1BAD"))).mentions("spec.password.env"));
    assert!(peer_errors(pw(None, Some("BAD-NAME"))).mentions("spec.password.env"));
}

#[test]
fn hold_and_keepalive_follow_rfc_4271() {
    for ok in ["0s", "3s", "90s", "18h12m15s"] {
        let s = BgpPeerSpec {
            hold_time: dur(ok),
            keepalive_time: None,
            ..base_peer()
        };
        assert!(peer_errors(s).is_empty(), "{ok}");
    }
    for bad in ["1s", "2s", "18h12m16s", "3.5s"] {
        let e = peer_errors(BgpPeerSpec {
            hold_time: dur(bad),
            ..base_peer()
        });
        assert!(e.mentions("spec.holdTime"), "{bad}: {e}");
    }
    let e = peer_errors(BgpPeerSpec {
        hold_time: dur("0s"),
        keepalive_time: dur("10s"),
        ..base_peer()
    });
    assert!(e.mentions("spec.keepaliveTime"), "{e}");
    let e = peer_errors(BgpPeerSpec {
        hold_time: dur("9s"),
        keepalive_time: dur("9s"),
        ..base_peer()
    });
    assert!(e.mentions("spec.keepaliveTime"), "{e}");
    // Compared with the default hold time (90 s) when holdTime is unset.
    let e = peer_errors(BgpPeerSpec {
        keepalive_time: dur("2m"),
        ..base_peer()
    });
    assert!(e.mentions("spec.keepaliveTime"), "{e}");
    let e = peer_errors(BgpPeerSpec {
        keepalive_time: dur("500ms"),
        ..base_peer()
    });
    assert!(e.mentions("spec.keepaliveTime"), "{e}");
    let s = BgpPeerSpec {
        hold_time: dur("9s"),
        keepalive_time: dur("3s"),
        ..base_peer()
    };
    assert!(peer_errors(s.clone()).is_empty());
    assert_eq!(s.keepalive_time(), StdDuration::from_secs(3));
}

#[test]
fn restart_time_fits_12_bits() {
    assert!(peer_errors(BgpPeerSpec {
        max_restart_time: dur("1h8m15s"),
        ..base_peer()
    })
    .is_empty());
    let e = peer_errors(BgpPeerSpec {
        max_restart_time: dur("1h8m16s"),
        ..base_peer()
    });
    assert!(e.mentions("spec.maxRestartTime"), "{e}");
}

#[test]
fn ttl_security_hops() {
    assert!(peer_errors(BgpPeerSpec {
        ttl_security: Some(1),
        ..base_peer()
    })
    .is_empty());
    let e = peer_errors(BgpPeerSpec {
        ttl_security: Some(0),
        ..base_peer()
    });
    assert!(e.mentions("spec.ttlSecurity"), "{e}");
}
