//! Where an endpoint appears in a compiled policy: the selected sets, rule peers, selector
//! entities and named-port resolutions ("slots"). A policy compiled against a model holding
//! one endpoint has the same slots in the same order as one compiled against the whole
//! cluster (the structure comes from the policy alone), so that endpoint's memberships can be
//! moved from the first into the second without looking at any other endpoint.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{CompiledPolicy, EntityMatch, PortMatch};
use crate::model::EndpointKey;

/// One place an endpoint can be in.
pub(super) enum Slot<'a> {
    Keys(&'a mut BTreeSet<EndpointKey>),
    /// A named port: the endpoint's number for it.
    Ports(&'a mut BTreeMap<EndpointKey, u16>),
}

/// An endpoint in a slot: present, with the port number for a named-port slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Member {
    Key,
    Port(u16),
}

impl Slot<'_> {
    fn take(&mut self, k: &EndpointKey) -> Option<Member> {
        match self {
            Slot::Keys(s) => s.remove(k).then_some(Member::Key),
            Slot::Ports(m) => m.remove(k).map(Member::Port),
        }
    }

    fn get(&self, k: &EndpointKey) -> Option<Member> {
        match self {
            Slot::Keys(s) => s.contains(k).then_some(Member::Key),
            Slot::Ports(m) => m.get(k).copied().map(Member::Port),
        }
    }

    fn put(&mut self, k: &EndpointKey, m: Member) {
        match (self, m) {
            (Slot::Keys(s), _) => {
                s.insert(k.clone());
            }
            (Slot::Ports(map), Member::Port(n)) => {
                map.insert(k.clone(), n);
            }
            (Slot::Ports(_), Member::Key) => {}
        }
    }
}

/// Every slot of `p`, in a fixed order.
pub(super) fn slots(p: &mut CompiledPolicy) -> Vec<Slot<'_>> {
    let mut out = Vec::new();
    for pd in [p.ingress.as_mut(), p.egress.as_mut()]
        .into_iter()
        .flatten()
    {
        out.push(Slot::Keys(&mut pd.selected));
        for r in &mut pd.rules {
            if let Some(peers) = &mut r.peers {
                out.push(Slot::Keys(&mut peers.endpoints));
            }
            if let Some(ports) = &mut r.ports {
                named(ports, &mut out);
            }
            entity(&mut r.source, &mut out);
            entity(&mut r.destination, &mut out);
        }
    }
    out
}

fn entity<'a>(e: &'a mut EntityMatch, out: &mut Vec<Slot<'a>>) {
    if let Some(k) = &mut e.endpoints {
        out.push(Slot::Keys(k));
    }
    if let Some(k) = &mut e.not_endpoints {
        out.push(Slot::Keys(k));
    }
    if let Some(ports) = &mut e.ports {
        named(ports, out);
    }
    named(&mut e.not_ports, out);
}

fn named<'a>(ports: &'a mut [PortMatch], out: &mut Vec<Slot<'a>>) {
    for p in ports {
        if let PortMatch::Named { resolved, .. } = p {
            out.push(Slot::Ports(resolved));
        }
    }
}

/// What moving one endpoint's memberships did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    /// The endpoint was somewhere in the policy before.
    pub was_member: bool,
    /// It is somewhere now.
    pub is_member: bool,
    /// Some slot gained it, lost it or changed its port.
    pub changed: bool,
}

/// Replaces `k`'s memberships in `full` by those in `fresh` (the same policy compiled against
/// a model holding only `k`; `None`: `k` is gone). `None` if the two do not have the same
/// slots, which the caller answers by compiling the policy whole.
pub(super) fn move_endpoint(
    full: &mut CompiledPolicy,
    fresh: Option<&mut CompiledPolicy>,
    k: &EndpointKey,
) -> Option<Moved> {
    let mut targets = slots(full);
    let sources = fresh.map(slots);
    if sources.as_ref().is_some_and(|s| s.len() != targets.len()) {
        return None;
    }
    let mut moved = Moved {
        was_member: false,
        is_member: false,
        changed: false,
    };
    for (i, slot) in targets.iter_mut().enumerate() {
        let now = sources.as_ref().and_then(|s| s[i].get(k));
        let before = slot.take(k);
        if let Some(m) = now {
            slot.put(k, m);
        }
        moved.was_member |= before.is_some();
        moved.is_member |= now.is_some();
        moved.changed |= before != now;
    }
    Some(moved)
}
