//! Unit tests of `connection.rs`.

use super::*;
use crate::fault::abort::Abort;
use crate::fault::blackhole::Blackhole;
use crate::fault::cut::Cut;
use crate::fault::delay::Delay;
use crate::fault::matching::Match;
use crate::fault::{ApplyTo, FaultKind};
use std::time::Duration;

const MS: u64 = 1_000_000;

fn rule(kind: FaultKind) -> Rule {
    Rule {
        name: "r".into(),
        enabled: true,
        matcher: Match::default(),
        percentage_bp: 10_000,
        apply_to: ApplyTo::All,
        window: None,
        dry_run: false,
        expires_at: None,
        sidecar_bp: 10_000,
        kind,
    }
}

fn conn() -> (Connection, Rc<Traffic>) {
    let traffic = Rc::new(Traffic::default());
    (Connection::new(7, 0, Rc::clone(&traffic)), traffic)
}

fn at(t: u64) -> impl FnMut() -> u64 {
    move || t
}

fn totals(t: &Traffic) -> (u64, u64, u64) {
    (t.tx.get(), t.rx.get(), t.dropped.get())
}

fn delay(latency: Duration, first_only: bool) -> FaultKind {
    FaultKind::Delay(Delay {
        latency,
        jitter: Duration::ZERO,
        first_only,
    })
}

#[test]
fn no_fault_forwards_and_counts() {
    let (mut c, t) = conn();
    assert_eq!(
        c.on_data(Direction::ToDatabase, 10, &mut at(0)),
        Outcome::FORWARD
    );
    assert_eq!(
        c.on_data(Direction::ToClient, 5, &mut at(0)),
        Outcome::FORWARD
    );
    assert_eq!(totals(&t), (10, 5, 0));
    assert_eq!(c.next_wake(), None);
}

#[test]
fn abort_at_identification_drops_the_event_and_closes() {
    let (mut c, t) = conn();
    c.apply(&rule(FaultKind::Abort(Abort)), "r".into(), 1, 0, true);
    assert_eq!(c.next_wake(), None, "the identifying event closes it");
    let o = c.on_data(Direction::ToClient, 78, &mut at(0));
    assert_eq!(
        o,
        Outcome {
            effect: Effect::Drop { keep: 0 },
            close: Some(Close::Now)
        }
    );
    assert_eq!(c.on_tick(0), None, "already closed by the event");
    assert_eq!(
        c.on_data(Direction::ToDatabase, 10, &mut at(0)).effect,
        Effect::Drop { keep: 0 }
    );
    assert_eq!(totals(&t), (0, 0, 88));
    c.end_fault();
    assert_eq!(c.next_wake(), None, "a closed connection stays closed");
}

#[test]
fn abort_of_an_open_connection_closes_at_the_next_tick() {
    let (mut c, _t) = conn();
    c.on_data(Direction::ToDatabase, 10, &mut at(0));
    c.apply(&rule(FaultKind::Abort(Abort)), "r".into(), 1, 0, false);
    assert_eq!(c.next_wake(), Some(0));
    assert_eq!(c.on_tick(5), Some(TickAction::Close));
    assert_eq!(c.on_tick(6), None);
    assert_eq!(c.next_wake(), None);
}

#[test]
fn blackhole_swallows_then_closes_after() {
    let (mut c, t) = conn();
    let spec = Blackhole {
        close_after: Some(Duration::from_millis(30)),
    };
    c.apply(
        &rule(FaultKind::Blackhole(spec)),
        "r".into(),
        1,
        100 * MS,
        true,
    );
    let o = c.on_data(Direction::ToDatabase, 40, &mut at(100 * MS));
    assert_eq!(o.effect, Effect::Drop { keep: 0 });
    assert_eq!(o.close, None);
    c.on_data(Direction::ToClient, 2, &mut at(101 * MS));
    assert_eq!(c.next_wake(), Some(130 * MS));
    assert_eq!(c.on_tick(129 * MS), None);
    assert_eq!(c.on_tick(130 * MS), Some(TickAction::Close));
    assert_eq!(totals(&t), (0, 0, 42));
}

#[test]
fn delay_holds_then_releases_in_order() {
    let (mut c, t) = conn();
    let kind = delay(Duration::from_millis(200), false);
    c.apply(&rule(kind), "r".into(), 1, 0, true);
    assert_eq!(
        c.on_data(Direction::ToDatabase, 10, &mut at(0)).effect,
        Effect::Hold
    );
    // More bytes while held: Envoy passes the whole buffer; they join the hold, which
    // extends to their own latency.
    assert_eq!(
        c.on_data(Direction::ToDatabase, 25, &mut at(50 * MS))
            .effect,
        Effect::Hold
    );
    assert_eq!(c.next_wake(), Some(250 * MS));
    // The database side is never held.
    assert_eq!(
        c.on_data(Direction::ToClient, 3, &mut at(60 * MS)),
        Outcome::FORWARD
    );
    assert_eq!(c.on_tick(249 * MS), None);
    assert_eq!(c.on_tick(250 * MS), Some(TickAction::Resume));
    assert_eq!(c.next_wake(), None);
    assert_eq!(totals(&t), (25, 3, 0));
    // The next chunk starts a new hold.
    assert_eq!(
        c.on_data(Direction::ToDatabase, 5, &mut at(300 * MS))
            .effect,
        Effect::Hold
    );
    assert_eq!(c.next_wake(), Some(500 * MS));
    // Closed while holding: the held bytes were dropped.
    c.finish();
    assert_eq!(totals(&t), (25, 3, 5));
}

#[test]
fn delay_first_only() {
    let (mut c, _t) = conn();
    c.apply(
        &rule(delay(Duration::from_millis(10), true)),
        "r".into(),
        1,
        0,
        true,
    );
    assert_eq!(
        c.on_data(Direction::ToDatabase, 8, &mut at(0)).effect,
        Effect::Hold
    );
    assert_eq!(c.on_tick(10 * MS), Some(TickAction::Resume));
    assert_eq!(
        c.on_data(Direction::ToDatabase, 8, &mut at(11 * MS)),
        Outcome::FORWARD
    );
    assert_eq!(
        c.on_data(Direction::ToDatabase, 8, &mut at(12 * MS)),
        Outcome::FORWARD
    );
}

#[test]
fn ending_a_delay_releases_what_is_held() {
    let (mut c, t) = conn();
    c.apply(
        &rule(delay(Duration::from_secs(10), false)),
        "r".into(),
        1,
        0,
        true,
    );
    c.on_data(Direction::ToDatabase, 8, &mut at(0));
    c.end_fault();
    assert!(c.fault().is_none());
    assert!(!c.open_to(5), "not open to rules before the release");
    assert_eq!(c.on_tick(MS), Some(TickAction::Resume));
    assert!(c.open_to(5), "open to rules once released");
    assert_eq!(totals(&t), (8, 0, 0));
}

#[test]
fn an_empty_end_of_stream_is_not_held_and_an_ended_hold_is_always_resumed() {
    // Found by the soak: a client's FIN held by a delay whose rule then ended was never
    // resumed, and Envoy kept the connection open.
    let (mut c, _t) = conn();
    c.apply(
        &rule(delay(Duration::from_millis(5), false)),
        "r".into(),
        1,
        0,
        true,
    );
    assert_eq!(
        c.on_data(Direction::ToDatabase, 0, &mut at(0)),
        Outcome::FORWARD
    );
    assert_eq!(c.next_wake(), None);
    assert_eq!(
        c.on_data(Direction::ToDatabase, 3, &mut at(0)).effect,
        Effect::Hold
    );
    c.end_fault();
    assert_eq!(c.on_tick(MS), Some(TickAction::Resume));
}

#[test]
fn data_after_an_ended_delay_counts_held_bytes_once() {
    // Found by tests/properties.rs: the event after the rule ended carries the held byte too.
    let (mut c, t) = conn();
    c.apply(
        &rule(delay(Duration::from_millis(1), false)),
        "r".into(),
        1,
        0,
        false,
    );
    assert_eq!(
        c.on_data(Direction::ToDatabase, 1, &mut at(0)).effect,
        Effect::Hold
    );
    c.end_fault();
    assert_eq!(
        c.on_data(Direction::ToDatabase, 2, &mut at(0)),
        Outcome::FORWARD
    );
    assert_eq!(c.on_tick(MS), None, "nothing left to resume");
    c.finish();
    assert_eq!(totals(&t), (2, 0, 0));
}

#[test]
fn cut_after_bytes_is_exact_in_both_directions() {
    let (mut c, t) = conn();
    let spec = Cut {
        after_bytes: Some(100),
        after: None,
    };
    c.apply(&rule(FaultKind::Cut(spec)), "r".into(), 1, 0, true);
    assert_eq!(
        c.on_data(Direction::ToDatabase, 60, &mut at(0)),
        Outcome::FORWARD
    );
    let o = c.on_data(Direction::ToClient, 70, &mut at(0));
    assert_eq!(
        o,
        Outcome {
            effect: Effect::Drop { keep: 40 },
            close: Some(Close::AtNextTick)
        }
    );
    assert_eq!(c.next_wake(), Some(0));
    assert_eq!(
        c.on_data(Direction::ToDatabase, 9, &mut at(0)).effect,
        Effect::Drop { keep: 0 }
    );
    assert_eq!(c.on_tick(0), Some(TickAction::Close));
    assert_eq!(totals(&t), (60, 40, 39));
}

#[test]
fn cut_toward_the_database_closes_at_the_next_tick() {
    let (mut c, t) = conn();
    let spec = Cut {
        after_bytes: Some(10),
        after: None,
    };
    c.apply(&rule(FaultKind::Cut(spec)), "r".into(), 1, 0, true);
    let o = c.on_data(Direction::ToDatabase, 10, &mut at(0));
    assert_eq!(
        o,
        Outcome {
            effect: Effect::Forward,
            close: Some(Close::AtNextTick)
        }
    );
    assert_eq!(c.on_tick(0), Some(TickAction::Close));
    assert_eq!(totals(&t), (10, 0, 0));
}

#[test]
fn cut_applied_after_the_limit_closes_at_the_next_tick() {
    let (mut c, t) = conn();
    c.on_data(Direction::ToDatabase, 50, &mut at(0));
    let spec = Cut {
        after_bytes: Some(10),
        after: None,
    };
    c.apply(&rule(FaultKind::Cut(spec)), "r".into(), 1, 0, false);
    assert_eq!(c.next_wake(), Some(0));
    assert_eq!(
        c.on_data(Direction::ToClient, 5, &mut at(0)).effect,
        Effect::Drop { keep: 0 }
    );
    assert_eq!(c.on_tick(0), Some(TickAction::Close));
    assert_eq!(totals(&t), (50, 0, 5));
}

#[test]
fn cut_by_time_even_while_traffic_flows() {
    let (mut c, _t) = conn();
    let spec = Cut {
        after_bytes: None,
        after: Some(Duration::from_millis(50)),
    };
    c.apply(&rule(FaultKind::Cut(spec)), "r".into(), 1, 0, true);
    for i in 0..5 {
        assert_eq!(
            c.on_data(Direction::ToDatabase, 1, &mut at(i * 10 * MS)),
            Outcome::FORWARD
        );
    }
    assert_eq!(c.next_wake(), Some(50 * MS));
    assert_eq!(c.on_tick(50 * MS), Some(TickAction::Close));
}

#[test]
fn ending_a_cut_before_the_cut_leaves_the_connection_clean() {
    let (mut c, t) = conn();
    let spec = Cut {
        after_bytes: Some(10),
        after: None,
    };
    c.apply(&rule(FaultKind::Cut(spec)), "r".into(), 1, 0, true);
    c.on_data(Direction::ToDatabase, 4, &mut at(0));
    c.end_fault();
    assert_eq!(c.next_wake(), None);
    assert_eq!(
        c.on_data(Direction::ToDatabase, 40, &mut at(0)),
        Outcome::FORWARD
    );
    assert_eq!(totals(&t), (44, 0, 0));
}

#[test]
fn dry_run_touches_nothing() {
    let (mut c, t) = conn();
    let mut r = rule(FaultKind::Abort(Abort));
    r.dry_run = true;
    c.apply(&r, "r".into(), 1, 0, true);
    assert_eq!(c.fault().map(|(_, e)| e), Some(1));
    assert_eq!(
        c.on_data(Direction::ToDatabase, 4, &mut at(0)),
        Outcome::FORWARD
    );
    assert_eq!(c.on_tick(0), None);
    assert_eq!(totals(&t), (4, 0, 0));
    c.end_fault();
    assert!(c.fault().is_none());
}

#[test]
fn ending_a_blackhole_closes_the_connection() {
    let (mut c, _t) = conn();
    let spec = Blackhole { close_after: None };
    c.apply(&rule(FaultKind::Blackhole(spec)), "r".into(), 1, 0, true);
    assert_eq!(c.next_wake(), None);
    c.end_fault();
    assert_eq!(c.next_wake(), Some(0));
    assert!(!c.open_to(9), "a closing connection takes no new rule");
    assert_eq!(c.on_tick(1), Some(TickAction::Close));
    assert_eq!(c.next_wake(), None);
}
