//! moto as the EC2 endpoint for tests: one `moto_server` per test on a free loopback port,
//! killed when the [`Moto`] drops, and a [`Fixture`] with a VPC, two subnets, a security group
//! and one running instance.
//!
//! Credentials are dummy keys given to the SDK config ([`CredentialSource::Static`]), never
//! set in the process environment: tests run on parallel threads of one process.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use ipnet::Ipv4Net;
use trellis_vpc::ec2::{CredentialSource, Ec2Config, SdkEc2};

pub const REGION: &str = "us-east-1";
pub const AVAILABILITY_ZONE: &str = "us-east-1a";
/// One of the AMIs moto ships with.
pub const IMAGE_ID: &str = "ami-12c6146b";
pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const SUBNET_CIDR: &str = "10.0.0.0/24";
pub const SUBNET2_CIDR: &str = "10.0.1.0/24";

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts `moto_server` and waits until it accepts connections. Panics, saying how to
    /// install it, when it is not on PATH: a missing emulator must fail the test, not skip it.
    pub fn start() -> Moto {
        let mut last_error = String::new();
        // A free port can be taken between our probe and moto's bind: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("temp file for moto's log");
            let spawned = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_DEFAULT_REGION", REGION)
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("moto log"))
                .stderr(log.reopen().expect("moto log"))
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                    "moto_server is not on PATH; install it with: pip install 'moto[server]'"
                ),
                Err(e) => panic!("cannot start moto_server: {e}"),
            };
            let mut moto = Moto { child, port, log };
            match moto.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return moto,
                Err(e) => last_error = e,
            }
        }
        panic!("moto_server did not come up: {last_error}");
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log_text()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on {addr} after {limit:?}: {}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An [`Ec2Config`] for this moto, with dummy keys.
    pub fn config(&self) -> Ec2Config {
        Ec2Config {
            endpoint: Some(self.endpoint()),
            region: REGION.to_owned(),
            credentials: CredentialSource::Static {
                access_key_id: "testing".to_owned(),
                secret_access_key: "testing".to_owned(),
            },
        }
    }

    /// A raw SDK client, for the setup calls the [`trellis_vpc::ec2::Ec2`] trait does not have.
    pub async fn sdk(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "moto-tests",
            ))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// moto with a VPC, two subnets, a security group and one running instance.
#[derive(Debug)]
pub struct Fixture {
    pub moto: Moto,
    pub ec2: SdkEc2,
    pub sdk: aws_sdk_ec2::Client,
    pub vpc_id: String,
    pub vpc_cidr: Ipv4Net,
    pub subnet_id: String,
    pub subnet2_id: String,
    pub security_group_id: String,
    pub instance_id: String,
}

impl Fixture {
    pub async fn new(instance_type: &str) -> Fixture {
        let moto = Moto::start();
        let sdk = moto.sdk().await;
        let vpc = sdk
            .create_vpc()
            .cidr_block(VPC_CIDR)
            .send()
            .await
            .expect("CreateVpc");
        let vpc_id = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("VpcId")
            .to_owned();
        let subnet = |cidr: &'static str| {
            let sdk = sdk.clone();
            let vpc_id = vpc_id.clone();
            async move {
                let out = sdk
                    .create_subnet()
                    .vpc_id(vpc_id)
                    .cidr_block(cidr)
                    .availability_zone(AVAILABILITY_ZONE)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("CreateSubnet {cidr}: {e:?}"));
                out.subnet()
                    .and_then(|s| s.subnet_id())
                    .expect("SubnetId")
                    .to_owned()
            }
        };
        let subnet_id = subnet(SUBNET_CIDR).await;
        let subnet2_id = subnet(SUBNET2_CIDR).await;
        let sg = sdk
            .create_security_group()
            .group_name("trellis-nodes")
            .description("trellis test nodes")
            .vpc_id(&vpc_id)
            .send()
            .await
            .expect("CreateSecurityGroup");
        let security_group_id = sg.group_id().expect("GroupId").to_owned();
        let run = sdk
            .run_instances()
            .image_id(IMAGE_ID)
            .instance_type(InstanceType::from(instance_type))
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet_id)
            .security_group_ids(&security_group_id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("RunInstances {instance_type}: {e:?}"));
        let instance_id = run.instances()[0]
            .instance_id()
            .expect("InstanceId")
            .to_owned();
        Fixture {
            ec2: SdkEc2::new(&moto.config()).await,
            moto,
            sdk,
            vpc_id,
            vpc_cidr: VPC_CIDR.parse().expect("VPC CIDR"),
            subnet_id,
            subnet2_id,
            security_group_id,
            instance_id,
        }
    }

    /// An ENI made behind the trait's back (as another node or a crashed agent would leave it),
    /// tagged for `cluster`.
    pub async fn create_tagged_eni(&self, cluster: &str) -> String {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::NetworkInterface)
            .tags(
                Tag::builder()
                    .key(trellis_vpc::ec2::TAG_CLUSTER_NAME)
                    .value(cluster)
                    .build(),
            )
            .build();
        let out = self
            .sdk
            .create_network_interface()
            .subnet_id(&self.subnet_id)
            .tag_specifications(tags)
            .send()
            .await
            .expect("CreateNetworkInterface");
        out.network_interface()
            .and_then(|ni| ni.network_interface_id())
            .expect("NetworkInterfaceId")
            .to_owned()
    }

    /// ENI ids attached to the fixture's instance, as moto reports them.
    pub async fn attached_eni_ids(&self) -> Vec<String> {
        let out = self
            .sdk
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("attachment.instance-id")
                    .values(&self.instance_id)
                    .build(),
            )
            .send()
            .await
            .expect("DescribeNetworkInterfaces");
        out.network_interfaces()
            .iter()
            .filter_map(|ni| ni.network_interface_id().map(str::to_owned))
            .collect()
    }
}
