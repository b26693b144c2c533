//! Feeds the speaker's route events to the kernel sync: batches what arrives together, retries
//! failed writes with backoff, and resyncs from the kernel now and then.
//!
//! After a restart the first apply is deferred (RFC 4724 4.1 "selection deferral"): routes the
//! previous process installed stay untouched until the peers had time to send their tables,
//! so a restart never opens a gap in forwarding.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::kernel::{KernelRoute, KernelSync, NextHop, RouteTable};
use crate::speaker::RouteEvent;

#[derive(Debug, Clone)]
pub struct InstallConfig {
    /// Wait this long before the first apply (0 = at once).
    pub defer_first_apply: Duration,
    /// Dump and compare with the kernel this often, repairing what others changed.
    pub resync_every: Duration,
}

impl Default for InstallConfig {
    fn default() -> Self {
        InstallConfig {
            defer_first_apply: Duration::from_secs(0),
            resync_every: Duration::from_secs(60),
        }
    }
}

/// The kernel route for a route event, `None` when nothing should be installed. Next hops go
/// by their global address; the kernel resolves the device.
pub fn kernel_route(ev: &RouteEvent) -> Option<KernelRoute> {
    if ev.next_hops.is_empty() {
        return None;
    }
    Some(KernelRoute::new(
        ev.prefix,
        ev.next_hops.iter().map(|n| NextHop::via(n.addr)),
    ))
}

/// Runs until the event channel closes.
pub async fn install(
    mut events: UnboundedReceiver<RouteEvent>,
    mut sync: KernelSync,
    table: &dyn RouteTable,
    config: InstallConfig,
    mut transform: impl FnMut(&RouteEvent) -> Option<KernelRoute>,
) {
    let deferred_until = tokio::time::Instant::now() + config.defer_first_apply;
    let mut backoff = Duration::from_millis(250);
    let mut resync = tokio::time::interval(config.resync_every);
    resync.tick().await;
    loop {
        let wait = if sync.has_pending_work() {
            backoff
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                record(&mut sync, &ev, &mut transform);
                // Take everything already queued before writing.
                while let Ok(ev) = events.try_recv() {
                    record(&mut sync, &ev, &mut transform);
                }
            }
            _ = resync.tick() => sync.request_resync(),
            _ = tokio::time::sleep(wait) => {}
        }
        if tokio::time::Instant::now() < deferred_until {
            tokio::time::sleep_until(deferred_until).await;
        }
        match sync.apply(table).await {
            Ok(stats) => {
                backoff = Duration::from_millis(250);
                if stats.writes > 0 {
                    tracing::debug!(?stats, "kernel routes synced");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "kernel route sync incomplete; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn record(
    sync: &mut KernelSync,
    ev: &RouteEvent,
    transform: &mut impl FnMut(&RouteEvent) -> Option<KernelRoute>,
) {
    match transform(ev) {
        Some(route) => {
            if let Err(e) = sync.upsert(route) {
                tracing::warn!(error = %e, "learned route not installable");
            }
        }
        None => sync.remove(ev.prefix),
    }
}
