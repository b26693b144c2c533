//! From the wire into the Loc-RIB, and from Loc-RIB changes out to every established peer
//! (Adj-RIB-Out diffs, packed into as few UPDATEs as the attributes allow) and to the
//! route-event subscriber.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;

use super::{LearnedNextHop, Owner, RouteEvent, Slot};
use crate::attrs::Attrs;
use crate::export::{export, import_loop};
use crate::family::Family;
use crate::fsm::Input;
use crate::revised_errors::{apply_discards, routes_to_withdraw, Handling};
use crate::rib::{Change, Path, Source};
use crate::update::{self, RouteUpdate};
use crate::wire::{encode, Inbound};

impl Owner {
    /// An UPDATE from an established peer, after RFC 7606 classification.
    pub(super) fn update_received(&mut self, peer: IpAddr, m: Inbound) {
        let Some(session) = self.peers.get(&peer).and_then(|p| p.session.clone()) else {
            return;
        };
        let BgpMessage::Update(u) = m.message else {
            return;
        };
        let n = &session.negotiated;
        let r = match &m.handling {
            Handling::TreatAsWithdraw { reason, .. } => {
                tracing::warn!(%peer, %reason, "malformed UPDATE: its routes are treated as withdrawn (RFC 7606)");
                RouteUpdate {
                    withdrawn: routes_to_withdraw(&u),
                    ..RouteUpdate::default()
                }
            }
            h => {
                let u = match h {
                    Handling::AttributeDiscard(d) => {
                        tracing::warn!(%peer, discarded = ?d, "UPDATE attributes discarded (RFC 7606)");
                        apply_discards(u, h)
                    }
                    _ => u,
                };
                let (r, error) = update::from_wire(&u, &n.families);
                if let Some(e) = error {
                    tracing::warn!(%peer, error = %e, "UPDATE routes treated as withdrawn (RFC 7606 3.d)");
                }
                r
            }
        };
        self.apply_route_update(peer, &session.info, r);
    }

    fn apply_route_update(&mut self, peer: IpAddr, info: &crate::rib::PeerInfo, r: RouteUpdate) {
        let source = Source::Peer(peer);
        for prefix in r.withdrawn {
            if let Some(c) = self.rib.withdraw(prefix, source) {
                self.pending.push(c);
            }
        }
        if let Some(attrs) = r.attrs {
            let allow_local_as = self.peers.get(&peer).map_or(0, |p| p.cfg.allow_local_as);
            if let Some(why) = import_loop(&attrs, &self.local, info.ibgp, allow_local_as) {
                tracing::debug!(%peer, why, "routes refused");
                for prefix in r.announced {
                    if let Some(c) = self.rib.withdraw(prefix, source) {
                        self.pending.push(c);
                    }
                }
            } else {
                let attrs = Arc::new(attrs);
                for prefix in r.announced {
                    let path = Path {
                        source,
                        peer: Some(*info),
                        attrs: attrs.clone(),
                        stale: false,
                    };
                    if let Some(c) = self.rib.upsert(prefix, path) {
                        self.pending.push(c);
                    }
                }
            }
        }
        if let Some(f) = r.end_of_rib {
            if let Some(s) = self.peers.get_mut(&peer).and_then(|p| p.session.as_mut()) {
                s.end_of_rib.insert(f);
            }
            self.sweep_stale(peer, Some(f));
        }
    }

    /// Drops `peer`'s stale routes (of one family, or all when the restart timer ran out).
    pub(super) fn sweep_stale(&mut self, peer: IpAddr, family: Option<Family>) {
        let source = Source::Peer(peer);
        let stale: Vec<IpNet> = self
            .rib
            .paths_from(source)
            .filter(|(p, path)| path.stale && family.is_none_or(|f| Family::of_prefix(p) == f))
            .map(|(p, _)| *p)
            .collect();
        for prefix in stale {
            if let Some(c) = self.rib.withdraw(prefix, source) {
                self.pending.push(c);
            }
        }
        let none_left = !self.rib.paths_from(source).any(|(_, p)| p.stale);
        if none_left {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stale_timer = None;
            }
        }
    }

    /// Sends `peer` everything we have for `family` (session up or ROUTE-REFRESH), then
    /// End-of-RIB.
    pub(super) fn resend_family(&mut self, peer: IpAddr, family: Family) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(session) = p.session.as_ref() else {
            return;
        };
        p.adj_out
            .retain(|prefix, _| Family::of_prefix(prefix) != family);
        let mut out: HashMap<Arc<Attrs>, Vec<IpNet>> = HashMap::new();
        for (prefix, best) in self.rib.iter_best() {
            if Family::of_prefix(prefix) != family {
                continue;
            }
            if let Some(a) = export(&best.best, &self.local, &session.export) {
                let a = Arc::new(a);
                p.adj_out.insert(*prefix, a.clone());
                out.entry(a).or_default().push(*prefix);
            }
        }
        let asn4 = session.negotiated.asn4;
        let mut msgs = Vec::new();
        for (attrs, prefixes) in out {
            msgs.extend(update::announce(family, &attrs, &prefixes, asn4));
        }
        msgs.push(update::end_of_rib(family));
        self.send_updates(peer, msgs);
    }

    /// Advertises pending Loc-RIB changes to every established peer and reports them.
    pub(super) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let changes: Vec<Change> = std::mem::take(&mut self.pending);
        // The last change of a prefix wins.
        let mut last: HashMap<IpNet, &Change> = HashMap::new();
        for c in &changes {
            last.insert(c.prefix, c);
        }
        for c in last.values() {
            let next_hops = match &c.best {
                Some(b) if b.best.source != Source::Local => {
                    let paths = if self.cfg.ecmp {
                        b.multipath.as_slice()
                    } else {
                        std::slice::from_ref(&b.best)
                    };
                    let mut v: Vec<LearnedNextHop> = paths
                        .iter()
                        .filter_map(|p| match p.source {
                            Source::Peer(peer) => Some(LearnedNextHop {
                                addr: p.attrs.next_hop,
                                link_local: p.attrs.link_local_next_hop,
                                peer,
                            }),
                            Source::Local => None,
                        })
                        .collect();
                    v.sort_by_key(|n| (n.addr, n.peer));
                    v.dedup_by_key(|n| n.addr);
                    v
                }
                _ => vec![],
            };
            let _ = self.routes_tx.send(RouteEvent {
                prefix: c.prefix,
                next_hops,
            });
        }
        let peers: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session.is_some())
            .map(|(a, _)| *a)
            .collect();
        for peer in peers {
            let msgs = self.diff_for(peer, last.values().copied());
            self.send_updates(peer, msgs);
        }
    }

    fn diff_for<'a>(
        &mut self,
        peer: IpAddr,
        changes: impl Iterator<Item = &'a Change>,
    ) -> Vec<BgpUpdateMessage> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return vec![];
        };
        let Some(session) = p.session.as_ref() else {
            return vec![];
        };
        let mut announce: HashMap<(Family, Arc<Attrs>), Vec<IpNet>> = HashMap::new();
        let mut withdraw: HashMap<Family, Vec<IpNet>> = HashMap::new();
        for c in changes {
            let family = Family::of_prefix(&c.prefix);
            if !session.negotiated.families.contains(&family) {
                continue;
            }
            let new = c
                .best
                .as_ref()
                .and_then(|b| export(&b.best, &self.local, &session.export));
            match (new, p.adj_out.get(&c.prefix)) {
                (Some(a), Some(old)) if **old == a => {}
                (Some(a), _) => {
                    let a = Arc::new(a);
                    p.adj_out.insert(c.prefix, a.clone());
                    announce.entry((family, a)).or_default().push(c.prefix);
                }
                (None, Some(_)) => {
                    p.adj_out.remove(&c.prefix);
                    withdraw.entry(family).or_default().push(c.prefix);
                }
                (None, None) => {}
            }
        }
        let asn4 = session.negotiated.asn4;
        let mut msgs = Vec::new();
        for (family, prefixes) in withdraw {
            msgs.extend(update::withdraw(family, &prefixes));
        }
        for ((family, attrs), prefixes) in announce {
            msgs.extend(update::announce(family, &attrs, &prefixes, asn4));
        }
        msgs
    }

    fn send_updates(&mut self, peer: IpAddr, msgs: Vec<BgpUpdateMessage>) {
        if msgs.is_empty() {
            return;
        }
        let Some(conn) = self.peers.get(&peer).and_then(|p| p.conn.as_ref()) else {
            return;
        };
        let mut bytes = Vec::new();
        for m in msgs {
            match encode(&BgpMessage::Update(m)) {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => tracing::error!(%peer, error = %e, "cannot encode an UPDATE"),
            }
        }
        conn.send(bytes);
        self.drive(peer, Slot::Main, Input::UpdateSent);
    }
}
