//! nftables rendering: golden files (exact text, deterministic), and the kernel taking the
//! transaction (in a network namespace of the test's own; needs root).

use std::collections::BTreeMap;
use std::process::Command;

use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_policy::render::{block_ranges, is_via_chain, render_node};
use trellis_policy::{
    compile_global_policy, compile_network_policy, CompiledPolicy, Endpoint, EndpointKey, Model,
    NamedPort, Proto,
};

fn model() -> Model {
    let mut m = Model::default();
    m.set_namespace("x", &BTreeMap::from([("ns".into(), "x".into())]));
    m.set_namespace("y", &BTreeMap::from([("ns".into(), "y".into())]));
    for (ns, pod, ip, ip6, node) in [
        ("x", "a", "10.244.1.2", "fd00:244::1:2", "node-1"),
        ("x", "b", "10.244.1.3", "fd00:244::1:3", "node-1"),
        ("y", "a", "10.244.2.2", "fd00:244::2:2", "node-2"),
    ] {
        m.add_endpoint(Endpoint {
            key: EndpointKey::new(ns, pod),
            labels: BTreeMap::from([("pod".into(), pod.into())]),
            ips: vec![ip.parse().unwrap(), ip6.parse().unwrap()],
            iface: format!("trl{ns}{pod}0"),
            node: node.into(),
            ports: vec![NamedPort {
                name: "web".into(),
                proto: Proto::Tcp,
                port: if pod == "b" { 8080 } else { 80 },
            }],
        });
    }
    m
}

fn compile(yaml: &str, m: &Model) -> Vec<CompiledPolicy> {
    parse_documents(yaml, "golden.yaml")
        .unwrap()
        .into_iter()
        .map(|r| match r {
            AnyResource::NetworkPolicy(np) => compile_network_policy(&np, m).unwrap(),
            AnyResource::GlobalNetworkPolicy(p) => {
                p.validate().unwrap();
                compile_global_policy(&p, m).unwrap()
            }
            other => panic!("{}", other.kind()),
        })
        .collect()
}

const POLICIES: &str = "
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: web-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
    ports:
    - port: web
    - protocol: UDP
      port: 53
      endPort: 54
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: no-egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
";

/// Every GlobalNetworkPolicy match, and every action.
const GLOBAL_POLICIES: &str = "
kind: GlobalNetworkPolicy
apiVersion: trellis.dev/v1
metadata: {name: platform}
spec:
  order: 100
  namespaceSelector: ns == 'x'
  types: [Ingress, Egress]
  ingress:
  - action: Log
    protocol: TCP
    source: {notNets: [10.0.0.0/8], ports: ['1024:65535']}
  - action: Deny
    protocol: TCP
    destination: {notPorts: [22, '8000:8100', web]}
  - action: Allow
    protocol: TCP
    destination: {ports: [443, web]}
    source: {selector: pod == 'a', namespaceSelector: ns == 'y', nets: [10.244.2.0/24]}
  - action: Pass
    ipVersion: 6
    notProtocol: UDP
    source: {notSelector: pod == 'b'}
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Allow
    protocol: ICMPv6
    notICMP: {type: 1, code: 3}
  - action: Allow
    protocol: 47
  egress:
  - action: Deny
    destination: {nets: ['fd00:244::2:0/112']}
  - action: Allow
    protocol: UDP
    source: {notPorts: [53]}
    destination: {ports: [53]}
---
kind: GlobalNetworkPolicy
apiVersion: trellis.dev/v1
metadata: {name: last-resort}
spec:
  selector: pod == 'b'
  ingress:
  - action: Deny
";

/// Compares with `tests/golden/NAME`; `TRELLIS_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, got: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "{path} differs; got:\n{got}");
}

#[test]
fn node_1_transaction_matches_the_golden_file() {
    let m = model();
    golden(
        "node-1.nft",
        &render_node(&compile(POLICIES, &m), &m, "node-1"),
    );
}

#[test]
fn node_1_transaction_with_global_policies_matches_the_golden_file() {
    let m = model();
    golden(
        "node-1-global.nft",
        &render_node(
            &compile(&format!("{POLICIES}---\n{GLOBAL_POLICIES}"), &m),
            &m,
            "node-1",
        ),
    );
}

/// A relabel into a combination of policies another pod already has: set and map elements
/// change, rules do not, and no dispatch chain is needed that was not there (the one nobody
/// uses any more drops out of a from-scratch rendering; the agent's engine keeps it).
#[test]
fn a_relabel_changes_set_elements_only() {
    let m = model();
    let before = render_node(&compile(POLICIES, &m), &m, "node-1");
    // x/b becomes pod=a: selected by web-from-y, like x/a, instead of by no-egress.
    let mut relabelled = m.clone();
    relabelled
        .endpoints
        .get_mut(&EndpointKey::new("x", "b"))
        .unwrap()
        .labels
        .insert("pod".into(), "a".into());
    let after = render_node(&compile(POLICIES, &relabelled), &relabelled, "node-1");
    let object = |l: &str| l.split_whitespace().nth(4).unwrap_or("").to_string();
    let rules = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("add element") && !is_via_chain(&object(l)))
            .map(str::to_string)
            .collect()
    };
    let vias = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines().map(object).filter(|o| is_via_chain(o)).collect()
    };
    assert_eq!(rules(&before), rules(&after), "only elements may change");
    assert!(vias(&after).is_subset(&vias(&before)), "{after}");
    assert!(
        vias(&after).len() < vias(&before).len(),
        "no-egress's chain is unused"
    );
    assert_ne!(before, after, "the elements do change");
}

#[test]
fn ip_blocks_become_ranges_without_the_exceptions() {
    let b = trellis_policy::ir::IpBlock {
        cidr: "10.0.0.0/16".parse().unwrap(),
        except: vec![
            "10.0.1.0/24".parse().unwrap(),
            "10.0.255.0/24".parse().unwrap(),
        ],
    };
    let r: Vec<String> = block_ranges(&b)
        .into_iter()
        .map(|(s, e)| format!("{s}-{e}"))
        .collect();
    assert_eq!(r, ["10.0.0.0-10.0.0.255", "10.0.2.0-10.0.254.255"]);
}

#[test]
fn the_kernel_takes_the_transaction_in_a_namespace_of_its_own() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|s| s.split_whitespace().nth(1).unwrap().to_string())
        })
        .unwrap();
    assert_eq!(
        uid, "0",
        "creates a network namespace: run as root (CI does)"
    );
    let m = model();
    let text = render_node(
        &compile(&format!("{POLICIES}---\n{GLOBAL_POLICIES}"), &m),
        &m,
        "node-1",
    );
    let ns = format!("trl-pol{}", std::process::id());
    let run = |args: &[&str]| Command::new("ip").args(args).output().unwrap();
    assert!(run(&["netns", "add", &ns]).status.success());
    let file = std::env::temp_dir().join(format!("{ns}.nft"));
    std::fs::write(&file, &text).unwrap();
    let apply = run(&["netns", "exec", &ns, "nft", "-f", file.to_str().unwrap()]);
    // Applying twice is the steady state (the agent re-applies): create-if-missing, flush, fill.
    let again = run(&["netns", "exec", &ns, "nft", "-f", file.to_str().unwrap()]);
    let listed = run(&[
        "netns", "exec", &ns, "nft", "list", "table", "inet", "trellis",
    ]);
    let _ = run(&["netns", "delete", &ns]);
    let _ = std::fs::remove_file(&file);
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    assert!(apply.status.success(), "nft -f: {}\n{text}", err(&apply));
    assert!(again.status.success(), "second nft -f: {}", err(&again));
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("chain policy-forward"), "{listing}");
}
