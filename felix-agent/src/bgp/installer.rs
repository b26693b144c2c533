//! Learned routes -> the kernel, through the speaker crate's [`KernelSync`].
//!
//! Keeps the latest [`RouteEvent`] per prefix and decides each prefix's kernel route from it
//! and the [`KernelFilter`]. Two holds keep forwarding going through changes:
//! - **restart**: routes found in the kernel at start (a previous run's) stay until
//!   [`Installer::set_ready`], i.e. until every peer has re-sent its table; a learned route
//!   replaces an adopted one at once.
//! - **handover**: when a pool starts encapsulating, its routes stay for [`HANDOVER`] so the
//!   encapsulation managers, reacting to the same pool change in their own task, have their
//!   routes in first (make before break across managers).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;
use trellis_bgp_speaker::kernel::{KernelError, KernelRoute, KernelSync, RouteTable};
use trellis_bgp_speaker::speaker::RouteEvent;

use super::kernel_filter::{KernelFilter, Verdict};

/// How long routes of a pool that starts encapsulating stay (see the module documentation).
pub const HANDOVER: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Installer {
    sync: KernelSync,
    learned: BTreeMap<IpNet, RouteEvent>,
    filter: KernelFilter,
    /// A previous run's routes, kept until ready.
    adopted: BTreeMap<IpNet, KernelRoute>,
    ready: bool,
    handover_until: Option<Instant>,
}

impl Installer {
    /// `adopted`: our routes already in the kernel. With none there is nothing to protect and
    /// the installer is ready at once.
    pub fn new(sync: KernelSync, adopted: Vec<KernelRoute>) -> Self {
        let adopted: BTreeMap<IpNet, KernelRoute> =
            adopted.into_iter().map(|r| (r.prefix, r)).collect();
        let mut me = Installer {
            sync,
            learned: BTreeMap::new(),
            filter: KernelFilter::default(),
            ready: adopted.is_empty(),
            adopted,
            handover_until: None,
        };
        me.refresh_all();
        me
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The restart hold is over: routes no peer re-announced go.
    pub fn set_ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.adopted.clear();
            self.refresh_all();
        }
    }

    /// The speaker was replaced: what it learned is gone, and the kernel keeps today's routes
    /// until the new one is ready, as after a restart.
    pub fn restart(&mut self) {
        self.adopted = self.sync.desired().clone();
        self.learned.clear();
        self.ready = self.adopted.is_empty();
    }

    pub fn on_event(&mut self, ev: RouteEvent) {
        let prefix = ev.prefix;
        if ev.next_hops.is_empty() {
            self.learned.remove(&prefix);
        } else {
            self.learned.insert(prefix, ev);
        }
        self.refresh(prefix);
    }

    pub fn set_filter(&mut self, filter: KernelFilter) {
        if filter == self.filter {
            return;
        }
        let newly_encapsulated = filter
            .encapsulated_pools
            .iter()
            .any(|p| !self.filter.encapsulated_pools.contains(p));
        if newly_encapsulated {
            self.handover_until = Some(Instant::now() + HANDOVER);
        }
        self.filter = filter;
        self.refresh_all();
    }

    /// When the handover hold ends (the caller then calls [`Self::end_handover`]).
    pub fn handover_deadline(&self) -> Option<Instant> {
        self.handover_until
    }

    pub fn end_handover(&mut self) {
        if self.handover_until.take().is_some() {
            self.refresh_all();
        }
    }

    /// Learned prefixes whose every next hop is unreachable from this node.
    pub fn unreachable(&self) -> Vec<IpNet> {
        self.learned
            .values()
            .filter(|ev| self.filter.verdict(ev) == Verdict::Unreachable)
            .map(|ev| ev.prefix)
            .collect()
    }

    pub fn installed_count(&self) -> usize {
        self.sync.installed().count()
    }

    pub fn request_resync(&mut self) {
        self.sync.request_resync();
    }

    pub fn has_pending_work(&self) -> bool {
        self.sync.has_pending_work()
    }

    pub async fn apply(
        &mut self,
        table: &dyn RouteTable,
    ) -> Result<trellis_bgp_speaker::kernel::ApplyStats, KernelError> {
        self.sync.apply(table).await
    }

    /// The route `prefix` should have in the kernel now.
    fn route_for(&self, prefix: &IpNet) -> Option<KernelRoute> {
        let verdict = self
            .learned
            .get(prefix)
            .map_or(Verdict::Absent, |ev| self.filter.verdict(ev));
        match verdict {
            Verdict::Install(r) => Some(r),
            Verdict::Encapsulated if self.handover_until.is_some() => {
                self.sync.desired().get(prefix).cloned()
            }
            _ if !self.ready => self.adopted.get(prefix).cloned(),
            _ => None,
        }
    }

    fn refresh(&mut self, prefix: IpNet) {
        match self.route_for(&prefix) {
            Some(r) => {
                if let Err(e) = self.sync.upsert(r) {
                    tracing::warn!(%prefix, error = %e, "learned route not installable");
                }
            }
            None => self.sync.remove(prefix),
        }
    }

    fn refresh_all(&mut self) {
        let prefixes: BTreeSet<IpNet> = self
            .learned
            .keys()
            .chain(self.adopted.keys())
            .chain(self.sync.desired().keys())
            .copied()
            .collect();
        for p in prefixes {
            self.refresh(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_bgp_speaker::kernel::{KernelSyncConfig, NextHop};
    use trellis_bgp_speaker::speaker::LearnedNextHop;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ev(prefix: &str, hop: Option<&str>) -> RouteEvent {
        RouteEvent {
            prefix: net(prefix),
            next_hops: hop
                .map(|h| LearnedNextHop {
                    addr: h.parse().unwrap(),
                    link_local: None,
                    peer: h.parse().unwrap(),
                })
                .into_iter()
                .collect(),
        }
    }

    fn route(prefix: &str, hop: &str) -> KernelRoute {
        KernelRoute::new(net(prefix), [NextHop::via(hop.parse().unwrap())])
    }

    fn desired(i: &Installer) -> Vec<String> {
        i.sync.desired().values().map(ToString::to_string).collect()
    }

    fn sync() -> KernelSync {
        KernelSync::new(KernelSyncConfig::default()).unwrap()
    }

    #[test]
    fn a_restart_keeps_adopted_routes_until_ready_and_learned_ones_replace_them() {
        let mut i = Installer::new(
            sync(),
            vec![
                route("10.244.1.0/26", "10.0.0.2"),
                route("10.244.2.0/26", "10.0.0.3"),
            ],
        );
        assert!(!i.ready());
        assert_eq!(
            desired(&i),
            ["10.244.1.0/26 via 10.0.0.2", "10.244.2.0/26 via 10.0.0.3"]
        );
        // A peer re-announces one block with a new next hop; the other is not re-announced.
        i.on_event(ev("10.244.1.0/26", Some("10.0.0.9")));
        assert_eq!(
            desired(&i),
            ["10.244.1.0/26 via 10.0.0.9", "10.244.2.0/26 via 10.0.0.3"]
        );
        // A withdrawal during the hold falls back to the adopted route.
        i.on_event(ev("10.244.1.0/26", None));
        assert_eq!(
            desired(&i),
            ["10.244.1.0/26 via 10.0.0.2", "10.244.2.0/26 via 10.0.0.3"]
        );
        i.on_event(ev("10.244.1.0/26", Some("10.0.0.9")));
        i.set_ready();
        assert_eq!(desired(&i), ["10.244.1.0/26 via 10.0.0.9"]);
        // Replacing the speaker holds today's routes again.
        i.restart();
        assert!(!i.ready());
        assert_eq!(desired(&i), ["10.244.1.0/26 via 10.0.0.9"]);
    }

    #[tokio::test]
    async fn a_pool_that_starts_encapsulating_keeps_its_routes_for_the_handover() {
        let mut i = Installer::new(sync(), vec![]);
        assert!(i.ready());
        i.on_event(ev("10.244.1.0/26", Some("10.0.0.2")));
        i.on_event(ev("192.0.2.0/24", Some("10.0.0.254")));
        assert_eq!(desired(&i).len(), 2);
        i.set_filter(KernelFilter {
            encapsulated_pools: vec![net("10.244.0.0/16")],
            ..Default::default()
        });
        assert_eq!(desired(&i).len(), 2, "held during the handover");
        let deadline = i.handover_deadline().unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(left > Duration::ZERO && left <= HANDOVER, "{left:?}");
        i.end_handover();
        assert_eq!(desired(&i), ["192.0.2.0/24 via 10.0.0.254"]);
        // And back to routed: the route returns at once.
        i.set_filter(KernelFilter::default());
        assert!(i.handover_deadline().is_none());
        assert_eq!(desired(&i).len(), 2);
    }
}
