//! Two trellis speakers over loopback (127.0.0.1 and 127.0.0.2): sessions come up through a
//! connection collision, routes of both families flow with the right next hops, graceful
//! restart keeps a dead peer's routes until it comes back and sends End-of-RIB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc::UnboundedReceiver;
use trellis_bgp_speaker::fsm::State;
use trellis_bgp_speaker::speaker::{
    GracefulRestart, PeerConfig, RouteEvent, Speaker, SpeakerConfig,
};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn port_base() -> u16 {
    // Distinct per process so parallel test binaries do not collide.
    20000 + (std::process::id() % 20000) as u16
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

async fn speaker(
    me: Ipv4Addr,
    port: u16,
    asn: u32,
    other: Ipv4Addr,
    other_port: u16,
    other_asn: u32,
    restarting: bool,
) -> (Speaker, UnboundedReceiver<RouteEvent>) {
    let mut cfg = SpeakerConfig::new(asn, me);
    cfg.listen = Some(SocketAddr::new(IpAddr::V4(me), port));
    cfg.hold_time = 9;
    cfg.connect_retry = Duration::from_millis(500);
    cfg.next_hop_v6 = Some(format!("fd00::{}", me.octets()[3]).parse().unwrap());
    cfg.graceful_restart = Some(GracefulRestart {
        restart_time: 30,
        restarting,
    });
    let (s, rx) = Speaker::start(cfg).await.unwrap();
    let mut p = PeerConfig::new(IpAddr::V4(other), other_asn);
    p.port = other_port;
    p.local_addr = Some(IpAddr::V4(me));
    s.add_peer(p).unwrap();
    (s, rx)
}

async fn wait_established(s: &Speaker, what: &str) {
    for _ in 0..200 {
        let st = s.status().await.unwrap();
        if st.iter().all(|p| p.state == State::Established) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not established: {:?}", s.status().await.unwrap());
}

async fn wait_routes(
    s: &Speaker,
    pred: impl Fn(&[trellis_bgp_speaker::speaker::RibEntry]) -> bool,
    what: &str,
) {
    for _ in 0..200 {
        let r = s.routes().await.unwrap();
        if pred(&r) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: routes now {:?}", s.routes().await.unwrap());
}

#[tokio::test]
async fn ibgp_and_ebgp_sessions_exchange_both_families() {
    for (i, (asn_a, asn_b)) in [(64512, 64512), (64512, 65001)].into_iter().enumerate() {
        let base = port_base() + 10 * i as u16;
        let (a, _ra) = speaker(A, base, asn_a, B, base + 1, asn_b, false).await;
        let (b, mut rb) = speaker(B, base + 1, asn_b, A, base, asn_a, false).await;
        a.originate(net("10.244.1.0/26")).unwrap();
        a.originate(net("fd00:10:244::/122")).unwrap();
        wait_established(&a, "a").await;
        wait_established(&b, "b").await;
        wait_routes(&b, |r| r.len() == 2, "b learns a's blocks").await;
        let routes = b.routes().await.unwrap();
        assert_eq!(routes[0].prefix, net("10.244.1.0/26"));
        assert_eq!(routes[0].next_hops, vec![IpAddr::V4(A)]);
        assert_eq!(
            routes[1].next_hops,
            vec!["fd00::1".parse::<IpAddr>().unwrap()]
        );
        let expected_path: Vec<u32> = if asn_a == asn_b { vec![] } else { vec![asn_a] };
        assert_eq!(routes[0].as_path, expected_path);
        // The route event the kernel sync consumes.
        let ev = tokio::time::timeout(Duration::from_secs(5), rb.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!ev.next_hops.is_empty());
        let st = b.status().await.unwrap();
        assert_eq!(st[0].prefixes_received, 2);
        // End-of-RIB follows the initial table on the same connection.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !b.status().await.unwrap()[0].end_of_rib_received {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no End-of-RIB from a"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = a.status().await.unwrap();
        assert_eq!(st[0].prefixes_advertised, 2);
        // Withdrawal propagates.
        a.withdraw(net("10.244.1.0/26")).unwrap();
        wait_routes(&b, |r| r.len() == 1, "withdrawal reaches b").await;
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn a_restarting_peer_keeps_its_routes_as_stale_until_end_of_rib() {
    let base = port_base() + 100;
    let (a, _ra) = speaker(A, base, 64512, B, base + 1, 64512, false).await;
    let (b, _rb) = speaker(B, base + 1, 64512, A, base, 64512, false).await;
    a.originate(net("10.244.1.0/26")).unwrap();
    a.originate(net("10.244.9.0/26")).unwrap();
    wait_routes(&b, |r| r.len() == 2, "b learns a's blocks").await;
    // Dropping the handle kills a's sessions without a NOTIFICATION, like kill -9.
    drop(a);
    wait_routes(
        &b,
        |r| r.len() == 2 && r.iter().all(|e| e.stale),
        "b keeps a's routes as stale",
    )
    .await;
    assert!(b.status().await.unwrap()[0].stale);
    // a comes back, announcing only one of the two blocks.
    let (a, _ra) = speaker(A, base, 64512, B, base + 1, 64512, true).await;
    a.originate(net("10.244.1.0/26")).unwrap();
    wait_routes(
        &b,
        |r| r.len() == 1 && !r[0].stale && r[0].prefix == net("10.244.1.0/26"),
        "after End-of-RIB only the re-announced block is left, fresh",
    )
    .await;
    assert!(!b.status().await.unwrap()[0].stale);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_orderly_stop_withdraws_routes_at_once() {
    let base = port_base() + 200;
    let (a, _ra) = speaker(A, base, 64512, B, base + 1, 64512, false).await;
    let (b, _rb) = speaker(B, base + 1, 64512, A, base, 64512, false).await;
    a.originate(net("10.244.1.0/26")).unwrap();
    wait_routes(&b, |r| r.len() == 1, "b learns").await;
    a.stop().await;
    // Cease is a NOTIFICATION: no graceful restart, the route goes.
    wait_routes(&b, |r| r.is_empty(), "b drops a's route").await;
    let st = b.status().await.unwrap();
    assert_ne!(st[0].state, State::Established);
    b.stop().await;
}
