//! `ipam check` and `ipam gc`: compare IPAM state with workload endpoints and nodes, from one
//! consistent snapshot of the datastore, and clean up what a crash or a deleted node left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use trellis_datastore::codec::{self, Versioned};
use trellis_datastore::resources::ipam::{AllocationAttributes, AllocationKind, BlockAffinitySpec};
use trellis_datastore::resources::{IpPool, IpamBlock, IpamHandle, Node, WorkloadEndpoint};
use trellis_datastore::{keys, Datastore, DatastoreError, KeyValue, Object, TxnOp};

use crate::block;
use crate::error::{IpamError, Result};
use crate::release;
use crate::store::{now_secs, MAX_ATTEMPTS};
use crate::txn;

/// An allocation nothing uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub ip: IpAddr,
    pub handle: String,
    pub block: IpNet,
    pub attributes: AllocationAttributes,
    pub reason: String,
}

/// What `ipam check` found. Empty vectors everywhere = consistent.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Datastore revision of the snapshot that was checked.
    pub revision: i64,
    pub blocks: usize,
    pub allocations: usize,
    pub handles: usize,
    pub endpoints: usize,
    /// Allocations whose handle has no workload endpoint (or whose tunnel node is gone).
    pub leaks: Vec<Leak>,
    /// Addresses held twice: by two blocks, or by two workload endpoints.
    pub duplicates: Vec<(IpAddr, Vec<String>)>,
    /// Addresses a workload endpoint uses that IPAM has not allocated.
    pub unallocated_in_use: Vec<(IpAddr, String)>,
    /// Blocks (and affinity records) naming a node that does not exist.
    pub missing_node_affinities: Vec<(String, IpNet)>,
    /// Affinity records without a block, or disagreeing with the block's affinity.
    pub stale_affinities: Vec<(String, IpNet)>,
    /// Handle records disagreeing with the blocks (missing, wrong counts, or holding nothing).
    pub handle_problems: Vec<(String, String)>,
    /// Blocks breaking a block invariant, or outside every pool.
    pub block_problems: Vec<(IpNet, String)>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problem_count() == 0
    }

    pub fn problem_count(&self) -> usize {
        self.leaks.len()
            + self.duplicates.len()
            + self.unallocated_in_use.len()
            + self.missing_node_affinities.len()
            + self.stale_affinities.len()
            + self.handle_problems.len()
            + self.block_problems.len()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} blocks, {} allocations, {} handles, {} workload endpoints at revision {}",
            self.blocks, self.allocations, self.handles, self.endpoints, self.revision
        )?;
        writeln!(f, "leaked addresses: {}", self.leaks.len())?;
        for l in &self.leaks {
            writeln!(
                f,
                "  {} handle {} (block {}): {}",
                l.ip, l.handle, l.block, l.reason
            )?;
        }
        writeln!(f, "addresses allocated twice: {}", self.duplicates.len())?;
        for (ip, holders) in &self.duplicates {
            writeln!(f, "  {ip}: {}", holders.join(", "))?;
        }
        writeln!(
            f,
            "addresses in use but not allocated: {}",
            self.unallocated_in_use.len()
        )?;
        for (ip, wep) in &self.unallocated_in_use {
            writeln!(f, "  {ip}: used by {wep}")?;
        }
        writeln!(
            f,
            "blocks affine to missing nodes: {}",
            self.missing_node_affinities.len()
        )?;
        for (n, c) in &self.missing_node_affinities {
            writeln!(f, "  {c}: node {n} does not exist")?;
        }
        writeln!(f, "stale affinities: {}", self.stale_affinities.len())?;
        for (n, c) in &self.stale_affinities {
            writeln!(f, "  {n} {c}")?;
        }
        writeln!(f, "handle problems: {}", self.handle_problems.len())?;
        for (h, why) in &self.handle_problems {
            writeln!(f, "  {h}: {why}")?;
        }
        write!(f, "block problems: {}", self.block_problems.len())?;
        for (c, why) in &self.block_problems {
            write!(f, "\n  {c}: {why}")?;
        }
        Ok(())
    }
}

/// Everything IPAM cares about, decoded from one snapshot.
#[derive(Debug, Default)]
struct Snapshot {
    revision: i64,
    pools: Vec<IpPool>,
    nodes: BTreeSet<String>,
    blocks: Vec<Versioned<IpamBlock>>,
    handles: BTreeMap<String, Versioned<IpamHandle>>,
    affinities: Vec<(String, IpNet)>,
    endpoints: Vec<WorkloadEndpoint>,
}

fn decode_all<T: serde::de::DeserializeOwned>(items: &[&KeyValue]) -> Result<Vec<Versioned<T>>> {
    Ok(items
        .iter()
        .map(|kv| codec::decode::<T>(kv))
        .collect::<std::result::Result<_, DatastoreError>>()?)
}

async fn snapshot(ds: &dyn Datastore) -> Result<Snapshot> {
    // One listing of the whole prefix: every part of the check sees the same revision.
    let all = ds.list("").await?;
    let under = |p: &str| {
        all.items
            .iter()
            .filter(|kv| kv.key.starts_with(p))
            .collect::<Vec<_>>()
    };
    let pools: Vec<Versioned<IpPool>> = decode_all(&under(keys::IPPOOLS))?;
    let nodes: Vec<Versioned<Node>> = decode_all(&under(keys::NODES))?;
    let blocks: Vec<Versioned<IpamBlock>> = decode_all(&under(keys::IPAM_BLOCKS))?;
    let handles: Vec<Versioned<IpamHandle>> = decode_all(&under(keys::IPAM_HANDLES))?;
    let affinities: Vec<Versioned<Object<BlockAffinitySpec>>> =
        decode_all(&under(keys::IPAM_AFFINITY))?;
    let endpoints: Vec<Versioned<WorkloadEndpoint>> = decode_all(&under(keys::WORKLOAD_ENDPOINTS))?;
    Ok(Snapshot {
        revision: all.revision,
        pools: pools.into_iter().map(|v| v.value).collect(),
        nodes: nodes.into_iter().map(|v| v.value.metadata.name).collect(),
        blocks,
        handles: handles
            .into_iter()
            .map(|h| (h.value.spec.handle_id.clone(), h))
            .collect(),
        affinities: affinities
            .into_iter()
            .map(|a| (a.value.spec.node.clone(), a.value.spec.cidr))
            .collect(),
        endpoints: endpoints.into_iter().map(|v| v.value).collect(),
    })
}

fn wep_name(w: &WorkloadEndpoint) -> String {
    format!(
        "{}/{}/{}",
        w.spec.node,
        w.metadata.namespace.as_deref().unwrap_or("default"),
        w.metadata.name
    )
}

/// Checks IPAM against workload endpoints and nodes.
pub async fn check(ds: &dyn Datastore) -> Result<CheckReport> {
    let snap = snapshot(ds).await?;
    Ok(analyse(&snap))
}

fn analyse(snap: &Snapshot) -> CheckReport {
    let mut r = CheckReport {
        revision: snap.revision,
        blocks: snap.blocks.len(),
        handles: snap.handles.len(),
        endpoints: snap.endpoints.len(),
        ..Default::default()
    };
    // Who uses what, according to workload endpoints.
    let mut wep_by_handle: BTreeMap<&str, &WorkloadEndpoint> = BTreeMap::new();
    let mut wep_ips: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for w in &snap.endpoints {
        wep_by_handle.insert(w.spec.handle_id.as_str(), w);
        for net in &w.spec.ip_networks {
            wep_ips.entry(net.addr()).or_default().push(wep_name(w));
        }
    }
    let mut holders: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    let mut counted: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for b in &snap.blocks {
        let spec = &b.value.spec;
        if let Err(why) = block::check_invariants(spec) {
            r.block_problems.push((spec.cidr, why));
        }
        if !snap.pools.iter().any(|p| p.spec.cidr.contains(&spec.cidr)) {
            r.block_problems
                .push((spec.cidr, "not inside any IP pool (pool deleted?)".into()));
        }
        if let Some(node) = spec.affine_node() {
            if !snap.nodes.contains(node) {
                r.missing_node_affinities
                    .push((node.to_string(), spec.cidr));
            }
            if !snap
                .affinities
                .iter()
                .any(|(n, c)| n == node && *c == spec.cidr)
            {
                r.stale_affinities.push((node.to_string(), spec.cidr));
            }
        }
        for (&ord, alloc) in &spec.allocations {
            r.allocations += 1;
            let ip = block::address(spec, ord);
            holders
                .entry(ip)
                .or_default()
                .push(format!("block {} handle {}", spec.cidr, alloc.handle));
            *counted
                .entry(alloc.handle.clone())
                .or_default()
                .entry(keys::cidr_segment(&spec.cidr))
                .or_default() += 1;
            let reason = match alloc.attributes.kind {
                AllocationKind::Pod => match wep_by_handle.get(alloc.handle.as_str()) {
                    None => Some("no workload endpoint has this handle".to_string()),
                    Some(w) if !w.spec.ip_networks.iter().any(|n| n.addr() == ip) => Some(format!(
                        "workload endpoint {} does not use this address",
                        wep_name(w)
                    )),
                    Some(_) => None,
                },
                AllocationKind::VxlanTunnel | AllocationKind::IpipTunnel => {
                    match &alloc.attributes.node {
                        Some(n) if !snap.nodes.contains(n) => {
                            Some(format!("tunnel address of missing node {n}"))
                        }
                        _ => None,
                    }
                }
                AllocationKind::Reserved => None,
            };
            if let Some(reason) = reason {
                r.leaks.push(Leak {
                    ip,
                    handle: alloc.handle.clone(),
                    block: spec.cidr,
                    attributes: alloc.attributes.clone(),
                    reason,
                });
            }
        }
    }
    for (node, cidr) in &snap.affinities {
        let block = snap.blocks.iter().find(|b| b.value.spec.cidr == *cidr);
        match block {
            None => r.stale_affinities.push((node.clone(), *cidr)),
            Some(b) if b.value.spec.affine_node() != Some(node.as_str()) => {
                r.stale_affinities.push((node.clone(), *cidr))
            }
            Some(_) => {
                if !snap.nodes.contains(node)
                    && !r.missing_node_affinities.contains(&(node.clone(), *cidr))
                {
                    r.missing_node_affinities.push((node.clone(), *cidr));
                }
            }
        }
    }
    for (ip, h) in holders {
        if h.len() > 1 {
            r.duplicates.push((ip, h));
        } else if let Some(w) = wep_ips.get(&ip) {
            if w.len() > 1 {
                r.duplicates
                    .push((ip, w.iter().map(|n| format!("endpoint {n}")).collect()));
            }
        }
    }
    for (ip, weps) in &wep_ips {
        if !snap.blocks.iter().any(|b| {
            block::ordinal(&b.value.spec, *ip)
                .is_some_and(|o| b.value.spec.allocations.contains_key(&o))
        }) {
            r.unallocated_in_use.push((*ip, weps.join(", ")));
        }
    }
    for (id, counts) in &counted {
        match snap.handles.get(id) {
            None => r.handle_problems.push((
                id.clone(),
                "addresses are allocated to it but the handle record is missing".into(),
            )),
            Some(h) if h.value.spec.blocks != *counts => r.handle_problems.push((
                id.clone(),
                format!(
                    "handle record says {:?}, blocks hold {:?}",
                    h.value.spec.blocks, counts
                ),
            )),
            Some(_) => {}
        }
    }
    for id in snap.handles.keys() {
        if !counted.contains_key(id) {
            r.handle_problems
                .push((id.clone(), "handle holds no address in any block".into()));
        }
    }
    r
}

/// What `ipam gc` changed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub released: Vec<IpAddr>,
    /// Leaked allocations younger than the grace period, left alone this time.
    pub young_leaks: usize,
    pub affinities_released: Vec<(String, IpNet)>,
    pub handles_deleted: Vec<String>,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "released {} leaked addresses ({} younger than the grace period kept), {} affinities of missing nodes, {} empty handles",
            self.released.len(),
            self.young_leaks,
            self.affinities_released.len(),
            self.handles_deleted.len()
        )
    }
}

/// Releases leaked addresses older than `grace` (a fresh allocation may not have its workload
/// endpoint yet), the affinities of deleted nodes, and handles that hold nothing.
pub async fn gc(ds: &dyn Datastore, grace: Duration) -> Result<GcReport> {
    let snap = snapshot(ds).await?;
    let report = analyse(&snap);
    let mut out = GcReport::default();
    let now = now_secs();
    let old: Vec<IpAddr> = report
        .leaks
        .iter()
        .filter(|l| now.saturating_sub(l.attributes.allocated_at.unwrap_or(0)) >= grace.as_secs())
        .map(|l| l.ip)
        .collect();
    out.young_leaks = report.leaks.len() - old.len();
    if !old.is_empty() {
        out.released = release::release_ips(ds, &old).await?.released;
    }
    for (node, cidr) in &report.missing_node_affinities {
        if release_affinity(ds, node, *cidr).await? {
            out.affinities_released.push((node.clone(), *cidr));
        }
    }
    for (id, why) in &report.handle_problems {
        if why.starts_with("handle holds no address") {
            if let Some(h) = snap.handles.get(id) {
                match ds.delete(&keys::handle(id), Some(h.revision)).await {
                    Ok(()) => out.handles_deleted.push(id.clone()),
                    Err(e) if e.lost_race() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(out)
}

/// Drops `node`'s affinity for `cidr`: the block keeps its allocations but belongs to nobody
/// (and is deleted when empty).
pub async fn release_affinity(ds: &dyn Datastore, node: &str, cidr: IpNet) -> Result<bool> {
    for _ in 0..MAX_ATTEMPTS {
        let mut ops = vec![TxnOp::Delete {
            key: keys::affinity(node, &cidr),
            expected_revision: None,
        }];
        if let Some(b) = codec::get_object::<trellis_datastore::resources::IpamBlockSpec>(
            ds,
            &keys::block(&cidr),
        )
        .await?
        {
            if b.value.spec.affine_node() != Some(node) {
                // Only the stale affinity record remains.
                ds.txn(ops).await?;
                return Ok(true);
            }
            let mut spec = b.value.spec.clone();
            spec.affinity = None;
            ops.push(if block::is_empty(&spec) {
                txn::delete_block(&cidr, b.revision)
            } else {
                txn::update_block(&spec, b.revision)?
            });
        }
        match ds.txn(ops).await {
            Ok(_) => return Ok(true),
            Err(e) if e.lost_race() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::Contention {
        what: format!("releasing {node}'s affinity for {cidr}"),
        attempts: MAX_ATTEMPTS,
    })
}
