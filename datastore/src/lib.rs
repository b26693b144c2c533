//! Trellis' cluster datastore: the resource model (with validation that names the offending
//! field), the key layout, and the [`Datastore`] trait with its etcd backend.
//!
//! Layers, bottom up:
//! - [`kv`]: the narrow key-value trait (CAS, transactions, resumable watches);
//! - [`etcd`] / [`memory`]: the real backend and the in-memory fake for unit tests;
//! - [`codec`]: typed reads and writes of [`meta::Object`]s over any `Datastore`;
//! - [`watcher`]: list-then-watch with resume and full resync after compaction;
//! - [`resources`]: the resource kinds and their validation.

#[cfg(feature = "cli")]
pub mod cli;
pub mod codec;
pub mod error;
pub mod etcd;
pub mod keys;
pub mod kv;
pub mod memory;
pub mod meta;
pub mod resources;
pub mod selector;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validation;
pub mod watcher;

pub use error::{DatastoreError, Result};
pub use kv::{Datastore, KeyValue, Listing, TxnOp, WatchEvent, WatchStream};
pub use meta::{Object, ObjectMeta, Spec};
pub use validation::{FieldError, ValidationErrors};
