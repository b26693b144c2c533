//! The policy loop (see the module documentation of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use futures::FutureExt;
use tokio::time::Instant;
use trellis_datastore::watcher::WatcherEvent;
use trellis_datastore::Datastore;
use trellis_policy::Engine;

use super::elements::{ElementWriter, MAX_BATCH_BYTES};
use super::stale::Owned;
use super::view::{change, load, PREFIXES};
use crate::dataplane::nat::{Nft, NftCommand};
use crate::dataplane::DataplaneStatus;
use crate::watch_cache::WatchCache;

/// The name under which problems appear in the agent status.
pub const STATUS_KEY: &str = "policy";

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub node_name: String,
}

/// Runs until the datastore watches end.
pub async fn run(
    ds: Arc<dyn Datastore>,
    cfg: PolicyConfig,
    nft: NftCommand,
    status: Arc<DataplaneStatus>,
) {
    let mut cache = WatchCache::new(&PREFIXES);
    let mut events = cache.watch(ds);
    let mut engine = Engine::new(cfg.node_name.clone());
    // A previous run's policy objects: the first transaction replaces them, and deletes those
    // whose policy is gone.
    if let Some(listing) = list_table(&nft).await {
        let owned = Owned::of_listing(&listing);
        engine.adopt(owned.chains, owned.sets);
    }
    // Element-only changes go straight over netlink; without the socket, through nft.
    let mut writer = match ElementWriter::open(nft.netns.as_deref()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "set element changes will go through nft -f");
            None
        }
    };
    // The engine is loaded from the cache once every prefix has its snapshot, and again after
    // a resynchronisation; changes in between go to it one by one.
    let mut reload = true;
    let mut backoff = Duration::from_millis(250);
    let mut retry_at: Option<Instant> = None;
    loop {
        let mut next = tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => Some(ev),
                None => return,
            },
            _ = sleep_until(retry_at) => { retry_at = None; None }
        };
        // Everything already queued goes into the same transaction.
        loop {
            if let Some((prefix, ev)) = next.take() {
                match ev {
                    Ok(WatcherEvent::Changed(change_ev)) => {
                        if !reload {
                            change(&mut engine, &cache, prefix, &change_ev);
                        }
                        cache.on_event(prefix, WatcherEvent::Changed(change_ev));
                    }
                    Ok(snapshot) => {
                        cache.on_event(prefix, snapshot);
                        reload = true;
                    }
                    Err(e) => tracing::warn!(%prefix, error = %e, "watch"),
                }
            }
            match events.next().now_or_never() {
                Some(Some(ev)) => next = Some(ev),
                _ => break,
            }
        }
        if retry_at.is_some() || !cache.in_sync() {
            continue;
        }
        if reload {
            let started = std::time::Instant::now();
            let (model, sources) = load(&cache);
            engine.replace_all(model, sources);
            reload = false;
            tracing::info!(elapsed = ?started.elapsed(), "policy engine loaded");
        }
        let problems = engine.problems();
        let problems = (!problems.is_empty())
            .then(|| format!("policies not enforced: {}", problems.join("; ")));
        status.set(STATUS_KEY, problems);
        let Some(mut tx) = engine.transaction() else {
            continue;
        };
        if tx.text.is_empty() {
            engine.committed(tx);
            continue;
        }
        let text = std::mem::take(&mut tx.text);
        let ops = tx.elements.take().filter(|ops| {
            ops.iter()
                .flat_map(|o| &o.elements)
                .map(|e| e.len() + 40)
                .sum::<usize>()
                < MAX_BATCH_BYTES
        });
        let result = match (ops, writer.take()) {
            (Some(ops), Some(mut w)) => {
                let (w, result) = tokio::task::spawn_blocking(move || {
                    let r = w.apply(&ops);
                    (w, r)
                })
                .await
                .expect("the element writer does not panic");
                writer = Some(w);
                Ok(result)
            }
            (_, w) => {
                writer = w;
                let runner = nft.clone();
                tokio::task::spawn_blocking(move || runner.apply(&text).map_err(|e| e.to_string()))
                    .await
            }
        };
        match result {
            Ok(Ok(())) => {
                tracing::debug!(whole = tx.whole, "policy applied");
                engine.committed(tx);
                backoff = Duration::from_millis(250);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, whole = tx.whole, "policy transaction refused; nothing changed, retrying whole");
                engine.failed();
                status.set(STATUS_KEY, Some(format!("policy not applied: {e}")));
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy apply task failed");
                engine.failed();
                retry_at = Some(Instant::now() + backoff);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `nft list table inet trellis`, or `None` when there is no such table yet.
async fn list_table(nft: &NftCommand) -> Option<String> {
    let nft = nft.clone();
    tokio::task::spawn_blocking(move || nft.output(&["list", "table", "inet", "trellis"]))
        .await
        .ok()
        .flatten()
}
