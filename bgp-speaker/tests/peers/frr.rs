//! FRR 8.4 as a test peer: `zebra` then `bgpd` in a namespace, both in the foreground,
//! without systemd or watchfrr, with their own zserv socket, vty socket directory and
//! pid files under the test's temporary directory. Queried with
//! `vtysh --vty_socket DIR -c '... json'`.
//!
//! The daemons drop privileges to user/group `frr` (the Debian package creates them;
//! `-u root` is refused because root is not in `frrvty`), so their state directory is
//! made world-writable.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::netns::{run_ok, Ns};
use super::{state_dir, tail, wait_until, BgpPeer, Family, LearnedRoute, PeerConfig, Proc};

const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";

#[derive(Debug)]
pub struct Frr {
    // Field order is drop order: bgpd goes before zebra.
    bgpd: Proc,
    zebra: Proc,
    dir: PathBuf,
    vty: PathBuf,
    asn: u32,
}

impl Frr {
    /// Writes the configs under `<dir>/frr-<ns>`, starts zebra, waits for its zserv
    /// socket, starts bgpd and waits for bgpd's vty to answer.
    pub fn start(ns: &Ns, cfg: &PeerConfig, dir: &Path) -> Result<Frr, String> {
        let dir = state_dir(dir, &format!("frr-{}", ns.name()))?;
        let vty = state_dir(&dir, "vty")?;
        let zserv = dir.join("zserv.api");
        fs::write(dir.join("zebra.conf"), "").map_err(|e| format!("writing zebra.conf: {e}"))?;
        fs::write(dir.join("bgpd.conf"), config(cfg))
            .map_err(|e| format!("writing bgpd.conf: {e}"))?;
        let common = |daemon: &str| -> Vec<String> {
            [
                "-u",
                "frr",
                "-g",
                "frr",
                // No TCP vty: the unix socket under `vty` is enough.
                "-P",
                "0",
                "--log",
                "stdout",
                "-z",
                &zserv.to_string_lossy(),
                "--vty_socket",
                &vty.to_string_lossy(),
                "-i",
                &dir.join(format!("{daemon}.pid")).to_string_lossy(),
                "-f",
                &dir.join(format!("{daemon}.conf")).to_string_lossy(),
            ]
            .iter()
            .map(ToString::to_string)
            .collect()
        };
        let zebra_log = dir.join("zebra.log");
        let mut args = vec![ZEBRA.to_owned()];
        args.extend(common("zebra"));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut zebra = Proc::new("zebra", ns.spawn(&argv, &zebra_log)?, zebra_log);
        wait_until(Duration::from_secs(10), || {
            zserv.exists() || zebra.check_alive().is_err()
        });
        zebra.check_alive()?;
        if !zserv.exists() {
            return Err(format!("zebra never created {}", zserv.display()));
        }

        let bgpd_log = dir.join("bgpd.log");
        let mut args = vec![BGPD.to_owned()];
        args.extend(common("bgpd"));
        if !cfg.install_kernel_routes {
            args.push("-n".to_owned());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let bgpd = Proc::new("bgpd", ns.spawn(&argv, &bgpd_log)?, bgpd_log);
        let mut frr = Frr {
            bgpd,
            zebra,
            dir,
            vty,
            asn: cfg.asn,
        };
        let mut last = String::new();
        let ready = wait_until(Duration::from_secs(10), || {
            if frr.bgpd.check_alive().is_err() {
                return true;
            }
            match frr.vtysh(&["show bgp summary json"]) {
                Ok(out) if out.contains("\"as\"") || out.contains("routerId") => true,
                Ok(out) => {
                    last = out;
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        frr.bgpd.check_alive()?;
        if !ready {
            return Err(format!(
                "bgpd vty never answered: {last}\n{}",
                frr.diagnostics()
            ));
        }
        Ok(frr)
    }

    /// Runs vtysh with one `-c` per command (so `configure terminal` sequences work).
    pub fn vtysh(&self, commands: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("vtysh");
        cmd.arg("--vty_socket").arg(&self.vty);
        for c in commands {
            cmd.args(["-c", c]);
        }
        let out = run_ok(&mut cmd)?;
        // vtysh exits 0 on some command errors; catch the usual markers.
        if out.contains("% Unknown command") || out.contains("% Invalid") {
            return Err(format!("vtysh {commands:?}: {out}"));
        }
        Ok(out)
    }

    fn vtysh_json(&self, command: &str) -> Result<Value, String> {
        let out = self.vtysh(&[command])?;
        serde_json::from_str(&out).map_err(|e| format!("vtysh {command:?}: {e}: {out}"))
    }

    /// The standard and large communities of FRR's best path for `prefix`, as FRR prints them
    /// ("64512:100", "64512:1:2"; empty when none).
    pub fn communities(&self, prefix: IpNet) -> Result<(String, String), String> {
        let af = match Family::of_net(&prefix) {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        };
        let v = self.vtysh_json(&format!("show bgp {af} unicast {prefix} json"))?;
        let path = v["paths"]
            .as_array()
            .and_then(|p| p.first())
            .ok_or_else(|| format!("frr has no path for {prefix}: {v}"))?;
        let text = |key: &str| path[key]["string"].as_str().unwrap_or("").to_string();
        Ok((text("community"), text("largeCommunity")))
    }

    fn network(&self, prefix: IpNet, add: bool) -> Result<(), String> {
        let prefix = prefix.trunc();
        let af = match Family::of_net(&prefix) {
            Family::Ipv4 => "address-family ipv4 unicast",
            Family::Ipv6 => "address-family ipv6 unicast",
        };
        let router = format!("router bgp {}", self.asn);
        let net = format!("{}network {prefix}", if add { "" } else { "no " });
        self.vtysh(&["configure terminal", &router, af, &net])
            .map(drop)
    }

    /// Kills bgpd abruptly (SIGKILL); zebra stays. Neighbors with graceful restart keep
    /// its routes as stale.
    pub fn kill_bgpd(&mut self) {
        self.bgpd.kill();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn af_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

/// Renders bgpd.conf from a [`PeerConfig`].
pub fn config(cfg: &PeerConfig) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "router bgp {}", cfg.asn);
    let _ = writeln!(c, " bgp router-id {}", cfg.router_id);
    // FRR 8 refuses eBGP routes without a policy (RFC 8212) and `network` statements for
    // prefixes absent from its RIB; tests want neither.
    c.push_str(" no bgp ebgp-requires-policy\n no bgp network import-check\n");
    // Activate families per neighbor explicitly (a v6 session must not carry IPv4).
    c.push_str(" no bgp default ipv4-unicast\n");
    for n in &cfg.neighbors {
        let a = n.address;
        let hold = n.hold_time.max(3);
        let _ = writeln!(c, " neighbor {a} remote-as {}", n.remote_asn);
        let _ = writeln!(c, " neighbor {a} timers {} {hold}", (hold / 3).max(1));
        let _ = writeln!(c, " neighbor {a} timers connect 1");
        let _ = writeln!(c, " neighbor {a} advertisement-interval 0");
        if let Some(pw) = &n.md5_password {
            let _ = writeln!(c, " neighbor {a} password {pw}");
        }
        if n.passive {
            let _ = writeln!(c, " neighbor {a} passive");
        }
        if n.multihop && n.remote_asn != cfg.asn {
            let ttl = n.multihop_ttl.unwrap_or(255);
            let _ = writeln!(c, " neighbor {a} ebgp-multihop {ttl}");
        }
        if n.ttl_security {
            let _ = writeln!(c, " neighbor {a} ttl-security hops 1");
        }
        if n.graceful_restart {
            let _ = writeln!(c, " neighbor {a} graceful-restart");
        }
    }
    for f in [Family::Ipv4, Family::Ipv6] {
        let _ = writeln!(c, " address-family {} unicast", af_name(f));
        for p in cfg.prefixes.iter().filter(|p| Family::of_net(p) == f) {
            let _ = writeln!(c, "  network {p}");
        }
        for n in cfg.neighbors.iter().filter(|n| n.families.contains(&f)) {
            let a = n.address;
            let _ = writeln!(c, "  neighbor {a} activate");
            if n.remote_asn == cfg.asn {
                if n.route_reflector_client {
                    let _ = writeln!(c, "  neighbor {a} route-reflector-client");
                }
                // Like BIRD's `next hop self ebgp`: reflected iBGP routes keep theirs.
                let _ = writeln!(c, "  neighbor {a} next-hop-self");
            }
        }
        c.push_str(" exit-address-family\n");
    }
    c
}

/// Parses `show bgp ipv4|ipv6 unicast json`, skipping locally originated paths
/// (`peerId` "(unspec)").
pub fn parse_routes(json: &Value) -> Vec<LearnedRoute> {
    let mut routes = Vec::new();
    let Some(map) = json["routes"].as_object() else {
        return routes;
    };
    for (prefix, paths) in map {
        let Ok(prefix) = prefix.parse::<IpNet>() else {
            continue;
        };
        for path in paths.as_array().into_iter().flatten() {
            match path["peerId"].as_str() {
                None | Some("(unspec)") => continue,
                Some(_) => {}
            }
            // The global next hop comes first; a link-local one may follow for IPv6.
            let next_hop = path["nexthops"]
                .as_array()
                .and_then(|nhs| nhs.first())
                .and_then(|nh| nh["ip"].as_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(prefix.addr());
            routes.push(LearnedRoute {
                prefix,
                next_hop,
                as_path: path["path"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|a| a.trim_matches(['{', '}', '(', ')', ',']).parse().ok())
                    .collect(),
                stale: path["stale"].as_bool().unwrap_or(false),
                local_pref: path["locPrf"].as_u64().and_then(|v| u32::try_from(v).ok()),
            });
        }
    }
    routes
}

impl BgpPeer for Frr {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn session_state(&self, neighbor: IpAddr) -> String {
        match self.vtysh_json(&format!("show bgp neighbors {neighbor} json")) {
            Ok(v) => {
                let n = &v[neighbor.to_string()];
                format!(
                    "bgpState={} lastResetDueTo={} lastErrorCodeSubcode={} connectionsEstablished={}",
                    n["bgpState"], n["lastResetDueTo"], n["lastErrorCodeSubcode"], n["connectionsEstablished"]
                )
            }
            Err(e) => e,
        }
    }

    fn established(&self, neighbor: IpAddr) -> bool {
        self.vtysh_json("show bgp neighbors json")
            .is_ok_and(|v| v[neighbor.to_string()]["bgpState"].as_str() == Some("Established"))
    }

    fn learned_routes(&self, family: Family) -> Result<Vec<LearnedRoute>, String> {
        let v = self.vtysh_json(&format!("show bgp {} unicast json", af_name(family)))?;
        Ok(parse_routes(&v))
    }

    fn learned_count(&self, family: Family) -> Result<usize, String> {
        let v = self.vtysh_json(&format!(
            "show bgp {} unicast summary json",
            af_name(family)
        ))?;
        let peers = v["peers"]
            .as_object()
            .map(|p| p.values().collect::<Vec<_>>());
        Ok(peers
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["pfxRcd"].as_u64())
            .sum::<u64>() as usize)
    }

    fn announce(&mut self, prefix: IpNet) -> Result<(), String> {
        self.network(prefix, true)
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<(), String> {
        self.network(prefix, false)
    }

    fn diagnostics(&self) -> String {
        let summary = self.vtysh(&["show bgp summary"]).unwrap_or_else(|e| e);
        format!(
            "--- frr ({}) summary:\n{summary}--- bgpd log tail:\n{}--- zebra log tail:\n{}",
            self.dir.display(),
            tail(&self.dir.join("bgpd.log"), 40),
            tail(&self.dir.join("zebra.log"), 15)
        )
    }
}
