//! GoBGP as a test peer: `gobgpd -f conf.toml -t toml --api-hosts 127.0.0.1:PORT` in a
//! namespace, driven with the `gobgp` CLI (run in the same namespace, since the API
//! listens on the namespace's loopback). gobgpd never installs kernel routes.
//! Originated prefixes are added with `gobgp global rib add` after start; that is one
//! process per prefix, so BIRD, not GoBGP, is the bulk route sender.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::netns::Ns;
use super::{state_dir, tail, wait_until, BgpPeer, Family, LearnedRoute, PeerConfig, Proc};

/// gRPC API ports: distinct per daemon of this process, so two gobgpd can share a namespace.
static NEXT_PORT: AtomicU16 = AtomicU16::new(50051);

#[derive(Debug)]
pub struct Gobgp {
    proc: Proc,
    ns_name: String,
    dir: PathBuf,
    port: u16,
}

impl Gobgp {
    /// Writes `<dir>/gobgp-<ns>/gobgpd.toml`, starts gobgpd in `ns`, waits for its API and
    /// adds the configured prefixes to its global RIB.
    pub fn start(ns: &Ns, cfg: &PeerConfig, dir: &Path) -> Result<Gobgp, String> {
        let dir = state_dir(dir, &format!("gobgp-{}", ns.name()))?;
        let conf = dir.join("gobgpd.toml");
        let log = dir.join("gobgpd.log");
        fs::write(&conf, config(cfg)).map_err(|e| format!("writing gobgpd.toml: {e}"))?;
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let api = format!("127.0.0.1:{port}");
        let child = ns.spawn(
            &[
                "gobgpd",
                "-f",
                &conf.to_string_lossy(),
                "-t",
                "toml",
                "--api-hosts",
                &api,
                "--pprof-disable",
                "--log-plain",
            ],
            &log,
        )?;
        let mut g = Gobgp {
            proc: Proc::new("gobgpd", child, log),
            ns_name: ns.name().to_owned(),
            dir,
            port,
        };
        let mut last = String::new();
        let ready = wait_until(Duration::from_secs(10), || {
            if g.proc.check_alive().is_err() {
                return true;
            }
            match g.cli(&["global"]) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        g.proc.check_alive()?;
        if !ready {
            return Err(format!(
                "gobgpd API never answered: {last}\n{}",
                g.diagnostics()
            ));
        }
        for p in &cfg.prefixes {
            g.announce(*p)?;
        }
        Ok(g)
    }

    /// Runs `gobgp -u 127.0.0.1 -p PORT ARGS...` inside the namespace.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let port = self.port.to_string();
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns_name,
            "gobgp",
            "-u",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(args);
        super::netns::run_ok(&mut cmd)
    }

    pub fn api_port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("gobgpd.log")
    }

    /// Kills gobgpd abruptly (SIGKILL).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    fn neighbor_json(&self, neighbor: IpAddr) -> Result<Value, String> {
        let out = self.cli(&["neighbor", &neighbor.to_string(), "-j"])?;
        serde_json::from_str(&out).map_err(|e| format!("gobgp neighbor json: {e}: {out}"))
    }
}

fn afi_safi(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4-unicast",
        Family::Ipv6 => "ipv6-unicast",
    }
}

fn cli_family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

/// Renders a gobgpd TOML config from a [`PeerConfig`].
pub fn config(cfg: &PeerConfig) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179",
        cfg.asn, cfg.router_id
    );
    for n in &cfg.neighbors {
        let _ = writeln!(
            c,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
            n.address, n.remote_asn
        );
        if let Some(pw) = &n.md5_password {
            let _ = writeln!(c, "    auth-password = \"{pw}\"");
        }
        let hold = n.hold_time.max(3);
        let _ = writeln!(
            c,
            "  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = {hold}\n    \
             keepalive-interval = {}",
            (hold / 3).max(1)
        );
        if n.passive {
            c.push_str("  [neighbors.transport.config]\n    passive-mode = true\n");
        }
        if n.multihop {
            c.push_str(
                "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 255\n",
            );
        }
        if n.route_reflector_client {
            let _ = writeln!(
                c,
                "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    \
                 route-reflector-cluster-id = \"{}\"",
                cfg.router_id
            );
        }
        if n.graceful_restart {
            c.push_str("  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n");
        }
        for f in &n.families {
            let _ = writeln!(
                c,
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{}\"",
                afi_safi(*f)
            );
            if n.graceful_restart {
                c.push_str(
                    "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n",
                );
            }
        }
    }
    c
}

/// Parses `gobgp global rib -a FAMILY -j`: `{prefix: [path, ...]}`. Paths without a
/// `neighbor-ip` are locally originated and skipped.
pub fn parse_rib(json: &Value) -> Vec<LearnedRoute> {
    let mut routes = Vec::new();
    let Some(map) = json.as_object() else {
        return routes;
    };
    for (prefix, paths) in map {
        let Ok(prefix) = prefix.parse::<IpNet>() else {
            continue;
        };
        for path in paths.as_array().into_iter().flatten() {
            if path.get("neighbor-ip").and_then(Value::as_str).is_none() {
                continue;
            }
            let mut r = LearnedRoute {
                prefix,
                next_hop: prefix.addr(),
                as_path: Vec::new(),
                stale: path["stale"].as_bool().unwrap_or(false),
                local_pref: None,
            };
            for attr in path["attrs"].as_array().into_iter().flatten() {
                match attr["type"].as_u64() {
                    // AS_PATH: segments in order; AS_SET members are flattened.
                    Some(2) => {
                        for seg in attr["as_paths"].as_array().into_iter().flatten() {
                            r.as_path.extend(
                                seg["asns"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|a| a.as_u64().and_then(|a| u32::try_from(a).ok())),
                            );
                        }
                    }
                    // NEXT_HOP (IPv4) or MP_REACH_NLRI's next hop (RFC 4760).
                    Some(3 | 14) => {
                        if let Some(nh) = attr["nexthop"].as_str().and_then(|s| s.parse().ok()) {
                            r.next_hop = nh;
                        }
                    }
                    Some(5) => {
                        r.local_pref = attr["value"].as_u64().and_then(|v| u32::try_from(v).ok())
                    }
                    _ => {}
                }
            }
            routes.push(r);
        }
    }
    routes
}

impl BgpPeer for Gobgp {
    fn kind(&self) -> &'static str {
        "gobgp"
    }

    fn session_state(&self, neighbor: IpAddr) -> String {
        match self.neighbor_json(neighbor) {
            Ok(v) => {
                let st = &v["state"];
                format!(
                    "session_state={} (6 = established) admin_state={} messages={}",
                    st["session_state"], st["admin_state"], st["messages"]
                )
            }
            Err(e) => e,
        }
    }

    fn established(&self, neighbor: IpAddr) -> bool {
        self.neighbor_json(neighbor).is_ok_and(|v| {
            let s = &v["state"]["session_state"];
            // The API enum (ESTABLISHED = 6); older CLIs print the name.
            s.as_u64() == Some(6)
                || s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("established"))
        })
    }

    fn learned_routes(&self, family: Family) -> Result<Vec<LearnedRoute>, String> {
        let out = self.cli(&["global", "rib", "-a", cli_family(family), "-j"])?;
        if out.trim().is_empty() || out.trim() == "null" {
            return Ok(Vec::new());
        }
        let json: Value =
            serde_json::from_str(&out).map_err(|e| format!("gobgp rib json: {e}: {out}"))?;
        Ok(parse_rib(&json))
    }

    fn announce(&mut self, prefix: IpNet) -> Result<(), String> {
        let fam = cli_family(Family::of_net(&prefix));
        self.cli(&[
            "global",
            "rib",
            "-a",
            fam,
            "add",
            &prefix.trunc().to_string(),
        ])
        .map(drop)
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<(), String> {
        let fam = cli_family(Family::of_net(&prefix));
        self.cli(&[
            "global",
            "rib",
            "-a",
            fam,
            "del",
            &prefix.trunc().to_string(),
        ])
        .map(drop)
    }

    fn diagnostics(&self) -> String {
        let nbrs = self.cli(&["neighbor"]).unwrap_or_else(|e| e);
        format!(
            "--- gobgp ({}) neighbors:\n{nbrs}--- gobgpd log tail:\n{}",
            self.dir.display(),
            tail(&self.log_path(), 40)
        )
    }
}
