//! `delay: {"latency": "200ms", "jitter": "50ms", "firstOnly": false}` — hold client → database
//! bytes for `latency` ± uniform `jitter`, in order.
//!
//! - `latency` (required, > 0): how long each hold lasts.
//! - `jitter` (optional, 0 to `latency`; default 0): each hold lasts `latency` plus a uniform
//!   draw from ±`jitter`.
//! - `firstOnly` (default false): delay only the connection's first client → database chunk
//!   (a slow connection setup).
//!
//! Envoy can pause the client → database stream and resume it later, but a resume releases
//! everything buffered at once. So bytes that arrive while earlier ones are held extend the hold
//! to their own `latency` ± `jitter` — a request that follows a client's small frame (an HTTP/2
//! ping or window update, which gRPC clients send between requests) waits in full — but never
//! beyond twice `latency` after the hold began: a stream that never pauses is released in
//! bursts, not stalled. Request/response clients, which wait for the answer before sending
//! again, see exactly `latency` ± `jitter` per request. Database → client bytes cannot be held
//! in Envoy's ABI and are never delayed. When the rule ends, held bytes are released at the next
//! tick.

use super::connection::Ledger;
use super::{Behaviour, Ending, Kind, Outcome, Start, TickAction};
use crate::config::fields::Fields;
use crate::config::{quote, ConfigError};
use crate::flow::Direction;
use crate::schedule::nanos;
use crate::schedule::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    pub latency: Duration,
    /// At most `latency` (validated), so a hold is never negative.
    pub jitter: Duration,
    pub first_only: bool,
}

impl Delay {
    /// The release time of a hold starting at `now`.
    pub fn release_at(&self, now: u64, rng: &mut Rng) -> u64 {
        let base = i128::from(now) + i128::from(nanos(self.latency));
        let at = base + i128::from(rng.symmetric(nanos(self.jitter)));
        u64::try_from(at.max(i128::from(now))).unwrap_or(u64::MAX)
    }
}

impl Kind for Delay {
    const KEY: &'static str = "delay";
    const PARAMS: &'static [&'static str] = &["latency", "jitter", "firstOnly"];
    type State = State;

    fn parse(params: &Fields<'_>) -> Result<Delay, ConfigError> {
        let Some(latency) = params.duration("latency")? else {
            return Err(ConfigError::new(params.path("latency"), "missing"));
        };
        let jitter = params.offset("jitter")?.unwrap_or(Duration::ZERO);
        if jitter > latency {
            return Err(ConfigError::new(
                params.path("jitter"),
                format!(
                    "{} is larger than the latency ({})",
                    quote(params.str("jitter")?.unwrap_or_default()),
                    quote(params.str("latency")?.unwrap_or_default())
                ),
            ));
        }
        Ok(Delay {
            latency,
            jitter,
            first_only: params.bool("firstOnly")?.unwrap_or(false),
        })
    }

    fn start(&self, at: Start) -> State {
        State {
            spec: *self,
            rng: Rng::new(at.seed),
            release_at: None,
            held_since: 0,
            used: false,
        }
    }
}

#[derive(Debug)]
pub struct State {
    spec: Delay,
    rng: Rng,
    /// When the current hold ends; `None`: nothing held.
    release_at: Option<u64>,
    /// When the current hold began (later bytes extend it, up to twice the latency after it).
    held_since: u64,
    /// `firstOnly`: the first chunk was delayed already.
    used: bool,
}

impl Behaviour for State {
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        // An empty event (the client's end of stream with nothing else) is not held: a held end
        // of stream keeps the connection open until it is released, and nothing is gained by
        // delaying it.
        if dir == Direction::ToClient
            || (self.spec.first_only && self.used)
            || (size == 0 && self.release_at.is_none())
        {
            return ledger.forward(dir, size);
        }
        match self.release_at {
            None => {
                let t = now();
                self.held_since = t;
                self.release_at = Some(self.spec.release_at(t, &mut self.rng));
            }
            // New bytes while held (a paused stream's event carries all it holds): they wait
            // their own latency too, within twice the latency of the hold's start.
            Some(at) if size > ledger.held() => {
                let own = self.spec.release_at(now(), &mut self.rng);
                let cap = self
                    .held_since
                    .saturating_add(nanos(self.spec.latency).saturating_mul(2));
                self.release_at = Some(at.max(own.min(cap)));
            }
            Some(_) => {}
        }
        ledger.hold(size)
    }

    fn on_tick(&mut self, ledger: &mut Ledger, now: u64) -> Option<TickAction> {
        if self.release_at.is_none_or(|at| now < at) {
            return None;
        }
        self.release_at = None;
        self.used = true;
        ledger.release();
        Some(TickAction::Resume)
    }

    fn next_wake(&self) -> Option<u64> {
        self.release_at
    }

    fn end(&self, ledger: &Ledger) -> Ending {
        // A hold may carry no bytes (an end of stream): it must be resumed all the same.
        if self.release_at.is_some() || ledger.held() > 0 {
            Ending::Release
        } else {
            Ending::Clean
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::rule::tests::{parse_error, parse_kind};
    use crate::fault::FaultKind;

    #[test]
    fn release_times_stay_in_the_jitter_band() {
        let d = Delay {
            latency: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
            first_only: false,
        };
        let mut rng = Rng::new(3);
        let now = 1_000_000_000u64;
        let mut sum = 0u128;
        for _ in 0..1000 {
            let at = d.release_at(now, &mut rng);
            assert!((now + 150_000_000..=now + 250_000_000).contains(&at));
            sum += u128::from(at - now);
        }
        let mean_ms = sum / 1000 / 1_000_000;
        assert!((190..=210).contains(&mean_ms), "{mean_ms}");
    }

    #[test]
    fn bytes_arriving_during_a_hold_extend_it_within_twice_the_latency() {
        use crate::throughput::Traffic;
        use std::rc::Rc;
        const MS: u64 = 1_000_000;
        let d = Delay {
            latency: Duration::from_millis(200),
            jitter: Duration::ZERO,
            first_only: false,
        };
        let mut conn = crate::fault::connection::Connection::new(1, 0, Rc::new(Traffic::default()));
        let rule = crate::fault::Rule {
            name: "d".into(),
            enabled: true,
            matcher: crate::fault::matching::Match::default(),
            percentage_bp: 10_000,
            apply_to: crate::fault::ApplyTo::All,
            window: None,
            dry_run: false,
            expires_at: None,
            sidecar_bp: 10_000,
            kind: FaultKind::Delay(d),
        };
        conn.apply(&rule, "d".into(), 1, 0, false);
        // A 17-byte ping at 0 ms, then a request at 150 ms (Envoy presents all 417 bytes held).
        conn.on_data(Direction::ToDatabase, 17, &mut || 0);
        assert_eq!(conn.next_wake(), Some(200 * MS));
        conn.on_data(Direction::ToDatabase, 417, &mut || 150 * MS);
        assert_eq!(
            conn.next_wake(),
            Some(350 * MS),
            "the request waits its own latency"
        );
        // More at 300 ms: capped at twice the latency after the hold began.
        conn.on_data(Direction::ToDatabase, 900, &mut || 300 * MS);
        assert_eq!(conn.next_wake(), Some(400 * MS));
        assert_eq!(conn.on_tick(399 * MS), None);
        assert_eq!(conn.on_tick(400 * MS), Some(TickAction::Resume));
    }

    #[test]
    fn parameters() {
        assert_eq!(
            parse_kind(r#""delay": {"latency": "200ms", "jitter": "50ms", "firstOnly": true}"#),
            FaultKind::Delay(Delay {
                latency: Duration::from_millis(200),
                jitter: Duration::from_millis(50),
                first_only: true
            })
        );
        assert_eq!(
            parse_kind(r#""delay": {"latency": "1s", "jitter": "0s"}"#),
            FaultKind::Delay(Delay {
                latency: Duration::from_secs(1),
                jitter: Duration::ZERO,
                first_only: false
            })
        );
        for (params, want) in [
            (r#""delay": {}"#, "faults[0].delay.latency: missing"),
            (
                r#""delay": {"latency": "0ms"}"#,
                "faults[0].delay.latency: invalid duration \"0ms\": must be greater than zero",
            ),
            (
                r#""delay": {"latency": "10ms", "jitter": "20ms"}"#,
                r#"faults[0].delay.jitter: "20ms" is larger than the latency ("10ms")"#,
            ),
            (
                r#""delay": {"latency": "40d"}"#,
                r#"faults[0].delay.latency: "40d" is too long"#,
            ),
            (
                r#""delay": {"latency": "1s", "firstOnly": "yes"}"#,
                r#"faults[0].delay.firstOnly: invalid type: string "yes", expected a boolean"#,
            ),
        ] {
            let got = parse_error(params);
            assert!(got.contains(want), "{params}: got {got}");
        }
    }
}
