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
/// What a connection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plaintext session (possibly after an SSLRequest answered `N`).
    Postgres,
    /// The client asked for TLS or GSS encryption and the server agreed: nothing more is read.
    PostgresTls,
    /// A CancelRequest: PostgreSQL, but no session.
    Cancel,
    /// Not PostgreSQL (or not understood): nothing is read.
    Unknown,
}

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
    kind: Option<Kind>,
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

    /// The connection's kind, once known.
    pub fn kind(&self) -> Option<Kind> {
        self.track.kind
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
                if let Some(Kind::Unknown | Kind::Cancel) = track.kind {
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
            if let Some(Kind::Unknown | Kind::Cancel) = track.kind {
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
        } else if !self.client_spoke && self.kind.is_none() {
            self.recognize(Kind::Unknown, event);
            client.stop();
            server.stop();
            return false;
        }
        true
    }

    fn recognize(&mut self, kind: Kind, event: &mut dyn FnMut(Event)) {
        if self.kind.is_none() || kind == Kind::PostgresTls {
            self.kind = Some(kind);
            event(Event::Recognized(match kind {
                // A cancel request is PostgreSQL too, though not a session.
                Kind::Postgres | Kind::Cancel => Protocol::Postgres,
                Kind::PostgresTls => Protocol::PostgresTls,
                Kind::Unknown => Protocol::Unknown,
            }));
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
                self.recognize(Kind::PostgresTls, event);
                after.stop_client = true;
            }
            Step::Encryption(false) => after.reopen_client = true,
            Step::Unreadable => {
                self.recognize(Kind::Unknown, event);
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
                self.recognize(Kind::Postgres, event);
                self.newer_version = minor > NEWEST_MINOR;
                // The startup is answered by the first ReadyForQuery: a group of its own.
                self.extended_open = false;
                self.open_group();
            }
            Step::Opened(Opening::EncryptionRequest) => server.expect_encryption_answer(),
            Step::Opened(Opening::Cancel) => self.recognize(Kind::Cancel, event),
            Step::Unreadable => self.recognize(Kind::Unknown, event),
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
mod tests {
    use super::super::wire_bytes::{msg, startup, startup_version};
    use super::*;
    use crate::flow::Close;

    fn query(text: &str) -> Vec<u8> {
        let mut body = text.as_bytes().to_vec();
        body.push(0);
        msg(b'Q', &body)
    }

    fn error(code: &str) -> Vec<u8> {
        msg(b'E', format!("SERROR\0C{code}\0Mboom\0\0").as_bytes())
    }

    fn complete(tag: &str) -> Vec<u8> {
        msg(b'C', format!("{tag}\0").as_bytes())
    }

    fn ready(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }

    /// A session fed `steps` (direction, bytes, time in ms), with its events as text.
    fn run(steps: &[(Direction, Vec<u8>, u64)]) -> Vec<String> {
        let mut s = Session::new();
        let mut out = Vec::new();
        for (dir, bytes, ms) in steps {
            let t = ms * 1_000_000;
            s.on_data(*dir, bytes, &mut || t, &mut |e| {
                out.push(match e {
                    Event::Recognized(k) => format!("{k:?}"),
                    Event::Request(c) => format!("request {c}"),
                    Event::Answered {
                        command,
                        nanos,
                        failed,
                        ..
                    } => format!(
                        "{} {} {}ms",
                        if failed { "failed" } else { "done" },
                        command,
                        nanos / 1_000_000
                    ),
                    Event::Error(c) => format!("error {}", c.label()),
                })
            });
        }
        out
    }

    use Direction::{ToClient as Down, ToDatabase as Up};

    #[test]
    fn a_simple_query_with_several_statements() {
        let events = run(&[
            (Up, startup(), 0),
            (Down, [msg(b'R', &[0; 4]), ready(b'I')].concat(), 1),
            (Up, query("BEGIN; INSERT INTO t VALUES (1); COMMIT"), 10),
            (
                Down,
                [complete("BEGIN"), complete("INSERT 0 1")].concat(),
                12,
            ),
            (Down, [complete("COMMIT"), ready(b'I')].concat(), 15),
        ]);
        assert_eq!(
            events,
            [
                "Postgres",
                "request begin",
                "request insert",
                "request commit",
                "done begin 2ms",
                "done insert 2ms",
                "done commit 5ms",
            ]
        );
    }

    #[test]
    fn an_error_ends_the_rest_of_a_query() {
        let events = run(&[
            (Up, startup(), 0),
            (Down, [msg(b'R', &[0; 4]), ready(b'I')].concat(), 1),
            (Up, query("SELECT 1/0; SELECT 2"), 10),
            (Down, [error("22012"), ready(b'I')].concat(), 11),
            (Up, query(""), 20),
            (Down, [msg(b'I', b""), ready(b'I')].concat(), 21),
            (Up, query("SELECT 3"), 30),
            (Down, [complete("SELECT 1"), ready(b'I')].concat(), 33),
        ]);
        assert_eq!(
            events,
            [
                "Postgres",
                "request select",
                "request select",
                "error 22",
                "failed select 1ms",
                "request select",
                "done select 3ms",
            ]
        );
    }

    #[test]
    fn extended_protocol_pipelines_and_named_statements() {
        let parse = msg(b'P', b"ins\0INSERT INTO plants VALUES ($1)\0\0\0");
        let bind = msg(b'B', b"\0ins\0\0\0\0\0\0\0");
        let exec = msg(b'E', b"\0\0\0\0\0");
        let sync = msg(b'S', b"");
        // Two executions of the named statement in one pipeline, then a failing group.
        let up = [
            parse,
            bind.clone(),
            exec.clone(),
            bind.clone(),
            exec.clone(),
            sync.clone(),
        ]
        .concat();
        let bad = [bind.clone(), exec.clone(), bind, exec, sync].concat();
        let events = run(&[
            (Up, startup(), 0),
            (Down, [msg(b'R', &[0; 4]), ready(b'I')].concat(), 1),
            (Up, up, 10),
            (Up, bad, 11),
            (
                Down,
                [
                    msg(b'1', b""),
                    msg(b'2', b""),
                    complete("INSERT 0 1"),
                    msg(b'2', b""),
                    complete("INSERT 0 1"),
                    ready(b'I'),
                ]
                .concat(),
                14,
            ),
            (
                Down,
                [msg(b'2', b""), error("23505"), ready(b'I')].concat(),
                16,
            ),
        ]);
        assert_eq!(
            events,
            [
                "Postgres",
                "request insert",
                "request insert",
                "request insert",
                "request insert",
                "done insert 4ms",
                "done insert 4ms",
                "error 23",
                "failed insert 5ms",
            ]
        );
    }

    #[test]
    fn encryption_cancel_and_other_protocols() {
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&80_877_103u32.to_be_bytes());
        // Answered N: a plaintext session follows.
        let events = run(&[
            (Up, ssl.clone(), 0),
            (Down, b"N".to_vec(), 1),
            (Up, [startup(), query("SHOW x")].concat(), 2),
            (
                Down,
                [ready(b'I'), complete("SHOW"), ready(b'I')].concat(),
                3,
            ),
        ]);
        assert_eq!(
            events,
            ["Postgres", "request show", "done show 1ms"],
            "pipelined behind the startup"
        );
        // Answered S: encrypted, nothing more is read.
        let mut s = Session::new();
        let mut kinds = Vec::new();
        for (dir, bytes) in [
            (Up, ssl),
            (Down, b"S".to_vec()),
            (Up, vec![0x16, 3, 1, 0, 5]),
        ] {
            s.on_data(dir, &bytes, &mut || 0, &mut |e| kinds.push(e));
        }
        assert_eq!(kinds, [Event::Recognized(Protocol::PostgresTls)]);
        assert!(!s.reading());
        // Redis: unknown, nothing more is read.
        let mut s = Session::new();
        let mut kinds = Vec::new();
        s.on_data(Up, b"*1\r\n$4\r\nPING\r\n", &mut || 0, &mut |e| {
            kinds.push(e)
        });
        assert_eq!(kinds, [Event::Recognized(Protocol::Unknown)]);
        assert!(!s.reading());
        // MySQL: the server speaks first.
        let mut s = Session::new();
        let mut kinds = Vec::new();
        s.on_data(
            Down,
            b"\x4a\0\0\0\x0a11.4.5-MariaDB\0",
            &mut || 0,
            &mut |e| kinds.push(e),
        );
        assert_eq!(kinds, [Event::Recognized(Protocol::Unknown)]);
        assert!(!s.reading());
        assert_eq!(s.skippable(Up), usize::MAX);
    }

    /// A server's NegotiateProtocolVersion: its newest minor version, no unknown options.
    fn negotiate(minor: u32) -> Vec<u8> {
        msg(b'v', &[minor.to_be_bytes(), 0u32.to_be_bytes()].concat())
    }

    /// BackendKeyData with a `key_len`-byte key (4 in 3.0, up to 256 in 3.2).
    fn key_data(key_len: usize) -> Vec<u8> {
        msg(
            b'K',
            &[&7u32.to_be_bytes()[..], &vec![0xab; key_len]].concat(),
        )
    }

    #[test]
    fn protocol_3_2_is_read_and_a_newer_one_only_when_negotiated_down() {
        let stand_in = query("FETCH \"dbfault: injected 40001\"");
        let provoked = error_with("34000", "cursor does not exist", "ERROR");
        let cases = [
            // libpq 18's max_protocol_version=3.2 against a 3.0 server: negotiated down.
            (
                2,
                [negotiate(0), msg(b'R', &[0; 4]), key_data(4), ready(b'I')].concat(),
                true,
            ),
            // ...against a 3.2 server: a 32-byte key.
            (
                2,
                [msg(b'R', &[0; 4]), key_data(32), ready(b'I')].concat(),
                true,
            ),
            // 3.5 negotiated down to 3.2.
            (
                5,
                [negotiate(2), msg(b'R', &[0; 4]), key_data(256), ready(b'I')].concat(),
                true,
            ),
            // 3.5 accepted as it is: nothing this session can vouch for, so nothing is touched.
            (
                5,
                [msg(b'R', &[0; 4]), key_data(4), ready(b'I')].concat(),
                false,
            ),
        ];
        for (minor, hello, read) in cases {
            for size in [1, 3, 4096] {
                let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
                let answer = if read {
                    provoked.clone()
                } else {
                    complete("SELECT 1")
                };
                let r = rewrite(
                    &[
                        (Up, startup_version(minor)),
                        (Down, hello.clone()),
                        (Up, query("SELECT * FROM plants")),
                        (Down, [answer, ready(b'I')].concat()),
                    ],
                    size,
                    &mut judge,
                );
                let want = if read {
                    stand_in.clone()
                } else {
                    query("SELECT * FROM plants")
                };
                assert!(r.to_server.ends_with(&want), "3.{minor}, chunks of {size}");
                assert_eq!(
                    r.to_client.windows(5).any(|w| w == b"40001"),
                    read,
                    "3.{minor}, chunks of {size}"
                );
            }
        }
        // A 3.2 CancelRequest carries a longer key: still a cancel, not a session.
        let mut cancel = 44u32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&80_877_102u32.to_be_bytes());
        cancel.extend_from_slice(&[1; 36]);
        assert!(super::super::reader::opens_connection(&cancel));
        let r = rewrite(&[(Up, cancel)], 7, &mut |_| None);
        assert_eq!(r.events, ["Postgres"]);
    }

    #[test]
    fn strings_are_split_as_standard_conforming_strings_says() {
        let text = r"SELECT 'a\'; SELECT 2";
        for (setting, want) in [
            // On: the string ends at the second quote; `SELECT 2` alone is replaced.
            (
                "on",
                query(r#"SELECT 'a\'; FETCH "dbfault: injected 40001""#),
            ),
            // Off: `\'` escapes the quote, and everything is one statement.
            ("off", query("FETCH \"dbfault: injected 40001\"")),
        ] {
            let mut judge = rule("SELECT 2", Act::Error(reply("40001", false)), None);
            let status = msg(
                b'S',
                format!("standard_conforming_strings\0{setting}\0").as_bytes(),
            );
            let r = rewrite(
                &[
                    (Up, startup()),
                    (Down, [msg(b'R', &[0; 4]), status, ready(b'I')].concat()),
                    (Up, query(text)),
                ],
                5,
                &mut judge,
            );
            assert!(r.to_server.ends_with(&want), "{setting}");
        }
    }

    #[test]
    fn pending_groups_are_bounded_and_stay_in_order() {
        let mut s = Session::new();
        s.on_data(Up, &startup(), &mut || 0, &mut |_| {});
        s.on_data(Down, &hello(), &mut || 0, &mut |_| {});
        let syncs = msg(b'S', b"").repeat(MAX_GROUPS * 3);
        s.on_data(Up, &syncs, &mut || 0, &mut |_| {});
        assert_eq!(s.track.groups.len(), MAX_GROUPS);
        assert_eq!(s.track.untracked, MAX_GROUPS * 2);
        // A query behind them is counted but not tracked; all are answered in order.
        s.on_data(Up, &query("SELECT 1"), &mut || 0, &mut |_| {});
        let mut answered = 0;
        let answers = [
            ready(b'I').repeat(MAX_GROUPS * 3),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat();
        s.on_data(Down, &answers, &mut || 0, &mut |e| {
            if let Event::Answered { .. } = e {
                answered += 1
            }
        });
        assert_eq!(answered, 0);
        assert!(s.track.groups.is_empty() && s.track.untracked == 0);
        // Tracked again from here.
        s.on_data(Up, &query("SELECT 1"), &mut || 0, &mut |_| {});
        s.on_data(
            Down,
            &[complete("SELECT 1"), ready(b'I')].concat(),
            &mut || 0,
            &mut |e| {
                if let Event::Answered { .. } = e {
                    answered += 1
                }
            },
        );
        assert_eq!(answered, 1);
    }

    #[test]
    fn pending_statements_are_bounded() {
        let mut s = Session::new();
        s.on_data(Up, &startup(), &mut || 0, &mut |_| {});
        let many = query(&"SELECT 1;".repeat(MAX_PENDING + 10));
        let mut requests = 0;
        s.on_data(Up, &many, &mut || 0, &mut |e| {
            if let Event::Request(_) = e {
                requests += 1
            }
        });
        assert!(requests <= MAX_PENDING + 10 && requests > 400, "{requests}");
        assert!(s.track.pending_count <= MAX_PENDING);
    }

    /// A rule for the rewriting tests: statements containing `needle` get `act`; a session's
    /// start gets `startup`.
    fn rule(
        needle: &'static str,
        act: Act,
        startup: Option<Act>,
    ) -> impl FnMut(Ask<'_>) -> Option<Act> {
        move |ask| match ask {
            Ask::Startup => startup.clone(),
            Ask::Statement { text, .. } => String::from_utf8_lossy(text)
                .contains(needle)
                .then(|| act.clone()),
        }
    }

    fn reply(code: &str, fatal: bool) -> ErrorReply {
        ErrorReply {
            errno: None,
            code: Some(code.as_bytes().try_into().unwrap()),
            message: "could not serialize access".into(),
            fatal,
            rollback: None,
        }
    }

    /// What reaches each peer when `steps` pass in chunks of `size` under `judge`, with the
    /// events and the last verdict's hold and close.
    struct Rewritten {
        to_server: Vec<u8>,
        to_client: Vec<u8>,
        events: Vec<String>,
        hold_until: Option<u64>,
        close: Option<Close>,
    }

    fn rewrite(
        steps: &[(Direction, Vec<u8>)],
        size: usize,
        judge: &mut dyn FnMut(Ask<'_>) -> Option<Act>,
    ) -> Rewritten {
        let mut s = Session::new();
        let mut r = Rewritten {
            to_server: Vec::new(),
            to_client: Vec::new(),
            events: Vec::new(),
            hold_until: None,
            close: None,
        };
        for (dir, bytes) in steps {
            for chunk in bytes.chunks(size) {
                let events = &mut r.events;
                let v = s.rewrite(
                    *dir,
                    chunk,
                    &mut || 0,
                    &mut |e| {
                        events.push(match e {
                            Event::Request(c) => format!("request {c}"),
                            Event::Error(c) => format!("error {}", c.label()),
                            Event::Answered {
                                command, failed, ..
                            } => {
                                format!("{} {}", if failed { "failed" } else { "done" }, command)
                            }
                            Event::Recognized(k) => format!("{k:?}"),
                        })
                    },
                    Some(&mut *judge),
                );
                let out = v.replace.unwrap_or_else(|| chunk.to_vec());
                match dir {
                    Up => r.to_server.extend(out),
                    Down => r.to_client.extend(out),
                }
                r.hold_until = r.hold_until.or(v.hold_until);
                r.close = r.close.or(v.close);
            }
        }
        r
    }

    fn error_with(code: &str, message: &str, severity: &str) -> Vec<u8> {
        msg(
            b'E',
            format!("S{severity}\0V{severity}\0C{code}\0M{message}\0\0").as_bytes(),
        )
    }

    fn hello() -> Vec<u8> {
        [msg(b'R', &[0; 4]), ready(b'I')].concat()
    }

    #[test]
    fn an_injected_error_replaces_the_statement_and_the_provoked_error() {
        let sql = "BEGIN; INSERT INTO plants VALUES (1); COMMIT";
        let provoked = error_with("34000", "cursor does not exist", "ERROR");
        for size in [1, 2, 3, 5, 8, 13, 4096] {
            let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
            let r = rewrite(
                &[
                    (Up, startup()),
                    (Down, hello()),
                    (Up, [query(sql), query("SELECT 1")].concat()),
                    (
                        Down,
                        [complete("BEGIN"), provoked.clone(), ready(b'E')].concat(),
                    ),
                    (Down, [complete("SELECT 1"), ready(b'E')].concat()),
                ],
                size,
                &mut judge,
            );
            assert_eq!(
                r.to_server,
                [
                    startup(),
                    query("BEGIN; FETCH \"dbfault: injected 40001\""),
                    query("SELECT 1")
                ]
                .concat(),
                "chunks of {size}"
            );
            assert_eq!(
                r.to_client,
                [
                    hello(),
                    complete("BEGIN"),
                    error_with("40001", "could not serialize access", "ERROR"),
                    ready(b'E'),
                    complete("SELECT 1"),
                    ready(b'E')
                ]
                .concat(),
                "chunks of {size}"
            );
            assert_eq!(
                r.events,
                [
                    "Postgres",
                    "request begin",
                    "request insert",
                    "request commit",
                    "request select",
                    "done begin",
                    "error 40",
                    "failed insert",
                    "done select"
                ]
            );
            assert_eq!((r.hold_until, r.close), (None, None));
        }
    }

    #[test]
    fn only_the_provoked_error_is_rewritten() {
        // In a failed transaction the server answers the replacement with 25P02: heard as is.
        let aborted = error_with("25P02", "current transaction is aborted", "ERROR");
        let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (Up, query("INSERT INTO plants VALUES (1)")),
                (Down, [aborted.clone(), ready(b'E')].concat()),
                (Up, query("SELECT 2")),
                (Down, [complete("SELECT 1"), ready(b'E')].concat()),
            ],
            4096,
            &mut judge,
        );
        assert!(r
            .to_client
            .ends_with(&[aborted, ready(b'E'), complete("SELECT 1"), ready(b'E')].concat()));
        assert!(r.events.contains(&"error 25".to_owned()));
    }

    #[test]
    fn an_execute_is_replaced_by_one_of_a_missing_portal() {
        let parse = msg(b'P', b"ins\0INSERT INTO plants VALUES ($1)\0\0\0");
        let bind = msg(b'B', b"\0ins\0\0\0\0\0\0\0");
        let exec = msg(b'E', b"\0\0\0\0\0");
        let sync = msg(b'S', b"");
        let provoked = error_with("34000", "portal does not exist", "ERROR");
        for size in [1, 4, 7, 4096] {
            let mut judge = rule("plants", Act::Error(reply("40P01", false)), None);
            let r = rewrite(
                &[
                    (Up, startup()),
                    (Down, hello()),
                    // Prepared once, executed twice: only the second execution is judged to fail.
                    (
                        Up,
                        [parse.clone(), bind.clone(), exec.clone(), sync.clone()].concat(),
                    ),
                    (
                        Down,
                        [
                            msg(b'1', b""),
                            msg(b'2', b""),
                            provoked.clone(),
                            ready(b'I'),
                        ]
                        .concat(),
                    ),
                ],
                size,
                &mut judge,
            );
            let mut execute = b"dbfault: injected 40P01\0".to_vec();
            execute.extend_from_slice(&[0; 4]);
            assert_eq!(
                r.to_server,
                [
                    startup(),
                    parse.clone(),
                    bind.clone(),
                    msg(b'E', &execute),
                    sync.clone()
                ]
                .concat(),
                "chunks of {size}"
            );
            assert!(r.to_client.ends_with(
                &[
                    msg(b'2', b""),
                    error_with("40P01", "could not serialize access", "ERROR"),
                    ready(b'I')
                ]
                .concat()
            ));
        }
    }

    #[test]
    fn a_fatal_error_ends_both_directions() {
        let provoked = error_with("34000", "cursor does not exist", "ERROR");
        let mut judge = rule("plants", Act::Error(reply("57P01", true)), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (
                    Up,
                    [query("DELETE FROM plants"), query("SELECT 1")].concat(),
                ),
                (Down, [provoked, ready(b'I')].concat()),
                (Up, query("SELECT 2")),
            ],
            3,
            &mut judge,
        );
        assert_eq!(
            r.to_server,
            [startup(), query("FETCH \"dbfault: injected 57P01\"")].concat(),
            "nothing after the fatal statement reaches the server"
        );
        assert_eq!(
            r.to_client,
            [
                hello(),
                error_with("57P01", "could not serialize access", "FATAL")
            ]
            .concat()
        );
        assert!(r.close.is_some());
    }

    #[test]
    fn a_fatal_injection_never_answered_ends_the_session_at_ready_for_query_in_any_chunking() {
        // The statement before the fatal one fails for real: the server never runs the
        // stand-in, and the fatal error takes the place of the group's ReadyForQuery. The
        // fuzzer found the ReadyForQuery's first bytes passing ahead of it when it came in
        // pieces.
        let real = error_with("22012", "division by zero", "ERROR");
        for size in [1, 2, 3, 4, 4096] {
            let mut judge = rule("plants", Act::Error(reply("57P01", true)), None);
            let r = rewrite(
                &[
                    (Up, startup()),
                    (Down, hello()),
                    (Up, query("SELECT 1/0; DELETE FROM plants")),
                    (Down, [real.clone(), ready(b'I')].concat()),
                ],
                size,
                &mut judge,
            );
            assert_eq!(
                r.to_client,
                [
                    hello(),
                    real.clone(),
                    error_with("57P01", "could not serialize access", "FATAL")
                ]
                .concat(),
                "chunks of {size}"
            );
            assert!(r.close.is_some());
        }
    }

    #[test]
    fn a_new_session_is_refused_at_startup() {
        let provoked = error_with("28000", "no PostgreSQL user name specified", "FATAL");
        for size in [1, 6, 4096] {
            let mut judge = rule("-", Act::Abort, Some(Act::Error(reply("57P03", false))));
            let r = rewrite(
                &[(Up, startup()), (Down, provoked.clone())],
                size,
                &mut judge,
            );
            assert_eq!(r.to_server, provoking_startup(), "chunks of {size}");
            assert_eq!(
                r.to_client,
                error_with("57P03", "could not serialize access", "FATAL"),
                "always FATAL at startup"
            );
            assert_eq!(r.close, Some(Close::AtNextTick));
        }
    }

    #[test]
    fn delay_holds_and_abort_ends() {
        let mut judge = rule("plants", Act::Delay(77), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (Up, query("SELECT * FROM plants")),
            ],
            4096,
            &mut judge,
        );
        assert_eq!(r.hold_until, Some(77));
        assert_eq!(
            r.to_server,
            [startup(), query("SELECT * FROM plants")].concat()
        );
        let mut judge = rule("plants", Act::Abort, None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (
                    Up,
                    [
                        query("SELECT 1"),
                        query("SELECT * FROM plants"),
                        query("SELECT 2"),
                    ]
                    .concat(),
                ),
            ],
            5,
            &mut judge,
        );
        assert_eq!(r.to_server, [startup(), query("SELECT 1")].concat());
        assert!(r.close.is_some());
    }

    #[test]
    fn a_long_statement_is_decided_on_its_start_and_dropped_as_it_arrives() {
        let long = format!("INSERT INTO plants VALUES ('{}')", "x".repeat(100_000));
        let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (Up, [query(&long), query("SELECT 1")].concat()),
            ],
            1000,
            &mut judge,
        );
        assert_eq!(
            r.to_server,
            [
                startup(),
                query("FETCH \"dbfault: injected 40001\""),
                query("SELECT 1")
            ]
            .concat()
        );
        // Unmatched, it passes byte for byte.
        let mut judge = rule("nothing", Act::Abort, None);
        let r = rewrite(
            &[(Up, startup()), (Down, hello()), (Up, query(&long))],
            777,
            &mut judge,
        );
        assert_eq!(r.to_server, [startup(), query(&long)].concat());
    }
}
