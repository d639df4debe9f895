//! `abort: {}` — close the connection as soon as its upstream is identified.
//!
//! Nothing of the identifying event is forwarded: a client-first protocol's first bytes never
//! reach the database, a server-first protocol's greeting never reaches the client. An open
//! connection hit when the rule activates (`applyTo: all`) is closed at the next tick, idle or
//! not. Envoy closes with a FIN after flushing nothing of ours: there is no RST in the ABI.

use super::{Effect, Outcome};

/// Every event of an aborted connection is dropped; the first one also closes it.
pub fn on_data() -> Outcome {
    Outcome {
        effect: Effect::Drop { keep: 0 },
        close: true,
    }
}
