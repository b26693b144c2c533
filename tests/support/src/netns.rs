//! Namespace plumbing for root tests: running iproute2, commands inside a test's own
//! namespace, the root check, the kernel feature probe, a guard that deletes the namespaces a
//! test made, removing those a crashed run left, reading rules, routes and link counters back
//! as JSON, and a TCP listener that reports the peer address it saw. Nothing here touches the
//! root namespace's network configuration.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs `ip ARGS` (split at whitespace), panicking with its stderr on failure; returns stdout.
pub fn ip(args: &str) -> String {
    let argv: Vec<&str> = args.split_whitespace().collect();
    let out = run("ip", &argv);
    assert!(
        out.status.success(),
        "ip {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside namespace `ns`; returns (success, stdout + stderr).
pub fn in_ns(ns: &str, args: &[&str]) -> (bool, String) {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    let out = run("ip", &full);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`in_ns`] that must succeed; returns its output.
pub fn must_in_ns(ns: &str, args: &[&str]) -> String {
    let (ok, text) = in_ns(ns, args);
    assert!(ok, "{args:?} in {ns} failed: {text}");
    text
}

/// Whether this process runs with effective UID 0.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        == Some("0")
}

/// Fails the test with a clear message unless it runs as root.
pub fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root (it creates network namespaces, veths, rules and nft tables in them); \
         run it with sudo or as root"
    );
}

/// Removes namespaces named `PREFIX<pid>-…` whose process is gone (a crashed or killed test).
pub fn cleanup_stale(prefix: &str) {
    for line in ip("netns list").lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty()
            && pid.chars().all(|c| c.is_ascii_digit())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// Namespaces a test created; deleted when dropped, also when the test panics.
#[derive(Debug, Default)]
pub struct NetnsGuard {
    names: Vec<String>,
}

impl NetnsGuard {
    /// Creates namespace `name` (with `lo` up) and remembers it.
    pub fn add(&mut self, name: &str) -> String {
        ip(&format!("netns add {name}"));
        self.names.push(name.to_string());
        ip(&format!("-n {name} link set lo up"));
        name.to_string()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a namespace back, and TCP probes (python3 inside the namespace).

pub fn sysctl(ns: &str, kv: &str) {
    must_in_ns(ns, &["sysctl", "-qw", kv]);
}

pub fn link_json(ns: &str, name: &str) -> Value {
    let text = ip(&format!("-n {ns} -j -s link show {name}"));
    serde_json::from_str::<Value>(&text).unwrap()[0].clone()
}

pub fn tx_packets(ns: &str, name: &str) -> u64 {
    link_json(ns, name)["stats64"]["tx"]["packets"]
        .as_u64()
        .unwrap()
}

/// `ip rule` of `ns` without the kernel's three defaults, one normalised line each.
pub fn rules(ns: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&ip(&format!("-n {ns} -j rule"))).unwrap();
    let mut out = Vec::new();
    for r in v.as_array().unwrap() {
        let prio = r["priority"].as_u64().unwrap();
        if [0, 32766, 32767].contains(&prio) {
            continue;
        }
        let mut line = format!("{prio} from {}", r["src"].as_str().unwrap());
        for key in ["srclen", "dst", "dstlen", "fwmark", "fwmask", "table"] {
            if let Some(val) = r.get(key) {
                line.push_str(&format!(
                    " {key} {}",
                    val.as_str().map_or(val.to_string(), str::to_string)
                ));
            }
        }
        out.push(line);
    }
    out
}

/// Routes of a table as `DST [via GW] dev DEV [scope S]` lines.
pub fn routes(ns: &str, table: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&ip(&format!("-n {ns} -j route show table {table}"))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut line = r["dst"].as_str().unwrap().to_string();
            if let Some(gw) = r.get("gateway") {
                line.push_str(&format!(" via {}", gw.as_str().unwrap()));
            }
            line.push_str(&format!(" dev {}", r["dev"].as_str().unwrap()));
            if let Some(s) = r.get("scope") {
                line.push_str(&format!(" scope {}", s.as_str().unwrap()));
            }
            line
        })
        .collect()
}

pub const LISTEN_PY: &str = "import socket,sys\n\
s=socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',int(sys.argv[1])))\n\
s.listen(4)\n\
print('LISTENING',flush=True)\n\
s.settimeout(8)\n\
c,a=s.accept()\n\
print('PEER',a[0],flush=True)\n";

pub const CONNECT_PY: &str =
    "import socket,sys\nsocket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3).close()\n";

/// A one-connection TCP listener in a namespace that reports the peer address it saw.
#[derive(Debug)]
pub struct Listener {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Listener {
    pub fn start(ns: &str, port: u16) -> Self {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "python3",
                "-c",
                LISTEN_PY,
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (needed for the TCP listener)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(
            first.as_deref(),
            Some("LISTENING"),
            "listener in {ns}:{port} did not start"
        );
        Self { child, lines }
    }

    /// The source address of the accepted connection, or `None` if none came.
    pub fn peer(mut self) -> Option<String> {
        let line = self.lines.next().and_then(Result::ok)?;
        line.strip_prefix("PEER ").map(str::to_string)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(ns: &str, addr: &str, port: u16) -> Result<(), String> {
    let (ok, text) = in_ns(ns, &["python3", "-c", CONNECT_PY, addr, &port.to_string()]);
    if ok {
        Ok(())
    } else {
        Err(text)
    }
}

/// Connects from `from` to a fresh listener in `to_ns` at `addr`; returns the peer it saw.
pub fn source_seen(from: &str, to_ns: &str, addr: &str, port: u16) -> String {
    let l = Listener::start(to_ns, port);
    if let Err(e) = connect(from, addr, port) {
        panic!("TCP connect from {from} to {addr}:{port} failed: {e}");
    }
    l.peer()
        .unwrap_or_else(|| panic!("the listener in {to_ns} saw no connection"))
}

/// Whether the kernel can make IPIP links, tried in a throwaway namespace (`trl-probe-PID-N`, so
/// nothing in the root namespace changes): `Err` carries iproute2's answer, e.g.
/// "Error: Unknown device type." on a kernel without the ipip module.
pub fn ipip_support() -> Result<(), String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = format!("trl-probe-{}-{n}", std::process::id());
    ip(&format!("netns add {ns}"));
    let out = run(
        "ip",
        &["-n", &ns, "link", "add", "trl-probe", "type", "ipip"],
    );
    let _ = run("ip", &["netns", "del", &ns]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Fails the test, naming the missing kernel feature, unless the kernel has IPIP. Tests that
/// call it carry `needs_ipip_kernel` in their name, so scripts/test.sh can skip them by name
/// (and say so) on a kernel without the module; they never pass without having run.
pub fn require_ipip_kernel() {
    if let Err(answer) = ipip_support() {
        panic!(
            "this kernel has no ipip support (ip link add type ipip: {answer}); this test needs \
             the ipip module. scripts/test.sh skips tests named *needs_ipip_kernel* on such a \
             kernel and lists them as skipped"
        );
    }
}
