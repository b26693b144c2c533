//! Building the compare-and-swap transactions IPAM commits, and reading their failures.

use ipnet::IpNet;
use trellis_datastore::codec::{self, Versioned};
use trellis_datastore::resources::ipam::{BlockAffinitySpec, IpamBlockSpec, IpamHandleSpec};
use trellis_datastore::resources::{BlockAffinity, IpamBlock, IpamHandle};
use trellis_datastore::{keys, Datastore, DatastoreError, ObjectMeta, TxnOp};

use crate::error::Result;

/// What a transaction lost to: re-read that object and try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    Block(IpNet),
    Handle,
    Other(String),
}

/// Classifies a failed transaction by the key whose condition failed. Returns the error back
/// when it is not a lost compare-and-swap.
pub fn lost(err: DatastoreError, handle_key: &str) -> Result<Lost, DatastoreError> {
    let key = match &err {
        DatastoreError::Conflict { key, .. }
        | DatastoreError::AlreadyExists { key }
        | DatastoreError::NotFound { key } => key.clone(),
        _ => return Err(err),
    };
    if key == handle_key {
        return Ok(Lost::Handle);
    }
    if let Some(seg) = key.strip_prefix(keys::IPAM_BLOCKS) {
        if let Some(cidr) = keys::parse_cidr_segment(seg) {
            return Ok(Lost::Block(cidr));
        }
    }
    Ok(Lost::Other(key))
}

pub fn block_object(spec: &IpamBlockSpec) -> IpamBlock {
    IpamBlock::new(
        ObjectMeta::named(keys::cidr_segment(&spec.cidr)),
        spec.clone(),
    )
}

pub fn handle_object(spec: &IpamHandleSpec) -> IpamHandle {
    IpamHandle::new(ObjectMeta::named(spec.handle_id.clone()), spec.clone())
}

/// Write `spec` over the block read at `revision`.
pub fn update_block(spec: &IpamBlockSpec, revision: i64) -> Result<TxnOp> {
    let obj = block_object(spec);
    Ok(TxnOp::Update {
        key: obj.key(),
        value: codec::encode_object(&obj)?,
        expected_revision: revision,
    })
}

pub fn create_block(spec: &IpamBlockSpec) -> Result<TxnOp> {
    let obj = block_object(spec);
    Ok(TxnOp::Create {
        key: obj.key(),
        value: codec::encode_object(&obj)?,
    })
}

pub fn delete_block(cidr: &IpNet, revision: i64) -> TxnOp {
    TxnOp::Delete {
        key: keys::block(cidr),
        expected_revision: Some(revision),
    }
}

pub fn create_affinity(node: &str, cidr: IpNet) -> Result<TxnOp> {
    let obj = BlockAffinity::new(
        ObjectMeta::named(format!("{node}-{}", keys::cidr_segment(&cidr))),
        BlockAffinitySpec {
            node: node.to_string(),
            cidr,
        },
    );
    Ok(TxnOp::Create {
        key: obj.key(),
        value: codec::encode_object(&obj)?,
    })
}

/// The handle as this operation knows it: its content and the revision it was read or written
/// at (`None` = believed absent).
#[derive(Debug, Clone)]
pub struct HandleState {
    pub spec: IpamHandleSpec,
    pub revision: Option<i64>,
}

impl HandleState {
    pub fn absent(id: &str) -> Self {
        Self {
            spec: IpamHandleSpec {
                handle_id: id.to_string(),
                ..Default::default()
            },
            revision: None,
        }
    }

    pub fn from_stored(id: &str, stored: Option<Versioned<IpamHandle>>) -> Self {
        match stored {
            Some(v) => Self {
                spec: v.value.spec,
                revision: Some(v.revision),
            },
            None => Self::absent(id),
        }
    }

    pub fn key(&self) -> String {
        keys::handle(&self.spec.handle_id)
    }

    /// Re-reads the handle after a transaction lost on it.
    pub async fn reload(&mut self, ds: &dyn Datastore) -> Result<()> {
        let stored = codec::get_object::<IpamHandleSpec>(ds, &self.key()).await?;
        *self = Self::from_stored(&self.spec.handle_id, stored);
        Ok(())
    }

    /// Adds `n` addresses in `block` (negative to remove) to a copy of the handle.
    pub fn with_delta(&self, block: &IpNet, n: i64) -> IpamHandleSpec {
        let mut spec = self.spec.clone();
        let seg = keys::cidr_segment(block);
        let cur = i64::from(spec.blocks.get(&seg).copied().unwrap_or(0));
        let new = (cur + n).max(0) as u32;
        if new == 0 {
            spec.blocks.remove(&seg);
        } else {
            spec.blocks.insert(seg, new);
        }
        spec
    }

    /// The op that stores `new` in place of what this state knows (deleting an empty handle).
    pub fn write(&self, new: &IpamHandleSpec) -> Result<Option<TxnOp>> {
        let key = self.key();
        let op = match (self.revision, new.blocks.is_empty()) {
            (None, true) => None,
            (Some(rev), true) => Some(TxnOp::Delete {
                key,
                expected_revision: Some(rev),
            }),
            (None, false) => Some(TxnOp::Create {
                key,
                value: codec::encode_object(&handle_object(new))?,
            }),
            (Some(rev), false) => Some(TxnOp::Update {
                key,
                value: codec::encode_object(&handle_object(new))?,
                expected_revision: rev,
            }),
        };
        Ok(op)
    }

    /// Records that `new` was committed at `revision`.
    pub fn committed(&mut self, new: IpamHandleSpec, revision: i64) {
        self.revision = if new.blocks.is_empty() {
            None
        } else {
            Some(revision)
        };
        self.spec = new;
    }
}
