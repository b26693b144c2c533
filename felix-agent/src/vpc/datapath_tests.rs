use std::time::Instant;

use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

use super::*;

fn link(name: &str, mac: [u8; 6]) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    m
}

fn eni(id: &str, device_index: u32, mac: &str) -> EniInfo {
    EniInfo {
        id: id.into(),
        device_index,
        attachment_id: Some(format!("attach-{id}")),
        primary: device_index == 0,
        for_pods: true,
        subnet: "10.0.0.0/24".parse().unwrap(),
        mac: mac.into(),
        primary_ip: None,
        attached_at: Instant::now(),
    }
}

fn alloc(cid: &str, ip: &str, eni: &str) -> Allocation {
    Allocation {
        container_id: cid.into(),
        ifname: "eth0".into(),
        ip: ip.parse().unwrap(),
        eni_id: eni.into(),
        allocated_at: 0,
    }
}

#[test]
fn macs_are_lower_case_hex_and_links_without_one_are_skipped() {
    let mut lo = LinkMessage::default();
    lo.attributes.push(LinkAttribute::IfName("lo".into()));
    let by_mac = interfaces_by_mac(&[link("eth1", [0x0e, 0xAB, 0, 0, 0, 1]), lo]);
    assert_eq!(
        by_mac,
        BTreeMap::from([("0e:ab:00:00:00:01".to_string(), "eth1".to_string())])
    );
}

#[test]
fn enis_are_found_by_mac_and_pods_of_a_missing_one_wait() {
    let by_mac = interfaces_by_mac(&[
        link("eth0", [0x0e, 0, 0, 0, 0, 0]),
        link("trellis1a2b3c4d", [0x0e, 9, 9, 9, 9, 9]),
    ]);
    let enis = [
        eni("eni-a", 0, "0E:00:00:00:00:00"),
        eni("eni-b", 1, "0e:00:00:00:00:01"),
    ];
    let allocs = [
        alloc("c1aaaaaaaaaaaaaaaa", "10.0.0.10", "eni-a"),
        alloc("c2", "10.0.0.20", "eni-b"),
    ];
    let got = pass_inputs(&enis, &allocs, &by_mac);
    assert_eq!(got.primary_if.as_deref(), Some("eth0"));
    assert_eq!(got.present, BTreeSet::from(["eni-a".to_string()]));
    assert_eq!(got.enis.len(), 1);
    assert_eq!(got.enis[0].if_name, "eth0");
    assert_eq!(
        got.pods,
        vec![PodAttachment {
            ip: "10.0.0.10".parse().unwrap(),
            host_veth: "c1aaaaaaaaaa/eth0".into(),
            eni_id: "eni-a".into(),
        }]
    );
    assert_eq!(
        got.pending,
        vec!["ENI eni-b (device 1, MAC 0e:00:00:00:00:01) has no interface on this host yet"]
    );
}
