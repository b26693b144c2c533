//! `up`, `down` and `cleanup`: the underlay, etcd, the nodes and their agents.
//!
//! ```text
//!  tl-NAME-ul: bridge br0 172.30.0.254/24, etcd on 172.30.0.254:2379 and 127.0.0.1:2379
//!     |-- veth n1 <-> eth0 of tl-NAME-node-1 (172.30.0.1/24, trellis-agent)
//!     |-- veth n2 <-> eth0 of tl-NAME-node-2 (172.30.0.2/24, trellis-agent)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::sh::{self, ip};
use crate::state::{self, LabState, NodeState, NETNS_PREFIX};

const UNDERLAY_GW: &str = "172.30.0.254";

fn node_ip(i: usize) -> String {
    format!("172.30.0.{i}")
}

/// Starts `program args` inside `netns`, detached from this process, logging to `log`.
fn spawn_daemon(netns: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} in {netns}", program.display()))?;
    Ok(child.id())
}

fn wait_for(
    what: &str,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(8).collect();
            bail!(
                "{what} not ready after {timeout:?}; last log lines ({}):\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn binary(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace), or pass --bin-dir",
            p.display()
        );
    }
    Ok(p)
}

#[derive(Debug)]
pub struct UpArgs {
    pub name: String,
    pub nodes: usize,
    pub dual_stack: bool,
    pub bin_dir: PathBuf,
}

pub fn up(a: &UpArgs) -> anyhow::Result<LabState> {
    if a.nodes == 0 || a.nodes > 200 {
        bail!("--nodes must be between 1 and 200, got {}", a.nodes);
    }
    if !a.name.chars().all(|c| c.is_ascii_alphanumeric()) || a.name.len() > 12 {
        bail!(
            "lab name {:?}: 1-12 letters and digits (it prefixes interface and namespace names)",
            a.name
        );
    }
    if state::dir(&a.name).join("state.json").exists() {
        bail!("lab {} is already up (trellis-lab down {0})", a.name);
    }
    let (agent, ctl) = (
        binary(&a.bin_dir, "trellis-agent")?,
        binary(&a.bin_dir, "trellisctl")?,
    );
    binary(&a.bin_dir, "trellis")?;
    let dir = state::dir(&a.name);
    std::fs::create_dir_all(&dir)?;
    let ul = format!("{NETNS_PREFIX}{}-ul", a.name);
    let mut lab = LabState {
        name: a.name.clone(),
        underlay_netns: ul.clone(),
        etcd_pid: 0,
        etcd_endpoint: format!("http://{UNDERLAY_GW}:2379"),
        dual_stack: a.dual_stack,
        nodes: Vec::new(),
        pods: Vec::new(),
        bin_dir: a.bin_dir.clone(),
    };
    // Saved early and after every step, so `down` can undo a half-finished `up`.
    lab.save()?;
    sh::run("ip", &["netns", "add", &ul])?;
    ip(&ul, &["link", "set", "lo", "up"])?;
    ip(&ul, &["link", "add", "br0", "type", "bridge"])?;
    ip(
        &ul,
        &["addr", "add", &format!("{UNDERLAY_GW}/24"), "dev", "br0"],
    )?;
    ip(&ul, &["link", "set", "br0", "up"])?;

    let etcd_log = dir.join("etcd.log");
    let etcd_args: Vec<String> = [
        "--name",
        "lab",
        "--data-dir",
        &dir.join("etcd").display().to_string(),
        "--listen-client-urls",
        &format!("http://{UNDERLAY_GW}:2379,http://127.0.0.1:2379"),
        "--advertise-client-urls",
        &format!("http://{UNDERLAY_GW}:2379"),
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster",
        "lab=http://127.0.0.1:2380",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lab.etcd_pid = spawn_daemon(&ul, Path::new("/usr/bin/etcd"), &etcd_args, &etcd_log)?;
    lab.save()?;
    wait_for("etcd", &etcd_log, Duration::from_secs(20), || {
        sh::in_netns(
            &ul,
            "etcdctl",
            &["--endpoints", "http://127.0.0.1:2379", "endpoint", "health"],
            &[("ETCDCTL_API", "3".into())],
            "",
        )
        .is_ok_and(|(ok, _, _)| ok)
    })?;
    let mut pools = String::from(
        "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {name: default-ipv4}\nspec: {cidr: 10.244.0.0/16, vxlanMode: Always, natOutgoing: true}\n",
    );
    if a.dual_stack {
        pools.push_str("---\napiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {name: default-ipv6}\nspec: {cidr: 'fd00:244::/64', vxlanMode: Always}\n");
    }
    let ctl_s = ctl.display().to_string();
    let (ok, _, err) = sh::in_netns(
        &ul,
        &ctl_s,
        &[
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
            "apply",
            "-f",
            "-",
        ],
        &[],
        &pools,
    )?;
    if !ok {
        bail!("applying the default pools: {err}");
    }

    for i in 1..=a.nodes {
        let name = format!("node-{i}");
        let netns = format!("{NETNS_PREFIX}{}-{name}", a.name);
        let nip = node_ip(i);
        sh::run("ip", &["netns", "add", &netns])?;
        ip(&netns, &["link", "set", "lo", "up"])?;
        let ul_end = format!("n{i}");
        ip(
            &ul,
            &[
                "link", "add", &ul_end, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        ip(&ul, &["link", "set", &ul_end, "master", "br0", "up"])?;
        ip(
            &netns,
            &["addr", "add", &format!("{nip}/24"), "dev", "eth0"],
        )?;
        ip(&netns, &["link", "set", "eth0", "up"])?;
        ip(&netns, &["route", "add", "default", "via", UNDERLAY_GW])?;
        sh::sysctl(&netns, "net.ipv4.ip_forward", "1")?;
        sh::sysctl(&netns, "net.ipv6.conf.all.forwarding", "1")?;
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let socket = node_dir.join("agent.sock");
        let args: Vec<String> = vec![
            "--node-name".into(),
            name.clone(),
            "--node-ip".into(),
            nip.clone(),
            "--socket".into(),
            socket.display().to_string(),
            "--etcd-endpoints".into(),
            lab.etcd_endpoint.clone(),
        ];
        let pid = spawn_daemon(&netns, &agent, &args, &node_dir.join("agent.log"))?;
        lab.nodes.push(NodeState {
            name,
            netns,
            ip: nip,
            agent_pid: pid,
            socket,
        });
        lab.save()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for n in &lab.nodes {
        let client = trellis_agent_api::AgentClient::new(&n.socket);
        let log = dir.join(&n.name).join("agent.log");
        wait_for(
            &format!("trellis-agent on {}", n.name),
            &log,
            Duration::from_secs(30),
            || rt.block_on(client.status()).is_ok_and(|s| s.ready),
        )?;
    }
    Ok(lab)
}

fn start_agent(lab: &LabState, agent: &Path, node: &NodeState) -> anyhow::Result<u32> {
    let args: Vec<String> = vec![
        "--node-name".into(),
        node.name.clone(),
        "--node-ip".into(),
        node.ip.clone(),
        "--socket".into(),
        node.socket.display().to_string(),
        "--etcd-endpoints".into(),
        lab.etcd_endpoint.clone(),
    ];
    let log = state::dir(&lab.name).join(&node.name).join("agent.log");
    // The log is appended to: a restarted agent's lines follow the previous one's.
    spawn_daemon(&node.netns, agent, &args, &log)
}

/// Kills a node's agent (SIGKILL when `hard`, as a crash would) and starts it again; waits until
/// it is ready.
pub fn restart_agent(lab: &mut LabState, node: &str, hard: bool) -> anyhow::Result<()> {
    let agent = binary(&lab.bin_dir, "trellis-agent")?;
    let idx = lab
        .nodes
        .iter()
        .position(|n| n.name == node)
        .ok_or_else(|| anyhow::anyhow!("no node {node}"))?;
    let pid = lab.nodes[idx].agent_pid;
    let _ = Command::new("kill")
        .args([if hard { "-KILL" } else { "-TERM" }, &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let node_state = lab.nodes[idx].clone();
    lab.nodes[idx].agent_pid = start_agent(lab, &agent, &node_state)?;
    lab.save()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = trellis_agent_api::AgentClient::new(&node_state.socket);
    let log = state::dir(&lab.name).join(node).join("agent.log");
    wait_for(
        &format!("restarted trellis-agent on {node}"),
        &log,
        Duration::from_secs(30),
        || rt.block_on(client.status()).is_ok_and(|s| s.ready),
    )
}

fn kill(pid: u32) {
    if pid == 0 {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Removes a namespace, killing whatever still runs inside it.
fn remove_netns(name: &str) {
    if !netns_exists(name) {
        return;
    }
    if let Ok(pids) = sh::run("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = sh::run("ip", &["netns", "del", name]);
}

/// Tears a lab down: pods, agents, etcd, namespaces, state.
pub fn down(lab: &LabState) -> anyhow::Result<()> {
    for n in &lab.nodes {
        kill(n.agent_pid);
    }
    kill(lab.etcd_pid);
    std::thread::sleep(Duration::from_millis(200));
    for p in &lab.pods {
        remove_netns(&p.netns);
    }
    for n in &lab.nodes {
        remove_netns(&n.netns);
    }
    remove_netns(&lab.underlay_netns);
    let d = state::dir(&lab.name);
    std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    Ok(())
}

/// Removes every lab's leftovers: all `tl-*` namespaces (and processes in them) and all state.
pub fn cleanup() -> anyhow::Result<usize> {
    let list = sh::run("ip", &["netns", "list"])?;
    let mut removed = 0;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(NETNS_PREFIX) {
            remove_netns(name);
            removed += 1;
        }
    }
    if Path::new(state::RUN_DIR).exists() {
        std::fs::remove_dir_all(state::RUN_DIR)?;
    }
    Ok(removed)
}
