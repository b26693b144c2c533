//! Network namespaces and veth links for peering tests.
//!
//! Every namespace is named `trl-b<pid>-<seq>-<name>`: the `trl-` prefix is what
//! `scripts/cleanup.sh` removes after a crash, and the pid lets a later run remove
//! namespaces whose creating process is gone (see [`cleanup_stale`]). Nothing here
//! touches the root namespace: veths are created directly inside their namespaces.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use ipnet::IpNet;

/// Prefix of every namespace this harness creates (`trl-` is the cleanup.sh convention).
const PREFIX: &str = "trl-b";

/// Panics unless the effective uid is 0. Root tests must fail loudly, never pass silently.
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(0) {
        panic!(
            "this test creates network namespaces and runs BGP daemons: it must run as root \
             (effective uid is {euid:?}); run it with sudo or as root in CI"
        );
    }
}

/// Removes `trl-b<pid>-*` namespaces whose creating process no longer exists, killing
/// whatever still runs inside them. Namespaces of live processes are left alone.
pub fn cleanup_stale() {
    for ns in list_namespaces() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("peers: removing stale namespace {ns} (pid {pid} is gone)");
        kill_all_in(&ns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
}

fn list_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn kill_all_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

/// A network namespace owned by this test process, deleted (with everything running in
/// it) on drop.
#[derive(Debug)]
pub struct Ns {
    name: String,
    short: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);
static STALE_CLEANUP: Once = Once::new();

impl Ns {
    /// Creates `trl-b<pid>-<seq>-<short>` with `lo` up. Panics (after [`require_root`])
    /// on failure: a test cannot continue without it.
    pub fn new(short: &str) -> Ns {
        require_root();
        STALE_CLEANUP.call_once(cleanup_stale);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{seq}-{short}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let ns = Ns {
            name,
            short: short.to_owned(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])
            .unwrap_or_else(|e| panic!("{e}"));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` running `program` inside this namespace (`ip netns exec` execs the
    /// program, so a spawned child's pid is the program's own pid).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args` inside the namespace and returns its stdout; the error names the
    /// command and carries its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let (program, rest) = args.split_first().expect("exec needs a program");
        let mut cmd = self.command(program);
        cmd.args(rest);
        run_ok(&mut cmd).map_err(|e| format!("in {}: {e}", self.name))
    }

    /// Spawns `args` inside the namespace with stdin closed and stdout+stderr appended
    /// to `log`.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Result<Child, String> {
        let (program, rest) = args.split_first().expect("spawn needs a program");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        self.command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning {args:?} in {}: {e}", self.name))
    }

    /// Connects `a` and `b` with a veth pair, assigns the addresses (IPv6 with `nodad`,
    /// so they are usable at once) and brings both ends up. Interfaces are named
    /// `v-<peer short name>`, truncated to the kernel's 15 characters.
    pub fn link(a: &Ns, b: &Ns, a_addrs: &[&str], b_addrs: &[&str]) -> Result<(), String> {
        let a_if = ifname(&b.short);
        let b_if = ifname(&a.short);
        run_ok(Command::new("ip").args([
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ]))?;
        for (ns, ifn, addrs) in [(a, &a_if, a_addrs), (b, &b_if, b_addrs)] {
            for addr in addrs {
                let net: IpNet = addr
                    .parse()
                    .map_err(|e| format!("address {addr:?} is not a prefix: {e}"))?;
                let mut args = vec!["ip", "addr", "add", addr, "dev", ifn];
                if matches!(net, IpNet::V6(_)) {
                    args.push("nodad");
                }
                ns.exec(&args)?;
            }
            ns.exec(&["ip", "link", "set", ifn, "up"])?;
        }
        Ok(())
    }

    /// A `TcpExt` counter of this namespace's /proc/net/netstat (what `nstat` shows as
    /// `TcpExt<name>`), e.g. "TCPMD5Failure"; 0 when the kernel does not have it.
    pub fn tcp_ext_counter(&self, name: &str) -> Result<u64, String> {
        let text = self.exec(&["cat", "/proc/net/netstat"])?;
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            let (Some(n), Some(v)) = (
                names.strip_prefix("TcpExt:"),
                values.strip_prefix("TcpExt:"),
            ) else {
                continue;
            };
            return Ok(n
                .split_whitespace()
                .zip(v.split_whitespace())
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0));
        }
        Err(format!(
            "no TcpExt section in /proc/net/netstat of {}",
            self.name
        ))
    }

    /// The kernel routes of one family in this namespace installed by `proto` (e.g.
    /// "bird", "bgp"), as (destination, gateway) pairs.
    pub fn kernel_routes(&self, v6: bool, proto: &str) -> Vec<(IpNet, Option<IpAddr>)> {
        let fam = if v6 { "-6" } else { "-4" };
        let Ok(out) = self.exec(&["ip", "-j", fam, "route", "show", "proto", proto]) else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let mut routes = Vec::new();
        for r in json.as_array().into_iter().flatten() {
            let Some(dst) = r["dst"].as_str() else {
                continue;
            };
            let dst = if dst.contains('/') {
                dst.to_owned()
            } else if v6 {
                format!("{dst}/128")
            } else {
                format!("{dst}/32")
            };
            if let Ok(net) = dst.parse() {
                let gw = r["gateway"].as_str().and_then(|g| g.parse().ok());
                routes.push((net, gw));
            }
        }
        routes
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ifname(peer_short: &str) -> String {
    let mut n = format!("v-{peer_short}");
    n.truncate(15);
    n
}

/// Runs a command to completion; Ok(stdout) on exit 0, otherwise an error naming the
/// command with its status and stderr.
pub fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}
