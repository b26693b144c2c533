//! The VPC-native backend in the agent: pods get secondary addresses of the node's ENIs from
//! [`trellis_vpc`]'s warm pool instead of the cluster's IPAM blocks (the AWS VPC CNI's ipamd).
//!
//! ```text
//!  start:  IMDS (instance id, type, region, ENIs) -> EC2 client -> limits + max pods
//!          -> EniManager::start (EC2's ENIs + the checkpoint; allocations whose pod interface
//!             is gone are released)
//!  ADD:    EniManager::assign (no EC2 call, checkpointed) -> VpcDatapath::pass (the pod's
//!          `ip rule`s are in the kernel before the CNI wires the pod)
//!  loops:  EniManager::run (warm pool, one EC2 step per pass, backoff, leaked-ENI sweep)
//!          VpcDatapath::run (ENI interfaces by MAC, rules, ENI tables, SNAT; a new ENI's
//!          addresses go to pods once its interface is up and routed)
//! ```

pub mod cli;
pub mod datapath;
pub mod pods;
pub mod run;
pub mod start;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use trellis_vpc::ec2::CredentialSource;
use trellis_vpc::eni_manager::CustomNetwork;
use trellis_vpc::warm_pool::WarmTargets;

/// Where the AWS VPC CNI keeps its checkpoint is `/var/run/aws-node/ipam.json`; ours.
pub const DEFAULT_CHECKPOINT: &str = "/var/run/trellis/vpc-ipam.json";

/// Everything the VPC backend is configured with (the AWS VPC CNI's environment variables,
/// mapped in `main`).
#[derive(Debug, Clone)]
pub struct VpcConfig {
    /// `http://host[:port]` of the instance metadata service.
    pub imds_endpoint: String,
    /// An EC2 endpoint override (moto in the lab); none is the region's.
    pub ec2_endpoint: Option<String>,
    /// The region; none takes IMDS's.
    pub region: Option<String>,
    pub credentials: CredentialSource,
    /// Tags ENIs (`cluster.k8s.amazonaws.com/name`) and scopes the leaked-ENI sweep.
    pub cluster_name: String,
    pub checkpoint: PathBuf,
    pub targets: WarmTargets,
    pub custom_network: Option<CustomNetwork>,
    /// AWS_VPC_K8S_CNI_EXTERNALSNAT.
    pub external_snat: bool,
    /// AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS.
    pub exclude_snat_cidrs: Vec<Ipv4Net>,
    /// MTU of secondary ENIs (AWS_VPC_ENI_MTU).
    pub eni_mtu: u32,
    /// AWS_VPC_K8S_CNI_CONNMARK.
    pub connmark: u32,
    /// How often the pool and the datapath are re-read when nothing asks sooner.
    pub resync_interval: Duration,
}

impl VpcConfig {
    /// AWS's defaults around the given endpoints, cluster and checkpoint.
    pub fn new(imds_endpoint: impl Into<String>, cluster_name: impl Into<String>) -> VpcConfig {
        VpcConfig {
            imds_endpoint: imds_endpoint.into(),
            ec2_endpoint: None,
            region: None,
            credentials: CredentialSource::DefaultChain,
            cluster_name: cluster_name.into(),
            checkpoint: PathBuf::from(DEFAULT_CHECKPOINT),
            targets: WarmTargets::default(),
            custom_network: None,
            external_snat: false,
            exclude_snat_cidrs: Vec::new(),
            eni_mtu: trellis_vpc::datapath::DEFAULT_ENI_MTU,
            connmark: trellis_vpc::datapath::DEFAULT_CONNMARK,
            resync_interval: Duration::from_secs(5),
        }
    }
}
