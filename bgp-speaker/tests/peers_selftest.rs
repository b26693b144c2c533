//! Proves the `peers` harness with the real daemons alone (no trellis code): BIRD peers
//! with FRR over eBGP and with GoBGP over iBGP, each session pair in IPv4 and IPv6
//! (MP-BGP); then runtime announce/withdraw; and BIRD<->FRR with a TCP MD5 password and
//! graceful restart (stale routes kept across a killed daemon).
//! Needs root (fails, never skips, without it).

mod peers;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use peers::{BgpPeer, Bird, Family, Frr, Gobgp, LearnedRoute, Neighbor, Ns, PeerConfig};

const T: Duration = Duration::from_secs(15);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| net(s)).collect()
}

/// The single route for `prefix`, or a panic listing what was learned.
fn route<'a>(routes: &'a [LearnedRoute], prefix: &str) -> &'a LearnedRoute {
    let p = net(prefix);
    let found: Vec<&LearnedRoute> = routes.iter().filter(|r| r.prefix == p).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one path for {prefix} in {routes:#?}"
    );
    found[0]
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn bird_frr_gobgp_v4_v6_ebgp_ibgp_md5_gr() {
    peers::require_root();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();

    // bird (AS 65001) --eBGP-- frr (AS 65002); bird --iBGP-- gobgp (AS 65001);
    // bird_md5 (AS 65011) --eBGP with MD5-- frr_md5 (AS 65012).
    let (nb, nf, ng) = (Ns::new("bird"), Ns::new("frr"), Ns::new("gobgp"));
    let (nbm, nfm) = (Ns::new("birdmd5"), Ns::new("frrmd5"));
    ok(Ns::link(
        &nb,
        &nf,
        &["10.0.12.1/24", "fd00:12::1/64"],
        &["10.0.12.2/24", "fd00:12::2/64"],
    ));
    ok(Ns::link(
        &nb,
        &ng,
        &["10.0.13.1/24", "fd00:13::1/64"],
        &["10.0.13.3/24", "fd00:13::3/64"],
    ));
    ok(Ns::link(&nbm, &nfm, &["10.0.45.1/24"], &["10.0.45.2/24"]));

    let bird_cfg = PeerConfig::new(65001, "10.255.0.1".parse().unwrap())
        .neighbor(Neighbor::new(ip("10.0.12.2"), 65002))
        .neighbor(Neighbor::new(ip("fd00:12::2"), 65002))
        .neighbor(Neighbor::new(ip("10.0.13.3"), 65001))
        .neighbor(Neighbor::new(ip("fd00:13::3"), 65001))
        .originate(&["10.1.0.0/26", "10.1.0.64/26", "fd01::/122", "fd01::40/122"])
        .kernel(true);
    let frr_cfg = PeerConfig::new(65002, "10.255.0.2".parse().unwrap())
        .neighbor(Neighbor::new(ip("10.0.12.1"), 65001))
        .neighbor(Neighbor::new(ip("fd00:12::1"), 65001))
        .originate(&["10.2.0.0/26", "10.2.0.64/26", "fd02::/122", "fd02::40/122"]);
    let gobgp_cfg = PeerConfig::new(65001, "10.255.0.3".parse().unwrap())
        .neighbor(Neighbor::new(ip("10.0.13.1"), 65001))
        .neighbor(Neighbor::new(ip("fd00:13::1"), 65001))
        .originate(&["10.3.0.0/26", "10.3.0.64/26", "fd03::/122", "fd03::40/122"]);
    let bird_md5_cfg = PeerConfig::new(65011, "10.255.0.11".parse().unwrap())
        .neighbor(
            Neighbor::new(ip("10.0.45.2"), 65012)
                .md5("s3cret-md5")
                .graceful_restart(),
        )
        .originate(&["10.11.0.0/26"]);
    let frr_md5_cfg = PeerConfig::new(65012, "10.255.0.12".parse().unwrap())
        .neighbor(
            Neighbor::new(ip("10.0.45.1"), 65011)
                .md5("s3cret-md5")
                .graceful_restart(),
        )
        .originate(&["10.12.0.0/26"]);

    let mut bird = ok(Bird::start(&nb, &bird_cfg, tmp.path()));
    let mut frr = ok(Frr::start(&nf, &frr_cfg, tmp.path()));
    let mut gobgp = ok(Gobgp::start(&ng, &gobgp_cfg, tmp.path()));
    let mut bird_md5 = ok(Bird::start(&nbm, &bird_md5_cfg, tmp.path()));
    let mut frr_md5 = ok(Frr::start(&nfm, &frr_md5_cfg, tmp.path()));

    for n in ["10.0.12.2", "fd00:12::2", "10.0.13.3", "fd00:13::3"] {
        ok(bird.wait_established(ip(n), T));
    }
    ok(frr.wait_established(ip("10.0.12.1"), T));
    ok(frr.wait_established(ip("fd00:12::1"), T));
    ok(gobgp.wait_established(ip("10.0.13.1"), T));
    ok(gobgp.wait_established(ip("fd00:13::1"), T));

    // BIRD learns FRR's routes over eBGP and GoBGP's over iBGP.
    let b4 = ok(bird.wait_prefixes(
        Family::Ipv4,
        &nets(&["10.2.0.0/26", "10.2.0.64/26", "10.3.0.0/26", "10.3.0.64/26"]),
        T,
    ));
    let r = route(&b4, "10.2.0.0/26");
    assert_eq!(
        (r.next_hop, r.as_path.clone()),
        (ip("10.0.12.2"), vec![65002])
    );
    let r = route(&b4, "10.3.0.64/26");
    assert_eq!(
        (r.next_hop, r.as_path.clone(), r.local_pref),
        (ip("10.0.13.3"), vec![], Some(100))
    );
    let b6 = ok(bird.wait_prefixes(
        Family::Ipv6,
        &nets(&["fd02::/122", "fd02::40/122", "fd03::/122", "fd03::40/122"]),
        T,
    ));
    let r = route(&b6, "fd02::40/122");
    assert_eq!(
        (r.next_hop, r.as_path.clone()),
        (ip("fd00:12::2"), vec![65002])
    );
    let r = route(&b6, "fd03::/122");
    assert_eq!((r.next_hop, r.as_path.clone()), (ip("fd00:13::3"), vec![]));

    // FRR learns BIRD's own routes and GoBGP's, passed on by BIRD, all via BIRD.
    let f4 = ok(frr.wait_prefixes(
        Family::Ipv4,
        &nets(&["10.1.0.0/26", "10.1.0.64/26", "10.3.0.0/26", "10.3.0.64/26"]),
        T,
    ));
    for r in &f4 {
        assert_eq!(
            (r.next_hop, r.as_path.clone()),
            (ip("10.0.12.1"), vec![65001]),
            "{r:?}"
        );
    }
    let f6 = ok(frr.wait_prefixes(
        Family::Ipv6,
        &nets(&["fd01::/122", "fd01::40/122", "fd03::/122", "fd03::40/122"]),
        T,
    ));
    for r in &f6 {
        assert_eq!(
            (r.next_hop, r.as_path.clone()),
            (ip("fd00:12::1"), vec![65001]),
            "{r:?}"
        );
    }

    // GoBGP learns BIRD's routes and FRR's; BIRD sets itself as next hop of eBGP routes.
    let g4 = ok(gobgp.wait_prefixes(
        Family::Ipv4,
        &nets(&["10.1.0.0/26", "10.1.0.64/26", "10.2.0.0/26", "10.2.0.64/26"]),
        T,
    ));
    let r = route(&g4, "10.1.0.0/26");
    assert_eq!(
        (r.next_hop, r.as_path.clone(), r.local_pref),
        (ip("10.0.13.1"), vec![], Some(100))
    );
    let r = route(&g4, "10.2.0.64/26");
    assert_eq!(
        (r.next_hop, r.as_path.clone()),
        (ip("10.0.13.1"), vec![65002])
    );
    let g6 = ok(gobgp.wait_prefixes(
        Family::Ipv6,
        &nets(&["fd01::/122", "fd01::40/122", "fd02::/122", "fd02::40/122"]),
        T,
    ));
    let r = route(&g6, "fd02::/122");
    assert_eq!(
        (r.next_hop, r.as_path.clone()),
        (ip("fd00:13::1"), vec![65002])
    );

    // The cheap counters agree with the full tables.
    ok(bird.wait_count(Family::Ipv4, 4, T));
    ok(bird.wait_count(Family::Ipv6, 4, T));
    ok(frr.wait_count(Family::Ipv6, 4, T));
    ok(gobgp.wait_count(Family::Ipv4, 4, T));

    // BIRD installed what it learned into its namespace's kernel table (and only there).
    let k4 = nb.kernel_routes(false, "bird");
    assert!(
        k4.contains(&(net("10.2.0.0/26"), Some(ip("10.0.12.2")))),
        "{k4:?}"
    );
    assert!(
        k4.contains(&(net("10.3.0.0/26"), Some(ip("10.0.13.3")))),
        "{k4:?}"
    );
    let k6 = nb.kernel_routes(true, "bird");
    assert!(
        k6.contains(&(net("fd02::/122"), Some(ip("fd00:12::2")))),
        "{k6:?}"
    );

    // Runtime changes, one per daemon: GoBGP and BIRD announce, FRR withdraws.
    ok(gobgp.announce(net("10.3.1.0/26")));
    ok(bird.announce(net("fd01::1:0/122")));
    ok(frr.withdraw(net("10.2.0.64/26")));
    ok(frr.wait_routes(Family::Ipv4, T, &|rs| {
        rs.iter().any(|r| r.prefix == net("10.3.1.0/26"))
    }));
    ok(frr.wait_routes(Family::Ipv6, T, &|rs| {
        rs.iter().any(|r| r.prefix == net("fd01::1:0/122"))
    }));
    ok(gobgp.wait_routes(Family::Ipv4, T, &|rs| {
        !rs.iter().any(|r| r.prefix == net("10.2.0.64/26"))
    }));
    ok(gobgp.withdraw(net("10.3.1.0/26")));
    ok(bird.withdraw(net("fd01::1:0/122")));
    ok(frr.wait_routes(Family::Ipv4, T, &|rs| {
        !rs.iter().any(|r| r.prefix == net("10.3.1.0/26"))
    }));
    ok(frr.wait_routes(Family::Ipv6, T, &|rs| {
        !rs.iter().any(|r| r.prefix == net("fd01::1:0/122"))
    }));

    // TCP MD5 (RFC 2385) between BIRD and FRR.
    ok(bird_md5.wait_established(ip("10.0.45.2"), T));
    ok(frr_md5.wait_established(ip("10.0.45.1"), T));
    ok(bird_md5.wait_prefixes(Family::Ipv4, &nets(&["10.12.0.0/26"]), T));
    ok(frr_md5.wait_prefixes(Family::Ipv4, &nets(&["10.11.0.0/26"]), T));

    // Graceful restart (RFC 4724) on the same pair: each side keeps the other's routes,
    // marked stale, while the other is down.
    bird_md5.kill();
    ok(frr_md5.wait_routes(Family::Ipv4, T, &|rs| {
        rs.iter()
            .any(|r| r.prefix == net("10.11.0.0/26") && r.stale)
    }));
    let bird_md5 = ok(Bird::start(&nbm, &bird_md5_cfg, tmp.path()));
    ok(bird_md5.wait_established(ip("10.0.45.2"), T));
    ok(frr_md5.wait_routes(Family::Ipv4, T, &|rs| {
        rs.iter()
            .any(|r| r.prefix == net("10.11.0.0/26") && !r.stale)
    }));
    ok(bird_md5.wait_prefixes(Family::Ipv4, &nets(&["10.12.0.0/26"]), T));
    frr_md5.kill_bgpd();
    ok(bird_md5.wait_routes(Family::Ipv4, T, &|rs| {
        rs.iter()
            .any(|r| r.prefix == net("10.12.0.0/26") && r.stale)
    }));

    drop((bird, frr, gobgp, bird_md5, frr_md5));
    eprintln!("peers selftest passed in {:?}", started.elapsed());
}
