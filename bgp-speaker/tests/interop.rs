//! Trellis's speaker against the real daemons (root, network namespaces): BIRD 2, FRR and
//! GoBGP, each over IPv4 and IPv6, once as eBGP (BIRD, GoBGP) and iBGP (FRR) and once with the roles swapped,
//! so each daemon is met over both eBGP and iBGP. Every daemon learns the trellis node's
//! blocks, trellis learns theirs and installs them in its namespace's kernel table under
//! protocol 81.

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

/// A trellis node linked to BIRD, FRR and GoBGP, each in its own namespace, each peering over
/// IPv4 and IPv6 with the AS given (`TRELLIS_AS` for iBGP). Fields drop in order: the daemons
/// and the node before their namespaces.
struct Sites {
    node: TrellisNode,
    bird: Bird,
    frr: Frr,
    gobgp: Gobgp,
    nt: Ns,
    _ns: [Ns; 3],
    _tmp: tempfile::TempDir,
}

/// The trellis end of each daemon's link: (IPv4, IPv6) for BIRD, FRR, GoBGP.
const TRELLIS_ENDS: [(&str, &str); 3] = [
    ("10.0.1.1", "fd00:1::1"),
    ("10.0.2.1", "fd00:2::1"),
    ("10.0.3.1", "fd00:3::1"),
];

/// Prefixes each daemon originates, and its end of the link: the next hops trellis installs.
const THEIRS: [(&str, &str); 6] = [
    ("10.1.1.0/26", "10.0.1.2"),
    ("fd00:1:1::/122", "fd00:1::2"),
    ("10.1.2.0/26", "10.0.2.2"),
    ("fd00:1:2::/122", "fd00:2::2"),
    ("10.1.3.0/26", "10.0.3.2"),
    ("fd00:1:3::/122", "fd00:3::2"),
];

fn start_sites(bird_as: u32, frr_as: u32, gobgp_as: u32) -> Sites {
    peers::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (nt, nb, nf, ng) = (
        Ns::new("trl"),
        Ns::new("bird"),
        Ns::new("frr"),
        Ns::new("gobgp"),
    );
    for (i, other) in [&nb, &nf, &ng].into_iter().enumerate() {
        let k = i + 1;
        ok(Ns::link(
            &nt,
            other,
            &[&format!("10.0.{k}.1/24"), &format!("fd00:{k}::1/64")],
            &[&format!("10.0.{k}.2/24"), &format!("fd00:{k}::2/64")],
        ));
    }
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
    for (k, asn) in [(1, bird_as), (2, frr_as), (3, gobgp_as)] {
        for addr in [format!("10.0.{k}.2"), format!("fd00:{k}::2")] {
            s.add_peer(trellis_peer(&addr, asn)).unwrap();
        }
    }
    let daemon = |asn: u32, k: u8| {
        DaemonConfig::new(asn, Ipv4Addr::new(10, 0, k, 2))
            .neighbor(Neighbor::new(ip(&format!("10.0.{k}.1")), TRELLIS_AS))
            .neighbor(Neighbor::new(ip(&format!("fd00:{k}::1")), TRELLIS_AS))
            .originate(&[&format!("10.1.{k}.0/26"), &format!("fd00:1:{k}::/122")])
    };
    let bird = ok(Bird::start(&nb, &daemon(bird_as, 1), tmp.path()));
    let frr = ok(Frr::start(&nf, &daemon(frr_as, 2), tmp.path()));
    let gobgp = ok(Gobgp::start(&ng, &daemon(gobgp_as, 3), tmp.path()));
    Sites {
        node,
        bird,
        frr,
        gobgp,
        nt,
        _ns: [nb, nf, ng],
        _tmp: tmp,
    }
}

impl Sites {
    fn daemons(&self) -> [(&dyn BgpPeer, &str, &str); 3] {
        let [b, f, g] = TRELLIS_ENDS;
        [
            (&self.bird, b.0, b.1),
            (&self.frr, f.0, f.1),
            (&self.gobgp, g.0, g.1),
        ]
    }

    /// Every daemon has the node's blocks with the trellis end of its link as next hop.
    fn assert_daemons_learn_the_blocks(&self) {
        for (d, v4, v6) in self.daemons() {
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
    }

    /// The AS path `d` has for the node's IPv4 block.
    fn path_at(&self, d: &dyn BgpPeer) -> Vec<u32> {
        ok(d.learned_routes(Family::Ipv4))
            .iter()
            .find(|r| r.prefix == net("10.244.1.0/26"))
            .unwrap()
            .as_path
            .clone()
    }

    /// Trellis learns the daemons' prefixes and installs them under protocol 81.
    fn assert_trellis_installs_theirs(&self) {
        let prefixes: Vec<IpNet> = THEIRS.iter().map(|(p, _)| net(p)).collect();
        self.node
            .wait_routes(&prefixes, "routes from the three daemons");
        let nt = &self.nt;
        let installed = peers::wait_until(T, || {
            let k: Vec<_> = nt
                .kernel_routes(false, "81")
                .into_iter()
                .chain(nt.kernel_routes(true, "81"))
                .collect();
            THEIRS
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
    }
}

#[test]
fn trellis_peers_with_bird_frr_and_gobgp_over_both_families() {
    // BIRD: eBGP AS 65001. FRR: iBGP. GoBGP: eBGP AS 65003.
    let sites = start_sites(65001, TRELLIS_AS, 65003);
    let (s, bird, frr) = (sites.node.speaker(), &sites.bird, &sites.frr);
    let daemons = sites.daemons();
    sites.assert_daemons_learn_the_blocks();
    // eBGP peers see our AS in the path; the iBGP peer sees an empty path.
    assert_eq!(sites.path_at(bird), vec![TRELLIS_AS]);
    assert!(sites.path_at(frr).is_empty());

    wait_has(frr, Family::Ipv4, &[net("10.244.5.0/26")]);
    let (communities, large) = ok(frr.communities(net("10.244.5.0/26")));
    assert_eq!(
        (communities.as_str(), large.as_str()),
        ("64512:100", "64512:1:2"),
        "communities FRR received"
    );
    sites.assert_trellis_installs_theirs();
    // The eBGP-learned routes are passed on to the iBGP peer (FRR) with their AS path.
    wait_has(frr, Family::Ipv4, &[net("10.1.1.0/26"), net("10.1.3.0/26")]);
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
}

#[test]
fn the_same_daemons_with_the_roles_swapped_ibgp_bird_and_gobgp_ebgp_frr() {
    // BIRD: iBGP. FRR: eBGP AS 65002. GoBGP: iBGP.
    let sites = start_sites(TRELLIS_AS, 65002, TRELLIS_AS);
    sites.assert_daemons_learn_the_blocks();
    assert!(sites.path_at(&sites.bird).is_empty());
    assert!(sites.path_at(&sites.gobgp).is_empty());
    assert_eq!(sites.path_at(&sites.frr), vec![TRELLIS_AS]);
    sites.assert_trellis_installs_theirs();
    // Routes from the iBGP peers go on to the eBGP peer with our AS prepended; between the two
    // iBGP peers nothing is passed (RFC 4271 9.2: not a reflector).
    let frr = &sites.frr;
    ok(frr.wait_routes(Family::Ipv4, T, &|routes| {
        [net("10.1.1.0/26"), net("10.1.3.0/26")].iter().all(|p| {
            routes
                .iter()
                .any(|r| r.prefix == *p && r.as_path == vec![TRELLIS_AS])
        })
    }));
    let at_bird = ok(sites.bird.learned_routes(Family::Ipv4));
    assert!(
        !at_bird.iter().any(|r| r.prefix == net("10.1.3.0/26")),
        "BIRD got GoBGP's route from a non-reflector: {at_bird:?}"
    );
}
