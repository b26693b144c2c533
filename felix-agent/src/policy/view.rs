//! From watched datastore objects to the policy engine's inputs, through
//! `trellis_policy::resources` (the same code `trellisctl policy trace` uses): everything at
//! once from the watch cache, or one change at a time. Pure.

use trellis_datastore::resources::{
    GlobalNetworkPolicySpec, NamespaceSpec, NetworkPolicySpec, NodeSpec, WorkloadEndpointSpec,
};
use trellis_datastore::{codec, keys, KeyValue, Object, Spec, WatchEvent};
use trellis_policy::{resources, Engine, Model, Source};

use crate::watch_cache::WatchCache;

/// The prefixes the policy loop watches.
pub const PREFIXES: [&str; 5] = [
    keys::POLICIES,
    keys::GLOBAL_POLICIES,
    keys::WORKLOAD_ENDPOINTS,
    NAMESPACES,
    keys::NODES,
];

const NAMESPACES: &str = "namespaces/";

/// The model and the policies in `cache`.
pub fn load(cache: &WatchCache) -> (Model, Vec<Source>) {
    let namespaces: Vec<_> = objects_of::<NamespaceSpec>(cache, NAMESPACES);
    let nodes: Vec<_> = objects_of::<NodeSpec>(cache, keys::NODES);
    let weps: Vec<_> = objects_of::<WorkloadEndpointSpec>(cache, keys::WORKLOAD_ENDPOINTS);
    let model = resources::model(&namespaces, &nodes, &weps);
    let mut sources: Vec<Source> = objects_of::<NetworkPolicySpec>(cache, keys::POLICIES)
        .into_iter()
        .map(|p| Source::Network(Box::new(p)))
        .collect();
    sources.extend(
        objects_of::<GlobalNetworkPolicySpec>(cache, keys::GLOBAL_POLICIES)
            .into_iter()
            .map(|p| Source::Global(Box::new(p))),
    );
    (model, sources)
}

/// Hands one change under `prefix` to `engine`. Call before the cache takes the change: a
/// deletion is resolved through the object the cache still holds. An object that does not
/// decode counts as deleted (as `load` skips it).
pub fn change(engine: &mut Engine, cache: &WatchCache, prefix: &str, ev: &WatchEvent) {
    let (now, before) = match ev {
        WatchEvent::Put(kv) => (Some(kv), cache.get(&kv.key)),
        WatchEvent::Delete { key, .. } => (None, cache.get(key)),
    };
    match prefix {
        keys::WORKLOAD_ENDPOINTS => {
            let now = decoded::<WorkloadEndpointSpec>(now).map(|w| resources::endpoint(&w));
            let before = decoded::<WorkloadEndpointSpec>(before).map(|w| resources::endpoint(&w));
            if let Some(b) = before.filter(|b| now.as_ref().is_none_or(|n| n.key != b.key)) {
                engine.set_endpoint(b.key, None);
            }
            if let Some(n) = now {
                engine.set_endpoint(n.key.clone(), Some(n));
            }
        }
        keys::POLICIES | keys::GLOBAL_POLICIES => {
            let source = |kv| {
                if prefix == keys::POLICIES {
                    decoded::<NetworkPolicySpec>(kv).map(|p| Source::Network(Box::new(p)))
                } else {
                    decoded::<GlobalNetworkPolicySpec>(kv).map(|p| Source::Global(Box::new(p)))
                }
            };
            let (now, before) = (source(now), source(before));
            if let Some(b) = before.filter(|b| now.as_ref().is_none_or(|n| n.id() != b.id())) {
                engine.set_policy(b.id(), None);
            }
            if let Some(n) = now {
                engine.set_policy(n.id(), Some(n));
            }
        }
        NAMESPACES => {
            let now = decoded::<NamespaceSpec>(now);
            let before = decoded::<NamespaceSpec>(before);
            if let Some(b) = before.filter(|b| {
                now.as_ref()
                    .is_none_or(|n| n.metadata.name != b.metadata.name)
            }) {
                engine.set_namespace(&b.metadata.name, None);
            }
            if let Some(n) = now {
                engine.set_namespace(&n.metadata.name, Some(&n.metadata.labels));
            }
        }
        keys::NODES => {
            let now = decoded::<NodeSpec>(now);
            let before = decoded::<NodeSpec>(before);
            if let Some(b) = before.filter(|b| {
                now.as_ref()
                    .is_none_or(|n| n.metadata.name != b.metadata.name)
            }) {
                engine.set_host(&b.metadata.name, None);
            }
            if let Some(n) = now {
                let ips = n.spec.addresses.iter().map(|a| a.address).collect();
                engine.set_host(&n.metadata.name, Some(ips));
            }
        }
        _ => {}
    }
}

fn decoded<S: Spec>(kv: Option<&KeyValue>) -> Option<Object<S>> {
    let kv = kv?;
    match codec::decode_object::<S>(kv) {
        Ok(v) => Some(v.value),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "undecodable object; treated as absent");
            None
        }
    }
}

fn objects_of<S: Spec>(cache: &WatchCache, prefix: &str) -> Vec<Object<S>> {
    cache
        .objects::<S>(prefix)
        .into_iter()
        .map(|(_, o)| o)
        .collect()
}
