//! Bringing the ENI pool up: who this instance is (IMDS), what it may hold (limits, max
//! pods), and what it holds already (EC2 and the checkpoint).

use std::sync::Arc;
use std::time::Duration;

use trellis_vpc::address_book::Restored;
use trellis_vpc::checkpoint::Allocation;
use trellis_vpc::ec2::{Ec2, Ec2Config, Ec2Error, SdkEc2};
use trellis_vpc::eni_manager::{EniManager, ManagerConfig, ManagerError};
use trellis_vpc::imds::{ImdsClient, ImdsConfig, ImdsError, InstanceMetadata};
use trellis_vpc::limits::{self, Ec2Limits, InstanceLimits};
use trellis_vpc::max_pods::{self, MaxPods, MaxPodsError, Mode};
use trellis_vpc::warm_pool::PoolLimits;

use super::VpcConfig;

/// Why the VPC backend could not start; each says in one line what failed and with which
/// input.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading this instance's metadata from IMDS at {endpoint}: {source}")]
    Imds {
        endpoint: String,
        #[source]
        source: ImdsError,
    },
    #[error("instance metadata has no primary ENI (MAC {mac} is not among the ENIs IMDS lists)")]
    NoPrimaryEni { mac: String },
    #[error("{0}")]
    InstanceType(String),
    #[error(transparent)]
    MaxPods(#[from] MaxPodsError),
    #[error("starting the ENI pool of {instance_id}: {source}")]
    Pool {
        instance_id: String,
        #[source]
        source: ManagerError,
    },
    #[error("creating the checkpoint directory {path}: {source}")]
    CheckpointDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// Worth another try: EC2 throttled or did not answer, IMDS did not answer.
    fn transient(&self) -> bool {
        match self {
            StartError::Imds { source, .. } => matches!(
                source,
                ImdsError::Timeout { .. } | ImdsError::Transport { .. }
            ),
            StartError::Pool {
                source: ManagerError::Ec2(e),
                ..
            } => transient_ec2(e),
            _ => false,
        }
    }
}

fn transient_ec2(e: &Ec2Error) -> bool {
    match e {
        Ec2Error::Throttled { .. } => true,
        Ec2Error::Other { code, .. } => matches!(code.as_str(), "Transport" | "Timeout"),
        _ => false,
    }
}

/// The node's pool, started, and what it is sized by.
#[derive(Debug)]
pub struct VpcNode {
    pub manager: Arc<EniManager>,
    pub metadata: InstanceMetadata,
    pub limits: InstanceLimits,
    pub max_pods: MaxPods,
}

/// Starts the pool, retrying what is transient (throttling, an endpoint not answering yet)
/// for about a minute; anything else fails at once. With `datapath`, a new ENI's addresses
/// wait until the datapath reports its interface.
pub async fn start(
    cfg: &VpcConfig,
    datapath: bool,
    exists: impl Fn(&Allocation) -> bool,
) -> Result<(VpcNode, Restored), StartError> {
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match start_once(cfg, datapath, &exists).await {
            Err(e) if e.transient() && attempt < 8 => {
                tracing::warn!(error = %e, attempt, "VPC backend start; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(16));
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn start_once(
    cfg: &VpcConfig,
    datapath: bool,
    exists: &impl Fn(&Allocation) -> bool,
) -> Result<(VpcNode, Restored), StartError> {
    let imds_error = |source| StartError::Imds {
        endpoint: cfg.imds_endpoint.clone(),
        source,
    };
    let imds = ImdsClient::new(ImdsConfig {
        endpoint: cfg.imds_endpoint.clone(),
        ..ImdsConfig::default()
    })
    .map_err(imds_error)?;
    let metadata = imds.instance_metadata().await.map_err(imds_error)?;
    if metadata.primary_eni().is_none() {
        return Err(StartError::NoPrimaryEni {
            mac: metadata.primary_mac.clone(),
        });
    }
    let region = cfg
        .region
        .clone()
        .unwrap_or_else(|| metadata.region.clone());
    let ec2: Arc<dyn Ec2> = Arc::new(
        SdkEc2::new(&Ec2Config {
            endpoint: cfg.ec2_endpoint.clone(),
            region,
            credentials: cfg.credentials.clone(),
        })
        .await,
    );
    let limits = limits::resolve(&metadata.instance_type, &Ec2Limits(ec2.as_ref()))
        .await
        // The cause on the same line (`{:#}`): a failed DescribeInstanceTypes says why.
        .map_err(|e| StartError::InstanceType(format!("{:#}", anyhow::Error::new(e))))?;
    let mode = Mode {
        prefix_delegation: cfg.targets.prefix_delegation,
        custom_networking: cfg.custom_network.is_some(),
    };
    let max_pods = max_pods::max_pods(&metadata.instance_type, &limits, mode)?;
    if let Some(dir) = cfg.checkpoint.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StartError::CheckpointDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut mcfg = ManagerConfig::new(
        cfg.cluster_name.clone(),
        metadata.instance_id.clone(),
        cfg.targets.clone(),
        PoolLimits::new(&limits, max_pods.recommended),
        cfg.checkpoint.clone(),
    );
    mcfg.custom_network = cfg.custom_network.clone();
    mcfg.wait_for_interfaces = datapath;
    let (manager, restored) = EniManager::start(ec2, mcfg, exists)
        .await
        .map_err(|source| StartError::Pool {
            instance_id: metadata.instance_id.clone(),
            source,
        })?;
    Ok((
        VpcNode {
            manager: Arc::new(manager),
            metadata,
            limits,
            max_pods,
        },
        restored,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_vpc::ec2::Operation;

    #[test]
    fn throttling_and_unanswered_calls_are_retried_the_rest_is_not() {
        let pool = |e| StartError::Pool {
            instance_id: "i-1".into(),
            source: ManagerError::Ec2(e),
        };
        let throttled = Ec2Error::Throttled {
            operation: Operation::DescribeInstance,
            input: "i-1".into(),
            code: "RequestLimitExceeded".into(),
            message: "slow down".into(),
        };
        assert!(pool(throttled).transient());
        let no_creds = Ec2Error::NoCredentials {
            operation: Operation::DescribeInstance,
        };
        assert!(!pool(no_creds).transient());
        let timeout = StartError::Imds {
            endpoint: "http://169.254.169.254".into(),
            source: ImdsError::Timeout {
                path: "instance-id".into(),
                endpoint: "http://169.254.169.254".into(),
                timeout: Duration::from_secs(1),
            },
        };
        assert!(timeout.transient());
        assert!(!StartError::InstanceType("unknown instance type".into()).transient());
    }
}
