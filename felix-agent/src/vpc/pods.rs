//! Pod addresses from the ENI pool: the VPC backend's side of the agent's ADD, DEL, GC and
//! status. No EC2 call on any of them: the pool answers from memory and its checkpoint.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use trellis_agent_api::{AddRequest, ApiError, Attachment, VpcEniStatus, VpcStatus};
use trellis_vpc::address_book::{BookError, Owner};
use trellis_vpc::eni_manager::{EniManager, ManagerError};

use super::datapath::VpcDatapath;
use crate::endpoints::code;

/// The node's ENI pool as the endpoints service uses it.
#[derive(Debug)]
pub struct VpcPods {
    manager: Arc<EniManager>,
    /// None when the agent leaves the kernel alone (`--no-dataplane`).
    datapath: Option<Arc<VpcDatapath>>,
    node: String,
    instance_id: String,
    instance_type: String,
    max_pods: u32,
}

impl VpcPods {
    pub fn new(
        manager: Arc<EniManager>,
        datapath: Option<Arc<VpcDatapath>>,
        node: impl Into<String>,
        instance_id: impl Into<String>,
        instance_type: impl Into<String>,
        max_pods: u32,
    ) -> VpcPods {
        VpcPods {
            manager,
            datapath,
            node: node.into(),
            instance_id: instance_id.into(),
            instance_type: instance_type.into(),
            max_pods,
        }
    }

    fn pool_error(&self, e: ManagerError) -> ApiError {
        match e {
            ManagerError::Book(BookError::Exhausted { assigned, cooling }) => {
                let why = match self.manager.condition() {
                    Some(c) => format!("; EC2: {c}"),
                    None => "; the warm pool is growing".into(),
                };
                ApiError {
                    code: code::TRY_AGAIN_LATER,
                    message: format!(
                        "no free ENI address on node {} ({assigned} held by pods, {cooling} \
                         cooling down, max pods {}){why}",
                        self.node, self.max_pods
                    ),
                }
            }
            e => ApiError {
                code: code::IO,
                message: format!("ENI pool of node {}: {e}", self.node),
            },
        }
    }

    /// One IPv4 address of an ENI for the pod interface (the same one on a repeated ADD),
    /// with its `ip rule`s in the kernel before the answer. All or nothing.
    pub async fn add(&self, req: &AddRequest) -> Result<Vec<IpNet>, ApiError> {
        let refuse = |message: String| ApiError {
            code: code::INVALID_CONFIG,
            message,
        };
        if !req.requested.is_empty() {
            return Err(refuse(format!(
                "node {} runs the VPC backend, which gives pods ENI addresses: requested \
                 addresses {:?} cannot be honoured",
                self.node, req.requested
            )));
        }
        if req.assign_ipv6 || !req.assign_ipv4 {
            return Err(refuse(format!(
                "node {} runs the VPC backend, which assigns IPv4 only: set assign_ipv4 and \
                 not assign_ipv6 in the CNI configuration's ipam section",
                self.node
            )));
        }
        let owner = Owner::new(&req.attachment.container_id, &req.attachment.ifname);
        let had = self.manager.held_by(&owner);
        let got = self
            .manager
            .assign(&owner)
            .map_err(|e| self.pool_error(e))?;
        if let Some(dp) = &self.datapath {
            if let Err(problem) = dp.pass(false).await {
                // A pod without its rules would send from an address its ENI does not carry.
                if had.is_none() {
                    let _ = self.manager.release(&owner);
                }
                return Err(ApiError {
                    code: code::IO,
                    message: format!(
                        "routing {} (ENI {}) on node {}: {problem}",
                        got.ip, got.eni_id, self.node
                    ),
                });
            }
        }
        Ok(vec![IpNet::from(IpAddr::V4(got.ip))])
    }

    /// Gives the interface's address back to the pool (it cools down). Idempotent.
    pub async fn release(&self, attachment: &Attachment) -> Result<Vec<IpAddr>, ApiError> {
        let owner = Owner::new(&attachment.container_id, &attachment.ifname);
        let released = self
            .manager
            .release(&owner)
            .map_err(|e| self.pool_error(e))?;
        if released.is_some() {
            if let Some(dp) = &self.datapath {
                if let Err(problem) = dp.pass(false).await {
                    tracing::warn!(%problem, "VPC datapath after a release");
                }
            }
        }
        Ok(released.into_iter().map(|a| IpAddr::V4(a.ip)).collect())
    }

    /// Pool allocations whose interface is not in `valid` (CNI GC).
    pub fn stale(&self, valid: &dyn Fn(&str, &str) -> bool) -> Vec<Attachment> {
        self.manager
            .allocations()
            .into_iter()
            .filter(|a| !valid(&a.container_id, &a.ifname))
            .map(|a| Attachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect()
    }

    pub fn status(&self) -> VpcStatus {
        let stats = self.manager.stats();
        let interfaces = self
            .datapath
            .as_ref()
            .map(|d| d.interfaces())
            .unwrap_or_default();
        VpcStatus {
            instance_id: self.instance_id.clone(),
            instance_type: self.instance_type.clone(),
            max_pods: self.max_pods,
            enis: self
                .manager
                .enis()
                .into_iter()
                .map(|e| VpcEniStatus {
                    interface: interfaces.get(&e.id).cloned(),
                    id: e.id,
                    device_index: e.device_index,
                    mac: e.mac,
                })
                .collect(),
            addresses: stats.total,
            assigned: stats.assigned,
            cooling: stats.cooling,
            condition: self.manager.condition(),
        }
    }
}
