use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn eni(id: &str, device_index: u32, for_pods: bool, attached_at: Instant) -> EniInfo {
    EniInfo {
        id: id.into(),
        device_index,
        attachment_id: Some(format!("attach-{id}")),
        primary: device_index == 0,
        for_pods,
        subnet: net("10.0.0.0/24"),
        mac: format!("02:00:00:00:00:0{device_index}"),
        primary_ip: Some(Ipv4Addr::new(10, 0, 0, 100 + device_index as u8)),
        attached_at,
    }
}

/// eni-0 (primary) with .10 and .11, eni-1 with .20.
fn book(t0: Instant) -> AddressBook {
    let mut b = AddressBook::new(COOLDOWN);
    b.add_eni(eni("eni-0", 0, true, t0));
    b.add_eni(eni("eni-1", 1, true, t0));
    b.add_slots("eni-0", &[net("10.0.0.11/32"), net("10.0.0.10/32")])
        .unwrap();
    b.add_slots("eni-1", &[net("10.0.0.20/32")]).unwrap();
    b
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn addresses_go_lowest_device_then_lowest_address_and_a_repeated_add_gets_the_same() {
    let t0 = Instant::now();
    let mut b = book(t0);
    let a = b.assign(&Owner::new("c1", "eth0"), t0, 100).unwrap();
    assert_eq!(
        (a.ip, a.eni_id.as_str(), a.device_index),
        (ip("10.0.0.10"), "eni-0", 0)
    );
    assert!(a.primary_eni);
    let again = b.assign(&Owner::new("c1", "eth0"), t0, 200).unwrap();
    assert_eq!(again, a, "a repeated ADD");
    let second = b.assign(&Owner::new("c2", "eth0"), t0, 100).unwrap();
    assert_eq!(second.ip, ip("10.0.0.11"));
    let third = b.assign(&Owner::new("c3", "eth0"), t0, 100).unwrap();
    assert_eq!((third.ip, third.device_index), (ip("10.0.0.20"), 1));
    assert_eq!(
        b.assign(&Owner::new("c4", "eth0"), t0, 100),
        Err(BookError::Exhausted {
            assigned: 3,
            cooling: 0
        })
    );
}

#[test]
fn a_released_address_cools_down_before_any_pod_gets_it_again() {
    let t0 = Instant::now();
    let mut b = AddressBook::new(COOLDOWN);
    b.add_eni(eni("eni-0", 0, true, t0));
    b.add_slots("eni-0", &[net("10.0.0.10/32")]).unwrap();
    let c1 = Owner::new("c1", "eth0");
    b.assign(&c1, t0, 1).unwrap();
    let gone = b.release(&c1, t0).unwrap();
    assert_eq!(gone.ip, ip("10.0.0.10"));
    assert_eq!(b.release(&c1, t0), None, "a repeated DEL");
    let c2 = Owner::new("c2", "eth0");
    let early = t0 + COOLDOWN - Duration::from_millis(1);
    assert_eq!(
        b.assign(&c2, early, 1),
        Err(BookError::Exhausted {
            assigned: 0,
            cooling: 1
        })
    );
    let view = b.warm_view(early);
    assert_eq!(view[0].slots[0].cooling, 1);
    let later = t0 + COOLDOWN;
    assert_eq!(b.assign(&c2, later, 2).unwrap().ip, ip("10.0.0.10"));
}

#[test]
fn the_primary_eni_under_custom_networking_gives_no_pod_addresses() {
    let t0 = Instant::now();
    let mut b = AddressBook::new(COOLDOWN);
    b.add_eni(eni("eni-0", 0, false, t0));
    b.add_slots("eni-0", &[net("10.0.0.10/32")]).unwrap();
    b.add_eni(eni("eni-1", 1, true, t0));
    b.add_slots("eni-1", &[net("10.1.0.5/32")]).unwrap();
    assert_eq!(
        b.assign(&Owner::new("c1", "eth0"), t0, 1).unwrap().eni_id,
        "eni-1"
    );
    assert!(b.assign(&Owner::new("c2", "eth0"), t0, 1).is_err());
}

#[test]
fn a_prefix_gives_its_sixteen_addresses() {
    let t0 = Instant::now();
    let mut b = AddressBook::new(COOLDOWN);
    b.add_eni(eni("eni-0", 0, true, t0));
    b.add_slots("eni-0", &[net("10.0.0.32/28")]).unwrap();
    let got: Vec<Ipv4Addr> = (0..16)
        .map(|i| {
            b.assign(&Owner::new(format!("c{i}"), "eth0"), t0, 1)
                .unwrap()
                .ip
        })
        .collect();
    assert_eq!(got.first(), Some(&ip("10.0.0.32")));
    assert_eq!(got.last(), Some(&ip("10.0.0.47")));
    assert!(b.assign(&Owner::new("c16", "eth0"), t0, 1).is_err());
    let view = b.warm_view(t0);
    assert_eq!(view[0].slots[0].assigned, 16);
}

#[test]
fn slots_and_enis_held_by_pods_are_not_forgotten() {
    let t0 = Instant::now();
    let mut b = book(t0);
    let c1 = Owner::new("c1", "eth0");
    b.assign(&c1, t0, 1).unwrap();
    assert_eq!(
        b.remove_slots("eni-0", &[net("10.0.0.10/32"), net("10.0.0.11/32")]),
        vec![net("10.0.0.10/32")]
    );
    assert_eq!(b.slots("eni-0"), vec![net("10.0.0.10/32")]);
    assert_eq!(b.remove_eni("eni-0"), Err(vec![c1.clone()]));
    b.release(&c1, t0);
    assert_eq!(b.remove_eni("eni-0"), Ok(()));
    assert!(b.eni("eni-0").is_none());
    assert_eq!(
        b.add_slots("eni-0", &[net("10.0.0.12/32")]),
        Err(BookError::UnknownEni {
            eni_id: "eni-0".into()
        })
    );
}

#[test]
fn a_checkpoint_round_trip_keeps_live_pods_and_cools_the_rest() {
    let t0 = Instant::now();
    let mut b = book(t0);
    for c in ["c1", "c2", "c3"] {
        b.assign(&Owner::new(c, "eth0"), t0, 7).unwrap();
    }
    let saved = b.allocations();
    assert_eq!(saved.len(), 3);
    assert_eq!(saved[2].eni_id, "eni-1");
    assert_eq!(saved[0].allocated_at, 7);

    // A restart: EC2 still has eni-0's addresses but eni-1 was detached meanwhile; c2's pod
    // is gone.
    let t1 = t0 + Duration::from_secs(100);
    let mut fresh = AddressBook::new(COOLDOWN);
    fresh.add_eni(eni("eni-0", 0, true, t1));
    fresh
        .add_slots("eni-0", &[net("10.0.0.10/32"), net("10.0.0.11/32")])
        .unwrap();
    let r = fresh.restore(&saved, |a| a.container_id != "c2", t1);
    assert_eq!(r.kept.len(), 1);
    assert_eq!(r.kept[0].container_id, "c1");
    assert_eq!(r.released.len(), 1);
    assert_eq!(r.released[0].container_id, "c2");
    assert_eq!(r.lost.len(), 1);
    assert_eq!(r.lost[0].container_id, "c3");
    assert_eq!(
        fresh.held_by(&Owner::new("c1", "eth0")).unwrap().ip,
        ip("10.0.0.10")
    );
    assert_eq!(fresh.allocations(), vec![saved[0].clone()]);
    // c2's address cools down; no other pod gets it before.
    assert!(fresh.assign(&Owner::new("c9", "eth0"), t1, 9).is_err());
    assert_eq!(
        fresh
            .assign(&Owner::new("c9", "eth0"), t1 + COOLDOWN, 9)
            .unwrap()
            .ip,
        ip("10.0.0.11")
    );
}

#[test]
fn the_warm_view_marks_young_enis_and_counts_per_slot() {
    let t0 = Instant::now();
    let mut b = book(t0);
    b.assign(&Owner::new("c1", "eth0"), t0, 1).unwrap();
    let view = b.warm_view(t0 + Duration::from_secs(1));
    assert_eq!(view.len(), 2);
    assert_eq!(view[0].id, "eni-0");
    assert!(view[0].primary && view[0].young);
    assert_eq!(
        view[0]
            .slots
            .iter()
            .map(|s| (s.cidr, s.assigned))
            .collect::<Vec<_>>(),
        vec![(net("10.0.0.10/32"), 1), (net("10.0.0.11/32"), 0)]
    );
    assert!(!b.warm_view(t0 + YOUNG)[1].young);
}

#[test]
fn an_address_reported_on_two_enis_or_as_an_enis_own_is_not_used_twice() {
    let t0 = Instant::now();
    let mut b = book(t0);
    // 10.0.0.10 is eni-0's already; 10.0.0.100 is eni-0's own address.
    assert_eq!(
        b.add_slots(
            "eni-1",
            &[
                net("10.0.0.10/32"),
                net("10.0.0.100/32"),
                net("10.0.0.21/32")
            ]
        ),
        Ok(vec![net("10.0.0.10/32"), net("10.0.0.100/32")])
    );
    assert_eq!(
        b.slots("eni-1"),
        vec![net("10.0.0.20/32"), net("10.0.0.21/32")]
    );
    // A prefix overlapping a known /32 is refused whole.
    assert_eq!(
        b.add_slots("eni-1", &[net("10.0.0.16/28")]),
        Ok(vec![net("10.0.0.16/28")])
    );
    let got: Vec<Ipv4Addr> = (0..5)
        .filter_map(|i| b.assign(&Owner::new(format!("c{i}"), "eth0"), t0, 1).ok())
        .map(|a| a.ip)
        .collect();
    assert_eq!(
        got,
        [
            ip("10.0.0.10"),
            ip("10.0.0.11"),
            ip("10.0.0.20"),
            ip("10.0.0.21")
        ]
    );
}

#[test]
fn an_eni_waiting_for_its_interface_gives_no_pod_an_address_until_it_is_ready() {
    let t0 = Instant::now();
    let mut b = book(t0);
    b.wait_for_interface("eni-1");
    b.assign(&Owner::new("c1", "eth0"), t0, 100).unwrap();
    b.assign(&Owner::new("c2", "eth0"), t0, 100).unwrap();
    assert_eq!(
        b.assign(&Owner::new("c3", "eth0"), t0, 100),
        Err(BookError::Exhausted {
            assigned: 2,
            cooling: 0
        }),
        "eni-1's .20 is held back"
    );
    // The warm pool still counts it: no second ENI is attached for the same need.
    let view = b.warm_view(t0);
    assert_eq!(view.iter().map(|e| e.slots.len()).sum::<usize>(), 3);
    assert_eq!(b.waiting(), vec!["eni-1".to_string()]);
    assert!(b.interface_ready("eni-1"));
    assert!(!b.interface_ready("eni-1"), "only once");
    let third = b.assign(&Owner::new("c3", "eth0"), t0, 100).unwrap();
    assert_eq!((third.ip, third.device_index), (ip("10.0.0.20"), 1));
}
