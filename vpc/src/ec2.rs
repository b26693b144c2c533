//! The narrow EC2 interface the ENI manager uses, and its implementation over `aws-sdk-ec2`.
//!
//! The manager never sees SDK types: the [`Ec2`] trait takes and returns the plain types of
//! [`types`], so the manager's unit tests can use an in-memory fake and its moto tests the real
//! [`SdkEc2`]. Every failure is one [`Ec2Error`], classified from EC2's error code so the
//! manager can back off on throttling and stop asking when a limit is reached.
//!
//! ```text
//!  ENI manager ──► dyn Ec2 ──► FaultInjecting<E> (tests) ──► SdkEc2 ──► aws-sdk-ec2 ──► EC2 / moto
//! ```
//!
//! Tags and the description follow the AWS VPC CNI's, so ENIs made by either are recognisable
//! by the same tools (and by each other's leaked-ENI cleanup).

mod convert;
mod error;
mod fault;
mod sdk;
mod types;

use std::net::Ipv4Addr;

use async_trait::async_trait;
use ipnet::Ipv4Net;

pub use error::{classify, Ec2Error};
pub use fault::FaultInjecting;
pub use sdk::{CredentialSource, Ec2Config, SdkEc2};
pub use types::{
    CreateEni, Eni, EniAttachment, EniFilter, EniStatus, Instance, InstanceTypeInfo, Operation,
    PrivateIp, SecondaryAddresses, Subnet,
};

/// Tag holding the id of the instance an ENI was created for.
pub const TAG_INSTANCE_ID: &str = "node.k8s.amazonaws.com/instance_id";
/// Tag holding the cluster name; the leaked-ENI sweep only looks at ENIs of its own cluster.
pub const TAG_CLUSTER_NAME: &str = "cluster.k8s.amazonaws.com/name";
/// Tag holding the creation time (RFC 3339), so the sweep can spare ENIs still being attached.
pub const TAG_CREATED_AT: &str = "node.k8s.amazonaws.com/createdAt";

/// The description given to ENIs this backend creates: `aws-K8S-<instance id>`, as the AWS
/// VPC CNI writes it.
pub fn eni_description(instance_id: &str) -> String {
    format!("aws-K8S-{instance_id}")
}

/// What the ENI manager needs from EC2, and nothing more.
///
/// Object safe (`Arc<dyn Ec2>`), so the manager is written once against the trait. All calls
/// concern network card 0: multi-card instances are out of scope.
#[async_trait]
pub trait Ec2: Send + Sync {
    /// The instance's type, subnet and every ENI attached to it (with tags and prefixes).
    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, Ec2Error>;

    /// ENIs selected by `filter`; an unknown id in [`EniFilter::Ids`] is [`Ec2Error::NotFound`].
    async fn describe_network_interfaces(&self, filter: &EniFilter) -> Result<Vec<Eni>, Ec2Error>;

    /// Creates an ENI (not attached) and returns it as EC2 describes it.
    async fn create_network_interface(&self, request: &CreateEni) -> Result<Eni, Ec2Error>;

    /// Attaches `eni_id` to `instance_id` at `device_index` on network card 0; returns the
    /// attachment id.
    async fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
    ) -> Result<String, Ec2Error>;

    /// Sets DeleteOnTermination on an attachment, so terminating the instance frees the ENI.
    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
    ) -> Result<(), Ec2Error>;

    /// Assigns `count` new secondary IPv4 addresses to `eni_id` and returns exactly those.
    async fn assign_private_ip_addresses(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error>;

    /// Assigns `count` new /28 prefixes to `eni_id` and returns exactly those.
    async fn assign_ipv4_prefixes(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Net>, Ec2Error>;

    /// Releases secondary addresses of `eni_id`.
    async fn unassign_private_ip_addresses(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
    ) -> Result<(), Ec2Error>;

    /// Releases /28 prefixes of `eni_id`.
    async fn unassign_ipv4_prefixes(
        &self,
        eni_id: &str,
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error>;

    /// Detaches an attachment; `force` is for an instance that does not answer.
    async fn detach_network_interface(
        &self,
        attachment_id: &str,
        force: bool,
    ) -> Result<(), Ec2Error>;

    /// Deletes an ENI, which must be detached (status available).
    async fn delete_network_interface(&self, eni_id: &str) -> Result<(), Ec2Error>;

    /// The subnet's CIDR and how many addresses it has left.
    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet, Ec2Error>;

    /// The numbers of an instance type the limits table lacks (the fallback for new types).
    async fn describe_instance_type(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeInfo, Ec2Error>;
}
