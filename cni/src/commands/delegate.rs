//! Delegated IPAM: running another IPAM plugin (e.g. Debian's host-local) from CNI_PATH with the
//! same configuration, as the reference plugins do.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use crate::spec::{CniError, CniResult, ErrorCode, Invocation};

fn find(inv: &Invocation, plugin: &str) -> Result<PathBuf, CniError> {
    if plugin.contains('/') {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("ipam.type {plugin:?} must be a plugin name, not a path"),
        ));
    }
    inv.env
        .path
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = inv
                .env
                .path
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "IPAM plugin {plugin:?} not found in CNI_PATH ({})",
                    dirs.join(":")
                ),
            )
        })
}

/// Runs `plugin` for `command` with our environment and `stdin`; returns its stdout, or its CNI
/// error passed through.
pub fn exec(
    inv: &Invocation,
    plugin: &str,
    command: &str,
    stdin: &str,
) -> Result<String, CniError> {
    let path = find(inv, plugin)?;
    let mut child = Process::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("running {}: {e}", path.display()),
            )
        })?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("writing to {}: {e}", path.display()),
            )
        })?;
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            ErrorCode::IoFailure,
            format!("waiting for {}: {e}", path.display()),
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    Err(CniError::from_json(&stdout).unwrap_or_else(|| {
        CniError::new(
            ErrorCode::IoFailure,
            format!(
                "{} {command} failed ({}): {}{}",
                path.display(),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
    }))
}

/// ADD through the delegate: its result.
pub fn add(inv: &Invocation, plugin: &str, stdin: &str) -> Result<CniResult, CniError> {
    let out = exec(inv, plugin, "ADD", stdin)?;
    CniResult::parse(&out).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            format!("result of IPAM plugin {plugin}: {e}"),
        )
    })
}
