//! Pod wiring against the real kernel (root). Every test builds its own node and pod network
//! namespaces (`trl-t<PID>-*`, deleted on drop) and sends traffic only between them; the CNI
//! side always runs with an explicit node netns, never in the root namespace.

mod netns_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netns_support::{cleanup_stale, owner_pid, require_root, run, TestNetns};
use trellis_cni::wiring::{
    self, host_veth_name, PodSpec, Problem, Route, Side, WiringError, DEFAULT_HOST_VETH_PREFIX,
    GATEWAY_V4,
};

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 65, 0, last))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, last))
}

/// A node namespace with forwarding on, as a node would have it.
fn node() -> TestNetns {
    let node = TestNetns::new("node");
    node.enable_forwarding();
    node
}

fn spec(node: &TestNetns, pod: &TestNetns, name: &str, addresses: Vec<IpAddr>) -> PodSpec {
    PodSpec {
        node_netns: Some(node.path()),
        pod_netns: pod.path(),
        ifname: "eth0".to_owned(),
        host_ifname: host_veth_name(DEFAULT_HOST_VETH_PREFIX, &pod.name, name).unwrap(),
        addresses,
        mtu: 1450,
    }
}

fn del(s: &PodSpec) -> Result<(), WiringError> {
    wiring::del(
        s.node_netns.as_deref(),
        Some(&s.pod_netns),
        &s.ifname,
        &s.host_ifname,
        &s.addresses,
    )
}

/// Nothing of `s`'s wiring exists on either side.
fn assert_nothing_left(node: &TestNetns, pod: &TestNetns, s: &PodSpec) {
    assert!(
        !node.has_link(&s.host_ifname),
        "{} left in the node netns",
        s.host_ifname
    );
    assert!(
        !pod.has_link(&s.ifname),
        "{} left in the pod netns",
        s.ifname
    );
    let routes = node.ip(&["route", "show", "table", "all"]);
    assert!(
        !routes.contains(&s.host_ifname),
        "host routes left:\n{routes}"
    );
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn two_pods_on_one_node_reach_each_other_over_ipv4_and_ipv6() {
    require_root();
    let node = node();
    let (pod_a, pod_b) = (TestNetns::new("a"), TestNetns::new("b"));
    let a = spec(&node, &pod_a, "a", vec![v4(2), v6(2)]);
    let b = spec(&node, &pod_b, "b", vec![v4(3), v6(3)]);

    let wired_a = wiring::add(&a).unwrap();
    let wired_b = wiring::add(&b).unwrap();
    assert_eq!(wired_a.host_ifname, a.host_ifname);
    assert_eq!(wired_a.host_mac, [0xee; 6]);
    let eth0 = pod_a.ip(&["link", "show", "dev", "eth0"]);
    assert!(eth0.contains(&mac_text(wired_a.container_mac)), "{eth0}");
    assert!(
        eth0.starts_with(&format!("{}: eth0@", wired_a.container_ifindex)),
        "{eth0}"
    );
    assert!(eth0.contains("mtu 1450"), "{eth0}");
    assert_ne!(wired_a.host_ifname, wired_b.host_ifname);

    // Through the node: pod -> host veth (permanent neighbour) -> host route -> other veth.
    for (from, to) in [
        (&pod_a, v4(3)),
        (&pod_a, v6(3)),
        (&pod_b, v4(2)),
        (&pod_b, v6(2)),
    ] {
        assert!(from.ping(to), "{} cannot ping {to}", from.name);
    }

    wiring::check(&a).unwrap();
    wiring::check(&b).unwrap();
    let proxy_arp = node.sh(&format!(
        "cat /proc/sys/net/ipv4/conf/{}/proxy_arp",
        a.host_ifname
    ));
    assert_eq!(String::from_utf8_lossy(&proxy_arp.stdout).trim(), "1");
    let host_routes = node.ip(&["route", "show", "dev", &a.host_ifname]);
    assert!(
        host_routes.contains("10.65.0.2 scope link"),
        "{host_routes}"
    );

    del(&a).unwrap();
    del(&b).unwrap();
    assert_nothing_left(&node, &pod_a, &a);
    assert_nothing_left(&node, &pod_b, &b);
}

#[test]
fn check_reports_exactly_what_was_broken() {
    require_root();
    let node = node();
    let pod = TestNetns::new("pod");
    let s = spec(&node, &pod, "p", vec![v4(2), v6(2)]);
    wiring::add(&s).unwrap();
    wiring::check(&s).unwrap();

    pod.ip(&[
        "route",
        "del",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    let default_v4 = Problem::RouteMissing {
        side: Side::Pod,
        name: "eth0".to_owned(),
        route: Route::default_via(IpAddr::V4(GATEWAY_V4)),
    };
    match wiring::check(&s) {
        Err(WiringError::Check { problems }) => {
            assert_eq!(problems, std::slice::from_ref(&default_v4))
        }
        other => panic!("expected a CHECK failure, got {other:?}"),
    }

    node.ip(&[
        "-6",
        "route",
        "del",
        "fd00:65::2/128",
        "dev",
        &s.host_ifname,
    ]);
    let host_v6 = Problem::RouteMissing {
        side: Side::Node,
        name: s.host_ifname.clone(),
        route: Route::direct("fd00:65::2/128".parse().unwrap()),
    };
    let error = wiring::check(&s).unwrap_err();
    match &error {
        WiringError::Check { problems } => assert_eq!(problems, &[host_v6, default_v4]),
        other => panic!("expected a CHECK failure, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        format!(
            "pod wiring is incomplete: node netns: route `fd00:65::2/128 dev {}` is missing; \
             pod netns: route `default via 169.254.1.1 dev eth0` is missing",
            s.host_ifname
        )
    );
    del(&s).unwrap();
}

#[test]
fn failing_host_step_leaves_nothing_behind() {
    require_root();
    let node = node();
    let pod = TestNetns::new("pod");
    // Someone else's route for the pod's address: our host route cannot be added.
    node.ip(&["route", "add", "blackhole", "10.65.0.9/32"]);
    let s = spec(&node, &pod, "p", vec![v4(9), v6(9)]);
    let error = wiring::add(&s).unwrap_err();
    match &error {
        WiringError::Netlink { step, source, .. } => {
            assert_eq!(
                step,
                &format!("add route 10.65.0.9/32 dev {} scope link", s.host_ifname)
            );
            assert_eq!(source.raw_os_error(), Some(libc_eexist()));
        }
        other => panic!("expected a netlink failure, got {other:?}"),
    }
    assert!(error.to_string().contains(&node.name), "{error}");
    assert_nothing_left(&node, &pod, &s);
    // The route that was there before is still there.
    assert!(node.ip(&["route", "show"]).contains("blackhole 10.65.0.9"));
}

#[test]
fn failing_pod_step_leaves_nothing_behind() {
    require_root();
    let node = node();
    let pod = TestNetns::new("pod");
    pod.ip(&["route", "add", "blackhole", "default"]);
    let s = spec(&node, &pod, "p", vec![v4(2), v6(2)]);
    let error = wiring::add(&s).unwrap_err();
    match &error {
        WiringError::Netlink { step, .. } => {
            assert_eq!(step, "add route default via 169.254.1.1 dev eth0")
        }
        other => panic!("expected a netlink failure, got {other:?}"),
    }
    assert_nothing_left(&node, &pod, &s);
    assert!(pod.ip(&["route", "show"]).contains("blackhole default"));
}

#[test]
fn taken_ifname_or_invalid_mtu_fail_without_leftovers() {
    require_root();
    let node = node();
    let pod = TestNetns::new("pod");
    let s = spec(&node, &pod, "p", vec![v4(2), v6(2)]);

    // IPv6 needs an MTU of at least 1280: refused before anything is created.
    let error = wiring::add(&PodSpec {
        mtu: 1000,
        ..s.clone()
    })
    .unwrap_err();
    assert!(
        matches!(error, WiringError::InvalidSpec { field: "mtu", .. }),
        "{error}"
    );
    assert_nothing_left(&node, &pod, &s);

    // An eth0 that ADD did not create is reported and kept.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let error = wiring::add(&s).unwrap_err();
    assert!(
        matches!(error, WiringError::InterfaceExists { .. }),
        "{error}"
    );
    assert!(pod.has_link("eth0"));
    assert!(!node.has_link(&s.host_ifname));
    // Without a host end, DEL removes the veth called CNI_IFNAME in the pod (as ptp does).
    del(&s).unwrap();
    assert!(!pod.has_link("eth0"));
}

#[test]
fn del_is_idempotent_and_succeeds_after_the_pod_netns_is_gone() {
    require_root();
    let node = node();
    let pod = TestNetns::new("pod");
    let s = spec(&node, &pod, "p", vec![v4(2), v6(2)]);

    wiring::add(&s).unwrap();
    del(&s).unwrap();
    assert_nothing_left(&node, &pod, &s);
    del(&s).unwrap();

    // ADD again after DEL, then lose the pod netns (the container died).
    wiring::add(&s).unwrap();
    pod.delete();
    del(&s).unwrap();
    assert!(!node.has_link(&s.host_ifname));
    del(&s).unwrap();
    wiring::del(s.node_netns.as_deref(), None, "eth0", &s.host_ifname, &[]).unwrap();
}

#[test]
fn repeated_add_replaces_its_own_leftover() {
    require_root();
    let node = node();
    let pod = TestNetns::new("pod");
    let s = spec(&node, &pod, "p", vec![v4(2)]);
    wiring::add(&s).unwrap();
    // A retried ADD (the runtime timed out): the pod's own veth is replaced, not an error.
    let wired = wiring::add(&s).unwrap();
    wiring::check(&s).unwrap();
    let links = node.ip(&["-o", "link", "show", "type", "veth"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(pod.has_link("eth0"));
    assert_eq!(wired.ifname, "eth0");
    del(&s).unwrap();
}

#[test]
fn stale_namespaces_of_dead_runs_are_cleaned_up() {
    require_root();
    // A PID above pid_max can never be alive.
    let pid_max: u32 = run("cat", &["/proc/sys/kernel/pid_max"])
        .trim()
        .parse()
        .unwrap();
    let stale = format!("trl-t{}-{}-stale", pid_max + 1, std::process::id());
    run("ip", &["netns", "add", &stale]);
    let live = TestNetns::new("live");
    assert_eq!(owner_pid(&live.name), Some(std::process::id()));

    let deleted = cleanup_stale();
    assert!(deleted.contains(&stale), "{deleted:?}");
    assert!(!std::path::Path::new("/run/netns").join(&stale).exists());
    assert!(live.path().exists(), "a live run's namespace was deleted");
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}
