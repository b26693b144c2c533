//! `trellis-lab probe`: the servers and clients of connectivity tests (NetworkPolicy
//! conformance), run inside a pod's network namespace. The lab has no socat or ncat, so this is
//! the agnhost `serve-hostname` / `connect` of the Kubernetes e2e suite, in std and tokio.
//!
//! - `serve` answers on TCP (a banner, then close), UDP (a reply to each datagram) and SCTP
//!   (as TCP, where the kernel has SCTP) until killed.
//! - `connect` probes one target; exit 0 connected, 1 refused / timed out / failed, 2 usage.
//! - `matrix` probes many targets concurrently from one process, a result line per target, so a
//!   pod's whole row of a reachability table costs one process and one timeout at most.

mod sctp;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// What `serve` prints once every listener is up (`pod serve` waits for it).
pub const READY: &str = "ready";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ProbeCmd {
    /// Serve TCP, UDP and SCTP ports in the current network namespace until killed.
    Serve {
        /// The banner / reply (normally the pod's NS/POD).
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
        /// Attempted; on a kernel without SCTP one line says so and the rest is served.
        #[arg(long, value_delimiter = ',')]
        sctp: Vec<u16>,
    },
    /// Probe one target: exit 0 connected/answered, 1 refused/timed out/failed, 2 usage.
    Connect {
        #[arg(long, value_enum)]
        proto: Proto,
        /// IP:PORT ([IPv6]:PORT).
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Probe every target concurrently; one line per target, in the order given:
    /// `TARGET OUTCOME [DETAIL] TIME`. Exit 0 when every line was printed (whatever the outcomes).
    Matrix {
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// PROTO:IP:PORT (PROTO:[IPv6]:PORT), e.g. tcp:10.244.1.2:80.
        #[arg(required = true, value_parser = parse_target)]
        targets: Vec<Target>,
    },
}

/// One thing to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub proto: Proto,
    pub addr: SocketAddr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto, self.addr)
    }
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    let (proto, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PROTO:IP:PORT"))?;
    let proto =
        Proto::from_str(proto, true).map_err(|_| format!("{proto:?} is not tcp|udp|sctp"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not IP:PORT ([IPv6]:PORT): {e}"))?;
    Ok(Target { proto, addr })
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (TCP, SCTP) or answered (UDP); the banner or reply, which names the server.
    Connected(String),
    /// TCP RST, or ICMP port unreachable for UDP.
    Refused,
    /// No answer within the timeout (what a policy's drop looks like).
    Timeout,
    /// Anything else: no route, protocol not supported...
    Failed(String),
}

impl Outcome {
    pub fn connected(&self) -> bool {
        matches!(self, Outcome::Connected(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The banner is a pod name; quoted so an empty or odd one stays one token.
            Outcome::Connected(banner) => write!(f, "connected {banner:?}"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Failed(why) => write!(f, "failed {why:?}"),
        }
    }
}

fn io_outcome(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Failed(e.to_string()),
    }
}

fn unspecified(addr: &SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Reads the banner a stream server writes before closing, for what is left of `deadline`.
async fn banner(mut s: TcpStream, deadline: tokio::time::Instant) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout_at(deadline, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).trim().to_string()
}

async fn probe_stream(socket: TcpSocket, to: SocketAddr, timeout: Duration) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, socket.connect(to)).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => io_outcome(&e),
        Ok(Ok(s)) => Outcome::Connected(banner(s, deadline).await),
    }
}

/// UDP: a datagram, resent every 200 ms (a first one may wait on ARP or be lost) until a reply,
/// an ICMP port unreachable (ECONNREFUSED on a connected socket) or the deadline.
async fn probe_udp(to: SocketAddr, timeout: Duration) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let socket = match UdpSocket::bind(unspecified(&to)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if let Err(e) = socket.connect(to).await {
        return io_outcome(&e);
    }
    let mut buf = [0u8; 512];
    loop {
        if let Err(e) = socket.send(b"trellis-lab probe").await {
            return io_outcome(&e);
        }
        let wait = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
        match tokio::time::timeout_at(wait, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                return Outcome::Connected(String::from_utf8_lossy(&buf[..n]).trim().to_string())
            }
            Ok(Err(e)) => return io_outcome(&e),
            Err(_) if wait >= deadline => return Outcome::Timeout,
            Err(_) => {}
        }
    }
}

pub async fn probe(target: Target, timeout: Duration) -> Outcome {
    let socket = match target.proto {
        Proto::Udp => return probe_udp(target.addr, timeout).await,
        Proto::Tcp if target.addr.is_ipv4() => TcpSocket::new_v4(),
        Proto::Tcp => TcpSocket::new_v6(),
        Proto::Sctp => sctp::stream_socket(target.addr.is_ipv4()),
    };
    match socket {
        Ok(s) => probe_stream(s, target.addr, timeout).await,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn probe_line(target: Target, timeout: Duration) -> (String, bool) {
    let start = Instant::now();
    let outcome = probe(target, timeout).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    (format!("{target} {outcome} {ms:.1}ms"), outcome.connected())
}

/// A listener of `proto` on every address of the namespace, IPv4 and IPv6 (a `[::]` socket
/// takes both on Linux); `0.0.0.0` where IPv6 is off.
fn stream_listener(proto: Proto, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for v4 in [false, true] {
        let ip: IpAddr = if v4 {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = match proto {
            Proto::Sctp => sctp::stream_socket(v4)?,
            _ if v4 => TcpSocket::new_v4()?,
            _ => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind((ip, port).into())
            .and_then(|()| socket.listen(128))
        {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried twice"))
}

async fn udp_socket(port: u16) -> std::io::Result<UdpSocket> {
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(s) => Ok(s),
        Err(_) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await,
    }
}

async fn serve_stream(listener: TcpListener, name: String) -> anyhow::Result<()> {
    loop {
        let (mut s, _) = listener.accept().await?;
        let banner = format!("{name}\n");
        tokio::spawn(async move {
            let _ = s.write_all(banner.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

async fn serve_udp(socket: UdpSocket, name: String) -> anyhow::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let (_, from) = socket.recv_from(&mut buf).await?;
        // A reply that names the server; a lost one is the client's to resend.
        let _ = socket.send_to(name.as_bytes(), from).await;
    }
}

async fn serve(name: String, tcp: Vec<u16>, udp: Vec<u16>, sctp: Vec<u16>) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for (proto, ports) in [(Proto::Tcp, &tcp), (Proto::Sctp, &sctp)] {
        for &port in ports {
            match stream_listener(proto, port) {
                Ok(l) => {
                    println!("{proto} {port}: listening");
                    tasks.spawn(serve_stream(l, name.clone()));
                }
                Err(e) if proto == Proto::Sctp && sctp::unsupported(&e) => {
                    println!("sctp {port}: not served, this kernel has no SCTP sockets ({e})");
                }
                Err(e) => return Err(e).with_context(|| format!("{proto} port {port}")),
            }
        }
    }
    for &port in &udp {
        let s = udp_socket(port)
            .await
            .with_context(|| format!("udp port {port}"))?;
        println!("udp {port}: listening");
        tasks.spawn(serve_udp(s, name.clone()));
    }
    println!("{READY}");
    match tasks.join_next().await {
        None => std::future::pending().await,
        Some(r) => r?,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

pub fn run(cmd: ProbeCmd) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        ProbeCmd::Serve {
            name,
            tcp,
            udp,
            sctp,
        } => {
            rt.block_on(serve(name, tcp, udp, sctp))?;
            Ok(ExitCode::SUCCESS)
        }
        ProbeCmd::Connect {
            proto,
            to,
            timeout_ms,
        } => {
            let target = Target { proto, addr: to };
            let (line, connected) =
                rt.block_on(probe_line(target, Duration::from_millis(timeout_ms)));
            println!("{line}");
            Ok(ExitCode::from(if connected { 0 } else { 1 }))
        }
        ProbeCmd::Matrix {
            timeout_ms,
            targets,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let lines = rt.block_on(async {
                let mut set = JoinSet::new();
                for (i, &t) in targets.iter().enumerate() {
                    set.spawn(async move { (i, probe_line(t, timeout).await.0) });
                }
                let mut lines = vec![String::new(); targets.len()];
                while let Some(r) = set.join_next().await {
                    let (i, line) = r?;
                    lines[i] = line;
                }
                anyhow::Ok(lines)
            })?;
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_from_proto_ip_port() {
        let t = parse_target("udp:[fd00:244::1]:81").unwrap();
        assert_eq!(t.proto, Proto::Udp);
        assert_eq!(t.addr, "[fd00:244::1]:81".parse().unwrap());
        assert_eq!(t.to_string(), "udp:[fd00:244::1]:81");
        assert_eq!(
            parse_target("tcp:10.0.0.1:80").unwrap().to_string(),
            "tcp:10.0.0.1:80"
        );
        assert!(parse_target("icmp:10.0.0.1:80").is_err());
        assert!(parse_target("tcp:10.0.0.1").is_err());
        assert!(parse_target("10.0.0.1:80").is_err());
    }

    /// Loopback only: a server and each kind of outcome, in this process's namespace.
    #[test]
    fn probes_see_connected_refused_and_timeout_on_loopback() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let l = stream_listener(Proto::Tcp, 0).unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(serve_stream(l, "x/a".into()));
            let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let uport = u.local_addr().unwrap().port();
            tokio::spawn(serve_udp(u, "x/a".into()));
            let t = Duration::from_millis(500);
            let at = |proto, port| Target {
                proto,
                addr: (Ipv4Addr::LOCALHOST, port).into(),
            };
            assert_eq!(
                probe(at(Proto::Tcp, port), t).await,
                Outcome::Connected("x/a".into())
            );
            assert_eq!(
                probe(at(Proto::Udp, uport), t).await,
                Outcome::Connected("x/a".into())
            );
            // A port nobody listens on: TCP gets a RST, UDP an ICMP port unreachable.
            let free = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let closed = free.local_addr().unwrap().port();
            drop(free);
            assert_eq!(probe(at(Proto::Udp, closed), t).await, Outcome::Refused);
            let free = stream_listener(Proto::Tcp, 0).unwrap();
            let closed = free.local_addr().unwrap().port();
            drop(free);
            assert_eq!(probe(at(Proto::Tcp, closed), t).await, Outcome::Refused);
            // A UDP socket that never answers: a timeout.
            let mute = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mport = mute.local_addr().unwrap().port();
            assert_eq!(
                probe(at(Proto::Udp, mport), Duration::from_millis(300)).await,
                Outcome::Timeout
            );
        });
    }
}
