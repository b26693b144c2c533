//! A route reflector serving five lab nodes (real binaries, real etcd, BIRD 2, namespaces;
//! needs root): `trellis-lab up --bgp --route-reflector trellis|bird`, dual stack, one pod per
//! node. Every node peers with the reflector alone (one global BGPPeer per family, the mesh
//! off), learns the other four nodes' blocks through it with the owning node still the next hop
//! (RFC 4456 10: a reflector does not change the next hop), and every pod reaches every other.

mod lab_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lab_support::{
    add_pods, agent_status, assert_all_pairs_reach, bin_dir, lab, node_exec, ok,
    require_root_and_binaries, wait_until, Lab, Pod,
};

const NODES: usize = 5;
const RR_V4: &str = "172.30.0.254";
const RR_V6: &str = "fd00:172:30::fe";

fn up(name: &str, reflector: &str) {
    let nodes = NODES.to_string();
    ok(&[
        "up",
        "--name",
        name,
        "--nodes",
        &nodes,
        "--encap",
        "none",
        "--bgp",
        "--route-reflector",
        reflector,
        "--dual-stack",
    ]);
}

/// Node n's underlay addresses (IPv4, IPv6): the next hops its blocks must keep.
fn node_addrs(n: usize) -> (String, String) {
    (format!("172.30.0.{n}"), format!("fd00:172:30::{n:x}"))
}

/// Waits until every node's agent has exactly the reflector's two sessions, both global and
/// Established, and no mesh peer.
fn wait_for_reflector_sessions(name: &str) {
    let want: Vec<IpAddr> = [RR_V4, RR_V6].iter().map(|a| a.parse().unwrap()).collect();
    for n in 1..=NODES {
        let node = format!("node-{n}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let bgp = agent_status(name, &node).and_then(|s| s.bgp);
            let done = bgp.as_ref().is_some_and(|b| {
                let mut addrs: Vec<IpAddr> = b.peers.iter().map(|p| p.address).collect();
                addrs.sort();
                addrs == want
                    && b.peers
                        .iter()
                        .all(|p| p.kind == "global" && p.state == "Established")
            });
            if done {
                let b = bgp.unwrap();
                assert!(b.problems.is_empty(), "{node}: {:#?}", b.problems);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: not exactly the reflector's sessions, global and Established: {bgp:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The BGP-learned (protocol 81) routes of `node` in `family` (`-4`/`-6`), one per line.
fn bgp_routes(name: &str, node: &str, family: &str) -> Vec<String> {
    node_exec(name, node, &["ip", family, "route", "show", "proto", "81"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Waits until every node's protocol 81 routes are exactly the other nodes' blocks (one per
/// family each), each covering that node's pod and via that node's own address.
fn wait_for_reflected_routes(name: &str, pods: &[Pod]) {
    for n in 1..=NODES {
        let node = format!("node-{n}");
        for (family, v6) in [("-4", false), ("-6", true)] {
            let others: Vec<(usize, &Pod)> = (1..=NODES)
                .zip(pods)
                .filter(|(owner, _)| *owner != n)
                .collect();
            let check = |routes: &[String]| {
                routes.len() == NODES - 1
                    && others.iter().all(|(owner, pod)| {
                        let (hop4, hop6) = node_addrs(*owner);
                        let (ip, hop) = if v6 { (&pod.2, hop6) } else { (&pod.1, hop4) };
                        let block = node_exec(
                            name,
                            &node,
                            &["ip", family, "route", "show", "proto", "81", "match", ip],
                        );
                        block.contains(&format!(" via {hop} dev eth0"))
                    })
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let routes = bgp_routes(name, &node, family);
                if check(&routes) {
                    println!("{node} proto 81 {family}:\n  {}", routes.join("\n  "));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{node}: proto 81 {family} routes are not the other {} nodes' blocks via \
                     their own addresses:\n{}",
                    NODES - 1,
                    routes.join("\n")
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What every reflector test checks once the lab is up with a pod on each node.
fn assert_reflection(name: &str, pods: &[Pod]) {
    wait_for_reflector_sessions(name);
    wait_for_reflected_routes(name, pods);
    assert_all_pairs_reach(name, pods, "through routes from the reflector");
}

/// trellis-bgp's log (plain text: it colours only a terminal).
fn trellis_bgp_log(name: &str) -> String {
    let path = format!("/run/trellis-lab/{name}/trellis-bgp.log");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!log.contains('\u{1b}'), "colour codes in {path}");
    log
}

/// The last status line trellis-bgp logged for `peer`.
fn last_session_line(log: &str, peer: &str) -> Option<String> {
    let key = format!(" session peer={peer} ");
    log.lines()
        .rev()
        .find(|l| l.contains(&key))
        .map(|l| l.to_string())
}

#[test]
fn route_reflector_trellis_bgp_serves_five_nodes() {
    require_root_and_binaries("the lab creates network namespaces");
    assert!(
        bin_dir().join("trellis-bgp").is_file(),
        "trellis-bgp not built next to trellis-lab: run `cargo build --workspace --bins`"
    );
    let start = Instant::now();
    let name = format!("rt{}", std::process::id() % 100_000);
    // A reflector serves one segment of routed pods: other combinations are refused at once,
    // in one line naming the fix, before anything is created.
    let (made, out) = lab(&[
        "up",
        "--name",
        &name,
        "--bgp",
        "--route-reflector",
        "trellis",
    ]);
    assert!(
        !made && out.trim().lines().count() == 1 && out.contains("use --encap none"),
        "{out}"
    );
    assert!(!std::path::Path::new(&format!("/run/trellis-lab/{name}")).exists());
    let _lab = Lab(name.clone());
    up(&name, "trellis");
    let pods = add_pods(&name, NODES, &["p"]);
    assert_reflection(&name, &pods);
    // The reflector's own view (it logs every session each second): ten clients Established,
    // each having sent its one block and been sent the other four.
    let clients: Vec<String> = (1..=NODES)
        .flat_map(|n| {
            let (v4, v6) = node_addrs(n);
            [v4, v6]
        })
        .collect();
    let mut lines = Vec::new();
    wait_until(
        "trellis-bgp reflecting one block from and four to every client",
        Duration::from_secs(10),
        || {
            let log = trellis_bgp_log(&name);
            lines = clients
                .iter()
                .filter_map(|c| last_session_line(&log, c))
                .collect();
            lines.len() == clients.len()
                && lines.iter().all(|l| {
                    l.contains("state=Established received=1 advertised=4")
                        && l.contains("INFO trellis_bgp")
                })
        },
    );
    println!("trellis-bgp:\n{}", lines.join("\n"));
    println!("took {:?}", start.elapsed());
}

#[test]
fn route_reflector_bird_serves_five_nodes() {
    require_root_and_binaries("the lab creates network namespaces");
    let start = Instant::now();
    let name = format!("rb{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    up(&name, "bird");
    let pods = add_pods(&name, NODES, &["p"]);
    assert_reflection(&name, &pods);
    // BIRD's view: five sessions per family, all Established (the state ends a session's line).
    let protocols = ok(&["birdc", &name, "--", "show", "protocols"]);
    println!("{protocols}");
    for v in ["_v4 ", "_v6 "] {
        let up = protocols
            .lines()
            .filter(|l| {
                l.contains(v) && l.contains(" BGP ") && l.trim_end().ends_with("Established")
            })
            .count();
        assert_eq!(up, NODES, "{v} sessions Established:\n{protocols}");
    }
    // Reflected with the originator's next hop kept: node-2's IPv4 block, as BIRD holds it.
    let route = ok(&[
        "birdc", &name, "--", "show", "route", "all", "for", &pods[1].1,
    ]);
    assert!(
        route.contains("BGP.next_hop: 172.30.0.2") && route.contains("[node_2_v4"),
        "{route}"
    );
    println!("took {:?}", start.elapsed());
}

/// Trellis nodes as reflectors, Calico's way: a node attribute and one BGPPeer. node-1 gets the
/// label `route-reflector=true` and `spec.bgp.routeReflectorClusterID`; the BGPPeer
/// `nodeSelector: all()`, `peerSelector: route-reflector == 'true'` makes every other node its
/// client, and the mesh goes off. Changed on a running lab: the agents pick it all up live.
#[test]
fn a_trellis_node_reflects_for_the_others_by_node_attribute() {
    require_root_and_binaries("the lab creates network namespaces");
    let start = Instant::now();
    let name = format!("rn{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    let nodes = NODES.to_string();
    ok(&[
        "up",
        "--name",
        &name,
        "--nodes",
        &nodes,
        "--encap",
        "none",
        "--bgp",
        "--dual-stack",
    ]);
    let pods = add_pods(&name, NODES, &["p"]);
    // node-1 as the operator edits it: its registered addresses kept, label and cluster id added.
    let mut node1: serde_json::Value = serde_json::from_str(&ok(&[
        "ctl", &name, "--", "get", "node", "node-1", "-o", "json",
    ]))
    .unwrap();
    node1["metadata"]["labels"]["route-reflector"] = "true".into();
    node1["spec"]["bgp"]["routeReflectorClusterID"] = "244.0.0.1".into();
    let docs = [
        node1,
        serde_json::json!({
            "apiVersion": "trellis.dev/v1", "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": false}
        }),
        serde_json::json!({
            "apiVersion": "trellis.dev/v1", "kind": "BGPPeer",
            "metadata": {"name": "peer-with-route-reflectors"},
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}
        }),
    ];
    for (i, doc) in docs.iter().enumerate() {
        let path = std::env::temp_dir().join(format!("trellis-rr-{name}-{i}.json"));
        std::fs::write(&path, doc.to_string()).unwrap();
        ok(&["ctl", &name, "--", "apply", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
    }
    // node-1 serves the other four over both families; each of them peers with node-1 alone.
    for n in 1..=NODES {
        let node = format!("node-{n}");
        let (want_kind, want_peers) = if n == 1 {
            ("rr-client", 2 * (NODES - 1))
        } else {
            ("rr", 2)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let bgp = agent_status(&name, &node).and_then(|s| s.bgp);
            let done = bgp.as_ref().is_some_and(|b| {
                b.peers.len() == want_peers
                    && b.peers
                        .iter()
                        .all(|p| p.kind == want_kind && p.state == "Established")
            });
            if done {
                let b = bgp.unwrap();
                assert!(b.problems.is_empty(), "{node}: {:#?}", b.problems);
                if n == 1 {
                    assert_eq!(b.route_reflector_cluster_id.as_deref(), Some("244.0.0.1"));
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: want {want_peers} {want_kind} sessions Established: {bgp:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    wait_for_reflected_routes(&name, &pods);
    assert_all_pairs_reach(&name, &pods, "through node-1 reflecting");
    println!("took {:?}", start.elapsed());
}
