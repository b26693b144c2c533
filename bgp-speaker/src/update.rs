//! UPDATE messages to and from route changes: NLRI of IPv4 in the classic fields and of IPv6
//! in MP_REACH/MP_UNREACH (RFC 4760), AS paths with 4-octet AS numbers, AS4_PATH for peers
//! without them (RFC 6793), and chunking to the 4096-byte message limit.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{Aggregator, AsPath as WireAsPath, Origin as WireOrigin};
use netgauze_bgp_pkt::path_attribute::{
    As2Aggregator, As2PathSegment, As4Aggregator, As4Path, As4PathSegment, AsPathSegmentType,
    AtomicAggregate, ClusterId, ClusterList, Communities, LargeCommunities, LocalPreference,
    MpReach, MpUnreach, MultiExitDiscriminator, NextHop, Originator, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;

use crate::attrs::{AsPath, Attrs, Origin, Segment};
use crate::family::Family;

/// What one received UPDATE means for the Adj-RIB-In.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteUpdate {
    pub withdrawn: Vec<IpNet>,
    pub announced: Vec<IpNet>,
    /// Present whenever `announced` is not empty.
    pub attrs: Option<Attrs>,
    pub end_of_rib: Option<Family>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// RFC 7606 3.d: the NLRI are treated as withdrawn.
    #[error("UPDATE announces {prefixes} prefix(es) without the mandatory {attribute} attribute")]
    MissingAttribute {
        attribute: &'static str,
        prefixes: usize,
    },
}

impl RouteUpdate {
    /// RFC 7606 2 "treat-as-withdraw": every prefix the UPDATE announced is withdrawn instead.
    pub fn treat_as_withdraw(mut self) -> RouteUpdate {
        self.withdrawn.append(&mut self.announced);
        self.attrs = None;
        self
    }
}

/// Reads a received UPDATE. NLRI of families the session did not negotiate are dropped.
/// A missing mandatory attribute comes back as the error beside the update with its
/// announcements turned into withdrawals, so the caller can log it and still apply the rest.
pub fn from_wire(
    u: &BgpUpdateMessage,
    asn4: bool,
    families: &BTreeSet<Family>,
) -> (RouteUpdate, Option<UpdateError>) {
    match read(u, asn4, families) {
        Ok(r) => (r, None),
        Err((e, r)) => (*r, Some(e)),
    }
}

fn read(
    u: &BgpUpdateMessage,
    asn4: bool,
    families: &BTreeSet<Family>,
) -> Result<RouteUpdate, (UpdateError, Box<RouteUpdate>)> {
    let mut out = RouteUpdate {
        end_of_rib: u.end_of_rib().and_then(Family::from_address_type),
        ..RouteUpdate::default()
    };
    let v4 = families.contains(&Family::Ipv4Unicast);
    let v6 = families.contains(&Family::Ipv6Unicast);
    if v4 {
        out.withdrawn.extend(
            u.withdraw_routes()
                .iter()
                .map(|a| IpNet::V4(a.network().address())),
        );
        out.announced
            .extend(u.nlri().iter().map(|a| IpNet::V4(a.network().address())));
    }
    let mut origin = None;
    let mut as2: Option<Vec<Segment>> = None;
    let mut as4_path: Option<Vec<Segment>> = None;
    let mut v4_next_hop = None;
    let mut mp_next_hop = None;
    let mut attrs_partial = PartialAttrs::default();
    for attr in u.path_attributes() {
        match attr.value() {
            PathAttributeValue::Origin(o) => {
                origin = Some(match o {
                    WireOrigin::IGP => Origin::Igp,
                    WireOrigin::EGP => Origin::Egp,
                    WireOrigin::Incomplete => Origin::Incomplete,
                })
            }
            PathAttributeValue::AsPath(p) => as2 = Some(segments_of(p)),
            PathAttributeValue::As4Path(p) => as4_path = Some(as4_segments(p.segments())),
            PathAttributeValue::NextHop(n) => v4_next_hop = Some(n.next_hop()),
            PathAttributeValue::MultiExitDiscriminator(m) => attrs_partial.med = Some(m.metric()),
            PathAttributeValue::LocalPreference(l) => attrs_partial.local_pref = Some(l.metric()),
            PathAttributeValue::AtomicAggregate(_) => attrs_partial.atomic_aggregate = true,
            PathAttributeValue::Aggregator(a) => {
                attrs_partial.aggregator = Some(match a {
                    Aggregator::As2Aggregator(a) => (u32::from(*a.asn()), a.origin()),
                    Aggregator::As4Aggregator(a) => (*a.asn(), a.origin()),
                })
            }
            PathAttributeValue::Communities(c) => {
                attrs_partial.communities = c.communities().iter().map(|c| c.value()).collect()
            }
            PathAttributeValue::LargeCommunities(c) => {
                attrs_partial.large_communities = c
                    .communities()
                    .iter()
                    .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                    .collect()
            }
            PathAttributeValue::Originator(o) => attrs_partial.originator_id = Some(o.id()),
            PathAttributeValue::ClusterList(c) => {
                attrs_partial.cluster_list = c.cluster_list().iter().map(|c| c.id()).collect()
            }
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global,
                next_hop_local,
                nlri,
            }) if v6 => {
                mp_next_hop = Some((IpAddr::V6(*next_hop_global), *next_hop_local));
                out.announced
                    .extend(nlri.iter().map(|a| IpNet::V6(a.network().address())));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) if v6 => out
                .withdrawn
                .extend(nlri.iter().map(|a| IpNet::V6(a.network().address()))),
            _ => {}
        }
    }
    if out.announced.is_empty() {
        return Ok(out);
    }
    let as_path = match (as2, as4_path) {
        (Some(p), Some(p4)) if !asn4 => merge_as4_path(p, p4),
        (Some(p), _) => p,
        (None, _) => return Err(missing("AS_PATH", out)),
    };
    let Some(origin) = origin else {
        return Err(missing("ORIGIN", out));
    };
    let has_v4_nlri = out.announced.iter().any(|p| matches!(p, IpNet::V4(_)));
    // An IPv6 next hop comes only with IPv6 NLRI (MP_REACH); IPv4 NLRI use NEXT_HOP.
    let (next_hop, link_local) = match (mp_next_hop, v4_next_hop) {
        (Some((nh, ll)), _) if !has_v4_nlri => (nh, ll),
        (_, Some(nh)) => (IpAddr::V4(nh), None),
        _ => return Err(missing("NEXT_HOP", out)),
    };
    if has_v4_nlri && out.announced.iter().any(|p| matches!(p, IpNet::V6(_))) {
        // IPv4 and IPv6 NLRI in one UPDATE share attributes but not next hops: split is the
        // sender's job; keep the IPv4 ones with NEXT_HOP and drop the others as malformed.
        out.announced.retain(|p| matches!(p, IpNet::V4(_)));
    }
    out.attrs = Some(Attrs {
        origin,
        as_path: AsPath(as_path),
        next_hop,
        link_local_next_hop: link_local,
        med: attrs_partial.med,
        local_pref: attrs_partial.local_pref,
        atomic_aggregate: attrs_partial.atomic_aggregate,
        aggregator: attrs_partial.aggregator,
        communities: attrs_partial.communities,
        large_communities: attrs_partial.large_communities,
        originator_id: attrs_partial.originator_id,
        cluster_list: attrs_partial.cluster_list,
    });
    Ok(out)
}

#[derive(Default)]
struct PartialAttrs {
    med: Option<u32>,
    local_pref: Option<u32>,
    atomic_aggregate: bool,
    aggregator: Option<(u32, Ipv4Addr)>,
    communities: Vec<u32>,
    large_communities: Vec<(u32, u32, u32)>,
    originator_id: Option<Ipv4Addr>,
    cluster_list: Vec<Ipv4Addr>,
}

fn missing(attribute: &'static str, out: RouteUpdate) -> (UpdateError, Box<RouteUpdate>) {
    let e = UpdateError::MissingAttribute {
        attribute,
        prefixes: out.announced.len(),
    };
    (e, Box::new(out.treat_as_withdraw()))
}

fn segments_of(p: &WireAsPath) -> Vec<Segment> {
    match p {
        WireAsPath::As2PathSegments(segs) => segs
            .iter()
            .map(|s| {
                segment(
                    s.segment_type(),
                    s.as_numbers().iter().map(|a| u32::from(*a)).collect(),
                )
            })
            .collect(),
        WireAsPath::As4PathSegments(segs) => as4_segments(segs),
    }
}

fn as4_segments(segs: &[As4PathSegment]) -> Vec<Segment> {
    segs.iter()
        .map(|s| segment(s.segment_type(), s.as_numbers().to_vec()))
        .collect()
}

fn segment(t: AsPathSegmentType, asns: Vec<u32>) -> Segment {
    match t {
        AsPathSegmentType::AsSet => Segment::Set(asns),
        AsPathSegmentType::AsSequence => Segment::Sequence(asns),
    }
}

/// RFC 6793 4.2.3: keep the leading ASes of AS_PATH that AS4_PATH does not cover, then AS4_PATH.
fn merge_as4_path(as_path: Vec<Segment>, as4: Vec<Segment>) -> Vec<Segment> {
    let len = |p: &[Segment]| AsPath(p.to_vec()).len();
    let (n, n4) = (len(&as_path), len(&as4));
    if n < n4 {
        return as_path;
    }
    let mut keep = n - n4;
    let mut merged = Vec::new();
    for seg in as_path {
        if keep == 0 {
            break;
        }
        match seg {
            Segment::Sequence(v) => {
                let take = keep.min(v.len());
                keep -= take;
                merged.push(Segment::Sequence(v[..take].to_vec()));
            }
            set @ Segment::Set(_) => {
                keep -= 1;
                merged.push(set);
            }
        }
    }
    merged.extend(as4);
    merged
}

/// UPDATEs announcing `prefixes` (all of `family`) with `attrs`, each within 4096 bytes.
pub fn announce(
    family: Family,
    attrs: &Attrs,
    prefixes: &[IpNet],
    asn4: bool,
) -> Vec<BgpUpdateMessage> {
    let per_message = prefixes_per_message(family, attrs);
    prefixes
        .chunks(per_message)
        .map(|chunk| {
            let mut pa = common_attributes(attrs, asn4);
            match family {
                Family::Ipv4Unicast => {
                    if let IpAddr::V4(nh) = attrs.next_hop {
                        pa.push(wk(PathAttributeValue::NextHop(NextHop::new(nh))));
                    }
                    BgpUpdateMessage::new(vec![], pa, v4_nlri(chunk))
                }
                Family::Ipv6Unicast => {
                    let global = match attrs.next_hop {
                        IpAddr::V6(g) => g,
                        // An IPv4 next hop for IPv6 NLRI: the IPv4-mapped form (RFC 4798 2).
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    };
                    pa.push(opt(
                        false,
                        PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                            next_hop_global: global,
                            next_hop_local: attrs.link_local_next_hop,
                            nlri: v6_nlri(chunk).into(),
                        }),
                    ));
                    BgpUpdateMessage::new(vec![], pa, vec![])
                }
            }
        })
        .collect()
}

/// UPDATEs withdrawing `prefixes` (all of `family`).
pub fn withdraw(family: Family, prefixes: &[IpNet]) -> Vec<BgpUpdateMessage> {
    let per_message = match family {
        Family::Ipv4Unicast => 800,
        Family::Ipv6Unicast => 220,
    };
    prefixes
        .chunks(per_message)
        .map(|chunk| match family {
            Family::Ipv4Unicast => BgpUpdateMessage::new(v4_nlri(chunk), vec![], vec![]),
            Family::Ipv6Unicast => BgpUpdateMessage::new(
                vec![],
                vec![opt(
                    false,
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                        nlri: v6_nlri(chunk).into(),
                    }),
                )],
                vec![],
            ),
        })
        .collect()
}

/// The End-of-RIB marker of `family` (RFC 4724 2).
pub fn end_of_rib(family: Family) -> BgpUpdateMessage {
    match family {
        Family::Ipv4Unicast => BgpUpdateMessage::new(vec![], vec![], vec![]),
        // MP_UNREACH_NLRI with no prefixes.
        Family::Ipv6Unicast => BgpUpdateMessage::new(
            vec![],
            vec![opt(
                false,
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: [].into() }),
            )],
            vec![],
        ),
    }
}

fn prefixes_per_message(family: Family, a: &Attrs) -> usize {
    // Fixed-size attributes and headers, MP_REACH with a 32-byte next hop included.
    let attr_bytes = 160
        + 4 * a.as_path.asns().len()
        + 4 * a.communities.len()
        + 12 * a.large_communities.len()
        + 4 * a.cluster_list.len();
    let per_prefix = match family {
        Family::Ipv4Unicast => 5,
        Family::Ipv6Unicast => 17,
    };
    (4096usize.saturating_sub(23 + attr_bytes) / per_prefix).max(1)
}

fn v4_nlri(prefixes: &[IpNet]) -> Vec<Ipv4UnicastAddress> {
    prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Ipv4Unicast::from_net(*n).ok(),
            IpNet::V6(_) => None,
        })
        .map(Ipv4UnicastAddress::new_no_path_id)
        .collect()
}

fn v6_nlri(prefixes: &[IpNet]) -> Vec<Ipv6UnicastAddress> {
    prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V6(n) => Ipv6Unicast::from_net(*n).ok(),
            IpNet::V4(_) => None,
        })
        .map(|n| Ipv6UnicastAddress::new(None, n))
        .collect()
}

/// ORIGIN, AS_PATH (+ AS4_PATH), MED, LOCAL_PREF, ... in type-code order.
fn common_attributes(a: &Attrs, asn4: bool) -> Vec<PathAttribute> {
    let mut pa = vec![wk(PathAttributeValue::Origin(match a.origin {
        Origin::Igp => WireOrigin::IGP,
        Origin::Egp => WireOrigin::EGP,
        Origin::Incomplete => WireOrigin::Incomplete,
    }))];
    let needs_as4 = !asn4 && a.as_path.asns().iter().any(|x| *x > u32::from(u16::MAX));
    pa.push(wk(PathAttributeValue::AsPath(if asn4 {
        WireAsPath::As4PathSegments(to_as4(&a.as_path).into())
    } else {
        WireAsPath::As2PathSegments(to_as2(&a.as_path).into())
    })));
    if let Some(m) = a.med {
        pa.push(opt(
            false,
            PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(m)),
        ));
    }
    if let Some(l) = a.local_pref {
        pa.push(wk(PathAttributeValue::LocalPreference(
            LocalPreference::new(l),
        )));
    }
    if a.atomic_aggregate {
        pa.push(wk(PathAttributeValue::AtomicAggregate(AtomicAggregate)));
    }
    if let Some((asn, id)) = a.aggregator {
        let agg = match (asn4, u16::try_from(asn)) {
            (false, Ok(a2)) => Aggregator::As2Aggregator(As2Aggregator::new(a2, id)),
            (false, Err(_)) => Aggregator::As2Aggregator(As2Aggregator::new(AS_TRANS, id)),
            (true, _) => Aggregator::As4Aggregator(As4Aggregator::new(asn, id)),
        };
        pa.push(opt(true, PathAttributeValue::Aggregator(agg)));
    }
    if !a.communities.is_empty() {
        let c: Vec<_> = a.communities.iter().map(|c| Community::new(*c)).collect();
        pa.push(opt(
            true,
            PathAttributeValue::Communities(Communities::new(c)),
        ));
    }
    if let Some(o) = a.originator_id {
        pa.push(opt(
            false,
            PathAttributeValue::Originator(Originator::new(o)),
        ));
    }
    if !a.cluster_list.is_empty() {
        let c: Vec<_> = a.cluster_list.iter().map(|c| ClusterId::new(*c)).collect();
        pa.push(opt(
            false,
            PathAttributeValue::ClusterList(ClusterList::new(c)),
        ));
    }
    if needs_as4 {
        pa.push(opt(
            true,
            PathAttributeValue::As4Path(As4Path::new(to_as4(&a.as_path))),
        ));
    }
    if !a.large_communities.is_empty() {
        let c: Vec<_> = a
            .large_communities
            .iter()
            .map(|(g, l1, l2)| LargeCommunity::new(*g, *l1, *l2))
            .collect();
        pa.push(opt(
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
        ));
    }
    pa
}

fn to_as4(p: &AsPath) -> Vec<As4PathSegment> {
    p.0.iter()
        .map(|s| match s {
            Segment::Sequence(v) => As4PathSegment::new(AsPathSegmentType::AsSequence, v.clone()),
            Segment::Set(v) => As4PathSegment::new(AsPathSegmentType::AsSet, v.clone()),
        })
        .collect()
}

/// 2-octet AS_PATH: ASes above 65535 become AS_TRANS (RFC 6793 4.2.2).
fn to_as2(p: &AsPath) -> Vec<As2PathSegment> {
    let two = |v: &Vec<u32>| -> Vec<u16> {
        v.iter()
            .map(|a| u16::try_from(*a).unwrap_or(AS_TRANS))
            .collect()
    };
    p.0.iter()
        .map(|s| match s {
            Segment::Sequence(v) => As2PathSegment::new(AsPathSegmentType::AsSequence, two(v)),
            Segment::Set(v) => As2PathSegment::new(AsPathSegmentType::AsSet, two(v)),
        })
        .collect()
}

/// A well-known attribute (optional = false, transitive = true).
fn wk(value: PathAttributeValue) -> PathAttribute {
    attribute(false, true, value)
}

/// An optional attribute, transitive or not.
fn opt(transitive: bool, value: PathAttributeValue) -> PathAttribute {
    attribute(true, transitive, value)
}

fn attribute(optional: bool, transitive: bool, value: PathAttributeValue) -> PathAttribute {
    // Extended length (2-octet) for the attributes that can outgrow 255 bytes.
    let extended = matches!(
        value,
        PathAttributeValue::AsPath(_)
            | PathAttributeValue::As4Path(_)
            | PathAttributeValue::MpReach(_)
            | PathAttributeValue::MpUnreach(_)
            | PathAttributeValue::Communities(_)
            | PathAttributeValue::LargeCommunities(_)
            | PathAttributeValue::ClusterList(_)
    );
    match PathAttribute::from(optional, transitive, false, extended, value) {
        Ok(a) => a,
        // The flags above are the RFC's for each type; netgauze agreeing is an invariant.
        Err((v, e)) => unreachable!("flags of {v:?} rejected: {e:?}"),
    }
}

/// Splits prefixes by family (callers hold mixed sets).
pub fn by_family(prefixes: impl IntoIterator<Item = IpNet>) -> (Vec<IpNet>, Vec<IpNet>) {
    prefixes
        .into_iter()
        .partition(|p| matches!(p, IpNet::V4(_)))
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
