//! The probing half of NetworkPolicy conformance, after the Kubernetes e2e suite
//! (`test/e2e/network/netpol`): namespaces x, y, z, each with pods a, b, c (label `pod=NAME`, a
//! on node-1, b on node-2, c on node-3), every pod serving TCP and UDP 80 and 81 (SCTP too where
//! the kernel has it); a test states a [`Reachability`] truth table over all ordered pod pairs
//! and ports, [`NetpolLab::probe`] measures one with real connections, and [`assert_matches`]
//! prints the full table when they differ.
//!
//! ```ignore
//! let lab = NetpolLab::up();
//! lab.apply("kind: NetworkPolicy ...");
//! let ports = [Port::tcp(80), Port::udp(80)];
//! let mut expected = lab.reachability(&ports, true);
//! expected.expect_to("x/*", false).allow_loopback();
//! expected.on(Port::tcp(80)).expect("y/a", "x/a", true);
//! assert_matches(&expected, &lab.probe(&ports));
//! ```
//!
//! A test crate using it declares `mod lab_support;` too.
#![allow(dead_code)]

use std::fmt::{self, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab_support::{lab_bin, ok, require_root_and_binaries, Lab};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// Pod NAME runs on node-(index + 1).
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// What every pod serves.
pub const SERVED_PORTS: [u16; 2] = [80, 81];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub proto: Proto,
    pub port: u16,
}

impl Port {
    pub fn tcp(port: u16) -> Port {
        Port {
            proto: Proto::Tcp,
            port,
        }
    }
    pub fn udp(port: u16) -> Port {
        Port {
            proto: Proto::Udp,
            port,
        }
    }
    pub fn sctp(port: u16) -> Port {
        Port {
            proto: Proto::Sctp,
            port,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto, self.port)
    }
}

/// `NAME=PORT/PROTO` for `trellis-lab pod add --ports`, with the e2e suite's container port name
/// (`serve-80-tcp`, model.go `Container.PortName`), which its named-port cases refer to.
fn named_port(port: Port) -> String {
    format!(
        "{}={}/{}",
        port_name(port),
        port.port,
        port.proto.to_string().to_uppercase()
    )
}

/// The name every pod gives `port`: `serve-80-tcp`, `serve-81-udp`...
pub fn port_name(port: Port) -> String {
    format!("serve-{}-{}", port.port, port.proto)
}

/// Every pod's named ports as `trellisctl ports pod` items: [`port_name`] of TCP, UDP and SCTP
/// on each of [`SERVED_PORTS`] (`serve-80-tcp=80/TCP`...).
pub fn named_ports() -> Vec<String> {
    [Proto::Tcp, Proto::Udp, Proto::Sctp]
        .iter()
        .flat_map(|&proto| SERVED_PORTS.map(|port| named_port(Port { proto, port })))
        .collect()
}

/// Whether pod `id` (`NS/POD`) matches `selector`: `x/a` one pod, `x/*` a namespace, `*/a` a
/// pod name in every namespace, `*` (or `*/*`) all; the e2e suite's `Peer{Namespace, Pod}`.
fn selects(selector: &str, id: &str) -> bool {
    let (sns, spod) = selector.split_once('/').unwrap_or((selector, "*"));
    let (ns, pod) = id.split_once('/').expect("pod ids are NS/POD");
    (sns == "*" || sns == ns) && (spod == "*" || spod == pod)
}

/// A truth table: may pod `from` connect to pod `to` on `port`, for every ordered pair (a pod to
/// itself included) and every port. Built by tests as the expectation, returned by
/// [`NetpolLab::probe`] as what happened (then with each probe's output line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    pods: Vec<String>,
    ports: Vec<Port>,
    /// `[port][from][to]`, flattened.
    cells: Vec<bool>,
    /// The probe's output per cell (empty in an expectation).
    details: Vec<String>,
}

impl Reachability {
    /// Every pair on every port set to `connected`.
    pub fn new(pods: &[String], ports: &[Port], connected: bool) -> Reachability {
        let n = pods.len() * pods.len() * ports.len();
        Reachability {
            pods: pods.to_vec(),
            ports: ports.to_vec(),
            cells: vec![connected; n],
            details: vec![String::new(); n],
        }
    }

    pub fn pods(&self) -> &[String] {
        &self.pods
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    fn index(&self, port: usize, from: usize, to: usize) -> usize {
        (port * self.pods.len() + from) * self.pods.len() + to
    }

    fn port_index(&self, port: Port) -> usize {
        self.ports
            .iter()
            .position(|&p| p == port)
            .unwrap_or_else(|| panic!("{port} is not among the table's ports {:?}", self.ports))
    }

    fn pod_index(&self, id: &str) -> usize {
        self.pods
            .iter()
            .position(|p| p == id)
            .unwrap_or_else(|| panic!("no pod {id} in the table ({:?})", self.pods))
    }

    /// Sets the cells of pods matching `from` x pods matching `to` on `ports` (None: all).
    fn set(&mut self, port: Option<usize>, from: &str, to: &str, connected: bool) -> &mut Self {
        let (mut any_from, mut any_to) = (false, false);
        for pi in 0..self.ports.len() {
            if port.is_some_and(|p| p != pi) {
                continue;
            }
            for fi in 0..self.pods.len() {
                if !selects(from, &self.pods[fi]) {
                    continue;
                }
                any_from = true;
                for ti in 0..self.pods.len() {
                    if selects(to, &self.pods[ti]) {
                        any_to = true;
                        let i = self.index(pi, fi, ti);
                        self.cells[i] = connected;
                    }
                }
            }
        }
        // A selector that matches nothing is a typo in the test, not an expectation.
        assert!(
            any_from && any_to,
            "{from:?} -> {to:?} selects no pod pair of {:?}",
            self.pods
        );
        self
    }

    /// Every pair, every port.
    pub fn expect_all(&mut self, connected: bool) -> &mut Self {
        self.set(None, "*", "*", connected)
    }

    /// From the pods `from` selects (`x/a`, `x/*`, `*/a`, `*`) to every pod, every port.
    pub fn expect_from(&mut self, from: &str, connected: bool) -> &mut Self {
        self.set(None, from, "*", connected)
    }

    /// From every pod to the pods `to` selects, every port.
    pub fn expect_to(&mut self, to: &str, connected: bool) -> &mut Self {
        self.set(None, "*", to, connected)
    }

    /// From the pods `from` selects to the pods `to` selects, every port.
    pub fn expect(&mut self, from: &str, to: &str, connected: bool) -> &mut Self {
        self.set(None, from, to, connected)
    }

    /// Every pod reaches itself on every port (the e2e suite's `AllowLoopback`): a pod's
    /// connections to its own address go through its `lo`, never its veth, so no policy
    /// enforced at the veth or in the node can see them.
    pub fn allow_loopback(&mut self) -> &mut Self {
        for pi in 0..self.ports.len() {
            for i in 0..self.pods.len() {
                let c = self.index(pi, i, i);
                self.cells[c] = true;
            }
        }
        self
    }

    /// The same builders, on one port only.
    pub fn on(&mut self, port: Port) -> OnPort<'_> {
        let port = self.port_index(port);
        OnPort { r: self, port }
    }

    pub fn get(&self, from: &str, to: &str, port: Port) -> bool {
        self.cells[self.index(
            self.port_index(port),
            self.pod_index(from),
            self.pod_index(to),
        )]
    }

    /// The probe's output line for a cell of a probed table.
    pub fn detail(&self, from: &str, to: &str, port: Port) -> &str {
        &self.details[self.index(
            self.port_index(port),
            self.pod_index(from),
            self.pod_index(to),
        )]
    }

    /// One port's table: rows from, columns to, `cell(expected index)` in each.
    fn table(&self, port: usize, cell: impl Fn(usize) -> char) -> Vec<String> {
        let width = self.pods.iter().map(String::len).max().unwrap_or(1) + 1;
        let mut rows = vec![format!(
            "{:width$}{}",
            "",
            self.pods
                .iter()
                .map(|p| format!("{p:width$}"))
                .collect::<String>()
        )];
        for fi in 0..self.pods.len() {
            let mut row = format!("{:width$}", self.pods[fi]);
            for ti in 0..self.pods.len() {
                row.push_str(&format!("{:width$}", cell(self.index(port, fi, ti))));
            }
            rows.push(row);
        }
        rows
    }
}

/// [`Reachability`]'s builders on one port: `expected.on(Port::udp(81)).expect_to("x/a", false)`.
#[derive(Debug)]
pub struct OnPort<'a> {
    r: &'a mut Reachability,
    port: usize,
}

impl OnPort<'_> {
    pub fn expect_all(&mut self, connected: bool) -> &mut Self {
        self.r.set(Some(self.port), "*", "*", connected);
        self
    }
    pub fn expect_from(&mut self, from: &str, connected: bool) -> &mut Self {
        self.r.set(Some(self.port), from, "*", connected);
        self
    }
    pub fn expect_to(&mut self, to: &str, connected: bool) -> &mut Self {
        self.r.set(Some(self.port), "*", to, connected);
        self
    }
    pub fn expect(&mut self, from: &str, to: &str, connected: bool) -> &mut Self {
        self.r.set(Some(self.port), from, to, connected);
        self
    }
}

/// The comparison in the e2e suite's style, per port: expected and actual (`1` connects, `0`
/// does not) and their comparison (`.` as expected, `X` wrong); rows are from, columns to.
/// Then every wrong cell with its probe's output.
pub fn render(expected: &Reachability, actual: &Reachability) -> String {
    assert_eq!(
        (&expected.pods, &expected.ports),
        (&actual.pods, &actual.ports),
        "the tables compare different pods or ports"
    );
    let bit = |b: bool| if b { '1' } else { '0' };
    let wrong: Vec<usize> = (0..expected.cells.len())
        .filter(|&i| expected.cells[i] != actual.cells[i])
        .collect();
    let mut out = format!(
        "{} of {} probes not as expected\n",
        wrong.len(),
        expected.cells.len()
    );
    for (pi, port) in expected.ports.iter().enumerate() {
        let e = expected.table(pi, |i| bit(expected.cells[i]));
        let a = actual.table(pi, |i| bit(actual.cells[i]));
        let c = expected.table(pi, |i| {
            if expected.cells[i] == actual.cells[i] {
                '.'
            } else {
                'X'
            }
        });
        let w = e[0].len();
        let _ = writeln!(
            out,
            "\n{port}\n{:w$}  | {:w$}  | comparison",
            "expected", "actual"
        );
        for ((e, a), c) in e.iter().zip(&a).zip(&c) {
            let _ = writeln!(out, "{e:w$}  | {a:w$}  | {c}");
        }
    }
    if !wrong.is_empty() {
        out.push_str("\nwrong:\n");
        let n = expected.pods.len();
        for i in wrong {
            let (pi, fi, ti) = (i / (n * n), i / n % n, i % n);
            let _ = writeln!(
                out,
                "  {} {} -> {}: expected {}, probe: {}",
                expected.ports[pi],
                expected.pods[fi],
                expected.pods[ti],
                if expected.cells[i] {
                    "connected"
                } else {
                    "blocked"
                },
                actual.details[i]
            );
        }
    }
    out
}

/// `Err` with the full tables ([`render`]) unless `actual` is `expected`.
pub fn check(expected: &Reachability, actual: &Reachability) -> Result<(), String> {
    if expected.cells == actual.cells {
        Ok(())
    } else {
        Err(render(expected, actual))
    }
}

/// Fails, printing the full tables, unless `actual` is `expected`.
pub fn assert_matches(expected: &Reachability, actual: &Reachability) {
    if let Err(tables) = check(expected, actual) {
        panic!("reachability:\n{tables}");
    }
}

/// A pod of the lab.
#[derive(Debug, Clone)]
pub struct NetpolPod {
    /// `NS/POD`.
    pub id: String,
    pub node: String,
    pub ip: String,
}

/// The lab of the conformance tests; torn down on drop.
#[derive(Debug)]
pub struct NetpolLab {
    pub name: String,
    pub pods: Vec<NetpolPod>,
    /// What `pod serve` printed for every pod: the ports served, and SCTP ports that are not.
    pub serve_report: String,
    /// Whether the pods serve SCTP (false on a kernel without SCTP sockets).
    pub sctp: bool,
    /// Per probe; a blocked connection costs this much.
    pub timeout: Duration,
    _lab: Lab,
}

impl NetpolLab {
    /// 3 nodes over VXLAN, namespaces x, y, z labelled `ns: NAME`, pods a, b, c in each
    /// labelled `pod: NAME` (a on node-1, b on node-2, c on node-3), all serving, each with the
    /// e2e suite's named container ports ([`port_name`]: `serve-80-tcp`... for TCP, UDP and
    /// SCTP, 80 and 81).
    pub fn up() -> NetpolLab {
        require_root_and_binaries("the lab creates network namespaces");
        // Tests of one binary run in parallel: each lab gets its own name.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("np{}{n}", std::process::id() % 100_000);
        let guard = Lab(name.clone());
        ok(&[
            "up", "--name", &name, "--nodes", "3", "--encap", "vxlan", "--policy",
        ]);
        let mut lab = NetpolLab {
            name: name.clone(),
            pods: Vec::new(),
            serve_report: String::new(),
            sctp: false,
            timeout: Duration::from_millis(1000),
            _lab: guard,
        };
        let namespaces: String = NAMESPACES
            .iter()
            .map(|ns| {
                format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n")
            })
            .collect();
        lab.apply(&namespaces);
        let ports: Vec<String> = SERVED_PORTS.iter().map(u16::to_string).collect();
        let ports = ports.join(",");
        let named_ports = named_ports().join(",");
        for ns in NAMESPACES {
            for (i, pod) in PODS.iter().enumerate() {
                let id = format!("{ns}/{pod}");
                let node = format!("node-{}", i + 1);
                let out = ok(&[
                    "pod",
                    "add",
                    &name,
                    &node,
                    &id,
                    "--labels",
                    &format!("pod={pod}"),
                    "--ports",
                    &named_ports,
                ]);
                let ip = out
                    .split_whitespace()
                    .find(|w| w.starts_with("10.244."))
                    .unwrap_or_else(|| panic!("no IPv4 address in {out}"))
                    .to_string();
                let served = ok(&[
                    "pod", "serve", &name, &id, "--tcp", &ports, "--udp", &ports, "--sctp", &ports,
                ]);
                lab.serve_report.push_str(&served);
                lab.pods.push(NetpolPod { id, node, ip });
            }
        }
        lab.sctp = lab.serve_report.contains("sctp 80: listening");
        lab
    }

    /// `NS/POD` of every pod, in table order (x/a, x/b, ... z/c).
    pub fn pod_ids(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.id.clone()).collect()
    }

    /// A table over this lab's pods and `ports`, every cell `connected`.
    pub fn reachability(&self, ports: &[Port], connected: bool) -> Reachability {
        Reachability::new(&self.pod_ids(), ports, connected)
    }

    /// `trellisctl apply` of `yaml` (Namespaces, NetworkPolicies...).
    pub fn apply(&self, yaml: &str) {
        let path = std::env::temp_dir().join(format!(
            "trellis-netpol-{}-{}.yaml",
            self.name,
            std::process::id()
        ));
        std::fs::write(&path, yaml).unwrap();
        ok(&[
            "ctl",
            &self.name,
            "--",
            "apply",
            "-f",
            path.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(path);
    }

    /// `trellisctl delete networkpolicy NAME -n NS`.
    pub fn delete_policy(&self, ns: &str, name: &str) {
        ok(&[
            "ctl",
            &self.name,
            "--",
            "delete",
            "networkpolicy",
            name,
            "-n",
            ns,
        ]);
    }

    /// The table `trellisctl policy trace` computes (the same compiler and IR the agents program
    /// the kernel from), one trace per cell, three threads over the source pods (each trace is
    /// a trellisctl process reading the lab's etcd; more at once overload it on two cores).
    pub fn trace(&self, ports: &[Port]) -> Reachability {
        const WORKERS: usize = 3;
        let mut table = self.reachability(ports, false);
        let pods = self.pod_ids();
        let rows: Vec<Vec<(usize, usize, bool, String)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let pods = &pods;
                    scope.spawn(move || {
                        let mut row = Vec::new();
                        for (fi, from) in pods.iter().enumerate().filter(|(i, _)| i % WORKERS == w)
                        {
                            for (ti, to) in pods.iter().enumerate() {
                                for (pi, port) in ports.iter().enumerate() {
                                    let out = self.trace_cell(from, to, *port);
                                    let allowed =
                                        out.lines().next().is_some_and(|l| l.ends_with("ALLOWED"));
                                    row.push((fi * pods.len() + ti, pi, allowed, out));
                                }
                            }
                        }
                        row
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let n = pods.len();
        for (cell, pi, allowed, out) in rows.into_iter().flatten() {
            let i = table.index(pi, cell / n, cell % n);
            table.cells[i] = allowed;
            table.details[i] = out.lines().skip(1).collect::<Vec<_>>().join("; ");
        }
        table
    }

    /// `trellisctl policy trace` of one cell; a datastore that did not answer in time (a loaded
    /// machine) is asked again, twice at most, and anything else fails at once.
    fn trace_cell(&self, from: &str, to: &str, port: Port) -> String {
        let p = port.to_string();
        let args = [
            "ctl", &self.name, "--", "policy", "trace", "--from", from, "--to", to, "--port", &p,
        ];
        for _ in 0..2 {
            let (done, out) = crate::lab_support::lab(&args);
            if done {
                return out;
            }
            if !out.contains("unreachable") {
                panic!("trellis-lab {args:?}: {out}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        ok(&args)
    }

    /// Asserts that the probes converge on `expected` and that `policy trace` says the same.
    pub fn assert_enforced(&self, expected: &Reachability, within: Duration) {
        self.assert_converges(expected, within);
        let traced = self.trace(expected.ports());
        if let Err(diff) = check(expected, &traced) {
            panic!("policy trace disagrees with the probes:\n{diff}");
        }
    }

    /// Probes until the table is `expected` (the agents apply policy asynchronously) or
    /// `within` has passed; then asserts, printing the full tables on a mismatch.
    pub fn assert_converges(&self, expected: &Reachability, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let actual = self.probe(expected.ports());
            if check(expected, &actual).is_ok() || Instant::now() > deadline {
                assert_matches(expected, &actual);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Probes every ordered pod pair (a pod to itself included) on every port with real
    /// connections: one `trellis-lab probe matrix` per source pod, all at once, each probing its
    /// whole row concurrently. A connection that answers with another pod's name counts as not
    /// connected (and says so in the details).
    pub fn probe(&self, ports: &[Port]) -> Reachability {
        let start = Instant::now();
        let mut table = self.reachability(ports, false);
        let targets: Vec<(usize, usize, String)> = ports
            .iter()
            .enumerate()
            .flat_map(|(pi, port)| {
                self.pods.iter().enumerate().map(move |(ti, to)| {
                    (pi, ti, format!("{}:{}:{}", port.proto, to.ip, port.port))
                })
            })
            .collect();
        let children: Vec<_> = self
            .pods
            .iter()
            .map(|from| {
                Command::new(lab_bin())
                    .args(["pod", "exec", &self.name, &from.id, "--"])
                    .arg(lab_bin())
                    .args([
                        "probe",
                        "matrix",
                        "--timeout-ms",
                        &self.timeout.as_millis().to_string(),
                    ])
                    .args(targets.iter().map(|(_, _, t)| t))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (fi, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "probe matrix from {}: {stdout}{}",
                self.pods[fi].id,
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = stdout.lines().collect();
            assert_eq!(
                lines.len(),
                targets.len(),
                "probe matrix from {} printed {stdout}",
                self.pods[fi].id
            );
            for ((pi, ti, target), line) in targets.iter().zip(lines) {
                assert!(
                    line.starts_with(&format!("{target} ")),
                    "{line:?} is not about {target}"
                );
                let to = &self.pods[*ti].id;
                let connected = line.contains(&format!(" connected {to:?} "));
                let i = table.index(*pi, fi, *ti);
                table.cells[i] = connected;
                table.details[i] = if !connected && line.contains(" connected ") {
                    format!("{line} (answered by another pod than {to})")
                } else {
                    line.to_string()
                };
            }
        }
        eprintln!(
            "probed {} pods x {} pods x {} ports in {:?}",
            self.pods.len(),
            self.pods.len(),
            ports.len(),
            start.elapsed()
        );
        table
    }
}
