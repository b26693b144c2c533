//! Unit tests of the IPIP executor: reconcile passes against the in-memory kernel. No root.

use std::collections::BTreeMap;

use futures::executor::block_on;

use super::*;
use crate::dataplane::fake::FakeNetlink;
use crate::dataplane::fixtures::{a, a4, net};

fn desired() -> IpipDesired {
    IpipDesired {
        device: Some(IpipDeviceSpec {
            name: "tunl0".into(),
            mtu: 1480,
            address: a4("10.244.0.1"),
        }),
        routes: BTreeMap::from([
            (net("10.244.1.0/26"), a("192.0.2.2")),
            (net("10.244.2.0/26"), a("192.0.2.3")),
        ]),
        pools: vec!["default".into()],
    }
}

fn pass(e: &mut IpipExecutor, k: &mut FakeNetlink) -> Result<Vec<String>, DataplaneError> {
    block_on(e.apply_additions(k))?;
    block_on(e.apply_deletions(k))?;
    Ok(k.take_sent())
}

#[test]
fn stale_routes_of_ours_go_after_the_additions_and_foreign_ones_stay() {
    let mut k = FakeNetlink::new();
    let mut e = IpipExecutor::new();
    e.set_desired(&desired());
    pass(&mut e, &mut k).unwrap();
    k.ipip_routes.insert(net("10.244.9.0/26"), a("192.0.2.9"));
    k.ipip_routes.remove(&net("10.244.2.0/26"));
    let mut restarted = IpipExecutor::new();
    restarted.set_desired(&desired());
    assert_eq!(
        pass(&mut restarted, &mut k).unwrap(),
        vec![
            "add route 10.244.2.0/26 via 192.0.2.3 dev tunl0 onlink proto 80 metric 5",
            "delete route 10.244.9.0/26 via 192.0.2.9 dev tunl0 proto 80 metric 5",
        ]
    );
}

#[test]
fn a_failed_route_write_fails_the_pass_and_the_next_one_retries_only_that() {
    let mut k = FakeNetlink::new();
    k.fail = Some(|r| r.what.contains("10.244.2.0/26"));
    let mut e = IpipExecutor::new();
    e.set_desired(&desired());
    let err = pass(&mut e, &mut k).unwrap_err();
    assert!(
        err.to_string().contains("1 of 4 netlink writes failed"),
        "{err}"
    );
    assert!(e.has_pending_work());
    k.fail = None;
    k.take_sent();
    assert_eq!(
        pass(&mut e, &mut k).unwrap(),
        vec!["add route 10.244.2.0/26 via 192.0.2.3 dev tunl0 onlink proto 80 metric 5"]
    );
    assert!(e.last_stats().resynced);
}

#[test]
fn a_foreign_link_called_tunl0_is_reported_and_left_alone() {
    let mut k = FakeNetlink::new();
    k.tunnel = Some(ObservedTunnel {
        index: 3,
        kind: "gre".into(),
        mtu: Some(1476),
        up: true,
        addresses: vec![],
    });
    let mut e = IpipExecutor::new();
    e.set_desired(&desired());
    assert!(pass(&mut e, &mut k).unwrap().is_empty());
    assert_eq!(
        e.problem().map(|p| p.to_string()).as_deref(),
        Some("tunl0 exists but is not an IPIP device (type gre); IPIP pools cannot work")
    );
    assert!(!e.has_pending_work());
}
