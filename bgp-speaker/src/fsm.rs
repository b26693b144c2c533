//! The BGP session state machine of RFC 4271 section 8, sans-IO.
//!
//! One [`Fsm`] drives one TCP connection's worth of a session: [`Fsm::process`] takes an
//! [`Input`] (an RFC 4271 8.1 event) and returns the [`Output`]s the driver must carry out
//! (connect, send, start or stop a timer, hand an UPDATE to the RIB). It never touches a socket
//! or a clock. Connection collisions (6.8) involve two connections and are decided one level up
//! with [`keep_locally_initiated`]; the loser is fed [`Input::OpenCollisionDump`].
//!
//! Deviations from the letter of section 8, each on purpose:
//! - a NOTIFICATION received in OpenSent closes the session without answering it with an FSM
//!   error (RFC 4271 lists event 25 among "any other event" there; answering a peer that is
//!   already closing only adds noise, and BIRD and FRR behave the same way);
//! - a decoding error is answered with the NOTIFICATION section 6 prescribes for it (header,
//!   OPEN or UPDATE error) in every state that has a connection, rather than with the generic
//!   FSM error that section 8 lists for events 21 and 22 in Established;
//! - after any failure the FSM restarts itself (AutomaticStart, event 3) once the IdleHoldTimer
//!   expires, the timer doubling with each consecutive failure (DampPeerOscillations, 8.1.1);
//!   only ManualStop leaves it Idle for good.

use std::net::Ipv4Addr;
use std::time::Duration;

use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
    OpenMessageError,
};
use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;

use crate::open::{Negotiated, OpenConfig};
use crate::revised_errors::Handling;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// Waits before an automatic restart after a failure (8.1.1 IdleHoldTime).
    IdleHold,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// RFC 4271 8.1 events, grouped the way a driver produces them.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Events 1 and 4: start, actively or passively as configured.
    ManualStart,
    /// Event 2.
    ManualStop,
    /// Event 8: the speaker ends the session itself (peer deconfigured, too many prefixes...);
    /// the Cease subcode to send.
    AutomaticStop(CeaseError),
    /// Events 9, 10, 11 and 13.
    TimerExpired(Timer),
    /// Events 16 (Tcp_CR_Acked, we connected) and 17 (TcpConnectionConfirmed, the peer did).
    TcpConnected { locally_initiated: bool },
    /// Event 18.
    TcpFailed,
    /// Event 19; an OPEN that fails the checks of 6.2 becomes event 22 inside the FSM.
    Open(BgpOpenMessage),
    /// Events 21, 22 and 28 as the decoder saw them: the NOTIFICATION section 6 prescribes.
    DecodeError(BgpNotificationMessage),
    /// Event 23.
    OpenCollisionDump,
    /// Events 24 and 25.
    Notification(BgpNotificationMessage),
    /// Event 26.
    Keepalive,
    /// Event 27, with the RFC 7606 handling the decoder chose (passed through untouched).
    Update(BgpUpdateMessage, Handling),
    /// RFC 2918.
    RouteRefresh(BgpRouteRefreshMessage),
    /// We sent an UPDATE: it restarts the KeepaliveTimer (4.4).
    UpdateSent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Initiate a TCP connection to the peer.
    Connect,
    /// Drop this session's TCP connection (or abandon the connection attempt).
    Disconnect,
    Send(BgpMessage),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// A valid OPEN arrived (OpenSent -> OpenConfirm); collision detection runs on this.
    OpenReceived(Negotiated),
    Established(Negotiated),
    /// The session (or the attempt at one) ended; the FSM is Idle.
    Down(Down),
    Update(BgpUpdateMessage, Handling),
    RouteRefresh(BgpRouteRefreshMessage),
}

/// How a session or an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Down {
    pub was_established: bool,
    pub sent: Option<BgpNotificationMessage>,
    pub received: Option<BgpNotificationMessage>,
    pub reason: String,
}

impl Down {
    /// RFC 4724 4.2: a helper keeps the peer's routes only when the session ended without a
    /// NOTIFICATION either way (a TCP failure: the peer's process died or restarted).
    pub fn is_graceful_candidate(&self) -> bool {
        self.was_established && self.sent.is_none() && self.received.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    pub open: OpenConfig,
    /// Never initiate connections; wait for the peer (event 4/5 behaviour).
    pub passive: bool,
    pub connect_retry: Duration,
    /// First IdleHoldTimer after a failure; doubles per consecutive failure up to the max.
    pub idle_hold: Duration,
    pub idle_hold_max: Duration,
    /// The hold timer while waiting for the peer's OPEN (8.2.2 suggests 4 minutes).
    pub open_hold: Duration,
}

impl FsmConfig {
    /// Timers as Calico's BIRD configuration sets them: connect retry 5 s, error wait 5-30 s.
    pub fn new(open: OpenConfig) -> Self {
        FsmConfig {
            open,
            passive: false,
            connect_retry: Duration::from_secs(5),
            idle_hold: Duration::from_secs(5),
            idle_hold_max: Duration::from_secs(30),
            open_hold: Duration::from_secs(240),
        }
    }
}

#[derive(Debug)]
pub struct Fsm {
    config: FsmConfig,
    state: State,
    /// 8.1: ConnectRetryCounter, consecutive failures; scales the IdleHoldTimer.
    connect_retry_counter: u32,
    running: u8,
    negotiated: Option<Negotiated>,
    /// ManualStop was the last command: do not restart automatically.
    stopped: bool,
}

impl Fsm {
    pub fn new(config: FsmConfig) -> Self {
        Fsm {
            config,
            state: State::Idle,
            connect_retry_counter: 0,
            running: 0,
            negotiated: None,
            stopped: true,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// What the current (OpenConfirm or Established) session agreed on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    pub fn timer_running(&self, t: Timer) -> bool {
        self.running & t.bit() != 0
    }

    pub fn process(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        // A timer the FSM stopped can still fire in the driver: ignore it.
        if let Input::TimerExpired(t) = input {
            if !self.timer_running(t) {
                return out;
            }
            self.running &= !t.bit();
        }
        // Events 1 and 3-7 are ignored outside Idle (8.2.2); a second connection in OpenSent or
        // later is a collision, handled above this FSM; UpdateSent matters only once Established.
        let ignored = match &input {
            Input::ManualStart => self.state != State::Idle,
            Input::TcpConnected { .. } => self.state >= State::OpenSent,
            Input::UpdateSent => self.state != State::Established,
            _ => false,
        };
        if ignored {
            if input == Input::ManualStart {
                self.stopped = false;
            }
            return out;
        }
        match self.state {
            State::Idle => self.idle(input, &mut out),
            State::Connect => self.connect(input, &mut out),
            State::Active => self.active(input, &mut out),
            State::OpenSent => self.open_sent(input, &mut out),
            State::OpenConfirm => self.open_confirm(input, &mut out),
            State::Established => self.established(input, &mut out),
        }
        out
    }

    // RFC 4271 8.2.2, Idle state.
    fn idle(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart => {
                self.stopped = false;
                self.connect_retry_counter = 0;
                self.start(out);
            }
            // Event 3 after the IdleHoldTimer (8.1.1 DampPeerOscillations).
            Input::TimerExpired(Timer::IdleHold) if !self.stopped => self.start(out),
            // An inbound connection while Idle is not ours to take (event 15).
            Input::TcpConnected { .. } => out.push(Output::Disconnect),
            _ => {}
        }
    }

    fn start(&mut self, out: &mut Vec<Output>) {
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.start_timer(Timer::ConnectRetry, self.config.connect_retry, out);
            out.push(Output::Connect);
            self.state = State::Connect;
        }
    }

    // RFC 4271 8.2.2, Connect state.
    fn connect(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop => self.manual_stop(None, out),
            Input::TimerExpired(Timer::ConnectRetry) => {
                out.push(Output::Disconnect);
                self.start_timer(Timer::ConnectRetry, self.config.connect_retry, out);
                out.push(Output::Connect);
            }
            Input::TcpConnected { .. } => self.send_open(out),
            Input::TcpFailed => self.fail(None, None, "TCP connection failed", out),
            other => self.fail(None, None, &unexpected(&other, "Connect"), out),
        }
    }

    // RFC 4271 8.2.2, Active state.
    fn active(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop => self.manual_stop(None, out),
            Input::TimerExpired(Timer::ConnectRetry) => {
                self.start_timer(Timer::ConnectRetry, self.config.connect_retry, out);
                out.push(Output::Connect);
                self.state = State::Connect;
            }
            Input::TcpConnected { .. } => self.send_open(out),
            Input::TcpFailed => self.fail(None, None, "TCP connection failed", out),
            other => self.fail(None, None, &unexpected(&other, "Active"), out),
        }
    }

    fn send_open(&mut self, out: &mut Vec<Output>) {
        self.stop_timer(Timer::ConnectRetry, out);
        out.push(Output::Send(BgpMessage::Open(self.config.open.message())));
        self.start_timer(Timer::Hold, self.config.open_hold, out);
        self.state = State::OpenSent;
    }

    // RFC 4271 8.2.2, OpenSent state.
    fn open_sent(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop => self.manual_stop(Some(cease_admin_shutdown()), out),
            Input::AutomaticStop(c) => self.automatic_stop(c, out),
            Input::TimerExpired(Timer::Hold) => self.hold_expired(out),
            // 8.2.2: back to Active, listening, ConnectRetryTimer restarted.
            Input::TcpFailed => {
                out.push(Output::Disconnect);
                self.stop_timer(Timer::Hold, out);
                self.start_timer(Timer::ConnectRetry, self.config.connect_retry, out);
                self.state = State::Active;
            }
            Input::Open(open) => match self.config.open.negotiate(&open) {
                Ok(n) => {
                    self.stop_timer(Timer::ConnectRetry, out);
                    out.push(Output::Send(BgpMessage::KeepAlive));
                    self.arm_session_timers(&n, out);
                    out.push(Output::OpenReceived(n.clone()));
                    self.negotiated = Some(n);
                    self.state = State::OpenConfirm;
                }
                // Event 22.
                Err(e) => self.fail(Some(e.notification), None, &e.reason, out),
            },
            Input::DecodeError(n) => self.fail(Some(n), None, "malformed message", out),
            Input::OpenCollisionDump => self.fail(
                Some(cease(CeaseError::ConnectionCollisionResolution {
                    value: vec![].into(),
                })),
                None,
                "connection collision: this connection lost",
                out,
            ),
            Input::Notification(n) => self.notification_received(n, out),
            other => self.fsm_error(
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState {
                    value: vec![].into(),
                },
                &unexpected(&other, "OpenSent"),
                out,
            ),
        }
    }

    // RFC 4271 8.2.2, OpenConfirm state.
    fn open_confirm(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop => self.manual_stop(Some(cease_admin_shutdown()), out),
            Input::AutomaticStop(c) => self.automatic_stop(c, out),
            Input::TimerExpired(Timer::Hold) => self.hold_expired(out),
            Input::TimerExpired(Timer::Keepalive) => self.send_keepalive(out),
            Input::TcpFailed => self.fail(None, None, "TCP connection failed", out),
            Input::Notification(n) => self.notification_received(n, out),
            Input::DecodeError(n) => self.fail(Some(n), None, "malformed message", out),
            Input::OpenCollisionDump => self.fail(
                Some(cease(CeaseError::ConnectionCollisionResolution {
                    value: vec![].into(),
                })),
                None,
                "connection collision: this connection lost",
                out,
            ),
            Input::Keepalive => {
                self.restart_hold(out);
                self.connect_retry_counter = 0;
                self.state = State::Established;
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            other => self.fsm_error(
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState {
                    value: vec![].into(),
                },
                &unexpected(&other, "OpenConfirm"),
                out,
            ),
        }
    }

    // RFC 4271 8.2.2, Established state.
    fn established(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop => self.manual_stop(Some(cease_admin_shutdown()), out),
            Input::AutomaticStop(c) => self.automatic_stop(c, out),
            Input::TimerExpired(Timer::Hold) => self.hold_expired(out),
            Input::TimerExpired(Timer::Keepalive) => self.send_keepalive(out),
            Input::UpdateSent => {
                if self.timer_running(Timer::Keepalive) {
                    self.restart_keepalive(out);
                }
            }
            Input::Keepalive => self.restart_hold(out),
            Input::Update(u, h) => {
                self.restart_hold(out);
                out.push(Output::Update(u, h));
            }
            Input::RouteRefresh(r) => out.push(Output::RouteRefresh(r)),
            Input::TcpFailed => self.fail(None, None, "TCP connection failed", out),
            Input::Notification(n) => self.notification_received(n, out),
            Input::DecodeError(n) => self.fail(Some(n), None, "malformed message", out),
            other => self.fsm_error(
                FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState {
                    value: vec![].into(),
                },
                &unexpected(&other, "Established"),
                out,
            ),
        }
    }

    fn arm_session_timers(&mut self, n: &Negotiated, out: &mut Vec<Output>) {
        if n.hold_time == 0 {
            // 8.2.2: a zero hold time starts neither timer.
            self.stop_timer(Timer::Hold, out);
        } else {
            self.start_timer(Timer::Hold, secs(n.hold_time), out);
            self.start_timer(Timer::Keepalive, secs(n.keepalive), out);
        }
    }

    fn restart_hold(&mut self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.hold_time != 0 {
                let d = secs(n.hold_time);
                self.start_timer(Timer::Hold, d, out);
            }
        }
    }

    fn restart_keepalive(&mut self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.keepalive != 0 {
                let d = secs(n.keepalive);
                self.start_timer(Timer::Keepalive, d, out);
            }
        }
    }

    fn send_keepalive(&mut self, out: &mut Vec<Output>) {
        out.push(Output::Send(BgpMessage::KeepAlive));
        self.restart_keepalive(out);
    }

    fn hold_expired(&mut self, out: &mut Vec<Output>) {
        let n = BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
            sub_code: 0,
            value: vec![].into(),
        });
        self.fail(Some(n), None, "hold timer expired", out);
    }

    fn automatic_stop(&mut self, c: CeaseError, out: &mut Vec<Output>) {
        self.fail(Some(cease(c)), None, "stopped by the speaker", out);
    }

    fn fsm_error(&mut self, e: FiniteStateMachineError, reason: &str, out: &mut Vec<Output>) {
        let n = BgpNotificationMessage::FiniteStateMachineError(e);
        self.fail(Some(n), None, reason, out);
    }

    fn notification_received(&mut self, n: BgpNotificationMessage, out: &mut Vec<Output>) {
        // Event 24 (a version mismatch) does not count as a failure of the peer (8.2.2).
        let version_error = matches!(
            n,
            BgpNotificationMessage::OpenMessageError(
                OpenMessageError::UnsupportedVersionNumber { .. }
            )
        );
        let reason = format!("NOTIFICATION received: {n:?}");
        self.leave(None, Some(n), &reason, out);
        if !version_error {
            self.connect_retry_counter += 1;
        }
        self.schedule_restart(out);
    }

    fn manual_stop(&mut self, sent: Option<BgpNotificationMessage>, out: &mut Vec<Output>) {
        self.leave(sent, None, "stopped by the operator", out);
        self.connect_retry_counter = 0;
        self.stopped = true;
    }

    /// A failure: leave for Idle, count it, and restart after the IdleHoldTimer.
    fn fail(
        &mut self,
        sent: Option<BgpNotificationMessage>,
        received: Option<BgpNotificationMessage>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        self.leave(sent, received, reason, out);
        self.connect_retry_counter += 1;
        self.schedule_restart(out);
    }

    fn leave(
        &mut self,
        sent: Option<BgpNotificationMessage>,
        received: Option<BgpNotificationMessage>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        if let Some(n) = &sent {
            out.push(Output::Send(BgpMessage::Notification(n.clone())));
        }
        out.push(Output::Disconnect);
        for t in Timer::ALL {
            self.stop_timer(t, out);
        }
        out.push(Output::Down(Down {
            was_established: self.state == State::Established,
            sent,
            received,
            reason: reason.to_string(),
        }));
        self.negotiated = None;
        self.state = State::Idle;
    }

    fn schedule_restart(&mut self, out: &mut Vec<Output>) {
        if self.stopped {
            return;
        }
        let exp = self.connect_retry_counter.saturating_sub(1).min(16);
        let wait = self
            .config
            .idle_hold
            .saturating_mul(1 << exp)
            .min(self.config.idle_hold_max);
        self.start_timer(Timer::IdleHold, wait, out);
    }

    fn start_timer(&mut self, t: Timer, d: Duration, out: &mut Vec<Output>) {
        self.running |= t.bit();
        out.push(Output::StartTimer(t, d));
    }

    fn stop_timer(&mut self, t: Timer, out: &mut Vec<Output>) {
        if self.timer_running(t) {
            self.running &= !t.bit();
            out.push(Output::StopTimer(t));
        }
    }
}

/// RFC 4271 6.8 with RFC 6286 3: which of two colliding connections survives. The one
/// initiated by the speaker with the higher BGP identifier (on a tie, possible on eBGP only,
/// the higher AS number) is kept.
pub fn keep_locally_initiated(
    local_id: Ipv4Addr,
    local_asn: u32,
    remote_id: Ipv4Addr,
    remote_asn: u32,
) -> bool {
    (u32::from(local_id), local_asn) > (u32::from(remote_id), remote_asn)
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn cease(c: CeaseError) -> BgpNotificationMessage {
    BgpNotificationMessage::CeaseError(c)
}

fn cease_admin_shutdown() -> BgpNotificationMessage {
    cease(CeaseError::AdministrativeShutdown {
        value: vec![].into(),
    })
}

fn unexpected(input: &Input, state: &str) -> String {
    let what = match input {
        Input::ManualStart => "ManualStart",
        Input::ManualStop => "ManualStop",
        Input::AutomaticStop(_) => "AutomaticStop",
        Input::TimerExpired(Timer::ConnectRetry) => "ConnectRetryTimer_Expires",
        Input::TimerExpired(Timer::Hold) => "HoldTimer_Expires",
        Input::TimerExpired(Timer::Keepalive) => "KeepaliveTimer_Expires",
        Input::TimerExpired(Timer::IdleHold) => "IdleHoldTimer_Expires",
        Input::TcpConnected { .. } => "TcpConnectionConfirmed",
        Input::TcpFailed => "TcpConnectionFails",
        Input::Open(_) => "BGPOpen",
        Input::DecodeError(_) => "message error",
        Input::OpenCollisionDump => "OpenCollisionDump",
        Input::Notification(_) => "NotifMsg",
        Input::Keepalive => "KeepAliveMsg",
        Input::Update(..) => "UpdateMsg",
        Input::RouteRefresh(_) => "ROUTE-REFRESH",
        Input::UpdateSent => "UPDATE sent",
    };
    format!("unexpected {what} in {state}")
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
