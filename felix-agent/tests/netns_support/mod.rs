//! Shared by the agent's root tests (`nat_netns`, `vxlan_netns`, `ipip_netns`): running
//! iproute2, commands inside a test's own namespace, the root check, the kernel feature probe,
//! and removing namespaces a crashed run left.
//! Nothing here touches the root namespace's network configuration.
#![allow(dead_code)]

use std::process::{Command, Output};

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

/// Removes namespaces named `PREFIX<pid>-…` whose process is gone (a crashed or killed test).
/// Only names whose part after the prefix starts with a numeric pid are considered.
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
