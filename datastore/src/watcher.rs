//! List-then-watch over any [`Datastore`], the way agents follow a key prefix:
//!
//! ```text
//! list(prefix) --Synced{items, rev}--> watch(prefix, rev+1) --Changed(ev)...--+
//!      ^                                   ^                                  |
//!      |                                   +-- Unavailable: back off, resume from last rev+1
//!      +-- Compacted: relist, Resynced{items, rev} <--------------------------+
//! ```
//!
//! Every event is delivered exactly once and in revision order: the watch always resumes at
//! the revision after the last one handed out, and a full relist replaces the state only when
//! etcd no longer has the history needed to resume.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::error::{DatastoreError, Result};
use crate::kv::{Datastore, KeyValue, WatchEvent, WatchStream};

/// What a [`Watcher`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherEvent {
    /// The first full snapshot of the prefix.
    Synced { items: Vec<KeyValue>, revision: i64 },
    /// One change after the last snapshot or change.
    Changed(WatchEvent),
    /// A new full snapshot replacing everything known so far: the history needed to resume
    /// was compacted away, so changes in between (deletions included) are only visible by
    /// comparing with this snapshot.
    Resynced { items: Vec<KeyValue>, revision: i64 },
}

/// Follows every key under a prefix; see the module docs.
pub struct Watcher {
    ds: Arc<dyn Datastore>,
    prefix: String,
    stream: Option<WatchStream>,
    /// Revision of the last snapshot or change handed out (0 before the first list).
    revision: i64,
    synced: bool,
    needs_list: bool,
    backoff: Backoff,
    /// Set after an error was returned, so a caller looping on errors is still slowed down.
    delay_next: bool,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("prefix", &self.prefix)
            .field("revision", &self.revision)
            .field("watching", &self.stream.is_some())
            .field("needs_list", &self.needs_list)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    pub fn new(ds: Arc<dyn Datastore>, prefix: impl Into<String>) -> Self {
        Self {
            ds,
            prefix: prefix.into(),
            stream: None,
            revision: 0,
            synced: false,
            needs_list: true,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            delay_next: false,
        }
    }

    /// Retry delays while the datastore is unavailable: doubling from `initial` up to `max`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Revision of the last snapshot or change handed out (0 before the first `Synced`).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next event. `Unavailable` is retried here with backoff (the outage is logged, not
    /// returned); other errors (refusals, undecodable keys) are returned, and the following
    /// call retries after a backoff delay. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<WatcherEvent> {
        if std::mem::take(&mut self.delay_next) {
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
        loop {
            if self.needs_list {
                match self.ds.list(&self.prefix).await {
                    Ok(listing) => {
                        self.needs_list = false;
                        self.revision = listing.revision;
                        self.backoff.reset();
                        let (items, revision) = (listing.items, listing.revision);
                        if std::mem::replace(&mut self.synced, true) {
                            return Ok(WatcherEvent::Resynced { items, revision });
                        }
                        return Ok(WatcherEvent::Synced { items, revision });
                    }
                    Err(e) => {
                        self.recover(e).await?;
                        continue;
                    }
                }
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => match self.ds.watch(&self.prefix, self.revision + 1).await {
                    Ok(stream) => self.stream.insert(stream),
                    Err(e) => {
                        self.recover(e).await?;
                        continue;
                    }
                },
            };
            let err = match stream.next().await {
                Some(Ok(ev)) => {
                    self.revision = ev.revision();
                    self.backoff.reset();
                    return Ok(WatcherEvent::Changed(ev));
                }
                Some(Err(e)) => e,
                None => DatastoreError::Unavailable {
                    endpoints: "datastore".into(),
                    reason: format!("watch on {} ended without an error", self.prefix),
                },
            };
            self.stream = None;
            self.recover(err).await?;
        }
    }

    /// Decides what a failure means for the next attempt: relist after compaction, wait and
    /// retry after an outage, and hand anything else to the caller.
    async fn recover(&mut self, err: DatastoreError) -> Result<()> {
        match err {
            DatastoreError::Compacted { .. } => {
                tracing::info!(prefix = %self.prefix, revision = self.revision, "{err}; relisting");
                self.stream = None;
                self.needs_list = true;
                Ok(())
            }
            DatastoreError::Unavailable { .. } => {
                let delay = self.backoff.next_delay();
                tracing::warn!(prefix = %self.prefix, ?delay, "{err}; retrying");
                tokio::time::sleep(delay).await;
                Ok(())
            }
            other => {
                self.delay_next = true;
                Err(other)
            }
        }
    }

    /// The watcher as a never-ending stream of [`Watcher::next`] results.
    pub fn into_stream(self) -> impl Stream<Item = Result<WatcherEvent>> + Send + 'static {
        futures::stream::unfold(self, |mut w| async move {
            let item = w.next().await;
            Some((item, w))
        })
    }
}

/// Exponential backoff with jitter, so many agents losing etcd at once do not return in step.
#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }

    /// A delay in [current/2, current], then doubles `current` up to `max`.
    fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        // RandomState is randomly keyed per instance: a dependency-free source of jitter.
        let random = RandomState::new().build_hasher().finish();
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(random % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryDatastore;

    fn watcher(ds: &MemoryDatastore, prefix: &str) -> Watcher {
        let shared: Arc<dyn Datastore> = Arc::new(ds.clone());
        Watcher::new(shared, prefix)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(20))
    }

    async fn next(w: &mut Watcher) -> WatcherEvent {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
        ev.expect("watcher produced nothing within 5 s")
            .expect("watcher error")
    }

    fn changed_key(ev: &WatcherEvent) -> (&str, i64) {
        match ev {
            WatcherEvent::Changed(ev) => (ev.key(), ev.revision()),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn syncs_then_follows_changes() {
        let ds = MemoryDatastore::new();
        ds.put("p/a", b"1".to_vec()).await.unwrap();
        ds.put("other", b"1".to_vec()).await.unwrap();
        ds.fail_next(2); // the first list is retried through an outage
        let mut w = watcher(&ds, "p/");
        let rev = match next(&mut w).await {
            WatcherEvent::Synced { items, revision } => {
                assert_eq!(
                    items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
                    ["p/a"]
                );
                revision
            }
            other => panic!("expected Synced, got {other:?}"),
        };
        let r = ds.put("p/b", b"2".to_vec()).await.unwrap();
        assert!(r > rev);
        assert_eq!(changed_key(&next(&mut w).await), ("p/b", r));
        ds.delete("p/a", None).await.unwrap();
        assert_eq!(changed_key(&next(&mut w).await).0, "p/a");
        assert_eq!(w.revision(), ds.revision().await.unwrap());
    }

    #[tokio::test]
    async fn resumes_after_outage_without_gaps_or_duplicates() {
        let ds = MemoryDatastore::new();
        let mut w = watcher(&ds, "");
        assert!(matches!(next(&mut w).await, WatcherEvent::Synced { .. }));
        let r1 = ds.put("a", b"1".to_vec()).await.unwrap();
        assert_eq!(changed_key(&next(&mut w).await), ("a", r1));

        // Connection drops; writes keep happening meanwhile; then a longer outage.
        ds.break_watches();
        let r2 = ds.put("b", b"1".to_vec()).await.unwrap();
        ds.set_unavailable(true);
        let ds2 = ds.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ds2.set_unavailable(false);
            ds2.put("c", b"1".to_vec()).await.unwrap()
        });
        assert_eq!(changed_key(&next(&mut w).await), ("b", r2));
        let r3 = writer.await.unwrap();
        assert_eq!(changed_key(&next(&mut w).await), ("c", r3));
        let r4 = ds.put("d", b"1".to_vec()).await.unwrap();
        assert_eq!(
            changed_key(&next(&mut w).await),
            ("d", r4),
            "no event was repeated"
        );
    }

    #[tokio::test]
    async fn relists_after_compaction() {
        let ds = MemoryDatastore::new();
        ds.put("k1", b"1".to_vec()).await.unwrap();
        let mut w = watcher(&ds, "k");
        assert!(matches!(next(&mut w).await, WatcherEvent::Synced { .. }));
        ds.break_watches();
        ds.delete("k1", None).await.unwrap();
        let r = ds.put("k2", b"2".to_vec()).await.unwrap();
        ds.compact(r).unwrap();
        match next(&mut w).await {
            WatcherEvent::Resynced { items, revision } => {
                assert_eq!(revision, r);
                assert_eq!(
                    items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
                    ["k2"]
                );
            }
            other => panic!("expected Resynced, got {other:?}"),
        }
        let r2 = ds.put("k3", b"3".to_vec()).await.unwrap();
        assert_eq!(changed_key(&next(&mut w).await), ("k3", r2));
    }

    #[test]
    fn backoff_is_bounded_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(400)),
            "{delays:?}"
        );
        assert!(delays[4] >= Duration::from_millis(200), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
