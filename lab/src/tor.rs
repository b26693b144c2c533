//! The top-of-rack router of a routed (`--bgp`) lab with two subnets: BIRD 2 in the underlay
//! namespace peers over eBGP (AS 65000) with every node (AS 64512), learns the nodes' blocks and
//! writes them to that namespace's kernel, so the router forwards pod addresses between the
//! subnets without encapsulation. The nodes are told about it through the datastore
//! (BGPConfiguration `default` without the node-to-node mesh, one BGPPeer per node), as a
//! Calico cluster behind a ToR would be.

use std::path::{Path, PathBuf};

/// The AS of the lab's ToR router.
pub const TOR_ASN: u32 = 65000;
/// Calico's default AS, which every lab node keeps.
pub const NODE_ASN: u32 = 64512;

/// What the ToR needs to know of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorNode {
    pub name: String,
    pub ip: String,
    pub ip6: String,
    /// The router's addresses on the node's segment (its BGP peer addresses).
    pub gateway: String,
    pub gateway6: String,
}

/// Where BIRD keeps its files: all in the lab's state directory.
pub struct BirdFiles {
    pub conf: PathBuf,
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl BirdFiles {
    pub fn in_dir(dir: &Path) -> Self {
        BirdFiles {
            conf: dir.join("bird.conf"),
            socket: dir.join("bird.ctl"),
            pid: dir.join("bird.pid"),
            log: dir.join("bird.log"),
        }
    }
}

/// BIRD's protocol name for a node's session (`v` is 4 or 6).
fn protocol_name(node: &str, v: u8) -> String {
    format!("{}_v{v}", node.replace('-', "_"))
}

/// The BIRD 2 configuration: one eBGP session per node and family (IPv4 routes over the IPv4
/// session, IPv6 over the IPv6 one, as the nodes' own mesh does), graceful restart on (BIRD is
/// the helper that keeps a restarting node's routes as stale, RFC 4724 4.2), and the learned
/// routes exported to the kernel.
pub fn bird_conf(router_id: &str, nodes: &[TorNode], dual_stack: bool, log: &Path) -> String {
    let mut c = format!(
        "# Written by trellis-lab: the lab's top-of-rack router.\n\
         log \"{}\" all;\n\
         router id {router_id};\n\
         protocol device {{ scan time 10; }}\n\
         protocol kernel kernel4 {{ ipv4 {{ import none; export all; }}; }}\n",
        log.display()
    );
    if dual_stack {
        c.push_str("protocol kernel kernel6 { ipv6 { import none; export all; }; }\n");
    }
    for n in nodes {
        let mut sessions = vec![(4, &n.ip, "ipv4")];
        if dual_stack {
            sessions.push((6, &n.ip6, "ipv6"));
        }
        for (v, addr, channel) in sessions {
            let proto = protocol_name(&n.name, v);
            // Not back to the node a route came from: its own blocks via the ToR would only be
            // a loop (the nodes accept our AS once in a path, numAllowedLocalASNumbers: 1).
            c.push_str(&format!(
                "protocol bgp {proto} {{\n\
                 \x20 description \"{}\";\n\
                 \x20 local as {TOR_ASN};\n\
                 \x20 neighbor {addr} as {NODE_ASN};\n\
                 \x20 graceful restart on;\n\
                 \x20 {channel} {{ import all; export where proto != \"{proto}\"; }};\n\
                 }}\n",
                n.name
            ));
        }
    }
    c
}

/// The trellisctl YAML that points every node at the ToR instead of the full mesh.
pub fn peers_yaml(nodes: &[TorNode], dual_stack: bool) -> String {
    let mut y = String::from(
        "apiVersion: trellis.dev/v1\nkind: BGPConfiguration\nmetadata: {name: default}\n\
         spec: {nodeToNodeMeshEnabled: false}\n",
    );
    for n in nodes {
        let mut peers = vec![("tor", n.gateway.clone())];
        if dual_stack {
            peers.push(("tor6", format!("'{}'", n.gateway6)));
        }
        for (prefix, ip) in peers {
            // All nodes share AS 64512, so a path from another node through the ToR carries
            // our own AS once: allow it (Calico's numAllowedLocalASNumbers, BIRD's allow local
            // as).
            y.push_str(&format!(
                "---\napiVersion: trellis.dev/v1\nkind: BGPPeer\nmetadata: {{name: {prefix}-{}}}\n\
                 spec: {{node: {0}, peerIP: {ip}, asNumber: {TOR_ASN}, numAllowedLocalASNumbers: 1}}\n",
                n.name
            ));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<TorNode> {
        let node = |name: &str, ip: &str, ip6: &str, gateway: &str, gateway6: &str| TorNode {
            name: name.into(),
            ip: ip.into(),
            ip6: ip6.into(),
            gateway: gateway.into(),
            gateway6: gateway6.into(),
        };
        vec![
            node(
                "node-1",
                "172.30.0.1",
                "fd00:172:30::1",
                "172.30.0.254",
                "fd00:172:30::fe",
            ),
            node(
                "node-2",
                "172.30.1.2",
                "fd00:172:30:1::2",
                "172.30.1.254",
                "fd00:172:30:1::fe",
            ),
        ]
    }

    #[test]
    fn bird_peers_with_every_node_per_family() {
        let c = bird_conf("172.30.0.254", &nodes(), true, Path::new("/l/bird.log"));
        assert!(c.contains("neighbor 172.30.1.2 as 64512;"), "{c}");
        assert!(c.contains("neighbor fd00:172:30::1 as 64512;"), "{c}");
        assert!(
            c.contains("ipv6 { import all; export where proto != \"node_1_v6\"; };"),
            "{c}"
        );
        assert_eq!(c.matches("graceful restart on;").count(), 4, "{c}");
        assert!(c.contains("protocol kernel kernel6"), "{c}");
        let v4 = bird_conf("172.30.0.254", &nodes(), false, Path::new("/l/bird.log"));
        assert!(!v4.contains("ipv6") && !v4.contains("fd00"), "{v4}");
    }

    #[test]
    fn every_node_peers_with_its_own_gateway() {
        let y = peers_yaml(&nodes(), true);
        assert!(y.contains("nodeToNodeMeshEnabled: false"), "{y}");
        assert!(
            y.contains("{node: node-2, peerIP: 172.30.1.254, asNumber: 65000, numAllowedLocalASNumbers: 1}"),
            "{y}"
        );
        assert!(y.contains("peerIP: 'fd00:172:30::fe'"), "{y}");
        assert_eq!(y.matches("kind: BGPPeer").count(), 4, "{y}");
        assert_eq!(
            peers_yaml(&nodes(), false).matches("kind: BGPPeer").count(),
            2
        );
    }
}
