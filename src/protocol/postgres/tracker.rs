//! What one PostgreSQL connection's messages mean, kept beside the two readers: the statements
//! pending their answers, in groups (Queries, Syncs) awaiting their ReadyForQuery; the
//! prepared statements and portals; the injections awaiting the server's provoked errors; the
//! decisions a rule takes on a statement as edits. [`super::session`] drives it.

use super::names::{Names, Prepared};
use super::reader::{cstr, sqlstate, statement_text, Opening, Reader, Step};
use super::stand_in::{
    error_response, provoking_execute, provoking_query, provoking_startup, sqlstate_of,
    PROVOKED_STARTUP, PROVOKED_STATEMENT,
};
use crate::flow::Direction;
use crate::protocol::sql::{statements, Command, Dialect};
use crate::protocol::Callbacks;
pub use crate::protocol::Event;
use crate::protocol::{edit_for, Act, Ask, Code, Edit, ErrorReply, Protocol};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::protocol::MAX_PENDING;

/// Groups (Queries, Syncs) awaiting their ReadyForQuery, tracked one by one; those beyond are
/// only counted.
pub const MAX_GROUPS: usize = 1024;

/// The newest minor protocol version read: 3.2 differs from 3.0 only in messages read by
/// their length (BackendKeyData's key, CancelRequest's).
pub(super) const NEWEST_MINOR: u16 = 2;

/// An error to put in place of the one a replaced message provokes.
#[derive(Debug)]
pub(super) struct Injected {
    pub(super) reply: ErrorReply,
    pub(super) provoked: [u8; 5],
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) command: Command,
    pub(super) since: u64,
    pub(super) injected: Option<Box<Injected>>,
}

#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) pending: VecDeque<Pending>,
    /// An error ended the group's work: the rest of its statements get no answer.
    pub(super) failed: bool,
    /// The startup group of a session refused at startup.
    pub(super) injected: Option<Box<Injected>>,
}

/// Where the connection stands, as a whole (each reader keeps only its framing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Nothing read yet: a PostgreSQL client speaks first (a server speaking first is not
    /// PostgreSQL).
    #[default]
    Silent,
    /// The client's opening message (again after an encryption request answered `N`).
    Opening,
    /// A plaintext session whose client asked for a minor version newer than
    /// [`NEWEST_MINOR`], until the server says it runs an older one (its first
    /// ReadyForQuery or authentication request without that ends the reading).
    Newer,
    /// A plaintext session, read in sync with both sides.
    Session,
    /// A CancelRequest (PostgreSQL, but no session), encryption, bytes that are not
    /// PostgreSQL, or a server this session cannot vouch for: nothing more is read.
    NotRead,
}

/// Everything but the two readers (so that a reader's steps can act on it while the reader is
/// still reading: no step is copied or buffered).
#[derive(Debug, Default)]
pub(super) struct Tracker {
    pub(super) stage: Stage,
    /// What the connection was reported to speak, once known.
    pub(super) recognized: Option<Protocol>,
    pub(super) groups: VecDeque<Group>,
    /// Groups after the tracked ones (beyond [`MAX_GROUPS`]), answered after them.
    pub(super) untracked: usize,
    /// The server reported `standard_conforming_strings = off`.
    pub(super) backslash_strings: bool,
    /// Extended-protocol messages since the last Sync belong to the last group.
    pub(super) extended_open: bool,
    pub(super) pending_count: usize,
    /// Errors injected and not answered yet.
    pub(super) injections: usize,
    pub(super) statements: Names,
    pub(super) portals: Names,
    /// The emptied queue of the last group answered, for the next group.
    pub(super) spare: Option<VecDeque<Pending>>,
}

/// What the steps of one rewritten event add up to.
#[derive(Default)]
pub(super) struct Rewrites {
    pub(super) hold_until: Option<u64>,
}

impl Tracker {
    /// The first bytes of a connection: a PostgreSQL server never speaks first (MySQL's
    /// does). Returns whether the session is still read.
    pub(super) fn first_contact(
        &mut self,
        dir: Direction,
        client: &mut Reader,
        server: &mut Reader,
        cb: &mut dyn Callbacks,
    ) -> bool {
        match (self.stage, dir) {
            (Stage::Silent, Direction::ToDatabase) => self.stage = Stage::Opening,
            (Stage::Silent, Direction::ToClient) => {
                self.recognize(Protocol::Unknown, cb);
                self.stage = Stage::NotRead;
            }
            _ => {}
        }
        self.settle(client, server)
    }

    /// Stops both readers once nothing more is read; returns whether the session is still read.
    pub(super) fn settle(&self, client: &mut Reader, server: &mut Reader) -> bool {
        if self.stage == Stage::NotRead {
            client.stop();
            server.stop();
            return false;
        }
        true
    }

    /// Reports what the connection speaks, once (encryption agreed later overrides it).
    pub(super) fn recognize(&mut self, protocol: Protocol, cb: &mut dyn Callbacks) {
        if self.recognized.is_none() || protocol == Protocol::PostgresTls {
            self.recognized = Some(protocol);
            cb.event(Event::Recognized(protocol));
        }
    }

    pub(super) fn server_step(
        &mut self,
        step: Step<'_>,
        cb: &mut dyn Callbacks,
        client: &mut Reader,
    ) -> Option<Edit> {
        if self.stage == Stage::NotRead {
            // Decided earlier in the same chunk: the rest of it is not read either.
            return None;
        }
        match step {
            Step::Encryption(true) => {
                self.recognize(Protocol::PostgresTls, cb);
                self.stage = Stage::NotRead;
            }
            Step::Encryption(false) => {
                // The client's StartupMessage comes next, in plaintext.
                self.stage = Stage::Opening;
                client.expect_opening();
            }
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, cb);
                self.stage = Stage::NotRead;
            }
            Step::Message(m) => {
                match m.tag {
                    b'S' => self.parameter_status(m.body),
                    b'v' => {
                        // NegotiateProtocolVersion: the newest minor version the server runs.
                        let newest = m.body.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
                        if self.stage == Stage::Newer
                            && newest
                                .is_some_and(|b| u32::from_be_bytes(b) <= u32::from(NEWEST_MINOR))
                        {
                            self.stage = Stage::Session;
                        }
                    }
                    b'R' | b'Z' if self.stage == Stage::Newer => {
                        // The server runs a minor version this session cannot vouch for.
                        self.stage = Stage::NotRead;
                        return None;
                    }
                    _ => {}
                }
                let code = (m.tag == b'E').then(|| sqlstate(m.body)).flatten();
                return self.server_message(m.tag, code, cb);
            }
            Step::Opened(_) => {}
        }
        None
    }

    /// A ParameterStatus: the quoting of `standard_conforming_strings`.
    pub(super) fn parameter_status(&mut self, body: &[u8]) {
        let (name, rest) = cstr(body);
        if name == b"standard_conforming_strings" {
            let (value, _) = cstr(rest);
            self.backslash_strings = value == b"off";
        }
    }

    pub(super) fn client_step(
        &mut self,
        step: Step<'_>,
        server: &mut Reader,
        cb: &mut dyn Callbacks,
        rewrites: &mut Rewrites,
    ) -> Option<Edit> {
        if self.stage == Stage::NotRead {
            // Decided earlier in the same chunk: the rest of it is not read either.
            return None;
        }
        match step {
            Step::Opened(Opening::Startup { minor }) => {
                self.recognize(Protocol::Postgres, cb);
                self.stage = if minor > NEWEST_MINOR {
                    Stage::Newer
                } else {
                    Stage::Session
                };
                // The startup is answered by the first ReadyForQuery: a group of its own.
                self.extended_open = false;
                self.open_group();
            }
            Step::Opened(Opening::EncryptionRequest) => server.expect_encryption_answer(),
            Step::Opened(Opening::Cancel) => {
                // A cancel request is PostgreSQL too, though not a session.
                self.recognize(Protocol::Postgres, cb);
                self.stage = Stage::NotRead;
            }
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, cb);
                self.stage = Stage::NotRead;
            }
            Step::Message(m) if m.tag == 0 => {
                // The startup message's contents: a new session may be refused here.
                let act = cb.ask(Ask::Startup);
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
            Step::Message(m) => return self.client_message(m.tag, m.body, cb, rewrites),
            Step::Encryption(_) => {}
        }
        None
    }

    /// Counts a statement; returns whether it awaits an answer (a statement beyond the
    /// pending bound is only counted).
    pub(super) fn push(&mut self, command: Command, cb: &mut dyn Callbacks) -> bool {
        cb.event(Event::Request(command.name()));
        if self.pending_count >= MAX_PENDING || self.untracked > 0 {
            return false;
        }
        let Some(group) = self.groups.back_mut() else {
            return false;
        };
        group.pending.push_back(Pending {
            command,
            since: cb.now(),
            injected: None,
        });
        self.pending_count += 1;
        true
    }

    /// Marks the statement just pushed as failing with `reply`.
    pub(super) fn inject(&mut self, reply: ErrorReply) {
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
    pub(super) fn open_group(&mut self) {
        if self.untracked == 0 && self.groups.len() < MAX_GROUPS {
            let pending = self.spare.take().unwrap_or_default();
            self.groups.push_back(Group {
                pending,
                ..Group::default()
            });
        } else {
            self.untracked += 1;
        }
    }

    /// The group extended-protocol messages go to (a new one after a Sync).
    pub(super) fn extended_group(&mut self) {
        if !self.extended_open {
            self.open_group();
            self.extended_open = true;
        }
    }

    pub(super) fn dialect(&self) -> Dialect {
        Dialect::Postgres {
            standard_strings: !self.backslash_strings,
        }
    }

    /// What a rule does to a statement that awaits its answer (`None`: nothing).
    /// Not before the server has said it speaks the session's version (a client that sends
    /// statements early gets them passed untouched).
    pub(super) fn judge(
        &self,
        cb: &mut dyn Callbacks,
        command: Command,
        text: &[u8],
    ) -> Option<Act> {
        if self.stage != Stage::Session {
            return None;
        }
        cb.ask(Ask::Statement {
            command: command.name(),
            text,
            queued: false,
        })
    }

    pub(super) fn client_message(
        &mut self,
        tag: u8,
        body: &[u8],
        cb: &mut dyn Callbacks,
        rewrites: &mut Rewrites,
    ) -> Option<Edit> {
        match tag {
            b'Q' => {
                self.extended_open = false;
                self.open_group();
                let text = statement_text(b'Q', body);
                let dialect = self.dialect();
                let mut edit = None;
                for &statement in statements(text, dialect).iter() {
                    let command = Command::of(statement, dialect);
                    let waits = self.push(command, cb);
                    if !waits || edit.is_some() {
                        continue;
                    }
                    let act = self.judge(cb, command, statement);
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
                if self.push(command, cb) {
                    let text = prepared.as_ref().map_or(&[][..], |p| &p.text);
                    let act = self.judge(cb, command, text);
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
    pub(super) fn act(
        &mut self,
        act: Option<Act>,
        rewrites: &mut Rewrites,
        provoke: impl FnOnce(&ErrorReply) -> Vec<u8>,
    ) -> Option<Edit> {
        edit_for(act, &mut rewrites.hold_until, provoke, |reply| {
            self.inject(reply)
        })
    }

    pub(super) fn server_message(
        &mut self,
        tag: u8,
        code: Option<&[u8]>,
        cb: &mut dyn Callbacks,
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
                    cb.event(Event::Error(Code::class(class.unwrap_or(*b"XX"))));
                }
                let group = self.groups.front_mut()?;
                if group.failed {
                    return edit;
                }
                if let Some(done) = group.pending.pop_front() {
                    self.pending_count -= 1;
                    let nanos = cb.now().saturating_sub(done.since);
                    cb.event(Event::Answered {
                        command: done.command.name(),
                        nanos,
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
                if let Some(mut group) = self.groups.pop_front() {
                    self.pending_count -= group.pending.len();
                    // Injections whose statements got no answer (skipped after another error).
                    let fatal = group
                        .pending
                        .drain(..)
                        .filter_map(|p| p.injected)
                        .chain(group.injected.take())
                        .fold(None, |fatal, i| {
                            self.injections -= 1;
                            fatal.or(i.reply.fatal.then_some(i))
                        });
                    // The next group reuses its queue (no allocation per query), unless a long
                    // pipeline grew it: an idle session keeps a few bytes, not a pipeline's.
                    if group.pending.capacity() <= 8 {
                        self.spare = Some(group.pending);
                    }
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
