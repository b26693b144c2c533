//! Pure operations on one IPAM block: address <-> ordinal arithmetic, allocation in the block's
//! free-list order, release, and invariant checks. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use trellis_datastore::resources::ipam::{
    Allocation, AllocationAttributes, IpamBlockSpec, HOST_AFFINITY_PREFIX,
};

use crate::error::{IpamError, Result};

/// Largest block Calico allows is /20 (IPv4) or /116 (IPv6): 4096 addresses.
pub const MAX_BLOCK_ADDRESSES: u64 = 4096;

/// A fresh block with every address free, in ascending order.
pub fn new_block(cidr: IpNet, node: Option<&str>) -> IpamBlockSpec {
    let size = 1u64 << (cidr.max_prefix_len() - cidr.prefix_len());
    assert!(
        size <= MAX_BLOCK_ADDRESSES,
        "block {cidr} is larger than /20 or /116"
    );
    IpamBlockSpec {
        cidr,
        affinity: node.map(|n| format!("{HOST_AFFINITY_PREFIX}{n}")),
        allocations: BTreeMap::new(),
        unallocated: (0..size as u32).collect(),
    }
}

/// Offset of `ip` from the block's first address, if inside the block.
pub fn ordinal(block: &IpamBlockSpec, ip: IpAddr) -> Option<u32> {
    if !block.cidr.contains(&ip) {
        return None;
    }
    let off = match (block.cidr.network(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n)),
        (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n),
        _ => return None,
    };
    u32::try_from(off).ok()
}

/// The address at `ordinal` in the block.
pub fn address(block: &IpamBlockSpec, ordinal: u32) -> IpAddr {
    offset_addr(block.cidr.network(), u128::from(ordinal))
}

/// `base + off` within the same family (callers keep `off` inside the network).
pub fn offset_addr(base: IpAddr, off: u128) -> IpAddr {
    match base {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_add(off as u32))),
        IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n).wrapping_add(off))),
    }
}

pub fn free_count(block: &IpamBlockSpec) -> usize {
    block.unallocated.len()
}

pub fn is_empty(block: &IpamBlockSpec) -> bool {
    block.allocations.is_empty()
}

/// Takes up to `n` free addresses, oldest-freed first, for `handle`.
pub fn allocate(
    block: &mut IpamBlockSpec,
    n: usize,
    handle: &str,
    attrs: &AllocationAttributes,
) -> Vec<IpAddr> {
    let take = n.min(block.unallocated.len());
    let ords: Vec<u32> = block.unallocated.drain(..take).collect();
    ords.into_iter()
        .map(|ord| {
            block.allocations.insert(
                ord,
                Allocation {
                    handle: handle.to_string(),
                    attributes: attrs.clone(),
                },
            );
            address(block, ord)
        })
        .collect()
}

/// Allocates exactly `ip` for `handle`.
pub fn assign(
    block: &mut IpamBlockSpec,
    ip: IpAddr,
    handle: &str,
    attrs: &AllocationAttributes,
) -> Result<()> {
    let ord = ordinal(block, ip).ok_or(IpamError::NotInPool { ip })?;
    if let Some(existing) = block.allocations.get(&ord) {
        return Err(IpamError::AlreadyAllocated {
            ip,
            handle: existing.handle.clone(),
        });
    }
    let pos = block
        .unallocated
        .iter()
        .position(|&o| o == ord)
        .ok_or_else(|| IpamError::Corrupt {
            key: block.cidr.to_string(),
            reason: format!("{ip} is neither allocated nor free"),
        })?;
    block.unallocated.remove(pos);
    block.allocations.insert(
        ord,
        Allocation {
            handle: handle.to_string(),
            attributes: attrs.clone(),
        },
    );
    Ok(())
}

/// Frees `ip`; the address goes to the back of the free list. Returns what was allocated there.
pub fn release(block: &mut IpamBlockSpec, ip: IpAddr) -> Option<Allocation> {
    let ord = ordinal(block, ip)?;
    let alloc = block.allocations.remove(&ord)?;
    block.unallocated.push(ord);
    Some(alloc)
}

/// Frees every address held by `handle`; returns them.
pub fn release_handle(block: &mut IpamBlockSpec, handle: &str) -> Vec<IpAddr> {
    let ords: Vec<u32> = block
        .allocations
        .iter()
        .filter(|(_, a)| a.handle == handle)
        .map(|(o, _)| *o)
        .collect();
    ords.into_iter()
        .map(|ord| {
            block.allocations.remove(&ord);
            block.unallocated.push(ord);
            address(block, ord)
        })
        .collect()
}

/// Addresses held by `handle` in this block.
pub fn addresses_of(block: &IpamBlockSpec, handle: &str) -> Vec<IpAddr> {
    block
        .allocations
        .iter()
        .filter(|(_, a)| a.handle == handle)
        .map(|(o, _)| address(block, *o))
        .collect()
}

/// Number of addresses each handle holds in this block.
pub fn handle_counts(block: &IpamBlockSpec) -> BTreeMap<&str, u32> {
    let mut counts = BTreeMap::new();
    for a in block.allocations.values() {
        *counts.entry(a.handle.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Checks that every ordinal of the block is either allocated or free, exactly once.
pub fn check_invariants(block: &IpamBlockSpec) -> Result<(), String> {
    let size = block.size();
    if size > MAX_BLOCK_ADDRESSES {
        return Err(format!(
            "block {} is larger than 4096 addresses",
            block.cidr
        ));
    }
    let mut seen = BTreeSet::new();
    for &o in block.unallocated.iter().chain(block.allocations.keys()) {
        if u64::from(o) >= size {
            return Err(format!(
                "ordinal {o} is outside the /{} block",
                block.cidr.prefix_len()
            ));
        }
        if !seen.insert(o) {
            return Err(format!(
                "{} is listed twice (free and allocated, or free twice)",
                address(block, o)
            ));
        }
    }
    if seen.len() as u64 != size {
        return Err(format!(
            "{} of {size} addresses are neither free nor allocated",
            size - seen.len() as u64
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> AllocationAttributes {
        AllocationAttributes {
            node: Some("n1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn allocates_in_order_and_reuses_freed_addresses_last() {
        let mut b = new_block("10.0.0.0/30".parse().unwrap(), Some("n1"));
        assert_eq!(b.affine_node(), Some("n1"));
        let got = allocate(&mut b, 2, "h1", &attrs());
        assert_eq!(
            got,
            vec![
                "10.0.0.0".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        assert_eq!(
            release(&mut b, "10.0.0.0".parse().unwrap()).unwrap().handle,
            "h1"
        );
        let got = allocate(&mut b, 3, "h2", &attrs());
        // .2 and .3 were never used; .0 was freed most recently so it comes last.
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.0"].map(|s| s.parse::<IpAddr>().unwrap())
        );
        assert_eq!(free_count(&b), 0);
        assert!(
            allocate(&mut b, 1, "h3", &attrs()).is_empty(),
            "a full block hands out nothing"
        );
        check_invariants(&b).unwrap();
        assert_eq!(handle_counts(&b).get("h2"), Some(&3));
    }

    #[test]
    fn ipv6_and_single_address_blocks() {
        let mut b = new_block("fd00::40/122".parse().unwrap(), None);
        assert_eq!(b.unallocated.len(), 64);
        let ip: IpAddr = "fd00::7f".parse().unwrap();
        assign(&mut b, ip, "h", &attrs()).unwrap();
        assert_eq!(ordinal(&b, ip), Some(63));
        assert!(matches!(
            assign(&mut b, ip, "x", &attrs()),
            Err(IpamError::AlreadyAllocated { .. })
        ));
        assert!(matches!(
            assign(&mut b, "fd00::80".parse().unwrap(), "x", &attrs()),
            Err(IpamError::NotInPool { .. })
        ));
        assert_eq!(release_handle(&mut b, "h"), vec![ip]);
        check_invariants(&b).unwrap();

        let mut one = new_block("192.0.2.9/32".parse().unwrap(), Some("n"));
        assert_eq!(
            allocate(&mut one, 5, "h", &attrs()),
            vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(free_count(&one), 0);
        let mut one6 = new_block("fd00::1/128".parse().unwrap(), None);
        assert_eq!(allocate(&mut one6, 1, "h", &attrs()).len(), 1);
    }

    #[test]
    fn release_of_unknown_addresses_is_a_no_op() {
        let mut b = new_block("10.0.0.0/29".parse().unwrap(), None);
        assert!(release(&mut b, "10.0.0.3".parse().unwrap()).is_none());
        assert!(release(&mut b, "10.0.1.3".parse().unwrap()).is_none());
        assert!(release_handle(&mut b, "nobody").is_empty());
        assert_eq!(free_count(&b), 8);
    }

    #[test]
    fn invariant_violations_are_reported() {
        let mut b = new_block("10.0.0.0/29".parse().unwrap(), None);
        b.unallocated.push(3);
        assert!(check_invariants(&b).unwrap_err().contains("listed twice"));
        let mut b = new_block("10.0.0.0/29".parse().unwrap(), None);
        b.unallocated.pop();
        assert!(check_invariants(&b)
            .unwrap_err()
            .contains("neither free nor allocated"));
        let mut b = new_block("10.0.0.0/29".parse().unwrap(), None);
        b.unallocated.push(9);
        assert!(check_invariants(&b).unwrap_err().contains("outside"));
    }
}
