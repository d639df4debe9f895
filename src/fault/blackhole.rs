//! `blackhole: {"closeAfter": "30s"}` — forward nothing in either direction and keep the
//! connection open, so that the client hangs as on a network partition. Bytes are discarded
//! (not buffered), so a hung connection costs no memory.
//!
//! - `closeAfter` (optional, > 0): the connection is closed that long after the blackhole
//!   began. Without it, it stays until the client gives up.
//!
//! When the rule ends, the connection is closed: bytes were lost and its stream cannot resume.

use super::connection::Ledger;
use super::{Behaviour, Ending, Kind, Outcome, Start, TickAction};
use crate::config::fields::Fields;
use crate::config::ConfigError;
use crate::flow::Direction;
use crate::schedule::nanos;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackhole {
    /// `None`: never closed by dbfault.
    pub close_after: Option<Duration>,
}

impl Kind for Blackhole {
    const KEY: &'static str = "blackhole";
    const PARAMS: &'static [&'static str] = &["closeAfter"];
    type State = State;

    fn parse(params: &Fields<'_>) -> Result<Blackhole, ConfigError> {
        Ok(Blackhole {
            close_after: params.duration("closeAfter")?,
        })
    }

    fn start(&self, at: Start) -> State {
        State {
            close_at: self.close_after.map(|d| at.now.saturating_add(nanos(d))),
        }
    }
}

#[derive(Debug)]
pub struct State {
    close_at: Option<u64>,
}

impl Behaviour for State {
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        _now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        ledger.drop_all(dir, size)
    }

    fn on_tick(&mut self, _ledger: &mut Ledger, now: u64) -> Option<TickAction> {
        self.close_at
            .is_some_and(|at| now >= at)
            .then_some(TickAction::Close)
    }

    fn next_wake(&self) -> Option<u64> {
        self.close_at
    }

    fn end(&self, _ledger: &Ledger) -> Ending {
        Ending::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::rule::tests::{parse_error, parse_kind};

    #[test]
    fn parameters() {
        assert_eq!(
            parse_kind(r#""blackhole": {}"#),
            crate::fault::FaultKind::Blackhole(Blackhole { close_after: None })
        );
        assert_eq!(
            parse_kind(r#""blackhole": {"closeAfter": "30s"}"#),
            crate::fault::FaultKind::Blackhole(Blackhole {
                close_after: Some(Duration::from_secs(30))
            })
        );
        for (params, want) in [
            (
                r#""blackhole": {"closeAfter": "soon"}"#,
                r#"faults[0].blackhole.closeAfter: invalid duration "soon""#,
            ),
            (
                r#""blackhole": {"closeAfter": "0s"}"#,
                "faults[0].blackhole.closeAfter: invalid duration \"0s\": must be greater than zero",
            ),
            (
                r#""blackhole": {"after": "1s"}"#,
                "faults[0].blackhole.after: unknown field `after`",
            ),
        ] {
            let got = parse_error(params);
            assert!(got.contains(want), "{params}: got {got}");
        }
    }
}
