//! The IMDSv2 client against the IMDSv2 test server, both from this crate, over loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_vpc::imds::{ImdsClient, ImdsConfig, ImdsEni, ImdsError, InstanceMetadata};
use trellis_vpc::imds_server::ImdsServer;

const PRIMARY_MAC: &str = "0e:00:00:00:00:01";

fn eni(device: u32, mac: &str, ips: &[&str], prefixes: &[&str]) -> ImdsEni {
    ImdsEni {
        mac: mac.to_owned(),
        device_number: device,
        interface_id: format!("eni-{device}"),
        subnet_id: "subnet-1".to_owned(),
        subnet_cidr: "10.0.0.0/24".parse().unwrap(),
        security_group_ids: vec!["sg-1".to_owned(), "sg-2".to_owned()],
        local_ipv4s: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ipv4_prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        vpc_cidrs: vec![
            "10.0.0.0/16".parse().unwrap(),
            "100.64.0.0/16".parse().unwrap(),
        ],
    }
}

fn metadata() -> InstanceMetadata {
    InstanceMetadata {
        instance_id: "i-0123456789abcdef0".to_owned(),
        instance_type: "m5.large".to_owned(),
        region: "us-east-1".to_owned(),
        primary_mac: PRIMARY_MAC.to_owned(),
        enis: vec![
            eni(0, PRIMARY_MAC, &["10.0.0.4", "10.0.0.5"], &[]),
            eni(
                1,
                "0e:00:00:00:00:02",
                &["10.0.0.10"],
                &["10.0.0.32/28", "10.0.0.48/28"],
            ),
        ],
    }
}

async fn start(metadata: InstanceMetadata) -> ImdsServer {
    ImdsServer::start("127.0.0.1:0".parse().unwrap(), metadata)
        .await
        .expect("bind loopback")
}

fn client(endpoint: String, token_ttl: Duration) -> ImdsClient {
    ImdsClient::new(ImdsConfig {
        endpoint,
        token_ttl,
        ..ImdsConfig::default()
    })
    .expect("valid endpoint")
}

/// One raw HTTP/1.1 exchange; returns the status code.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn reads_everything_with_one_token() {
    let server = start(metadata()).await;
    let client = client(server.endpoint(), Duration::from_secs(600));
    let read = client.instance_metadata().await.expect("IMDS read");
    assert_eq!(read, metadata());
    assert_eq!(read.enis[1].ipv4_prefixes.len(), 2);
    assert_eq!(
        server.handle().tokens_issued(),
        1,
        "the token is cached across reads"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_without_a_valid_token_is_401() {
    let server = start(metadata()).await;
    let addr = server.addr();
    let get = |extra: &str| {
        format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    assert_eq!(raw_status(addr, &get("")).await, 401);
    assert_eq!(
        raw_status(addr, &get("X-aws-ec2-metadata-token: forged\r\n")).await,
        401
    );
    let no_ttl = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(addr, no_ttl).await, 400);
    let too_long = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 21601\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(addr, too_long).await, 400);
    assert_eq!(server.handle().tokens_issued(), 0);
}

#[tokio::test]
async fn token_is_renewed_before_its_ttl_ends_and_after_a_401() {
    let server = start(metadata()).await;
    let client = client(server.endpoint(), Duration::from_secs(2));
    assert_eq!(
        client.get("instance-id").await.unwrap(),
        "i-0123456789abcdef0"
    );
    assert_eq!(client.get("mac").await.unwrap(), PRIMARY_MAC);
    assert_eq!(server.handle().tokens_issued(), 1);

    // Past three quarters of the 2 s TTL, but before it ends: renewed without a 401.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(client.get("instance-type").await.unwrap(), "m5.large");
    assert_eq!(server.handle().tokens_issued(), 2);

    // Tokens revoked behind the client's back (IMDS restarted): one 401, a new token, success.
    server.handle().expire_tokens();
    assert_eq!(client.get("placement/region").await.unwrap(), "us-east-1");
    assert_eq!(server.handle().tokens_issued(), 3);
}

#[tokio::test]
async fn an_eni_attached_later_shows_up() {
    let mut first = metadata();
    first.enis.truncate(1);
    let server = start(first).await;
    let client = client(server.endpoint(), Duration::from_secs(600));
    assert_eq!(client.instance_metadata().await.unwrap().enis.len(), 1);

    server.handle().update(|m| {
        m.enis
            .push(eni(2, "0e:00:00:00:00:03", &["10.0.0.20"], &[]))
    });
    let read = client.instance_metadata().await.unwrap();
    assert_eq!(client.macs().await.unwrap().len(), 2);
    assert_eq!(read.enis.len(), 2);
    assert_eq!(read.enis[1].device_number, 2);
    assert_eq!(read.enis[1].interface_id, "eni-2");
    assert_eq!(server.handle().metadata(), read);
}

#[tokio::test]
async fn a_404_prefix_path_means_no_prefixes() {
    let server = start(metadata()).await;
    let client = client(server.endpoint(), Duration::from_secs(600));
    let path = format!("network/interfaces/macs/{PRIMARY_MAC}/ipv4-prefix");
    assert_eq!(client.get_optional(&path).await.unwrap(), None);
    let err = client.get(&path).await.unwrap_err();
    assert!(matches!(err, ImdsError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("IMDS /latest/meta-data/{path}: not found (HTTP 404)")
    );
    assert!(client
        .eni(PRIMARY_MAC)
        .await
        .unwrap()
        .ipv4_prefixes
        .is_empty());
}

#[tokio::test]
async fn a_silent_endpoint_times_out_naming_the_path() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let client = ImdsClient::new(ImdsConfig {
        endpoint: format!("http://{addr}"),
        timeout: Duration::from_millis(200),
        attempts: 1,
        ..ImdsConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = client.get("instance-id").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ImdsError::Timeout { .. }), "{err}");
    // The token is what it was waiting for.
    assert!(
        err.to_string()
            .starts_with("IMDS /latest/api/token: no answer from"),
        "{err}"
    );
    hold.abort();
}

#[tokio::test]
async fn a_stopped_server_is_a_transport_error() {
    let server = start(metadata()).await;
    let endpoint = server.endpoint();
    server.shutdown().await.unwrap();
    let client = ImdsClient::new(ImdsConfig {
        endpoint,
        attempts: 2,
        ..ImdsConfig::default()
    })
    .unwrap();
    let err = client.get("instance-id").await.unwrap_err();
    assert!(matches!(err, ImdsError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("/latest/api/token"), "{err}");
}
