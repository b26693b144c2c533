//! The agent's VPC backend against the EC2 emulator (moto), an IMDS served from moto's state
//! and a real etcd: pods get ENI addresses through the endpoints service, a restart keeps the
//! allocations whose endpoint exists and releases the others, and bad input (an unknown
//! instance type, no credentials, a dual-stack or requested-address ADD) fails in one line
//! without touching EC2. Without a netlink handle (as `--no-dataplane`): the kernel side is
//! the lab's e2e test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_agent::dataplane::DataplaneStatus;
use trellis_agent::endpoints::{code, Endpoints};
use trellis_agent::metrics::Metrics;
use trellis_agent::vpc::run::{run, Running};
use trellis_agent::vpc::VpcConfig;
use trellis_agent_api::*;
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::Datastore;
use trellis_test_support::moto::{Fixture, REGION};
use trellis_vpc::ec2::{CredentialSource, Ec2};
use trellis_vpc::fault_proxy::FaultProxy;
use trellis_vpc::imds_server::{metadata_from_ec2, ImdsServer};

const NODE: &str = "node-1";

async fn imds(fx: &Fixture) -> ImdsServer {
    let meta = metadata_from_ec2(&fx.ec2, &fx.instance_id, REGION, &[fx.vpc_cidr])
        .await
        .expect("IMDS metadata from moto");
    ImdsServer::start("127.0.0.1:0".parse().unwrap(), meta)
        .await
        .expect("IMDS server")
}

fn config(fx: &Fixture, imds: &ImdsServer, dir: &Path) -> VpcConfig {
    let mut cfg = VpcConfig::new(imds.endpoint(), "agent-test");
    cfg.ec2_endpoint = Some(fx.moto.endpoint());
    cfg.credentials = CredentialSource::Static {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
    };
    cfg.checkpoint = dir.join("vpc-ipam.json");
    cfg.resync_interval = Duration::from_millis(500);
    cfg
}

/// The agent's VPC side: the endpoints service over a started pool, and the pool's loops.
struct Agent {
    endpoints: Endpoints,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start(cfg: &VpcConfig, ds: &Arc<dyn Datastore>) -> Result<Agent, String> {
    trellis_agent::register::register_node(ds.as_ref(), NODE, &[])
        .await
        .unwrap();
    let Running { pods, tasks } = run(
        cfg,
        ds.clone(),
        NODE,
        None,
        Arc::new(DataplaneStatus::default()),
        Arc::new(Metrics::default()),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Agent {
        endpoints: Endpoints::new(ds.clone(), NODE, 9001).with_vpc(pods),
        tasks,
    })
}

/// ADDs until the pool has an address (it fills in the background) or `within` passes.
async fn add_retrying(e: &Endpoints, req: &AddRequest, within: Duration) -> AddResponse {
    let t0 = Instant::now();
    loop {
        match e.add(req).await {
            Ok(r) => return r,
            Err(err) if err.code == code::TRY_AGAIN_LATER && t0.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("ADD {}: {err:?}", req.pod.name),
        }
    }
}

async fn record_endpoint(e: &Endpoints, req: &AddRequest, got: &AddResponse) {
    e.endpoint(&EndpointRequest {
        attachment: req.attachment.clone(),
        pod: req.pod.clone(),
        host_ifname: format!("trellis{}", &req.attachment.container_id[..4]),
        mac: "0a:58:00:00:00:01".into(),
        addresses: got.addresses.clone(),
    })
    .await
    .unwrap();
}

/// Every secondary address EC2 has on the instance's ENIs, with its ENI.
async fn ec2_secondaries(fx: &Fixture) -> Vec<(Ipv4Addr, String)> {
    let instance = fx.ec2.describe_instance(&fx.instance_id).await.unwrap();
    instance
        .enis
        .iter()
        .flat_map(|e| e.secondary_ips().into_iter().map(|ip| (ip, e.id.clone())))
        .collect()
}

fn ipv4(r: &AddResponse) -> Ipv4Addr {
    match r.addresses.as_slice() {
        [n] => match n.addr() {
            IpAddr::V4(a) => a,
            other => panic!("an IPv6 address {other}"),
        },
        other => panic!("one address expected, got {other:?}"),
    }
}

fn add_request(cid: &str, pod: &str) -> AddRequest {
    AddRequest {
        attachment: Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
        },
        pod: PodRef {
            namespace: "default".into(),
            name: pod.into(),
            uid: String::new(),
        },
        assign_ipv4: true,
        assign_ipv6: false,
        ipv4_pools: vec![],
        ipv6_pools: vec![],
        requested: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_eni_addresses_and_a_restart_keeps_those_whose_endpoint_exists() {
    let fx = Fixture::new("t3.small").await;
    let imds = imds(&fx).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fx, &imds, dir.path());
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-vpc").await);
    let agent = start(&cfg, &ds).await.unwrap();
    let e = &agent.endpoints;

    let status = e.status().await;
    assert!(status.ready, "{status:?}");
    let vpc = status.vpc.expect("the status has the pool");
    assert_eq!(
        (vpc.instance_type.as_str(), vpc.max_pods),
        ("t3.small", 11),
        "the AWS formula: 3 ENIs x (4 - 1) + 2"
    );
    assert_eq!(vpc.instance_id, fx.instance_id);

    // Pod a (with its endpoint) and pod b (an ADD whose pod never got wired).
    let (req_a, req_b) = (add_request("aaaa0001", "a"), add_request("bbbb0002", "b"));
    let a = add_retrying(e, &req_a, Duration::from_secs(30)).await;
    record_endpoint(e, &req_a, &a).await;
    let b = add_retrying(e, &req_b, Duration::from_secs(30)).await;
    let (ip_a, ip_b) = (ipv4(&a), ipv4(&b));
    assert_ne!(ip_a, ip_b);
    assert_eq!(a.mtu, 9001);
    let in_ec2 = ec2_secondaries(&fx).await;
    for ip in [ip_a, ip_b] {
        assert!(
            in_ec2.iter().any(|(x, _)| *x == ip),
            "{ip} is a secondary address of one of the instance's ENIs in EC2: {in_ec2:?}"
        );
    }
    // A repeated ADD gets the same address.
    assert_eq!(ipv4(&e.add(&req_a).await.unwrap()), ip_a);

    // Restart (a crash: nothing is released on the way down).
    drop(agent);
    let agent = start(&cfg, &ds).await.unwrap();
    let e = &agent.endpoints;
    assert_eq!(
        ipv4(&e.add(&req_a).await.unwrap()),
        ip_a,
        "pod a keeps its address across the restart"
    );
    let saved = trellis_vpc::checkpoint::load(&cfg.checkpoint).unwrap();
    let held: Vec<(String, Ipv4Addr)> = saved
        .iter()
        .map(|a| (a.container_id.clone(), a.ip))
        .collect();
    assert_eq!(
        held,
        vec![("aaaa0001".to_string(), ip_a)],
        "the checkpoint keeps a, and b (no endpoint) was released"
    );
    let in_ec2 = ec2_secondaries(&fx).await;
    let eni_a = &saved[0].eni_id;
    assert!(
        in_ec2.contains(&(ip_a, eni_a.clone())),
        "EC2 agrees: {ip_a} is on {eni_a}: {in_ec2:?}"
    );

    // DEL releases it (it cools down; no other pod gets it at once).
    let del = e
        .del(&DelRequest {
            attachment: req_a.attachment.clone(),
            pod: Some(req_a.pod.clone()),
        })
        .await
        .unwrap();
    assert_eq!(del.released, vec![IpAddr::V4(ip_a)]);
    assert!(trellis_vpc::checkpoint::load(&cfg.checkpoint)
        .unwrap()
        .is_empty());
    let c = add_retrying(e, &add_request("cccc0003", "c"), Duration::from_secs(30)).await;
    assert_ne!(ipv4(&c), ip_a, "a released address cools down first");

    // GC releases what the runtime no longer has.
    let gc = e.gc(&GcRequest { valid: vec![] }).await.unwrap();
    assert_eq!(gc.released.len(), 1, "{gc:?}");
    assert!(trellis_vpc::checkpoint::load(&cfg.checkpoint)
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_answers_try_again_later_and_bad_adds_are_refused() {
    let fx = Fixture::new("t3.small").await;
    let imds = imds(&fx).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fx, &imds, dir.path());
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-vpc-full").await);
    let agent = start(&cfg, &ds).await.unwrap();
    let e = &agent.endpoints;

    let mut dual = add_request("dddd0001", "dual");
    dual.assign_ipv6 = true;
    let err = e.add(&dual).await.unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
    assert!(err.message.contains("assigns IPv4 only"), "{}", err.message);
    let mut fixed = add_request("eeee0001", "fixed");
    fixed.requested = vec!["10.0.0.50".parse().unwrap()];
    let err = e.add(&fixed).await.unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
    assert!(err.message.contains("10.0.0.50"), "{}", err.message);
    assert!(
        trellis_vpc::checkpoint::load(&cfg.checkpoint)
            .unwrap()
            .is_empty(),
        "refused ADDs hold nothing"
    );

    // t3.small: 3 ENIs x 3 secondary addresses.
    let mut ips = Vec::new();
    for i in 0..9 {
        let r = add_retrying(
            e,
            &add_request(&format!("ffff{i:04}"), &format!("p{i}")),
            Duration::from_secs(60),
        )
        .await;
        ips.push(ipv4(&r));
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 9, "nine distinct addresses");
    let err = e
        .add(&add_request("ffff0009", "p9"))
        .await
        .expect_err("a tenth pod finds no address");
    assert_eq!(err.code, code::TRY_AGAIN_LATER);
    assert!(
        err.message.starts_with(
            "no free ENI address on node node-1 (9 held by pods, 0 cooling down, max pods 11)"
        ),
        "{}",
        err.message
    );
    let vpc = e.status().await.vpc.unwrap();
    assert_eq!(vpc.enis.len(), 3, "the instance type's ENI limit");
    assert_eq!((vpc.addresses, vpc.assigned), (9, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_instance_type_or_missing_credentials_fail_in_one_line_and_create_nothing() {
    let fx = Fixture::new("t3.small").await;
    let imds = imds(&fx).await;
    let dir = tempfile::tempdir().unwrap();
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-vpc-bad").await);
    let enis_before = fx
        .ec2
        .describe_instance(&fx.instance_id)
        .await
        .unwrap()
        .enis;

    let mut cfg = config(&fx, &imds, dir.path());
    cfg.credentials = CredentialSource::Empty;
    let err = start(&cfg, &ds).await.err().expect("no credentials");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains("no AWS credentials found"), "{err}");

    imds.handle()
        .update(|m| m.instance_type = "x9.imaginary".into());
    let cfg = config(&fx, &imds, dir.path());
    let err = start(&cfg, &ds).await.err().expect("unknown type");
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(
        err,
        "unknown instance type \"x9.imaginary\": not in the built-in table and not known to \
         DescribeInstanceTypes"
    );

    let enis_after = fx
        .ec2
        .describe_instance(&fx.instance_id)
        .await
        .unwrap()
        .enis;
    assert_eq!(enis_after.len(), enis_before.len(), "no ENI created");
    assert!(!cfg.checkpoint.exists(), "no checkpoint written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subnet_and_throttling_are_survived_and_named_and_no_pod_gets_a_half_address() {
    let fx = Fixture::new("t3.small").await;
    let imds = imds(&fx).await;
    let moto_addr = fx
        .moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), moto_addr)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&fx, &imds, dir.path());
    cfg.ec2_endpoint = Some(proxy.endpoint());
    // The subnet has no address left for a second ENI; the first fill is throttled for a while.
    proxy.fail(
        "CreateNetworkInterface",
        "InsufficientFreeAddressesInSubnet",
        None,
    );
    proxy.fail("AssignPrivateIpAddresses", "RequestLimitExceeded", Some(4));
    let ds: Arc<dyn Datastore> = Arc::new(EtcdServer::shared().datastore("agent-vpc-faults").await);
    let agent = start(&cfg, &ds).await.unwrap();
    let e = &agent.endpoints;

    // Throttling: the pool backs off and fills the primary ENI once EC2 lets it.
    for i in 0..3 {
        add_retrying(
            e,
            &add_request(&format!("aaaa{i:04}"), &format!("p{i}")),
            Duration::from_secs(60),
        )
        .await;
    }
    assert!(
        proxy.injected() >= 4,
        "throttled {} times",
        proxy.injected()
    );

    // The primary ENI is full and no ENI can be created: the ADD is refused, retryably,
    // naming EC2's reason, and holds nothing.
    let t0 = Instant::now();
    let err = loop {
        let err = e
            .add(&add_request("bbbb0001", "q"))
            .await
            .expect_err("no address while the subnet is full");
        if err.message.contains("InsufficientFreeAddressesInSubnet") || t0.elapsed().as_secs() > 30
        {
            break err;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(err.code, code::TRY_AGAIN_LATER);
    assert!(!err.message.contains('\n'), "one line: {}", err.message);
    assert!(
        err.message.contains("InsufficientFreeAddressesInSubnet"),
        "{}",
        err.message
    );
    let vpc = e.status().await.vpc.unwrap();
    assert!(
        vpc.condition
            .as_deref()
            .is_some_and(|c| c.contains("InsufficientFreeAddressesInSubnet")),
        "{vpc:?}"
    );
    assert_eq!(
        trellis_vpc::checkpoint::load(&cfg.checkpoint)
            .unwrap()
            .len(),
        3
    );
    let enis = fx
        .ec2
        .describe_instance(&fx.instance_id)
        .await
        .unwrap()
        .enis;
    assert_eq!(enis.len(), 1, "no ENI half-made");

    // Addresses come back: the pool grows by a second ENI and the ADD succeeds.
    proxy.clear();
    let r = add_retrying(e, &add_request("bbbb0001", "q"), Duration::from_secs(60)).await;
    let got = ipv4(&r);
    // The condition clears when the step that made the ENI returns (just after the ENI's
    // addresses reach the book).
    let t0 = Instant::now();
    let second = loop {
        let s = e.status().await.vpc.unwrap();
        if s.condition.is_none() || t0.elapsed() > Duration::from_secs(10) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(second.enis.len(), 2);
    assert!(second.condition.is_none(), "{second:?}");
    assert!(ec2_secondaries(&fx)
        .await
        .iter()
        .any(|(ip, eni)| *ip == got && *eni == second.enis[1].id));
}

/// Runs the `trellis-agent` binary in VPC mode against `imds` and moto until it exits (it must,
/// within 60 s); its exit code and standard error. Credentials only when `credentials`; the
/// SDK's own IMDS credential lookup goes to the test's IMDS (which has no role), never to
/// 169.254.169.254.
fn agent_binary(fx: &Fixture, imds: &ImdsServer, credentials: bool) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trellis-agent"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir.path())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .args(["--backend", "vpc", "--no-dataplane", "--no-policy"])
        .args(["--ec2-endpoint", &fx.moto.endpoint()])
        .args(["--node-name", &format!("bad-input-{}", std::process::id())])
        .args(["--node-ip", "127.0.0.1", "--mtu", "9001"])
        .args(["--health-port", "0", "--metrics-port", "0"])
        .args(["--etcd-endpoints", &EtcdServer::shared().endpoint()])
        .args([
            "--etcd-prefix",
            &format!("/trellis-test/{}-bad-input/", std::process::id()),
        ])
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .arg("--vpc-checkpoint")
        .arg(dir.path().join("vpc-ipam.json"));
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the agent did not exit on bad input within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !dir.path().join("vpc-ipam.json").exists(),
        "no checkpoint written"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_exits_with_one_line_naming_an_unknown_type_or_missing_credentials() {
    let fx = Fixture::new("t3.small").await;
    let imds = imds(&fx).await;
    let last = |stderr: &str| stderr.lines().last().unwrap_or_default().to_string();

    let (code, stderr) = tokio::task::block_in_place(|| agent_binary(&fx, &imds, false));
    assert_eq!(code, Some(1), "{stderr}");
    let line = last(&stderr);
    assert!(
        line.starts_with("trellis-agent: VPC backend: ") && line.contains("no AWS credentials"),
        "{stderr}"
    );

    imds.handle()
        .update(|m| m.instance_type = "x9.imaginary".into());
    let (code, stderr) = tokio::task::block_in_place(|| agent_binary(&fx, &imds, true));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        last(&stderr),
        "trellis-agent: VPC backend: unknown instance type \"x9.imaginary\": not in the built-in \
         table and not known to DescribeInstanceTypes"
    );
    let enis = fx
        .ec2
        .describe_instance(&fx.instance_id)
        .await
        .unwrap()
        .enis;
    assert_eq!(enis.len(), 1, "no ENI created");
}
