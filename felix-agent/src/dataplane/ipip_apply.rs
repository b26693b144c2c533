//! The kernel side of the IPIP manager.
//!
//! ```text
//!  ClusterView ──ipip::compute_ipip_desired──► IpipDesired
//!      ──► IpipExecutor ── tunl0 plan + DeltaTracker (routes)
//!              │  ipip_msg (pure): Request { RouteNetlinkMessage, flags }, parse_*
//!              ▼
//!        dyn IpipNetlink ── RtNetlink (rtnetlink::Handle: the only I/O) | fake in tests
//! ```
//!
//! Like the VXLAN executor it reads tunl0 and our routes on it on the first pass, after a failed
//! write and on the periodic resync, and then writes only the difference. A pass is split in two
//! ([`IpipManager::apply_additions`], [`IpipManager::apply_deletions`]) so the agent can put the
//! VXLAN managers between them: a pool switched between VXLAN and IPIP keeps a route throughout.
//!
//! A kernel without the ipip module answers the creation of tunl0 with EOPNOTSUPP. That is not a
//! failed pass to retry every few hundred milliseconds but a property of the node: the manager
//! records [`IpipError::NoKernelSupport`] (the agent shows it in its status, logs it once, and
//! counts it in `trellis_dataplane_problems`), leaves the rest of the dataplane alone, and tries
//! again on the periodic resync or when the IPIP pools change.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::RouteMessageBuilder;

use super::delta::DeltaTracker;
use super::ipip::{
    compute_ipip_desired, IpipDesired, IpipDeviceSpec, IpipError, IpipNotReady, IPIP_DEVICE,
};
use super::ipip_msg::{
    add_ipip_route, create_tunnel, delete_ipip_route, modify_tunnel, parse_ipip_route,
    parse_tunnel_link, plan_tunnel, ObservedTunnel, TunnelAction,
};
use super::vxlan::{ClusterView, VxlanConfig};
use super::vxlan_apply::{ApplyStats, Pass, RtNetlink, VxlanNetlink};
use super::vxlan_msg::{add_address, delete_address, Request};
use super::{ClusterUpdate, DataplaneError};

const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

/// The errno of a kernel answer, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel access.

/// The kernel interface the IPIP manager needs (object safe; a fake stands in for unit tests).
#[async_trait]
pub trait IpipNetlink: Send {
    /// The link called `name` with its addresses, or `None`.
    async fn read_tunnel(&mut self, name: &str)
        -> Result<Option<ObservedTunnel>, rtnetlink::Error>;
    /// Our routes on link `index` (see [`parse_ipip_route`]).
    async fn read_ipip_routes(
        &mut self,
        index: u32,
    ) -> Result<BTreeMap<IpNet, IpAddr>, rtnetlink::Error>;
    async fn send_ipip(&mut self, request: &Request) -> Result<(), rtnetlink::Error>;
}

#[async_trait]
impl IpipNetlink for RtNetlink {
    async fn read_tunnel(
        &mut self,
        name: &str,
    ) -> Result<Option<ObservedTunnel>, rtnetlink::Error> {
        let Some((msg, addresses)) = self.read_link(name).await? else {
            return Ok(None);
        };
        let mut t = parse_tunnel_link(&msg);
        t.addresses = addresses;
        Ok(Some(t))
    }

    async fn read_ipip_routes(
        &mut self,
        index: u32,
    ) -> Result<BTreeMap<IpNet, IpAddr>, rtnetlink::Error> {
        let routes: Vec<RouteMessage> = self
            .handle()
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await?;
        Ok(routes
            .iter()
            .filter_map(|m| parse_ipip_route(m, index))
            .collect())
    }

    async fn send_ipip(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        VxlanNetlink::send(self, request).await
    }
}

// ---------------------------------------------------------------------------------------------
// The executor.

/// Desired tunl0 and routes in, minimal netlink writes out.
#[derive(Debug)]
pub struct IpipExecutor {
    device: Option<IpipDeviceSpec>,
    pools: Vec<String>,
    observed: Option<ObservedTunnel>,
    routes: DeltaTracker<IpNet, IpAddr>,
    needs_resync: bool,
    /// Why tunl0 cannot be used, as the last pass found.
    problem: Option<IpipError>,
    last_stats: ApplyStats,
}

impl Default for IpipExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl IpipExecutor {
    /// An executor that resyncs on its first pass.
    pub fn new() -> Self {
        Self {
            device: None,
            pools: Vec::new(),
            observed: None,
            routes: DeltaTracker::new(),
            needs_resync: true,
            problem: None,
            last_stats: ApplyStats::default(),
        }
    }

    pub fn set_desired(&mut self, d: &IpipDesired) {
        // A node-level problem is retried when what it was about changes.
        if self.problem.is_some() && (self.device != d.device || self.pools != d.pools) {
            self.needs_resync = true;
        }
        self.device = d.device.clone();
        self.pools = d.pools.clone();
        self.routes.replace_all_desired(d.routes.clone());
    }

    pub fn request_resync(&mut self) {
        self.needs_resync = true;
    }

    pub fn problem(&self) -> Option<&IpipError> {
        self.problem.as_ref()
    }

    pub fn routes(&self) -> &DeltaTracker<IpNet, IpAddr> {
        &self.routes
    }

    pub fn observed_tunnel(&self) -> Option<&ObservedTunnel> {
        self.observed.as_ref()
    }

    pub fn last_stats(&self) -> ApplyStats {
        self.last_stats
    }

    pub fn has_pending_work(&self) -> bool {
        self.needs_resync
            || (self.problem.is_none()
                && (plan_tunnel(self.device.as_ref(), self.observed.as_ref())
                    != TunnelAction::Nothing
                    || !self.routes.in_sync()))
    }

    /// Reads tunl0 and our routes on it into the trackers.
    async fn resync(&mut self, nl: &mut dyn IpipNetlink) -> Result<(), DataplaneError> {
        self.observed = self.read_tunnel(nl, "the link").await?;
        let routes = match &self.observed {
            Some(t) => {
                nl.read_ipip_routes(t.index)
                    .await
                    .map_err(|source| DataplaneError::Read {
                        what: format!("the routes on {IPIP_DEVICE}"),
                        source,
                    })?
            }
            None => BTreeMap::new(),
        };
        self.routes.replace_all_dataplane(routes);
        self.needs_resync = false;
        Ok(())
    }

    async fn read_tunnel(
        &self,
        nl: &mut dyn IpipNetlink,
        what: &str,
    ) -> Result<Option<ObservedTunnel>, DataplaneError> {
        nl.read_tunnel(IPIP_DEVICE)
            .await
            .map_err(|source| DataplaneError::Read {
                what: format!("{what} {IPIP_DEVICE}"),
                source,
            })
    }

    /// The first half of a pass: reads the kernel if needed, brings tunl0 to the desired state
    /// and adds or replaces routes.
    pub async fn apply_additions(
        &mut self,
        nl: &mut dyn IpipNetlink,
    ) -> Result<(), DataplaneError> {
        let mut pass = Pass::new();
        let result = self.additions(nl, &mut pass).await;
        self.last_stats = pass.stats;
        let result = pass.finish(result);
        if result.is_err() {
            self.needs_resync = true;
        }
        result
    }

    async fn additions(
        &mut self,
        nl: &mut dyn IpipNetlink,
        pass: &mut Pass,
    ) -> Result<(), DataplaneError> {
        if self.needs_resync {
            self.resync(nl).await?;
            pass.stats.resynced = true;
        }
        self.problem = None;
        if !self.apply_tunnel(nl, pass).await? || self.device.is_none() {
            return Ok(());
        }
        let Some(index) = self.observed.as_ref().map(|t| t.index) else {
            return Ok(());
        };
        let todo: Vec<(IpNet, IpAddr)> = self
            .routes
            .pending_updates()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (block, via) in todo {
            let ours = self.routes.dataplane().contains_key(&block);
            let req = add_ipip_route(index, block, via, ours);
            let result = nl.send_ipip(&req).await;
            if pass.record(req, result) {
                self.routes.mark_applied_update(&block);
            }
        }
        Ok(())
    }

    /// Creates or fixes tunl0; returns whether it is usable for routes now.
    async fn apply_tunnel(
        &mut self,
        nl: &mut dyn IpipNetlink,
        pass: &mut Pass,
    ) -> Result<bool, DataplaneError> {
        // Create (or find the module's own tunl0), then set MTU, up and the address: at most
        // three rounds.
        for _ in 0..3 {
            let Some(d) = self.device.clone() else {
                return Ok(true);
            };
            match plan_tunnel(Some(&d), self.observed.as_ref()) {
                TunnelAction::Nothing => return Ok(true),
                TunnelAction::Foreign { kind } => {
                    self.problem = Some(IpipError::NotIpip { kind });
                    return Ok(false);
                }
                TunnelAction::Create => {
                    tracing::info!(device = IPIP_DEVICE, "creating the device");
                    let req = create_tunnel(&d);
                    let result = nl.send_ipip(&req).await;
                    match result.as_ref().err().and_then(errno) {
                        Some(EOPNOTSUPP) => {
                            pass.stats.writes += 1;
                            self.problem = Some(IpipError::NoKernelSupport {
                                pools: self.pools.clone(),
                            });
                            return Ok(false);
                        }
                        // Loading the module for this very request made the kernel's own
                        // tunl0 in this namespace: use that one.
                        Some(EEXIST) => pass.stats.writes += 1,
                        _ => {
                            if !pass.record(req, result) {
                                return Ok(false);
                            }
                        }
                    }
                    self.observed = self.read_tunnel(nl, "the link just created").await?;
                    if self.observed.is_none() {
                        return Err(DataplaneError::DeviceMismatch {
                            name: IPIP_DEVICE.into(),
                            reason: "the kernel accepted its creation but does not list it".into(),
                        });
                    }
                }
                TunnelAction::Modify {
                    index,
                    link,
                    add_address: new_address,
                    remove_addresses,
                } => {
                    let mut ok = true;
                    if link {
                        let req = modify_tunnel(index, &d);
                        let result = nl.send_ipip(&req).await;
                        ok &= pass.record(req, result);
                    }
                    for net in remove_addresses {
                        let req = delete_address(index, net, IPIP_DEVICE);
                        let result = nl.send_ipip(&req).await;
                        ok &= pass.record(req, result);
                    }
                    if let Some(net) = new_address {
                        let req = add_address(index, net, IPIP_DEVICE);
                        let result = nl.send_ipip(&req).await;
                        ok &= pass.record(req, result);
                    }
                    if !ok {
                        return Ok(false);
                    }
                    if let Some(t) = &mut self.observed {
                        t.mtu = Some(d.mtu);
                        t.up = true;
                        t.addresses.retain(|a| !a.addr().is_ipv4());
                        t.addresses.push(IpNet::from(IpAddr::V4(d.address)));
                    }
                }
            }
        }
        Ok(plan_tunnel(self.device.as_ref(), self.observed.as_ref()) == TunnelAction::Nothing)
    }

    /// The second half of a pass: deletes our routes that are no longer desired (all of them
    /// when no pool uses IPIP any more). tunl0 itself stays.
    pub async fn apply_deletions(
        &mut self,
        nl: &mut dyn IpipNetlink,
    ) -> Result<(), DataplaneError> {
        if self.needs_resync {
            return Ok(());
        }
        let Some(index) = self.observed.as_ref().map(|t| t.index) else {
            return Ok(());
        };
        let stale: Vec<(IpNet, IpAddr)> = self
            .routes
            .pending_deletions()
            .map(|k| (*k, self.routes.dataplane()[k]))
            .collect();
        let mut pass = Pass::new();
        for (block, via) in stale {
            let req = delete_ipip_route(index, block, via);
            let result = nl.send_ipip(&req).await;
            if pass.record(req, result) {
                self.routes.mark_applied_deletion(&block);
            }
        }
        self.last_stats.writes += pass.stats.writes;
        self.last_stats.failures += pass.stats.failures;
        let result = pass.finish(Ok(()));
        if result.is_err() {
            self.needs_resync = true;
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// The manager.

/// Programs tunl0 and the IPIP routes of this node from the cluster view.
#[derive(Debug)]
pub struct IpipManager {
    config: VxlanConfig,
    /// tunl0's MTU: the underlay's minus [`super::ipip::IPIP_OVERHEAD`].
    mtu: u32,
    view: ClusterView,
    dirty: bool,
    not_ready: Option<IpipNotReady>,
    executor: IpipExecutor,
    /// The problem last logged, so a lasting one is logged once, not on every pass.
    reported: Option<IpipError>,
}

impl IpipManager {
    /// `config` names the node and its subnet (its `mtu` is VXLAN's; tunl0 gets `mtu`).
    pub fn new(config: VxlanConfig, mtu: u32) -> Self {
        Self {
            config,
            mtu,
            view: ClusterView::default(),
            dirty: true,
            not_ready: None,
            executor: IpipExecutor::new(),
            reported: None,
        }
    }

    /// Records a cluster change; no I/O.
    pub fn on_update(&mut self, update: &ClusterUpdate) {
        if self.view.apply(update) {
            self.dirty = true;
        }
    }

    /// Makes the next pass read the kernel again (periodic resync; also retries a node-level
    /// problem such as a missing ipip module).
    pub fn request_resync(&mut self) {
        self.executor.request_resync();
    }

    pub fn has_pending_work(&self) -> bool {
        self.dirty || (self.not_ready.is_none() && self.executor.has_pending_work())
    }

    pub fn not_ready(&self) -> Option<&IpipNotReady> {
        self.not_ready.as_ref()
    }

    /// Why IPIP pools cannot work on this node, if they cannot (e.g. no ipip module).
    pub fn problem(&self) -> Option<&IpipError> {
        self.executor.problem()
    }

    /// IPIP routes in the kernel (as last read or written).
    pub fn routes_programmed(&self) -> usize {
        self.executor.routes().dataplane().len()
    }

    pub fn last_stats(&self) -> ApplyStats {
        self.executor.last_stats()
    }

    pub fn executor(&self) -> &IpipExecutor {
        &self.executor
    }

    /// A whole pass (tests; the agent runs the two halves around the VXLAN managers).
    pub async fn complete_deferred_work_with(
        &mut self,
        nl: &mut dyn IpipNetlink,
    ) -> Result<(), DataplaneError> {
        let added = self.apply_additions(nl).await;
        let deleted = self.apply_deletions(nl).await;
        added.and(deleted)
    }

    /// [`Self::complete_deferred_work_with`] over the rtnetlink connection `handle`.
    pub async fn complete_deferred_work(
        &mut self,
        handle: &rtnetlink::Handle,
    ) -> Result<(), DataplaneError> {
        let mut nl = RtNetlink::new(handle.clone());
        self.complete_deferred_work_with(&mut nl).await
    }

    /// Computes the desired state if the view changed, then [`IpipExecutor::apply_additions`].
    pub async fn apply_additions(
        &mut self,
        nl: &mut dyn IpipNetlink,
    ) -> Result<(), DataplaneError> {
        if self.dirty {
            self.dirty = false;
            match compute_ipip_desired(&self.view, &self.config, self.mtu) {
                Ok(desired) => {
                    if self.not_ready.take().is_some() {
                        tracing::info!("IPIP configuration is complete again");
                    }
                    self.executor.set_desired(&desired);
                }
                Err(e) => {
                    if self.not_ready.as_ref() != Some(&e) {
                        tracing::warn!(reason = %e, "leaving the IPIP dataplane as it is");
                    }
                    self.not_ready = Some(e);
                }
            }
        }
        if self.not_ready.is_some() || !self.executor.has_pending_work() {
            self.executor.last_stats = ApplyStats::default();
            return Ok(());
        }
        let result = self.executor.apply_additions(nl).await;
        self.report_problem();
        result
    }

    pub async fn apply_deletions(
        &mut self,
        nl: &mut dyn IpipNetlink,
    ) -> Result<(), DataplaneError> {
        if self.not_ready.is_some() {
            return Ok(());
        }
        self.executor.apply_deletions(nl).await
    }

    fn report_problem(&mut self) {
        let now = self.executor.problem();
        if now == self.reported.as_ref() {
            return;
        }
        match now {
            Some(p) => {
                tracing::error!(problem = %p, "IPIP pools cannot work on this node; the rest of the dataplane is unaffected")
            }
            None => tracing::info!("the IPIP problem reported before is gone"),
        }
        self.reported = now.cloned();
    }
}

#[cfg(test)]
#[path = "ipip_apply_tests.rs"]
mod tests;
