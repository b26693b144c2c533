//! The agent API end to end: an in-process agent on a temporary Unix socket, a real etcd, and
//! the client the CNI plugin uses.

use std::net::IpAddr;
use std::sync::Arc;

use trellis_agent::api;
use trellis_agent::endpoints::Endpoints;
use trellis_agent::metrics::Metrics;
use trellis_agent_api::*;
use trellis_datastore::codec;
use trellis_datastore::resources::{IpPool, IpPoolSpec};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{Datastore, ObjectMeta};

struct Agent {
    client: AgentClient,
    ds: Arc<dyn Datastore>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn agent(ds: Arc<dyn Datastore>, node: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = api::bind(&socket).unwrap();
    trellis_agent::register::register_node(ds.as_ref(), node, &[])
        .await
        .unwrap();
    let endpoints = Arc::new(Endpoints::new(ds.clone(), node, 1450));
    let metrics = Arc::new(Metrics::default());
    let state = api::AppState {
        endpoints,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(api::serve(listener, state));
    Agent {
        client: AgentClient::new(socket),
        ds,
        metrics,
        _dir: dir,
        task,
    }
}

async fn put_pool(ds: &dyn Datastore, name: &str, cidr: &str) {
    let pool = IpPool::new(
        ObjectMeta::named(name),
        IpPoolSpec::new(cidr.parse().unwrap()),
    );
    ds.put(&pool.key(), codec::encode_object(&pool).unwrap())
        .await
        .unwrap();
}

fn attachment(cid: &str) -> Attachment {
    Attachment {
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: String::new(),
    }
}

fn add_req(cid: &str, v6: bool) -> AddRequest {
    AddRequest {
        attachment: attachment(cid),
        pod: pod(&format!("pod-{cid}")),
        assign_ipv4: true,
        assign_ipv6: v6,
        ipv4_pools: vec![],
        ipv6_pools: vec![],
        requested: vec![],
    }
}

async fn wire(a: &Agent, cid: &str, v6: bool) -> AddResponse {
    let got = a.client.add(&add_req(cid, v6)).await.unwrap();
    a.client
        .endpoint(&EndpointRequest {
            attachment: attachment(cid),
            pod: pod(&format!("pod-{cid}")),
            host_ifname: format!("tr{}", &cid[..cid.len().min(13)]),
            mac: "0a:58:0a:00:00:01".into(),
            addresses: got.addresses.clone(),
        })
        .await
        .unwrap();
    got
}

#[tokio::test]
async fn add_endpoint_del_round_trip() {
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-api").await);
    let a = agent(ds.clone(), "node-1").await;
    let st = a.client.status().await.unwrap();
    assert!(
        !st.ready && st.reason.contains("no enabled IP pool selects node node-1"),
        "{st:?}"
    );
    put_pool(ds.as_ref(), "v4", "10.50.0.0/16").await;
    put_pool(ds.as_ref(), "v6", "fd00:50::/64").await;
    assert!(a.client.status().await.unwrap().ready);

    let got = wire(&a, "c1", true).await;
    assert_eq!(got.addresses.len(), 2);
    assert_eq!(got.mtu, 1450);
    assert!(
        got.addresses
            .iter()
            .all(|n| n.prefix_len() == n.max_prefix_len()),
        "host routes: {got:?}"
    );
    let report = trellis_ipam::check(a.ds.as_ref()).await.unwrap();
    assert!(report.is_clean() && report.endpoints == 1, "{report}");

    let del = a
        .client
        .del(&DelRequest {
            attachment: attachment("c1"),
            pod: None,
        })
        .await
        .unwrap();
    assert_eq!(del.released.len(), 2);
    assert_eq!(del.host_ifname.as_deref(), Some("trc1"));
    assert_eq!(del.addresses, got.addresses);
    let again = a
        .client
        .del(&DelRequest {
            attachment: attachment("c1"),
            pod: None,
        })
        .await
        .unwrap();
    assert!(
        again.released.is_empty() && again.host_ifname.is_none(),
        "DEL is idempotent"
    );
    let report = trellis_ipam::check(a.ds.as_ref()).await.unwrap();
    assert!(
        report.is_clean() && report.endpoints == 0 && report.allocations == 0,
        "{report}"
    );
    let text = a.metrics.render();
    assert!(
        text.contains("trellis_agent_request_duration_seconds_count{op=\"Add\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("trellis_ipam_addresses_allocated_total 2"),
        "{text}"
    );
    assert!(
        text.contains("trellis_ipam_addresses_released_total 2"),
        "{text}"
    );
}

#[tokio::test]
async fn requested_addresses_are_all_or_nothing() {
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-requested").await);
    put_pool(ds.as_ref(), "v4", "10.51.0.0/16").await;
    let a = agent(ds.clone(), "node-1").await;
    let fixed: IpAddr = "10.51.7.7".parse().unwrap();
    let mut req = add_req("fixed", false);
    req.requested = vec![fixed];
    assert_eq!(
        a.client.add(&req).await.unwrap().addresses,
        vec![ipnet::IpNet::from(fixed)]
    );
    let mut clash = add_req("clash", false);
    clash.requested = vec!["10.51.7.8".parse().unwrap(), fixed];
    let err = a.client.add(&clash).await.unwrap_err();
    assert_eq!(err.cni_code(), 101, "{err}");
    assert!(
        err.to_string().contains("10.51.7.7 is already allocated"),
        "{err}"
    );
    let held = trellis_ipam::store::addresses_of(ds.as_ref(), "clash.eth0")
        .await
        .unwrap();
    assert!(held.is_empty(), "the failed ADD kept {held:?}");
    let mut outside = add_req("outside", false);
    outside.requested = vec!["192.0.2.1".parse().unwrap()];
    assert_eq!(a.client.add(&outside).await.unwrap_err().cni_code(), 101);
}

#[tokio::test]
async fn gc_releases_everything_not_listed() {
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-gc").await);
    put_pool(ds.as_ref(), "v4", "10.52.0.0/16").await;
    let a = agent(ds.clone(), "node-1").await;
    let other = agent(ds.clone(), "node-2").await;
    wire(&a, "keep", false).await;
    wire(&a, "gone", false).await;
    a.client.add(&add_req("half", false)).await.unwrap(); // ADD died before its endpoint
    wire(&other, "elsewhere", false).await;
    let out = a
        .client
        .gc(&GcRequest {
            valid: vec![attachment("keep")],
        })
        .await
        .unwrap();
    let mut released: Vec<String> = out
        .released
        .iter()
        .map(|a| a.container_id.clone())
        .collect();
    released.sort();
    assert_eq!(released, ["gone", "half"]);
    let report = trellis_ipam::check(ds.as_ref()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.endpoints, 2,
        "node-2's pod is not node-1's to collect"
    );
}

#[tokio::test]
async fn datastore_outage_is_try_again_later() {
    let server = EtcdServer::start();
    let ds: Arc<dyn Datastore> = Arc::new(server.datastore("agent-outage").await);
    put_pool(ds.as_ref(), "v4", "10.53.0.0/16").await;
    let a = agent(ds.clone(), "node-1").await;
    server.stop();
    let st = a.client.status().await.unwrap();
    assert!(!st.ready && st.reason.contains("datastore"), "{st:?}");
    let err = a.client.add(&add_req("c", false)).await.unwrap_err();
    assert_eq!(err.cni_code(), 11, "{err}");
    server.restart();
    let mut ok = false;
    for _ in 0..50 {
        if a.client.add(&add_req("c", false)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the agent recovers when etcd is back");
}

#[tokio::test]
async fn missing_agent_is_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let client = AgentClient::new(dir.path().join("none.sock"));
    let err = client.status().await.unwrap_err();
    assert_eq!(err.cni_code(), 11);
    assert!(err.to_string().contains("none.sock"), "{err}");
}

#[tokio::test]
async fn del_with_the_pod_named_finds_its_endpoint_and_no_other() {
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-del-pod").await);
    put_pool(ds.as_ref(), "v4", "10.54.0.0/16").await;
    let a = agent(ds.clone(), "node-1").await;
    let got = wire(&a, "c2", false).await;
    // The runtime names the pod (K8S_POD_NAMESPACE/NAME): the endpoint is read directly.
    let del = a
        .client
        .del(&DelRequest {
            attachment: attachment("c2"),
            pod: Some(pod("pod-c2")),
        })
        .await
        .unwrap();
    assert_eq!(del.host_ifname.as_deref(), Some("trc2"));
    assert_eq!(del.addresses, got.addresses);
    assert_eq!(del.released.len(), 1);
    // A DEL for an older container of a pod whose endpoint now belongs to a newer container
    // must not remove the newer one.
    wire(&a, "new", false).await;
    let stale = DelRequest {
        attachment: attachment("old"),
        pod: Some(pod("pod-new")),
    };
    let out = a.client.del(&stale).await.unwrap();
    assert!(
        out.host_ifname.is_none() && out.released.is_empty(),
        "{out:?}"
    );
    let report = trellis_ipam::check(ds.as_ref()).await.unwrap();
    assert!(
        report.is_clean() && report.endpoints == 1 && report.allocations == 1,
        "{report}"
    );
}
