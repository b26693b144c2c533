//! The cluster `bench/policy` loads: namespaces, WorkloadEndpoints and NetworkPolicies as YAML
//! documents (what `trellisctl apply` takes), deterministic for given sizes.
//!
//! - `namespaces` namespaces `nsK`, labelled `team: tK%5`;
//! - `endpoints` pods `nsI%N/podI` on `node-I%nodes` (`node-0` is the benchmarked node), labelled
//!   `app: appI%200` and `tier: web|db|cache`, each with one IPv4 /32 and interface `trlI`;
//! - two real pods on `node-0` in `ns0`: `client` (`app: app0`, `role: client`) and `server`
//!   (`role: server`), with the addresses of [`CLIENT_IP`] and [`SERVER_IP`];
//! - `policies` NetworkPolicies of three shapes, by `p % 10`:
//!   - 1: in `ns0`, selecting `role In [server]`, admitting `app: appP%200` on TCP 5201 (the
//!     server is selected by a tenth of all policies; one more, `server-from-client`, admits
//!     the client);
//!   - 5: egress of `app: appP%200` in `nsP%N` to namespaces of team `tP%5` on UDP 53;
//!   - otherwise: ingress of `app: appP%200` in `nsP%N` from `tier: web` pods, from pods
//!     `app: app(P+1)%200` in namespaces of team `tP%5`, and from 192.168.0.0/16 except one /24,
//!     on TCP 80, 8000-8080 and the named port `http`.

use std::fmt::Write as _;

pub const NODE: &str = "node-0";
pub const CLIENT_IP: &str = "10.250.0.1";
pub const SERVER_IP: &str = "10.250.0.2";
pub const CLIENT_IFACE: &str = "trlbclient";
pub const SERVER_IFACE: &str = "trlbserver";
/// The port the server admits the client on.
pub const SERVER_PORT: u16 = 5201;

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub policies: usize,
    pub endpoints: usize,
    pub nodes: usize,
    pub namespaces: usize,
}

/// The address of generated endpoint `i` (10.200.0.0/14: never a real pod's).
pub fn endpoint_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 200 + i / 65536, (i / 256) % 256, i % 256)
}

/// Endpoint `i`'s WorkloadEndpoint with `app` as its app label.
pub fn endpoint_yaml(s: &Sizes, i: usize, app: &str) -> String {
    let tier = ["web", "db", "cache"][i % 3];
    wep(
        &format!("node-{}", i % s.nodes),
        &format!("ns{}", i % s.namespaces),
        &format!("pod{i}"),
        &format!("trl{i}"),
        &endpoint_ip(i),
        &format!("{{app: {app}, tier: {tier}}}"),
    )
}

/// The app label endpoint `i` starts with.
pub fn initial_app(i: usize) -> String {
    format!("app{}", i % 200)
}

fn wep(node: &str, ns: &str, pod: &str, iface: &str, ip: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: trellis.dev/v1\nkind: WorkloadEndpoint\nmetadata: {{name: {node}-k8s-{pod}-eth0, namespace: {ns}}}\n\
         spec: {{node: {node}, pod: {pod}, endpoint: eth0, containerID: c-{pod}, handleID: c-{pod}.eth0, interfaceName: {iface}, ipNetworks: [{ip}/32], labels: {labels}, \
         ports: [{{name: http, protocol: TCP, port: 8080}}]}}\n"
    )
}

/// Every document: namespaces, endpoints (with the two real pods), policies.
pub fn documents(s: &Sizes) -> String {
    let mut out = String::new();
    for n in 0..s.namespaces {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: t{}}}}}\n",
            n % 5
        );
    }
    for i in 0..s.endpoints {
        out.push_str(&endpoint_yaml(s, i, &initial_app(i)));
    }
    out.push_str(&wep(
        NODE,
        "ns0",
        "client",
        CLIENT_IFACE,
        CLIENT_IP,
        "{app: app0, role: client}",
    ));
    out.push_str(&wep(
        NODE,
        "ns0",
        "server",
        SERVER_IFACE,
        SERVER_IP,
        "{app: server, role: server}",
    ));
    for p in 0..s.policies {
        out.push_str(&policy(s, p));
    }
    out.push_str(&format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: server-from-client, namespace: ns0}}\n\
         spec: {{podSelector: {{matchLabels: {{role: server}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{role: client}}}}}}], ports: [{{port: {SERVER_PORT}}}]}}]}}\n"
    ));
    out
}

fn policy(s: &Sizes, p: usize) -> String {
    let head = |ns: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{p}, namespace: {ns}}}\nspec:\n"
        )
    };
    let app = format!("app{}", p % 200);
    let ns = format!("ns{}", p % s.namespaces);
    match p % 10 {
        1 => format!(
            "{}  podSelector: {{matchExpressions: [{{key: role, operator: In, values: [server]}}]}}\n  \
             ingress: [{{from: [{{podSelector: {{matchLabels: {{app: {app}}}}}}}], ports: [{{port: {SERVER_PORT}}}]}}]\n",
            head("ns0")
        ),
        5 => format!(
            "{}  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Egress]\n  \
             egress: [{{to: [{{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}], ports: [{{protocol: UDP, port: 53}}]}}]\n",
            head(&ns),
            p % 5
        ),
        _ => format!(
            "{}  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{tier: web}}}}\n    \
             - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchLabels: {{app: app{}}}}}\n    \
             - ipBlock: {{cidr: 192.168.0.0/16, except: [192.168.{}.0/24]}}\n    \
             ports: [{{port: 80}}, {{port: 8000, endPort: 8080}}, {{port: http}}]\n",
            head(&ns),
            p % 5,
            (p + 1) % 200,
            p % 200
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_datastore::resources::{parse_documents, AnyResource};

    #[test]
    fn the_documents_parse_validate_and_have_the_sizes_asked_for() {
        let s = Sizes {
            policies: 40,
            endpoints: 300,
            nodes: 10,
            namespaces: 5,
        };
        let text = documents(&s);
        assert_eq!(text, documents(&s), "deterministic");
        let docs = parse_documents(&text, "bench.yaml").unwrap();
        let (mut ns, mut weps, mut nps) = (0, 0, 0);
        for d in &docs {
            match d {
                AnyResource::Namespace(_) => ns += 1,
                AnyResource::WorkloadEndpoint(w) => {
                    w.validate().unwrap();
                    weps += 1;
                }
                AnyResource::NetworkPolicy(p) => {
                    p.validate().unwrap();
                    nps += 1;
                }
                other => panic!("{}", other.kind()),
            }
        }
        assert_eq!((ns, weps, nps), (5, 302, 41));
        // A tenth of the policies select the server.
        assert_eq!(text.matches("values: [server]").count(), 4);
    }

    /// The selections the benchmark relies on, as the compiler sees them: the server is
    /// selected by a tenth of the policies plus `server-from-client`, and the relabel's two app
    /// values put a local pod under different, non-empty sets of policies.
    #[test]
    fn the_compiler_selects_what_the_benchmark_expects() {
        use trellis_policy::{resources, Direction, EndpointKey};

        let s = Sizes {
            policies: 1000,
            endpoints: 2000,
            nodes: 20,
            namespaces: 50,
        };
        let selecting = |app: &str| {
            // Endpoint 0 is local (node-0) and in ns0, as the relabels pick it.
            let mut text = documents(&s);
            text.push_str(&endpoint_yaml(&s, 0, app));
            let docs = parse_documents(&text, "bench.yaml").unwrap();
            let (mut namespaces, mut weps, mut nps) = (Vec::new(), Vec::new(), Vec::new());
            for d in &docs {
                match d {
                    AnyResource::Namespace(n) => namespaces.push(n),
                    AnyResource::WorkloadEndpoint(w) => weps.push(w),
                    AnyResource::NetworkPolicy(p) => nps.push(p),
                    _ => {}
                }
            }
            let model = resources::model(namespaces, [], weps);
            let (policies, problems) = resources::compile_all(&model, nps, []);
            assert!(problems.is_empty(), "{problems:?}");
            let of = |key: &EndpointKey| -> Vec<String> {
                policies
                    .iter()
                    .filter(|p| {
                        [Direction::Ingress, Direction::Egress]
                            .into_iter()
                            .filter_map(|d| p.direction(d))
                            .any(|pd| pd.selected.contains(key))
                    })
                    .map(|p| p.id.to_string())
                    .collect()
            };
            (
                of(&EndpointKey::new("ns0", "server")),
                of(&EndpointKey::new("ns0", "pod0")),
            )
        };
        let (server, app0) = selecting("app0");
        let (_, app50) = selecting("app50");
        assert_eq!(server.len(), 101, "{server:?}");
        assert!(!app0.is_empty() && !app50.is_empty());
        assert_ne!(app0, app50);
    }
}
