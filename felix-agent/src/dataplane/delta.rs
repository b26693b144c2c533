//! A pure tracker of desired against dataplane state, after Calico's `felix/deltatracker`.
//!
//! Managers write what they want with `set_desired`/`delete_desired`, load what the kernel has with
//! `replace_all_dataplane` after a resync, and ask for the difference: `pending_updates` (wanted
//! but missing or different in the dataplane) and `pending_deletions` (in the dataplane, not
//! wanted). After each successful kernel write they call `mark_applied_*`, so a failed write stays
//! pending and is retried on the next pass. The pending sets are kept incrementally: a pass over a
//! large, mostly in-sync table costs only the entries that changed.

use std::collections::{BTreeMap, BTreeSet};

/// Desired and dataplane state of one kind of kernel object, keyed by `K`.
#[derive(Debug, Clone)]
pub struct DeltaTracker<K, V> {
    desired: BTreeMap<K, V>,
    dataplane: BTreeMap<K, V>,
    pending_updates: BTreeSet<K>,
    pending_deletions: BTreeSet<K>,
}

impl<K: Ord + Clone, V: PartialEq + Clone> Default for DeltaTracker<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> DeltaTracker<K, V> {
    pub fn new() -> Self {
        Self {
            desired: BTreeMap::new(),
            dataplane: BTreeMap::new(),
            pending_updates: BTreeSet::new(),
            pending_deletions: BTreeSet::new(),
        }
    }

    /// Wants `k` to have value `v`.
    pub fn set_desired(&mut self, k: K, v: V) {
        self.desired.insert(k.clone(), v);
        self.refresh(&k);
    }

    /// No longer wants `k`; it becomes a pending deletion if the dataplane has it.
    pub fn delete_desired(&mut self, k: &K) {
        self.desired.remove(k);
        self.refresh(k);
    }

    /// Replaces the whole desired state (e.g. after recomputing it from the cluster view).
    pub fn replace_all_desired(&mut self, entries: impl IntoIterator<Item = (K, V)>) {
        self.desired = entries.into_iter().collect();
        self.recompute();
    }

    /// Records what a read of the kernel found for `k`.
    pub fn set_dataplane(&mut self, k: K, v: V) {
        self.dataplane.insert(k.clone(), v);
        self.refresh(&k);
    }

    /// Records that the kernel does not have `k` (e.g. it went away with its device).
    pub fn delete_dataplane(&mut self, k: &K) {
        self.dataplane.remove(k);
        self.refresh(k);
    }

    /// Replaces the whole dataplane state with what a resync read from the kernel.
    pub fn replace_all_dataplane(&mut self, entries: impl IntoIterator<Item = (K, V)>) {
        self.dataplane = entries.into_iter().collect();
        self.recompute();
    }

    /// Entries wanted but missing or different in the dataplane, in key order.
    pub fn pending_updates(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.pending_updates.iter().map(|k| {
            let v = self
                .desired
                .get(k)
                .expect("a pending update is always desired");
            (k, v)
        })
    }

    /// Keys in the dataplane that are not wanted, in key order.
    pub fn pending_deletions(&self) -> impl Iterator<Item = &K> + '_ {
        self.pending_deletions.iter()
    }

    /// The kernel now holds the desired value of `k`.
    pub fn mark_applied_update(&mut self, k: &K) {
        if let Some(v) = self.desired.get(k) {
            self.dataplane.insert(k.clone(), v.clone());
        }
        self.refresh(k);
    }

    /// The kernel no longer holds `k`.
    pub fn mark_applied_deletion(&mut self, k: &K) {
        self.dataplane.remove(k);
        self.refresh(k);
    }

    pub fn desired(&self) -> &BTreeMap<K, V> {
        &self.desired
    }

    pub fn dataplane(&self) -> &BTreeMap<K, V> {
        &self.dataplane
    }

    /// Whether there is nothing to apply.
    pub fn in_sync(&self) -> bool {
        self.pending_updates.is_empty() && self.pending_deletions.is_empty()
    }

    fn refresh(&mut self, k: &K) {
        let (update, delete) = match (self.desired.get(k), self.dataplane.get(k)) {
            (Some(want), Some(have)) => (want != have, false),
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, true),
            (None, None) => (false, false),
        };
        if update {
            self.pending_updates.insert(k.clone());
        } else {
            self.pending_updates.remove(k);
        }
        if delete {
            self.pending_deletions.insert(k.clone());
        } else {
            self.pending_deletions.remove(k);
        }
    }

    fn recompute(&mut self) {
        self.pending_updates = self
            .desired
            .iter()
            .filter(|(k, v)| self.dataplane.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        self.pending_deletions = self
            .dataplane
            .keys()
            .filter(|k| !self.desired.contains_key(*k))
            .cloned()
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(t: &DeltaTracker<u32, &'static str>) -> Vec<(u32, &'static str)> {
        t.pending_updates().map(|(k, v)| (*k, *v)).collect()
    }

    fn deletions(t: &DeltaTracker<u32, &'static str>) -> Vec<u32> {
        t.pending_deletions().copied().collect()
    }

    #[test]
    fn desired_without_dataplane_is_an_update() {
        let mut t = DeltaTracker::new();
        t.set_desired(1, "a");
        t.set_desired(2, "b");
        assert_eq!(updates(&t), vec![(1, "a"), (2, "b")]);
        assert!(deletions(&t).is_empty());
        t.mark_applied_update(&1);
        assert_eq!(updates(&t), vec![(2, "b")]);
        assert_eq!(t.dataplane().get(&1), Some(&"a"));
    }

    #[test]
    fn matching_dataplane_means_nothing_to_do() {
        let mut t = DeltaTracker::new();
        t.replace_all_dataplane([(1, "a"), (2, "b")]);
        t.replace_all_desired([(1, "a"), (2, "b")]);
        assert!(t.in_sync());
        // Loading the same dataplane again (a periodic resync) keeps it in sync.
        t.replace_all_dataplane([(2, "b"), (1, "a")]);
        assert!(t.in_sync());
    }

    #[test]
    fn changed_value_is_an_update_not_a_deletion() {
        let mut t = DeltaTracker::new();
        t.replace_all_dataplane([(1, "old")]);
        t.set_desired(1, "new");
        assert_eq!(updates(&t), vec![(1, "new")]);
        assert!(deletions(&t).is_empty());
        t.mark_applied_update(&1);
        assert!(t.in_sync());
    }

    #[test]
    fn unwanted_dataplane_entry_is_a_deletion_until_applied() {
        let mut t = DeltaTracker::new();
        t.replace_all_dataplane([(1, "a"), (9, "stray")]);
        t.replace_all_desired([(1, "a")]);
        assert_eq!(deletions(&t), vec![9]);
        assert!(updates(&t).is_empty());
        t.mark_applied_deletion(&9);
        assert!(t.in_sync());
        assert!(!t.dataplane().contains_key(&9));
    }

    #[test]
    fn delete_desired_then_set_again_cancels_the_deletion() {
        let mut t = DeltaTracker::new();
        t.replace_all_dataplane([(1, "a")]);
        t.set_desired(1, "a");
        t.delete_desired(&1);
        assert_eq!(deletions(&t), vec![1]);
        t.set_desired(1, "a");
        assert!(t.in_sync());
        // Deleting something neither side has is a no-op.
        t.delete_desired(&7);
        assert!(t.in_sync());
    }

    #[test]
    fn unapplied_work_survives_a_resync() {
        let mut t = DeltaTracker::new();
        t.replace_all_desired([(1, "a"), (2, "b")]);
        t.mark_applied_update(&1);
        // The kernel lost entry 1 behind our back and kept a stray 3; a resync sees both.
        t.replace_all_dataplane([(3, "c")]);
        assert_eq!(updates(&t), vec![(1, "a"), (2, "b")]);
        assert_eq!(deletions(&t), vec![3]);
        t.delete_dataplane(&3);
        assert!(deletions(&t).is_empty());
        t.set_dataplane(2, "b");
        assert_eq!(updates(&t), vec![(1, "a")]);
    }

    #[test]
    fn mark_applied_update_of_an_undesired_key_is_harmless() {
        let mut t: DeltaTracker<u32, &str> = DeltaTracker::new();
        t.mark_applied_update(&5);
        assert!(t.in_sync());
        assert!(t.dataplane().is_empty());
    }
}
