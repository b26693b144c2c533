use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use super::*;
use crate::wiring::fake::{has_veth, FakeNamespaces};
use crate::wiring::plan::Route;

const HOST: &str = "trellisc440f455";

fn spec() -> PodSpec {
    PodSpec {
        node_netns: None,
        pod_netns: PathBuf::from("/run/netns/pod"),
        ifname: "eth0".to_owned(),
        host_ifname: HOST.to_owned(),
        addresses: vec![
            IpAddr::V4(Ipv4Addr::new(10, 65, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        ],
        mtu: 1450,
    }
}

/// Nothing of the pod's wiring is left on either side.
fn assert_clean(ns: &FakeNamespaces) {
    let world = ns.world.borrow();
    assert!(
        world.link(Side::Node, HOST).is_none(),
        "host veth left: {:?}",
        world.links
    );
    assert!(
        world.link(Side::Pod, "eth0").is_none(),
        "eth0 left: {:?}",
        world.links
    );
    assert_eq!(world.config_count(), 0, "configuration left");
}

#[test]
fn add_wires_both_sides_and_check_passes() {
    let ns = FakeNamespaces::default();
    let wired = add(&ns, &spec()).unwrap();
    {
        let world = ns.world.borrow();
        let host = world.link(Side::Node, HOST).unwrap();
        let pod = world.link(Side::Pod, "eth0").unwrap();
        assert_eq!(wired.host_ifindex, host.index);
        assert_eq!(wired.container_ifindex, pod.index);
        assert_eq!(wired.container_mac, [2, 0, 0, 0, 0, pod.index as u8]);
        assert!(host.up && pod.up);
        assert_eq!((host.mtu, pod.mtu), (1450, 1450));
        assert_eq!(world.sysctls.len(), 3);
        assert_eq!(
            world.log[0],
            format!("node: create veth {HOST} (mtu 1450) with peer eth0 in the pod netns")
        );
        assert!(
            world.log.iter().all(|l| !l.contains(" -> ")),
            "{:#?}",
            world.log
        );
    }
    check(&ns, &spec()).unwrap();
}

#[test]
fn failed_pod_step_rolls_everything_back_and_names_the_step() {
    let ns = FakeNamespaces::default();
    ns.world.borrow_mut().failures.push((
        Side::Pod,
        "default via 169.254.1.1".into(),
        Errno::EEXIST,
    ));
    let error = add(&ns, &spec()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "add route default via 169.254.1.1 dev eth0 in pod netns fake: File exists (os error 17)"
    );
    assert_clean(&ns);
    let world = ns.world.borrow();
    assert_eq!(
        world.log.last().unwrap(),
        &format!("node: delete veth {HOST}")
    );
}

#[test]
fn failed_host_step_rolls_everything_back() {
    let ns = FakeNamespaces::default();
    ns.world.borrow_mut().failures.push((
        Side::Node,
        "add route fd00::2/128".into(),
        Errno::EEXIST,
    ));
    let error = add(&ns, &spec()).unwrap_err();
    let WiringError::Netlink { step, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(step, &format!("add route fd00::2/128 dev {HOST}"));
    assert_clean(&ns);
}

#[test]
fn failed_rollback_reports_both_errors() {
    let ns = FakeNamespaces::default();
    {
        let mut world = ns.world.borrow_mut();
        world.failures.push((
            Side::Pod,
            "add address 10.65.0.2".into(),
            Errno::EADDRNOTAVAIL,
        ));
        world
            .failures
            .push((Side::Node, "delete veth".into(), Errno::EBUSY));
    }
    let error = add(&ns, &spec()).unwrap_err();
    let WiringError::RollbackFailed { cause, rollback } = &error else {
        panic!("{error}");
    };
    assert!(
        cause
            .to_string()
            .starts_with("add address 10.65.0.2/32 to eth0"),
        "{cause}"
    );
    assert!(
        rollback
            .to_string()
            .starts_with(&format!("delete veth {HOST}")),
        "{rollback}"
    );
}

#[test]
fn leftover_host_veth_of_the_same_pod_is_replaced() {
    let ns = FakeNamespaces::default();
    add(&ns, &spec()).unwrap();
    add(&ns, &spec()).unwrap();
    check(&ns, &spec()).unwrap();
    let world = ns.world.borrow();
    assert_eq!(world.links.len(), 2, "{:?}", world.links);
}

#[test]
fn taken_ifname_in_the_pod_is_reported_and_left_alone() {
    let ns = FakeNamespaces::default();
    ns.world.borrow_mut().add_link(Side::Pod, "eth0", false);
    let error = add(&ns, &spec()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "interface eth0 already exists in pod netns fake"
    );
    let world = ns.world.borrow();
    assert!(world.link(Side::Pod, "eth0").is_some());
    assert!(world.link(Side::Node, HOST).is_none());
}

#[test]
fn host_name_taken_by_something_else_is_not_replaced() {
    let ns = FakeNamespaces::default();
    ns.world.borrow_mut().add_link(Side::Node, HOST, false);
    let error = add(&ns, &spec()).unwrap_err();
    assert!(matches!(error, WiringError::NotAVeth { .. }), "{error}");
    assert!(ns.world.borrow().link(Side::Node, HOST).is_some());
}

#[test]
fn invalid_specs_touch_nothing() {
    let ns = FakeNamespaces::default();
    let cases = [
        PodSpec {
            mtu: 1000,
            ..spec()
        },
        PodSpec {
            mtu: 70_000,
            ..spec()
        },
        PodSpec {
            ifname: "this-is-too-long".into(),
            ..spec()
        },
        PodSpec {
            addresses: vec![],
            ..spec()
        },
        PodSpec {
            addresses: vec![spec().addresses[0]; 2],
            ..spec()
        },
        PodSpec {
            addresses: vec![IpAddr::V4(GATEWAY_V4)],
            ..spec()
        },
    ];
    for case in cases {
        let error = add(&ns, &case).unwrap_err();
        assert!(matches!(error, WiringError::InvalidSpec { .. }), "{error}");
    }
    // IPv4 alone may go below IPv6's minimum MTU.
    let small = PodSpec {
        mtu: 576,
        addresses: vec![spec().addresses[0]],
        ..spec()
    };
    add(&ns, &small).unwrap();
    assert!(
        ns.world
            .borrow()
            .log
            .iter()
            .filter(|l| l.contains("create veth"))
            .count()
            == 1
    );
}

#[test]
fn del_is_idempotent() {
    let ns = FakeNamespaces::default();
    let s = spec();
    add(&ns, &s).unwrap();
    for _ in 0..2 {
        del(&ns, None, Some(&s.pod_netns), "eth0", HOST, &s.addresses).unwrap();
        assert_clean(&ns);
    }
}

#[test]
fn del_without_host_end_deletes_the_pod_end() {
    let ns = FakeNamespaces::default();
    let s = spec();
    add(&ns, &s).unwrap();
    // Called with another host name (say, after a prefix change): found through the pod.
    del(
        &ns,
        None,
        Some(&s.pod_netns),
        "eth0",
        "trellis00000000",
        &s.addresses,
    )
    .unwrap();
    assert_clean(&ns);
}

#[test]
fn del_succeeds_when_the_pod_netns_is_gone() {
    let ns = FakeNamespaces::default();
    ns.world.borrow_mut().gone.push(Side::Pod);
    del(&ns, None, Some(&spec().pod_netns), "eth0", HOST, &[]).unwrap();
    del(&ns, None, None, "eth0", HOST, &[]).unwrap();
}

#[test]
fn del_leaves_interfaces_that_are_not_veths() {
    let ns = FakeNamespaces::default();
    ns.world.borrow_mut().add_link(Side::Pod, "eth0", false);
    del(&ns, None, Some(&spec().pod_netns), "eth0", HOST, &[]).unwrap();
    assert!(!has_veth(&ns.world.borrow(), Side::Pod, "eth0"));
    assert!(ns.world.borrow().link(Side::Pod, "eth0").is_some());
}

#[test]
fn check_names_exactly_what_is_missing() {
    let ns = FakeNamespaces::default();
    let s = spec();
    add(&ns, &s).unwrap();
    {
        let mut world = ns.world.borrow_mut();
        world.remove_config(Side::Pod, |m| {
            matches!(m, RouteNetlinkMessage::NewRoute(r)
                if observe::parse_route(r).is_some_and(|(_, r)| r.via == Some(GATEWAY_V4.into())))
        });
        world.sysctls.insert(
            format!("/proc/sys/net/ipv4/conf/{HOST}/proxy_arp"),
            "0".into(),
        );
    }
    let error = check(&ns, &s).unwrap_err();
    let WiringError::Check { problems } = &error else {
        panic!("{error}");
    };
    assert_eq!(
        problems,
        &[
            Problem::Sysctl {
                path: format!("/proc/sys/net/ipv4/conf/{HOST}/proxy_arp"),
                expected: "1".into(),
                actual: Some("0".into()),
            },
            Problem::RouteMissing {
                side: Side::Pod,
                name: "eth0".into(),
                route: Route::default_via(IpAddr::V4(GATEWAY_V4)),
            },
        ]
    );
}

#[test]
fn check_reports_missing_interfaces() {
    let ns = FakeNamespaces::default();
    let error = check(&ns, &spec()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "pod wiring is incomplete: node netns: interface {HOST} is missing; \
             pod netns: interface eth0 is missing"
        )
    );
}
