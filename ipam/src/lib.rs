//! Trellis block IPAM (Calico's model).
//!
//! An IP pool is carved into blocks (default /26 and /122). A node claims affinity for a block and
//! hands out its addresses; when its blocks are full it claims another, and when the pool has no
//! free block it borrows addresses from other nodes' blocks (unless `strictAffinity`). Every
//! change is one etcd transaction that compare-and-swaps the block and the owning handle together.
//!
//! - [`block`] and [`plan`]: pure logic, unit-tested without a datastore;
//! - [`store`]: allocation for one node over a [`trellis_datastore::Datastore`];
//! - [`release`]: release by handle or address;
//! - [`check`]: consistency report (`trellisctl ipam check`) and garbage collection.

pub mod block;
pub mod check;
pub mod error;
pub mod plan;
pub mod release;
pub mod store;
pub mod txn;

pub use check::{check, gc, CheckReport, GcReport};
pub use error::{IpamError, Result};
pub use plan::Family;
pub use store::{AssignRequest, Assigned, NodeIpam};
/// The handle of a pod interface (`CONTAINERID.IFNAME`), shared with the CNI plugin and `ipam check`.
pub use trellis_datastore::resources::workload_endpoint::ipam_handle;
