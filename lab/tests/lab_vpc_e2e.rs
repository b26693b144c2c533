//! The VPC-native backend end to end: `trellis-lab up --backend vpc` (moto as EC2, a VPC
//! router namespace, an IMDS per node) with the real agent, plugin and etcd. Pods on the
//! primary and on a secondary ENI reach pods on the other node and a host outside the VPC
//! (SNATed to the node's primary address), the kernel's `ip rule`s and ENI tables are AWS's,
//! and an agent crash keeps every allocation, as the checkpoint and EC2 both say. Needs root.

mod lab_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lab_support::{lab, lab_state, ok, require_root_and_binaries, Lab};
use serde_json::Value;
use trellis_test_support::netns::{source_seen, tx_packets};

/// `pod add`, retried while the pool is still growing (CNI error 11); the pod's address.
fn add_pod(name: &str, node: &str, pod: &str) -> String {
    let t0 = Instant::now();
    loop {
        let (done, out) = lab(&["pod", "add", name, node, pod]);
        if done {
            return out
                .split_whitespace()
                .last()
                .expect("the pod's address")
                .to_string();
        }
        assert!(
            out.contains("\"code\":11") && t0.elapsed() < Duration::from_secs(60),
            "pod add {pod} on {node}: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn node_exec(name: &str, node: &str, cmd: &[&str]) -> String {
    let mut args = vec!["node", "exec", name, node, "--"];
    args.extend_from_slice(cmd);
    ok(&args)
}

fn pings(name: &str, pod: &str, dst: &str) -> bool {
    lab(&["pod", "exec", name, pod, "--", "ping", "-c1", "-W2", dst]).0
}

fn pod_netns(name: &str, pod: &str) -> String {
    let (ns, p) = pod.split_once('/').unwrap();
    lab_state(name)["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["namespace"] == ns && x["name"] == p)
        .and_then(|x| x["netns"].as_str())
        .unwrap()
        .to_string()
}

fn state_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/run/trellis-lab").join(name)
}

/// The node's checkpoint: container id -> (address, ENI).
fn checkpoint(name: &str, node: &str) -> BTreeMap<String, (String, String)> {
    let path = state_dir(name).join(node).join("vpc-ipam.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["container_id"].as_str().unwrap().to_string(),
                (
                    a["ip"].as_str().unwrap().to_string(),
                    a["eni_id"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// EC2's attached ENIs as the lab's hypervisor last read them from moto: ENI id -> (node,
/// device index, addresses).
fn ec2_enis(name: &str) -> BTreeMap<String, (u64, u64, BTreeSet<String>)> {
    let path = state_dir(name).join("enis.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["eni_id"].as_str().unwrap().to_string(),
                (
                    p["node"].as_u64().unwrap(),
                    p["device"].as_u64().unwrap(),
                    p["ips"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().to_string())
                        .collect(),
                ),
            )
        })
        .collect()
}

/// `ip rule` lines of a node, without the kernel's own (0, 32766, 32767).
fn rules(name: &str, node: &str) -> BTreeSet<String> {
    node_exec(name, node, &["ip", "-4", "rule"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !["0:", "32766:", "32767:"].iter().any(|p| l.starts_with(p)))
        .collect()
}

#[test]
fn pods_on_primary_and_secondary_enis_reach_each_other_and_the_outside_and_survive_a_crash() {
    require_root_and_binaries("the VPC lab creates network namespaces");
    let name = format!("v{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    ok(&["up", "--name", &name, "--nodes", "2", "--backend", "vpc"]);
    let node1_ip = lab_state(&name)["nodes"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();

    // t3.small: the primary ENI holds 3 pod addresses, so the 4th and 5th pod of node-1 sit
    // on a secondary ENI the agent attaches.
    let mut ips = BTreeMap::new();
    for p in 1..=5 {
        let pod = format!("default/a{p}");
        ips.insert(pod.clone(), add_pod(&name, "node-1", &pod));
    }
    for p in 1..=2 {
        let pod = format!("default/b{p}");
        ips.insert(pod.clone(), add_pod(&name, "node-2", &pod));
    }

    // Where each node-1 pod is, by the checkpoint and by EC2.
    let ckpt = checkpoint(&name, "node-1");
    assert_eq!(ckpt.len(), 5, "{ckpt:?}");
    let enis = ec2_enis(&name);
    let mut on_secondary = Vec::new();
    let mut on_primary = Vec::new();
    for (cid, (ip, eni)) in &ckpt {
        let (_, d, addrs) = &enis[eni];
        assert!(
            addrs.contains(ip),
            "EC2 has {ip} on {eni}: {enis:?} ({cid})"
        );
        let pod = ips.iter().find(|(_, a)| *a == ip).unwrap().0.clone();
        if *d == 0 {
            on_primary.push((pod, ip.clone()));
        } else {
            on_secondary.push((pod, ip.clone(), *d));
        }
    }
    assert_eq!(on_primary.len(), 3, "{ckpt:?}");
    assert_eq!(on_secondary.len(), 2, "{ckpt:?}");

    // ip rule exactly as AWS lays it out: to-pod 512 for all, fwmark 1024, from-pod 1536 to
    // the secondary ENI's table (device index + 1).
    let mut want: BTreeSet<String> = ips
        .iter()
        .filter(|(p, _)| p.starts_with("default/a"))
        .map(|(_, ip)| format!("512: from all to {ip} lookup main"))
        .collect();
    want.insert("1024: from all fwmark 0x80/0x80 lookup main".into());
    for (_, ip, d) in &on_secondary {
        want.insert(format!("1536: from {ip} lookup {}", d + 1));
    }
    assert_eq!(rules(&name, "node-1"), want);
    let d = on_secondary[0].2;
    let table = node_exec(
        &name,
        "node-1",
        &["ip", "-4", "route", "show", "table", &(d + 1).to_string()],
    );
    let table: BTreeSet<String> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        table,
        BTreeSet::from([
            format!("default via 10.0.0.1 dev eth{d} proto static"),
            format!("10.0.0.1 dev eth{d} proto static scope link"),
        ])
    );
    let main = node_exec(&name, "node-1", &["ip", "-4", "route", "show"]);
    assert!(
        !main.contains(&format!("dev eth{d} proto kernel")),
        "the secondary ENI's subnet route is not in main:\n{main}"
    );

    // Pod to pod across nodes, both ways, from both ENIs.
    let node1_ns = lab_state(&name)["nodes"][0]["netns"]
        .as_str()
        .unwrap()
        .to_string();
    let sec_if = format!("eth{d}");
    let tx0 = tx_packets(&node1_ns, &sec_if);
    for (from, _) in &on_primary {
        assert!(pings(&name, from, &ips["default/b1"]), "{from} -> b1");
    }
    for (from, _, _) in &on_secondary {
        assert!(pings(&name, from, &ips["default/b2"]), "{from} -> b2");
    }
    assert!(
        tx_packets(&node1_ns, &sec_if) > tx0,
        "secondary-ENI pods' packets leave by {sec_if}"
    );
    for (_, ip) in &on_primary {
        assert!(pings(&name, "default/b1", ip), "b1 -> {ip}");
    }
    for (_, ip, _) in &on_secondary {
        assert!(pings(&name, "default/b2", ip), "b2 -> {ip}");
    }

    // The outside host sees the node's primary address (SNAT), from either ENI's pods.
    let outside = format!("tl-{name}-out");
    let (p_pod, _) = &on_primary[0];
    let (s_pod, _, _) = &on_secondary[0];
    for (pod, port) in [(p_pod, 8080), (s_pod, 8081)] {
        let seen = source_seen(&pod_netns(&name, pod), &outside, "203.0.113.10", port);
        assert_eq!(
            seen, node1_ip,
            "{pod} is SNATed to node-1's primary address"
        );
    }

    // A crash of node-1's agent: every allocation stays (checkpoint and EC2), the kernel's
    // rules are as they were, and traffic flows.
    let rules_before = rules(&name, "node-1");
    ok(&["node", "restart", &name, "node-1", "--hard"]);
    assert_eq!(
        checkpoint(&name, "node-1"),
        ckpt,
        "the checkpoint after the restart"
    );
    let enis_after = ec2_enis(&name);
    for (ip, eni) in ckpt.values() {
        assert!(
            enis_after[eni].2.contains(ip),
            "EC2 still has {ip} on {eni}"
        );
    }
    assert_eq!(rules(&name, "node-1"), rules_before);
    assert!(pings(&name, s_pod, &ips["default/b1"]), "after the restart");

    // Deleting the pods of the secondary ENI releases their addresses (they cool down) and
    // their rules go.
    for (pod, _, _) in &on_secondary {
        ok(&["pod", "del", &name, pod]);
    }
    assert_eq!(checkpoint(&name, "node-1").len(), 3);
    let after = rules(&name, "node-1");
    assert!(
        !after.iter().any(|r| r.starts_with("1536:")),
        "no from-pod rule is left: {after:?}"
    );
}
