//! VXLAN manager against a real kernel (root required; CI runs as root).
//!
//! ```text
//!   trl-vx<pid>-n1                    trl-vx<pid>-u                    trl-vx<pid>-n2
//!   lo 10.244.0.10/32                 br0 ── v1, v2                    lo 10.244.1.10/32
//!   eth0 172.30.9.1/24 ───veth─── v1        v2 ───veth─── eth0 172.30.9.2/24
//!   vxlan.trellis (VxlanManager)                                     vxlan.trellis (VxlanManager)
//! ```
//!
//! Each node's manager runs on its own thread that `setns`es into the node namespace and opens
//! its own rtnetlink socket there; nothing is done in the root namespace. Namespaces are deleted
//! by a guard, and ones left by a crashed run (their pid is gone) are removed at the start.

use trellis_test_support::netns as netns_support;

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ipnet::IpNet;
use netns_support::{cleanup_stale, in_ns, ip, is_root, run};
use nix::sched::{setns, CloneFlags};
use trellis_agent::dataplane::{
    vtep_mac_for, ApplyStats, ClusterUpdate, VxlanConfig, VxlanManager, ROUTE_PROTOCOL,
};
use trellis_datastore::meta::ObjectMeta;
use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
use trellis_datastore::resources::{EncapMode, IpPool, IpPoolSpec, Node, NodeSpec};

const RUN_PREFIX: &str = "trl-vx";

/// The namespaces of this run; deleted on drop, even when the test panics.
struct Lab {
    underlay: String,
    nodes: [String; 2],
}

impl Lab {
    fn create() -> Lab {
        let p = format!("{RUN_PREFIX}{}-", std::process::id());
        let lab = Lab {
            underlay: format!("{p}u"),
            nodes: [format!("{p}n1"), format!("{p}n2")],
        };
        let u = lab.underlay.as_str();
        ip(&format!("netns add {u}"));
        for n in &lab.nodes {
            ip(&format!("netns add {n}"));
        }
        ip(&format!("-n {u} link set lo up"));
        ip(&format!("-n {u} link add br0 type bridge"));
        ip(&format!("-n {u} link set br0 up"));
        for (i, n) in lab.nodes.iter().enumerate() {
            let port = format!("v{}", i + 1);
            ip(&format!(
                "-n {u} link add {port} type veth peer name eth0 netns {n}"
            ));
            ip(&format!("-n {u} link set {port} master br0 up"));
            ip(&format!("-n {n} link set lo up"));
            ip(&format!("-n {n} link set eth0 up"));
            ip(&format!("-n {n} addr add 172.30.9.{}/24 dev eth0", i + 1));
            // The "pod": an address inside the node's block.
            ip(&format!("-n {n} addr add 10.244.{i}.10/32 dev lo"));
        }
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.nodes.iter().chain([&self.underlay]) {
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

enum Cmd {
    /// Feed updates, then complete deferred work.
    Updates(Vec<ClusterUpdate>),
    /// A new manager (an agent restart) fed everything seen so far, then one pass.
    Restart,
}

type Reply = Result<ApplyStats, String>;

/// A VxlanManager living in a node namespace, on its own thread.
struct NodeAgent {
    tx: Option<mpsc::Sender<(Cmd, mpsc::Sender<Reply>)>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeAgent {
    fn start(netns: &str, node_name: &str) -> NodeAgent {
        let (tx, rx) = mpsc::channel::<(Cmd, mpsc::Sender<Reply>)>();
        let path = format!("/run/netns/{netns}");
        let config = VxlanConfig {
            node_name: node_name.to_string(),
            mtu: 1450,
            underlay_subnet: Some("172.30.9.0/24".parse().unwrap()),
        };
        let thread = thread::spawn(move || {
            // Namespaces are per thread: enter the node's, then open the netlink socket there.
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let mut seen: Vec<ClusterUpdate> = Vec::new();
                let new_manager =
                    || VxlanManager::new(config.clone()).with_device_linger(DEVICE_LINGER);
                let mut mgr = new_manager();
                while let Ok((cmd, reply)) = rx.recv() {
                    match cmd {
                        Cmd::Updates(updates) => {
                            for u in &updates {
                                mgr.on_update(u);
                            }
                            seen.extend(updates);
                        }
                        Cmd::Restart => {
                            mgr = new_manager();
                            for u in &seen {
                                mgr.on_update(u);
                            }
                        }
                    }
                    let result = mgr.complete_deferred_work(&handle).await;
                    let _ =
                        reply.send(result.map(|()| mgr.last_stats()).map_err(|e| e.to_string()));
                }
            });
        });
        NodeAgent {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, cmd: Cmd) -> ApplyStats {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send((cmd, reply_tx))
            .expect("node agent thread is gone");
        reply_rx
            .recv()
            .expect("node agent thread died")
            .unwrap_or_else(|e| panic!("complete_deferred_work failed: {e}"))
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn node(name: &str, underlay: &str, vtep: &str) -> Node {
    Node::new(
        ObjectMeta::named(name),
        NodeSpec {
            addresses: vec![NodeAddress {
                address: underlay.parse().unwrap(),
                kind: NodeAddressType::InternalIP,
            }],
            ipv4_vxlan_tunnel_addr: Some(vtep.parse().unwrap()),
            vxlan_tunnel_mac_addr: Some(vtep_mac_for(name)),
            ..NodeSpec::default()
        },
    )
}

fn pool(name: &str, cidr: &str, mode: EncapMode) -> IpPool {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.vxlan_mode = mode;
    IpPool::new(ObjectMeta::named(name), spec)
}

fn cluster() -> Vec<ClusterUpdate> {
    let block = |cidr: &str, n: &str| {
        ClusterUpdate::BlockUpdated(cidr.parse::<IpNet>().unwrap(), Some(n.to_string()))
    };
    vec![
        ClusterUpdate::NodeUpdated(node("node-1", "172.30.9.1", "10.244.0.1")),
        ClusterUpdate::NodeUpdated(node("node-2", "172.30.9.2", "10.244.1.1")),
        ClusterUpdate::PoolUpdated(pool("default", "10.244.0.0/16", EncapMode::Always)),
        // A second VXLAN pool without blocks: keeps the device once `default` stops using VXLAN.
        ClusterUpdate::PoolUpdated(pool("spare", "10.245.0.0/16", EncapMode::Always)),
        block("10.244.0.0/26", "node-1"),
        block("10.244.1.0/26", "node-2"),
    ]
}

/// Everything the manager could have touched on a node, as iproute2 shows it.
fn snapshot(ns: &str) -> BTreeMap<&'static str, String> {
    let (ok, link) = in_ns(ns, &["ip", "-d", "link", "show", "dev", "vxlan.trellis"]);
    assert!(ok, "{link}");
    BTreeMap::from([
        ("link", link),
        (
            "addr",
            ip(&format!("-n {ns} -4 addr show dev vxlan.trellis")),
        ),
        (
            "neigh",
            ip(&format!(
                "-n {ns} neigh show dev vxlan.trellis nud permanent"
            )),
        ),
        (
            "fdb",
            in_ns(ns, &["bridge", "fdb", "show", "dev", "vxlan.trellis"]).1,
        ),
        ("routes", ip(&format!("-n {ns} route show table main"))),
    ])
}

fn ifindex(ns: &str) -> String {
    let out = ip(&format!("-n {ns} -o link show dev vxlan.trellis"));
    out.split(':').next().unwrap().trim().to_string()
}

fn ping(ns: &str, from: &str, to: &str) -> (bool, String) {
    let mut last = (false, String::new());
    // Up to three tries, so one lost packet is not reported as a broken overlay; retries are
    // printed, so a flaky path still shows in the log.
    for attempt in 1..=3 {
        last = in_ns(ns, &["ping", "-c1", "-W1", "-I", from, to]);
        if last.0 {
            break;
        }
        eprintln!("ping {to} from {from} in {ns}: attempt {attempt} failed");
    }
    last
}

fn our_routes(ns: &str) -> String {
    ip(&format!("-n {ns} route show proto {ROUTE_PROTOCOL}"))
}

/// How long the test's managers keep an unneeded device (the agent's is 30 s).
const DEVICE_LINGER: Duration = Duration::from_millis(300);

#[test]
fn vxlan_manager_in_two_node_namespaces() {
    assert!(
        is_root(),
        "vxlan_netns creates network namespaces and needs root (CAP_NET_ADMIN/CAP_SYS_ADMIN); \
         run `cargo test -p trellis-agent --test vxlan_netns` as root"
    );
    // Every netlink write the managers make is logged at debug: the transcript explains a failure.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("trellis_agent=debug")
        .try_init();
    cleanup_stale(RUN_PREFIX);
    let lab = Lab::create();
    let [n1, n2] = [lab.nodes[0].as_str(), lab.nodes[1].as_str()];
    let (ok, out) = in_ns(n1, &["ping", "-c1", "-W1", "172.30.9.2"]);
    assert!(ok, "underlay does not work: {out}");

    let agents = [
        NodeAgent::start(n1, "node-1"),
        NodeAgent::start(n2, "node-2"),
    ];
    for a in &agents {
        let stats = a.send(Cmd::Updates(cluster()));
        assert!(stats.resynced && stats.failures == 0, "{stats:?}");
    }

    // 1. Pod to pod across VXLAN.
    let (ok, out) = ping(n1, "10.244.0.10", "10.244.1.10");
    assert!(ok, "ping 10.244.1.10 from node-1 over VXLAN failed: {out}");
    let routes = our_routes(n1);
    assert!(
        routes.contains("10.244.1.0/26 via 10.244.1.1 dev vxlan.trellis")
            && routes.contains("onlink"),
        "{routes}"
    );
    let link = snapshot(n1)["link"].clone();
    for want in [
        "vxlan id 4096",
        "local 172.30.9.1",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
    ] {
        assert!(link.contains(want), "{want:?} missing in {link}");
    }
    assert!(link.contains(&vtep_mac_for("node-1")), "{link}");
    let fdb = snapshot(n1)["fdb"].clone();
    assert!(
        fdb.contains(&format!(
            "{} dst 172.30.9.2 self permanent",
            vtep_mac_for("node-2")
        )),
        "{fdb}"
    );

    // 2. Never flush: an agent restart reads the kernel and writes nothing; same link, same state.
    let before: Vec<_> = [n1, n2].iter().map(|n| (snapshot(n), ifindex(n))).collect();
    for a in &agents {
        let stats = a.send(Cmd::Restart);
        assert!(stats.resynced, "{stats:?}");
        assert_eq!(
            stats.writes, 0,
            "a restart on a programmed node rewrote state"
        );
    }
    let after: Vec<_> = [n1, n2].iter().map(|n| (snapshot(n), ifindex(n))).collect();
    assert_eq!(before, after);
    // And a pass with nothing new does no I/O at all.
    assert_eq!(agents[0].send(Cmd::Updates(vec![])), ApplyStats::default());

    // 3. Ownership: foreign routes survive a resync; a stale route of ours does not.
    let onlink = "via 10.244.1.1 dev vxlan.trellis onlink";
    ip(&format!(
        "-n {n1} route add 10.99.0.0/24 {onlink} proto static"
    ));
    ip(&format!(
        "-n {n1} route add 10.98.0.0/24 dev eth0 proto {ROUTE_PROTOCOL}"
    ));
    ip(&format!(
        "-n {n1} route add 10.97.0.0/24 {onlink} proto {ROUTE_PROTOCOL}"
    ));
    let stats = agents[0].send(Cmd::Restart);
    assert_eq!(
        stats.writes, 1,
        "only the stale route of ours goes: {stats:?}"
    );
    let all = ip(&format!("-n {n1} route show table main"));
    assert!(
        all.contains("10.99.0.0/24 via 10.244.1.1 dev vxlan.trellis"),
        "{all}"
    );
    assert!(all.contains("10.98.0.0/24 dev eth0"), "{all}");
    assert!(!all.contains("10.97.0.0/24"), "{all}");
    let (ok, out) = ping(n1, "10.244.0.10", "10.244.1.10");
    assert!(ok, "traffic broke after the resync: {out}");

    // 4. node-1's VTEP MAC changes: its device is modified in place (same index), node-2
    // re-points its ARP and FDB entries, and traffic keeps flowing.
    let index = ifindex(n1);
    let mut moved = node("node-1", "172.30.9.1", "10.244.0.1");
    moved.spec.vxlan_tunnel_mac_addr = Some("66:00:00:00:01:01".into());
    for a in &agents {
        let stats = a.send(Cmd::Updates(vec![ClusterUpdate::NodeUpdated(
            moved.clone(),
        )]));
        assert_eq!(stats.failures, 0, "{stats:?}");
    }
    assert_eq!(
        ifindex(n1),
        index,
        "a MAC change must not re-create the device"
    );
    let link = snapshot(n1)["link"].clone();
    assert!(link.contains("link/ether 66:00:00:00:01:01"), "{link}");
    let neigh = snapshot(n2)["neigh"].clone();
    assert!(
        neigh.contains("10.244.0.1 lladdr 66:00:00:00:01:01"),
        "{neigh}"
    );
    let (ok, out) = ping(n1, "10.244.0.10", "10.244.1.10");
    assert!(ok, "traffic broke after the VTEP MAC change: {out}");

    // 5. Pool `default` switched to Never, live: its routes go, the device (still needed by
    // `spare`) stays with the same index, foreign routes stay.
    let index = ifindex(n1);
    let never = ClusterUpdate::PoolUpdated(pool("default", "10.244.0.0/16", EncapMode::Never));
    for a in &agents {
        let stats = a.send(Cmd::Updates(vec![never.clone()]));
        assert_eq!(stats.failures, 0, "{stats:?}");
    }
    let ours = our_routes(n1);
    assert!(!ours.contains("vxlan.trellis"), "routes left: {ours}");
    assert_eq!(ifindex(n1), index);
    let all = ip(&format!("-n {n1} route show table main"));
    assert!(
        all.contains("10.99.0.0/24 via 10.244.1.1 dev vxlan.trellis"),
        "{all}"
    );
    assert!(
        !ping(n1, "10.244.0.10", "10.244.1.10").0,
        "still routed after Never"
    );

    // 6. No pool uses VXLAN any more: the device lingers a while for peers still sending to it,
    // then goes; the route on eth0 with our protocol stays.
    for a in &agents {
        a.send(Cmd::Updates(vec![ClusterUpdate::PoolDeleted(
            "spare".into(),
        )]));
    }
    for n in [n1, n2] {
        let (exists, _) = in_ns(n, &["ip", "link", "show", "dev", "vxlan.trellis"]);
        assert!(
            exists,
            "vxlan.trellis went at once in {n}, without lingering"
        );
    }
    thread::sleep(DEVICE_LINGER + Duration::from_millis(50));
    for a in &agents {
        a.send(Cmd::Updates(Vec::new()));
    }
    for n in [n1, n2] {
        let (exists, _) = in_ns(n, &["ip", "link", "show", "dev", "vxlan.trellis"]);
        assert!(!exists, "vxlan.trellis still exists in {n}");
    }
    let all = ip(&format!("-n {n1} route show table main"));
    assert!(all.contains("10.98.0.0/24 dev eth0"), "{all}");

    // 7. And back: switching the pool to Always again re-creates everything.
    let always = ClusterUpdate::PoolUpdated(pool("default", "10.244.0.0/16", EncapMode::Always));
    for a in &agents {
        a.send(Cmd::Updates(vec![always.clone()]));
    }
    let (ok, out) = ping(n1, "10.244.0.10", "10.244.1.10");
    assert!(ok, "ping after re-enabling VXLAN failed: {out}");

    drop(agents);
    drop(lab);
}
