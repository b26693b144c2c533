//! `trellis-lab up --backend vpc`: a lab whose nodes are EC2 instances of an emulated VPC and
//! whose agents give pods ENI addresses (`trellis-agent --backend vpc`).
//!
//! ```text
//!  tl-NAME-ul, the VPC router: 10.0.0.1/32 on lo (the subnet's router), etcd :2379,
//!      moto_server :5000 (EC2), the vpc-hypervisor daemon (IMDS for node-i on :8100+i)
//!     |-- n1e0 <-> eth0 of tl-NAME-node-1 (primary ENI: its MAC, its IP/24, default via .1)
//!     |-- n1e1 <-> eth1 of tl-NAME-node-1 (a secondary ENI the agent attached)
//!     |-- n2e0 <-> eth0 of tl-NAME-node-2
//!     |   every ENI address: /32 route + permanent neighbour on its ENI's router end;
//!     |   proxy ARP, strict rp_filter (the VPC's source/destination check)
//!     '-- out0 203.0.113.1/24 <-> eth0 of tl-NAME-out (203.0.113.10/24): a host outside
//!         the VPC, which pods reach SNATed to their node's primary address
//! ```

pub mod hypervisor;
pub mod router;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, spawn_daemon, UpArgs};
use crate::sh::{self, ip};
use crate::state::{self, LabState, NodeState, NETNS_PREFIX};

pub const REGION: &str = "us-east-1";
/// One of the AMIs moto knows.
pub const IMAGE_ID: &str = "ami-12c6146b";
pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const SUBNET_CIDR: &str = "10.0.0.0/24";
/// The subnet's router: the first host, as in a real VPC.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const MOTO_PORT: u16 = 5000;
/// node-i's IMDS listens on this + i.
pub const IMDS_BASE_PORT: u16 = 8100;
/// ENIs carry jumbo frames, as in a VPC.
pub const MTU: u32 = 9001;
/// The test host outside the VPC.
pub const OUTSIDE_IP: &str = "203.0.113.10";
const OUTSIDE_GATEWAY: &str = "203.0.113.1";

/// What the hypervisor created, as `vpc.json` in the lab's state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpcInfo {
    pub vpc_id: String,
    pub subnet_id: String,
    pub security_group_id: String,
    pub nodes: Vec<VpcNodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpcNodeInfo {
    pub instance_id: String,
    /// The primary ENI's MAC and address.
    pub mac: String,
    pub ip: Ipv4Addr,
    pub imds_port: u16,
}

/// The VPC part of a lab's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpcLab {
    pub instance_type: String,
    pub moto_pid: u32,
    pub hypervisor_pid: u32,
    pub outside_netns: String,
    #[serde(default)]
    pub info: Option<VpcInfo>,
}

/// Refuses what a VPC lab cannot be, before anything is created.
pub fn check_args(a: &UpArgs) -> anyhow::Result<()> {
    if a.bgp || a.route_reflector.is_some() {
        bail!("--backend vpc: the VPC routes ENI addresses, there is no BGP (drop --bgp / --route-reflector)");
    }
    if a.subnets != 1 || a.dual_stack {
        bail!("--backend vpc: one IPv4 subnet (drop --subnets / --dual-stack)");
    }
    if a.encap != cluster::Encap::Vxlan {
        bail!("--backend vpc: pods are not encapsulated (drop --encap)");
    }
    if a.nodes == 0 || a.nodes > 20 {
        bail!("--backend vpc: 1 to 20 nodes");
    }
    Ok(())
}

/// moto_server with unique, unreserved ENI addresses (see `moto_lab.py`).
const MOTO_LAB_PY: &str = include_str!("moto_lab.py");

/// The Python that has moto: `moto_server`'s interpreter when it is a Python script (a venv),
/// else `python3`.
fn moto_python() -> anyhow::Result<String> {
    let server = sh::run("sh", &["-c", "command -v moto_server"]).map_err(|_| {
        anyhow::anyhow!(
            "moto_server is not on the PATH: install it with pip install 'moto[server]' (scripts/lib/setup.sh does)"
        )
    })?;
    let first = std::fs::read_to_string(server.trim())
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_default();
    let python = match first.strip_prefix("#!") {
        Some(i) if i.contains("python") && !i.contains(' ') => i.trim().to_string(),
        _ => "python3".to_string(),
    };
    sh::run(&python, &["-c", "import moto.server"]).with_context(|| {
        format!(
            "{python} cannot import moto (the interpreter of {})",
            server.trim()
        )
    })?;
    Ok(python)
}

/// Builds a VPC lab (the caller has checked the name and binaries and saved `lab`).
pub fn up(lab: &mut LabState, a: &UpArgs, instance_type: &str) -> anyhow::Result<()> {
    let python = moto_python()?;
    let dir = state::dir(&a.name);
    let ul = lab.underlay_netns.clone();
    let outside = format!("{NETNS_PREFIX}{}-out", a.name);
    lab.vpc = Some(VpcLab {
        instance_type: instance_type.to_string(),
        moto_pid: 0,
        hypervisor_pid: 0,
        outside_netns: outside.clone(),
        info: None,
    });
    lab.etcd_endpoint = format!("http://{GATEWAY}:2379");
    lab.save()?;
    sh::run("ip", &["netns", "add", &ul])?;
    ip(&ul, &["link", "set", "lo", "up"])?;
    ip(&ul, &["addr", "add", &format!("{GATEWAY}/32"), "dev", "lo"])?;
    sh::sysctl(&ul, "net.ipv4.ip_forward", "1")?;
    lab.etcd_pid = cluster::start_etcd(&ul, &dir, &GATEWAY.to_string())?;
    lab.save()?;
    let script = dir.join("moto_lab.py");
    std::fs::write(&script, MOTO_LAB_PY)?;
    let moto_pid = spawn_daemon(
        &ul,
        Path::new(&python),
        &[
            script.display().to_string(),
            "-H".into(),
            "0.0.0.0".into(),
            "-p".into(),
            MOTO_PORT.to_string(),
        ],
        &dir.join("moto.log"),
    )?;
    vpc_mut(lab).moto_pid = moto_pid;
    lab.save()?;
    outside_host(&ul, &outside)?;
    for i in 1..=a.nodes {
        let netns = format!("{NETNS_PREFIX}{}-node-{i}", a.name);
        sh::run("ip", &["netns", "add", &netns])?;
        ip(&netns, &["link", "set", "lo", "up"])?;
        sh::sysctl(&netns, "net.ipv4.ip_forward", "1")?;
        let node_dir = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        lab.nodes.push(NodeState {
            name: format!("node-{i}"),
            netns,
            ip: String::new(),
            ip6: String::new(),
            agent_pid: 0,
            socket: node_dir.join("agent.sock"),
        });
    }
    lab.save()?;
    let me = std::env::current_exe().context("locating trellis-lab")?;
    let log = dir.join("vpc-hypervisor.log");
    let pid = spawn_daemon(
        &ul,
        &me,
        &[
            "vpc-hypervisor".into(),
            a.name.clone(),
            "--nodes".into(),
            a.nodes.to_string(),
            "--instance-type".into(),
            instance_type.to_string(),
        ],
        &log,
    )?;
    vpc_mut(lab).hypervisor_pid = pid;
    lab.save()?;
    let info_path = dir.join("vpc.json");
    cluster::wait_for(
        "the VPC (moto, instances, ENIs)",
        &log,
        Duration::from_secs(60),
        || info_path.exists() || !cluster::running(pid),
    )?;
    if !info_path.exists() {
        bail!(
            "vpc-hypervisor stopped: {}",
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        );
    }
    let info: VpcInfo = serde_json::from_slice(&std::fs::read(&info_path)?)
        .with_context(|| format!("reading {}", info_path.display()))?;
    for (n, i) in lab.nodes.iter_mut().zip(&info.nodes) {
        n.ip = i.ip.to_string();
    }
    vpc_mut(lab).info = Some(info);
    lab.save()?;
    Ok(())
}

fn vpc_mut(lab: &mut LabState) -> &mut VpcLab {
    lab.vpc.as_mut().expect("a VPC lab")
}

/// The test host outside the VPC, linked to the router.
fn outside_host(ul: &str, outside: &str) -> anyhow::Result<()> {
    sh::run("ip", &["netns", "add", outside])?;
    ip(outside, &["link", "set", "lo", "up"])?;
    let mtu = MTU.to_string();
    ip(
        ul,
        &[
            "link", "add", "out0", "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu",
            &mtu, "netns", outside,
        ],
    )?;
    ip(
        ul,
        &[
            "addr",
            "add",
            &format!("{OUTSIDE_GATEWAY}/24"),
            "dev",
            "out0",
        ],
    )?;
    ip(ul, &["link", "set", "out0", "up"])?;
    ip(
        outside,
        &["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"],
    )?;
    ip(outside, &["link", "set", "eth0", "up"])?;
    ip(
        outside,
        &["route", "add", "default", "via", OUTSIDE_GATEWAY],
    )?;
    Ok(())
}

/// The agent's VPC flags for node `i` (1-based) and the environment it needs.
pub fn agent_args(lab: &LabState, i: usize) -> (Vec<String>, Vec<String>) {
    let node_dir = state::dir(&lab.name).join(format!("node-{i}"));
    let args = vec![
        "--backend".into(),
        "vpc".into(),
        "--ec2-endpoint".into(),
        hypervisor::ec2_endpoint(),
        "--imds-endpoint".into(),
        hypervisor::imds_endpoint(i),
        "--cluster-name".into(),
        format!("tl-{}", lab.name),
        "--vpc-checkpoint".into(),
        node_dir.join("vpc-ipam.json").display().to_string(),
        "--mtu".into(),
        MTU.to_string(),
    ];
    let env = vec![
        "AWS_ACCESS_KEY_ID=testing".into(),
        "AWS_SECRET_ACCESS_KEY=testing".into(),
        format!("AWS_REGION={REGION}"),
    ];
    (args, env)
}

/// Kills the VPC's daemons (the caller removes the namespaces).
pub fn down(v: &VpcLab) {
    cluster::kill(v.hypervisor_pid);
    cluster::kill(v.moto_pid);
}

/// `trellis-lab status` lines for a VPC lab.
pub fn status(lab: &LabState) -> String {
    let Some(v) = &lab.vpc else {
        return String::new();
    };
    let mut out = format!(
        "vpc: {VPC_CIDR}, subnet {SUBNET_CIDR} (router {GATEWAY}), instances {}, EC2 (moto) {}, outside host {OUTSIDE_IP} (netns {})\n",
        v.instance_type,
        hypervisor::ec2_endpoint(),
        v.outside_netns
    );
    if let Some(info) = &v.info {
        for (n, i) in lab.nodes.iter().zip(&info.nodes) {
            out.push_str(&format!(
                "instance {} of {}: primary ENI {} {}, IMDS http://{GATEWAY}:{}\n",
                i.instance_id, n.name, i.mac, i.ip, i.imds_port
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_on_the_subnet_router() {
        assert_eq!(hypervisor::imds_endpoint(2), "http://10.0.0.1:8102");
        assert_eq!(hypervisor::ec2_endpoint(), "http://10.0.0.1:5000");
    }
}
