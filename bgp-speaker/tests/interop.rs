//! Trellis's speaker against the real daemons (root, network namespaces): eBGP with BIRD 2,
//! iBGP with FRR, eBGP with GoBGP, each over IPv4 and IPv6. Every daemon learns the trellis
//! node's blocks, trellis learns theirs and installs them in its namespace's kernel table
//! under protocol 81.

mod peers;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use peers::trellis::{trellis_peer, TrellisNode};
use peers::{
    ip, net, ok, BgpPeer, Bird, Family, Frr, Gobgp, Neighbor, Ns, PeerConfig as DaemonConfig,
};
use trellis_bgp_speaker::speaker::{LocalRoute, SpeakerConfig};

const T: Duration = Duration::from_secs(20);
const TRELLIS_AS: u32 = 64512;

/// Waits until `d` has learned at least `want` (other routes may be there too).
fn wait_has(d: &dyn BgpPeer, family: Family, want: &[IpNet]) {
    ok(d.wait_routes(family, T, &|routes| {
        want.iter().all(|w| routes.iter().any(|r| r.prefix == *w))
    }));
}

#[test]
fn trellis_peers_with_bird_frr_and_gobgp_over_both_families() {
    peers::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, nb, nf, ng) = (
        Ns::new("trl"),
        Ns::new("bird"),
        Ns::new("frr"),
        Ns::new("gobgp"),
    );
    ok(Ns::link(
        &nt,
        &nb,
        &["10.0.1.1/24", "fd00:1::1/64"],
        &["10.0.1.2/24", "fd00:1::2/64"],
    ));
    ok(Ns::link(
        &nt,
        &nf,
        &["10.0.2.1/24", "fd00:2::1/64"],
        &["10.0.2.2/24", "fd00:2::2/64"],
    ));
    ok(Ns::link(
        &nt,
        &ng,
        &["10.0.3.1/24", "fd00:3::1/64"],
        &["10.0.3.2/24", "fd00:3::2/64"],
    ));

    let mut cfg = SpeakerConfig::new(TRELLIS_AS, Ipv4Addr::new(10, 0, 1, 1));
    cfg.listen = Some(SocketAddr::new(ip("::"), 179));
    cfg.hold_time = 9;
    cfg.connect_retry = Duration::from_secs(1);
    let node = TrellisNode::start(&nt, cfg);
    let s = node.speaker();
    for p in ["10.244.1.0/26", "fd00:244:1::/122"] {
        s.originate(net(p)).unwrap();
    }
    // A prefix with a standard and a large community (Calico's prefixAdvertisements).
    s.originate_with(
        net("10.244.5.0/26"),
        LocalRoute {
            communities: vec![64512 << 16 | 100],
            large_communities: vec![(64512, 1, 2)],
        },
    )
    .unwrap();
    // BIRD: eBGP AS 65001. FRR: iBGP. GoBGP: eBGP AS 65003.
    for (addr, asn) in [
        ("10.0.1.2", 65001),
        ("fd00:1::2", 65001),
        ("10.0.2.2", TRELLIS_AS),
        ("fd00:2::2", TRELLIS_AS),
        ("10.0.3.2", 65003),
        ("fd00:3::2", 65003),
    ] {
        s.add_peer(trellis_peer(addr, asn)).unwrap();
    }
    let bird = ok(Bird::start(
        &nb,
        &DaemonConfig::new(65001, Ipv4Addr::new(10, 0, 1, 2))
            .neighbor(Neighbor::new(ip("10.0.1.1"), TRELLIS_AS))
            .neighbor(Neighbor::new(ip("fd00:1::1"), TRELLIS_AS))
            .originate(&["10.1.1.0/26", "fd00:1:1::/122"]),
        tmp.path(),
    ));
    let frr = ok(Frr::start(
        &nf,
        &DaemonConfig::new(TRELLIS_AS, Ipv4Addr::new(10, 0, 2, 2))
            .neighbor(Neighbor::new(ip("10.0.2.1"), TRELLIS_AS))
            .neighbor(Neighbor::new(ip("fd00:2::1"), TRELLIS_AS))
            .originate(&["10.1.2.0/26", "fd00:1:2::/122"]),
        tmp.path(),
    ));
    let gobgp = ok(Gobgp::start(
        &ng,
        &DaemonConfig::new(65003, Ipv4Addr::new(10, 0, 3, 2))
            .neighbor(Neighbor::new(ip("10.0.3.1"), TRELLIS_AS))
            .neighbor(Neighbor::new(ip("fd00:3::1"), TRELLIS_AS))
            .originate(&["10.1.3.0/26", "fd00:1:3::/122"]),
        tmp.path(),
    ));

    // Each daemon learns the node's blocks, next hop = the trellis end of its link.
    let daemons: [(&dyn BgpPeer, &str, &str); 3] = [
        (&bird, "10.0.1.1", "fd00:1::1"),
        (&frr, "10.0.2.1", "fd00:2::1"),
        (&gobgp, "10.0.3.1", "fd00:3::1"),
    ];
    for (d, v4, v6) in daemons {
        ok(d.wait_established(ip(v4), T));
        ok(d.wait_established(ip(v6), T));
        wait_has(d, Family::Ipv4, &[net("10.244.1.0/26")]);
        wait_has(d, Family::Ipv6, &[net("fd00:244:1::/122")]);
        let r4 = ok(d.learned_routes(Family::Ipv4));
        let r = r4
            .iter()
            .find(|r| r.prefix == net("10.244.1.0/26"))
            .unwrap();
        assert_eq!(r.next_hop, ip(v4), "{} next hop", d.kind());
        let r6 = ok(d.learned_routes(Family::Ipv6));
        let r = r6
            .iter()
            .find(|r| r.prefix == net("fd00:244:1::/122"))
            .unwrap();
        assert_eq!(r.next_hop, ip(v6), "{} IPv6 next hop", d.kind());
    }
    // eBGP peers see our AS in the path; the iBGP peer sees an empty path.
    let bird_v4 = ok(bird.learned_routes(Family::Ipv4));
    assert_eq!(
        bird_v4
            .iter()
            .find(|r| r.prefix == net("10.244.1.0/26"))
            .unwrap()
            .as_path,
        vec![TRELLIS_AS]
    );
    let frr_v4 = ok(frr.learned_routes(Family::Ipv4));
    assert!(frr_v4
        .iter()
        .find(|r| r.prefix == net("10.244.1.0/26"))
        .unwrap()
        .as_path
        .is_empty());

    wait_has(&frr, Family::Ipv4, &[net("10.244.5.0/26")]);
    let (communities, large) = ok(frr.communities(net("10.244.5.0/26")));
    assert_eq!(
        (communities.as_str(), large.as_str()),
        ("64512:100", "64512:1:2"),
        "communities FRR received"
    );

    // Trellis learns and installs theirs.
    let theirs = [
        ("10.1.1.0/26", "10.0.1.2"),
        ("fd00:1:1::/122", "fd00:1::2"),
        ("10.1.2.0/26", "10.0.2.2"),
        ("fd00:1:2::/122", "fd00:2::2"),
        ("10.1.3.0/26", "10.0.3.2"),
        ("fd00:1:3::/122", "fd00:3::2"),
    ];
    let prefixes: Vec<IpNet> = theirs.iter().map(|(p, _)| net(p)).collect();
    node.wait_routes(&prefixes, "routes from the three daemons");
    let installed = peers::wait_until(T, || {
        let k: Vec<_> = nt
            .kernel_routes(false, "81")
            .into_iter()
            .chain(nt.kernel_routes(true, "81"))
            .collect();
        theirs
            .iter()
            .all(|(p, nh)| k.contains(&(net(p), Some(ip(nh)))))
    });
    assert!(
        installed,
        "kernel routes proto 81 in {}: v4 {:?} v6 {:?}",
        nt.name(),
        nt.kernel_routes(false, "81"),
        nt.kernel_routes(true, "81")
    );
    // The eBGP-learned routes are passed on to the iBGP peer (FRR) with their AS path.
    wait_has(
        &frr,
        Family::Ipv4,
        &[net("10.1.1.0/26"), net("10.1.3.0/26")],
    );
    // A withdrawal reaches every peer.
    s.withdraw(net("10.244.1.0/26")).unwrap();
    for (d, _, _) in daemons {
        let gone = peers::wait_until(T, || {
            d.learned_routes(Family::Ipv4)
                .map(|r| !r.iter().any(|r| r.prefix == net("10.244.1.0/26")))
                .unwrap_or(false)
        });
        assert!(
            gone,
            "{} still has 10.244.1.0/26: {}",
            d.kind(),
            d.diagnostics()
        );
    }
    drop(node);
}
