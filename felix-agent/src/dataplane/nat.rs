//! natOutgoing: masquerade traffic from pods of a `natOutgoing: true` pool to destinations outside
//! ALL pools (Calico's `cali-nat-outgoing` chain over the `masq-ipam-pools` / `all-ipam-pools`
//! ipsets). Pod-to-pod traffic is never NATed.
//!
//! ```text
//!  ClusterUpdate::Pool* ──on_update──► pools (by name) ──render──► one `nft -f -` transaction
//!                                                        ──Nft::apply (complete_deferred_work)──► kernel
//! ```
//!
//! The manager owns four sets and one chain inside `table inet trellis`, which the policy manager
//! shares: the transaction creates what is missing, then flushes and refills only what it owns, so
//! the table is never deleted and the kernel swaps old for new atomically (no window without
//! masquerade, and nothing else in the table is touched).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::ClusterUpdate;

pub const NAT_TABLE: &str = "inet trellis";
pub const NAT_CHAIN: &str = "nat-postrouting";
pub const MASQ_POOLS4: &str = "masq-pools4";
pub const ALL_POOLS4: &str = "all-pools4";
pub const MASQ_POOLS6: &str = "masq-pools6";
pub const ALL_POOLS6: &str = "all-pools6";

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("cannot run `{command}` (is the nftables package installed?): {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` rejected the natOutgoing transaction ({status}): {stderr}")]
    Rejected {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The only nftables operation the NAT manager needs: apply one transaction atomically.
pub trait Nft {
    /// Applies `transaction` (nft script text) as one transaction: all of it or nothing.
    fn apply(&self, transaction: &str) -> Result<(), NatError>;
}

/// Runs `nft -f -` with the transaction on stdin, optionally inside a named netns
/// (`ip netns exec NETNS nft -f -`; tests use that to stay out of the root namespace).
#[derive(Debug, Clone, Default)]
pub struct NftCommand {
    pub netns: Option<String>,
}

impl NftCommand {
    /// `nft` in the agent's own network namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// `nft` run through `ip netns exec NETNS`.
    pub fn in_netns(netns: impl Into<String>) -> Self {
        Self {
            netns: Some(netns.into()),
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            None => Command::new("nft"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
        }
    }

    /// Runs `nft ARGS` (in the namespace, if any) and returns its standard output, or `None`
    /// when it fails (e.g. `list table` of a table that does not exist yet).
    pub fn output(&self, args: &[&str]) -> Option<String> {
        let out = self.command().args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn describe(&self) -> String {
        match &self.netns {
            None => "nft -f -".to_string(),
            Some(ns) => format!("ip netns exec {ns} nft -f -"),
        }
    }
}

impl Nft for NftCommand {
    fn apply(&self, transaction: &str) -> Result<(), NatError> {
        let spawn_err = |source| NatError::Spawn {
            command: self.describe(),
            source,
        };
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        // Write, then close stdin (drop) so nft sees EOF; a write error shows up in the status.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(transaction.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NatError::Rejected {
                command: self.describe(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// What the NAT manager keeps of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPool {
    pub cidr: IpNet,
    pub nat_outgoing: bool,
    /// Kept for completeness: Calico masquerades for disabled pools too (their pods still run),
    /// so it does not change what is rendered.
    pub disabled: bool,
}

/// Programs the natOutgoing masquerade rules of this node.
#[derive(Debug)]
pub struct NatManager {
    pools: BTreeMap<String, NatPool>,
    dirty: bool,
}

impl Default for NatManager {
    fn default() -> Self {
        Self::new()
    }
}

impl NatManager {
    /// Starts dirty: the first pass programs the sets and chain even when there are no pools.
    pub fn new() -> Self {
        Self {
            pools: BTreeMap::new(),
            dirty: true,
        }
    }

    /// Records a pool change; no I/O. Other updates are ignored.
    pub fn on_update(&mut self, update: &ClusterUpdate) {
        let changed = match update {
            ClusterUpdate::PoolUpdated(pool) => {
                let new = NatPool {
                    cidr: pool.spec.cidr,
                    nat_outgoing: pool.spec.nat_outgoing,
                    disabled: pool.spec.disabled,
                };
                self.pools.insert(pool.name().to_string(), new.clone()) != Some(new)
            }
            ClusterUpdate::PoolDeleted(name) => self.pools.remove(name).is_some(),
            _ => false,
        };
        self.dirty |= changed;
    }

    /// Makes the next [`Self::complete_deferred_work`] apply again (periodic resync: repairs
    /// anything changed behind the agent's back).
    pub fn request_resync(&mut self) {
        self.dirty = true;
    }

    pub fn has_pending_work(&self) -> bool {
        self.dirty
    }

    pub fn pools(&self) -> &BTreeMap<String, NatPool> {
        &self.pools
    }

    /// The whole desired state as one nft transaction (deterministic; no I/O).
    pub fn render(&self) -> String {
        let all = self.pools.values().map(|p| p.cidr);
        let masq = self
            .pools
            .values()
            .filter(|p| p.nat_outgoing)
            .map(|p| p.cidr);
        let (all4, all6) = split_aggregate(all);
        let (masq4, masq6) = split_aggregate(masq);

        let mut t = String::new();
        // `add` is idempotent for tables, sets and chains with the same definition; the table is
        // shared with policy and is never deleted or flushed here.
        let _ = writeln!(t, "add table {NAT_TABLE}");
        for (name, kind) in [
            (MASQ_POOLS4, "ipv4_addr"),
            (ALL_POOLS4, "ipv4_addr"),
            (MASQ_POOLS6, "ipv6_addr"),
            (ALL_POOLS6, "ipv6_addr"),
        ] {
            // auto-merge: nft refuses overlapping or adjacent intervals in a set without it.
            let _ = writeln!(
                t,
                "add set {NAT_TABLE} {name} {{ type {kind}; flags interval; auto-merge; }}"
            );
        }
        let _ = writeln!(
            t,
            "add chain {NAT_TABLE} {NAT_CHAIN} \
             {{ type nat hook postrouting priority srcnat; policy accept; }}"
        );
        for (name, members) in [
            (MASQ_POOLS4, &masq4),
            (ALL_POOLS4, &all4),
            (MASQ_POOLS6, &masq6),
            (ALL_POOLS6, &all6),
        ] {
            let _ = writeln!(t, "flush set {NAT_TABLE} {name}");
            // An empty element list is a syntax error: an empty set is just the flush.
            if !members.is_empty() {
                let _ = writeln!(
                    t,
                    "add element {NAT_TABLE} {name} {{ {} }}",
                    members.join(", ")
                );
            }
        }
        let _ = writeln!(t, "flush chain {NAT_TABLE} {NAT_CHAIN}");
        let _ = writeln!(
            t,
            "add rule {NAT_TABLE} {NAT_CHAIN} \
             ip saddr @{MASQ_POOLS4} ip daddr != @{ALL_POOLS4} masquerade"
        );
        let _ = writeln!(
            t,
            "add rule {NAT_TABLE} {NAT_CHAIN} \
             ip6 saddr @{MASQ_POOLS6} ip6 daddr != @{ALL_POOLS6} masquerade"
        );
        t
    }

    /// Applies [`Self::render`] if anything changed. On error the manager stays dirty, so the
    /// next pass retries with the then-current state. Blocking (runs `nft`, a few ms): call it
    /// from a blocking-friendly context.
    pub fn complete_deferred_work(&mut self, nft: &dyn Nft) -> Result<(), NatError> {
        if !self.dirty {
            return Ok(());
        }
        let transaction = self.render();
        tracing::debug!(%transaction, "applying natOutgoing");
        nft.apply(&transaction)?;
        self.dirty = false;
        Ok(())
    }
}

/// Sorted, deduplicated and merged CIDRs (so the text is deterministic and nft never sees an
/// overlap), as nft literals, split by family.
fn split_aggregate(cidrs: impl Iterator<Item = IpNet>) -> (Vec<String>, Vec<String>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for cidr in cidrs {
        match cidr.trunc() {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => v6.push(n),
        }
    }
    (
        Ipv4Net::aggregate(&v4)
            .iter()
            .map(|n| n.to_string())
            .collect(),
        Ipv6Net::aggregate(&v6)
            .iter()
            .map(|n| n.to_string())
            .collect(),
    )
}

/// Records transactions instead of running nft; optionally rejects the next ones.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeNft {
    pub applied: std::cell::RefCell<Vec<String>>,
    /// How many of the next calls fail.
    pub fail_next: std::cell::Cell<usize>,
}

#[cfg(test)]
impl Nft for FakeNft {
    fn apply(&self, transaction: &str) -> Result<(), NatError> {
        let failing = self.fail_next.get();
        if failing > 0 {
            self.fail_next.set(failing - 1);
            return Err(NatError::Spawn {
                command: "fake nft".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.applied.borrow_mut().push(transaction.to_string());
        Ok(())
    }
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
