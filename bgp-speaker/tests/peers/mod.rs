//! Real BGP daemons (BIRD 2, GoBGP, FRR) running inside test network namespaces, for
//! interop tests of the trellis BGP speaker. Use from an integration test with `mod peers;`.
//!
//! ```text
//! Ns::new("a") ──veth (Ns::link)── Ns::new("b")
//!   Bird::start(&a, &cfg, dir)        Frr::start(&b, &cfg, dir)
//!         └──────── BgpPeer: wait_established / learned_routes / wait_routes ────────┘
//! ```
//!
//! Every daemon is a child of the test process, started in the foreground with its
//! config, sockets, pid file and log under the caller's temporary directory, and killed
//! (and reaped) on drop. All waits time out and report the daemon's own view of the
//! session plus the tail of its log, so a failing CI run can be diagnosed from its output.
//!
//! Requires root (checked by [`netns::require_root`], which panics otherwise).
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod bird;
pub mod frr;
pub mod gobgp;
pub mod netns;
pub mod trellis;

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};

// Re-exports for tests; a given test binary uses only some of them.
#[allow(unused_imports)]
pub use bird::Bird;
#[allow(unused_imports)]
pub use frr::Frr;
#[allow(unused_imports)]
pub use gobgp::Gobgp;
#[allow(unused_imports)]
pub use netns::{require_root, Ns};

/// An address family (unicast SAFI only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }
}

/// One configured BGP neighbor of a daemon.
#[derive(Debug, Clone)]
pub struct Neighbor {
    pub address: IpAddr,
    pub remote_asn: u32,
    /// TCP MD5 signature (RFC 2385) password.
    pub md5_password: Option<String>,
    /// Only accept connections, never initiate one.
    pub passive: bool,
    /// Advertise the graceful restart capability (RFC 4724).
    pub graceful_restart: bool,
    /// Treat this (iBGP) neighbor as a route reflector client (RFC 4456).
    pub route_reflector_client: bool,
    /// The neighbor is not on a directly connected network.
    pub multihop: bool,
    /// With `multihop`: the TTL to send with (daemon default otherwise).
    pub multihop_ttl: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255, accept only 255 (directly connected).
    pub ttl_security: bool,
    /// Proposed hold time in seconds; keepalives are sent every third of it.
    pub hold_time: u16,
    /// Families negotiated on this session. Defaults to the family of `address`
    /// (IPv6 is carried with MP-BGP, RFC 4760). A family different from the transport's
    /// relies on each daemon's default next hop choice.
    pub families: Vec<Family>,
}

impl Neighbor {
    pub fn new(address: IpAddr, remote_asn: u32) -> Neighbor {
        Neighbor {
            address,
            remote_asn,
            md5_password: None,
            passive: false,
            graceful_restart: false,
            route_reflector_client: false,
            multihop: false,
            multihop_ttl: None,
            ttl_security: false,
            hold_time: 9,
            families: vec![Family::of(&address)],
        }
    }

    pub fn md5(mut self, password: &str) -> Self {
        self.md5_password = Some(password.to_owned());
        self
    }

    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    pub fn graceful_restart(mut self) -> Self {
        self.graceful_restart = true;
        self
    }

    pub fn rr_client(mut self) -> Self {
        self.route_reflector_client = true;
        self
    }

    pub fn multihop(mut self) -> Self {
        self.multihop = true;
        self
    }

    pub fn multihop_ttl(mut self, ttl: u8) -> Self {
        self.multihop = true;
        self.multihop_ttl = Some(ttl);
        self
    }

    pub fn ttl_security(mut self) -> Self {
        self.ttl_security = true;
        self
    }

    pub fn hold_time(mut self, seconds: u16) -> Self {
        self.hold_time = seconds;
        self
    }

    pub fn families(mut self, families: &[Family]) -> Self {
        self.families = families.to_vec();
        self
    }

    fn carries(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// What a daemon is configured with; the same struct drives all three daemons.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Addresses of this daemon (informational; sessions bind to the address the
    /// kernel picks towards each neighbor).
    pub local_addresses: Vec<IpAddr>,
    pub neighbors: Vec<Neighbor>,
    /// Prefixes originated at start (BIRD: static blackhole routes; FRR: `network`;
    /// GoBGP: `global rib add` right after start).
    pub prefixes: Vec<IpNet>,
    /// Install learned routes into the namespace's kernel table (BIRD: kernel protocol
    /// exporting BGP routes; FRR: zebra; ignored by GoBGP, which never installs routes).
    pub install_kernel_routes: bool,
}

impl PeerConfig {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> PeerConfig {
        PeerConfig {
            asn,
            router_id,
            local_addresses: Vec::new(),
            neighbors: Vec::new(),
            prefixes: Vec::new(),
            install_kernel_routes: false,
        }
    }

    pub fn neighbor(mut self, n: Neighbor) -> Self {
        self.neighbors.push(n);
        self
    }

    pub fn originate(mut self, prefixes: &[&str]) -> Self {
        self.prefixes.extend(
            prefixes
                .iter()
                .map(|p| p.parse::<IpNet>().expect("prefix").trunc()),
        );
        self
    }

    pub fn local(mut self, addrs: &[&str]) -> Self {
        self.local_addresses
            .extend(addrs.iter().map(|a| a.parse::<IpAddr>().expect("address")));
        self
    }

    pub fn kernel(mut self, install: bool) -> Self {
        self.install_kernel_routes = install;
        self
    }

    fn families(&self) -> Vec<Family> {
        let mut f = Vec::new();
        for fam in [Family::Ipv4, Family::Ipv6] {
            if self.neighbors.iter().any(|n| n.carries(fam))
                || self.prefixes.iter().any(|p| Family::of_net(p) == fam)
            {
                f.push(fam);
            }
        }
        f
    }
}

/// A route a daemon learned from a neighbor (locally originated routes are excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedRoute {
    pub prefix: IpNet,
    pub next_hop: IpAddr,
    pub as_path: Vec<u32>,
    /// Retained across a neighbor's restart (graceful restart); best effort per daemon.
    pub stale: bool,
    pub local_pref: Option<u32>,
}

/// The query side shared by all daemons.
pub trait BgpPeer {
    /// The daemon's name for error messages ("bird", "frr", "gobgp").
    fn kind(&self) -> &'static str;

    /// The daemon's own description of the session with `neighbor` (state name and
    /// whatever detail it gives), for error messages.
    fn session_state(&self, neighbor: IpAddr) -> String;

    fn established(&self, neighbor: IpAddr) -> bool;

    /// Routes of `family` learned from neighbors; all paths, not only the best.
    fn learned_routes(&self, family: Family) -> Result<Vec<LearnedRoute>, String>;

    /// How many paths of `family` were learned from neighbors. Daemons override this
    /// with a cheap summary query (for route-scale tests with 100k routes).
    fn learned_count(&self, family: Family) -> Result<usize, String> {
        self.learned_routes(family).map(|r| r.len())
    }

    /// Waits until exactly `n` paths of `family` are learned.
    fn wait_count(&self, family: Family, n: usize, timeout: Duration) -> Result<(), String> {
        let mut last = Err(String::from("never queried"));
        if wait_until(timeout, || {
            last = self.learned_count(family);
            matches!(last, Ok(c) if c == n)
        }) {
            return Ok(());
        }
        Err(format!(
            "{}: expected {n} {family:?} paths within {timeout:?}, last count: {last:?}\n{}",
            self.kind(),
            self.diagnostics()
        ))
    }

    /// Starts originating `prefix`.
    fn announce(&mut self, prefix: IpNet) -> Result<(), String>;

    /// Stops originating `prefix`.
    fn withdraw(&mut self, prefix: IpNet) -> Result<(), String>;

    /// Sessions, routes and the tail of the log, for a failure report.
    fn diagnostics(&self) -> String;

    fn wait_established(&self, neighbor: IpAddr, timeout: Duration) -> Result<(), String> {
        if wait_until(timeout, || self.established(neighbor)) {
            return Ok(());
        }
        Err(format!(
            "{}: session with {neighbor} not Established after {timeout:?}; the daemon says: {}\n{}",
            self.kind(),
            self.session_state(neighbor),
            self.diagnostics()
        ))
    }

    /// Waits until `pred` holds for the learned routes of `family`; returns them.
    fn wait_routes(
        &self,
        family: Family,
        timeout: Duration,
        pred: &dyn Fn(&[LearnedRoute]) -> bool,
    ) -> Result<Vec<LearnedRoute>, String> {
        let mut last = Err(String::from("never queried"));
        let ok = wait_until(timeout, || {
            last = self.learned_routes(family);
            matches!(&last, Ok(r) if pred(r))
        });
        match last {
            Ok(routes) if ok => Ok(routes),
            last => Err(format!(
                "{}: {family:?} routes did not reach the expected state in {timeout:?}; \
                 last query: {last:#?}\n{}",
                self.kind(),
                self.diagnostics()
            )),
        }
    }

    /// Waits until exactly the prefixes `want` (any order) are learned for `family`.
    fn wait_prefixes(
        &self,
        family: Family,
        want: &[IpNet],
        timeout: Duration,
    ) -> Result<Vec<LearnedRoute>, String> {
        let mut want: Vec<IpNet> = want.to_vec();
        want.sort();
        self.wait_routes(family, timeout, &|routes| {
            let mut got: Vec<IpNet> = routes.iter().map(|r| r.prefix).collect();
            got.sort();
            got.dedup();
            got == want
        })
    }
}

/// Test shorthands: an address, a prefix, and a harness result or a panic with its report.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon process spawned by the harness: killed (SIGKILL, which also makes it a
/// realistic graceful-restart trigger) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn new(name: &str, child: Child, log: PathBuf) -> Proc {
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Err with the exit status if the process already died.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Err(format!(
                "{} exited ({status}); log:\n{}",
                self.name,
                tail(&self.log, 40)
            )),
            _ => Ok(()),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file (or why it could not be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(s) => {
            let all: Vec<&str> = s.lines().collect();
            let from = all.len().saturating_sub(lines);
            let mut out = String::new();
            for l in &all[from..] {
                let _ = writeln!(out, "  | {l}");
            }
            out
        }
        Err(e) => format!("  (cannot read {}: {e})", path.display()),
    }
}

/// Makes a per-daemon state directory under `base` that the daemon can write even
/// after dropping privileges (FRR runs as user `frr`).
fn state_dir(base: &Path, name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = base.join(name);
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for d in [base, dir.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", d.display()))?;
    }
    Ok(dir)
}

/// `n` consecutive IPv4 prefixes of length `len` starting at `base` (e.g. 100k /26s
/// from 10.64.0.0 for the bench/bgp route-scale benchmark).
pub fn bulk_prefixes_v4(base: Ipv4Addr, len: u8, n: usize) -> Vec<IpNet> {
    let step = 1u64 << (32 - u32::from(len));
    let start = u64::from(u32::from(base));
    assert!(
        start + step * n as u64 <= 1 << 32,
        "{n} /{len} prefixes from {base} overflow the IPv4 space"
    );
    (0..n as u64)
        .map(|i| {
            let addr = Ipv4Addr::from((start + i * step) as u32);
            IpNet::V4(Ipv4Net::new(addr, len).expect("valid prefix length"))
        })
        .collect()
}

/// Parses an "x.x.x.x/len" or "x::/len" string the daemons print.
fn parse_net(s: &str) -> Option<IpNet> {
    s.trim().parse().ok()
}
