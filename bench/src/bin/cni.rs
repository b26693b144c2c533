//! `cni`: wall time of CNI ADD and DEL for pods on one node, for `trellis` (the real plugin
//! binary, talking to a node agent in this process backed by a private etcd) next to Debian's
//! reference plugins `ptp` + `host-local` and `bridge` + `host-local`, in the same run.
//!
//! Needs root: it creates network namespaces. Everything lives in namespaces named
//! `trl-bc<PID>-...` (a "node" namespace and one namespace per pod), removed at the end by a
//! guard, also when the run fails; namespaces left by a crashed run (dead PID) are removed at the
//! start. Nothing touches the root namespace: every plugin runs via
//! `ip netns exec NODE /path/plugin`, exactly as a runtime on that node would call it.
//!
//! Pod namespaces are created before any timing (creating a sandbox is not part of ADD). Each
//! round runs, for each plugin in turn (the order rotates per round, so background load falls on
//! all alike): ADD of every pod, then DEL of every pod; the pod namespaces are reused by the next
//! plugin after the DELs. Every invocation is timed from spawn to exit, process start-up included
//! for all three plugins alike. Every ADD and DEL must exit 0 and every ADD must return an
//! address; after trellis's DELs, `trellis_ipam::check` must count 0 allocations.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use clap::Parser;
use serde_json::{json, Value};
use trellis_agent::api;
use trellis_agent::endpoints::Endpoints;
use trellis_agent::metrics::Metrics;
use trellis_bench::host::load_average;
use trellis_bench::netns::{cleanup_stale, ip, Namespaces, NETNS_DIR};
use trellis_bench::report::times;
use trellis_bench::report::Ratio;
use trellis_bench::stats::{Latencies, Summary};
use trellis_datastore::codec;
use trellis_datastore::etcd::EtcdDatastore;
use trellis_datastore::resources::{IpPool, IpPoolSpec};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{Datastore, ObjectMeta};

/// Prefix of every namespace a run creates (`trl-bc<PID>-`).
const PREFIX: &str = "trl-bc";
const REFERENCE_DIR: &str = "/usr/lib/cni";
const NODE: &str = "node-1";
const TRELLIS_POOL: &str = "10.88.0.0/16";
const MTU: u32 = 1450;

#[derive(Debug, Parser)]
#[command(about = "CNI ADD/DEL latency: trellis next to ptp and bridge with host-local")]
struct Args {
    /// Pods added (then deleted) per plugin and round.
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Rounds; each runs every plugin once, in a rotated order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Untimed ADD+DEL pairs per plugin before the first round (page cache, first block claim).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

// ---- namespaces -------------------------------------------------------------------------------

// ---- plugins ----------------------------------------------------------------------------------

/// One plugin under test: its binary and its network configuration.
#[derive(Debug)]
struct Plugin {
    label: &'static str,
    bin: PathBuf,
    conf: String,
    /// Allocation check after a round's DELs (trellis only).
    is_trellis: bool,
}

/// Timed invocations of one plugin.
#[derive(Debug, Default)]
struct Tally {
    add: Latencies,
    del: Latencies,
    add_wall: Duration,
    del_wall: Duration,
}

impl Tally {
    fn absorb(&mut self, other: &Tally) {
        self.add.merge(&other.add);
        self.del.merge(&other.del);
        self.add_wall += other.add_wall;
        self.del_wall += other.del_wall;
    }
}

/// Runs `bin` inside the node namespace as a runtime would; returns the time from spawn to exit
/// and the output.
fn invoke(
    node_ns: &str,
    plugin: &Plugin,
    command: &str,
    pod: usize,
    pod_ns: &str,
) -> Result<(Duration, Output)> {
    let container = format!("bench-{pod}");
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{pod};\
         K8S_POD_INFRA_CONTAINER_ID={container}"
    );
    let netns = Path::new(NETNS_DIR).join(pod_ns);
    let began = Instant::now();
    let mut child = Command::new("ip")
        .arg("netns")
        .arg("exec")
        .arg(node_ns)
        .arg(&plugin.bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &container)
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", &args)
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", plugin.bin.display()))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin pipe"))?
        .write_all(plugin.conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = began.elapsed();
    ensure!(
        out.status.success(),
        "{} {command} for pod {pod} failed ({}): {}{}",
        plugin.label,
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if command == "ADD" {
        let result: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{} ADD for pod {pod}: result is not JSON", plugin.label))?;
        let has_ip = result["ips"]
            .as_array()
            .is_some_and(|ips| ips.iter().any(|ip| ip["address"].is_string()));
        ensure!(
            has_ip,
            "{} ADD for pod {pod}: no address in {result}",
            plugin.label
        );
    }
    Ok((took, out))
}

/// ADD then DEL of every pod; `pods[i]` is pod i's namespace.
fn add_del(node_ns: &str, plugin: &Plugin, pods: &[String]) -> Result<Tally> {
    let mut t = Tally::default();
    let began = Instant::now();
    for (i, ns) in pods.iter().enumerate() {
        t.add.record(invoke(node_ns, plugin, "ADD", i, ns)?.0);
    }
    t.add_wall = began.elapsed();
    let began = Instant::now();
    for (i, ns) in pods.iter().enumerate() {
        t.del.record(invoke(node_ns, plugin, "DEL", i, ns)?.0);
    }
    t.del_wall = began.elapsed();
    Ok(t)
}

// ---- trellis: etcd and the node agent ---------------------------------------------------------

/// A private etcd and the node agent serving the CNI API on a Unix socket, in this process.
#[derive(Debug)]
struct Trellis {
    ds: Arc<dyn Datastore>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    // Dropped last: the agent's connection goes first.
    _etcd: EtcdServer,
}

impl Trellis {
    fn start() -> Result<Trellis> {
        let etcd = EtcdServer::start();
        eprintln!("etcd at {} (fsync on)", etcd.endpoint());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let dir = tempfile::Builder::new()
            .prefix("trellis-bench-cni-")
            .tempdir()?;
        let socket = dir.path().join("agent.sock");
        let mut config = etcd.config("cni");
        // The fixture's 2 s suits outage tests; a benchmark must not fail on a slow fsync.
        config.request_timeout = Duration::from_secs(30);
        config.connect_timeout = Duration::from_secs(5);
        let ds = runtime.block_on(async {
            let ds: Arc<dyn Datastore> = Arc::new(
                EtcdDatastore::connect(config)
                    .await
                    .context("connecting to etcd")?,
            );
            let pool = IpPool::new(
                ObjectMeta::named("bench"),
                IpPoolSpec::new(TRELLIS_POOL.parse()?),
            );
            pool.validate()
                .map_err(|e| anyhow!("pool {TRELLIS_POOL}: {e}"))?;
            ds.put(&pool.key(), codec::encode_object(&pool)?).await?;
            trellis_agent::register::register_node(ds.as_ref(), NODE, &[])
                .await
                .context("registering the node")?;
            let listener = api::bind(&socket)
                .with_context(|| format!("binding the agent API on {}", socket.display()))?;
            let state = api::AppState {
                endpoints: Arc::new(Endpoints::new(ds.clone(), NODE, MTU)),
                metrics: Arc::new(Metrics::default()),
            };
            tokio::spawn(api::serve(listener, state));
            anyhow::Ok(ds)
        })?;
        Ok(Trellis {
            ds,
            socket,
            _dir: dir,
            runtime,
            _etcd: etcd,
        })
    }

    fn allocations(&self) -> Result<usize> {
        Ok(self
            .runtime
            .block_on(trellis_ipam::check(self.ds.as_ref()))?
            .allocations)
    }
}

fn trellis_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let bin = dir.join("trellis");
    ensure!(
        bin.is_file(),
        "{} is missing: cargo build --release -p trellis-cni",
        bin.display()
    );
    Ok(bin)
}

fn reference_bin(name: &str) -> Result<PathBuf> {
    let bin = Path::new(REFERENCE_DIR).join(name);
    ensure!(
        bin.is_file() && Path::new(REFERENCE_DIR).join("host-local").is_file(),
        "{} is missing: apt-get install containernetworking-plugins",
        bin.display()
    );
    Ok(bin)
}

// ---- report -----------------------------------------------------------------------------------

fn print_table(plugins: &[Plugin], totals: &[Tally]) {
    let width = plugins.iter().map(|p| p.label.len()).max().unwrap_or(6);
    println!(
        "{:<width$}  {:<3}  {:>5}  {:>7}  {:>9}  {:>9}",
        "plugin", "op", "n", "ops/s", "p50 µs", "p99 µs"
    );
    for (p, t) in plugins.iter().zip(totals) {
        for (op, l, wall) in [("ADD", &t.add, t.add_wall), ("DEL", &t.del, t.del_wall)] {
            let s = Summary::of_run(l, wall);
            let rate = s
                .ops_per_sec
                .map_or_else(|| "-".to_string(), |r| format!("{r:.0}"));
            println!(
                "{:<width$}  {op:<3}  {:>5}  {rate:>7}  {:>9}  {:>9}",
                p.label, s.ops, s.p50_us, s.p99_us
            );
        }
    }
}

/// trellis (index 0) over each other plugin, ADD and DEL.
fn ratios(prefix: &str, plugins: &[Plugin], tallies: &[Tally]) -> Vec<Ratio> {
    let summary = |l: &Latencies| Summary::of_subset(l);
    let mut out = Vec::new();
    for (p, t) in plugins.iter().zip(tallies).skip(1) {
        let base = p.label.split(' ').next().unwrap_or(p.label);
        out.push(Ratio::of(
            format!("{prefix}trellis/{base} ADD"),
            &summary(&tallies[0].add),
            &summary(&t.add),
        ));
        out.push(Ratio::of(
            format!("{prefix}trellis/{base} DEL"),
            &summary(&tallies[0].del),
            &summary(&t.del),
        ));
    }
    out
}

fn print_ratios(ratios: &[Ratio]) {
    let width = ratios.iter().map(|r| r.label.len()).max().unwrap_or(5);
    println!("\n{:<width$}  {:>7}  {:>7}", "ratio", "p50", "p99");
    for r in ratios {
        println!(
            "{:<width$}  {:>7}  {:>7}",
            r.label,
            times(r.p50),
            times(r.p99)
        );
    }
}

// ---- main -------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.pods > 0 && args.rounds > 0,
        "--pods and --rounds must be at least 1"
    );
    trellis_bench::host::require_root(
        "creates network namespaces",
        "sudo -E cargo run --release -p trellis-bench --bin cni",
    )?;
    let trellis = trellis_bin()?;
    let (ptp, bridge) = (reference_bin("ptp")?, reference_bin("bridge")?);
    cleanup_stale(PREFIX);
    let load_before = load_average();
    let started = Instant::now();

    let agent = Trellis::start()?;
    let ptp_data = tempfile::Builder::new()
        .prefix("trellis-bench-ptp-")
        .tempdir()?;
    let br_data = tempfile::Builder::new()
        .prefix("trellis-bench-br-")
        .tempdir()?;
    let plugins = [
        Plugin {
            label: "trellis (agent + etcd)",
            bin: trellis,
            conf: json!({
                "cniVersion": "1.0.0", "name": "bench", "type": "trellis",
                "ipam": {"type": "trellis-ipam"}, "agent_socket": agent.socket,
            })
            .to_string(),
            is_trellis: true,
        },
        Plugin {
            label: "ptp + host-local",
            bin: ptp,
            conf: json!({
                "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": "10.89.0.0/16",
                         "dataDir": ptp_data.path()},
            })
            .to_string(),
            is_trellis: false,
        },
        Plugin {
            label: "bridge + host-local",
            bin: bridge,
            conf: json!({
                "cniVersion": "1.0.0", "name": "bench-br", "type": "bridge",
                "bridge": "cni-bench0", "isGateway": true,
                "ipam": {"type": "host-local", "subnet": "10.90.0.0/16",
                         "dataDir": br_data.path()},
            })
            .to_string(),
            is_trellis: false,
        },
    ];

    let mut namespaces = Namespaces::new(PREFIX);
    let node_ns = namespaces.add("node")?;
    ip(&[
        "netns",
        "exec",
        &node_ns,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
    ])?;
    eprintln!("creating {} pod namespaces", args.pods);
    let pods = (0..args.pods)
        .map(|i| namespaces.add(&format!("p{i}")))
        .collect::<Result<Vec<_>>>()?;

    let check_clean = |p: &Plugin| -> Result<()> {
        if p.is_trellis {
            let left = agent.allocations()?;
            if left != 0 {
                bail!("trellis: {left} address(es) still allocated after every DEL");
            }
        }
        Ok(())
    };
    for p in &plugins {
        let warm = &pods[..args.warmup.min(pods.len())];
        add_del(&node_ns, p, warm).with_context(|| format!("warm-up of {}", p.label))?;
        check_clean(p)?;
    }

    let mut totals: Vec<Tally> = plugins.iter().map(|_| Tally::default()).collect();
    let mut per_round = Vec::new();
    for r in 0..args.rounds {
        let mut round: Vec<Tally> = plugins.iter().map(|_| Tally::default()).collect();
        for k in 0..plugins.len() {
            let i = (k + r) % plugins.len();
            let p = &plugins[i];
            eprintln!(
                "round {}/{}: {}: {} ADD then {} DEL",
                r + 1,
                args.rounds,
                p.label,
                args.pods,
                args.pods
            );
            round[i] = add_del(&node_ns, p, &pods)?;
            check_clean(p)?;
        }
        for (total, one) in totals.iter_mut().zip(&round) {
            total.absorb(one);
        }
        per_round.extend(ratios(&format!("round {}: ", r + 1), &plugins, &round));
    }
    drop(namespaces);
    drop(agent);

    print_table(&plugins, &totals);
    let mut all = ratios("", &plugins, &totals);
    if args.rounds > 1 {
        all.extend(per_round);
    }
    print_ratios(&all);
    let target =
        Summary::of_subset(&totals[0].add).p50_us <= Summary::of_subset(&totals[1].add).p50_us;
    println!(
        "\ntarget trellis ADD p50 <= ptp + host-local ADD p50: {}",
        if target { "met" } else { "NOT met" }
    );
    println!(
        "{} round(s) of {} pods per plugin (order rotated per round), {} untimed warm-up pods \
         per plugin; every ADD and DEL exited 0; trellis allocations after DEL: 0; \
         wall time {:.0} s; load average {load_before} before, {} after",
        args.rounds,
        args.pods,
        args.warmup,
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}
