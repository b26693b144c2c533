//! `up`, `down` and `cleanup`: the underlay, etcd, the nodes and their agents.
//!
//! ```text
//!  tl-NAME-ul: bridge br0 172.30.0.254/24 + fd00:172:30::fe/64, etcd on 172.30.0.254:2379
//!     |-- veth n1 <-> eth0 of tl-NAME-node-1 (172.30.0.1/24 fd00:172:30::1/64, trellis-agent)
//!     |-- veth n2 <-> eth0 of tl-NAME-node-2 (172.30.0.2/24 fd00:172:30::2/64, trellis-agent)
//!  with --subnets 2 the same namespace also holds br1 172.30.1.254/24 + fd00:172:30:1::fe/64,
//!  a second L2 segment, and routes between the two (it is the router between the subnets):
//!     |-- veth n3 <-> eth0 of tl-NAME-node-3 (172.30.1.3/24 fd00:172:30:1::3/64)
//!  with --subnets 2 --bgp that router is a top-of-rack BGP router: BIRD 2 (AS 65000, files in
//!  the lab's state dir) peers over eBGP with every node's agent (AS 64512; one session per
//!  node and family, to the router's address on the node's segment), writes the pod blocks it
//!  learns into tl-NAME-ul's kernel (proto bird), and the node-to-node mesh is off:
//!     node-1 --eBGP--> 172.30.0.254 [BIRD, tl-NAME-ul] 172.30.1.254 <--eBGP-- node-3
//!  with --bgp --route-reflector trellis|bird (one subnet, --encap none) tl-NAME-ul runs a route
//!  reflector instead (trellis-bgp or BIRD 2, AS 64512, cluster id 172.30.0.254) and every node
//!  is its client over iBGP, one session per family, the mesh off; reflected routes keep the
//!  originating node as next hop, so pod traffic stays node to node on br0:
//!     node-1 --iBGP--> 172.30.0.254 / fd00:172:30::fe [reflector] <--iBGP-- node-5
//! ```
//! Nodes are spread over the segments in order: with 3 nodes and 2 subnets, node-1 and node-2
//! share the first and node-3 is alone on the second. Without --bgp the underlay never routes
//! pod addresses: pods on different subnets reach each other only through encapsulation. With
//! --bgp (agents run `--bgp`) a one-subnet lab uses the agents' node-to-node mesh.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::rr::{self, Reflector, RrAddrs, RrClient};
use crate::sh::{self, ip};
use crate::state::{self, LabState, NodeState, NETNS_PREFIX};
use crate::tor::{self, BirdFiles, TorNode};

/// The most subnets a lab underlay has.
pub const MAX_SUBNETS: usize = 2;

/// The segment (0-based) node `i` (1-based) of `nodes` sits on.
fn segment_of(i: usize, nodes: usize, subnets: usize) -> usize {
    (i - 1) * subnets / nodes
}

/// etcd listens on the first segment's gateway address.
fn etcd_ip() -> String {
    gateway4(0)
}

/// The router's (and etcd's) addresses on segment `s`.
fn gateway4(s: usize) -> String {
    format!("172.30.{s}.254")
}

fn gateway6(s: usize) -> String {
    format!("fd00:172:30:{s}::fe")
}

/// Node `i`'s (segment, IPv4, IPv6) on the underlay.
fn node_addrs(i: usize, nodes: usize, subnets: usize) -> (usize, String, String) {
    let seg = segment_of(i, nodes, subnets);
    (
        seg,
        format!("172.30.{seg}.{i}"),
        format!("fd00:172:30:{seg}::{i:x}"),
    )
}

/// New links in `netns` skip IPv6 duplicate address detection (no lab address can be a
/// duplicate: the lab hands them out).
fn no_dad(netns: &str) -> anyhow::Result<()> {
    sh::sysctl(netns, "net.ipv6.conf.all.accept_dad", "0")?;
    sh::sysctl(netns, "net.ipv6.conf.default.accept_dad", "0")
}

/// How pods on different nodes reach each other: the default pools' `vxlanMode` / `ipipMode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Encap {
    /// VXLAN to every other node (`vxlanMode: Always`).
    Vxlan,
    /// VXLAN only to nodes on another subnet, plain routes to the rest (`vxlanMode:
    /// CrossSubnet`); also accepted as `cross-subnet`, its older name.
    #[value(name = "vxlan-crosssubnet", alias = "cross-subnet")]
    CrossSubnet,
    /// IPIP through tunl0 to every other node (`ipipMode: Always`); IPv4 only, needs the
    /// kernel's ipip module.
    Ipip,
    /// IPIP only to nodes on another subnet, plain routes to the rest (`ipipMode: CrossSubnet`).
    #[value(name = "ipip-crosssubnet")]
    IpipCrossSubnet,
    /// No encapsulation: routes via the other nodes' underlay addresses (`Never`).
    None,
}

impl Encap {
    pub fn vxlan_mode(self) -> &'static str {
        match self {
            Encap::Vxlan => "Always",
            Encap::CrossSubnet => "CrossSubnet",
            Encap::Ipip | Encap::IpipCrossSubnet | Encap::None => "Never",
        }
    }

    pub fn ipip_mode(self) -> &'static str {
        match self {
            Encap::Ipip => "Always",
            Encap::IpipCrossSubnet => "CrossSubnet",
            Encap::Vxlan | Encap::CrossSubnet | Encap::None => "Never",
        }
    }

    pub fn is_ipip(self) -> bool {
        self.ipip_mode() != "Never"
    }
}

/// Whether this kernel can make IPIP links, tried in a throwaway namespace (`tl-probe-PID`,
/// removed at once; nothing else is created). The error is the one line `up` prints.
fn probe_ipip() -> anyhow::Result<()> {
    let ns = format!("{NETNS_PREFIX}probe-{}", std::process::id());
    sh::run("ip", &["netns", "add", &ns])?;
    let out = Command::new("ip")
        .args(["-n", &ns, "link", "add", "tl-probe", "type", "ipip"])
        .output();
    let _ = sh::run("ip", &["netns", "del", &ns]);
    let out = out.context("running ip link add type ipip")?;
    if out.status.success() {
        return Ok(());
    }
    let answer = String::from_utf8_lossy(&out.stderr);
    let answer = answer
        .trim()
        .trim_start_matches("Error: ")
        .trim_end_matches('.');
    bail!("this kernel has no ipip support (ip link add type ipip: {answer})")
}

/// Starts `program args` inside `netns`, detached from this process, logging to `log`.
pub fn spawn_daemon(
    netns: &str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> anyhow::Result<u32> {
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

pub fn wait_for(
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
    pub subnets: usize,
    pub encap: Encap,
    pub dual_stack: bool,
    /// Agents run their BGP speaker; with two subnets the router becomes a BGP ToR.
    pub bgp: bool,
    /// The underlay namespace runs a route reflector for the nodes instead of the mesh.
    pub route_reflector: Option<Reflector>,
    /// Agents enforce NetworkPolicy.
    pub policy: bool,
    pub bin_dir: PathBuf,
    /// Where pod addresses come from.
    pub backend: Backend,
    /// EC2 instance type of the nodes (`--backend vpc`).
    pub instance_type: String,
}

/// Where pods get their addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The cluster's IP pools (VXLAN/IPIP/routed, per --encap).
    Overlay,
    /// ENI addresses of an emulated VPC (moto), `trellis-agent --backend vpc`.
    Vpc,
}

/// Whether a lab with these settings has a BGP top-of-rack router.
fn has_tor(bgp: bool, subnets: usize) -> bool {
    bgp && subnets > 1
}

/// The default pools as trellisctl YAML.
fn default_pools(encap: Encap, dual_stack: bool) -> String {
    let (mode, ipip) = (encap.vxlan_mode(), encap.ipip_mode());
    let mut pools = format!(
        "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {{name: default-ipv4}}\nspec: {{cidr: 10.244.0.0/16, vxlanMode: {mode}, ipipMode: {ipip}, natOutgoing: true}}\n"
    );
    if dual_stack {
        pools.push_str(&format!("---\napiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {{name: default-ipv6}}\nspec: {{cidr: 'fd00:244::/64', vxlanMode: {mode}}}\n"));
    }
    pools
}

fn check_up_args(a: &UpArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > 200 {
        bail!("--nodes must be between 1 and 200, got {}", a.nodes);
    }
    if a.subnets == 0 || a.subnets > MAX_SUBNETS || a.subnets > a.nodes {
        bail!(
            "--subnets must be between 1 and {} (and at most --nodes), got {}",
            MAX_SUBNETS.min(a.nodes),
            a.subnets
        );
    }
    if a.subnets > 1 && a.encap == Encap::None && !a.bgp {
        bail!(
            "--encap none with --subnets {}: the router between the subnets knows no pod \
             addresses, and without BGP nothing would tell it; add --bgp (the router then \
             peers with every node), or use --encap vxlan or --encap cross-subnet",
            a.subnets
        );
    }
    if let Some(r) = a.route_reflector {
        let why = if !a.bgp {
            Some("it reflects the agents' BGP routes: add --bgp")
        } else if a.subnets != 1 {
            Some("it serves one segment (reflected routes keep the node as next hop): use --subnets 1")
        } else if a.encap != Encap::None {
            Some("it is for routed pods: use --encap none")
        } else {
            None
        };
        if let Some(why) = why {
            bail!("--route-reflector {}: {why}", r.arg());
        }
    }
    if a.dual_stack && a.encap.is_ipip() {
        bail!(
            "--encap {} with --dual-stack: IPIP carries IPv4 only (RFC 2003); use a VXLAN mode \
             for a dual-stack lab",
            if a.encap == Encap::Ipip {
                "ipip"
            } else {
                "ipip-crosssubnet"
            }
        );
    }
    Ok(())
}

pub fn up(a: &UpArgs) -> anyhow::Result<LabState> {
    if a.backend == Backend::Vpc {
        crate::aws::check_args(a)?;
    } else {
        check_up_args(a)?;
    }
    if a.encap.is_ipip() {
        probe_ipip()?;
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
    if a.route_reflector == Some(Reflector::Trellis) {
        binary(&a.bin_dir, "trellis-bgp")?;
    }
    let dir = state::dir(&a.name);
    std::fs::create_dir_all(&dir)?;
    let ul = format!("{NETNS_PREFIX}{}-ul", a.name);
    let mut lab = LabState {
        name: a.name.clone(),
        underlay_netns: ul.clone(),
        etcd_pid: 0,
        etcd_endpoint: format!("http://{}:2379", etcd_ip()),
        dual_stack: a.dual_stack,
        subnets: a.subnets,
        encap: a.encap,
        bgp: a.bgp,
        policy: a.policy,
        bird_pid: 0,
        reflector: a.route_reflector,
        rr_pid: 0,
        nodes: Vec::new(),
        pods: Vec::new(),
        bin_dir: a.bin_dir.clone(),
        vpc: None,
    };
    // Saved early and after every step, so `down` can undo a half-finished `up`.
    lab.save()?;
    if a.backend == Backend::Vpc {
        crate::aws::up(&mut lab, a, &a.instance_type)?;
        start_agents(&mut lab, &agent)?;
        return Ok(lab);
    }
    sh::run("ip", &["netns", "add", &ul])?;
    ip(&ul, &["link", "set", "lo", "up"])?;
    no_dad(&ul)?;
    sh::sysctl(&ul, "net.ipv4.ip_forward", "1")?;
    sh::sysctl(&ul, "net.ipv6.conf.all.forwarding", "1")?;
    for seg in 0..a.subnets {
        let br = format!("br{seg}");
        ip(&ul, &["link", "add", &br, "type", "bridge"])?;
        ip(
            &ul,
            &["addr", "add", &format!("{}/24", gateway4(seg)), "dev", &br],
        )?;
        ip(
            &ul,
            &[
                "addr",
                "add",
                &format!("{}/64", gateway6(seg)),
                "dev",
                &br,
                "nodad",
            ],
        )?;
        ip(&ul, &["link", "set", &br, "up"])?;
    }

    lab.etcd_pid = start_etcd(&ul, &dir, &etcd_ip())?;
    lab.save()?;
    let tor_nodes: Vec<TorNode> = (1..=a.nodes)
        .map(|i| {
            let (seg, ip, ip6) = node_addrs(i, a.nodes, a.subnets);
            TorNode {
                name: format!("node-{i}"),
                ip,
                ip6,
                gateway: gateway4(seg),
                gateway6: gateway6(seg),
            }
        })
        .collect();
    let mut pools = default_pools(a.encap, a.dual_stack);
    if has_tor(a.bgp, a.subnets) {
        // Before any agent starts, so none ever builds the mesh.
        pools.push_str("---\n");
        pools.push_str(&tor::peers_yaml(&tor_nodes, a.dual_stack));
    }
    if a.route_reflector.is_some() {
        pools.push_str("---\n");
        pools.push_str(&rr::peers_yaml(&rr_addrs(), a.dual_stack));
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
        bail!("applying the default pools (and BGP peers): {err}");
    }

    for i in 1..=a.nodes {
        let name = format!("node-{i}");
        let netns = format!("{NETNS_PREFIX}{}-{name}", a.name);
        let (seg, nip, nip6) = node_addrs(i, a.nodes, a.subnets);
        sh::run("ip", &["netns", "add", &netns])?;
        ip(&netns, &["link", "set", "lo", "up"])?;
        // Links made from here on skip IPv6 duplicate address detection: otherwise eth0's
        // link-local address stays tentative for a second or two, and until then the node
        // answers no neighbour solicitation, so a fresh lab's first IPv6 packets are lost.
        no_dad(&netns)?;
        let ul_end = format!("n{i}");
        ip(
            &ul,
            &[
                "link", "add", &ul_end, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        ip(
            &ul,
            &["link", "set", &ul_end, "master", &format!("br{seg}"), "up"],
        )?;
        ip(
            &netns,
            &["addr", "add", &format!("{nip}/24"), "dev", "eth0"],
        )?;
        // nodad: the address is usable at once (no node can hold it already).
        ip(
            &netns,
            &["addr", "add", &format!("{nip6}/64"), "dev", "eth0", "nodad"],
        )?;
        ip(&netns, &["link", "set", "eth0", "up"])?;
        ip(&netns, &["route", "add", "default", "via", &gateway4(seg)])?;
        ip(
            &netns,
            &["-6", "route", "add", "default", "via", &gateway6(seg)],
        )?;
        sh::sysctl(&netns, "net.ipv4.ip_forward", "1")?;
        sh::sysctl(&netns, "net.ipv6.conf.all.forwarding", "1")?;
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let node = NodeState {
            name,
            netns,
            ip: nip,
            ip6: nip6,
            agent_pid: 0,
            socket: node_dir.join("agent.sock"),
        };
        lab.nodes.push(node);
        lab.save()?;
    }
    if has_tor(a.bgp, a.subnets) {
        // Once every node is wired: BIRD gives up on a neighbour whose segment has no link
        // yet ("Link down") for its connect-retry time.
        lab.bird_pid = start_bird(&ul, &dir, &tor_nodes, a.dual_stack)?;
        lab.save()?;
    }
    if let Some(r) = a.route_reflector {
        let clients: Vec<RrClient> = tor_nodes
            .iter()
            .map(|n| RrClient {
                name: n.name.clone(),
                ip: n.ip.clone(),
                ip6: n.ip6.clone(),
            })
            .collect();
        match r {
            Reflector::Bird => {
                let conf = rr::bird_conf(
                    &rr_addrs(),
                    &clients,
                    a.dual_stack,
                    &BirdFiles::in_dir(&dir).log,
                );
                lab.bird_pid = run_bird(&ul, &dir, &conf)?;
            }
            Reflector::Trellis => {
                lab.rr_pid = start_trellis_bgp(&ul, &dir, &a.bin_dir, &clients, a.dual_stack)?;
            }
        }
        lab.save()?;
    }
    start_agents(&mut lab, &agent)?;
    Ok(lab)
}

/// Starts every node's agent and waits until each is ready.
fn start_agents(lab: &mut LabState, agent: &Path) -> anyhow::Result<()> {
    let dir = state::dir(&lab.name);
    for idx in 0..lab.nodes.len() {
        lab.nodes[idx].agent_pid = start_agent(lab, agent, &lab.nodes[idx])?;
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
            Duration::from_secs(60),
            || rt.block_on(client.status()).is_ok_and(|s| s.ready),
        )?;
    }
    Ok(())
}

/// Starts etcd in `ul`, listening on `listen_ip` and its loopback, and waits until it answers.
pub fn start_etcd(ul: &str, dir: &Path, listen_ip: &str) -> anyhow::Result<u32> {
    let etcd_log = dir.join("etcd.log");
    let etcd_args: Vec<String> = [
        "--name",
        "lab",
        "--data-dir",
        &dir.join("etcd").display().to_string(),
        "--listen-client-urls",
        &format!("http://{listen_ip}:2379,http://127.0.0.1:2379"),
        "--advertise-client-urls",
        &format!("http://{listen_ip}:2379"),
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
    let pid = spawn_daemon(ul, Path::new("/usr/bin/etcd"), &etcd_args, &etcd_log)?;
    wait_for("etcd", &etcd_log, Duration::from_secs(20), || {
        sh::in_netns(
            ul,
            "etcdctl",
            &["--endpoints", "http://127.0.0.1:2379", "endpoint", "health"],
            &[("ETCDCTL_API", "3".into())],
            "",
        )
        .is_ok_and(|(ok, _, _)| ok)
    })?;
    Ok(pid)
}

/// Starts BIRD as the ToR router in the router namespace `ul` (see [`run_bird`]).
fn start_bird(ul: &str, dir: &Path, nodes: &[TorNode], dual_stack: bool) -> anyhow::Result<u32> {
    let f = BirdFiles::in_dir(dir);
    run_bird(
        ul,
        dir,
        &tor::bird_conf(&gateway4(0), nodes, dual_stack, &f.log),
    )
}

/// The route reflector's addresses: the underlay's own on the (one) segment.
fn rr_addrs() -> RrAddrs {
    RrAddrs {
        ip: gateway4(0),
        ip6: gateway6(0),
        cluster_id: gateway4(0),
    }
}

/// Starts trellis-bgp as the route reflector in `ul`, logging to `trellis-bgp.log` in the
/// lab's state dir (its session status every second: the lab's view of the sessions); waits
/// until it logs that it runs.
fn start_trellis_bgp(
    ul: &str,
    dir: &Path,
    bin_dir: &Path,
    clients: &[RrClient],
    dual_stack: bool,
) -> anyhow::Result<u32> {
    let bin = binary(bin_dir, "trellis-bgp")?;
    let log = dir.join("trellis-bgp.log");
    let args = rr::trellis_bgp_args(&rr_addrs(), clients, dual_stack, 1);
    let pid = spawn_daemon(ul, &bin, &args, &log)?;
    // Listening once the first status line is out (the speaker binds before it runs).
    wait_for("trellis-bgp", &log, Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" session ")) || !running(pid)
    })?;
    if !running(pid) {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("trellis-bgp exited at once: {}", tail.trim());
    }
    Ok(pid)
}

/// Whether process `pid` (a child of this one, so a zombie once it exits: nothing reaps it
/// while `up` runs) still runs.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // pid (comm) STATE ...: comm may hold spaces and parentheses, the state follows the
        // last ')'.
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Writes BIRD's configuration `conf` and starts BIRD in `ul` (in the foreground of its own
/// process, so the pid is BIRD's); waits until its control socket answers.
fn run_bird(ul: &str, dir: &Path, conf: &str) -> anyhow::Result<u32> {
    let f = BirdFiles::in_dir(dir);
    std::fs::write(&f.conf, conf).with_context(|| format!("writing {}", f.conf.display()))?;
    let args: Vec<String> = [
        "-f".into(),
        "-c".into(),
        f.conf.display().to_string(),
        "-s".into(),
        f.socket.display().to_string(),
        "-P".into(),
        f.pid.display().to_string(),
    ]
    .into();
    let pid = spawn_daemon(ul, Path::new("bird"), &args, &f.log)?;
    wait_for("BIRD", &f.log, Duration::from_secs(10), || {
        birdc(dir, &["show", "status"]).is_ok()
    })?;
    Ok(pid)
}

/// `birdc -s SOCK ARGS` against a lab's ToR; its output.
pub fn birdc(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let sock = BirdFiles::in_dir(dir).socket.display().to_string();
    let mut all = vec!["-s", sock.as_str()];
    all.extend_from_slice(args);
    sh::run("birdc", &all)
}

fn start_agent(lab: &LabState, agent: &Path, node: &NodeState) -> anyhow::Result<u32> {
    let mut args: Vec<String> = vec![
        "--node-name".into(),
        node.name.clone(),
        "--node-ip".into(),
        node.ip.clone(),
    ];
    if !node.ip6.is_empty() {
        args.extend(["--node-ip6".into(), node.ip6.clone()]);
    }
    args.extend([
        "--socket".into(),
        node.socket.display().to_string(),
        "--etcd-endpoints".into(),
        lab.etcd_endpoint.clone(),
    ]);
    if lab.bgp {
        args.push("--bgp".into());
    }
    if !lab.policy {
        args.push("--no-policy".into());
    }
    let log = state::dir(&lab.name).join(&node.name).join("agent.log");
    if lab.vpc.is_some() {
        let i = lab
            .nodes
            .iter()
            .position(|n| n.name == node.name)
            .expect("the lab's node")
            + 1;
        let (vpc_args, env) = crate::aws::agent_args(lab, i);
        // `env` sets the credentials for the agent alone.
        let mut all = env;
        all.push(agent.display().to_string());
        all.extend(args);
        all.extend(vpc_args);
        return spawn_daemon(&node.netns, Path::new("/usr/bin/env"), &all, &log);
    }
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

pub fn kill(pid: u32) {
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
    kill(lab.bird_pid);
    kill(lab.rr_pid);
    if let Some(v) = &lab.vpc {
        crate::aws::down(v);
    }
    for p in &lab.pods {
        kill(p.server_pid);
    }
    std::thread::sleep(Duration::from_millis(200));
    for p in &lab.pods {
        remove_netns(&p.netns);
    }
    for n in &lab.nodes {
        remove_netns(&n.netns);
    }
    if let Some(v) = &lab.vpc {
        remove_netns(&v.outside_netns);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: usize, subnets: usize, encap: Encap) -> UpArgs {
        UpArgs {
            name: "t".into(),
            nodes,
            subnets,
            encap,
            dual_stack: false,
            bgp: false,
            route_reflector: None,
            policy: false,
            bin_dir: PathBuf::new(),
            backend: Backend::Overlay,
            instance_type: "t3.small".into(),
        }
    }

    #[test]
    fn a_vpc_lab_refuses_bgp_dual_stack_and_encapsulation() {
        let vpc = |f: &dyn Fn(&mut UpArgs)| {
            let mut a = args(2, 1, Encap::Vxlan);
            a.backend = Backend::Vpc;
            f(&mut a);
            crate::aws::check_args(&a).map_err(|e| e.to_string())
        };
        assert!(vpc(&|_| {}).is_ok());
        assert!(vpc(&|a| a.bgp = true).unwrap_err().contains("--bgp"));
        assert!(vpc(&|a| a.dual_stack = true)
            .unwrap_err()
            .contains("--dual-stack"));
        assert!(vpc(&|a| a.encap = Encap::None)
            .unwrap_err()
            .contains("--encap"));
    }

    #[test]
    fn nodes_fill_the_segments_in_order() {
        let seg: Vec<usize> = (1..=3).map(|i| segment_of(i, 3, 2)).collect();
        assert_eq!(seg, [0, 0, 1]);
        let seg: Vec<usize> = (1..=4).map(|i| segment_of(i, 4, 2)).collect();
        assert_eq!(seg, [0, 0, 1, 1]);
        assert!((1..=5).all(|i| segment_of(i, 5, 1) == 0));
    }

    #[test]
    fn impossible_topologies_are_refused_with_the_reason() {
        check_up_args(&args(3, 2, Encap::CrossSubnet)).unwrap();
        check_up_args(&args(3, 1, Encap::None)).unwrap();
        let e = check_up_args(&args(3, 2, Encap::None)).unwrap_err();
        assert!(e.to_string().contains("add --bgp"), "{e}");
        let mut routed = args(3, 2, Encap::None);
        routed.bgp = true;
        check_up_args(&routed).unwrap();
        assert!(has_tor(true, 2) && !has_tor(true, 1) && !has_tor(false, 2));
        let e = check_up_args(&args(3, 3, Encap::Vxlan)).unwrap_err();
        assert!(
            e.to_string().contains("--subnets must be between 1 and 2"),
            "{e}"
        );
        let e = check_up_args(&args(1, 2, Encap::Vxlan)).unwrap_err();
        assert!(e.to_string().contains("at most --nodes"), "{e}");
    }

    #[test]
    fn a_route_reflector_needs_bgp_one_subnet_and_no_encapsulation() {
        let rr = |subnets, encap, bgp| {
            let mut a = args(5, subnets, encap);
            a.bgp = bgp;
            a.route_reflector = Some(Reflector::Bird);
            check_up_args(&a).map_err(|e| e.to_string())
        };
        rr(1, Encap::None, true).unwrap();
        let e = rr(1, Encap::None, false).unwrap_err();
        assert!(
            e.contains("--route-reflector bird:") && e.contains("add --bgp"),
            "{e}"
        );
        let e = rr(2, Encap::None, true).unwrap_err();
        assert!(e.contains("use --subnets 1"), "{e}");
        let e = rr(1, Encap::Vxlan, true).unwrap_err();
        assert!(e.contains("use --encap none") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn ipip_modes_set_ipip_mode_and_are_ipv4_only() {
        let p = default_pools(Encap::Ipip, false);
        assert!(p.contains("vxlanMode: Never, ipipMode: Always"), "{p}");
        let p = default_pools(Encap::IpipCrossSubnet, false);
        assert!(p.contains("ipipMode: CrossSubnet"), "{p}");
        let p = default_pools(Encap::CrossSubnet, false);
        assert!(p.contains("vxlanMode: CrossSubnet, ipipMode: Never"), "{p}");
        check_up_args(&args(3, 2, Encap::IpipCrossSubnet)).unwrap();
        let mut dual = args(3, 1, Encap::Ipip);
        dual.dual_stack = true;
        let e = check_up_args(&dual).unwrap_err();
        assert!(e.to_string().contains("IPv4 only"), "{e}");
    }

    #[test]
    fn encap_names_on_the_command_line() {
        use clap::ValueEnum;
        for (name, want) in [
            ("vxlan", Encap::Vxlan),
            ("vxlan-crosssubnet", Encap::CrossSubnet),
            ("cross-subnet", Encap::CrossSubnet),
            ("ipip", Encap::Ipip),
            ("ipip-crosssubnet", Encap::IpipCrossSubnet),
            ("none", Encap::None),
        ] {
            assert_eq!(Encap::from_str(name, false), Ok(want), "{name}");
        }
    }

    #[test]
    fn pools_carry_the_encapsulation() {
        let p = default_pools(Encap::CrossSubnet, true);
        assert_eq!(p.matches("vxlanMode: CrossSubnet").count(), 2, "{p}");
        let p = default_pools(Encap::None, false);
        assert!(
            p.contains("vxlanMode: Never") && !p.contains("fd00:244"),
            "{p}"
        );
    }
}
