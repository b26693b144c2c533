//! Kernel route sync against a real kernel (root required; the test panics without it).
//!
//! ```text
//!   trl-b<pid>-kern-<case>
//!   ka 192.0.2.1/24 2001:db8:a::1/64 ───veth─── kb 198.51.100.1/24 2001:db8:b::1/64
//!   KernelSync + RtNetlinkTable on a thread that setns'ed into the namespace
//! ```
//!
//! Each case gets its own namespace, with a veth pair whose ends both stay inside it (this
//! kernel has no dummy devices): the gateways 192.0.2.2, 198.51.100.2, 2001:db8:a::2,
//! 2001:db8:b::2 and fe80::2 are on-link through the connected routes of its addresses. The
//! sync runs on a dedicated OS thread that enters the namespace with `setns` and opens its
//! netlink socket there; routes are checked with `ip -n NS -j route`. Nothing is done in the
//! root namespace. Namespaces are deleted by a guard, and ones a crashed run left (their pid is
//! gone) at the start.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipnet::IpNet;
use nix::sched::{setns, CloneFlags};
use trellis_bgp_speaker::kernel::{
    flush_ours, ApplyStats, KernelError, KernelRoute, KernelSync, KernelSyncConfig, NextHop,
    RouteTable, RtNetlinkTable, MAIN_TABLE,
};

use trellis_test_support::netns::{ip, run};

const RUN_PREFIX: &str = "trl-b";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel_netns needs root (it creates network namespaces); run it as root, it never \
         skips"
    );
}

/// Removes namespaces `trl-b<pid>-kern-…` whose process is gone (a crashed or killed run).
fn cleanup_stale() {
    for line in ip("netns list").lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(RUN_PREFIX) else {
            continue;
        };
        // Only this test's namespaces: other BGP tests share the `trl-b` prefix.
        let Some((pid, "kern")) = rest
            .split_once('-')
            .map(|(pid, tail)| (pid, tail.split('-').next().unwrap_or("")))
        else {
            continue;
        };
        if !pid.is_empty()
            && pid.chars().all(|c| c.is_ascii_digit())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// This case's namespace; deleted on drop, even when the test panics.
struct Netns {
    name: String,
    /// Interface index of `ka`.
    ka: u32,
}

impl Netns {
    fn create(case: &str) -> Netns {
        require_root();
        cleanup_stale();
        let name = format!("{RUN_PREFIX}{}-kern-{case}", std::process::id());
        ip(&format!("netns add {name}"));
        let mut ns = Netns { name, ka: 0 };
        let n = ns.name.clone();
        ip(&format!("-n {n} link set lo up"));
        ip(&format!("-n {n} link add ka type veth peer name kb"));
        for (dev, v4, v6) in [
            ("ka", "192.0.2.1/24", "2001:db8:a::1/64"),
            ("kb", "198.51.100.1/24", "2001:db8:b::1/64"),
        ] {
            ip(&format!("-n {n} addr add {v4} dev {dev}"));
            ip(&format!("-n {n} addr add {v6} dev {dev} nodad"));
            ip(&format!("-n {n} link set {dev} up"));
        }
        ns.ka = ns.ifindex("ka");
        ns
    }

    fn ifindex(&self, dev: &str) -> u32 {
        let out = ip(&format!("-n {} -j link show {dev}", self.name));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["ifindex"].as_u64().expect("ifindex") as u32
    }

    fn routes(&self, v6: bool, selector: &str) -> BTreeMap<String, Vec<String>> {
        routes(&self.name, v6, selector)
    }

    fn ours(&self) -> BTreeMap<String, Vec<String>> {
        ours(&self.name)
    }

    /// Runs `f` on a thread inside the namespace, with a current-thread tokio runtime (the
    /// netlink socket `f` opens is then in the namespace).
    fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        });
        thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "could not delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `ip -n NS [-6] -j route show SELECTOR`: destination -> sorted "via GW dev DEV [onlink]
/// metric M" of each next hop.
fn routes(ns: &str, v6: bool, selector: &str) -> BTreeMap<String, Vec<String>> {
    let family = if v6 { "-6" } else { "-4" };
    let out = ip(&format!("-n {ns} {family} -j route show {selector}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut map = BTreeMap::new();
    for r in v.as_array().unwrap() {
        let metric = r["metric"].as_u64().unwrap_or(0);
        let hop = |h: &serde_json::Value| {
            let onlink = h["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "onlink"));
            format!(
                "via {} dev {}{} metric {metric}",
                h["gateway"].as_str().unwrap_or("-"),
                h["dev"].as_str().unwrap_or("-"),
                if onlink { " onlink" } else { "" }
            )
        };
        let mut hops: Vec<String> = match r["nexthops"].as_array() {
            Some(hs) => hs.iter().map(hop).collect(),
            None => vec![hop(r)],
        };
        hops.sort();
        map.insert(r["dst"].as_str().unwrap().to_string(), hops);
    }
    map
}

/// Our routes (protocol 81) of both families.
fn ours(ns: &str) -> BTreeMap<String, Vec<String>> {
    let mut all = routes(ns, false, "proto 81");
    all.extend(routes(ns, true, "proto 81"));
    all
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn route(prefix: &str, hops: impl IntoIterator<Item = NextHop>) -> KernelRoute {
    KernelRoute::new(net(prefix), hops)
}

fn via(gateway: &str) -> NextHop {
    NextHop::via(addr(gateway))
}

/// v4 and v6, single next hop and ECMP, link-local with a device, onlink.
fn desired(ka: u32) -> Vec<KernelRoute> {
    vec![
        route("10.244.1.0/26", [via("192.0.2.2")]),
        route("10.244.2.0/26", [via("192.0.2.2"), via("198.51.100.2")]),
        route("10.244.3.0/26", [via("203.0.113.1").dev(ka).onlink()]),
        route("2001:db8:1::/64", [via("fe80::2").dev(ka)]),
        route(
            "2001:db8:2::/64",
            [via("2001:db8:a::2"), via("2001:db8:b::2")],
        ),
    ]
}

fn expected_desired() -> BTreeMap<String, Vec<String>> {
    let e = |d: &str, hops: &[&str]| {
        (
            d.to_string(),
            hops.iter().map(|h| format!("{h} metric 20")).collect(),
        )
    };
    BTreeMap::from([
        e("10.244.1.0/26", &["via 192.0.2.2 dev ka"]),
        e(
            "10.244.2.0/26",
            &["via 192.0.2.2 dev ka", "via 198.51.100.2 dev kb"],
        ),
        e("10.244.3.0/26", &["via 203.0.113.1 dev ka onlink"]),
        e("2001:db8:1::/64", &["via fe80::2 dev ka"]),
        e(
            "2001:db8:2::/64",
            &["via 2001:db8:a::2 dev ka", "via 2001:db8:b::2 dev kb"],
        ),
    ])
}

fn new_sync() -> KernelSync {
    KernelSync::new(KernelSyncConfig::default()).unwrap()
}

#[test]
fn installs_v4_and_v6_single_and_ecmp_routes() {
    let ns = Netns::create("install");
    let ka = ns.ka;
    let (first, second) = ns.run(move || async move {
        let table = RtNetlinkTable::connect().unwrap();
        let mut sync = new_sync();
        sync.set_desired(desired(ka)).unwrap();
        let first = sync.apply(&table).await.unwrap();
        sync.request_resync();
        let second = sync.apply(&table).await.unwrap();
        (first, second)
    });
    assert_eq!((first.resynced, first.found, first.created), (true, 0, 5));
    assert_eq!(ns.ours(), expected_desired());
    // A resync reads back exactly what was written: nothing to do.
    assert_eq!((second.found, second.writes), (5, 0), "{second:?}");
}

#[test]
fn a_restarted_sync_adopts_the_routes_without_any_write_or_gap() {
    let ns = Netns::create("restart");
    let ka = ns.ka;
    let name = ns.name.clone();
    let (before, monitor, stats) = ns.run(move || async move {
        let table = RtNetlinkTable::connect().unwrap();
        let mut sync = new_sync();
        sync.set_desired(desired(ka)).unwrap();
        sync.apply(&table).await.unwrap();
        let before = ours(&name);

        // Watch every route event from here on: a flush and re-add would show up.
        let mut monitor = Command::new("ip")
            .args(["-n", &name, "monitor", "route"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The "process" stops (default shutdown: routes stay) and a new one starts.
        drop(sync);
        drop(table);
        let table = RtNetlinkTable::connect().unwrap();
        let mut sync = new_sync();
        sync.set_desired(desired(ka)).unwrap();
        let stats = sync.apply(&table).await.unwrap();
        // Positive control for the monitor: one route written on purpose.
        sync.upsert(route("10.244.9.0/26", [via("192.0.2.2")]))
            .unwrap();
        sync.apply(&table).await.unwrap();

        tokio::time::sleep(Duration::from_millis(300)).await;
        monitor.kill().unwrap();
        let mut events = String::new();
        monitor
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut events)
            .unwrap();
        monitor.wait().unwrap();
        (before, events, stats)
    });
    assert_eq!(
        stats,
        ApplyStats {
            resynced: true,
            found: 5,
            ..ApplyStats::default()
        }
    );
    let events: Vec<&str> = monitor.lines().collect();
    assert!(
        events.len() == 1 && events[0].starts_with("10.244.9.0/26 via 192.0.2.2"),
        "route events other than the control's during the restart: {events:?}"
    );
    assert_eq!(before, expected_desired());
    let mut after = ns.ours();
    assert!(after.remove("10.244.9.0/26").is_some());
    assert_eq!(after, before);
}

#[test]
fn a_changed_next_hop_is_replaced_and_a_removed_prefix_deleted() {
    let ns = Netns::create("change");
    let ka = ns.ka;
    let stats = ns.run(move || async move {
        let table = RtNetlinkTable::connect().unwrap();
        let mut sync = new_sync();
        sync.set_desired(desired(ka)).unwrap();
        sync.apply(&table).await.unwrap();
        // ECMP -> single, single -> another gateway, v6 ECMP -> one hop; one prefix goes.
        sync.upsert(route("10.244.2.0/26", [via("198.51.100.2")]))
            .unwrap();
        sync.upsert(route("10.244.1.0/26", [via("198.51.100.3")]))
            .unwrap();
        sync.upsert(route("2001:db8:2::/64", [via("2001:db8:b::2")]))
            .unwrap();
        sync.remove(net("2001:db8:1::/64"));
        sync.apply(&table).await.unwrap()
    });
    assert_eq!(
        (stats.resynced, stats.replaced, stats.deleted, stats.created),
        (false, 3, 1, 0)
    );
    let mut want = expected_desired();
    want.remove("2001:db8:1::/64");
    want.insert(
        "10.244.2.0/26".into(),
        vec!["via 198.51.100.2 dev kb metric 20".into()],
    );
    want.insert(
        "10.244.1.0/26".into(),
        vec!["via 198.51.100.3 dev kb metric 20".into()],
    );
    want.insert(
        "2001:db8:2::/64".into(),
        vec!["via 2001:db8:b::2 dev kb metric 20".into()],
    );
    assert_eq!(ns.ours(), want);
}

#[test]
fn routes_of_other_protocols_survive_every_apply_and_a_flush() {
    let ns = Netns::create("foreign");
    let n = ns.name.clone();
    ip(&format!(
        "-n {n} route add 10.99.0.0/24 via 192.0.2.2 proto static"
    ));
    // Same prefix, table and metric as ours would have: a replace would overwrite it.
    ip(&format!(
        "-n {n} route add 10.98.0.0/24 via 192.0.2.2 proto static metric 20"
    ));
    ip(&format!(
        "-n {n} -6 route add 2001:db8:99::/64 via 2001:db8:a::2 proto static"
    ));
    let foreign = || {
        let mut all = ns.routes(false, "proto static");
        all.extend(ns.routes(true, "proto static"));
        all
    };
    let before = foreign();
    assert_eq!(before.len(), 3, "{before:?}");

    let (first, second, flushed, left) = ns.run(move || async move {
        let table = RtNetlinkTable::connect().unwrap();
        let mut sync = new_sync();
        sync.set_desired([
            route("10.99.0.0/24", [via("198.51.100.2")]),
            route("10.98.0.0/24", [via("198.51.100.2")]),
            route("2001:db8:99::/64", [via("2001:db8:b::2")]),
        ])
        .unwrap();
        let first = sync.apply(&table).await;
        let second = sync.apply(&table).await;
        let left = ns_ours_count(&table).await;
        let flushed = flush_ours(&table, MAIN_TABLE).await.unwrap();
        (first, second, flushed, left)
    });
    for result in [first, second] {
        let err = result.unwrap_err();
        let KernelError::Apply { failures, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            matches!(failures.as_slice(), [KernelError::Conflict { prefix, .. }] if *prefix == net("10.98.0.0/24")),
            "{err}"
        );
        assert!(
            err.to_string().contains("10.98.0.0/24 not installed"),
            "{err}"
        );
    }
    // Ours coexist at metric 20 with the static routes at 0 and 1024.
    assert_eq!(left, 2);
    assert_eq!(flushed, 2);
    assert_eq!(foreign(), before, "a route of another protocol changed");
    assert!(ns.ours().is_empty());
}

async fn ns_ours_count(table: &RtNetlinkTable) -> usize {
    table.dump_ours(MAIN_TABLE).await.unwrap().len()
}

#[test]
fn an_unreachable_next_hop_is_named_and_the_other_routes_still_applied() {
    let ns = Netns::create("unreach");
    let ka = ns.ka;
    let (err, retry) = ns.run(move || async move {
        let table = RtNetlinkTable::connect().unwrap();
        let mut sync = new_sync();
        let mut routes = desired(ka);
        // No connected route covers 203.0.113.9, and it is not onlink.
        routes.push(route("10.5.0.0/24", [via("203.0.113.9")]));
        sync.set_desired(routes).unwrap();
        let err = sync.apply(&table).await.unwrap_err();
        sync.remove(net("10.5.0.0/24"));
        let retry = sync.apply(&table).await.unwrap();
        (err, retry)
    });
    let KernelError::Apply { failures, stats } = &err else {
        panic!("{err}")
    };
    assert_eq!((stats.created, stats.failures), (5, 1), "{err}");
    let [KernelError::Write { prefix, source, .. }] = failures.as_slice() else {
        panic!("{err}")
    };
    assert_eq!(*prefix, net("10.5.0.0/24"));
    assert!(source.errno.is_some(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("add route 10.5.0.0/24 via 203.0.113.9") && text.contains("os error"),
        "{text}"
    );
    // The pass after the failure resyncs and finds everything else in place.
    assert_eq!((retry.resynced, retry.found, retry.writes), (true, 5, 0));
    assert_eq!(ns.ours(), expected_desired());
}
