//! [`FaultInjecting`]: an [`Ec2`] that fails chosen operations before passing calls on.
//!
//! A wrapper over the trait rather than an SDK interceptor, because:
//! - it works over any [`Ec2`]: the manager's in-memory fake as well as [`super::SdkEc2`]
//!   against moto, so one fault script serves both test tiers;
//! - the error arrives already classified, exactly as the manager will see it; an interceptor
//!   would inject an HTTP answer that the SDK first retries under its own retry policy, so
//!   "fail twice" would depend on [`super::SdkEc2::retry_config`];
//! - it needs none of the SDK's interceptor API, which is wider and changes more often than
//!   this crate's trait.
//!
//! A failed call never reaches the inner [`Ec2`]: like a throttled or limit-refused EC2
//! request, it changes nothing.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::types::{CreateEni, Eni, EniFilter, Instance, InstanceTypeInfo, Subnet};
use super::{Ec2, Ec2Error, Operation};

/// Wraps an [`Ec2`]; see the module documentation.
#[derive(Debug)]
pub struct FaultInjecting<E> {
    inner: E,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<Operation, VecDeque<Ec2Error>>,
    calls: HashMap<Operation, u32>,
}

impl<E: Ec2> FaultInjecting<E> {
    pub fn new(inner: E) -> Self {
        FaultInjecting {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes the next `times` calls of `operation` fail with `error`, after any failures
    /// already queued for it.
    pub fn fail(&self, operation: Operation, error: Ec2Error, times: u32) {
        let mut state = self.lock();
        let queue = state.faults.entry(operation).or_default();
        queue.extend(std::iter::repeat_n(error, times as usize));
    }

    /// How many times `operation` was called, failed calls included.
    pub fn calls(&self, operation: Operation) -> u32 {
        self.lock().calls.get(&operation).copied().unwrap_or(0)
    }

    /// Failures still queued for `operation`.
    pub fn pending(&self, operation: Operation) -> usize {
        self.lock().faults.get(&operation).map_or(0, VecDeque::len)
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Counts the call and pops its next queued failure, if any.
    fn check(&self, operation: Operation) -> Result<(), Ec2Error> {
        let mut state = self.lock();
        *state.calls.entry(operation).or_default() += 1;
        match state
            .faults
            .get_mut(&operation)
            .and_then(VecDeque::pop_front)
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves counters that are still valid.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl<E: Ec2> Ec2 for FaultInjecting<E> {
    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, Ec2Error> {
        self.check(Operation::DescribeInstance)?;
        self.inner.describe_instance(instance_id).await
    }

    async fn describe_network_interfaces(&self, filter: &EniFilter) -> Result<Vec<Eni>, Ec2Error> {
        self.check(Operation::DescribeNetworkInterfaces)?;
        self.inner.describe_network_interfaces(filter).await
    }

    async fn create_network_interface(&self, request: &CreateEni) -> Result<Eni, Ec2Error> {
        self.check(Operation::CreateNetworkInterface)?;
        self.inner.create_network_interface(request).await
    }

    async fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
    ) -> Result<String, Ec2Error> {
        self.check(Operation::AttachNetworkInterface)?;
        self.inner
            .attach_network_interface(eni_id, instance_id, device_index)
            .await
    }

    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
    ) -> Result<(), Ec2Error> {
        self.check(Operation::SetDeleteOnTermination)?;
        self.inner
            .set_delete_on_termination(eni_id, attachment_id)
            .await
    }

    async fn assign_private_ip_addresses(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        self.check(Operation::AssignPrivateIpAddresses)?;
        self.inner.assign_private_ip_addresses(eni_id, count).await
    }

    async fn assign_ipv4_prefixes(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Net>, Ec2Error> {
        self.check(Operation::AssignIpv4Prefixes)?;
        self.inner.assign_ipv4_prefixes(eni_id, count).await
    }

    async fn unassign_private_ip_addresses(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
    ) -> Result<(), Ec2Error> {
        self.check(Operation::UnassignPrivateIpAddresses)?;
        self.inner.unassign_private_ip_addresses(eni_id, ips).await
    }

    async fn unassign_ipv4_prefixes(
        &self,
        eni_id: &str,
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error> {
        self.check(Operation::UnassignIpv4Prefixes)?;
        self.inner.unassign_ipv4_prefixes(eni_id, prefixes).await
    }

    async fn detach_network_interface(
        &self,
        attachment_id: &str,
        force: bool,
    ) -> Result<(), Ec2Error> {
        self.check(Operation::DetachNetworkInterface)?;
        self.inner
            .detach_network_interface(attachment_id, force)
            .await
    }

    async fn delete_network_interface(&self, eni_id: &str) -> Result<(), Ec2Error> {
        self.check(Operation::DeleteNetworkInterface)?;
        self.inner.delete_network_interface(eni_id).await
    }

    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet, Ec2Error> {
        self.check(Operation::DescribeSubnet)?;
        self.inner.describe_subnet(subnet_id).await
    }

    async fn describe_instance_type(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeInfo, Ec2Error> {
        self.check(Operation::DescribeInstanceType)?;
        self.inner.describe_instance_type(instance_type).await
    }
}
