//! From datastore resources to the compiler's inputs: the [`Model`] from Namespaces, Nodes and
//! WorkloadEndpoints, and every policy compiled. Shared by the agent (from its watch cache) and
//! `trellisctl policy trace` (from a listing), so both see the same cluster the same way.

use trellis_datastore::resources::workload_endpoint::PortProtocol;
use trellis_datastore::resources::{
    GlobalNetworkPolicy, Namespace, NetworkPolicy, Node, WorkloadEndpoint,
};

use crate::ir::CompiledPolicy;
use crate::model::{Endpoint, EndpointKey, Model, NamedPort, Proto};
use crate::{compile_global_policy, compile_network_policy};

pub fn model<'a>(
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    nodes: impl IntoIterator<Item = &'a Node>,
    weps: impl IntoIterator<Item = &'a WorkloadEndpoint>,
) -> Model {
    let mut m = Model::default();
    for ns in namespaces {
        m.set_namespace(&ns.metadata.name, &ns.metadata.labels);
    }
    for node in nodes {
        let ips = node.spec.addresses.iter().map(|a| a.address).collect();
        m.hosts.insert(node.metadata.name.clone(), ips);
    }
    for wep in weps {
        m.add_endpoint(endpoint(wep));
    }
    m
}

/// The endpoint a WorkloadEndpoint describes.
pub fn endpoint(wep: &WorkloadEndpoint) -> Endpoint {
    let namespace = wep
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let s = &wep.spec;
    Endpoint {
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
    }
}

/// Every policy compiled against `model`, and one line per policy that did not compile
/// (`NetworkPolicy NS/NAME: field: reason`): those are left out, the rest still apply.
pub fn compile_all<'a>(
    model: &Model,
    network_policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    global_policies: impl IntoIterator<Item = &'a GlobalNetworkPolicy>,
) -> (Vec<CompiledPolicy>, Vec<String>) {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for np in network_policies {
        match compile_network_policy(np, model) {
            Ok(p) => policies.push(p),
            Err(e) => problems.push(e.to_string()),
        }
    }
    for gnp in global_policies {
        match compile_global_policy(gnp, model) {
            Ok(p) => policies.push(p),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (policies, problems)
}
