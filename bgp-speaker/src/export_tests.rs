use std::sync::Arc;

use super::*;
use crate::attrs::{AsPath, Segment};
use crate::rib::PeerInfo;

const ME: LocalInfo = LocalInfo {
    asn: 64512,
    router_id: Ipv4Addr::new(10, 0, 0, 1),
    cluster_id: None,
};

fn to(last: u8, ibgp: bool, rr_client: bool) -> PeerExport {
    PeerExport {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
        ibgp,
        rr_client,
        next_hop_mode: NextHopMode::Auto,
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        next_hop_v6: Some("fd00::1".parse().unwrap()),
    }
}

fn from(last: u8, ibgp: bool, rr_client: bool) -> Path {
    let mut a = Attrs::local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)));
    if !ibgp {
        a.as_path = AsPath(vec![Segment::Sequence(vec![65001])]);
    }
    a.med = Some(7);
    let p = PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
        router_id: Ipv4Addr::new(10, 0, 0, last),
        ibgp,
        rr_client,
    };
    Path {
        source: Source::Peer(p.addr),
        peer: Some(p),
        attrs: Arc::new(a),
        stale: false,
    }
}

fn local() -> Path {
    Path::local(Arc::new(Attrs::local(IpAddr::V4(Ipv4Addr::new(
        192, 0, 2, 1,
    )))))
}

#[test]
fn local_routes_go_everywhere_with_our_next_hop() {
    let a = export(&local(), &ME, &to(2, true, false)).unwrap();
    assert_eq!(a.next_hop, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(a.local_pref, Some(100));
    assert!(a.as_path.is_empty());
    let a = export(&local(), &ME, &to(3, false, false)).unwrap();
    assert_eq!(a.as_path.asns(), vec![64512]);
    assert_eq!(a.local_pref, None);
}

#[test]
fn never_back_to_the_peer_it_came_from() {
    assert_eq!(
        export(&from(2, false, false), &ME, &to(2, false, false)),
        None
    );
}

#[test]
fn ibgp_routes_are_not_passed_to_ibgp_peers_without_reflection() {
    assert_eq!(
        export(&from(2, true, false), &ME, &to(3, true, false)),
        None
    );
    // ...but they are to eBGP peers, with our AS prepended and our next hop.
    let a = export(&from(2, true, false), &ME, &to(4, false, false)).unwrap();
    assert_eq!(a.as_path.asns(), vec![64512]);
    assert_eq!(a.next_hop, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(a.med, None, "MED does not cross AS borders");
}

#[test]
fn a_reflector_follows_rfc_4456_client_rules() {
    let rr = LocalInfo {
        cluster_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..ME
    };
    // client -> client and client -> non-client: reflected.
    for dest in [to(3, true, true), to(4, true, false)] {
        let a = export(&from(2, true, true), &rr, &dest).unwrap();
        assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(a.cluster_list, vec![Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(a.next_hop, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), "kept");
    }
    // non-client -> client: reflected; non-client -> non-client: not.
    assert!(export(&from(2, true, false), &rr, &to(3, true, true)).is_some());
    assert_eq!(
        export(&from(2, true, false), &rr, &to(4, true, false)),
        None
    );
}

#[test]
fn next_hop_modes() {
    let mut dest = to(3, true, false);
    dest.next_hop_mode = NextHopMode::SelfAddr;
    let a = export(&from(2, false, false), &ME, &dest).unwrap();
    assert_eq!(a.next_hop, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let mut dest = to(3, false, false);
    dest.next_hop_mode = NextHopMode::Keep;
    let a = export(&from(2, false, false), &ME, &dest).unwrap();
    assert_eq!(a.next_hop, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
    // An IPv6 route with no IPv6 next hop of ours for this session is not advertised.
    let mut dest = to(3, false, false);
    dest.next_hop_v6 = None;
    let v6 = Path::local(Arc::new(Attrs::local("fd00::1".parse().unwrap())));
    assert_eq!(export(&v6, &ME, &dest), None);
}

#[test]
fn import_refuses_loops() {
    let mut a = Attrs::local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
    a.as_path = AsPath(vec![Segment::Sequence(vec![65001, 64512])]);
    assert!(import_loop(&a, &ME, false, 0).is_some());
    assert!(import_loop(&a, &ME, true, 0).is_none());
    // Allowed once (a top-of-rack router between nodes sharing our AS), refused twice.
    assert!(import_loop(&a, &ME, false, 1).is_none());
    a.as_path = AsPath(vec![Segment::Sequence(vec![65001, 64512, 64512])]);
    assert!(import_loop(&a, &ME, false, 1).is_some());
    assert!(import_loop(&a, &ME, false, 2).is_none());
    let mut b = Attrs::local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
    b.originator_id = Some(ME.router_id);
    assert!(import_loop(&b, &ME, true, 0).is_some());
    let rr = LocalInfo {
        cluster_id: Some(Ipv4Addr::new(1, 1, 1, 1)),
        ..ME
    };
    let mut c = Attrs::local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
    c.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1)];
    assert!(import_loop(&c, &rr, true, 0).is_some());
}
