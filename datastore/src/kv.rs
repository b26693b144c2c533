//! The narrow key-value interface every Trellis component uses to reach the cluster datastore.
//!
//! Keys are relative to the backend's prefix (default `/trellis/v1/`), e.g. `ippools/default`.
//! Values are opaque bytes (JSON documents in practice, see [`crate::codec`]). Every stored value
//! carries the etcd `mod_revision` it was last written at; conditional writes compare against it.

use std::fmt::Debug;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::error::Result;

/// A stored value and the revisions etcd assigned to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key relative to the datastore prefix.
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last write to this key: the token for compare-and-swap.
    pub mod_revision: i64,
    /// Revision at which the key was created.
    pub create_revision: i64,
}

/// A consistent snapshot of every key under a prefix, taken at `revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<KeyValue>,
    /// Store revision of the snapshot: watch from `revision + 1` to see every later change.
    pub revision: i64,
}

/// One step of an all-or-nothing transaction. The conditions of all steps are checked together
/// and either every write applies or none does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write `value` at `key`, which must not exist.
    Create { key: String, value: Vec<u8> },
    /// Replace the value at `key`, which must still be at `expected_revision`.
    Update {
        key: String,
        value: Vec<u8>,
        expected_revision: i64,
    },
    /// Delete `key`; if `expected_revision` is set the key must still be at that revision.
    Delete {
        key: String,
        expected_revision: Option<i64>,
    },
    /// Write nothing, but require `key` to be at `expected_revision` (0 = absent).
    Check { key: String, expected_revision: i64 },
}

impl TxnOp {
    pub fn key(&self) -> &str {
        match self {
            Self::Create { key, .. }
            | Self::Update { key, .. }
            | Self::Delete { key, .. }
            | Self::Check { key, .. } => key,
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> i64 {
        match self {
            Self::Put(kv) => kv.mod_revision,
            Self::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Stream of changes under a prefix, in revision order. It ends with an error item
/// ([`crate::DatastoreError::Compacted`] or `Unavailable`) when the watch cannot continue.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// The datastore as Trellis needs it: reads, compare-and-swap writes, multi-key transactions and
/// resumable watches. Implemented by the etcd backend and by an in-memory fake for unit tests.
#[async_trait]
pub trait Datastore: Send + Sync + Debug {
    /// The value at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, sorted by key, as one consistent snapshot.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Store `value` at `key` only if the key does not exist. Returns the new mod_revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64>;

    /// Replace the value at `key` only if it is still at `expected_revision`.
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<i64>;

    /// Store `value` at `key` whatever is there. Returns the new mod_revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64>;

    /// Delete `key` (if `expected_revision` is set, only if still at that revision).
    /// Deleting a missing key without an expected revision is `NotFound`.
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<()>;

    /// Apply all `ops` atomically. On a failed condition nothing is written and the error is
    /// `Conflict` (or `AlreadyExists` / `NotFound`) naming the first key whose condition failed.
    /// Returns the revision of the transaction.
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<i64>;

    /// Changes under `prefix` from `from_revision` (inclusive) onwards.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// The current store revision (used to stamp snapshots).
    async fn revision(&self) -> Result<i64>;
}
