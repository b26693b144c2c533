//! Network namespaces of a benchmark run: created with a per-run prefix (`PREFIX<PID>-ROLE`),
//! deleted when the run ends, and those of a killed run cleaned up at the next start.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `program ARGS`; its standard output, or an error with what it printed.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Network namespaces this run created, deleted on drop (in reverse order).
#[derive(Debug)]
pub struct Namespaces {
    prefix: &'static str,
    names: Vec<String>,
}

impl Namespaces {
    /// Namespaces named `PREFIX<PID>-ROLE`.
    pub fn new(prefix: &'static str) -> Self {
        Namespaces {
            prefix,
            names: Vec::new(),
        }
    }

    /// Creates `PREFIX<PID>-ROLE` with its loopback up.
    pub fn add(&mut self, role: &str) -> Result<String> {
        let name = format!("{}{}-{role}", self.prefix, std::process::id());
        ip(&["netns", "add", &name])?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", name]) {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Deletes `PREFIX<PID>-*` namespaces whose run is gone, first killing what still runs in them
/// (daemons of a run that was itself killed).
pub fn cleanup_stale(prefix: &str) {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || !rest[pid.len()..].starts_with('-') {
            continue;
        }
        if Path::new("/proc").join(&pid).exists() {
            continue;
        }
        for p in ip(&["netns", "pids", &name])
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = run("kill", &["-KILL", p]);
        }
        if ip(&["netns", "delete", &name]).is_ok() {
            eprintln!("deleted namespace {name} left by a killed run");
        }
    }
}
