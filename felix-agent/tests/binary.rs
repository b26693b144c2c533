//! The `trellis-agent` binary as an operator runs it: registers its node, serves the CNI socket,
//! /livez, /readyz and /metrics, and exits cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_datastore::codec;
use trellis_datastore::resources::{IpPool, IpPoolSpec, NodeSpec};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{Datastore, ObjectMeta};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port; returns (status line, body).
async fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[tokio::test]
async fn agent_binary_serves_health_metrics_and_the_cni_socket() {
    let server = EtcdServer::shared();
    let config = server.config("agent-binary");
    let ds = trellis_datastore::etcd::EtcdDatastore::connect(config.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let (health, metrics) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis-agent"))
        .args([
            "--node-name",
            "node-7",
            "--node-ip",
            "192.0.2.7",
            "--mtu",
            "1400",
        ])
        .args([
            "--health-port",
            &health.to_string(),
            "--metrics-port",
            &metrics.to_string(),
        ])
        .arg("--socket")
        .arg(&socket)
        .env("TRELLIS_ETCD_ENDPOINTS", server.endpoint())
        .env("TRELLIS_ETCD_PREFIX", &config.prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(health, "/livez").await.is_none() {
        assert!(Instant::now() < deadline, "agent did not come up");
        assert!(child.try_wait().unwrap().is_none(), "agent exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = get(health, "/livez").await.unwrap();
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
    let (status, body) = get(health, "/readyz").await.unwrap();
    assert!(
        status.contains("503") && body.contains("no enabled IP pool selects node node-7"),
        "{status} {body}"
    );
    let pool = IpPool::new(
        ObjectMeta::named("p"),
        IpPoolSpec::new("10.60.0.0/16".parse().unwrap()),
    );
    ds.put(&pool.key(), codec::encode_object(&pool).unwrap())
        .await
        .unwrap();
    let (status, _) = get(health, "/readyz").await.unwrap();
    assert!(status.contains("200"), "{status}");

    let node = codec::get_object::<NodeSpec>(&ds, "nodes/node-7")
        .await
        .unwrap()
        .expect("node registered");
    assert_eq!(node.value.spec.ipv4(), Some("192.0.2.7".parse().unwrap()));

    let client = trellis_agent_api::AgentClient::new(&socket);
    assert!(client.status().await.unwrap().ready);
    let (status, text) = get(metrics, "/metrics").await.unwrap();
    assert!(
        status.contains("200")
            && text.contains("trellis_agent_requests_total{op=\"Status\",result=\"Ok\"} 1"),
        "{text}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
}
