//! Datastore-backed allocation for one node. Each allocation is one etcd transaction that
//! compare-and-swaps the block and the handle together, so two nodes racing for the same block or
//! address can never both win, and a crash never leaves a block and its handle disagreeing.
//!
//! The node's affine blocks are kept in memory with the revision they were last seen at; the
//! common ADD is a single transaction on such a block. A lost compare-and-swap re-reads only the
//! object it lost on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::sync::Mutex;
use trellis_datastore::codec::{self, Versioned};
use trellis_datastore::resources::ipam::{AllocationAttributes, BlockAffinitySpec, IpamConfigSpec};
use trellis_datastore::resources::{IpPool, IpamBlock, IpamBlockSpec, IpamConfig, Node};
use trellis_datastore::{keys, Datastore};

use crate::block;
use crate::error::{IpamError, Result};
use crate::plan::{self, BlockSummary, Family};
use crate::release;
use crate::txn::{self, HandleState, Lost};

mod specific;

pub use specific::{addresses_of, get_handle};

/// How many lost compare-and-swaps one operation tolerates before reporting contention.
pub const MAX_ATTEMPTS: u32 = 64;

/// What a caller (the CNI via the agent) asks for.
#[derive(Debug, Clone, Default)]
pub struct AssignRequest {
    /// Owner of the addresses: `CONTAINERID.IFNAME` for a pod interface.
    pub handle: String,
    pub attrs: AllocationAttributes,
    pub num_v4: usize,
    pub num_v6: usize,
    /// Restrict to these pools (names or CIDRs); empty = every pool that selects the node.
    pub v4_pools: Vec<String>,
    pub v6_pools: Vec<String>,
}

/// Addresses handed out by one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub v4: Vec<IpAddr>,
    pub v6: Vec<IpAddr>,
}

impl Assigned {
    pub fn all(&self) -> impl Iterator<Item = &IpAddr> {
        self.v4.iter().chain(self.v6.iter())
    }
}

/// Pools, IPAM settings and the node's labels, as last read.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub pools: Vec<IpPool>,
    pub config: IpamConfigSpec,
    pub labels: BTreeMap<String, String>,
}

pub(crate) async fn read_topology(ds: &dyn Datastore, node: &str) -> Result<Topology> {
    let pools = codec::list_objects::<trellis_datastore::resources::IpPoolSpec>(ds).await?;
    let config = codec::get_object::<IpamConfigSpec>(ds, keys::IPAM_CONFIG).await?;
    let labels =
        codec::get_object::<trellis_datastore::resources::NodeSpec>(ds, &keys::node(node)).await?;
    Ok(Topology {
        pools: pools.into_iter().map(|v| v.value).collect(),
        config: config
            .map(|c: Versioned<IpamConfig>| c.value.spec)
            .unwrap_or_default(),
        labels: labels
            .map(|n: Versioned<Node>| n.value.metadata.labels)
            .unwrap_or_default(),
    })
}

/// One address family's share of a request while it is being filled.
#[derive(Debug)]
struct Want<'a> {
    family: Family,
    n: usize,
    attrs: &'a AllocationAttributes,
    handle: &'a mut HandleState,
    got: Vec<IpAddr>,
}

impl Want<'_> {
    fn missing(&self) -> usize {
        self.n.saturating_sub(self.got.len())
    }
}

#[derive(Debug, Default)]
struct Cache {
    topology: Option<(Instant, Topology)>,
    /// The node's affine blocks; `None` until first loaded.
    affine: Option<BTreeMap<IpNet, Versioned<IpamBlock>>>,
    /// Handles this node allocated, as committed: lets a release skip re-reading them.
    handles: HashMap<String, HandleState>,
}

/// Bound on remembered handles (a node runs a few hundred pods; this only caps a leak of entries
/// whose release happened elsewhere).
const MAX_CACHED_HANDLES: usize = 16_384;

impl Cache {
    /// Blocks of `family` the node is known to hold.
    fn held(&self, family: Family) -> usize {
        self.affine.as_ref().map_or(0, |a| {
            a.keys().filter(|c| Family::of_net(c) == family).count()
        })
    }
}

/// Whether `family` is the last one `req` asks for (after it, the handle is final).
fn family_is_last(family: Family, req: &AssignRequest) -> bool {
    family == Family::V6 || req.num_v6 == 0
}

/// IPAM for one node.
#[derive(Debug)]
pub struct NodeIpam {
    ds: Arc<dyn Datastore>,
    node: String,
    /// How long pools and settings are trusted before re-reading (the agent's watch calls
    /// [`NodeIpam::invalidate`] on change, so this only bounds staleness without it).
    topology_ttl: Duration,
    cache: Mutex<Cache>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl NodeIpam {
    pub fn new(ds: Arc<dyn Datastore>, node: impl Into<String>) -> Self {
        Self {
            ds,
            node: node.into(),
            topology_ttl: Duration::from_secs(5),
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn with_topology_ttl(mut self, ttl: Duration) -> Self {
        self.topology_ttl = ttl;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.ds
    }

    /// Forgets cached pools, settings and blocks; the next call re-reads them.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = Cache::default();
    }

    async fn topology(&self, cache: &mut Cache) -> Result<Topology> {
        if let Some((at, t)) = &cache.topology {
            if at.elapsed() < self.topology_ttl {
                return Ok(t.clone());
            }
        }
        let t = read_topology(self.ds.as_ref(), &self.node).await?;
        cache.topology = Some((Instant::now(), t.clone()));
        Ok(t)
    }

    /// (Re)reads the node's affinities and their blocks.
    async fn load_affine(&self, cache: &mut Cache) -> Result<()> {
        let (affs, _) = codec::list::<trellis_datastore::Object<BlockAffinitySpec>>(
            self.ds.as_ref(),
            &keys::affinities_of(&self.node),
        )
        .await?;
        let mut blocks = cache.affine.take().unwrap_or_default();
        let wanted: BTreeSet<IpNet> = affs.iter().map(|a| a.value.spec.cidr).collect();
        blocks.retain(|cidr, _| wanted.contains(cidr));
        for cidr in wanted {
            if blocks.contains_key(&cidr) {
                continue;
            }
            if let Some(b) =
                codec::get_object::<IpamBlockSpec>(self.ds.as_ref(), &keys::block(&cidr)).await?
            {
                if b.value.spec.affine_node() == Some(self.node.as_str()) {
                    blocks.insert(cidr, b);
                }
            }
        }
        cache.affine = Some(blocks);
        Ok(())
    }

    /// Allocates the requested addresses. All or nothing: on any failure every address this call
    /// took is released again before the error is returned.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Assigned> {
        if req.handle.is_empty() {
            return Err(IpamError::InvalidRequest("handle must not be empty".into()));
        }
        if req.num_v4 == 0 && req.num_v6 == 0 {
            return Err(IpamError::InvalidRequest("asked for no addresses".into()));
        }
        let mut cache = self.cache.lock().await;
        let topo = self.topology(&mut cache).await?;
        let mut attrs = req.attrs.clone();
        attrs.node.get_or_insert_with(|| self.node.clone());
        attrs.allocated_at.get_or_insert_with(now_secs);
        let mut handle = HandleState::absent(&req.handle);
        let mut out = Assigned::default();
        for (family, n, requested) in [
            (Family::V4, req.num_v4, &req.v4_pools),
            (Family::V6, req.num_v6, &req.v6_pools),
        ] {
            if n == 0 {
                continue;
            }
            let mut want = Want {
                family,
                n,
                attrs: &attrs,
                handle: &mut handle,
                got: Vec::new(),
            };
            let res = self
                .assign_family(&mut cache, &topo, requested, &mut want)
                .await;
            match family {
                Family::V4 => out.v4 = want.got,
                Family::V6 => out.v6 = want.got,
            }
            if res.is_ok() && family_is_last(family, req) {
                if cache.handles.len() >= MAX_CACHED_HANDLES {
                    cache.handles.clear();
                }
                cache.handles.insert(req.handle.clone(), handle.clone());
            }
            if let Err(e) = res {
                drop(cache);
                let taken: Vec<IpAddr> = out.all().copied().collect();
                if !taken.is_empty() {
                    // Undo this call's allocations so a failed request changes nothing.
                    if let Err(undo) = self.release_ips(&taken).await {
                        tracing::error!(handle = %req.handle, error = %undo, "rolling back a failed allocation");
                    }
                }
                return Err(e);
            }
        }
        Ok(out)
    }

    async fn assign_family(
        &self,
        cache: &mut Cache,
        topo: &Topology,
        requested: &[String],
        want: &mut Want<'_>,
    ) -> Result<()> {
        let family = want.family;
        let pools = plan::eligible_pools(
            &topo.pools,
            family,
            &topo.labels,
            requested,
            want.attrs.kind,
        );
        if pools.is_empty() {
            let detail = if requested.is_empty() {
                String::new()
            } else {
                format!(" among {}", requested.join(", "))
            };
            return Err(IpamError::NoPool {
                family,
                node: self.node.clone(),
                detail,
            });
        }
        if cache.affine.is_none() {
            self.load_affine(cache).await?;
        }
        // 1. The node's own blocks.
        self.fill_from_affine(cache, &pools, want).await?;
        // 2. Claim new blocks; re-read affinities first in case another process claimed for us.
        let mut why = String::new();
        if want.missing() > 0 {
            self.load_affine(cache).await?;
            self.fill_from_affine(cache, &pools, want).await?;
        }
        if want.missing() > 0 {
            why = self.claim_blocks(cache, &topo.config, &pools, want).await?;
        }
        // 3. Borrow from other nodes' blocks.
        if want.missing() > 0 {
            if topo.config.strict_affinity {
                why = format!("{why}; strictAffinity forbids borrowing");
            } else {
                self.borrow(&topo.config, &pools, want).await?;
                why = format!("{why}; no other block has a free address");
            }
        }
        if want.missing() > 0 {
            return Err(IpamError::Exhausted {
                family,
                node: self.node.clone(),
                wanted: want.n,
                got: want.got.len(),
                why: why.trim_start_matches("; ").to_string(),
            });
        }
        Ok(())
    }

    async fn fill_from_affine(
        &self,
        cache: &mut Cache,
        pools: &[&IpPool],
        want: &mut Want<'_>,
    ) -> Result<()> {
        let mut attempts = 0;
        while want.missing() > 0 {
            let affine = cache.affine.get_or_insert_with(BTreeMap::new);
            let summaries: Vec<BlockSummary> = affine
                .values()
                .map(|b| BlockSummary::of(&b.value.spec))
                .collect();
            let candidates = plan::affine_candidates(&self.node, &summaries, pools);
            let Some(cidr) = candidates.into_iter().next() else {
                return Ok(());
            };
            let current = affine[&cidr].clone();
            match self.allocate_in(&current, want).await? {
                Ok(updated) => {
                    affine.insert(cidr, updated);
                }
                Err(lost) => {
                    attempts += 1;
                    if attempts > MAX_ATTEMPTS {
                        let what = format!("allocating in block {cidr}");
                        return Err(IpamError::Contention { what, attempts });
                    }
                    self.refresh_after(cache, lost, want.handle).await?;
                }
            }
        }
        Ok(())
    }

    /// One CAS transaction taking what `want` still misses from `current`; returns the block as
    /// committed, or `Ok(Err(lost))` when the transaction lost a race.
    async fn allocate_in(
        &self,
        current: &Versioned<IpamBlock>,
        want: &mut Want<'_>,
    ) -> Result<std::result::Result<Versioned<IpamBlock>, Lost>> {
        let missing = want.missing();
        let handle = &mut *want.handle;
        let mut spec = current.value.spec.clone();
        let ips = block::allocate(&mut spec, missing, &handle.spec.handle_id, want.attrs);
        let new_handle = handle.with_delta(&spec.cidr, ips.len() as i64);
        let mut ops = vec![txn::update_block(&spec, current.revision)?];
        ops.extend(handle.write(&new_handle)?);
        match self.ds.txn(ops).await {
            Ok(rev) => {
                handle.committed(new_handle, rev);
                want.got.extend(ips);
                let mut updated = current.clone();
                updated.value.spec = spec;
                updated.revision = rev;
                Ok(Ok(updated))
            }
            Err(e) => Ok(Err(txn::lost(e, &handle.key())?)),
        }
    }

    /// Re-reads whatever a lost transaction lost on.
    async fn refresh_after(
        &self,
        cache: &mut Cache,
        lost: Lost,
        handle: &mut HandleState,
    ) -> Result<()> {
        match lost {
            Lost::Handle => handle.reload(self.ds.as_ref()).await?,
            Lost::Block(cidr) => {
                let fresh =
                    codec::get_object::<IpamBlockSpec>(self.ds.as_ref(), &keys::block(&cidr))
                        .await?;
                let affine = cache.affine.get_or_insert_with(BTreeMap::new);
                match fresh {
                    Some(b) if b.value.spec.affine_node() == Some(self.node.as_str()) => {
                        affine.insert(cidr, b);
                    }
                    _ => {
                        affine.remove(&cidr);
                    }
                }
            }
            Lost::Other(key) => {
                tracing::debug!(%key, "transaction lost on an unexpected key; re-reading blocks");
                self.load_affine(cache).await?;
            }
        }
        Ok(())
    }

    /// Claims new blocks for the node and allocates in them; returns why it stopped short, if it
    /// did.
    async fn claim_blocks(
        &self,
        cache: &mut Cache,
        config: &IpamConfigSpec,
        pools: &[&IpPool],
        want: &mut Want<'_>,
    ) -> Result<String> {
        let family = want.family;
        let listing = self.ds.list(keys::IPAM_BLOCKS).await?;
        let mut taken: BTreeSet<IpNet> = listing
            .items
            .iter()
            .filter_map(|kv| {
                kv.key
                    .strip_prefix(keys::IPAM_BLOCKS)
                    .and_then(keys::parse_cidr_segment)
            })
            .collect();
        let mut attempts = 0;
        while want.missing() > 0 {
            let held = cache.held(family);
            if let Err(why) = plan::may_claim(config, held) {
                return Ok(why);
            }
            let seed = plan::node_seed(&self.node).wrapping_add(attempts as u64);
            let Some(cidr) = pools
                .iter()
                .find_map(|p| plan::unclaimed_block(p, &taken, seed))
            else {
                return Ok(format!("every block of the {family} pools is claimed"));
            };
            // Claim and allocate in one transaction: block, affinity and handle appear together.
            let mut spec = block::new_block(cidr, Some(&self.node));
            let ips = block::allocate(
                &mut spec,
                want.missing(),
                &want.handle.spec.handle_id,
                want.attrs,
            );
            let new_handle = want.handle.with_delta(&cidr, ips.len() as i64);
            let mut ops = vec![
                txn::create_block(&spec)?,
                txn::create_affinity(&self.node, cidr)?,
            ];
            ops.extend(want.handle.write(&new_handle)?);
            match self.ds.txn(ops).await {
                Ok(rev) => {
                    want.handle.committed(new_handle, rev);
                    want.got.extend(ips);
                    let obj = txn::block_object(&spec);
                    let claimed = Versioned {
                        key: obj.key(),
                        value: obj,
                        revision: rev,
                    };
                    cache
                        .affine
                        .get_or_insert_with(BTreeMap::new)
                        .insert(cidr, claimed);
                    tracing::info!(node = %self.node, block = %cidr, "claimed block");
                }
                Err(e) => {
                    attempts += 1;
                    if attempts > MAX_ATTEMPTS {
                        let what = format!("claiming a {family} block");
                        return Err(IpamError::Contention { what, attempts });
                    }
                    match txn::lost(e, &want.handle.key())? {
                        Lost::Handle => {
                            self.refresh_after(cache, Lost::Handle, want.handle).await?
                        }
                        // Someone else claimed it (or its stale affinity exists): try another.
                        _ => {
                            taken.insert(cidr);
                        }
                    }
                }
            }
        }
        Ok(String::new())
    }

    /// Allocates from other nodes' blocks (never under strict affinity).
    async fn borrow(
        &self,
        config: &IpamConfigSpec,
        pools: &[&IpPool],
        want: &mut Want<'_>,
    ) -> Result<()> {
        let mut attempts = 0;
        'rescan: while want.missing() > 0 {
            let (blocks, _) = codec::list::<IpamBlock>(self.ds.as_ref(), keys::IPAM_BLOCKS).await?;
            let summaries: Vec<BlockSummary> = blocks
                .iter()
                .map(|b| BlockSummary::of(&b.value.spec))
                .collect();
            let candidates = plan::borrow_candidates(config, &self.node, &summaries, pools);
            if candidates.is_empty() {
                return Ok(());
            }
            for cidr in candidates {
                let Some(current) = blocks.iter().find(|b| b.value.spec.cidr == cidr) else {
                    continue;
                };
                let before = want.got.len();
                match self.allocate_in(current, want).await? {
                    Ok(_) => {
                        let count = want.got.len() - before;
                        tracing::info!(node = %self.node, block = %cidr, count, "borrowed addresses");
                        if want.missing() == 0 {
                            return Ok(());
                        }
                    }
                    Err(lost) => {
                        attempts += 1;
                        if attempts > MAX_ATTEMPTS {
                            let what = "borrowing an address".to_string();
                            return Err(IpamError::Contention { what, attempts });
                        }
                        if lost == Lost::Handle {
                            want.handle.reload(self.ds.as_ref()).await?;
                        }
                        continue 'rescan;
                    }
                }
            }
        }
        Ok(())
    }

    /// Releases every address of `handle_id`; a missing handle is not an error (DEL is idempotent).
    ///
    /// For a handle this node allocated, whose blocks are all held in memory, this is one
    /// transaction; otherwise (or if that loses a race) the handle and blocks are re-read first.
    pub async fn release_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>> {
        if let Some((rev, blocks)) = self.cached_for_release(handle_id).await {
            if let Some(out) =
                release::try_release_handle(self.ds.as_ref(), handle_id, rev, &blocks).await?
            {
                self.absorb(out.blocks).await;
                return Ok(out.released);
            }
        }
        let out = release::release_handle(self.ds.as_ref(), handle_id).await?;
        self.absorb(out.blocks).await;
        Ok(out.released)
    }

    /// Releases specific addresses, whoever holds them. Unallocated addresses are skipped.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let out = release::release_ips(self.ds.as_ref(), ips).await?;
        self.absorb(out.blocks).await;
        Ok(out.released)
    }

    /// The handle's revision and its blocks, if this node knows them all.
    async fn cached_for_release(
        &self,
        handle_id: &str,
    ) -> Option<(i64, Vec<Versioned<IpamBlock>>)> {
        let mut cache = self.cache.lock().await;
        let handle = cache.handles.remove(handle_id)?;
        let affine = cache.affine.as_ref()?;
        let blocks = handle
            .spec
            .blocks
            .keys()
            .map(|seg| keys::parse_cidr_segment(seg).and_then(|cidr| affine.get(&cidr).cloned()))
            .collect::<Option<Vec<_>>>()?;
        Some((handle.revision?, blocks))
    }

    /// Updates cached affine blocks with states a release just committed.
    async fn absorb(&self, blocks: Vec<(IpNet, Option<Versioned<IpamBlock>>)>) {
        let mut cache = self.cache.lock().await;
        if let Some(affine) = cache.affine.as_mut() {
            for (cidr, state) in blocks {
                match state {
                    Some(b) if b.value.spec.affine_node() == Some(self.node.as_str()) => {
                        affine.insert(cidr, b);
                    }
                    _ => {
                        affine.remove(&cidr);
                    }
                }
            }
        }
    }
}
