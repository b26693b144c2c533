//! SNAT and connmark of the VPC datapath as one `nft -f -` transaction in `table inet trellis`.
//!
//! The table is shared: the policy manager owns `np-*`, `gnp-*` and `*-via-*` objects and the
//! overlay NAT manager its own chain, so everything here is named `vpc-*` and the transaction
//! only declares, flushes and refills (or deletes) those two chains. nft applies a transaction
//! atomically, so a re-apply swaps old rules for new without a moment in between.
//!
//! The scheme is the AWS VPC CNI's (`network.go` and `nftables_connmark.go` there), with one
//! mark bit `M` (default 0x80) for two purposes:
//! - a connection whose first packet ARRIVES on the primary interface gets `ct mark |= M`
//!   (AWS limits this to local destinations, i.e. NodePorts; we mark every such connection so
//!   replies to any traffic that came in by the primary ENI leave by it);
//! - without external SNAT, a connection a pod opens to a destination outside the VPC and
//!   exclusion CIDRs (and not local to the node) gets `ct mark |= M` too;
//! - packets from pods copy `M` from the connection to the packet (`meta mark |= M`), so the
//!   `fwmark M/M lookup main` rule at priority 1024 routes them by the main table, out of the
//!   primary ENI, ahead of the pod's own `from POD lookup TABLE(ENI)` at 1536;
//! - without external SNAT, marked connections leaving by the primary interface towards such
//!   destinations are SNATed to the primary IP (`fully-random`, AWS's default
//!   `AWS_VPC_K8S_CNI_RANDOMIZESNAT=prng`).
//!
//! The prerouting chain runs at priority -90, after DNAT (-100) as AWS's does, so a pod's
//! connection to a service is judged by its real destination. It is a filter chain (it sees
//! every packet, for the restore) and marks only on `ct state new`. SNAT and connmark are IPv4
//! only, as in AWS (IPv6 pods leave with their own address).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::VpcDatapathConfig;

pub const NFT_TABLE: &str = "inet trellis";
pub const PREROUTING_CHAIN: &str = "vpc-prerouting";
pub const SNAT_CHAIN: &str = "vpc-snat";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("VPC SNAT needs at least one VPC CIDR (otherwise every destination would be SNATed)")]
    NoVpcCidrs,
    #[error("{what} {value:?} cannot be used in an nft rule: {why}")]
    BadName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("connmark 0 cannot mark anything; use a non-zero bit such as 0x80")]
    ZeroConnmark,
    #[error("cannot run `{command}` (is the nftables package installed?): {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` rejected the VPC transaction ({status}): {stderr}")]
    Rejected {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

fn check_name(what: &'static str, value: &str) -> Result<(), NftError> {
    let why = if value.is_empty() {
        "it is empty"
    } else if value.len() > 15 {
        "interface names have at most 15 characters"
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        "only letters, digits, '-', '_' and '.' are accepted"
    } else {
        return Ok(());
    };
    Err(NftError::BadName {
        what,
        value: value.to_string(),
        why,
    })
}

/// The whole transaction for `cfg` (deterministic; no I/O).
pub fn render_nft(cfg: &VpcDatapathConfig) -> Result<String, NftError> {
    if cfg.vpc_cidrs.is_empty() {
        return Err(NftError::NoVpcCidrs);
    }
    if cfg.connmark == 0 {
        return Err(NftError::ZeroConnmark);
    }
    check_name("primary interface", &cfg.primary_if)?;
    check_name("pod interface prefix", &cfg.pod_if_prefix)?;
    let all: Vec<Ipv4Net> = cfg
        .vpc_cidrs
        .iter()
        .chain(&cfg.exclude_snat_cidrs)
        .map(|n| n.trunc())
        .collect();
    let no_snat = Ipv4Net::aggregate(&all)
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (t, m, primary, pods) = (NFT_TABLE, cfg.connmark, &cfg.primary_if, &cfg.pod_if_prefix);

    let mut s = String::new();
    // `add` is idempotent for the table and for a chain with the same hook and priority.
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add chain {t} {PREROUTING_CHAIN} {{ type filter hook prerouting priority -90; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain {t} {PREROUTING_CHAIN}");
    let _ = writeln!(
        s,
        "add rule {t} {PREROUTING_CHAIN} iifname \"{primary}\" ct state new ct mark set ct mark or {m:#x}"
    );
    if !cfg.external_snat {
        let _ = writeln!(
            s,
            "add rule {t} {PREROUTING_CHAIN} iifname \"{pods}*\" ct state new ip daddr != {{ {no_snat} }} \
             fib daddr type != local ct mark set ct mark or {m:#x}"
        );
    }
    let _ = writeln!(
        s,
        "add rule {t} {PREROUTING_CHAIN} iifname \"{pods}*\" ct mark and {m:#x} == {m:#x} \
         meta mark set meta mark or {m:#x}"
    );
    let _ = writeln!(
        s,
        "add chain {t} {SNAT_CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain {t} {SNAT_CHAIN}");
    if cfg.external_snat {
        // Declared above so that the delete works whether or not it existed.
        let _ = writeln!(s, "delete chain {t} {SNAT_CHAIN}");
    } else {
        let _ = writeln!(
            s,
            "add rule {t} {SNAT_CHAIN} oifname \"{primary}\" ct mark and {m:#x} == {m:#x} \
             ip daddr != {{ {no_snat} }} snat ip to {} fully-random",
            cfg.primary_ip
        );
    }
    Ok(s)
}

/// Removes both `vpc-*` chains (the node leaves VPC mode); the shared table stays.
pub fn render_nft_removal() -> String {
    let mut s = format!("add table {NFT_TABLE}\n");
    for (chain, spec) in [
        (
            PREROUTING_CHAIN,
            "type filter hook prerouting priority -90; policy accept;",
        ),
        (
            SNAT_CHAIN,
            "type nat hook postrouting priority srcnat; policy accept;",
        ),
    ] {
        let _ = writeln!(s, "add chain {NFT_TABLE} {chain} {{ {spec} }}");
        let _ = writeln!(s, "flush chain {NFT_TABLE} {chain}");
        let _ = writeln!(s, "delete chain {NFT_TABLE} {chain}");
    }
    s
}

/// Applies `transaction` with `nft -f -` (through `ip netns exec NETNS` when `netns` is given;
/// tests use that to stay out of the root namespace). All of it or nothing.
pub fn run_nft(transaction: &str, netns: Option<&str>) -> Result<(), NftError> {
    let (mut cmd, command) = match netns {
        None => (Command::new("nft"), "nft -f -".to_string()),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            (c, format!("ip netns exec {ns} nft -f -"))
        }
    };
    let spawn = |source| NftError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    // Write, then drop stdin so nft sees EOF; a short write shows up as a parse error.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(transaction.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(NftError::Rejected {
        command,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
