//! Feeding a peer's FSM and carrying out what it asks for; connection collisions (RFC 4271
//! 6.8) and the graceful restart helper (RFC 4724 4.2).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use netgauze_bgp_pkt::BgpMessage;

use super::{EstablishedSession, Owner, Slot, TimerEvent, TimerKind};
use crate::conn::Task;
use crate::export::PeerExport;
use crate::fsm::{keep_locally_initiated, Down, Input, Output, State, Timer};
use crate::open::Negotiated;
use crate::rib::{PeerInfo, Source};
use crate::wire::{encode, Inbound};

impl Owner {
    /// Feeds `input` to the FSM of `peer`'s `slot` and executes its outputs.
    pub(super) fn drive(&mut self, peer: IpAddr, slot: Slot, input: Input) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let outputs = match slot {
            Slot::Main => p.fsm.process(input),
            Slot::Alt => match p.alt.as_mut() {
                Some((fsm, _)) => fsm.process(input),
                None => return,
            },
        };
        for o in outputs {
            self.execute(peer, slot, o);
        }
    }

    fn execute(&mut self, peer: IpAddr, slot: Slot, o: Output) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        match o {
            Output::Connect => {
                p.attempt += 1;
                p.connecting = Some(crate::conn::connect(
                    peer,
                    p.cfg.port,
                    p.cfg.local_addr,
                    p.cfg.socket_opts(self.cfg.asn),
                    p.attempt,
                    Duration::from_secs(5),
                    self.io_tx.clone(),
                ));
            }
            // Dropping a connection lets its writer flush what was queued, then closes it. The
            // Alt connection goes with the Down that always follows.
            Output::Disconnect => {
                if slot == Slot::Main {
                    p.conn = None;
                    p.connecting = None;
                }
            }
            Output::Send(msg) => {
                let conn = match slot {
                    Slot::Main => p.conn.as_ref(),
                    Slot::Alt => p.alt.as_ref().map(|(_, c)| c),
                };
                match (conn, encode(&msg)) {
                    (Some(c), Ok(bytes)) => c.send(bytes),
                    (_, Err(e)) => tracing::error!(%peer, error = %e, "cannot encode a message"),
                    (None, _) => {}
                }
            }
            Output::StartTimer(t, d) => {
                let generation = p.timers.get(&(slot, t)).map_or(0, |(g, _)| g + 1);
                let tx = self.timer_tx.clone();
                let task = Task(tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(TimerEvent {
                        peer,
                        slot,
                        kind: TimerKind::Fsm(t),
                        generation,
                    });
                }));
                p.timers.insert((slot, t), (generation, task));
            }
            Output::StopTimer(t) => {
                p.timers.remove(&(slot, t));
            }
            Output::OpenReceived(_) => self.resolve_collision(peer),
            Output::Established(n) => self.established(peer, slot, n),
            Output::Down(d) => self.down(peer, slot, d),
            Output::Update(u, handling) => {
                let u = Inbound {
                    message: BgpMessage::Update(u),
                    handling,
                };
                self.update_received(peer, u);
            }
            Output::RouteRefresh(r) => {
                if let Some(f) = crate::family::Family::from_address_type(r.address_type()) {
                    self.resend_family(peer, f);
                }
            }
        }
    }

    /// The FSM input for a decoded message.
    pub(super) fn message_input(m: Inbound) -> Input {
        match m.message {
            BgpMessage::Open(o) => Input::Open(o),
            BgpMessage::KeepAlive => Input::Keepalive,
            BgpMessage::Notification(n) => Input::Notification(n),
            BgpMessage::RouteRefresh(r) => Input::RouteRefresh(r),
            BgpMessage::Update(u) => Input::Update(u, m.handling),
        }
    }

    /// RFC 4271 6.8: with two connections to one peer, once both OPENs are in, the one
    /// initiated by the higher BGP identifier survives.
    fn resolve_collision(&mut self, peer: IpAddr) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let Some((alt_fsm, alt_conn)) = p.alt.as_ref() else {
            return;
        };
        let main_open = matches!(p.fsm.state(), State::OpenConfirm | State::Established);
        let alt_open = alt_fsm.state() == State::OpenConfirm;
        if p.fsm.state() == State::Established {
            // Collision with an established session: the new connection goes.
            self.drive(peer, Slot::Alt, Input::OpenCollisionDump);
            self.drop_alt(peer);
            return;
        }
        if !(main_open && alt_open) {
            return;
        }
        let Some(n) = alt_fsm.negotiated() else {
            return;
        };
        let keep_local =
            keep_locally_initiated(self.cfg.router_id, self.cfg.asn, n.peer_id, n.peer_asn);
        let main_local = p.conn.as_ref().is_some_and(|c| c.locally_initiated);
        let alt_local = alt_conn.locally_initiated;
        if main_local == keep_local || alt_local != keep_local {
            self.drive(peer, Slot::Alt, Input::OpenCollisionDump);
            self.drop_alt(peer);
        } else {
            self.drive(peer, Slot::Main, Input::OpenCollisionDump);
            self.promote_alt(peer);
        }
    }

    fn drop_alt(&mut self, peer: IpAddr) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.alt = None;
            p.timers.retain(|(s, _), _| *s != Slot::Alt);
        }
    }

    /// The Alt connection won: it becomes the peer's session. Its timers are re-armed under
    /// Main (their tasks report the slot they were started for).
    fn promote_alt(&mut self, peer: IpAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some((fsm, conn)) = p.alt.take() else {
            return;
        };
        p.fsm = fsm;
        p.conn = Some(conn);
        p.connecting = None;
        p.timers.clear();
        let (hold, keepalive) = p
            .fsm
            .negotiated()
            .map_or((240, 0), |n| (n.hold_time, n.keepalive));
        let rearm: Vec<_> = [(Timer::Hold, hold), (Timer::Keepalive, keepalive)]
            .into_iter()
            .filter(|(t, secs)| p.fsm.timer_running(*t) && *secs > 0)
            .collect();
        for (t, secs) in rearm {
            let d = Duration::from_secs(u64::from(secs));
            self.execute(peer, Slot::Main, Output::StartTimer(t, d));
        }
    }

    fn established(&mut self, peer: IpAddr, slot: Slot, n: Negotiated) {
        if slot == Slot::Alt {
            // Only reachable when Main already went away; the Alt becomes the session.
            self.promote_alt(peer);
        }
        if self.peers.get(&peer).is_some_and(|p| p.alt.is_some()) {
            self.drive(peer, Slot::Alt, Input::OpenCollisionDump);
            self.drop_alt(peer);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let local = p.conn.as_ref().map(|c| c.local.ip());
        let ibgp = n.peer_asn == self.cfg.asn;
        let export = PeerExport {
            addr: peer,
            ibgp,
            rr_client: p.cfg.rr_client,
            next_hop_mode: p.cfg.next_hop_mode,
            next_hop_v4: match local {
                Some(IpAddr::V4(a)) => Some(a),
                _ => self.cfg.next_hop_v4,
            },
            next_hop_v6: match local {
                Some(IpAddr::V6(a)) if !a.is_unicast_link_local() => Some(a),
                _ => self.cfg.next_hop_v6,
            },
        };
        let info = PeerInfo {
            addr: peer,
            router_id: n.peer_id,
            ibgp,
            rr_client: p.cfg.rr_client,
        };
        tracing::info!(%peer, asn = n.peer_asn, hold = n.hold_time, "BGP session established");
        p.since = SystemTime::now();
        p.last_error = None;
        // RFC 4724 4.2: families the restarted peer did not preserve lose their stale routes now.
        let unpreserved: Vec<_> = crate::family::Family::ALL
            .into_iter()
            .filter(|f| {
                n.peer_graceful_restart
                    .as_ref()
                    .is_none_or(|g| g.families.get(f) != Some(&true))
                    || !n.families.contains(f)
            })
            .collect();
        p.session = Some(EstablishedSession {
            negotiated: n.clone(),
            info,
            export,
            end_of_rib: Default::default(),
        });
        for f in unpreserved {
            self.sweep_stale(peer, Some(f));
        }
        for f in n.families.iter().copied() {
            self.resend_family(peer, f);
        }
    }

    fn down(&mut self, peer: IpAddr, slot: Slot, d: Down) {
        if slot == Slot::Alt {
            self.drop_alt(peer);
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.since = SystemTime::now();
        if !d.reason.is_empty() && d.reason != "stopped by the operator" {
            p.last_error = Some(d.reason.clone());
        }
        let session = p.session.take();
        p.adj_out.clear();
        let Some(session) = session else {
            return;
        };
        tracing::info!(%peer, reason = %d.reason, "BGP session down");
        let restart_time = session
            .negotiated
            .peer_graceful_restart
            .as_ref()
            .map(|g| g.restart_time)
            .filter(|t| *t > 0);
        match restart_time {
            Some(secs) if d.is_graceful_candidate() => {
                let n = self.rib.mark_stale(Source::Peer(peer));
                tracing::info!(%peer, routes = n, restart_time = secs, "peer restarting: keeping its routes as stale");
                self.arm_stale_timer(peer, Duration::from_secs(u64::from(secs)));
            }
            _ => {
                let changes = self.rib.remove_source(Source::Peer(peer));
                self.pending.extend(changes);
            }
        }
        // A waiting collision connection takes over.
        if self.peers.get(&peer).is_some_and(|p| p.alt.is_some()) {
            self.promote_alt(peer);
        }
    }

    /// RFC 4724 4.2: stale routes go when the restart (then stale-path) timer runs out.
    pub(super) fn arm_stale_timer(&mut self, peer: IpAddr, d: Duration) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.stale_generation += 1;
        let generation = p.stale_generation;
        let tx = self.timer_tx.clone();
        p.stale_timer = Some(Task(tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = tx.send(TimerEvent {
                peer,
                slot: Slot::Main,
                kind: TimerKind::StaleRoutes,
                generation,
            });
        })));
    }
}
