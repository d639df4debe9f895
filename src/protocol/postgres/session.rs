//! One PostgreSQL connection's statements and their answers: what is counted (`requests`),
//! timed (`duration`) and what failed (`errors`), from the messages of both directions — and,
//! while rules act on statements, the rewriting that makes a statement fail, wait or end the
//! connection.
//!
//! The server answers in order. A simple Query is one *group* (its statements, then
//! ReadyForQuery); extended-protocol messages up to a Sync are another (each Execute a
//! statement, then ReadyForQuery), and a client may pipeline many groups. Each statement ends
//! with CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse; after an error
//! the server skips the rest of the group, so those statements end without an answer (counted
//! as requests, not timed). A named prepared statement is known by the text it was prepared
//! with, on every execution.
//!
//! An injected error is the server's own: the statement is replaced by one that fails without
//! touching data (`FETCH` from a cursor that does not exist; for an Execute, a portal that does
//! not exist: SQLSTATE 34000), so the server itself skips the rest of the Query or of the
//! batch up to Sync and fails an explicit transaction (later statements get 25P02 until
//! ROLLBACK). Its ErrorResponse is then rewritten to the rule's SQLSTATE and message. A new
//! session refused at startup has its startup message replaced by one without a user (the
//! server answers FATAL 28000 before any authentication), rewritten the same way. Only the
//! error the replacement provoked is rewritten: a server that fails it for its own reason
//! (a transaction already failed: 25P02) is heard as it is.
//!
//! Protocol 3.2 (and any 3.x a server negotiates down to 3.0–3.2 with NegotiateProtocolVersion)
//! frames every message this session reads as 3.0 does; a session the server runs in a newer
//! minor version is not read past its startup. Statement text is split as the server says it
//! quotes (`standard_conforming_strings` in ParameterStatus).
//!
//! Bounds: at most [`MAX_PENDING`](crate::protocol::MAX_PENDING) statements and as many groups awaiting answers (a longer
//! pipeline is counted but not timed, and rules do not act on it), [`MAX_PREPARED`](crate::protocol::MAX_PREPARED) named statements and portals
//! and [`MAX_PREPARED_TEXT`](crate::protocol::MAX_PREPARED_TEXT) bytes of their text (the oldest is forgotten first: its
//! executions count as `other`), and while rules act, the start of one message per direction
//! ([`super::CAPTURE_LIMIT`] bytes and its header) withheld until it is decided.

use super::place::{Place, Reported};
use super::reader::{Opening, Reader, Step};
use super::tracker::{Rewrites, Tracker};
use crate::flow::Direction;
pub use crate::protocol::Event;
use crate::protocol::{Callbacks, ReadOnly};
use crate::protocol::{Protocol, Read, Splices, Verdict};

pub use super::tracker::MAX_GROUPS;

/// How bytes reach a reader: read, or passed over.
type Drive<'a> = dyn FnMut(&mut Reader, &mut dyn FnMut(Step<'_>)) + 'a;

/// One connection.
#[derive(Debug)]
pub struct Session {
    client: Reader,
    server: Reader,
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
            client: Reader::client(),
            server: Reader::server(),
            track: Tracker::default(),
            splices: Splices::default(),
        }
    }

    /// Whether the session still reads bytes (a caller may skip reading them otherwise).
    pub fn reading(&self) -> bool {
        self.client.reading() || self.server.reading()
    }

    /// What the connection turned out to speak, once known.
    pub fn recognized(&self) -> Option<Protocol> {
        self.track.recognized
    }

    /// Whether events in `dir` must go through [`Session::rewrite`] even when no rule may act
    /// on new statements: an injected error is awaited, or bytes are withheld or discarded.
    pub fn rewriting(&self, dir: Direction) -> bool {
        self.splices.busy(dir) || (dir == Direction::ToClient && self.track.injections > 0)
    }

    /// How many of the next bytes in `dir` need not be read (see [`Reader::skippable`]);
    /// everything once the session is not read any more.
    pub fn skippable(&self, dir: Direction) -> usize {
        let reader = match dir {
            Direction::ToDatabase => &self.client,
            Direction::ToClient => &self.server,
        };
        if reader.reading() {
            reader.skippable()
        } else {
            usize::MAX
        }
    }

    /// Passes over `n` bytes in `dir` (at most [`Session::skippable`]) without reading them.
    pub fn skip(&mut self, dir: Direction, n: usize, cb: &mut dyn Callbacks) {
        self.feed(dir, cb, &mut |reader, _| reader.skip(n));
    }

    /// Bytes of one data event in `dir`, read only (no rule is asked).
    pub fn on_data(&mut self, dir: Direction, bytes: &[u8], cb: &mut dyn Callbacks) {
        self.feed(dir, cb, &mut |reader, step| {
            reader.read(bytes, step);
        });
    }

    fn feed(&mut self, dir: Direction, cb: &mut dyn Callbacks, drive: &mut Drive<'_>) {
        // Read only: no rule acts on what is passed over or only read.
        let cb = &mut ReadOnly(cb);
        let Session {
            client,
            server,
            track,
            ..
        } = self;
        if !track.first_contact(dir, client, server, cb) {
            return;
        }
        match dir {
            Direction::ToDatabase if client.reading() => {
                drive(client, &mut |step| {
                    track.client_step(step, server, cb, &mut Rewrites::default());
                });
            }
            Direction::ToClient if server.reading() => {
                drive(server, &mut |step| {
                    track.server_step(step, cb, client);
                });
            }
            _ => {}
        }
        track.settle(client, server);
    }

    /// Bytes of one data event in `dir`, read and rewritten as the rules (asked through `cb`
    /// for each new statement, and for a new session's start, while they may act) and earlier
    /// decisions require.
    pub fn rewrite(&mut self, dir: Direction, chunk: &[u8], cb: &mut dyn Callbacks) -> Verdict {
        let Session {
            client,
            server,
            track,
            splices,
        } = self;
        let judging = cb.judging();
        let splice = splices.of(dir);
        // After the stream ended nothing is read, and the first contact is not counted.
        let reading = !splice.ended
            && track.first_contact(dir, client, server, cb)
            && match dir {
                Direction::ToDatabase => client.reading(),
                Direction::ToClient => server.reading(),
            };
        splice.rewrite(chunk, reading, |splice, output, carry| {
            if splice.drop_left > 0 {
                let n = usize::try_from(splice.drop_left)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                output.drop_to(n);
                splice.drop_left -= n as u64;
            }
            let mut rewrites = Rewrites::default();
            let mut unreadable = false;
            let mut place = Place {
                output,
                carry,
                splice,
                server: dir == Direction::ToClient,
                closes: false,
            };
            match dir {
                Direction::ToDatabase => {
                    client.read(chunk, &mut |step| {
                        if place.splice.ended {
                            return;
                        }
                        let reported = Reported::of(&step);
                        // A startup is decided when its contents are read (its Message
                        // step).
                        let startup = matches!(step, Step::Opened(Opening::Startup { .. }));
                        unreadable |= matches!(step, Step::Unreadable);
                        let edit = track.client_step(step, server, cb, &mut rewrites);
                        if !startup {
                            place.edit(edit, reported);
                        }
                    });
                }
                Direction::ToClient => {
                    server.read(chunk, &mut |step| {
                        if place.splice.ended {
                            return;
                        }
                        let reported = Reported::of(&step);
                        unreadable |= matches!(step, Step::Unreadable);
                        let edit = track.server_step(step, cb, client);
                        place.edit(edit, reported);
                    });
                }
            }
            let closes = place.closes;
            track.settle(client, server);
            let reader = match dir {
                Direction::ToDatabase => &*client,
                Direction::ToClient => &*server,
            };
            // A message still undecided at the end of the chunk is withheld until it is.
            let undecided = reader
                .unreported()
                .filter(|&(tag, _)| match dir {
                    Direction::ToDatabase => judging && matches!(tag, 0 | b'Q' | b'E'),
                    // An error may be the provoked one; a ReadyForQuery may carry a fatal
                    // injection's error for statements never answered.
                    Direction::ToClient => track.injections > 0 && matches!(tag, b'E' | b'Z'),
                })
                .filter(|_| !unreadable)
                .map(|(_, read)| read as u64);
            Read {
                undecided,
                closes,
                hold_until: rewrites.hold_until,
            }
        })
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "session_rewrite_tests.rs"]
mod rewrite_tests;
