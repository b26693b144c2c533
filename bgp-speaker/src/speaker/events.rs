//! The owner task's loop: commands from the handle, socket events, timer expiries.

use std::net::IpAddr;
use std::time::SystemTime;

use netgauze_bgp_pkt::notification::CeaseError;
use tokio::sync::mpsc;

use super::{Command, Owner, Peer, RibEntry, Slot, TimerEvent, TimerKind};
use crate::attrs::Attrs;
use crate::conn::{Conn, ConnEvent, IoEvent, Listener, SocketOpts, TtlMode};
use crate::fsm::{Fsm, FsmConfig, Input, State};
use crate::open::{LocalGracefulRestart, OpenConfig};
use crate::rib::{LocRib, Path, Source};

impl Owner {
    pub(super) fn new(
        cfg: super::SpeakerConfig,
        io_tx: mpsc::UnboundedSender<IoEvent>,
        routes_tx: mpsc::UnboundedSender<super::RouteEvent>,
        listener: Option<Listener>,
    ) -> (Owner, mpsc::UnboundedReceiver<TimerEvent>) {
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let rib = LocRib::with_next_hop_subnets(cfg.next_hop_subnets.clone());
        let owner = Owner {
            local: crate::export::LocalInfo {
                asn: cfg.asn,
                router_id: cfg.router_id,
                cluster_id: cfg.cluster_id,
            },
            cfg,
            peers: Default::default(),
            rib,
            io_tx,
            timer_tx,
            routes_tx,
            next_conn: 0,
            pending: Vec::new(),
            listener,
        };
        (owner, timer_rx)
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut io: mpsc::UnboundedReceiver<IoEvent>,
        mut timers: mpsc::UnboundedReceiver<TimerEvent>,
    ) {
        loop {
            tokio::select! {
                c = commands.recv() => match c {
                    Some(Command::Stop(done)) => {
                        self.stop_all();
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                    // The handle was dropped: stop without NOTIFICATIONs (peers see a restart).
                    None => return,
                },
                Some(e) = io.recv() => self.io(e),
                Some(t) = timers.recv() => self.timer(t),
            }
            self.flush();
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::AddPeer(p) => self.add_peer(p),
            Command::RemovePeer(addr) => {
                self.drive(
                    addr,
                    Slot::Main,
                    Input::AutomaticStop(CeaseError::PeerDeConfigured {
                        value: vec![].into(),
                    }),
                );
                if let Some(mut p) = self.peers.remove(&addr) {
                    p.timers.clear();
                    if p.cfg.password.is_some() {
                        self.set_listener_key(addr, None);
                    }
                }
                let changes = self.rib.remove_source(Source::Peer(addr));
                self.pending.extend(changes);
            }
            Command::Originate(prefix, route) => {
                let nh = match prefix {
                    ipnet::IpNet::V4(_) => self.cfg.next_hop_v4.map(IpAddr::V4),
                    ipnet::IpNet::V6(_) => self.cfg.next_hop_v6.map(IpAddr::V6),
                };
                let nh = nh.unwrap_or(match prefix {
                    ipnet::IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    ipnet::IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                });
                let mut attrs = Attrs::local(nh);
                attrs.communities = route.communities;
                attrs.large_communities = route.large_communities;
                let path = Path::local(std::sync::Arc::new(attrs));
                if let Some(c) = self.rib.upsert(prefix, path) {
                    self.pending.push(c);
                }
            }
            Command::WithdrawLocal(prefix) => {
                if let Some(c) = self.rib.withdraw(prefix, Source::Local) {
                    self.pending.push(c);
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Routes(reply) => {
                let _ = reply.send(self.routes());
            }
            Command::Stop(_) => {}
        }
    }

    fn add_peer(&mut self, p: super::PeerConfig) {
        if let Some(old) = self.peers.get(&p.addr) {
            if old.cfg == p {
                return;
            }
            // Changed configuration: restart the session with the new one.
            self.command(Command::RemovePeer(p.addr));
        }
        let addr = p.addr;
        if let Some(key) = &p.password {
            self.set_listener_key(addr, Some(key.as_bytes()));
        }
        let fsm = Fsm::new(self.fsm_config(&p, p.passive));
        self.peers.insert(
            addr,
            Peer {
                cfg: p,
                fsm,
                conn: None,
                connecting: None,
                attempt: 0,
                alt: None,
                timers: Default::default(),
                session: None,
                adj_out: Default::default(),
                since: SystemTime::now(),
                last_error: None,
                stale_timer: None,
                stale_generation: 0,
            },
        );
        self.drive(addr, Slot::Main, Input::ManualStart);
    }

    /// RFC 2385: connections from a peer with a password are only accepted signed, so
    /// the listener holds one key per such peer.
    fn set_listener_key(&mut self, peer: IpAddr, key: Option<&[u8]>) {
        let Some(l) = &self.listener else {
            return;
        };
        if let Err(e) = l.set_md5_key(peer, key) {
            self.note_error(peer, format!("listener: {e}"));
        }
    }

    pub(super) fn fsm_config(&self, p: &super::PeerConfig, passive: bool) -> FsmConfig {
        let mut c = FsmConfig::new(OpenConfig {
            local_asn: self.cfg.asn,
            router_id: self.cfg.router_id,
            peer_asn: p.asn,
            hold_time: p.hold_time.unwrap_or(self.cfg.hold_time),
            keepalive: p.keepalive,
            families: p.families.clone(),
            graceful_restart: self.cfg.graceful_restart.map(|g| LocalGracefulRestart {
                restart_time: p.restart_time.unwrap_or(g.restart_time),
                restarting: g.restarting,
                // Our kernel routes survive a restart of this process.
                forwarding_preserved: true,
            }),
        });
        c.passive = passive;
        c.connect_retry = self.cfg.connect_retry;
        c
    }

    fn io(&mut self, e: IoEvent) {
        match e {
            IoEvent::Accepted(stream, remote) => self.accepted(stream, remote.ip()),
            IoEvent::Connected {
                peer,
                attempt,
                stream,
            } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.attempt != attempt || p.fsm.state() != State::Connect || p.conn.is_some() {
                    return;
                }
                p.connecting = None;
                let ibgp = p.cfg.asn == self.cfg.asn;
                self.next_conn += 1;
                match Conn::start(self.next_conn, stream, peer, ibgp, true, self.io_tx.clone()) {
                    Ok(c) => {
                        p.conn = Some(c);
                        self.drive(
                            peer,
                            Slot::Main,
                            Input::TcpConnected {
                                locally_initiated: true,
                            },
                        );
                    }
                    Err(e) => {
                        p.last_error = Some(format!("connection setup: {e}"));
                        self.drive(peer, Slot::Main, Input::TcpFailed);
                    }
                }
            }
            IoEvent::ConnectFailed {
                peer,
                attempt,
                error,
            } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.attempt != attempt || p.conn.is_some() {
                    return;
                }
                p.connecting = None;
                p.last_error = Some(error);
                self.drive(peer, Slot::Main, Input::TcpFailed);
            }
            IoEvent::Conn { peer, conn, event } => {
                let Some(p) = self.peers.get(&peer) else {
                    return;
                };
                let slot = if p.conn.as_ref().is_some_and(|c| c.id == conn) {
                    Slot::Main
                } else if p.alt.as_ref().is_some_and(|(_, c)| c.id == conn) {
                    Slot::Alt
                } else {
                    return; // a connection we already dropped
                };
                let input = match event {
                    ConnEvent::Message(m) => Owner::message_input(*m),
                    ConnEvent::Malformed(e) => {
                        self.note_error(peer, e.to_string());
                        match e.notification().cloned() {
                            Some(n) => Input::DecodeError(n),
                            None => Input::TcpFailed,
                        }
                    }
                    ConnEvent::Closed(why) => {
                        self.note_error(peer, why);
                        Input::TcpFailed
                    }
                };
                self.drive(peer, slot, input);
            }
        }
    }

    fn accepted(&mut self, stream: tokio::net::TcpStream, remote: IpAddr) {
        let Some(p) = self.peers.get_mut(&remote) else {
            tracing::debug!(%remote, "BGP connection from an unconfigured address refused");
            return;
        };
        let ibgp = p.cfg.asn == self.cfg.asn;
        if let Err(e) = SocketOpts::new(None, p.cfg.ttl, ibgp).apply_ttl(&stream, remote) {
            tracing::warn!(%remote, error = %e, "refusing a BGP connection");
            return;
        }
        let slot = match p.fsm.state() {
            State::Connect | State::Active if p.conn.is_none() => {
                // Take the peer's connection instead of ours still in flight.
                p.connecting = None;
                Slot::Main
            }
            State::OpenSent | State::OpenConfirm if p.alt.is_none() => Slot::Alt,
            // Idle, Established, or a collision already being resolved: refuse (event 15).
            _ => return,
        };
        self.next_conn += 1;
        let conn = match Conn::start(
            self.next_conn,
            stream,
            remote,
            ibgp,
            false,
            self.io_tx.clone(),
        ) {
            Ok(c) => c,
            Err(_) => return,
        };
        match slot {
            Slot::Main => {
                p.conn = Some(conn);
            }
            Slot::Alt => {
                let cfg = p.cfg.clone();
                let mut fsm = Fsm::new(self.fsm_config(&cfg, true));
                fsm.process(Input::ManualStart);
                if let Some(p) = self.peers.get_mut(&remote) {
                    p.alt = Some((fsm, conn));
                }
            }
        }
        self.drive(
            remote,
            slot,
            Input::TcpConnected {
                locally_initiated: false,
            },
        );
    }

    fn timer(&mut self, t: TimerEvent) {
        let Some(p) = self.peers.get_mut(&t.peer) else {
            return;
        };
        let timer = match t.kind {
            TimerKind::StaleRoutes => {
                if p.stale_generation == t.generation && p.stale_timer.is_some() {
                    tracing::info!(peer = %t.peer, "restart timer expired: dropping the peer's stale routes");
                    self.sweep_stale(t.peer, None);
                }
                return;
            }
            TimerKind::Fsm(timer) => timer,
        };
        match p.timers.get(&(t.slot, timer)) {
            Some((g, _)) if *g == t.generation => {
                p.timers.remove(&(t.slot, timer));
            }
            _ => return,
        }
        self.drive(t.peer, t.slot, Input::TimerExpired(timer));
    }

    pub(super) fn note_error(&mut self, peer: IpAddr, e: String) {
        tracing::info!(%peer, error = %e, "BGP session problem");
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_error = Some(e);
        }
    }

    fn stop_all(&mut self) {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in addrs {
            self.drive(a, Slot::Main, Input::ManualStop);
            if let Some(p) = self.peers.get_mut(&a) {
                p.alt = None;
            }
        }
    }

    fn status(&self) -> Vec<super::PeerStatus> {
        let mut v: Vec<_> = self
            .peers
            .values()
            .map(|p| super::PeerStatus {
                addr: p.cfg.addr,
                asn: p.cfg.asn,
                kind: p.cfg.kind.clone(),
                state: p.fsm.state(),
                since: p.since,
                prefixes_received: self.rib.paths_from(Source::Peer(p.cfg.addr)).count(),
                prefixes_advertised: p.adj_out.len(),
                stale: p.stale_timer.is_some(),
                end_of_rib_received: p.session.as_ref().is_some_and(|s| {
                    s.negotiated
                        .families
                        .iter()
                        .all(|f| s.end_of_rib.contains(f))
                }),
                last_error: p.last_error.clone(),
            })
            .collect();
        v.sort_by_key(|s| s.addr);
        v
    }

    fn routes(&self) -> Vec<RibEntry> {
        let mut v: Vec<_> = self
            .rib
            .iter_best()
            .map(|(prefix, b)| RibEntry {
                prefix: *prefix,
                next_hops: b.multipath.iter().map(|p| p.attrs.next_hop).collect(),
                as_path: b.best.attrs.as_path.asns(),
                local: b.best.source == Source::Local,
                stale: b.best.stale,
            })
            .collect();
        v.sort_by_key(|e| e.prefix);
        v
    }
}

impl super::PeerConfig {
    pub(super) fn socket_opts(&self, local_asn: u32) -> SocketOpts {
        SocketOpts::new(self.password.as_deref(), self.ttl, self.asn == local_asn)
    }

    /// Errors the kernel or the peer would only report later, or never.
    pub fn validate(&self) -> Result<(), super::SpeakerError> {
        let invalid = |reason: String| super::SpeakerError::InvalidPeer {
            peer: self.addr,
            reason,
        };
        if let Some(pw) = &self.password {
            if pw.len() > crate::tcp_md5::MAX_KEY_LEN {
                return Err(invalid(format!(
                    "the TCP MD5 password is {} bytes; at most {} are allowed",
                    pw.len(),
                    crate::tcp_md5::MAX_KEY_LEN
                )));
            }
        }
        match self.ttl {
            TtlMode::Multihop(0) => Err(invalid("multihop 0: at least 1 hop".into())),
            TtlMode::Security { hops: 0 } => {
                Err(invalid("ttl security with 0 hops: at least 1".into()))
            }
            _ => Ok(()),
        }
    }
}
