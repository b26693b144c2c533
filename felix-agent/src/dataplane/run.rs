//! The dataplane loop: datastore watches -> [`Syncer`] -> managers -> kernel.
//!
//! ```text
//!  Watcher(nodes/) ----\
//!  Watcher(ipam/blocks/)-+--> Syncer --ClusterUpdate--> VxlanManager --complete_deferred_work--> netlink
//!  Watcher(ippools/) --/          \--pool changed--> plan_vteps (IPAM), ensure_ipip_tunnel_addr (IPAM + Node)
//!                                 \--ClusterUpdate--> IpipManager --netlink--> tunl0 + its routes
//!                                 \--ClusterUpdate--> DirectRouteManager --netlink--> main table
//!                                 \--ClusterUpdate--> NatManager --nft -f--> table inet trellis
//!  resync timer ------------------------------------> request_resync (every manager)
//!  retry timer (after a failed pass, 250 ms doubling to 30 s) --> another pass
//!  after every pass: problems (e.g. no ipip in the kernel) --> DataplaneStatus (agent status)
//! ```
//! Nothing is applied until every prefix has delivered its first snapshot.
//!
//! One pass, make before break: direct additions, IPIP additions, the VXLAN managers, IPIP
//! deletions, direct deletions. Each kind of route has its own metric, so for a block switching
//! between any two modes the new route is in the kernel before the old one goes.
//!
//! Across nodes, receive before send: a VTEP is allocated (`plan_vteps`) and its device built
//! before it is recorded in the Node (`record_vteps`), family by family, because other nodes
//! route to it as soon as they see it there.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{select_all, StreamExt};
use trellis_datastore::watcher::Watcher;
use trellis_datastore::Datastore;
use trellis_ipam::NodeIpam;

use super::direct_apply::{DirectRouteManager, RouteNetlink};
use super::ipip_apply::{IpipManager, IpipNetlink};
use super::nat::{NatManager, Nft};
use super::syncer::{Syncer, PREFIXES};
use super::vtep::{ensure_ipip_tunnel_addr, plan_vteps, record_vteps, with_vteps, Vteps};
use super::{ClusterUpdate, DataplaneStatus, VxlanConfig, VxlanFamily, VxlanManager, VxlanNetlink};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub vxlan: VxlanConfig,
    /// MTU of tunl0: the underlay MTU minus the IPIP overhead (20).
    pub ipip_mtu: u32,
    /// How often the kernel is re-read and repaired even without changes (Calico: 90 s).
    pub resync_interval: Duration,
}

/// Runs until the datastore watches end (they retry outages themselves) or the future is
/// dropped.
pub async fn run<N: VxlanNetlink + RouteNetlink + IpipNetlink, F: Nft>(
    ds: Arc<dyn Datastore>,
    config: DataplaneConfig,
    nl: &mut N,
    nft: &F,
    metrics: Arc<Metrics>,
    status: Arc<DataplaneStatus>,
) {
    let node = config.vxlan.node_name.clone();
    let ipam = NodeIpam::new(ds.clone(), node.clone());
    let mut events = select_all(PREFIXES.map(|p| {
        Watcher::new(ds.clone(), p)
            .into_stream()
            .map(move |e| (p, e))
            .boxed()
    }));
    let mut syncer = Syncer::default();
    let mut m = Managers::new(config.vxlan, config.ipip_mtu);
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.tick().await;
    let mut pools_changed = true;
    let mut backoff = RETRY_FIRST;
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    let mut retry_armed = false;
    // VTEPs the devices are being built for, to record in the Node once they exist.
    let mut unrecorded: Option<Vteps> = None;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some((prefix, Ok(ev))) => {
                    for u in syncer.on_event(prefix, ev) {
                        pools_changed |= matches!(u, ClusterUpdate::PoolUpdated(_) | ClusterUpdate::PoolDeleted(_));
                        m.on_update(&with_unrecorded(u, &node, &unrecorded));
                    }
                }
                Some((prefix, Err(e))) => tracing::warn!(%prefix, error = %e, "watch"),
                None => return,
            },
            _ = resync.tick() => m.request_resync(),
            _ = &mut retry, if retry_armed => retry_armed = false,
        }
        if !syncer.in_sync() {
            continue;
        }
        let mut failed = false;
        if pools_changed {
            pools_changed = false;
            match plan_vteps(ds.as_ref(), &ipam, &node).await {
                // The managers build the devices from the VTEPs before they are recorded:
                // other nodes send to a VTEP as soon as they see it in the Node, so its
                // device must exist by then (recorded below, after the VXLAN pass).
                Ok(vteps) => {
                    if let Some(own) = &vteps.node {
                        m.on_update(&ClusterUpdate::NodeUpdated(own.clone()));
                    }
                    unrecorded = Some(vteps);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "VXLAN tunnel endpoint");
                    pools_changed = true;
                    failed = true;
                }
            }
            match ensure_ipip_tunnel_addr(ds.as_ref(), &ipam, &node).await {
                // As for the VTEP: tunl0 gets its address without waiting for the watch.
                Ok(Some(own)) => m.on_update(&with_unrecorded(
                    ClusterUpdate::NodeUpdated(own),
                    &node,
                    &unrecorded,
                )),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "IPIP tunnel address");
                    pools_changed = true;
                    failed = true;
                }
            }
        }
        if m.nat.has_pending_work() {
            // `nft -f` takes a few milliseconds; this task only serves the dataplane, so it
            // waits for it rather than hand the manager to a blocking thread.
            let res = m.nat.complete_deferred_work(nft);
            failed |= report(&metrics, res, "programming natOutgoing");
        }
        // Direct routes are added before the VXLAN managers run and deleted after them: a block
        // switching either way keeps a route throughout (the two never clash, see `direct`).
        let direct_work = m.direct.has_pending_work();
        if direct_work {
            let res = m.direct.apply_additions(nl).await;
            failed |= report(&metrics, res, "adding direct routes");
        }
        let ipip_work = m.ipip.has_pending_work();
        if ipip_work {
            let res = m.ipip.apply_additions(nl).await;
            metrics
                .dataplane_writes
                .inc_by(m.ipip.last_stats().writes as u64);
            failed |= report(&metrics, res, "programming IPIP");
        }
        let mut vxlan_failed = false;
        for manager in &mut m.vxlan {
            if !manager.has_pending_work() {
                continue;
            }
            let res = manager.complete_deferred_work_with(nl).await;
            metrics
                .dataplane_writes
                .inc_by(manager.last_stats().writes as u64);
            vxlan_failed |= report(&metrics, res, "programming VXLAN");
        }
        failed |= vxlan_failed;
        if let Some(vteps) = unrecorded.take() {
            failed |= !record(ds.as_ref(), &node, vteps, &mut m, &mut unrecorded).await;
        }
        if ipip_work {
            let before = m.ipip.last_stats().writes;
            let res = m.ipip.apply_deletions(nl).await;
            metrics
                .dataplane_writes
                .inc_by((m.ipip.last_stats().writes - before) as u64);
            failed |= report(&metrics, res, "deleting IPIP routes");
        }
        if direct_work {
            let res = m.direct.apply_deletions(nl).await;
            metrics
                .dataplane_writes
                .inc_by(m.direct.last_stats().writes as u64);
            failed |= report(&metrics, res, "deleting direct routes");
        }
        metrics.routes_programmed.set(m.routes_programmed() as i64);
        status.set("ipip", m.ipip.problem().map(|p| p.to_string()));
        metrics
            .dataplane_problems
            .set(status.problems().len() as i64);
        // A failed pass is retried on a timer, not only on the next event or resync; a manager
        // with work due later (a lingering device) gets a pass then.
        let mut wake = m.vxlan.iter().filter_map(|v| v.wake_at()).min();
        if failed {
            let at = std::time::Instant::now() + backoff;
            wake = Some(wake.map_or(at, |w| w.min(at)));
            backoff = (backoff * 2).min(RETRY_MAX);
        } else {
            backoff = RETRY_FIRST;
        }
        retry_armed = wake.is_some();
        if let Some(at) = wake {
            retry.as_mut().reset(tokio::time::Instant::from_std(at));
        }
    }
}

/// Records in this node's Node each VTEP of `vteps` whose device is up with it, and gives the
/// managers the node as stored. The others (a device not made yet: its manager may not have
/// seen the pool change that needs it, or failed) stay in `unrecorded` for a later pass, as do
/// all of them when the write fails. Whether the write (if any) worked.
async fn record(
    ds: &dyn Datastore,
    node: &str,
    vteps: Vteps,
    m: &mut Managers,
    unrecorded: &mut Option<Vteps>,
) -> bool {
    let serves = |family: VxlanFamily, vtep: IpAddr| {
        m.vxlan
            .iter()
            .any(|v| v.family() == family && v.serves(vtep))
    };
    let ready = Vteps {
        v4: vteps.v4.filter(|a| serves(VxlanFamily::V4, IpAddr::V4(*a))),
        v6: vteps.v6.filter(|a| serves(VxlanFamily::V6, IpAddr::V6(*a))),
        node: None,
    };
    let waiting = Vteps {
        v4: vteps.v4.filter(|_| ready.v4.is_none()),
        v6: vteps.v6.filter(|_| ready.v6.is_none()),
        node: None,
    };
    if waiting.v4.is_some() || waiting.v6.is_some() {
        *unrecorded = Some(waiting);
    }
    match record_vteps(ds, node, &ready).await {
        Ok(stored) => {
            if let Some(own) = stored {
                let own = ClusterUpdate::NodeUpdated(own);
                m.on_update(&with_unrecorded(own, node, unrecorded));
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording the VXLAN tunnel endpoint");
            *unrecorded = Some(vteps);
            false
        }
    }
}

/// `u`, with the VTEPs not recorded yet put into this node's own Node: whatever else the
/// stored node says, the managers keep building the devices for them.
fn with_unrecorded(u: ClusterUpdate, node: &str, unrecorded: &Option<Vteps>) -> ClusterUpdate {
    match (u, unrecorded) {
        (ClusterUpdate::NodeUpdated(n), Some(vteps)) if n.metadata.name == node => {
            ClusterUpdate::NodeUpdated(with_vteps(n, vteps))
        }
        (u, _) => u,
    }
}

/// Every manager the loop drives; each cluster update and resync request reaches all of them.
struct Managers {
    /// One per pod address family: vxlan.trellis (IPv4) and vxlan6.trellis (IPv6).
    vxlan: [VxlanManager; 2],
    ipip: IpipManager,
    direct: DirectRouteManager,
    nat: NatManager,
}

impl Managers {
    fn new(config: VxlanConfig, ipip_mtu: u32) -> Self {
        Self {
            vxlan: [
                VxlanManager::for_family(config.clone(), VxlanFamily::V4),
                VxlanManager::for_family(config.clone(), VxlanFamily::V6),
            ],
            ipip: IpipManager::new(config.clone(), ipip_mtu),
            direct: DirectRouteManager::new(config),
            nat: NatManager::new(),
        }
    }

    fn on_update(&mut self, u: &ClusterUpdate) {
        for v in &mut self.vxlan {
            v.on_update(u);
        }
        self.ipip.on_update(u);
        self.direct.on_update(u);
        self.nat.on_update(u);
    }

    fn request_resync(&mut self) {
        for v in &mut self.vxlan {
            v.request_resync();
        }
        self.ipip.request_resync();
        self.direct.request_resync();
        self.nat.request_resync();
    }

    /// Routes to other nodes' blocks in the kernel: VXLAN, IPIP and direct.
    fn routes_programmed(&self) -> usize {
        self.vxlan
            .iter()
            .map(|v| v.routes_programmed())
            .sum::<usize>()
            + self.ipip.routes_programmed()
            + self.direct.routes_programmed()
    }
}

/// Counts and logs a manager's failed pass; returns whether it failed.
fn report<E: std::fmt::Display>(metrics: &Metrics, res: Result<(), E>, what: &str) -> bool {
    match res {
        Ok(()) => false,
        Err(e) => {
            metrics.reconcile_errors.inc();
            tracing::warn!(error = %e, "{what}; retrying");
            true
        }
    }
}

/// First delay before a failed pass is retried; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fake::FakeNetlink;
    use crate::dataplane::vtep::{ensure_vtep, vtep_handle_v6};
    use trellis_datastore::codec;
    use trellis_datastore::memory::MemoryDatastore;
    use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
    use trellis_datastore::resources::{EncapMode, IpPool, IpPoolSpec, Node, NodeSpec};
    use trellis_datastore::ObjectMeta;

    async fn put<T: serde::Serialize>(ds: &dyn Datastore, key: &str, obj: &T) {
        ds.put(key, serde_json::to_vec(obj).unwrap()).await.unwrap();
    }

    fn node(name: &str, ip: &str) -> Node {
        let spec = NodeSpec {
            addresses: vec![NodeAddress {
                address: ip.parse().unwrap(),
                kind: NodeAddressType::TrellisNodeIP,
            }],
            ..Default::default()
        };
        Node::new(ObjectMeta::named(name), spec)
    }

    /// node-1's dataplane, VXLAN MTU 1450, no known underlay subnet.
    fn node1_config() -> DataplaneConfig {
        DataplaneConfig {
            vxlan: VxlanConfig {
                node_name: "node-1".into(),
                mtu: 1450,
                underlay_subnet: None,
            },
            ipip_mtu: 1480,
            resync_interval: Duration::from_secs(90),
        }
    }

    #[tokio::test]
    async fn programs_remote_blocks_and_records_its_own_vtep() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        let mut pool = IpPool::new(
            ObjectMeta::named("p"),
            IpPoolSpec::new("10.244.0.0/16".parse().unwrap()),
        );
        pool.spec.vxlan_mode = EncapMode::Always;
        put(ds.as_ref(), "ippools/p", &pool).await;
        for (n, ip) in [("node-1", "172.30.0.1"), ("node-2", "172.30.0.2")] {
            put(ds.as_ref(), &format!("nodes/{n}"), &node(n, ip)).await;
        }
        // node-2's agent has done its part: it holds a block and recorded its VTEP.
        let remote = NodeIpam::new(ds.clone(), "node-2");
        let vtep2 = ensure_vtep(ds.as_ref(), &remote, "node-2")
            .await
            .unwrap()
            .v4
            .unwrap();
        let config = node1_config();
        let mut fake = FakeNetlink::new();
        let metrics = Arc::new(Metrics::default());
        let nft = crate::dataplane::nat::FakeNft::default();
        let status = Arc::new(DataplaneStatus::default());
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            run(ds.clone(), config, &mut fake, &nft, metrics.clone(), status),
        )
        .await;
        let block2 = codec::list::<
            trellis_datastore::Object<trellis_datastore::resources::IpamBlockSpec>,
        >(ds.as_ref(), "ipam/blocks/")
        .await
        .unwrap()
        .0
        .into_iter()
        .find(|b| b.value.spec.affine_node() == Some("node-2"))
        .unwrap()
        .value
        .spec
        .cidr;
        let ipnet::IpNet::V4(block2) = block2 else {
            panic!("{block2} is an IPv4 block")
        };
        assert_eq!(
            fake.entries.routes.get(&ipnet::IpNet::V4(block2)),
            Some(&std::net::IpAddr::V4(vtep2)),
            "route to node-2's block via its VTEP: {:?}",
            fake.entries
        );
        let own = codec::get_object::<NodeSpec>(ds.as_ref(), "nodes/node-1")
            .await
            .unwrap()
            .unwrap();
        let vtep1 = own
            .value
            .spec
            .ipv4_vxlan_tunnel_addr
            .expect("node-1 recorded its VTEP");
        assert_eq!(
            own.value.spec.vxlan_tunnel_mac_addr,
            Some(crate::dataplane::vxlan::vtep_mac_for("node-1").to_string())
        );
        assert_ne!(vtep1, vtep2);
        assert!(fake.device.is_some(), "vxlan.trellis created");
        let text = metrics.render();
        assert!(
            text.contains("trellis_dataplane_routes_programmed 1"),
            "{text}"
        );
        assert!(
            text.contains("trellis_dataplane_reconcile_errors_total 0"),
            "{text}"
        );
        let report = trellis_ipam::check(ds.as_ref()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }

    /// Other nodes send to a VTEP as soon as the Node shows it: each family's VTEP is recorded
    /// only once its device is up with it. Here vxlan6.trellis cannot be made: the IPv4 VTEP is
    /// recorded, the IPv6 one is not (its address is held, so a later pass records the same).
    #[tokio::test]
    async fn a_vtep_is_not_recorded_before_its_device_exists() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        for (name, cidr) in [("v4", "10.244.0.0/16"), ("v6", "fd00:244::/64")] {
            let mut pool = IpPool::new(
                ObjectMeta::named(name),
                IpPoolSpec::new(cidr.parse().unwrap()),
            );
            pool.spec.vxlan_mode = EncapMode::Always;
            put(ds.as_ref(), &format!("ippools/{name}"), &pool).await;
        }
        let mut n1 = node("node-1", "172.30.0.1");
        n1.spec.addresses.push(NodeAddress {
            address: "fd00:172:30::1".parse().unwrap(),
            kind: NodeAddressType::TrellisNodeIP,
        });
        put(ds.as_ref(), "nodes/node-1", &n1).await;
        let config = node1_config();
        let mut fake = FakeNetlink::new();
        fake.fail = Some(|r| r.what.starts_with("create vxlan6"));
        let nft = crate::dataplane::nat::FakeNft::default();
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            run(
                ds.clone(),
                config,
                &mut fake,
                &nft,
                Arc::new(Metrics::default()),
                Arc::new(DataplaneStatus::default()),
            ),
        )
        .await;
        let sent = fake.take_sent();
        assert!(
            sent.iter().any(|w| w.starts_with("create vxlan6")),
            "{sent:?}"
        );
        let own = codec::get_object::<NodeSpec>(ds.as_ref(), "nodes/node-1")
            .await
            .unwrap()
            .unwrap()
            .value
            .spec;
        assert!(own.ipv4_vxlan_tunnel_addr.is_some(), "{own:?}");
        assert_eq!(own.ipv6_vxlan_tunnel_addr, None, "{own:?}");
        assert_eq!(own.vxlan_tunnel_mac_addr_v6, None, "{own:?}");
        let held = trellis_ipam::store::addresses_of(ds.as_ref(), &vtep_handle_v6("node-1"))
            .await
            .unwrap();
        assert_eq!(held.len(), 1, "held for the next pass: {held:?}");
    }
}
