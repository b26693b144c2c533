//! IPAM errors: each says what was asked for, for which node, and why it could not be done.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;
use trellis_datastore::DatastoreError;

use crate::Family;

#[derive(Debug, Error)]
pub enum IpamError {
    #[error(transparent)]
    Datastore(#[from] DatastoreError),

    /// No enabled pool of the family selects the node (or matches the requested pools).
    #[error("no enabled {family} IP pool is usable by node {node}{detail}")]
    NoPool {
        family: Family,
        node: String,
        detail: String,
    },

    /// The pools have no free address the node may use.
    #[error("{family} pools exhausted for node {node}: wanted {wanted}, got {got} ({why})")]
    Exhausted {
        family: Family,
        node: String,
        wanted: usize,
        got: usize,
        why: String,
    },

    #[error("{ip} is not in any IP pool")]
    NotInPool { ip: IpAddr },

    #[error("{ip} is already allocated to handle {handle}")]
    AlreadyAllocated { ip: IpAddr, handle: String },

    #[error("{ip} is not allocated")]
    NotAllocated { ip: IpAddr },

    #[error("{ip} is in pool {pool}, which is disabled")]
    PoolDisabled { ip: IpAddr, pool: String },

    /// Another writer kept winning the compare-and-swap; the operation made no change.
    #[error("gave up {what} after {attempts} conflicting attempts")]
    Contention { what: String, attempts: u32 },

    #[error("block {block} reached the node limit: node {node} already holds {held} blocks (maxBlocksPerHost {max})")]
    BlockLimit {
        block: IpNet,
        node: String,
        held: usize,
        max: u32,
    },

    #[error("invalid IPAM request: {0}")]
    InvalidRequest(String),

    /// Stored IPAM state breaks an invariant (reported by `ipam check`, never silently fixed).
    #[error("{key}: inconsistent IPAM state: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;
