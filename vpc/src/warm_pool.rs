//! The warm pool's arithmetic: given the targets, the limits and the node's ENIs with their
//! addresses (or /28 prefixes), what to ask EC2 for next. Pure: the pool owner gathers the
//! state, calls [`plan`], and executes the [`Plan`] (AssignPrivateIpAddresses,
//! CreateNetworkInterface + AttachNetworkInterface, UnassignPrivateIpAddresses,
//! DetachNetworkInterface + DeleteNetworkInterface), then plans again on the new state.
//!
//! The semantics are those of the AWS VPC CNI's ipamd (`pkg/ipamd/ipamd.go`:
//! `isDatastorePoolTooLow`, `datastoreTargetState`, `tryAssignIPs`/`tryAssignPrefixes`,
//! `GetENIResourcesToAllocate`, `getPrefixesNeeded`, `isDatastorePoolTooHigh`,
//! `tryUnassignCidrsFromAll`, `shouldRemoveExtraENIs`; `datastore/data_store.go`:
//! `getDeletableENI`), one pass of its pool manager for one network card:
//!
//! - The pool is too low (and grows) when it holds fewer than max-pods addresses and
//!   - with WARM_IP_TARGET or MINIMUM_IP_TARGET set: fewer than WARM_IP_TARGET free addresses,
//!     or fewer than MINIMUM_IP_TARGET in all (in prefix mode rounded up to whole prefixes);
//!   - else in secondary-IP mode: fewer than WARM_ENI_TARGET ENIs' worth of free addresses;
//!   - else in prefix mode: fewer than WARM_PREFIX_TARGET prefixes' worth of free addresses.
//! - Growing fills the first pod ENI with room (a whole ENI's worth, or just the shortfall
//!   when the IP targets are set), and only when every ENI is full attaches a new one.
//! - The pool is too high (and shrinks) only with the IP targets set (free addresses beyond
//!   WARM_IP_TARGET, never below MINIMUM_IP_TARGET) or in prefix mode (free prefixes beyond
//!   WARM_PREFIX_TARGET). With WARM_ENI_TARGET alone addresses are never released, only
//!   whole ENIs once two more than the target are free.
//! - An ENI is deleted when it is not the primary, holds no pod address, none cooling, was
//!   not attached in the last minute, and the other ENIs still meet the targets.
//!
//! Where this differs from ipamd, on purpose:
//! - A cooling address (freed by a pod less than the cooldown ago, 30 s in AWS) is never
//!   released; ipamd only keeps it from pods. Released, EC2 could hand it to another node
//!   while peers still hold conntrack and neighbour entries for the old pod.
//! - Growth is clipped to max pods (ipamd checks max pods only before growing, then takes a
//!   whole ENI's worth); in prefix mode to the prefixes max pods needs.
//! - The 30 s throttle between two shrinks is the caller's (it has the clock).
//!
//! As in ipamd, WARM_IP_TARGET and MINIMUM_IP_TARGET of 0 mean unset, cooling addresses
//! count as free for the targets, and WARM_IP_TARGET/MINIMUM_IP_TARGET take precedence over
//! WARM_PREFIX_TARGET.

use ipnet::Ipv4Net;

use crate::limits::InstanceLimits;

/// Addresses in a /28 prefix.
const IPS_PER_PREFIX: i64 = 16;

/// The warm-pool settings (the AWS VPC CNI's environment variables of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmTargets {
    /// WARM_ENI_TARGET: free ENIs' worth of addresses to keep (secondary-IP mode only).
    pub warm_eni_target: u32,
    /// WARM_IP_TARGET: free addresses to keep. Overrides the ENI and prefix targets.
    pub warm_ip_target: Option<u32>,
    /// MINIMUM_IP_TARGET: addresses to hold in all, used or not.
    pub minimum_ip_target: Option<u32>,
    /// WARM_PREFIX_TARGET: free /28 prefixes to keep (prefix mode only).
    pub warm_prefix_target: Option<u32>,
    /// ENIs hold /28 prefixes instead of secondary addresses.
    pub prefix_delegation: bool,
}

impl Default for WarmTargets {
    fn default() -> Self {
        WarmTargets {
            warm_eni_target: 1,
            warm_ip_target: None,
            minimum_ip_target: None,
            warm_prefix_target: None,
            prefix_delegation: false,
        }
    }
}

/// The ceilings the plan stays under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// ENIs the node may have attached, every ENI in the pool counted (the primary, ones
    /// pods may not use): the instance's limit, or a lower configured MAX_ENI.
    pub max_enis: u32,
    /// Secondary addresses, or /28 prefixes, an ENI takes: the type's IPv4 addresses per ENI
    /// minus the ENI's own primary address, which no pod gets.
    pub slots_per_eni: u32,
    /// The node's max pods: the pool never grows past this many addresses.
    pub max_pods: u32,
}

impl PoolLimits {
    pub fn new(limits: &InstanceLimits, max_pods: u32) -> PoolLimits {
        PoolLimits {
            max_enis: limits.enis,
            slots_per_eni: limits.ipv4_per_eni.saturating_sub(1),
            max_pods,
        }
    }
}

/// One secondary address (a /32) or /28 prefix of an ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub cidr: Ipv4Net,
    /// Its addresses held by pods (0 or 1 for a /32).
    pub assigned: u32,
    /// Its addresses freed by a pod less than the cooldown ago.
    pub cooling: u32,
}

impl Slot {
    fn size(&self) -> i64 {
        1i64 << (32 - u32::from(self.cidr.prefix_len()))
    }

    fn is_prefix(&self) -> bool {
        self.cidr.prefix_len() < 32
    }

    fn releasable(&self) -> bool {
        self.assigned == 0 && self.cooling == 0
    }
}

/// One attached ENI as the pool owner knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    pub id: String,
    /// The instance's primary ENI: never detached.
    pub primary: bool,
    /// Whether pod addresses come from it: not the primary ENI under custom networking
    /// (pods live in another subnet).
    pub for_pods: bool,
    /// Attached less than a minute ago: not deleted yet, so an ENI attached for a burst of
    /// pods is not detached before they arrive (ipamd's `minENILifeTime`).
    pub young: bool,
    /// Its secondary addresses or prefixes; never the ENI's own primary address.
    pub slots: Vec<Slot>,
}

/// Free addresses or prefixes to give back from one ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub eni_id: String,
    pub cidrs: Vec<Ipv4Net>,
}

/// What to ask EC2 for in this pass. Empty when the pool is as the targets want it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Assign this many addresses (or prefixes) to this existing ENI. One ENI per pass.
    pub assign: Option<(String, u32)>,
    /// Create and attach a new ENI with this many addresses (or prefixes).
    pub attach: Option<u32>,
    /// Give these free addresses (or prefixes) back.
    pub release: Vec<Release>,
    /// Detach and delete this ENI (its addresses go with it). One per pass, as in ipamd:
    /// the next pass sees the pool without it.
    pub delete_eni: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// Address counts over the pod ENIs, in the mode's unit: only /32s count in secondary-IP
/// mode and only prefixes in prefix mode (an ENI can keep the other kind after the mode was
/// switched; ipamd ignores it the same way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Addresses held (a prefix counts its 16).
    pub total: u32,
    /// Addresses held by pods.
    pub assigned: u32,
    /// Addresses in cooldown.
    pub cooling: u32,
    /// Prefixes held (prefix mode).
    pub prefixes: u32,
    /// Prefixes with no address held by a pod (prefix mode).
    pub free_prefixes: u32,
}

impl PoolStats {
    /// Free addresses as ipamd counts them: cooling ones included.
    pub fn available(&self) -> u32 {
        self.total.saturating_sub(self.assigned)
    }
}

/// The pool's counts in the mode of `targets`, for [`plan`] and for the agent's metrics.
pub fn stats(targets: &WarmTargets, enis: &[Eni]) -> PoolStats {
    let mut s = PoolStats::default();
    let pd = targets.prefix_delegation;
    for slot in enis
        .iter()
        .filter(|e| e.for_pods)
        .flat_map(|e| &e.slots)
        .filter(|slot| slot.is_prefix() == pd)
    {
        s.total += slot.size() as u32;
        s.assigned += slot.assigned;
        s.cooling += slot.cooling;
        if pd {
            s.prefixes += 1;
            if slot.assigned == 0 {
                s.free_prefixes += 1;
            }
        }
    }
    s
}

/// The targets as ipamd reads them: 0 is unset for the IP targets.
#[derive(Debug, Clone, Copy)]
struct Targets {
    pd: bool,
    warm_eni: i64,
    warm_ip: i64,
    min_ip: i64,
    warm_prefix: i64,
}

impl Targets {
    fn new(t: &WarmTargets) -> Targets {
        Targets {
            pd: t.prefix_delegation,
            warm_eni: i64::from(t.warm_eni_target),
            warm_ip: i64::from(t.warm_ip_target.unwrap_or(0)),
            min_ip: i64::from(t.minimum_ip_target.unwrap_or(0)),
            warm_prefix: i64::from(t.warm_prefix_target.unwrap_or(0)),
        }
    }

    /// WARM_IP_TARGET or MINIMUM_IP_TARGET set: they replace the ENI and prefix targets.
    fn ip_targets(&self) -> bool {
        self.warm_ip != 0 || self.min_ip != 0
    }

    /// An address count rounded up to whole prefixes in prefix mode.
    fn round(&self, ips: i64) -> i64 {
        if self.pd {
            div_ceil(ips, IPS_PER_PREFIX) * IPS_PER_PREFIX
        } else {
            ips
        }
    }
}

fn div_ceil(x: i64, y: i64) -> i64 {
    (x + y - 1) / y
}

/// ipamd's `datastoreTargetState`: how many addresses (prefixes in prefix mode) the pool is
/// short of and over the IP targets; `None` when they are unset.
fn ip_target_state(t: &Targets, s: &PoolStats) -> Option<(i64, i64)> {
    if !t.ip_targets() {
        return None;
    }
    let (total, available) = (i64::from(s.total), i64::from(s.available()));
    let short = (t.warm_ip - available).max(0).max(t.min_ip - total);
    let over = (available - t.warm_ip).max(0).min(total - t.min_ip).max(0);
    if !t.pd {
        return Some((short, over));
    }
    // Prefixes come whole: keep those the assigned addresses plus WARM_IP_TARGET need, and
    // those MINIMUM_IP_TARGET needs.
    let prefixes = i64::from(s.prefixes);
    let for_warm = div_ceil(i64::from(s.assigned) + t.warm_ip, IPS_PER_PREFIX);
    let for_min = div_ceil(t.min_ip, IPS_PER_PREFIX);
    let over = i64::from(s.free_prefixes)
        .min(prefixes - for_warm)
        .max(0)
        .min(prefixes - for_min)
        .max(0);
    Some((div_ceil(short, IPS_PER_PREFIX), over))
}

/// The next step towards the targets, within `limits`.
pub fn plan(targets: &WarmTargets, limits: &PoolLimits, enis: &[Eni]) -> Plan {
    let t = Targets::new(targets);
    let s = stats(targets, enis);
    let mut plan = Plan::default();
    if too_low(&t, limits, &s) {
        grow(&t, limits, &s, enis, &mut plan);
    } else {
        plan.release = shrink(&t, &s, enis);
    }
    if should_remove_enis(&t, limits, &s, enis) {
        let after = without(enis, &plan.release);
        plan.delete_eni = deletable_eni(&t, &after).map(|e| e.id.clone());
        if let Some(id) = &plan.delete_eni {
            plan.release.retain(|r| &r.eni_id != id);
        }
    }
    plan
}

/// ipamd's `isDatastorePoolTooLow`.
fn too_low(t: &Targets, limits: &PoolLimits, s: &PoolStats) -> bool {
    if s.total >= limits.max_pods {
        return false;
    }
    if let Some((short, _)) = ip_target_state(t, s) {
        return short > 0;
    }
    let (warm, per_unit) = if t.pd {
        (t.warm_prefix, IPS_PER_PREFIX)
    } else {
        (t.warm_eni, i64::from(limits.slots_per_eni))
    };
    let available = i64::from(s.available());
    available < per_unit * warm || (warm == 0 && available == 0)
}

/// ipamd's `tryAssignIPs`/`tryAssignPrefixes`, then `tryAllocateENI` when no ENI has room.
fn grow(t: &Targets, limits: &PoolLimits, s: &PoolStats, enis: &[Eni], plan: &mut Plan) {
    let per_eni = i64::from(limits.slots_per_eni);
    let wanted = match (t.pd, ip_target_state(t, s)) {
        // getPrefixesNeeded: at least one prefix.
        (true, Some((short, _))) => short.max(1),
        (true, None) => (t.warm_prefix - i64::from(s.free_prefixes)).max(1),
        (false, Some((short, _))) => short,
        (false, None) => per_eni,
    };
    let room = if t.pd {
        div_ceil(i64::from(limits.max_pods), IPS_PER_PREFIX) - i64::from(s.prefixes)
    } else {
        i64::from(limits.max_pods) - i64::from(s.total)
    };
    let wanted = wanted.min(room);
    if wanted <= 0 || per_eni == 0 {
        return;
    }
    let with_room = enis
        .iter()
        .filter(|e| e.for_pods)
        .find(|e| (e.slots.len() as i64) < per_eni);
    if let Some(eni) = with_room {
        let count = wanted.min(per_eni - eni.slots.len() as i64);
        plan.assign = Some((eni.id.clone(), count as u32));
    } else if (enis.len() as i64) < i64::from(limits.max_enis) {
        plan.attach = Some(wanted.min(per_eni) as u32);
    }
}

/// ipamd's `isDatastorePoolTooHigh` and `tryUnassignCidrsFromAll`: free addresses (or
/// prefixes) beyond the targets, from the last ENI backwards so later ENIs empty first and
/// can go.
fn shrink(t: &Targets, s: &PoolStats, enis: &[Eni]) -> Vec<Release> {
    let mut over = match ip_target_state(t, s) {
        Some((_, over)) => over,
        None if t.pd => (i64::from(s.free_prefixes) - t.warm_prefix).max(0),
        // WARM_ENI_TARGET alone never releases addresses.
        None => 0,
    };
    let mut releases = Vec::new();
    for eni in enis.iter().rev().filter(|e| e.for_pods) {
        if over <= 0 {
            break;
        }
        let cidrs: Vec<Ipv4Net> = eni
            .slots
            .iter()
            .filter(|slot| slot.is_prefix() == t.pd && slot.releasable())
            .take(over as usize)
            .map(|slot| slot.cidr)
            .collect();
        if cidrs.is_empty() {
            continue;
        }
        over -= cidrs.len() as i64;
        releases.push(Release {
            eni_id: eni.id.clone(),
            cidrs,
        });
    }
    releases
}

/// The ENIs as they will be once `releases` are done.
fn without(enis: &[Eni], releases: &[Release]) -> Vec<Eni> {
    enis.iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(r) = releases.iter().find(|r| r.eni_id == e.id) {
                e.slots.retain(|slot| !r.cidrs.contains(&slot.cidr));
            }
            e
        })
        .collect()
}

/// ipamd's `shouldRemoveExtraENIs`: with the IP targets always look (the ENI check does the
/// work); else only with more than one ENI's worth beyond the target free, or in prefix
/// mode when some secondary ENI holds no pod.
fn should_remove_enis(t: &Targets, limits: &PoolLimits, s: &PoolStats, enis: &[Eni]) -> bool {
    if t.ip_targets() {
        return true;
    }
    let per_eni = i64::from(limits.slots_per_eni);
    let (warm, ips_per_eni) = if t.pd {
        (t.warm_prefix, per_eni * IPS_PER_PREFIX)
    } else {
        (t.warm_eni, per_eni)
    };
    if i64::from(s.available()) >= (warm + 1) * ips_per_eni {
        return true;
    }
    t.pd && enis
        .iter()
        .any(|e| !e.primary && e.slots.iter().all(|slot| slot.assigned == 0))
}

/// ipamd's `getDeletableENI`, newest (last) ENI first.
fn deletable_eni<'a>(t: &Targets, enis: &'a [Eni]) -> Option<&'a Eni> {
    enis.iter().rev().find(|eni| {
        let others = enis.iter().filter(|o| o.for_pods && o.id != eni.id);
        let other_slots = || {
            others
                .clone()
                .flat_map(|o| &o.slots)
                .filter(|slot| slot.is_prefix() == t.pd)
        };
        let other_free: i64 = other_slots()
            .map(|x| x.size() - i64::from(x.assigned))
            .sum();
        let other_total: i64 = other_slots().map(Slot::size).sum();
        let other_free_prefixes = other_slots().filter(|x| x.assigned == 0).count() as i64;
        !eni.primary
            && eni.for_pods
            && !eni.young
            && eni.slots.iter().all(|x| x.assigned == 0 && x.cooling == 0)
            && !(t.warm_ip != 0 && other_free < t.round(t.warm_ip))
            && !(t.min_ip != 0 && other_total < t.round(t.min_ip))
            && !(t.pd && t.warm_prefix != 0 && other_free_prefixes < t.warm_prefix)
    })
}

#[cfg(test)]
mod tests;
