//! Golden tests of the natOutgoing transaction and of the manager's dirty/retry behaviour.

use trellis_datastore::meta::ObjectMeta;
use trellis_datastore::resources::{IpPool, IpPoolSpec};

use super::*;

fn pool(name: &str, cidr: &str, nat_outgoing: bool) -> ClusterUpdate {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.nat_outgoing = nat_outgoing;
    ClusterUpdate::PoolUpdated(IpPool::new(ObjectMeta::named(name), spec))
}

fn disabled(name: &str, cidr: &str, nat_outgoing: bool) -> ClusterUpdate {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.nat_outgoing = nat_outgoing;
    spec.disabled = true;
    ClusterUpdate::PoolUpdated(IpPool::new(ObjectMeta::named(name), spec))
}

fn manager(updates: &[ClusterUpdate]) -> NatManager {
    let mut m = NatManager::new();
    for u in updates {
        m.on_update(u);
    }
    m
}

/// The transaction every state shares; `ELEMENTS` is replaced by the set fills.
const FRAME: &str = "\
add table inet trellis
add set inet trellis masq-pools4 { type ipv4_addr; flags interval; auto-merge; }
add set inet trellis all-pools4 { type ipv4_addr; flags interval; auto-merge; }
add set inet trellis masq-pools6 { type ipv6_addr; flags interval; auto-merge; }
add set inet trellis all-pools6 { type ipv6_addr; flags interval; auto-merge; }
add chain inet trellis nat-postrouting { type nat hook postrouting priority srcnat; policy accept; }
ELEMENTS
flush chain inet trellis nat-postrouting
add rule inet trellis nat-postrouting ip saddr @masq-pools4 ip daddr != @all-pools4 masquerade
add rule inet trellis nat-postrouting ip6 saddr @masq-pools6 ip6 daddr != @all-pools6 masquerade
";

fn golden(elements: &str) -> String {
    FRAME.replace("ELEMENTS\n", elements)
}

#[test]
fn no_pools_renders_empty_sets_and_the_chain() {
    assert_eq!(
        NatManager::new().render(),
        golden(
            "\
flush set inet trellis masq-pools4
flush set inet trellis all-pools4
flush set inet trellis masq-pools6
flush set inet trellis all-pools6
"
        )
    );
}

#[test]
fn v4_and_v6_pools_with_and_without_nat_outgoing() {
    let m = manager(&[
        pool("default-v4", "10.244.0.0/16", true),
        pool("no-nat-v4", "172.16.0.0/20", false),
        pool("default-v6", "fd00:10:244::/48", true),
        pool("no-nat-v6", "fd00:99::/64", false),
    ]);
    assert_eq!(
        m.render(),
        golden(
            "\
flush set inet trellis masq-pools4
add element inet trellis masq-pools4 { 10.244.0.0/16 }
flush set inet trellis all-pools4
add element inet trellis all-pools4 { 10.244.0.0/16, 172.16.0.0/20 }
flush set inet trellis masq-pools6
add element inet trellis masq-pools6 { fd00:10:244::/48 }
flush set inet trellis all-pools6
add element inet trellis all-pools6 { fd00:10:244::/48, fd00:99::/64 }
"
        )
    );
}

#[test]
fn disabled_pools_are_still_masqueraded() {
    let m = manager(&[disabled("old", "10.10.0.0/16", true)]);
    let t = m.render();
    assert!(
        t.contains("add element inet trellis masq-pools4 { 10.10.0.0/16 }\n"),
        "{t}"
    );
    assert!(
        t.contains("add element inet trellis all-pools4 { 10.10.0.0/16 }\n"),
        "{t}"
    );
}

#[test]
fn render_is_deterministic_merges_overlaps_and_normalises_host_bits() {
    // Insertion order and names must not matter; adjacent /17s become one /16; host bits go.
    let a = manager(&[
        pool("b", "10.244.128.0/17", true),
        pool("a", "10.244.0.0/17", true),
        pool("c", "10.244.1.7/24", false),
    ]);
    let b = manager(&[
        pool("c", "10.244.1.7/24", false),
        pool("a", "10.244.0.0/17", true),
        pool("b", "10.244.128.0/17", true),
    ]);
    assert_eq!(a.render(), b.render());
    let t = a.render();
    assert!(
        t.contains("add element inet trellis masq-pools4 { 10.244.0.0/16 }\n"),
        "{t}"
    );
    assert!(
        t.contains("add element inet trellis all-pools4 { 10.244.0.0/16 }\n"),
        "{t}"
    );
}

#[test]
fn deleting_and_flipping_pools_changes_the_sets() {
    let mut m = manager(&[
        pool("a", "10.244.0.0/16", true),
        pool("b", "10.96.0.0/16", true),
    ]);
    m.on_update(&ClusterUpdate::PoolDeleted("b".into()));
    let t = m.render();
    assert!(!t.contains("10.96."), "{t}");
    assert!(
        t.contains("add element inet trellis masq-pools4 { 10.244.0.0/16 }\n"),
        "{t}"
    );

    m.on_update(&pool("a", "10.244.0.0/16", false));
    let t = m.render();
    assert!(
        t.contains("flush set inet trellis masq-pools4\nflush set inet trellis all-pools4\n"),
        "masq-pools4 must be left empty: {t}"
    );
    assert!(
        t.contains("add element inet trellis all-pools4 { 10.244.0.0/16 }\n"),
        "{t}"
    );

    m.on_update(&ClusterUpdate::PoolDeleted("a".into()));
    assert_eq!(m.render(), NatManager::new().render());
}

#[test]
fn only_pool_changes_make_work_and_errors_keep_it_dirty() {
    let nft = FakeNft::default();
    let mut m = NatManager::new();
    assert!(m.has_pending_work(), "the first pass always programs");
    m.complete_deferred_work(&nft).unwrap();
    assert_eq!(nft.applied.borrow().len(), 1);
    assert!(!m.has_pending_work());

    // Unrelated updates, replays and deleting unknown pools are no work.
    m.on_update(&ClusterUpdate::NodeDeleted("node-2".into()));
    m.on_update(&ClusterUpdate::PoolDeleted("nope".into()));
    assert!(!m.has_pending_work());
    m.on_update(&pool("a", "10.244.0.0/16", true));
    m.complete_deferred_work(&nft).unwrap();
    m.on_update(&pool("a", "10.244.0.0/16", true));
    assert!(!m.has_pending_work());
    m.complete_deferred_work(&nft).unwrap();
    assert_eq!(nft.applied.borrow().len(), 2);

    // A failed apply keeps the work; the retry sends the state current at that time.
    m.on_update(&pool("a", "10.244.0.0/16", false));
    nft.fail_next.set(1);
    let err = m.complete_deferred_work(&nft).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(m.has_pending_work());
    m.on_update(&pool("b", "10.96.0.0/12", true));
    m.complete_deferred_work(&nft).unwrap();
    assert!(!m.has_pending_work());
    let applied = nft.applied.borrow();
    assert_eq!(applied.len(), 3);
    assert_eq!(applied[2], m.render());
    assert!(applied[2].contains("masq-pools4 { 10.96.0.0/12 }"));

    drop(applied);
    m.request_resync();
    m.complete_deferred_work(&nft).unwrap();
    assert_eq!(nft.applied.borrow().len(), 4);
}

#[test]
fn nft_command_names_the_netns_it_runs_in() {
    assert_eq!(NftCommand::new().describe(), "nft -f -");
    assert_eq!(
        NftCommand::in_netns("trl-x").describe(),
        "ip netns exec trl-x nft -f -"
    );
}
