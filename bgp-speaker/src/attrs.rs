//! Path attributes as the RIB keeps them: one owned, comparable struct per path, shared by
//! every prefix an UPDATE carried (`Arc<Attrs>`). Conversion from and to netgauze's wire
//! representation lives in `update.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 4271 5.1.1; the order is the decision process's (IGP < EGP < INCOMPLETE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Segment {
    Sequence(Vec<u32>),
    Set(Vec<u32>),
}

/// AS_PATH with 4-octet AS numbers (RFC 6793: reconstructed from AS4_PATH when needed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct AsPath(pub Vec<Segment>);

impl AsPath {
    /// Path length for the decision process: a SET counts as one (RFC 4271 9.1.2.2 a).
    pub fn len(&self) -> usize {
        self.0
            .iter()
            .map(|s| match s {
                Segment::Sequence(v) => v.len(),
                Segment::Set(v) => usize::from(!v.is_empty()),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.count(asn) > 0
    }

    /// How many times `asn` appears, in sequences and sets alike.
    pub fn count(&self, asn: u32) -> usize {
        self.0
            .iter()
            .map(|s| match s {
                Segment::Sequence(v) | Segment::Set(v) => v.iter().filter(|a| **a == asn).count(),
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of a leading SEQUENCE (RFC 4271 9.1.2.2 c).
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.0.first() {
            Some(Segment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// The path with `asn` prepended, as an eBGP speaker sends it (RFC 4271 5.1.2).
    pub fn prepended(&self, asn: u32) -> AsPath {
        let mut segs = self.0.clone();
        match segs.first_mut() {
            Some(Segment::Sequence(v)) if v.len() < 255 => v.insert(0, asn),
            _ => segs.insert(0, Segment::Sequence(vec![asn])),
        }
        AsPath(segs)
    }

    /// Flat list of AS numbers, SETs inlined (for display and tests).
    pub fn asns(&self) -> Vec<u32> {
        self.0
            .iter()
            .flat_map(|s| match s {
                Segment::Sequence(v) | Segment::Set(v) => v.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Attrs {
    pub origin: Origin,
    pub as_path: AsPath,
    /// NEXT_HOP for IPv4 NLRI, the MP_REACH next hop (global) otherwise.
    pub next_hop: IpAddr,
    /// The link-local half of a 32-byte IPv6 next hop (RFC 2545 3).
    pub link_local_next_hop: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// RFC 4456 8.
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
}

/// LOCAL_PREF assumed when a path carries none (RFC 4271 leaves it to the implementation;
/// every common speaker uses 100).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

impl Attrs {
    /// Attributes of a route this speaker originates.
    pub fn local(next_hop: IpAddr) -> Attrs {
        Attrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop,
            link_local_next_hop: None,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            aggregator: None,
            communities: vec![],
            large_communities: vec![],
            originator_id: None,
            cluster_list: vec![],
        }
    }

    pub fn local_pref_or_default(&self) -> u32 {
        self.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_counts_as_one_and_prepend_extends_the_leading_sequence() {
        let p = AsPath(vec![
            Segment::Sequence(vec![1, 2]),
            Segment::Set(vec![3, 4, 5]),
        ]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.neighbor_as(), Some(1));
        assert_eq!(p.prepended(9).0[0], Segment::Sequence(vec![9, 1, 2]));
        let s = AsPath(vec![Segment::Set(vec![3])]);
        assert_eq!(s.neighbor_as(), None);
        assert_eq!(s.prepended(9).0[0], Segment::Sequence(vec![9]));
        assert!(AsPath::default().is_empty());
        assert!(p.contains(4) && !p.contains(9));
    }
}
