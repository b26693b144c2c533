//! The policy chains and sets a previous run left in the kernel, found by name in `nft list
//! table` (policy objects are named `np-*` and `gnp-*`, see
//! `trellis_policy::render::policy_name`, and dispatch chains `eg-via-*`, `in-via-*`); the engine's first transaction deletes those it
//! does not recreate. Pure.

use std::collections::BTreeSet;

/// Policy-owned chain and set names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

fn is_policy_object(name: &str) -> bool {
    name.starts_with("np-")
        || name.starts_with("gnp-")
        || trellis_policy::render::is_via_chain(name)
}

impl Owned {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_objects_are_found_by_name_and_nothing_else() {
        let found = Owned::of_listing(
            "table inet trellis {\n\tset masq-pools4 {\n\t}\n\tset np-1-in-selected {\n\t}\n\
             \tset gnp-1-in-r0-peer4 {\n\t}\n\tchain np-1-in {\n\t}\n\tchain gnp-2-in {\n\t}\n\
             \tchain from-endpoint {\n\t}\n\tchain in-via-0a1b2c3d {\n\t}\n}\n",
        );
        assert_eq!(
            found.chains.into_iter().collect::<Vec<_>>(),
            ["gnp-2-in", "in-via-0a1b2c3d", "np-1-in"]
        );
        assert_eq!(
            found.sets.into_iter().collect::<Vec<_>>(),
            ["gnp-1-in-r0-peer4", "np-1-in-selected"],
            "masq-pools4 is the NAT manager's"
        );
    }
}
