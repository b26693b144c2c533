//! What the node's rules, ENI tables and ENI links should be, computed from the attached ENIs
//! and the pods on their addresses. Pure: `plan` compares it with the kernel, `apply` writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::{
    eni_table, Eni, PodAttachment, VpcDatapathConfig, FROM_POD_PRIORITY, MAIN_ENI_MARK_PRIORITY,
    MAIN_TABLE, TO_POD_PRIORITY,
};

/// A policy rule the datapath owns; the value kept with it is the table it looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKey {
    /// `to IP/32 (or /128) lookup main`, priority 512.
    ToPod(IpAddr),
    /// `fwmark MARK/MARK lookup main`, priority 1024.
    MainEniMark(u32),
    /// `from IP/32 lookup TABLE(ENI)`, priority 1536.
    FromPod(IpAddr),
}

impl RuleKey {
    pub fn priority(&self) -> u32 {
        match self {
            RuleKey::ToPod(_) => TO_POD_PRIORITY,
            RuleKey::MainEniMark(_) => MAIN_ENI_MARK_PRIORITY,
            RuleKey::FromPod(_) => FROM_POD_PRIORITY,
        }
    }
}

impl std::fmt::Display for RuleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleKey::ToPod(ip) => write!(f, "priority {} to {ip}", self.priority()),
            RuleKey::MainEniMark(m) => {
                write!(f, "priority {} fwmark {m:#x}/{m:#x}", self.priority())
            }
            RuleKey::FromPod(ip) => write!(f, "priority {} from {ip}", self.priority()),
        }
    }
}

/// Where a route in an ENI table sends packets: through `gateway` or, without one, straight
/// onto the link (`scope link`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    pub gateway: Option<Ipv4Addr>,
    pub if_name: String,
}

/// A secondary ENI as the datapath needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniLink {
    pub eni_id: String,
    /// For messages: what EC2 and IMDS know the ENI by, besides its id.
    pub mac: String,
    pub subnet: Ipv4Net,
    pub mtu: u32,
}

/// Everything the datapath owns, as it should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDatapath {
    /// Rule -> table it looks up.
    pub rules: BTreeMap<RuleKey, u32>,
    /// ENI table -> destination -> next hop; these tables are owned whole.
    pub tables: BTreeMap<u32, BTreeMap<Ipv4Net, NextHop>>,
    /// Secondary ENI interface name -> what it must be (up, this MTU) and the subnet whose
    /// kernel route leaves the main table.
    pub links: BTreeMap<String, EniLink>,
}

/// Why the inputs do not describe a node the datapath can program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("no primary ENI among {0:?}")]
    NoPrimaryEni(Vec<String>),
    #[error("more than one primary ENI: {0:?}")]
    SeveralPrimaryEnis(Vec<String>),
    #[error("ENIs {first} and {second} share {what} {value}")]
    DuplicateEni {
        first: String,
        second: String,
        what: &'static str,
        value: String,
    },
    #[error("ENI {eni}: gateway {gateway} is not a host of its subnet {subnet}")]
    GatewayOutsideSubnet {
        eni: String,
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("pod {ip} (veth {veth}) is on ENI {eni}, which is not attached to this node")]
    UnknownEni {
        ip: IpAddr,
        veth: String,
        eni: String,
    },
    #[error("pod address {ip} is claimed by veth {first} and by veth {second}")]
    DuplicatePodIp {
        ip: IpAddr,
        first: String,
        second: String,
    },
    #[error(
        "pod {ip} (veth {veth}) is an IPv6 address on secondary ENI {eni}; ENI tables are IPv4"
    )]
    Ipv6OnSecondaryEni {
        ip: IpAddr,
        veth: String,
        eni: String,
    },
    #[error("connmark 0 cannot mark anything; use a non-zero bit such as 0x80")]
    ZeroConnmark,
    #[error("ENI MTU {0} is below the IPv4 minimum of 68")]
    MtuTooSmall(u32),
}

/// The desired rules, ENI tables and ENI links of a node.
pub fn compute_desired(
    cfg: &VpcDatapathConfig,
    enis: &[Eni],
    pods: &[PodAttachment],
) -> Result<DesiredDatapath, DesiredError> {
    if cfg.connmark == 0 {
        return Err(DesiredError::ZeroConnmark);
    }
    if cfg.eni_mtu < 68 {
        return Err(DesiredError::MtuTooSmall(cfg.eni_mtu));
    }
    check_enis(enis)?;
    let by_id: BTreeMap<&str, &Eni> = enis.iter().map(|e| (e.id.as_str(), e)).collect();

    let mut out = DesiredDatapath::default();
    out.rules
        .insert(RuleKey::MainEniMark(cfg.connmark), MAIN_TABLE);
    for eni in enis.iter().filter(|e| !e.primary) {
        let table = eni_table(eni.device_number);
        let gw = eni.gateway;
        let on_link = NextHop {
            gateway: None,
            if_name: eni.if_name.clone(),
        };
        let via_gw = NextHop {
            gateway: Some(gw),
            if_name: eni.if_name.clone(),
        };
        let routes = BTreeMap::from([
            (
                Ipv4Net::new(gw, 32).expect("/32 is a valid prefix"),
                on_link,
            ),
            (Ipv4Net::default(), via_gw),
        ]);
        out.tables.insert(table, routes);
        out.links.insert(
            eni.if_name.clone(),
            EniLink {
                eni_id: eni.id.clone(),
                mac: eni.mac.clone(),
                subnet: eni.subnet,
                mtu: cfg.eni_mtu,
            },
        );
    }

    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for pod in pods {
        if let Some(first) = seen.insert(pod.ip, &pod.host_veth) {
            return Err(DesiredError::DuplicatePodIp {
                ip: pod.ip,
                first: first.to_string(),
                second: pod.host_veth.clone(),
            });
        }
        let eni = by_id
            .get(pod.eni_id.as_str())
            .ok_or_else(|| DesiredError::UnknownEni {
                ip: pod.ip,
                veth: pod.host_veth.clone(),
                eni: pod.eni_id.clone(),
            })?;
        out.rules.insert(RuleKey::ToPod(pod.ip), MAIN_TABLE);
        if eni.primary {
            continue;
        }
        if pod.ip.is_ipv6() {
            return Err(DesiredError::Ipv6OnSecondaryEni {
                ip: pod.ip,
                veth: pod.host_veth.clone(),
                eni: pod.eni_id.clone(),
            });
        }
        out.rules
            .insert(RuleKey::FromPod(pod.ip), eni_table(eni.device_number));
    }
    Ok(out)
}

/// Exactly one primary ENI; ids, interface names and device numbers (hence tables) unique;
/// every gateway a host of its subnet.
fn check_enis(enis: &[Eni]) -> Result<(), DesiredError> {
    let ids = || enis.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let primaries: Vec<String> = enis
        .iter()
        .filter(|e| e.primary)
        .map(|e| e.id.clone())
        .collect();
    match primaries.len() {
        0 => return Err(DesiredError::NoPrimaryEni(ids())),
        1 => {}
        _ => return Err(DesiredError::SeveralPrimaryEnis(primaries)),
    }
    let mut id_seen = BTreeMap::new();
    let mut if_seen = BTreeMap::new();
    let mut dev_seen = BTreeMap::new();
    for e in enis {
        let dup = |first: &String, what, value: String| DesiredError::DuplicateEni {
            first: first.clone(),
            second: e.id.clone(),
            what,
            value,
        };
        if let Some(first) = id_seen.insert(e.id.clone(), e.id.clone()) {
            return Err(dup(&first, "id", e.id.clone()));
        }
        if let Some(first) = if_seen.insert(e.if_name.clone(), e.id.clone()) {
            return Err(dup(&first, "interface", e.if_name.clone()));
        }
        if let Some(first) = dev_seen.insert(e.device_number, e.id.clone()) {
            return Err(dup(&first, "device number", e.device_number.to_string()));
        }
        let hosts: BTreeSet<Ipv4Addr> = [e.subnet.network(), e.subnet.broadcast()].into();
        if !e.subnet.contains(&e.gateway)
            || (e.subnet.prefix_len() < 31 && hosts.contains(&e.gateway))
        {
            return Err(DesiredError::GatewayOutsideSubnet {
                eni: e.id.clone(),
                gateway: e.gateway,
                subnet: e.subnet,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
