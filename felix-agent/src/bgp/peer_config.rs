//! One desired peer as the speaker's [`PeerConfig`]: its password read from the agent's
//! environment or a file, its TTL mode, and one address family per session.

use std::net::IpAddr;

use ipnet::IpNet;
use trellis_bgp_speaker::export::NextHopMode;
use trellis_bgp_speaker::family::Family;
use trellis_bgp_speaker::speaker::{PeerConfig, TtlMode};
use trellis_datastore::resources::bgp::BgpPassword;

use super::peers::DesiredPeer;

/// The password of a peer: from the agent's environment or a file, never from the datastore.
pub fn read_password(p: &BgpPassword) -> Result<String, String> {
    match (&p.env, &p.file) {
        (Some(var), _) => std::env::var(var)
            .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("reading {path}: {e}")),
        (None, None) => Err("neither file nor env is set".into()),
    }
}

/// The speaker's configuration of one desired peer. An eBGP peer off this node's subnets gets
/// multihop (TTL 64, BIRD's `multihop` default) unless it asks for TTL security.
pub fn peer_config(
    d: &DesiredPeer,
    local_asn: u32,
    subnets: &[IpNet],
) -> Result<PeerConfig, String> {
    let mut p = PeerConfig::new(d.addr, d.asn);
    p.port = d.port;
    p.local_addr = d.local_addr;
    p.passive = d.passive;
    p.rr_client = d.rr_client;
    p.next_hop_mode = if d.keep_next_hop {
        NextHopMode::Keep
    } else {
        NextHopMode::Auto
    };
    p.hold_time = d.hold_time;
    p.keepalive = d.keepalive;
    p.restart_time = d.restart_time;
    p.allow_local_as = d.allow_local_as;
    p.kind = d.kind.label().to_string();
    // One family per session, as Calico's BIRD runs them: IPv4 routes over IPv4 sessions and
    // IPv6 over IPv6, so a next hop is always of the session's own family.
    p.families = [match d.addr {
        IpAddr::V4(_) => Family::Ipv4Unicast,
        IpAddr::V6(_) => Family::Ipv6Unicast,
    }]
    .into();
    p.password = d.password.as_ref().map(read_password).transpose()?;
    p.ttl = match d.ttl_security {
        Some(hops) => TtlMode::Security { hops },
        None if d.asn != local_asn && !subnets.iter().any(|s| s.contains(&d.addr)) => {
            TtlMode::Multihop(64)
        }
        None => TtlMode::Default,
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(addr: &str, asn: u32) -> DesiredPeer {
        DesiredPeer {
            addr: addr.parse().unwrap(),
            port: 179,
            asn,
            kind: super::super::peers::PeerKind::Global,
            source: "BGPPeer tor".into(),
            passive: false,
            rr_client: false,
            keep_next_hop: true,
            local_addr: None,
            hold_time: Some(30),
            keepalive: Some(10),
            restart_time: Some(60),
            password: None,
            ttl_security: None,
            allow_local_as: 1,
        }
    }

    #[test]
    fn peer_configs_carry_password_ttl_and_timers() {
        let subnets = ["10.0.0.0/24".parse().unwrap()];
        let on_link = peer_config(&desired("10.0.0.254", 65000), 64512, &subnets).unwrap();
        assert_eq!(
            on_link.ttl,
            TtlMode::Default,
            "a directly connected eBGP peer"
        );
        assert_eq!(on_link.next_hop_mode, NextHopMode::Keep);
        assert_eq!(
            (on_link.hold_time, on_link.keepalive, on_link.restart_time),
            (Some(30), Some(10), Some(60))
        );
        assert_eq!(on_link.allow_local_as, 1);
        assert_eq!(on_link.kind, "global");
        assert_eq!(on_link.families, [Family::Ipv4Unicast].into());
        let v6 = peer_config(&desired("fd00::fe", 65000), 64512, &subnets).unwrap();
        assert_eq!(v6.families, [Family::Ipv6Unicast].into());
        let far = peer_config(&desired("192.0.2.1", 65000), 64512, &subnets).unwrap();
        assert_eq!(far.ttl, TtlMode::Multihop(64), "eBGP beyond our subnet");
        let ibgp = peer_config(&desired("192.0.2.1", 64512), 64512, &subnets).unwrap();
        assert_eq!(ibgp.ttl, TtlMode::Default);
        let mut gtsm = desired("10.0.0.254", 65000);
        gtsm.ttl_security = Some(1);
        assert_eq!(
            peer_config(&gtsm, 64512, &subnets).unwrap().ttl,
            TtlMode::Security { hops: 1 }
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "md5-secret\n").unwrap();
        let mut with_pw = desired("10.0.0.254", 65000);
        with_pw.password = Some(BgpPassword {
            file: Some(f.display().to_string()),
            env: None,
        });
        let pc = peer_config(&with_pw, 64512, &subnets).unwrap();
        assert_eq!(pc.password.as_deref(), Some("md5-secret"));
        with_pw.password = Some(BgpPassword {
            file: Some("/nonexistent/pw".into()),
            env: None,
        });
        let e = peer_config(&with_pw, 64512, &subnets).unwrap_err();
        assert!(e.contains("/nonexistent/pw"), "{e}");
    }

    #[test]
    fn passwords_come_from_env_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let from_file = BgpPassword {
            file: Some(f.display().to_string()),
            env: None,
        };
        assert_eq!(read_password(&from_file).unwrap(), "s3cret");
        let missing = BgpPassword {
            file: Some("/nonexistent/trellis-pw".into()),
            env: None,
        };
        let e = read_password(&missing).unwrap_err();
        assert!(e.contains("/nonexistent/trellis-pw"), "{e}");
        let env = BgpPassword {
            file: None,
            env: Some("TRELLIS_TEST_SURELY_UNSET_PW".into()),
        };
        assert!(read_password(&env)
            .unwrap_err()
            .contains("TRELLIS_TEST_SURELY_UNSET_PW"));
    }
}
