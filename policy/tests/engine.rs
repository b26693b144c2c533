//! The incremental engine against compiling and rendering everything from scratch: seeded
//! random sequences of pod, namespace and policy changes, after each of which the engine's
//! compiled policies and the kernel state it believes in must equal the from-scratch ones;
//! and, with a real kernel, the change transactions applied one after another must leave the
//! same ruleset as the whole transaction applied once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_policy::render::render_node;
use trellis_policy::resources::compile_all;
use trellis_policy::{Endpoint, EndpointKey, Engine, Model, NamedPort, PolicyId, Proto, Source};

const NODE: &str = "node-1";
const NAMESPACES: [&str; 4] = ["x", "y", "z", "w"];
const PODS: [&str; 4] = ["a", "b", "c", "d"];

/// Policies the sequences add, change (two documents share a name) and remove.
const CORPUS: &str = "
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}}
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
    - podSelector: {matchExpressions: [{key: role, operator: In, values: [client]}]}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}
    ports: [{port: web}, {protocol: UDP, port: 53, endPort: 54}]
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: egress, namespace: y}
spec:
  podSelector: {matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}}]
    ports: [{port: dns, protocol: UDP}, {port: 80}]
  - to: [{ipBlock: {cidr: 'fd00::/16'}}]
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: all-in, namespace: z}
spec:
  podSelector: {matchExpressions: [{key: role, operator: DoesNotExist}]}
  ingress: [{}]
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: from-w, namespace: z}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: w}}}]
    ports: [{protocol: SCTP}]
---
kind: GlobalNetworkPolicy
apiVersion: trellis.dev/v1
metadata: {name: platform}
spec:
  order: 100
  namespaceSelector: team == 'blue'
  types: [Ingress, Egress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {notPorts: [22, web]}
  - action: Allow
    protocol: TCP
    source: {selector: role == 'client', namespaceSelector: has(team), notNets: [10.0.3.0/24]}
    destination: {ports: [443, web]}
  - action: Pass
    source: {notSelector: env == 'prod'}
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [dns], selector: all()}
---
kind: GlobalNetworkPolicy
apiVersion: trellis.dev/v1
metadata: {name: platform}
spec:
  order: 2000
  selector: pod in {'a', 'b'}
  ingress:
  - action: Log
  - action: Deny
    source: {selector: env == 'dev'}
---
kind: GlobalNetworkPolicy
apiVersion: trellis.dev/v1
metadata: {name: last-resort}
spec:
  selector: has(role)
  ingress: [{action: Deny}]
";

fn corpus() -> Vec<Source> {
    parse_documents(CORPUS, "corpus.yaml")
        .unwrap()
        .into_iter()
        .map(|r| match r {
            AnyResource::NetworkPolicy(np) => {
                np.validate().unwrap();
                Source::Network(Box::new(np))
            }
            AnyResource::GlobalNetworkPolicy(p) => {
                p.validate().unwrap();
                Source::Global(Box::new(p))
            }
            other => panic!("{}", other.kind()),
        })
        .collect()
}

/// The cluster as the sequence built it, kept independently of the engine.
#[derive(Default)]
struct World {
    model: Model,
    policies: BTreeMap<PolicyId, Source>,
}

impl World {
    fn scratch(&self) -> (Vec<trellis_policy::CompiledPolicy>, String) {
        let (mut nps, mut gnps) = (Vec::new(), Vec::new());
        for s in self.policies.values() {
            match s {
                Source::Network(np) => nps.push(np.as_ref().clone()),
                Source::Global(p) => gnps.push(p.as_ref().clone()),
            }
        }
        let (mut compiled, _) = compile_all(&self.model, &nps, &gnps);
        compiled.sort_by(|a, b| a.id.cmp(&b.id));
        let text = render_node(&compiled, &self.model, NODE);
        (compiled, text)
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn random_endpoint(rng: &mut StdRng) -> Endpoint {
    let (n, p) = (rng.random_range(0..4), rng.random_range(0..4));
    let mut l = labels(&[("pod", PODS[p])]);
    if rng.random_bool(0.4) {
        l.insert(
            "role".into(),
            ["client", "server"][rng.random_range(0..2)].into(),
        );
    }
    if rng.random_bool(0.4) {
        l.insert("env".into(), ["dev", "prod"][rng.random_range(0..2)].into());
    }
    // Addresses move now and then (a pod recreated), and sometimes collide with another's.
    let host = 1 + p + 4 * rng.random_range(0..2);
    let mut ips: Vec<IpAddr> = vec![format!("10.0.{}.{host}", n + 1).parse().unwrap()];
    if rng.random_bool(0.5) {
        ips.push(format!("fd00::{}:{host}", n + 1).parse().unwrap());
    }
    let mut ports = Vec::new();
    if rng.random_bool(0.6) {
        ports.push(NamedPort {
            name: "web".into(),
            proto: Proto::Tcp,
            port: [80, 81][rng.random_range(0..2)],
        });
    }
    if rng.random_bool(0.4) {
        ports.push(NamedPort {
            name: "dns".into(),
            proto: Proto::Udp,
            port: 53,
        });
    }
    Endpoint {
        key: EndpointKey::new(NAMESPACES[n], PODS[p]),
        labels: l,
        ips,
        iface: format!("trl{}{}{}", NAMESPACES[n], PODS[p], rng.random_range(0..2)),
        node: format!("node-{}", 1 + rng.random_range(0..3)),
        ports,
    }
}

/// One random change, to the world and the engine alike.
fn step(rng: &mut StdRng, world: &mut World, engine: &mut Engine, corpus: &[Source]) {
    match rng.random_range(0..11) {
        0..=4 => {
            let e = random_endpoint(rng);
            world.model.add_endpoint(e.clone());
            engine.set_endpoint(e.key.clone(), Some(e));
        }
        5 => {
            let k = EndpointKey::new(
                NAMESPACES[rng.random_range(0..4)],
                PODS[rng.random_range(0..4)],
            );
            world.model.endpoints.remove(&k);
            engine.set_endpoint(k, None);
        }
        6 => {
            let ns = NAMESPACES[rng.random_range(0..4)];
            let l = match rng.random_range(0..3) {
                0 => labels(&[("ns", ns)]),
                1 => labels(&[("ns", ns), ("team", "blue")]),
                _ => labels(&[("team", "red")]),
            };
            world.model.set_namespace(ns, &l);
            engine.set_namespace(ns, Some(&l));
        }
        7 | 8 => {
            let s = corpus[rng.random_range(0..corpus.len())].clone();
            world.policies.insert(s.id(), s.clone());
            engine.set_policy(s.id(), Some(s));
        }
        9 => {
            let id = corpus[rng.random_range(0..corpus.len())].id();
            world.policies.remove(&id);
            engine.set_policy(id, None);
        }
        _ => engine.replace_all(world.model.clone(), world.policies.values().cloned()),
    }
}

/// `text` without the dispatch chains (kept for later relabels) that no map element jumps to.
fn without_unused_vias(text: &str) -> String {
    let used = |name: &str| {
        text.lines()
            .any(|l| l.starts_with("add element ") && l.contains(&format!("jump {name}")))
    };
    text.lines()
        .filter(|l| {
            // `add chain|flush chain|add rule inet trellis NAME ...`
            let name = l.split_whitespace().nth(4).unwrap_or("");
            !trellis_policy::render::is_via_chain(name) || used(name)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn compiled_of(engine: &Engine) -> Vec<trellis_policy::CompiledPolicy> {
    let mut v: Vec<_> = engine.policies().cloned().collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[test]
fn random_changes_leave_the_engine_where_a_fresh_compile_would_be() {
    let corpus = corpus();
    let (mut whole, mut diffs) = (0, 0);
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut world = World::default();
        let mut engine = Engine::new(NODE);
        for i in 0..150 {
            step(&mut rng, &mut world, &mut engine, &corpus);
            // Several changes may go into one transaction, as in the agent.
            if rng.random_bool(0.3) {
                continue;
            }
            if let Some(tx) = engine.transaction() {
                if tx.whole {
                    whole += 1;
                } else {
                    diffs += 1;
                }
                // Now and then the kernel refuses: nothing changes, the next one is whole.
                if rng.random_bool(0.05) {
                    engine.failed();
                    continue;
                }
                engine.committed(tx);
            }
            let (compiled, text) = world.scratch();
            assert_eq!(
                compiled_of(&engine),
                compiled,
                "seed {seed} step {i}: compiled policies"
            );
            assert_eq!(
                without_unused_vias(&engine.applied_text()),
                text,
                "seed {seed} step {i}: the kernel state"
            );
        }
    }
    assert!(
        diffs > 10 * whole,
        "{diffs} change transactions, {whole} whole ones"
    );
}

#[test]
fn a_relabel_is_element_changes_only() {
    let corpus = corpus();
    let mut engine = Engine::new(NODE);
    for s in &corpus {
        engine.set_policy(s.id(), Some(s.clone()));
    }
    let plain = Endpoint {
        key: EndpointKey::new("x", "a"),
        labels: labels(&[("pod", "a")]),
        ips: vec!["10.0.1.1".parse().unwrap()],
        iface: "trlxa".into(),
        node: NODE.into(),
        ports: vec![],
    };
    let mut client = plain.clone();
    client.labels.insert("role".into(), "client".into());
    engine.set_endpoint(plain.key.clone(), Some(plain.clone()));
    let tx = engine.transaction().unwrap();
    assert!(tx.whole, "the first transaction is whole");
    engine.committed(tx);
    assert!(engine.transaction().is_none(), "nothing changed");
    // The first time x/a has this combination of policies, its dispatch chain is made...
    engine.set_endpoint(client.key.clone(), Some(client.clone()));
    let tx = engine.transaction().unwrap();
    assert!(!tx.whole && tx.elements.is_none(), "{}", tx.text);
    assert!(
        tx.text.contains("add chain inet trellis in-via-"),
        "{}",
        tx.text
    );
    engine.committed(tx);
    // ...after that, relabels back and forth are elements only, and the same as data.
    for e in [&plain, &client, &plain] {
        engine.set_endpoint(e.key.clone(), Some(e.clone()));
        let tx = engine.transaction().unwrap();
        assert!(!tx.whole);
        assert!(
            tx.text
                .lines()
                .all(|l| l.starts_with("add element ") || l.starts_with("delete element ")),
            "{}",
            tx.text
        );
        assert!(tx.text.contains("element inet trellis gnp-"), "{}", tx.text);
        assert!(
            tx.text.contains("element inet trellis in-dispatch"),
            "{}",
            tx.text
        );
        let ops = tx.elements.as_ref().expect("elements only");
        assert_eq!(ops.len(), tx.text.lines().count());
        engine.committed(tx);
    }
}

// ---- the kernel: change transactions vs one whole transaction ----

fn run(args: &[&str], input: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `nft list table` with the parts whose order the kernel does not keep put in order: chains
/// and sets by name, and set elements.
fn normalized_listing(ns: &str) -> String {
    let out = run(
        &[
            "ip", "netns", "exec", ns, "nft", "list", "table", "inet", "trellis",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut blocks: Vec<String> = Vec::new();
    let mut current = String::new();
    let lines: Vec<&str> = text.lines().collect();
    // Without `table inet trellis {` and its closing brace.
    for line in &lines[1..lines.len() - 1] {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if (t.starts_with("chain ") || t.starts_with("set ") || t.starts_with("map "))
            && !current.is_empty()
        {
            blocks.push(std::mem::take(&mut current));
        }
        current.push_str(t);
        current.push('\n');
    }
    blocks.push(current);
    let mut blocks: Vec<String> = blocks
        .into_iter()
        .map(|b| {
            // elements = { a, b,\n c } -> sorted
            match (b.find("elements = {"), b.rfind('}')) {
                (Some(start), Some(_)) => {
                    let body_start = start + "elements = {".len();
                    let end = body_start + b[body_start..].find('}').unwrap();
                    let mut items: Vec<&str> = b[body_start..end]
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect();
                    items.sort();
                    format!("{}{}{}", &b[..body_start], items.join(", "), &b[end..])
                }
                _ => b,
            }
        })
        .collect();
    // Dispatch chains kept for later relabels that no map element jumps to.
    let all = blocks.concat();
    blocks.retain(|b| {
        let name = b
            .strip_prefix("chain ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("");
        !trellis_policy::render::is_via_chain(name) || all.contains(&format!("jump {name}"))
    });
    blocks.sort();
    blocks.concat()
}

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("trl-eng{tag}{}", std::process::id());
        let out = run(&["ip", "netns", "add", &name], None);
        assert!(
            out.status.success(),
            "creates a network namespace: run as root (CI does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }

    fn apply(&self, text: &str) {
        let out = run(
            &["ip", "netns", "exec", &self.0, "nft", "-f", "-"],
            Some(text),
        );
        assert!(
            out.status.success(),
            "nft -f in {}: {}\n{text}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "delete", &self.0], None);
    }
}

#[test]
fn change_transactions_leave_the_kernel_as_one_whole_transaction_would() {
    let incremental = Netns::new("i");
    let corpus = corpus();
    let mut rng = StdRng::seed_from_u64(7);
    let mut world = World::default();
    let mut engine = Engine::new(NODE);
    let mut applied = 0;
    for i in 0..120 {
        step(&mut rng, &mut world, &mut engine, &corpus);
        if let Some(tx) = engine.transaction() {
            if !tx.text.is_empty() {
                incremental.apply(&tx.text);
                applied += 1;
            }
            engine.committed(tx);
        }
        if i % 20 == 19 {
            let fresh = Netns::new("f");
            fresh.apply(&world.scratch().1);
            assert_eq!(
                normalized_listing(&incremental.0),
                normalized_listing(&fresh.0),
                "after step {i}"
            );
        }
    }
    assert!(applied > 60, "{applied} transactions");
}
