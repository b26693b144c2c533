//! Allocating one exact address (a pod asking for a fixed IP, an operator's reservation), and
//! reading what a handle holds.

use std::net::IpAddr;

use ipnet::IpNet;
use trellis_datastore::codec::{self, Versioned};
use trellis_datastore::resources::ipam::AllocationAttributes;
use trellis_datastore::resources::{IpamBlockSpec, IpamHandle, IpamHandleSpec};
use trellis_datastore::{keys, Datastore};

use super::{now_secs, NodeIpam, MAX_ATTEMPTS};
use crate::block;
use crate::error::{IpamError, Result};
use crate::plan::{self, Family};
use crate::txn::{self, HandleState, Lost};

impl NodeIpam {
    /// Allocates exactly `ip` (for a pod asking for a fixed address, or an operator reserving one).
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle_id: &str,
        attrs: &AllocationAttributes,
    ) -> Result<()> {
        let mut cache = self.cache.lock().await;
        let topo = self.topology(&mut cache).await?;
        let pool = topo
            .pools
            .iter()
            .find(|p| p.spec.cidr.contains(&ip))
            .ok_or(IpamError::NotInPool { ip })?;
        if pool.spec.disabled {
            return Err(IpamError::PoolDisabled {
                ip,
                pool: pool.metadata.name.clone(),
            });
        }
        let cidr = IpNet::new(ip, pool.spec.block_size())
            .map_err(|e| IpamError::InvalidRequest(e.to_string()))?
            .trunc();
        let mut attrs = attrs.clone();
        attrs.node.get_or_insert_with(|| self.node.clone());
        attrs.allocated_at.get_or_insert_with(now_secs);
        let mut handle = HandleState::absent(handle_id);
        handle.reload(self.ds.as_ref()).await?;
        for attempt in 1..=MAX_ATTEMPTS {
            let stored =
                codec::get_object::<IpamBlockSpec>(self.ds.as_ref(), &keys::block(&cidr)).await?;
            let new_handle = handle.with_delta(&cidr, 1);
            let mut ops = Vec::new();
            match &stored {
                Some(b) => {
                    let mut spec = b.value.spec.clone();
                    block::assign(&mut spec, ip, handle_id, &attrs)?;
                    ops.push(txn::update_block(&spec, b.revision)?);
                }
                None => {
                    if cache.affine.is_none() {
                        self.load_affine(&mut cache).await?;
                    }
                    let held = cache.held(Family::of_addr(&ip));
                    let affine = plan::may_claim(&topo.config, held).is_ok();
                    if !affine && topo.config.strict_affinity {
                        return Err(IpamError::BlockLimit {
                            block: cidr,
                            node: self.node.clone(),
                            held,
                            max: topo.config.max_blocks_per_host,
                        });
                    }
                    let mut spec = block::new_block(cidr, affine.then_some(self.node.as_str()));
                    block::assign(&mut spec, ip, handle_id, &attrs)?;
                    ops.push(txn::create_block(&spec)?);
                    if affine {
                        ops.push(txn::create_affinity(&self.node, cidr)?);
                    }
                }
            }
            ops.extend(handle.write(&new_handle)?);
            match self.ds.txn(ops).await {
                Ok(rev) => {
                    handle.committed(new_handle, rev);
                    cache.affine = None; // re-read lazily: the block may be ours now
                    return Ok(());
                }
                Err(e) => {
                    if txn::lost(e, &handle.key())? == Lost::Handle {
                        handle.reload(self.ds.as_ref()).await?;
                    }
                    tracing::debug!(%ip, attempt, "assign lost a race; retrying");
                }
            }
        }
        Err(IpamError::Contention {
            what: format!("assigning {ip}"),
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// Reads a handle (for callers that need to see what a handle holds).
pub async fn get_handle(
    ds: &dyn Datastore,
    handle_id: &str,
) -> Result<Option<Versioned<IpamHandle>>> {
    Ok(codec::get_object::<IpamHandleSpec>(ds, &keys::handle(handle_id)).await?)
}

/// Addresses currently held by `handle_id`.
pub async fn addresses_of(ds: &dyn Datastore, handle_id: &str) -> Result<Vec<IpAddr>> {
    let Some(h) = get_handle(ds, handle_id).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for seg in h.value.spec.blocks.keys() {
        let Some(cidr) = keys::parse_cidr_segment(seg) else {
            continue;
        };
        if let Some(b) = codec::get_object::<IpamBlockSpec>(ds, &keys::block(&cidr)).await? {
            out.extend(block::addresses_of(&b.value.spec, handle_id));
        }
    }
    Ok(out)
}
