//! The node's ENI addresses and who holds them: the state the pool owner keeps between EC2
//! calls. Pure (the clock is passed in), so that a pod ADD or DEL is a map lookup and a
//! checkpoint write, never an EC2 call.
//!
//! ```text
//!  EC2 (describe / assign / attach)  --add_eni, add_slots, remove_slots, remove_eni-->  AddressBook
//!  pod ADD / DEL                     --assign / release------------------------------>  AddressBook
//!  checkpoint::load                  --restore--------------------------------------->  AddressBook
//!  AddressBook --allocations--> checkpoint::store        --warm_view--> warm_pool::plan
//! ```
//!
//! An address freed by a pod cools down for [`AddressBook::cooldown`] (30 s, as the AWS VPC
//! CNI): peers may still hold conntrack and neighbour entries for the old pod, so it is given
//! to no other pod, and not released to EC2, until then.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::checkpoint::Allocation;
use crate::warm_pool;

/// AWS's cooldown for an address a pod gave back.
pub const COOLDOWN: Duration = Duration::from_secs(30);

/// An ENI attached less than this long ago is not deleted (ipamd's minimum ENI lifetime).
pub const YOUNG: Duration = Duration::from_secs(60);

/// The CNI key of an allocation: the pod sandbox's container ID and the interface name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Owner {
        Owner {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// What an address is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Use {
    Free,
    /// Freed by a pod; neither given out nor released before this instant.
    Cooling(Instant),
    /// Held by a pod since `since` (seconds since the Unix epoch, for the checkpoint).
    Pod {
        owner: Owner,
        since: u64,
    },
}

/// One attached ENI as the pool knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniInfo {
    pub id: String,
    /// The attachment's device index (0 for the primary ENI); its route table is index + 1.
    pub device_index: u32,
    pub attachment_id: Option<String>,
    pub primary: bool,
    /// Whether pods get its addresses (not the primary ENI under custom networking).
    pub for_pods: bool,
    pub subnet: Ipv4Net,
    pub mac: String,
    /// The ENI's own address, which no pod gets.
    pub primary_ip: Option<Ipv4Addr>,
    /// When this pool saw it attached (restarts count from the restart).
    pub attached_at: Instant,
}

#[derive(Debug, Clone)]
struct BookEni {
    info: EniInfo,
    /// Secondary /32s or /28 prefixes, each with its addresses.
    slots: BTreeMap<Ipv4Net, BTreeMap<Ipv4Addr, Use>>,
}

/// An address given to a pod, with what the datapath needs to route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub ip: Ipv4Addr,
    pub eni_id: String,
    pub device_index: u32,
    pub primary_eni: bool,
    pub subnet: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("no free ENI address on this node ({assigned} held by pods, {cooling} cooling down after a pod left); the pool is being refilled, try again")]
    Exhausted { assigned: usize, cooling: usize },
    #[error("ENI {eni_id} is not attached to this node")]
    UnknownEni { eni_id: String },
}

/// What restoring a checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Allocations whose pod still exists, held again.
    pub kept: Vec<Allocation>,
    /// Allocations whose pod interface is gone: their addresses cool down and return.
    pub released: Vec<Allocation>,
    /// Allocations of addresses no attached ENI has any more (EC2 took them back).
    pub lost: Vec<Allocation>,
}

#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    enis: BTreeMap<String, BookEni>,
    owners: BTreeMap<Owner, Ipv4Addr>,
    cooldown: Duration,
    min_eni_lifetime: Duration,
    /// Attached ENIs whose interface the node does not have yet: their addresses count for
    /// the warm pool but go to no pod, whose traffic would have no way out.
    waiting: BTreeSet<String>,
}

/// Every address of `slot` (one for a /32, sixteen for a /28).
fn addresses_of(slot: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let first = u32::from(slot.network());
    let n = 1u64 << (32 - u32::from(slot.prefix_len()));
    (0..n).map(move |i| Ipv4Addr::from(first + i as u32))
}

impl AddressBook {
    /// A book whose freed addresses cool down for `cooldown`; ENIs count as young for
    /// [`YOUNG`].
    pub fn new(cooldown: Duration) -> AddressBook {
        AddressBook {
            cooldown,
            min_eni_lifetime: YOUNG,
            ..AddressBook::default()
        }
    }

    /// How long after its attachment an ENI counts as young (not deleted).
    pub fn with_min_eni_lifetime(mut self, lifetime: Duration) -> AddressBook {
        self.min_eni_lifetime = lifetime;
        self
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// Adds an attached ENI (no addresses yet) or refreshes what is known of it.
    pub fn add_eni(&mut self, info: EniInfo) {
        match self.enis.get_mut(&info.id) {
            Some(e) => e.info = info,
            None => {
                let slots = BTreeMap::new();
                self.enis.insert(info.id.clone(), BookEni { info, slots });
            }
        }
    }

    /// Holds `eni_id`'s addresses back from pods until [`Self::interface_ready`].
    pub fn wait_for_interface(&mut self, eni_id: &str) {
        self.waiting.insert(eni_id.to_string());
    }

    /// The node has `eni_id`'s interface, routed: its addresses may go to pods. Returns
    /// whether it was waiting.
    pub fn interface_ready(&mut self, eni_id: &str) -> bool {
        self.waiting.remove(eni_id)
    }

    /// ENIs still waiting for their interface.
    pub fn waiting(&self) -> Vec<String> {
        self.waiting.iter().cloned().collect()
    }

    /// Forgets a detached ENI. Its addresses must be free: refuses (returns the holders)
    /// otherwise.
    pub fn remove_eni(&mut self, eni_id: &str) -> Result<(), Vec<Owner>> {
        let Some(e) = self.enis.get(eni_id) else {
            return Ok(());
        };
        let holders: Vec<Owner> = e
            .slots
            .values()
            .flat_map(|s| s.values())
            .filter_map(|u| match u {
                Use::Pod { owner, .. } => Some(owner.clone()),
                _ => None,
            })
            .collect();
        if !holders.is_empty() {
            return Err(holders);
        }
        self.enis.remove(eni_id);
        self.waiting.remove(eni_id);
        Ok(())
    }

    pub fn eni(&self, eni_id: &str) -> Option<&EniInfo> {
        self.enis.get(eni_id).map(|e| &e.info)
    }

    /// The attached ENIs, by device index.
    pub fn enis(&self) -> Vec<&EniInfo> {
        let mut out: Vec<&EniInfo> = self.enis.values().map(|e| &e.info).collect();
        out.sort_by_key(|e| e.device_index);
        out
    }

    /// The secondary addresses or prefixes EC2 assigned to `eni_id`, all free. Ones already
    /// known are left as they are. A slot with an address the book already has elsewhere (on
    /// another ENI, or an ENI's own address) is not added and is returned: EC2 never does
    /// that, but moto does (it draws addresses at random per ENI), and one address must never
    /// go to two pods.
    pub fn add_slots(
        &mut self,
        eni_id: &str,
        slots: &[Ipv4Net],
    ) -> Result<Vec<Ipv4Net>, BookError> {
        if !self.enis.contains_key(eni_id) {
            return Err(BookError::UnknownEni {
                eni_id: eni_id.to_string(),
            });
        }
        let mut clashes = Vec::new();
        for slot in slots {
            let known_here = self.enis[eni_id].slots.contains_key(slot);
            if known_here {
                continue;
            }
            if addresses_of(*slot).any(|a| self.knows(a)) {
                clashes.push(*slot);
                continue;
            }
            let addresses = addresses_of(*slot).map(|a| (a, Use::Free)).collect();
            self.enis
                .get_mut(eni_id)
                .expect("checked above")
                .slots
                .insert(*slot, addresses);
        }
        Ok(clashes)
    }

    /// Whether `ip` is an ENI's own address or in any slot.
    fn knows(&self, ip: Ipv4Addr) -> bool {
        self.enis
            .values()
            .any(|e| e.info.primary_ip == Some(ip) || e.slots.values().any(|s| s.contains_key(&ip)))
    }

    /// Forgets slots given back to EC2. A slot with an address held by a pod is kept and
    /// returned (the caller released something it should not have).
    pub fn remove_slots(&mut self, eni_id: &str, slots: &[Ipv4Net]) -> Vec<Ipv4Net> {
        let Some(e) = self.enis.get_mut(eni_id) else {
            return Vec::new();
        };
        let mut kept = Vec::new();
        for slot in slots {
            let held = e
                .slots
                .get(slot)
                .is_some_and(|s| s.values().any(|u| matches!(u, Use::Pod { .. })));
            if held {
                kept.push(*slot);
            } else {
                e.slots.remove(slot);
            }
        }
        kept
    }

    /// The slots of `eni_id` as EC2 should see them.
    pub fn slots(&self, eni_id: &str) -> Vec<Ipv4Net> {
        self.enis
            .get(eni_id)
            .map(|e| e.slots.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Gives `owner` an address: the one it already holds (a repeated ADD), else the lowest
    /// free address of the pod ENI with the lowest device index. Never an address cooling
    /// down. `unix_now` is recorded for the checkpoint.
    pub fn assign(
        &mut self,
        owner: &Owner,
        now: Instant,
        unix_now: u64,
    ) -> Result<Assigned, BookError> {
        if let Some(ip) = self.owners.get(owner) {
            return Ok(self
                .assigned(*ip)
                .expect("an owner's address is in the book"));
        }
        let waiting = &self.waiting;
        let mut order: Vec<&mut BookEni> = self
            .enis
            .values_mut()
            .filter(|e| e.info.for_pods && !waiting.contains(&e.info.id))
            .collect();
        order.sort_by_key(|e| e.info.device_index);
        for e in order {
            for addresses in e.slots.values_mut() {
                for (ip, u) in addresses.iter_mut() {
                    let free = match u {
                        Use::Free => true,
                        Use::Cooling(until) => *until <= now,
                        Use::Pod { .. } => false,
                    };
                    if free {
                        *u = Use::Pod {
                            owner: owner.clone(),
                            since: unix_now,
                        };
                        let ip = *ip;
                        self.owners.insert(owner.clone(), ip);
                        return Ok(self.assigned(ip).expect("just assigned"));
                    }
                }
            }
        }
        let (assigned, cooling) = self.counts(now);
        Err(BookError::Exhausted { assigned, cooling })
    }

    /// Takes `owner`'s address back; it cools down from `now`. `None` if it held none (a
    /// repeated DEL).
    pub fn release(&mut self, owner: &Owner, now: Instant) -> Option<Assigned> {
        let ip = self.owners.remove(owner)?;
        let out = self.assigned(ip);
        let until = now + self.cooldown;
        if let Some(u) = self.use_of_mut(ip) {
            *u = Use::Cooling(until);
        }
        out
    }

    /// Undoes an [`Self::assign`] that was never answered (its checkpoint write failed): the
    /// address is free at once, no pod having used it.
    pub fn release_unused(&mut self, owner: &Owner) {
        if let Some(ip) = self.owners.remove(owner) {
            if let Some(u) = self.use_of_mut(ip) {
                *u = Use::Free;
            }
        }
    }

    /// The address `owner` holds.
    pub fn held_by(&self, owner: &Owner) -> Option<Assigned> {
        self.owners.get(owner).and_then(|ip| self.assigned(*ip))
    }

    /// Pod-held and cooling addresses at `now`.
    pub fn counts(&self, now: Instant) -> (usize, usize) {
        let mut cooling = 0;
        for u in self.uses() {
            if matches!(u, Use::Cooling(until) if *until > now) {
                cooling += 1;
            }
        }
        (self.owners.len(), cooling)
    }

    /// Every pod allocation, for the checkpoint (by owner).
    pub fn allocations(&self) -> Vec<Allocation> {
        let mut out = Vec::new();
        for e in self.enis.values() {
            for (ip, u) in e.slots.values().flat_map(|s| s.iter()) {
                if let Use::Pod { owner, since } = u {
                    out.push(Allocation {
                        container_id: owner.container_id.clone(),
                        ifname: owner.ifname.clone(),
                        ip: *ip,
                        eni_id: e.info.id.clone(),
                        allocated_at: *since,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        out
    }

    /// Holds again the checkpoint's allocations whose pod interface still exists (`exists`),
    /// on whichever attached ENI has the address now; the others cool down from `now`.
    pub fn restore(
        &mut self,
        allocations: &[Allocation],
        exists: impl Fn(&Allocation) -> bool,
        now: Instant,
    ) -> Restored {
        let mut out = Restored::default();
        for a in allocations {
            let until = now + self.cooldown;
            let keep = exists(a);
            let owner = Owner::new(a.container_id.clone(), a.ifname.clone());
            let Some(u) = self.use_of_mut(a.ip) else {
                out.lost.push(a.clone());
                continue;
            };
            if keep {
                *u = Use::Pod {
                    owner: owner.clone(),
                    since: a.allocated_at,
                };
                self.owners.insert(owner, a.ip);
                out.kept.push(a.clone());
            } else {
                *u = Use::Cooling(until);
                out.released.push(a.clone());
            }
        }
        out
    }

    /// The pool as [`warm_pool::plan`] sees it at `now`.
    pub fn warm_view(&self, now: Instant) -> Vec<warm_pool::Eni> {
        let mut enis: Vec<&BookEni> = self.enis.values().collect();
        enis.sort_by_key(|e| e.info.device_index);
        enis.into_iter()
            .map(|e| warm_pool::Eni {
                id: e.info.id.clone(),
                primary: e.info.primary,
                for_pods: e.info.for_pods,
                young: now.saturating_duration_since(e.info.attached_at) < self.min_eni_lifetime,
                slots: e
                    .slots
                    .iter()
                    .map(|(cidr, addresses)| warm_pool::Slot {
                        cidr: *cidr,
                        assigned: addresses
                            .values()
                            .filter(|u| matches!(u, Use::Pod { .. }))
                            .count() as u32,
                        cooling: addresses
                            .values()
                            .filter(|u| matches!(u, Use::Cooling(t) if *t > now))
                            .count() as u32,
                    })
                    .collect(),
            })
            .collect()
    }

    fn uses(&self) -> impl Iterator<Item = &Use> {
        self.enis
            .values()
            .flat_map(|e| e.slots.values().flat_map(|s| s.values()))
    }

    fn use_of_mut(&mut self, ip: Ipv4Addr) -> Option<&mut Use> {
        self.enis
            .values_mut()
            .flat_map(|e| e.slots.values_mut())
            .find_map(|s| s.get_mut(&ip))
    }

    fn assigned(&self, ip: Ipv4Addr) -> Option<Assigned> {
        self.enis.values().find_map(|e| {
            e.slots
                .values()
                .any(|s| s.contains_key(&ip))
                .then(|| Assigned {
                    ip,
                    eni_id: e.info.id.clone(),
                    device_index: e.info.device_index,
                    primary_eni: e.info.primary,
                    subnet: e.info.subnet,
                })
        })
    }
}

#[cfg(test)]
mod tests;
