//! `trellis-agent`: registers the node, then serves the CNI plugin until SIGTERM/SIGINT.

use std::future::IntoFuture;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use trellis_agent::api;
use trellis_agent::autodetect::{self, Encapsulation, Family, Method};
use trellis_agent::dataplane::{self, run::DataplaneConfig, RtNetlink, VxlanConfig};
use trellis_agent::endpoints::Endpoints;
use trellis_agent::health;
use trellis_agent::metrics::Metrics;
use trellis_agent::register::register_node;
use trellis_agent::vpc::cli::{Backend, VpcArgs};
use trellis_datastore::cli::ConnectArgs;

#[derive(Debug, Parser)]
#[command(name = "trellis-agent", version, about = "Trellis node agent")]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Name of this node (defaults to the host name).
    #[arg(long, env = "NODENAME")]
    node_name: Option<String>,
    /// The node's underlay address, as other nodes reach it (skips autodetection).
    #[arg(long, env = "TRELLIS_NODE_IP")]
    node_ip: Option<IpAddr>,
    /// The node's IPv6 underlay address (Calico's IP6), recorded on the Node: other nodes route
    /// this node's IPv6 blocks to it when their pool does not encapsulate.
    #[arg(long, env = "TRELLIS_NODE_IP6")]
    node_ip6: Option<std::net::Ipv6Addr>,
    /// How to find the node's address when --node-ip is not given (Calico's methods:
    /// first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST, cidr=CIDR).
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    ip_autodetection_method: Method,
    /// Where the CNI plugin reaches the agent.
    #[arg(long, env = "TRELLIS_AGENT_SOCKET", default_value = trellis_agent_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// MTU of pod interfaces; by default the underlay interface's MTU minus the VXLAN overhead.
    #[arg(long, env = "TRELLIS_MTU")]
    mtu: Option<u32>,
    /// Address for /livez and /readyz.
    #[arg(long, env = "TRELLIS_HEALTH_HOST", default_value = "127.0.0.1")]
    health_host: IpAddr,
    #[arg(long, env = "TRELLIS_HEALTH_PORT", default_value_t = 9099)]
    health_port: u16,
    /// Address for Prometheus /metrics.
    #[arg(long, env = "TRELLIS_METRICS_HOST", default_value = "127.0.0.1")]
    metrics_host: IpAddr,
    /// 0 disables /metrics.
    #[arg(long, env = "TRELLIS_METRICS_PORT", default_value_t = 9091)]
    metrics_port: u16,
    /// Leave the kernel alone (serve the CNI and the datastore only): for running an agent
    /// outside a node's network namespace, e.g. in tests.
    #[arg(long, env = "TRELLIS_NO_DATAPLANE")]
    no_dataplane: bool,
    /// Run the BGP speaker (Calico's BIRD): peers from the datastore (node-to-node mesh,
    /// BGPPeers), this node's blocks advertised, learned routes installed (protocol 81).
    #[arg(long, env = "TRELLIS_BGP")]
    bgp: bool,
    /// Do not enforce NetworkPolicy (GlobalNetworkPolicy, pod anti-spoofing): leaves `table
    /// inet trellis`'s policy chains alone. Enforcement is on by default, as in Calico.
    #[arg(long, env = "TRELLIS_NO_POLICY")]
    no_policy: bool,
    /// Where pod addresses come from: the cluster's IP pools in node-affine blocks, or the
    /// node's AWS ENIs (the VPC-native backend; its settings are the AWS VPC CNI's variables).
    #[arg(long, env = "TRELLIS_BACKEND", value_enum, default_value = "blocks")]
    backend: Backend,
    #[command(flatten)]
    vpc: VpcArgs,
    /// Seconds between full re-reads of the kernel state the agent owns.
    #[arg(long, default_value_t = 90)]
    resync_seconds: u64,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn hostname() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name")?
        .trim()
        .to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
        .unwrap_or_else(|_| "info".into());
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only on a terminal: a log file gets plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
    let node = match args.node_name {
        Some(n) => n,
        None => hostname()?,
    };
    // With both the address and the MTU given there is nothing to look up in the kernel.
    // tunl0's MTU: the underlay's minus the IPIP overhead; with --mtu and no underlay MTU looked
    // up, the pod MTU itself (pods' packets fit, whatever the underlay).
    let (address, mtu, ipip_mtu, subnet) = match (args.node_ip, args.mtu) {
        (Some(ip), Some(mtu)) => (ip, mtu, mtu, None),
        (explicit, mtu) => {
            let method = match explicit {
                Some(ip) => Method::Explicit {
                    address: ip,
                    prefix_len: None,
                },
                None => args.ip_autodetection_method.clone(),
            };
            let detected = autodetect::detect(&method, Family::V4)
                .await
                .with_context(|| format!("finding this node's IPv4 address ({method})"))?;
            let mtu = match mtu {
                Some(m) => m,
                // ENI addresses are routed, not encapsulated: pods take the ENI's MTU.
                None if args.backend == Backend::Vpc => detected.mtu,
                None => autodetect::pod_mtu(detected.mtu, Encapsulation::VxlanV4, None)
                    .with_context(|| {
                        format!("pod MTU from {} (MTU {})", detected.interface, detected.mtu)
                    })?,
            };
            let ipip_mtu =
                autodetect::pod_mtu(detected.mtu, Encapsulation::Ipip, None).unwrap_or(mtu);
            tracing::info!(address = %detected.address, interface = %detected.interface, "detected node address");
            (
                detected.address.addr(),
                mtu,
                ipip_mtu,
                Some(detected.address.trunc()),
            )
        }
    };
    tracing::info!(%address, mtu, "node address and pod MTU");
    let mut addresses = vec![address];
    addresses.extend(args.node_ip6.map(IpAddr::V6));
    let ds = args.connect.connect().await?;
    register_node(ds.as_ref(), &node, &addresses)
        .await
        .with_context(|| format!("registering node {node}"))?;
    let metrics = Arc::new(Metrics::default());
    let dataplane_status = Arc::new(dataplane::DataplaneStatus::default());
    let vpc_mode = args.backend == Backend::Vpc;
    if vpc_mode && args.bgp {
        anyhow::bail!("--bgp cannot be used with --backend vpc: the VPC routes ENI addresses");
    }
    let dataplane_task = if args.no_dataplane || vpc_mode {
        None
    } else {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        tokio::spawn(conn);
        let config = DataplaneConfig {
            vxlan: VxlanConfig {
                node_name: node.clone(),
                mtu,
                underlay_subnet: subnet,
            },
            ipip_mtu,
            resync_interval: Duration::from_secs(args.resync_seconds.max(1)),
        };
        let (ds, metrics, status) = (ds.clone(), metrics.clone(), dataplane_status.clone());
        Some(tokio::spawn(async move {
            let mut nl = RtNetlink::new(handle);
            let nft = dataplane::nat::NftCommand::new();
            dataplane::run::run(ds, config, &mut nl, &nft, metrics, status).await;
        }))
    };
    let policy_task = if !args.no_policy && !args.no_dataplane {
        let config = trellis_agent::policy::run::PolicyConfig {
            node_name: node.clone(),
        };
        let (ds, status) = (ds.clone(), dataplane_status.clone());
        Some(tokio::spawn(trellis_agent::policy::run::run(
            ds,
            config,
            dataplane::nat::NftCommand::new(),
            status,
        )))
    } else {
        None
    };
    let bgp_status = Arc::new(trellis_agent::bgp::BgpStatusCell::default());
    let bgp_task = if args.bgp && !args.no_dataplane {
        let config = trellis_agent::bgp::run::BgpAgentConfig {
            node_name: node.clone(),
            underlay_subnet: subnet,
            resync_interval: Duration::from_secs(args.resync_seconds.max(1)),
        };
        let (ds, status) = (ds.clone(), bgp_status.clone());
        Some(tokio::spawn(async move {
            if let Err(e) = trellis_agent::bgp::run::run(ds, config, status).await {
                tracing::error!(error = %e, "BGP stopped");
            }
        }))
    } else {
        None
    };
    let mut vpc_tasks = Vec::new();
    let mut endpoints = Endpoints::new(ds.clone(), node.clone(), mtu)
        .with_dataplane_status(dataplane_status.clone());
    if vpc_mode {
        let handle = if args.no_dataplane {
            None
        } else {
            let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
            tokio::spawn(conn);
            Some(handle)
        };
        let cfg = args
            .vpc
            .config(Duration::from_secs(args.resync_seconds.clamp(1, 5)));
        match trellis_agent::vpc::run::run(
            &cfg,
            ds,
            &node,
            handle,
            dataplane_status,
            metrics.clone(),
        )
        .await
        {
            Ok(running) => {
                vpc_tasks = running.tasks;
                endpoints = endpoints.with_vpc(running.pods);
            }
            Err(e) => {
                // One line naming the cause (unknown instance type, no credentials, ...).
                tracing::error!(error = %e, "VPC backend");
                eprintln!("trellis-agent: VPC backend: {e}");
                std::process::exit(1);
            }
        }
    }
    if bgp_task.is_some() {
        endpoints = endpoints.with_bgp_status(bgp_status);
    } else if args.bgp {
        tracing::warn!("--bgp ignored: BGP needs the dataplane (--no-dataplane is set)");
    }
    let endpoints = Arc::new(endpoints);
    let health_addr = SocketAddr::new(args.health_host, args.health_port);
    let health = tokio::net::TcpListener::bind(health_addr)
        .await
        .with_context(|| format!("binding health on {health_addr}"))?;
    let health_task =
        tokio::spawn(axum::serve(health, health::health_router(endpoints.clone())).into_future());
    let metrics_task = if args.metrics_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(args.metrics_host, args.metrics_port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        Some(tokio::spawn(
            axum::serve(l, health::metrics_router(metrics.clone())).into_future(),
        ))
    };
    let state = api::AppState { endpoints, metrics };
    let listener =
        api::bind(&args.socket).with_context(|| format!("binding {}", args.socket.display()))?;
    tracing::info!(%node, socket = %args.socket.display(), "serving the CNI plugin");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        res = api::serve(listener, state) => res.context("agent API")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = term.recv() => tracing::info!("terminated"),
    }
    health_task.abort();
    if let Some(t) = dataplane_task {
        t.abort();
    }
    // Dropping the speaker closes its sessions without a NOTIFICATION: peers keep our routes
    // as stale for the restart time (graceful restart), so a restart is not an outage.
    if let Some(t) = bgp_task {
        t.abort();
    }
    // Policy stays in the kernel: a restarted agent replaces it in one transaction.
    if let Some(t) = policy_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    // The pool's state is in the checkpoint; its kernel state stays.
    for t in vpc_tasks {
        t.abort();
    }
    // The dataplane is left as it is: a restart must not disturb running pods.
    Ok(())
}
