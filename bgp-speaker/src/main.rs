//! `trellis-bgp`: a standalone BGP route reflector for Trellis clusters (the role a dedicated
//! BIRD plays in a Calico cluster with `nodeToNodeMeshEnabled: false`). It reflects routes
//! between its clients and its other peers, and installs nothing in the kernel unless asked to
//! with `--install-kernel` (as a node would; the BGP benchmark runs it that way).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::sync::mpsc;
use trellis_bgp_speaker::install::{install, kernel_route, InstallConfig};
use trellis_bgp_speaker::kernel::{KernelSync, KernelSyncConfig, RtNetlinkTable};
use trellis_bgp_speaker::speaker::{PeerConfig, Speaker, SpeakerConfig};

#[derive(Debug, Parser)]
#[command(name = "trellis-bgp", about = "Trellis BGP route reflector")]
struct Args {
    /// Our AS number.
    #[arg(long, default_value_t = 64512)]
    asn: u32,
    /// BGP identifier (an IPv4 address).
    #[arg(long)]
    router_id: Ipv4Addr,
    /// Cluster id (RFC 4456); defaults to the router id.
    #[arg(long)]
    cluster_id: Option<Ipv4Addr>,
    /// Address and port to accept BGP connections on.
    #[arg(long, default_value = "[::]:179")]
    listen: SocketAddr,
    /// A route-reflector client in our AS, by address (repeatable).
    #[arg(long = "client")]
    clients: Vec<IpAddr>,
    /// Another peer: ADDR or ADDR,ASN (default: our AS; a non-client iBGP peer, e.g. another
    /// reflector). Repeatable.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Wait for clients to connect instead of connecting to them.
    #[arg(long)]
    passive: bool,
    /// Hold time in seconds.
    #[arg(long, default_value_t = 90)]
    hold_time: u16,
    /// Log the sessions' state this often (seconds; 0 = never).
    #[arg(long, default_value_t = 60)]
    status_interval: u64,
    /// Install the learned best paths in the main routing table of this process's network
    /// namespace (protocol 81), as a node does.
    #[arg(long)]
    install_kernel: bool,
    /// With --install-kernel: log how many route events the installer was handed this often
    /// (milliseconds; 0 = never). Cheap, unlike the session status, which counts every route.
    #[arg(long, default_value_t = 0)]
    route_events_interval_ms: u64,
}

fn parse_peer(s: &str, default_asn: u32) -> Result<(IpAddr, u32)> {
    let (addr, asn) = match s.split_once(',') {
        Some((a, n)) => (
            a,
            n.parse()
                .with_context(|| format!("--peer {s}: bad AS number {n:?}"))?,
        ),
        None => (s, default_asn),
    };
    let addr = addr
        .parse()
        .with_context(|| format!("--peer {s}: bad address {addr:?}"))?;
    Ok((addr, asn))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    if args.hold_time == 1 || args.hold_time == 2 {
        bail!(
            "--hold-time {}: must be 0 or at least 3 (RFC 4271 4.2)",
            args.hold_time
        );
    }
    let mut cfg = SpeakerConfig::new(args.asn, args.router_id);
    cfg.listen = Some(args.listen);
    cfg.cluster_id = Some(args.cluster_id.unwrap_or(args.router_id));
    cfg.hold_time = args.hold_time;
    let (speaker, mut routes) = Speaker::start(cfg)
        .await
        .context("starting the BGP speaker")?;
    for c in &args.clients {
        let mut p = PeerConfig::new(*c, args.asn);
        p.rr_client = true;
        p.passive = args.passive;
        p.kind = "rr-client".into();
        speaker.add_peer(p)?;
    }
    for s in &args.peers {
        let (addr, asn) = parse_peer(s, args.asn)?;
        let mut p = PeerConfig::new(addr, asn);
        p.passive = args.passive;
        p.kind = if asn == args.asn { "rr" } else { "global" }.into();
        speaker.add_peer(p)?;
    }
    if args.install_kernel {
        // The socket opens in this process's network namespace (shared by all threads).
        let table = RtNetlinkTable::connect().context("opening a netlink route socket")?;
        let sync = KernelSync::new(KernelSyncConfig::default())?;
        // Counted as they leave the speaker, before the installer batches them.
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            while let Some(ev) = routes.recv().await {
                counter.fetch_add(1, Ordering::Relaxed);
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            install(rx, sync, &table, InstallConfig::default(), kernel_route).await;
        });
        if args.route_events_interval_ms > 0 {
            let every = Duration::from_millis(args.route_events_interval_ms);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let n = count.load(Ordering::Relaxed);
                    tracing::info!(route_events = n, "kernel install");
                }
            });
        }
    } else {
        // A reflector installs nothing: drain the route events.
        tokio::spawn(async move { while routes.recv().await.is_some() {} });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(args.status_interval.max(1)));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick(), if args.status_interval > 0 => {
                for p in speaker.status().await? {
                    tracing::info!(peer = %p.addr, state = ?p.state, received = p.prefixes_received,
                        advertised = p.prefixes_advertised, "session");
                }
            }
        }
    }
    speaker.stop().await;
    Ok(())
}
