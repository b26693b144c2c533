//! The kernel side of the direct routes (see `direct`): a manager that keeps the main table's
//! protocol-80, metric-10 routes equal to the desired set, both address families at once.
//!
//! Like the VXLAN executor it reads what the kernel has on its first pass, after any failed
//! write and on the periodic resync, and then writes only the difference: an agent restart
//! re-creates nothing, and routes of other protocols or metrics are never looked at.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::RouteMessageBuilder;

use super::delta::DeltaTracker;
use super::direct::{
    add_direct_route, compute_direct_routes, delete_direct_route, parse_direct_route,
    DirectNotReady,
};
use super::vxlan::{ClusterView, VxlanConfig};
use super::vxlan_apply::{ApplyStats, Pass, RtNetlink, VxlanNetlink};
use super::vxlan_msg::Request;
use super::{ClusterUpdate, DataplaneError};

/// The kernel interface the direct-route manager needs (a fake stands in for unit tests).
#[async_trait]
pub trait RouteNetlink: Send {
    /// Our direct routes of both families (see [`parse_direct_route`]).
    async fn read_direct_routes(&mut self) -> Result<BTreeMap<IpNet, IpAddr>, rtnetlink::Error>;
    async fn send_route(&mut self, request: &Request) -> Result<(), rtnetlink::Error>;
}

#[async_trait]
impl RouteNetlink for RtNetlink {
    async fn read_direct_routes(&mut self) -> Result<BTreeMap<IpNet, IpAddr>, rtnetlink::Error> {
        let mut out = BTreeMap::new();
        for dump in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle()
                .route()
                .get(dump)
                .execute()
                .try_collect()
                .await?;
            out.extend(routes.iter().filter_map(parse_direct_route));
        }
        Ok(out)
    }

    async fn send_route(&mut self, request: &Request) -> Result<(), rtnetlink::Error> {
        VxlanNetlink::send(self, request).await
    }
}

/// Programs the direct routes of this node from the cluster view.
#[derive(Debug)]
pub struct DirectRouteManager {
    config: VxlanConfig,
    view: ClusterView,
    dirty: bool,
    not_ready: Option<DirectNotReady>,
    routes: DeltaTracker<IpNet, IpAddr>,
    needs_resync: bool,
    last_stats: ApplyStats,
}

impl DirectRouteManager {
    pub fn new(config: VxlanConfig) -> Self {
        Self {
            config,
            view: ClusterView::default(),
            dirty: true,
            not_ready: None,
            routes: DeltaTracker::new(),
            needs_resync: true,
            last_stats: ApplyStats::default(),
        }
    }

    /// Records a cluster change; no I/O.
    pub fn on_update(&mut self, update: &ClusterUpdate) {
        if self.view.apply(update) {
            self.dirty = true;
        }
    }

    pub fn request_resync(&mut self) {
        self.needs_resync = true;
    }

    pub fn has_pending_work(&self) -> bool {
        self.dirty || (self.not_ready.is_none() && (self.needs_resync || !self.routes.in_sync()))
    }

    /// Direct routes in the kernel (as last read or written).
    pub fn routes_programmed(&self) -> usize {
        self.routes.dataplane().len()
    }

    pub fn last_stats(&self) -> ApplyStats {
        self.last_stats
    }

    pub fn not_ready(&self) -> Option<&DirectNotReady> {
        self.not_ready.as_ref()
    }

    /// One reconcile pass. A failed write leaves "needs resync" set: the next pass reads the
    /// kernel again and retries what is still missing.
    pub async fn complete_deferred_work_with(
        &mut self,
        nl: &mut dyn RouteNetlink,
    ) -> Result<(), DataplaneError> {
        let added = self.apply_additions(nl).await;
        let deleted = self.apply_deletions(nl).await;
        added.and(deleted)
    }

    /// The first half of a pass: computes the desired routes, reads the kernel if needed, and
    /// adds or replaces routes. The agent runs it before the VXLAN managers and
    /// [`Self::apply_deletions`] after them, so a block switching between VXLAN and a direct
    /// route always has one of the two (make before break, in both directions).
    pub async fn apply_additions(
        &mut self,
        nl: &mut dyn RouteNetlink,
    ) -> Result<(), DataplaneError> {
        self.last_stats = ApplyStats::default();
        if self.dirty {
            self.dirty = false;
            match compute_direct_routes(&self.view, &self.config) {
                Ok(desired) => {
                    self.not_ready = None;
                    self.routes.replace_all_desired(desired);
                }
                Err(e) => {
                    if self.not_ready.as_ref() != Some(&e) {
                        tracing::warn!(reason = %e, "leaving the direct routes as they are");
                    }
                    self.not_ready = Some(e);
                }
            }
        }
        if self.not_ready.is_some() {
            return Ok(());
        }
        if self.needs_resync {
            let read = nl
                .read_direct_routes()
                .await
                .map_err(|source| DataplaneError::Read {
                    what: "the direct routes".into(),
                    source,
                })?;
            self.routes.replace_all_dataplane(read);
            self.needs_resync = false;
            self.last_stats.resynced = true;
        }
        let todo: Vec<(IpNet, IpAddr)> = self
            .routes
            .pending_updates()
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut pass = Pass::new();
        for (block, via) in todo {
            let req = add_direct_route(block, via, self.routes.dataplane().contains_key(&block));
            let result = nl.send_route(&req).await;
            if pass.record(req, result) {
                self.routes.mark_applied_update(&block);
            }
        }
        self.finish(pass)
    }

    /// The second half of a pass: deletes the routes no longer desired.
    pub async fn apply_deletions(
        &mut self,
        nl: &mut dyn RouteNetlink,
    ) -> Result<(), DataplaneError> {
        if self.not_ready.is_some() || self.needs_resync {
            return Ok(());
        }
        let stale: Vec<(IpNet, IpAddr)> = self
            .routes
            .pending_deletions()
            .map(|k| (*k, self.routes.dataplane()[k]))
            .collect();
        let mut pass = Pass::new();
        for (block, via) in stale {
            let req = delete_direct_route(block, via);
            let result = nl.send_route(&req).await;
            if pass.record(req, result) {
                self.routes.mark_applied_deletion(&block);
            }
        }
        self.finish(pass)
    }

    /// Adds a half pass's writes to the stats; a failure makes the next pass re-read the kernel.
    fn finish(&mut self, mut pass: Pass) -> Result<(), DataplaneError> {
        self.last_stats.writes += pass.stats.writes;
        self.last_stats.failures += pass.stats.failures;
        let result = pass.finish(Ok(()));
        if result.is_err() {
            self.needs_resync = true;
        }
        result
    }
}

#[cfg(test)]
#[path = "direct_apply_tests.rs"]
mod tests;
