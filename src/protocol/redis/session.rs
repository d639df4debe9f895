//! One Redis connection's commands and their replies: what is counted (`requests`), timed
//! (`duration`) and what failed (`errors`) — and, while rules act on commands, the rewriting
//! that makes a command fail, wait or end the connection.
//!
//! Redis answers each command with one reply, in order, so pipelines pair by position. The
//! exceptions are handled: out-of-band pushes (RESP3 `>`; RESP2 `message`/`pmessage`/`smessage`
//! arrays once subscribed) are not replies; a `SUBSCRIBE a b` is confirmed once per channel;
//! attributes (RESP3 `|`) precede a reply. `MULTI`/`EXEC` need nothing special: each queued
//! command is answered `+QUEUED`, and `EXEC` by one array (errors inside it are counted).
//!
//! An injected error is Redis's own: the command is replaced by one Redis does not know
//! (`dbfault-injected`), which it answers with an error without touching data — inside
//! `MULTI` it also discards the transaction at `EXEC`, as a real error at queue time does —
//! and that error is rewritten to the rule's (`-READONLY ...`). Only that provoked error is
//! rewritten.
//!
//! Bounds: at most [`MAX_PENDING`](crate::protocol::MAX_PENDING) commands awaiting replies (a longer pipeline is counted but
//! not timed, and rules do not act on it); while rules act, the start of one command (its
//! first 4 KiB of text and their framing, or an inline command of up to 64 KiB) withheld until
//! it is decided, and the start of one error reply while an injected error is awaited.

use super::commands::COMMANDS;
use super::resp::{Resp, Step};
use super::tracker::{Stage, Tracker};
use crate::flow::Direction;
use crate::protocol::Callbacks;
use crate::protocol::{place, Code, Protocol, Read, Splices, Verdict};

/// The error codes counted by name (the `code` label); others are `other`.
pub const ERROR_CODES: [&str; 24] = [
    "ASK",
    "BUSY",
    "BUSYGROUP",
    "BUSYKEY",
    "CLUSTERDOWN",
    "CROSSSLOT",
    "ERR",
    "EXECABORT",
    "LOADING",
    "MASTERDOWN",
    "MISCONF",
    "MOVED",
    "NOAUTH",
    "NOGROUP",
    "NOPERM",
    "NOPROTO",
    "NOREPLICAS",
    "NOSCRIPT",
    "OOM",
    "READONLY",
    "TRYAGAIN",
    "UNBLOCKED",
    "WRONGPASS",
    "WRONGTYPE",
];

/// The `code` of an error line: its first word, if it is a known one.
pub fn error_code(line: &[u8]) -> Code {
    let word = line.split(|&b| b == b' ').next().unwrap_or_default();
    Code::Word(
        ERROR_CODES
            .iter()
            .copied()
            .find(|c| c.as_bytes() == word)
            .unwrap_or("other"),
    )
}

/// The `command` label of a command name (case-insensitive), `other` if Redis has none such.
pub fn command(name: &[u8]) -> &'static str {
    let mut lower = [0u8; 32];
    let Some(slot) = lower.get_mut(..name.len()) else {
        return "other";
    };
    slot.copy_from_slice(name);
    slot.make_ascii_lowercase();
    COMMANDS
        .binary_search_by(|c| c.as_bytes().cmp(slot))
        .ok()
        .and_then(|i| COMMANDS.get(i).copied())
        .unwrap_or("other")
}

/// One connection.
#[derive(Debug)]
pub struct Session {
    client: Resp,
    server: Resp,
    track: Tracker,
    splices: Splices,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            client: Resp::client(),
            server: Resp::server(),
            track: Tracker::default(),
            splices: Splices::default(),
        }
    }

    pub fn reading(&self) -> bool {
        self.track.stage != Stage::NotRead
    }

    pub fn recognized(&self) -> Option<Protocol> {
        self.track.recognized
    }

    /// Whether events in `dir` must be rewritten even when no rule may act on new commands.
    pub fn rewriting(&self, dir: Direction) -> bool {
        self.splices.busy(dir) || (dir == Direction::ToClient && self.track.injections > 0)
    }

    /// How many of the next bytes in `dir` need not be read (see [`Resp::skippable`]);
    /// everything once the session is not read any more.
    pub fn skippable(&self, dir: Direction) -> usize {
        match dir {
            _ if self.track.stage == Stage::NotRead => usize::MAX,
            Direction::ToDatabase => self.client.skippable(),
            Direction::ToClient => self.server.skippable(),
        }
    }

    /// Passes over `n` bytes in `dir` (at most [`Session::skippable`]) without reading them.
    pub fn skip(&mut self, dir: Direction, n: usize) {
        match dir {
            Direction::ToDatabase => self.client.skip(n),
            Direction::ToClient => self.server.skip(n),
        }
    }

    /// Bytes of one data event in `dir`, read only.
    pub fn on_data(&mut self, dir: Direction, bytes: &[u8], cb: &mut dyn Callbacks) {
        let Session {
            client,
            server,
            track,
            ..
        } = self;
        match dir {
            Direction::ToDatabase => client.read(bytes, &mut |step| {
                track.client_step(step, cb, None);
            }),
            Direction::ToClient => server.read(bytes, &mut |step| {
                track.server_step(step, cb);
            }),
        }
        self.after_read();
    }

    fn after_read(&mut self) {
        if self.track.stage == Stage::NotRead {
            self.client.stop();
            self.server.stop();
        }
    }

    /// Bytes of one data event in `dir`, read and rewritten as the rules (asked through `cb`
    /// for each new command while they may act) and earlier decisions require.
    pub fn rewrite(&mut self, dir: Direction, chunk: &[u8], cb: &mut dyn Callbacks) -> Verdict {
        let Session {
            client,
            server,
            track,
            splices,
        } = self;
        let reading = match dir {
            Direction::ToDatabase => client.reading(),
            Direction::ToClient => server.reading(),
        };
        let judging = cb.judging();
        let verdict = splices
            .of(dir)
            .rewrite(chunk, reading, |splice, output, carry| {
                let mut hold_until = None;
                let mut closes = false;
                let mut unreadable = false;
                match dir {
                    Direction::ToDatabase => {
                        client.read(chunk, &mut |step| {
                            if splice.ended {
                                return;
                            }
                            match step {
                                Step::Command { at, head, .. } => {
                                    let start = at as isize - head as isize;
                                    let mut rewrites = None;
                                    let edit = track.client_step(step, cb, Some(&mut rewrites));
                                    if let Some(until) = rewrites {
                                        hold_until =
                                            Some(hold_until.map_or(until, |t: u64| t.max(until)));
                                    }
                                    closes |= splice.place_request(output, carry, edit, start, at);
                                }
                                Step::CommandEnd { at } => {
                                    if !splice.request_end(output, at) {
                                        // Withheld bytes of something that was no command.
                                        place(output, carry, splice, None, 0, 0);
                                    }
                                }
                                other => {
                                    unreadable |= matches!(other, Step::Unreadable);
                                    track.client_step(other, cb, None);
                                    place(output, carry, splice, None, 0, 0);
                                }
                            }
                        });
                        splice.drop_rest(output);
                    }
                    Direction::ToClient => {
                        server.read(chunk, &mut |step| {
                            if splice.ended {
                                return;
                            }
                            let at_head = match &step {
                                Step::Reply { at, head, .. } => Some((
                                    *at as isize
                                        - i64::try_from(*head).map_or(isize::MAX, |h| h as isize),
                                    *at,
                                )),
                                _ => None,
                            };
                            unreadable |= matches!(step, Step::Unreadable);
                            let edit = track.server_step(step, cb);
                            match at_head {
                                Some((start, at)) => {
                                    closes |= place(output, carry, splice, edit, start, at);
                                }
                                None => {
                                    place(output, carry, splice, None, 0, 0);
                                }
                            }
                        });
                    }
                }
                let reader = match dir {
                    Direction::ToDatabase => &*client,
                    Direction::ToClient => &*server,
                };
                let undecided = reader
                    .unreported()
                    .filter(|&(kind, _)| match dir {
                        Direction::ToDatabase => judging,
                        // A fatal injection replaces whatever answers it, an error only a
                        // provoked error.
                        Direction::ToClient => {
                            track.injections > 0 && (kind == b'-' || track.front_is_fatal())
                        }
                    })
                    .filter(|_| !unreadable)
                    .map(|(_, read)| read);
                Read {
                    undecided,
                    closes,
                    hold_until,
                }
            });
        self.after_read();
        verdict
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
