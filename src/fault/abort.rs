//! `abort: {}` — close the connection as soon as its upstream is identified. No parameters.
//!
//! Nothing of the identifying event is forwarded: a client-first protocol's first bytes never
//! reach the database, a server-first protocol's greeting never reaches the client. An open
//! connection hit when the rule activates (`applyTo: all`) is closed at the next tick, idle or
//! not (or at its next byte, whichever comes first). Envoy closes with a FIN: there is no RST in
//! the ABI. When the rule ends, what was closed stays closed.

use super::connection::Ledger;
use super::{Behaviour, Ending, Kind, Outcome, Start, TickAction};
use crate::config::fields::Fields;
use crate::config::ConfigError;
use crate::flow::{Close, Direction};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort;

impl Kind for Abort {
    const KEY: &'static str = "abort";
    const PARAMS: &'static [&'static str] = &[];
    type State = State;

    fn parse(_params: &Fields<'_>) -> Result<Abort, ConfigError> {
        Ok(Abort)
    }

    fn start(&self, at: Start) -> State {
        State {
            close_at_tick: !at.identifying,
        }
    }
}

#[derive(Debug)]
pub struct State {
    /// The connection was already open: the next tick closes it if no byte does first.
    close_at_tick: bool,
}

impl Behaviour for State {
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        _now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        Outcome {
            close: Some(Close::Now),
            ..ledger.drop_all(dir, size)
        }
    }

    fn on_tick(&mut self, _ledger: &mut Ledger, _now: u64) -> Option<TickAction> {
        self.close_at_tick.then_some(TickAction::Close)
    }

    fn next_wake(&self) -> Option<u64> {
        self.close_at_tick.then_some(0)
    }

    fn end(&self, _ledger: &Ledger) -> Ending {
        Ending::Close
    }
}
