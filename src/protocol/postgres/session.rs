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
//! Bounds: at most [`MAX_PENDING`] statements and as many groups awaiting answers (a longer
//! pipeline is counted but not timed, and rules do not act on it), [`MAX_PREPARED`] named statements and portals
//! and [`MAX_PREPARED_TEXT`] bytes of their text (the oldest is forgotten first: its
//! executions count as `other`), and while rules act, the start of one message per direction
//! ([`super::CAPTURE_LIMIT`] bytes and its header) withheld until it is decided.

use super::names::{Names, Prepared};
use super::place::{Place, Reported};
use super::reader::{cstr, sqlstate, statement_text, Opening, Reader, Step};
use super::stand_in::{
    error_response, provoking_execute, provoking_query, provoking_startup, sqlstate_of,
    PROVOKED_STARTUP, PROVOKED_STATEMENT,
};
use crate::flow::Direction;
use crate::protocol::sql::{statements, Command, Dialect};
pub use crate::protocol::Event;
use crate::protocol::{
    edit_for, Act, Ask, Code, Edit, ErrorReply, Judge, Protocol, Read, Splices, Verdict,
};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::protocol::MAX_PENDING;
/// Groups (Queries, Syncs) awaiting their ReadyForQuery, tracked one by one; those beyond are
/// only counted.
pub const MAX_GROUPS: usize = 1024;
/// The newest minor protocol version read: 3.2 differs from 3.0 only in messages read by
/// their length (BackendKeyData's key, CancelRequest's).
const NEWEST_MINOR: u16 = 2;

/// An error to put in place of the one a replaced message provokes.
#[derive(Debug)]
struct Injected {
    reply: ErrorReply,
    provoked: [u8; 5],
}

#[derive(Debug)]
struct Pending {
    command: Command,
    since: u64,
    injected: Option<Box<Injected>>,
}

#[derive(Debug, Default)]
struct Group {
    pending: VecDeque<Pending>,
    /// An error ended the group's work: the rest of its statements get no answer.
    failed: bool,
    /// The startup group of a session refused at startup.
    injected: Option<Box<Injected>>,
}

/// The time in nanoseconds, asked only when a statement starts or ends (a chunk of result rows
/// or COPY data costs no clock read).
pub type Clock<'a> = dyn FnMut() -> u64 + 'a;

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

/// Everything but the two readers (so that a reader's steps can act on it while the reader is
/// still reading: no step is copied or buffered).
#[derive(Debug, Default)]
struct Tracker {
    /// What the connection turned out to speak, once known.
    recognized: Option<Protocol>,
    /// It was a CancelRequest: PostgreSQL, but no session (nothing more is read).
    cancel: bool,
    /// The client has sent something (a server speaking first is not PostgreSQL).
    client_spoke: bool,
    groups: VecDeque<Group>,
    /// Groups after the tracked ones (beyond [`MAX_GROUPS`]), answered after them.
    untracked: usize,
    /// The client asked for a minor version newer than [`NEWEST_MINOR`] and the server has not
    /// said it runs an older one.
    newer_version: bool,
    /// The server reported `standard_conforming_strings = off`.
    backslash_strings: bool,
    /// Extended-protocol messages since the last Sync belong to the last group.
    extended_open: bool,
    pending_count: usize,
    /// Errors injected and not answered yet.
    injections: usize,
    statements: Names,
    portals: Names,
}

/// What the steps of one rewritten event add up to.
#[derive(Default)]
struct Rewrites {
    hold_until: Option<u64>,
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
    pub fn skip(
        &mut self,
        dir: Direction,
        n: usize,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) {
        self.feed(dir, now, event, &mut |reader, _| reader.skip(n));
    }

    /// Bytes of one data event in `dir` at `now` (nanoseconds), read only.
    pub fn on_data(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) {
        self.feed(dir, now, event, &mut |reader, step| {
            reader.read(bytes, step);
        });
    }

    fn feed(
        &mut self,
        dir: Direction,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
        drive: &mut Drive<'_>,
    ) {
        let Session {
            client,
            server,
            track,
            ..
        } = self;
        if !track.first_contact(dir, client, server, event) {
            return;
        }
        match dir {
            Direction::ToDatabase if client.reading() => {
                drive(client, &mut |step| {
                    track.client_step(step, server, now, event, None, &mut Rewrites::default());
                });
                if track.cancel || track.recognized == Some(Protocol::Unknown) {
                    server.stop();
                }
            }
            Direction::ToClient if server.reading() => {
                let mut after = ServerAfter::default();
                drive(server, &mut |step| {
                    track.server_step(step, now, event, &mut after);
                });
                after.apply(client, server);
            }
            _ => {}
        }
    }

    /// Bytes of one data event in `dir` at `now`, read and rewritten as `judge` (asked for
    /// each new statement, and for a new session's start) and earlier decisions require.
    /// `judge` is `None` when no rule may act on new statements.
    pub fn rewrite(
        &mut self,
        dir: Direction,
        chunk: &[u8],
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
        mut judge: Option<&mut Judge<'_>>,
    ) -> Verdict {
        let Session {
            client,
            server,
            track,
            splices,
        } = self;
        let judging = judge.is_some();
        let splice = splices.of(dir);
        // After the stream ended nothing is read, and the first contact is not counted.
        let reading = !splice.ended
            && track.first_contact(dir, client, server, event)
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
            let mut after = ServerAfter::default();
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
                        let edit = track.client_step(
                            step,
                            server,
                            now,
                            event,
                            judge.as_deref_mut(),
                            &mut rewrites,
                        );
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
                        let edit = track.server_step(step, now, event, &mut after);
                        place.edit(edit, reported);
                    });
                }
            }
            let closes = place.closes;
            if dir == Direction::ToClient {
                after.apply(client, server);
            }
            if track.cancel || track.recognized == Some(Protocol::Unknown) {
                server.stop();
            }
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

/// What server steps ask of the client reader once the server's bytes are read.
#[derive(Default)]
struct ServerAfter {
    stop_client: bool,
    reopen_client: bool,
    stop_server: bool,
}

impl ServerAfter {
    fn apply(self, client: &mut Reader, server: &mut Reader) {
        if self.stop_server {
            server.stop();
        }
        if self.stop_client || self.stop_server {
            client.stop();
        } else if self.reopen_client {
            client.expect_opening();
        }
    }
}

impl Tracker {
    /// The first bytes of a connection: a PostgreSQL server never speaks first (MySQL's
    /// does). Returns whether the session is still read.
    fn first_contact(
        &mut self,
        dir: Direction,
        client: &mut Reader,
        server: &mut Reader,
        event: &mut dyn FnMut(Event),
    ) -> bool {
        if dir == Direction::ToDatabase {
            self.client_spoke = true;
        } else if !self.client_spoke && self.recognized.is_none() {
            self.recognize(Protocol::Unknown, event);
            client.stop();
            server.stop();
            return false;
        }
        true
    }

    /// Reports what the connection speaks, once (encryption agreed later overrides it).
    fn recognize(&mut self, protocol: Protocol, event: &mut dyn FnMut(Event)) {
        if self.recognized.is_none() || protocol == Protocol::PostgresTls {
            self.recognized = Some(protocol);
            event(Event::Recognized(protocol));
        }
    }

    fn server_step(
        &mut self,
        step: Step<'_>,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
        after: &mut ServerAfter,
    ) -> Option<Edit> {
        match step {
            Step::Encryption(true) => {
                self.recognize(Protocol::PostgresTls, event);
                after.stop_client = true;
            }
            Step::Encryption(false) => after.reopen_client = true,
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, event);
                after.stop_client = true;
            }
            Step::Message(m) => {
                match m.tag {
                    b'S' => self.parameter_status(m.body),
                    b'v' => {
                        // NegotiateProtocolVersion: the newest minor version the server runs.
                        let newest = m.body.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
                        if newest.is_some_and(|b| u32::from_be_bytes(b) <= u32::from(NEWEST_MINOR))
                        {
                            self.newer_version = false;
                        }
                    }
                    b'R' | b'Z' if self.newer_version => {
                        // The server runs a minor version this session cannot vouch for.
                        after.stop_client = true;
                        after.stop_server = true;
                        return None;
                    }
                    _ => {}
                }
                let code = (m.tag == b'E').then(|| sqlstate(m.body)).flatten();
                return self.server_message(m.tag, code, now, event);
            }
            Step::Opened(_) => {}
        }
        None
    }

    /// A ParameterStatus: the quoting of `standard_conforming_strings`.
    fn parameter_status(&mut self, body: &[u8]) {
        let (name, rest) = cstr(body);
        if name == b"standard_conforming_strings" {
            let (value, _) = cstr(rest);
            self.backslash_strings = value == b"off";
        }
    }

    fn client_step(
        &mut self,
        step: Step<'_>,
        server: &mut Reader,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
        judge: Option<&mut Judge<'_>>,
        rewrites: &mut Rewrites,
    ) -> Option<Edit> {
        match step {
            Step::Opened(Opening::Startup { minor }) => {
                self.recognize(Protocol::Postgres, event);
                self.newer_version = minor > NEWEST_MINOR;
                // The startup is answered by the first ReadyForQuery: a group of its own.
                self.extended_open = false;
                self.open_group();
            }
            Step::Opened(Opening::EncryptionRequest) => server.expect_encryption_answer(),
            Step::Opened(Opening::Cancel) => {
                // A cancel request is PostgreSQL too, though not a session.
                self.cancel = true;
                self.recognize(Protocol::Postgres, event);
            }
            Step::Unreadable => self.recognize(Protocol::Unknown, event),
            Step::Message(m) if m.tag == 0 => {
                // The startup message's contents: a new session may be refused here.
                let act = judge.and_then(|j| j(Ask::Startup));
                if let Some(Act::Error(mut reply)) = act {
                    reply.fatal = true;
                    if let Some(group) = self.groups.back_mut() {
                        group.injected = Some(Box::new(Injected {
                            reply,
                            provoked: PROVOKED_STARTUP,
                        }));
                        self.injections += 1;
                        return Some(Edit::Replace(provoking_startup()));
                    }
                }
            }
            Step::Message(m) => {
                return self.client_message(m.tag, m.body, now, event, judge, rewrites)
            }
            Step::Encryption(_) => {}
        }
        None
    }

    /// Counts a statement; returns whether it awaits an answer (a statement beyond the
    /// pending bound is only counted).
    fn push(
        &mut self,
        command: Command,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) -> bool {
        event(Event::Request(command.name()));
        if self.pending_count >= MAX_PENDING || self.untracked > 0 {
            return false;
        }
        let Some(group) = self.groups.back_mut() else {
            return false;
        };
        group.pending.push_back(Pending {
            command,
            since: now(),
            injected: None,
        });
        self.pending_count += 1;
        true
    }

    /// Marks the statement just pushed as failing with `reply`.
    fn inject(&mut self, reply: ErrorReply) {
        if let Some(pending) = self.groups.back_mut().and_then(|g| g.pending.back_mut()) {
            pending.injected = Some(Box::new(Injected {
                reply,
                provoked: PROVOKED_STATEMENT,
            }));
            self.injections += 1;
        }
    }

    /// A new group: tracked, or only counted once [`MAX_GROUPS`] are (and until all those
    /// before it are answered, so that answers stay in order).
    fn open_group(&mut self) {
        if self.untracked == 0 && self.groups.len() < MAX_GROUPS {
            self.groups.push_back(Group::default());
        } else {
            self.untracked += 1;
        }
    }

    /// The group extended-protocol messages go to (a new one after a Sync).
    fn extended_group(&mut self) {
        if !self.extended_open {
            self.open_group();
            self.extended_open = true;
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres {
            standard_strings: !self.backslash_strings,
        }
    }

    /// What a rule does to a statement that awaits its answer (`None`: nothing).
    fn judge(judge: &mut Option<&mut Judge<'_>>, command: Command, text: &[u8]) -> Option<Act> {
        judge.as_deref_mut().and_then(|j| {
            j(Ask::Statement {
                command: command.name(),
                text,
            })
        })
    }

    fn client_message(
        &mut self,
        tag: u8,
        body: &[u8],
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
        mut judge: Option<&mut Judge<'_>>,
        rewrites: &mut Rewrites,
    ) -> Option<Edit> {
        match tag {
            b'Q' => {
                self.extended_open = false;
                self.open_group();
                let text = statement_text(b'Q', body);
                let dialect = self.dialect();
                let mut edit = None;
                for statement in statements(text, dialect) {
                    let command = Command::of(statement, dialect);
                    let waits = self.push(command, now, event);
                    if !waits || edit.is_some() {
                        continue;
                    }
                    let act = Self::judge(&mut judge, command, statement);
                    let offset =
                        (statement.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
                    let before = text.get(..offset).unwrap_or_default();
                    edit = self.act(act, rewrites, |reply| provoking_query(before, reply));
                }
                return edit;
            }
            b'P' => {
                self.extended_group();
                let (name, _) = cstr(body);
                let text = statement_text(b'P', body);
                let prepared = Rc::new(Prepared {
                    command: Command::of(text, self.dialect()),
                    text: text.into(),
                });
                self.statements.set(name, prepared);
            }
            b'B' => {
                self.extended_group();
                let (portal, rest) = cstr(body);
                let (statement, _) = cstr(rest);
                match self.statements.get(statement).map(Rc::clone) {
                    Some(prepared) => self.portals.set(portal, prepared),
                    None => self.portals.remove(portal),
                }
            }
            b'E' => {
                self.extended_group();
                let (portal, _) = cstr(body);
                let prepared = self.portals.get(portal).map(Rc::clone);
                let command = prepared.as_ref().map_or(Command::OTHER, |p| p.command);
                if self.push(command, now, event) {
                    let text = prepared.as_ref().map_or(&[][..], |p| &p.text);
                    let act = Self::judge(&mut judge, command, text);
                    return self.act(act, rewrites, provoking_execute);
                }
            }
            b'S' => {
                // Sync ends the group (an empty one too: the server answers it).
                self.extended_group();
                self.extended_open = false;
            }
            b'C' => {
                self.extended_group();
                let (what, rest) = body.split_first().map_or((0, &[][..]), |(w, r)| (*w, r));
                let (name, _) = cstr(rest);
                match what {
                    b'S' => self.statements.remove(name),
                    b'P' => self.portals.remove(name),
                    _ => {}
                }
            }
            b'D' | b'H' => self.extended_group(),
            // A function call is answered like a simple Query: its own group.
            b'F' => {
                self.extended_open = false;
                self.open_group();
            }
            _ => {}
        }
        None
    }

    /// Carries out a rule's act on the statement just pushed; `provoke` builds the message
    /// that replaces it to make the server fail.
    fn act(
        &mut self,
        act: Option<Act>,
        rewrites: &mut Rewrites,
        provoke: impl FnOnce(&ErrorReply) -> Vec<u8>,
    ) -> Option<Edit> {
        edit_for(act, &mut rewrites.hold_until, provoke, |reply| {
            self.inject(reply)
        })
    }

    fn server_message(
        &mut self,
        tag: u8,
        code: Option<&[u8]>,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) -> Option<Edit> {
        match tag {
            b'C' | b'I' | b's' | b'E' => {
                let failed = tag == b'E';
                let group = self.groups.front_mut();
                // An injected error takes the place of the one its replacement provoked.
                let mut edit = None;
                let mut class = code
                    .and_then(|c| c.get(..2))
                    .and_then(|c| <[u8; 2]>::try_from(c).ok());
                if let Some(group) = group {
                    let slot = match group.pending.front_mut() {
                        Some(p) if !group.failed => &mut p.injected,
                        _ => &mut group.injected,
                    };
                    if let Some(injected) = slot.take() {
                        self.injections -= 1;
                        // A fatal one ends the session whatever the server answered.
                        if failed && (injected.reply.fatal || code == Some(&injected.provoked[..]))
                        {
                            let bytes = error_response(&injected.reply);
                            class = sqlstate_of(&injected.reply)
                                .get(..2)
                                .and_then(|c| <[u8; 2]>::try_from(c).ok());
                            edit = Some(Edit::for_error(&injected.reply, bytes));
                        }
                    }
                }
                if failed {
                    event(Event::Error(Code::class(class.unwrap_or(*b"XX"))));
                }
                let group = self.groups.front_mut()?;
                if group.failed {
                    return edit;
                }
                if let Some(done) = group.pending.pop_front() {
                    self.pending_count -= 1;
                    event(Event::Answered {
                        command: done.command.name(),
                        nanos: now().saturating_sub(done.since),
                        failed,
                        sampled: true,
                    });
                }
                group.failed = failed;
                return edit;
            }
            b'Z' => {
                if self.groups.is_empty() {
                    self.untracked = self.untracked.saturating_sub(1);
                }
                if let Some(group) = self.groups.pop_front() {
                    self.pending_count -= group.pending.len();
                    // Injections whose statements got no answer (skipped after another error).
                    let mut unanswered = group.pending.into_iter().filter_map(|p| p.injected);
                    let fatal = unanswered
                        .by_ref()
                        .chain(group.injected)
                        .fold(None, |fatal, i| {
                            self.injections -= 1;
                            fatal.or(i.reply.fatal.then_some(i))
                        });
                    if let Some(injected) = fatal {
                        // Skipped by the server, but the session must still end.
                        return Some(Edit::ReplaceThenEnd(error_response(&injected.reply)));
                    }
                }
                if self.groups.is_empty() && self.untracked == 0 {
                    self.extended_open = false;
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
