//! `trellisctl ipam show|check|release|gc`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use trellis_datastore::codec;
use trellis_datastore::resources::ipam::{AllocationAttributes, AllocationKind};
use trellis_datastore::resources::{IpPoolSpec, IpamBlockSpec};
use trellis_datastore::{keys, Datastore, Object};
use trellis_ipam::{block, check, gc, AssignRequest, NodeIpam};

use crate::table::Table;

fn pool_size(cidr: &IpNet) -> u128 {
    let bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

/// Per pool: size, allocated, free; with `blocks`, every block's owner and use.
pub async fn show(ds: &dyn Datastore, show_blocks: bool) -> anyhow::Result<String> {
    let pools = codec::list_objects::<IpPoolSpec>(ds).await?;
    let (blocks, _) = codec::list::<Object<IpamBlockSpec>>(ds, keys::IPAM_BLOCKS).await?;
    let mut t = Table::default();
    t.header(["POOL", "CIDR", "SIZE", "ALLOCATED", "FREE", "BLOCKS"]);
    for p in &pools {
        let cidr = p.value.spec.cidr;
        let inside: Vec<_> = blocks
            .iter()
            .filter(|b| cidr.contains(&b.value.spec.cidr))
            .collect();
        let size = pool_size(&cidr);
        let used: u128 = inside
            .iter()
            .map(|b| b.value.spec.allocations.len() as u128)
            .sum();
        let pct = if size > 0 {
            used as f64 * 100.0 / size as f64
        } else {
            0.0
        };
        t.row([
            p.value.metadata.name.clone(),
            cidr.to_string(),
            size.to_string(),
            format!("{used} ({pct:.1}%)"),
            format!("{} ({:.1}%)", size - used, 100.0 - pct),
            inside.len().to_string(),
        ]);
    }
    let mut out = t.render();
    if show_blocks {
        let mut t = Table::default();
        t.header(["BLOCK", "NODE", "ALLOCATED", "FREE", "BORROWED", "POOL"]);
        for b in &blocks {
            let spec = &b.value.spec;
            let owner = spec.affine_node();
            // Addresses handed to other nodes than the block's owner.
            let borrowed = spec
                .allocations
                .values()
                .filter(|a| a.attributes.node.as_deref() != owner)
                .count();
            let pool = pools
                .iter()
                .find(|p| p.value.spec.cidr.contains(&spec.cidr))
                .map(|p| p.value.metadata.name.clone());
            t.row([
                spec.cidr.to_string(),
                owner.unwrap_or("(none)").to_string(),
                format!("{}/{}", spec.allocations.len(), spec.size()),
                block::free_count(spec).to_string(),
                borrowed.to_string(),
                pool.unwrap_or_else(|| "(no pool)".into()),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for b in &blocks {
            *per_node
                .entry(b.value.spec.affine_node().unwrap_or("(none)"))
                .or_default() += 1;
        }
        out.push_str(&format!(
            "\nblocks per node: {}\n",
            per_node
                .iter()
                .map(|(n, c)| format!("{n}={c}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(out)
}

/// What `ipam assign` was asked for.
#[derive(Debug)]
pub struct AssignArgs {
    pub node: String,
    pub handle: String,
    pub ipv4: usize,
    pub ipv6: usize,
    pub ips: Vec<IpAddr>,
    pub pod: Option<String>,
}

pub async fn assign(ds: Arc<dyn Datastore>, a: AssignArgs) -> anyhow::Result<String> {
    let (namespace, pod) = match a.pod.as_deref().map(|p| p.split_once('/')) {
        Some(Some((ns, name))) => (Some(ns.to_string()), Some(name.to_string())),
        Some(None) => bail!(
            "--pod must be NAMESPACE/NAME, got {:?}",
            a.pod.unwrap_or_default()
        ),
        None => (None, None),
    };
    let kind = if pod.is_some() {
        AllocationKind::Pod
    } else {
        AllocationKind::Reserved
    };
    let attrs = AllocationAttributes {
        kind,
        namespace,
        pod,
        ..Default::default()
    };
    let node = NodeIpam::new(ds, a.node);
    let mut out = String::new();
    if !a.ips.is_empty() {
        if a.ipv4 > 0 || a.ipv6 > 0 {
            bail!("give either --ip or --ipv4/--ipv6, not both");
        }
        let mut done = Vec::new();
        for ip in &a.ips {
            if let Err(e) = node.assign_ip(*ip, &a.handle, &attrs).await {
                // All or nothing: give back what this command already took.
                node.release_ips(&done).await?;
                return Err(e.into());
            }
            done.push(*ip);
        }
        for ip in done {
            out.push_str(&format!("assigned {ip} to {}\n", a.handle));
        }
        return Ok(out);
    }
    if a.ipv4 == 0 && a.ipv6 == 0 {
        bail!("nothing to assign: give --ipv4 N, --ipv6 N or --ip ADDRESS");
    }
    let req = AssignRequest {
        handle: a.handle.clone(),
        attrs,
        num_v4: a.ipv4,
        num_v6: a.ipv6,
        ..Default::default()
    };
    let got = node.auto_assign(&req).await?;
    for ip in got.all() {
        out.push_str(&format!("assigned {ip} to {}\n", a.handle));
    }
    Ok(out)
}

/// Returns the report and whether it is clean.
pub async fn run_check(ds: &dyn Datastore) -> anyhow::Result<(String, usize)> {
    let r = check(ds).await?;
    Ok((format!("{r}\n"), r.problem_count()))
}

pub async fn release(ds: &dyn Datastore, ips: &[IpAddr]) -> anyhow::Result<String> {
    let out = trellis_ipam::release::release_ips(ds, ips).await?;
    let missing: Vec<String> = ips
        .iter()
        .filter(|ip| !out.released.contains(ip))
        .map(|ip| ip.to_string())
        .collect();
    if !missing.is_empty() {
        // Whatever was allocated among them has been released; say which were not.
        bail!(
            "not allocated: {}{}",
            missing.join(", "),
            if out.released.is_empty() {
                String::new()
            } else {
                format!(" (released {} others)", out.released.len())
            }
        );
    }
    Ok(out
        .released
        .iter()
        .map(|ip| format!("released {ip}\n"))
        .collect())
}

pub async fn run_gc(ds: &dyn Datastore, grace: Duration) -> anyhow::Result<String> {
    let g = gc(ds, grace).await?;
    let mut out = format!("{g}\n");
    for ip in &g.released {
        out.push_str(&format!("released {ip}\n"));
    }
    for (n, c) in &g.affinities_released {
        out.push_str(&format!("released affinity of missing node {n} for {c}\n"));
    }
    Ok(out)
}

/// Parses `90s`, `10m`, `2h` or plain seconds.
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 90s, 10m or 2h"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods() {
        assert_eq!(parse_grace("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_grace("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_grace("0").unwrap(), Duration::ZERO);
        assert!(parse_grace("ten").is_err() && parse_grace("5d").is_err());
    }

    #[test]
    fn pool_sizes() {
        assert_eq!(pool_size(&"10.0.0.0/16".parse().unwrap()), 65536);
        assert_eq!(pool_size(&"fd00::/64".parse().unwrap()), 1u128 << 64);
        assert_eq!(pool_size(&"10.0.0.1/32".parse().unwrap()), 1);
    }
}
