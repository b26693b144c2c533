//! The lab end to end: the real binaries (trellis-lab, trellis-agent, trellis, trellisctl) and a
//! real etcd, nodes and pods in network namespaces. Needs root. Every namespace is named
//! `tl-<lab>-…` and removed by `trellis-lab down` (also when a check fails).

mod lab_support;

use std::process::Command;

use lab_support::{lab, lab_bin, ok, require_root_and_binaries, Lab};

/// A snapshot of what the agent owns in a node's kernel (ifindex included).
fn kernel_state(name: &str, node: &str) -> String {
    let mut s = String::new();
    for cmd in [
        vec!["ip", "-d", "-o", "link", "show", "vxlan.trellis"],
        vec!["ip", "-4", "route", "show", "proto", "80"],
        vec!["ip", "neigh", "show", "dev", "vxlan.trellis"],
        vec!["bridge", "fdb", "show", "dev", "vxlan.trellis"],
        vec!["ip", "-4", "route", "show", "scope", "link"],
    ] {
        let mut args = vec!["node", "exec", name, node, "--"];
        args.extend(cmd);
        s.push_str(&ok(&args));
    }
    s
}

#[test]
fn three_nodes_ten_pods_each_talk_across_vxlan_and_survive_an_agent_crash() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("e{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    ok(&["up", "--name", &name, "--nodes", "3", "--dual-stack"]);
    let mut pods = Vec::new();
    for n in 1..=3 {
        for p in 1..=10 {
            let pod = format!("default/p{n}-{p}");
            let out = ok(&["pod", "add", &name, &format!("node-{n}"), &pod]);
            let v4 = out
                .split_whitespace()
                .find(|w| w.starts_with("10.244."))
                .unwrap_or_else(|| panic!("no IPv4 in {out}"))
                .to_string();
            let v6 = out
                .split_whitespace()
                .find(|w| w.starts_with("fd00:244:"))
                .unwrap_or_else(|| panic!("no IPv6 in {out}"))
                .to_string();
            pods.push((pod, n, v4, v6));
        }
    }
    // All pairs over IPv4 and IPv6, across nodes through VXLAN (vxlan.trellis, vxlan6.trellis).
    let mut failures = Vec::new();
    for (from, _, _, _) in &pods {
        for (to, _, v4, v6) in &pods {
            if from == to {
                continue;
            }
            for ip in [v4.as_str(), v6.as_str()] {
                let (reached, _) =
                    lab(&["pod", "exec", &name, from, "--", "ping", "-c1", "-W2", ip]);
                if !reached {
                    failures.push(format!("{from} -> {to} ({ip})"));
                }
            }
        }
    }
    // A pod reaches another node's own address (the reply comes back through VXLAN).
    for node_ip in ["172.30.0.2", "172.30.0.3"] {
        let (reached, out) = lab(&[
            "pod",
            "exec",
            &name,
            "default/p1-1",
            "--",
            "ping",
            "-c1",
            "-W2",
            node_ip,
        ]);
        if !reached {
            failures.push(format!("default/p1-1 -> node {node_ip}: {out}"));
        }
    }
    // natOutgoing: the underlay host (172.30.0.254) has no route to the pods, so a reply can
    // only come back when the node masquerades the pod's traffic to its own address.
    let (ok_ul, routes) = lab(&[
        "node",
        "exec",
        &name,
        "node-1",
        "--",
        "ip",
        "netns",
        "exec",
        &format!("tl-{name}-ul"),
        "ip",
        "route",
    ]);
    assert!(
        ok_ul && !routes.contains("10.244."),
        "the underlay must not route to pods: {routes}"
    );
    for pod in ["default/p1-1", "default/p2-1", "default/p3-1"] {
        let (reached, out) = lab(&[
            "pod",
            "exec",
            &name,
            pod,
            "--",
            "ping",
            "-c1",
            "-W2",
            "172.30.0.254",
        ]);
        if !reached {
            failures.push(format!(
                "{pod} -> 172.30.0.254 outside the pools (natOutgoing): {out}"
            ));
        }
    }
    assert!(failures.is_empty(), "unreachable: {failures:#?}");

    // An agent crash and restart changes nothing in the kernel and loses no traffic.
    let before = kernel_state(&name, "node-1");
    let target = pods.iter().find(|p| p.1 == 2).unwrap().2.clone();
    let pinger = Command::new(lab_bin())
        .args([
            "pod",
            "exec",
            &name,
            "default/p1-1",
            "--",
            "ping",
            "-i",
            "0.2",
            "-c",
            "25",
            "-W",
            "1",
            &target,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    ok(&["node", "restart", &name, "node-1", "--hard"]);
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("25 received"),
        "replies lost across the agent restart:\n{text}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        before,
        kernel_state(&name, "node-1"),
        "the restarted agent re-created or changed kernel state"
    );

    // Deleting pods releases their addresses; IPAM stays consistent.
    ok(&["pod", "del", &name, "default/p1-2"]);
    let check = ok(&["ctl", &name, "--", "ipam", "check"]);
    assert!(
        check.contains("leaked addresses: 0") && check.contains("addresses allocated twice: 0"),
        "{check}"
    );
}
