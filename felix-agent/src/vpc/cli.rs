//! `trellis-agent --backend vpc`'s flags: the AWS VPC CNI's environment variables under their
//! own names, so an aws-node configuration carries over.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use trellis_vpc::eni_manager::CustomNetwork;
use trellis_vpc::imds::DEFAULT_ENDPOINT;
use trellis_vpc::warm_pool::WarmTargets;

use super::{VpcConfig, DEFAULT_CHECKPOINT};

/// Where pod addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The cluster's IP pools, in blocks affine to nodes (Calico IPAM).
    Blocks,
    /// Secondary addresses of the node's AWS ENIs (the AWS VPC CNI).
    Vpc,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VpcArgs {
    /// Instance metadata service (IMDSv2).
    #[arg(long, env = "AWS_EC2_METADATA_SERVICE_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub imds_endpoint: String,
    /// EC2 endpoint override (the region's endpoint by default).
    #[arg(long, env = "AWS_EC2_ENDPOINT")]
    pub ec2_endpoint: Option<String>,
    /// Region (IMDS's by default).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Cluster name, tagged on the ENIs this node creates; scopes the leaked-ENI sweep.
    #[arg(long, env = "CLUSTER_NAME", default_value = "trellis")]
    pub cluster_name: String,
    /// Allocations of this node, kept across restarts.
    #[arg(long, env = "TRELLIS_VPC_CHECKPOINT", default_value = DEFAULT_CHECKPOINT)]
    pub vpc_checkpoint: PathBuf,
    /// Free ENIs' worth of addresses to keep ready.
    #[arg(long, env = "WARM_ENI_TARGET", default_value_t = 1)]
    pub warm_eni_target: u32,
    /// Free addresses to keep ready (overrides the ENI target).
    #[arg(long, env = "WARM_IP_TARGET")]
    pub warm_ip_target: Option<u32>,
    /// Addresses to hold in all, used or not.
    #[arg(long, env = "MINIMUM_IP_TARGET")]
    pub minimum_ip_target: Option<u32>,
    /// Free /28 prefixes to keep ready (prefix delegation).
    #[arg(long, env = "WARM_PREFIX_TARGET")]
    pub warm_prefix_target: Option<u32>,
    /// ENIs hold /28 prefixes instead of single secondary addresses (Nitro instances).
    #[arg(long, env = "ENABLE_PREFIX_DELEGATION")]
    pub prefix_delegation: bool,
    /// Custom networking: pod ENIs in this subnet (the ENIConfig's subnet); the primary ENI
    /// hosts no pods.
    #[arg(long, env = "TRELLIS_VPC_POD_SUBNET")]
    pub pod_subnet: Option<String>,
    /// Custom networking: the pod ENIs' security groups (comma separated).
    #[arg(
        long,
        env = "TRELLIS_VPC_POD_SECURITY_GROUPS",
        value_delimiter = ',',
        requires = "pod_subnet"
    )]
    pub pod_security_groups: Vec<String>,
    /// A NAT gateway translates: pods leave with their own address.
    #[arg(long, env = "AWS_VPC_K8S_CNI_EXTERNALSNAT")]
    pub external_snat: bool,
    /// Destinations outside the VPC that are not SNATed (comma separated).
    #[arg(
        long,
        env = "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
        value_delimiter = ','
    )]
    pub exclude_snat_cidrs: Vec<Ipv4Net>,
    /// MTU of secondary ENIs.
    #[arg(long, env = "AWS_VPC_ENI_MTU", default_value_t = trellis_vpc::datapath::DEFAULT_ENI_MTU)]
    pub eni_mtu: u32,
}

impl VpcArgs {
    pub fn config(&self, resync_interval: Duration) -> VpcConfig {
        let mut cfg = VpcConfig::new(&self.imds_endpoint, &self.cluster_name);
        cfg.ec2_endpoint = self.ec2_endpoint.clone();
        cfg.region = self.aws_region.clone();
        cfg.checkpoint = self.vpc_checkpoint.clone();
        cfg.targets = WarmTargets {
            warm_eni_target: self.warm_eni_target,
            warm_ip_target: self.warm_ip_target,
            minimum_ip_target: self.minimum_ip_target,
            warm_prefix_target: self.warm_prefix_target,
            prefix_delegation: self.prefix_delegation,
        };
        cfg.custom_network = self.pod_subnet.as_ref().map(|subnet| CustomNetwork {
            subnet_id: subnet.clone(),
            security_groups: self.pod_security_groups.clone(),
        });
        cfg.external_snat = self.external_snat;
        cfg.exclude_snat_cidrs = self.exclude_snat_cidrs.clone();
        cfg.eni_mtu = self.eni_mtu;
        cfg.resync_interval = resync_interval;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        vpc: VpcArgs,
    }

    #[test]
    fn aws_names_and_defaults() {
        let cli = Cli::try_parse_from([
            "x",
            "--warm-ip-target",
            "5",
            "--exclude-snat-cidrs",
            "192.168.0.0/16,172.16.0.0/12",
            "--pod-subnet",
            "subnet-1",
            "--pod-security-groups",
            "sg-1,sg-2",
        ])
        .unwrap();
        let cfg = cli.vpc.config(Duration::from_secs(5));
        assert_eq!(cfg.imds_endpoint, "http://169.254.169.254");
        assert_eq!(cfg.cluster_name, "trellis");
        assert_eq!(cfg.checkpoint, PathBuf::from(DEFAULT_CHECKPOINT));
        assert_eq!(cfg.targets.warm_eni_target, 1);
        assert_eq!(cfg.targets.warm_ip_target, Some(5));
        assert_eq!(cfg.exclude_snat_cidrs.len(), 2);
        assert_eq!(
            cfg.custom_network,
            Some(CustomNetwork {
                subnet_id: "subnet-1".into(),
                security_groups: vec!["sg-1".into(), "sg-2".into()],
            })
        );
        assert_eq!(cfg.eni_mtu, 9001);
    }

    #[test]
    fn a_bad_exclusion_cidr_is_named() {
        let err = Cli::try_parse_from(["x", "--exclude-snat-cidrs", "10.0.0.0/33"]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
    }
}
