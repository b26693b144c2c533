//! What a lab is made of, kept in `/run/trellis-lab/NAME/state.json` so every command (and
//! `down` after a crash of the command that ran `up`) finds it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cluster::Encap;
use crate::rr::Reflector;

pub const RUN_DIR: &str = "/run/trellis-lab";
/// Every namespace of every lab starts with this; `cleanup` removes them all.
pub const NETNS_PREFIX: &str = "tl-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub ip: String,
    /// IPv6 underlay address (empty in a lab from before it had one).
    #[serde(default)]
    pub ip6: String,
    pub agent_pid: u32,
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ips: Vec<String>,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// `trellis-lab probe serve` started by `pod serve` (0: none).
    #[serde(default)]
    pub server_pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub underlay_netns: String,
    pub etcd_pid: u32,
    /// As reached from inside the lab's namespaces.
    pub etcd_endpoint: String,
    pub dual_stack: bool,
    #[serde(default = "one")]
    pub subnets: usize,
    #[serde(default = "vxlan")]
    pub encap: Encap,
    /// Agents run `--bgp`.
    #[serde(default)]
    pub bgp: bool,
    /// Agents enforce NetworkPolicy (unless `up --no-policy`).
    #[serde(default = "enforced")]
    pub policy: bool,
    /// BIRD, the BGP ToR router of a `--bgp` lab with two subnets or the route reflector of a
    /// `--route-reflector bird` one (0: none).
    #[serde(default)]
    pub bird_pid: u32,
    /// The route reflector of a `--bgp --route-reflector` lab (none: the mesh or the ToR).
    #[serde(default)]
    pub reflector: Option<Reflector>,
    /// trellis-bgp, when it is the route reflector (0: none).
    #[serde(default)]
    pub rr_pid: u32,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// Where trellis, trellis-agent and trellisctl are.
    pub bin_dir: PathBuf,
    /// A `--backend vpc` lab's VPC (none: an overlay lab).
    #[serde(default)]
    pub vpc: Option<crate::aws::VpcLab>,
}

fn one() -> usize {
    1
}

fn vxlan() -> Encap {
    Encap::Vxlan
}

/// Writes `value` as JSON to `path` by rename, so a reader never sees half a file.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn dir(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

impl LabState {
    pub fn load(name: &str) -> anyhow::Result<LabState> {
        let path = dir(name).join("state.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no lab {name:?} ({} unreadable)", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab state", path.display()))
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let d = dir(&self.name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        write_json(&d.join("state.json"), self)
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&NodeState> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            anyhow::anyhow!(
                "lab {} has no node {name:?} (nodes: {})",
                self.name,
                names.join(", ")
            )
        })
    }

    pub fn pod(&self, ns: &str, name: &str) -> anyhow::Result<&PodState> {
        self.pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .ok_or_else(|| anyhow::anyhow!("lab {} has no pod {ns}/{name}", self.name))
    }
}

/// Labs written before policy was on by default enforce it now too.
fn enforced() -> bool {
    true
}
