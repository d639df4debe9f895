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
    /// When the latest data event came (the tick clock: as old as the last tick), and how
    /// long the connection was silent before it (for `idle`).
    last: u64,
    quiet: u64,
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

    /// When the latest data event came (the connection's identification, before any).
    pub fn last_activity(&self) -> u64 {
        self.last
    }

    /// How long the connection carried nothing before the current data event.
    pub fn quiet(&self) -> u64 {
        self.quiet
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
                last: opened_at,
                quiet: 0,
            },
            evaluated: 0,
            phase: Phase::Clean,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// When its upstream was identified (its first byte).
    pub fn opened_at(&self) -> u64 {
        self.opened_at
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
                    last_activity: self.ledger.last,
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

    /// The newest rule episode considered for it.
    pub fn considered_up_to(&self) -> u64 {
        self.evaluated
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

    /// A data event is coming at `at` (the tick clock, read without a host call): it ends the
    /// silence `idle` measures.
    pub fn touch(&mut self, at: u64) {
        self.ledger.quiet = at.saturating_sub(self.ledger.last);
        self.ledger.last = self.ledger.last.max(at);
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
#[path = "connection_tests.rs"]
mod tests;
