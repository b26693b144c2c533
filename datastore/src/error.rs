//! Errors of the datastore layer. Every variant names the key (or endpoint) involved so a
//! caller can report what failed without extra context.

use thiserror::Error;

/// A failure talking to, or reasoning about, the cluster datastore.
#[derive(Debug, Error)]
pub enum DatastoreError {
    /// `get` or a conditional write found no value at `key`.
    #[error("{key}: not found in the datastore")]
    NotFound { key: String },

    /// `create` found a value already stored at `key`.
    #[error("{key}: already exists in the datastore")]
    AlreadyExists { key: String },

    /// A compare-and-swap lost: `key` was changed by someone else since it was read.
    /// `expected` is the mod_revision the writer read (0 = "expected absent"); `actual` the one
    /// found (0 = absent).
    #[error("{key}: changed concurrently (expected revision {expected}, found {actual})")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },

    /// A watch asked for a revision that etcd has already compacted away; the caller must
    /// relist (full resync) and watch again from the listing's revision.
    #[error("watch on {prefix} from revision {requested}: compacted (oldest available {compact_revision})")]
    Compacted {
        prefix: String,
        requested: i64,
        compact_revision: i64,
    },

    /// The datastore could not be reached, or the connection dropped mid-request.
    #[error("datastore at {endpoints} unreachable: {reason}")]
    Unavailable { endpoints: String, reason: String },

    /// A stored value could not be decoded or a value could not be encoded.
    #[error("{key}: cannot decode stored value: {reason}")]
    Codec { key: String, reason: String },

    /// A request was refused by the datastore (permission, bad request, too large...).
    #[error("datastore refused {op} on {key}: {reason}")]
    Rejected {
        op: &'static str,
        key: String,
        reason: String,
    },

    /// Client configuration is unusable (bad TLS file, malformed endpoint...).
    #[error("datastore configuration: {0}")]
    Config(String),
}

impl DatastoreError {
    /// True when retrying the same logical operation after re-reading state may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::AlreadyExists { .. })
    }

    /// True when a conditional write failed because the key changed, appeared or vanished since
    /// it was read: the caller lost a race and should re-read, then decide again.
    pub fn lost_race(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::AlreadyExists { .. } | Self::NotFound { .. }
        )
    }
}

pub type Result<T, E = DatastoreError> = std::result::Result<T, E>;
