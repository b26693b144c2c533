//! The reconciler: desired routes against our routes in the kernel, written as a delta.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::batch::BATCH;
use super::msg::{delete_request, write_request, RouteOp, RouteRequest};
use super::{
    KernelError, KernelRoute, KernelSyncConfig, NetlinkFailure, RouteTable, EEXIST, ENOENT, ESRCH,
};

/// What one [`KernelSync::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// The pass dumped the kernel's routes first.
    pub resynced: bool,
    /// Routes of ours the dump found.
    pub found: usize,
    /// Requests sent, successful or not.
    pub writes: usize,
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub failures: usize,
}

/// One pass's work: routes to write (`true`: replace one of ours), (prefix, metric) to delete.
type Plan = (Vec<(KernelRoute, bool)>, Vec<(IpNet, u32)>);

/// Keeps our routes in one table equal to the desired set.
#[derive(Debug)]
pub struct KernelSync {
    config: KernelSyncConfig,
    desired: BTreeMap<IpNet, KernelRoute>,
    /// Our routes as the kernel has them (last dump plus successful writes), by prefix and
    /// metric: a dump may find routes a previous incarnation installed with another metric.
    installed: BTreeMap<(IpNet, u32), KernelRoute>,
    /// Prefixes whose desired and installed state may differ.
    dirty: BTreeSet<IpNet>,
    needs_resync: bool,
}

impl KernelSync {
    pub fn new(config: KernelSyncConfig) -> Result<Self, KernelError> {
        if config.metric == 0 {
            return Err(KernelError::InvalidConfig(
                "metric 0 (the kernel stores IPv6 metric 0 as 1024)".into(),
            ));
        }
        if config.table == 0 {
            return Err(KernelError::InvalidConfig(
                "table 0 (RT_TABLE_UNSPEC)".into(),
            ));
        }
        Ok(Self {
            config,
            desired: BTreeMap::new(),
            installed: BTreeMap::new(),
            dirty: BTreeSet::new(),
            needs_resync: true,
        })
    }

    pub fn config(&self) -> KernelSyncConfig {
        self.config
    }

    /// Wants `route` (replacing any desired route for its prefix). No I/O.
    pub fn upsert(&mut self, route: KernelRoute) -> Result<(), KernelError> {
        let route = KernelRoute::new(route.prefix, route.next_hops);
        route.validate()?;
        if self.desired.get(&route.prefix) != Some(&route) {
            self.dirty.insert(route.prefix);
            self.desired.insert(route.prefix, route);
        }
        Ok(())
    }

    /// No longer wants a route for `prefix`. No I/O.
    pub fn remove(&mut self, prefix: IpNet) {
        let prefix = prefix.trunc();
        if self.desired.remove(&prefix).is_some() {
            self.dirty.insert(prefix);
        }
    }

    /// Replaces the whole desired set. Invalid routes are left out and named in the error; the
    /// valid ones are taken all the same.
    pub fn set_desired(
        &mut self,
        routes: impl IntoIterator<Item = KernelRoute>,
    ) -> Result<(), KernelError> {
        let mut invalid = Vec::new();
        let mut next = BTreeMap::new();
        for r in routes {
            let r = KernelRoute::new(r.prefix, r.next_hops);
            match r.validate() {
                Ok(()) => {
                    next.insert(r.prefix, r);
                }
                Err(e) => invalid.push(e),
            }
        }
        for prefix in self.desired.keys() {
            if !next.contains_key(prefix) {
                self.dirty.insert(*prefix);
            }
        }
        for (prefix, r) in &next {
            if self.desired.get(prefix) != Some(r) {
                self.dirty.insert(*prefix);
            }
        }
        self.desired = next;
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(KernelError::InvalidRoutes(invalid))
        }
    }

    pub fn desired(&self) -> &BTreeMap<IpNet, KernelRoute> {
        &self.desired
    }

    /// Our routes in the kernel, as last dumped or written.
    pub fn installed(&self) -> impl Iterator<Item = &KernelRoute> + '_ {
        self.installed.values()
    }

    /// Makes the next [`Self::apply`] dump the kernel again (e.g. on a periodic timer).
    pub fn request_resync(&mut self) {
        self.needs_resync = true;
    }

    pub fn has_pending_work(&self) -> bool {
        self.needs_resync || !self.dirty.is_empty()
    }

    /// One reconcile pass: dumps our routes if needed, then creates, replaces (adds before
    /// deletes) and deletes only what differs. Every write is attempted; the failures are
    /// returned together, and the pass after a failure dumps the kernel again and retries.
    pub async fn apply(&mut self, table: &dyn RouteTable) -> Result<ApplyStats, KernelError> {
        let mut stats = ApplyStats::default();
        if self.needs_resync {
            let dumped =
                table
                    .dump_ours(self.config.table)
                    .await
                    .map_err(|source| KernelError::Dump {
                        table: self.config.table,
                        source,
                    })?;
            stats.resynced = true;
            stats.found = dumped.len();
            self.installed = dumped
                .into_iter()
                .map(|r| ((r.route.prefix, r.metric), r.route))
                .collect();
            self.dirty = self.desired.keys().copied().collect();
            self.dirty
                .extend(self.installed.keys().map(|(prefix, _)| *prefix));
            self.needs_resync = false;
        }
        let (writes, deletes) = self.plan();
        let mut failures = Vec::new();
        // Writes first, then deletes (make before break for a prefix changing metric), each in
        // batches of up to BATCH requests that the table may send as one datagram: a prefix
        // appears at most once per phase, so the order inside a phase does not matter.
        // Requests are built per batch, so a full table never sits in memory as messages.
        let (table_id, metric) = (self.config.table, self.config.metric);
        for chunk in writes.chunks(BATCH) {
            let mut sent = Vec::with_capacity(chunk.len());
            let mut requests = Vec::with_capacity(chunk.len());
            for (route, replace) in chunk {
                match write_request(route, table_id, metric, *replace) {
                    Ok(r) => {
                        requests.push(r);
                        sent.push((route, *replace));
                    }
                    Err(e) => failures.push(e),
                }
            }
            stats.writes += requests.len();
            let answers = table.send_batch(&requests).await;
            for (((route, replace), request), res) in sent.into_iter().zip(requests).zip(answers) {
                match res {
                    Ok(()) => {
                        if replace {
                            stats.replaced += 1;
                        } else {
                            stats.created += 1;
                        }
                        tracing::debug!(route = %request.what, "route written");
                        self.installed.insert((route.prefix, metric), route.clone());
                    }
                    Err(e) => failures.push(self.write_failed(request, e)),
                }
            }
        }
        for chunk in deletes.chunks(BATCH) {
            let requests: Vec<RouteRequest> = chunk
                .iter()
                .map(|(prefix, m)| delete_request(*prefix, table_id, *m))
                .collect();
            stats.writes += requests.len();
            let answers = table.send_batch(&requests).await;
            for ((key, request), res) in chunk.iter().zip(requests).zip(answers) {
                match res {
                    Ok(()) => {
                        stats.deleted += 1;
                        tracing::debug!(route = %request.what, "route deleted");
                        self.installed.remove(key);
                    }
                    // Already gone (deleted by hand, or with its device): what we wanted.
                    Err(e) if matches!(e.errno, Some(ESRCH | ENOENT)) => {
                        self.installed.remove(key);
                    }
                    Err(e) => failures.push(self.write_failed(request, e)),
                }
            }
        }
        stats.failures = failures.len();
        if failures.is_empty() {
            Ok(stats)
        } else {
            Err(KernelError::Apply { failures, stats })
        }
    }

    /// Takes the dirty prefixes: routes to write (`true`: replace one of ours) and (prefix,
    /// metric) of ours to delete. A prefix with nothing to do is clean from now on; one with
    /// work is clean once its writes succeed (a failure requests a resync, which dirties all).
    fn plan(&mut self) -> Plan {
        let metric = self.config.metric;
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        for prefix in std::mem::take(&mut self.dirty) {
            let want = self.desired.get(&prefix);
            if let Some(want) = want {
                match self.installed.get(&(prefix, metric)) {
                    Some(have) if want.satisfied_by(have) => {}
                    Some(_) => writes.push((want.clone(), true)),
                    None => writes.push((want.clone(), false)),
                }
            }
            for (prefix, m) in self
                .installed
                .range((prefix, 0)..=(prefix, u32::MAX))
                .map(|(k, _)| *k)
            {
                if want.is_none() || m != metric {
                    deletes.push((prefix, m));
                }
            }
        }
        (writes, deletes)
    }

    fn write_failed(&mut self, request: RouteRequest, e: NetlinkFailure) -> KernelError {
        self.needs_resync = true;
        let error = if request.op == RouteOp::Create && e.errno == Some(EEXIST) {
            KernelError::Conflict {
                prefix: request.prefix,
                table: self.config.table,
                metric: self.config.metric,
            }
        } else {
            KernelError::Write {
                prefix: request.prefix,
                what: request.what,
                source: e,
            }
        };
        tracing::warn!(error = %error, "route write failed; the next pass resyncs and retries");
        error
    }
}

/// Deletes every route with our protocol in table `table_id`, for an orderly shutdown without
/// graceful restart (by default a stopping speaker leaves its routes for its successor to
/// adopt). Returns how many were deleted.
pub async fn flush_ours(table: &dyn RouteTable, table_id: u32) -> Result<usize, KernelError> {
    let ours = table
        .dump_ours(table_id)
        .await
        .map_err(|source| KernelError::Dump {
            table: table_id,
            source,
        })?;
    let mut stats = ApplyStats::default();
    let mut failures = Vec::new();
    for r in ours {
        let request = delete_request(r.route.prefix, table_id, r.metric);
        stats.writes += 1;
        match table.send(&request).await {
            Ok(()) => stats.deleted += 1,
            Err(e) if matches!(e.errno, Some(ESRCH | ENOENT)) => {}
            Err(source) => failures.push(KernelError::Write {
                prefix: request.prefix,
                what: request.what,
                source,
            }),
        }
    }
    stats.failures = failures.len();
    if failures.is_empty() {
        Ok(stats.deleted)
    } else {
        Err(KernelError::Apply { failures, stats })
    }
}
