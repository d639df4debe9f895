//! Database wire protocols, read as they pass: pure, incremental, bounded in memory.

pub mod postgres;

use crate::fault::{Direction, Effect};
use std::ops::Range;

/// The bytes of a data event of `size` (Envoy's whole buffer) that a protocol reader sees,
/// given what happens to them: only bytes that reach the peer, each once. A held (paused)
/// client stream presents its buffer again with the next event: `held_seen` is how much of
/// its front was read already. Returns the range to read and the new `held_seen`.
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
        // The stream resumed (no event); the next event is new bytes only.
        assert_eq!(passing(Up, 25, Effect::Forward, 25), (25..25, 0));
        // Dropped bytes never reach the peer; a cut keeps a head.
        assert_eq!(passing(Up, 40, Effect::Drop { keep: 0 }, 0), (0..0, 0));
        assert_eq!(passing(Down, 70, Effect::Drop { keep: 40 }, 0), (0..40, 0));
        // A drop of bytes partly seen while held: nothing more to read.
        assert_eq!(passing(Up, 30, Effect::Drop { keep: 5 }, 20), (20..20, 0));
        // The server side never holds, and leaves the client's count alone.
        assert_eq!(passing(Down, 8, Effect::Forward, 7), (0..8, 7));
    }
}
