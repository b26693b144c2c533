//! BGP in the agent: the node's speaker, configured from the datastore, advertising the node's
//! blocks and installing what it learns.
//!
//! ```text
//!  Watcher(nodes/, ipam/blocks/, ippools/, bgppeers/, config/bgp) --> Cache --> Inputs (decoded)
//!        Inputs --peers::desired_peers------------> Speaker.add_peer / remove_peer
//!               --advertise::desired_originations-> Speaker.originate_with / withdraw (before peers)
//!               --settings (AS, router id, port)--> restart the Speaker when they change
//!               --kernel_filter::KernelFilter-----> Installer
//!  Speaker --RouteEvent--> Installer --KernelSync--> main table, proto 81, metric 20
//!  every second: Speaker.status() --> BgpStatusCell (agent status, `trellisctl node status`)
//! ```
//!
//! Restarts never open a gap (RFC 4724, restarting speaker): routes the previous run installed
//! are adopted from the kernel and kept until every peer has re-sent its table (End-of-RIB) or
//! the restart time runs out; our own prefixes are handed to the speaker before any peer is, so
//! the first table a peer gets (and its End-of-RIB) is complete; and stopping the agent closes
//! sessions without a NOTIFICATION, so peers keep our routes as stale while we are away.

pub mod advertise;
pub mod installer;
pub mod kernel_filter;
pub mod peer_config;
pub mod peers;
mod plan;
pub mod run;

use std::sync::Mutex;

use trellis_agent_api::BgpStatus;

/// The latest BGP status, written by the BGP loop and read by the agent API.
#[derive(Debug, Default)]
pub struct BgpStatusCell(Mutex<Option<BgpStatus>>);

impl BgpStatusCell {
    pub fn set(&self, status: BgpStatus) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    pub fn get(&self) -> Option<BgpStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
