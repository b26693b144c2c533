//! The policy state of one node, kept up to date change by change, and the nft transactions
//! that bring the kernel along.
//!
//! ```text
//!  set_endpoint / set_namespace / set_policy / set_host      (one datastore change each)
//!     -> compiled policies patched        an endpoint: only its own memberships, found by
//!                                         compiling each policy against a model of that one
//!                                         endpoint (the same compiler, so the same semantics)
//!     -> dirty policies                   those whose objects on this node may have changed
//!  transaction()
//!     -> dirty policies rendered, dispatch rendered, each compared with what the kernel has:
//!        element additions and deletions, refills of changed chains (or the whole state
//!        after a failure or at start, with a previous run's leftovers deleted)
//!  committed(tx) once nft took it; failed() if it did not (the next one is whole)
//! ```
//!
//! Equivalence with compiling and rendering everything from scratch (`resources::compile_all`,
//! `render::render_node`) is what the tests of this module check, over random change sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use trellis_datastore::resources::{GlobalNetworkPolicy, NetworkPolicy};

use crate::compile::CompileError;
use crate::ir::{CompiledPolicy, PolicyId};
use crate::model::{Endpoint, EndpointKey, Labels, Model};
use crate::render::{
    is_via_chain, render_dispatch, render_policy, write_changes, write_whole, Chain, ElementOp,
    Objects, TABLE,
};
use crate::{compile_global_policy, compile_network_policy};

mod membership;

/// Dispatch chains kept beyond the ones in use (see `Engine::with_unused_vias`).
const UNUSED_VIAS: usize = 64;

use membership::move_endpoint;

/// A policy as the datastore has it.
#[derive(Debug, Clone)]
pub enum Source {
    Network(Box<NetworkPolicy>),
    Global(Box<GlobalNetworkPolicy>),
}

impl Source {
    pub fn id(&self) -> PolicyId {
        match self {
            Source::Network(np) => PolicyId::Namespaced {
                namespace: np
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string()),
                name: np.metadata.name.clone(),
            },
            Source::Global(gnp) => PolicyId::Global {
                name: gnp.metadata.name.clone(),
            },
        }
    }

    pub fn compile(&self, model: &Model) -> Result<CompiledPolicy, CompileError> {
        match self {
            Source::Network(np) => compile_network_policy(np, model),
            Source::Global(gnp) => compile_global_policy(gnp, model),
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Engine {
    node: String,
    model: Model,
    /// Endpoints of this node.
    local: BTreeSet<EndpointKey>,
    sources: BTreeMap<PolicyId, Source>,
    /// The policies that compiled.
    compiled: BTreeMap<PolicyId, CompiledPolicy>,
    /// The ones that did not, with why.
    problems: BTreeMap<PolicyId, String>,
    /// What the kernel has, per policy and for the dispatch.
    applied: BTreeMap<PolicyId, Objects>,
    applied_dispatch: Option<Objects>,
    dirty: BTreeSet<PolicyId>,
    dispatch_dirty: bool,
    /// The next transaction writes everything.
    whole: bool,
    /// Policy chains and sets found in the kernel at start, not (yet) ours.
    leftover_chains: BTreeSet<String>,
    leftover_sets: BTreeSet<String>,
    /// Counts changes, so a commit of a transaction older than the last change is caught.
    changes: u64,
}

/// One nft transaction and what the kernel holds once it is applied.
#[derive(Debug)]
pub struct Transaction {
    /// The `nft -f` input; empty when the kernel already matches.
    pub text: String,
    /// Written whole rather than as changes.
    pub whole: bool,
    /// The same as hash-set element operations, when that is all it does.
    pub elements: Option<Vec<ElementOp>>,
    rendered: Vec<(PolicyId, Option<Objects>)>,
    dispatch: Objects,
    changes: u64,
}

impl Engine {
    /// An engine for node `node` with nothing in it; its first transaction is whole.
    pub fn new(node: impl Into<String>) -> Self {
        Engine {
            node: node.into(),
            model: Model::default(),
            local: BTreeSet::new(),
            sources: BTreeMap::new(),
            compiled: BTreeMap::new(),
            problems: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_dispatch: None,
            dirty: BTreeSet::new(),
            dispatch_dirty: true,
            whole: true,
            leftover_chains: BTreeSet::new(),
            leftover_sets: BTreeSet::new(),
            changes: 0,
        }
    }

    /// Policy chains and sets a previous run left in the kernel: the first whole transaction
    /// deletes those it does not recreate.
    pub fn adopt(
        &mut self,
        chains: impl IntoIterator<Item = String>,
        sets: impl IntoIterator<Item = String>,
    ) {
        self.leftover_chains.extend(chains);
        self.leftover_sets.extend(sets);
        self.whole = true;
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The compiled policies, by id.
    pub fn policies(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.compiled.values()
    }

    /// `NetworkPolicy NS/NAME: field: reason` for each policy that did not compile.
    pub fn problems(&self) -> Vec<String> {
        self.problems.values().cloned().collect()
    }

    /// Everything at once: the model and the policies replace what the engine had (the first
    /// load, or a resynchronisation after missed changes). Each policy is compiled once against
    /// the whole model; the next transaction carries what differs from the kernel.
    pub fn replace_all(&mut self, model: Model, sources: impl IntoIterator<Item = Source>) {
        self.changes += 1;
        self.local = model
            .endpoints
            .values()
            .filter(|e| e.node == self.node)
            .map(|e| e.key.clone())
            .collect();
        self.model = model;
        let sources: BTreeMap<PolicyId, Source> =
            sources.into_iter().map(|s| (s.id(), s)).collect();
        let mut ids: BTreeSet<PolicyId> = self.sources.keys().cloned().collect();
        ids.extend(sources.keys().cloned());
        self.sources = sources;
        for id in ids {
            self.compile(&id);
        }
        self.dispatch_dirty = true;
    }

    /// A pod created, changed (labels, addresses, ports...) or deleted (`None`).
    pub fn set_endpoint(&mut self, key: EndpointKey, endpoint: Option<Endpoint>) {
        self.changes += 1;
        let old = self.model.endpoints.remove(&key);
        let placement = |e: &Option<Endpoint>| {
            e.as_ref()
                .map(|e| (e.ips.clone(), e.iface.clone(), e.node.clone()))
        };
        let placement_changed = placement(&old) != placement(&endpoint);
        let was_local = self.local.remove(&key);
        let is_local = endpoint.as_ref().is_some_and(|e| e.node == self.node);
        if is_local {
            self.local.insert(key.clone());
        }
        self.dispatch_dirty |=
            (was_local || is_local) && (placement_changed || was_local != is_local);
        self.move_memberships(&key, endpoint.as_ref(), placement_changed);
        if let Some(e) = endpoint {
            self.model.add_endpoint(e);
        }
    }

    /// Brings every compiled policy's memberships of endpoint `key` in line with `endpoint`
    /// (`None`: gone), each policy compiled against a model of that one endpoint with every
    /// namespace; a policy is dirty where a membership changed, or where the endpoint is or
    /// was a member and `placement_changed` (addresses, interface, node).
    fn move_memberships(
        &mut self,
        key: &EndpointKey,
        endpoint: Option<&Endpoint>,
        placement_changed: bool,
    ) {
        let mut single = Model {
            endpoints: endpoint
                .iter()
                .map(|e| (key.clone(), (*e).clone()))
                .collect(),
            namespaces: std::mem::take(&mut self.model.namespaces),
            hosts: BTreeMap::new(),
        };
        let mut recompile = Vec::new();
        for (id, source) in &self.sources {
            let Some(full) = self.compiled.get_mut(id) else {
                continue;
            };
            let mut fresh = match endpoint {
                Some(_) => match source.compile(&single) {
                    Ok(p) => Some(p),
                    Err(_) => {
                        recompile.push(id.clone());
                        continue;
                    }
                },
                None => None,
            };
            match move_endpoint(full, fresh.as_mut(), key) {
                Some(m) => {
                    let placed = placement_changed && (m.was_member || m.is_member);
                    if m.changed || placed {
                        self.dirty.insert(id.clone());
                    }
                }
                None => recompile.push(id.clone()),
            }
        }
        self.model.namespaces = std::mem::take(&mut single.namespaces);
        for id in recompile {
            self.compile(&id);
        }
    }

    /// A namespace's labels set (`None`: the Namespace object is gone; its name label stays,
    /// as selectors see it for pods still in it). Only that namespace's endpoints can change
    /// memberships (namespace selectors are evaluated per endpoint): each is moved as if it
    /// had changed itself.
    pub fn set_namespace(&mut self, name: &str, labels: Option<&Labels>) {
        self.changes += 1;
        self.model
            .set_namespace(name, labels.unwrap_or(&Labels::new()));
        let first = EndpointKey::new(name, "");
        let members: Vec<Endpoint> = self
            .model
            .endpoints
            .range(first..)
            .take_while(|(k, _)| k.namespace == name)
            .map(|(_, e)| e.clone())
            .collect();
        for e in &members {
            self.move_memberships(&e.key, Some(e), false);
        }
    }

    /// A node's own addresses (for traces; nothing in the dataplane depends on them).
    pub fn set_host(&mut self, node: &str, ips: Option<Vec<IpAddr>>) {
        match ips {
            Some(ips) => self.model.hosts.insert(node.to_string(), ips),
            None => self.model.hosts.remove(node),
        };
    }

    /// A policy created, changed or deleted (`None`).
    pub fn set_policy(&mut self, id: PolicyId, source: Option<Source>) {
        self.changes += 1;
        match source {
            Some(s) => {
                self.sources.insert(id.clone(), s);
            }
            None => {
                self.sources.remove(&id);
            }
        }
        self.compile(&id);
    }

    /// Compiles policy `id` against the whole model; dirty if the result differs.
    fn compile(&mut self, id: &PolicyId) {
        let result = self.sources.get(id).map(|s| s.compile(&self.model));
        let (compiled, problem) = match result {
            None => (None, None),
            Some(Ok(p)) => (Some(p), None),
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        match problem {
            Some(p) => self.problems.insert(id.clone(), p),
            None => self.problems.remove(id),
        };
        let before = match compiled {
            Some(p) => self.compiled.insert(id.clone(), p),
            None => self.compiled.remove(id),
        };
        if before.as_ref() != self.compiled.get(id) {
            self.dirty.insert(id.clone());
            self.dispatch_dirty = true;
        }
    }

    /// What brings the kernel to the current state; `None` when nothing changed since the
    /// last commit. Commit it (or report failure) before the next change.
    pub fn transaction(&self) -> Option<Transaction> {
        if !self.whole && !self.dispatch_dirty && self.dirty.is_empty() {
            return None;
        }
        let ids: BTreeSet<&PolicyId> = if self.whole {
            self.compiled.keys().chain(self.applied.keys()).collect()
        } else {
            self.dirty.iter().collect()
        };
        let rendered: BTreeMap<&PolicyId, Option<Objects>> = ids
            .into_iter()
            .map(|id| {
                let objects = self
                    .compiled
                    .get(id)
                    .map(|p| render_policy(p, &self.model, &self.node));
                (id, objects)
            })
            .collect();
        let mut sorted: Vec<&CompiledPolicy> = self.compiled.values().collect();
        sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        let empty = Objects::default();
        let objects_of = |id: &PolicyId| -> &Objects {
            match rendered.get(id) {
                Some(Some(o)) => o,
                _ => self.applied.get(id).unwrap_or(&empty),
            }
        };
        let pairs: Vec<(&CompiledPolicy, &Objects)> =
            sorted.iter().map(|p| (*p, objects_of(&p.id))).collect();
        let local = self
            .local
            .iter()
            .filter_map(|k| self.model.endpoints.get(k));
        let mut dispatch = render_dispatch(&pairs, local);
        let changes = if self.whole {
            None
        } else {
            // The dispatch first: its chains jump to the policies' chains, so they must be
            // deleted before those.
            let diff_with = |dispatch: &Objects| {
                let mut diff = vec![(self.applied_dispatch.as_ref(), Some(dispatch))];
                diff.extend(
                    rendered
                        .iter()
                        .map(|(id, new)| (self.applied.get(*id), new.as_ref())),
                );
                write_changes(&diff)
            };
            // Dispatch chains no interface uses any more stay (a pod relabelled back finds
            // its chain, and the change is elements only), up to a bound past which they go.
            let live: BTreeSet<&str> = pairs
                .iter()
                .flat_map(|(_, o)| o.chains.iter().map(|c| c.name.as_str()))
                .collect();
            dispatch = self.with_unused_vias(dispatch, &live);
            diff_with(&dispatch)
        };
        let (text, whole, elements) = match changes {
            Some(c) => (c.text, false, c.elements),
            None => {
                let mut parts: Vec<&Objects> = pairs.iter().map(|(_, o)| *o).collect();
                parts.push(&dispatch);
                (self.whole_text(&parts), true, None)
            }
        };
        Some(Transaction {
            text,
            whole,
            elements,
            rendered: rendered
                .into_iter()
                .map(|(id, o)| (id.clone(), o))
                .collect(),
            dispatch,
            changes: self.changes,
        })
    }

    /// `dispatch` plus the dispatch chains the kernel has that it no longer uses, unless there
    /// are more of those than [`UNUSED_VIAS`] beyond the used ones. Only those whose policy
    /// chains are all `live` stay: a chain cannot be deleted while another jumps to it.
    fn with_unused_vias(&self, mut dispatch: Objects, live: &BTreeSet<&str>) -> Objects {
        let Some(applied) = &self.applied_dispatch else {
            return dispatch;
        };
        let unused: Vec<&Chain> = applied
            .chains
            .iter()
            .filter(|c| is_via_chain(&c.name) && !dispatch.chains.iter().any(|n| n.name == c.name))
            .filter(|c| {
                c.rules.iter().all(|r| {
                    r.split_once(" jump ")
                        .is_none_or(|(_, target)| live.contains(target.trim()))
                })
            })
            .collect();
        let used = dispatch
            .chains
            .iter()
            .filter(|c| is_via_chain(&c.name))
            .count();
        if unused.len() > used + UNUSED_VIAS {
            return dispatch;
        }
        // Before the base chains, as when they were made.
        for c in unused.into_iter().rev() {
            dispatch.chains.insert(0, c.clone());
        }
        dispatch
    }

    /// Everything in `parts`, and deletions of the policy objects the kernel has beyond them.
    fn whole_text(&self, parts: &[&Objects]) -> String {
        let mut text = write_whole(parts);
        let mut keep_chains = BTreeSet::new();
        let mut keep_sets = BTreeSet::new();
        for p in parts {
            keep_chains.extend(p.chains.iter().map(|c| c.name.as_str()));
            keep_sets.extend(p.sets.keys().map(String::as_str));
        }
        let mut chains: BTreeSet<&str> = self.leftover_chains.iter().map(String::as_str).collect();
        let mut sets: BTreeSet<&str> = self.leftover_sets.iter().map(String::as_str).collect();
        for o in self.applied.values() {
            chains.extend(o.chains.iter().map(|c| c.name.as_str()));
            sets.extend(o.sets.keys().map(String::as_str));
        }
        // Dispatch chains first: they jump to the policies' chains.
        let gone: Vec<&&str> = chains.difference(&keep_chains).collect();
        let (vias, others): (Vec<&&str>, Vec<&&str>) =
            gone.into_iter().partition(|c| is_via_chain(c));
        for c in vias.into_iter().chain(others) {
            let _ = writeln!(text, "delete chain {TABLE} {c}");
        }
        for s in sets.difference(&keep_sets) {
            let _ = writeln!(text, "delete set {TABLE} {s}");
        }
        text
    }

    /// What the engine believes the kernel holds, written whole (as `render_node` writes it).
    pub fn applied_text(&self) -> String {
        let mut sorted: Vec<(&PolicyId, &Objects)> = self.applied.iter().collect();
        sorted.sort_by(|a, b| {
            let key = |id: &PolicyId| self.compiled.get(id).map(|p| p.sort_key().0);
            (key(a.0), a.0).cmp(&(key(b.0), b.0))
        });
        let mut parts: Vec<&Objects> = sorted.into_iter().map(|(_, o)| o).collect();
        if let Some(d) = &self.applied_dispatch {
            parts.push(d);
        }
        write_whole(&parts)
    }

    /// The kernel took `tx`.
    pub fn committed(&mut self, tx: Transaction) {
        for (id, objects) in tx.rendered {
            self.dirty.remove(&id);
            match objects {
                Some(o) => self.applied.insert(id, o),
                None => self.applied.remove(&id),
            };
        }
        self.applied_dispatch = Some(tx.dispatch);
        self.dispatch_dirty = false;
        if tx.whole {
            self.leftover_chains.clear();
            self.leftover_sets.clear();
        }
        self.whole = tx.changes != self.changes;
    }

    /// The kernel refused a transaction (it changed nothing): the next one is written whole.
    pub fn failed(&mut self) {
        self.whole = true;
    }
}
