//! `blackhole: {"closeAfter": "30s"}` — forward nothing in either direction and keep the
//! connection open, so that the client hangs as on a network partition. Bytes are discarded
//! (not buffered), so a hung connection costs no memory. With `closeAfter`, the connection is
//! closed that long after the blackhole began; without it, it stays until the client gives up.

use super::{nanos, Effect, Outcome};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackhole {
    /// `None`: never closed by dbfault.
    pub close_after: Option<Duration>,
}

impl Blackhole {
    /// When a connection blackholed at `now` is to be closed.
    pub fn close_at(&self, now: u64) -> Option<u64> {
        self.close_after.map(|d| now.saturating_add(nanos(d)))
    }
}

pub fn on_data() -> Outcome {
    Outcome {
        effect: Effect::Drop { keep: 0 },
        close: false,
    }
}
