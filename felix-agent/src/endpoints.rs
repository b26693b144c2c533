//! The CNI-facing service of the agent: addresses for pod interfaces (through the node's IPAM),
//! their WorkloadEndpoints, release, garbage collection and readiness.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use trellis_agent_api::{
    AddRequest, AddResponse, ApiError, Attachment, DelRequest, DelResponse, EndpointRequest,
    GcRequest, GcResponse, StatusResponse,
};
use trellis_datastore::codec;
use trellis_datastore::resources::ipam::{AllocationAttributes, AllocationKind};
use trellis_datastore::resources::workload_endpoint::{ipam_handle, WorkloadEndpointSpec};
use trellis_datastore::resources::{IpPoolSpec, IpamBlockSpec, NodeSpec, WorkloadEndpoint};
use trellis_datastore::{keys, Datastore, DatastoreError, Object, ObjectMeta};
use trellis_ipam::{AssignRequest, IpamError, NodeIpam};

use crate::bgp::BgpStatusCell;
use crate::dataplane::DataplaneStatus;
use crate::vpc::pods::VpcPods;

/// CNI error codes the agent reports (CNI SPEC "Error"; 100+ are plugin specific).
pub mod code {
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const IO: u32 = 5;
    /// No pool, or no free address.
    pub const NO_ADDRESS: u32 = 100;
    /// A requested address is taken or outside every pool.
    pub const ADDRESS_UNAVAILABLE: u32 = 101;
}

fn datastore_error(e: DatastoreError) -> ApiError {
    let code = match e {
        DatastoreError::Unavailable { .. } => code::TRY_AGAIN_LATER,
        _ => code::IO,
    };
    ApiError {
        code,
        message: e.to_string(),
    }
}

fn ipam_error(e: IpamError) -> ApiError {
    let code = match &e {
        IpamError::Datastore(DatastoreError::Unavailable { .. }) => code::TRY_AGAIN_LATER,
        IpamError::Contention { .. } => code::TRY_AGAIN_LATER,
        IpamError::NoPool { .. } | IpamError::Exhausted { .. } | IpamError::BlockLimit { .. } => {
            code::NO_ADDRESS
        }
        IpamError::NotInPool { .. }
        | IpamError::AlreadyAllocated { .. }
        | IpamError::PoolDisabled { .. } => code::ADDRESS_UNAVAILABLE,
        IpamError::InvalidRequest(_) => code::INVALID_CONFIG,
        _ => code::IO,
    };
    ApiError {
        code,
        message: e.to_string(),
    }
}

/// The node's endpoint service.
#[derive(Debug)]
pub struct Endpoints {
    ds: Arc<dyn Datastore>,
    ipam: NodeIpam,
    node: String,
    mtu: u32,
    /// Written by the dataplane loop; `None` when the agent runs without a dataplane.
    dataplane: Option<Arc<DataplaneStatus>>,
    /// Written by the BGP loop; `None` when the agent runs no speaker.
    bgp: Option<Arc<BgpStatusCell>>,
    /// The VPC-native backend: pod addresses come from the ENI pool, not from `ipam`.
    vpc: Option<VpcPods>,
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl Endpoints {
    pub fn new(ds: Arc<dyn Datastore>, node: impl Into<String>, mtu: u32) -> Self {
        let node = node.into();
        Self {
            ipam: NodeIpam::new(ds.clone(), node.clone()),
            ds,
            node,
            mtu,
            dataplane: None,
            bgp: None,
            vpc: None,
        }
    }

    /// The same endpoints, giving pods ENI addresses from `pods` (the VPC backend).
    pub fn with_vpc(mut self, pods: VpcPods) -> Self {
        self.vpc = Some(pods);
        self
    }

    /// The same endpoints, reporting the dataplane's problems in [`Self::status`].
    pub fn with_dataplane_status(mut self, status: Arc<DataplaneStatus>) -> Self {
        self.dataplane = Some(status);
        self
    }

    /// The same endpoints, reporting the BGP speaker in [`Self::status`].
    pub fn with_bgp_status(mut self, status: Arc<BgpStatusCell>) -> Self {
        self.bgp = Some(status);
        self
    }

    fn bgp_status(&self) -> Option<trellis_agent_api::BgpStatus> {
        self.bgp.as_ref().and_then(|b| b.get())
    }

    fn dataplane_problems(&self) -> Vec<String> {
        self.dataplane
            .as_ref()
            .map(|d| d.problems())
            .unwrap_or_default()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn ipam(&self) -> &NodeIpam {
        &self.ipam
    }

    /// Allocates the pod interface's addresses. All or nothing.
    pub async fn add(&self, req: &AddRequest) -> Result<AddResponse, ApiError> {
        let handle = ipam_handle(&req.attachment.container_id, &req.attachment.ifname);
        let attrs = AllocationAttributes {
            kind: AllocationKind::Pod,
            node: Some(self.node.clone()),
            namespace: Some(req.pod.namespace.clone()),
            pod: Some(req.pod.name.clone()),
            allocated_at: None,
        };
        let addresses = if let Some(vpc) = &self.vpc {
            vpc.add(req).await?
        } else if req.requested.is_empty() {
            let areq = AssignRequest {
                handle,
                attrs,
                num_v4: usize::from(req.assign_ipv4),
                num_v6: usize::from(req.assign_ipv6),
                v4_pools: req.ipv4_pools.clone(),
                v6_pools: req.ipv6_pools.clone(),
            };
            let got = self.ipam.auto_assign(&areq).await.map_err(ipam_error)?;
            got.all().copied().map(host_net).collect()
        } else {
            let mut done = Vec::new();
            for ip in &req.requested {
                if let Err(e) = self.ipam.assign_ip(*ip, &handle, &attrs).await {
                    // All or nothing: a failed ADD leaves no address allocated.
                    self.ipam.release_ips(&done).await.map_err(ipam_error)?;
                    return Err(ipam_error(e));
                }
                done.push(*ip);
            }
            done.into_iter().map(host_net).collect()
        };
        Ok(AddResponse {
            addresses,
            mtu: self.mtu,
            node: self.node.clone(),
        })
    }

    /// Records the wired pod's WorkloadEndpoint (overwriting one from an earlier ADD of the same
    /// interface).
    pub async fn endpoint(&self, req: &EndpointRequest) -> Result<(), ApiError> {
        let spec = WorkloadEndpointSpec {
            node: self.node.clone(),
            orchestrator: "k8s".into(),
            pod: req.pod.name.clone(),
            endpoint: req.attachment.ifname.clone(),
            container_id: req.attachment.container_id.clone(),
            interface_name: req.host_ifname.clone(),
            mac: req.mac.clone(),
            ip_networks: req.addresses.clone(),
            handle_id: ipam_handle(&req.attachment.container_id, &req.attachment.ifname),
            ..Default::default()
        };
        let name = format!("{}-{}-{}", self.node, req.pod.name, req.attachment.ifname);
        let wep = WorkloadEndpoint::new(ObjectMeta::namespaced(&req.pod.namespace, name), spec);
        wep.validate().map_err(|e| ApiError {
            code: code::INVALID_CONFIG,
            message: format!(
                "workload endpoint for {}/{}: {e}",
                req.pod.namespace, req.pod.name
            ),
        })?;
        let value = codec::encode_object(&wep).map_err(datastore_error)?;
        self.ds
            .put(&wep.key(), value)
            .await
            .map_err(datastore_error)?;
        Ok(())
    }

    /// This node's endpoints.
    async fn local_endpoints(&self) -> Result<Vec<codec::Versioned<WorkloadEndpoint>>, ApiError> {
        let prefix = keys::workload_endpoints_of(&self.node);
        let (items, _) = codec::list(self.ds.as_ref(), &prefix)
            .await
            .map_err(datastore_error)?;
        Ok(items)
    }

    /// Releases the interface's addresses and deletes its endpoint. Idempotent.
    pub async fn del(&self, req: &DelRequest) -> Result<DelResponse, ApiError> {
        let a = &req.attachment;
        let ours = |w: &codec::Versioned<WorkloadEndpoint>| {
            w.value.spec.container_id == a.container_id && w.value.spec.endpoint == a.ifname
        };
        // With the pod named (Kubernetes runtimes), its endpoint is one read away; without it
        // (`ctr`), or when that key holds another container's endpoint, search the node's.
        let direct = match &req.pod {
            Some(p) => {
                let key = keys::workload_endpoint(&self.node, &p.namespace, &p.name, &a.ifname);
                codec::get_object::<WorkloadEndpointSpec>(self.ds.as_ref(), &key)
                    .await
                    .map_err(datastore_error)?
                    .filter(ours)
            }
            None => None,
        };
        let found = match direct {
            Some(w) => Some(w),
            None => self.local_endpoints().await?.into_iter().find(ours),
        };
        let mut out = DelResponse::default();
        if let Some(w) = &found {
            out.host_ifname = Some(w.value.spec.interface_name.clone());
            out.addresses = w.value.spec.ip_networks.clone();
        }
        // Addresses first: an endpoint without addresses is harmless, the reverse is a leak
        // until GC.
        out.released = match &self.vpc {
            Some(vpc) => vpc.release(a).await?,
            None => self
                .ipam
                .release_handle(&ipam_handle(&a.container_id, &a.ifname))
                .await
                .map_err(ipam_error)?,
        };
        if let Some(w) = found {
            match self.ds.delete(&w.key, Some(w.revision)).await {
                Ok(()) | Err(DatastoreError::NotFound { .. }) => {}
                Err(e) if e.lost_race() => {} // rewritten by a concurrent ADD of the same interface
                Err(e) => return Err(datastore_error(e)),
            }
        }
        Ok(out)
    }

    /// Releases every attachment on this node that is not in `valid` (CNI GC).
    pub async fn gc(&self, req: &GcRequest) -> Result<GcResponse, ApiError> {
        let valid: BTreeSet<String> = req
            .valid
            .iter()
            .map(|a| ipam_handle(&a.container_id, &a.ifname))
            .collect();
        let mut stale: BTreeSet<(String, String)> = BTreeSet::new();
        for w in self.local_endpoints().await? {
            let s = &w.value.spec;
            if !valid.contains(&ipam_handle(&s.container_id, &s.endpoint)) {
                stale.insert((s.container_id.clone(), s.endpoint.clone()));
            }
        }
        // Pod allocations made for this node whose endpoint was never written.
        if let Some(vpc) = &self.vpc {
            let keep = |cid: &str, ifname: &str| valid.contains(&ipam_handle(cid, ifname));
            for a in vpc.stale(&keep) {
                stale.insert((a.container_id, a.ifname));
            }
            return self.release_stale(stale).await;
        }
        let (blocks, _) = codec::list::<Object<IpamBlockSpec>>(self.ds.as_ref(), keys::IPAM_BLOCKS)
            .await
            .map_err(datastore_error)?;
        for b in &blocks {
            for alloc in b.value.spec.allocations.values() {
                let mine = alloc.attributes.node.as_deref() == Some(self.node.as_str());
                if mine
                    && alloc.attributes.kind == AllocationKind::Pod
                    && !valid.contains(&alloc.handle)
                {
                    if let Some((cid, ifname)) = alloc.handle.rsplit_once('.') {
                        stale.insert((cid.to_string(), ifname.to_string()));
                    }
                }
            }
        }
        self.release_stale(stale).await
    }

    async fn release_stale(
        &self,
        stale: BTreeSet<(String, String)>,
    ) -> Result<GcResponse, ApiError> {
        let mut out = GcResponse::default();
        for (container_id, ifname) in stale {
            let attachment = Attachment {
                container_id,
                ifname,
            };
            self.del(&DelRequest {
                attachment: attachment.clone(),
                pod: None,
            })
            .await?;
            out.released.push(attachment);
        }
        Ok(out)
    }

    /// Ready when the datastore answers and an enabled pool selects this node.
    pub async fn status(&self) -> StatusResponse {
        let not_ready = |reason: String| StatusResponse {
            ready: false,
            reason,
            node: self.node.clone(),
            mtu: self.mtu,
            dataplane_problems: self.dataplane_problems(),
            bgp: self.bgp_status(),
            vpc: self.vpc.as_ref().map(VpcPods::status),
        };
        if self.vpc.is_some() {
            // ENI addresses need no pool; the datastore must answer for endpoints.
            return match codec::get_object::<NodeSpec>(self.ds.as_ref(), &keys::node(&self.node))
                .await
            {
                Ok(_) => StatusResponse {
                    ready: true,
                    reason: String::new(),
                    ..not_ready(String::new())
                },
                Err(e) => not_ready(format!("datastore: {e}")),
            };
        }
        let pools = match codec::list_objects::<IpPoolSpec>(self.ds.as_ref()).await {
            Ok(p) => p,
            Err(e) => return not_ready(format!("datastore: {e}")),
        };
        let labels =
            match codec::get_object::<NodeSpec>(self.ds.as_ref(), &keys::node(&self.node)).await {
                Ok(n) => n.map(|n| n.value.metadata.labels).unwrap_or_default(),
                Err(e) => return not_ready(format!("datastore: {e}")),
            };
        let usable = pools.iter().any(|p| {
            !p.value.spec.disabled
                && p.value.spec.allows_workloads()
                && p.value.spec.selects_node(&labels)
        });
        if usable {
            StatusResponse {
                ready: true,
                reason: String::new(),
                node: self.node.clone(),
                mtu: self.mtu,
                dataplane_problems: self.dataplane_problems(),
                bgp: self.bgp_status(),
                vpc: None,
            }
        } else {
            not_ready(format!("no enabled IP pool selects node {}", self.node))
        }
    }
}
