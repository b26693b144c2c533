//! What we tell each peer about a selected route, and what we refuse to learn: iBGP split
//! horizon, route reflection (RFC 4456), AS path prepending and LOCAL_PREF rules (RFC 4271
//! 5.1), next-hop-self or keep, and the loop checks on import.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attrs::Attrs;
use crate::rib::{Path, Source};

/// This speaker, as the export and import rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalInfo {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Set when this speaker is a route reflector (RFC 4456 7: defaults to the router id).
    pub cluster_id: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NextHopMode {
    /// eBGP: ourselves; iBGP: keep the received next hop (ours for our own routes).
    #[default]
    Auto,
    /// Always ourselves.
    SelfAddr,
    /// Always the received next hop (ours for our own routes).
    Keep,
}

/// The receiving side of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExport {
    pub addr: IpAddr,
    pub ibgp: bool,
    pub rr_client: bool,
    pub next_hop_mode: NextHopMode,
    /// Our next hop for IPv4 routes on this session (the session's local address when IPv4).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Our next hop for IPv6 routes (the session's local address when IPv6, else configured).
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// The attributes to advertise `path` with to `to`, or `None` when it must not be advertised.
pub fn export(path: &Path, local: &LocalInfo, to: &PeerExport) -> Option<Attrs> {
    if path.source == Source::Peer(to.addr) {
        return None;
    }
    let from = path.peer;
    let mut a = (*path.attrs).clone();
    if let Some(from) = from.filter(|f| f.ibgp) {
        if to.ibgp {
            // RFC 4456 6: only a reflector passes iBGP routes on to iBGP peers, and never
            // from a non-client to a non-client.
            let cluster = local.cluster_id?;
            if !from.rr_client && !to.rr_client {
                return None;
            }
            a.originator_id = a.originator_id.or(Some(from.router_id));
            a.cluster_list.insert(0, cluster);
        }
    }
    let v6 = path.attrs.next_hop.is_ipv6();
    let ours = || -> Option<IpAddr> {
        if v6 {
            to.next_hop_v6.map(IpAddr::V6)
        } else {
            to.next_hop_v4.map(IpAddr::V4)
        }
    };
    let set_self = match (to.next_hop_mode, path.source) {
        (_, Source::Local) => true,
        (NextHopMode::SelfAddr, _) => true,
        (NextHopMode::Keep, _) => false,
        (NextHopMode::Auto, _) => !to.ibgp,
    };
    if set_self {
        a.next_hop = ours()?;
        // A link-local next hop is only meaningful on the link it was learned on.
        a.link_local_next_hop = None;
    }
    if to.ibgp {
        a.local_pref = Some(a.local_pref_or_default());
    } else {
        a.as_path = a.as_path.prepended(local.asn);
        a.local_pref = None;
        // MED is non-transitive: only our own routes carry one across AS borders.
        if path.source != Source::Local {
            a.med = None;
        }
        a.originator_id = None;
        a.cluster_list.clear();
    }
    Some(a)
}

/// Why a received path is refused, or `None` when it may enter the Loc-RIB. A path from an
/// eBGP peer may carry our AS up to `allow_local_as` times (for topologies where several sites
/// share an AS, e.g. every node in AS 64512 behind a top-of-rack router).
pub fn import_loop(
    attrs: &Attrs,
    local: &LocalInfo,
    from_ibgp: bool,
    allow_local_as: u8,
) -> Option<&'static str> {
    if !from_ibgp && attrs.as_path.count(local.asn) > usize::from(allow_local_as) {
        return Some("AS_PATH contains our AS (RFC 4271 9.1.2)");
    }
    if attrs.originator_id == Some(local.router_id) {
        return Some("ORIGINATOR_ID is our router id (RFC 4456 8)");
    }
    if local
        .cluster_id
        .is_some_and(|c| attrs.cluster_list.contains(&c))
    {
        return Some("CLUSTER_LIST contains our cluster id (RFC 4456 8)");
    }
    None
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
