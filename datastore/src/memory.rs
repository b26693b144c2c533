//! An in-memory [`Datastore`] with etcd's semantics, for unit tests of other crates.
//!
//! It keeps one global revision counter, create/mod revisions per key, and the full event
//! history (until [`MemoryDatastore::compact`]), so watches can start from any kept revision.
//! Knobs simulate what a real cluster does to clients: [`MemoryDatastore::compact`],
//! [`MemoryDatastore::fail_next`], [`MemoryDatastore::set_unavailable`] and
//! [`MemoryDatastore::break_watches`].
//!
//! The transaction condition rules (`expected_revision`, `condition_error`) live here as the
//! reference and are shared with the etcd backend, so both report a failed condition identically.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{DatastoreError, Result};
use crate::kv::{Datastore, KeyValue, Listing, TxnOp, WatchEvent, WatchStream};

/// What `endpoints` says in the fake's `Unavailable` errors.
const ENDPOINT: &str = "memory";

/// The mod_revision `op` requires of its key before the transaction (0 = absent), or `None`
/// when the op has no condition (a delete without an expected revision).
pub(crate) fn expected_revision(op: &TxnOp) -> Option<i64> {
    match op {
        TxnOp::Create { .. } => Some(0),
        TxnOp::Update {
            expected_revision, ..
        }
        | TxnOp::Check {
            expected_revision, ..
        } => Some(*expected_revision),
        TxnOp::Delete {
            expected_revision, ..
        } => *expected_revision,
    }
}

/// The error for `op` whose key was found at `actual` (0 = absent) instead of the expected
/// revision: a create finding a key is `AlreadyExists`, a write to a key that has gone is
/// `NotFound`, anything else (including every failed `Check`) is `Conflict`.
pub(crate) fn condition_error(op: &TxnOp, actual: i64) -> DatastoreError {
    let key = op.key().to_string();
    let expected = expected_revision(op).unwrap_or(0);
    match op {
        TxnOp::Create { .. } => DatastoreError::AlreadyExists { key },
        TxnOp::Update { .. } | TxnOp::Delete { .. } if actual == 0 => {
            DatastoreError::NotFound { key }
        }
        _ => DatastoreError::Conflict {
            key,
            expected,
            actual,
        },
    }
}

/// etcd refuses a transaction that writes one key twice ("duplicate key given in txn
/// request"); both backends check it up front so the error names the key.
pub(crate) fn check_duplicate_writes(ops: &[TxnOp]) -> Result<()> {
    let mut seen = HashSet::new();
    for op in ops.iter().filter(|op| !matches!(op, TxnOp::Check { .. })) {
        if !seen.insert(op.key()) {
            return Err(DatastoreError::Rejected {
                op: "txn",
                key: op.key().to_string(),
                reason: "the transaction writes this key more than once".to_string(),
            });
        }
    }
    Ok(())
}

/// etcd's default `--max-txn-ops`: it refuses a transaction with more compares, or more
/// writes, than this. The fake enforces the default so code that builds oversized
/// transactions fails in unit tests rather than against a real cluster.
const MAX_TXN_OPS: usize = 128;

fn check_txn_size(ops: &[TxnOp]) -> Result<()> {
    let guarded = ops
        .iter()
        .filter(|op| expected_revision(op).is_some())
        .count();
    let writes = ops
        .iter()
        .filter(|op| !matches!(op, TxnOp::Check { .. }))
        .count();
    if guarded.max(writes) > MAX_TXN_OPS {
        return Err(DatastoreError::Rejected {
            op: "txn",
            key: ops.first().map_or("", TxnOp::key).to_string(),
            reason: format!("too many operations in txn request (etcd allows {MAX_TXN_OPS})"),
        });
    }
    Ok(())
}

type EventSender = mpsc::UnboundedSender<Result<WatchEvent>>;

#[derive(Debug)]
struct LiveWatch {
    prefix: String,
    /// etcd lets a watch start at a future revision; nothing before it is sent.
    from: i64,
    tx: EventSender,
}

#[derive(Debug)]
struct State {
    revision: i64,
    /// Events below this revision are gone (etcd's compact revision).
    compacted: i64,
    kvs: BTreeMap<String, KeyValue>,
    history: Vec<WatchEvent>,
    watches: Vec<LiveWatch>,
    fail_next: u32,
    unavailable: bool,
}

/// In-memory datastore. Clones share the same store, like clients of one etcd cluster.
#[derive(Debug, Clone)]
pub struct MemoryDatastore {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryDatastore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDatastore {
    /// An empty store at revision 1, like a fresh etcd.
    pub fn new() -> Self {
        let state = State {
            revision: 1,
            compacted: 0,
            kvs: BTreeMap::new(),
            history: Vec::new(),
            watches: Vec::new(),
            fail_next: 0,
            unavailable: false,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Forgets history below `revision`: watches from an older revision then end with
    /// `Compacted`, as etcd's do.
    pub fn compact(&self, revision: i64) -> Result<()> {
        let mut st = self.lock();
        if revision > st.revision {
            return Err(DatastoreError::Rejected {
                op: "compact",
                key: String::new(),
                reason: format!(
                    "revision {revision} is in the future (current {})",
                    st.revision
                ),
            });
        }
        if revision <= st.compacted {
            // etcd refuses this the same way (OutOfRange), not as a watch-style `Compacted`.
            return Err(DatastoreError::Rejected {
                op: "compact",
                key: String::new(),
                reason: format!(
                    "revision {revision} is already compacted (at {})",
                    st.compacted
                ),
            });
        }
        st.compacted = revision;
        st.history.retain(|ev| ev.revision() >= revision);
        Ok(())
    }

    /// The next `n` calls (of any method, watches included) fail with `Unavailable`.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// While set, every call fails with `Unavailable`; setting it also breaks open watches.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut st = self.lock();
        st.unavailable = unavailable;
        if unavailable {
            st.break_watches("datastore set unavailable");
        }
    }

    /// Ends every open watch with `Unavailable`, as a dropped connection does; data is kept.
    pub fn break_watches(&self) {
        self.lock().break_watches("watch connection dropped");
    }

    /// Number of watches still open (tests check that dropped streams are released).
    pub fn open_watches(&self) -> usize {
        let mut st = self.lock();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way later calls
        // would misread (every mutation is completed before any fallible step), so recover.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock, unless an injected failure applies to this call.
    fn gate(&self) -> Result<MutexGuard<'_, State>> {
        let mut st = self.lock();
        if st.unavailable {
            return Err(unavailable("datastore set unavailable"));
        }
        if st.fail_next > 0 {
            st.fail_next -= 1;
            return Err(unavailable("injected failure"));
        }
        Ok(st)
    }
}

fn unavailable(reason: &str) -> DatastoreError {
    DatastoreError::Unavailable {
        endpoints: ENDPOINT.to_string(),
        reason: reason.to_string(),
    }
}

impl State {
    fn mod_revision(&self, key: &str) -> i64 {
        self.kvs.get(key).map_or(0, |kv| kv.mod_revision)
    }

    fn break_watches(&mut self, reason: &str) {
        for w in self.watches.drain(..) {
            // A closed receiver just means nobody is listening any more.
            let _ = w.tx.send(Err(unavailable(reason)));
        }
    }

    /// Applies the writes of one transaction at the next revision. Returns the revision of the
    /// store afterwards (unchanged when nothing was actually written, as in etcd).
    fn apply(&mut self, ops: Vec<TxnOp>) -> i64 {
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                TxnOp::Create { key, value } | TxnOp::Update { key, value, .. } => {
                    let create_revision = self.kvs.get(&key).map_or(rev, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        mod_revision: rev,
                        create_revision,
                    };
                    self.kvs.insert(key, kv.clone());
                    events.push(WatchEvent::Put(kv));
                }
                TxnOp::Delete { key, .. } => {
                    if self.kvs.remove(&key).is_some() {
                        events.push(WatchEvent::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
                TxnOp::Check { .. } => {}
            }
        }
        if events.is_empty() {
            return self.revision;
        }
        self.revision = rev;
        for ev in &events {
            self.watches.retain(|w| {
                let wanted = ev.key().starts_with(&w.prefix) && ev.revision() >= w.from;
                !wanted || w.tx.send(Ok(ev.clone())).is_ok()
            });
        }
        self.history.extend(events);
        rev
    }

    fn txn(&mut self, ops: Vec<TxnOp>) -> Result<i64> {
        check_duplicate_writes(&ops)?;
        check_txn_size(&ops)?;
        for op in &ops {
            if let Some(expected) = expected_revision(op) {
                let actual = self.mod_revision(op.key());
                if actual != expected {
                    return Err(condition_error(op, actual));
                }
            }
        }
        Ok(self.apply(ops))
    }
}

#[async_trait]
impl Datastore for MemoryDatastore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.gate()?.kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let st = self.gate()?;
        let items = st
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Listing {
            items,
            revision: st.revision,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.gate()?.txn(vec![TxnOp::Create {
            key: key.to_string(),
            value,
        }])
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<i64> {
        let op = TxnOp::Update {
            key: key.to_string(),
            value,
            expected_revision,
        };
        self.gate()?.txn(vec![op])
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let mut st = self.gate()?;
        // An unconditional put is an update against whatever revision is there now.
        let expected_revision = st.mod_revision(key);
        st.txn(vec![TxnOp::Update {
            key: key.to_string(),
            value,
            expected_revision,
        }])
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<()> {
        let mut st = self.gate()?;
        if expected_revision.is_none() && !st.kvs.contains_key(key) {
            return Err(DatastoreError::NotFound {
                key: key.to_string(),
            });
        }
        st.txn(vec![TxnOp::Delete {
            key: key.to_string(),
            expected_revision,
        }])
        .map(drop)
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<i64> {
        self.gate()?.txn(ops)
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let mut st = self.gate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        // etcd: a watch from 0 starts after the current revision.
        let from = if from_revision <= 0 {
            st.revision + 1
        } else {
            from_revision
        };
        if from < st.compacted {
            let err = DatastoreError::Compacted {
                prefix: prefix.to_string(),
                requested: from,
                compact_revision: st.compacted,
            };
            // The receiver is alive (held below), so the send cannot fail.
            let _ = tx.send(Err(err));
        } else {
            // Backlog and registration happen under one lock: no event is missed or repeated.
            for ev in st
                .history
                .iter()
                .filter(|ev| ev.revision() >= from && ev.key().starts_with(prefix))
            {
                let _ = tx.send(Ok(ev.clone()));
            }
            st.watches.push(LiveWatch {
                prefix: prefix.to_string(),
                from,
                tx,
            });
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        Ok(stream.boxed())
    }

    async fn revision(&self) -> Result<i64> {
        Ok(self.gate()?.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    async fn next(stream: &mut WatchStream) -> Result<WatchEvent> {
        let item = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
        item.expect("watch produced nothing within 5 s")
            .expect("watch ended")
    }

    #[tokio::test]
    async fn revisions_follow_etcd() {
        let ds = MemoryDatastore::new();
        let r1 = ds.create("a", v("1")).await.unwrap();
        let r2 = ds.put("a", v("2")).await.unwrap();
        let kv = ds.get("a").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
        assert_eq!(r2, r1 + 1);
        // A txn that writes nothing does not move the revision.
        let check = TxnOp::Check {
            key: "a".into(),
            expected_revision: r2,
        };
        assert_eq!(ds.txn(vec![check]).await.unwrap(), r2);
        ds.delete("a", Some(r2)).await.unwrap();
        let r4 = ds.create("a", v("3")).await.unwrap();
        assert_eq!(ds.get("a").await.unwrap().unwrap().create_revision, r4);
    }

    #[tokio::test]
    async fn condition_failures_name_first_failing_op() {
        let ds = MemoryDatastore::new();
        let ra = ds.create("a", v("1")).await.unwrap();
        let err = ds
            .txn(vec![
                TxnOp::Check {
                    key: "a".into(),
                    expected_revision: ra,
                },
                TxnOp::Update {
                    key: "b".into(),
                    value: v("x"),
                    expected_revision: 7,
                },
                TxnOp::Create {
                    key: "a".into(),
                    value: v("y"),
                },
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(err, DatastoreError::NotFound { ref key } if key == "b"),
            "{err}"
        );
        let err = ds.update("a", v("2"), ra + 5).await.unwrap_err();
        assert!(
            matches!(err, DatastoreError::Conflict { ref key, expected, actual } if key == "a" && expected == ra + 5 && actual == ra),
            "{err}"
        );
        let dup = vec![
            TxnOp::Create {
                key: "c".into(),
                value: v("1"),
            },
            TxnOp::Delete {
                key: "c".into(),
                expected_revision: None,
            },
        ];
        assert!(
            matches!(ds.txn(dup).await, Err(DatastoreError::Rejected { ref key, .. }) if key == "c")
        );
        assert_eq!(
            ds.revision().await.unwrap(),
            ra,
            "failed txns wrote nothing"
        );
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows_live() {
        let ds = MemoryDatastore::new();
        let r1 = ds.put("p/a", v("1")).await.unwrap();
        ds.put("q/x", v("1")).await.unwrap();
        let mut w = ds.watch("p/", r1).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().revision(), r1);
        let r3 = ds.put("p/b", v("2")).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().revision(), r3);
        drop(w);
        ds.put("p/c", v("3")).await.unwrap();
        assert_eq!(ds.open_watches(), 0, "dropped watch is released");

        // A watch may start in the future; earlier writes are not sent.
        let mut w = ds.watch("p/", r3 + 3).await.unwrap();
        ds.put("p/d", v("4")).await.unwrap();
        let r6 = ds.put("p/e", v("5")).await.unwrap();
        assert_eq!(r6, r3 + 3);
        assert_eq!(next(&mut w).await.unwrap().key(), "p/e");
    }

    #[tokio::test]
    async fn compaction_and_outages_end_watches() {
        let ds = MemoryDatastore::new();
        let r1 = ds.put("k", v("1")).await.unwrap();
        let r2 = ds.put("k", v("2")).await.unwrap();
        ds.compact(r2).unwrap();
        let mut w = ds.watch("", r1).await.unwrap();
        let err = next(&mut w).await.unwrap_err();
        assert!(
            matches!(err, DatastoreError::Compacted { requested, compact_revision, .. } if requested == r1 && compact_revision == r2)
        );
        assert!(w.next().await.is_none(), "stream ends after Compacted");
        assert!(matches!(
            ds.compact(r1),
            Err(DatastoreError::Rejected { op: "compact", .. })
        ));
        assert!(matches!(
            ds.compact(r2 + 1),
            Err(DatastoreError::Rejected { op: "compact", .. })
        ));

        let mut w = ds.watch("", r2).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().revision(), r2);
        ds.set_unavailable(true);
        assert!(matches!(
            next(&mut w).await,
            Err(DatastoreError::Unavailable { .. })
        ));
        assert!(w.next().await.is_none());
        assert!(matches!(
            ds.get("k").await,
            Err(DatastoreError::Unavailable { .. })
        ));
        ds.set_unavailable(false);
        ds.fail_next(1);
        assert!(ds.get("k").await.is_err());
        assert_eq!(ds.get("k").await.unwrap().unwrap().value, v("2"));
    }
}
