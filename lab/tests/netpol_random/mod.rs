//! Random NetworkPolicies and labels over the conformance lab's cluster (namespaces x, y, z;
//! pods a, b, c), from a seed: the same seed gives the same YAML and the same label changes.
//! Covers podSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist, empty),
//! policyTypes (omitted, Ingress, Egress, both), `[]` / `[{}]` / rules, peers (podSelector,
//! namespaceSelector, both in one peer, ipBlock with except), ports (number, UDP, a protocol
//! without port, endPort, named port). Not covered: SCTP (no sockets on this kernel).
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

/// One seed's scenario: label changes (`NS/POD`, `k=v` or `k-`), namespace labels (YAML) and
/// policies (YAML, with their names for deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub pod_labels: Vec<(String, String)>,
    pub namespaces: String,
    pub policies: Vec<(String, String, String)>,
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn pod_selector(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => "{}".to_string(),
        1 => format!("{{matchLabels: {{pod: {}}}}}", pick(rng, &PODS)),
        2 => format!(
            "{{matchExpressions: [{{key: role, operator: In, values: [{}]}}]}}",
            pick(rng, &["client", "server"])
        ),
        3 => format!(
            "{{matchExpressions: [{{key: pod, operator: NotIn, values: [{}]}}]}}",
            pick(rng, &PODS)
        ),
        4 => "{matchExpressions: [{key: role, operator: Exists}]}".to_string(),
        _ => "{matchExpressions: [{key: role, operator: DoesNotExist}]}".to_string(),
    }
}

fn namespace_selector(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => "{}".to_string(),
        1 => format!("{{matchLabels: {{ns: {}}}}}", pick(rng, &NAMESPACES)),
        2 => "{matchLabels: {team: blue}}".to_string(),
        _ => format!(
            "{{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: NotIn, values: [{}]}}]}}",
            pick(rng, &NAMESPACES)
        ),
    }
}

fn peer(rng: &mut StdRng, pod_ips: &[String]) -> String {
    match rng.random_range(0..4) {
        0 => format!("{{podSelector: {}}}", pod_selector(rng)),
        1 => format!("{{namespaceSelector: {}}}", namespace_selector(rng)),
        2 => format!(
            "{{namespaceSelector: {}, podSelector: {}}}",
            namespace_selector(rng),
            pod_selector(rng)
        ),
        _ => {
            let except = &pod_ips[rng.random_range(0..pod_ips.len())];
            format!("{{ipBlock: {{cidr: 10.244.0.0/16, except: [{except}/32]}}}}")
        }
    }
}

fn ports(rng: &mut StdRng) -> Option<String> {
    let n = rng.random_range(0..3);
    if n == 0 {
        return None;
    }
    let list: Vec<&str> = (0..n)
        .map(|_| {
            pick(
                rng,
                &[
                    "{port: 80}",
                    "{protocol: UDP, port: 81}",
                    "{protocol: UDP}",
                    "{port: 80, endPort: 81}",
                    "{port: serve-81-tcp}",
                    "{protocol: UDP, port: serve-80-udp}",
                ],
            )
        })
        .collect();
    Some(format!("[{}]", list.join(", ")))
}

fn rules(rng: &mut StdRng, key: &str, pod_ips: &[String]) -> String {
    match rng.random_range(0..4) {
        0 => "[]".to_string(),
        1 => "[{}]".to_string(),
        _ => {
            let n = rng.random_range(1..3);
            let rules: Vec<String> = (0..n)
                .map(|_| {
                    let mut parts = Vec::new();
                    let peers = rng.random_range(0..3);
                    if peers > 0 {
                        let list: Vec<String> = (0..peers).map(|_| peer(rng, pod_ips)).collect();
                        parts.push(format!("{key}: [{}]", list.join(", ")));
                    }
                    if let Some(p) = ports(rng) {
                        parts.push(format!("ports: {p}"));
                    }
                    format!("{{{}}}", parts.join(", "))
                })
                .collect();
            format!("[{}]", rules.join(", "))
        }
    }
}

/// One policy named `name`: (namespace, name, YAML).
pub fn policy(rng: &mut StdRng, name: &str, pod_ips: &[String]) -> (String, String, String) {
    let ns = pick(rng, &NAMESPACES).to_string();
    let mut spec = vec![format!("podSelector: {}", pod_selector(rng))];
    let types = pick(rng, &["", "[Ingress]", "[Egress]", "[Ingress, Egress]"]);
    if !types.is_empty() {
        spec.push(format!("policyTypes: {types}"));
    }
    if types.is_empty() || types.contains("Ingress") || rng.random_bool(0.3) {
        spec.push(format!("ingress: {}", rules(rng, "from", pod_ips)));
    }
    if types.contains("Egress") || (types.is_empty() && rng.random_bool(0.3)) {
        spec.push(format!("egress: {}", rules(rng, "to", pod_ips)));
    }
    let yaml = format!(
        "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{{}}}\n",
        spec.join(", ")
    );
    (ns, name.to_string(), yaml)
}

/// The scenario of `seed` over pods with addresses `pod_ips` (in x/a, x/b ... z/c order).
pub fn scenario(seed: u64, pod_ips: &[String]) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pod_labels = Vec::new();
    for ns in NAMESPACES {
        for pod in PODS {
            if rng.random_bool(0.5) {
                let role = pick(&mut rng, &["client", "server"]);
                pod_labels.push((format!("{ns}/{pod}"), format!("role={role}")));
            }
        }
    }
    let namespaces = NAMESPACES
        .iter()
        .map(|ns| {
            let team = if rng.random_bool(0.5) { ", team: blue" } else { "" };
            format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}{team}}}}}\n"
            )
        })
        .collect();
    let n = rng.random_range(2..6);
    let policies = (0..n)
        .map(|i| policy(&mut rng, &format!("rnd-{seed}-{i}"), pod_ips))
        .collect();
    Scenario {
        pod_labels,
        namespaces,
        policies,
    }
}
