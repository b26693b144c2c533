//! An IMDSv2 server for tests and the lab: it answers the paths [`crate::imds`] reads from an
//! [`InstanceMetadata`] that the test or the lab updates as ENIs come and go.
//!
//! moto's own IMDS has fixed fake values and no `network/interfaces/macs/...`, so the lab
//! serves each node one of these, built from moto's state by [`metadata_from_ec2`].
//!
//! Like IMDS with `HttpTokens=required`: `PUT /latest/api/token` with a TTL of 1..=21600
//! seconds issues a token; a GET without a live token is 401. Tokens are unguessable only in
//! the sense a fixture needs (unique, not secret): this serves loopback tests and lab
//! namespaces, never a real network.
//!
//! ```text
//!  test / lab ──ImdsHandle::update──► RwLock<InstanceMetadata> ◄──lookup── GET handler ◄── client
//!                                      Mutex<tokens>            ◄──────── PUT handler ◄── client
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use ipnet::Ipv4Net;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ec2::{Ec2, Ec2Error, Eni, Instance};
use crate::imds::{ImdsEni, InstanceMetadata, MAX_TOKEN_TTL, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER};

/// A running server. Dropping it stops the server; [`ImdsServer::shutdown`] waits for that.
#[derive(Debug)]
pub struct ImdsServer {
    addr: SocketAddr,
    handle: ImdsHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Shared view of a server's state: cheap to clone, for whoever changes the instance.
#[derive(Debug, Clone)]
pub struct ImdsHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    metadata: RwLock<InstanceMetadata>,
    /// Token -> expiry.
    tokens: Mutex<HashMap<String, Instant>>,
    issued: AtomicU64,
}

impl ImdsServer {
    /// Binds `bind` (tests: `127.0.0.1:0`) and serves `metadata` until shut down.
    pub async fn start(bind: SocketAddr, metadata: InstanceMetadata) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let handle = ImdsHandle {
            shared: Arc::new(Shared {
                metadata: RwLock::new(metadata),
                tokens: Mutex::new(HashMap::new()),
                issued: AtomicU64::new(0),
            }),
        };
        let app = Router::new()
            .route(TOKEN_PATH, put(issue_token))
            .route("/latest/meta-data", get(meta_root))
            .route("/latest/meta-data/", get(meta_root))
            .route("/latest/meta-data/{*path}", get(meta))
            .with_state(handle.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender (server dropped) stops the server too.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(ImdsServer {
            addr,
            handle,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for [`crate::imds::ImdsConfig::endpoint`].
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handle(&self) -> &ImdsHandle {
        &self.handle
    }

    /// Stops accepting, finishes answers in flight, and returns once the server task is done.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImdsHandle {
    /// Changes the served instance, e.g. after attaching an ENI.
    pub fn update(&self, change: impl FnOnce(&mut InstanceMetadata)) {
        let mut metadata = self
            .shared
            .metadata
            .write()
            .unwrap_or_else(|p| p.into_inner());
        change(&mut metadata);
    }

    /// Replaces the served instance.
    pub fn set(&self, metadata: InstanceMetadata) {
        self.update(|current| *current = metadata);
    }

    pub fn metadata(&self) -> InstanceMetadata {
        self.shared
            .metadata
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Revokes every token, as if they had expired or IMDS had restarted.
    pub fn expire_tokens(&self) {
        self.tokens().clear();
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.issued.load(Ordering::SeqCst)
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.shared.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn issue_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ttl| (1..=MAX_TOKEN_TTL.as_secs()).contains(ttl));
    let Some(ttl) = ttl else {
        return (StatusCode::BAD_REQUEST, "missing or invalid TTL header").into_response();
    };
    let n = shared.issued.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let token = format!("trellis-imds-{n}-{nanos:08x}");
    let now = Instant::now();
    let mut tokens = shared.tokens.lock().unwrap_or_else(|p| p.into_inner());
    tokens.retain(|_, expiry| *expiry > now);
    tokens.insert(token.clone(), now + Duration::from_secs(ttl));
    ([(TTL_HEADER, ttl.to_string())], token).into_response()
}

async fn meta_root(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    answer(&shared, &headers, "")
}

async fn meta(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(&shared, &headers, &path)
}

fn answer(shared: &Shared, headers: &HeaderMap, path: &str) -> Response {
    let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let live = token.is_some_and(|token| {
        let tokens = shared.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    });
    if !live {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let metadata = shared.metadata.read().unwrap_or_else(|p| p.into_inner());
    match lookup(&metadata, path) {
        Some(body) => body.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The answer to `GET /latest/meta-data/<path>`, or `None` for a 404. Directories list their
/// entries one a line, subdirectories with a trailing `/`, as IMDS does.
pub fn lookup(metadata: &InstanceMetadata, path: &str) -> Option<String> {
    let path = path.trim_matches('/');
    let parts: Vec<&str> = if path.is_empty() {
        vec![]
    } else {
        path.split('/').collect()
    };
    let lines = |items: Vec<String>| items.join("\n");
    match parts.as_slice() {
        [] => Some(lines(
            [
                "instance-id",
                "instance-type",
                "local-ipv4",
                "mac",
                "network/",
                "placement/",
            ]
            .map(String::from)
            .to_vec(),
        )),
        ["instance-id"] => Some(metadata.instance_id.clone()),
        ["instance-type"] => Some(metadata.instance_type.clone()),
        ["mac"] => Some(metadata.primary_mac.clone()),
        ["local-ipv4"] => metadata
            .primary_eni()
            .and_then(|eni| eni.local_ipv4s.first())
            .map(|ip| ip.to_string()),
        ["placement"] => Some("region".to_owned()),
        ["placement", "region"] => Some(metadata.region.clone()),
        ["network"] => Some("interfaces/".to_owned()),
        ["network", "interfaces"] => Some("macs/".to_owned()),
        ["network", "interfaces", "macs"] => Some(lines(
            metadata
                .enis
                .iter()
                .map(|eni| format!("{}/", eni.mac))
                .collect(),
        )),
        ["network", "interfaces", "macs", mac, rest @ ..] => {
            let eni = metadata.enis.iter().find(|eni| eni.mac == *mac)?;
            eni_field(eni, rest)
        }
        _ => None,
    }
}

fn eni_field(eni: &ImdsEni, rest: &[&str]) -> Option<String> {
    fn lines<T: ToString>(items: &[T]) -> String {
        items
            .iter()
            .map(T::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
    match rest {
        [] => {
            let mut keys = vec![
                "device-number",
                "interface-id",
                "local-ipv4s",
                "mac",
                "security-group-ids",
                "subnet-id",
                "subnet-ipv4-cidr-block",
                "vpc-ipv4-cidr-blocks",
            ];
            if !eni.ipv4_prefixes.is_empty() {
                keys.push("ipv4-prefix");
            }
            keys.sort_unstable();
            Some(keys.join("\n"))
        }
        ["device-number"] => Some(eni.device_number.to_string()),
        ["interface-id"] => Some(eni.interface_id.clone()),
        ["mac"] => Some(eni.mac.clone()),
        ["subnet-id"] => Some(eni.subnet_id.clone()),
        ["subnet-ipv4-cidr-block"] => Some(eni.subnet_cidr.to_string()),
        ["security-group-ids"] => Some(lines(&eni.security_group_ids)),
        ["local-ipv4s"] => Some(lines(&eni.local_ipv4s)),
        // IMDS has no key for an ENI without prefixes.
        ["ipv4-prefix"] if eni.ipv4_prefixes.is_empty() => None,
        ["ipv4-prefix"] => Some(lines(&eni.ipv4_prefixes)),
        ["vpc-ipv4-cidr-blocks"] => Some(lines(&eni.vpc_cidrs)),
        _ => None,
    }
}

/// The IMDS view of `instance_id` as EC2 (moto, in the lab) describes it: attached ENIs with
/// their addresses, prefixes and groups, each subnet's CIDR from DescribeSubnets. `vpc_cidrs`
/// is passed in because the [`Ec2`] trait does not describe VPCs.
pub async fn metadata_from_ec2(
    ec2: &dyn Ec2,
    instance_id: &str,
    region: &str,
    vpc_cidrs: &[Ipv4Net],
) -> Result<InstanceMetadata, Ec2Error> {
    let instance = ec2.describe_instance(instance_id).await?;
    metadata_of_instance(ec2, instance, region, vpc_cidrs).await
}

/// [`metadata_from_ec2`] for an instance already described (only subnets are looked up).
pub async fn metadata_of_instance(
    ec2: &dyn Ec2,
    instance: Instance,
    region: &str,
    vpc_cidrs: &[Ipv4Net],
) -> Result<InstanceMetadata, Ec2Error> {
    let mut subnet_cidrs = BTreeMap::new();
    let mut enis = Vec::new();
    for eni in instance.enis.iter().filter(|eni| eni.attachment.is_some()) {
        if !subnet_cidrs.contains_key(&eni.subnet_id) {
            let subnet = ec2.describe_subnet(&eni.subnet_id).await?;
            subnet_cidrs.insert(eni.subnet_id.clone(), subnet.cidr);
        }
        enis.push(imds_eni(eni, subnet_cidrs[&eni.subnet_id], vpc_cidrs));
    }
    enis.sort_by_key(|eni| eni.device_number);
    let primary_mac = instance.primary_eni().map(eni_mac).unwrap_or_default();
    Ok(InstanceMetadata {
        instance_id: instance.id,
        instance_type: instance.instance_type,
        region: region.to_owned(),
        primary_mac,
        enis,
    })
}

fn imds_eni(eni: &Eni, subnet_cidr: Ipv4Net, vpc_cidrs: &[Ipv4Net]) -> ImdsEni {
    ImdsEni {
        mac: eni_mac(eni),
        device_number: eni.device_index().unwrap_or(0),
        interface_id: eni.id.clone(),
        subnet_id: eni.subnet_id.clone(),
        subnet_cidr,
        security_group_ids: eni.security_groups.clone(),
        local_ipv4s: eni.private_ips.iter().map(|ip| ip.address).collect(),
        ipv4_prefixes: eni.prefixes.clone(),
        vpc_cidrs: vpc_cidrs.to_vec(),
    }
}

/// The ENI's MAC, or, when EC2 gave none, a locally administered one derived from the ENI id
/// (FNV-1a), so it is stable across calls.
fn eni_mac(eni: &Eni) -> String {
    if !eni.mac.is_empty() {
        return eni.mac.clone();
    }
    let hash = eni.id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let b = hash.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "i-1".into(),
            instance_type: "m5.large".into(),
            region: "us-east-1".into(),
            primary_mac: "0e:00:00:00:00:01".into(),
            enis: vec![ImdsEni {
                mac: "0e:00:00:00:00:01".into(),
                device_number: 0,
                interface_id: "eni-1".into(),
                subnet_id: "subnet-1".into(),
                subnet_cidr: "10.0.0.0/24".parse().unwrap(),
                security_group_ids: vec!["sg-1".into(), "sg-2".into()],
                local_ipv4s: vec!["10.0.0.4".parse().unwrap(), "10.0.0.5".parse().unwrap()],
                ipv4_prefixes: vec![],
                vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            }],
        }
    }

    #[test]
    fn lookup_answers_like_imds() {
        let m = sample();
        let mac = "network/interfaces/macs/0e:00:00:00:00:01";
        let cases = [
            ("instance-id", Some("i-1")),
            ("placement/region", Some("us-east-1")),
            ("local-ipv4", Some("10.0.0.4")),
            ("network/interfaces/macs/", Some("0e:00:00:00:00:01/")),
            (&format!("{mac}/local-ipv4s"), Some("10.0.0.4\n10.0.0.5")),
            (&format!("{mac}/security-group-ids"), Some("sg-1\nsg-2")),
            (&format!("{mac}/ipv4-prefix"), None),
            ("network/interfaces/macs/0e:ff/device-number", None),
            ("no-such-key", None),
        ];
        for (path, want) in cases {
            assert_eq!(lookup(&m, path).as_deref(), want, "{path}");
        }
        let listing = lookup(&m, mac).unwrap();
        assert!(!listing.contains("ipv4-prefix"), "{listing}");
    }

    #[test]
    fn synthesized_mac_is_stable_and_local() {
        let eni = Eni {
            id: "eni-0abc".into(),
            mac: String::new(),
            subnet_id: String::new(),
            vpc_id: String::new(),
            status: crate::ec2::EniStatus::InUse,
            description: String::new(),
            attachment: None,
            private_ips: vec![],
            prefixes: vec![],
            security_groups: vec![],
            tags: BTreeMap::new(),
        };
        let mac = eni_mac(&eni);
        assert_eq!(mac, eni_mac(&eni));
        assert!(mac.starts_with("02:") && mac.len() == 17, "{mac}");
    }
}
