//! Plain values in and out of [`super::Ec2`]: what the ENI manager reads, nothing SDK-shaped.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use ipnet::Ipv4Net;

use super::{eni_description, TAG_CLUSTER_NAME, TAG_CREATED_AT, TAG_INSTANCE_ID};

/// One method of [`super::Ec2`]; errors and fault injection name calls by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    DescribeInstance,
    DescribeNetworkInterfaces,
    CreateNetworkInterface,
    AttachNetworkInterface,
    SetDeleteOnTermination,
    AssignPrivateIpAddresses,
    AssignIpv4Prefixes,
    UnassignPrivateIpAddresses,
    UnassignIpv4Prefixes,
    DetachNetworkInterface,
    DeleteNetworkInterface,
    DescribeSubnet,
    DescribeInstanceType,
}

impl Operation {
    /// The EC2 API action behind the method (prefix calls share the address actions).
    pub fn action(self) -> &'static str {
        match self {
            Operation::DescribeInstance => "DescribeInstances",
            Operation::DescribeNetworkInterfaces => "DescribeNetworkInterfaces",
            Operation::CreateNetworkInterface => "CreateNetworkInterface",
            Operation::AttachNetworkInterface => "AttachNetworkInterface",
            Operation::SetDeleteOnTermination => "ModifyNetworkInterfaceAttribute",
            Operation::AssignPrivateIpAddresses | Operation::AssignIpv4Prefixes => {
                "AssignPrivateIpAddresses"
            }
            Operation::UnassignPrivateIpAddresses | Operation::UnassignIpv4Prefixes => {
                "UnassignPrivateIpAddresses"
            }
            Operation::DetachNetworkInterface => "DetachNetworkInterface",
            Operation::DeleteNetworkInterface => "DeleteNetworkInterface",
            Operation::DescribeSubnet => "DescribeSubnets",
            Operation::DescribeInstanceType => "DescribeInstanceTypes",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action())
    }
}

/// An instance as the ENI manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub instance_type: String,
    /// The subnet of the primary ENI: where new ENIs go unless custom networking says otherwise.
    pub subnet_id: String,
    pub vpc_id: String,
    pub primary_eni_id: String,
    /// Attached ENIs, ordered by device index.
    pub enis: Vec<Eni>,
}

impl Instance {
    /// The ENI at device index 0, whose security groups new ENIs copy.
    pub fn primary_eni(&self) -> Option<&Eni> {
        self.enis.iter().find(|eni| eni.id == self.primary_eni_id)
    }
}

/// A network interface with everything the manager and the IMDS fixture need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    pub id: String,
    pub mac: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub status: EniStatus,
    pub description: String,
    pub attachment: Option<EniAttachment>,
    /// The primary address first, then secondaries in EC2's order.
    pub private_ips: Vec<PrivateIp>,
    /// Delegated /28 prefixes.
    pub prefixes: Vec<Ipv4Net>,
    pub security_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

impl Eni {
    /// The ENI's primary address (never handed to a pod).
    pub fn primary_ip(&self) -> Option<Ipv4Addr> {
        self.private_ips
            .iter()
            .find(|ip| ip.primary)
            .map(|ip| ip.address)
    }

    /// Secondary addresses: the ones pods get.
    pub fn secondary_ips(&self) -> Vec<Ipv4Addr> {
        self.private_ips
            .iter()
            .filter(|ip| !ip.primary)
            .map(|ip| ip.address)
            .collect()
    }

    /// Device index of the attachment, if attached.
    pub fn device_index(&self) -> Option<u32> {
        self.attachment.as_ref().map(|a| a.device_index)
    }

    /// The [`TAG_CREATED_AT`] time, if the tag is there and parses; the leaked-ENI sweep spares
    /// ENIs younger than its grace period.
    pub fn created_at(&self) -> Option<SystemTime> {
        let text = self.tags.get(TAG_CREATED_AT)?;
        let time = DateTime::from_str(text, DateTimeFormat::DateTime).ok()?;
        SystemTime::try_from(time).ok()
    }
}

/// An ENI's attachment to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniAttachment {
    pub id: String,
    pub instance_id: String,
    pub device_index: u32,
    pub network_card_index: u32,
    pub delete_on_termination: bool,
}

/// One private IPv4 address of an ENI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateIp {
    pub address: Ipv4Addr,
    pub primary: bool,
}

/// ENI status as EC2 reports it; `available` means detached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EniStatus {
    Available,
    Attaching,
    InUse,
    Detaching,
    Other(String),
}

impl EniStatus {
    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "available" => EniStatus::Available,
            "attaching" => EniStatus::Attaching,
            "in-use" => EniStatus::InUse,
            "detaching" => EniStatus::Detaching,
            other => EniStatus::Other(other.to_owned()),
        }
    }
}

/// Which ENIs [`super::Ec2::describe_network_interfaces`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EniFilter {
    /// Exactly these ENIs.
    Ids(Vec<String>),
    /// Detached (`available`) ENIs tagged with [`TAG_CLUSTER_NAME`] = `cluster_name`: the
    /// candidates of the leaked-ENI sweep.
    AvailableInCluster { cluster_name: String },
}

/// How many secondary addresses a new ENI starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondaryAddresses {
    /// Secondary IPs (SecondaryPrivateIpAddressCount).
    Ips(u32),
    /// /28 prefixes (Ipv4PrefixCount), in prefix-delegation mode.
    Prefixes(u32),
}

/// A CreateNetworkInterface request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEni {
    pub subnet_id: String,
    pub security_groups: Vec<String>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub secondary: SecondaryAddresses,
}

impl CreateEni {
    /// The request the manager makes for a node: description and the three tags set as the
    /// AWS VPC CNI sets them, `createdAt` being now.
    pub fn for_node(
        instance_id: &str,
        cluster_name: &str,
        subnet_id: &str,
        security_groups: &[String],
        secondary: SecondaryAddresses,
    ) -> Self {
        let now = DateTime::from(SystemTime::now());
        let created_at = now
            .fmt(DateTimeFormat::DateTime)
            .unwrap_or_else(|_| now.secs().to_string());
        let tags = BTreeMap::from([
            (TAG_INSTANCE_ID.to_owned(), instance_id.to_owned()),
            (TAG_CLUSTER_NAME.to_owned(), cluster_name.to_owned()),
            (TAG_CREATED_AT.to_owned(), created_at),
        ]);
        CreateEni {
            subnet_id: subnet_id.to_owned(),
            security_groups: security_groups.to_vec(),
            description: eni_description(instance_id),
            tags,
            secondary,
        }
    }
}

/// A subnet: its CIDR and how many addresses are left in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub cidr: Ipv4Net,
    pub available_ips: u32,
    pub availability_zone: String,
}

/// The numbers of an instance type that the limits and max-pods logic need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTypeInfo {
    pub instance_type: String,
    /// MaximumNetworkInterfaces (all network cards).
    pub max_enis: u32,
    /// Ipv4AddressesPerInterface, the primary address included.
    pub ipv4_per_eni: u32,
    pub vcpus: u32,
    /// `nitro` or `xen`; none for bare metal.
    pub hypervisor: Option<String>,
    pub bare_metal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_node_tags_like_the_aws_vpc_cni() {
        let req = CreateEni::for_node(
            "i-0abc",
            "prod",
            "subnet-1",
            &["sg-1".to_owned()],
            SecondaryAddresses::Ips(3),
        );
        assert_eq!(req.description, "aws-K8S-i-0abc");
        assert_eq!(req.tags[TAG_INSTANCE_ID], "i-0abc");
        assert_eq!(req.tags[TAG_CLUSTER_NAME], "prod");
        let eni = Eni {
            id: "eni-1".into(),
            mac: String::new(),
            subnet_id: String::new(),
            vpc_id: String::new(),
            status: EniStatus::Available,
            description: String::new(),
            attachment: None,
            private_ips: vec![],
            prefixes: vec![],
            security_groups: vec![],
            tags: req.tags.clone(),
        };
        let age = SystemTime::now()
            .duration_since(eni.created_at().expect("createdAt parses back"))
            .expect("createdAt is not in the future");
        assert!(age.as_secs() < 60, "createdAt is now, got {age:?} ago");
    }

    #[test]
    fn status_parse() {
        assert_eq!(EniStatus::parse("available"), EniStatus::Available);
        assert_eq!(EniStatus::parse("in-use"), EniStatus::InUse);
        assert_eq!(EniStatus::parse("weird"), EniStatus::Other("weird".into()));
    }
}
