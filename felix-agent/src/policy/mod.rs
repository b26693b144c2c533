//! Policy in the agent: NetworkPolicies, WorkloadEndpoints, Namespaces and Nodes from the
//! datastore, compiled by `trellis-policy` against this node's view and applied to `table inet
//! trellis` as one `nft -f` transaction per change.
//!
//! ```text
//!  Watcher(policies/, workloadendpoints/, namespaces/, nodes/) --> WatchCache
//!      --view::build--> Model + [CompiledPolicy] (+ policies that did not compile, by name)
//!      --render_node + stale deletions--> nft -f (all or nothing) --> kernel
//! ```
//! The table is never deleted: each transaction creates what is missing, then flushes and
//! refills what it owns and deletes chains and sets of policies that are gone, so the kernel
//! swaps old for new atomically. After a restart the first transaction replaces the previous
//! run's objects the same way: there is no moment without policy.

pub mod run;
pub mod stale;
pub mod view;
