//! One connection's fault state machine. The host layer feeds it data events and ticks and
//! applies what it returns; it counts forwarded and dropped bytes itself, so that forwarded +
//! dropped always equals the bytes seen.

use super::blackhole;
use super::cut::Cut;
use super::delay::Delay;
use super::{abort, Direction, Effect, FaultKind, Outcome, Rule, TickAction};
use crate::metrics::Traffic;
use crate::schedule::Rng;
use std::rc::Rc;

/// The fault a rule put on this connection.
#[derive(Debug)]
pub struct Applied {
    pub rule: Rc<str>,
    pub episode: u64,
    pub state: State,
}

#[derive(Debug)]
pub enum State {
    /// `dryRun`: counted and logged, traffic untouched.
    DryRun,
    Abort,
    Blackhole {
        close_at: Option<u64>,
    },
    Delay {
        spec: Delay,
        /// When the current hold ends; `None`: nothing held.
        release_at: Option<u64>,
        /// `firstOnly`: the first chunk was delayed already.
        used: bool,
    },
    Cut {
        spec: Cut,
        deadline: Option<u64>,
        done: bool,
    },
}

#[derive(Debug)]
pub struct Connection {
    seed: u64,
    rng: Rng,
    opened_at: u64,
    traffic: Rc<Traffic>,
    /// Bytes forwarded so far, both directions (for `cut.afterBytes`).
    forwarded: u64,
    /// Client → database bytes held in Envoy's buffer (a paused stream).
    held: usize,
    /// Episodes up to this id have been considered for this connection.
    pub evaluated: u64,
    pub fault: Option<Applied>,
    close_pending: bool,
    resume_pending: bool,
    closed: bool,
}

impl Connection {
    pub fn new(seed: u64, opened_at: u64, traffic: Rc<Traffic>) -> Connection {
        Connection {
            seed,
            rng: Rng::new(seed),
            opened_at,
            traffic,
            forwarded: 0,
            held: 0,
            evaluated: 0,
            fault: None,
            close_pending: false,
            resume_pending: false,
            closed: false,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// When the connection counts as opened (for `cut.after`): its upstream is identified at the
    /// first byte, and no host call is spent on the time before that.
    pub fn set_opened_at(&mut self, now: u64) {
        self.opened_at = now;
    }

    pub fn set_traffic(&mut self, traffic: Rc<Traffic>) {
        self.traffic = traffic;
    }

    /// Puts `rule`'s fault on the connection at `now`. `identifying`: applied while handling
    /// the event that identified the upstream (that event then carries out an abort itself);
    /// otherwise the connection was already open and anything immediate happens at the next
    /// tick.
    pub fn apply(&mut self, rule: &Rule, name: Rc<str>, episode: u64, now: u64, identifying: bool) {
        let state = if rule.dry_run {
            State::DryRun
        } else {
            match rule.kind {
                FaultKind::Abort => {
                    self.close_pending = !identifying;
                    State::Abort
                }
                FaultKind::Blackhole(spec) => State::Blackhole {
                    close_at: spec.close_at(now),
                },
                FaultKind::Delay(spec) => State::Delay {
                    spec,
                    release_at: None,
                    used: false,
                },
                FaultKind::Cut(spec) => {
                    let done = spec
                        .after_bytes
                        .is_some_and(|limit| self.forwarded >= limit);
                    self.close_pending |= done;
                    State::Cut {
                        spec,
                        deadline: spec.deadline(self.opened_at),
                        done,
                    }
                }
            }
        };
        self.fault = Some(Applied {
            rule: name,
            episode,
            state,
        });
    }

    /// The rule that faulted this connection is no longer active: stop delaying (releasing
    /// what is held) or cutting; a blackholed connection is closed, since bytes were lost and
    /// its stream cannot resume.
    pub fn end_fault(&mut self) {
        let Some(applied) = self.fault.take() else {
            return;
        };
        match applied.state {
            State::Abort | State::Blackhole { .. } | State::Cut { done: true, .. } => {
                // Nothing can be undone: keep it, and make sure the connection goes away.
                self.close_pending |= !self.closed;
                self.fault = Some(applied);
            }
            // A hold may carry no bytes (an end of stream): it must be resumed all the same.
            State::Delay { release_at, .. } => {
                self.resume_pending = self.held > 0 || release_at.is_some()
            }
            State::DryRun | State::Cut { done: false, .. } => {}
        }
    }

    fn forward(&mut self, dir: Direction, size: usize) -> Outcome {
        self.count_forwarded(dir, size);
        if dir == Direction::ToDatabase {
            // A paused stream's event carries the held bytes too: they go now, and a pending
            // resume has nothing left to release.
            self.held = 0;
            self.resume_pending = false;
        }
        Outcome::FORWARD
    }

    fn count_forwarded(&mut self, dir: Direction, size: usize) {
        self.forwarded = self.forwarded.saturating_add(size as u64);
        match dir {
            Direction::ToDatabase => self.traffic.tx.add(size),
            Direction::ToClient => self.traffic.rx.add(size),
        }
    }

    fn drop_all(&mut self, dir: Direction, size: usize) -> Outcome {
        // For a paused stream `size` includes what was held, which is counted here and only
        // here (held bytes are neither forwarded nor dropped until released or closed).
        if dir == Direction::ToDatabase {
            self.held = 0;
        }
        self.traffic.dropped.add(size);
        Outcome {
            effect: Effect::Drop { keep: 0 },
            close: false,
        }
    }

    /// A data event of `size` bytes (for a paused stream: everything buffered so far). `now`
    /// is asked only when a decision needs the time.
    pub fn on_data(
        &mut self,
        dir: Direction,
        size: usize,
        now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        if self.closed {
            return self.drop_all(dir, size);
        }
        let Some(applied) = self.fault.as_mut() else {
            return self.forward(dir, size);
        };
        match &mut applied.state {
            State::DryRun => self.forward(dir, size),
            State::Abort => {
                self.drop_all(dir, size);
                self.closed = true;
                self.close_pending = false;
                abort::on_data()
            }
            State::Blackhole { .. } => {
                self.drop_all(dir, size);
                blackhole::on_data()
            }
            State::Delay {
                spec,
                release_at,
                used,
            } => {
                if dir == Direction::ToClient {
                    return self.forward(dir, size);
                }
                // An empty event (the client's end of stream with nothing else) is not held:
                // a held end of stream keeps the connection open until it is released, and
                // nothing is gained by delaying it.
                if (spec.first_only && *used) || (size == 0 && release_at.is_none()) {
                    return self.forward(dir, size);
                }
                if release_at.is_none() {
                    *release_at = Some(spec.release_at(now(), &mut self.rng));
                }
                self.held = size;
                Outcome {
                    effect: Effect::Hold,
                    close: false,
                }
            }
            State::Cut { spec, done, .. } => {
                if *done {
                    return self.drop_all(dir, size);
                }
                let Some(keep) = spec.allowance(self.forwarded, size) else {
                    return self.forward(dir, size);
                };
                let limit_reached = spec
                    .after_bytes
                    .is_some_and(|limit| self.forwarded.saturating_add(keep as u64) >= limit);
                if keep == size && !limit_reached {
                    return self.forward(dir, size);
                }
                *done = true;
                self.count_forwarded(dir, keep);
                self.traffic.dropped.add(size - keep);
                // The kept bytes still have to travel on after this callback returns (through
                // tcp_proxy, or into the client's write buffer); a close inside the callback
                // would discard them. Close at the next tick; until then everything is dropped.
                self.close_pending = true;
                Outcome {
                    effect: if keep == size {
                        Effect::Forward
                    } else {
                        Effect::Drop { keep }
                    },
                    close: false,
                }
            }
        }
    }

    /// What this connection needs at `now`, if anything.
    pub fn on_tick(&mut self, now: u64) -> Option<TickAction> {
        if self.closed {
            return None;
        }
        if self.close_pending {
            self.close_pending = false;
            self.closed = true;
            return Some(TickAction::Close);
        }
        if self.resume_pending {
            self.resume_pending = false;
            self.release();
            return Some(TickAction::Resume);
        }
        match &mut self.fault.as_mut()?.state {
            State::Blackhole { close_at: Some(at) } if now >= *at => {
                self.closed = true;
                Some(TickAction::Close)
            }
            State::Delay {
                release_at: release_at @ Some(_),
                used,
                ..
            } if release_at.is_some_and(|at| now >= at) => {
                *release_at = None;
                *used = true;
                self.release();
                Some(TickAction::Resume)
            }
            State::Cut {
                deadline: Some(at),
                done,
                ..
            } if now >= *at && !*done => {
                *done = true;
                self.closed = true;
                Some(TickAction::Close)
            }
            _ => None,
        }
    }

    /// The earliest time this connection needs a tick; `None` when it needs none.
    pub fn next_wake(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        if self.close_pending || self.resume_pending {
            return Some(0);
        }
        match &self.fault.as_ref()?.state {
            State::Blackhole { close_at } => *close_at,
            State::Delay { release_at, .. } => *release_at,
            State::Cut {
                deadline,
                done: false,
                ..
            } => *deadline,
            _ => None,
        }
    }

    /// The held bytes are released: Envoy hands them straight to the next filter (tcp_proxy)
    /// without calling this filter again, so they count as forwarded now.
    fn release(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.count_forwarded(Direction::ToDatabase, held);
    }

    /// The connection is gone: bytes still held were never forwarded.
    pub fn finish(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.traffic.dropped.add(held);
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::blackhole::Blackhole;
    use crate::fault::matching::Match;
    use crate::fault::ApplyTo;
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
        c.apply(&rule(FaultKind::Abort), "r".into(), 1, 0, true);
        let o = c.on_data(Direction::ToClient, 78, &mut at(0));
        assert_eq!(
            o,
            Outcome {
                effect: Effect::Drop { keep: 0 },
                close: true
            }
        );
        assert_eq!(c.on_tick(0), None, "already closed by the event");
        c.on_data(Direction::ToDatabase, 10, &mut at(0));
        assert_eq!(totals(&t), (0, 0, 88));
    }

    #[test]
    fn abort_of_an_open_connection_closes_at_the_next_tick() {
        let (mut c, _t) = conn();
        c.on_data(Direction::ToDatabase, 10, &mut at(0));
        c.apply(&rule(FaultKind::Abort), "r".into(), 1, 0, false);
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
        assert!(!o.close);
        c.on_data(Direction::ToClient, 2, &mut at(101 * MS));
        assert_eq!(c.next_wake(), Some(130 * MS));
        assert_eq!(c.on_tick(129 * MS), None);
        assert_eq!(c.on_tick(130 * MS), Some(TickAction::Close));
        assert_eq!(totals(&t), (0, 0, 42));
    }

    #[test]
    fn delay_holds_then_releases_in_order() {
        let (mut c, t) = conn();
        let spec = Delay {
            latency: Duration::from_millis(200),
            jitter: Duration::ZERO,
            first_only: false,
        };
        c.apply(&rule(FaultKind::Delay(spec)), "r".into(), 1, 0, true);
        assert_eq!(
            c.on_data(Direction::ToDatabase, 10, &mut at(0)).effect,
            Effect::Hold
        );
        // More bytes while held: Envoy passes the whole buffer; they join the hold.
        assert_eq!(
            c.on_data(Direction::ToDatabase, 25, &mut at(50 * MS))
                .effect,
            Effect::Hold
        );
        assert_eq!(c.next_wake(), Some(200 * MS));
        // The database side is never held.
        assert_eq!(
            c.on_data(Direction::ToClient, 3, &mut at(60 * MS)),
            Outcome::FORWARD
        );
        assert_eq!(c.on_tick(199 * MS), None);
        assert_eq!(c.on_tick(200 * MS), Some(TickAction::Resume));
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
        let spec = Delay {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            first_only: true,
        };
        c.apply(&rule(FaultKind::Delay(spec)), "r".into(), 1, 0, true);
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
        let spec = Delay {
            latency: Duration::from_secs(10),
            jitter: Duration::ZERO,
            first_only: false,
        };
        c.apply(&rule(FaultKind::Delay(spec)), "r".into(), 1, 0, true);
        c.on_data(Direction::ToDatabase, 8, &mut at(0));
        c.end_fault();
        assert!(c.fault.is_none());
        assert_eq!(c.on_tick(MS), Some(TickAction::Resume));
        assert_eq!(totals(&t), (8, 0, 0));
    }

    #[test]
    fn an_empty_end_of_stream_is_not_held_and_an_ended_hold_is_always_resumed() {
        // Found by the soak: a client's FIN held by a delay whose rule then ended was never
        // resumed, and Envoy kept the connection open.
        let (mut c, _t) = conn();
        let spec = Delay {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            first_only: false,
        };
        c.apply(&rule(FaultKind::Delay(spec)), "r".into(), 1, 0, true);
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
        let spec = Delay {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            first_only: false,
        };
        c.apply(&rule(FaultKind::Delay(spec)), "r".into(), 1, 0, false);
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
                close: false
            }
        );
        assert_eq!(c.next_wake(), Some(0));
        assert_eq!(
            c.on_data(Direction::ToDatabase, 9, &mut at(0)).effect,
            Effect::Drop { keep: 0 }
        );
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
                close: false
            }
        );
        assert_eq!(c.on_tick(0), Some(TickAction::Close));
        assert_eq!(totals(&t), (10, 0, 0));
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
    fn dry_run_touches_nothing() {
        let (mut c, t) = conn();
        let mut r = rule(FaultKind::Abort);
        r.dry_run = true;
        c.apply(&r, "r".into(), 1, 0, true);
        assert_eq!(
            c.on_data(Direction::ToDatabase, 4, &mut at(0)),
            Outcome::FORWARD
        );
        assert_eq!(c.on_tick(0), None);
        assert_eq!(totals(&t), (4, 0, 0));
    }

    #[test]
    fn ending_a_blackhole_closes_the_connection() {
        let (mut c, _t) = conn();
        let spec = Blackhole { close_after: None };
        c.apply(&rule(FaultKind::Blackhole(spec)), "r".into(), 1, 0, true);
        assert_eq!(c.next_wake(), None);
        c.end_fault();
        assert_eq!(c.on_tick(1), Some(TickAction::Close));
    }
}
