//! The "VPC router" side of a VPC lab: every ENI attached to a lab instance is a veth whose
//! node end (`ethD`, the ENI's MAC) is in the node's namespace and whose router end
//! (`nIeD`) is in the lab's router namespace. The router delivers each of the ENI's private
//! addresses to it by a `/32` route and a permanent neighbour entry (the VPC delivers by ENI,
//! it does not ARP for them), answers ARP for everything else by proxy, and drops packets whose
//! source is not an address of the ENI they came from (strict rp_filter), as the VPC's
//! source/destination check does. Pure planning, then `ip` steps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::sh::{self, ip};

/// One attached ENI as the router plugs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plug {
    pub eni_id: String,
    /// 1-based lab node.
    pub node: usize,
    pub node_netns: String,
    pub device: u32,
    pub mac: String,
    /// Its private addresses, primary first.
    pub primary_ip: Ipv4Addr,
    pub ips: BTreeSet<Ipv4Addr>,
}

impl Plug {
    /// The router end's name (≤ 15 bytes for any lab of up to 99 nodes and 99 devices).
    pub fn router_end(&self) -> String {
        router_end(self.node, self.device)
    }

    pub fn node_end(&self) -> String {
        format!("eth{}", self.device)
    }
}

pub fn router_end(node: usize, device: u32) -> String {
    format!("n{node}e{device}")
}

/// One change to the router namespace (and, for a new link, the node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The ENI was detached (or replaced at its device index): its veth goes.
    DelLink(String),
    /// A new ENI: the veth, router-end settings; the primary ENI also gets its address and
    /// default route in the node (what DHCP gives an instance).
    AddLink(Plug),
    /// Deliver `ip` to the link's ENI.
    Route {
        link: String,
        ip: Ipv4Addr,
        mac: String,
    },
    /// `ip` left the ENI.
    Unroute { link: String, ip: Ipv4Addr },
}

/// The steps from `current` to `desired` (both by router end): deletions first.
pub fn plan(current: &BTreeMap<String, Plug>, desired: &BTreeMap<String, Plug>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (name, have) in current {
        match desired.get(name) {
            Some(want) if want.mac == have.mac => {}
            _ => steps.push(Step::DelLink(name.clone())),
        }
    }
    for (name, want) in desired {
        let have = current.get(name).filter(|h| h.mac == want.mac);
        let had: BTreeSet<Ipv4Addr> = have.map(|h| h.ips.clone()).unwrap_or_default();
        if have.is_none() {
            steps.push(Step::AddLink(want.clone()));
        }
        for gone in had.difference(&want.ips) {
            steps.push(Step::Unroute {
                link: name.clone(),
                ip: *gone,
            });
        }
        for new in want.ips.difference(&had) {
            steps.push(Step::Route {
                link: name.clone(),
                ip: *new,
                mac: want.mac.clone(),
            });
        }
    }
    steps
}

/// The router's side of the lab's VPC.
#[derive(Debug)]
pub struct Router {
    pub netns: String,
    /// The subnet's router address (on the router's loopback) and prefix length.
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
}

impl Router {
    pub fn apply(&self, step: &Step) -> anyhow::Result<()> {
        let r = &self.netns;
        match step {
            Step::DelLink(name) => {
                // Deleting one end deletes the pair, its routes and neighbours.
                let _ = ip(r, &["link", "del", name]);
            }
            Step::AddLink(p) => self.add_link(p)?,
            Step::Route {
                link,
                ip: addr,
                mac,
            } => {
                let a = addr.to_string();
                ip(r, &["route", "replace", &format!("{a}/32"), "dev", link])?;
                ip(
                    r,
                    &[
                        "neigh",
                        "replace",
                        &a,
                        "lladdr",
                        mac,
                        "dev",
                        link,
                        "nud",
                        "permanent",
                    ],
                )?;
            }
            Step::Unroute { link, ip: addr } => {
                let a = addr.to_string();
                let _ = ip(r, &["route", "del", &format!("{a}/32"), "dev", link]);
                let _ = ip(r, &["neigh", "del", &a, "dev", link]);
            }
        }
        Ok(())
    }

    fn add_link(&self, p: &Plug) -> anyhow::Result<()> {
        let (r, end, node_end, mtu) = (
            &self.netns,
            p.router_end(),
            p.node_end(),
            self.mtu.to_string(),
        );
        // A leftover of an earlier plug at this device index.
        let _ = ip(r, &["link", "del", &end]);
        let _ = ip(&p.node_netns, &["link", "del", &node_end]);
        ip(
            r,
            &[
                "link",
                "add",
                &end,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                &node_end,
                "mtu",
                &mtu,
                "address",
                &p.mac,
                "netns",
                &p.node_netns,
            ],
        )?;
        for (key, value) in [("proxy_arp", "1"), ("rp_filter", "1")] {
            sh::sysctl(r, &format!("net.ipv4.conf.{end}.{key}"), value)?;
        }
        ip(r, &["link", "set", &end, "up"])?;
        if p.device == 0 {
            let n = &p.node_netns;
            ip(
                n,
                &[
                    "addr",
                    "add",
                    &format!("{}/{}", p.primary_ip, self.prefix_len),
                    "dev",
                    &node_end,
                ],
            )?;
            ip(n, &["link", "set", &node_end, "up"])?;
            ip(
                n,
                &["route", "add", "default", "via", &self.gateway.to_string()],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plug(node: usize, device: u32, mac: &str, ips: &[&str]) -> Plug {
        let ips: BTreeSet<Ipv4Addr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        Plug {
            eni_id: format!("eni-{node}-{device}"),
            node,
            node_netns: format!("tl-x-node-{node}"),
            device,
            mac: mac.into(),
            primary_ip: *ips.iter().next().unwrap(),
            ips,
        }
    }

    fn by_name(plugs: &[Plug]) -> BTreeMap<String, Plug> {
        plugs.iter().map(|p| (p.router_end(), p.clone())).collect()
    }

    #[test]
    fn names_fit_an_interface_name() {
        assert_eq!(router_end(12, 3), "n12e3");
        assert!(router_end(99, 99).len() <= 15);
    }

    #[test]
    fn a_new_eni_is_plugged_then_its_addresses_routed() {
        let want = by_name(&[plug(1, 1, "0e:00:00:00:01:01", &["10.0.0.20", "10.0.0.21"])]);
        let steps = plan(&BTreeMap::new(), &want);
        assert!(matches!(&steps[0], Step::AddLink(p) if p.router_end() == "n1e1"));
        assert_eq!(
            steps[1..].to_vec(),
            vec![
                Step::Route {
                    link: "n1e1".into(),
                    ip: "10.0.0.20".parse().unwrap(),
                    mac: "0e:00:00:00:01:01".into()
                },
                Step::Route {
                    link: "n1e1".into(),
                    ip: "10.0.0.21".parse().unwrap(),
                    mac: "0e:00:00:00:01:01".into()
                },
            ]
        );
    }

    #[test]
    fn addresses_follow_assignments_and_a_replaced_eni_is_replugged() {
        let have = by_name(&[
            plug(1, 0, "0e:00:00:00:01:00", &["10.0.0.5", "10.0.0.6"]),
            plug(1, 1, "0e:00:00:00:01:01", &["10.0.0.20"]),
        ]);
        let want = by_name(&[
            plug(1, 0, "0e:00:00:00:01:00", &["10.0.0.5", "10.0.0.7"]),
            plug(1, 1, "0e:00:00:00:09:09", &["10.0.0.30"]),
        ]);
        let steps = plan(&have, &want);
        assert_eq!(steps[0], Step::DelLink("n1e1".into()));
        assert!(steps.contains(&Step::Unroute {
            link: "n1e0".into(),
            ip: "10.0.0.6".parse().unwrap()
        }));
        assert!(steps.contains(&Step::Route {
            link: "n1e0".into(),
            ip: "10.0.0.7".parse().unwrap(),
            mac: "0e:00:00:00:01:00".into()
        }));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::AddLink(p) if p.mac == "0e:00:00:00:09:09")));
        assert_eq!(plan(&want, &want), vec![], "nothing to do when in step");
    }

    #[test]
    fn a_detached_eni_is_unplugged() {
        let have = by_name(&[plug(2, 1, "0e:00:00:00:02:01", &["10.0.0.40"])]);
        assert_eq!(
            plan(&have, &BTreeMap::new()),
            vec![Step::DelLink("n2e1".into())]
        );
    }
}
