//! `trellisctl node status`: this node's agent and BGP sessions (like `calicoctl node status`),
//! read from the agent's status endpoint over its Unix socket, not from the datastore.

use trellis_agent_api::{BgpStatus, StatusResponse, VpcStatus};

use crate::table::Table;

/// The status as text; `now` (Unix seconds) turns session start times into ages.
pub fn render(s: &StatusResponse, now: u64) -> String {
    let mut out = String::new();
    let readiness = if s.ready {
        "ready".to_string()
    } else {
        format!("not ready: {}", s.reason)
    };
    out.push_str(&format!(
        "Trellis agent on node {}: {readiness}, pod MTU {}\n",
        s.node, s.mtu
    ));
    for p in &s.dataplane_problems {
        out.push_str(&format!("dataplane problem: {p}\n"));
    }
    if let Some(v) = &s.vpc {
        render_vpc(&mut out, v);
    }
    match &s.bgp {
        None => out.push_str("BGP: not running on this node (the agent runs without --bgp)\n"),
        Some(b) => render_bgp(&mut out, b, now),
    }
    out
}

fn render_vpc(out: &mut String, v: &VpcStatus) {
    out.push_str(&format!(
        "VPC: instance {} ({}), max pods {}; pool of {} addresses, {} held by pods, {} cooling down\n",
        v.instance_id, v.instance_type, v.max_pods, v.addresses, v.assigned, v.cooling
    ));
    let mut t = Table::default();
    t.header(["ENI", "DEVICE", "MAC", "INTERFACE"]);
    for e in &v.enis {
        t.row(vec![
            e.id.clone(),
            e.device_index.to_string(),
            e.mac.clone(),
            e.interface
                .clone()
                .unwrap_or_else(|| "(not on the host yet)".into()),
        ]);
    }
    out.push_str(&t.render());
    if let Some(c) = &v.condition {
        out.push_str(&format!("EC2 problem: {c}\n"));
    }
}

fn render_bgp(out: &mut String, b: &BgpStatus, now: u64) {
    let rr = b
        .route_reflector_cluster_id
        .as_ref()
        .map_or(String::new(), |c| {
            format!(", route reflector (cluster {c})")
        });
    out.push_str(&format!(
        "BGP: AS {}, router id {}, port {}{rr}; {} prefixes originated, {} learned routes in \
         the kernel{}\n",
        b.asn,
        b.router_id,
        b.listen_port,
        b.prefixes_originated,
        b.routes_installed,
        if b.restart_pending {
            " (restarting: a previous run's routes are kept until every peer has resent its table)"
        } else {
            ""
        }
    ));
    if b.peers.is_empty() {
        out.push_str("No BGP peers configured.\n");
    } else {
        let mut t = Table::default();
        t.header([
            "PEER ADDRESS",
            "ASN",
            "TYPE",
            "STATE",
            "SINCE",
            "RECEIVED",
            "ADVERTISED",
            "INFO",
        ]);
        for p in &b.peers {
            let address = if p.port == 179 {
                p.address.to_string()
            } else {
                match p.address {
                    std::net::IpAddr::V4(a) => format!("{a}:{}", p.port),
                    std::net::IpAddr::V6(a) => format!("[{a}]:{}", p.port),
                }
            };
            let info = match (&p.last_error, p.stale) {
                (_, true) => "peer restarting: its routes kept as stale".to_string(),
                (Some(e), false) if p.state != "Established" => e.clone(),
                _ => p.source.clone(),
            };
            t.row([
                address,
                p.asn.to_string(),
                p.kind.clone(),
                p.state.clone(),
                age(now.saturating_sub(p.since)),
                p.prefixes_received.to_string(),
                p.prefixes_advertised.to_string(),
                info,
            ]);
        }
        out.push_str(&t.render());
    }
    for p in &b.problems {
        out.push_str(&format!("BGP problem: {p}\n"));
    }
}

/// `3d4h`, `2h13m`, `5m2s`, `42s`.
fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_agent_api::BgpPeerStatus;
    use trellis_agent_api::VpcEniStatus;

    fn peer(addr: &str, port: u16, kind: &str, state: &str, since: u64) -> BgpPeerStatus {
        BgpPeerStatus {
            address: addr.parse().unwrap(),
            port,
            asn: 64512,
            kind: kind.into(),
            source: "mesh".into(),
            state: state.into(),
            since,
            prefixes_received: 2,
            prefixes_advertised: 3,
            stale: false,
            last_error: None,
        }
    }

    #[test]
    fn sessions_as_a_table_with_ages_and_errors() {
        let mut down = peer("fd00::3", 1790, "global", "Active", 9_940);
        down.source = "BGPPeer tor".into();
        down.last_error = Some("connect: connection refused".into());
        let mut stale = peer("172.30.0.4", 179, "rr", "Idle", 9_999);
        stale.stale = true;
        let s = StatusResponse {
            ready: true,
            reason: String::new(),
            node: "node-1".into(),
            mtu: 1450,
            dataplane_problems: vec![],
            bgp: Some(BgpStatus {
                asn: 64512,
                router_id: "172.30.0.1".into(),
                listen_port: 179,
                route_reflector_cluster_id: None,
                peers: vec![
                    peer("172.30.0.2", 179, "mesh", "Established", 10_000 - 7384),
                    down,
                    stale,
                ],
                prefixes_originated: 3,
                routes_installed: 4,
                restart_pending: false,
                problems: vec!["peer 192.0.2.1 (BGPPeer x): reading /pw: not found".into()],
            }),
            vpc: None,
        };
        let text = render(&s, 10_000);
        let expected = "\
Trellis agent on node node-1: ready, pod MTU 1450
BGP: AS 64512, router id 172.30.0.1, port 179; 3 prefixes originated, 4 learned routes in the kernel
PEER ADDRESS     ASN     TYPE     STATE         SINCE   RECEIVED   ADVERTISED   INFO
172.30.0.2       64512   mesh     Established   2h3m    2          3            mesh
[fd00::3]:1790   64512   global   Active        1m0s    2          3            connect: connection refused
172.30.0.4       64512   rr       Idle          1s      2          3            peer restarting: its routes kept as stale
BGP problem: peer 192.0.2.1 (BGPPeer x): reading /pw: not found
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn without_bgp_it_says_so() {
        let s = StatusResponse {
            ready: false,
            reason: "no enabled IP pool selects node n".into(),
            node: "n".into(),
            mtu: 1500,
            dataplane_problems: vec!["kernel has no ipip support".into()],
            bgp: None,
            vpc: None,
        };
        assert_eq!(
            render(&s, 0),
            "Trellis agent on node n: not ready: no enabled IP pool selects node n, pod MTU 1500\n\
             dataplane problem: kernel has no ipip support\n\
             BGP: not running on this node (the agent runs without --bgp)\n"
        );
    }

    #[test]
    fn the_eni_pool_with_its_interfaces_and_the_ec2_problem() {
        let eni = |id: &str, device_index, interface: Option<&str>| VpcEniStatus {
            id: id.into(),
            device_index,
            mac: format!("0e:00:00:00:00:0{device_index}"),
            interface: interface.map(String::from),
        };
        let s = StatusResponse {
            ready: true,
            reason: String::new(),
            node: "n".into(),
            mtu: 9001,
            dataplane_problems: vec![],
            bgp: None,
            vpc: Some(VpcStatus {
                instance_id: "i-0abc".into(),
                instance_type: "t3.small".into(),
                max_pods: 11,
                enis: vec![eni("eni-1", 0, Some("eth0")), eni("eni-2", 1, None)],
                addresses: 6,
                assigned: 2,
                cooling: 1,
                condition: Some("EC2 AssignPrivateIpAddresses (eni-2, 3) throttled".into()),
            }),
        };
        assert_eq!(
            render(&s, 0),
            "Trellis agent on node n: ready, pod MTU 9001\n\
             VPC: instance i-0abc (t3.small), max pods 11; pool of 6 addresses, 2 held by pods, 1 cooling down\n\
             ENI     DEVICE   MAC                 INTERFACE\n\
             eni-1   0        0e:00:00:00:00:00   eth0\n\
             eni-2   1        0e:00:00:00:00:01   (not on the host yet)\n\
             EC2 problem: EC2 AssignPrivateIpAddresses (eni-2, 3) throttled\n\
             BGP: not running on this node (the agent runs without --bgp)\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(61), "1m1s");
        assert_eq!(age(3 * 86400 + 4 * 3600 + 5), "3d4h");
    }
}
