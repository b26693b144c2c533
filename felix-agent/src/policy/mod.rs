//! Policy in the agent: NetworkPolicies, GlobalNetworkPolicies, WorkloadEndpoints, Namespaces
//! and Nodes from the datastore, kept in a `trellis_policy::Engine` for this node and applied
//! to `table inet trellis` as one `nft -f` transaction per batch of changes.
//!
//! ```text
//!  Watcher(policies/, globalpolicies/, workloadendpoints/, namespaces/, nodes/) --> WatchCache
//!      snapshot (start, resync) --view::load--> Engine::replace_all
//!      one change               --view::change--> Engine::set_endpoint / set_policy / ...
//!  Engine::transaction --> nft -f (all or nothing) --> committed | failed (next one whole)
//! ```
//! The table is never deleted. The first transaction (and the one after a refused one) is
//! whole: it creates what is missing, flushes and refills everything the policies own and
//! deletes a previous run's objects that are gone, so the kernel swaps old for new atomically
//! and a restart has no moment without policy. After that a pod created, deleted or
//! relabelled is set elements added and deleted; a policy change rewrites that policy's chains
//! and sets only.

pub mod elements;
pub mod run;
pub mod stale;
pub mod view;
