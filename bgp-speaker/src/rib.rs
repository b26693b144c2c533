//! The Loc-RIB: every candidate path per prefix (the union of the Adj-RIBs-In after import
//! checks, plus our own routes) and the result of the decision process (RFC 4271 9.1) with
//! its equal-cost siblings.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::attrs::Attrs;

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Source {
    /// Originated by this speaker.
    Local,
    /// Learned from the peer at this address.
    Peer(IpAddr),
}

/// What the decision and export rules need to know about the peer a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: IpAddr,
    pub router_id: Ipv4Addr,
    pub ibgp: bool,
    /// The peer is our route-reflector client (RFC 4456).
    pub rr_client: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub source: Source,
    /// `None` for local paths.
    pub peer: Option<PeerInfo>,
    pub attrs: Arc<Attrs>,
    /// Kept for a restarting peer (RFC 4724 4.2) until it refreshes or its timer runs out.
    pub stale: bool,
}

impl Path {
    pub fn local(attrs: Arc<Attrs>) -> Path {
        Path {
            source: Source::Local,
            peer: None,
            attrs,
            stale: false,
        }
    }

    fn is_ebgp(&self) -> bool {
        self.peer.is_some_and(|p| !p.ibgp)
    }

    /// RFC 4456 9: the ORIGINATOR_ID stands in for the peer's identifier.
    fn router_id(&self) -> u32 {
        let id = self
            .attrs
            .originator_id
            .or(self.peer.map(|p| p.router_id))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        u32::from(id)
    }
}

/// The outcome of the decision process for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    pub best: Path,
    /// Paths as good as `best` up to the tie-breakers (RFC 4271 9.1.2.2 d onwards), `best`
    /// included: the ECMP set when multipath is on.
    pub multipath: Vec<Path>,
}

/// A change of the selected route of a prefix; `None` when no path is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub prefix: IpNet,
    pub best: Option<Best>,
}

#[derive(Debug, Default)]
pub struct LocRib {
    candidates: HashMap<IpNet, Vec<Path>>,
    selected: HashMap<IpNet, Best>,
    /// Subnets a next hop must be in to be resolvable (RFC 4271 9.1.2.1); empty = every next
    /// hop is.
    next_hop_subnets: Vec<IpNet>,
}

impl LocRib {
    pub fn new() -> LocRib {
        LocRib::default()
    }

    /// A Loc-RIB that selects only paths whose next hop is in one of `subnets` (or is ours),
    /// for a speaker that installs routes without recursive next-hop resolution: a path
    /// through a peer in another subnet then never hides a usable one through a router.
    pub fn with_next_hop_subnets(subnets: Vec<IpNet>) -> LocRib {
        LocRib {
            next_hop_subnets: subnets,
            ..LocRib::default()
        }
    }

    /// RFC 4271 9.1.2.1: whether `path` may take part in the decision process. A family with
    /// no subnet given is not restricted.
    fn resolvable(&self, path: &Path) -> bool {
        let hop = path.attrs.next_hop;
        path.source == Source::Local
            || hop.is_unspecified()
            || on_subnets(hop, &self.next_hop_subnets)
    }

    pub fn len(&self) -> usize {
        self.selected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.selected.is_empty()
    }

    pub fn best(&self, prefix: &IpNet) -> Option<&Best> {
        self.selected.get(prefix)
    }

    pub fn iter_best(&self) -> impl Iterator<Item = (&IpNet, &Best)> {
        self.selected.iter()
    }

    /// Paths of `source` (its Adj-RIB-In, after import checks).
    pub fn paths_from(&self, source: Source) -> impl Iterator<Item = (&IpNet, &Path)> {
        self.candidates
            .iter()
            .filter_map(move |(p, paths)| paths.iter().find(|x| x.source == source).map(|x| (p, x)))
    }

    /// Adds or replaces `source`'s path for `prefix`.
    pub fn upsert(&mut self, prefix: IpNet, path: Path) -> Option<Change> {
        // Most prefixes have one path: no room reserved for four.
        let paths = self
            .candidates
            .entry(prefix)
            .or_insert_with(|| Vec::with_capacity(1));
        match paths.iter_mut().find(|p| p.source == path.source) {
            Some(p) if *p == path => return None,
            Some(p) => *p = path,
            None => paths.push(path),
        }
        self.reselect(prefix)
    }

    pub fn withdraw(&mut self, prefix: IpNet, source: Source) -> Option<Change> {
        let paths = self.candidates.get_mut(&prefix)?;
        let before = paths.len();
        paths.retain(|p| p.source != source);
        if paths.len() == before {
            return None;
        }
        self.reselect(prefix)
    }

    /// Removes every path of `source` (its session went down without graceful restart).
    pub fn remove_source(&mut self, source: Source) -> Vec<Change> {
        let prefixes: Vec<IpNet> = self.paths_from(source).map(|(p, _)| *p).collect();
        prefixes
            .into_iter()
            .filter_map(|p| self.withdraw(p, source))
            .collect()
    }

    /// RFC 4724 4.2: keep `source`'s paths but mark them stale.
    pub fn mark_stale(&mut self, source: Source) -> usize {
        let mut n = 0;
        for paths in self.candidates.values_mut() {
            for p in paths.iter_mut().filter(|p| p.source == source) {
                p.stale = true;
                n += 1;
            }
        }
        // Staleness does not change the selection; keep the selected copies in step.
        for best in self.selected.values_mut() {
            for p in std::iter::once(&mut best.best).chain(best.multipath.iter_mut()) {
                if p.source == source {
                    p.stale = true;
                }
            }
        }
        n
    }

    /// Drops `source`'s paths still stale (End-of-RIB received, or the restart timer ran out).
    pub fn sweep_stale(&mut self, source: Source) -> Vec<Change> {
        let prefixes: Vec<IpNet> = self
            .paths_from(source)
            .filter(|(_, p)| p.stale)
            .map(|(p, _)| *p)
            .collect();
        prefixes
            .into_iter()
            .filter_map(|p| self.withdraw(p, source))
            .collect()
    }

    fn reselect(&mut self, prefix: IpNet) -> Option<Change> {
        let paths = self.candidates.get(&prefix)?;
        let new = if self.next_hop_subnets.is_empty() {
            select(paths)
        } else {
            let usable: Vec<Path> = paths
                .iter()
                .filter(|p| self.resolvable(p))
                .cloned()
                .collect();
            select(&usable)
        };
        if paths.is_empty() {
            self.candidates.remove(&prefix);
        }
        let old = self.selected.get(&prefix);
        if old == new.as_ref() {
            return None;
        }
        match &new {
            Some(b) => self.selected.insert(prefix, b.clone()),
            None => self.selected.remove(&prefix),
        };
        Some(Change { prefix, best: new })
    }
}

/// Whether `hop` is in one of `subnets` of its family; true when none of its family is given.
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a peer without an IPv6 next hop of its
/// own) never is: the kernel cannot route IPv6 through it.
pub fn on_subnets(hop: IpAddr, subnets: &[IpNet]) -> bool {
    if let IpAddr::V6(v6) = hop {
        if v6.to_ipv4_mapped().is_some() {
            return false;
        }
    }
    let mut same_family = subnets
        .iter()
        .filter(|s| {
            matches!(
                (s, hop),
                (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))
            )
        })
        .peekable();
    same_family.peek().is_none() || same_family.any(|s| s.contains(&hop))
}

/// RFC 4271 9.1.2.2, as an elimination over the candidates (MED comparison is not transitive,
/// so this is not a sort). The caller has left out paths with unresolvable next hops
/// ([`LocRib::with_next_hop_subnets`]).
pub fn select(paths: &[Path]) -> Option<Best> {
    if paths.is_empty() {
        return None;
    }
    let mut c: Vec<&Path> = paths.iter().collect();
    // Our own routes first (the "weight"/locally-originated preference every speaker has).
    if c.iter().any(|p| p.source == Source::Local) {
        c.retain(|p| p.source == Source::Local);
    }
    // a) highest LOCAL_PREF.
    keep_min_by_key(&mut c, |p| {
        std::cmp::Reverse(p.attrs.local_pref_or_default())
    });
    // b) shortest AS_PATH.
    keep_min_by_key(&mut c, |p| p.attrs.as_path.len());
    // c) lowest ORIGIN.
    keep_min_by_key(&mut c, |p| p.attrs.origin);
    // d) lowest MED among paths from the same neighbouring AS; a missing MED is 0.
    let med = |p: &Path| p.attrs.med.unwrap_or(0);
    let snapshot = c.clone();
    c.retain(|p| {
        let nas = p.attrs.as_path.neighbor_as();
        !snapshot
            .iter()
            .any(|q| q.attrs.as_path.neighbor_as() == nas && med(q) < med(p))
    });
    // e) eBGP over iBGP.
    if c.iter().any(|p| p.is_ebgp()) {
        c.retain(|p| p.is_ebgp());
    }
    // f) IGP cost to the next hop: equal for all (see above). What is left is the ECMP set.
    let multipath: Vec<Path> = c.iter().map(|p| (*p).clone()).collect();
    // Tie-breakers: lowest router id / ORIGINATOR_ID, shortest CLUSTER_LIST (RFC 4456 9),
    // lowest peer address.
    let best = c
        .iter()
        .min_by_key(|p| {
            (
                p.router_id(),
                p.attrs.cluster_list.len(),
                p.peer.map(|i| i.addr),
            )
        })
        .map(|p| (*p).clone())?;
    Some(Best { best, multipath })
}

fn keep_min_by_key<K: Ord>(c: &mut Vec<&Path>, key: impl Fn(&Path) -> K) {
    if let Some(min) = c.iter().map(|p| key(p)).min() {
        c.retain(|p| key(p) == min);
    }
}

#[cfg(test)]
#[path = "rib_tests.rs"]
mod tests;
