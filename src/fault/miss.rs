//! `miss: {}` — a cache-miss storm: matching Redis read commands are answered as if their keys
//! did not exist (`GET` a null, `MGET` a null per key, `HGETALL` an empty map, `EXISTS` 0...;
//! RESP2 or RESP3 as the session speaks), and do not execute. No parameters.
//!
//! Only on `protocol: "redis"` rules, and only for commands that have such an answer
//! (`protocol::redis::miss`): without `match.commands` the rule names all of them. Inside
//! `MULTI` the rule does not act (a queued command is answered by `EXEC`), nor on what scripts
//! run (the proxy never sees it). The work is done by the Redis session; at connection level
//! the kind does nothing.

use super::error::State;
use super::{Kind, Start};
use crate::config::fields::Fields;
use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss;

impl Kind for Miss {
    const KEY: &'static str = "miss";
    const PARAMS: &'static [&'static str] = &[];
    type State = State;

    fn parse(_params: &Fields<'_>) -> Result<Miss, ConfigError> {
        Ok(Miss)
    }

    fn start(&self, _at: Start) -> State {
        State
    }
}
