//! The ENI pool owner: keeps the node's warm pool of ENI addresses as [`warm_pool`] plans it,
//! hands addresses to pods without calling EC2, and keeps every allocation in the checkpoint.
//!
//! ```text
//!  pod ADD/DEL --assign/release--> AddressBook --checkpoint::store (before answering)
//!                                      |  wake
//!  run loop: reconcile_once (warm_pool::plan -> one EC2 step) until the plan is empty;
//!            on an EC2 error: the condition is set, backoff 1 s doubling to 60 s;
//!            every leak interval: cleanup_leaked (detached ENIs of this cluster, older than 5 min)
//! ```
//!
//! EC2 is called only here, one step per pass. Addresses about to be given back leave the
//! book before the EC2 call, so no pod can be handed one in between; if the call fails they
//! come back. A new ENI that cannot be attached is deleted at once, so it does not leak.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;

use crate::address_book::{AddressBook, Assigned, BookError, EniInfo, Owner, Restored};
use crate::checkpoint::{self, Allocation, CheckpointError};
use crate::ec2::{
    CreateEni, Ec2, Ec2Error, Eni, EniFilter, EniStatus, SecondaryAddresses, TAG_CLUSTER_NAME,
};
use crate::warm_pool::{self, PoolLimits, WarmTargets};

mod execute;
#[cfg(test)]
mod fake_ec2;
#[cfg(test)]
mod tests;

/// ENIs tagged so are never managed (the AWS VPC CNI's `node.k8s.amazonaws.com/no_manage`).
pub const TAG_NO_MANAGE: &str = "node.k8s.amazonaws.com/no_manage";

/// Custom networking: pod ENIs in another subnet with other security groups; the primary ENI
/// hosts no pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomNetwork {
    pub subnet_id: String,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub cluster_name: String,
    pub instance_id: String,
    pub targets: WarmTargets,
    pub limits: PoolLimits,
    pub custom_network: Option<CustomNetwork>,
    pub checkpoint: PathBuf,
    /// How long a freed address cools down ([`crate::address_book::COOLDOWN`]).
    pub cooldown: Duration,
    /// How long after its attachment an ENI is kept even if unused.
    pub min_eni_lifetime: Duration,
    /// Two shrinks (releases or ENI deletions) are at least this far apart (ipamd: 30 s).
    pub shrink_interval: Duration,
    /// A detached ENI of this cluster older than this is a leak and is deleted (5 min).
    pub leaked_eni_age: Duration,
    /// How often the run loop looks for leaked ENIs.
    pub leak_interval: Duration,
    /// A newly attached ENI's addresses go to pods only once the datapath reports its
    /// interface ([`EniManager::interface_ready`]), as ipamd waits for the ENI to appear on
    /// the host. Off by default (tests without a datapath).
    pub wait_for_interfaces: bool,
}

impl ManagerConfig {
    /// The AWS defaults for everything but the identity, targets, limits and file.
    pub fn new(
        cluster_name: impl Into<String>,
        instance_id: impl Into<String>,
        targets: WarmTargets,
        limits: PoolLimits,
        checkpoint: PathBuf,
    ) -> ManagerConfig {
        ManagerConfig {
            cluster_name: cluster_name.into(),
            instance_id: instance_id.into(),
            targets,
            limits,
            custom_network: None,
            checkpoint,
            cooldown: crate::address_book::COOLDOWN,
            min_eni_lifetime: crate::address_book::YOUNG,
            shrink_interval: Duration::from_secs(30),
            leaked_eni_age: Duration::from_secs(300),
            leak_interval: Duration::from_secs(60),
            wait_for_interfaces: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Book(#[from] BookError),
    #[error("instance {instance_id} has no primary ENI in EC2's answer")]
    NoPrimaryEni { instance_id: String },
}

/// Where a new ENI goes.
#[derive(Debug, Clone)]
struct Placement {
    subnet_id: String,
    security_groups: Vec<String>,
}

pub struct EniManager {
    ec2: Arc<dyn Ec2>,
    cfg: ManagerConfig,
    placement: Placement,
    book: Mutex<AddressBook>,
    /// Subnet CIDRs by subnet id (they never change).
    subnets: Mutex<BTreeMap<String, Ipv4Net>>,
    /// The last EC2 problem, one line; cleared by the next successful pass.
    condition: Mutex<Option<String>>,
    last_shrink: Mutex<Option<Instant>>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for EniManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EniManager")
            .field("cfg", &self.cfg)
            .field("book", &self.book)
            .field("condition", &self.condition)
            .finish_non_exhaustive()
    }
}

/// EC2 reported addresses the book has elsewhere; they are not used (see
/// [`AddressBook::add_slots`]).
fn warn_clashes(eni_id: &str, clashes: &[Ipv4Net]) {
    if !clashes.is_empty() {
        tracing::warn!(eni = %eni_id, ?clashes, "EC2 reports addresses that another ENI of this node already has; not using them");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl EniManager {
    /// Reads the instance's ENIs from EC2, then the checkpoint: allocations whose pod
    /// interface still exists (`exists`) are held again, the others cool down and return to
    /// the pool. The checkpoint is rewritten to match.
    pub async fn start(
        ec2: Arc<dyn Ec2>,
        cfg: ManagerConfig,
        exists: impl Fn(&Allocation) -> bool,
    ) -> Result<(EniManager, Restored), ManagerError> {
        let instance = ec2.describe_instance(&cfg.instance_id).await?;
        let primary = instance
            .primary_eni()
            .ok_or_else(|| ManagerError::NoPrimaryEni {
                instance_id: cfg.instance_id.clone(),
            })?;
        let placement = match &cfg.custom_network {
            Some(c) => Placement {
                subnet_id: c.subnet_id.clone(),
                security_groups: c.security_groups.clone(),
            },
            None => Placement {
                subnet_id: primary.subnet_id.clone(),
                security_groups: primary.security_groups.clone(),
            },
        };
        let book = AddressBook::new(cfg.cooldown).with_min_eni_lifetime(cfg.min_eni_lifetime);
        let m = EniManager {
            ec2,
            placement,
            book: Mutex::new(book),
            subnets: Mutex::new(BTreeMap::new()),
            condition: Mutex::new(None),
            last_shrink: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            cfg,
        };
        let now = Instant::now();
        for eni in &instance.enis {
            m.learn_eni(eni, now).await?;
        }
        let saved = checkpoint::load(&m.cfg.checkpoint)?;
        let restored = {
            let mut book = m.book.lock().expect("book lock");
            let r = book.restore(&saved, exists, now);
            checkpoint::store(&m.cfg.checkpoint, &book.allocations())?;
            r
        };
        for a in &restored.lost {
            tracing::warn!(pod = %a.container_id, ip = %a.ip, eni = %a.eni_id, "a checkpointed address is on no attached ENI any more");
        }
        Ok((m, restored))
    }

    /// Puts an attached ENI and its secondary addresses and prefixes in the book (unless
    /// tagged no-manage).
    async fn learn_eni(&self, eni: &Eni, now: Instant) -> Result<(), ManagerError> {
        let Some(attachment) = &eni.attachment else {
            return Ok(());
        };
        if eni.tags.get(TAG_NO_MANAGE).is_some_and(|v| v == "true") {
            return Ok(());
        }
        let primary = attachment.device_index == 0;
        let subnet = self.subnet_cidr(&eni.subnet_id).await?;
        let mut slots: Vec<Ipv4Net> = eni
            .secondary_ips()
            .into_iter()
            .map(|ip| Ipv4Net::new(ip, 32).expect("/32"))
            .collect();
        slots.extend(eni.prefixes.iter().copied());
        let mut book = self.book.lock().expect("book lock");
        book.add_eni(EniInfo {
            id: eni.id.clone(),
            device_index: attachment.device_index,
            attachment_id: Some(attachment.id.clone()),
            primary,
            for_pods: !(primary && self.cfg.custom_network.is_some()),
            subnet,
            mac: eni.mac.clone(),
            primary_ip: eni.primary_ip(),
            attached_at: now,
        });
        let clashes = book.add_slots(&eni.id, &slots)?;
        warn_clashes(&eni.id, &clashes);
        Ok(())
    }

    async fn subnet_cidr(&self, subnet_id: &str) -> Result<Ipv4Net, ManagerError> {
        if let Some(c) = self.subnets.lock().expect("subnets lock").get(subnet_id) {
            return Ok(*c);
        }
        let s = self.ec2.describe_subnet(subnet_id).await?;
        self.subnets
            .lock()
            .expect("subnets lock")
            .insert(subnet_id.to_string(), s.cidr);
        Ok(s.cidr)
    }

    /// An address for the pod interface `owner` (the same one on a repeated ADD), recorded in
    /// the checkpoint before it is returned. No EC2 call: an empty pool is an error the CNI
    /// retries, and wakes the refill.
    pub fn assign(&self, owner: &Owner) -> Result<Assigned, ManagerError> {
        let result = {
            let mut book = self.book.lock().expect("book lock");
            let had = book.held_by(owner);
            match book.assign(owner, Instant::now(), unix_now()) {
                Ok(a) => match checkpoint::store(&self.cfg.checkpoint, &book.allocations()) {
                    Ok(()) => Ok(a),
                    Err(e) => {
                        // Not on disk: not given. A repeated ADD keeps what it had.
                        if had.is_none() {
                            book.release_unused(owner);
                        }
                        Err(e.into())
                    }
                },
                Err(e) => Err(e.into()),
            }
        };
        self.wake.notify_one();
        result
    }

    /// Takes the pod interface's address back (it cools down); `None` when it had none.
    pub fn release(&self, owner: &Owner) -> Result<Option<Assigned>, ManagerError> {
        let out = {
            let mut book = self.book.lock().expect("book lock");
            let out = book.release(owner, Instant::now());
            checkpoint::store(&self.cfg.checkpoint, &book.allocations())?;
            out
        };
        self.wake.notify_one();
        Ok(out)
    }

    /// Releases every allocation whose owner `keep` rejects (CNI GC); returns them.
    pub fn release_all_but(
        &self,
        keep: impl Fn(&Owner) -> bool,
    ) -> Result<Vec<Assigned>, ManagerError> {
        let out = {
            let mut book = self.book.lock().expect("book lock");
            let now = Instant::now();
            let stale: Vec<Owner> = book
                .allocations()
                .into_iter()
                .map(|a| Owner::new(a.container_id, a.ifname))
                .filter(|o| !keep(o))
                .collect();
            let out = stale.iter().filter_map(|o| book.release(o, now)).collect();
            checkpoint::store(&self.cfg.checkpoint, &book.allocations())?;
            out
        };
        self.wake.notify_one();
        Ok(out)
    }

    /// The datapath has `eni_id`'s interface up and routed: its addresses may go to pods.
    pub fn interface_ready(&self, eni_id: &str) {
        if self.book.lock().expect("book lock").interface_ready(eni_id) {
            tracing::info!(eni = %eni_id, "ENI interface ready; its addresses go to pods");
        }
    }

    /// Attached ENIs whose interface the datapath has not reported yet.
    pub fn waiting_for_interfaces(&self) -> Vec<String> {
        self.book.lock().expect("book lock").waiting()
    }

    /// The address `owner` holds.
    pub fn held_by(&self, owner: &Owner) -> Option<Assigned> {
        self.book.lock().expect("book lock").held_by(owner)
    }

    /// Every pod allocation (what the checkpoint holds).
    pub fn allocations(&self) -> Vec<Allocation> {
        self.book.lock().expect("book lock").allocations()
    }

    /// The attached ENIs as the pool knows them, by device index.
    pub fn enis(&self) -> Vec<EniInfo> {
        let book = self.book.lock().expect("book lock");
        book.enis().into_iter().cloned().collect()
    }

    /// Pool counts now: `(addresses, held by pods, cooling)`.
    pub fn stats(&self) -> warm_pool::PoolStats {
        let book = self.book.lock().expect("book lock");
        warm_pool::stats(&self.cfg.targets, &book.warm_view(Instant::now()))
    }

    /// The last EC2 problem (one line), or `None` when the last pass worked.
    pub fn condition(&self) -> Option<String> {
        self.condition.lock().expect("condition lock").clone()
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// Deletes detached ENIs tagged for this cluster whose `createdAt` tag is older than the
    /// leaked-ENI age (a node that died between create and attach, or a detach whose delete
    /// never came). Returns the deleted ids.
    pub async fn cleanup_leaked(&self, now: SystemTime) -> Result<Vec<String>, Ec2Error> {
        let candidates = self
            .ec2
            .describe_network_interfaces(&EniFilter::AvailableInCluster {
                cluster_name: self.cfg.cluster_name.clone(),
            })
            .await?;
        let mut deleted = Vec::new();
        for eni in candidates {
            let ours = eni.tags.get(TAG_CLUSTER_NAME) == Some(&self.cfg.cluster_name);
            let old = eni
                .created_at()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= self.cfg.leaked_eni_age);
            if !ours || eni.status != EniStatus::Available || !old {
                continue;
            }
            match self.ec2.delete_network_interface(&eni.id).await {
                Ok(()) | Err(Ec2Error::NotFound { .. }) => {
                    tracing::info!(eni = %eni.id, "deleted a leaked ENI");
                    deleted.push(eni.id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Runs the pool until the future is dropped: a pass after every ADD/DEL and every
    /// `interval`, leaked-ENI sweeps every `leak_interval`, backoff after EC2 errors.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut backoff = Duration::from_secs(1);
        let mut last_sweep: Option<Instant> = None;
        loop {
            let failed = match self.reconcile(Instant::now()).await {
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "ENI pool");
                    true
                }
            };
            if last_sweep.is_none_or(|t| t.elapsed() >= self.cfg.leak_interval) {
                last_sweep = Some(Instant::now());
                if let Err(e) = self.cleanup_leaked(SystemTime::now()).await {
                    tracing::warn!(error = %e, "leaked-ENI sweep");
                }
            }
            let wait = if failed {
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                w
            } else {
                backoff = Duration::from_secs(1);
                interval
            };
            tokio::select! {
                _ = self.wake.notified(), if !failed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Passes until the plan is empty (at most 16), setting or clearing the condition.
    /// Returns how many EC2 steps were taken.
    pub async fn reconcile(&self, now: Instant) -> Result<usize, Ec2Error> {
        let mut steps = 0;
        let result = loop {
            if steps == 16 {
                break Ok(steps);
            }
            match self.reconcile_once(now).await {
                Ok(true) => {
                    // An EC2 step worked: the last problem is over, whatever the next brings.
                    *self.condition.lock().expect("condition lock") = None;
                    steps += 1
                }
                Ok(false) => break Ok(steps),
                Err(e) => break Err(e),
            }
        };
        *self.condition.lock().expect("condition lock") =
            result.as_ref().err().map(|e| e.to_string());
        result
    }

    /// The plan for `now`, computed on the book as it is.
    pub fn plan(&self, now: Instant) -> warm_pool::Plan {
        let view = self.book.lock().expect("book lock").warm_view(now);
        warm_pool::plan(&self.cfg.targets, &self.cfg.limits, &view)
    }

    fn secondary(&self, n: u32) -> SecondaryAddresses {
        if self.cfg.targets.prefix_delegation {
            SecondaryAddresses::Prefixes(n)
        } else {
            SecondaryAddresses::Ips(n)
        }
    }

    fn create_request(&self, n: u32) -> CreateEni {
        CreateEni::for_node(
            &self.cfg.instance_id,
            &self.cfg.cluster_name,
            &self.placement.subnet_id,
            &self.placement.security_groups,
            self.secondary(n),
        )
    }
}
