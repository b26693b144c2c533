//! natOutgoing manager against a real kernel (root required; CI runs as root).
//!
//! ```text
//!   trl-nat<pid>-T-pod              trl-nat<pid>-T-node                    trl-nat<pid>-T-out
//!   eth0 10.244.0.5/32  ──veth── vpod 169.254.1.1/32                       (no route to 10.244/16)
//!        fd00:10:244::5             fd00:ff::1   vout 192.0.2.1/24 ──veth── eth0 192.0.2.2/24
//!   default via 169.254.1.1                           2001:db8:2::1/64          2001:db8:2::2/64
//!   trl-nat<pid>-T-pod2 ──veth── vpod2   (10.244.1.5: pod-to-pod, must not be NATed)
//! ```
//!
//! `nft` runs only through `ip netns exec NODE nft -f -`; nothing is done in the root namespace.
//! Namespaces are deleted by a guard, and ones left by a crashed run (their pid is gone) are
//! removed at the start.

use trellis_test_support::netns as netns_support;

use std::process::Command;

use netns_support::{cleanup_stale, in_ns, ip, is_root, must_in_ns, run};

use trellis_agent::dataplane::nat::{NatManager, Nft, NftCommand};
use trellis_agent::dataplane::ClusterUpdate;
use trellis_datastore::meta::ObjectMeta;
use trellis_datastore::resources::{IpPool, IpPoolSpec};

const RUN_PREFIX: &str = "trl-nat";

fn require_root_and_nft() {
    assert!(
        is_root(),
        "nat_netns creates network namespaces and needs root (CAP_NET_ADMIN/CAP_SYS_ADMIN); \
         run `cargo test -p trellis-agent --test nat_netns` as root"
    );
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nat_netns needs the `nft` binary: apt-get install -y nftables"
    );
}

/// Namespaces of one test; deleted on drop, even when the test panics.
struct Netns {
    names: Vec<String>,
}

impl Netns {
    fn new() -> Netns {
        cleanup_stale(RUN_PREFIX);
        Netns { names: Vec::new() }
    }

    fn add(&mut self, name: String) -> String {
        ip(&format!("netns add {name}"));
        self.names.push(name.clone());
        ip(&format!("-n {name} link set lo up"));
        // No duplicate address detection on link-local addresses either: neighbour discovery
        // would otherwise wait ~1 s for them, longer than a ping's timeout.
        for key in ["all", "default"] {
            must_in_ns(
                &name,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.accept_dad=0"),
                ],
            );
        }
        name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let out = run("ip", &["netns", "del", n]);
            if !out.status.success() {
                eprintln!(
                    "could not delete netns {n}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn ns_name(tag: &str, role: &str) -> String {
    format!("{RUN_PREFIX}{}-{tag}-{role}", std::process::id())
}

/// The topology of the diagram at the top.
struct Lab {
    _guard: Netns,
    node: String,
    pod: String,
    outside: String,
}

impl Lab {
    fn create(tag: &str) -> Lab {
        let mut guard = Netns::new();
        let node = guard.add(ns_name(tag, "node"));
        let pod = guard.add(ns_name(tag, "pod"));
        let pod2 = guard.add(ns_name(tag, "pod2"));
        let outside = guard.add(ns_name(tag, "out"));

        must_in_ns(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        must_in_ns(&node, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

        // Pods: a /32 (and /128), reached from the node by a host route on their veth.
        for (p, host_if, v4, v6) in [
            (&pod, "vpod", "10.244.0.5", "fd00:10:244::5"),
            (&pod2, "vpod2", "10.244.1.5", "fd00:10:244:1::5"),
        ] {
            ip(&format!(
                "-n {node} link add {host_if} type veth peer name eth0 netns {p}"
            ));
            ip(&format!("-n {node} addr add 169.254.1.1/32 dev {host_if}"));
            ip(&format!(
                "-n {node} -6 addr add fd00:ff::1/128 dev {host_if} nodad"
            ));
            ip(&format!("-n {node} link set {host_if} up"));
            ip(&format!(
                "-n {node} route add {v4}/32 dev {host_if} scope link"
            ));
            ip(&format!("-n {node} -6 route add {v6}/128 dev {host_if}"));
            ip(&format!("-n {p} link set eth0 up"));
            ip(&format!("-n {p} addr add {v4}/32 dev eth0"));
            ip(&format!("-n {p} -6 addr add {v6}/128 dev eth0 nodad"));
            ip(&format!("-n {p} route add 169.254.1.1 dev eth0 scope link"));
            ip(&format!(
                "-n {p} route add default via 169.254.1.1 dev eth0"
            ));
            ip(&format!("-n {p} -6 route add fd00:ff::1 dev eth0"));
            ip(&format!(
                "-n {p} -6 route add default via fd00:ff::1 dev eth0"
            ));
        }

        // Outside: connected to the node only; it has no route back to the pools.
        ip(&format!(
            "-n {node} link add vout type veth peer name eth0 netns {outside}"
        ));
        ip(&format!("-n {node} addr add 192.0.2.1/24 dev vout"));
        ip(&format!(
            "-n {node} -6 addr add 2001:db8:2::1/64 dev vout nodad"
        ));
        ip(&format!("-n {node} link set vout up"));
        ip(&format!("-n {outside} link set eth0 up"));
        ip(&format!("-n {outside} addr add 192.0.2.2/24 dev eth0"));
        ip(&format!(
            "-n {outside} -6 addr add 2001:db8:2::2/64 dev eth0 nodad"
        ));

        // Probes: count echo requests by source, in the outside host and in pod2.
        let probe = "add table inet probe
            add chain inet probe in { type filter hook input priority 0; policy accept; }
            add rule inet probe in ip saddr 192.0.2.1 icmp type echo-request counter
            add rule inet probe in ip saddr 10.244.0.5 icmp type echo-request counter
            add rule inet probe in ip6 saddr 2001:db8:2::1 icmpv6 type echo-request counter
            add rule inet probe in ip6 saddr fd00:10:244::5 icmpv6 type echo-request counter
            ";
        for ns in [&outside, &pod2] {
            NftCommand::in_netns(ns.as_str())
                .apply(probe)
                .unwrap_or_else(|e| panic!("probe in {ns}: {e}"));
        }

        Lab {
            _guard: guard,
            node,
            pod,
            outside,
        }
    }

    fn nft(&self) -> NftCommand {
        NftCommand::in_netns(self.node.as_str())
    }

    /// One echo request from the pod, one second to answer (for pings expected to fail).
    fn ping(&self, dst: &str) -> (bool, String) {
        in_ns(&self.pod, &["ping", "-c", "1", "-W", "1", dst])
    }

    /// Pings expected to succeed get three tries (neighbour discovery may delay the first).
    fn ping_ok(&self, dst: &str) -> (bool, String) {
        let mut last = (false, String::new());
        for _ in 0..3 {
            last = in_ns(&self.pod, &["ping", "-c", "1", "-W", "2", dst]);
            if last.0 {
                break;
            }
        }
        last
    }

    /// Echo requests seen in `ns` from `src` so far (the probe's counters).
    fn seen(&self, ns: &str, src: &str) -> u64 {
        let listing = must_in_ns(ns, &["nft", "list", "chain", "inet", "probe", "in"]);
        let line = listing
            .lines()
            .find(|l| l.contains(&format!("saddr {src} ")))
            .unwrap_or_else(|| panic!("no probe for {src} in {listing}"));
        let after = line.split("packets ").nth(1).expect("counter");
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn list_trellis(&self) -> String {
        must_in_ns(&self.node, &["nft", "list", "table", "inet", "trellis"])
    }
}

fn pool(name: &str, cidr: &str, nat_outgoing: bool) -> ClusterUpdate {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.nat_outgoing = nat_outgoing;
    ClusterUpdate::PoolUpdated(IpPool::new(ObjectMeta::named(name), spec))
}

fn apply(mgr: &mut NatManager, nft: &dyn Nft, updates: &[ClusterUpdate]) {
    for u in updates {
        mgr.on_update(u);
    }
    mgr.complete_deferred_work(nft)
        .unwrap_or_else(|e| panic!("NAT transaction failed: {e}\n{}", mgr.render()));
    assert!(!mgr.has_pending_work());
}

#[test]
fn nat_outgoing_masquerades_only_traffic_leaving_all_pools() {
    require_root_and_nft();
    let lab = Lab::create("ping");
    let nft = lab.nft();
    let pod2 = ns_name("ping", "pod2");

    // Before any NAT the outside host cannot answer: it has no route back to the pod.
    let (ok, text) = lab.ping("192.0.2.2");
    assert!(!ok, "ping succeeded without masquerade: {text}");

    let mut mgr = NatManager::new();
    apply(
        &mut mgr,
        &nft,
        &[
            pool("v4", "10.244.0.0/16", true),
            pool("v6", "fd00:10:244::/48", true),
        ],
    );
    for dst in ["192.0.2.2", "2001:db8:2::2"] {
        let (ok, text) = lab.ping_ok(dst);
        assert!(
            ok,
            "ping {dst} with natOutgoing failed: {text}\n{}",
            lab.list_trellis()
        );
    }
    assert!(
        lab.seen(&lab.outside, "192.0.2.1") >= 1,
        "not masqueraded to the node's address"
    );
    assert!(
        lab.seen(&lab.outside, "2001:db8:2::1") >= 1,
        "IPv6 not masqueraded"
    );

    // Pod to pod stays un-NATed even with natOutgoing on.
    for dst in ["10.244.1.5", "fd00:10:244:1::5"] {
        let (ok, text) = lab.ping_ok(dst);
        assert!(ok, "pod-to-pod ping {dst} failed: {text}");
    }
    assert!(
        lab.seen(&pod2, "10.244.0.5") >= 1,
        "pod-to-pod traffic was NATed"
    );
    assert!(
        lab.seen(&pod2, "fd00:10:244::5") >= 1,
        "IPv6 pod-to-pod traffic was NATed"
    );

    // natOutgoing off: no masquerade, the outside host cannot answer again. (NAT is decided on a
    // flow's first packet; each ping run uses a new ICMP id, so it is a new conntrack flow.)
    apply(
        &mut mgr,
        &nft,
        &[
            pool("v4", "10.244.0.0/16", false),
            pool("v6", "fd00:10:244::/48", false),
        ],
    );
    for dst in ["192.0.2.2", "2001:db8:2::2"] {
        let (ok, text) = lab.ping(dst);
        assert!(
            !ok,
            "ping {dst} succeeded with natOutgoing=false: {text}\n{}",
            lab.list_trellis()
        );
    }

    // On again, then the pool deleted: masquerade goes with it.
    apply(&mut mgr, &nft, &[pool("v4", "10.244.0.0/16", true)]);
    let (ok, text) = lab.ping_ok("192.0.2.2");
    assert!(ok, "ping after re-enabling natOutgoing failed: {text}");
    apply(&mut mgr, &nft, &[ClusterUpdate::PoolDeleted("v4".into())]);
    let (ok, text) = lab.ping("192.0.2.2");
    assert!(!ok, "ping succeeded after the pool was deleted: {text}");
}

#[test]
fn transactions_are_idempotent_and_leave_foreign_objects_alone() {
    require_root_and_nft();
    let lab = Lab::create("idem");
    let nft = lab.nft();

    // Someone else (the policy manager) already owns part of the table.
    let foreign = "add table inet trellis
        add set inet trellis pol-web { type ipv4_addr; }
        add element inet trellis pol-web { 10.244.0.5 }
        add chain inet trellis pol-forward { type filter hook forward priority filter; policy accept; }
        add rule inet trellis pol-forward ip saddr @pol-web counter accept
        ";
    nft.apply(foreign).unwrap();

    let updates = [
        pool("a", "10.244.0.0/16", true),
        pool("b", "172.16.0.0/20", false),
        pool("c", "fd00:10:244::/48", true),
    ];
    let mut mgr = NatManager::new();
    apply(&mut mgr, &nft, &updates);
    let first = lab.list_trellis();
    mgr.request_resync();
    apply(&mut mgr, &nft, &[]);
    assert_eq!(
        lab.list_trellis(),
        first,
        "the same state applied twice changed the table"
    );

    // An agent restart: a new manager replays the same pools over the existing table.
    let mut restarted = NatManager::new();
    apply(&mut restarted, &nft, &updates);
    assert_eq!(
        lab.list_trellis(),
        first,
        "a restarted manager changed the table"
    );

    for want in [
        "chain pol-forward",
        "ip saddr @pol-web counter",
        "set pol-web",
        "10.244.0.5",
        "ip saddr @masq-pools4 ip daddr != @all-pools4 masquerade",
        "ip6 saddr @masq-pools6 ip6 daddr != @all-pools6 masquerade",
        "172.16.0.0/20",
        "fd00:10:244::/48",
    ] {
        assert!(first.contains(want), "missing {want:?} in\n{first}");
    }

    // Emptying every set keeps the foreign objects and the NAT chain's two rules.
    for name in ["a", "b", "c"] {
        restarted.on_update(&ClusterUpdate::PoolDeleted(name.into()));
    }
    apply(&mut restarted, &nft, &[]);
    let empty = lab.list_trellis();
    assert!(empty.contains("chain pol-forward") && empty.contains("ip saddr @pol-web counter"));
    assert!(
        !empty.contains("10.244.0.0/16") && !empty.contains("172.16.0.0/20"),
        "{empty}"
    );
    assert_eq!(empty.matches("masquerade").count(), 2, "{empty}");
}

#[test]
fn a_rejected_transaction_reports_nft_stderr_and_changes_nothing() {
    require_root_and_nft();
    let lab = Lab::create("err");
    let nft = lab.nft();
    let mut mgr = NatManager::new();
    apply(&mut mgr, &nft, &[pool("a", "10.244.0.0/16", true)]);
    let before = lab.list_trellis();

    // A valid prefix of a transaction followed by a bad line: nft must apply none of it.
    let bad = "flush set inet trellis masq-pools4\nadd rule inet trellis nat-postrouting bogus\n";
    let err = nft.apply(bad).unwrap_err().to_string();
    assert!(
        err.contains(&lab.node),
        "error does not name the netns: {err}"
    );
    assert!(
        err.contains("Error"),
        "error does not carry nft's stderr: {err}"
    );
    assert_eq!(
        lab.list_trellis(),
        before,
        "a rejected transaction changed the table"
    );
}
