//! BIRD 2 as a test peer: `bird -f -s SOCK -c CONF -P PIDFILE` in a namespace, queried
//! with `birdc -s SOCK` (text output, parsed here). BIRD is also the bulk route sender:
//! originated prefixes are static blackhole routes, so 100k routes cost one config file.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;

use super::netns::{run_ok, Ns};
use super::{
    parse_net, state_dir, tail, wait_until, BgpPeer, Family, LearnedRoute, PeerConfig, Proc,
};

#[derive(Debug)]
pub struct Bird {
    proc: Proc,
    dir: PathBuf,
    sock: PathBuf,
    cfg: PeerConfig,
}

impl Bird {
    /// Writes the config under `<dir>/bird`, starts BIRD inside `ns` and waits for its
    /// control socket. Sessions are not awaited: use [`BgpPeer::wait_established`].
    pub fn start(ns: &Ns, cfg: &PeerConfig, dir: &Path) -> Result<Bird, String> {
        // BIRD's kernel protocol must only ever run inside a test namespace.
        assert!(
            ns.name().starts_with("trl-"),
            "BIRD outside a test namespace"
        );
        let dir = state_dir(dir, &format!("bird-{}", ns.name()))?;
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        fs::write(&conf, config(cfg, &log)).map_err(|e| format!("writing bird.conf: {e}"))?;
        let child = ns.spawn(
            &[
                "bird",
                "-f",
                "-s",
                &sock.to_string_lossy(),
                "-c",
                &conf.to_string_lossy(),
                "-P",
                &dir.join("bird.pid").to_string_lossy(),
            ],
            &log,
        )?;
        let mut bird = Bird {
            proc: Proc::new("bird", child, log),
            dir,
            sock,
            cfg: cfg.clone(),
        };
        let mut last = String::new();
        let ready = wait_until(Duration::from_secs(10), || {
            if bird.proc.check_alive().is_err() {
                return true;
            }
            match bird.birdc(&["show", "status"]) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        bird.proc.check_alive()?;
        if !ready {
            return Err(format!(
                "bird control socket never answered: {last}\n{}",
                bird.diagnostics()
            ));
        }
        Ok(bird)
    }

    /// Runs one birdc command; Ok(output) unless birdc fails or BIRD answers an error
    /// (reply codes 8xxx/9xxx, e.g. "syntax error").
    pub fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let out = run_ok(Command::new("birdc").arg("-s").arg(&self.sock).args(args))?;
        if out
            .lines()
            .any(|l| l.starts_with("syntax error") || l.contains("Unknown command"))
        {
            return Err(format!("birdc {args:?}: {out}"));
        }
        Ok(out)
    }

    /// Rewrites the config with the current prefixes and reloads it (`birdc configure`).
    fn reconfigure(&self) -> Result<(), String> {
        let log = self.dir.join("bird.log");
        fs::write(self.dir.join("bird.conf"), config(&self.cfg, &log))
            .map_err(|e| format!("writing bird.conf: {e}"))?;
        let out = self.birdc(&["configure"])?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
            Ok(())
        } else {
            Err(format!("birdc configure: {out}"))
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("bird.log")
    }

    /// Kills BIRD abruptly (SIGKILL): neighbors with graceful restart keep its routes
    /// as stale.
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// The protocol name BIRD knows a neighbor by: `n_` and the address with `.`/`:` as `_`.
pub fn protocol_name(addr: IpAddr) -> String {
    format!("n_{}", addr.to_string().replace(['.', ':'], "_"))
}

/// `route P blackhole;` lines for a `protocol static` block: how BIRD originates
/// prefixes, and the fast way to make it send many routes (see `bulk_prefixes_v4`).
pub fn static_routes_config(prefixes: &[IpNet]) -> String {
    let mut s = String::with_capacity(prefixes.len() * 32);
    for p in prefixes {
        let _ = writeln!(s, "  route {p} blackhole;");
    }
    s
}

/// Renders a BIRD 2 config from a [`PeerConfig`].
pub fn config(cfg: &PeerConfig, log: &Path) -> String {
    let fams = cfg.families();
    let mut c = String::new();
    let _ = writeln!(c, "log \"{}\" all;", log.display());
    let _ = writeln!(c, "router id {};", cfg.router_id);
    // Interfaces and connected networks: iBGP next hops are resolved against them
    // (without `direct`, iBGP routes are installed as unreachable).
    c.push_str("protocol device { }\n");
    let chans: Vec<&str> = fams.iter().map(|f| chan(*f)).collect();
    let _ = writeln!(
        c,
        "protocol direct {{ {} }}",
        chans.iter().map(|ch| format!("{ch};")).collect::<String>()
    );
    for f in &fams {
        let ch = chan(*f);
        if cfg.install_kernel_routes {
            // Only BGP-learned routes go to the kernel, never our static blackholes.
            let _ = writeln!(
                c,
                "protocol kernel k_{ch} {{ {ch} {{ import none; export where source = RTS_BGP; }}; }}"
            );
        }
        let prefixes: Vec<IpNet> = cfg
            .prefixes
            .iter()
            .copied()
            .filter(|p| Family::of_net(p) == *f)
            .collect();
        let _ = writeln!(
            c,
            "protocol static s_{ch} {{\n  {ch};\n{}}}",
            static_routes_config(&prefixes)
        );
    }
    let _ = writeln!(
        c,
        "template bgp peer {{\n  local as {};\n  \
         connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 5;\n}}",
        cfg.asn
    );
    for n in &cfg.neighbors {
        let ibgp = n.remote_asn == cfg.asn;
        let _ = writeln!(c, "protocol bgp {} from peer {{", protocol_name(n.address));
        let _ = writeln!(c, "  neighbor {} as {};", n.address, n.remote_asn);
        // iBGP defaults to multihop in BIRD; a directly connected neighbor must say so.
        match (n.multihop, n.multihop_ttl) {
            (true, Some(ttl)) => {
                let _ = writeln!(c, "  multihop {ttl};");
            }
            (true, None) => c.push_str("  multihop;\n"),
            (false, _) => c.push_str("  direct;\n"),
        }
        if n.ttl_security {
            c.push_str("  ttl security on;\n");
        }
        let hold = n.hold_time.max(3);
        let _ = writeln!(
            c,
            "  hold time {hold};\n  keepalive time {};",
            (hold / 3).max(1)
        );
        if n.passive {
            c.push_str("  passive on;\n");
        }
        if let Some(pw) = &n.md5_password {
            let _ = writeln!(c, "  password \"{pw}\";");
        }
        c.push_str(if n.graceful_restart {
            "  graceful restart on;\n"
        } else {
            "  graceful restart off;\n"
        });
        if n.route_reflector_client {
            c.push_str("  rr client;\n");
        }
        for f in &n.families {
            let _ = write!(
                c,
                "  {} {{\n    import all;\n    export where source ~ [ RTS_STATIC, RTS_BGP ];\n",
                chan(*f)
            );
            if ibgp {
                // Routes from eBGP get our address as next hop; reflected ones keep theirs.
                c.push_str("    next hop self ebgp;\n");
            }
            c.push_str("  };\n");
        }
        c.push_str("}\n");
    }
    c
}

fn chan(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

/// Parses `show route all` output into routes. A route header starts at column 0 with
/// the prefix (or, for further paths of the same prefix, with spaces); attribute lines
/// start with a tab. `stale` is left false: see [`parse_routes_by_protocol`].
pub fn parse_routes(out: &str) -> Vec<LearnedRoute> {
    parse_routes_by_protocol(out)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// Like [`parse_routes`], with the name of the protocol each route came from.
pub fn parse_routes_by_protocol(out: &str) -> Vec<(String, LearnedRoute)> {
    let mut routes: Vec<(String, LearnedRoute)> = Vec::new();
    let mut prefix: Option<IpNet> = None;
    for line in out.lines() {
        if line.starts_with('\t') {
            let Some((_, r)) = routes.last_mut() else {
                continue;
            };
            let attr = line.trim();
            if let Some(v) = attr.strip_prefix("BGP.as_path:") {
                r.as_path = v
                    .split_whitespace()
                    .filter_map(|a| a.trim_matches(['{', '}', '(', ')']).parse().ok())
                    .collect();
            } else if let Some(v) = attr.strip_prefix("BGP.next_hop:") {
                // IPv6 may list global then link-local: the first is the one wanted.
                if let Some(nh) = v.split_whitespace().next().and_then(|a| a.parse().ok()) {
                    r.next_hop = nh;
                }
            } else if let Some(v) = attr.strip_prefix("BGP.local_pref:") {
                r.local_pref = v.trim().parse().ok();
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.is_empty() || line.starts_with("Table ") || line.starts_with("BIRD ") {
            continue;
        }
        if !line.starts_with(' ') {
            prefix = line.split_whitespace().next().and_then(parse_net);
        }
        let Some(p) = prefix else { continue };
        // "<type> [<protocol> <time>] ...": the protocol follows the first '['.
        let Some(proto) = trimmed
            .split_once('[')
            .and_then(|(_, rest)| rest.split_whitespace().next())
        else {
            continue;
        };
        routes.push((
            proto.to_owned(),
            LearnedRoute {
                prefix: p,
                next_hop: p.addr(),
                as_path: Vec::new(),
                stale: false,
                local_pref: None,
            },
        ));
    }
    routes
}

/// Names of the protocols `show protocols` lists as Established.
fn established_protocols(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("Established"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

impl BgpPeer for Bird {
    fn kind(&self) -> &'static str {
        "bird"
    }

    fn session_state(&self, neighbor: IpAddr) -> String {
        match self.birdc(&["show", "protocols", "all", &protocol_name(neighbor)]) {
            Ok(out) => out,
            Err(e) => e,
        }
    }

    fn established(&self, neighbor: IpAddr) -> bool {
        let name = protocol_name(neighbor);
        self.birdc(&["show", "protocols", &name]).is_ok_and(|out| {
            out.lines().any(|l| {
                l.split_whitespace().next() == Some(name.as_str()) && l.contains("Established")
            })
        })
    }

    fn learned_routes(&self, family: Family) -> Result<Vec<LearnedRoute>, String> {
        let table = match family {
            Family::Ipv4 => "master4",
            Family::Ipv6 => "master6",
        };
        let out = self.birdc(&[
            "show", "route", "all", "table", table, "where", "source", "=", "RTS_BGP",
        ])?;
        // BIRD prints no stale flag, but it keeps a down protocol's routes only while
        // graceful restart (RFC 4724) retains them: such routes are the stale ones.
        let up = established_protocols(&self.birdc(&["show", "protocols"])?);
        Ok(parse_routes_by_protocol(&out)
            .into_iter()
            .map(|(proto, mut r)| {
                r.stale = !up.contains(&proto);
                r
            })
            .collect())
    }

    fn learned_count(&self, family: Family) -> Result<usize, String> {
        let table = match family {
            Family::Ipv4 => "master4",
            Family::Ipv6 => "master6",
        };
        // "N of M routes for K networks in table T": N counts the routes matching the filter.
        let out = self.birdc(&[
            "show", "route", "count", "table", table, "where", "source", "=", "RTS_BGP",
        ])?;
        out.lines()
            .find(|l| l.contains(" routes for "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bird: cannot parse route count from {out:?}"))
    }

    fn announce(&mut self, prefix: IpNet) -> Result<(), String> {
        let prefix = prefix.trunc();
        if !self.cfg.prefixes.contains(&prefix) {
            self.cfg.prefixes.push(prefix);
        }
        self.reconfigure()
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<(), String> {
        let prefix = prefix.trunc();
        self.cfg.prefixes.retain(|p| *p != prefix);
        self.reconfigure()
    }

    fn diagnostics(&self) -> String {
        let protos = self.birdc(&["show", "protocols"]).unwrap_or_else(|e| e);
        format!(
            "--- bird ({}) protocols:\n{protos}--- bird log tail:\n{}",
            self.dir.display(),
            tail(&self.log_path(), 40)
        )
    }
}
