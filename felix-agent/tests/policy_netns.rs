//! The policy manager against a real etcd and a real kernel (root; CI runs as root): pods in
//! namespaces of their own behind veths on one "node" namespace, the manager applying
//! `table inet trellis` there through `ip netns exec NODE nft -f -`, and pings deciding.
//!
//! ```text
//!   trl-pol<pid>-a  eth0 10.244.1.2/32 ──veth── trlxa0 ┐
//!   trl-pol<pid>-b  eth0 10.244.1.3/32 ──veth── trlxb0 ┴ trl-pol<pid>-node (forwarding)
//! ```
//! Nothing is done in the root namespace. Namespaces are removed by a guard, and those of a
//! crashed run at the start.

use trellis_test_support::netns as netns_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_support::{cleanup_stale, in_ns, ip, is_root, must_in_ns};
use trellis_agent::dataplane::nat::NftCommand;
use trellis_agent::dataplane::DataplaneStatus;
use trellis_agent::policy::run::{run, PolicyConfig};
use trellis_datastore::codec;
use trellis_datastore::resources::{
    parse_documents, AnyResource, WorkloadEndpoint, WorkloadEndpointSpec,
};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{Datastore, ObjectMeta};

const PREFIX: &str = "trl-pol";

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .output();
        }
    }
}

/// node namespace + two pods wired with veths and /32 routes.
fn topology() -> (Namespaces, String, [String; 2]) {
    cleanup_stale(PREFIX);
    let base = format!("{PREFIX}{}", std::process::id());
    let node = format!("{base}-node");
    let pods = [format!("{base}-a"), format!("{base}-b")];
    let mut all = vec![node.clone()];
    all.extend(pods.iter().cloned());
    for n in &all {
        ip(&format!("netns add {n}"));
        ip(&format!("-n {n} link set lo up"));
    }
    let guard = Namespaces(all);
    must_in_ns(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    for (pod, (veth, addr)) in pods
        .iter()
        .zip([("trlxa0", "10.244.1.2"), ("trlxb0", "10.244.1.3")])
    {
        ip(&format!(
            "-n {node} link add {veth} type veth peer name eth0 netns {pod}"
        ));
        ip(&format!("-n {pod} addr add {addr}/32 dev eth0"));
        ip(&format!("-n {pod} link set eth0 up"));
        ip(&format!("-n {node} link set {veth} up"));
        ip(&format!("-n {node} addr add 169.254.1.1/32 dev {veth}"));
        ip(&format!("-n {pod} route add 169.254.1.1 dev eth0"));
        ip(&format!(
            "-n {pod} route add default via 169.254.1.1 dev eth0"
        ));
        ip(&format!("-n {node} route add {addr}/32 dev {veth}"));
        must_in_ns(
            &node,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{veth}.proxy_arp=1"),
            ],
        );
    }
    (guard, node, pods)
}

fn wep(pod: &str, iface: &str, addr: &str, labels: &[(&str, &str)]) -> WorkloadEndpoint {
    let mut meta = ObjectMeta::named(format!("node--1-k8s-{pod}-eth0"));
    meta.namespace = Some("x".into());
    WorkloadEndpoint::new(
        meta,
        WorkloadEndpointSpec {
            node: "node-1".into(),
            pod: pod.into(),
            endpoint: "eth0".into(),
            interface_name: iface.into(),
            ip_networks: vec![format!("{addr}/32").parse().unwrap()],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        },
    )
}

async fn put(ds: &dyn Datastore, w: &WorkloadEndpoint) {
    ds.put(&w.key(), codec::encode_object(w).unwrap())
        .await
        .unwrap();
}

async fn put_yaml(ds: &dyn Datastore, yaml: &str) -> String {
    let r = parse_documents(yaml, "test.yaml").unwrap().remove(0);
    r.validate().unwrap();
    let (key, value) = match &r {
        AnyResource::NetworkPolicy(o) => (o.key(), codec::encode_object(o).unwrap()),
        AnyResource::Namespace(o) => (o.key(), codec::encode_object(o).unwrap()),
        other => panic!("{}", other.kind()),
    };
    ds.put(&key, value).await.unwrap();
    key
}

/// Whether a's ping to b gets through, waiting up to `within` for it to become `want`.
fn ping_becomes(pod_a: &str, want: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let (ok, _) = in_ns(pod_a, &["ping", "-c1", "-W1", "10.244.1.3"]);
        if ok == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_enforces_updates_and_removes_policy_with_real_packets() {
    assert!(
        is_root(),
        "policy_netns creates network namespaces: run as root (CI does)"
    );
    let (_guard, node, pods) = topology();
    let server = EtcdServer::shared();
    let ds: Arc<dyn Datastore> = Arc::new(
        server
            .datastore(&format!("policy-{}", std::process::id()))
            .await,
    );
    put(
        ds.as_ref(),
        &wep("a", "trlxa0", "10.244.1.2", &[("pod", "a")]),
    )
    .await;
    put(
        ds.as_ref(),
        &wep("b", "trlxb0", "10.244.1.3", &[("pod", "b")]),
    )
    .await;
    put_yaml(
        ds.as_ref(),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n",
    )
    .await;
    let status = Arc::new(DataplaneStatus::default());
    let manager = tokio::spawn(run(
        ds.clone(),
        PolicyConfig {
            node_name: "node-1".into(),
        },
        NftCommand::in_netns(node.clone()),
        status.clone(),
    ));
    let a = pods[0].clone();
    let wait = Duration::from_secs(10);
    let check = |want: bool, what: &'static str| {
        let a = a.clone();
        async move {
            let ok = tokio::task::spawn_blocking(move || ping_becomes(&a, want, wait))
                .await
                .unwrap();
            assert!(ok, "{what}");
        }
    };
    check(true, "no policy: a reaches b").await;
    // Only pod=c may reach b: a is refused.
    let policy = put_yaml(
        ds.as_ref(),
        "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: only-c, namespace: x}\n\
         spec: {podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]}\n",
    )
    .await;
    check(false, "only pod=c may reach b").await;
    // A restart never leaves the node without policy: the stopped manager's table stays, and
    // the new one adopts it (its first transaction changes nothing that matters).
    manager.abort();
    let _ = manager.await;
    let before = must_in_ns(&node, &["nft", "list", "table", "inet", "trellis"]);
    check(false, "with the manager stopped, the policy still holds").await;
    let manager = tokio::spawn(run(
        ds.clone(),
        PolicyConfig {
            node_name: "node-1".into(),
        },
        NftCommand::in_netns(node.clone()),
        status.clone(),
    ));
    check(false, "after the restart, still refused").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = must_in_ns(&node, &["nft", "list", "table", "inet", "trellis"]);
    assert_eq!(
        before, after,
        "the restarted manager rebuilt the same table"
    );
    // a relabelled pod=c: admitted, by a set element change.
    put(
        ds.as_ref(),
        &wep("a", "trlxa0", "10.244.1.2", &[("pod", "c")]),
    )
    .await;
    check(true, "a, now pod=c, reaches b").await;
    // The policy goes: its chain and sets go with it, and a reaches b whatever its label.
    put(
        ds.as_ref(),
        &wep("a", "trlxa0", "10.244.1.2", &[("pod", "a")]),
    )
    .await;
    check(false, "back to pod=a: refused again").await;
    ds.delete(&policy, None).await.unwrap();
    check(true, "policy deleted: a reaches b").await;
    let listing = must_in_ns(&node, &["nft", "list", "table", "inet", "trellis"]);
    assert!(
        !listing.contains("chain np-"),
        "the deleted policy's chain is still there:\n{listing}"
    );
    // Anti-spoofing, with no policy left to refuse anything: a packet from a's veth with an
    // address that is not a's is dropped, though the node would route the reply back to a and
    // reverse-path filtering is off (so only the source check can stop it).
    ip(&format!("-n {a} addr add 10.244.1.99/32 dev eth0"));
    ip(&format!("-n {node} route add 10.244.1.99/32 dev trlxa0"));
    for conf in ["all", "trlxa0"] {
        must_in_ns(
            &node,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.rp_filter=0"),
            ],
        );
    }
    let (spoofed, _) = in_ns(
        &a,
        &["ping", "-c2", "-W1", "-I", "10.244.1.99", "10.244.1.3"],
    );
    assert!(
        !spoofed,
        "a packet with an address that is not a's left its veth"
    );
    assert!(status.problems().is_empty(), "{:?}", status.problems());
    manager.abort();
}
