//! From the watched objects to what the compiler takes: the `Model` (endpoints, namespace
//! labels, node addresses) and the compiled policies, through `trellis_policy::resources` (the
//! same code `trellisctl policy trace` uses). Pure.

use trellis_datastore::keys;
use trellis_datastore::resources::{
    GlobalNetworkPolicySpec, NamespaceSpec, NetworkPolicySpec, NodeSpec, WorkloadEndpointSpec,
};
use trellis_policy::{resources, CompiledPolicy, Model};

use crate::watch_cache::WatchCache;

/// The prefixes the policy loop watches.
pub const PREFIXES: [&str; 5] = [
    keys::POLICIES,
    keys::GLOBAL_POLICIES,
    keys::WORKLOAD_ENDPOINTS,
    "namespaces/",
    keys::NODES,
];

/// What the loop applies, and the policies left out with the reason.
#[derive(Debug, Clone)]
pub struct View {
    pub model: Model,
    pub policies: Vec<CompiledPolicy>,
    /// `NetworkPolicy NS/NAME: field: reason` for each policy that did not compile.
    pub problems: Vec<String>,
}

pub fn build(cache: &WatchCache) -> View {
    let namespaces: Vec<_> = objects_of::<NamespaceSpec>(cache, "namespaces/");
    let nodes: Vec<_> = objects_of::<NodeSpec>(cache, keys::NODES);
    let weps: Vec<_> = objects_of::<WorkloadEndpointSpec>(cache, keys::WORKLOAD_ENDPOINTS);
    let model = resources::model(&namespaces, &nodes, &weps);
    let nps = objects_of::<NetworkPolicySpec>(cache, keys::POLICIES);
    let gnps = objects_of::<GlobalNetworkPolicySpec>(cache, keys::GLOBAL_POLICIES);
    let (policies, problems) = resources::compile_all(&model, &nps, &gnps);
    View {
        model,
        policies,
        problems,
    }
}

fn objects_of<S: trellis_datastore::Spec>(
    cache: &WatchCache,
    prefix: &str,
) -> Vec<trellis_datastore::Object<S>> {
    cache
        .objects::<S>(prefix)
        .into_iter()
        .map(|(_, o)| o)
        .collect()
}
