//! `dataplane`: cross-node pod-to-pod TCP throughput (VXLAN by default) as a ratio of the
//! node-to-node underlay throughput, both measured in the same run with iperf3.
//!
//! Needs root and the workspace's release binaries: it drives `trellis-lab` (found next to this
//! executable, with `trellis`, `trellis-agent` and `trellisctl`). It brings up a 2-node lab
//! `bdp<PID>` (extra `--lab-arg` values go to `trellis-lab up`), adds `bench/client` on node-1
//! and `bench/server` on node-2, and starts an iperf3 server both in the server pod and in
//! node-2's namespace (separate network namespaces, so both use the default port). Each round
//! then runs, one after the other, `iperf3 -c NODE2 -t SECS -J` from node-1 (the underlay) and
//! `iperf3 -c POD2 -t SECS -J` from the client pod (through the overlay), and reads
//! `end.sum_received.bits_per_second`. The figures are the median of the rounds; the ratio is
//! the pod median over the underlay median.
//!
//! The lab is torn down (`trellis-lab down`) by a guard at the end, also when the run fails; the
//! iperf3 servers die with their namespaces. After a kill (Ctrl-C), run
//! `target/release/trellis-lab down bdp<PID>`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use clap::Parser;
use serde_json::Value;
use trellis_bench::host::load_average;
use trellis_bench::report::times;
use trellis_bench::stats::median;

const CLIENT_NODE: &str = "node-1";
const SERVER_NODE: &str = "node-2";
const CLIENT_POD: &str = "bench/client";
const SERVER_POD: &str = "bench/server";
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Parser)]
#[command(about = "Cross-node pod-to-pod TCP throughput next to the node-to-node underlay")]
struct Args {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Rounds; each runs the underlay, then the pods.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Extra argument for `trellis-lab up` (repeatable): `--lab-arg=--encap --lab-arg none`.
    #[arg(long = "lab-arg", value_name = "ARG", allow_hyphen_values = true)]
    lab_args: Vec<String>,
}

// ---- preconditions ----------------------------------------------------------------------------

/// `trellis-lab`, checked to have the binaries a lab needs next to it.
fn lab_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let missing: Vec<&str> = ["trellis-lab", "trellis", "trellis-agent", "trellisctl"]
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    ensure!(
        missing.is_empty(),
        "{} missing from {}: run `cargo build --release --workspace` first",
        missing.join(", "),
        dir.display()
    );
    Ok(dir.join("trellis-lab"))
}

// ---- the lab ----------------------------------------------------------------------------------

/// A lab brought up by this run, torn down on drop.
#[derive(Debug)]
struct Lab {
    bin: PathBuf,
    name: String,
}

fn describe(out: &Output) -> String {
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        if out.stdout.is_empty() || out.stderr.is_empty() {
            ""
        } else {
            "\n"
        },
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

impl Lab {
    fn up(bin: &Path, name: &str, extra: &[String]) -> Result<Lab> {
        let out = Command::new(bin)
            .args(["up", "--name", name, "--nodes", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        // `up` removes what it built when it fails, so a guard is needed only after success.
        ensure!(
            out.status.success(),
            "trellis-lab up --name {name} --nodes 2{} failed ({}): {}",
            extra.iter().map(|a| format!(" {a}")).collect::<String>(),
            out.status,
            describe(&out)
        );
        Ok(Lab {
            bin: bin.to_path_buf(),
            name: name.to_string(),
        })
    }

    /// `trellis-lab ARGS`, its stdout when it exits 0.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        ensure!(
            out.status.success(),
            "trellis-lab {} failed ({}): {}",
            args.join(" "),
            out.status,
            describe(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds `pod` on `node`; its first (IPv4) address from the printed `NS/POD on NODE: IP [IP6]`.
    fn add_pod(&self, node: &str, pod: &str) -> Result<String> {
        let out = self.run(&["pod", "add", &self.name, node, pod])?;
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{pod} on {node}: ")))
            .and_then(|ips| ips.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no address for {pod} in `pod add` output {out:?}"))
    }

    /// Underlay address of `node`, from the `node NAME IP ...` lines of `status`.
    fn node_ip(status: &str, node: &str) -> Result<String> {
        status
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() >= 3 && w[0] == "node" && w[1] == node)
            .map(|w| w[2].to_string())
            .ok_or_else(|| anyhow!("no line for {node} in `status` output {status:?}"))
    }

    /// The pools' vxlanMode, when `status` shows it (`..., pools vxlanMode Always`).
    fn vxlan_mode(status: &str) -> Option<&str> {
        let first = status.lines().next()?;
        let (_, rest) = first.split_once("vxlanMode ")?;
        rest.split(|c: char| c.is_whitespace() || c == ',').next()
    }

    /// `trellis-lab pod exec NAME POD -- CMD` or `node exec NAME NODE -- CMD`.
    fn exec(&self, place: &Place, cmd: &[&str]) -> Result<String> {
        let mut args = vec![place.kind(), "exec", &self.name, place.name(), "--"];
        args.extend_from_slice(cmd);
        self.run(&args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        eprintln!("tearing down lab {}", self.name);
        if let Err(e) = self.run(&["down", &self.name]) {
            eprintln!(
                "warning: {e:#}\n  remove it with: {} down {}",
                self.bin.display(),
                self.name
            );
        }
    }
}

/// Where a command runs: a node's namespace or a pod's.
#[derive(Debug)]
enum Place {
    Node(&'static str),
    Pod(&'static str),
}

impl Place {
    fn kind(&self) -> &'static str {
        match self {
            Place::Node(_) => "node",
            Place::Pod(_) => "pod",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Place::Node(n) | Place::Pod(n) => n,
        }
    }
}

// ---- iperf3 -----------------------------------------------------------------------------------

/// Starts a daemonised iperf3 server in `place` and waits until it listens.
fn start_server(lab: &Lab, place: &Place) -> Result<()> {
    let port = IPERF_PORT.to_string();
    lab.exec(place, &["iperf3", "-s", "-D", "-p", &port])
        .with_context(|| format!("starting iperf3 -s in {} {}", place.kind(), place.name()))?;
    let filter = format!("sport = :{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = lab.exec(place, &["ss", "-Hltn", &filter])?;
        if !listening.trim().is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "iperf3 -s in {} {} not listening on {port} after 10 s",
            place.kind(),
            place.name()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `end.sum_received.bits_per_second` of an `iperf3 -J` report.
fn received_bps(report: &str) -> Result<f64> {
    let v: Value = serde_json::from_str(report).context("iperf3 -J output is not JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("no end.sum_received.bits_per_second in the iperf3 report"))?;
    ensure!(bps > 0.0, "iperf3 received nothing");
    Ok(bps)
}

/// One timed iperf3 client run from `from` to `to`; bits per second received.
fn measure(lab: &Lab, from: &Place, to: &str, seconds: u32) -> Result<f64> {
    let (port, secs) = (IPERF_PORT.to_string(), seconds.to_string());
    let cmd = ["iperf3", "-c", to, "-p", &port, "-t", &secs, "-J"];
    // iperf3 prints its JSON report (with an "error" field) on stdout also when it fails.
    let mut args = vec![from.kind(), "exec", &lab.name, from.name(), "--"];
    args.extend_from_slice(&cmd);
    let out = Command::new(&lab.bin)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", lab.bin.display()))?;
    let report = String::from_utf8_lossy(&out.stdout);
    let bps = received_bps(&report).with_context(|| {
        format!(
            "{} {}: {} ({}){}",
            from.kind(),
            from.name(),
            cmd.join(" "),
            out.status,
            if out.stderr.is_empty() {
                String::new()
            } else {
                format!(": {}", String::from_utf8_lossy(&out.stderr).trim())
            }
        )
    })?;
    ensure!(
        out.status.success(),
        "{} {}: {} exited {}",
        from.kind(),
        from.name(),
        cmd.join(" "),
        out.status
    );
    Ok(bps)
}

// ---- report -----------------------------------------------------------------------------------

fn gbit(bps: Option<f64>) -> String {
    bps.map_or_else(|| "-".to_string(), |b| format!("{:.2}", b / 1e9))
}

fn ratio(pod: Option<f64>, underlay: Option<f64>) -> Option<f64> {
    pod.zip(underlay)
        .and_then(|(p, u)| (u > 0.0).then(|| p / u))
}

/// Aligned plain text: one row per round, then the medians and their ratio.
fn render(pod_label: &str, underlay: &[f64], pod: &[f64]) -> String {
    let underlay_label = "underlay Gbit/s";
    let pod_label = format!("{pod_label} Gbit/s");
    let (uw, pw) = (underlay_label.len(), pod_label.chars().count());
    let width = "median"
        .len()
        .max(format!("round {}", underlay.len()).len());
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:<width$}  {underlay_label:>uw$}  {pod_label:>pw$}  {:>12}",
        "run", "pod/underlay"
    );
    for (i, (u, p)) in underlay.iter().zip(pod).enumerate() {
        let _ = writeln!(
            out,
            "{:<width$}  {:>uw$}  {:>pw$}  {:>12}",
            format!("round {}", i + 1),
            gbit(Some(*u)),
            gbit(Some(*p)),
            times(ratio(Some(*p), Some(*u)))
        );
    }
    let (mu, mp) = (median(underlay), median(pod));
    let _ = writeln!(
        out,
        "{:<width$}  {:>uw$}  {:>pw$}  {:>12}",
        "median",
        gbit(mu),
        gbit(mp),
        times(ratio(mp, mu))
    );
    out
}

// ---- main -------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.seconds > 0 && args.rounds > 0,
        "--seconds and --rounds must be at least 1"
    );
    trellis_bench::host::require_root(
        "creates network namespaces (through trellis-lab)",
        "sudo ./target/release/dataplane",
    )?;
    let bin = lab_bin()?;
    let load_before = load_average();
    let started = Instant::now();

    // Lab names are 1-12 letters and digits.
    let name = format!("bdp{}", std::process::id() % 1_000_000_000);
    let up_line = format!("trellis-lab up --name {name} --nodes 2");
    eprintln!(
        "{up_line}{}",
        args.lab_args
            .iter()
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let lab = Lab::up(&bin, &name, &args.lab_args)?;
    let client_ip = lab.add_pod(CLIENT_NODE, CLIENT_POD)?;
    let server_ip = lab.add_pod(SERVER_NODE, SERVER_POD)?;
    let status = lab.run(&["status", &lab.name])?;
    let node2_ip = Lab::node_ip(&status, SERVER_NODE)?;
    // Labelled by what the lab says it set up, else by what it does without --lab-arg.
    let pod_label = match Lab::vxlan_mode(&status) {
        Some(mode) => format!("pod (vxlanMode {mode})"),
        None if args.lab_args.is_empty() => "pod (VXLAN)".to_string(),
        None => "pod".to_string(),
    };
    let (client_pod, server_pod) = (Place::Pod(CLIENT_POD), Place::Pod(SERVER_POD));
    let (client_node, server_node) = (Place::Node(CLIENT_NODE), Place::Node(SERVER_NODE));
    let mtu = |p: &Place| {
        lab.exec(p, &["cat", "/sys/class/net/eth0/mtu"])
            .map(|m| m.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let (pod_mtu, node_mtu) = (mtu(&client_pod), mtu(&client_node));
    eprintln!(
        "{CLIENT_POD} {client_ip} on {CLIENT_NODE}, {SERVER_POD} {server_ip} on {SERVER_NODE} \
         ({node2_ip}); eth0 MTU pod {pod_mtu}, node {node_mtu}"
    );
    start_server(&lab, &server_pod)?;
    start_server(&lab, &server_node)?;

    let (mut underlay, mut pod) = (Vec::new(), Vec::new());
    for r in 1..=args.rounds {
        let u = measure(&lab, &client_node, &node2_ip, args.seconds)?;
        eprintln!(
            "round {r}/{}: underlay {CLIENT_NODE} -> {SERVER_NODE}: {} Gbit/s",
            args.rounds,
            gbit(Some(u))
        );
        underlay.push(u);
        let p = measure(&lab, &client_pod, &server_ip, args.seconds)?;
        eprintln!(
            "round {r}/{}: pod {CLIENT_POD} -> {SERVER_POD}: {} Gbit/s",
            args.rounds,
            gbit(Some(p))
        );
        pod.push(p);
    }
    drop(lab);

    print!("{}", render(&pod_label, &underlay, &pod));
    println!(
        "\n{} round(s) of iperf3 -t {} (one TCP stream), underlay {CLIENT_NODE} -> \
         {SERVER_NODE} {node2_ip} then pod {CLIENT_POD} -> {SERVER_POD} {server_ip}; \
         eth0 MTU node {node_mtu}, pod {pod_mtu}; lab args: {}; wall time {:.0} s; \
         load average {load_before} before, {} after",
        args.rounds,
        args.seconds,
        if args.lab_args.is_empty() {
            "(none)".to_string()
        } else {
            args.lab_args.join(" ")
        },
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_received_rate_and_errors() {
        let ok = r#"{"end": {"sum_received": {"bits_per_second": 2.5e9}}}"#;
        assert_eq!(received_bps(ok).unwrap(), 2.5e9);
        let err = r#"{"start": {}, "end": {}, "error": "unable to connect to server"}"#;
        assert!(received_bps(err)
            .unwrap_err()
            .to_string()
            .contains("unable to connect"));
        assert!(received_bps("not json").is_err());
    }

    #[test]
    fn parses_status_node_ip_and_vxlan_mode() {
        let old = "lab x: datastore http://172.30.0.254:2379 (from the lab's namespaces)\n\
                   node node-1   172.30.0.1   netns tl-x-node-1\n\
                   node node-2   172.30.0.2   netns tl-x-node-2\n";
        assert_eq!(Lab::node_ip(old, "node-2").unwrap(), "172.30.0.2");
        assert!(Lab::node_ip(old, "node-3").is_err());
        assert_eq!(Lab::vxlan_mode(old), None);
        let new = "lab x: datastore http://172.30.0.254:2379 (from the lab's namespaces), \
                   1 subnet(s), pools vxlanMode Never\n\
                   node node-2   172.30.0.2   fd00:30::2           netns tl-x-node-2\n";
        assert_eq!(Lab::node_ip(new, "node-2").unwrap(), "172.30.0.2");
        assert_eq!(Lab::vxlan_mode(new), Some("Never"));
    }

    #[test]
    fn renders_rounds_medians_and_ratio() {
        let text = render("pod", &[10e9, 12e9, 11e9], &[5e9, 6e9, 7e9]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "run      underlay Gbit/s  pod Gbit/s  pod/underlay"
        );
        assert_eq!(
            lines[1],
            "round 1            10.00        5.00         0.50x"
        );
        assert_eq!(
            lines[4],
            "median             11.00        6.00         0.55x"
        );
    }
}
