//! From the watched objects to what the compiler takes: the [`Model`] (endpoints, namespace
//! labels, node addresses) and the compiled policies. Pure.

use trellis_datastore::keys;
use trellis_datastore::resources::workload_endpoint::PortProtocol;
use trellis_datastore::resources::{
    NamespaceSpec, NetworkPolicySpec, NodeSpec, WorkloadEndpointSpec,
};
use trellis_policy::{
    compile_network_policy, CompiledPolicy, Endpoint, EndpointKey, Model, NamedPort, Proto,
};

use crate::watch_cache::WatchCache;

/// The prefixes the policy loop watches.
pub const PREFIXES: [&str; 4] = [
    keys::POLICIES,
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
    let mut model = Model::default();
    for (_, ns) in cache.objects::<NamespaceSpec>("namespaces/") {
        model.set_namespace(&ns.metadata.name, &ns.metadata.labels);
    }
    for (_, node) in cache.objects::<NodeSpec>(keys::NODES) {
        let ips = node.spec.addresses.iter().map(|a| a.address).collect();
        model.hosts.insert(node.metadata.name.clone(), ips);
    }
    for (_, wep) in cache.objects::<WorkloadEndpointSpec>(keys::WORKLOAD_ENDPOINTS) {
        let namespace = wep
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let s = &wep.spec;
        model.add_endpoint(Endpoint {
            key: EndpointKey::new(namespace, s.pod.clone()),
            labels: s.labels.clone(),
            ips: s.ip_networks.iter().map(|n| n.addr()).collect(),
            iface: s.interface_name.clone(),
            node: s.node.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| NamedPort {
                    name: p.name.clone(),
                    proto: match p.protocol {
                        PortProtocol::Tcp => Proto::Tcp,
                        PortProtocol::Udp => Proto::Udp,
                        PortProtocol::Sctp => Proto::Sctp,
                    },
                    port: p.port,
                })
                .collect(),
        });
    }
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for (_, np) in cache.objects::<NetworkPolicySpec>(keys::POLICIES) {
        match compile_network_policy(&np, &model) {
            Ok(p) => policies.push(p),
            Err(e) => problems.push(e.to_string()),
        }
    }
    View {
        model,
        policies,
        problems,
    }
}
