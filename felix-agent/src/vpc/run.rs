//! Starting the VPC backend inside the agent: the pool (restored against the pods that still
//! have an interface), its loops, and the datapath's first pass before the CNI is served.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use trellis_datastore::resources::WorkloadEndpoint;
use trellis_datastore::{codec, keys, Datastore};
use trellis_vpc::datapath::RtDatapathNetlink;

use super::datapath::{NodeSettings, VpcDatapath};
use super::pods::VpcPods;
use super::start::{start, StartError};
use super::VpcConfig;
use crate::dataplane::DataplaneStatus;
use crate::metrics::Metrics;

/// The running backend: what the endpoints service answers from, and the loops to stop.
#[derive(Debug)]
pub struct Running {
    pub pods: VpcPods,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Why the backend did not start: the pool's own one-line reason, or the node's state.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0:#}")]
    Node(anyhow::Error),
}

/// Host veths of this node's endpoints, by (container id, interface in the pod).
async fn endpoint_interfaces(
    ds: &dyn Datastore,
    node: &str,
) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let (weps, _) = codec::list::<WorkloadEndpoint>(ds, &keys::workload_endpoints_of(node))
        .await
        .with_context(|| format!("listing the workload endpoints of node {node}"))?;
    Ok(weps
        .into_iter()
        .map(|w| {
            let s = w.value.spec;
            ((s.container_id, s.endpoint), s.interface_name)
        })
        .collect())
}

async fn link_names(handle: &rtnetlink::Handle) -> anyhow::Result<BTreeSet<String>> {
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing this node's links")?;
    Ok(links.iter().filter_map(super::datapath::name_of).collect())
}

/// Starts the pool and, with a netlink `handle`, the datapath (one pass done before this
/// returns, so restored pods keep their rules and new ones get theirs).
pub async fn run(
    cfg: &VpcConfig,
    ds: Arc<dyn Datastore>,
    node: &str,
    handle: Option<rtnetlink::Handle>,
    status: Arc<DataplaneStatus>,
    metrics: Arc<Metrics>,
) -> Result<Running, RunError> {
    let interfaces = endpoint_interfaces(ds.as_ref(), node)
        .await
        .map_err(RunError::Node)?;
    let links = match &handle {
        Some(h) => Some(link_names(h).await.map_err(RunError::Node)?),
        None => None,
    };
    // A checkpointed pod is alive while its endpoint exists and (in the node's namespace)
    // its host veth does.
    let exists = |a: &trellis_vpc::checkpoint::Allocation| {
        interfaces
            .get(&(a.container_id.clone(), a.ifname.clone()))
            .is_some_and(|veth| links.as_ref().is_none_or(|l| l.contains(veth)))
    };
    let (vpc, restored) = start(cfg, handle.is_some(), exists).await?;
    let m = &vpc.max_pods;
    tracing::info!(
        instance = %vpc.metadata.instance_id,
        instance_type = %vpc.metadata.instance_type,
        enis = vpc.limits.enis,
        ipv4_per_eni = vpc.limits.ipv4_per_eni,
        max_pods = m.recommended,
        formula = m.formula,
        "VPC backend: kubelet's --max-pods for this node is {}",
        m.recommended
    );
    if !restored.kept.is_empty() || !restored.released.is_empty() {
        tracing::info!(
            kept = restored.kept.len(),
            released = restored.released.len(),
            lost = restored.lost.len(),
            "restored the ENI pool's allocations from the checkpoint"
        );
    }
    metrics.vpc_max_pods.set(i64::from(m.recommended));
    let primary = vpc
        .metadata
        .primary_eni()
        .expect("start checked the primary ENI");
    let primary_ip = *primary.local_ipv4s.first().ok_or_else(|| {
        RunError::Node(anyhow::anyhow!(
            "IMDS lists no address for the primary ENI {}",
            primary.interface_id
        ))
    })?;
    let settings = NodeSettings {
        vpc_cidrs: primary.vpc_cidrs.clone(),
        exclude_snat_cidrs: cfg.exclude_snat_cidrs.clone(),
        external_snat: cfg.external_snat,
        primary_ip,
        connmark: cfg.connmark,
        eni_mtu: cfg.eni_mtu,
    };
    let mut tasks = Vec::new();
    let datapath = match handle {
        Some(h) => {
            let dp = Arc::new(VpcDatapath::new(
                vpc.manager.clone(),
                settings,
                Box::new(RtDatapathNetlink::new(h.clone())),
                Some(h),
                status,
                metrics,
            ));
            if let Err(problems) = dp.pass(true).await {
                tracing::warn!(%problems, "VPC datapath, first pass");
            }
            tasks.push(tokio::spawn(dp.clone().run(cfg.resync_interval)));
            Some(dp)
        }
        None => None,
    };
    tasks.push(tokio::spawn(vpc.manager.clone().run(cfg.resync_interval)));
    let pods = VpcPods::new(
        vpc.manager,
        datapath,
        node,
        &vpc.metadata.instance_id,
        &vpc.metadata.instance_type,
        m.recommended,
    );
    Ok(Running { pods, tasks })
}
