//! Shared by the lab's root tests (`lab_e2e`, `containerd_netns`): running `trellis-lab`, the
//! teardown guard, and the root and built-binaries check.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

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
pub struct Lab(pub String);

impl Drop for Lab {
    fn drop(&mut self) {
        let (ok, out) = lab(&["down", &self.0]);
        if !ok {
            eprintln!("trellis-lab down {}: {out}", self.0);
        }
    }
}
