//! Releasing addresses, by handle or by address, each block change committed together with the
//! handle counts in one compare-and-swap transaction. Node-independent: used by agents,
//! `trellisctl ipam release` and GC alike.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use trellis_datastore::codec::{self, Versioned};
use trellis_datastore::resources::ipam::BlockAffinitySpec;
use trellis_datastore::resources::{IpPoolSpec, IpamBlock, IpamBlockSpec, IpamHandleSpec};
use trellis_datastore::{keys, Datastore, Object, TxnOp};

use crate::block;
use crate::error::{IpamError, Result};
use crate::store::MAX_ATTEMPTS;
use crate::txn::{self, HandleState};

/// What a release did: the addresses freed and the new state of every block it touched
/// (`None` = the block was deleted).
#[derive(Debug, Default)]
pub struct ReleaseOutcome {
    pub released: Vec<IpAddr>,
    pub blocks: Vec<(IpNet, Option<Versioned<IpamBlock>>)>,
}

/// The block write for `spec` after a release: an empty block nobody is affine to is deleted,
/// anything else updated.
fn write_block(spec: &IpamBlockSpec, revision: i64) -> Result<(TxnOp, bool)> {
    if block::is_empty(spec) && spec.affinity.is_none() {
        Ok((txn::delete_block(&spec.cidr, revision), true))
    } else {
        Ok((txn::update_block(spec, revision)?, false))
    }
}

fn versioned(spec: IpamBlockSpec, revision: i64) -> Versioned<IpamBlock> {
    let obj = txn::block_object(&spec);
    Versioned {
        key: obj.key(),
        value: obj,
        revision,
    }
}

async fn get_block(ds: &dyn Datastore, cidr: &IpNet) -> Result<Option<Versioned<IpamBlock>>> {
    Ok(codec::get_object::<IpamBlockSpec>(ds, &keys::block(cidr)).await?)
}

async fn get_handle_state(ds: &dyn Datastore, id: &str) -> Result<HandleState> {
    let stored = codec::get_object::<IpamHandleSpec>(ds, &keys::handle(id)).await?;
    Ok(HandleState::from_stored(id, stored))
}

/// Frees everything `handle_id` holds and deletes the handle. Idempotent.
pub async fn release_handle(ds: &dyn Datastore, handle_id: &str) -> Result<ReleaseOutcome> {
    for _ in 0..MAX_ATTEMPTS {
        let handle = get_handle_state(ds, handle_id).await?;
        let Some(handle_rev) = handle.revision else {
            return Ok(ReleaseOutcome::default());
        };
        let mut blocks = Vec::new();
        for seg in handle.spec.blocks.keys() {
            let Some(cidr) = keys::parse_cidr_segment(seg) else {
                continue;
            };
            // A block the handle names but that is gone holds nothing of it any more.
            if let Some(b) = get_block(ds, &cidr).await? {
                blocks.push(b);
            }
        }
        if let Some(out) = try_release_handle(ds, handle_id, handle_rev, &blocks).await? {
            return Ok(out);
        }
    }
    Err(IpamError::Contention {
        what: format!("releasing handle {handle_id}"),
        attempts: MAX_ATTEMPTS,
    })
}

/// One attempt at releasing a handle: a single transaction over `blocks` and the handle as the
/// caller last saw them. `None` when something changed since (re-read and try again).
pub(crate) async fn try_release_handle(
    ds: &dyn Datastore,
    handle_id: &str,
    handle_rev: i64,
    blocks: &[Versioned<IpamBlock>],
) -> Result<Option<ReleaseOutcome>> {
    let mut ops = Vec::new();
    let mut out = ReleaseOutcome::default();
    let mut pending = Vec::new();
    for b in blocks {
        let mut spec = b.value.spec.clone();
        out.released
            .extend(block::release_handle(&mut spec, handle_id));
        let (op, deleted) = write_block(&spec, b.revision)?;
        ops.push(op);
        pending.push((spec.cidr, (!deleted).then_some(spec)));
    }
    ops.push(TxnOp::Delete {
        key: keys::handle(handle_id),
        expected_revision: Some(handle_rev),
    });
    match ds.txn(ops).await {
        Ok(rev) => {
            out.blocks = pending
                .into_iter()
                .map(|(c, s)| (c, s.map(|s| versioned(s, rev))))
                .collect();
            release_emptied(ds, &mut out).await?;
            Ok(Some(out))
        }
        Err(e) if e.lost_race() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The block each address belongs to: from the pools' block sizes, or (for an address whose pool
/// is gone) from the stored blocks.
async fn blocks_of(ds: &dyn Datastore, ips: &[IpAddr]) -> Result<BTreeMap<IpNet, Vec<IpAddr>>> {
    let pools = codec::list_objects::<IpPoolSpec>(ds).await?;
    let mut stored: Option<Vec<IpNet>> = None;
    let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    for &ip in ips {
        let cidr = match pools.iter().find(|p| p.value.spec.cidr.contains(&ip)) {
            Some(p) => IpNet::new(ip, p.value.spec.block_size())
                .ok()
                .map(|n| n.trunc()),
            None => {
                if stored.is_none() {
                    let l = ds.list(keys::IPAM_BLOCKS).await?;
                    stored = Some(
                        l.items
                            .iter()
                            .filter_map(|kv| {
                                kv.key
                                    .strip_prefix(keys::IPAM_BLOCKS)
                                    .and_then(keys::parse_cidr_segment)
                            })
                            .collect(),
                    );
                }
                stored
                    .as_ref()
                    .and_then(|s| s.iter().find(|c| c.contains(&ip)).copied())
            }
        };
        if let Some(c) = cidr {
            by_block.entry(c).or_default().push(ip);
        }
    }
    Ok(by_block)
}

/// Frees the given addresses whoever holds them; addresses not allocated are skipped.
pub async fn release_ips(ds: &dyn Datastore, ips: &[IpAddr]) -> Result<ReleaseOutcome> {
    let mut out = ReleaseOutcome::default();
    for (cidr, ips) in blocks_of(ds, ips).await? {
        release_in_block(ds, cidr, &ips, &mut out).await?;
    }
    release_emptied(ds, &mut out).await?;
    Ok(out)
}

async fn release_in_block(
    ds: &dyn Datastore,
    cidr: IpNet,
    ips: &[IpAddr],
    out: &mut ReleaseOutcome,
) -> Result<()> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(b) = get_block(ds, &cidr).await? else {
            return Ok(());
        };
        let mut spec = b.value.spec.clone();
        let mut per_handle: BTreeMap<String, i64> = BTreeMap::new();
        let mut released = Vec::new();
        for &ip in ips {
            if let Some(a) = block::release(&mut spec, ip) {
                *per_handle.entry(a.handle).or_default() += 1;
                released.push(ip);
            }
        }
        if released.is_empty() {
            return Ok(());
        }
        let (op, deleted) = write_block(&spec, b.revision)?;
        let mut ops = vec![op];
        for (id, n) in &per_handle {
            let h = get_handle_state(ds, id).await?;
            let new = h.with_delta(&cidr, -n);
            ops.extend(h.write(&new)?);
        }
        match ds.txn(ops).await {
            Ok(rev) => {
                out.released.extend(released);
                out.blocks
                    .push((cidr, (!deleted).then(|| versioned(spec, rev))));
                return Ok(());
            }
            Err(e) if e.lost_race() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::Contention {
        what: format!("releasing addresses in block {cidr}"),
        attempts: MAX_ATTEMPTS,
    })
}

/// A release that emptied a node's block gives the block back when the node has another block
/// of the same pool with room, so nodes do not hoard blocks they no longer need. The last block
/// a node holds in a pool is kept (Calico keeps affinity too) to avoid claim/release churn.
async fn release_emptied(ds: &dyn Datastore, out: &mut ReleaseOutcome) -> Result<()> {
    let emptied: Vec<Versioned<IpamBlock>> = out
        .blocks
        .iter()
        .filter_map(|(_, b)| b.clone())
        .filter(|b| block::is_empty(&b.value.spec) && b.value.spec.affinity.is_some())
        .collect();
    if emptied.is_empty() {
        return Ok(());
    }
    let pools = codec::list_objects::<IpPoolSpec>(ds).await?;
    for b in emptied {
        let spec = &b.value.spec;
        let Some(node) = spec.affine_node() else {
            continue;
        };
        let Some(pool) = pools
            .iter()
            .find(|p| p.value.spec.cidr.contains(&spec.cidr))
        else {
            continue;
        };
        let (affs, _) =
            codec::list::<Object<BlockAffinitySpec>>(ds, &keys::affinities_of(node)).await?;
        let mut has_room_elsewhere = false;
        for a in affs
            .iter()
            .map(|a| a.value.spec.cidr)
            .filter(|c| *c != spec.cidr && pool.value.spec.cidr.contains(c))
        {
            if let Some(other) = get_block(ds, &a).await? {
                if block::free_count(&other.value.spec) > 0
                    && other.value.spec.affine_node() == Some(node)
                {
                    has_room_elsewhere = true;
                    break;
                }
            }
        }
        if !has_room_elsewhere {
            continue;
        }
        let ops = vec![
            txn::delete_block(&spec.cidr, b.revision),
            TxnOp::Delete {
                key: keys::affinity(node, &spec.cidr),
                expected_revision: None,
            },
        ];
        match ds.txn(ops).await {
            Ok(_) => {
                tracing::info!(%node, block = %spec.cidr, "released empty block");
                for entry in out.blocks.iter_mut().filter(|(c, _)| *c == spec.cidr) {
                    entry.1 = None;
                }
            }
            // Someone allocated from it meanwhile: it is in use again, keep it.
            Err(e) if e.lost_race() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
