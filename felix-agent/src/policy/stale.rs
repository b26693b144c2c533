//! Chains and sets of policies that are gone: found by name (policy objects are named `np-*`
//! and `gnp-*`, see `trellis_policy::render::policy_name`), deleted in the same transaction
//! that stops referring to them. Pure.

use std::collections::BTreeSet;

use trellis_policy::render::TABLE;

/// Policy-owned chain and set names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

fn is_policy_object(name: &str) -> bool {
    name.starts_with("np-") || name.starts_with("gnp-")
}

impl Owned {
    /// The policy objects a transaction creates (`add chain|set inet trellis NAME ...`).
    pub fn of_transaction(text: &str) -> Self {
        let mut out = Owned::default();
        let chain = format!("add chain {TABLE} ");
        let set = format!("add set {TABLE} ");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&chain) {
                out.add_chain(rest);
            } else if let Some(rest) = line.strip_prefix(&set) {
                out.add_set(rest);
            }
        }
        out
    }

    /// The policy objects in `nft list table inet trellis` output (a previous run's).
    pub fn of_listing(text: &str) -> Self {
        let mut out = Owned::default();
        for line in text.lines().map(str::trim_start) {
            if let Some(rest) = line.strip_prefix("chain ") {
                out.add_chain(rest);
            } else if let Some(rest) = line.strip_prefix("set ") {
                out.add_set(rest);
            }
        }
        out
    }

    fn add_chain(&mut self, rest: &str) {
        if let Some(name) = rest
            .split_whitespace()
            .next()
            .filter(|n| is_policy_object(n))
        {
            self.chains.insert(name.to_string());
        }
    }

    fn add_set(&mut self, rest: &str) {
        if let Some(name) = rest
            .split_whitespace()
            .next()
            .filter(|n| is_policy_object(n))
        {
            self.sets.insert(name.to_string());
        }
    }

    /// Deletions of what `self` has and `next` does not: chains first (the rules that use a
    /// set live in them), then sets.
    pub fn deletions_for(&self, next: &Owned) -> String {
        let mut out = String::new();
        for c in self.chains.difference(&next.chains) {
            out.push_str(&format!("delete chain {TABLE} {c}\n"));
        }
        for s in self.sets.difference(&next.sets) {
            out.push_str(&format!("delete set {TABLE} {s}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_policy_objects_are_deleted_chains_first_and_nothing_else() {
        let before = Owned::of_listing(
            "table inet trellis {\n\tset masq-pools4 {\n\t}\n\tset np-1-in-selected {\n\t}\n\
             \tset np-1-in-r0-peer4 {\n\t}\n\tchain np-1-in {\n\t}\n\tchain np-2-in {\n\t}\n\
             \tchain from-endpoint {\n\t}\n}\n",
        );
        assert_eq!(before.chains.len(), 2);
        assert_eq!(before.sets.len(), 2, "masq-pools4 is the NAT manager's");
        let next = Owned::of_transaction(
            "add table inet trellis\nadd set inet trellis np-2-in-selected { type ifname; }\n\
             add chain inet trellis np-2-in { comment \"x\"; }\n",
        );
        assert_eq!(
            before.deletions_for(&next),
            "delete chain inet trellis np-1-in\n\
             delete set inet trellis np-1-in-r0-peer4\n\
             delete set inet trellis np-1-in-selected\n"
        );
    }
}
