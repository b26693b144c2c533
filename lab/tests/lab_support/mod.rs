//! Shared by the lab's root tests (`lab_e2e`, `containerd_netns`, `lab_modes`, `lab_bgp`):
//! running `trellis-lab`, the teardown guard, the root and built-binaries check, pods and pings.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trellis-lab"))
}

/// Where the workspace's binaries were built (next to trellis-lab).
pub fn bin_dir() -> PathBuf {
    lab_bin().parent().unwrap().to_path_buf()
}

/// Fails unless running as root with trellis, trellis-agent and trellisctl built; `why` says
/// what needs root.
pub fn require_root_and_binaries(why: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|s| s.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    assert_eq!(euid, "0", "{why}: run as root (CI does)");
    for b in ["trellis", "trellis-agent", "trellisctl"] {
        assert!(
            bin_dir().join(b).is_file(),
            "{b} not built next to trellis-lab: run `cargo build --workspace` (scripts/test.sh does)"
        );
    }
}

/// Runs `trellis-lab ARGS`; returns (success, stdout + stderr).
pub fn lab(args: &[&str]) -> (bool, String) {
    let out = Command::new(lab_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// [`lab`] that must succeed; returns its output.
pub fn ok(args: &[&str]) -> String {
    let (ok, out) = lab(args);
    assert!(ok, "trellis-lab {args:?}: {out}");
    out
}

/// Tears the lab down even when an assertion fails.
#[derive(Debug)]
pub struct Lab(pub String);

impl Drop for Lab {
    fn drop(&mut self) {
        let (ok, out) = lab(&["down", &self.0]);
        if !ok {
            eprintln!("trellis-lab down {}: {out}", self.0);
        }
    }
}

/// A pod as the tests know it: (NS/POD, IPv4, IPv6).
pub type Pod = (String, String, String);

/// `pod add` and the pod's (IPv4, IPv6) addresses.
pub fn add_pod(name: &str, node: &str, pod: &str) -> (String, String) {
    let out = ok(&["pod", "add", name, node, pod]);
    let find = |prefix: &str| {
        out.split_whitespace()
            .find(|w| w.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* address in {out}"))
            .to_string()
    };
    (find("10.244."), find("fd00:244:"))
}

/// Adds a pod `default/PREFIXn` on every node n (1..=nodes) for each prefix.
pub fn add_pods(name: &str, nodes: usize, prefixes: &[&str]) -> Vec<Pod> {
    let mut pods = Vec::new();
    for n in 1..=nodes {
        for prefix in prefixes {
            let p = format!("default/{prefix}{n}");
            let (v4, v6) = add_pod(name, &format!("node-{n}"), &p);
            pods.push((p, v4, v6));
        }
    }
    pods
}

pub fn node_exec(name: &str, node: &str, cmd: &[&str]) -> String {
    let mut args = vec!["node", "exec", name, node, "--"];
    args.extend(cmd);
    ok(&args)
}

/// Every pod pings every other pod's addresses once; all must answer (`when` names the step).
pub fn assert_all_pairs_reach(name: &str, pods: &[Pod], when: &str) {
    let mut failures = Vec::new();
    for (from, _, _) in pods {
        for (to, v4, v6) in pods {
            if from == to {
                continue;
            }
            for ip in [v4, v6] {
                let (reached, _) =
                    lab(&["pod", "exec", name, from, "--", "ping", "-c1", "-W2", ip]);
                if !reached {
                    failures.push(format!("{from} -> {to} ({ip})"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "unreachable {when}: {failures:#?}");
}

/// `ip FAMILY route get DST` in `node`: the route the kernel would use.
pub fn route_to(name: &str, node: &str, family: &str, dst: &str) -> String {
    node_exec(name, node, &["ip", family, "route", "get", dst])
}

/// Sets `vxlanMode` of both default pools (a dual-stack lab's) to `mode`.
pub fn set_mode(name: &str, mode: &str) {
    let yaml = format!(
        "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {{name: default-ipv4}}\nspec: {{cidr: 10.244.0.0/16, vxlanMode: {mode}, natOutgoing: true}}\n---\napiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {{name: default-ipv6}}\nspec: {{cidr: 'fd00:244::/64', vxlanMode: {mode}}}\n"
    );
    let path = std::env::temp_dir().join(format!("trellis-pools-{}-{mode}.yaml", name));
    std::fs::write(&path, yaml).unwrap();
    ok(&["ctl", name, "--", "apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

/// `ping -i 0.05 -c COUNT` from `pod` to `dst`, started in the background.
pub fn pinger(name: &str, pod: &str, dst: &str, count: u32) -> Child {
    Command::new(lab_bin())
        .args([
            "pod", "exec", name, pod, "--", "ping", "-i", "0.05", "-W", "1",
        ])
        .args(["-c", &count.to_string(), dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lab's saved state (`/run/trellis-lab/NAME/state.json`).
pub fn lab_state(name: &str) -> serde_json::Value {
    let path = format!("/run/trellis-lab/{name}/state.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A field of node `node` in the lab's state (`agent_pid`, `socket`, `netns`, `ip`...).
pub fn node_field(name: &str, node: &str, field: &str) -> serde_json::Value {
    let state = lab_state(name);
    state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap_or_else(|| panic!("no {node} in lab {name}"))[field]
        .clone()
}

/// `GET /v1/status` of a node's agent; `None` while it does not answer.
pub fn agent_status(name: &str, node: &str) -> Option<trellis_agent_api::StatusResponse> {
    let socket = node_field(name, node, "socket");
    trellis_agent_api::AgentClient::new(socket.as_str().unwrap())
        .with_timeout(Duration::from_secs(2))
        .blocking()
        .ok()?
        .status()
        .ok()
}

/// The network namespace of pod NS/POD.
fn pod_netns(name: &str, pod: &str) -> String {
    let state = lab_state(name);
    let (ns, pod_name) = pod.split_once('/').unwrap();
    state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == ns && p["name"] == pod_name)
        .unwrap_or_else(|| panic!("no pod {pod} in lab {name}"))["netns"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A ping at a short interval that runs until stopped, to measure how long a change breaks
/// connectivity: run in the pod's namespace directly, so SIGINT reaches ping itself.
pub struct FastPing {
    child: Child,
    pub interval: Duration,
}

/// What a [`FastPing`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u64,
    pub received: u64,
    /// The longest run of consecutive requests without a reply (the one still in flight when
    /// the ping was stopped is not counted).
    pub max_lost_in_a_row: u64,
}

impl PingStats {
    /// Requests without a reply, less the one in flight at the end.
    pub fn lost(&self) -> u64 {
        self.transmitted
            .saturating_sub(self.received)
            .saturating_sub(1)
    }

    /// How long connectivity was broken at worst: lost-in-a-row times the interval.
    pub fn gap(&self, interval: Duration) -> Duration {
        interval * u32::try_from(self.max_lost_in_a_row).unwrap_or(u32::MAX)
    }

    /// Parses `ping -n` output: reply lines (`bytes from ... icmp_seq=N`) and the summary.
    pub fn parse(out: &str) -> PingStats {
        let mut seqs: Vec<u64> = out
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let transmitted: u64 = out
            .lines()
            .find(|l| l.contains(" packets transmitted"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let mut max_lost = 0;
        let mut prev = 0;
        for &s in &seqs {
            max_lost = max_lost.max(s.saturating_sub(prev + 1));
            prev = s;
        }
        let trailing = transmitted.saturating_sub(prev).saturating_sub(1);
        PingStats {
            transmitted,
            received: seqs.len() as u64,
            max_lost_in_a_row: max_lost.max(trailing),
        }
    }
}

impl FastPing {
    pub fn start(name: &str, pod: &str, dst: &str, interval: Duration) -> FastPing {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod_netns(name, pod),
                "ping",
                "-n",
                "-W",
                "1",
            ])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64()), dst])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        FastPing { child, interval }
    }

    /// Stops the ping (SIGINT, so it prints its summary) and returns what it saw.
    pub fn stop(self) -> PingStats {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let out = self.child.wait_with_output().unwrap();
        PingStats::parse(&String::from_utf8_lossy(&out.stdout))
    }
}
