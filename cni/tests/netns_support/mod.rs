//! Network namespaces for root tests: created with iproute2 under a per-run prefix
//! (`trl-t<PID>-`), deleted by a guard on drop (also when a test panics), and removable after a
//! crash by [`cleanup_stale`], which deletes `trl-t<PID>-*` namespaces whose process is dead.
//!
//! Nothing here touches the root network namespace: every command runs with `ip -n NAME` or
//! `ip netns exec NAME`.

#![allow(dead_code)]

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// Prefix of every namespace a test run creates.
pub const PREFIX: &str = "trl-t";
const NETNS_DIR: &str = "/run/netns";

/// Fails the test (never skips it) unless it runs as root with iproute2 and ping installed.
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert_eq!(
        euid, "0",
        "this test creates network namespaces and needs root (CI runs as root); run \
         `sudo -E cargo test -p trellis-cni --test wiring_netns`"
    );
    for (tool, package) in [("ip", "iproute2"), ("ping", "iputils-ping")] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` not found: install the Debian package {package}"
        );
    }
    static CLEANUP: Once = Once::new();
    CLEANUP.call_once(|| {
        for name in cleanup_stale() {
            eprintln!("deleted namespace {name} left by a crashed run");
        }
    });
}

/// A network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    /// Creates `trl-t<PID>-<N>-<role>`.
    pub fn new(role: &str) -> TestNetns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let netns = TestNetns { name };
        // Bring up loopback so the namespace behaves like a container's.
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n NAME ARGS`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -n NAME ARGS`; whether it succeeded.
    pub fn ip_ok(&self, args: &[&str]) -> bool {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        output("ip", &all).status.success()
    }

    /// Runs a shell command inside the namespace.
    pub fn sh(&self, script: &str) -> Output {
        output("ip", &["netns", "exec", &self.name, "sh", "-c", script])
    }

    /// Whether an interface called `name` exists here.
    pub fn has_link(&self, name: &str) -> bool {
        self.ip_ok(&["link", "show", "dev", name])
    }

    /// Turns on IPv4 and IPv6 forwarding, as on a node.
    pub fn enable_forwarding(&self) {
        let out = self.sh("echo 1 > /proc/sys/net/ipv4/ip_forward && \
             echo 1 > /proc/sys/net/ipv6/conf/all/forwarding");
        assert!(
            out.status.success(),
            "enable forwarding in {}: {out:?}",
            self.name
        );
    }

    /// One ping (IPv4 or IPv6) from inside this namespace; true if answered within a second.
    pub fn ping(&self, to: IpAddr) -> bool {
        let family = if to.is_ipv6() { "-6" } else { "-4" };
        let to = to.to_string();
        output(
            "ip",
            &[
                "netns", "exec", &self.name, "ping", family, "-c1", "-W1", &to,
            ],
        )
        .status
        .success()
    }

    /// Deletes the namespace now (the guard then has nothing left to do).
    pub fn delete(&self) {
        run("ip", &["netns", "del", &self.name]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if self.path().exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}

/// Deletes the namespaces `trl-t<PID>-*` whose process `PID` is gone; returns their names.
/// Namespaces of live processes (this run, runs in parallel) and other names are left alone.
pub fn cleanup_stale() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let status = Command::new("ip").args(["netns", "del", &name]).status();
        if status.is_ok_and(|s| s.success()) {
            deleted.push(name);
        }
    }
    deleted
}

/// The PID in `trl-t<PID>-...`, if the name has that shape.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
