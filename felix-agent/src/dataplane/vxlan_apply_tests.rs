//! Unit tests of the VXLAN executor: reconcile passes against an in-memory kernel. No root.

use std::collections::BTreeMap;

use super::*;
use crate::dataplane::fake::FakeNetlink;
use crate::dataplane::fixtures::{a, a4, device, mac, net};
use crate::dataplane::vxlan::vtep_mac_addr_for;

/// This node plus one remote node (VTEP 10.244.1.1, underlay 192.0.2.2) with two blocks.
fn desired() -> VxlanDesired {
    let m2 = mac("66:00:00:00:00:02");
    VxlanDesired {
        device: Some(device()),
        neighbours: BTreeMap::from([(a("10.244.1.1"), m2)]),
        fdb: BTreeMap::from([(m2, a4("192.0.2.2"))]),
        routes: BTreeMap::from([
            (net("10.244.1.0/26"), a("10.244.1.1")),
            (net("10.244.1.64/26"), a("10.244.1.1")),
        ]),
    }
}

fn executor(d: &VxlanDesired) -> VxlanExecutor {
    let mut e = VxlanExecutor::new();
    e.set_desired(d);
    e
}

fn run(e: &mut VxlanExecutor, k: &mut FakeNetlink) -> Vec<String> {
    futures::executor::block_on(e.apply(k)).unwrap();
    k.take_sent()
}

/// A kernel already holding exactly `desired()`.
fn programmed_kernel() -> FakeNetlink {
    let mut k = FakeNetlink::new();
    run(&mut executor(&desired()), &mut k);
    k
}

// --- reconcile passes ------------------------------------------------------------------------

#[test]
fn first_pass_on_an_empty_kernel_creates_everything_once() {
    let mut k = FakeNetlink::new();
    let mut e = executor(&desired());
    let sent = run(&mut e, &mut k);
    assert_eq!(
        sent,
        vec![
            "create vxlan.trellis (vni 4096, port 4789, local 192.0.2.1, mac 66:00:00:00:00:01, mtu 1450)",
            "add address 10.244.0.1/32 to vxlan.trellis",
            "add neighbour 10.244.1.1 lladdr 66:00:00:00:00:02 dev vxlan.trellis",
            "add fdb 66:00:00:00:00:02 dst 192.0.2.2 dev vxlan.trellis",
            "add route 10.244.1.0/26 via 10.244.1.1 dev vxlan.trellis onlink proto 80",
            "add route 10.244.1.64/26 via 10.244.1.1 dev vxlan.trellis onlink proto 80",
        ]
    );
    assert!(e.last_stats().resynced);
    assert!(!e.has_pending_work());
    assert_eq!(k.entries.routes.len(), 2);
    // Nothing changed: no I/O at all, not even a read.
    let reads = k.reads;
    assert!(run(&mut e, &mut k).is_empty());
    assert_eq!(k.reads, reads);
}

#[test]
fn restart_on_a_programmed_kernel_writes_nothing() {
    let mut k = programmed_kernel();
    let index = k.device.as_ref().unwrap().index;
    let mut e = executor(&desired());
    assert!(run(&mut e, &mut k).is_empty());
    assert_eq!(e.last_stats().writes, 0);
    assert!(e.last_stats().resynced);
    assert_eq!(k.device.as_ref().unwrap().index, index);
    // A periodic resync of the same executor finds nothing to do either.
    e.request_resync();
    assert!(run(&mut e, &mut k).is_empty());
}

#[test]
fn resync_deletes_only_stale_entries_of_ours() {
    let mut k = programmed_kernel();
    let m3 = mac("66:00:00:00:00:03");
    k.entries.neighbours.insert(a("10.244.2.1"), m3);
    k.entries.fdb.insert(m3, a4("192.0.2.3"));
    k.entries
        .routes
        .insert(net("10.244.2.0/26"), a("10.244.2.1"));
    // Someone pointed one of our routes elsewhere.
    k.entries
        .routes
        .insert(net("10.244.1.0/26"), a("10.244.2.1"));
    let mut e = executor(&desired());
    assert_eq!(
        run(&mut e, &mut k),
        vec![
            "delete route 10.244.2.0/26 via 10.244.2.1 dev vxlan.trellis proto 80",
            "delete fdb 66:00:00:00:00:03 dst 192.0.2.3 dev vxlan.trellis",
            "delete neighbour 10.244.2.1 dev vxlan.trellis",
            "replace route 10.244.1.0/26 via 10.244.1.1 dev vxlan.trellis onlink proto 80",
        ]
    );
    assert_eq!(k.entries.routes, desired().routes);
}

#[test]
fn fixed_parameter_change_recreates_and_reprograms() {
    let mut k = programmed_kernel();
    k.device.as_mut().unwrap().vni = Some(1);
    let mut e = executor(&desired());
    let sent = run(&mut e, &mut k);
    assert_eq!(sent[0], "delete link vxlan.trellis (index 10)");
    assert!(sent[1].starts_with("create vxlan.trellis"));
    assert_eq!(
        sent.len(),
        2 + 1 + 4,
        "address, neighbour, fdb and two routes again"
    );
    assert_eq!(k.device.as_ref().unwrap().index, 11);
    assert_eq!(k.entries.routes, desired().routes);
}

#[test]
fn mtu_or_address_change_is_done_in_place() {
    let mut k = programmed_kernel();
    let mut d = desired();
    d.device.as_mut().unwrap().mtu = 1400;
    d.device.as_mut().unwrap().address = a("10.244.0.2");
    let mut e = executor(&d);
    assert_eq!(
        run(&mut e, &mut k),
        vec![
            "set vxlan.trellis mtu 1400 address 66:00:00:00:00:01 up",
            "delete address 10.244.0.1/32 from vxlan.trellis",
            "add address 10.244.0.2/32 to vxlan.trellis",
        ]
    );
    assert_eq!(k.device.as_ref().unwrap().index, 10);
}

#[test]
fn mac_change_re_adds_the_arp_entries_the_kernel_flushed() {
    let mut k = programmed_kernel();
    let mut d = desired();
    d.device.as_mut().unwrap().mac = mac("66:00:00:00:01:01");
    let mut e = executor(&d);
    assert_eq!(
        run(&mut e, &mut k),
        vec![
            "set vxlan.trellis mtu 1450 address 66:00:00:00:01:01 up",
            "add neighbour 10.244.1.1 lladdr 66:00:00:00:00:02 dev vxlan.trellis",
        ]
    );
    assert_eq!(k.entries.neighbours, d.neighbours);
    assert_eq!(k.device.as_ref().unwrap().index, 10);
}

#[test]
fn no_vxlan_pool_deletes_the_device_and_nothing_else() {
    let mut k = programmed_kernel();
    let mut e = executor(&VxlanDesired::default());
    assert_eq!(
        run(&mut e, &mut k),
        vec!["delete link vxlan.trellis (index 10)"]
    );
    assert!(k.device.is_none());
    assert!(run(&mut e, &mut k).is_empty());
}

#[test]
fn failed_write_marks_resync_and_the_next_pass_retries_only_that() {
    let mut k = FakeNetlink::new();
    k.fail = Some(|r| r.what.starts_with("add route 10.244.1.64/26"));
    let mut e = executor(&desired());
    let err = futures::executor::block_on(e.apply(&mut k)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("1 of 6") && text.contains("add route 10.244.1.64/26"),
        "{text}"
    );
    assert!(e.needs_resync());
    assert_eq!(e.last_stats().failures, 1);
    k.take_sent();

    k.fail = None;
    let reads = k.reads;
    assert_eq!(
        run(&mut e, &mut k),
        vec!["add route 10.244.1.64/26 via 10.244.1.1 dev vxlan.trellis onlink proto 80"]
    );
    assert_eq!(k.reads, reads + 1, "the retry read the kernel first");
    assert!(!e.needs_resync());
}

#[test]
fn failed_create_stops_the_pass() {
    let mut k = FakeNetlink::new();
    k.fail = Some(|r| r.what.starts_with("create"));
    let mut e = executor(&desired());
    let err = futures::executor::block_on(e.apply(&mut k)).unwrap_err();
    assert!(err.to_string().starts_with("create vxlan.trellis"), "{err}");
    assert_eq!(k.sent.len(), 1);
    assert!(e.needs_resync());
}

#[test]
fn vtep_change_through_the_executor() {
    let mut k = programmed_kernel();
    let mut e = executor(&desired());
    run(&mut e, &mut k);
    let new_mac = vtep_mac_addr_for("node-2-reinstalled");
    let mut d = desired();
    d.neighbours = BTreeMap::from([(a("10.244.1.1"), new_mac)]);
    d.fdb = BTreeMap::from([(new_mac, a4("192.0.2.2"))]);
    e.set_desired(&d);
    let sent = run(&mut e, &mut k);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[0].starts_with("delete fdb 66:00:00:00:00:02"));
    assert!(sent[1].starts_with("replace neighbour") || sent[1].starts_with("add neighbour"));
    assert!(sent[2].starts_with(&format!("add fdb {new_mac}")));
    assert_eq!(k.entries.neighbours[&a("10.244.1.1")], new_mac);
}

#[test]
fn ipv6_executor_programs_vxlan6_with_ndp_fdb_and_routes() {
    use crate::dataplane::vxlan::{vtep_mac_addr_v6_for, VxlanFamily};
    let m2 = vtep_mac_addr_v6_for("node-2");
    let d = VxlanDesired {
        device: Some(VxlanDeviceSpec {
            name: "vxlan6.trellis".into(),
            vni: 6096,
            port: 4789,
            address: a("fd00:244::1"),
            mac: vtep_mac_addr_v6_for("node-1"),
            ..device()
        }),
        neighbours: BTreeMap::from([(a("fd00:244::41"), m2)]),
        fdb: BTreeMap::from([(m2, a4("192.0.2.2"))]),
        routes: BTreeMap::from([(net("fd00:244::40/122"), a("fd00:244::41"))]),
    };
    let mut e = VxlanExecutor::for_family(VxlanFamily::V6);
    e.set_desired(&d);
    let mut k = FakeNetlink::new();
    let sent = run(&mut e, &mut k);
    assert_eq!(
        sent,
        vec![
            format!(
                "create vxlan6.trellis (vni 6096, port 4789, local 192.0.2.1, mac {}, mtu 1450)",
                vtep_mac_addr_v6_for("node-1")
            ),
            "add address fd00:244::1/128 to vxlan6.trellis".to_string(),
            format!("add neighbour fd00:244::41 lladdr {m2} dev vxlan6.trellis"),
            format!("add fdb {m2} dst 192.0.2.2 dev vxlan6.trellis"),
            "add route fd00:244::40/122 via fd00:244::41 dev vxlan6.trellis onlink proto 80"
                .to_string(),
        ]
    );
    assert_eq!(k.device_name, "vxlan6.trellis");
    assert_eq!(
        k.entries.routes[&net("fd00:244::40/122")],
        a("fd00:244::41")
    );
    // A restart reads it all back and writes nothing.
    let mut again = VxlanExecutor::for_family(VxlanFamily::V6);
    again.set_desired(&d);
    assert!(run(&mut again, &mut k).is_empty());
    // The IPv4 executor on the same kernel does not see vxlan6.trellis.
    let mut v4 = VxlanExecutor::new();
    v4.set_desired(&VxlanDesired::default());
    assert!(run(&mut v4, &mut k).is_empty());
    assert!(k.device.is_some());
}
