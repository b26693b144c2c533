//! The route reflector of a `--bgp --route-reflector trellis|bird` lab: the underlay namespace
//! runs one (trellis-bgp or BIRD 2) on its segment address, in the nodes' AS (iBGP, RFC 4456),
//! with every node a client. The nodes are told through the datastore (BGPConfiguration
//! `default` without the node-to-node mesh, one global BGPPeer per family), as a Calico cluster
//! with a dedicated reflector would be. The reflector forwards no pod traffic: reflected routes
//! keep the originating node as next hop (RFC 4456 10), which every node reaches on the shared
//! segment, so it writes nothing to its kernel.

use std::path::Path;

use crate::tor::NODE_ASN;

/// The reflector's AS: the nodes' own, so every session is iBGP.
pub const RR_ASN: u32 = NODE_ASN;

/// Which implementation reflects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Reflector {
    /// The workspace's `trellis-bgp`.
    Trellis,
    /// BIRD 2.
    Bird,
}

impl Reflector {
    /// Its value on the command line.
    pub fn arg(self) -> &'static str {
        match self {
            Reflector::Trellis => "trellis",
            Reflector::Bird => "bird",
        }
    }
}

/// What the reflector needs to know of one client node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrClient {
    pub name: String,
    pub ip: String,
    pub ip6: String,
}

/// The reflector's addresses and cluster id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrAddrs {
    pub ip: String,
    pub ip6: String,
    /// Also the router id (RFC 4456 7: a reflector's cluster id defaults to its router id).
    pub cluster_id: String,
}

/// BIRD's protocol name for a client's session (`v` is 4 or 6).
fn protocol_name(node: &str, v: u8) -> String {
    format!("{}_v{v}", node.replace('-', "_"))
}

/// The sessions with a client: (4 or 6, its address, BIRD channel), IPv6 only in a dual-stack
/// lab. One family per session, as the agents run them.
fn sessions(c: &RrClient, dual_stack: bool) -> Vec<(u8, &str, &'static str)> {
    let mut s = vec![(4, c.ip.as_str(), "ipv4")];
    if dual_stack {
        s.push((6, c.ip6.as_str(), "ipv6"));
    }
    s
}

/// BIRD 2 as a reflector: one iBGP session per client and family, each `rr client` of one
/// cluster, graceful restart on (BIRD keeps a restarting client's routes as stale, RFC 4724
/// 4.2). `direct` + `gateway direct`: the clients share the reflector's segment, so their next
/// hops resolve on it rather than through an IGP table the lab does not have (BIRD's iBGP
/// default is recursive). No kernel protocol: nothing is forwarded through the reflector.
pub fn bird_conf(rr: &RrAddrs, clients: &[RrClient], dual_stack: bool, log: &Path) -> String {
    let mut c = format!(
        "# Written by trellis-lab: the lab's route reflector.\n\
         log \"{}\" all;\n\
         router id {};\n\
         protocol device {{ scan time 10; }}\n",
        log.display(),
        rr.cluster_id
    );
    for n in clients {
        for (v, addr, channel) in sessions(n, dual_stack) {
            let local = if v == 4 { &rr.ip } else { &rr.ip6 };
            c.push_str(&format!(
                "protocol bgp {} {{\n\
                 \x20 description \"{}\";\n\
                 \x20 local {local} as {RR_ASN};\n\
                 \x20 neighbor {addr} as {RR_ASN};\n\
                 \x20 direct;\n\
                 \x20 rr client;\n\
                 \x20 rr cluster id {};\n\
                 \x20 graceful restart on;\n\
                 \x20 {channel} {{ gateway direct; import all; export all; }};\n\
                 }}\n",
                protocol_name(&n.name, v),
                n.name,
                rr.cluster_id
            ));
        }
    }
    c
}

/// trellis-bgp's arguments: every client by address (IPv6 ones too in a dual-stack lab),
/// passive (the agents connect to their global peers, so no connection collision, RFC 4271
/// 6.8), listening on the segment address (all addresses when it must accept IPv6 as well:
/// it takes one `--listen`, and maps IPv4-mapped sources back), and logging the sessions'
/// state every `status_secs` seconds.
pub fn trellis_bgp_args(
    rr: &RrAddrs,
    clients: &[RrClient],
    dual_stack: bool,
    status_secs: u64,
) -> Vec<String> {
    let listen = if dual_stack {
        "[::]:179".to_string()
    } else {
        format!("{}:179", rr.ip)
    };
    let mut a: Vec<String> = vec![
        "--asn".into(),
        RR_ASN.to_string(),
        "--router-id".into(),
        rr.cluster_id.clone(),
        "--cluster-id".into(),
        rr.cluster_id.clone(),
        "--listen".into(),
        listen,
        "--passive".into(),
        "--status-interval".into(),
        status_secs.to_string(),
    ];
    for n in clients {
        for (_, addr, _) in sessions(n, dual_stack) {
            a.extend(["--client".into(), addr.to_string()]);
        }
    }
    a
}

/// The trellisctl YAML that points every node at the reflector instead of the full mesh: one
/// global BGPPeer per family (a global peer applies to every node).
pub fn peers_yaml(rr: &RrAddrs, dual_stack: bool) -> String {
    let mut y = String::from(
        "apiVersion: trellis.dev/v1\nkind: BGPConfiguration\nmetadata: {name: default}\n\
         spec: {nodeToNodeMeshEnabled: false}\n",
    );
    let mut peers = vec![("rr-v4", rr.ip.clone())];
    if dual_stack {
        peers.push(("rr-v6", format!("'{}'", rr.ip6)));
    }
    for (name, ip) in peers {
        y.push_str(&format!(
            "---\napiVersion: trellis.dev/v1\nkind: BGPPeer\nmetadata: {{name: {name}}}\n\
             spec: {{peerIP: {ip}, asNumber: {RR_ASN}}}\n"
        ));
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr() -> RrAddrs {
        RrAddrs {
            ip: "172.30.0.254".into(),
            ip6: "fd00:172:30::fe".into(),
            cluster_id: "172.30.0.254".into(),
        }
    }

    fn clients() -> Vec<RrClient> {
        (1..=2)
            .map(|i| RrClient {
                name: format!("node-{i}"),
                ip: format!("172.30.0.{i}"),
                ip6: format!("fd00:172:30::{i}"),
            })
            .collect()
    }

    #[test]
    fn bird_reflects_to_every_client_per_family() {
        let c = bird_conf(&rr(), &clients(), true, Path::new("/l/bird.log"));
        assert!(c.contains("router id 172.30.0.254;"), "{c}");
        assert!(c.contains("protocol bgp node_2_v4 {"), "{c}");
        assert!(c.contains("neighbor 172.30.0.2 as 64512;"), "{c}");
        assert!(c.contains("local fd00:172:30::fe as 64512;"), "{c}");
        assert!(c.contains("neighbor fd00:172:30::1 as 64512;"), "{c}");
        assert_eq!(c.matches("rr client;").count(), 4, "{c}");
        assert_eq!(c.matches("rr cluster id 172.30.0.254;").count(), 4, "{c}");
        assert_eq!(c.matches("graceful restart on;").count(), 4, "{c}");
        assert!(
            c.contains("ipv6 { gateway direct; import all; export all; };"),
            "{c}"
        );
        assert!(!c.contains("protocol kernel"), "{c}");
        let v4 = bird_conf(&rr(), &clients(), false, Path::new("/l/bird.log"));
        assert!(!v4.contains("ipv6") && !v4.contains("fd00"), "{v4}");
        assert_eq!(v4.matches("protocol bgp").count(), 2, "{v4}");
    }

    #[test]
    fn trellis_bgp_takes_every_client_address() {
        let a = trellis_bgp_args(&rr(), &clients(), true, 2).join(" ");
        assert!(
            a.starts_with(
                "--asn 64512 --router-id 172.30.0.254 --cluster-id 172.30.0.254 \
                 --listen [::]:179 --passive --status-interval 2"
            ),
            "{a}"
        );
        assert!(
            a.ends_with(
                "--client 172.30.0.1 --client fd00:172:30::1 \
                 --client 172.30.0.2 --client fd00:172:30::2"
            ),
            "{a}"
        );
        let v4 = trellis_bgp_args(&rr(), &clients(), false, 2).join(" ");
        assert!(v4.contains("--listen 172.30.0.254:179"), "{v4}");
        assert_eq!(v4.matches("--client").count(), 2, "{v4}");
    }

    #[test]
    fn nodes_peer_with_the_reflector_instead_of_the_mesh() {
        let y = peers_yaml(&rr(), true);
        assert!(y.contains("spec: {nodeToNodeMeshEnabled: false}"), "{y}");
        assert!(
            y.contains("metadata: {name: rr-v4}\nspec: {peerIP: 172.30.0.254, asNumber: 64512}"),
            "{y}"
        );
        assert!(
            y.contains("spec: {peerIP: 'fd00:172:30::fe', asNumber: 64512}"),
            "{y}"
        );
        assert!(!y.contains("node:"), "global peers name no node: {y}");
        assert_eq!(y.matches("kind: BGPPeer").count(), 2, "{y}");
        assert_eq!(peers_yaml(&rr(), false).matches("kind: BGPPeer").count(), 1);
    }
}
