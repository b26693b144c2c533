//! `policy`: NetworkPolicy at scale (`bench/src/policy_gen.rs` says what is loaded: by default
//! 1,000 policies over 10,000 endpoints on 100 nodes): the agent's policy manager against a real
//! etcd, programming the kernel of a network namespace of this run.
//!
//! 1. **Full compile + apply**: from the manager's start to its ruleset in the kernel (polled
//!    with `nft list chain inet trellis policy-forward`, which the agent's first, whole
//!    transaction creates). Reference, same run: `resources::compile_all` and
//!    `render::render_node` in-process (the compiler's pure entry points) and `nft -f` of that
//!    text into an empty namespace: the kernel's own cost.
//! 2. **Relabel latency**: a local pod's app label toggled between two values selected by
//!    different policies, written to etcd; timed from the write until the kernel commits the
//!    (last) transaction that adds or deletes set elements carrying the pod, as nftables
//!    notifications (what `nft monitor` reads) show it: element messages with the pod's
//!    interface name or address, then the transaction's `NEWGEN`. No set name is assumed, so
//!    the figure survives changes to how the renderer lays sets out. The first toggles, which
//!    create the dispatch chains of the two combinations, are warm-up.
//! 3. **Throughput**: iperf3 from the client pod to the server pod (veths into the node
//!    namespace, routed), the server selected by a tenth of the policies, with the ruleset
//!    loaded, with the agent's table for no policies, and with `table inet trellis` absent;
//!    rounds interleaved, the order rotated per round; medians and their ratios.
//!
//! Needs root and the Debian `etcd-server`, `nftables`, `iperf3` packages. Namespaces are named
//! `tlbp<PID>-*` and removed at the end; a killed run's are removed by the next one.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use clap::Parser;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use trellis_agent::dataplane::nat::NftCommand;
use trellis_agent::dataplane::DataplaneStatus;
use trellis_agent::policy::run::{run as run_policy, PolicyConfig};
use trellis_bench::host::{load_average, require_root};
use trellis_bench::netns::{cleanup_stale, ip, Namespaces};
use trellis_bench::policy_gen::{self as gen, Sizes};
use trellis_bench::stats::{median, Latencies};
use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{Datastore, TxnOp};
use trellis_policy::{render, resources};

const PREFIX: &str = "tlbp";

#[derive(Debug, Parser)]
#[command(
    about = "NetworkPolicy at scale: full apply, relabel latency, throughput with the ruleset"
)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    #[arg(long, default_value_t = 10000)]
    endpoints: usize,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Timed relabels (after 8 untimed ones: each of 4 pods to each of 2 labels once).
    #[arg(long, default_value_t = 200)]
    relabels: usize,
    /// After a relabel's change is committed, how long no further change of that pod must
    /// follow before the next relabel (not part of the figure).
    #[arg(long, default_value_t = 100)]
    quiet_ms: u64,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Throughput rounds, each with and without the ruleset.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root("bench/policy", "it creates network namespaces")?;
    cleanup_stale(PREFIX);
    let sizes = Sizes {
        policies: args.policies,
        endpoints: args.endpoints,
        nodes: args.nodes,
        namespaces: args.namespaces,
    };
    let load_before = load_average();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let etcd = EtcdServer::start();
    let mut namespaces = Namespaces::new(PREFIX);
    let node = namespaces.add("node")?;
    let client = namespaces.add("client")?;
    let server = namespaces.add("server")?;
    wire(&node, &client, gen::CLIENT_IFACE, gen::CLIENT_IP)?;
    wire(&node, &server, gen::SERVER_IFACE, gen::SERVER_IP)?;
    let wired = (0..10).any(|_| in_ns(&client, &["ping", "-c1", "-W1", gen::SERVER_IP]).is_ok());
    if !wired {
        let debug = [
            in_ns(&node, &["ip", "route"]),
            in_ns(&node, &["ip", "neigh"]),
            in_ns(&node, &["ip", "addr"]),
            in_ns(&client, &["ip", "route"]),
            in_ns(&client, &["ip", "neigh"]),
            in_ns(&node, &["sysctl", "net.ipv4.ip_forward"]),
        ];
        bail!("the pods are not wired: {debug:?}");
    }

    // The cluster, into etcd and into an in-process engine.
    let docs = parse_documents(&gen::documents(&sizes), "bench-policy.yaml")?;
    let ds: Arc<dyn Datastore> = Arc::new(rt.block_on(etcd.datastore("bench-policy")));
    let load = Instant::now();
    rt.block_on(write_all(&*ds, &docs))?;
    println!(
        "loaded {} objects into etcd in {:.1} s",
        docs.len(),
        load.elapsed().as_secs_f64()
    );
    let (engine_time, render_time, whole) = in_process(&docs)?;
    let no_policies = baseline(&docs)?;
    let reference = namespaces.add("ref")?;
    let kernel_whole = timed_nft(&reference, &whole)?;
    println!(
        "  in-process: model + compile {:.1} s, render {:.1} s, nft -f {:.1} s",
        engine_time.as_secs_f64(),
        render_time.as_secs_f64(),
        kernel_whole.as_secs_f64()
    );

    // 1. The manager from start to ruleset.
    let status = Arc::new(DataplaneStatus::default());
    let started = Instant::now();
    let manager = rt.spawn(run_policy(
        ds.clone(),
        PolicyConfig {
            node_name: gen::NODE.to_string(),
        },
        NftCommand::in_netns(node.clone()),
        status,
    ));
    let full = loop {
        if nft(
            &node,
            &["list", "chain", "inet", "trellis", "policy-forward"],
        )
        .is_ok()
        {
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "no ruleset after 600 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let table = nft(&node, &["list", "table", "inet", "trellis"])?;
    ensure!(
        table.contains(&format!("\"{}\"", gen::SERVER_IFACE)),
        "the agent's ruleset does not name the server's interface {}",
        gen::SERVER_IFACE
    );

    println!(
        "  the agent's ruleset is in the kernel after {:.1} s",
        full.as_secs_f64()
    );
    // 2. Relabels.
    let monitor = Monitor::start(&node)?;
    let quiet = Duration::from_millis(args.quiet_ms);
    let relabel = rt.block_on(relabels(&*ds, &sizes, &monitor, args.relabels, quiet))?;
    drop(monitor);

    // 3. Throughput with and without the ruleset (the manager stopped: it would restore it).
    manager.abort();
    let saved = nft(&node, &["list", "table", "inet", "trellis"])?;
    let variants = [saved.as_str(), no_policies.as_str(), ""];
    let rates = throughput(&node, &client, &server, &variants, &args)?;
    let (with, without, bare) = (&rates[0], &rates[1], &rates[2]);
    let load_after = load_average();

    println!();
    println!("bench/policy: {} policies, {} endpoints on {} nodes ({} namespaces), node {} holds {} + 2 real pods",
        args.policies, args.endpoints, args.nodes, args.namespaces, gen::NODE, args.endpoints.div_ceil(args.nodes));
    println!(
        "full compile + apply, agent (etcd list to kernel)  {:>9.0} ms",
        ms(full)
    );
    println!(
        "  in-process model + compile_all                 {:>9.0} ms",
        ms(engine_time)
    );
    println!(
        "  in-process render_node, whole transaction      {:>9.0} ms ({} KiB)",
        ms(render_time),
        whole.len() / 1024
    );
    println!(
        "  nft -f of that transaction, empty namespace    {:>9.0} ms (reference)",
        ms(kernel_whole)
    );
    println!(
        "  agent / (compile + render + nft -f)            {:>9.2}x",
        full.as_secs_f64() / (engine_time + render_time + kernel_whole).as_secs_f64()
    );
    let q = |l: &Latencies, at: f64| l.quantile_us(at) as f64 / 1000.0;
    println!(
        "relabel, etcd write to kernel ({} timed)          p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (target p99 < 50 ms: {})",
        relabel.last.count(),
        q(&relabel.last, 0.5),
        q(&relabel.last, 0.99),
        q(&relabel.last, 1.0),
        if relabel.last.quantile_us(0.99) < 50_000 { "met" } else { "NOT met" }
    );
    println!(
        "  to the first commit with the pod's elements    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; {} relabel(s) took more than one transaction",
        q(&relabel.first, 0.5),
        q(&relabel.first, 0.99),
        q(&relabel.first, 1.0),
        relabel.split
    );
    println!(
        "  the etcd put alone (reference)                 p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; relabel / put p50 {:.1}x p99 {:.1}x",
        q(&relabel.put, 0.5),
        q(&relabel.put, 0.99),
        q(&relabel.put, 1.0),
        q(&relabel.last, 0.5) / q(&relabel.put, 0.5).max(0.001),
        q(&relabel.last, 0.99) / q(&relabel.put, 0.99).max(0.001),
    );
    let (w, wo, b) = (
        median(with).unwrap_or(0.0),
        median(without).unwrap_or(0.0),
        median(bare).unwrap_or(0.0),
    );
    println!(
        "pod-to-pod TCP, median of {} x {} s: ruleset {:.2} Gbit/s; no policies (the agent's table: anti-spoofing, conntrack) {:.2}; no table {:.2}",
        args.rounds,
        args.seconds,
        w / 1e9,
        wo / 1e9,
        b / 1e9
    );
    println!(
        "  ratio ruleset / no policies {:.3} (target >= 0.95: {}); ruleset / no table {:.3}",
        w / wo,
        if w / wo >= 0.95 { "met" } else { "NOT met" },
        w / b
    );
    println!("  per round, ruleset:     {}", gbits(with));
    println!("  per round, no policies: {}", gbits(without));
    println!("  per round, no table:    {}", gbits(bare));
    // Paired within a round (the variants ran back to back), so slow drifts of the machine
    // cancel; the median of these is the steadier figure on a busy machine.
    let paired: Vec<f64> = with.iter().zip(without).map(|(w, wo)| w / wo).collect();
    println!(
        "  per round, ruleset / no policies: {} (median {:.3})",
        paired
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        median(&paired).unwrap_or(0.0)
    );
    println!("load average {load_before} before, {load_after} after");
    drop(namespaces);
    etcd.stop();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn gbits(v: &[f64]) -> String {
    v.iter()
        .map(|b| format!("{:.2}", b / 1e9))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A pod namespace on a veth into the node namespace, as the CNI plugin wires pods: `/32`,
/// default route via 169.254.1.1 with a permanent neighbour entry for it (the node side's MAC),
/// a host route back; the node forwards and has an address of its own (its ARP source).
fn wire(node: &str, pod: &str, iface: &str, addr: &str) -> Result<()> {
    const MAC: &str = "ee:ee:ee:ee:ee:ee";
    for cmd in [
        format!("-n {node} link add {iface} type veth peer name eth0 netns {pod}"),
        format!("-n {node} link set {iface} address {MAC}"),
        format!("-n {node} link set {iface} up"),
        format!("-n {pod} addr add {addr}/32 dev eth0"),
        format!("-n {pod} link set eth0 up"),
        format!("-n {pod} route add 169.254.1.1 dev eth0 scope link"),
        format!("-n {pod} route add default via 169.254.1.1 dev eth0"),
        format!("-n {pod} neigh add 169.254.1.1 lladdr {MAC} dev eth0 nud permanent"),
        format!("-n {node} route add {addr}/32 dev {iface}"),
    ] {
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        ip(&argv)?;
    }
    in_ns(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let _ = ip(&["-n", node, "addr", "add", "10.250.255.254/32", "dev", "lo"]);
    Ok(())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .with_context(|| format!("ip netns exec {ns} {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nft(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["nft"];
    full.extend_from_slice(args);
    in_ns(ns, &full)
}

fn timed_nft(ns: &str, text: &str) -> Result<Duration> {
    let file = std::env::temp_dir().join(format!("{ns}.nft"));
    std::fs::write(&file, text)?;
    let t = Instant::now();
    let r = nft(ns, &["-f", file.to_str().unwrap_or_default()]);
    let took = t.elapsed();
    let _ = std::fs::remove_file(&file);
    r.map(|_| took)
}

/// Writes every document, 100 to an etcd transaction.
async fn write_all(ds: &dyn Datastore, docs: &[AnyResource]) -> Result<()> {
    let ops: Vec<TxnOp> = docs
        .iter()
        .map(|d| {
            Ok(TxnOp::Create {
                key: d.key(),
                value: d.encode()?,
            })
        })
        .collect::<Result<_>>()?;
    for chunk in ops.chunks(100) {
        ds.txn(chunk.to_vec()).await?;
    }
    Ok(())
}

/// The cluster compiled and the node's whole transaction rendered in-process, through the
/// compiler's pure entry points (the ones `trellisctl policy trace` also uses, so this stays
/// valid whatever the agent's engine does inside): times and text.
fn in_process(docs: &[AnyResource]) -> Result<(Duration, Duration, String)> {
    let t = Instant::now();
    let (mut namespaces, mut weps, mut nps) = (Vec::new(), Vec::new(), Vec::new());
    for d in docs {
        match d {
            AnyResource::Namespace(n) => namespaces.push(n),
            AnyResource::WorkloadEndpoint(w) => weps.push(w),
            AnyResource::NetworkPolicy(p) => nps.push(p),
            _ => {}
        }
    }
    let model = resources::model(namespaces, [], weps);
    let (policies, problems) = resources::compile_all(&model, nps, []);
    ensure!(
        problems.is_empty(),
        "generated policies do not compile: {problems:?}"
    );
    let compiled = t.elapsed();
    let t = Instant::now();
    let text = render::render_node(&policies, &model, gen::NODE);
    Ok((compiled, t.elapsed(), text))
}

/// The kernel's nftables notifications in a namespace (netlink group NFNLGRP_NFTABLES, as
/// `nft monitor` reads them, without its dump of the whole ruleset first): every message with
/// the time it arrived.
struct Monitor {
    messages: mpsc::Receiver<(Instant, Vec<u8>)>,
}

const NFNLGRP_NFTABLES: u32 = 7;
// nfnetlink message types: subsystem NFNL_SUBSYS_NFTABLES (10) in the high byte, then
// `enum nf_tables_msg_types` (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWSETELEM: u16 = (10 << 8) | 12;
const NFT_MSG_DELSETELEM: u16 = (10 << 8) | 14;
/// Sent once per committed transaction, after its objects' notifications
/// (`nf_tables_gen_notify` at the end of `nf_tables_commit`).
const NFT_MSG_NEWGEN: u16 = (10 << 8) | 15;

impl Monitor {
    fn start(ns: &str) -> Result<Monitor> {
        let path = format!("/var/run/netns/{ns}");
        let socket = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<Socket> {
                    let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    let mut s = Socket::new(NETLINK_NETFILTER)?;
                    s.bind_auto()?;
                    s.add_membership(NFNLGRP_NFTABLES)?;
                    s.set_rx_buf_sz(16 * 1024 * 1024)?;
                    Ok(s)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the netns thread panicked"))?
        })?;
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut buf = Vec::with_capacity(256 * 1024);
            if socket.recv(&mut buf, 0).is_err() {
                break;
            }
            let at = Instant::now();
            let mut i = 0;
            while i + 16 <= buf.len() {
                let len = u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap_or_default()) as usize;
                if len < 16 || i + len > buf.len() {
                    break;
                }
                if tx.send((at, buf[i..i + len].to_vec())).is_err() {
                    return;
                }
                i += len.div_ceil(4) * 4;
            }
        });
        Ok(Monitor { messages })
    }

    /// Forgets every message so far.
    fn drain(&self) {
        while self.messages.try_recv().is_ok() {}
    }

    /// When the kernel committed the transactions that added or deleted set elements carrying
    /// the pod (its interface name as an `ifname` key, or its IPv4 address), collected until
    /// no further one followed within `quiet`; an error if none came within `within`.
    ///
    /// Which sets and maps hold the pod is the renderer's business: any element change of the
    /// pod counts, and "the kernel has it" is the commit (`NFT_MSG_NEWGEN`) that ends the
    /// transaction, so a relabel applied as several transactions is timed to the last one.
    fn wait_for_pod(
        &self,
        iface: &str,
        ip: Ipv4Addr,
        within: Duration,
        quiet: Duration,
    ) -> Result<Commits> {
        // An `ifname` key is IFNAMSIZ (16) bytes, NUL-padded: no prefix of a longer name matches.
        let mut key = iface.as_bytes().to_vec();
        key.resize(16, 0);
        let addr = ip.octets();
        let deadline = Instant::now() + within;
        let (mut carried, mut committed) = (false, None::<Commits>);
        loop {
            let wait = match committed {
                Some(_) => quiet,
                None => deadline.saturating_duration_since(Instant::now()),
            };
            let Ok((at, msg)) = self.messages.recv_timeout(wait) else {
                return committed.with_context(|| {
                    format!("no element change of {iface} ({ip}) committed within {within:?}")
                });
            };
            match u16::from_ne_bytes([msg[4], msg[5]]) {
                NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM => {
                    carried |= contains(&msg, &key) || contains(&msg, &addr);
                }
                NFT_MSG_NEWGEN if carried => {
                    committed = Some(match committed {
                        None => Commits {
                            first: at,
                            last: at,
                            count: 1,
                        },
                        Some(c) => Commits {
                            last: at,
                            count: c.count + 1,
                            ..c
                        },
                    });
                    carried = false;
                }
                _ => {}
            }
        }
    }
}

/// The kernel transactions that changed one pod's elements.
#[derive(Debug, Clone, Copy)]
struct Commits {
    first: Instant,
    last: Instant,
    count: usize,
}

/// What the timed relabels measured: from the etcd write to the first and to the last commit
/// that changed the pod's elements, and how many relabels took more than one transaction.
#[derive(Debug, Default)]
struct Relabels {
    first: Latencies,
    last: Latencies,
    split: usize,
    /// The etcd put alone (until etcd acknowledged it): the part no agent can save.
    put: Latencies,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Toggles local endpoints' app labels between app0 and app50 (selected by different policies)
/// and times each write to the kernel.
async fn relabels(
    ds: &dyn Datastore,
    s: &Sizes,
    monitor: &Monitor,
    timed: usize,
    quiet: Duration,
) -> Result<Relabels> {
    let mut out = Relabels::default();
    // Local endpoints of ns0: indexes that are multiples of both `nodes` and `namespaces`.
    let step = lcm(s.nodes, s.namespaces);
    let locals: Vec<usize> = (0..s.endpoints).step_by(step).take(4).collect();
    ensure!(!locals.is_empty(), "no endpoint of ns0 on {}", gen::NODE);
    let warmup = 2 * locals.len();
    for k in 0..timed + warmup {
        let i = locals[k % locals.len()];
        let app = if (k / locals.len()).is_multiple_of(2) {
            "app50"
        } else {
            "app0"
        };
        let doc = parse_documents(&gen::endpoint_yaml(s, i, app), "relabel.yaml")?;
        let d = doc.first().context("no document")?;
        let (key, value) = (d.key(), d.encode()?);
        monitor.drain();
        let t0 = Instant::now();
        ds.put(&key, value).await?;
        let put = t0.elapsed();
        let ip: Ipv4Addr = gen::endpoint_ip(i).parse()?;
        let commits = monitor
            .wait_for_pod(&format!("trl{i}"), ip, Duration::from_secs(30), quiet)
            .with_context(|| format!("relabel {k}: trl{i} to {app}"))?;
        // The first round of each endpoint and label makes the combinations' chains.
        if k >= warmup {
            out.first
                .record(commits.first.saturating_duration_since(t0));
            out.last.record(commits.last.saturating_duration_since(t0));
            out.split += usize::from(commits.count > 1);
            out.put.record(put);
        }
    }
    Ok(out)
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b) * b
}

/// Client -> server throughput per round with each of `variants` loaded in turn (a ruleset to
/// `nft -f` after deleting the table; empty: no table), rounds interleaved and the order
/// rotated from round to round. Rates come back per variant, in round order.
fn throughput(
    node: &str,
    client: &str,
    server: &str,
    variants: &[&str],
    a: &Args,
) -> Result<Vec<Vec<f64>>> {
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let mut rates = vec![Vec::new(); variants.len()];
    let result = (|| -> Result<()> {
        for round in 0..a.rounds {
            // Each round starts with the next variant, so none always runs first or after
            // the same one (a cooler or warmer machine, a table just loaded).
            for v in (0..variants.len()).map(|j| (round + j) % variants.len()) {
                let ruleset = variants[v];
                let _ = nft(node, &["delete", "table", "inet", "trellis"]);
                if !ruleset.is_empty() {
                    timed_nft(node, ruleset)?;
                }
                let secs = a.seconds.to_string();
                let out = in_ns(client, &["iperf3", "-c", gen::SERVER_IP, "-t", &secs, "-J"])?;
                let j: serde_json::Value = serde_json::from_str(&out)?;
                let bps = j["end"]["sum_received"]["bits_per_second"]
                    .as_f64()
                    .with_context(|| {
                        format!("iperf3 (variant {v}) gave no result: {}", j["error"])
                    })?;
                rates[v].push(bps);
            }
        }
        Ok(())
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    result.map(|_| rates)
}

/// The agent's table with no policy at all: the two real pods' anti-spoofing and the hook.
fn baseline(docs: &[AnyResource]) -> Result<String> {
    let weps: Vec<_> = docs
        .iter()
        .filter_map(|d| match d {
            AnyResource::WorkloadEndpoint(w) if w.spec.node == gen::NODE => Some(w.clone()),
            _ => None,
        })
        .filter(|w| w.spec.pod == "client" || w.spec.pod == "server")
        .collect();
    let model = resources::model([], [], &weps);
    Ok(render::render_node(&[], &model, gen::NODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of type `ty` whose payload is `payload`.
    fn message(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + payload.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m
    }

    fn ifname(name: &str) -> Vec<u8> {
        let mut k = name.as_bytes().to_vec();
        k.resize(16, 0);
        k
    }

    #[test]
    fn times_the_commits_that_carry_the_pod_and_nothing_else() {
        let (tx, messages) = mpsc::channel();
        let monitor = Monitor { messages };
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let ip = Ipv4Addr::new(10, 200, 0, 7);
        for (ms, msg) in [
            // Another pod whose name starts with ours, then an unrelated commit.
            (1, message(NFT_MSG_NEWSETELEM, &ifname("trl10"))),
            (2, message(NFT_MSG_NEWGEN, &[])),
            // Our pod leaves one set (by name) and joins another (by address): one transaction.
            (3, message(NFT_MSG_DELSETELEM, &ifname("trl1"))),
            (4, message(NFT_MSG_NEWSETELEM, &ip.octets())),
            (5, message(NFT_MSG_NEWGEN, &[])),
            // A second transaction with the pod's elements.
            (6, message(NFT_MSG_NEWSETELEM, &ifname("trl1"))),
            (7, message(NFT_MSG_NEWGEN, &[])),
        ] {
            tx.send((at(ms), msg)).unwrap();
        }
        let c = monitor
            .wait_for_pod(
                "trl1",
                ip,
                Duration::from_secs(1),
                Duration::from_millis(10),
            )
            .unwrap();
        assert_eq!((c.first, c.last, c.count), (at(5), at(7), 2));
    }

    #[test]
    fn fails_when_no_commit_carries_the_pod() {
        let (tx, messages) = mpsc::channel();
        let monitor = Monitor { messages };
        let now = Instant::now();
        tx.send((now, message(NFT_MSG_NEWSETELEM, &ifname("trl2"))))
            .unwrap();
        tx.send((now, message(NFT_MSG_NEWGEN, &[]))).unwrap();
        // Elements of the pod, but never committed.
        tx.send((now, message(NFT_MSG_NEWSETELEM, &ifname("trl1"))))
            .unwrap();
        let err = monitor
            .wait_for_pod(
                "trl1",
                Ipv4Addr::new(10, 200, 0, 1),
                Duration::from_millis(50),
                Duration::from_millis(10),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("no element change of trl1"),
            "{err}"
        );
    }
}
