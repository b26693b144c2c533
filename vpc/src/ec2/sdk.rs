//! [`SdkEc2`]: the [`Ec2`] trait over `aws-sdk-ec2`, pointed at EC2 or at moto.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sdk_ec2::types as sdk;
use ipnet::Ipv4Net;

use super::error::from_sdk;
use super::types::{CreateEni, Eni, EniFilter, Instance, InstanceTypeInfo, SecondaryAddresses};
use super::{convert, Ec2, Ec2Error, Operation, Subnet, TAG_CLUSTER_NAME};

/// Where the AWS credentials come from.
#[derive(Clone, Default)]
pub enum CredentialSource {
    /// The SDK's standard chain: environment, profile files, web identity, container, instance
    /// role. What a real node uses.
    #[default]
    DefaultChain,
    /// Fixed keys: tests and the lab against moto, which accepts any.
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
    /// A chain with no provider in it: every call fails with [`Ec2Error::NoCredentials`].
    /// Exists so that error path is tested as a node without credentials meets it.
    Empty,
}

impl fmt::Debug for CredentialSource {
    /// Never prints the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::DefaultChain => f.write_str("DefaultChain"),
            CredentialSource::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"** redacted **")
                .finish(),
            CredentialSource::Empty => f.write_str("Empty"),
        }
    }
}

/// How to reach EC2.
#[derive(Debug, Clone)]
pub struct Ec2Config {
    /// An endpoint URL override (moto: `http://127.0.0.1:PORT`); none means the region's EC2.
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: CredentialSource,
}

impl Ec2Config {
    /// The region's EC2 endpoint with the standard credential chain.
    pub fn new(region: impl Into<String>) -> Self {
        Ec2Config {
            endpoint: None,
            region: region.into(),
            credentials: CredentialSource::DefaultChain,
        }
    }
}

/// [`Ec2`] over `aws-sdk-ec2`.
#[derive(Debug, Clone)]
pub struct SdkEc2 {
    client: aws_sdk_ec2::Client,
}

impl SdkEc2 {
    /// Builds the client; loads shared settings the way every AWS SDK does, then applies
    /// `config`, [`SdkEc2::retry_config`] and [`SdkEc2::timeout_config`] over them.
    pub async fn new(config: &Ec2Config) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(Self::retry_config())
            .timeout_config(Self::timeout_config());
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        loader = match &config.credentials {
            CredentialSource::DefaultChain => loader,
            CredentialSource::Static {
                access_key_id,
                secret_access_key,
            } => loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "trellis-static",
            )),
            CredentialSource::Empty => loader.credentials_provider(NoProviders),
        };
        SdkEc2 {
            client: aws_sdk_ec2::Client::new(&loader.load().await),
        }
    }

    /// The SDK's own retries, made explicit: standard mode (exponential backoff with jitter,
    /// a client-side retry budget), 3 attempts, 200 ms first backoff, 5 s cap.
    ///
    /// Standard mode retries only transient failures: 5xx, connection errors, timeouts and the
    /// throttling codes (RequestLimitExceeded among them); never the limit errors. Three
    /// attempts absorb a blip, yet sustained throttling reaches the ENI manager within about a
    /// second as [`Ec2Error::Throttled`], where its longer backoff and the node condition take
    /// over. Retrying a create is safe: the SDK fills CreateNetworkInterface's ClientToken.
    /// An AssignPrivateIpAddresses retried after a timeout may assign twice; the manager's
    /// reconcile finds the extra addresses and releases them as surplus.
    pub fn retry_config() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5))
    }

    /// Connect 3 s, one attempt 10 s, a whole call (retries included) 30 s: no EC2 call can
    /// hold the manager's loop longer than that.
    pub fn timeout_config() -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build()
    }

    async fn enis(
        &self,
        operation: Operation,
        input: &str,
        ids: Vec<String>,
        filters: Vec<sdk::Filter>,
    ) -> Result<Vec<Eni>, Ec2Error> {
        let request = self
            .client
            .describe_network_interfaces()
            .set_network_interface_ids((!ids.is_empty()).then_some(ids))
            .set_filters((!filters.is_empty()).then_some(filters));
        let items = request
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| from_sdk(operation, input, e))?;
        items
            .iter()
            .map(|ni| convert::eni(ni).map_err(|m| bad_response(operation, input, &m)))
            .collect()
    }
}

fn filter(name: &str, value: &str) -> sdk::Filter {
    sdk::Filter::builder().name(name).values(value).build()
}

fn bad_response(operation: Operation, input: &str, what: &str) -> Ec2Error {
    Ec2Error::local(operation, input, "BadResponse", what)
}

fn count_i32(operation: Operation, input: &str, count: u32) -> Result<i32, Ec2Error> {
    i32::try_from(count)
        .map_err(|_| Ec2Error::local(operation, input, "InvalidCount", "count exceeds i32"))
}

/// EC2 answers AssignPrivateIpAddresses with just the new addresses; moto answers with the
/// ENI's whole list, new ones last. Taking the last `count` is right for both.
fn newly_assigned<T: Copy>(all: &[T], count: usize) -> Option<Vec<T>> {
    (all.len() >= count).then(|| all[all.len() - count..].to_vec())
}

#[async_trait]
impl Ec2 for SdkEc2 {
    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, Ec2Error> {
        let op = Operation::DescribeInstance;
        let out = self
            .client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| from_sdk(op, instance_id, e))?;
        let instance = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .ok_or_else(|| {
                super::classify(
                    op,
                    instance_id,
                    "InvalidInstanceID.NotFound",
                    "not in the answer",
                )
            })?;
        let primary_eni_id = instance
            .network_interfaces()
            .iter()
            .find(|ni| {
                ni.attachment().and_then(|a| a.device_index()) == Some(0)
                    && ni
                        .attachment()
                        .and_then(|a| a.network_card_index())
                        .unwrap_or(0)
                        == 0
            })
            .and_then(|ni| ni.network_interface_id())
            .ok_or_else(|| bad_response(op, instance_id, "no ENI at device index 0"))?
            .to_owned();
        // DescribeInstances leaves out ENI tags and prefixes: ask for the ENIs themselves.
        let input = format!("attachment.instance-id={instance_id}");
        let mut enis = self
            .enis(
                Operation::DescribeNetworkInterfaces,
                &input,
                vec![],
                vec![filter("attachment.instance-id", instance_id)],
            )
            .await?;
        enis.sort_by_key(|eni| eni.device_index());
        let field = |value: Option<&str>, name: &str| {
            convert::required(value, name).map_err(|m| bad_response(op, instance_id, &m))
        };
        Ok(Instance {
            id: instance_id.to_owned(),
            instance_type: field(instance.instance_type().map(|t| t.as_str()), "InstanceType")?,
            subnet_id: field(instance.subnet_id(), "SubnetId")?,
            vpc_id: field(instance.vpc_id(), "VpcId")?,
            primary_eni_id,
            enis,
        })
    }

    async fn describe_network_interfaces(
        &self,
        eni_filter: &EniFilter,
    ) -> Result<Vec<Eni>, Ec2Error> {
        let op = Operation::DescribeNetworkInterfaces;
        match eni_filter {
            EniFilter::Ids(ids) if ids.is_empty() => Ok(vec![]),
            EniFilter::Ids(ids) => self.enis(op, &ids.join(","), ids.clone(), vec![]).await,
            EniFilter::AvailableInCluster { cluster_name } => {
                let tag = format!("tag:{TAG_CLUSTER_NAME}");
                let input = format!("{tag}={cluster_name}, status=available");
                let filters = vec![filter(&tag, cluster_name), filter("status", "available")];
                self.enis(op, &input, vec![], filters).await
            }
        }
    }

    async fn create_network_interface(&self, request: &CreateEni) -> Result<Eni, Ec2Error> {
        let op = Operation::CreateNetworkInterface;
        let input = format!("subnet {}, {:?}", request.subnet_id, request.secondary);
        let tags: Vec<sdk::Tag> = request
            .tags
            .iter()
            .map(|(k, v)| sdk::Tag::builder().key(k).value(v).build())
            .collect();
        let mut call = self
            .client
            .create_network_interface()
            .subnet_id(&request.subnet_id)
            .description(&request.description)
            .set_groups(Some(request.security_groups.clone()));
        if !tags.is_empty() {
            call = call.tag_specifications(
                sdk::TagSpecification::builder()
                    .resource_type(sdk::ResourceType::NetworkInterface)
                    .set_tags(Some(tags))
                    .build(),
            );
        }
        call = match request.secondary {
            SecondaryAddresses::Ips(0) | SecondaryAddresses::Prefixes(0) => call,
            SecondaryAddresses::Ips(n) => {
                call.secondary_private_ip_address_count(count_i32(op, &input, n)?)
            }
            SecondaryAddresses::Prefixes(n) => call.ipv4_prefix_count(count_i32(op, &input, n)?),
        };
        let out = call.send().await.map_err(|e| from_sdk(op, &input, e))?;
        let ni = out
            .network_interface()
            .ok_or_else(|| bad_response(op, &input, "NetworkInterface: missing"))?;
        convert::eni(ni).map_err(|m| bad_response(op, &input, &m))
    }

    async fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
    ) -> Result<String, Ec2Error> {
        let op = Operation::AttachNetworkInterface;
        let input = format!("{eni_id} to {instance_id} at device {device_index}");
        let out = self
            .client
            .attach_network_interface()
            .network_interface_id(eni_id)
            .instance_id(instance_id)
            .device_index(count_i32(op, &input, device_index)?)
            .network_card_index(0)
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        convert::required(out.attachment_id(), "AttachmentId")
            .map_err(|m| bad_response(op, &input, &m))
    }

    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
    ) -> Result<(), Ec2Error> {
        let op = Operation::SetDeleteOnTermination;
        let input = format!("{eni_id} attachment {attachment_id}");
        let change = sdk::NetworkInterfaceAttachmentChanges::builder()
            .attachment_id(attachment_id)
            .delete_on_termination(true)
            .build();
        self.client
            .modify_network_interface_attribute()
            .network_interface_id(eni_id)
            .attachment(change)
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        Ok(())
    }

    async fn assign_private_ip_addresses(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        let op = Operation::AssignPrivateIpAddresses;
        let input = format!("{eni_id}, {count} addresses");
        if count == 0 {
            return Ok(vec![]);
        }
        let out = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .secondary_private_ip_address_count(count_i32(op, &input, count)?)
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        let all = out
            .assigned_private_ip_addresses()
            .iter()
            .map(|a| convert::parse_ip(a.private_ip_address(), "AssignedPrivateIpAddress"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| bad_response(op, &input, &m))?;
        newly_assigned(&all, count as usize).ok_or_else(|| {
            let msg = format!("asked for {count}, EC2 reported {} assigned", all.len());
            Ec2Error::local(op, &input, "IncompleteAssignment", &msg)
        })
    }

    async fn assign_ipv4_prefixes(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Net>, Ec2Error> {
        let op = Operation::AssignIpv4Prefixes;
        let input = format!("{eni_id}, {count} /28 prefixes");
        if count == 0 {
            return Ok(vec![]);
        }
        let out = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .ipv4_prefix_count(count_i32(op, &input, count)?)
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        let prefixes = out
            .assigned_ipv4_prefixes()
            .iter()
            .map(|p| convert::parse_net(p.ipv4_prefix(), "AssignedIpv4Prefix"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| bad_response(op, &input, &m))?;
        if prefixes.len() != count as usize {
            // moto ignores Ipv4PrefixCount and lands here, rather than in a pool with no prefixes.
            let msg = format!(
                "asked for {count}, EC2 assigned {} (the endpoint may not support prefix delegation)",
                prefixes.len()
            );
            return Err(Ec2Error::local(op, &input, "IncompleteAssignment", &msg));
        }
        Ok(prefixes)
    }

    async fn unassign_private_ip_addresses(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
    ) -> Result<(), Ec2Error> {
        let op = Operation::UnassignPrivateIpAddresses;
        if ips.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        let input = format!("{eni_id}, {}", list.join(","));
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id)
            .set_private_ip_addresses(Some(list))
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        Ok(())
    }

    async fn unassign_ipv4_prefixes(
        &self,
        eni_id: &str,
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error> {
        let op = Operation::UnassignIpv4Prefixes;
        if prefixes.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = prefixes.iter().map(Ipv4Net::to_string).collect();
        let input = format!("{eni_id}, {}", list.join(","));
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id)
            .set_ipv4_prefixes(Some(list))
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        Ok(())
    }

    async fn detach_network_interface(
        &self,
        attachment_id: &str,
        force: bool,
    ) -> Result<(), Ec2Error> {
        let op = Operation::DetachNetworkInterface;
        let input = format!("{attachment_id}, force={force}");
        self.client
            .detach_network_interface()
            .attachment_id(attachment_id)
            .force(force)
            .send()
            .await
            .map_err(|e| from_sdk(op, &input, e))?;
        Ok(())
    }

    async fn delete_network_interface(&self, eni_id: &str) -> Result<(), Ec2Error> {
        let op = Operation::DeleteNetworkInterface;
        self.client
            .delete_network_interface()
            .network_interface_id(eni_id)
            .send()
            .await
            .map_err(|e| from_sdk(op, eni_id, e))?;
        Ok(())
    }

    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet, Ec2Error> {
        let op = Operation::DescribeSubnet;
        let out = self
            .client
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await
            .map_err(|e| from_sdk(op, subnet_id, e))?;
        let subnet = out
            .subnets()
            .iter()
            .find(|s| s.subnet_id() == Some(subnet_id))
            .ok_or_else(|| {
                super::classify(
                    op,
                    subnet_id,
                    "InvalidSubnetID.NotFound",
                    "not in the answer",
                )
            })?;
        convert::subnet(subnet).map_err(|m| bad_response(op, subnet_id, &m))
    }

    async fn describe_instance_type(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeInfo, Ec2Error> {
        let op = Operation::DescribeInstanceType;
        let out = self
            .client
            .describe_instance_types()
            .instance_types(sdk::InstanceType::from(instance_type))
            .send()
            .await
            .map_err(|e| from_sdk(op, instance_type, e))?;
        let info = out
            .instance_types()
            .iter()
            .find(|t| t.instance_type().map(|t| t.as_str()) == Some(instance_type))
            .ok_or_else(|| {
                super::classify(
                    op,
                    instance_type,
                    "InvalidInstanceType",
                    "unknown instance type",
                )
            })?;
        convert::instance_type(info).map_err(|m| bad_response(op, instance_type, &m))
    }
}

/// The provider behind [`CredentialSource::Empty`]: finds nothing, as the default chain does on
/// a machine with no credentials anywhere.
#[derive(Debug)]
struct NoProviders;

impl ProvideCredentials for NoProviders {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no credential providers configured",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newly_assigned_takes_the_tail() {
        assert_eq!(newly_assigned(&[1, 2, 3, 4], 2), Some(vec![3, 4]));
        assert_eq!(newly_assigned(&[3, 4], 2), Some(vec![3, 4]));
        assert_eq!(newly_assigned(&[4], 2), None);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let source = CredentialSource::Static {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
        };
        let text = format!("{source:?}");
        assert!(
            text.contains("AKIDEXAMPLE") && !text.contains("very-secret"),
            "{text}"
        );
    }
}
