//! Dataplane managers: each owns one kernel concern and reconciles it against the cluster
//! (Calico's `Manager` interface in `felix/dataplane/linux`).
//!
//! ```text
//!  datastore watch ──ClusterUpdate──► manager.on_update()        (records intent, sets dirty)
//!  agent loop (batched, throttled) ──► manager.complete_deferred_work(&handle)   (kernel I/O)
//!
//!  VxlanManager: ClusterView ──vxlan::compute_desired──► VxlanDesired
//!                 ──vxlan_apply::VxlanExecutor (DeltaTrackers + resync)──► rtnetlink
//!  IpipManager:  ClusterView ──ipip::compute_ipip_desired──► IpipDesired
//!                 ──ipip_apply::IpipExecutor (tunl0 plan + DeltaTracker)──► rtnetlink
//!  DirectRouteManager: ClusterView ──direct::compute_direct_routes──► main-table routes
//! ```
//!
//! The agent never flushes: a manager's first pass reads what the kernel has and applies only the
//! difference, so pods keep their traffic across agent restarts.

pub mod delta;
pub mod direct;
pub mod direct_apply;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod fixtures;
pub mod ipip;
pub mod ipip_apply;
pub mod ipip_msg;
pub mod nat;
pub mod run;
pub mod syncer;
pub mod vtep;
pub mod vxlan;
pub mod vxlan_apply;
pub mod vxlan_msg;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use trellis_datastore::resources::{IpPool, Node};

pub use delta::DeltaTracker;
pub use direct::{compute_direct_routes, DIRECT_ROUTE_METRIC};
pub use direct_apply::{DirectRouteManager, RouteNetlink};
pub use ipip::{
    compute_ipip_desired, IpipDesired, IpipDeviceSpec, IpipError, IpipNotReady, IPIP_DEVICE,
    IPIP_OVERHEAD, IPIP_ROUTE_METRIC,
};
pub use ipip_apply::{IpipExecutor, IpipManager, IpipNetlink};
pub use vxlan::{
    compute_desired, compute_desired_for, vtep_mac_for, vtep_mac_v6_for, ClusterView, MacAddr,
    NotReady, VxlanConfig, VxlanDesired, VxlanDeviceSpec, VxlanFamily, ROUTE_PROTOCOL,
    VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_V6_DEVICE, VXLAN_V6_PORT, VXLAN_V6_VNI,
    VXLAN_VNI,
};
pub use vxlan_apply::{ApplyStats, RtNetlink, VxlanExecutor, VxlanNetlink};

/// Problems that keep part of the dataplane from working on this node (e.g. "kernel has no ipip
/// support: cannot create tunl0 for pool X"), by manager. The dataplane loop writes it after
/// every pass; the agent's status (`GET /v1/status`, `trellisctl`) and `/metrics` read it. A
/// problem here does not make the node unready: pods of the other pools work.
#[derive(Debug, Default)]
pub struct DataplaneStatus {
    problems: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl DataplaneStatus {
    /// Sets (or with `None` clears) the problem of `manager`.
    pub fn set(&self, manager: &'static str, problem: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(text) => p.insert(manager, text),
            None => p.remove(manager),
        };
    }

    /// Every current problem, in manager-name order.
    pub fn problems(&self) -> Vec<String> {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.values().cloned().collect()
    }
}

/// A change in the cluster that a dataplane manager may care about.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterUpdate {
    NodeUpdated(Node),
    /// By node name.
    NodeDeleted(String),
    /// Block CIDR and the node it is affine to (`None`: the block lost its node).
    BlockUpdated(IpNet, Option<String>),
    BlockDeleted(IpNet),
    PoolUpdated(IpPool),
    /// By pool name.
    PoolDeleted(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("reading {what} from the kernel failed: {source}")]
    Read {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what} failed: {source}")]
    Write {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(
        "{failed} of {attempted} netlink writes failed (the next pass resyncs and retries); \
         first: {first}"
    )]
    Writes {
        failed: usize,
        attempted: usize,
        #[source]
        first: Box<DataplaneError>,
    },
    #[error("{name} still differs from the desired device after recreating it: {reason}")]
    DeviceMismatch { name: String, reason: String },
}

/// Programs the VXLAN overlay of this node: the `vxlan.trellis` device, ARP and FDB entries of
/// the other nodes' VTEPs, and routes to their blocks.
///
/// When the last pool stops using VXLAN the routes, ARP and FDB entries go at once, but the
/// device itself lingers for [`DEVICE_LINGER`]: other nodes switch a moment later, and until
/// they have, their replies still arrive encapsulated and need the device to be decapsulated.
#[derive(Debug)]
pub struct VxlanManager {
    family: VxlanFamily,
    config: VxlanConfig,
    view: ClusterView,
    dirty: bool,
    not_ready: Option<NotReady>,
    executor: VxlanExecutor,
    last_stats: ApplyStats,
    /// The device last desired, and until when it stays after it no longer is.
    last_device: Option<VxlanDeviceSpec>,
    linger_until: Option<Instant>,
    device_linger: Duration,
}

/// How long an unneeded VXLAN device stays (see [`VxlanManager`]).
pub const DEVICE_LINGER: Duration = Duration::from_secs(30);

impl VxlanManager {
    /// The manager of the IPv4 device `vxlan.trellis`.
    pub fn new(config: VxlanConfig) -> Self {
        Self::for_family(config, VxlanFamily::V4)
    }

    /// The manager of `family`'s device (`vxlan.trellis` or `vxlan6.trellis`).
    pub fn for_family(config: VxlanConfig, family: VxlanFamily) -> Self {
        Self {
            family,
            config,
            view: ClusterView::default(),
            dirty: true,
            not_ready: None,
            executor: VxlanExecutor::for_family(family),
            last_stats: ApplyStats::default(),
            last_device: None,
            linger_until: None,
            device_linger: DEVICE_LINGER,
        }
    }

    /// The same manager with another device linger time (tests).
    pub fn with_device_linger(mut self, linger: Duration) -> Self {
        self.device_linger = linger;
        self
    }

    /// When the manager wants a pass even without news (an unneeded device to remove).
    pub fn wake_at(&self) -> Option<Instant> {
        self.linger_until
    }

    /// Records a cluster change; no I/O.
    pub fn on_update(&mut self, update: &ClusterUpdate) {
        if self.view.apply(update) {
            self.dirty = true;
        }
    }

    /// Makes the next [`Self::complete_deferred_work`] read the kernel again (periodic resync).
    pub fn request_resync(&mut self) {
        self.executor.request_resync();
    }

    /// Whether [`Self::complete_deferred_work`] has anything to do.
    pub fn has_pending_work(&self) -> bool {
        self.dirty
            || self.linger_until.is_some_and(|t| Instant::now() >= t)
            || (self.not_ready.is_none() && self.executor.has_pending_work())
    }

    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    pub fn family(&self) -> VxlanFamily {
        self.family
    }

    /// Whether the device is in the kernel, up, with `vtep` on it (as last read or written):
    /// only then may other nodes be told to send to `vtep`.
    pub fn serves(&self, vtep: IpAddr) -> bool {
        self.executor
            .observed_device()
            .is_some_and(|d| d.up && d.addresses.iter().any(|a| a.addr() == vtep))
    }

    /// Why the last pass left the kernel alone, if it did.
    pub fn not_ready(&self) -> Option<&NotReady> {
        self.not_ready.as_ref()
    }

    /// What the last [`Self::complete_deferred_work`] did (all zero if it had nothing to do).
    /// Routes to other nodes' blocks currently in the kernel (as last read or written).
    pub fn routes_programmed(&self) -> usize {
        self.executor.routes().dataplane().len()
    }

    pub fn last_stats(&self) -> ApplyStats {
        self.last_stats
    }

    /// Does the kernel I/O over the rtnetlink connection `handle` (opened in the node's netns).
    pub async fn complete_deferred_work(
        &mut self,
        handle: &rtnetlink::Handle,
    ) -> Result<(), DataplaneError> {
        let mut nl = RtNetlink::new(handle.clone());
        self.complete_deferred_work_with(&mut nl).await
    }

    /// [`Self::complete_deferred_work`] over any [`VxlanNetlink`].
    pub async fn complete_deferred_work_with(
        &mut self,
        nl: &mut dyn VxlanNetlink,
    ) -> Result<(), DataplaneError> {
        if self.linger_until.is_some_and(|t| Instant::now() >= t) {
            self.dirty = true;
        }
        if self.dirty {
            self.dirty = false;
            match compute_desired_for(&self.view, &self.config, self.family) {
                Ok(mut desired) => {
                    if self.not_ready.take().is_some() {
                        tracing::info!("VXLAN configuration is complete again");
                    }
                    self.linger(&mut desired);
                    self.executor.set_desired(&desired);
                }
                Err(e) => {
                    if self.not_ready.as_ref() != Some(&e) {
                        tracing::warn!(reason = %e, "leaving the VXLAN dataplane as it is");
                    }
                    self.not_ready = Some(e);
                }
            }
        }
        if self.not_ready.is_some() || !self.executor.has_pending_work() {
            self.last_stats = ApplyStats::default();
            return Ok(());
        }
        let result = self.executor.apply(nl).await;
        self.last_stats = self.executor.last_stats();
        result
    }

    /// Keeps the last device (alone: no routes, ARP or FDB entries) for the linger time after
    /// the desired state stops having one.
    fn linger(&mut self, desired: &mut VxlanDesired) {
        if desired.device.is_some() {
            self.last_device = desired.device.clone();
            self.linger_until = None;
            return;
        }
        let Some(device) = self.last_device.clone() else {
            return;
        };
        let now = Instant::now();
        let until = *self.linger_until.get_or_insert(now + self.device_linger);
        if now < until {
            tracing::info!(device = %device.name, ?until, "no pool uses VXLAN: keeping the device a while for nodes still sending to it");
            desired.device = Some(device);
        } else {
            self.last_device = None;
            self.linger_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use trellis_datastore::resources::EncapMode;

    use super::*;
    use crate::dataplane::fake::FakeNetlink;
    use crate::dataplane::fixtures;

    fn node(name: &str, underlay: &str, vtep: Option<&str>) -> ClusterUpdate {
        ClusterUpdate::NodeUpdated(fixtures::node(name, underlay, vtep))
    }

    fn pool(mode: EncapMode) -> ClusterUpdate {
        ClusterUpdate::PoolUpdated(fixtures::pool("default", "10.244.0.0/16", mode))
    }

    fn manager() -> VxlanManager {
        VxlanManager::new(VxlanConfig {
            node_name: "node-1".into(),
            mtu: 1450,
            underlay_subnet: None,
        })
    }

    #[test]
    fn on_update_only_records_and_work_happens_in_complete_deferred_work() {
        let mut m = manager();
        let mut k = FakeNetlink::new();
        for u in [
            node("node-1", "192.0.2.1", Some("10.244.0.1")),
            node("node-2", "192.0.2.2", Some("10.244.1.1")),
            pool(EncapMode::Always),
            ClusterUpdate::BlockUpdated("10.244.1.0/26".parse().unwrap(), Some("node-2".into())),
        ] {
            m.on_update(&u);
        }
        assert!(k.sent.is_empty() && k.reads == 0, "on_update did I/O");
        assert!(m.has_pending_work());
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        let sent = k.take_sent();
        assert_eq!(m.last_stats().writes, 5, "{sent:?}");
        assert!(!m.has_pending_work());

        // A replayed update (watch resync) is no work at all.
        m.on_update(&node("node-2", "192.0.2.2", Some("10.244.1.1")));
        assert!(!m.has_pending_work());
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        assert_eq!(m.last_stats(), ApplyStats::default());

        // Pool to Never: routes, ARP and FDB entries go, the device lingers.
        m.on_update(&pool(EncapMode::Never));
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        let sent = k.take_sent();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert!(sent.iter().all(|w| w.starts_with("delete ")), "{sent:?}");
        assert!(k.device.is_some(), "the device went at once");
        assert!(m.wake_at().is_some());
        assert!(
            !m.has_pending_work(),
            "nothing to do before the linger time"
        );
    }

    #[test]
    fn an_unneeded_device_goes_after_the_linger_time() {
        let mut m = manager().with_device_linger(Duration::from_millis(50));
        let mut k = FakeNetlink::new();
        m.on_update(&node("node-1", "192.0.2.1", Some("10.244.0.1")));
        m.on_update(&pool(EncapMode::Always));
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        m.on_update(&pool(EncapMode::Never));
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        k.take_sent();
        assert!(k.device.is_some());
        // Back to VXLAN within the linger time: the device was never gone.
        m.on_update(&pool(EncapMode::Always));
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        assert!(k.take_sent().is_empty());
        assert_eq!(m.wake_at(), None);
        m.on_update(&pool(EncapMode::Never));
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(m.has_pending_work());
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        assert_eq!(k.take_sent(), vec!["delete link vxlan.trellis (index 10)"]);
        assert_eq!(m.wake_at(), None);
        assert!(!m.has_pending_work());
    }

    #[test]
    fn incomplete_local_node_leaves_the_kernel_alone() {
        let mut k = FakeNetlink::new();
        // A device from an earlier run exists; the local node has lost its VTEP in the datastore.
        let mut first = manager();
        first.on_update(&node("node-1", "192.0.2.1", Some("10.244.0.1")));
        first.on_update(&pool(EncapMode::Always));
        block_on(first.complete_deferred_work_with(&mut k)).unwrap();
        k.take_sent();

        let mut m = manager();
        m.on_update(&node("node-1", "192.0.2.1", None));
        m.on_update(&pool(EncapMode::Always));
        let reads = k.reads;
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        assert_eq!(m.not_ready(), Some(&NotReady::NoVtep("node-1".into())));
        assert!(
            k.sent.is_empty() && k.reads == reads,
            "touched the kernel while not ready"
        );
        assert!(!m.has_pending_work());

        m.on_update(&node("node-1", "192.0.2.1", Some("10.244.0.1")));
        block_on(m.complete_deferred_work_with(&mut k)).unwrap();
        assert_eq!(m.not_ready(), None);
        assert!(m.last_stats().resynced);
        assert!(k.take_sent().is_empty(), "the device was already right");
    }
}
