//! The ENI pool owner against moto (`moto_server` on PATH): filling the pool, a second and
//! third ENI as the first fill, the instance type's ENI limit kept although moto enforces
//! none, releases, restarts from the checkpoint, leaked ENIs, and injected EC2 errors.

use trellis_test_support::moto as moto_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moto_support::Fixture;
use trellis_vpc::address_book::Owner;
use trellis_vpc::checkpoint;
use trellis_vpc::ec2::{
    CreateEni, Ec2, Ec2Error, EniFilter, FaultInjecting, Operation, SecondaryAddresses,
};
use trellis_vpc::eni_manager::{EniManager, ManagerConfig, ManagerError};
use trellis_vpc::limits::limits_for;
use trellis_vpc::warm_pool::{PoolLimits, WarmTargets};

const CLUSTER: &str = "trellis-test";

/// t3.small: 3 ENIs of 4 addresses (3 for pods each), max pods 11; no waiting for
/// cooldowns, ENI lifetimes or shrink intervals.
fn config(fx: &Fixture, dir: &Path) -> ManagerConfig {
    let limits = limits_for("t3.small").expect("t3.small in the table");
    let mut cfg = ManagerConfig::new(
        CLUSTER,
        &fx.instance_id,
        WarmTargets::default(),
        PoolLimits::new(&limits, 11),
        dir.join("ipam.json"),
    );
    cfg.cooldown = Duration::ZERO;
    cfg.min_eni_lifetime = Duration::ZERO;
    cfg.shrink_interval = Duration::ZERO;
    cfg
}

fn pod(i: usize) -> Owner {
    Owner::new(format!("c{i}"), "eth0")
}

async fn enis_in_ec2(fx: &Fixture) -> BTreeSet<String> {
    fx.attached_eni_ids().await.into_iter().collect()
}

/// Detached ENIs tagged for [`CLUSTER`]: leaks, if any.
async fn detached_in_cluster(fx: &Fixture) -> Vec<trellis_vpc::ec2::Eni> {
    fx.ec2
        .describe_network_interfaces(&EniFilter::AvailableInCluster {
            cluster_name: CLUSTER.into(),
        })
        .await
        .unwrap()
}

/// Addresses EC2 has on each attached ENI, as `ip -> eni`.
async fn ec2_addresses(fx: &Fixture) -> Vec<(std::net::Ipv4Addr, String)> {
    let ids: Vec<String> = fx.attached_eni_ids().await;
    let enis = fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(ids))
        .await
        .unwrap();
    let mut out = Vec::new();
    for e in enis {
        for ip in e.secondary_ips() {
            out.push((ip, e.id.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_pool_fills_grows_by_whole_enis_up_to_the_type_limit_and_survives_a_restart() {
    let fx = Fixture::new("t3.small").await;
    let dir = tempfile::tempdir().unwrap();
    let ec2: Arc<dyn Ec2> = Arc::new(fx.ec2.clone());
    let (m, restored) = EniManager::start(ec2.clone(), config(&fx, dir.path()), |_| true)
        .await
        .unwrap();
    assert_eq!(restored, Default::default());

    // WARM_ENI_TARGET=1: one ENI's worth (3) of free addresses, on the primary ENI.
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!((m.stats().total, m.enis().len()), (3, 1));

    let mut held = Vec::new();
    for round in 0..3 {
        for i in 0..3 {
            held.push(m.assign(&pod(round * 3 + i)).unwrap());
        }
        m.reconcile(Instant::now()).await.unwrap();
    }
    // Nine pods on three ENIs; moto would attach a fourth, the type's limit does not.
    assert_eq!(m.enis().len(), 3, "{:?}", m.enis());
    assert_eq!(enis_in_ec2(&fx).await.len(), 3);
    assert_eq!((m.stats().total, m.stats().assigned), (9, 9));
    assert!(m.plan(Instant::now()).is_empty());
    let devices: Vec<u32> = m.enis().iter().map(|e| e.device_index).collect();
    assert_eq!(devices, [0, 1, 2]);
    match m.assign(&pod(9)) {
        Err(ManagerError::Book(e)) => assert!(e.to_string().contains("no free ENI address"), "{e}"),
        other => panic!("a tenth pod on a full t3.small: {other:?}"),
    }
    // Every address a pod holds is on the ENI EC2 says, and in the checkpoint.
    let in_ec2 = ec2_addresses(&fx).await;
    for a in &held {
        assert!(
            in_ec2.contains(&(a.ip, a.eni_id.clone())),
            "{a:?} not in EC2: {in_ec2:?}"
        );
    }
    let saved = checkpoint::load(&dir.path().join("ipam.json")).unwrap();
    assert_eq!(saved.len(), 9);
    assert_eq!(saved, m.allocations());

    // A restart: the pods c0 and c1 went away meanwhile.
    drop(m);
    let (m, restored) = EniManager::start(ec2, config(&fx, dir.path()), |a| {
        a.container_id != "c0" && a.container_id != "c1"
    })
    .await
    .unwrap();
    assert_eq!((restored.kept.len(), restored.released.len()), (7, 2));
    assert!(restored.lost.is_empty());
    for a in &held[2..] {
        let owner = Owner::new(
            format!("c{}", held.iter().position(|h| h == a).unwrap()),
            "eth0",
        );
        assert_eq!(
            m.held_by(&owner).as_ref(),
            Some(a),
            "{owner} keeps its address"
        );
    }
    assert_eq!(
        checkpoint::load(&dir.path().join("ipam.json"))
            .unwrap()
            .len(),
        7
    );

    // Every pod leaves: the surplus ENIs go (one pass per ENI), the primary stays.
    for i in 0..9 {
        m.release(&pod(i)).unwrap();
    }
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!(m.enis().len(), 1, "{:?}", m.enis());
    assert_eq!(enis_in_ec2(&fx).await.len(), 1);
    let leftovers = detached_in_cluster(&fx).await;
    assert!(
        leftovers.is_empty(),
        "detached ENIs left behind: {leftovers:?}"
    );
    assert!(m.allocations().is_empty());
}

#[tokio::test]
async fn leaked_enis_of_this_cluster_are_deleted_after_five_minutes() {
    let fx = Fixture::new("t3.small").await;
    let dir = tempfile::tempdir().unwrap();
    let ec2: Arc<dyn Ec2> = Arc::new(fx.ec2.clone());
    let (m, _) = EniManager::start(ec2, config(&fx, dir.path()), |_| true)
        .await
        .unwrap();
    let leaked = fx
        .ec2
        .create_network_interface(&CreateEni::for_node(
            "i-gone",
            CLUSTER,
            &fx.subnet_id,
            std::slice::from_ref(&fx.security_group_id),
            SecondaryAddresses::Ips(1),
        ))
        .await
        .unwrap();
    let other_cluster = fx
        .ec2
        .create_network_interface(&CreateEni::for_node(
            "i-gone",
            "another-cluster",
            &fx.subnet_id,
            std::slice::from_ref(&fx.security_group_id),
            SecondaryAddresses::Ips(1),
        ))
        .await
        .unwrap();
    assert!(
        m.cleanup_leaked(SystemTime::now())
            .await
            .unwrap()
            .is_empty(),
        "too young"
    );
    let later = SystemTime::now() + Duration::from_secs(301);
    assert_eq!(
        m.cleanup_leaked(later).await.unwrap(),
        vec![leaked.id.clone()]
    );
    let left = fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(vec![other_cluster.id.clone()]))
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "another cluster's ENI is not ours to delete");
}

fn throttled(operation: Operation) -> Ec2Error {
    Ec2Error::Throttled {
        operation,
        input: "injected".into(),
        code: "RequestLimitExceeded".into(),
        message: "Request limit exceeded.".into(),
    }
}

#[tokio::test]
async fn ec2_errors_set_the_condition_are_survived_and_leak_nothing() {
    let fx = Fixture::new("t3.small").await;
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultInjecting::new(fx.ec2.clone()));
    let ec2: Arc<dyn Ec2> = faulty.clone();
    let (m, _) = EniManager::start(ec2, config(&fx, dir.path()), |_| true)
        .await
        .unwrap();

    // Throttled twice, then through.
    faulty.fail(
        Operation::AssignPrivateIpAddresses,
        throttled(Operation::AssignPrivateIpAddresses),
        2,
    );
    for _ in 0..2 {
        let e = m.reconcile(Instant::now()).await.unwrap_err();
        assert!(matches!(e, Ec2Error::Throttled { .. }), "{e}");
        let condition = m.condition().expect("a condition while throttled");
        assert!(
            condition.contains("throttled") && !condition.contains('\n'),
            "{condition}"
        );
    }
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!(m.condition(), None);
    assert_eq!(m.stats().total, 3);

    // A full first ENI, and the attach of the second fails: the new ENI is deleted again.
    for i in 0..3 {
        m.assign(&pod(i)).unwrap();
    }
    faulty.fail(
        Operation::AttachNetworkInterface,
        Ec2Error::AttachmentLimit {
            operation: Operation::AttachNetworkInterface,
            input: "injected".into(),
            message: "Interface count 4 exceeds the limit for t3.small".into(),
        },
        1,
    );
    let e = m.reconcile(Instant::now()).await.unwrap_err();
    assert!(matches!(e, Ec2Error::AttachmentLimit { .. }), "{e}");
    assert!(m.condition().unwrap().contains("AttachmentLimitExceeded"));
    let leftovers = detached_in_cluster(&fx).await;
    assert!(
        leftovers.is_empty(),
        "the unattached ENI leaked: {leftovers:?}"
    );
    assert_eq!(enis_in_ec2(&fx).await.len(), 1);

    // The subnet is full: said so, nothing created.
    faulty.fail(
        Operation::CreateNetworkInterface,
        Ec2Error::SubnetFull {
            operation: Operation::CreateNetworkInterface,
            input: fx.subnet_id.clone(),
            message: "There are not enough free addresses in subnet".into(),
        },
        1,
    );
    m.reconcile(Instant::now()).await.unwrap_err();
    assert!(m
        .condition()
        .unwrap()
        .contains("the subnet has no free addresses"));

    // And then it works: the second ENI comes.
    m.reconcile(Instant::now()).await.unwrap();
    assert_eq!(m.enis().len(), 2);
    assert_eq!(m.condition(), None);
    // Pods kept their addresses through all of it.
    assert_eq!(m.allocations().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_networking_puts_pods_on_enis_in_the_pod_subnet_with_its_security_groups() {
    let fx = Fixture::new("t3.small").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&fx, dir.path());
    // The ENIConfig's subnet and groups; the primary ENI (in the node subnet) hosts no pod.
    let sg = fx
        .sdk
        .create_security_group()
        .group_name("trellis-pods")
        .description("pods")
        .vpc_id(&fx.vpc_id)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    cfg.custom_network = Some(trellis_vpc::eni_manager::CustomNetwork {
        subnet_id: fx.subnet2_id.clone(),
        security_groups: vec![sg.clone()],
    });
    let ec2: Arc<dyn Ec2> = Arc::new(fx.ec2.clone());
    let (m, _) = EniManager::start(ec2, cfg, |_| true).await.unwrap();
    m.reconcile(Instant::now()).await.unwrap();

    let enis = m.enis();
    assert_eq!(enis.len(), 2, "the primary and one pod ENI: {enis:?}");
    let pod_eni = &enis[1];
    assert_eq!(pod_eni.subnet, "10.0.1.0/24".parse().unwrap());
    let described = fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(vec![pod_eni.id.clone()]))
        .await
        .unwrap();
    assert_eq!(described[0].subnet_id, fx.subnet2_id);
    // moto reports an attached ENI's groups together with its instance's.
    assert!(
        described[0].security_groups.contains(&sg),
        "{:?}",
        described[0].security_groups
    );
    assert!(
        fx.ec2
            .describe_instance(&fx.instance_id)
            .await
            .unwrap()
            .primary_eni()
            .unwrap()
            .secondary_ips()
            .is_empty(),
        "the primary ENI gets no pod addresses"
    );
    for i in 0..3 {
        let a = m.assign(&pod(i)).unwrap();
        assert_eq!(a.eni_id, pod_eni.id);
        assert!(pod_eni.subnet.contains(&a.ip), "{a:?}");
    }
}
