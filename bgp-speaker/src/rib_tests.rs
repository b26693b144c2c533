use super::*;
use crate::attrs::{AsPath, Origin, Segment};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peer(last: u8, ibgp: bool) -> PeerInfo {
    PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
        router_id: Ipv4Addr::new(10, 0, 0, last),
        ibgp,
        rr_client: false,
    }
}

fn attrs(path: &[u32]) -> Attrs {
    let mut a = Attrs::local("192.0.2.1".parse().unwrap());
    if !path.is_empty() {
        a.as_path = AsPath(vec![Segment::Sequence(path.to_vec())]);
    }
    a
}

fn learned(p: PeerInfo, a: Attrs) -> Path {
    Path {
        source: Source::Peer(p.addr),
        peer: Some(p),
        attrs: Arc::new(a),
        stale: false,
    }
}

fn winner(paths: &[Path]) -> Source {
    select(paths).unwrap().best.source
}

#[test]
fn higher_local_pref_wins_over_a_shorter_path() {
    let mut a = attrs(&[1, 2, 3]);
    a.local_pref = Some(200);
    let long = learned(peer(2, true), a);
    let short = learned(peer(3, true), attrs(&[1]));
    assert_eq!(winner(&[short, long.clone()]), long.source);
}

#[test]
fn local_routes_win_over_learned_ones() {
    let mut a = attrs(&[]);
    a.local_pref = Some(1000);
    let l = Path::local(Arc::new(attrs(&[])));
    assert_eq!(winner(&[learned(peer(2, true), a), l]), Source::Local);
}

#[test]
fn shorter_as_path_then_lower_origin_win() {
    let short = learned(peer(2, false), attrs(&[1]));
    let long = learned(peer(3, false), attrs(&[1, 2]));
    assert_eq!(winner(&[long.clone(), short.clone()]), short.source);
    let mut inc = attrs(&[1]);
    inc.origin = Origin::Incomplete;
    let inc = learned(peer(1, false), inc);
    assert_eq!(winner(&[inc, short.clone()]), short.source);
}

#[test]
fn med_is_compared_only_between_paths_from_the_same_neighbour_as() {
    let mut a = attrs(&[65001]);
    a.med = Some(50);
    let mut b = attrs(&[65001]);
    b.med = Some(10);
    let mut c = attrs(&[65002]);
    c.med = Some(100);
    let (pa, pb, pc) = (
        learned(peer(1, false), a),
        learned(peer(2, false), b),
        learned(peer(3, false), c),
    );
    let best = select(&[pa, pb.clone(), pc.clone()]).unwrap();
    // pa loses to pb on MED; pb and pc are not comparable by MED and both stay.
    let left: Vec<Source> = best.multipath.iter().map(|p| p.source).collect();
    assert_eq!(left, vec![pb.source, pc.source]);
    // Tie-break on router id: 10.0.0.2 < 10.0.0.3.
    assert_eq!(best.best.source, pb.source);
}

#[test]
fn ebgp_beats_ibgp_and_equal_paths_form_the_ecmp_set() {
    let i = learned(peer(1, true), attrs(&[65001]));
    let e = learned(peer(5, false), attrs(&[65001]));
    assert_eq!(winner(&[i.clone(), e.clone()]), e.source);
    let i2 = learned(peer(2, true), attrs(&[65001]));
    let best = select(&[i2.clone(), i.clone()]).unwrap();
    assert_eq!(best.multipath.len(), 2);
    assert_eq!(best.best.source, i.source, "lowest router id");
}

#[test]
fn originator_id_stands_in_for_the_router_id_then_cluster_list_then_address() {
    let mut a = attrs(&[]);
    a.originator_id = Some(Ipv4Addr::new(10, 9, 9, 9));
    let via_rr = learned(peer(1, true), a);
    let direct = learned(peer(7, true), attrs(&[]));
    assert_eq!(winner(&[via_rr, direct.clone()]), direct.source);
    let mut x = attrs(&[]);
    x.originator_id = Some(Ipv4Addr::new(10, 0, 0, 50));
    x.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2)];
    let mut y = x.clone();
    y.cluster_list.pop();
    let (px, py) = (learned(peer(1, true), x), learned(peer(2, true), y));
    assert_eq!(winner(&[px, py.clone()]), py.source);
}

#[test]
fn loc_rib_reports_changes_only_when_the_selection_changes() {
    let mut rib = LocRib::new();
    let p = net("10.244.1.0/26");
    let a = learned(peer(1, true), attrs(&[]));
    let c = rib.upsert(p, a.clone()).unwrap();
    assert_eq!(c.best.unwrap().best, a);
    assert_eq!(rib.upsert(p, a.clone()), None, "same path again");
    // A worse path from another peer does not change the selection... but the ECMP set can.
    let mut worse = attrs(&[1]);
    worse.origin = Origin::Incomplete;
    assert_eq!(rib.upsert(p, learned(peer(2, true), worse)), None);
    let c = rib.withdraw(p, a.source).unwrap();
    assert_eq!(
        c.best.unwrap().best.source,
        Source::Peer(peer(2, true).addr)
    );
    let c = rib.withdraw(p, Source::Peer(peer(2, true).addr)).unwrap();
    assert_eq!(c.best, None);
    assert!(rib.is_empty());
    assert_eq!(rib.withdraw(p, Source::Local), None);
}

#[test]
fn paths_with_next_hops_off_our_subnets_are_not_selected() {
    // A mesh peer in another subnet (shorter iBGP path) and a top-of-rack router on ours.
    let mut rib = LocRib::with_next_hop_subnets(vec![net("192.0.2.0/24")]);
    let p = net("10.244.7.0/26");
    let mut via_mesh = attrs(&[]);
    via_mesh.next_hop = "198.51.100.7".parse().unwrap();
    let mut via_tor = attrs(&[65000, 64512]);
    via_tor.next_hop = "192.0.2.254".parse().unwrap();
    assert_eq!(
        rib.upsert(p, learned(peer(1, true), via_mesh.clone())),
        None
    );
    assert!(rib.best(&p).is_none(), "nothing usable yet");
    let c = rib.upsert(p, learned(peer(2, false), via_tor)).unwrap();
    assert_eq!(
        c.best.unwrap().best.attrs.next_hop,
        "192.0.2.254".parse::<std::net::IpAddr>().unwrap()
    );
    // An IPv4-mapped IPv6 next hop is never usable.
    let mut mapped = attrs(&[]);
    mapped.next_hop = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(
        rib.upsert(net("fd00:9::/122"), learned(peer(1, true), mapped)),
        None
    );
    // IPv6 has no subnet given: not restricted.
    let p6 = net("fd00:10:244::/122");
    let mut v6 = attrs(&[]);
    v6.next_hop = "2001:db8::7".parse().unwrap();
    assert!(rib.upsert(p6, learned(peer(1, true), v6)).is_some());
    // Without the restriction the shorter path wins.
    let mut all = LocRib::new();
    all.upsert(p, learned(peer(1, true), via_mesh));
    assert_eq!(
        all.best(&p).unwrap().best.source,
        Source::Peer(peer(1, true).addr)
    );
}

#[test]
fn stale_paths_stay_selected_until_swept() {
    let mut rib = LocRib::new();
    let pi = peer(1, true);
    for i in 0..3u8 {
        rib.upsert(net(&format!("10.244.{i}.0/26")), learned(pi, attrs(&[])));
    }
    assert_eq!(rib.mark_stale(Source::Peer(pi.addr)), 3);
    assert!(rib.iter_best().all(|(_, b)| b.best.stale));
    // The restarted peer re-announces one prefix, then sends End-of-RIB.
    rib.upsert(net("10.244.0.0/26"), learned(pi, attrs(&[])));
    let swept = rib.sweep_stale(Source::Peer(pi.addr));
    assert_eq!(swept.len(), 2);
    assert_eq!(rib.len(), 1);
    assert!(!rib.best(&net("10.244.0.0/26")).unwrap().best.stale);
}

#[test]
fn removing_a_source_withdraws_all_its_paths() {
    let mut rib = LocRib::new();
    let (p1, p2) = (peer(1, true), peer(2, true));
    rib.upsert(net("10.0.1.0/24"), learned(p1, attrs(&[])));
    rib.upsert(net("10.0.2.0/24"), learned(p1, attrs(&[])));
    rib.upsert(net("10.0.2.0/24"), learned(p2, attrs(&[])));
    let changes = rib.remove_source(Source::Peer(p1.addr));
    assert_eq!(changes.len(), 2);
    assert_eq!(rib.len(), 1);
    assert_eq!(rib.paths_from(Source::Peer(p1.addr)).count(), 0);
}
