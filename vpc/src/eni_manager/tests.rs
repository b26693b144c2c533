//! Prefix delegation, which moto does not emulate, against [`FakeEc2`]; secondary-IP mode,
//! limits, restarts, leaks and EC2 errors are tested against moto (`tests/eni_manager_moto.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fake_ec2::{FakeEc2, INSTANCE};
use super::*;
use crate::limits::limits_for;

fn prefix_config(dir: &std::path::Path) -> ManagerConfig {
    let limits = limits_for("m5.large").unwrap();
    let targets = WarmTargets {
        warm_prefix_target: Some(1),
        prefix_delegation: true,
        ..WarmTargets::default()
    };
    let mut cfg = ManagerConfig::new(
        "c",
        INSTANCE,
        targets,
        PoolLimits::new(&limits, 110),
        dir.join("ipam.json"),
    );
    cfg.cooldown = Duration::ZERO;
    cfg.min_eni_lifetime = Duration::ZERO;
    cfg.shrink_interval = Duration::ZERO;
    cfg
}

#[tokio::test]
async fn prefix_mode_assigns_whole_prefixes_gives_their_addresses_and_returns_the_surplus() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeEc2::new());
    let (m, _) = EniManager::start(fake.clone(), prefix_config(dir.path()), |_| true)
        .await
        .unwrap();
    m.reconcile(Instant::now()).await.unwrap();
    let first: Ipv4Net = "10.0.16.0/28".parse().unwrap();
    assert_eq!(fake.prefixes("eni-primary"), vec![first]);
    assert_eq!((m.stats().total, m.stats().prefixes), (16, 1));

    // Sixteen pods take the prefix's sixteen addresses; the next pass adds a second prefix
    // to the same ENI (WARM_PREFIX_TARGET=1), not a new ENI.
    for i in 0..16 {
        let a = m.assign(&Owner::new(format!("c{i}"), "eth0")).unwrap();
        assert!(first.contains(&a.ip), "{a:?}");
        assert_eq!(a.eni_id, "eni-primary");
    }
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!(fake.prefixes("eni-primary").len(), 2);
    assert_eq!(m.enis().len(), 1);
    let next = m.assign(&Owner::new("c16", "eth0")).unwrap();
    assert_eq!(next.ip, "10.0.16.16".parse::<std::net::Ipv4Addr>().unwrap());

    // Everyone leaves: one free prefix is kept, the other goes back to EC2.
    for i in 0..17 {
        m.release(&Owner::new(format!("c{i}"), "eth0")).unwrap();
    }
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!(fake.prefixes("eni-primary").len(), 1);
    assert_eq!(m.stats().prefixes, 1);
    let calls = fake.calls();
    assert!(
        calls.iter().all(|c| !c.contains("PrivateIpAddresses")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("UnassignIpv4Prefixes")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_checkpoint_that_cannot_be_written_gives_no_address() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeEc2::new());
    let mut cfg = prefix_config(dir.path());
    let (m, _) = EniManager::start(fake, cfg.clone(), |_| true)
        .await
        .unwrap();
    m.reconcile(Instant::now()).await.unwrap();
    // The checkpoint's directory disappears: the ADD fails and the address stays free.
    cfg.checkpoint = dir.path().join("gone/ipam.json");
    let m = EniManager { cfg, ..m };
    let owner = Owner::new("c1", "eth0");
    let e = m.assign(&owner).unwrap_err();
    assert!(e.to_string().contains("gone/ipam.json"), "{e}");
    assert_eq!(m.held_by(&owner), None);
    assert_eq!(m.stats().assigned, 0);
}

#[tokio::test]
async fn a_new_enis_addresses_go_to_pods_only_once_its_interface_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeEc2::new());
    let limits = limits_for("t3.small").unwrap();
    let mut cfg = ManagerConfig::new(
        "c",
        INSTANCE,
        WarmTargets::default(),
        PoolLimits::new(&limits, 11),
        dir.path().join("ipam.json"),
    );
    cfg.wait_for_interfaces = true;
    let (m, _) = EniManager::start(fake.clone(), cfg, |_| true)
        .await
        .unwrap();
    m.reconcile(Instant::now()).await.unwrap();
    for i in 0..3 {
        let a = m.assign(&Owner::new(format!("c{i}"), "eth0")).unwrap();
        assert_eq!(a.eni_id, "eni-primary");
    }
    // The primary ENI is full: the pass attaches a second ENI (WARM_ENI_TARGET=1).
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!(m.enis().len(), 2);
    let second = m.enis()[1].id.clone();
    assert_eq!(m.waiting_for_interfaces(), vec![second.clone()]);
    assert!(
        matches!(
            m.assign(&Owner::new("c3", "eth0")),
            Err(ManagerError::Book(BookError::Exhausted { .. }))
        ),
        "no pod gets an address of an ENI the host does not have yet"
    );
    m.interface_ready(&second);
    assert!(m.waiting_for_interfaces().is_empty());
    let a = m.assign(&Owner::new("c3", "eth0")).unwrap();
    assert_eq!(a.eni_id, second);
}
