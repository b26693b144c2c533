//! Node address autodetection against real kernel interfaces. Needs root: each test builds a
//! throwaway network namespace `trl-ad<pid>-<n>` with iproute2, then runs `detect` on a thread
//! that has `setns`-ed into it, so the netlink socket is opened there and the machine's own
//! namespace is never read or touched. The namespace is deleted when the test ends; ones left by
//! a crashed run (their pid is gone) are swept at the start.
//!
//! Topology (ifindexes grow in creation order, and Calico walks them from the highest down):
//! ```text
//!  lo          up    127.0.0.1/8
//!  eth0        up    10.251.1.2/24, fd00:251:1::2/64     mtu 1500  (veth, peer veth0x 10.251.9.1/24)
//!  docker0     up    172.17.0.1/16                       bridge, excluded by default
//!  eth1        up    169.254.7.7/16, 10.251.2.2/24       mtu 9000  (veth, peer vethe1), v6 link-local only
//!  eth2        down  10.251.3.2/24                       bridge
//!  vxlan.trellis up  192.168.77.0/32                     bridge standing in for our tunnel device
//!  routes: 203.0.113.0/24 via 10.251.1.1 (eth0), default via 10.251.2.1 (eth1),
//!          fd00:99::/64 via fd00:251:1::1 (eth0), no IPv6 default
//! ```

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{setns, CloneFlags};
use trellis_agent::autodetect::{
    detect, pod_mtu, AutodetectError, Detected, Encapsulation, Family, Method, NetlinkError,
    SelectError,
};

const PREFIX: &str = "trl-ad";
const NETNS_DIR: &str = "/run/netns";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of this run, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        require_root();
        sweep_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name], None);
        Self { name }
    }

    /// Runs iproute2 commands, one per line, inside the namespace (`ip -n NAME -batch -`).
    fn ip_batch(&self, script: &str) {
        run("ip", &["-n", &self.name, "-batch", "-"], Some(script));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert_eq!(
        euid, "0",
        "autodetect_netns needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network \
         namespaces; run it as root, or run only the unit tests (cargo test --lib)"
    );
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (iproute2 installed?): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("write to ip -batch");
    }
    let out = child.wait_with_output().expect("wait for ip");
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        stdin.map(|s| format!("\nscript:\n{s}")).unwrap_or_default()
    );
}

/// Deletes `trl-ad<pid>-*` namespaces whose process is gone (a crashed earlier run).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// The namespace of the module docs.
fn host() -> Netns {
    let ns = Netns::new();
    ns.ip_batch(
        "link set lo up
link add eth0 mtu 1500 type veth peer name veth0x mtu 1500
link set veth0x up
link set eth0 up
addr add 10.251.1.2/24 dev eth0
addr add fd00:251:1::2/64 dev eth0 nodad
addr add 10.251.9.1/24 dev veth0x
link add docker0 type bridge
link set docker0 up
addr add 172.17.0.1/16 dev docker0
link add eth1 mtu 9000 type veth peer name vethe1 mtu 9000
link set vethe1 up
link set eth1 up
addr add 169.254.7.7/16 dev eth1
addr add 10.251.2.2/24 dev eth1
link add eth2 type bridge
addr add 10.251.3.2/24 dev eth2
link add vxlan.trellis type bridge
link set vxlan.trellis up
addr add 192.168.77.0/32 dev vxlan.trellis
route add 203.0.113.0/24 via 10.251.1.1 dev eth0
route add default via 10.251.2.1 dev eth1
route add fd00:99::/64 via fd00:251:1::1 dev eth0
",
    );
    ns
}

/// Runs `detect` on a thread that has entered `ns`; the netlink socket is opened there.
fn detect_in(ns: &Netns, method: &str, family: Family) -> Result<Detected, AutodetectError> {
    let method: Method = method.parse().unwrap_or_else(|e| panic!("{method:?}: {e}"));
    let path = format!("{NETNS_DIR}/{}", ns.name);
    std::thread::spawn(move || {
        let netns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&netns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(detect(&method, family))
    })
    .join()
    .expect("detection thread panicked")
}

fn found(ns: &Netns, method: &str, family: Family) -> (String, String, u32) {
    let d = detect_in(ns, method, family).unwrap_or_else(|e| panic!("{method}: {e}"));
    (d.address.to_string(), d.interface, d.mtu)
}

fn t(address: &str, interface: &str, mtu: u32) -> (String, String, u32) {
    (address.into(), interface.into(), mtu)
}

#[test]
fn first_found_and_skip_interface() {
    let ns = host();
    // eth2 is down, vxlan.trellis / vethe1 / docker0 are excluded, 169.254.7.7 is link-local.
    assert_eq!(
        found(&ns, "first-found", Family::V4),
        t("10.251.2.2/24", "eth1", 9000)
    );
    // eth1 has only its fe80:: address.
    assert_eq!(
        found(&ns, "first-found", Family::V6),
        t("fd00:251:1::2/64", "eth0", 1500)
    );
    assert_eq!(
        found(&ns, "skip-interface=eth1", Family::V4),
        t("10.251.1.2/24", "eth0", 1500)
    );
    let d = detect_in(&ns, "first-found", Family::V4).unwrap();
    assert_eq!(pod_mtu(d.mtu, Encapsulation::VxlanV4, None), Ok(8950));
    assert_eq!(pod_mtu(d.mtu, Encapsulation::Ipip, Some(1400)), Ok(1400));
}

#[test]
fn interface_and_cidr() {
    let ns = host();
    assert_eq!(
        found(&ns, "interface=^eth0$", Family::V4),
        t("10.251.1.2/24", "eth0", 1500)
    );
    assert_eq!(
        found(&ns, "interface=nomatch,^eth1$", Family::V4),
        t("10.251.2.2/24", "eth1", 9000)
    );
    // No default exclusions for interface= and cidr=, as in Calico.
    assert_eq!(
        found(&ns, "interface=docker0", Family::V4),
        t("172.17.0.1/16", "docker0", 1500)
    );
    assert_eq!(
        found(&ns, "cidr=10.251.1.0/24", Family::V4),
        t("10.251.1.2/24", "eth0", 1500)
    );
    assert_eq!(
        found(&ns, "cidr=192.0.2.0/24, 172.16.0.0/12", Family::V4),
        t("172.17.0.1/16", "docker0", 1500)
    );
    assert_eq!(
        found(&ns, "cidr=fd00::/8", Family::V6),
        t("fd00:251:1::2/64", "eth0", 1500)
    );
    assert_eq!(
        found(&ns, "10.251.2.2", Family::V4),
        t("10.251.2.2/24", "eth1", 9000)
    );

    let e = detect_in(&ns, "interface=^eth2$", Family::V4).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, AutodetectError::Select(SelectError::NothingFound { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("interface=^eth2$ found no IPv4 address"),
        "{msg}"
    );
    assert!(
        msg.contains("eth2 (down)") && msg.contains("eth1 (name not matched)"),
        "{msg}"
    );
}

#[test]
fn can_reach_uses_the_kernels_route() {
    let ns = host();
    assert_eq!(
        found(&ns, "can-reach=203.0.113.7", Family::V4),
        t("10.251.1.2/24", "eth0", 1500)
    );
    assert_eq!(
        found(&ns, "can-reach=198.51.100.1", Family::V4),
        t("10.251.2.2/24", "eth1", 9000)
    );
    assert_eq!(
        found(&ns, "can-reach=fd00:99::1", Family::V6),
        t("fd00:251:1::2/64", "eth0", 1500)
    );
    let e = detect_in(&ns, "can-reach=2001:db8:ffff::1", Family::V6).unwrap_err();
    assert!(
        matches!(
            e,
            AutodetectError::Netlink {
                source: NetlinkError::NoRoute { .. },
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("can-reach=2001:db8:ffff::1") && msg.contains("no route to 2001:db8:ffff::1"),
        "{msg}"
    );
}
