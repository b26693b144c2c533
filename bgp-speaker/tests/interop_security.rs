//! Session security against the real daemons (root, network namespaces): TCP MD5
//! signatures (RFC 2385) with BIRD and FRR, GTSM (RFC 5082) with BIRD, and eBGP multihop
//! through a router namespace. Failures are shown by the kernel's own counters
//! (/proc/net/netstat of the namespace), not only by a session that did not come up.

mod peers;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use peers::trellis::{trellis_peer, TrellisNode};
use peers::{ip, net, ok, BgpPeer, Bird, Family, Frr, Neighbor, Ns, PeerConfig as DaemonConfig};
use trellis_bgp_speaker::fsm::State;
use trellis_bgp_speaker::speaker::{SpeakerConfig, TtlMode};

const T: Duration = Duration::from_secs(20);
/// How long a session that must not come up is watched.
const REFUSED_FOR: Duration = Duration::from_secs(8);
const TRELLIS_AS: u32 = 64512;
const PASSWORD: &str = "s3cret-md5";

/// A daemon at `addr` of AS `asn` with the one neighbor `n`, originating `prefix`.
fn one_neighbor(asn: u32, addr: &str, n: Neighbor, prefix: &str) -> DaemonConfig {
    DaemonConfig::new(asn, addr.parse().unwrap())
        .neighbor(n)
        .originate(&[prefix])
}

fn start_trellis(ns: &Ns, router_id: Ipv4Addr) -> TrellisNode {
    let mut cfg = SpeakerConfig::new(TRELLIS_AS, router_id);
    cfg.listen = Some(SocketAddr::new(ip("::"), 179));
    cfg.hold_time = 9;
    cfg.connect_retry = Duration::from_secs(1);
    let node = TrellisNode::start(ns, cfg);
    node.speaker().originate(net("10.244.1.0/26")).unwrap();
    node
}

/// Trellis (10.0.1.1, fd00:1::1) and a namespace for BIRD (10.0.1.2, fd00:1::2) on one link.
fn trellis_and_bird() -> (tempfile::TempDir, Ns, Ns, TrellisNode) {
    peers::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, nb) = (Ns::new("trl"), Ns::new("bird"));
    ok(Ns::link(
        &nt,
        &nb,
        &["10.0.1.1/24", "fd00:1::1/64"],
        &["10.0.1.2/24", "fd00:1::2/64"],
    ));
    let node = start_trellis(&nt, Ipv4Addr::new(10, 0, 1, 1));
    (tmp, nt, nb, node)
}

/// BIRD of AS 65001 at 10.0.1.2 and fd00:1::2 (see [`trellis_and_bird`]) originating
/// 10.1.1.0/26, its neighbors trellis over IPv4 and IPv6, each as `with` makes it.
fn start_bird(ns: &Ns, tmp: &tempfile::TempDir, with: impl Fn(Neighbor) -> Neighbor) -> Bird {
    let cfg = DaemonConfig::new(65001, Ipv4Addr::new(10, 0, 1, 2))
        .neighbor(with(Neighbor::new(ip("10.0.1.1"), TRELLIS_AS)))
        .neighbor(with(Neighbor::new(ip("fd00:1::1"), TRELLIS_AS)))
        .originate(&["10.1.1.0/26"]);
    ok(Bird::start(ns, &cfg, tmp.path()))
}

fn state_of(node: &TrellisNode, peer: &str) -> Option<State> {
    node.status()
        .into_iter()
        .find(|s| s.addr == ip(peer))
        .map(|s| s.state)
}

/// Both sides agree the session is up.
fn assert_established(node: &TrellisNode, d: &dyn BgpPeer, peer: &str, ours: &str) {
    ok(d.wait_established(ip(ours), T));
    let up = peers::wait_until(T, || state_of(node, peer) == Some(State::Established));
    assert!(up, "trellis: {:#?}", node.status());
}

/// Both sides agree the session is up and each learned the other's prefix.
fn assert_exchanges_routes(
    node: &TrellisNode,
    d: &dyn BgpPeer,
    peer: &str,
    ours: &str,
    theirs: &str,
) {
    assert_established(node, d, peer, ours);
    if let Err(e) = d.wait_routes(Family::Ipv4, T, &|r| {
        r.iter().any(|r| r.prefix == net("10.244.1.0/26"))
    }) {
        panic!("{e}\ntrellis: {:#?}\n{:#?}", node.status(), node.routes());
    }
    node.wait_routes(&[net(theirs)], &format!("{} over {peer}", d.kind()));
}

/// Watches for [`REFUSED_FOR`]: neither side may reach Established.
fn assert_never_established(node: &TrellisNode, d: &dyn BgpPeer, peer: &str, ours: &str) {
    let up = peers::wait_until(REFUSED_FOR, || {
        d.established(ip(ours)) || state_of(node, peer) == Some(State::Established)
    });
    assert!(
        !up,
        "session with {peer} came up; {} says {}; trellis {:#?}",
        d.kind(),
        d.session_state(ip(ours)),
        node.status()
    );
}

fn counter(ns: &Ns, name: &str) -> u64 {
    ok(ns.tcp_ext_counter(name))
}

#[test]
fn md5_with_the_right_password_bird_and_frr_establish_and_exchange_routes() {
    let (tmp, nt, nb, node) = trellis_and_bird();
    let nf = Ns::new("frr");
    ok(Ns::link(&nt, &nf, &["10.0.2.1/24"], &["10.0.2.2/24"]));
    for (addr, asn) in [
        ("10.0.1.2", 65001),
        ("fd00:1::2", 65001),
        ("10.0.2.2", 65002),
    ] {
        let mut p = trellis_peer(addr, asn);
        p.password = Some(PASSWORD.into());
        node.speaker().add_peer(p).unwrap();
    }
    let bird = start_bird(&nb, &tmp, |n| n.md5(PASSWORD));
    let frr = ok(Frr::start(
        &nf,
        &one_neighbor(
            65002,
            "10.0.2.2",
            Neighbor::new(ip("10.0.2.1"), TRELLIS_AS).md5(PASSWORD),
            "10.1.2.0/26",
        ),
        tmp.path(),
    ));
    assert_exchanges_routes(&node, &bird, "10.0.1.2", "10.0.1.1", "10.1.1.0/26");
    assert_exchanges_routes(&node, &frr, "10.0.2.2", "10.0.2.1", "10.1.2.0/26");
    assert_established(&node, &bird, "fd00:1::2", "fd00:1::1");
    // Signed both ways: no segment went unsigned or failed verification.
    for ns in [&nt, &nb, &nf] {
        for c in ["TCPMD5Failure", "TCPMD5NotFound", "TCPMD5Unexpected"] {
            assert_eq!(counter(ns, c), 0, "{c} in {}", ns.name());
        }
    }
    drop(node);
}

#[test]
fn md5_with_a_wrong_password_bird_never_establishes_and_the_kernels_drop_the_segments() {
    let (tmp, nt, nb, node) = trellis_and_bird();
    let mut p = trellis_peer("10.0.1.2", 65001);
    p.password = Some(PASSWORD.into());
    node.speaker().add_peer(p).unwrap();
    let bird = start_bird(&nb, &tmp, |n| n.md5("not-the-password"));
    assert_never_established(&node, &bird, "10.0.1.2", "10.0.1.1");
    // Both connect: each kernel drops the other's SYNs, signed with the wrong key
    // (our listener's key for BIRD, BIRD's for us).
    for ns in [&nt, &nb] {
        assert!(
            counter(ns, "TCPMD5Failure") > 0,
            "no TCPMD5Failure in {}: the segments were not signed or not checked",
            ns.name()
        );
    }
    assert!(node.routes().iter().all(|r| r.local));
    drop(node);
}

#[test]
fn md5_password_longer_than_80_bytes_is_refused_naming_the_peer() {
    // No sockets: the check is in Speaker::add_peer, before the owner task.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = SpeakerConfig::new(TRELLIS_AS, Ipv4Addr::new(10, 0, 0, 1));
        cfg.listen = None;
        let (speaker, _routes) = trellis_bgp_speaker::speaker::Speaker::start(cfg)
            .await
            .unwrap();
        let mut p = trellis_peer("192.0.2.7", 65001);
        p.password = Some("x".repeat(81));
        let e = speaker.add_peer(p).unwrap_err().to_string();
        assert!(e.contains("192.0.2.7") && e.contains("81"), "{e}");
        let mut p = trellis_peer("192.0.2.7", 65001);
        p.password = Some("x".repeat(80));
        speaker.add_peer(p).unwrap();
    });
}

#[test]
fn gtsm_with_bird_establishes_and_our_default_ttl_1_is_dropped_by_its_min_ttl() {
    let (tmp, nt, nb, node) = trellis_and_bird();
    let nb2 = Ns::new("bird2");
    ok(Ns::link(&nt, &nb2, &["10.0.3.1/24"], &["10.0.3.2/24"]));
    for addr in ["10.0.1.2", "fd00:1::2"] {
        let mut p = trellis_peer(addr, 65001);
        p.ttl = TtlMode::Security { hops: 1 };
        node.speaker().add_peer(p).unwrap();
    }
    // The same BIRD configuration against our single-hop default (TTL 1).
    node.speaker()
        .add_peer(trellis_peer("10.0.3.2", 65003))
        .unwrap();
    let bird = start_bird(&nb, &tmp, |n| n.ttl_security());
    let bird2 = ok(Bird::start(
        &nb2,
        &one_neighbor(
            65003,
            "10.0.3.2",
            Neighbor::new(ip("10.0.3.1"), TRELLIS_AS).ttl_security(),
            "10.1.3.0/26",
        ),
        tmp.path(),
    ));
    assert_exchanges_routes(&node, &bird, "10.0.1.2", "10.0.1.1", "10.1.1.0/26");
    // IPv6: IPV6_UNICAST_HOPS 255 and IPV6_MINHOPCOUNT.
    assert_established(&node, &bird, "fd00:1::2", "fd00:1::1");
    // BIRD sets its minimum TTL just after connect() or accept(), so on a busy machine an
    // OPEN of ours can get in first (seen here), and BIRD's OPEN and KEEPALIVE then bring
    // our side to Established until the hold timer. Our KEEPALIVE, sent after BIRD's OPEN,
    // never gets through: BIRD never reaches Established, and its kernel counts the drops.
    let up = peers::wait_until(REFUSED_FOR, || bird2.established(ip("10.0.3.1")));
    assert!(!up, "{}", bird2.session_state(ip("10.0.3.1")));
    assert!(
        counter(&nb2, "TCPMinTTLDrop") > 0,
        "BIRD's kernel never dropped a TTL-1 segment of ours"
    );
    // No assertion on `nb`'s own drop counter: segments our kernel sends outside a socket
    // with our TTL (an RST for a connection already closed, say, after a collision) leave
    // with the namespace's default TTL and BIRD rightly drops them. The GTSM sessions above
    // are Established and carried routes, which is the claim. (8 drops in one CI run under
    // load, 0 in the others; which segments they were was not captured.)
    drop(node);
}

#[test]
fn ebgp_multihop_2_reaches_bird_behind_a_router_and_the_single_hop_default_does_not() {
    peers::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, nr, nb) = (Ns::new("trl"), Ns::new("rtr"), Ns::new("bird"));
    ok(Ns::link(&nt, &nr, &["10.0.5.1/24"], &["10.0.5.2/24"]));
    ok(Ns::link(&nr, &nb, &["10.0.6.1/24"], &["10.0.6.2/24"]));
    ok(nr.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    ok(nt.exec(&["ip", "route", "add", "10.0.6.0/24", "via", "10.0.5.2"]));
    ok(nb.exec(&["ip", "route", "add", "10.0.5.0/24", "via", "10.0.6.1"]));
    let node = start_trellis(&nt, Ipv4Addr::new(10, 0, 5, 1));
    let bird = ok(Bird::start(
        &nb,
        &one_neighbor(
            65001,
            "10.0.6.2",
            Neighbor::new(ip("10.0.5.1"), TRELLIS_AS).multihop_ttl(2),
            "10.1.6.0/26",
        ),
        tmp.path(),
    ));

    // Single-hop default: our TTL-1 packets expire at the router.
    let expired_before = ok(nr.exec(&["cat", "/proc/net/snmp"]));
    node.speaker()
        .add_peer(trellis_peer("10.0.6.2", 65001))
        .unwrap();
    assert_never_established(&node, &bird, "10.0.6.2", "10.0.5.1");
    let expired_after = ok(nr.exec(&["cat", "/proc/net/snmp"]));
    assert!(
        ip_in_hdr_errors(&expired_after) > ip_in_hdr_errors(&expired_before),
        "the router saw no TTL-expired packet:\n{expired_after}"
    );

    // The same peer with multihop 2 (a changed configuration restarts the session).
    let mut p = trellis_peer("10.0.6.2", 65001);
    p.ttl = TtlMode::Multihop(2);
    node.speaker().add_peer(p).unwrap();
    ok(bird.wait_established(ip("10.0.5.1"), T));
    node.wait_routes(&[net("10.1.6.0/26")], "BIRD's route over multihop");
    assert_eq!(state_of(&node, "10.0.6.2"), Some(State::Established));
    drop(node);
}

/// `Ip: InHdrErrors` of /proc/net/snmp (TTL expiry while forwarding counts there).
fn ip_in_hdr_errors(snmp: &str) -> u64 {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(k, _)| *k == "InHdrErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
