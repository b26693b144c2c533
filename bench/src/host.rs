//! What the benchmarks need of the machine they run on.

/// Fails unless the process runs as root (effective uid 0, from `/proc/self/status`), naming
/// what needs it (`what`) and how to run it instead (`how`).
pub fn require_root(what: &str, how: &str) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    anyhow::ensure!(
        euid == "0",
        "this benchmark {what} and must run as root (euid is {euid}): {how}"
    );
    Ok(())
}

/// The 1, 5 and 15 minute load averages, for the record of a run ("unknown" if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
