//! Networking modes over the lab (real binaries, real etcd, namespaces; needs root): routing
//! without encapsulation, CrossSubnet across the lab's router, and switching a pool's mode live
//! while traffic flows.

mod lab_support;

use std::process::Command;
use std::time::Duration;

use lab_support::{
    add_pods, assert_all_pairs_reach, lab, node_exec, ok, pinger, require_root_and_binaries,
    route_to, set_mode, wait_until, Lab,
};

/// Switches every pool to `mode` while two pings (IPv4, IPv6) run from p1 to p2; asserts both
/// got every reply, and that node-1 routes p2 through `expect_dev` in the end.
fn switch_under_ping(name: &str, mode: &str, p2: &(String, String, String), expect_dev: &str) {
    let count = 100;
    let pings = [
        pinger(name, "default/p1", &p2.1, count),
        pinger(name, "default/p1", &p2.2, count),
    ];
    std::thread::sleep(Duration::from_millis(1000));
    set_mode(name, mode);
    wait_until(
        &format!(
            "node-1 routing {} through {expect_dev} after the switch to {mode}",
            p2.1
        ),
        Duration::from_secs(15),
        || route_to(name, "node-1", "-4", &p2.1).contains(expect_dev),
    );
    for p in pings {
        let out = p.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("{count} received")),
            "replies lost while switching to vxlanMode {mode}:\n{text}"
        );
    }
    let v6_dev = if expect_dev == "vxlan.trellis" {
        "vxlan6.trellis"
    } else {
        expect_dev
    };
    let r6 = route_to(name, "node-1", "-6", &p2.2);
    assert!(r6.contains(v6_dev), "{r6}");
}

#[test]
fn no_encapsulation_routes_directly_and_a_live_mode_switch_loses_nothing() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("m{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    ok(&[
        "up",
        "--name",
        &name,
        "--nodes",
        "3",
        "--encap",
        "none",
        "--dual-stack",
    ]);
    let pods = add_pods(&name, 3, &["p", "q"]);
    assert_all_pairs_reach(&name, &pods, "without encapsulation");
    // Plain routes via the other nodes' underlay addresses, and no VXLAN device at all.
    let p2 = pods.iter().find(|p| p.0 == "default/p2").unwrap().clone();
    let r4 = route_to(&name, "node-1", "-4", &p2.1);
    assert!(r4.contains("via 172.30.0.2 dev eth0"), "{r4}");
    let r6 = route_to(&name, "node-1", "-6", &p2.2);
    assert!(r6.contains("via fd00:172:30::2 dev eth0"), "{r6}");
    let routes = node_exec(&name, "node-1", &["ip", "route", "show", "proto", "80"]);
    assert_eq!(
        routes.matches("metric 10").count(),
        2,
        "one per remote node: {routes}"
    );
    let links = node_exec(&name, "node-1", &["ip", "-o", "link"]);
    assert!(!links.contains("vxlan"), "{links}");

    // Live: to VXLAN and back, with pings running, no agent restarted, no pod re-created.
    switch_under_ping(&name, "Always", &p2, "vxlan.trellis");
    assert_all_pairs_reach(&name, &pods, "after the switch to VXLAN");
    let routes = node_exec(&name, "node-1", &["ip", "route", "show", "proto", "80"]);
    assert!(
        !routes.contains("metric 10"),
        "direct routes left behind: {routes}"
    );
    switch_under_ping(&name, "Never", &p2, "eth0");
    assert_all_pairs_reach(&name, &pods, "after the switch back");
}

#[test]
fn cross_subnet_encapsulates_only_across_the_router() {
    require_root_and_binaries("the lab creates network namespaces");
    let name = format!("c{}", std::process::id() % 100_000);
    // Refused before anything is created: nothing would route pods between the subnets.
    let (up, out) = lab(&["up", "--name", &name, "--subnets", "2", "--encap", "none"]);
    assert!(!up && out.contains("without BGP"), "{out}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&format!("tl-{name}-")),
        "a refused up left namespaces behind"
    );

    let _lab = Lab(name.clone());
    ok(&[
        "up",
        "--name",
        &name,
        "--nodes",
        "4",
        "--subnets",
        "2",
        "--encap",
        "cross-subnet",
        "--dual-stack",
    ]);
    let status = ok(&["status", &name]);
    assert!(
        status.contains("172.30.0.2") && status.contains("172.30.1.3"),
        "{status}"
    );
    // node-1 and node-2 share the first segment, node-3 and node-4 the second.
    let pods = add_pods(&name, 4, &["p"]);
    assert_all_pairs_reach(&name, &pods, "with CrossSubnet");
    // node-2 shares node-1's segment: plain route. node-3 is behind the router: VXLAN.
    let r = route_to(&name, "node-1", "-4", &pods[1].1);
    assert!(r.contains("via 172.30.0.2 dev eth0"), "{r}");
    let r = route_to(&name, "node-1", "-6", &pods[1].2);
    assert!(r.contains("dev eth0"), "{r}");
    let r = route_to(&name, "node-1", "-4", &pods[2].1);
    assert!(r.contains("dev vxlan.trellis"), "{r}");
    let r = route_to(&name, "node-1", "-6", &pods[2].2);
    assert!(r.contains("dev vxlan6.trellis"), "{r}");
    let r = route_to(&name, "node-3", "-4", &pods[0].1);
    assert!(r.contains("dev vxlan.trellis"), "{r}");
    let r = route_to(&name, "node-3", "-4", &pods[3].1);
    assert!(r.contains("via 172.30.1.4 dev eth0"), "{r}");
    // The packets themselves: node-1's VXLAN device carries the pings to node-3's pod and
    // none of those to node-2's.
    let tx = || vxlan_tx_packets(&name, "node-1");
    let before = tx();
    ping_n(&name, &pods[0].0, &pods[1].1, 20);
    let same_subnet = tx() - before;
    assert_eq!(
        same_subnet, 0,
        "same-subnet pings went through vxlan.trellis"
    );
    let before = tx();
    ping_n(&name, &pods[0].0, &pods[2].1, 20);
    let across = tx() - before;
    assert!(
        across >= 20,
        "only {across} packets left by vxlan.trellis for 20 pings across"
    );
    println!("vxlan.trellis tx on node-1: +{same_subnet} for 20 pings within the subnet, +{across} for 20 across");
    // The router itself knows no pod address: cross-subnet pod traffic is encapsulated.
    let ul = Command::new("ip")
        .args(["-n", &format!("tl-{name}-ul"), "route"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ul.stdout).contains("10.244."));
}

/// Packets node `node`'s `vxlan.trellis` has sent.
fn vxlan_tx_packets(name: &str, node: &str) -> u64 {
    let out = node_exec(
        name,
        node,
        &["cat", "/sys/class/net/vxlan.trellis/statistics/tx_packets"],
    );
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("tx_packets {out:?}: {e}"))
}

/// `ping -c COUNT -i 0.01 DST` from `pod`; all must answer.
fn ping_n(name: &str, pod: &str, dst: &str, count: u32) {
    let count = count.to_string();
    ok(&[
        "pod", "exec", name, pod, "--", "ping", "-q", "-c", &count, "-i", "0.01", "-W", "2", dst,
    ]);
}
