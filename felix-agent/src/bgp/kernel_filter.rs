//! Which routes the speaker learned go into the kernel, and how. Pure.
//!
//! - Prefixes inside a pool that encapsulates (`vxlanMode` or `ipipMode` other than `Never`)
//!   are left to the agent's VXLAN, IPIP and direct-route managers, which route them from the
//!   datastore (Calico's BIRD likewise refuses VXLAN pool routes). Everything else goes in:
//!   blocks of unencapsulated pools, other nodes' borrowed addresses, and whatever the fabric
//!   advertises (a default route from a top-of-rack router, say).
//! - A next hop must be on one of this node's subnets: BGP next hops are not resolved
//!   recursively, and the kernel refuses a gateway it cannot reach directly. A mesh peer in
//!   another subnet advertises its own address as next hop; such a path is skipped (the
//!   top-of-rack router's path for the same prefix is the one to use). When this node's subnet
//!   of a family is unknown, every next hop of that family is tried.
//! - A path whose next hop is one of this node's own addresses is skipped (it would loop).

use std::net::IpAddr;

use ipnet::IpNet;
use trellis_bgp_speaker::kernel::{KernelRoute, NextHop};
use trellis_bgp_speaker::rib::on_subnets;
use trellis_bgp_speaker::speaker::RouteEvent;

/// What decides which learned routes are installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFilter {
    /// CIDRs of pools that encapsulate (see the module documentation).
    pub encapsulated_pools: Vec<IpNet>,
    /// This node's underlay subnets (at most one per family matters).
    pub subnets: Vec<IpNet>,
    /// This node's own addresses.
    pub own: Vec<IpAddr>,
}

/// What happens to one learned prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Install(KernelRoute),
    /// Not in the kernel: withdrawn, or only our own route is left.
    Absent,
    /// Routed by the agent's encapsulation managers instead.
    Encapsulated,
    /// No next hop is directly reachable from this node.
    Unreachable,
}

impl KernelFilter {
    pub fn verdict(&self, ev: &RouteEvent) -> Verdict {
        if ev.next_hops.is_empty() {
            return Verdict::Absent;
        }
        if self
            .encapsulated_pools
            .iter()
            .any(|pool| pool.contains(&ev.prefix))
        {
            return Verdict::Encapsulated;
        }
        let mut hops: Vec<NextHop> = ev
            .next_hops
            .iter()
            .map(|n| n.addr)
            .filter(|a| self.reachable(*a))
            .map(NextHop::via)
            .collect();
        hops.sort();
        hops.dedup();
        if hops.is_empty() {
            return Verdict::Unreachable;
        }
        Verdict::Install(KernelRoute::new(ev.prefix, hops))
    }

    fn reachable(&self, hop: IpAddr) -> bool {
        !hop.is_unspecified() && !self.own.contains(&hop) && on_subnets(hop, &self.subnets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_bgp_speaker::speaker::LearnedNextHop;

    fn ev(prefix: &str, hops: &[&str]) -> RouteEvent {
        RouteEvent {
            prefix: prefix.parse().unwrap(),
            next_hops: hops
                .iter()
                .map(|h| LearnedNextHop {
                    addr: h.parse().unwrap(),
                    link_local: None,
                    peer: h.parse().unwrap(),
                })
                .collect(),
        }
    }

    fn filter() -> KernelFilter {
        KernelFilter {
            encapsulated_pools: vec!["10.250.0.0/16".parse().unwrap()],
            subnets: vec!["10.0.1.0/24".parse().unwrap()],
            own: vec!["10.0.1.5".parse().unwrap()],
        }
    }

    fn installed(v: Verdict) -> String {
        match v {
            Verdict::Install(r) => r.to_string(),
            other => panic!("not installed: {other:?}"),
        }
    }

    #[test]
    fn on_link_next_hops_are_installed_and_the_rest_skipped() {
        let f = filter();
        assert_eq!(
            installed(f.verdict(&ev("10.244.1.0/26", &["10.0.1.9"]))),
            installed(Verdict::Install(KernelRoute::new(
                "10.244.1.0/26".parse().unwrap(),
                [NextHop::via("10.0.1.9".parse().unwrap())]
            )))
        );
        // A mesh peer in another subnet: the kernel could not use it.
        assert_eq!(
            f.verdict(&ev("10.244.2.0/26", &["10.0.2.9"])),
            Verdict::Unreachable
        );
        // ECMP keeps the reachable half.
        match f.verdict(&ev("0.0.0.0/0", &["10.0.2.1", "10.0.1.1", "10.0.1.2"])) {
            Verdict::Install(r) => assert_eq!(r.next_hops.len(), 2, "{r}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            f.verdict(&ev("10.244.3.0/26", &["10.0.1.5"])),
            Verdict::Unreachable,
            "our own address"
        );
        // An IPv4-mapped next hop on an IPv6 route: the kernel refuses it.
        assert_eq!(
            f.verdict(&ev("fd00:10:245::/122", &["::ffff:10.0.1.9"])),
            Verdict::Unreachable
        );
        // No IPv6 subnet known: IPv6 next hops are tried.
        assert!(matches!(
            f.verdict(&ev("fd00:10:244::/122", &["fd00::9"])),
            Verdict::Install(_)
        ));
    }

    #[test]
    fn encapsulated_pools_and_withdrawals_stay_out() {
        let f = filter();
        assert_eq!(
            f.verdict(&ev("10.250.3.0/26", &["10.0.1.9"])),
            Verdict::Encapsulated
        );
        assert_eq!(f.verdict(&ev("10.244.1.0/26", &[])), Verdict::Absent);
    }
}
