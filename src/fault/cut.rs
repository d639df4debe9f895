//! `cut: {"afterBytes": 4096, "after": "5s"}` — cut the connection mid-stream, even while
//! traffic flows. At least one of:
//!
//! - `afterBytes` (≥ 1): forward exactly that many bytes in total, both directions together
//!   (the chunk that crosses the limit is truncated), then close.
//! - `after` (> 0): close that long after the connection opened (its first byte).
//!
//! Everything after the cut is discarded. When the rule ends before the cut, the connection
//! carries on untouched; after it, it stays cut.

use super::connection::Ledger;
use super::{Behaviour, Ending, Kind, Outcome, Start, TickAction};
use crate::config::fields::Fields;
use crate::config::ConfigError;
use crate::flow::{Close, Direction};
use crate::schedule::nanos;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub after_bytes: Option<u64>,
    pub after: Option<Duration>,
}

impl Cut {
    /// How many of `size` new bytes may pass after `forwarded` bytes already did: `size` when
    /// the limit is not reached, fewer (possibly 0) when this chunk reaches or crosses it.
    pub fn allowance(&self, forwarded: u64, size: usize) -> Option<usize> {
        let limit = self.after_bytes?;
        let left = limit.saturating_sub(forwarded);
        Some(usize::try_from(left).unwrap_or(usize::MAX).min(size))
    }
}

impl Kind for Cut {
    const KEY: &'static str = "cut";
    const PARAMS: &'static [&'static str] = &["afterBytes", "after"];
    type State = State;

    fn parse(params: &Fields<'_>) -> Result<Cut, ConfigError> {
        let after = params.duration("after")?;
        let after_bytes = params.u64("afterBytes")?;
        if after_bytes == Some(0) {
            return Err(ConfigError::new(
                params.path("afterBytes"),
                "0 is out of range (at least 1; use abort to forward nothing)",
            ));
        }
        if after_bytes.is_none() && after.is_none() {
            return Err(ConfigError::new(
                params.at(),
                "needs afterBytes or after (or both)",
            ));
        }
        Ok(Cut { after_bytes, after })
    }

    fn start(&self, at: Start) -> State {
        State {
            spec: *self,
            deadline: self.after.map(|d| at.opened_at.saturating_add(nanos(d))),
            // Applied to an open connection that already carried the allowance.
            done: self.after_bytes.is_some_and(|limit| at.forwarded >= limit),
        }
    }
}

#[derive(Debug)]
pub struct State {
    spec: Cut,
    deadline: Option<u64>,
    /// The byte limit was reached: everything is dropped until the next tick closes.
    done: bool,
}

impl Behaviour for State {
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        _now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        if self.done {
            return ledger.drop_all(dir, size);
        }
        let Some(keep) = self.spec.allowance(ledger.forwarded(), size) else {
            return ledger.forward(dir, size);
        };
        let limit_reached = self
            .spec
            .after_bytes
            .is_some_and(|limit| ledger.forwarded().saturating_add(keep as u64) >= limit);
        if keep == size && !limit_reached {
            return ledger.forward(dir, size);
        }
        self.done = true;
        Outcome {
            close: Some(Close::AtNextTick),
            ..ledger.truncate(dir, size, keep)
        }
    }

    fn on_tick(&mut self, _ledger: &mut Ledger, now: u64) -> Option<TickAction> {
        (self.done || self.deadline.is_some_and(|at| now >= at)).then_some(TickAction::Close)
    }

    fn next_wake(&self) -> Option<u64> {
        if self.done {
            Some(0)
        } else {
            self.deadline
        }
    }

    fn end(&self, _ledger: &Ledger) -> Ending {
        if self.done {
            Ending::Close
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
    fn allowance() {
        let c = Cut {
            after_bytes: Some(100),
            after: None,
        };
        assert_eq!(c.allowance(0, 60), Some(60));
        assert_eq!(c.allowance(60, 60), Some(40));
        assert_eq!(c.allowance(100, 5), Some(0));
        assert_eq!(c.allowance(150, 5), Some(0));
        let t = Cut {
            after_bytes: None,
            after: Some(Duration::from_secs(5)),
        };
        assert_eq!(t.allowance(0, 10), None);
    }

    #[test]
    fn parameters() {
        assert_eq!(
            parse_kind(r#""cut": {"afterBytes": 4096}"#),
            FaultKind::Cut(Cut {
                after_bytes: Some(4096),
                after: None
            })
        );
        assert_eq!(
            parse_kind(r#""cut": {"after": "5s", "afterBytes": 1}"#),
            FaultKind::Cut(Cut {
                after_bytes: Some(1),
                after: Some(Duration::from_secs(5))
            })
        );
        for (params, want) in [
            (r#""cut": {}"#, "faults[0].cut: needs afterBytes or after"),
            (
                r#""cut": {"afterBytes": 0}"#,
                "faults[0].cut.afterBytes: 0 is out of range",
            ),
            (
                r#""cut": {"afterBytes": -5}"#,
                "faults[0].cut.afterBytes: invalid value: integer `-5`",
            ),
            (
                r#""cut": {"after": "later"}"#,
                r#"faults[0].cut.after: invalid duration "later""#,
            ),
        ] {
            let got = parse_error(params);
            assert!(got.contains(want), "{params}: got {got}");
        }
    }
}
