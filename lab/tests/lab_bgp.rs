//! BGP over the lab (real binaries, real etcd, BIRD 2, namespaces; needs root): the agents'
//! node-to-node mesh on one subnet, routing through a top-of-rack BIRD across two subnets
//! without encapsulation, graceful restart across `kill -9` of an agent, and live switches
//! between VXLAN and routed under a TCP stream.

mod lab_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::{
    add_pods, agent_status, assert_all_pairs_reach, bin_dir, lab, node_exec, node_field, ok,
    require_root_and_binaries, route_to, set_mode, wait_until, FastPing, Lab, Pod,
};

const PING_INTERVAL: Duration = Duration::from_millis(5);

fn up(name: &str, nodes: usize, subnets: usize, encap: &str) {
    let (nodes, subnets) = (nodes.to_string(), subnets.to_string());
    ok(&[
        "up",
        "--name",
        name,
        "--nodes",
        &nodes,
        "--subnets",
        &subnets,
        "--encap",
        encap,
        "--bgp",
        "--dual-stack",
    ]);
}

fn birdc(name: &str, args: &[&str]) -> String {
    let mut all = vec!["birdc", name, "--"];
    all.extend(args);
    ok(&all)
}

/// The router namespace's routes BIRD wrote (`proto bird`) covering `ip`.
fn tor_kernel_route(name: &str, ip: &str) -> String {
    let family = if ip.contains(':') { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args(["-n", &format!("tl-{name}-ul"), family, "route", "show"])
        .args(["proto", "bird", "match", ip])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether BIRD has a route for `ip` learned from `node` (any of its sessions).
fn bird_has(name: &str, ip: &str, node: &str) -> bool {
    let out = birdc(name, &["show", "route", "for", ip]);
    out.contains(&format!("[{}_v", node.replace('-', "_")))
}

/// Node n (1-based) of pod `pods[i]`: pods are `default/pN` on node-N.
fn node_of(pod: &Pod) -> String {
    format!("node-{}", pod.0.trim_start_matches("default/p"))
}

/// Waits until every node's agent has every peer Established (and there are `peers` of them,
/// of type `kind`), and no restart is pending.
fn wait_for_sessions(name: &str, nodes: usize, kind: &str, peers: usize) {
    for n in 1..=nodes {
        let node = format!("node-{n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let bgp = agent_status(name, &node).and_then(|s| s.bgp);
            let done = bgp.as_ref().is_some_and(|b| {
                !b.restart_pending
                    && b.peers.len() == peers
                    && b.peers
                        .iter()
                        .all(|p| p.kind == kind && p.state == "Established")
            });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: BGP sessions not all {kind} Established: {bgp:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every node's agent reports no BGP problem (failed route writes, unreachable next hops...).
fn assert_no_bgp_problems(name: &str, nodes: usize) {
    for n in 1..=nodes {
        let node = format!("node-{n}");
        let bgp = agent_status(name, &node).and_then(|s| s.bgp).unwrap();
        assert!(bgp.problems.is_empty(), "{node}: {:#?}", bgp.problems);
    }
}

/// Waits until BIRD and the router's kernel route every pod address to the pod's node.
fn wait_for_tor_routes(name: &str, pods: &[Pod]) {
    for pod in pods {
        for ip in [&pod.1, &pod.2] {
            wait_until(
                &format!("BIRD and the ToR kernel routing {ip} ({})", pod.0),
                Duration::from_secs(20),
                || bird_has(name, ip, &node_of(pod)) && !tor_kernel_route(name, ip).is_empty(),
            );
        }
    }
}

/// Waits until `node` has a BGP-learned route (protocol 81) covering `ip`; on timeout the
/// failure quotes the agent's BGP problems.
fn wait_for_bgp_route(name: &str, node: &str, ip: &str) {
    let family = if ip.contains(':') { "-6" } else { "-4" };
    let cmd = ["ip", family, "route", "show", "proto", "81", "match", ip];
    let deadline = Instant::now() + Duration::from_secs(15);
    while node_exec(name, node, &cmd).is_empty() {
        if Instant::now() > deadline {
            let problems = agent_status(name, node)
                .and_then(|s| s.bgp)
                .map(|b| b.problems)
                .unwrap_or_default();
            panic!("{node}: no proto 81 route covering {ip} after 15 s; agent's BGP problems: {problems:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn routed_mesh_one_subnet() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("b{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    up(&name, 4, 1, "none");
    let pods = add_pods(&name, 4, &["p"]);
    // Dual stack: each node meshes with the other three over IPv4 and over IPv6.
    wait_for_sessions(&name, 4, "mesh", 6);
    for n in 1..=4 {
        let node = format!("node-{n}");
        let bgp = agent_status(&name, &node).unwrap().bgp.unwrap();
        assert_eq!(bgp.asn, 64512);
        for other in (1..=4).filter(|&o| o != n) {
            let addr: std::net::IpAddr = format!("172.30.0.{other}").parse().unwrap();
            assert!(
                bgp.peers.iter().any(|p| p.address == addr),
                "{node} has no mesh peer {addr}: {bgp:#?}"
            );
        }
        // Every other node's blocks, learned over BGP (protocol 81).
        for pod in pods.iter().filter(|p| node_of(p) != node) {
            for ip in [&pod.1, &pod.2] {
                wait_for_bgp_route(&name, &node, ip);
            }
        }
        println!(
            "{node} proto 81:\n{}{}",
            node_exec(&name, &node, &["ip", "-4", "route", "show", "proto", "81"]),
            node_exec(&name, &node, &["ip", "-6", "route", "show", "proto", "81"])
        );
    }
    assert_no_bgp_problems(&name, 4);
    assert_all_pairs_reach(&name, &pods, "over the BGP mesh");
    // What an operator sees: `trellisctl node status` against node-1's agent socket.
    let socket = node_field(&name, "node-1", "socket");
    let out = Command::new(bin_dir().join("trellisctl"))
        .args(["node", "status", "--socket", socket.as_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "trellisctl node status: {text}");
    println!("{text}");
    let sessions: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" mesh ") && l.contains("Established"))
        .collect();
    assert_eq!(sessions.len(), 6, "six mesh sessions Established:\n{text}");
    for other in 2..=4 {
        assert!(
            sessions
                .iter()
                .any(|l| l.starts_with(&format!("172.30.0.{other} "))),
            "no session with node-{other}:\n{text}"
        );
    }
    assert!(
        text.contains("BGP: AS 64512, router id 172.30.0.1"),
        "{text}"
    );
}

#[test]
fn routed_through_the_tor_across_two_subnets() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("r{}", std::process::id() % 100_000);
    // Without BGP nothing could route pods between the subnets: refused, naming the fix.
    let (refused, out) = lab(&["up", "--name", &name, "--subnets", "2", "--encap", "none"]);
    assert!(!refused && out.contains("add --bgp"), "{out}");

    let _lab = Lab(name.clone());
    up(&name, 4, 2, "none");
    let pods = add_pods(&name, 4, &["p"]);
    // One session per family to the ToR, no mesh.
    wait_for_sessions(&name, 4, "node", 2);
    wait_for_tor_routes(&name, &pods);
    println!("{}", birdc(&name, &["show", "route"]));
    assert_all_pairs_reach(&name, &pods, "through the ToR");
    assert_no_bgp_problems(&name, 4);

    // Across the router: plain routes via the ToR, no VXLAN anywhere.
    let p4 = &pods[3];
    let r4 = route_to(&name, "node-1", "-4", &p4.1);
    assert!(r4.contains("via 172.30.0.254 dev eth0"), "{r4}");
    let r6 = route_to(&name, "node-1", "-6", &p4.2);
    assert!(r6.contains("via fd00:172:30::fe dev eth0"), "{r6}");
    let r4 = route_to(&name, "node-4", "-4", &pods[0].1);
    assert!(r4.contains("via 172.30.1.254 dev eth0"), "{r4}");
    for n in 1..=4 {
        let links = node_exec(&name, &format!("node-{n}"), &["ip", "-o", "link"]);
        assert!(!links.contains("vxlan"), "node-{n}: {links}");
    }
    // The packets crossed the router unencapsulated: the ToR forwarded pod addresses (its
    // kernel routes them to the nodes, proto bird).
    let r = tor_kernel_route(&name, &pods[0].1);
    assert!(r.contains("via 172.30.0.1 dev br0"), "{r}");
}

#[test]
fn graceful_restart_kill_9_keeps_traffic_flowing() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("g{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    up(&name, 4, 2, "none");
    let pods = add_pods(&name, 4, &["p"]);
    let (p1, p4) = (&pods[0], &pods[3]);
    wait_for_sessions(&name, 4, "node", 2);
    wait_for_tor_routes(&name, &pods);

    let ping = FastPing::start(&name, &p1.0, &p4.1, PING_INTERVAL);
    std::thread::sleep(Duration::from_millis(500));
    let pid = node_field(&name, "node-1", "agent_pid").as_u64().unwrap();
    let killed = Instant::now();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // BIRD notices the dead session (the kernel resets the TCP connection of a killed
    // process) and keeps node-1's routes as stale meanwhile (RFC 4724 4.2).
    wait_until(
        "BIRD seeing node-1's session down",
        Duration::from_secs(10),
        || !birdc(&name, &["show", "protocols", "node_1_v4"]).contains("Established"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let session = birdc(&name, &["show", "protocols", "all", "node_1_v4"]);
    assert!(
        session.contains("Neighbor graceful restart active"),
        "BIRD is not helping node-1 restart: {session}"
    );
    let while_down = birdc(&name, &["show", "route", "for", &p1.1, "all"]);
    println!("node-1's agent down:\n{while_down}");
    assert!(bird_has(&name, &p1.1, "node-1"), "{while_down}");
    assert!(bird_has(&name, &p1.2, "node-1"));
    assert!(!tor_kernel_route(&name, &p1.1).is_empty());

    ok(&["node", "restart", &name, "node-1", "--hard"]);
    wait_for_sessions(&name, 1, "node", 2);
    let recovered = killed.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let stats = ping.stop();
    println!(
        "kill -9 agent (node-1, ToR topology): gap {} ms, lost {}/{}, sessions and End-of-RIB back after {} ms",
        stats.gap(PING_INTERVAL).as_millis(),
        stats.lost(),
        stats.transmitted,
        recovered.as_millis()
    );
    assert!(stats.transmitted > 200, "{stats:?}");
    assert!(
        stats.lost() <= 5,
        "lost too much across the restart: {stats:?}"
    );
    for ip in [&p1.1, &p1.2] {
        assert!(bird_has(&name, ip, "node-1"), "route to {ip} gone");
        assert!(
            !tor_kernel_route(&name, ip).is_empty(),
            "{ip} gone from the ToR kernel"
        );
    }
    assert!(route_to(&name, "node-4", "-4", &p1.1).contains("via 172.30.1.254"));
    assert_all_pairs_reach(&name, &pods, "after the agent's restart");
}

/// Node-1's routes to `pod` as `mode` wants them, in both families: through VXLAN, or via the
/// ToR.
fn routed_as(name: &str, pod: &Pod, mode: &str) -> bool {
    let (r4, r6) = (
        route_to(name, "node-1", "-4", &pod.1),
        route_to(name, "node-1", "-6", &pod.2),
    );
    match mode {
        "Never" => {
            r4.contains("via 172.30.0.254 dev eth0") && r6.contains("via fd00:172:30::fe dev eth0")
        }
        _ => r4.contains("dev vxlan.trellis") && r6.contains("dev vxlan6.trellis"),
    }
}

#[test]
fn live_switch_vxlan_routed_vxlan_under_iperf3() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("s{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    up(&name, 4, 2, "vxlan");
    let pods = add_pods(&name, 4, &["p"]);
    let (p1, p4) = (pods[0].clone(), pods[3].clone());
    wait_for_sessions(&name, 4, "node", 2);
    wait_for_tor_routes(&name, &pods);
    assert!(routed_as(&name, &p4, "Always"));

    ok(&[
        "pod", "exec", &name, &p4.0, "--", "iperf3", "-s", "-1", "-D",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    // Paced, so that the stream does not starve the pings of CPU on a 2-core machine.
    let iperf = Command::new(lab_support::lab_bin())
        .args(["pod", "exec", &name, &p1.0, "--", "iperf3", "-c", &p4.1])
        .args(["-t", "15", "-b", "200M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let mut report = Vec::new();
    for (from, to) in [
        ("Always", "Never"),
        ("Never", "Always"),
        ("Always", "CrossSubnet"),
    ] {
        let ping = FastPing::start(&name, &p1.0, &p4.1, PING_INTERVAL);
        std::thread::sleep(Duration::from_millis(500));
        set_mode(&name, to);
        wait_until(
            &format!("node-1 routing {} for vxlanMode {to}", p4.1),
            Duration::from_secs(15),
            || routed_as(&name, &p4, to),
        );
        std::thread::sleep(Duration::from_millis(500));
        let stats = ping.stop();
        let label = |m: &str| match m {
            "Always" => "vxlan",
            "Never" => "none",
            _ => "vxlan-crosssubnet",
        };
        report.push(format!(
            "switch {}->{}: gap {} ms, lost {}/{}",
            label(from),
            label(to),
            stats.gap(PING_INTERVAL).as_millis(),
            stats.lost(),
            stats.transmitted
        ));
    }
    let switched_by = started.elapsed();
    let out = iperf.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "iperf3 (switches done after {} s of 15):\n{}",
        switched_by.as_secs(),
        text.lines().rev().take(4).collect::<Vec<_>>().join("\n")
    );
    assert!(
        switched_by < Duration::from_secs(15),
        "the switches outlasted the stream"
    );
    assert!(
        out.status.success(),
        "the TCP stream broke: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", report.join("\n"));
    assert_all_pairs_reach(&name, &pods, "after the switches");
}
