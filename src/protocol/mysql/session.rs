//! One MySQL/MariaDB connection: packets framed incrementally in both directions (3-byte
//! length, sequence id, payload; a payload of 16 MiB − 1 continues in the next packet), the
//! connection phase (greeting, handshake response, authentication exchange), then commands and
//! their responses: OK, ERR, EOF, result sets (column count, column definitions, rows, with
//! and without `CLIENT_DEPRECATE_EOF`), several results for one multi-statement query
//! (`SERVER_MORE_RESULTS_EXISTS`), `LOCAL INFILE` requests (the file's packets pass untouched),
//! prepared statements (`COM_STMT_PREPARE` remembered by the id the server returns;
//! `COM_STMT_EXECUTE` counted and matched by the prepared text).
//!
//! A client that asks for TLS (`CLIENT_SSL`) or compression (`CLIENT_COMPRESS`) makes the
//! session L4-only (`mysql-tls`, `mysql-compressed`): nothing more is read.
//!
//! An injected error is the server's own answer rewritten: the command is replaced by one the
//! server refuses without running anything — a query that does not parse
//! (`dbfault_injected_<errno>`: ERR 1064), an execute of a statement id that does not exist
//! (ERR 1243) — and that ERR is rewritten to the rule's errno, SQLSTATE and message, in the
//! same place of the sequence. An error that rolls back the whole transaction (1213, see
//! [`super::ROLLBACK_TABLE`]) is stood in for by a `ROLLBACK AND NO CHAIN NO RELEASE` marked
//! with the same comment, whose OK is rewritten to the rule's ERR: the server is left as the
//! real error leaves it. Statements before the acted-on one in a multi-statement query reach
//! the server as they were; the stand-in starts where the acted-on one did (a position every
//! reading of the text agrees is between statements, see [`crate::protocol::sql`]), and the
//! rest of the query is dropped, as the server skips it after an error. A refused connection
//! gets the ERR in place of the greeting.
//!
//! Bounds: the first [`CAPTURE_LIMIT`] bytes of a command (its text), 256 bytes of a response
//! packet; [`MAX_PENDING`](crate::protocol::MAX_PENDING) commands awaiting responses; [`MAX_PREPARED`](crate::protocol::MAX_PREPARED) statements and
//! [`MAX_PREPARED_TEXT`](crate::protocol::MAX_PREPARED_TEXT) bytes of their text (oldest forgotten first).

#[cfg(test)]
use super::greets;
use super::packet::{Framer, Step, COM_QUERY};
use super::tracker::{Expect, Tracker, COM_STMT_PREPARE, SERVER_KEEP};
use crate::flow::Direction;
use crate::protocol::{place, Protocol, Read, Splices, Verdict};
use crate::protocol::{Callbacks, ReadOnly};
use std::collections::VecDeque;

use crate::protocol::CAPTURE_LIMIT;

/// One connection.
#[derive(Debug)]
pub struct Session {
    client: Framer,
    server: Framer,
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
            client: Framer::default(),
            server: Framer::default(),
            track: Tracker {
                recognized: None,
                expect: Expect::Greeting,
                deprecate_eof: false,
                backslash_escapes: true,
                pending: VecDeque::new(),
                prepared: VecDeque::new(),
                prepared_text: 0,
                injections: 0,
                continuing: false,
            },
            splices: Splices::default(),
        }
    }

    pub fn reading(&self) -> bool {
        self.track.reading()
    }

    pub fn recognized(&self) -> Option<Protocol> {
        self.track.recognized
    }

    pub fn rewriting(&self, dir: Direction) -> bool {
        self.splices.busy(dir)
            || (dir == Direction::ToClient
                && (self.track.injections > 0 || self.track.expect == Expect::Greeting))
    }

    /// How many of the next bytes in `dir` need not be read: the rest of a server packet
    /// whose first bytes were read (result rows are only counted past); everything once the
    /// session is not read any more.
    pub fn skippable(&self, dir: Direction) -> usize {
        match dir {
            _ if !self.track.reading() => usize::MAX,
            Direction::ToClient => self.server.skippable(),
            Direction::ToDatabase => 0,
        }
    }

    /// Passes over `n` bytes in `dir` (at most [`Session::skippable`]) without reading them.
    pub fn skip(&mut self, dir: Direction, n: usize) {
        if dir == Direction::ToClient {
            self.server.skip(n);
        }
    }

    pub fn on_data(&mut self, dir: Direction, bytes: &[u8], cb: &mut dyn Callbacks) {
        let _ = self.rewrite_inner(dir, bytes, &mut ReadOnly(cb), false);
    }

    pub fn rewrite(&mut self, dir: Direction, chunk: &[u8], cb: &mut dyn Callbacks) -> Verdict {
        self.rewrite_inner(dir, chunk, cb, true)
    }

    fn rewrite_inner(
        &mut self,
        dir: Direction,
        chunk: &[u8],
        cb: &mut dyn Callbacks,
        rewriting: bool,
    ) -> Verdict {
        let Session {
            client,
            server,
            track,
            splices,
        } = self;
        let judging = cb.judging();
        let reading = track.reading();
        let verdict = splices
            .of(dir)
            .rewrite(chunk, reading, |splice, output, carry| {
                let mut hold_until = None;
                let mut closes = false;
                match dir {
                    Direction::ToDatabase => {
                        let infile = track.expect == Expect::Infile;
                        client.read(
                            chunk,
                            &mut |first| match (infile, first) {
                                (true, _) => 0,
                                (false, COM_QUERY | COM_STMT_PREPARE) => CAPTURE_LIMIT + 1,
                                _ => 64,
                            },
                            &mut |step| {
                                if splice.ended || !track.reading() {
                                    return;
                                }
                                match step {
                                    Step::Packet(p) => {
                                        let start = p.at as isize - p.head as isize;
                                        let at = p.at;
                                        let edit = track.client_packet(&p, cb, &mut hold_until);
                                        closes |=
                                            splice.place_request(output, carry, edit, start, at);
                                    }
                                    Step::End { at } => {
                                        splice.request_end(output, at);
                                    }
                                }
                            },
                        );
                        splice.drop_rest(output);
                    }
                    Direction::ToClient => {
                        server.read(chunk, &mut |_| SERVER_KEEP, &mut |step| {
                            if splice.ended || !track.reading() {
                                return;
                            }
                            match step {
                                Step::Packet(p) => {
                                    let start = p.at as isize - p.head as isize;
                                    let edit = track.server_packet(&p, cb);
                                    closes |= place(output, carry, splice, edit, start, p.at);
                                }
                                Step::End { .. } => {}
                            }
                        });
                    }
                }
                let framer = match dir {
                    Direction::ToDatabase => &*client,
                    Direction::ToClient => &*server,
                };
                let undecided = framer
                    .unreported()
                    .filter(|_| rewriting && track.reading())
                    .filter(|_| match dir {
                        Direction::ToDatabase => judging && track.expect != Expect::Infile,
                        Direction::ToClient => {
                            track.injections > 0 || track.expect == Expect::Greeting
                        }
                    })
                    .map(|read| read as u64);
                Read {
                    undecided,
                    closes,
                    hold_until,
                }
            });
        Verdict {
            replace: if rewriting { verdict.replace } else { None },
            ..verdict
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
