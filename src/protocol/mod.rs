//! Database wire protocols, read as they pass: pure, incremental, bounded in memory.

pub mod postgres;

use crate::fault::{Close, Direction, Effect};
use std::ops::Range;
use std::rc::Rc;

/// An error a rule answers with, in the protocol's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The SQLSTATE (five characters of `[0-9A-Z]`).
    pub code: [u8; 5],
    pub message: Rc<str>,
    /// The session ends with it (PostgreSQL: severity `FATAL`, then the connection closes).
    pub fatal: bool,
}

/// What a rule is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// A new session is starting (its startup message is about to reach the server).
    Startup,
    /// The client issued a statement: its command and its text (the first
    /// [`postgres::CAPTURE_LIMIT`] bytes at most).
    Statement {
        command: postgres::sql::Command,
        text: &'a [u8],
    },
}

/// What a rule does to a statement (or a starting session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// It does not execute; the client receives this error instead.
    Error(ErrorReply),
    /// The client's bytes from the read that carries it are held until then (nanoseconds).
    Delay(u64),
    /// It does not reach the server; the connection is closed.
    Abort,
}

/// Asked once per statement (and once at a session's start) while rules may act on a
/// connection; `None`: nothing happens to it.
pub type Judge<'a> = dyn FnMut(Ask<'_>) -> Option<Act> + 'a;

/// What becomes of one data event's bytes when rules act on statements.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The event's new bytes are replaced by these (`None`: forwarded as they are).
    pub replace: Option<Vec<u8>>,
    /// Hold the client → database stream until then (a delayed statement).
    pub hold_until: Option<u64>,
    /// Close the connection (after what is forwarded of this event).
    pub close: Option<Close>,
}

/// The bytes of a data event of `size` (Envoy's whole buffer) that a protocol reader sees,
/// given what happens to them: only bytes that reach the peer, each once. A held (paused)
/// client stream presents its buffer again with the next event: `held_seen` is how much of
/// its front was read already (0 again once the stream is resumed: Envoy then hands the held
/// bytes on without presenting them). Returns the range to read and the new `held_seen`.
pub fn passing(
    dir: Direction,
    size: usize,
    effect: Effect,
    held_seen: usize,
) -> (Range<usize>, usize) {
    let start = match dir {
        Direction::ToDatabase => held_seen.min(size),
        Direction::ToClient => 0,
    };
    let end = match effect {
        Effect::Forward | Effect::Hold => size,
        Effect::Drop { keep } => keep.min(size),
    };
    let held_seen = match (dir, effect) {
        (Direction::ToDatabase, Effect::Hold) => size,
        (Direction::ToDatabase, _) => 0,
        (Direction::ToClient, _) => held_seen,
    };
    (start..end.max(start), held_seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{ToClient as Down, ToDatabase as Up};

    #[test]
    fn each_passing_byte_is_seen_once() {
        assert_eq!(passing(Up, 10, Effect::Forward, 0), (0..10, 0));
        // Held, then more arrives: Envoy presents all 25, 10 of them seen already.
        assert_eq!(passing(Up, 10, Effect::Hold, 0), (0..10, 10));
        assert_eq!(passing(Up, 25, Effect::Hold, 10), (10..25, 25));
        // More arrives while still held: only the new bytes are read.
        assert_eq!(passing(Up, 30, Effect::Forward, 25), (25..30, 0));
        // Dropped bytes never reach the peer; a cut keeps a head.
        assert_eq!(passing(Up, 40, Effect::Drop { keep: 0 }, 0), (0..0, 0));
        assert_eq!(passing(Down, 70, Effect::Drop { keep: 40 }, 0), (0..40, 0));
        // A drop of bytes partly seen while held: nothing more to read.
        assert_eq!(passing(Up, 30, Effect::Drop { keep: 5 }, 20), (20..20, 0));
        // The server side never holds, and leaves the client's count alone.
        assert_eq!(passing(Down, 8, Effect::Forward, 7), (0..8, 7));
    }
}
