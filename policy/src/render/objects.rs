//! nftables objects as data: named sets with their elements and chains with their rules, all
//! in `table inet trellis`. Written out either whole (create if missing, flush, refill: what a
//! fresh or untrusted kernel state needs) or as the difference from what the kernel already
//! has (element additions and deletions, refills of changed chains only).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::TABLE;

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// `ifname`, `ipv4_addr`, `ipv4_addr . inet_proto . inet_service`...
    pub ty: String,
    /// An interval set (ranges, prefixes). Its elements are replaced as a whole when they
    /// change: the kernel merges adjacent intervals, so single deletions need not match.
    pub interval: bool,
    pub elements: BTreeSet<String>,
}

impl Set {
    /// A map (`type KEY : DATA`) or a plain set.
    pub fn is_map(&self) -> bool {
        self.ty.contains(" : ")
    }

    fn keyword(&self) -> &'static str {
        if self.is_map() {
            "map"
        } else {
            "set"
        }
    }
}

/// A regular or base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// What goes between the braces of `add chain`: a comment or a hook; may be empty.
    pub spec: String,
    pub rules: Vec<String>,
}

/// Sets by name and chains in the order they are written (a chain is written before the
/// chains that jump to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    pub sets: BTreeMap<String, Set>,
    pub chains: Vec<Chain>,
}

impl Objects {
    /// Declares set `name` (the first declaration wins).
    pub fn define_set(&mut self, name: &str, ty: &str, interval: bool) {
        self.sets.entry(name.to_string()).or_insert_with(|| Set {
            ty: ty.to_string(),
            interval,
            elements: BTreeSet::new(),
        });
    }

    /// Adds an element to a declared set.
    pub fn add_element(&mut self, set: &str, element: String) {
        if let Some(s) = self.sets.get_mut(set) {
            s.elements.insert(element);
        }
    }

    pub fn add_chain(&mut self, name: String, spec: String, rules: Vec<String>) {
        self.chains.push(Chain { name, spec, rules });
    }

    /// Everything in `parts`, sets by name and chains in order.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Objects>) -> Objects {
        let mut out = Objects::default();
        for p in parts {
            out.sets
                .extend(p.sets.iter().map(|(k, v)| (k.clone(), v.clone())));
            out.chains.extend(p.chains.iter().cloned());
        }
        out
    }
}

/// The kernel state `parts` describe, written whole: each object is created if missing,
/// flushed and refilled, so that one transaction swaps old contents for new atomically.
pub fn write_whole(parts: &[&Objects]) -> String {
    let mut out = format!("add table {TABLE}\n");
    // Chains first, empty: map elements jump to them.
    for p in parts {
        for c in &p.chains {
            declare_chain(&mut out, c);
        }
    }
    for p in parts {
        for (name, set) in &p.sets {
            declare_set(&mut out, name, set);
            let _ = writeln!(out, "flush {} {TABLE} {name}", set.keyword());
            elements(&mut out, "add", name, set.elements.iter());
        }
    }
    for p in parts {
        for c in &p.chains {
            let _ = writeln!(out, "flush chain {TABLE} {}", c.name);
            rules(&mut out, c);
        }
    }
    out
}

/// An element addition or deletion in a hash set, as data (see [`Changes::elements`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementOp {
    pub delete: bool,
    pub set: String,
    /// The set's type, saying how each element is encoded.
    pub ty: String,
    /// In nft syntax, as in the text.
    pub elements: Vec<String>,
}

/// A difference between two states, as nft text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub text: String,
    /// The same as element operations, when that is all the text does (a pod created,
    /// deleted or relabelled): what a netlink batch can carry without `nft` and its cache.
    pub elements: Option<Vec<ElementOp>>,
}

/// What turns `old` into `new`, for pairs of the same owner (a policy, the dispatch): new sets
/// declared and filled, changed hash sets by their element differences, changed interval sets
/// refilled, new or changed chains (re)written, then gone chains deleted, then gone sets (rules
/// using a set are gone before it). Empty when nothing changed; `None` when a set changed its
/// type or a chain its spec, which only the whole form can express.
pub fn write_changes(pairs: &[(Option<&Objects>, Option<&Objects>)]) -> Option<Changes> {
    let empty = Objects::default();
    let mut declares = String::new();
    let mut sets = String::new();
    let mut chains = String::new();
    let mut gone_chains = String::new();
    let mut gone_sets = String::new();
    let mut ops = Vec::new();
    let mut only_elements = true;
    for (old, new) in pairs {
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        for (name, set) in &new.sets {
            match old.sets.get(name) {
                Some(was) if was.ty == set.ty && was.interval == set.interval => {
                    if was.elements == set.elements {
                        continue;
                    }
                    if set.interval {
                        only_elements = false;
                        let _ = writeln!(sets, "flush {} {TABLE} {name}", set.keyword());
                        elements(&mut sets, "add", name, set.elements.iter());
                        continue;
                    }
                    for (delete, items) in [
                        (true, was.elements.difference(&set.elements)),
                        (false, set.elements.difference(&was.elements)),
                    ] {
                        let items: Vec<String> = items.cloned().collect();
                        let verb = if delete { "delete" } else { "add" };
                        elements(&mut sets, verb, name, items.iter());
                        if !items.is_empty() {
                            ops.push(ElementOp {
                                delete,
                                set: name.clone(),
                                ty: set.ty.clone(),
                                elements: items,
                            });
                        }
                    }
                }
                Some(_) => return None,
                None => {
                    only_elements = false;
                    declare_set(&mut sets, name, set);
                    elements(&mut sets, "add", name, set.elements.iter());
                }
            }
        }
        for c in &new.chains {
            match old.chains.iter().find(|o| o.name == c.name) {
                Some(o) if o == c => {}
                Some(o) if o.spec != c.spec => return None,
                Some(_) => {
                    let _ = writeln!(chains, "flush chain {TABLE} {}", c.name);
                    rules(&mut chains, c);
                }
                None => {
                    // Declared before the elements, which may jump to it.
                    declare_chain(&mut declares, c);
                    rules(&mut chains, c);
                }
            }
        }
        for c in &old.chains {
            if !new.chains.iter().any(|n| n.name == c.name) {
                let _ = writeln!(gone_chains, "delete chain {TABLE} {}", c.name);
            }
        }
        for (name, set) in &old.sets {
            if !new.sets.contains_key(name) {
                let _ = writeln!(gone_sets, "delete {} {TABLE} {name}", set.keyword());
            }
        }
    }
    only_elements &=
        declares.is_empty() && chains.is_empty() && gone_chains.is_empty() && gone_sets.is_empty();
    Some(Changes {
        text: format!("{declares}{sets}{chains}{gone_chains}{gone_sets}"),
        elements: only_elements.then_some(ops),
    })
}

fn declare_set(out: &mut String, name: &str, set: &Set) {
    let flags = if set.interval {
        " flags interval; auto-merge;"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "add {} {TABLE} {name} {{ type {};{flags} }}",
        set.keyword(),
        set.ty
    );
}

fn declare_chain(out: &mut String, c: &Chain) {
    if c.spec.is_empty() {
        let _ = writeln!(out, "add chain {TABLE} {}", c.name);
    } else {
        let _ = writeln!(out, "add chain {TABLE} {} {{ {} }}", c.name, c.spec);
    }
}

fn rules(out: &mut String, c: &Chain) {
    for r in &c.rules {
        let _ = writeln!(out, "add rule {TABLE} {} {r}", c.name);
    }
}

/// `add|delete element` of `items` in one statement (nothing when there are none).
fn elements<'a>(out: &mut String, verb: &str, set: &str, items: impl Iterator<Item = &'a String>) {
    let list: Vec<&str> = items.map(String::as_str).collect();
    if !list.is_empty() {
        let _ = writeln!(
            out,
            "{verb} element {TABLE} {set} {{ {} }}",
            list.join(", ")
        );
    }
}
