//! RFC 4271 section 8.2.2, state by state: each test names the event numbers it covers.

use std::collections::BTreeSet;

use netgauze_bgp_pkt::notification::UpdateMessageError;

use super::*;
use crate::family::Family;
use crate::open::OpenConfig;

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config() -> FsmConfig {
    FsmConfig::new(OpenConfig {
        local_asn: 64512,
        router_id: LOCAL_ID,
        peer_asn: 64512,
        hold_time: 90,
        keepalive: None,
        families: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
        graceful_restart: None,
    })
}

fn peer_open(hold: u16) -> BgpOpenMessage {
    OpenConfig {
        local_asn: 64512,
        router_id: PEER_ID,
        peer_asn: 64512,
        hold_time: hold,
        keepalive: None,
        families: BTreeSet::from([Family::Ipv4Unicast]),
        graceful_restart: None,
    }
    .message()
}

fn our_open() -> Output {
    Output::Send(BgpMessage::Open(config().open.message()))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An FSM driven to `state` along the normal active path.
fn fsm_in(state: State) -> Fsm {
    let mut f = Fsm::new(config());
    let path: &[Input] = match state {
        State::Idle => &[],
        State::Connect => &[Input::ManualStart],
        State::Active => &[Input::ManualStart, Input::TcpFailed],
        State::OpenSent => &[
            Input::ManualStart,
            Input::TcpConnected {
                locally_initiated: true,
            },
        ],
        State::OpenConfirm | State::Established => &[
            Input::ManualStart,
            Input::TcpConnected {
                locally_initiated: true,
            },
            Input::Open(peer_open(30)),
        ],
    };
    for i in path {
        f.process(i.clone());
    }
    if state == State::Active {
        // Connect -> Idle on TcpConnectionFails; reach Active passively instead.
        let mut cfg = config();
        cfg.passive = true;
        f = Fsm::new(cfg);
        f.process(Input::ManualStart);
    }
    if state == State::Established {
        f.process(Input::Keepalive);
    }
    assert_eq!(f.state(), state, "fixture did not reach {state:?}");
    f
}

fn sent_notification(out: &[Output]) -> Option<&BgpNotificationMessage> {
    out.iter().find_map(|o| match o {
        Output::Send(BgpMessage::Notification(n)) => Some(n),
        _ => None,
    })
}

fn down(out: &[Output]) -> &Down {
    out.iter()
        .find_map(|o| match o {
            Output::Down(d) => Some(d),
            _ => None,
        })
        .expect("a Down output")
}

/// Leaving for Idle: NOTIFICATION (if any) before the disconnect, every timer stopped.
fn assert_went_idle(f: &Fsm, out: &[Output]) {
    assert_eq!(f.state(), State::Idle, "{out:?}");
    let disc = out.iter().position(|o| *o == Output::Disconnect);
    assert!(disc.is_some(), "no Disconnect in {out:?}");
    if let Some(n) = out
        .iter()
        .position(|o| matches!(o, Output::Send(BgpMessage::Notification(_))))
    {
        assert!(
            n < disc.unwrap(),
            "NOTIFICATION must go out before the disconnect"
        );
    }
    for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
        assert!(!f.timer_running(t), "{t:?} still running");
    }
    assert!(f.negotiated().is_none());
}

#[test]
fn idle_manual_start_connects_and_arms_connect_retry() {
    // Event 1.
    let mut f = Fsm::new(config());
    let out = f.process(Input::ManualStart);
    assert_eq!(
        out,
        vec![
            Output::StartTimer(Timer::ConnectRetry, secs(5)),
            Output::Connect
        ]
    );
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn idle_passive_start_waits_in_active_without_connecting() {
    // Event 4.
    let mut cfg = config();
    cfg.passive = true;
    let mut f = Fsm::new(cfg);
    assert_eq!(f.process(Input::ManualStart), vec![]);
    assert_eq!(f.state(), State::Active);
}

#[test]
fn idle_ignores_everything_but_start_and_refuses_inbound_tcp() {
    let mut f = Fsm::new(config());
    for i in [
        Input::ManualStop,
        Input::TcpFailed,
        Input::Keepalive,
        Input::TimerExpired(Timer::ConnectRetry),
        Input::Open(peer_open(90)),
    ] {
        assert_eq!(f.process(i), vec![]);
        assert_eq!(f.state(), State::Idle);
    }
    assert_eq!(
        f.process(Input::TcpConnected {
            locally_initiated: false
        }),
        vec![Output::Disconnect]
    );
}

#[test]
fn connect_retry_expiry_in_connect_retries_the_connection() {
    // Event 9 in Connect.
    let mut f = fsm_in(State::Connect);
    let out = f.process(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(
        out,
        vec![
            Output::Disconnect,
            Output::StartTimer(Timer::ConnectRetry, secs(5)),
            Output::Connect
        ]
    );
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn tcp_established_in_connect_or_active_sends_open_and_arms_the_large_hold_timer() {
    // Events 16 and 17 in Connect and Active.
    for state in [State::Connect, State::Active] {
        for locally_initiated in [true, false] {
            let mut f = fsm_in(state);
            let out = f.process(Input::TcpConnected { locally_initiated });
            assert!(out.contains(&our_open()), "{out:?}");
            assert!(out.contains(&Output::StartTimer(Timer::Hold, secs(240))));
            assert!(!f.timer_running(Timer::ConnectRetry));
            assert_eq!(f.state(), State::OpenSent);
        }
    }
}

#[test]
fn tcp_failure_in_connect_goes_idle_and_schedules_a_restart() {
    // Event 18 in Connect (no DelayOpenTimer).
    let mut f = fsm_in(State::Connect);
    let out = f.process(Input::TcpFailed);
    assert_went_idle(&f, &out);
    assert!(out.contains(&Output::StartTimer(Timer::IdleHold, secs(5))));
    assert_eq!(f.connect_retry_counter(), 1);
    // Event 3 after the IdleHoldTimer: connect again.
    let out = f.process(Input::TimerExpired(Timer::IdleHold));
    assert!(out.contains(&Output::Connect));
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn consecutive_failures_double_the_idle_hold_up_to_its_max() {
    let mut f = fsm_in(State::Connect);
    let mut waits = vec![];
    for _ in 0..5 {
        let out = f.process(Input::TcpFailed);
        waits.extend(out.iter().filter_map(|o| match o {
            Output::StartTimer(Timer::IdleHold, d) => Some(d.as_secs()),
            _ => None,
        }));
        f.process(Input::TimerExpired(Timer::IdleHold));
    }
    assert_eq!(waits, vec![5, 10, 20, 30, 30]);
}

#[test]
fn connect_retry_expiry_in_active_initiates_a_connection() {
    // Event 9 in Active: restart the timer, connect, move to Connect.
    let mut f = fsm_in(State::OpenSent);
    f.process(Input::TcpFailed);
    assert_eq!(f.state(), State::Active);
    let out = f.process(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(
        out,
        vec![
            Output::StartTimer(Timer::ConnectRetry, secs(5)),
            Output::Connect
        ]
    );
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn tcp_failure_in_active_goes_idle() {
    let mut f = fsm_in(State::Active);
    let out = f.process(Input::TcpFailed);
    assert_went_idle(&f, &out);
    assert_eq!(f.connect_retry_counter(), 1);
}

#[test]
fn manual_stop_before_open_goes_idle_without_notification_and_stays_there() {
    // Event 2 in Connect and Active.
    for state in [State::Connect, State::Active] {
        let mut f = fsm_in(state);
        let out = f.process(Input::ManualStop);
        assert_went_idle(&f, &out);
        assert_eq!(sent_notification(&out), None);
        assert!(!f.timer_running(Timer::IdleHold), "no automatic restart");
        assert_eq!(f.connect_retry_counter(), 0);
    }
}

#[test]
fn other_events_in_connect_and_active_go_idle() {
    // Events 8, 10-11, 13, 19, 23, 25-28 in Connect and Active.
    for state in [State::Connect, State::Active] {
        for i in [
            Input::Keepalive,
            Input::Open(peer_open(90)),
            Input::OpenCollisionDump,
            Input::AutomaticStop(CeaseError::PeerDeConfigured {
                value: vec![].into(),
            }),
        ] {
            let mut f = fsm_in(state);
            let out = f.process(i);
            assert_went_idle(&f, &out);
            assert_eq!(f.connect_retry_counter(), 1);
        }
    }
}

#[test]
fn open_in_open_sent_sends_keepalive_and_arms_negotiated_timers() {
    // Event 19 in OpenSent: hold = min(90, 30), keepalive = hold / 3.
    let mut f = fsm_in(State::OpenSent);
    let out = f.process(Input::Open(peer_open(30)));
    assert_eq!(out[0], Output::Send(BgpMessage::KeepAlive));
    assert!(out.contains(&Output::StartTimer(Timer::Hold, secs(30))));
    assert!(out.contains(&Output::StartTimer(Timer::Keepalive, secs(10))));
    assert!(matches!(out.last(), Some(Output::OpenReceived(n)) if n.peer_id == PEER_ID));
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn zero_hold_time_arms_neither_hold_nor_keepalive() {
    let mut f = fsm_in(State::OpenSent);
    let out = f.process(Input::Open(peer_open(0)));
    assert!(out.contains(&Output::StopTimer(Timer::Hold)));
    assert!(!f.timer_running(Timer::Hold) && !f.timer_running(Timer::Keepalive));
    f.process(Input::Keepalive);
    assert_eq!(f.state(), State::Established);
    assert!(!f.timer_running(Timer::Hold));
}

#[test]
fn bad_open_in_open_sent_sends_the_open_error() {
    // Event 22 in OpenSent.
    let mut f = fsm_in(State::OpenSent);
    let wrong_as = OpenConfig {
        local_asn: 65000,
        router_id: PEER_ID,
        peer_asn: 0,
        hold_time: 90,
        keepalive: None,
        families: BTreeSet::from([Family::Ipv4Unicast]),
        graceful_restart: None,
    }
    .message();
    let out = f.process(Input::Open(wrong_as));
    assert_went_idle(&f, &out);
    assert!(matches!(
        sent_notification(&out),
        Some(BgpNotificationMessage::OpenMessageError(
            OpenMessageError::BadPeerAs { .. }
        ))
    ));
    assert_eq!(f.connect_retry_counter(), 1);
}

#[test]
fn hold_timer_expiry_sends_hold_timer_expired_in_every_open_state() {
    // Event 10 in OpenSent, OpenConfirm and Established.
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut f = fsm_in(state);
        let out = f.process(Input::TimerExpired(Timer::Hold));
        assert_went_idle(&f, &out);
        assert!(matches!(
            sent_notification(&out),
            Some(BgpNotificationMessage::HoldTimerExpiredError(_))
        ));
        assert_eq!(down(&out).was_established, state == State::Established);
    }
}

#[test]
fn manual_stop_after_open_sends_cease_administrative_shutdown() {
    // Event 2 in OpenSent, OpenConfirm and Established.
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut f = fsm_in(state);
        let out = f.process(Input::ManualStop);
        assert_went_idle(&f, &out);
        assert_eq!(sent_notification(&out), Some(&cease_admin_shutdown()));
        assert!(!f.timer_running(Timer::IdleHold));
        assert_eq!(f.connect_retry_counter(), 0);
    }
}

#[test]
fn automatic_stop_sends_the_given_cease() {
    // Event 8.
    let mut f = fsm_in(State::Established);
    let c = CeaseError::MaximumNumberOfPrefixesReached {
        value: vec![].into(),
    };
    let out = f.process(Input::AutomaticStop(c.clone()));
    assert_eq!(
        sent_notification(&out),
        Some(&BgpNotificationMessage::CeaseError(c))
    );
    assert!(f.timer_running(Timer::IdleHold), "restarts automatically");
}

#[test]
fn tcp_failure_in_open_sent_falls_back_to_active() {
    // Event 18 in OpenSent: close, restart ConnectRetryTimer, listen in Active.
    let mut f = fsm_in(State::OpenSent);
    let out = f.process(Input::TcpFailed);
    assert_eq!(
        out,
        vec![
            Output::Disconnect,
            Output::StopTimer(Timer::Hold),
            Output::StartTimer(Timer::ConnectRetry, secs(5))
        ]
    );
    assert_eq!(f.state(), State::Active);
}

#[test]
fn collision_dump_sends_cease_connection_collision() {
    // Event 23 in OpenSent and OpenConfirm.
    for state in [State::OpenSent, State::OpenConfirm] {
        let mut f = fsm_in(state);
        let out = f.process(Input::OpenCollisionDump);
        assert_went_idle(&f, &out);
        assert!(matches!(
            sent_notification(&out),
            Some(BgpNotificationMessage::CeaseError(
                CeaseError::ConnectionCollisionResolution { .. }
            ))
        ));
    }
}

#[test]
fn unexpected_messages_get_the_rfc_6608_subcode_of_the_state() {
    // "Any other event" in OpenSent, OpenConfirm and Established.
    let cases = [
        (
            State::OpenSent,
            Input::Keepalive,
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState {
                value: vec![].into(),
            },
        ),
        (
            State::OpenSent,
            Input::Update(
                BgpUpdateMessage::new(vec![], vec![], vec![]),
                Handling::Normal,
            ),
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState {
                value: vec![].into(),
            },
        ),
        (
            State::OpenConfirm,
            Input::Update(
                BgpUpdateMessage::new(vec![], vec![], vec![]),
                Handling::Normal,
            ),
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState {
                value: vec![].into(),
            },
        ),
        (
            State::OpenConfirm,
            Input::Open(peer_open(90)),
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState {
                value: vec![].into(),
            },
        ),
        (
            State::Established,
            Input::Open(peer_open(90)),
            FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState {
                value: vec![].into(),
            },
        ),
        (
            State::Established,
            Input::OpenCollisionDump,
            FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState {
                value: vec![].into(),
            },
        ),
    ];
    for (state, input, expected) in cases {
        let mut f = fsm_in(state);
        let out = f.process(input.clone());
        assert_went_idle(&f, &out);
        assert_eq!(
            sent_notification(&out),
            Some(&BgpNotificationMessage::FiniteStateMachineError(expected)),
            "{input:?} in {state:?}"
        );
        assert_eq!(f.connect_retry_counter(), 1);
    }
}

#[test]
fn notification_received_closes_without_answering() {
    // Event 25 in OpenSent, OpenConfirm, Established; event 24 does not count a failure.
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut f = fsm_in(state);
        let n = cease_admin_shutdown();
        let out = f.process(Input::Notification(n.clone()));
        assert_went_idle(&f, &out);
        assert_eq!(sent_notification(&out), None);
        assert_eq!(down(&out).received, Some(n));
        assert_eq!(f.connect_retry_counter(), 1);
    }
    let mut f = fsm_in(State::OpenSent);
    f.process(Input::Notification(
        BgpNotificationMessage::OpenMessageError(OpenMessageError::UnsupportedVersionNumber {
            value: vec![0, 4].into(),
        }),
    ));
    assert_eq!(f.connect_retry_counter(), 0);
}

#[test]
fn decode_errors_send_the_notification_section_6_prescribes() {
    // Events 21, 22 and 28.
    let n =
        BgpNotificationMessage::UpdateMessageError(UpdateMessageError::MalformedAttributeList {
            value: vec![].into(),
        });
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut f = fsm_in(state);
        let out = f.process(Input::DecodeError(n.clone()));
        assert_went_idle(&f, &out);
        assert_eq!(sent_notification(&out), Some(&n));
    }
}

#[test]
fn keepalive_timer_sends_keepalives_in_open_confirm_and_established() {
    // Event 11.
    for state in [State::OpenConfirm, State::Established] {
        let mut f = fsm_in(state);
        let out = f.process(Input::TimerExpired(Timer::Keepalive));
        assert_eq!(
            out,
            vec![
                Output::Send(BgpMessage::KeepAlive),
                Output::StartTimer(Timer::Keepalive, secs(10))
            ]
        );
        assert_eq!(f.state(), state);
    }
}

#[test]
fn keepalive_in_open_confirm_establishes_the_session() {
    // Event 26 in OpenConfirm.
    let mut f = fsm_in(State::OpenConfirm);
    let out = f.process(Input::Keepalive);
    assert_eq!(out[0], Output::StartTimer(Timer::Hold, secs(30)));
    assert!(matches!(&out[1], Output::Established(n) if n.hold_time == 30));
    assert_eq!(f.state(), State::Established);
}

#[test]
fn established_keepalive_and_update_restart_the_hold_timer() {
    // Events 26 and 27 in Established.
    let mut f = fsm_in(State::Established);
    assert_eq!(
        f.process(Input::Keepalive),
        vec![Output::StartTimer(Timer::Hold, secs(30))]
    );
    let u = BgpUpdateMessage::new(vec![], vec![], vec![]);
    assert_eq!(
        f.process(Input::Update(u.clone(), Handling::Normal)),
        vec![
            Output::StartTimer(Timer::Hold, secs(30)),
            Output::Update(u, Handling::Normal)
        ]
    );
}

#[test]
fn sending_an_update_restarts_the_keepalive_timer() {
    let mut f = fsm_in(State::Established);
    assert_eq!(
        f.process(Input::UpdateSent),
        vec![Output::StartTimer(Timer::Keepalive, secs(10))]
    );
    // Before Established it means nothing.
    let mut f = fsm_in(State::OpenConfirm);
    assert_eq!(f.process(Input::UpdateSent), vec![]);
}

#[test]
fn tcp_failure_after_establishment_is_a_graceful_restart_candidate() {
    let mut f = fsm_in(State::Established);
    let out = f.process(Input::TcpFailed);
    assert_went_idle(&f, &out);
    assert!(down(&out).is_graceful_candidate());
    // A NOTIFICATION either way is not (RFC 4724 4.2).
    let mut f = fsm_in(State::Established);
    let out = f.process(Input::TimerExpired(Timer::Hold));
    assert!(!down(&out).is_graceful_candidate());
}

#[test]
fn stale_timer_expiries_are_ignored() {
    let mut f = fsm_in(State::Established);
    // ConnectRetry was stopped on the way; its late expiry must not reset the session.
    assert_eq!(f.process(Input::TimerExpired(Timer::ConnectRetry)), vec![]);
    assert_eq!(f.state(), State::Established);
}

#[test]
fn second_start_and_connections_after_open_sent_are_ignored() {
    let mut f = fsm_in(State::Connect);
    assert_eq!(f.process(Input::ManualStart), vec![]);
    let mut f = fsm_in(State::Established);
    assert_eq!(
        f.process(Input::TcpConnected {
            locally_initiated: false
        }),
        vec![]
    );
    assert_eq!(f.state(), State::Established);
}

#[test]
fn route_refresh_is_passed_up_in_established() {
    use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
    use netgauze_iana::address_family::AddressType;
    let r =
        BgpRouteRefreshMessage::new(AddressType::Ipv4Unicast, RouteRefreshSubcode::NormalRequest);
    let mut f = fsm_in(State::Established);
    assert_eq!(
        f.process(Input::RouteRefresh(r.clone())),
        vec![Output::RouteRefresh(r)]
    );
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    // RFC 4271 6.8: compared as unsigned integers in host order.
    assert!(keep_locally_initiated(
        Ipv4Addr::new(10, 0, 0, 2),
        64512,
        Ipv4Addr::new(10, 0, 0, 1),
        64512
    ));
    assert!(!keep_locally_initiated(
        Ipv4Addr::new(9, 255, 255, 255),
        64512,
        Ipv4Addr::new(10, 0, 0, 1),
        64512
    ));
    // RFC 6286 3: equal identifiers (eBGP) fall back to the AS number.
    assert!(keep_locally_initiated(LOCAL_ID, 65002, LOCAL_ID, 65001));
    assert!(!keep_locally_initiated(LOCAL_ID, 65001, LOCAL_ID, 65002));
}
