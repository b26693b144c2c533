//! UPDATE messages to and from route changes: NLRI of IPv4 in the classic fields and of IPv6
//! in MP_REACH/MP_UNREACH (RFC 4760), and chunking to the 4096-byte message limit. AS numbers
//! are 4-octet here; the RFC 6793 translation both ways (AS_TRANS, AS4_PATH, AS4_AGGREGATOR)
//! is the wire layer's: [`effective_as_path`], [`effective_aggregator`], [`as_path_for_peer`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{Aggregator, AsPath as WireAsPath, Origin as WireOrigin};
use netgauze_bgp_pkt::path_attribute::{
    As4Aggregator, As4PathSegment, AsPathSegmentType, AtomicAggregate, ClusterId, ClusterList,
    Communities, LargeCommunities, LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator,
    NextHop, Originator, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;

use crate::attrs::{AsPath, Attrs, Origin, Segment};
use crate::family::Family;
use crate::wire::{as_path_for_peer, effective_aggregator, effective_as_path};

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
/// Whether the peer speaks 4-octet ASNs shows in how its AS_PATH was decoded (2-octet
/// segments: AS4_PATH and AS4_AGGREGATOR apply, RFC 6793 4.2.3).
pub fn from_wire(
    u: &BgpUpdateMessage,
    families: &BTreeSet<Family>,
) -> (RouteUpdate, Option<UpdateError>) {
    match read(u, families) {
        Ok(r) => (r, None),
        Err((e, r)) => (*r, Some(e)),
    }
}

fn read(
    u: &BgpUpdateMessage,
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
            PathAttributeValue::NextHop(n) => v4_next_hop = Some(n.next_hop()),
            PathAttributeValue::MultiExitDiscriminator(m) => attrs_partial.med = Some(m.metric()),
            PathAttributeValue::LocalPreference(l) => attrs_partial.local_pref = Some(l.metric()),
            PathAttributeValue::AtomicAggregate(_) => attrs_partial.atomic_aggregate = true,
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
    let Some(as_path) = effective_as_path(u) else {
        return Err(missing("AS_PATH", out));
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
        as_path: AsPath(as_path.iter().map(segment).collect()),
        next_hop,
        link_local_next_hop: link_local,
        med: attrs_partial.med,
        local_pref: attrs_partial.local_pref,
        atomic_aggregate: attrs_partial.atomic_aggregate,
        aggregator: effective_aggregator(u),
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

fn segment(s: &As4PathSegment) -> Segment {
    let asns = s.as_numbers().to_vec();
    match s.segment_type() {
        AsPathSegmentType::AsSet => Segment::Set(asns),
        AsPathSegmentType::AsSequence => Segment::Sequence(asns),
    }
}

/// UPDATEs announcing `prefixes` (all of `family`) with `attrs`, each within 4096 bytes,
/// for a peer with (`asn4`) or without 4-octet AS numbers.
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
            let mut pa = common_attributes(attrs);
            let u = match family {
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
            };
            as_path_for_peer(&u, asn4)
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

/// ORIGIN, AS_PATH, MED, LOCAL_PREF, ... in type-code order, with 4-octet AS numbers.
fn common_attributes(a: &Attrs) -> Vec<PathAttribute> {
    let mut pa = vec![wk(PathAttributeValue::Origin(match a.origin {
        Origin::Igp => WireOrigin::IGP,
        Origin::Egp => WireOrigin::EGP,
        Origin::Incomplete => WireOrigin::Incomplete,
    }))];
    pa.push(wk(PathAttributeValue::AsPath(WireAsPath::As4PathSegments(
        to_as4(&a.as_path).into(),
    ))));
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
        let agg = Aggregator::As4Aggregator(As4Aggregator::new(asn, id));
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
