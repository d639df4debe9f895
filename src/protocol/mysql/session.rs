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
//! packet; [`MAX_PENDING`] commands awaiting responses; [`MAX_PREPARED`] statements and
//! [`MAX_PREPARED_TEXT`] bytes of their text (oldest forgotten first).

#[cfg(test)]
use super::greets;
use super::packet::{
    ends_rows, err_fields, err_packet, lenenc, packet, status_flags, Framer, Packet, Step,
    COM_QUERY,
};
use super::stand_in::{class_of, injected_err, reply_errno, rolls_back, stand_in};
use crate::flow::Direction;
use crate::protocol::sql::{statements, Command, Dialect};
use crate::protocol::{
    edit_for, place, Act, Ask, Code, Edit, ErrorReply, Event, Judge, Protocol, Read, Splices,
    Verdict,
};
use std::collections::VecDeque;

use crate::protocol::{CAPTURE_LIMIT, MAX_PENDING, MAX_PREPARED, MAX_PREPARED_TEXT};
/// Bytes of a server packet kept (status flags, an ERR's code and message).
const SERVER_KEEP: usize = 256;

const CLIENT_COMPRESS: u32 = 0x0000_0020;
const CLIENT_SSL: u32 = 0x0000_0800;
const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;

const COM_QUIT: u8 = 0x01;
const COM_PING: u8 = 0x0e;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_CHANGE_USER: u8 = 0x11;

/// The errors a replaced command provokes.
const ER_PARSE_ERROR: u16 = 1064;
const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
/// A statement id no server hands out (MariaDB gives `0xffffffff` a meaning: the last one).
const NO_SUCH_STATEMENT: u32 = 0xffff_fffe;

/// A prepared statement, by the id the server gave it.
#[derive(Debug)]
struct Prepared {
    id: u32,
    command: &'static str,
    text: Box<[u8]>,
}

/// What the server's packets are expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The greeting (or an ERR instead).
    Greeting,
    /// Authentication: OK ends it, ERR ends the session; anything else continues it.
    Auth,
    /// Idle: packets answer the front command.
    Response,
    /// Definitions still to come (a result set's columns, a prepare's parameters and
    /// columns, with their EOFs), then rows or the next response.
    Skip { left: u64, rows: bool },
    /// Rows until EOF/OK (or ERR).
    Rows,
    /// LOCAL INFILE: the client sends the file; the server answers when it ends.
    Infile,
}

#[derive(Debug)]
struct Pending {
    command: &'static str,
    since: u64,
    injected: Option<Box<ErrorReply>>,
    /// A prepare: its text, kept until the server names it.
    prepare: Option<(&'static str, Box<[u8]>)>,
    /// Statements of a multi-statement query still to answer after this one.
    more: u32,
}

/// One connection.
#[derive(Debug)]
pub struct Session {
    client: Framer,
    server: Framer,
    track: Tracker,
    splices: Splices,
}

#[derive(Debug)]
struct Tracker {
    recognized: Option<Protocol>,
    reading: bool,
    expect: Expect,
    /// The client's capability flags (from its handshake response).
    deprecate_eof: bool,
    /// The server's last status flags said `NO_BACKSLASH_ESCAPES` is off.
    backslash_escapes: bool,
    pending: VecDeque<Pending>,
    prepared: VecDeque<Prepared>,
    prepared_text: usize,
    injections: usize,
    /// The front command's response has more results than statements were counted (a
    /// `CALL`): they belong to it until one without `SERVER_MORE_RESULTS_EXISTS`.
    continuing: bool,
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
                reading: true,
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
        self.track.reading
    }

    pub fn recognized(&self) -> Option<Protocol> {
        self.track.recognized
    }

    pub fn rewriting(&self, dir: Direction) -> bool {
        self.splices.busy(dir)
            || (dir == Direction::ToClient
                && (self.track.injections > 0 || self.track.expect == Expect::Greeting))
    }

    pub fn on_data(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) {
        let _ = self.rewrite_inner(dir, bytes, now, event, None, false);
    }

    pub fn rewrite(
        &mut self,
        dir: Direction,
        chunk: &[u8],
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
        judge: Option<&mut Judge<'_>>,
    ) -> Verdict {
        self.rewrite_inner(dir, chunk, now, event, judge, true)
    }

    fn rewrite_inner(
        &mut self,
        dir: Direction,
        chunk: &[u8],
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
        mut judge: Option<&mut Judge<'_>>,
        rewriting: bool,
    ) -> Verdict {
        let Session {
            client,
            server,
            track,
            splices,
        } = self;
        let judging = judge.is_some();
        let reading = track.reading;
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
                                if splice.ended || !track.reading {
                                    return;
                                }
                                match step {
                                    Step::Packet(p) => {
                                        let start = p.at as isize - p.head as isize;
                                        let at = p.at;
                                        let edit = track.client_packet(
                                            &p,
                                            now,
                                            event,
                                            judge.as_deref_mut(),
                                            &mut hold_until,
                                        );
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
                            if splice.ended || !track.reading {
                                return;
                            }
                            match step {
                                Step::Packet(p) => {
                                    let start = p.at as isize - p.head as isize;
                                    let edit =
                                        track.server_packet(&p, now, event, judge.as_deref_mut());
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
                    .filter(|_| rewriting && track.reading)
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

impl Tracker {
    fn recognize(&mut self, protocol: Protocol, event: &mut dyn FnMut(Event)) {
        if self.recognized.is_none() {
            self.recognized = Some(protocol);
            event(Event::Recognized(protocol));
        }
        if protocol != Protocol::Mysql {
            self.reading = false;
        }
    }

    fn push(
        &mut self,
        command: &'static str,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) -> bool {
        event(Event::Request(command));
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        self.pending.push_back(Pending {
            command,
            since: now(),
            injected: None,
            prepare: None,
            more: 0,
        });
        true
    }

    fn dialect(&self) -> Dialect {
        Dialect::Mysql {
            backslash_escapes: self.backslash_escapes,
        }
    }

    /// An OK's or EOF's status flags: the session's quoting.
    fn observe_status(&mut self, flags: u16) {
        self.backslash_escapes = flags & SERVER_STATUS_NO_BACKSLASH_ESCAPES == 0;
    }

    fn client_packet(
        &mut self,
        p: &Packet<'_>,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
        judge: Option<&mut Judge<'_>>,
        hold: &mut Option<u64>,
    ) -> Option<Edit> {
        match self.expect {
            Expect::Greeting => {
                // The client speaks first: not MySQL.
                self.recognize(Protocol::Unknown, event);
                return None;
            }
            Expect::Auth => {
                // The handshake response (or an SSL request), then authentication data.
                if p.seq == 1 && p.payload.len() >= 4 {
                    let caps = u32::from_le_bytes([
                        p.payload.first().copied().unwrap_or(0),
                        p.payload.get(1).copied().unwrap_or(0),
                        p.payload.get(2).copied().unwrap_or(0),
                        p.payload.get(3).copied().unwrap_or(0),
                    ]);
                    if caps & CLIENT_SSL != 0 {
                        self.recognize(Protocol::MysqlTls, event);
                    } else {
                        self.deprecate_eof = caps & CLIENT_DEPRECATE_EOF != 0;
                        if caps & CLIENT_COMPRESS != 0 {
                            // Compressed once authenticated: nothing after it is readable.
                            self.recognize(Protocol::MysqlCompressed, event);
                        } else {
                            self.recognize(Protocol::Mysql, event);
                        }
                    }
                }
                return None;
            }
            Expect::Infile => {
                if p.len == 0 {
                    // The file's end: the server answers the query now.
                    self.expect = Expect::Response;
                }
                return None;
            }
            _ => {}
        }
        if p.continuation || p.seq != 0 {
            // The rest of a long command, or long data.
            return None;
        }
        let (&kind, body) = p.payload.split_first()?;
        let text_of = |body: &[u8]| -> Box<[u8]> {
            body.get(..CAPTURE_LIMIT.min(body.len()))
                .unwrap_or_default()
                .into()
        };
        match kind {
            COM_QUERY => {
                let text = body
                    .get(..CAPTURE_LIMIT.min(body.len()))
                    .unwrap_or_default();
                let dialect = self.dialect();
                let parts = statements(text, dialect);
                let count = parts.len().max(1);
                let mut edit = None;
                let mut judge = judge;
                for (i, statement) in parts.iter().enumerate() {
                    let command = Command::of(statement, dialect).name();
                    if !self.push(command, now, event) {
                        continue;
                    }
                    if let Some(last) = self.pending.back_mut() {
                        last.more = (count - 1 - i) as u32;
                    }
                    if edit.is_some() {
                        continue;
                    }
                    let act = judge.as_deref_mut().and_then(|j| {
                        j(Ask::Statement {
                            command,
                            text: statement,
                        })
                    });
                    let offset =
                        (statement.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
                    let before = text.get(..offset).unwrap_or_default();
                    edit = self.act(act, hold, |reply| stand_in(before, reply));
                }
                if parts.is_empty() {
                    // An empty query is still answered (with an error).
                    self.push(Command::OTHER.name(), now, event);
                }
                edit
            }
            COM_STMT_PREPARE => {
                let text = text_of(body);
                let command = Command::of(&text, self.dialect()).name();
                // Counted when executed; answered here by the statement's definition.
                if self.pending.len() < MAX_PENDING {
                    self.pending.push_back(Pending {
                        command: "prepare",
                        since: now(),
                        injected: None,
                        prepare: Some((command, text)),
                        more: 0,
                    });
                }
                None
            }
            COM_STMT_EXECUTE => {
                let id = u32::from_le_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                    body.get(2).copied().unwrap_or(0),
                    body.get(3).copied().unwrap_or(0),
                ]);
                let (command, text) = match self.prepared.iter().find(|s| s.id == id) {
                    Some(s) => (s.command, s.text.clone()),
                    None => (Command::OTHER.name(), Box::default()),
                };
                if !self.push(command, now, event) {
                    return None;
                }
                let act = judge.and_then(|j| {
                    j(Ask::Statement {
                        command,
                        text: &text,
                    })
                });
                self.act(act, hold, |reply| {
                    if rolls_back(reply) {
                        return stand_in(b"", reply);
                    }
                    let mut e = vec![COM_STMT_EXECUTE];
                    e.extend_from_slice(&NO_SUCH_STATEMENT.to_le_bytes());
                    e.push(0);
                    e.extend_from_slice(&1u32.to_le_bytes());
                    packet(0, &e)
                })
            }
            COM_STMT_CLOSE => {
                let id = u32::from_le_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                    body.get(2).copied().unwrap_or(0),
                    body.get(3).copied().unwrap_or(0),
                ]);
                let text = &mut self.prepared_text;
                self.prepared.retain(|s| {
                    let keep = s.id != id;
                    if !keep {
                        *text -= s.text.len();
                    }
                    keep
                });
                // No response.
                None
            }
            COM_STMT_SEND_LONG_DATA => None,
            COM_QUIT => {
                event(Event::Request("quit"));
                None
            }
            COM_CHANGE_USER => {
                // Authentication again.
                self.push(Command::OTHER.name(), now, event);
                self.expect = Expect::Auth;
                None
            }
            COM_PING => {
                let pushed = self.push("ping", now, event);
                if !pushed {
                    return None;
                }
                let act = judge.and_then(|j| {
                    j(Ask::Statement {
                        command: "ping",
                        text: b"ping",
                    })
                });
                self.act(act, hold, |reply| stand_in(b"", reply))
            }
            _ => {
                self.push(Command::OTHER.name(), now, event);
                None
            }
        }
    }

    /// Carries out a rule's act on the command just pushed.
    fn act(
        &mut self,
        act: Option<Act>,
        hold: &mut Option<u64>,
        provoke: impl FnOnce(&ErrorReply) -> Vec<u8>,
    ) -> Option<Edit> {
        edit_for(act, hold, provoke, |reply| {
            if let Some(p) = self.pending.back_mut() {
                p.injected = Some(Box::new(reply));
                self.injections += 1;
            }
        })
    }

    /// The front command is answered (`failed`: by an ERR; `more`: the server announces
    /// another result). A multi-statement query's statements are answered one result each; a
    /// failed one ends the query (the rest get no answer), as does a last result that comes
    /// early. `None` when the result belongs to a command answered already.
    fn answer(
        &mut self,
        failed: bool,
        more: bool,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) -> Option<Pending> {
        self.expect = Expect::Response;
        if self.continuing {
            self.continuing = more && !failed;
            return None;
        }
        let done = self.pending.pop_front()?;
        // Injections leave the count here, answered or skipped, and nowhere else.
        self.injections = self
            .injections
            .saturating_sub(usize::from(done.injected.is_some()));
        event(Event::Answered {
            command: done.command,
            nanos: now().saturating_sub(done.since),
            failed,
            sampled: true,
        });
        if (failed || !more) && done.more > 0 {
            // The rest of the query gets no answer.
            for _ in 0..done.more {
                let Some(skipped) = self.pending.pop_front() else {
                    break;
                };
                self.injections = self
                    .injections
                    .saturating_sub(usize::from(skipped.injected.is_some()));
            }
        }
        self.continuing = more && !failed && done.more == 0;
        Some(done)
    }

    fn server_packet(
        &mut self,
        p: &Packet<'_>,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
        judge: Option<&mut Judge<'_>>,
    ) -> Option<Edit> {
        if p.continuation {
            return None;
        }
        let first = p.payload.first().copied();
        match self.expect {
            Expect::Greeting => {
                if p.seq != 0 || !matches!(first, Some(0x0a | 0xff)) {
                    self.recognize(Protocol::Unknown, event);
                    return None;
                }
                if first == Some(0xff) {
                    // The server refused the connection itself.
                    self.recognize(Protocol::Mysql, event);
                    let (_, class, _) = err_fields(p.payload);
                    event(Event::Error(Code::class(class)));
                    self.reading = false;
                    return None;
                }
                self.expect = Expect::Auth;
                // A connection-level error: the ERR in place of the greeting.
                let act = judge.and_then(|j| j(Ask::Startup));
                if let Some(Act::Error(reply)) = act {
                    self.recognize(Protocol::Mysql, event);
                    event(Event::Error(Code::class(class_of(&reply))));
                    return Some(Edit::ReplaceThenEnd(err_packet(
                        0,
                        &reply,
                        reply_errno(&reply),
                    )));
                }
                None
            }
            Expect::Auth => {
                match first {
                    Some(0x00) => {
                        self.observe_status(status_flags(p.payload));
                        self.expect = Expect::Response;
                    }
                    Some(0xff) => {
                        let (_, class, _) = err_fields(p.payload);
                        event(Event::Error(Code::class(class)));
                    }
                    _ => {}
                }
                None
            }
            Expect::Infile => None,
            Expect::Skip { left, rows } => {
                self.expect = match (left.saturating_sub(1), rows) {
                    (0, true) => Expect::Rows,
                    (0, false) => Expect::Response,
                    (left, rows) => Expect::Skip { left, rows },
                };
                None
            }
            Expect::Rows => {
                if first == Some(0xff) {
                    return self.final_packet(p, now, event);
                }
                if ends_rows(p.payload, p.len) {
                    let flags = status_flags(p.payload);
                    self.observe_status(flags);
                    let more = flags & SERVER_MORE_RESULTS_EXISTS != 0;
                    self.answer(false, more, now, event);
                }
                None
            }
            Expect::Response => self.final_packet(p, now, event),
        }
    }

    /// A packet that starts a response (or an ERR inside a result set).
    fn final_packet(
        &mut self,
        p: &Packet<'_>,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) -> Option<Edit> {
        let first = p.payload.first().copied();
        let front_prepare = self
            .pending
            .front()
            .and_then(|f| f.prepare.as_ref())
            .is_some();
        match first {
            Some(0xff) => {
                let (errno, class, message) = err_fields(p.payload);
                let done = self.answer(true, false, now, event)?;
                if let Some(reply) = done.injected {
                    // A `ROLLBACK` stand-in that fails is the server's own error.
                    let provoked = !rolls_back(&reply)
                        && ((errno == ER_PARSE_ERROR
                            && message.windows(7).any(|w| w == b"dbfault"))
                            || errno == ER_UNKNOWN_STMT_HANDLER);
                    if provoked || reply.fatal {
                        return Some(injected_err(p.seq, &reply, event));
                    }
                }
                event(Event::Error(Code::class(class)));
                None
            }
            Some(0x00) if front_prepare => {
                // COM_STMT_PREPARE_OK: id, columns, params.
                let id = u32::from_le_bytes([
                    p.payload.get(1).copied().unwrap_or(0),
                    p.payload.get(2).copied().unwrap_or(0),
                    p.payload.get(3).copied().unwrap_or(0),
                    p.payload.get(4).copied().unwrap_or(0),
                ]);
                let columns = u64::from(u16::from_le_bytes([
                    p.payload.get(5).copied().unwrap_or(0),
                    p.payload.get(6).copied().unwrap_or(0),
                ]));
                let params = u64::from(u16::from_le_bytes([
                    p.payload.get(7).copied().unwrap_or(0),
                    p.payload.get(8).copied().unwrap_or(0),
                ]));
                if let Some(done) = self.pending.pop_front() {
                    if let Some((command, text)) = done.prepare {
                        self.remember(id, command, text);
                    }
                }
                let eofs = u64::from(!self.deprecate_eof);
                let left = params
                    + columns
                    + if params > 0 { eofs } else { 0 }
                    + if columns > 0 { eofs } else { 0 };
                self.expect = if left == 0 {
                    Expect::Response
                } else {
                    Expect::Skip { left, rows: false }
                };
                None
            }
            Some(0x00) | Some(0xfe) => {
                let flags = status_flags(p.payload);
                self.observe_status(flags);
                let more = flags & SERVER_MORE_RESULTS_EXISTS != 0;
                // The OK of a `ROLLBACK` stand-in becomes the rule's error: the statement failed.
                let stand_in_ok = !self.continuing
                    && self
                        .pending
                        .front()
                        .and_then(|f| f.injected.as_deref())
                        .is_some_and(rolls_back);
                let done = self.answer(stand_in_ok, more, now, event)?;
                let reply = done.injected.filter(|_| stand_in_ok)?;
                Some(injected_err(p.seq, &reply, event))
            }
            Some(0xfb) => {
                // LOCAL INFILE: the client sends the file, then the server answers.
                self.expect = Expect::Infile;
                None
            }
            _ => {
                // A result set: its column count.
                let n = lenenc(p.payload).unwrap_or(0);
                let left = n + u64::from(!self.deprecate_eof);
                self.expect = if left == 0 {
                    Expect::Rows
                } else {
                    Expect::Skip { left, rows: true }
                };
                None
            }
        }
    }

    fn remember(&mut self, id: u32, command: &'static str, text: Box<[u8]>) {
        self.prepared_text += text.len();
        self.prepared.push_back(Prepared { id, command, text });
        while self.prepared.len() > MAX_PREPARED || self.prepared_text > MAX_PREPARED_TEXT {
            match self.prepared.pop_front() {
                Some(gone) => self.prepared_text -= gone.text.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
