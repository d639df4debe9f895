//! One connection under the rules: its byte ledger (forwarded, held, dropped) and the dispatch
//! to the fault acting on it. The host layer feeds it data events and ticks and applies what it
//! returns. Every byte seen is forwarded, held, or dropped — nothing else — so that forwarded +
//! dropped equals the bytes seen once nothing is held.

use super::TickAction;
use super::{Behaviour, Ending, FaultState, Outcome, Rule, Start};
use crate::flow::{Close, Direction, Effect};
use crate::throughput::Traffic;
use std::rc::Rc;

/// The byte accounting of one connection. Faults act through it, so that every byte is
/// counted exactly once whatever they do.
#[derive(Debug)]
pub struct Ledger {
    traffic: Rc<Traffic>,
    /// Bytes forwarded so far, both directions (for `cut.afterBytes`).
    forwarded: u64,
    /// Client → database bytes held in Envoy's buffer (a paused stream).
    held: usize,
}

impl Ledger {
    fn count(&mut self, dir: Direction, size: usize) {
        // 2^64 bytes are never reached: wrapping costs less than saturating on the hot path.
        self.forwarded = self.forwarded.wrapping_add(size as u64);
        match dir {
            Direction::ToDatabase => self.traffic.tx.add(size),
            Direction::ToClient => self.traffic.rx.add(size),
        }
    }

    /// Forwards the whole event. A paused stream's event carries the held bytes too: they go
    /// now.
    pub fn forward(&mut self, dir: Direction, size: usize) -> Outcome {
        self.count(dir, size);
        if dir == Direction::ToDatabase {
            self.held = 0;
        }
        Outcome::FORWARD
    }

    /// Discards the whole event. For a paused stream `size` includes what was held, which is
    /// counted here and only here.
    pub fn drop_all(&mut self, dir: Direction, size: usize) -> Outcome {
        if dir == Direction::ToDatabase {
            self.held = 0;
        }
        self.traffic.dropped.add(size);
        Outcome {
            effect: Effect::Drop { keep: 0 },
            close: None,
        }
    }

    /// Forwards the first `keep` bytes of the event and discards the rest.
    pub fn truncate(&mut self, dir: Direction, size: usize, keep: usize) -> Outcome {
        let keep = keep.min(size);
        if dir == Direction::ToDatabase {
            self.held = 0;
        }
        self.count(dir, keep);
        self.traffic.dropped.add(size - keep);
        Outcome {
            effect: if keep == size {
                Effect::Forward
            } else {
                Effect::Drop { keep }
            },
            close: None,
        }
    }

    /// Holds the client → database stream; `size` is everything buffered so far.
    pub fn hold(&mut self, size: usize) -> Outcome {
        self.held = size;
        Outcome {
            effect: Effect::Hold,
            close: None,
        }
    }

    /// The held bytes are released: Envoy hands them straight to the next filter (tcp_proxy)
    /// without calling this filter again, so they count as forwarded now.
    pub fn release(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.count(Direction::ToDatabase, held);
    }

    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

/// Where a connection stands with respect to the rules. Each state excludes the others: a
/// connection being closed has no fault left to act, a released delay holds nothing.
#[derive(Debug)]
enum Phase {
    /// No fault acts on it.
    Clean,
    /// A `dryRun` rule selected it: counted, traffic untouched.
    DryRun { rule: Rc<str>, episode: u64 },
    /// A rule's fault acts on it.
    Faulted {
        rule: Rc<str>,
        episode: u64,
        state: FaultState,
    },
    /// A delay's rule ended while bytes were held: released at the next tick.
    Releasing,
    /// A statement rule holds the client → database stream until then (a delayed statement).
    Holding { until: u64 },
    /// To be closed at the next tick; everything is dropped until then.
    Closing,
    /// Closed by dbfault, or gone: everything is dropped.
    Closed,
}

/// One identified connection.
#[derive(Debug)]
pub struct Connection {
    seed: u64,
    opened_at: u64,
    ledger: Ledger,
    /// Rule episodes up to this id have been considered for this connection.
    evaluated: u64,
    phase: Phase,
}

impl Connection {
    /// A connection whose upstream was identified at `opened_at` (its first byte), counting into
    /// `traffic`.
    pub fn new(seed: u64, opened_at: u64, traffic: Rc<Traffic>) -> Connection {
        Connection {
            seed,
            opened_at,
            ledger: Ledger {
                traffic,
                forwarded: 0,
                held: 0,
            },
            evaluated: 0,
            phase: Phase::Clean,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Puts `rule`'s fault (or its dry run) on the connection at `now`, in the rule's activation
    /// `episode`. `identifying`: while handling the event that identified the upstream (that
    /// event comes next); otherwise the connection was already open.
    pub fn apply(&mut self, rule: &Rule, name: Rc<str>, episode: u64, now: u64, identifying: bool) {
        self.phase = if rule.dry_run {
            Phase::DryRun {
                rule: name,
                episode,
            }
        } else {
            Phase::Faulted {
                rule: name,
                episode,
                state: rule.kind.start(Start {
                    now,
                    opened_at: self.opened_at,
                    forwarded: self.ledger.forwarded,
                    seed: self.seed,
                    identifying,
                }),
            }
        };
    }

    /// Whether statement rules may act on it: no byte-level fault does.
    pub fn statements_may_act(&self) -> bool {
        matches!(self.phase, Phase::Clean | Phase::Holding { .. })
    }

    /// A statement rule holds the client → database stream until `until` (later holds extend
    /// it: what follows a delayed statement waits behind it).
    pub fn hold_until(&mut self, until: u64) {
        match &mut self.phase {
            Phase::Clean => self.phase = Phase::Holding { until },
            Phase::Holding { until: at } => *at = (*at).max(until),
            _ => {}
        }
    }

    /// The protocol layer ends the connection: after the bytes of the current event (closed
    /// at the next tick), or `now` (nothing of the event needs to travel).
    pub fn close(&mut self, now: bool) {
        if !matches!(self.phase, Phase::Closed) {
            self.phase = if now { Phase::Closed } else { Phase::Closing };
        }
    }

    /// The rule acting on the connection (dry runs included) and its episode.
    pub fn fault(&self) -> Option<(&Rc<str>, u64)> {
        match &self.phase {
            Phase::DryRun { rule, episode } | Phase::Faulted { rule, episode, .. } => {
                Some((rule, *episode))
            }
            _ => None,
        }
    }

    /// Whether rules activated after this connection was last considered may act on it: only
    /// a connection no fault acts on (or will, or did) is open to them.
    pub fn open_to(&self, last_episode: u64) -> bool {
        matches!(self.phase, Phase::Clean) && self.evaluated < last_episode
    }

    /// Rule episodes up to `last_episode` have been considered.
    pub fn considered(&mut self, last_episode: u64) {
        self.evaluated = last_episode;
    }

    /// The rule acting on the connection stopped being active.
    pub fn end_fault(&mut self) {
        let ending = match &self.phase {
            Phase::Faulted { state, .. } => state.end(&self.ledger),
            Phase::DryRun { .. } => Ending::Clean,
            _ => return,
        };
        self.phase = match ending {
            Ending::Clean => Phase::Clean,
            Ending::Release => Phase::Releasing,
            Ending::Close => Phase::Closing,
        };
    }

    /// A data event of `size` bytes (for a paused stream: everything buffered so far). `now`
    /// is asked only when a decision needs the time.
    pub fn on_data(
        &mut self,
        dir: Direction,
        size: usize,
        now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        // The hot path (no fault): one comparison before the count; the rest is out of line
        // so that it stays that way.
        // A clean connection holds nothing, so there is no held count to reset.
        if let Phase::Clean = self.phase {
            self.ledger.count(dir, size);
            return Outcome::FORWARD;
        }
        self.on_data_under_rules(dir, size, now)
    }

    #[cold]
    #[inline(never)]
    fn on_data_under_rules(
        &mut self,
        dir: Direction,
        size: usize,
        now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        let outcome = match &mut self.phase {
            Phase::Clean | Phase::DryRun { .. } => return self.ledger.forward(dir, size),
            Phase::Releasing => {
                if dir == Direction::ToDatabase {
                    // The event carries the held bytes: nothing is left to release.
                    self.phase = Phase::Clean;
                }
                return self.ledger.forward(dir, size);
            }
            Phase::Closing | Phase::Closed => return self.ledger.drop_all(dir, size),
            Phase::Holding { .. } => {
                return match dir {
                    Direction::ToDatabase => self.ledger.hold(size),
                    Direction::ToClient => self.ledger.forward(dir, size),
                }
            }
            Phase::Faulted { state, .. } => state.on_data(&mut self.ledger, dir, size, now),
        };
        match outcome.close {
            None => {}
            Some(Close::Now) => self.phase = Phase::Closed,
            Some(Close::AtNextTick) => self.phase = Phase::Closing,
        }
        outcome
    }

    /// What this connection needs at `now`, if anything.
    pub fn on_tick(&mut self, now: u64) -> Option<TickAction> {
        let action = match &mut self.phase {
            Phase::Clean | Phase::DryRun { .. } | Phase::Closed => None,
            Phase::Releasing => {
                self.ledger.release();
                self.phase = Phase::Clean;
                return Some(TickAction::Resume);
            }
            Phase::Closing => Some(TickAction::Close),
            Phase::Holding { until } if now >= *until => {
                self.ledger.release();
                self.phase = Phase::Clean;
                return Some(TickAction::Resume);
            }
            Phase::Holding { .. } => None,
            Phase::Faulted { state, .. } => state.on_tick(&mut self.ledger, now),
        };
        if action == Some(TickAction::Close) {
            self.phase = Phase::Closed;
        }
        action
    }

    /// The earliest time this connection needs a tick; `None` when it needs none.
    pub fn next_wake(&self) -> Option<u64> {
        match &self.phase {
            Phase::Clean | Phase::DryRun { .. } | Phase::Closed => None,
            Phase::Releasing | Phase::Closing => Some(0),
            Phase::Holding { until } => Some(*until),
            Phase::Faulted { state, .. } => state.next_wake(),
        }
    }

    /// The connection is gone: bytes still held were never forwarded.
    pub fn finish(&mut self) {
        let held = std::mem::take(&mut self.ledger.held);
        self.ledger.traffic.dropped.add(held);
        self.phase = Phase::Closed;
    }
}

#[cfg(test)]
mod tests {
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
}
