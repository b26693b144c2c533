//! From datastore watch events to [`ClusterUpdate`]s: what the dataplane managers consume.
//! Pure; a full snapshot (first sync, or resync after compaction) also yields deletions for
//! everything known before that the snapshot no longer holds.

use std::collections::BTreeSet;

use trellis_datastore::codec;
use trellis_datastore::resources::{IpPoolSpec, IpamBlockSpec, NodeSpec};
use trellis_datastore::watcher::WatcherEvent;
use trellis_datastore::{keys, KeyValue, WatchEvent};

use super::ClusterUpdate;

/// The prefixes the dataplane needs.
pub const PREFIXES: [&str; 3] = [keys::NODES, keys::IPAM_BLOCKS, keys::IPPOOLS];

/// Remembers which keys it has reported, to turn snapshots into deletions.
#[derive(Debug, Default)]
pub struct Syncer {
    known: BTreeSet<String>,
    synced: BTreeSet<&'static str>,
}

impl Syncer {
    /// True once every prefix of [`PREFIXES`] has delivered its first snapshot: before that the
    /// view is partial, and applying it would remove other nodes' routes.
    pub fn in_sync(&self) -> bool {
        self.synced.len() == PREFIXES.len()
    }

    /// The updates one watch event on `prefix` means. Undecodable values are logged and skipped
    /// (a bad object must not stop the dataplane).
    pub fn on_event(&mut self, prefix: &'static str, event: WatcherEvent) -> Vec<ClusterUpdate> {
        match event {
            WatcherEvent::Synced { items, .. } | WatcherEvent::Resynced { items, .. } => {
                self.synced.insert(prefix);
                let now: BTreeSet<String> = items.iter().map(|kv| kv.key.clone()).collect();
                let gone: Vec<String> = self
                    .known
                    .iter()
                    .filter(|k| k.starts_with(prefix) && !now.contains(*k))
                    .cloned()
                    .collect();
                let mut out: Vec<ClusterUpdate> = gone.iter().filter_map(|k| deletion(k)).collect();
                for k in gone {
                    self.known.remove(&k);
                }
                for kv in &items {
                    self.known.insert(kv.key.clone());
                    out.extend(update(kv));
                }
                out
            }
            WatcherEvent::Changed(WatchEvent::Put(kv)) => {
                self.known.insert(kv.key.clone());
                update(&kv).into_iter().collect()
            }
            WatcherEvent::Changed(WatchEvent::Delete { key, .. }) => {
                self.known.remove(&key);
                deletion(&key).into_iter().collect()
            }
        }
    }
}

fn update(kv: &KeyValue) -> Option<ClusterUpdate> {
    let res = if kv.key.starts_with(keys::NODES) {
        codec::decode_object::<NodeSpec>(kv).map(|v| ClusterUpdate::NodeUpdated(v.value))
    } else if kv.key.starts_with(keys::IPAM_BLOCKS) {
        codec::decode_object::<IpamBlockSpec>(kv).map(|v| {
            let node = v.value.spec.affine_node().map(str::to_string);
            ClusterUpdate::BlockUpdated(v.value.spec.cidr, node)
        })
    } else if kv.key.starts_with(keys::IPPOOLS) {
        codec::decode_object::<IpPoolSpec>(kv).map(|v| ClusterUpdate::PoolUpdated(v.value))
    } else {
        return None;
    };
    res.map_err(|e| tracing::warn!(key = %kv.key, error = %e, "skipping an undecodable object"))
        .ok()
}

fn deletion(key: &str) -> Option<ClusterUpdate> {
    if let Some(name) = key.strip_prefix(keys::NODES) {
        Some(ClusterUpdate::NodeDeleted(name.to_string()))
    } else if let Some(seg) = key.strip_prefix(keys::IPAM_BLOCKS) {
        keys::parse_cidr_segment(seg).map(ClusterUpdate::BlockDeleted)
    } else {
        key.strip_prefix(keys::IPPOOLS)
            .map(|name| ClusterUpdate::PoolDeleted(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_datastore::resources::{IpPool, Node};
    use trellis_datastore::ObjectMeta;

    fn kv<T: serde::Serialize>(key: &str, obj: &T, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: serde_json::to_vec(obj).unwrap(),
            mod_revision: rev,
            create_revision: rev,
        }
    }

    #[test]
    fn snapshots_changes_and_deletions() {
        let mut s = Syncer::default();
        let pool = IpPool::new(
            ObjectMeta::named("p"),
            IpPoolSpec::new("10.0.0.0/16".parse().unwrap()),
        );
        let node = Node::new(ObjectMeta::named("n1"), NodeSpec::default());
        let out = s.on_event(
            keys::IPPOOLS,
            WatcherEvent::Synced {
                items: vec![kv("ippools/p", &pool, 1)],
                revision: 1,
            },
        );
        assert!(matches!(&out[..], [ClusterUpdate::PoolUpdated(p)] if p.metadata.name == "p"));
        assert!(!s.in_sync());
        s.on_event(
            keys::NODES,
            WatcherEvent::Synced {
                items: vec![kv("nodes/n1", &node, 2)],
                revision: 2,
            },
        );
        s.on_event(
            keys::IPAM_BLOCKS,
            WatcherEvent::Synced {
                items: vec![],
                revision: 2,
            },
        );
        assert!(s.in_sync());
        let out = s.on_event(
            keys::IPPOOLS,
            WatcherEvent::Changed(WatchEvent::Delete {
                key: "ippools/p".into(),
                mod_revision: 3,
            }),
        );
        assert!(matches!(&out[..], [ClusterUpdate::PoolDeleted(n)] if n == "p"));
        // A resync that no longer holds n1 deletes it.
        let out = s.on_event(
            keys::NODES,
            WatcherEvent::Resynced {
                items: vec![],
                revision: 9,
            },
        );
        assert!(matches!(&out[..], [ClusterUpdate::NodeDeleted(n)] if n == "n1"));
        let out = s.on_event(
            keys::IPAM_BLOCKS,
            WatcherEvent::Changed(WatchEvent::Delete {
                key: "ipam/blocks/10.0.0.64-26".into(),
                mod_revision: 10,
            }),
        );
        assert!(
            matches!(&out[..], [ClusterUpdate::BlockDeleted(c)] if c.to_string() == "10.0.0.64/26")
        );
        let bad = KeyValue {
            key: "nodes/x".into(),
            value: b"{".to_vec(),
            mod_revision: 11,
            create_revision: 11,
        };
        assert!(s
            .on_event(keys::NODES, WatcherEvent::Changed(WatchEvent::Put(bad)))
            .is_empty());
    }
}
