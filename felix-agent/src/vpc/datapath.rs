//! The node side of the ENI pool: finds each attached ENI's interface by its MAC (as ipamd
//! does), then keeps `trellis_vpc::datapath`'s rules, ENI tables, links and SNAT in the kernel.
//! A pass runs on every pod ADD and DEL (so a pod's rules exist before the CNI wires it) and
//! every resync interval. A newly attached ENI's addresses are released to pods only after a
//! pass has found its interface and routed it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use trellis_vpc::address_book::EniInfo;
use trellis_vpc::checkpoint::Allocation;
use trellis_vpc::datapath::{
    self as vpc_dp, DatapathNetlink, Eni, PodAttachment, VpcDatapathConfig,
};
use trellis_vpc::eni_manager::EniManager;

use crate::dataplane::DataplaneStatus;
use crate::metrics::Metrics;

/// The status key of this manager's problems.
const STATUS_KEY: &str = "vpc";

/// What the kernel is asked for in one pass, and what stands in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassInputs {
    pub enis: Vec<Eni>,
    pub pods: Vec<PodAttachment>,
    /// ENIs whose interface is on the host (their tables can be routed).
    pub present: BTreeSet<String>,
    /// The primary ENI's interface, when found.
    pub primary_if: Option<String>,
    /// Attached ENIs whose interface has not appeared yet: expected for a moment after an
    /// attachment, reported in the status, not a reason to fail a pod's ADD.
    pub pending: Vec<String>,
}

/// `aa:bb:..` of a link, lower case.
fn mac_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) if bytes.len() == 6 => Some(
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    })
}

pub(crate) fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Interface names by MAC. Pod veths carry random MACs, so only ENIs are looked up here.
pub fn interfaces_by_mac(links: &[LinkMessage]) -> BTreeMap<String, String> {
    links
        .iter()
        .filter_map(|l| Some((mac_of(l)?, name_of(l)?)))
        .collect()
}

/// The datapath's inputs from the pool and the host's interfaces. Pure.
pub fn pass_inputs(
    enis: &[EniInfo],
    allocations: &[Allocation],
    by_mac: &BTreeMap<String, String>,
) -> PassInputs {
    let mut out = PassInputs {
        enis: Vec::new(),
        pods: Vec::new(),
        present: BTreeSet::new(),
        primary_if: None,
        pending: Vec::new(),
    };
    for e in enis {
        match by_mac.get(&e.mac.to_ascii_lowercase()) {
            Some(if_name) => {
                out.enis.push(Eni::new(
                    &e.id,
                    if_name,
                    e.device_index,
                    &e.mac,
                    e.subnet,
                    e.primary,
                ));
                out.present.insert(e.id.clone());
                if e.primary {
                    out.primary_if = Some(if_name.clone());
                }
            }
            None => out.pending.push(format!(
                "ENI {} (device {}, MAC {}) has no interface on this host yet",
                e.id, e.device_index, e.mac
            )),
        }
    }
    for a in allocations {
        // A pod on an ENI without an interface keeps its address; its rules wait for it.
        if out.present.contains(&a.eni_id) {
            out.pods.push(PodAttachment {
                ip: IpAddr::V4(a.ip),
                host_veth: format!("{}/{}", short(&a.container_id), a.ifname),
                eni_id: a.eni_id.clone(),
            });
        }
    }
    out
}

fn short(container_id: &str) -> &str {
    &container_id[..container_id.len().min(12)]
}

/// Node-wide settings that do not change while the agent runs.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub vpc_cidrs: Vec<Ipv4Net>,
    pub exclude_snat_cidrs: Vec<Ipv4Net>,
    pub external_snat: bool,
    pub primary_ip: Ipv4Addr,
    pub connmark: u32,
    pub eni_mtu: u32,
}

impl NodeSettings {
    fn datapath_config(&self, primary_if: &str) -> VpcDatapathConfig {
        VpcDatapathConfig {
            vpc_cidrs: self.vpc_cidrs.clone(),
            exclude_snat_cidrs: self.exclude_snat_cidrs.clone(),
            external_snat: self.external_snat,
            primary_if: primary_if.to_string(),
            primary_ip: self.primary_ip,
            connmark: self.connmark,
            pod_if_prefix: "trellis".into(),
            eni_mtu: self.eni_mtu,
        }
    }
}

struct Kernel {
    nl: Box<dyn DatapathNetlink>,
    /// For ENI addresses (not part of [`DatapathNetlink`]); none in tests without a kernel.
    addresses: Option<rtnetlink::Handle>,
    /// The nft transaction last applied (re-applied only when it changes, or on resync).
    nft_applied: Option<String>,
}

/// The VPC datapath manager.
pub struct VpcDatapath {
    manager: Arc<EniManager>,
    settings: NodeSettings,
    kernel: tokio::sync::Mutex<Kernel>,
    /// ENI id -> interface name, as the last pass found them.
    interfaces: Mutex<BTreeMap<String, String>>,
    status: Arc<DataplaneStatus>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for VpcDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpcDatapath")
            .field("settings", &self.settings)
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl VpcDatapath {
    pub fn new(
        manager: Arc<EniManager>,
        settings: NodeSettings,
        nl: Box<dyn DatapathNetlink>,
        addresses: Option<rtnetlink::Handle>,
        status: Arc<DataplaneStatus>,
        metrics: Arc<Metrics>,
    ) -> VpcDatapath {
        VpcDatapath {
            manager,
            settings,
            kernel: tokio::sync::Mutex::new(Kernel {
                nl,
                addresses,
                nft_applied: None,
            }),
            interfaces: Mutex::new(BTreeMap::new()),
            status,
            metrics,
        }
    }

    /// ENI id -> interface name, as the last pass found them.
    pub fn interfaces(&self) -> BTreeMap<String, String> {
        self.interfaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One pass: reads the host's links, computes and applies the rules, tables and links,
    /// then SNAT (when its text changed, or always with `resync`). Releases waiting ENIs whose
    /// interface is now routed. Returns the problems; they and the ENIs still without an
    /// interface are in the agent status.
    pub async fn pass(&self, resync: bool) -> Result<(), String> {
        let mut kernel = self.kernel.lock().await;
        let mut pending = Vec::new();
        let result = self.pass_locked(&mut kernel, resync, &mut pending).await;
        let mut shown = pending;
        shown.extend(result.clone().err());
        self.status
            .set(STATUS_KEY, (!shown.is_empty()).then(|| shown.join("; ")));
        self.update_metrics();
        result
    }

    async fn pass_locked(
        &self,
        kernel: &mut Kernel,
        resync: bool,
        pending: &mut Vec<String>,
    ) -> Result<(), String> {
        let links = kernel
            .nl
            .read_links()
            .await
            .map_err(|e| format!("reading links: {e}"))?;
        let enis = self.manager.enis();
        let inputs = pass_inputs(
            &enis,
            &self.manager.allocations(),
            &interfaces_by_mac(&links),
        );
        pending.extend(inputs.pending.iter().cloned());
        let mut problems = Vec::new();
        let Some(primary_if) = inputs.primary_if.clone() else {
            return Err("the primary ENI has no interface on this host".into());
        };
        if let Some(h) = &kernel.addresses {
            let wanted = eni_addresses(&enis, &links, &inputs);
            problems.extend(ensure_addresses(h, &wanted).await);
        }
        let cfg = self.settings.datapath_config(&primary_if);
        let desired = vpc_dp::compute_desired(&cfg, &inputs.enis, &inputs.pods)
            .map_err(|e| format!("VPC datapath: {e}"))?;
        match vpc_dp::reconcile(kernel.nl.as_mut(), &desired).await {
            Ok(stats) => {
                self.metrics
                    .dataplane_writes
                    .inc_by(stats.writes.len() as u64);
                for eni in &inputs.present {
                    self.manager.interface_ready(eni);
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        for eni in &inputs.enis {
            if let Err(e) = loose_rp_filter(&eni.if_name) {
                problems.push(e);
            }
        }
        let text = vpc_dp::render_nft(&cfg).map_err(|e| format!("VPC SNAT: {e}"))?;
        if resync || kernel.nft_applied.as_deref() != Some(text.as_str()) {
            let t = text.clone();
            match tokio::task::spawn_blocking(move || vpc_dp::run_nft(&t, None)).await {
                Ok(Ok(())) => kernel.nft_applied = Some(text),
                Ok(Err(e)) => problems.push(format!("VPC SNAT: {e}")),
                Err(e) => problems.push(format!("VPC SNAT: nft task: {e}")),
            }
        }
        *self.interfaces.lock().unwrap_or_else(|e| e.into_inner()) = inputs
            .enis
            .iter()
            .map(|e| (e.id.clone(), e.if_name.clone()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn update_metrics(&self) {
        let stats = self.manager.stats();
        let m = &self.metrics;
        m.vpc_addresses.set(i64::from(stats.total));
        m.vpc_assigned.set(i64::from(stats.assigned));
        m.vpc_cooling.set(i64::from(stats.cooling));
        m.vpc_enis.set(self.manager.enis().len() as i64);
        m.vpc_ec2_problem
            .set(i64::from(self.manager.condition().is_some()));
    }

    /// A pass every `interval` (each a resync), sooner while an ENI waits for its interface.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            if let Err(e) = self.pass(true).await {
                tracing::warn!(problems = %e, "VPC datapath");
            }
            let waiting = !self.manager.waiting_for_interfaces().is_empty();
            let wait = if waiting {
                Duration::from_millis(200).min(interval)
            } else {
                interval
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// (link index, ENI primary address/subnet prefix) for each secondary ENI on the host: ipamd
/// gives a secondary ENI its own address, so what the node sends from it (ARP for the
/// gateway, above all) carries an address the VPC knows on that ENI.
fn eni_addresses(
    enis: &[EniInfo],
    links: &[LinkMessage],
    inputs: &PassInputs,
) -> Vec<(u32, Ipv4Net)> {
    let index_of = |name: &str| {
        links
            .iter()
            .find(|l| name_of(l).as_deref() == Some(name))
            .map(|l| l.header.index)
    };
    enis.iter()
        .filter(|e| !e.primary)
        .filter_map(|e| {
            let dp = inputs.enis.iter().find(|d| d.id == e.id)?;
            let ip = e.primary_ip?;
            let net = Ipv4Net::new(ip, e.subnet.prefix_len()).ok()?;
            Some((index_of(&dp.if_name)?, net))
        })
        .collect()
}

/// Adds each `(link index, address)` the kernel lacks: one address dump per pass, none
/// without secondary ENIs. Returns the problems.
async fn ensure_addresses(h: &rtnetlink::Handle, wanted: &[(u32, Ipv4Net)]) -> Vec<String> {
    use futures::TryStreamExt;
    if wanted.is_empty() {
        return Vec::new();
    }
    let have: Vec<_> = match h.address().get().execute().try_collect().await {
        Ok(have) => have,
        Err(e) => return vec![format!("reading the node's addresses: {e}")],
    };
    let have: Vec<(u32, ipnet::IpNet)> = have
        .iter()
        .filter_map(crate::autodetect::netlink::address_of)
        .collect();
    let mut problems = Vec::new();
    for &(index, address) in wanted {
        if have.contains(&(index, ipnet::IpNet::V4(address))) {
            continue;
        }
        if let Err(e) = h
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
        {
            problems.push(format!("adding {address} to ENI link {index}: {e}"));
        }
    }
    problems
}

/// Loose reverse-path filtering on an ENI (AWS sets 2 on eth0): replies to pods on a
/// secondary ENI arrive on that ENI although the main table routes their sources elsewhere.
fn loose_rp_filter(if_name: &str) -> Result<(), String> {
    let path = format!("/proc/sys/net/ipv4/conf/{if_name}/rp_filter");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "2" => Ok(()),
        _ => std::fs::write(&path, "2").map_err(|e| format!("writing 2 to {path}: {e}")),
    }
}

#[cfg(test)]
#[path = "datapath_tests.rs"]
mod tests;
