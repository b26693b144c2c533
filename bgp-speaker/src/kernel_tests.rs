//! The reconcile logic against the in-memory table: what is written, what is left alone.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::fake::FakeRouteTable;
use super::*;

const PROTO_STATIC: u8 = 4;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn via(prefix: &str, gateways: &[&str]) -> KernelRoute {
    KernelRoute::new(net(prefix), gateways.iter().map(|g| NextHop::via(ip(g))))
}

fn sync() -> KernelSync {
    KernelSync::new(KernelSyncConfig::default()).unwrap()
}

fn desired() -> Vec<KernelRoute> {
    vec![
        via("10.244.1.0/26", &["192.0.2.2"]),
        via("10.244.2.0/26", &["192.0.2.2", "192.0.2.3"]),
        KernelRoute::new(net("2001:db8:1::/64"), [NextHop::via(ip("fe80::2")).dev(3)]),
    ]
}

/// Our routes in the fake, as (prefix, metric) -> route.
fn ours(t: &FakeRouteTable) -> BTreeMap<(IpNet, u32), KernelRoute> {
    t.routes()
        .into_iter()
        .filter(|(_, (proto, _))| *proto == RTPROT_TRELLIS_BGP)
        .map(|((_, prefix, metric), (_, r))| ((prefix, metric), r))
        .collect()
}

#[tokio::test]
async fn first_apply_creates_the_desired_routes_then_nothing_is_written() {
    let t = FakeRouteTable::new();
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    let stats = s.apply(&t).await.unwrap();
    assert!(stats.resynced);
    assert_eq!((stats.writes, stats.created), (3, 3));
    assert_eq!(ours(&t).len(), 3);
    assert!(t.take_sent().contains(
        &"add route 10.244.2.0/26 via 192.0.2.2, via 192.0.2.3 proto 81 metric 20 table 254"
            .to_string()
    ));
    assert!(!s.has_pending_work());

    let again = s.apply(&t).await.unwrap();
    assert_eq!(again, ApplyStats::default());
    assert_eq!(t.kernel().dumps, 1, "an in-sync pass does not dump");
}

#[tokio::test]
async fn a_restarted_sync_adopts_the_routes_without_writing() {
    let t = FakeRouteTable::new();
    let mut first = sync();
    first.set_desired(desired()).unwrap();
    first.apply(&t).await.unwrap();
    drop(first);
    t.take_sent();

    let mut second = sync();
    second.set_desired(desired()).unwrap();
    let stats = second.apply(&t).await.unwrap();
    assert_eq!(
        stats,
        ApplyStats {
            resynced: true,
            found: 3,
            ..ApplyStats::default()
        }
    );
    assert!(t.take_sent().is_empty());
}

#[tokio::test]
async fn a_device_the_kernel_chose_matches_a_next_hop_without_one() {
    let t = FakeRouteTable::new();
    // What the kernel reports for `ip route add 10.244.1.0/26 via 192.0.2.2 proto 81 metric 20`.
    t.insert(
        MAIN_TABLE,
        RTPROT_TRELLIS_BGP,
        20,
        KernelRoute::new(net("10.244.1.0/26"), [NextHop::via(ip("192.0.2.2")).dev(3)]),
    );
    let mut s = sync();
    s.upsert(via("10.244.1.0/26", &["192.0.2.2"])).unwrap();
    assert_eq!(s.apply(&t).await.unwrap().writes, 0);
}

#[tokio::test]
async fn changes_are_replaced_removals_deleted_and_the_rest_untouched() {
    let t = FakeRouteTable::new();
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    s.apply(&t).await.unwrap();
    t.take_sent();

    s.upsert(via("10.244.1.0/26", &["192.0.2.9"])).unwrap();
    s.remove(net("10.244.2.0/26"));
    let stats = s.apply(&t).await.unwrap();
    assert_eq!((stats.writes, stats.replaced, stats.deleted), (2, 1, 1));
    assert_eq!(
        t.take_sent(),
        vec![
            "replace route 10.244.1.0/26 via 192.0.2.9 proto 81 metric 20 table 254",
            "delete route 10.244.2.0/26 proto 81 metric 20 table 254",
        ]
    );
    let now = ours(&t);
    assert_eq!(
        now[&(net("10.244.1.0/26"), 20)],
        via("10.244.1.0/26", &["192.0.2.9"])
    );
    assert!(!now.contains_key(&(net("10.244.2.0/26"), 20)));
    assert!(now.contains_key(&(net("2001:db8:1::/64"), 20)));
}

#[tokio::test]
async fn upserting_an_unchanged_route_writes_nothing() {
    let t = FakeRouteTable::new();
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    s.apply(&t).await.unwrap();
    // Same route, next hops in another order and host bits set: the canonical form is equal.
    s.upsert(KernelRoute {
        prefix: net("10.244.2.1/26"),
        next_hops: vec![NextHop::via(ip("192.0.2.3")), NextHop::via(ip("192.0.2.2"))],
    })
    .unwrap();
    assert!(!s.has_pending_work());
    assert_eq!(s.apply(&t).await.unwrap().writes, 0);
}

#[tokio::test]
async fn leftovers_of_ours_are_deleted_including_other_metrics() {
    let t = FakeRouteTable::new();
    // A previous incarnation's routes: one no longer wanted, one with an older metric.
    t.insert(
        MAIN_TABLE,
        RTPROT_TRELLIS_BGP,
        20,
        via("10.1.0.0/16", &["192.0.2.2"]),
    );
    t.insert(
        MAIN_TABLE,
        RTPROT_TRELLIS_BGP,
        50,
        via("10.244.1.0/26", &["192.0.2.2"]),
    );
    let mut s = sync();
    s.upsert(via("10.244.1.0/26", &["192.0.2.2"])).unwrap();
    let stats = s.apply(&t).await.unwrap();
    assert_eq!((stats.found, stats.created, stats.deleted), (2, 1, 2));
    assert_eq!(
        ours(&t).into_keys().collect::<Vec<_>>(),
        vec![(net("10.244.1.0/26"), 20)]
    );
    // Created before the old one was deleted: no moment without a route.
    let sent = t.take_sent();
    assert!(sent[0].starts_with("add route 10.244.1.0/26"), "{sent:?}");
}

#[tokio::test]
async fn routes_of_other_protocols_and_tables_are_never_written() {
    let t = FakeRouteTable::new();
    let foreign_same_slot = via("10.98.0.0/24", &["192.0.2.7"]);
    let foreign_other_metric = via("10.99.0.0/24", &["192.0.2.7"]);
    let ours_other_table = via("10.97.0.0/24", &["192.0.2.7"]);
    t.insert(MAIN_TABLE, PROTO_STATIC, 20, foreign_same_slot.clone());
    t.insert(MAIN_TABLE, PROTO_STATIC, 0, foreign_other_metric.clone());
    t.insert(100, RTPROT_TRELLIS_BGP, 20, ours_other_table.clone());
    let before = t.routes();

    let mut s = sync();
    s.set_desired([
        via("10.98.0.0/24", &["192.0.2.2"]),
        via("10.99.0.0/24", &["192.0.2.2"]),
        via("10.244.1.0/26", &["192.0.2.2"]),
    ])
    .unwrap();
    let err = s.apply(&t).await.unwrap_err();
    let KernelError::Apply { failures, stats } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(failures.as_slice(), [KernelError::Conflict { prefix, metric: 20, table: 254 }] if *prefix == net("10.98.0.0/24")),
        "{err}"
    );
    assert_eq!((stats.created, stats.failures), (2, 1));
    assert!(
        err.to_string().contains("10.98.0.0/24 not installed"),
        "{err}"
    );
    let after = t.routes();
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k:?} was changed");
    }

    // Retried (after a resync) on the next pass, still refused; a flush leaves them too.
    assert!(s.apply(&t).await.is_err());
    assert_eq!(t.kernel().dumps, 2);
    assert_eq!(flush_ours(&t, MAIN_TABLE).await.unwrap(), 2);
    assert_eq!(t.routes(), before);
}

#[tokio::test]
async fn a_failed_write_names_the_route_and_is_retried_after_a_resync() {
    let t = FakeRouteTable::new();
    t.kernel().fail = Some(|r| (r.prefix.to_string() == "10.244.2.0/26").then_some(101));
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    let err = s.apply(&t).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("add route 10.244.2.0/26 via 192.0.2.2, via 192.0.2.3")
            && text.contains("Network is unreachable (os error 101)"),
        "{text}"
    );
    let KernelError::Apply { failures, stats } = &err else {
        panic!("{err}")
    };
    assert!(matches!(
        &failures[0],
        KernelError::Write {
            source: NetlinkFailure {
                errno: Some(101),
                ..
            },
            ..
        }
    ));
    assert_eq!((stats.created, stats.failures), (2, 1));
    assert!(s.has_pending_work());

    t.kernel().fail = None;
    t.take_sent();
    let stats = s.apply(&t).await.unwrap();
    assert!(stats.resynced);
    assert_eq!(
        (stats.found, stats.writes),
        (2, 1),
        "only the failed route is written"
    );
    assert_eq!(ours(&t).len(), 3);
}

#[tokio::test]
async fn a_route_already_gone_counts_as_deleted() {
    let t = FakeRouteTable::new();
    let mut s = sync();
    s.upsert(via("10.244.1.0/26", &["192.0.2.2"])).unwrap();
    s.apply(&t).await.unwrap();
    t.kernel().routes.clear(); // removed by hand behind our back
    s.remove(net("10.244.1.0/26"));
    let stats = s.apply(&t).await.unwrap();
    assert_eq!((stats.writes, stats.deleted), (1, 0));
    assert!(!s.has_pending_work());
}

#[tokio::test]
async fn a_failed_dump_writes_nothing_and_is_retried() {
    let t = FakeRouteTable::new();
    t.kernel().fail_dumps = true;
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    let err = s.apply(&t).await.unwrap_err();
    assert!(matches!(err, KernelError::Dump { table: 254, .. }), "{err}");
    assert!(t.take_sent().is_empty());
    t.kernel().fail_dumps = false;
    assert_eq!(s.apply(&t).await.unwrap().created, 3);
}

#[tokio::test]
async fn a_requested_resync_finds_routes_deleted_behind_our_back() {
    let t = FakeRouteTable::new();
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    s.apply(&t).await.unwrap();
    t.kernel().routes.clear();
    s.request_resync();
    assert_eq!(s.apply(&t).await.unwrap().created, 3);
}

#[tokio::test]
async fn flush_deletes_only_ours() {
    let t = FakeRouteTable::new();
    t.insert(
        MAIN_TABLE,
        PROTO_STATIC,
        20,
        via("10.98.0.0/24", &["192.0.2.7"]),
    );
    let mut s = sync();
    s.set_desired(desired()).unwrap();
    s.apply(&t).await.unwrap();
    assert_eq!(flush_ours(&t, MAIN_TABLE).await.unwrap(), 3);
    assert!(ours(&t).is_empty());
    assert_eq!(t.routes().len(), 1);
}

#[test]
fn invalid_routes_and_configs_are_refused() {
    let mut s = sync();
    let err = s
        .upsert(KernelRoute::new(
            net("2001:db8::/64"),
            [NextHop::via(ip("fe80::1"))],
        ))
        .unwrap_err();
    assert!(err.to_string().contains("2001:db8::/64"), "{err}");
    let err = s
        .set_desired([
            via("10.0.0.0/8", &["2001:db8::1"]),
            via("10.1.0.0/16", &["192.0.2.2"]),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
    assert_eq!(s.desired().len(), 1, "the valid route is kept");
    for config in [
        KernelSyncConfig {
            table: 254,
            metric: 0,
        },
        KernelSyncConfig {
            table: 0,
            metric: 20,
        },
    ] {
        assert!(KernelSync::new(config).is_err());
    }
}
