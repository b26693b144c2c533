//! The raw objects under a set of watched datastore prefixes, kept from watch events, decoded
//! on demand. For loops that recompute their whole plan from the current objects (BGP, policy).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::stream::{select_all, BoxStream, StreamExt};
use trellis_datastore::watcher::{Watcher, WatcherEvent};
use trellis_datastore::{codec, Datastore, KeyValue, WatchEvent};

#[derive(Debug)]
pub struct WatchCache {
    prefixes: Vec<&'static str>,
    items: BTreeMap<String, KeyValue>,
    synced: BTreeSet<&'static str>,
}

/// Every prefix's watcher merged into one stream of (prefix, event).
pub type Events = BoxStream<'static, (&'static str, trellis_datastore::Result<WatcherEvent>)>;

impl WatchCache {
    pub fn new(prefixes: &[&'static str]) -> Self {
        WatchCache {
            prefixes: prefixes.to_vec(),
            items: BTreeMap::new(),
            synced: BTreeSet::new(),
        }
    }

    /// The watch events of every prefix, merged.
    pub fn watch(&self, ds: Arc<dyn Datastore>) -> Events {
        select_all(self.prefixes.iter().map(|&p| {
            Watcher::new(ds.clone(), p)
                .into_stream()
                .map(move |e| (p, e))
                .boxed()
        }))
        .boxed()
    }

    pub fn on_event(&mut self, prefix: &'static str, ev: WatcherEvent) {
        match ev {
            WatcherEvent::Synced { items, .. } | WatcherEvent::Resynced { items, .. } => {
                self.synced.insert(prefix);
                self.items.retain(|k, _| !k.starts_with(prefix));
                self.items
                    .extend(items.into_iter().map(|kv| (kv.key.clone(), kv)));
            }
            WatcherEvent::Changed(WatchEvent::Put(kv)) => {
                self.items.insert(kv.key.clone(), kv);
            }
            WatcherEvent::Changed(WatchEvent::Delete { key, .. }) => {
                self.items.remove(&key);
            }
        }
    }

    /// The object stored under `key`, as last seen.
    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.items.get(key)
    }

    /// Every prefix has delivered its first snapshot: the view is complete.
    pub fn in_sync(&self) -> bool {
        self.prefixes.iter().all(|p| self.synced.contains(p))
    }

    /// Decoded objects under `prefix`, with their keys; undecodable ones are logged and
    /// skipped (a bad object must not stop the loop).
    pub fn objects<S: trellis_datastore::Spec>(
        &self,
        prefix: &str,
    ) -> Vec<(String, trellis_datastore::Object<S>)> {
        self.items
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, kv)| match codec::decode_object::<S>(kv) {
                Ok(v) => Some((k.clone(), v.value)),
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "skipping an undecodable object");
                    None
                }
            })
            .collect()
    }
}
