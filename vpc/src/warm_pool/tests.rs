//! Each case is a pool state and the exact plan ipamd's rules give for it.

use std::net::Ipv4Addr;

use super::*;
use crate::limits::limits_for;

/// m5.large: 3 ENIs of 10 addresses (9 secondary, or 9 prefixes), max pods 29.
const M5_LARGE: PoolLimits = PoolLimits {
    max_enis: 3,
    slots_per_eni: 9,
    max_pods: 29,
};

/// m5.large with prefix delegation: 9 prefixes per ENI, max pods 434 (uncapped).
const M5_LARGE_PD: PoolLimits = PoolLimits {
    max_pods: 434,
    ..M5_LARGE
};

fn addr(i: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, i), 32).unwrap()
}

fn pfx(i: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 0, 1 + i / 16, (i % 16) * 16), 28).unwrap()
}

/// Secondary addresses `base..`: `used` held by pods, then `free` ones.
fn ips(base: u8, used: u8, free: u8) -> Vec<Slot> {
    (0..used + free)
        .map(|i| Slot {
            cidr: addr(base + i),
            assigned: u32::from(i < used),
            cooling: 0,
        })
        .collect()
}

/// Prefixes `base..`, each with that many addresses held by pods.
fn prefixes(base: u8, assigned: &[u32]) -> Vec<Slot> {
    assigned
        .iter()
        .zip(base..)
        .map(|(&assigned, i)| Slot {
            cidr: pfx(i),
            assigned,
            cooling: 0,
        })
        .collect()
}

/// `eni-0` is the primary ENI.
fn eni(id: &str, slots: Vec<Slot>) -> Eni {
    Eni {
        id: id.to_string(),
        primary: id == "eni-0",
        for_pods: true,
        young: false,
        slots,
    }
}

fn assign(eni: &str, count: u32) -> Plan {
    Plan {
        assign: Some((eni.to_string(), count)),
        ..Plan::default()
    }
}

fn attach(count: u32) -> Plan {
    Plan {
        attach: Some(count),
        ..Plan::default()
    }
}

fn release(eni: &str, cidrs: Vec<Ipv4Net>) -> Release {
    Release {
        eni_id: eni.to_string(),
        cidrs,
    }
}

fn releases(r: Vec<Release>) -> Plan {
    Plan {
        release: r,
        ..Plan::default()
    }
}

fn eni_target(n: u32) -> WarmTargets {
    WarmTargets {
        warm_eni_target: n,
        ..WarmTargets::default()
    }
}

fn ip_targets(warm: Option<u32>, minimum: Option<u32>) -> WarmTargets {
    WarmTargets {
        warm_ip_target: warm,
        minimum_ip_target: minimum,
        ..WarmTargets::default()
    }
}

fn prefix_mode(warm_prefix: Option<u32>, warm_ip: Option<u32>, min: Option<u32>) -> WarmTargets {
    WarmTargets {
        warm_prefix_target: warm_prefix,
        warm_ip_target: warm_ip,
        minimum_ip_target: min,
        prefix_delegation: true,
        ..WarmTargets::default()
    }
}

#[test]
fn limits_from_instance_type() {
    let l = PoolLimits::new(&limits_for("t3.small").unwrap(), 11);
    assert_eq!(
        l,
        PoolLimits {
            max_enis: 3,
            slots_per_eni: 3,
            max_pods: 11
        }
    );
}

// --- WARM_ENI_TARGET only -------------------------------------------------------------

#[test]
fn eni_target_fills_the_primary_eni_first() {
    let plan = plan(&eni_target(1), &M5_LARGE, &[eni("eni-0", vec![])]);
    assert_eq!(plan, assign("eni-0", 9));
    // An ENI with some addresses gets the rest, never more than it takes.
    let plan = plan_for(&eni_target(1), &[eni("eni-0", ips(1, 2, 5))]);
    assert_eq!(plan, assign("eni-0", 2));
}

fn plan_for(targets: &WarmTargets, enis: &[Eni]) -> Plan {
    plan(targets, &M5_LARGE, enis)
}

fn plan_pd(targets: &WarmTargets, enis: &[Eni]) -> Plan {
    plan(targets, &M5_LARGE_PD, enis)
}

#[test]
fn eni_target_attaches_a_full_eni_when_one_enis_worth_is_not_free() {
    // 9 addresses, 1 used: 8 free < 1 x 9, and the ENI is full.
    let plan = plan_for(&eni_target(1), &[eni("eni-0", ips(1, 1, 8))]);
    assert_eq!(plan, attach(9));
}

#[test]
fn eni_target_met_is_quiet() {
    assert!(plan_for(&eni_target(1), &[eni("eni-0", ips(1, 0, 9))]).is_empty());
    // 17 free: more than one ENI's worth but not two beyond the target (18): both stay,
    // and WARM_ENI_TARGET never releases single addresses.
    let enis = [eni("eni-0", ips(1, 0, 9)), eni("eni-1", ips(20, 1, 8))];
    assert!(plan_for(&eni_target(1), &enis).is_empty());
}

#[test]
fn eni_target_deletes_an_eni_beyond_the_target() {
    // 18 free >= (1 + 1) x 9: the secondary ENI goes, never the primary.
    let enis = [eni("eni-0", ips(1, 0, 9)), eni("eni-1", ips(20, 0, 9))];
    let plan = plan_for(&eni_target(1), &enis);
    assert_eq!(
        plan,
        Plan {
            delete_eni: Some("eni-1".to_string()),
            ..Plan::default()
        }
    );
    // The same with the empty ENI first in the list and the primary last.
    let enis = [eni("eni-1", ips(20, 0, 9)), eni("eni-0", ips(1, 0, 9))];
    assert_eq!(
        plan_for(&eni_target(1), &enis).delete_eni.as_deref(),
        Some("eni-1")
    );
}

#[test]
fn eni_target_two() {
    // 9 free < 2 x 9 and eni-0 full: attach; with two ENIs' worth free nothing to do.
    let plan1 = plan_for(&eni_target(2), &[eni("eni-0", ips(1, 0, 9))]);
    assert_eq!(plan1, attach(9));
    let enis = [eni("eni-0", ips(1, 0, 9)), eni("eni-1", ips(20, 0, 9))];
    assert!(plan_for(&eni_target(2), &enis).is_empty());
}

#[test]
fn eni_target_zero_grows_only_when_nothing_is_free() {
    assert!(plan_for(&eni_target(0), &[eni("eni-0", ips(1, 8, 1))]).is_empty());
    assert_eq!(
        plan_for(&eni_target(0), &[eni("eni-0", ips(1, 9, 0))]),
        attach(9)
    );
}

// --- WARM_IP_TARGET / MINIMUM_IP_TARGET -----------------------------------------------

#[test]
fn warm_ip_assigns_only_the_shortfall() {
    // 2 used, 1 free, WARM_IP_TARGET=2: one short.
    let plan = plan_for(&ip_targets(Some(2), None), &[eni("eni-0", ips(1, 2, 1))]);
    assert_eq!(plan, assign("eni-0", 1));
}

#[test]
fn warm_ip_attaches_with_the_shortfall_when_enis_are_full() {
    // 7 used, 2 free, WARM_IP_TARGET=5: 3 short, eni-0 full.
    let plan = plan_for(&ip_targets(Some(5), None), &[eni("eni-0", ips(1, 7, 2))]);
    assert_eq!(plan, attach(3));
}

#[test]
fn warm_ip_releases_the_surplus_but_no_cooling_address() {
    // 1 used, 5 free of which 10.0.0.3 is cooling; WARM_IP_TARGET=2: 3 over.
    let mut slots = ips(1, 1, 5);
    slots[2].cooling = 1;
    let plan = plan_for(&ip_targets(Some(2), None), &[eni("eni-0", slots)]);
    assert_eq!(
        plan,
        releases(vec![release("eni-0", vec![addr(2), addr(4), addr(5)])])
    );
}

#[test]
fn warm_ip_releases_from_the_last_eni_first_and_deletes_it_when_emptied() {
    // 18 free, WARM_IP_TARGET=5: 13 over. eni-1 empties and goes (its 9 go with it), 4 of
    // eni-0's are released; eni-0 keeps 5 free.
    let enis = [eni("eni-0", ips(1, 0, 9)), eni("eni-1", ips(20, 0, 9))];
    let plan = plan_for(&ip_targets(Some(5), None), &enis);
    assert_eq!(
        plan,
        Plan {
            release: vec![release("eni-0", vec![addr(1), addr(2), addr(3), addr(4)])],
            delete_eni: Some("eni-1".to_string()),
            ..Plan::default()
        }
    );
}

#[test]
fn minimum_ip_only() {
    // MINIMUM_IP_TARGET=10 with 4 addresses: 6 short, eni-0 takes 5 more.
    let plan = plan_for(&ip_targets(None, Some(10)), &[eni("eni-0", ips(1, 0, 4))]);
    assert_eq!(plan, assign("eni-0", 5));
    // 12 held, 1 used: 2 over the minimum; eni-1 keeps its last address, because eni-0's 9
    // alone are below the minimum.
    let enis = [eni("eni-0", ips(1, 1, 8)), eni("eni-1", ips(20, 0, 3))];
    let plan = plan_for(&ip_targets(None, Some(10)), &enis);
    assert_eq!(
        plan,
        releases(vec![release("eni-1", vec![addr(20), addr(21)])])
    );
}

#[test]
fn warm_and_minimum_ip() {
    // 8 used of 9: WARM_IP_TARGET=2 wants 1 more free, MINIMUM_IP_TARGET=10 1 more in all.
    let plan = plan_for(
        &ip_targets(Some(2), Some(10)),
        &[eni("eni-0", ips(1, 8, 1))],
    );
    assert_eq!(plan, attach(1));
    // 18 held, 1 used: 15 over the warm target, but only 8 over the minimum.
    let enis = [eni("eni-0", ips(1, 1, 8)), eni("eni-1", ips(20, 0, 9))];
    let plan = plan_for(&ip_targets(Some(2), Some(10)), &enis);
    let eni1: Vec<Ipv4Net> = (20..28).map(addr).collect();
    assert_eq!(plan, releases(vec![release("eni-1", eni1)]));
    // Met exactly: nothing.
    let enis = [eni("eni-0", ips(1, 8, 1)), eni("eni-1", ips(20, 0, 1))];
    assert!(plan_for(&ip_targets(Some(2), Some(10)), &enis).is_empty());
}

#[test]
fn ip_target_zero_means_unset() {
    // WARM_IP_TARGET=0 is ipamd's "unset": the ENI target applies.
    let plan = plan_for(&ip_targets(Some(0), Some(0)), &[eni("eni-0", vec![])]);
    assert_eq!(plan, assign("eni-0", 9));
}

#[test]
fn ip_targets_override_the_eni_target() {
    let targets = WarmTargets {
        warm_eni_target: 3,
        warm_ip_target: Some(1),
        ..WarmTargets::default()
    };
    // 1 free meets WARM_IP_TARGET=1 though far from 3 ENIs' worth.
    assert!(plan_for(&targets, &[eni("eni-0", ips(1, 8, 1))]).is_empty());
}

// --- prefix delegation ----------------------------------------------------------------

#[test]
fn prefix_mode_warm_prefix_target() {
    let t = prefix_mode(Some(1), None, None);
    // Nothing yet: one prefix.
    assert_eq!(plan_pd(&t, &[eni("eni-0", vec![])]), assign("eni-0", 1));
    // 13 free < 16: another prefix, though the first is not full.
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[3]))]),
        assign("eni-0", 1)
    );
    // One free prefix: met.
    assert!(plan_pd(&t, &[eni("eni-0", prefixes(0, &[3, 0]))]).is_empty());
    // Two free prefixes, target 1: release one.
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[3, 0, 0]))]),
        releases(vec![release("eni-0", vec![pfx(1)])])
    );
    // WARM_PREFIX_TARGET=2 with the only prefix full: two at once.
    let t2 = prefix_mode(Some(2), None, None);
    assert_eq!(
        plan_pd(&t2, &[eni("eni-0", prefixes(0, &[16]))]),
        assign("eni-0", 2)
    );
}

#[test]
fn prefix_mode_without_targets_grows_one_prefix_when_full() {
    let t = prefix_mode(None, None, None);
    assert!(plan_pd(&t, &[eni("eni-0", prefixes(0, &[15]))]).is_empty());
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[16]))]),
        assign("eni-0", 1)
    );
    // All 9 prefix slots of eni-0 taken and full: a new ENI with one prefix.
    let full = prefixes(0, &[16; 9]);
    assert_eq!(plan_pd(&t, &[eni("eni-0", full)]), attach(1));
}

#[test]
fn prefix_mode_warm_ip_rounds_to_prefixes() {
    let t = prefix_mode(Some(5), Some(20), None);
    // 15 free, WARM_IP_TARGET=20: 5 short, one prefix (WARM_PREFIX_TARGET ignored).
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[1]))]),
        assign("eni-0", 1)
    );
    // 1 used + 20 warm need ceil(21 / 16) = 2 prefixes of the 3: one over.
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[1, 0, 0]))]),
        releases(vec![release("eni-0", vec![pfx(1)])])
    );
    // 1 used, WARM_IP_TARGET=40: 25 short, ceil(25 / 16) = 2 prefixes.
    let t = prefix_mode(None, Some(40), None);
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[1]))]),
        assign("eni-0", 2)
    );
}

#[test]
fn prefix_mode_minimum_ip_rounds_to_prefixes() {
    let t = prefix_mode(None, None, Some(40));
    // 16 held, 40 wanted: ceil(24 / 16) = 2 prefixes.
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[0]))]),
        assign("eni-0", 2)
    );
    // 4 free prefixes, the minimum needs ceil(40 / 16) = 3: one goes.
    assert_eq!(
        plan_pd(&t, &[eni("eni-0", prefixes(0, &[0, 0, 0, 0]))]),
        releases(vec![release("eni-0", vec![pfx(0)])])
    );
}

#[test]
fn prefix_mode_keeps_an_eni_needed_for_the_prefix_target() {
    // Target 1 free prefix. eni-1 holds 2 free prefixes, eni-0 one busy prefix: one of
    // eni-1's is released, the other keeps the target, so eni-1 stays.
    let t = prefix_mode(Some(1), None, None);
    let enis = [
        eni("eni-0", prefixes(0, &[1])),
        eni("eni-1", prefixes(4, &[0, 0])),
    ];
    assert_eq!(
        plan_pd(&t, &enis),
        releases(vec![release("eni-1", vec![pfx(4)])])
    );
    // With a free prefix on eni-0 as well, eni-1 is not needed: it goes whole.
    let enis = [
        eni("eni-0", prefixes(0, &[1, 0])),
        eni("eni-1", prefixes(4, &[0, 0])),
    ];
    assert_eq!(
        plan_pd(&t, &enis),
        Plan {
            delete_eni: Some("eni-1".to_string()),
            ..Plan::default()
        }
    );
}

#[test]
fn prefix_mode_counts_only_prefixes() {
    // A /32 left from secondary-IP mode is neither free capacity nor released.
    let t = prefix_mode(Some(1), None, None);
    let mut slots = ips(200, 0, 1);
    slots.extend(prefixes(0, &[16]));
    assert_eq!(plan_pd(&t, &[eni("eni-0", slots)]), assign("eni-0", 1));
}

// --- limits, max pods, cooldown, custom networking ------------------------------------

#[test]
fn no_eni_beyond_the_instance_limit() {
    let enis = [
        eni("eni-0", ips(1, 9, 0)),
        eni("eni-1", ips(20, 9, 0)),
        eni("eni-2", ips(40, 5, 4)),
    ];
    // 4 free < 9, every ENI full, 3 of 3 attached: nothing to do.
    assert!(plan_for(&eni_target(1), &enis).is_empty());
    assert!(plan_for(&ip_targets(Some(10), None), &enis).is_empty());
}

#[test]
fn no_address_beyond_max_pods() {
    let limits = PoolLimits {
        max_pods: 20,
        ..M5_LARGE
    };
    // 18 held: 2 more at most, even though the ENI target wants 9.
    let enis = [eni("eni-0", ips(1, 9, 0)), eni("eni-1", ips(20, 8, 1))];
    assert_eq!(plan(&eni_target(1), &limits, &enis), attach(2));
    // 20 held: the pool is not low however many are used.
    let enis = [
        eni("eni-0", ips(1, 9, 0)),
        eni("eni-1", ips(20, 9, 0)),
        eni("eni-2", ips(40, 0, 2)),
    ];
    assert!(plan(&eni_target(1), &limits, &enis).is_empty());
    // Max pods 16 with 14 held: eni-1 has room for 4, gets 2.
    let limits = PoolLimits {
        max_pods: 16,
        ..M5_LARGE
    };
    let enis = [eni("eni-0", ips(1, 9, 0)), eni("eni-1", ips(20, 5, 0))];
    assert_eq!(plan(&eni_target(1), &limits, &enis), assign("eni-1", 2));
}

#[test]
fn no_prefix_beyond_max_pods() {
    // Max pods 29 needs 2 prefixes; with 1 held, WARM_PREFIX_TARGET=3 gets only 1 more.
    let t = prefix_mode(Some(3), None, None);
    assert_eq!(
        plan_for(&t, &[eni("eni-0", prefixes(0, &[16]))]),
        assign("eni-0", 1)
    );
    assert!(plan_for(&t, &[eni("eni-0", prefixes(0, &[16, 16]))]).is_empty());
}

#[test]
fn cooling_or_young_enis_are_not_deleted() {
    let mut cooling = eni("eni-1", ips(20, 0, 9));
    cooling.slots[4].cooling = 1;
    let enis = [eni("eni-0", ips(1, 0, 9)), cooling];
    assert!(plan_for(&eni_target(1), &enis).is_empty());

    let mut young = eni("eni-1", ips(20, 0, 9));
    young.young = true;
    let enis = [eni("eni-0", ips(1, 0, 9)), young];
    assert!(plan_for(&eni_target(1), &enis).is_empty());
}

#[test]
fn an_eni_with_a_pod_is_not_deleted() {
    // 25 free of 27, WARM_IP_TARGET=2: 23 over. Every secondary ENI keeps a pod, so none
    // is deleted; free addresses go instead, the last ENI's first.
    let enis = [
        eni("eni-0", ips(1, 0, 9)),
        eni("eni-1", ips(20, 1, 8)),
        eni("eni-2", ips(40, 1, 8)),
    ];
    let plan = plan_for(&ip_targets(Some(2), None), &enis);
    assert_eq!(plan.delete_eni, None);
    assert_eq!(
        plan.release,
        vec![
            release("eni-2", (41..49).map(addr).collect()),
            release("eni-1", (21..29).map(addr).collect()),
            release("eni-0", (1..8).map(addr).collect()),
        ]
    );
}

#[test]
fn custom_networking_primary_hosts_no_pods() {
    let mut primary = eni("eni-0", vec![]);
    primary.for_pods = false;
    // Nothing usable yet: attach, do not assign to the primary.
    assert_eq!(plan_for(&eni_target(1), &[primary.clone()]), attach(9));
    // The primary's own addresses count for nothing.
    let mut with_stray = primary.clone();
    with_stray.slots = ips(100, 0, 9);
    let enis = [with_stray, eni("eni-1", ips(20, 1, 8))];
    assert_eq!(plan_for(&eni_target(1), &enis), attach(9));
    // The pod ENI gets the addresses.
    let enis = [primary, eni("eni-1", ips(20, 0, 4))];
    assert_eq!(plan_for(&eni_target(1), &enis), assign("eni-1", 5));
}

#[test]
fn stats_count_the_modes_unit() {
    let mut slots = ips(1, 2, 3);
    slots[4].cooling = 1;
    slots.extend(prefixes(0, &[3, 0]));
    let enis = [eni("eni-0", slots)];
    assert_eq!(
        stats(&eni_target(1), &enis),
        PoolStats {
            total: 5,
            assigned: 2,
            cooling: 1,
            prefixes: 0,
            free_prefixes: 0
        }
    );
    assert_eq!(
        stats(&prefix_mode(None, None, None), &enis),
        PoolStats {
            total: 32,
            assigned: 3,
            cooling: 0,
            prefixes: 2,
            free_prefixes: 1
        }
    );
    assert_eq!(stats(&eni_target(1), &enis).available(), 3);
}
