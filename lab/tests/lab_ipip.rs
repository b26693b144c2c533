//! IPIP over the lab (real binaries, real etcd, namespaces; needs root).
//!
//! Tests named `*needs_ipip_kernel*` need the kernel's ipip module: without it they FAIL with a
//! message naming the missing feature, and scripts/test.sh skips them by name and lists them as
//! skipped. `ipip_lab_is_refused_exactly_when_the_kernel_lacks_ipip` runs on every kernel.

mod lab_support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use lab_support::{lab, ok, require_root_and_binaries, Lab};

/// `Err(answer)` when this kernel cannot make IPIP links (tried in a throwaway namespace).
fn ipip_support() -> Result<(), String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ns = format!("trl-probe-lab-{}-{n}", std::process::id());
    let run = |args: &[&str]| Command::new("ip").args(args).output().unwrap();
    assert!(
        run(&["netns", "add", &ns]).status.success(),
        "netns add {ns}"
    );
    let out = run(&["-n", &ns, "link", "add", "trl-probe", "type", "ipip"]);
    let _ = run(&["netns", "del", &ns]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn require_ipip_kernel() {
    if let Err(answer) = ipip_support() {
        panic!(
            "this kernel has no ipip support (ip link add type ipip: {answer}); this test needs \
             the ipip module. scripts/test.sh skips tests named *needs_ipip_kernel* on such a \
             kernel and lists them as skipped"
        );
    }
}

fn lab_namespaces(name: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("tl-{name}-")) || n.starts_with("tl-probe-"))
        .map(str::to_string)
        .collect()
}

/// Adds `default/PREFIXn` on every node n for each prefix; returns (NS/POD, node number, IPv4).
fn add_pods(name: &str, nodes: usize, prefixes: &[&str]) -> Vec<(String, usize, String)> {
    let mut pods = Vec::new();
    for n in 1..=nodes {
        for prefix in prefixes {
            let pod = format!("default/{prefix}{n}");
            let out = ok(&["pod", "add", name, &format!("node-{n}"), &pod]);
            let v4 = out
                .split_whitespace()
                .find(|w| w.starts_with("10.244."))
                .unwrap_or_else(|| panic!("no IPv4 address in {out}"))
                .to_string();
            pods.push((pod, n, v4));
        }
    }
    pods
}

/// Every pod pings every other pod once over IPv4; all must answer.
fn assert_all_pairs_reach(name: &str, pods: &[(String, usize, String)], when: &str) {
    let mut failures = Vec::new();
    for (from, _, _) in pods {
        for (to, _, v4) in pods {
            if from == to {
                continue;
            }
            let (reached, _) = lab(&["pod", "exec", name, from, "--", "ping", "-c1", "-W2", v4]);
            if !reached {
                failures.push(format!("{from} -> {to} ({v4})"));
            }
        }
    }
    assert!(failures.is_empty(), "unreachable {when}: {failures:#?}");
}

fn node_exec(name: &str, node: &str, cmd: &[&str]) -> String {
    let mut args = vec!["node", "exec", name, node, "--"];
    args.extend(cmd);
    ok(&args)
}

/// `ip -4 route get DST` on `node`: the route the kernel would use.
fn route_to(name: &str, node: &str, dst: &str) -> String {
    node_exec(name, node, &["ip", "-4", "route", "get", dst])
}

/// Whether IPv4 `ip` lies in `cidr` (`A.B.C.D/N`).
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(ip), Ok(len)) = (
        net.parse::<Ipv4Addr>(),
        ip.parse::<Ipv4Addr>(),
        len.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

/// The line of `ip -4 route show proto 80` on `node` for the block holding `pod_ip`.
fn block_route(name: &str, node: &str, pod_ip: &str) -> String {
    let routes = node_exec(name, node, &["ip", "-4", "route", "show", "proto", "80"]);
    routes
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|dst| in_cidr(pod_ip, dst))
        })
        .unwrap_or_else(|| panic!("no proto 80 route on {node} for {pod_ip}:\n{routes}"))
        .to_string()
}

#[test]
fn ipip_lab_is_refused_exactly_when_the_kernel_lacks_ipip() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("r{}", std::process::id() % 100_000);
    match ipip_support() {
        Err(answer) => {
            eprintln!("this kernel has no ipip ({answer}): `up --encap ipip` must refuse");
            for encap in ["ipip", "ipip-crosssubnet"] {
                let (up, out) = lab(&["up", "--name", &name, "--encap", encap]);
                assert!(!up, "up --encap {encap} succeeded without ipip: {out}");
                assert_eq!(
                    out.trim(),
                    "trellis-lab: this kernel has no ipip support (ip link add type ipip: \
                     Unknown device type)",
                    "one clear line"
                );
                assert_eq!(lab_namespaces(&name), Vec::<String>::new(), "left behind");
                assert!(
                    !std::path::Path::new(&format!("/run/trellis-lab/{name}")).exists(),
                    "a refused up left its state directory"
                );
            }
        }
        Ok(()) => {
            // The kernel has ipip: the same command brings a lab up (and down, completely).
            let guard = Lab(name.clone());
            ok(&["up", "--name", &name, "--nodes", "1", "--encap", "ipip"]);
            let link = node_exec(&name, "node-1", &["ip", "-d", "link", "show", "tunl0"]);
            assert!(link.contains("ipip"), "{link}");
            drop(guard);
            assert_eq!(lab_namespaces(&name), Vec::<String>::new(), "left behind");
        }
    }
}

#[test]
fn three_nodes_two_pods_each_reach_each_other_through_tunl0_needs_ipip_kernel() {
    require_root_and_binaries("the lab creates network namespaces");
    require_ipip_kernel();
    let name = format!("i{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    ok(&["up", "--name", &name, "--nodes", "3", "--encap", "ipip"]);
    let status = ok(&["status", &name]);
    assert!(status.contains("ipipMode Always"), "{status}");
    let pods = add_pods(&name, 3, &["p", "q"]);
    assert_all_pairs_reach(&name, &pods, "through IPIP");
    // Every other node's block: `via NODE_IP dev tunl0 onlink`, and the kernel uses it.
    for (_, n, v4) in pods.iter().filter(|p| p.1 != 1) {
        let r = block_route(&name, "node-1", v4);
        assert!(
            r.contains(&format!("via 172.30.0.{n} dev tunl0")) && r.contains("onlink"),
            "{r}"
        );
        let got = route_to(&name, "node-1", v4);
        assert!(got.contains("dev tunl0"), "{got}");
    }
    let link = node_exec(&name, "node-1", &["ip", "-d", "link", "show", "tunl0"]);
    assert!(link.contains("ipip") && link.contains(",UP"), "{link}");
    // The underlay MTU (1500) minus the IPIP header.
    assert!(link.contains("mtu 1480"), "{link}");
    let addr = node_exec(
        &name,
        "node-1",
        &["ip", "-4", "addr", "show", "dev", "tunl0"],
    );
    assert!(addr.contains("inet 10.244."), "no tunnel address: {addr}");
    // No agent reports a dataplane problem, and no VXLAN device was made.
    let links = node_exec(&name, "node-1", &["ip", "-o", "link"]);
    assert!(!links.contains("vxlan"), "{links}");
}

#[test]
fn ipip_cross_subnet_encapsulates_only_across_the_router_needs_ipip_kernel() {
    require_root_and_binaries("the lab creates network namespaces");
    require_ipip_kernel();
    let name = format!("j{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    ok(&[
        "up",
        "--name",
        &name,
        "--nodes",
        "3",
        "--subnets",
        "2",
        "--encap",
        "ipip-crosssubnet",
    ]);
    let pods = add_pods(&name, 3, &["p"]);
    assert_all_pairs_reach(&name, &pods, "with IPIP CrossSubnet");
    // node-2 shares node-1's segment: plain route. node-3 is behind the router: IPIP.
    let r = route_to(&name, "node-1", &pods[1].2);
    assert!(r.contains("via 172.30.0.2 dev eth0"), "{r}");
    let r = block_route(&name, "node-1", &pods[2].2);
    assert!(
        r.contains("via 172.30.1.3 dev tunl0") && r.contains("onlink"),
        "{r}"
    );
    let r = route_to(&name, "node-3", &pods[0].2);
    assert!(r.contains("dev tunl0"), "{r}");
    // The router itself knows no pod address: cross-subnet pod traffic is encapsulated.
    let ul = Command::new("ip")
        .args(["-n", &format!("tl-{name}-ul"), "route"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ul.stdout).contains("10.244."));
}
