//! `vpc`: the VPC-native backend's two costs, each against a reference measured in the same run.
//!
//! 1. **Pod ADD/DEL with a warm ENI pool vs overlay mode.** Two one-node labs (`trellis-lab up
//!    --nodes 1`, and `--backend vpc` with an m5.4xlarge, whose primary ENI holds 29 pod
//!    addresses): the real `trellis` plugin invoked in the node namespace as a runtime would,
//!    timed from spawn to exit, ADD of every pod then DEL of every pod, the two labs in
//!    alternating order per round, each VPC round once the pool has the pods' addresses free
//!    (released ones cool down 30 s). Pod namespaces are made before any timing. In VPC mode an
//!    ADD takes a warm address (no EC2 call) and puts the pod's `ip rule`s in; in overlay mode
//!    it claims the address in etcd. Printed: p50/p99 of each and vpc/overlay.
//! 2. **Growing the pool by one ENI vs the EC2 calls it needs.** Against moto on loopback, per
//!    round a fresh m5.large instance: the reference is CreateNetworkInterface (9 secondary
//!    addresses) + AttachNetworkInterface + ModifyNetworkInterfaceAttribute made directly;
//!    the measured is `EniManager::reconcile` once the primary ENI's 9 addresses are held
//!    (plan, the same three calls, DescribeSubnets, the book). Also printed: start to a filled
//!    primary ENI.
//!
//! Needs root (namespaces). Everything is in the labs' `tl-bv*` namespaces, removed at the end
//! (also on failure) by `trellis-lab down`; a crashed run's are removed by `trellis-lab cleanup`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use clap::Parser;
use serde_json::{json, Value};
use trellis_bench::host::load_average;
use trellis_bench::netns::{ip, NETNS_DIR};
use trellis_bench::report::{render, Ratio, Row};
use trellis_bench::stats::{Latencies, Summary};
use trellis_test_support::moto::{Moto, IMAGE_ID};
use trellis_vpc::address_book::Owner;
use trellis_vpc::ec2::{CreateEni, Ec2, SdkEc2, SecondaryAddresses};
use trellis_vpc::eni_manager::{EniManager, ManagerConfig};
use trellis_vpc::limits::limits_for;
use trellis_vpc::warm_pool::{PoolLimits, WarmTargets};

#[derive(Debug, Parser)]
#[command(about = "VPC backend: warm-pool pod ADD vs overlay, ENI growth vs raw EC2 calls")]
struct Args {
    /// Pods added (then deleted) per lab and round (at most 25: the warm primary ENI's 29).
    #[arg(long, default_value_t = 20)]
    pods: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Instances (rounds) of the ENI-growth part.
    #[arg(long, default_value_t = 10)]
    eni_rounds: usize,
}

fn lab_bin() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.parent().context("bench dir")?.join("trellis-lab");
    ensure!(
        p.is_file(),
        "{} not found: build it with the bench (cargo build --release -p trellis-lab -p trellis-agent -p trellis-cni -p trellisctl -p trellis-bench)",
        p.display()
    );
    Ok(p)
}

fn lab(args: &[&str]) -> Result<String> {
    let out = Command::new(lab_bin()?).args(args).output()?;
    ensure!(
        out.status.success(),
        "trellis-lab {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A lab, taken down on drop; pod namespaces made for it are deleted first.
struct Lab {
    name: String,
    node_ns: String,
    socket: PathBuf,
    pod_ns: Vec<String>,
}

impl Lab {
    fn up(name: &str, extra: &[&str], pods: usize) -> Result<Lab> {
        let mut args = vec!["up", "--name", name, "--nodes", "1"];
        args.extend_from_slice(extra);
        // Taken down on drop, also when `up` fails half way.
        let mut l = Lab {
            name: name.to_string(),
            node_ns: String::new(),
            socket: PathBuf::new(),
            pod_ns: Vec::new(),
        };
        lab(&args)?;
        let state: Value = serde_json::from_slice(&std::fs::read(format!(
            "/run/trellis-lab/{name}/state.json"
        ))?)?;
        let node = &state["nodes"][0];
        l.node_ns = node["netns"].as_str().context("netns")?.to_string();
        l.socket = PathBuf::from(node["socket"].as_str().context("socket")?);
        for i in 0..pods {
            // Named with the lab's prefix, so `trellis-lab cleanup` finds a crashed run's.
            let ns = format!("tl-{name}-bench-{i}");
            ip(&["netns", "add", &ns])?;
            l.pod_ns.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(l)
    }

    fn conf(&self) -> String {
        json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "trellis",
            "ipam": {"type": "trellis-ipam"},
            "agent_socket": self.socket,
        })
        .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.pod_ns {
            let _ = ip(&["netns", "delete", ns]);
        }
        if let Err(e) = lab(&["down", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// One plugin invocation in the lab's node namespace; time from spawn to exit and the result.
fn invoke(l: &Lab, plugin: &Path, command: &str, i: usize) -> Result<(Duration, Value)> {
    let container = format!("bench-{i}");
    let began = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &l.node_ns])
        .arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &container)
        .env("CNI_NETNS", Path::new(NETNS_DIR).join(&l.pod_ns[i]))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{i}"),
        )
        .env("CNI_PATH", plugin.parent().context("plugin dir")?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(l.conf().as_bytes())?;
    let out = child.wait_with_output()?;
    let took = began.elapsed();
    ensure!(
        out.status.success(),
        "{} {command} pod {i}: {}{}",
        l.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)?
    };
    Ok((took, v))
}

#[derive(Default)]
struct Tally {
    add: Latencies,
    del: Latencies,
}

fn round(
    l: &Lab,
    plugin: &Path,
    pods: usize,
    subnet_prefix: Option<&str>,
    t: &mut Tally,
) -> Result<()> {
    for i in 0..pods {
        let (took, v) = invoke(l, plugin, "ADD", i)?;
        let addr = v["ips"][0]["address"].as_str().unwrap_or_default();
        ensure!(
            !addr.is_empty(),
            "{} ADD pod {i}: no address in {v}",
            l.name
        );
        if let Some(p) = subnet_prefix {
            ensure!(
                addr.starts_with(p),
                "{} ADD pod {i}: {addr} is not an ENI address",
                l.name
            );
        }
        t.add.record(took);
    }
    for i in 0..pods {
        t.del.record(invoke(l, plugin, "DEL", i)?.0);
    }
    Ok(())
}

fn vpc_status(l: &Lab) -> Result<trellis_agent_api::VpcStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt
        .block_on(trellis_agent_api::AgentClient::new(&l.socket).status())
        .map_err(|e| anyhow!("agent status: {e}"))?;
    s.vpc.context("the agent runs no VPC backend")
}

fn add_latency(a: &Args) -> Result<(Vec<Row>, Vec<Ratio>)> {
    ensure!(
        a.pods <= 25,
        "--pods at most 25 (the warm primary ENI holds 29)"
    );
    let plugin = lab_bin()?.with_file_name("trellis");
    let id = std::process::id() % 10_000;
    let ovl = Lab::up(&format!("bvo{id}"), &["--no-policy"], a.pods)?;
    let vpc = Lab::up(
        &format!("bvv{id}"),
        &[
            "--no-policy",
            "--backend",
            "vpc",
            "--instance-type",
            "m5.4xlarge",
        ],
        a.pods,
    )?;
    let t0 = Instant::now();
    loop {
        let s = vpc_status(&vpc)?;
        if s.addresses >= 29 {
            eprintln!(
                "warm pool: {} addresses on {} ENI(s)",
                s.addresses,
                s.enis.len()
            );
            break;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "the warm pool did not fill: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A freed address cools down for 30 s before another pod gets it (as in the AWS VPC CNI):
    // each VPC round starts once the warm pool has `pods` addresses free again, so it measures
    // ADDs from a warm pool, not waits for the pool to grow.
    let warm = |l: &Lab| -> Result<()> {
        let t0 = Instant::now();
        loop {
            let s = vpc_status(l)?;
            if s.addresses - s.assigned - s.cooling >= a.pods as u32 {
                return Ok(());
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(90),
                "the warm pool did not recover: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let (mut to, mut tv) = (Tally::default(), Tally::default());
    // Untimed: first-use costs (page cache, the overlay's first block claim).
    round(&ovl, &plugin, 2, None, &mut Tally::default())?;
    round(&vpc, &plugin, 2, Some("10.0."), &mut Tally::default())?;
    for r in 0..a.rounds {
        warm(&vpc)?;
        if r % 2 == 0 {
            round(&ovl, &plugin, a.pods, None, &mut to)?;
            round(&vpc, &plugin, a.pods, Some("10.0."), &mut tv)?;
        } else {
            round(&vpc, &plugin, a.pods, Some("10.0."), &mut tv)?;
            round(&ovl, &plugin, a.pods, None, &mut to)?;
        }
        eprintln!("round {} of {} done", r + 1, a.rounds);
    }
    let s = vpc_status(&vpc)?;
    ensure!(
        s.assigned == 0,
        "after the DELs the VPC pool still holds {}",
        s.assigned
    );
    let sum = |l: &Latencies| Summary::of_subset(l);
    let rows = vec![
        Row::new("ADD overlay (etcd block IPAM)", sum(&to.add)),
        Row::new("ADD vpc (warm ENI pool)", sum(&tv.add)),
        Row::new("DEL overlay", sum(&to.del)),
        Row::new("DEL vpc", sum(&tv.del)),
    ];
    let ratios = vec![
        Ratio::of("ADD vpc/overlay", &sum(&tv.add), &sum(&to.add)),
        Ratio::of("DEL vpc/overlay", &sum(&tv.del), &sum(&to.del)),
    ];
    Ok((rows, ratios))
}

async fn run_instance(sdk: &aws_sdk_ec2::Client, subnet: &str, sg: &str) -> Result<String> {
    let out = sdk
        .run_instances()
        .image_id(IMAGE_ID)
        .instance_type(aws_sdk_ec2::types::InstanceType::from("m5.large"))
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .security_group_ids(sg)
        .send()
        .await
        .context("RunInstances")?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .context("InstanceId")
}

async fn eni_growth(a: &Args) -> Result<(Vec<Row>, Vec<Ratio>)> {
    let moto = Moto::start();
    let sdk = moto.sdk().await;
    let ec2: Arc<dyn Ec2> = Arc::new(SdkEc2::new(&moto.config()).await);
    let vpc = sdk.create_vpc().cidr_block("10.0.0.0/16").send().await?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("VpcId")?;
    let subnet = sdk
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block("10.0.0.0/16")
        .availability_zone("us-east-1a")
        .send()
        .await?;
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("SubnetId")?;
    let sg = sdk
        .create_security_group()
        .group_name("bench")
        .description("bench")
        .vpc_id(vpc_id)
        .send()
        .await?;
    let sg_id = sg.group_id().context("GroupId")?;
    let limits = limits_for("m5.large").context("m5.large limits")?;
    let dir = tempfile::tempdir()?;
    let (mut raw, mut grow, mut fill) = (
        Latencies::default(),
        Latencies::default(),
        Latencies::default(),
    );
    for r in 0..a.eni_rounds {
        // Reference: the three calls, on an instance of its own.
        let inst = run_instance(&sdk, subnet_id, sg_id).await?;
        let began = Instant::now();
        let eni = ec2
            .create_network_interface(&CreateEni::for_node(
                &inst,
                "bench",
                subnet_id,
                &[sg_id.to_string()],
                SecondaryAddresses::Ips(9),
            ))
            .await?;
        let attachment = ec2.attach_network_interface(&eni.id, &inst, 1).await?;
        ec2.set_delete_on_termination(&eni.id, &attachment).await?;
        raw.record(began.elapsed());

        // Measured: the manager on a fresh instance.
        let inst = run_instance(&sdk, subnet_id, sg_id).await?;
        let cfg = ManagerConfig::new(
            "bench",
            &inst,
            WarmTargets::default(),
            PoolLimits::new(&limits, 29),
            dir.path().join(format!("ipam-{r}.json")),
        );
        let began = Instant::now();
        let (m, _) = EniManager::start(ec2.clone(), cfg, |_| true).await?;
        m.reconcile(Instant::now()).await?;
        fill.record(began.elapsed());
        ensure!(
            m.stats().total == 9,
            "primary ENI filled to 9: {:?}",
            m.stats()
        );
        for i in 0..9 {
            m.assign(&Owner::new(format!("c{i}"), "eth0"))?;
        }
        let began = Instant::now();
        m.reconcile(Instant::now()).await?;
        grow.record(began.elapsed());
        ensure!(
            m.enis().len() == 2 && m.stats().total == 18,
            "a second ENI with 9 addresses: {:?}",
            m.stats()
        );
    }
    let sum = |l: &Latencies| Summary::of_subset(l);
    let rows = vec![
        Row::new("raw EC2: create+attach+DoT (9 IPs)", sum(&raw)),
        Row::new("EniManager: attach+fill one ENI", sum(&grow)),
        Row::new("EniManager: start to filled primary", sum(&fill)),
    ];
    let ratios = vec![Ratio::of(
        "attach+fill manager/raw",
        &sum(&grow),
        &sum(&raw),
    )];
    Ok((rows, ratios))
}

fn main() -> Result<()> {
    let a = Args::parse();
    trellis_bench::host::require_root("creates network namespaces", "sudo target/release/vpc")?;
    eprintln!("load average before: {}", load_average());
    let (rows_a, ratios_a) = add_latency(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (rows_b, ratios_b) = rt.block_on(eni_growth(&a))?;
    println!(
        "bench/vpc: {} pods x {} rounds per lab; {} ENI rounds against moto; load average {}\n",
        a.pods,
        a.rounds,
        a.eni_rounds,
        load_average()
    );
    println!("{}", render(&rows_a, &ratios_a));
    println!("{}", render(&rows_b, &ratios_b));
    Ok(())
}
