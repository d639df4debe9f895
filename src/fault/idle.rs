//! `idle: {"after": "30s", "mode": "blackhole"}` — what a NAT gateway, a load balancer or a
//! firewall does to a connection that stayed silent too long: it forgets it. A connection that
//! carried no byte either way for `after` (counted from its last byte, so a connection already
//! that idle when the rule starts is caught at its next byte) is then:
//!
//! - `"blackhole"` (the default): silently dropped from its next byte on, both directions, and
//!   left open — the app hangs on its next query until its own timeout;
//! - `"close"`: closed as soon as it has been idle for `after` (or at its next byte, if that
//!   comes first from a tick's point of view).
//!
//! Connections that keep talking are untouched. Silence is measured on the tick clock (the
//! root's ticks, every 50 ms), so that counting it costs no host call per data event.

use super::connection::Ledger;
use super::{Behaviour, Ending, Kind, Outcome, Start, TickAction};
use crate::config::fields::Fields;
use crate::config::{quote, ConfigError};
use crate::flow::{Close, Direction};
use crate::schedule::nanos;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle {
    pub after: Duration,
    /// `"close"`: closed when idle; else blackholed.
    pub close: bool,
}

impl Kind for Idle {
    const KEY: &'static str = "idle";
    const PARAMS: &'static [&'static str] = &["after", "mode"];
    type State = State;

    fn parse(params: &Fields<'_>) -> Result<Idle, ConfigError> {
        let Some(after) = params.duration("after")? else {
            return Err(ConfigError::new(params.path("after"), "missing"));
        };
        let close = match params.str("mode")? {
            None | Some("blackhole") => false,
            Some("close") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    params.path("mode"),
                    format!(
                        "{} is not a mode (expected one of: \"blackhole\", \"close\")",
                        quote(other)
                    ),
                ))
            }
        };
        Ok(Idle { after, close })
    }

    fn start(&self, at: Start) -> State {
        State {
            after: nanos(self.after),
            close: self.close,
            last: at.last_activity,
            forgotten: false,
        }
    }
}

#[derive(Debug)]
pub struct State {
    after: u64,
    close: bool,
    /// The connection's last byte, as of the latest event this state saw.
    last: u64,
    /// Blackholed: nothing passes any more.
    forgotten: bool,
}

impl Behaviour for State {
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        _now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        // The silence before this event: since the last byte, counted before the fault began
        // too (the ledger stamps every event).
        self.last = ledger.last_activity();
        if !self.forgotten && ledger.quiet() < self.after {
            return ledger.forward(dir, size);
        }
        self.forgotten = true;
        Outcome {
            close: self.close.then_some(Close::Now),
            ..ledger.drop_all(dir, size)
        }
    }

    fn on_tick(&mut self, ledger: &mut Ledger, now: u64) -> Option<TickAction> {
        (self.close && now.saturating_sub(ledger.last_activity()) >= self.after)
            .then_some(TickAction::Close)
    }

    fn next_wake(&self) -> Option<u64> {
        self.close.then(|| self.last.saturating_add(self.after))
    }

    fn end(&self, _ledger: &Ledger) -> Ending {
        if self.forgotten {
            // Bytes were lost: the stream cannot resume.
            Ending::Close
        } else {
            Ending::Clean
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::connection::Connection;
    use crate::fault::rule::tests::{parse_error, parse_kind};
    use crate::fault::FaultKind;
    use crate::flow::Effect;
    use crate::throughput::Traffic;
    use std::rc::Rc;

    const S: u64 = 1_000_000_000;

    #[test]
    fn parameters() {
        assert_eq!(
            parse_kind(r#""idle": {"after": "30s"}"#),
            FaultKind::Idle(Idle {
                after: Duration::from_secs(30),
                close: false
            })
        );
        assert_eq!(
            parse_kind(r#""idle": {"after": "1m", "mode": "close"}"#),
            FaultKind::Idle(Idle {
                after: Duration::from_secs(60),
                close: true
            })
        );
        for (params, error) in [
            (r#"{}"#, "faults[0].idle.after: missing"),
            (
                r#"{"after": "1s", "mode": "reset"}"#,
                "faults[0].idle.mode: \"reset\" is not a mode",
            ),
            (r#"{"after": "0s"}"#, "faults[0].idle.after:"),
            (
                r#"{"after": "1s", "every": "1s"}"#,
                "faults[0].idle.every: unknown field",
            ),
        ] {
            let e = parse_error(&format!(r#""idle": {params}"#));
            assert!(e.starts_with(error), "{params}: {e}");
        }
    }

    /// A connection opened at 0 under `idle` from `start`, fed events at the given times.
    fn connection(idle: Idle, start: u64) -> Connection {
        let mut c = Connection::new(7, 0, Rc::new(Traffic::default()));
        c.touch(0);
        c.on_data(Direction::ToDatabase, 10, &mut || 0);
        let rule = crate::fault::rule::tests::rule_with(FaultKind::Idle(idle));
        c.apply(&rule, "idle".into(), 1, start, false);
        c
    }

    fn event(c: &mut Connection, at: u64) -> Outcome {
        c.touch(at);
        c.on_data(Direction::ToDatabase, 5, &mut || at)
    }

    #[test]
    fn a_talking_connection_passes_and_a_silent_one_is_forgotten_at_its_next_byte() {
        let idle = Idle {
            after: Duration::from_secs(30),
            close: false,
        };
        let mut c = connection(idle, 1);
        for t in [10, 35, 64] {
            assert_eq!(event(&mut c, t * S).effect, Effect::Forward, "{t}");
        }
        // 30 s of silence: this byte and every later one are dropped, nothing closes.
        let o = event(&mut c, 94 * S);
        assert_eq!((o.effect, o.close), (Effect::Drop { keep: 0 }, None));
        assert_eq!(event(&mut c, 95 * S).effect, Effect::Drop { keep: 0 });
        assert_eq!(c.next_wake(), None);
    }

    #[test]
    fn a_connection_already_idle_when_the_rule_starts_is_caught_at_its_next_byte() {
        let idle = Idle {
            after: Duration::from_secs(30),
            close: false,
        };
        // Silent since 0; the rule starts at 40 s.
        let mut c = connection(idle, 40 * S);
        assert_eq!(event(&mut c, 41 * S).effect, Effect::Drop { keep: 0 });
        // One that talked 10 s before the rule started is not.
        let mut c = Connection::new(7, 0, Rc::new(Traffic::default()));
        c.touch(30 * S);
        c.on_data(Direction::ToClient, 10, &mut || 30 * S);
        let rule = crate::fault::rule::tests::rule_with(FaultKind::Idle(idle));
        c.apply(&rule, "idle".into(), 1, 40 * S, false);
        assert_eq!(event(&mut c, 41 * S).effect, Effect::Forward);
    }

    #[test]
    fn close_mode_closes_when_the_silence_reaches_after() {
        let idle = Idle {
            after: Duration::from_secs(30),
            close: true,
        };
        let mut c = connection(idle, 1);
        assert_eq!(event(&mut c, 10 * S).effect, Effect::Forward);
        assert_eq!(c.next_wake(), Some(40 * S));
        assert_eq!(c.on_tick(39 * S), None);
        assert_eq!(c.on_tick(40 * S), Some(TickAction::Close));
        // At a late byte instead: dropped and closed at once.
        let mut c = connection(idle, 1);
        let o = event(&mut c, 31 * S);
        assert_eq!(
            (o.effect, o.close),
            (Effect::Drop { keep: 0 }, Some(Close::Now))
        );
    }
}
