//! Seeded random NetworkPolicies and labels over the conformance lab's cluster (namespaces x, y,
//! z; pods a, b, c), for the differential test: the same seed and pod addresses give the same
//! YAML and the same label changes, round after round.
//!
//! Round 1 gives every pod random extra labels (`role`, `tier`, `env`), every namespace random
//! labels besides `ns: NAME` (`team`, `env`), and 2-5 policies. Round 2 changes the state the
//! agents already hold: some pods and namespaces are relabelled, a policy may be deleted, one
//! may be replaced under its name, new ones may be added, and some pods swap the numbers behind
//! their named ports.
//!
//! Policies draw from: podSelector and namespaceSelector with matchLabels, matchExpressions (In,
//! NotIn, Exists, DoesNotExist; several requirements), both, or empty; policyTypes omitted,
//! Ingress, Egress or both (with the other direction's rules present but ignored sometimes);
//! `ingress`/`egress` absent, `[]`, `[{}]` or rules; peers by podSelector, namespaceSelector,
//! both in one peer, ipBlock (the pod CIDR with some pods' /32s excepted, one pod's /32, a /24
//! around a pod with a hole, a CIDR holding no pod, 0.0.0.0/0); ports by number (TCP by default,
//! TCP and UDP spelled out), a protocol without a port, endPort ranges, named ports (matching
//! and mismatching the protocol), SCTP, and a port nobody serves.
#![allow(dead_code)]

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

/// Extra pod label keys and their values (`pod: NAME` is always there).
const POD_LABELS: [(&str, &[&str]); 3] = [
    ("role", &["client", "server"]),
    ("tier", &["web", "db"]),
    ("env", &["prod", "dev"]),
];
/// Extra namespace label keys and their values (`ns: NAME` is always there).
const NS_LABELS: [(&str, &[&str]); 2] = [("team", &["blue", "red"]), ("env", &["prod", "dev"])];

/// What pod selectors may test: the extra labels and `pod` itself.
const POD_KEYS: [(&str, &[&str]); 4] = [
    ("pod", &PODS),
    ("role", &["client", "server"]),
    ("tier", &["web", "db"]),
    ("env", &["prod", "dev"]),
];
/// What namespace selectors may test, the name label Kubernetes sets included.
const NS_KEYS: [(&str, &[&str]); 4] = [
    ("ns", &NAMESPACES),
    ("kubernetes.io/metadata.name", &NAMESPACES),
    ("team", &["blue", "red"]),
    ("env", &["prod", "dev"]),
];

/// One NetworkPolicy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub yaml: String,
}

/// One round: the label state to reach and the policy changes to make, then compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Every pod's extra labels after the round (`NS/POD` -> key -> value); keys of
    /// [`POD_LABELS`] missing here are removed.
    pub pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The three Namespace documents with their labels for this round.
    pub namespaces: String,
    /// Created, or replaced when the name exists.
    pub apply: Vec<Policy>,
    /// `(namespace, name)` of policies to delete.
    pub delete: Vec<(String, String)>,
    /// Pods whose named ports change: `true` swaps the numbers behind the TCP and UDP names
    /// (`serve-80-tcp` then means 81), `false` restores them. Named ports resolve per
    /// destination pod, so this changes what policies naming ports admit.
    pub swap_ports: BTreeMap<String, bool>,
}

/// The rounds of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub seed: u64,
    pub rounds: Vec<Round>,
}

/// A pod's named ports (`NAME=PORT/PROTO`, as `trellisctl ports pod` takes them) with the
/// numbers behind the TCP and UDP names of 80 and 81 swapped.
pub fn swapped_ports(ports: &[String]) -> Vec<String> {
    ports
        .iter()
        .map(|p| {
            let swapped = match p.split_once('=') {
                Some((name, "80/TCP")) if name.ends_with("tcp") => format!("{name}=81/TCP"),
                Some((name, "81/TCP")) if name.ends_with("tcp") => format!("{name}=80/TCP"),
                Some((name, "80/UDP")) if name.ends_with("udp") => format!("{name}=81/UDP"),
                Some((name, "81/UDP")) if name.ends_with("udp") => format!("{name}=80/UDP"),
                _ => p.clone(),
            };
            swapped
        })
        .collect()
}

/// `trellisctl label pod` arguments that turn `from` into `to` for one pod: `k=v` for every
/// label of `to` that differs, `k-` for every extra key it lacks; empty if nothing changes.
pub fn label_changes(
    from: Option<&BTreeMap<String, String>>,
    to: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut changes = Vec::new();
    for (key, _) in POD_LABELS {
        let (old, new) = (from.and_then(|f| f.get(key)), to.get(key));
        match new {
            Some(v) if old != Some(v) => changes.push(format!("{key}={v}")),
            None if old.is_some() || from.is_none() => changes.push(format!("{key}-")),
            _ => {}
        }
    }
    changes
}

impl Scenario {
    /// The scenario of `seed` with `rounds` rounds (1 or more) over pods whose addresses are
    /// `pod_ips` (x/a, x/b ... z/c order; ipBlocks are built from them).
    pub fn new(seed: u64, rounds: usize, pod_ips: &[String]) -> Scenario {
        let mut g = Generator {
            rng: StdRng::seed_from_u64(seed),
            pod_ips: pod_ips.to_vec(),
            seed,
            next_policy: 0,
        };
        let mut out = Vec::new();
        let mut pod_labels = BTreeMap::new();
        for ns in NAMESPACES {
            for pod in PODS {
                pod_labels.insert(format!("{ns}/{pod}"), g.labels(&POD_LABELS));
            }
        }
        let mut ns_labels: Vec<_> = NAMESPACES.iter().map(|_| g.labels(&NS_LABELS)).collect();
        let n = g.rng.random_range(2..=5);
        let mut live: Vec<Policy> = (0..n).map(|_| g.policy()).collect();
        out.push(Round {
            pod_labels: pod_labels.clone(),
            namespaces: namespaces_yaml(&ns_labels),
            apply: live.clone(),
            delete: Vec::new(),
            swap_ports: BTreeMap::new(),
        });
        let mut swapped: BTreeMap<String, bool> =
            pod_labels.keys().map(|p| (p.clone(), false)).collect();
        for _ in 1..rounds {
            for labels in pod_labels.values_mut() {
                if g.rng.random_bool(0.35) {
                    *labels = g.labels(&POD_LABELS);
                }
            }
            for labels in &mut ns_labels {
                if g.rng.random_bool(0.3) {
                    *labels = g.labels(&NS_LABELS);
                }
            }
            let mut delete = Vec::new();
            if live.len() > 1 && g.rng.random_bool(0.5) {
                let p = live.remove(g.rng.random_range(0..live.len()));
                delete.push((p.namespace, p.name));
            }
            let mut apply = Vec::new();
            if g.rng.random_bool(0.5) {
                // Same name and namespace, new spec: an update in place.
                let i = g.rng.random_range(0..live.len());
                let p = g.policy_named(live[i].name.clone(), live[i].namespace.clone());
                live[i] = p.clone();
                apply.push(p);
            }
            for _ in 0..g.rng.random_range(0..=2) {
                let p = g.policy();
                live.push(p.clone());
                apply.push(p);
            }
            let mut swap_ports = BTreeMap::new();
            for (pod, state) in &mut swapped {
                if g.rng.random_bool(0.2) {
                    *state = !*state;
                    swap_ports.insert(pod.clone(), *state);
                }
            }
            out.push(Round {
                pod_labels: pod_labels.clone(),
                namespaces: namespaces_yaml(&ns_labels),
                apply,
                delete,
                swap_ports,
            });
        }
        Scenario { seed, rounds: out }
    }

    /// Every document the scenario applies, in order (for the generator's tests).
    pub fn yaml(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.rounds.iter().enumerate() {
            out.push_str(&format!(
                "# round {}\n{:?}\n{}",
                i + 1,
                r.pod_labels,
                r.namespaces
            ));
            for p in &r.apply {
                out.push_str(&p.yaml);
            }
            for (ns, name) in &r.delete {
                out.push_str(&format!("# delete {ns}/{name}\n"));
            }
            for (pod, swap) in &r.swap_ports {
                let what = if *swap { "swap" } else { "restore" };
                out.push_str(&format!("# {what} the named ports of {pod}\n"));
            }
        }
        out
    }
}

fn namespaces_yaml(labels: &[BTreeMap<String, String>]) -> String {
    NAMESPACES
        .iter()
        .zip(labels)
        .map(|(ns, extra)| {
            let extra: String = extra.iter().map(|(k, v)| format!(", {k}: {v}")).collect();
            format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}{extra}}}}}\n"
            )
        })
        .collect()
}

struct Generator {
    rng: StdRng,
    pod_ips: Vec<String>,
    seed: u64,
    next_policy: usize,
}

impl Generator {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.choose(&mut self.rng).expect("a non-empty list")
    }

    /// Each key present with probability 0.4, with a random value.
    fn labels(&mut self, keys: &[(&str, &[&str])]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, values) in keys {
            if self.rng.random_bool(0.4) {
                out.insert(key.to_string(), self.pick(values).to_string());
            }
        }
        out
    }

    /// One matchExpressions entry over `keys`.
    fn requirement(&mut self, keys: &[(&str, &[&str])]) -> String {
        let (key, values) = *keys.choose(&mut self.rng).expect("keys");
        match self.rng.random_range(0..4) {
            op @ (0 | 1) => {
                let n = self.rng.random_range(1..=2).min(values.len());
                let chosen: Vec<&str> = values.choose_multiple(&mut self.rng, n).copied().collect();
                let op = if op == 0 { "In" } else { "NotIn" };
                format!(
                    "{{key: {key}, operator: {op}, values: [{}]}}",
                    chosen.join(", ")
                )
            }
            2 => format!("{{key: {key}, operator: Exists}}"),
            _ => format!("{{key: {key}, operator: DoesNotExist}}"),
        }
    }

    fn match_labels(&mut self, keys: &[(&str, &[&str])], n: usize) -> String {
        let chosen: Vec<(&str, &[&str])> =
            keys.choose_multiple(&mut self.rng, n).copied().collect();
        let pairs: Vec<String> = chosen
            .into_iter()
            .map(|(k, values)| format!("{k}: {}", self.pick(values)))
            .collect();
        format!("matchLabels: {{{}}}", pairs.join(", "))
    }

    /// A label selector over `keys`: empty, matchLabels, matchExpressions, or both.
    fn selector(&mut self, keys: &[(&str, &[&str])]) -> String {
        match self.rng.random_range(0..7) {
            0 => "{}".to_string(),
            1 | 2 => {
                let n = self.rng.random_range(1..=2);
                format!("{{{}}}", self.match_labels(keys, n))
            }
            3..=5 => {
                let n = self.rng.random_range(1..=2);
                let reqs: Vec<String> = (0..n).map(|_| self.requirement(keys)).collect();
                format!("{{matchExpressions: [{}]}}", reqs.join(", "))
            }
            _ => {
                let labels = self.match_labels(keys, 1);
                let req = self.requirement(keys);
                format!("{{{labels}, matchExpressions: [{req}]}}")
            }
        }
    }

    fn pod_ip(&mut self) -> String {
        self.pod_ips
            .choose(&mut self.rng)
            .expect("pod addresses")
            .clone()
    }

    fn ip_block(&mut self) -> String {
        match self.rng.random_range(0..6) {
            0 | 1 => {
                let n = self.rng.random_range(1..=3);
                let except: Vec<String> = self
                    .pod_ips
                    .choose_multiple(&mut self.rng, n)
                    .map(|ip| format!("{ip}/32"))
                    .collect();
                format!("{{cidr: 10.244.0.0/16, except: [{}]}}", except.join(", "))
            }
            2 => format!("{{cidr: {}/32}}", self.pod_ip()),
            3 => {
                // The /24 around one pod, without that pod.
                let ip = self.pod_ip();
                let net = ip.rsplit_once('.').expect("an IPv4 address").0;
                format!("{{cidr: {net}.0/24, except: [{ip}/32]}}")
            }
            4 => "{cidr: 192.168.0.0/16}".to_string(),
            _ => "{cidr: 0.0.0.0/0}".to_string(),
        }
    }

    fn peer(&mut self) -> String {
        match self.rng.random_range(0..4) {
            0 => format!("{{podSelector: {}}}", self.selector(&POD_KEYS)),
            1 => format!("{{namespaceSelector: {}}}", self.selector(&NS_KEYS)),
            2 => format!(
                "{{namespaceSelector: {}, podSelector: {}}}",
                self.selector(&NS_KEYS),
                self.selector(&POD_KEYS)
            ),
            _ => format!("{{ipBlock: {}}}", self.ip_block()),
        }
    }

    fn port(&mut self) -> &'static str {
        const PORTS: [&str; 16] = [
            "{port: 80}",
            "{port: 81}",
            "{protocol: TCP, port: 81}",
            "{protocol: UDP, port: 80}",
            "{protocol: UDP, port: 81}",
            "{protocol: UDP}",
            "{protocol: TCP}",
            "{port: 80, endPort: 81}",
            "{protocol: UDP, port: 79, endPort: 80}",
            "{port: 81, endPort: 1000}",
            "{port: serve-80-tcp}",
            "{protocol: UDP, port: serve-81-udp}",
            // A TCP rule naming the UDP port: upstream resolves names per protocol, so nothing.
            "{port: serve-80-udp}",
            "{protocol: SCTP, port: 80}",
            "{protocol: SCTP}",
            "{port: 82}",
        ];
        PORTS.choose(&mut self.rng).expect("ports")
    }

    fn rules(&mut self, peers_key: &str) -> String {
        match self.rng.random_range(0..5) {
            0 => "[]".to_string(),
            1 => "[{}]".to_string(),
            _ => {
                let n = self.rng.random_range(1..=2);
                let rules: Vec<String> = (0..n)
                    .map(|_| {
                        let mut parts = Vec::new();
                        let peers = self.rng.random_range(0..=2);
                        if peers > 0 {
                            let list: Vec<String> = (0..peers).map(|_| self.peer()).collect();
                            parts.push(format!("{peers_key}: [{}]", list.join(", ")));
                        }
                        let ports = self.rng.random_range(0..=2);
                        if ports > 0 {
                            let list: Vec<&str> = (0..ports).map(|_| self.port()).collect();
                            parts.push(format!("ports: [{}]", list.join(", ")));
                        }
                        format!("{{{}}}", parts.join(", "))
                    })
                    .collect();
                format!("[{}]", rules.join(", "))
            }
        }
    }

    /// A new policy, named `rnd-SEED-N`, in a random namespace.
    fn policy(&mut self) -> Policy {
        let name = format!("rnd-{}-{}", self.seed, self.next_policy);
        self.next_policy += 1;
        let namespace = self.pick(&NAMESPACES).to_string();
        self.policy_named(name, namespace)
    }

    fn policy_named(&mut self, name: String, namespace: String) -> Policy {
        let mut spec = format!("  podSelector: {}\n", self.selector(&POD_KEYS));
        let types = self.pick(&["", "[Ingress]", "[Egress]", "[Ingress, Egress]"]);
        if !types.is_empty() {
            spec.push_str(&format!("  policyTypes: {types}\n"));
        }
        // With policyTypes given, rules of the other direction are ignored: sometimes present.
        let ingress = types.is_empty() || types.contains("Ingress") || self.rng.random_bool(0.2);
        if ingress && self.rng.random_bool(0.9) {
            spec.push_str(&format!("  ingress: {}\n", self.rules("from")));
        }
        // Omitted policyTypes mean Egress too exactly when `egress` is present.
        let egress = if types.is_empty() {
            self.rng.random_bool(0.35)
        } else {
            types.contains("Egress") || self.rng.random_bool(0.2)
        };
        if egress && self.rng.random_bool(0.9) {
            spec.push_str(&format!("  egress: {}\n", self.rules("to")));
        }
        let yaml = format!(
            "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
        );
        Policy {
            namespace,
            name,
            yaml,
        }
    }
}
