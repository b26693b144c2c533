//! `trellis-lab vpc-hypervisor`: the daemon that plays EC2's hypervisor for a VPC lab. It runs
//! in the router namespace next to moto, creates the VPC, subnet, security group and one
//! instance per node, then every 200 ms reads each instance's ENIs from moto and
//!  - plugs, unplugs and routes them ([`super::router`]), so an ENI an agent attaches appears
//!    in its node as `ethD` with the ENI's MAC, and an address it assigns is delivered to it;
//!  - serves each node its instance metadata (IMDSv2) on its own port of the router's address,
//!    rebuilt from moto's state.
//!
//! When the first pass is done (every node has its primary ENI as `eth0`) it writes
//! `vpc.json` in the lab's state dir, which `up` waits for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_ec2::types::InstanceType;
use ipnet::Ipv4Net;
use trellis_vpc::ec2::{CredentialSource, Ec2, Ec2Config, Instance, SdkEc2};
use trellis_vpc::imds::InstanceMetadata;
use trellis_vpc::imds_server::{metadata_of_instance, ImdsServer};

use super::router::{plan, Plug, Router};
use super::{VpcInfo, VpcNodeInfo, GATEWAY, IMAGE_ID, IMDS_BASE_PORT, MOTO_PORT, REGION};
use super::{SUBNET_CIDR, VPC_CIDR};
use crate::state::{write_json, NETNS_PREFIX};

fn ec2_config() -> Ec2Config {
    Ec2Config {
        endpoint: Some(format!("http://127.0.0.1:{MOTO_PORT}")),
        region: REGION.into(),
        credentials: CredentialSource::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    }
}

async fn sdk_client() -> aws_sdk_ec2::Client {
    let creds =
        aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "trellis-lab");
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new(REGION))
        .endpoint_url(format!("http://127.0.0.1:{MOTO_PORT}"))
        .credentials_provider(creds)
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

/// Waits for moto, then creates the VPC, subnet, security group and instances.
async fn create_vpc(
    sdk: &aws_sdk_ec2::Client,
    nodes: usize,
    instance_type: &str,
) -> anyhow::Result<(String, String, String, Vec<String>)> {
    let t0 = std::time::Instant::now();
    while sdk.describe_vpcs().send().await.is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("moto did not answer on port {MOTO_PORT} within 30 s (see moto.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let vpc = sdk
        .create_vpc()
        .cidr_block(VPC_CIDR)
        .send()
        .await
        .context("CreateVpc")?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("VpcId")?;
    let subnet = sdk
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block(SUBNET_CIDR)
        .availability_zone(format!("{REGION}a"))
        .send()
        .await
        .context("CreateSubnet")?;
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("SubnetId")?;
    let sg = sdk
        .create_security_group()
        .group_name("trellis-lab-nodes")
        .description("trellis-lab nodes")
        .vpc_id(vpc_id)
        .send()
        .await
        .context("CreateSecurityGroup")?;
    let sg_id = sg.group_id().context("GroupId")?;
    let mut instances = Vec::new();
    for i in 1..=nodes {
        let run = sdk
            .run_instances()
            .image_id(IMAGE_ID)
            .instance_type(InstanceType::from(instance_type))
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet_id)
            .security_group_ids(sg_id)
            .send()
            .await
            .with_context(|| format!("RunInstances for node-{i} ({instance_type})"))?;
        let id = run
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .context("InstanceId")?;
        instances.push(id.to_string());
    }
    Ok((
        vpc_id.to_string(),
        subnet_id.to_string(),
        sg_id.to_string(),
        instances,
    ))
}

/// Every lab instance as EC2 describes it, in node order.
async fn describe_all(ec2: &dyn Ec2, instances: &[String]) -> anyhow::Result<Vec<Instance>> {
    let mut out = Vec::new();
    for id in instances {
        out.push(
            ec2.describe_instance(id)
                .await
                .with_context(|| format!("describing {id}"))?,
        );
    }
    Ok(out)
}

/// The plugs every instance's attached ENIs call for.
fn desired(lab: &str, instances: &[Instance]) -> BTreeMap<String, Plug> {
    let mut out = BTreeMap::new();
    for (i, inst) in instances.iter().enumerate() {
        for eni in &inst.enis {
            let (Some(device), Some(primary_ip)) = (eni.device_index(), eni.primary_ip()) else {
                continue;
            };
            let plug = Plug {
                eni_id: eni.id.clone(),
                node: i + 1,
                node_netns: format!("{NETNS_PREFIX}{lab}-node-{}", i + 1),
                device,
                mac: eni.mac.clone(),
                primary_ip,
                ips: eni.private_ips.iter().map(|p| p.address).collect(),
            };
            out.insert(plug.router_end(), plug);
        }
    }
    out
}

/// Runs the hypervisor until killed.
pub fn run(lab: &str, nodes: usize, instance_type: &str, dir: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(lab, nodes, instance_type, dir))
}

async fn serve(lab: &str, nodes: usize, instance_type: &str, dir: &Path) -> anyhow::Result<()> {
    let sdk = sdk_client().await;
    let (vpc_id, subnet_id, sg_id, instances) = create_vpc(&sdk, nodes, instance_type).await?;
    let ec2 = SdkEc2::new(&ec2_config()).await;
    let vpc_cidr: Ipv4Net = VPC_CIDR.parse()?;
    let subnet: Ipv4Net = SUBNET_CIDR.parse()?;
    let router = Router {
        netns: format!("{NETNS_PREFIX}{lab}-ul"),
        gateway: GATEWAY,
        prefix_len: subnet.prefix_len(),
        mtu: super::MTU,
    };
    let mut imds = Vec::new();
    let mut served: Vec<InstanceMetadata> = Vec::new();
    for (i, inst) in describe_all(&ec2, &instances)
        .await?
        .into_iter()
        .enumerate()
    {
        let meta = metadata_of_instance(&ec2, inst, REGION, &[vpc_cidr]).await?;
        let port = imds_port(i + 1);
        let server = ImdsServer::start(SocketAddr::new(GATEWAY.into(), port), meta.clone())
            .await
            .with_context(|| format!("IMDS for node-{} on {GATEWAY}:{port}", i + 1))?;
        served.push(meta);
        imds.push(server);
    }
    let mut current: BTreeMap<String, Plug> = BTreeMap::new();
    let mut written = false;
    loop {
        match describe_all(&ec2, &instances).await {
            Ok(described) => {
                let want = desired(lab, &described);
                let steps = plan(&current, &want);
                for step in &steps {
                    if let Err(e) = router.apply(step) {
                        eprintln!("vpc-hypervisor: {step:?}: {e:#}");
                    }
                }
                if !steps.is_empty() || !written {
                    // EC2's view of every attached ENI, for tests and operators.
                    let plugs: Vec<&Plug> = want.values().collect();
                    write_json(&dir.join("enis.json"), &plugs)?;
                }
                current = want;
                for (i, inst) in described.into_iter().enumerate() {
                    if let Ok(meta) = metadata_of_instance(&ec2, inst, REGION, &[vpc_cidr]).await {
                        if served[i] != meta {
                            imds[i].handle().set(meta.clone());
                            served[i] = meta;
                        }
                    }
                }
            }
            Err(e) => eprintln!("vpc-hypervisor: {e:#}"),
        }
        if !written {
            let info = VpcInfo {
                vpc_id: vpc_id.clone(),
                subnet_id: subnet_id.clone(),
                security_group_id: sg_id.clone(),
                nodes: instances
                    .iter()
                    .enumerate()
                    .map(|(i, id)| node_info(i, id, &current))
                    .collect::<anyhow::Result<_>>()?,
            };
            write_json(&dir.join("vpc.json"), &info)?;
            written = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node_info(i: usize, id: &str, plugs: &BTreeMap<String, Plug>) -> anyhow::Result<VpcNodeInfo> {
    let p = plugs
        .get(&super::router::router_end(i + 1, 0))
        .with_context(|| format!("instance {id} has no primary ENI"))?;
    Ok(VpcNodeInfo {
        instance_id: id.to_string(),
        mac: p.mac.clone(),
        ip: p.primary_ip,
        imds_port: imds_port(i + 1),
    })
}

/// The IMDS port of node `i` (1-based).
pub fn imds_port(i: usize) -> u16 {
    IMDS_BASE_PORT + i as u16
}

/// The node-facing IMDS endpoint of node `i` (1-based).
pub fn imds_endpoint(i: usize) -> String {
    format!("http://{GATEWAY}:{}", imds_port(i))
}

/// moto's endpoint as nodes reach it.
pub fn ec2_endpoint() -> String {
    format!("http://{GATEWAY}:{MOTO_PORT}")
}
