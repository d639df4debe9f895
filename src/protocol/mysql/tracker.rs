//! What one MySQL/MariaDB connection's packets mean, kept beside the two framers: the commands
//! pending their answers, the prepared statements by id, what the server's next packets are
//! expected to be, the injections awaiting their answers, and a rule's decisions as edits.
//! [`super::session`] drives it.

use super::packet::{
    ends_rows, err_fields, err_packet, lenenc, packet, status_flags, Packet, COM_QUERY,
};
use super::stand_in::{class_of, injected_err, reply_errno, rolls_back, stand_in};
use crate::protocol::sql::{statements, Command, Dialect};
use crate::protocol::Callbacks;
use crate::protocol::{edit_for, Act, Ask, Code, Edit, ErrorReply, Event, Protocol};
use std::collections::VecDeque;

use crate::protocol::{CAPTURE_LIMIT, MAX_PENDING, MAX_PREPARED, MAX_PREPARED_TEXT};

/// Bytes of a server packet kept (status flags, an ERR's code and message).
pub(super) const SERVER_KEEP: usize = 256;

pub(super) const CLIENT_COMPRESS: u32 = 0x0000_0020;
pub(super) const CLIENT_SSL: u32 = 0x0000_0800;
pub(super) const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
pub(super) const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub(super) const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;

pub(super) const COM_QUIT: u8 = 0x01;
pub(super) const COM_PING: u8 = 0x0e;
pub(super) const COM_STMT_PREPARE: u8 = 0x16;
pub(super) const COM_STMT_EXECUTE: u8 = 0x17;
pub(super) const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub(super) const COM_STMT_CLOSE: u8 = 0x19;
pub(super) const COM_CHANGE_USER: u8 = 0x11;

/// The errors a replaced command provokes.
pub(super) const ER_PARSE_ERROR: u16 = 1064;
pub(super) const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
/// A statement id no server hands out (MariaDB gives `0xffffffff` a meaning: the last one).
pub(super) const NO_SUCH_STATEMENT: u32 = 0xffff_fffe;

/// A prepared statement, by the id the server gave it.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) id: u32,
    pub(super) command: &'static str,
    pub(super) text: Box<[u8]>,
}

/// What the server's packets are expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
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
    /// Not read any more, either way: not MySQL, encrypted, compressed, or refused.
    NotRead,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) command: &'static str,
    pub(super) since: u64,
    pub(super) injected: Option<Box<ErrorReply>>,
    /// A prepare: its text, kept until the server names it.
    pub(super) prepare: Option<(&'static str, Box<[u8]>)>,
    /// Statements of a multi-statement query still to answer after this one.
    pub(super) more: u32,
}

#[derive(Debug)]
pub(super) struct Tracker {
    pub(super) recognized: Option<Protocol>,
    /// Where the session stands: what the server's next packets are, or not read any more.
    pub(super) expect: Expect,
    /// The client's capability flags (from its handshake response).
    pub(super) deprecate_eof: bool,
    /// The server's last status flags said `NO_BACKSLASH_ESCAPES` is off.
    pub(super) backslash_escapes: bool,
    pub(super) pending: VecDeque<Pending>,
    pub(super) prepared: VecDeque<Prepared>,
    pub(super) prepared_text: usize,
    pub(super) injections: usize,
    /// The front command's response has more results than statements were counted (a
    /// `CALL`): they belong to it until one without `SERVER_MORE_RESULTS_EXISTS`.
    pub(super) continuing: bool,
}

impl Tracker {
    /// Whether the session is still read.
    pub(super) fn reading(&self) -> bool {
        self.expect != Expect::NotRead
    }

    pub(super) fn recognize(&mut self, protocol: Protocol, cb: &mut dyn Callbacks) {
        if self.recognized.is_none() {
            self.recognized = Some(protocol);
            cb.event(Event::Recognized(protocol));
        }
        if protocol != Protocol::Mysql {
            self.expect = Expect::NotRead;
        }
    }

    pub(super) fn push(&mut self, command: &'static str, cb: &mut dyn Callbacks) -> bool {
        cb.event(Event::Request(command));
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        self.pending.push_back(Pending {
            command,
            since: cb.now(),
            injected: None,
            prepare: None,
            more: 0,
        });
        true
    }

    pub(super) fn dialect(&self) -> Dialect {
        Dialect::Mysql {
            backslash_escapes: self.backslash_escapes,
        }
    }

    /// An OK's or EOF's status flags: the session's quoting.
    pub(super) fn observe_status(&mut self, flags: u16) {
        self.backslash_escapes = flags & SERVER_STATUS_NO_BACKSLASH_ESCAPES == 0;
    }

    pub(super) fn client_packet(
        &mut self,
        p: &Packet<'_>,
        cb: &mut dyn Callbacks,
        hold: &mut Option<u64>,
    ) -> Option<Edit> {
        match self.expect {
            Expect::Greeting => {
                // The client speaks first: not MySQL.
                self.recognize(Protocol::Unknown, cb);
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
                        self.recognize(Protocol::MysqlTls, cb);
                    } else {
                        self.deprecate_eof = caps & CLIENT_DEPRECATE_EOF != 0;
                        if caps & CLIENT_COMPRESS != 0 {
                            // Compressed once authenticated: nothing after it is readable.
                            self.recognize(Protocol::MysqlCompressed, cb);
                        } else {
                            self.recognize(Protocol::Mysql, cb);
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
                for (i, &statement) in parts.iter().enumerate() {
                    let command = Command::of(statement, dialect).name();
                    if !self.push(command, cb) {
                        continue;
                    }
                    if let Some(last) = self.pending.back_mut() {
                        last.more = (count - 1 - i) as u32;
                    }
                    if edit.is_some() {
                        continue;
                    }
                    let act = cb.ask(Ask::Statement {
                        command,
                        text: statement,
                        queued: false,
                    });
                    let offset =
                        (statement.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
                    let before = text.get(..offset).unwrap_or_default();
                    edit = self.act(act, hold, |reply| stand_in(before, reply));
                }
                if parts.is_empty() {
                    // An empty query is still answered (with an error).
                    self.push(Command::OTHER.name(), cb);
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
                        since: cb.now(),
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
                if !self.push(command, cb) {
                    return None;
                }
                let act = cb.ask(Ask::Statement {
                    command,
                    text: &text,
                    queued: false,
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
                cb.event(Event::Request("quit"));
                None
            }
            COM_CHANGE_USER => {
                // Authentication again.
                self.push(Command::OTHER.name(), cb);
                self.expect = Expect::Auth;
                None
            }
            COM_PING => {
                let pushed = self.push("ping", cb);
                if !pushed {
                    return None;
                }
                let act = cb.ask(Ask::Statement {
                    command: "ping",
                    text: b"ping",
                    queued: false,
                });
                self.act(act, hold, |reply| stand_in(b"", reply))
            }
            _ => {
                self.push(Command::OTHER.name(), cb);
                None
            }
        }
    }

    /// Carries out a rule's act on the command just pushed.
    pub(super) fn act(
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
    pub(super) fn answer(
        &mut self,
        failed: bool,
        more: bool,
        cb: &mut dyn Callbacks,
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
        let nanos = cb.now().saturating_sub(done.since);
        cb.event(Event::Answered {
            command: done.command,
            nanos,
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

    pub(super) fn server_packet(&mut self, p: &Packet<'_>, cb: &mut dyn Callbacks) -> Option<Edit> {
        if p.continuation {
            return None;
        }
        let first = p.payload.first().copied();
        match self.expect {
            Expect::Greeting => {
                if p.seq != 0 || !matches!(first, Some(0x0a | 0xff)) {
                    self.recognize(Protocol::Unknown, cb);
                    return None;
                }
                if first == Some(0xff) {
                    // The server refused the connection itself.
                    self.recognize(Protocol::Mysql, cb);
                    let (_, class, _) = err_fields(p.payload);
                    cb.event(Event::Error(Code::class(class)));
                    self.expect = Expect::NotRead;
                    return None;
                }
                self.expect = Expect::Auth;
                // A connection-level error: the ERR in place of the greeting.
                let act = cb.ask(Ask::Startup);
                if let Some(Act::Error(reply)) = act {
                    self.recognize(Protocol::Mysql, cb);
                    cb.event(Event::Error(Code::class(class_of(&reply))));
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
                        cb.event(Event::Error(Code::class(class)));
                    }
                    _ => {}
                }
                None
            }
            Expect::Infile | Expect::NotRead => None,
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
                    return self.final_packet(p, cb);
                }
                if ends_rows(p.payload, p.len) {
                    let flags = status_flags(p.payload);
                    self.observe_status(flags);
                    let more = flags & SERVER_MORE_RESULTS_EXISTS != 0;
                    self.answer(false, more, cb);
                }
                None
            }
            Expect::Response => self.final_packet(p, cb),
        }
    }

    /// A packet that starts a response (or an ERR inside a result set).
    pub(super) fn final_packet(&mut self, p: &Packet<'_>, cb: &mut dyn Callbacks) -> Option<Edit> {
        let first = p.payload.first().copied();
        let front_prepare = self
            .pending
            .front()
            .and_then(|f| f.prepare.as_ref())
            .is_some();
        match first {
            Some(0xff) => {
                let (errno, class, message) = err_fields(p.payload);
                let done = self.answer(true, false, cb)?;
                if let Some(reply) = done.injected {
                    // A `ROLLBACK` stand-in that fails is the server's own error.
                    let provoked = !rolls_back(&reply)
                        && ((errno == ER_PARSE_ERROR
                            && message.windows(7).any(|w| w == b"dbfault"))
                            || errno == ER_UNKNOWN_STMT_HANDLER);
                    if provoked || reply.fatal {
                        return Some(injected_err(p.seq, &reply, cb));
                    }
                }
                cb.event(Event::Error(Code::class(class)));
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
                let done = self.answer(stand_in_ok, more, cb)?;
                let reply = done.injected.filter(|_| stand_in_ok)?;
                Some(injected_err(p.seq, &reply, cb))
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

    pub(super) fn remember(&mut self, id: u32, command: &'static str, text: Box<[u8]>) {
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
