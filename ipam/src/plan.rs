//! Pure placement decisions: which pools a node may use, which of its blocks to allocate from,
//! whether it may claim another block and which one, and which blocks it may borrow from.
//! The store ([`crate::store`]) turns each decision into one compare-and-swap transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use trellis_datastore::resources::ipam::{AllocationKind, IpamConfigSpec, HOST_AFFINITY_PREFIX};
use trellis_datastore::resources::IpPool;

use crate::block::offset_addr;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Self::V4,
            IpNet::V6(_) => Self::V6,
        }
    }

    pub fn of_addr(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// What the planner needs to know about a stored block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSummary {
    pub cidr: IpNet,
    /// Node the block is affine to.
    pub node: Option<String>,
    pub free: usize,
}

impl BlockSummary {
    pub fn of(spec: &trellis_datastore::resources::IpamBlockSpec) -> Self {
        Self {
            cidr: spec.cidr,
            node: spec
                .affinity
                .as_deref()
                .and_then(|a| a.strip_prefix(HOST_AFFINITY_PREFIX))
                .map(str::to_string),
            free: spec.unallocated.len(),
        }
    }
}

/// Pools of `family` that `node` may allocate `kind` addresses from: enabled, selecting the
/// node's labels, allowing the use, and (when `requested` is non-empty) named there by pool name
/// or CIDR.
pub fn eligible_pools<'a>(
    pools: &'a [IpPool],
    family: Family,
    node_labels: &BTreeMap<String, String>,
    requested: &[String],
    kind: AllocationKind,
) -> Vec<&'a IpPool> {
    pools
        .iter()
        .filter(|p| Family::of_net(&p.spec.cidr) == family && !p.spec.disabled)
        .filter(|p| match kind {
            AllocationKind::Pod | AllocationKind::Reserved => p.spec.allows_workloads(),
            AllocationKind::VxlanTunnel | AllocationKind::IpipTunnel => p
                .spec
                .allowed_uses
                .contains(&trellis_datastore::resources::ippool::AllowedUse::Tunnel),
        })
        .filter(|p| p.spec.selects_node(node_labels))
        .filter(|p| {
            requested.is_empty()
                || requested
                    .iter()
                    .any(|r| *r == p.metadata.name || *r == p.spec.cidr.to_string())
        })
        .collect()
}

/// The pool whose CIDR contains `net`.
pub fn pool_containing<'a>(pools: &[&'a IpPool], net: &IpNet) -> Option<&'a IpPool> {
    pools.iter().copied().find(|p| p.spec.cidr.contains(net))
}

/// The node's own blocks with free addresses in eligible pools, fullest first so that partly
/// used blocks fill up before fresh ones are touched (keeps empty blocks releasable).
pub fn affine_candidates(node: &str, blocks: &[BlockSummary], pools: &[&IpPool]) -> Vec<IpNet> {
    let mut c: Vec<&BlockSummary> = blocks
        .iter()
        .filter(|b| b.node.as_deref() == Some(node) && b.free > 0)
        .filter(|b| pool_containing(pools, &b.cidr).is_some())
        .collect();
    c.sort_by_key(|b| (b.free, b.cidr));
    c.into_iter().map(|b| b.cidr).collect()
}

/// Whether a node already holding `held` blocks of a family may claim another.
pub fn may_claim(config: &IpamConfigSpec, held: usize) -> Result<(), String> {
    if !config.auto_allocate_blocks {
        return Err("autoAllocateBlocks is off".into());
    }
    if config.max_blocks_per_host > 0 && held >= config.max_blocks_per_host as usize {
        return Err(format!(
            "node holds {held} blocks, maxBlocksPerHost is {}",
            config.max_blocks_per_host
        ));
    }
    Ok(())
}

/// Number of blocks of `pool`.
fn block_count(pool: &IpPool) -> u128 {
    let bits = u32::from(pool.spec.block_size() - pool.spec.cidr.prefix_len());
    1u128 << bits.min(127)
}

/// The `index`th block of `pool`.
fn nth_block(pool: &IpPool, index: u128) -> IpNet {
    let bs = pool.spec.block_size();
    let shift = u32::from(pool.spec.cidr.max_prefix_len() - bs);
    let addr = offset_addr(pool.spec.cidr.network(), index << shift);
    IpNet::new(addr, bs).expect("block size validated against the pool")
}

/// A block of `pool` not in `taken`, searched from an offset derived from `seed` so nodes racing
/// for blocks start in different places. `None` when every block is taken.
pub fn unclaimed_block(pool: &IpPool, taken: &BTreeSet<IpNet>, seed: u64) -> Option<IpNet> {
    let n = block_count(pool);
    let start = u128::from(seed) % n;
    // Every miss lands on a distinct taken block, so this loop runs at most taken.len() + 1 times.
    let mut misses = 0usize;
    let mut i = 0u128;
    while i < n {
        let cidr = nth_block(pool, (start + i) % n);
        if !taken.contains(&cidr) {
            return Some(cidr);
        }
        misses += 1;
        if misses > taken.len() {
            return None;
        }
        i += 1;
    }
    None
}

/// Blocks of other nodes (or of none) with free addresses that `node` may borrow from; empty
/// under strict affinity. Most free first, to spread borrowed addresses.
pub fn borrow_candidates(
    config: &IpamConfigSpec,
    node: &str,
    blocks: &[BlockSummary],
    pools: &[&IpPool],
) -> Vec<IpNet> {
    if config.strict_affinity {
        return Vec::new();
    }
    let mut c: Vec<&BlockSummary> = blocks
        .iter()
        .filter(|b| b.node.as_deref() != Some(node) && b.free > 0)
        .filter(|b| pool_containing(pools, &b.cidr).is_some())
        .collect();
    c.sort_by_key(|b| (std::cmp::Reverse(b.free), b.cidr));
    c.into_iter().map(|b| b.cidr).collect()
}

/// A stable per-node seed (FNV-1a) for [`unclaimed_block`].
pub fn node_seed(node: &str) -> u64 {
    node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
