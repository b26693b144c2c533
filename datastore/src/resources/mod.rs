//! The resource kinds and the parsing of user-supplied YAML/JSON into them.

pub mod bgp;
pub mod duration;
pub mod felix;
pub mod global_policy;
pub mod ipam;
pub mod ippool;
pub mod label_selector;
pub mod namespace;
pub mod network_policy;
pub mod node;
pub mod parse;
pub mod workload_endpoint;

pub use bgp::{BgpConfiguration, BgpConfigurationSpec, BgpPeer, BgpPeerSpec};
pub use felix::{FelixConfiguration, FelixConfigurationSpec};
pub use global_policy::{GlobalNetworkPolicy, GlobalNetworkPolicySpec};
pub use ipam::{
    AllocationAttributes, BlockAffinity, BlockAffinitySpec, IpamBlock, IpamBlockSpec, IpamConfig,
    IpamConfigSpec, IpamHandle, IpamHandleSpec,
};
pub use ippool::{EncapMode, IpPool, IpPoolSpec};
pub use namespace::{Namespace, NamespaceSpec};
pub use network_policy::{NetworkPolicy, NetworkPolicySpec};
pub use node::{Node, NodeSpec};
pub use parse::{parse_documents, parse_documents_numbered, AnyResource, ParseError};
pub use workload_endpoint::{WorkloadEndpoint, WorkloadEndpointSpec};
