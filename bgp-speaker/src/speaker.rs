//! The speaker: one owner task holding every peer's FSM, the Loc-RIB and the Adj-RIBs-Out.
//!
//! ```text
//!  Speaker (handle) --Command--> +-------------+ --RouteEvent--> kernel sync / the agent
//!                                | owner task  |
//!  listener task ----IoEvent---> |  peers,     | --bytes--> connection writer task (per conn)
//!  connect task  ----IoEvent---> |  LocRib,    |
//!  connection reader tasks ----> |  Adj-RIB-Out|
//!  timer tasks ---TimerEvent---> +-------------+
//! ```
//! Child tasks own sockets and sleeps and only report; every decision is the owner's, made by
//! feeding the sans-IO [`Fsm`] and the pure RIB/export code.

mod advertise;
mod events;
mod session;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::attrs::Attrs;
pub use crate::conn::TtlMode;
use crate::conn::{Conn, IoEvent, Listener, Task};
use crate::export::{LocalInfo, NextHopMode, PeerExport};
use crate::family::Family;
use crate::fsm::{Fsm, State, Timer};
use crate::open::Negotiated;
use crate::rib::{LocRib, PeerInfo};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Where to accept BGP connections; `None` = never (outbound only).
    pub listen: Option<SocketAddr>,
    /// Route reflector: our cluster id (RFC 4456); `None` = not a reflector.
    pub cluster_id: Option<Ipv4Addr>,
    pub hold_time: u16,
    pub graceful_restart: Option<GracefulRestart>,
    /// Report every equal-cost path of a prefix, not only the best.
    pub ecmp: bool,
    /// Our next hop for IPv4 routes on sessions that are not over IPv4 (and vice versa).
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub connect_retry: Duration,
    /// Select only paths whose next hop is in one of these subnets (RFC 4271 9.1.2.1 with
    /// directly connected next hops, as a node installing routes needs); empty = all paths.
    pub next_hop_subnets: Vec<IpNet>,
}

impl SpeakerConfig {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> SpeakerConfig {
        SpeakerConfig {
            asn,
            router_id,
            listen: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 179)),
            cluster_id: None,
            hold_time: 90,
            graceful_restart: Some(GracefulRestart {
                restart_time: 120,
                restarting: false,
            }),
            ecmp: true,
            next_hop_v4: None,
            next_hop_v6: None,
            connect_retry: Duration::from_secs(5),
            next_hop_subnets: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Seconds peers keep our routes after we go away (RFC 4724 3).
    pub restart_time: u16,
    /// This process is a restart: set the R and F bits so peers keep our routes meanwhile.
    pub restarting: bool,
}

/// `Debug` leaves the password out, so a logged configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub addr: IpAddr,
    pub asn: u32,
    pub port: u16,
    /// Source address for outbound connections.
    pub local_addr: Option<IpAddr>,
    pub passive: bool,
    pub rr_client: bool,
    pub next_hop_mode: NextHopMode,
    /// Overrides the speaker's hold time for this peer.
    pub hold_time: Option<u16>,
    /// Seconds between KEEPALIVEs (default: a third of the negotiated hold time).
    pub keepalive: Option<u16>,
    /// A label for status: mesh, rr, global, node...
    pub kind: String,
    pub families: BTreeSet<Family>,
    /// Overrides the speaker's graceful-restart time in the OPEN we send this peer.
    pub restart_time: Option<u16>,
    /// How often our own AS may appear in a path from this eBGP peer before it is refused as
    /// a loop (BIRD's `allow local as`, Calico's `numAllowedLocalASNumbers`).
    pub allow_local_as: u8,
    /// TCP MD5 signature key (RFC 2385), at most 80 bytes.
    pub password: Option<String>,
    /// Outgoing TTL and GTSM (eBGP multihop, RFC 5082).
    pub ttl: TtlMode,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("addr", &self.addr)
            .field("asn", &self.asn)
            .field("port", &self.port)
            .field("local_addr", &self.local_addr)
            .field("passive", &self.passive)
            .field("rr_client", &self.rr_client)
            .field("next_hop_mode", &self.next_hop_mode)
            .field("hold_time", &self.hold_time)
            .field("keepalive", &self.keepalive)
            .field("kind", &self.kind)
            .field("families", &self.families)
            .field("restart_time", &self.restart_time)
            .field("allow_local_as", &self.allow_local_as)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl PeerConfig {
    pub fn new(addr: IpAddr, asn: u32) -> PeerConfig {
        PeerConfig {
            addr,
            asn,
            port: 179,
            local_addr: None,
            passive: false,
            rr_client: false,
            next_hop_mode: NextHopMode::Auto,
            hold_time: None,
            keepalive: None,
            kind: "global".into(),
            families: Family::ALL.into_iter().collect(),
            restart_time: None,
            allow_local_as: 0,
            password: None,
            ttl: TtlMode::Default,
        }
    }
}

/// What we attach to a route we originate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LocalRoute {
    /// RFC 1997 communities, `AA << 16 | NN`.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// A change of what the speaker selected for a prefix: the next hops to install, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub prefix: IpNet,
    /// Empty: the prefix is gone (or only our own route is left).
    pub next_hops: Vec<LearnedNextHop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LearnedNextHop {
    pub addr: IpAddr,
    pub link_local: Option<Ipv6Addr>,
    /// The peer the path came from.
    pub peer: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerStatus {
    pub addr: IpAddr,
    pub asn: u32,
    pub kind: String,
    pub state: State,
    /// When the session entered its current state.
    pub since: SystemTime,
    pub prefixes_received: usize,
    pub prefixes_advertised: usize,
    /// The peer's routes are kept as stale while it restarts (RFC 4724 helper).
    pub stale: bool,
    /// Established, and the peer has sent End-of-RIB (RFC 4724 2) for every family of the
    /// session: its initial table is complete.
    pub end_of_rib_received: bool,
    pub last_error: Option<String>,
}

/// One selected route, for inspection (`show route`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RibEntry {
    pub prefix: IpNet,
    pub next_hops: Vec<IpAddr>,
    pub as_path: Vec<u32>,
    pub local: bool,
    pub stale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("cannot listen for BGP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the BGP speaker task has stopped")]
    Gone,
    #[error("BGP peer {peer}: {reason}")]
    InvalidPeer { peer: IpAddr, reason: String },
}

#[derive(Debug)]
enum Command {
    AddPeer(PeerConfig),
    RemovePeer(IpAddr),
    Originate(IpNet, LocalRoute),
    WithdrawLocal(IpNet),
    Status(oneshot::Sender<Vec<PeerStatus>>),
    Routes(oneshot::Sender<Vec<RibEntry>>),
    Stop(oneshot::Sender<()>),
}

/// Handle to a running speaker; dropping it stops the speaker (sessions close abruptly,
/// which peers treat as a graceful restart).
#[derive(Debug)]
pub struct Speaker {
    tx: mpsc::UnboundedSender<Command>,
    _task: Task,
}

impl Speaker {
    /// Starts the owner task (and the listener). Routes the speaker selects arrive on the
    /// returned receiver.
    pub async fn start(
        cfg: SpeakerConfig,
    ) -> Result<(Speaker, mpsc::UnboundedReceiver<RouteEvent>), SpeakerError> {
        let (io_tx, io_rx) = mpsc::unbounded_channel();
        let listener = match cfg.listen {
            Some(addr) => {
                let l = bind(addr)
                    .and_then(|l| crate::conn::listen(l, io_tx.clone()))
                    .map_err(|source| SpeakerError::Listen { addr, source })?;
                Some(l)
            }
            None => None,
        };
        let (routes_tx, routes_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let (owner, timers) = Owner::new(cfg, io_tx, routes_tx, listener);
        let task = Task(tokio::spawn(owner.run(rx, io_rx, timers)));
        Ok((Speaker { tx, _task: task }, routes_rx))
    }

    pub fn add_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        peer.validate()?;
        self.send(Command::AddPeer(peer))
    }

    /// Closes the session (Cease, peer de-configured) and forgets the peer's routes.
    pub fn remove_peer(&self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.send(Command::RemovePeer(addr))
    }

    /// Advertises `prefix` as ours.
    pub fn originate(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        self.originate_with(prefix, LocalRoute::default())
    }

    /// Advertises `prefix` as ours with the given attributes (replacing earlier ones).
    pub fn originate_with(&self, prefix: IpNet, route: LocalRoute) -> Result<(), SpeakerError> {
        self.send(Command::Originate(prefix, route))
    }

    pub fn withdraw(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        self.send(Command::WithdrawLocal(prefix))
    }

    pub async fn status(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }

    pub async fn routes(&self) -> Result<Vec<RibEntry>, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Routes(tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }

    /// Closes every session with Cease (administrative shutdown) and stops.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, c: Command) -> Result<(), SpeakerError> {
        self.tx.send(c).map_err(|_| SpeakerError::Gone)
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Which of a peer's (at most two, during a collision) connections an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Main,
    /// An inbound connection that arrived while Main was in OpenSent/OpenConfirm (RFC 4271 6.8).
    Alt,
}

#[derive(Debug)]
struct TimerEvent {
    peer: IpAddr,
    slot: Slot,
    kind: TimerKind,
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Fsm(Timer),
    /// The peer's stale routes (graceful restart helper) are due to go.
    StaleRoutes,
}

#[derive(Debug)]
struct Peer {
    cfg: PeerConfig,
    fsm: Fsm,
    conn: Option<Conn>,
    /// Outbound attempt in flight and its number (late results of older ones are dropped).
    connecting: Option<Task>,
    attempt: u64,
    alt: Option<(Fsm, Conn)>,
    timers: HashMap<(Slot, Timer), (u64, Task)>,
    /// Set while Established.
    session: Option<EstablishedSession>,
    adj_out: HashMap<IpNet, std::sync::Arc<Attrs>>,
    since: SystemTime,
    last_error: Option<String>,
    /// RFC 4724 helper: our copy of the peer's routes is stale until this timer or End-of-RIB.
    stale_timer: Option<Task>,
    stale_generation: u64,
}

#[derive(Debug, Clone)]
struct EstablishedSession {
    negotiated: Negotiated,
    info: PeerInfo,
    export: PeerExport,
    /// Families whose End-of-RIB the peer has sent on this session.
    end_of_rib: BTreeSet<Family>,
}

struct Owner {
    cfg: SpeakerConfig,
    local: LocalInfo,
    peers: HashMap<IpAddr, Peer>,
    rib: LocRib,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    timer_tx: mpsc::UnboundedSender<TimerEvent>,
    routes_tx: mpsc::UnboundedSender<RouteEvent>,
    next_conn: u64,
    /// Loc-RIB changes not yet advertised (flushed after every event).
    pending: Vec<crate::rib::Change>,
    listener: Option<Listener>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("local", &self.local)
            .field("peers", &self.peers.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::PeerConfig;

    #[test]
    fn a_peer_config_never_prints_its_password() {
        let mut p = PeerConfig::new("192.0.2.1".parse().unwrap(), 65000);
        p.password = Some("hunter2".into());
        let text = format!("{p:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
