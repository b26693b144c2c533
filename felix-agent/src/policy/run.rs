//! The policy loop (see the module documentation of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use futures::FutureExt;
use tokio::time::Instant;
use trellis_datastore::Datastore;
use trellis_policy::render::render_node;

use super::stale::Owned;
use super::view::{build, PREFIXES};
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
    // A previous run's policy objects: replaced by the first transaction, and deleted by it
    // when their policy is gone.
    let mut owned = match list_table(&nft).await {
        Some(listing) => Owned::of_listing(&listing),
        None => Owned::default(),
    };
    let mut applied: Option<String> = None;
    let mut pending = false;
    let mut backoff = Duration::from_millis(250);
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some((prefix, Ok(ev))) => { cache.on_event(prefix, ev); pending = true; }
                Some((prefix, Err(e))) => tracing::warn!(%prefix, error = %e, "watch"),
                None => return,
            },
            _ = sleep_until(retry_at) => retry_at = None,
        }
        // Everything already queued goes into the same transaction.
        while let Some(Some((prefix, ev))) = events.next().now_or_never() {
            match ev {
                Ok(ev) => {
                    cache.on_event(prefix, ev);
                    pending = true;
                }
                Err(e) => tracing::warn!(%prefix, error = %e, "watch"),
            }
        }
        if !pending || retry_at.is_some() || !cache.in_sync() {
            continue;
        }
        let view = build(&cache);
        let text = render_node(&view.policies, &view.model, &cfg.node_name);
        if applied.as_deref() == Some(text.as_str()) {
            pending = false;
            continue;
        }
        let next = Owned::of_transaction(&text);
        let transaction = format!("{text}{}", owned.deletions_for(&next));
        let runner = nft.clone();
        let result = tokio::task::spawn_blocking(move || runner.apply(&transaction)).await;
        match result {
            Ok(Ok(())) => {
                tracing::info!(
                    policies = view.policies.len(),
                    endpoints = view.model.endpoints.len(),
                    "policy applied"
                );
                owned = next;
                applied = Some(text);
                pending = false;
                backoff = Duration::from_millis(250);
                let problems = (!view.problems.is_empty())
                    .then(|| format!("policies not enforced: {}", view.problems.join("; ")));
                status.set(STATUS_KEY, problems);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "policy transaction refused; nothing changed, retrying");
                status.set(STATUS_KEY, Some(format!("policy not applied: {e}")));
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy apply task failed");
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
