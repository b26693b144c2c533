//! `bgp`: how fast a receiver takes a full table of IPv4 /26 routes from one BGP peer into its
//! Loc-RIB and into the kernel, and how much memory that costs, for `trellis-bgp
//! --install-kernel` next to BIRD 2, both fed by the same FRR sender in the same run.
//!
//! ```text
//!   trl-bg<PID>-trl  eth0 172.31.1.2/30 ──veth── s-trl  172.31.1.1/30 ┐
//!                                                                      trl-bg<PID>-snd
//!   trl-bg<PID>-bird eth0 172.31.2.2/30 ──veth── s-bird 172.31.2.1/30 ┘  (FRR: zebra + bgpd,
//!                                                                        AS 65000, N networks)
//! ```
//!
//! Needs root (network namespaces) and the release `trellis-bgp` next to this executable. FRR's
//! bgpd originates N distinct /26 (`network` statements from 10.0.0.0 up, loaded before any
//! timing) towards two eBGP neighbors, both administratively shut down at first. The receivers
//! (AS 64512, passive, import everything, export nothing) are measured one after the other, the
//! order alternating per round: start the receiver, read its VmRSS, `no neighbor X shutdown` in
//! FRR; the session comes up (TCP established, read from `/proc/PID/net/tcp*` every 2 ms), then
//! the bench waits for
//! - the Loc-RIB to hold N routes: trellis logs its count of route events every 20 ms
//!   (`--route-events-interval-ms 20`), BIRD is asked `show route count` every 20 ms;
//! - the receiver namespace's main table to hold N routes of the receiver's protocol (81 for
//!   trellis, `bird` for BIRD): the main table's prefix count (`/proc/PID/net/fib_triestat`,
//!   read every 20 ms) must grow by N, then `ip -4 route show proto X` must list N routes (the
//!   receiver is the only writer; a full dump takes about 0.6 s here, too slow to poll);
//!
//! then reads VmRSS again (after 1 s settling), kills the receiver, flushes its routes and shuts
//! the FRR neighbor down again. Times run from the TCP session being up.
//!
//! Namespaces (`trl-bg<PID>-*`) and daemons are removed by guards at the end, also when the run
//! fails; namespaces of a run that was killed are removed, with what still runs in them, at the
//! next start.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use clap::Parser;
use trellis_bench::host::load_average;
use trellis_bench::netns::{cleanup_stale, ip, run, Namespaces};
use trellis_bench::report::times;
use trellis_bench::stats::median;

/// Prefix of every namespace a run creates (`trl-bg<PID>-`).
const PREFIX: &str = "trl-bg";
const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";
const SENDER_AS: u32 = 65000;
const RECEIVER_AS: u32 = 64512;
/// Loc-RIB poll (BIRD) and status log interval (trellis).
const RIB_POLL: Duration = Duration::from_millis(20);
const TCP_POLL: Duration = Duration::from_millis(2);
/// Distinct /26 in 10.0.0.0/8.
const MAX_ROUTES: u32 = 1 << 18;

#[derive(Debug, Parser)]
#[command(about = "BGP full-table load: trellis-bgp next to BIRD 2, both fed by one FRR")]
struct Args {
    /// Distinct IPv4 /26 routes the sender originates.
    #[arg(long, default_value_t = 100_000)]
    routes: u32,
    /// Rounds; each measures both receivers, the order alternating.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Kernel table poll interval in milliseconds (a read of the FIB trie statistics).
    #[arg(long, default_value_t = 20)]
    kernel_poll_ms: u64,
    /// Give up on a receiver after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

// ---- commands and namespaces ------------------------------------------------------------------

/// Joins `a` (device `a_dev`, address `a_addr`) and `b` (`eth0`, `b_addr`) with a veth pair.
fn link(a: &str, a_dev: &str, a_addr: &str, b: &str, b_addr: &str) -> Result<()> {
    ip(&[
        "-n", a, "link", "add", a_dev, "type", "veth", "peer", "name", "eth0", "netns", b,
    ])?;
    ip(&["-n", a, "addr", "add", a_addr, "dev", a_dev])?;
    ip(&["-n", b, "addr", "add", b_addr, "dev", "eth0"])?;
    ip(&["-n", a, "link", "set", a_dev, "up"])?;
    ip(&["-n", b, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// A daemon this run started; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    /// `ip netns exec NS ARGV...` (ip execs the program: the child's pid is the daemon's).
    fn spawn(name: &'static str, ns: &str, argv: &[&str], stdout: Stdio) -> Result<Daemon> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} in {ns}"))?;
        Ok(Daemon { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ready` every 50 ms for up to `limit`.
fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if ready()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `VmRSS` (resident now) and `VmHWM` (the peak) of `pid`, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

// ---- the sender: FRR --------------------------------------------------------------------------

/// The `i`-th /26 counting up from 10.0.0.0.
fn nth_prefix(i: u32) -> String {
    let a = (10u32 << 24) + i * 64;
    format!(
        "{}.{}.{}.{}/26",
        a >> 24,
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    )
}

/// bgpd.conf: `routes` networks, each neighbor eBGP, shut down until measured.
fn frr_config(router_id: &str, neighbors: &[&str], routes: u32) -> String {
    let mut c = String::with_capacity(routes as usize * 32 + 1024);
    let _ = writeln!(c, "router bgp {SENDER_AS}\n bgp router-id {router_id}");
    // RFC 8212 policy and the RIB check for `network` are off: the networks exist nowhere else.
    c.push_str(" no bgp ebgp-requires-policy\n no bgp network import-check\n");
    c.push_str(" no bgp default ipv4-unicast\n");
    // Send the table as soon as a session is up (the default waits 1 s for more peers to
    // join the update group).
    c.push_str(" coalesce-time 0\n");
    for n in neighbors {
        let _ = writeln!(
            c,
            " neighbor {n} remote-as {RECEIVER_AS}\n neighbor {n} timers connect 1\n \
             neighbor {n} advertisement-interval 0\n neighbor {n} shutdown"
        );
    }
    c.push_str(" address-family ipv4 unicast\n");
    for n in neighbors {
        let _ = writeln!(c, "  neighbor {n} activate");
    }
    for i in 0..routes {
        let _ = writeln!(c, "  network {}", nth_prefix(i));
    }
    c.push_str(" exit-address-family\n");
    c
}

/// zebra and bgpd in the sender namespace, state under `dir` (world-writable: they drop to user
/// `frr`).
struct Frr {
    // Field order is drop order: bgpd before zebra.
    _bgpd: Daemon,
    _zebra: Daemon,
    vty: PathBuf,
}

impl Frr {
    fn start(ns: &str, dir: &Path, neighbors: &[&str], routes: u32) -> Result<Frr> {
        let vty = dir.join("vty");
        std::fs::create_dir_all(&vty)?;
        for d in [dir, vty.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
        }
        std::fs::write(dir.join("zebra.conf"), "")?;
        std::fs::write(
            dir.join("bgpd.conf"),
            frr_config("172.31.0.1", neighbors, routes),
        )?;
        let zserv = dir.join("zserv.api");
        let (zserv_s, vty_s) = (zserv.to_string_lossy(), vty.to_string_lossy());
        let argv = |bin: &'static str, daemon: &str| -> Vec<String> {
            let mut v: Vec<String> = [bin, "-u", "frr", "-g", "frr", "-P", "0", "-z"]
                .iter()
                .map(ToString::to_string)
                .collect();
            v.extend([
                zserv_s.to_string(),
                "--vty_socket".into(),
                vty_s.to_string(),
            ]);
            v.extend([
                "-i".into(),
                dir.join(format!("{daemon}.pid")).to_string_lossy().into(),
                "-f".into(),
                dir.join(format!("{daemon}.conf")).to_string_lossy().into(),
            ]);
            v
        };
        let z = argv(ZEBRA, "zebra");
        let mut zebra = Daemon::spawn(
            "zebra",
            ns,
            &z.iter().map(String::as_str).collect::<Vec<_>>(),
            Stdio::null(),
        )?;
        wait_for(Duration::from_secs(10), "zebra's zserv socket", || {
            zebra.check_alive()?;
            Ok(zserv.exists())
        })?;
        // -n: bgpd installs nothing in the sender's kernel.
        let mut b = argv(BGPD, "bgpd");
        b.push("-n".into());
        let bgpd = Daemon::spawn(
            "bgpd",
            ns,
            &b.iter().map(String::as_str).collect::<Vec<_>>(),
            Stdio::null(),
        )?;
        let frr = Frr {
            _bgpd: bgpd,
            _zebra: zebra,
            vty,
        };
        // bgpd answers once the whole config is read; each `network` bumps the table version.
        wait_for(
            Duration::from_secs(120),
            "bgpd loading its networks",
            || {
                let out = frr
                    .vtysh(&["show bgp ipv4 unicast summary json"])
                    .unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                Ok(v["tableVersion"].as_u64() >= Some(u64::from(routes)))
            },
        )?;
        Ok(frr)
    }

    fn vtysh(&self, commands: &[&str]) -> Result<String> {
        let vty = self.vty.to_string_lossy();
        let mut args = vec!["--vty_socket", &vty];
        for c in commands {
            args.extend(["-c", c]);
        }
        let out = run("vtysh", &args)?;
        ensure!(
            !out.contains("% Unknown command") && !out.contains("% Invalid"),
            "vtysh {commands:?}: {out}"
        );
        Ok(out)
    }

    /// `[no] neighbor ADDR shutdown`.
    fn set_shutdown(&self, neighbor: &str, down: bool) -> Result<()> {
        let router = format!("router bgp {SENDER_AS}");
        let cmd = format!(
            "{}neighbor {neighbor} shutdown",
            if down { "" } else { "no " }
        );
        self.vtysh(&["configure terminal", &router, &cmd]).map(drop)
    }
}

// ---- the receivers ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Trellis,
    Bird,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Trellis => "trellis-bgp",
            Kind::Bird => "BIRD 2",
        }
    }

    /// The routing protocol its kernel routes carry.
    fn proto(self) -> &'static str {
        match self {
            Kind::Trellis => "81",
            Kind::Bird => "bird",
        }
    }
}

/// Where one receiver runs and how it peers.
#[derive(Debug)]
struct Site {
    kind: Kind,
    ns: String,
    addr: &'static str,
    sender: &'static str,
}

/// A started receiver: the daemon and how to read its Loc-RIB size.
struct Receiver {
    daemon: Daemon,
    rib: RibProbe,
}

enum RibProbe {
    /// Latest `route_events=N` from trellis-bgp's status log, with when it was read.
    Log(Arc<Mutex<(u64, Instant)>>, Arc<AtomicBool>),
    /// `birdc -s SOCK show route count`.
    Birdc(PathBuf),
}

/// The number after `key=` in a log line (ANSI colour codes removed first).
fn field(line: &str, key: &str) -> Option<u64> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let rest = &plain[plain.find(&format!("{key}="))? + key.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `K` of BIRD's `N of M routes for K networks in table master4`.
fn bird_networks(out: &str) -> Option<u64> {
    out.lines()
        .find(|l| l.contains("in table master4"))
        .and_then(|l| l.split(" for ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn bird_config(site: &Site, log: &Path) -> String {
    format!(
        "log \"{}\" {{ info, warning, error, fatal }};\nrouter id {};\n\
         protocol device {{ }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n\
         protocol bgp sender {{\n  local {} as {RECEIVER_AS};\n  neighbor {} as {SENDER_AS};\n  \
         direct;\n  passive on;\n  ipv4 {{ import all; export none; }};\n}}\n",
        log.display(),
        site.addr,
        site.addr,
        site.sender
    )
}

impl Receiver {
    fn start(site: &Site, bin: &Path, dir: &Path) -> Result<Receiver> {
        let mut r = match site.kind {
            Kind::Trellis => {
                let peer = format!("{},{SENDER_AS}", site.sender);
                let asn = RECEIVER_AS.to_string();
                let interval = RIB_POLL.as_millis().to_string();
                let mut daemon = Daemon::spawn(
                    "trellis-bgp",
                    &site.ns,
                    &[
                        &bin.to_string_lossy(),
                        "--asn",
                        &asn,
                        "--router-id",
                        site.addr,
                        "--peer",
                        &peer,
                        "--passive",
                        "--install-kernel",
                        "--route-events-interval-ms",
                        &interval,
                        // The session status counts the Loc-RIB on every call: keep it out.
                        "--status-interval",
                        "0",
                    ],
                    Stdio::piped(),
                )?;
                let stdout = daemon.child.stdout.take().expect("stdout is piped");
                let latest = Arc::new(Mutex::new((0, Instant::now())));
                let alive = Arc::new(AtomicBool::new(true));
                let (l, a) = (Arc::clone(&latest), Arc::clone(&alive));
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if let Some(n) = field(&line, "route_events") {
                            *l.lock().expect("not poisoned") = (n, Instant::now());
                        }
                    }
                    a.store(false, Ordering::Relaxed);
                });
                Receiver {
                    daemon,
                    rib: RibProbe::Log(latest, alive),
                }
            }
            Kind::Bird => {
                let conf = dir.join("bird.conf");
                let sock = dir.join("bird.ctl");
                std::fs::write(&conf, bird_config(site, &dir.join("bird.log")))?;
                let daemon = Daemon::spawn(
                    "bird",
                    &site.ns,
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
                    Stdio::null(),
                )?;
                Receiver {
                    daemon,
                    rib: RibProbe::Birdc(sock),
                }
            }
        };
        // Ready: listening for the sender (trellis) or answering birdc (BIRD).
        wait_for(Duration::from_secs(10), "receiver start-up", || {
            r.daemon.check_alive()?;
            Ok(match &r.rib {
                RibProbe::Log(..) => {
                    let out = run("ss", &["-N", &site.ns, "-Hltn", "sport = :179"])?;
                    !out.trim().is_empty()
                }
                RibProbe::Birdc(_) => r.rib_routes().is_ok(),
            })
        })?;
        Ok(r)
    }

    /// Routes in the Loc-RIB now, and when that was observed.
    fn rib_routes(&self) -> Result<(u64, Instant)> {
        match &self.rib {
            RibProbe::Log(latest, alive) => {
                ensure!(alive.load(Ordering::Relaxed), "trellis-bgp stopped logging");
                Ok(*latest.lock().expect("not poisoned"))
            }
            RibProbe::Birdc(sock) => {
                let out = run(
                    "birdc",
                    &["-s", &sock.to_string_lossy(), "show", "route", "count"],
                )?;
                let n = bird_networks(&out)
                    .ok_or_else(|| anyhow!("unexpected `show route count` output {out:?}"))?;
                Ok((n, Instant::now()))
            }
        }
    }
}

/// Routes of protocol `proto` in the main IPv4 table of `ns`.
fn kernel_routes(ns: &str, proto: &str) -> Result<u64> {
    let out = ip(&[
        "-n", ns, "-4", "route", "show", "table", "main", "proto", proto,
    ])?;
    Ok(out.lines().count() as u64)
}

/// Prefixes in the main table of `pid`'s namespace, from the FIB trie statistics: a cheap read,
/// where a route dump of the full table takes about half a second here.
fn main_prefixes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/net/fib_triestat");
    let stats = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    trie_main_prefixes(&stats).ok_or_else(|| anyhow!("no Main: Prefixes in {path}"))
}

/// `Prefixes:` of the `Main:` section of `/proc/net/fib_triestat`.
fn trie_main_prefixes(stats: &str) -> Option<u64> {
    let (_, main) = stats.split_once("\nMain:")?;
    main.lines()
        .find_map(|l| l.trim().strip_prefix("Prefixes:"))?
        .trim()
        .parse()
        .ok()
}

/// An established TCP connection to or from port 179 in `pid`'s namespace, from
/// `/proc/PID/net/tcp` and `tcp6` (a listener on `[::]` holds IPv4 peers as mapped addresses).
fn bgp_tcp_up(pid: u32) -> Result<bool> {
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        if established_179(&text) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a `/proc/net/tcp` table lists a connection in state 01 (ESTABLISHED) with port 179
/// (hex 00B3) on either end.
fn established_179(table: &str) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[3] == "01"
            && [f[1], f[2]]
                .iter()
                .any(|a| a.rsplit(':').next() == Some("00B3"))
    })
}

// ---- one measurement --------------------------------------------------------------------------

/// One receiver's figures for one round.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From `no neighbor shutdown` to the TCP session being up.
    connect: Duration,
    /// From the TCP session up to N routes in the Loc-RIB.
    rib: Duration,
    /// From the TCP session up to N routes in the kernel table.
    kernel: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// VmHWM at the end: the most the process was resident at any time.
    peak_kib: u64,
}

impl Sample {
    fn growth_mib(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / 1024.0
    }
}

fn measure(
    frr: &Frr,
    site: &Site,
    bin: &Path,
    dir: &Path,
    args: &Args,
    round: usize,
) -> Result<Sample> {
    let n = u64::from(args.routes);
    let limit = Duration::from_secs(args.timeout);
    let mut r = Receiver::start(site, bin, dir)?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss_before_kib, _) = memory_kib(r.daemon.pid())?;

    let pid = r.daemon.pid();
    let baseline = main_prefixes(pid)?;
    let enabled = Instant::now();
    frr.set_shutdown(site.addr, false)?;
    let up = loop {
        if bgp_tcp_up(pid)? {
            break Instant::now();
        }
        ensure!(enabled.elapsed() < limit, "no session with {}", site.addr);
        r.daemon.check_alive()?;
        std::thread::sleep(TCP_POLL);
    };

    let done = AtomicBool::new(false);
    let (rib_at, kernel_at) = std::thread::scope(|s| -> Result<(Instant, Instant)> {
        let kernel = s.spawn(|| -> Result<Instant> {
            let every = Duration::from_millis(args.kernel_poll_ms);
            loop {
                let c = main_prefixes(pid)?.saturating_sub(baseline);
                let at = Instant::now();
                if c >= n {
                    // The receiver is the only one adding routes here; check they are its own.
                    let theirs = kernel_routes(&site.ns, site.kind.proto())?;
                    ensure!(
                        theirs >= n,
                        "{c} new prefixes in {}, but only {theirs} of proto {}",
                        site.ns,
                        site.kind.proto()
                    );
                    return Ok(at);
                }
                ensure!(
                    !done.load(Ordering::Relaxed) && up.elapsed() < limit,
                    "{} kernel routes after {limit:?}: {c} of {n}",
                    site.kind.label()
                );
                std::thread::sleep(every.saturating_sub(at.elapsed()));
            }
        });
        let rib = (|| loop {
            let (c, at) = r.rib_routes()?;
            if c >= n {
                return Ok(at);
            }
            ensure!(
                up.elapsed() < limit,
                "{} Loc-RIB after {limit:?}: {c} of {n}",
                site.kind.label()
            );
            r.daemon.check_alive()?;
            std::thread::sleep(RIB_POLL);
        })();
        if rib.is_err() {
            done.store(true, Ordering::Relaxed);
        }
        let kernel = kernel.join().expect("kernel poller does not panic");
        Ok((rib?, kernel?))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let (rss_after_kib, peak_kib) = memory_kib(r.daemon.pid())?;
    let sample = Sample {
        connect: up.saturating_duration_since(enabled),
        rib: rib_at.saturating_duration_since(up),
        kernel: kernel_at.saturating_duration_since(up),
        rss_before_kib,
        rss_after_kib,
        peak_kib,
    };
    eprintln!(
        "round {round}: {}: session up after {} ms, Loc-RIB {:.2} s, kernel {:.2} s, \
         RSS {} -> {} KiB (peak {} KiB)",
        site.kind.label(),
        sample.connect.as_millis(),
        sample.rib.as_secs_f64(),
        sample.kernel.as_secs_f64(),
        rss_before_kib,
        rss_after_kib,
        peak_kib
    );

    // Back to the starting point: no receiver, no routes, the neighbor shut down.
    drop(r);
    frr.set_shutdown(site.addr, true)?;
    ip(&[
        "-n",
        &site.ns,
        "-4",
        "route",
        "flush",
        "proto",
        site.kind.proto(),
    ])?;
    let left = kernel_routes(&site.ns, site.kind.proto())?;
    ensure!(
        left == 0,
        "{left} routes left in {} after the flush",
        site.ns
    );
    Ok(sample)
}

// ---- report -----------------------------------------------------------------------------------

fn ratio(t: Option<f64>, b: Option<f64>) -> Option<f64> {
    t.zip(b).and_then(|(t, b)| (b > 0.0).then(|| t / b))
}

/// Aligned plain text: one row per receiver and round, the medians, then trellis/BIRD.
fn render(trellis: &[Sample], bird: &[Sample]) -> String {
    let mut out = String::new();
    let head = [
        "session ms",
        "Loc-RIB s",
        "kernel s",
        "RSS before MiB",
        "RSS after MiB",
        "growth MiB",
        "peak MiB",
    ];
    // Writing to a String cannot fail.
    let _ = write!(out, "{:<22}", "receiver");
    for h in head {
        let _ = write!(out, "  {h:>w$}", w = h.len());
    }
    out.push('\n');
    let row = |out: &mut String, label: &str, v: [Option<f64>; 7]| {
        let _ = write!(out, "{label:<22}");
        for (i, (h, x)) in head.iter().zip(v).enumerate() {
            let prec = if i == 0 { 0 } else { 2 };
            let s = x.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"));
            let _ = write!(out, "  {s:>w$}", w = h.len());
        }
        out.push('\n');
    };
    let cols = |s: &Sample| {
        [
            s.connect.as_secs_f64() * 1e3,
            s.rib.as_secs_f64(),
            s.kernel.as_secs_f64(),
            s.rss_before_kib as f64 / 1024.0,
            s.rss_after_kib as f64 / 1024.0,
            s.growth_mib(),
            s.peak_kib as f64 / 1024.0,
        ]
    };
    let medians = |samples: &[Sample]| -> [Option<f64>; 7] {
        std::array::from_fn(|i| median(&samples.iter().map(|s| cols(s)[i]).collect::<Vec<_>>()))
    };
    for (kind, samples) in [(Kind::Trellis, trellis), (Kind::Bird, bird)] {
        for (i, s) in samples.iter().enumerate() {
            row(
                &mut out,
                &format!("{} round {}", kind.label(), i + 1),
                cols(s).map(Some),
            );
        }
        row(
            &mut out,
            &format!("{} median", kind.label()),
            medians(samples),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<22}  {:>9}  {:>9}  {:>10}",
        "trellis/BIRD", "Loc-RIB", "kernel", "RSS growth"
    );
    let (mt, mb) = (medians(trellis), medians(bird));
    let _ = writeln!(
        out,
        "{:<22}  {:>9}  {:>9}  {:>10}",
        "median",
        times(ratio(mt[1], mb[1])),
        times(ratio(mt[2], mb[2])),
        times(ratio(mt[5], mb[5]))
    );
    for (i, (t, b)) in trellis.iter().zip(bird).enumerate() {
        let (t, b) = (cols(t), cols(b));
        let _ = writeln!(
            out,
            "{:<22}  {:>9}  {:>9}  {:>10}",
            format!("round {}", i + 1),
            times(ratio(Some(t[1]), Some(b[1]))),
            times(ratio(Some(t[2]), Some(b[2]))),
            times(ratio(Some(t[5]), Some(b[5])))
        );
    }
    out
}

fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

// ---- main -------------------------------------------------------------------------------------

fn trellis_bgp_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?
        .join("trellis-bgp");
    ensure!(
        bin.is_file(),
        "{} missing: run `cargo build --release -p trellis-bgp-speaker -p trellis-bench` first",
        bin.display()
    );
    Ok(bin)
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds > 0 && (1..=MAX_ROUTES).contains(&args.routes) && args.kernel_poll_ms > 0,
        "--rounds, --kernel-poll-ms and --routes (up to {MAX_ROUTES}) must be at least 1"
    );
    trellis_bench::host::require_root("creates network namespaces", "sudo ./target/release/bgp")?;
    let bin = trellis_bgp_bin()?;
    cleanup_stale(PREFIX);
    let load_before = load_average();
    let started = Instant::now();

    let tmp = tempfile::tempdir()?;
    let mut namespaces = Namespaces::new(PREFIX);
    let snd = namespaces.add("snd")?;
    let sites = [
        Site {
            kind: Kind::Trellis,
            ns: namespaces.add("trl")?,
            addr: "172.31.1.2",
            sender: "172.31.1.1",
        },
        Site {
            kind: Kind::Bird,
            ns: namespaces.add("bird")?,
            addr: "172.31.2.2",
            sender: "172.31.2.1",
        },
    ];
    link(
        &snd,
        "s-trl",
        "172.31.1.1/30",
        &sites[0].ns,
        "172.31.1.2/30",
    )?;
    link(
        &snd,
        "s-bird",
        "172.31.2.1/30",
        &sites[1].ns,
        "172.31.2.2/30",
    )?;
    let frr_dir = tmp.path().join("frr");
    std::fs::create_dir_all(&frr_dir)?;
    eprintln!("FRR in {snd}: loading {} networks", args.routes);
    let loading = Instant::now();
    let frr = Frr::start(&snd, &frr_dir, &[sites[0].addr, sites[1].addr], args.routes)?;
    eprintln!("FRR ready after {:.1} s", loading.elapsed().as_secs_f64());

    let (mut trellis, mut bird) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let order: [&Site; 2] = if round % 2 == 1 {
            [&sites[0], &sites[1]]
        } else {
            [&sites[1], &sites[0]]
        };
        for site in order {
            let dir = tmp.path().join(format!("{}-{round}", site.kind.proto()));
            std::fs::create_dir_all(&dir)?;
            let s = measure(&frr, site, &bin, &dir, &args, round)?;
            match site.kind {
                Kind::Trellis => trellis.push(s),
                Kind::Bird => bird.push(s),
            }
        }
    }
    drop(frr);
    drop(namespaces);

    print!("{}", render(&trellis, &bird));
    println!(
        "\n{} round(s), {} IPv4 /26 from one FRR eBGP sender ({}), receivers one at a time \
         (order alternating): trellis-bgp --install-kernel, {}; times from the TCP session up; \
         Loc-RIB polled every {} ms, kernel every {} ms; wall time {:.0} s; \
         load average {load_before} before, {} after",
        args.rounds,
        args.routes,
        version("/usr/lib/frr/bgpd", "--version"),
        version("bird", "--version"),
        RIB_POLL.as_millis(),
        args.kernel_poll_ms,
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct_26s_from_10_0_0_0() {
        assert_eq!(nth_prefix(0), "10.0.0.0/26");
        assert_eq!(nth_prefix(5), "10.0.1.64/26");
        assert_eq!(nth_prefix(MAX_ROUTES - 1), "10.255.255.192/26");
    }

    #[test]
    fn reads_log_fields_with_and_without_colour() {
        let plain = "2026-11-22T06:00:00Z  INFO trellis_bgp: kernel install route_events=1234";
        assert_eq!(field(plain, "route_events"), Some(1234));
        let ansi = "\u{1b}[32m INFO\u{1b}[0m kernel install \u{1b}[3mroute_events\u{1b}[0m\
                    \u{1b}[2m=\u{1b}[0m99";
        assert_eq!(field(ansi, "route_events"), Some(99));
        assert_eq!(field("session peer=1.2.3.4", "route_events"), None);
    }

    #[test]
    fn reads_bird_route_count() {
        let out = "BIRD 2.0.12 ready.\n100000 of 100000 routes for 100000 networks in table \
                   master4\n";
        assert_eq!(bird_networks(out), Some(100_000));
        assert_eq!(bird_networks("BIRD 2.0.12 ready.\n"), None);
    }

    #[test]
    fn frr_config_shuts_neighbors_and_lists_networks() {
        let c = frr_config("172.31.0.1", &["172.31.1.2"], 2);
        assert!(c.contains(" neighbor 172.31.1.2 shutdown\n"));
        assert!(c.contains("  neighbor 172.31.1.2 activate\n"));
        assert!(c.contains("  network 10.0.0.64/26\n"));
        assert!(!c.contains("10.0.0.128/26"));
    }

    fn sample(rib_ms: u64, kernel_ms: u64, before_mib: u64, after_mib: u64) -> Sample {
        Sample {
            connect: Duration::from_millis(1000),
            rib: Duration::from_millis(rib_ms),
            kernel: Duration::from_millis(kernel_ms),
            rss_before_kib: before_mib * 1024,
            rss_after_kib: after_mib * 1024,
            peak_kib: after_mib * 1024,
        }
    }

    #[test]
    fn renders_rounds_medians_and_ratios() {
        let trellis = [sample(500, 2000, 6, 26), sample(700, 3000, 6, 46)];
        let bird = [sample(1000, 2000, 5, 15), sample(1000, 2000, 5, 15)];
        let text = render(&trellis, &bird);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("receiver"), "{}", lines[0]);
        assert!(lines[3].starts_with("trellis-bgp median"), "{}", lines[3]);
        // Medians of two: Loc-RIB 0.60 s, kernel 2.50 s, growth 30 MiB against 10 MiB.
        assert!(
            lines[3].contains("0.60") && lines[3].contains("2.50") && lines[3].contains("30.00")
        );
        let median = lines.iter().find(|l| l.starts_with("median")).unwrap();
        assert_eq!(
            median.split_whitespace().collect::<Vec<_>>(),
            ["median", "0.60x", "1.25x", "3.00x"]
        );
        assert!(text.contains("round 2"));
    }

    #[test]
    fn reads_main_prefixes_from_fib_triestat() {
        let stats = "Basic info: size of leaf: 48 bytes, size of tnode: 40 bytes.\nMain:\n\
                     \tAver depth:     1.75\n\tLeaves:         4\n\tPrefixes:       100004\n\
                     Local:\n\tPrefixes:       3\n";
        assert_eq!(trie_main_prefixes(stats), Some(100_004));
        assert_eq!(trie_main_prefixes("Local:\n\tPrefixes: 3\n"), None);
    }

    #[test]
    fn finds_established_bgp_connections() {
        let head = "  sl  local_address rem_address   st tx_queue rx_queue\n";
        let listen = "   0: 00000000:00B3 00000000:0000 0A 00000000:00000000\n";
        let est = "   1: 02011FAC:00B3 01011FAC:A1B2 01 00000000:00000000\n";
        let other = "   2: 02011FAC:1F90 01011FAC:00B4 01 00000000:00000000\n";
        assert!(!established_179(&format!("{head}{listen}{other}")));
        assert!(established_179(&format!("{head}{listen}{est}")));
        let v6 = "   0: 0000000000000000FFFF00000201 1FAC:00B3 0000000000000000FFFF00000101 1FAC:C350 01\n";
        assert!(!established_179(&format!("{head}{v6}")));
        let v6 = "   0: 0000000000000000FFFF00000201 1FAC:00B3 0000000000000000FFFF00000101 1FAC:C350 01\n"
            .replace(" 1FAC", "1FAC");
        assert!(established_179(&format!("{head}{v6}")));
    }
}
