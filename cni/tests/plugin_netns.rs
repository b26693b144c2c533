//! The real `trellis` binary, run as a container runtime runs it: inside a node network
//! namespace, with the CNI environment and configuration, against a node agent (in this test
//! process) and a real etcd. Needs root; everything lives in namespaces this test creates.

mod netns_support;

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use netns_support::{require_root, TestNetns};
use serde_json::{json, Value};
use trellis_agent::api;
use trellis_agent::endpoints::Endpoints;
use trellis_agent::metrics::Metrics;
use trellis_datastore::codec;
use trellis_datastore::resources::{IpPool, IpPoolSpec};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{Datastore, ObjectMeta};

struct Cluster {
    node: TestNetns,
    ds: Arc<dyn Datastore>,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

fn cluster(name: &str) -> Cluster {
    require_root();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ds: Arc<dyn Datastore> = Arc::new(runtime.block_on(EtcdServer::shared().datastore(name)));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    runtime.block_on(async {
        for (n, cidr) in [("v4", "10.70.0.0/16"), ("v6", "fd00:70::/64")] {
            let pool = IpPool::new(ObjectMeta::named(n), IpPoolSpec::new(cidr.parse().unwrap()));
            ds.put(&pool.key(), codec::encode_object(&pool).unwrap())
                .await
                .unwrap();
        }
        trellis_agent::register::register_node(ds.as_ref(), "node-1", &[])
            .await
            .unwrap();
        let listener = api::bind(&socket).unwrap();
        let state = api::AppState {
            endpoints: Arc::new(Endpoints::new(ds.clone(), "node-1", 1400)),
            metrics: Arc::new(Metrics::default()),
        };
        tokio::spawn(api::serve(listener, state));
    });
    let node = TestNetns::new("node");
    node.enable_forwarding();
    Cluster {
        node,
        ds,
        socket,
        _dir: dir,
        runtime,
    }
}

struct Call {
    command: String,
    container: String,
    netns: String,
    args: String,
    conf: Value,
}

impl Cluster {
    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version, "name": "trellis", "type": "trellis",
            "ipam": {"type": "trellis-ipam", "assign_ipv6": "true"},
            "agent_socket": self.socket,
        })
    }

    fn call(&self, pod: &TestNetns, command: &str, container: &str, version: &str) -> Call {
        Call {
            command: command.to_string(),
            container: container.to_string(),
            netns: pod.path().display().to_string(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container};K8S_POD_INFRA_CONTAINER_ID={container}"),
            conf: self.conf(version),
        }
    }

    /// Runs the plugin in the node namespace; returns (exit ok, parsed stdout or Null).
    fn run(&self, c: &Call) -> (bool, Value) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node.name,
                env!("CARGO_BIN_EXE_trellis"),
            ])
            .env_clear()
            .env("CNI_COMMAND", &c.command)
            .env("CNI_CONTAINERID", &c.container)
            .env("CNI_NETNS", &c.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", &c.args)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(c.conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (out.status.success(), v)
    }

    fn allocations(&self) -> usize {
        self.runtime
            .block_on(trellis_ipam::check(self.ds.as_ref()))
            .unwrap()
            .allocations
    }

    /// Links in the node namespace other than lo.
    fn node_links(&self) -> Vec<String> {
        self.node
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n != "lo")
            .collect()
    }
}

fn ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn add_check_del_for_every_version_and_pods_talk() {
    let c = cluster("plugin-e2e");
    let (pa, pb) = (TestNetns::new("pod-a"), TestNetns::new("pod-b"));
    let (ok, ra) = c.run(&c.call(&pa, "ADD", "pod-a", "1.1.0"));
    assert!(ok, "{ra}");
    assert_eq!(ra["cniVersion"], "1.1.0");
    let (ok, rb) = c.run(&c.call(&pb, "ADD", "pod-b", "0.4.0"));
    assert!(ok, "{rb}");
    assert_eq!(rb["cniVersion"], "0.4.0");
    assert!(
        rb["ips"][0]["version"].is_string(),
        "0.4.0 results carry ips[].version: {rb}"
    );
    assert!(
        ra["ips"][0].get("version").is_none(),
        "1.1.0 results do not: {ra}"
    );
    let (a, b) = (ips(&ra), ips(&rb));
    assert_eq!((a.len(), b.len()), (2, 2), "one IPv4 and one IPv6 each");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["mtu"], 1400);
    for (from, to) in [(&pa, &b), (&pb, &a)] {
        for ip in to.iter() {
            assert!(from.ping(*ip), "{} cannot reach {ip}", from.name);
        }
    }
    // CHECK with the ADD result as prevResult.
    let mut check = c.call(&pa, "CHECK", "pod-a", "1.1.0");
    check.conf["prevResult"] = ra.clone();
    let (ok, out) = c.run(&check);
    assert!(ok, "{out}");
    pa.ip(&[
        "route",
        "del",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    let (ok, out) = c.run(&check);
    assert!(
        !ok && out["code"] == 100 && out["msg"].as_str().unwrap().contains("default"),
        "{out}"
    );

    // DEL: twice, then with the netns gone.
    assert!(c.run(&c.call(&pa, "DEL", "pod-a", "1.1.0")).0);
    assert!(
        c.run(&c.call(&pa, "DEL", "pod-a", "1.1.0")).0,
        "DEL is idempotent"
    );
    let gone = c.call(&pb, "DEL", "pod-b", "0.4.0");
    pb.delete();
    assert!(c.run(&gone).0, "DEL after the netns is gone");
    let mut unknown = c.call(&pa, "DEL", "never-added", "1.0.0");
    unknown.netns = String::new();
    assert!(
        c.run(&unknown).0,
        "DEL of an unknown container with empty CNI_NETNS"
    );
    assert_eq!(c.allocations(), 0);
    assert!(
        c.node_links().is_empty(),
        "left behind: {:?}",
        c.node_links()
    );
}

#[test]
fn bad_input_gets_its_code_and_leaves_nothing() {
    let c = cluster("plugin-bad");
    let pod = TestNetns::new("pod");
    type Mutate = Box<dyn Fn(&mut Call)>;
    let cases: Vec<(&str, Mutate, u64, &str)> = vec![
        (
            "unsupported version",
            Box::new(|k: &mut Call| k.conf["cniVersion"] = json!("0.2.0")),
            1,
            "0.2.0",
        ),
        (
            "missing CNI_CONTAINERID",
            Box::new(|k: &mut Call| k.container = String::new()),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "malformed CNI_ARGS",
            Box::new(|k: &mut Call| k.args = "K8S_POD_NAME".into()),
            4,
            "K8S_POD_NAME",
        ),
        (
            "bad JSON type",
            Box::new(|k: &mut Call| k.conf["name"] = json!(7)),
            6,
            "name",
        ),
        (
            "bad IPAM field",
            Box::new(|k: &mut Call| k.conf["ipam"]["ipv4_pools"] = json!(["10.70.0.1/16"])),
            7,
            "ipv4_pools",
        ),
        (
            "agent unreachable",
            Box::new(|k: &mut Call| k.conf["agent_socket"] = json!("/nonexistent/agent.sock")),
            11,
            "/nonexistent/agent.sock",
        ),
        (
            "netns missing",
            Box::new(|k: &mut Call| k.netns = "/run/netns/trl-t-does-not-exist".into()),
            3,
            "trl-t-does-not-exist",
        ),
        (
            "requested IP outside pools",
            Box::new(|k: &mut Call| k.args.push_str(";IP=192.0.2.1")),
            101,
            "192.0.2.1",
        ),
    ];
    for (what, mutate, code, mention) in cases {
        let mut call = c.call(&pod, "ADD", "bad", "1.0.0");
        mutate(&mut call);
        let (ok, out) = c.run(&call);
        assert!(!ok, "{what}: succeeded: {out}");
        assert_eq!(out["code"], code, "{what}: {out}");
        let msg = format!("{} {}", out["msg"], out["details"]);
        assert!(
            msg.contains(mention),
            "{what}: the message should name {mention:?}: {out}"
        );
        assert_eq!(c.allocations(), 0, "{what}: an address was left allocated");
        assert!(
            c.node_links().is_empty(),
            "{what}: left behind {:?}",
            c.node_links()
        );
        assert!(!pod.has_link("eth0"), "{what}: eth0 left in the pod");
    }
}

#[test]
fn version_gc_and_status() {
    let c = cluster("plugin-gc");
    let (pa, pb) = (TestNetns::new("pod-a"), TestNetns::new("pod-b"));
    let (ok, v) = c.run(&c.call(&pa, "VERSION", "x", "1.1.0"));
    assert!(
        ok && v["supportedVersions"] == json!(["0.4.0", "1.0.0", "1.1.0"]),
        "{v}"
    );
    assert!(c.run(&c.call(&pa, "ADD", "pod-a", "1.1.0")).0);
    assert!(c.run(&c.call(&pb, "ADD", "pod-b", "1.1.0")).0);
    assert_eq!(c.allocations(), 4);
    let mut gc = c.call(&pa, "GC", "", "1.1.0");
    gc.conf["cni.dev/valid-attachments"] = json!([{"containerID": "pod-a", "ifname": "eth0"}]);
    let (ok, out) = c.run(&gc);
    assert!(ok, "{out}");
    assert_eq!(c.allocations(), 2, "pod-b's addresses were collected");
    assert!(c.run(&c.call(&pa, "STATUS", "", "1.1.0")).0);
    let mut down = c.call(&pa, "STATUS", "", "1.1.0");
    down.conf["agent_socket"] = json!("/nonexistent/agent.sock");
    let (ok, out) = c.run(&down);
    assert!(
        !ok && out["code"] == 50
            && out["msg"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/agent.sock"),
        "{out}"
    );
    assert!(c.run(&c.call(&pa, "DEL", "pod-a", "1.1.0")).0);
    assert!(c.run(&c.call(&pb, "DEL", "pod-b", "1.1.0")).0);
    assert_eq!(c.allocations(), 0);
}

/// Delegated IPAM: Debian's host-local hands out the addresses; trellis wires the pods.
#[test]
fn delegated_host_local_ipam() {
    let c = cluster("plugin-hostlocal");
    assert!(
        std::path::Path::new("/usr/lib/cni/host-local").is_file(),
        "Debian's reference plugins are missing: apt-get install containernetworking-plugins"
    );
    let data = tempfile::tempdir().unwrap();
    let (pa, pb) = (TestNetns::new("pod-a"), TestNetns::new("pod-b"));
    let conf = |call: &mut Call| {
        call.conf["ipam"] =
            json!({"type": "host-local", "subnet": "10.71.0.0/24", "dataDir": data.path()});
    };
    let mut add_a = c.call(&pa, "ADD", "hl-a", "1.0.0");
    conf(&mut add_a);
    let (ok, ra) = c.run(&add_a);
    assert!(ok, "{ra}");
    let mut add_b = c.call(&pb, "ADD", "hl-b", "1.0.0");
    conf(&mut add_b);
    let (ok, rb) = c.run(&add_b);
    assert!(ok, "{rb}");
    let (a, b) = (ips(&ra), ips(&rb));
    assert!(
        a[0].to_string().starts_with("10.71.0.") && b[0].to_string().starts_with("10.71.0."),
        "{a:?} {b:?}"
    );
    assert!(
        pa.ip(&["link", "show", "eth0"]).contains("mtu 1400"),
        "the agent's MTU applies to delegated IPAM too"
    );
    assert!(pa.ping(b[0]) && pb.ping(a[0]));
    assert_eq!(c.allocations(), 0, "trellis IPAM was not used");
    let held = |ip: &IpAddr| data.path().join("trellis").join(ip.to_string()).exists();
    assert!(held(&a[0]) && held(&b[0]), "host-local recorded both");
    for (pod, cid) in [(&pa, "hl-a"), (&pb, "hl-b")] {
        let mut del = c.call(pod, "DEL", cid, "1.0.0");
        conf(&mut del);
        let (ok, out) = c.run(&del);
        assert!(ok, "{out}");
    }
    assert!(
        !held(&a[0]) && !held(&b[0]),
        "DEL released host-local's addresses"
    );
    assert!(
        c.node_links().is_empty(),
        "left behind: {:?}",
        c.node_links()
    );

    // A failure after host-local allocated (the pod netns is missing) gives the address back.
    let mut broken = c.call(&pa, "ADD", "hl-c", "1.0.0");
    conf(&mut broken);
    broken.netns = "/run/netns/trl-t-does-not-exist".into();
    let (ok, out) = c.run(&broken);
    assert!(!ok && out["code"] == 3, "{out}");
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("trellis"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10.71."))
        .collect();
    assert!(leftovers.is_empty(), "host-local still holds {leftovers:?}");
}

/// Chaining: trellis after another plugin keeps the previous result and adds its own.
#[test]
fn chained_after_another_plugin_keeps_prev_result() {
    let c = cluster("plugin-chain");
    let pod = TestNetns::new("pod");
    let mut add = c.call(&pod, "ADD", "chained", "1.1.0");
    add.conf["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lo", "sandbox": pod.path()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
        "dns": {"nameservers": ["10.96.0.10"]}
    });
    let (ok, r) = c.run(&add);
    assert!(ok, "{r}");
    assert_eq!(r["interfaces"][0]["name"], "lo", "{r}");
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8", "{r}");
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10", "{r}");
    let ours = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ip| ip["interface"] == 2)
        .count();
    assert_eq!(ours, 2, "our addresses point at our eth0 (index 2): {r}");
    assert!(c.run(&c.call(&pod, "DEL", "chained", "1.1.0")).0);
    assert_eq!(c.allocations(), 0);
}
