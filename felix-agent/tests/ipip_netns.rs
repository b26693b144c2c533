//! IPIP manager against a real kernel (root required; CI runs as root).
//!
//! ```text
//!   trl-ip<pid>-n1                    trl-ip<pid>-u                    trl-ip<pid>-n2
//!   lo 10.244.0.10/32                 br0 ── v1, v2                    lo 10.244.1.10/32
//!   eth0 172.30.8.1/24 ───veth─── v1        v2 ───veth─── eth0 172.30.8.2/24
//!   tunl0 10.244.0.1/32 (IpipManager)                          tunl0 10.244.1.1/32 (IpipManager)
//! ```
//!
//! Tests named `*needs_ipip_kernel*` need the kernel's ipip module: without it they FAIL with a
//! message naming the missing feature, and scripts/test.sh skips them by name and lists them.
//! `agent_with_an_ipip_pool_*` runs on any kernel: without ipip it checks that the agent names
//! the problem in its status and still programs a VXLAN pool; with ipip, that both work.

use trellis_test_support::netns as netns_support;

use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ipnet::IpNet;
use netns_support::{cleanup_stale, in_ns, ip, ipip_support, is_root, require_ipip_kernel, run};
use nix::sched::{setns, CloneFlags};
use trellis_agent::dataplane::nat::{NatError, Nft};
use trellis_agent::dataplane::run::DataplaneConfig;
use trellis_agent::dataplane::{
    ApplyStats, ClusterUpdate, DataplaneStatus, IpipManager, RtNetlink, VxlanConfig, ROUTE_PROTOCOL,
};
use trellis_agent::metrics::Metrics;
use trellis_datastore::memory::MemoryDatastore;
use trellis_datastore::meta::ObjectMeta;
use trellis_datastore::resources::node::{NodeAddress, NodeAddressType};
use trellis_datastore::resources::{EncapMode, IpPool, IpPoolSpec, Node, NodeSpec};
use trellis_datastore::Datastore;

const RUN_PREFIX: &str = "trl-ip";

fn require_root() {
    assert!(
        is_root(),
        "ipip_netns creates network namespaces and needs root (CAP_NET_ADMIN/CAP_SYS_ADMIN); \
         run `cargo test -p trellis-agent --test ipip_netns` as root"
    );
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("trellis_agent=debug")
        .try_init();
    cleanup_stale(RUN_PREFIX);
}

/// Namespaces of one test; deleted on drop, even when the test panics.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
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

/// Two nodes on one bridge (see the module diagram); `tag` keeps parallel tests apart.
fn two_nodes(tag: &str) -> (Netns, [String; 2]) {
    let p = format!("{RUN_PREFIX}{}-{tag}", std::process::id());
    let (u, n1, n2) = (format!("{p}u"), format!("{p}n1"), format!("{p}n2"));
    let guard = Netns(vec![n1.clone(), n2.clone(), u.clone()]);
    for n in &guard.0 {
        ip(&format!("netns add {n}"));
        ip(&format!("-n {n} link set lo up"));
    }
    ip(&format!("-n {u} link add br0 type bridge"));
    ip(&format!("-n {u} link set br0 up"));
    for (i, n) in [&n1, &n2].into_iter().enumerate() {
        let port = format!("v{}", i + 1);
        ip(&format!(
            "-n {u} link add {port} type veth peer name eth0 netns {n}"
        ));
        ip(&format!("-n {u} link set {port} master br0 up"));
        ip(&format!("-n {n} link set eth0 up"));
        ip(&format!("-n {n} addr add 172.30.8.{}/24 dev eth0", i + 1));
        // The "pod": an address inside the node's block.
        ip(&format!("-n {n} addr add 10.244.{i}.10/32 dev lo"));
    }
    (guard, [n1, n2])
}

/// Runs `f` on a thread inside namespace `netns` with a current-thread runtime and an rtnetlink
/// handle opened there (namespaces are per thread).
fn in_netns_thread<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce(rtnetlink::Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
        + Send
        + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            f(handle).await
        })
    })
}

type Reply = Result<(ApplyStats, Option<String>), String>;
/// A batch of updates (`None`: restart the manager) and where to send the pass's outcome.
type Job = (Option<Vec<ClusterUpdate>>, mpsc::Sender<Reply>);

/// An IpipManager living in a node namespace, on its own thread; each message is a batch of
/// updates followed by one pass (`None`: a restarted agent fed everything seen so far).
struct NodeAgent {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeAgent {
    fn start(netns: &str, node_name: &str) -> NodeAgent {
        let (tx, rx) = mpsc::channel::<Job>();
        let config = VxlanConfig {
            node_name: node_name.to_string(),
            mtu: 1450,
            underlay_subnet: Some("172.30.8.0/24".parse().unwrap()),
        };
        let thread = in_netns_thread(netns, move |handle| {
            Box::pin(async move {
                let mut seen: Vec<ClusterUpdate> = Vec::new();
                let mut mgr = IpipManager::new(config.clone(), 1480);
                while let Ok((cmd, reply)) = rx.recv() {
                    match cmd {
                        Some(updates) => {
                            for u in &updates {
                                mgr.on_update(u);
                            }
                            seen.extend(updates);
                        }
                        None => {
                            mgr = IpipManager::new(config.clone(), 1480);
                            for u in &seen {
                                mgr.on_update(u);
                            }
                        }
                    }
                    let result = mgr.complete_deferred_work(&handle).await;
                    let problem = mgr.problem().map(|p| p.to_string());
                    let _ = reply.send(
                        result
                            .map(|()| (mgr.last_stats(), problem))
                            .map_err(|e| e.to_string()),
                    );
                }
            })
        });
        NodeAgent {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, cmd: Option<Vec<ClusterUpdate>>) -> (ApplyStats, Option<String>) {
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

fn node(name: &str, underlay: &str, tunnel: &str) -> Node {
    Node::new(
        ObjectMeta::named(name),
        NodeSpec {
            addresses: vec![NodeAddress {
                address: underlay.parse().unwrap(),
                kind: NodeAddressType::InternalIP,
            }],
            ipv4_ipip_tunnel_addr: Some(tunnel.parse().unwrap()),
            ..NodeSpec::default()
        },
    )
}

fn pool(name: &str, cidr: &str, vxlan: EncapMode, ipip: EncapMode) -> IpPool {
    let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
    spec.vxlan_mode = vxlan;
    spec.ipip_mode = ipip;
    IpPool::new(ObjectMeta::named(name), spec)
}

fn ping(ns: &str, from: &str, to: &str) -> (bool, String) {
    let mut last = (false, String::new());
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

fn ifindex(ns: &str, dev: &str) -> String {
    let out = ip(&format!("-n {ns} -o link show dev {dev}"));
    out.split(':').next().unwrap().trim().to_string()
}

#[test]
fn ipip_manager_in_two_node_namespaces_needs_ipip_kernel() {
    require_root();
    require_ipip_kernel();
    let (_guard, [n1, n2]) = two_nodes("a");
    let (ok, out) = in_ns(&n1, &["ping", "-c1", "-W1", "172.30.8.2"]);
    assert!(ok, "underlay does not work: {out}");
    let block = |cidr: &str, n: &str| {
        ClusterUpdate::BlockUpdated(cidr.parse::<IpNet>().unwrap(), Some(n.to_string()))
    };
    let cluster = vec![
        ClusterUpdate::NodeUpdated(node("node-1", "172.30.8.1", "10.244.0.1")),
        ClusterUpdate::NodeUpdated(node("node-2", "172.30.8.2", "10.244.1.1")),
        ClusterUpdate::PoolUpdated(pool(
            "default",
            "10.244.0.0/16",
            EncapMode::Never,
            EncapMode::Always,
        )),
        block("10.244.0.0/26", "node-1"),
        block("10.244.1.0/26", "node-2"),
    ];
    let agents = [
        NodeAgent::start(&n1, "node-1"),
        NodeAgent::start(&n2, "node-2"),
    ];
    for a in &agents {
        let (stats, problem) = a.send(Some(cluster.clone()));
        assert_eq!(problem, None);
        assert!(stats.resynced && stats.failures == 0, "{stats:?}");
    }

    // 1. Pod to pod through tunl0.
    let (ok, out) = ping(&n1, "10.244.0.10", "10.244.1.10");
    assert!(ok, "ping 10.244.1.10 from node-1 over IPIP failed: {out}");
    let routes = our_routes(&n1);
    assert!(
        routes.contains("10.244.1.0/26 via 172.30.8.2 dev tunl0")
            && routes.contains("onlink")
            && routes.contains("metric 5"),
        "{routes}"
    );
    let link = ip(&format!("-n {n1} -d link show dev tunl0"));
    assert!(link.contains("mtu 1480") && link.contains("ipip"), "{link}");
    assert!(link.contains(",UP"), "tunl0 is not up: {link}");
    let addr = ip(&format!("-n {n1} -4 addr show dev tunl0"));
    assert!(addr.contains("10.244.0.1/32"), "{addr}");

    // 2. Never flush: a restart reads the kernel and writes nothing.
    let before = (our_routes(&n1), ifindex(&n1, "tunl0"));
    let (stats, _) = agents[0].send(None);
    assert!(stats.resynced, "{stats:?}");
    assert_eq!(
        stats.writes, 0,
        "a restart on a programmed node rewrote state"
    );
    assert_eq!((our_routes(&n1), ifindex(&n1, "tunl0")), before);

    // 3. Switched to Never: the routes go, tunl0 stays (as Calico leaves it).
    let never = ClusterUpdate::PoolUpdated(pool(
        "default",
        "10.244.0.0/16",
        EncapMode::Never,
        EncapMode::Never,
    ));
    for a in &agents {
        let (stats, _) = a.send(Some(vec![never.clone()]));
        assert_eq!(stats.failures, 0, "{stats:?}");
    }
    let routes = our_routes(&n1);
    assert!(!routes.contains("tunl0"), "routes left: {routes}");
    assert_eq!(ifindex(&n1, "tunl0"), before.1, "tunl0 was removed");

    // 4. And back.
    let always = cluster[2].clone();
    for a in &agents {
        a.send(Some(vec![always.clone()]));
    }
    let (ok, out) = ping(&n1, "10.244.0.10", "10.244.1.10");
    assert!(ok, "ping after re-enabling IPIP failed: {out}");
}

/// nft is not under test here: transactions are accepted and dropped.
struct NoNft;

impl Nft for NoNft {
    fn apply(&self, _transaction: &str) -> Result<(), NatError> {
        Ok(())
    }
}

async fn put<T: serde::Serialize>(ds: &dyn Datastore, key: &str, obj: &T) {
    ds.put(key, serde_json::to_vec(obj).unwrap()).await.unwrap();
}

#[test]
fn agent_with_an_ipip_pool_reports_a_kernel_without_ipip_and_still_programs_vxlan() {
    require_root();
    let ipip = ipip_support();
    let (_guard, [n1, _n2]) = two_nodes("b");

    // The datastore as node-2's agent left it: a VXLAN pool and an IPIP pool, node-2 holding a
    // block of each with its VTEP and its IPIP tunnel address recorded.
    let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
    let status = Arc::new(DataplaneStatus::default());
    let metrics = Arc::new(Metrics::default());
    let (ds2, status2, metrics2) = (ds.clone(), status.clone(), metrics.clone());
    let agent = in_netns_thread(&n1, move |handle| {
        Box::pin(async move {
            let ds = ds2;
            put(
                ds.as_ref(),
                "ippools/vx",
                &pool("vx", "10.244.0.0/16", EncapMode::Always, EncapMode::Never),
            )
            .await;
            put(
                ds.as_ref(),
                "ippools/ip",
                &pool("ip", "10.245.0.0/16", EncapMode::Never, EncapMode::Always),
            )
            .await;
            for (n, addr) in [("node-1", "172.30.8.1"), ("node-2", "172.30.8.2")] {
                let spec = NodeSpec {
                    addresses: vec![NodeAddress {
                        address: addr.parse().unwrap(),
                        kind: NodeAddressType::TrellisNodeIP,
                    }],
                    ..Default::default()
                };
                put(
                    ds.as_ref(),
                    &format!("nodes/{n}"),
                    &Node::new(ObjectMeta::named(n), spec),
                )
                .await;
            }
            let remote = trellis_ipam::NodeIpam::new(ds.clone(), "node-2");
            trellis_agent::dataplane::vtep::ensure_vtep(ds.as_ref(), &remote, "node-2")
                .await
                .unwrap();
            trellis_agent::dataplane::vtep::ensure_ipip_tunnel_addr(ds.as_ref(), &remote, "node-2")
                .await
                .unwrap();
            let config = DataplaneConfig {
                vxlan: VxlanConfig {
                    node_name: "node-1".into(),
                    mtu: 1450,
                    underlay_subnet: Some("172.30.8.0/24".parse().unwrap()),
                },
                ipip_mtu: 1480,
                resync_interval: Duration::from_secs(90),
            };
            let mut nl = RtNetlink::new(handle);
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                trellis_agent::dataplane::run::run(ds, config, &mut nl, &NoNft, metrics2, status2),
            )
            .await;
        })
    });
    agent.join().expect("the dataplane loop panicked");

    let routes = our_routes(&n1);
    assert!(
        routes.contains("10.244.") && routes.contains("dev vxlan.trellis"),
        "the VXLAN pool's route is missing next to the IPIP pool: {routes}"
    );
    let text = metrics.render();
    let problems = status.problems();
    match ipip {
        Err(answer) => {
            eprintln!("this kernel has no ipip ({answer}): checking the agent reports it");
            assert_eq!(
                problems,
                vec!["kernel has no ipip support: cannot create tunl0 for pool ip".to_string()]
            );
            assert!(
                text.contains("trellis_dataplane_problems 1"),
                "the problem is not in /metrics: {text}"
            );
            assert!(!routes.contains("tunl0"), "{routes}");
        }
        Ok(()) => {
            assert!(problems.is_empty(), "{problems:?}");
            assert!(
                routes.contains("10.245.") && routes.contains("dev tunl0"),
                "the IPIP pool's route is missing: {routes}"
            );
        }
    }
    // A node-level problem is not a failed pass: no retry loop, no error counted per retry.
    assert!(
        text.contains("trellis_dataplane_reconcile_errors_total 0"),
        "{text}"
    );
}
