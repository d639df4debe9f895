//! Database wire protocols, read as they pass: pure, incremental, bounded in memory.

pub mod access;
pub mod mysql;
pub mod postgres;
pub mod redis;
mod splice;
pub mod sql;
#[cfg(test)]
pub(crate) mod testing;

pub(crate) use splice::{edit_for, place, Edit, Output, Read, Splice, Splices};

use crate::flow::{Close, Direction, Effect};
use std::ops::Range;
use std::rc::Rc;

// The bounds every session keeps, whatever its protocol.

/// A request's text kept for labelling and matching (a statement's first 4 KiB; Redis: the
/// command name and arguments joined by single spaces): text beyond it is not matched.
pub const CAPTURE_LIMIT: usize = 4096;
/// Requests awaiting their answers per connection: a longer pipeline is counted but not
/// timed, and rules do not act on it.
pub const MAX_PENDING: usize = 1024;
/// Prepared (named) statements remembered per connection, and their text in all.
pub const MAX_PREPARED: usize = 256;
pub const MAX_PREPARED_TEXT: usize = 64 * 1024;

/// An error a rule answers with, in the protocol's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The SQLSTATE (five characters of `[0-9A-Z]`); Redis errors have none (their code is
    /// the message's first word).
    pub code: Option<[u8; 5]>,
    /// MySQL's error number.
    pub errno: Option<u16>,
    pub message: Rc<str>,
    /// The session ends with it (PostgreSQL: severity `FATAL`, then the connection closes).
    pub fatal: bool,
    /// MySQL: whether the error rolls back the whole transaction (`None`: as the server does
    /// for that errno, see [`mysql::rolls_back`]).
    pub rollback: Option<bool>,
}

/// The `protocol` label: what a connection turned out to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    /// PostgreSQL whose client and server agreed to encrypt: L4 only.
    PostgresTls,
    Redis,
    Mysql,
    /// MySQL whose client asked for TLS: L4 only.
    MysqlTls,
    /// MySQL whose client asked for compression: L4 only.
    MysqlCompressed,
    /// Anything not recognised.
    Unknown,
}

pub const PROTOCOLS: usize = 7;

impl Protocol {
    pub const ALL: [Protocol; PROTOCOLS] = [
        Protocol::Postgres,
        Protocol::PostgresTls,
        Protocol::Redis,
        Protocol::Mysql,
        Protocol::MysqlTls,
        Protocol::MysqlCompressed,
        Protocol::Unknown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::PostgresTls => "postgres-tls",
            Protocol::Redis => "redis",
            Protocol::Mysql => "mysql",
            Protocol::MysqlTls => "mysql-tls",
            Protocol::MysqlCompressed => "mysql-compressed",
            Protocol::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The protocols whose sessions are read, which a rule's `match.protocol` may name.
    pub const READ: [Protocol; 3] = [Protocol::Postgres, Protocol::Mysql, Protocol::Redis];
    pub const NAMES: &'static [&'static str] = &["postgres", "mysql", "redis"];

    /// A protocol whose sessions are read, by its label.
    pub fn parse(name: &str) -> Option<Protocol> {
        Protocol::READ.into_iter().find(|p| p.label() == name)
    }

    /// The `command` label value `word` names in this protocol (case-insensitive).
    pub fn command(self, word: &str) -> Option<&'static str> {
        let list: &[&'static str] = match self {
            Protocol::Postgres | Protocol::Mysql => &sql::COMMANDS,
            Protocol::Redis => &redis::commands::COMMANDS,
            _ => return None,
        };
        list.iter().copied().find(|c| c.eq_ignore_ascii_case(word))
    }
}

/// The `code` label of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A SQLSTATE's class (its first two characters).
    Class([u8; 2]),
    /// A word from a protocol's fixed list (Redis: `ERR`, `READONLY`...), or `other`.
    Word(&'static str),
}

impl Code {
    /// A SQLSTATE class, `XX` unless it is two characters of `[0-9A-Z]`.
    pub fn class(class: [u8; 2]) -> Code {
        if class
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            Code::Class(class)
        } else {
            Code::Class(*b"XX")
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Code::Class(c) => std::str::from_utf8(c).unwrap_or("XX"),
            Code::Word(w) => w,
        }
    }
}

/// What a session reports, as it happens, whatever its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The connection's protocol, once known (once per connection).
    Recognized(Protocol),
    /// The client issued a request (a statement, a command): its `command` label.
    Request(&'static str),
    /// A request's answer ended: its command, nanoseconds since it was issued, whether it was
    /// an error, and whether it carries a duration sample (each sample is a host call: Redis
    /// commands written together and answered in one read share one — one per command cost
    /// Envoy 5% of its `redis-benchmark -P 16` throughput, measured).
    Answered {
        command: &'static str,
        nanos: u64,
        failed: bool,
        sampled: bool,
    },
    /// The client received an error.
    Error(Code),
}

/// What a rule is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// A new session is starting (its startup message is about to reach the server).
    Startup,
    /// The client issued a statement or command: its `command` label value and its text
    /// (the first 4 KiB at most; for Redis the name and arguments joined by single spaces).
    Statement {
        command: &'static str,
        text: &'a [u8],
        /// Redis: the command gets no answer of its own now: queued in a `MULTI` (answered
        /// at `EXEC`), or sent by a RESP2 subscriber (refused in that context).
        queued: bool,
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
    /// Redis: it does not execute; the client receives what Redis answers when the keys it
    /// reads do not exist.
    Miss,
}

/// Asked once per statement (and once at a session's start) while rules may act on a
/// connection; `None`: nothing happens to it.
pub type Judge<'a> = dyn FnMut(Ask<'_>) -> Option<Act> + 'a;

/// What a session reports to and asks of the layer above it (the filter, a test, a fuzz
/// target): the one interface between the pure protocol readers and everything else.
pub trait Callbacks {
    /// The time now in nanoseconds, asked only when a request starts or ends (a chunk of
    /// result rows costs no clock read).
    fn now(&mut self) -> u64;
    /// Something happened on the session.
    fn event(&mut self, event: Event);
    /// Whether rules may act on new requests: when not, nothing is judged or withheld.
    fn judging(&self) -> bool;
    /// What a rule does to a new request (asked only while [`Callbacks::judging`]).
    fn judge(&mut self, ask: Ask<'_>) -> Option<Act>;

    /// What a rule does to a new request: nothing unless rules may act.
    fn ask(&mut self, ask: Ask<'_>) -> Option<Act> {
        if self.judging() {
            self.judge(ask)
        } else {
            None
        }
    }
}

/// [`Callbacks`] made of closures, for tests, fuzz targets and tools; `judge: None` when no
/// rule may act.
pub struct With<'a, 'j> {
    pub now: &'a mut dyn FnMut() -> u64,
    pub event: &'a mut dyn FnMut(Event),
    pub judge: Option<&'a mut Judge<'j>>,
}

impl Callbacks for With<'_, '_> {
    fn now(&mut self) -> u64 {
        (self.now)()
    }

    fn event(&mut self, event: Event) {
        (self.event)(event)
    }

    fn judging(&self) -> bool {
        self.judge.is_some()
    }

    fn judge(&mut self, ask: Ask<'_>) -> Option<Act> {
        self.judge.as_deref_mut().and_then(|j| j(ask))
    }
}

/// The callbacks of a read-only pass: the caller's time and events, no rule acting.
pub(crate) struct ReadOnly<'a>(pub(crate) &'a mut dyn Callbacks);

impl Callbacks for ReadOnly<'_> {
    fn now(&mut self) -> u64 {
        self.0.now()
    }

    fn event(&mut self, event: Event) {
        self.0.event(event)
    }

    fn judging(&self) -> bool {
        false
    }

    fn judge(&mut self, _: Ask<'_>) -> Option<Act> {
        None
    }
}

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

/// The protocol a server's first bytes open (MySQL speaks first), if dbfault reads it.
pub fn sniff_server(first: &[u8]) -> Option<Protocol> {
    mysql::greets(first).then_some(Protocol::Mysql)
}

/// The protocol a client's first bytes open, if dbfault reads it: a PostgreSQL opening
/// message, or a Redis command (an array of bulk strings, or an inline command naming a real
/// Redis command — not an HTTP request line).
pub fn sniff(first: &[u8]) -> Option<Protocol> {
    if postgres::opens_connection(first) {
        return Some(Protocol::Postgres);
    }
    match first {
        [b'*', d, ..] if d.is_ascii_digit() => Some(Protocol::Redis),
        _ => {
            let line_end = first
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(first.len());
            let line = first.get(..line_end).unwrap_or_default();
            let word_end = line
                .iter()
                .position(|&b| b == b' ' || b == b'\r')
                .unwrap_or(line.len());
            let word = line.get(..word_end).unwrap_or_default();
            let http = line.windows(5).any(|w| w == b"HTTP/");
            (line_end < first.len() && !http && redis::session::command(word) != "other")
                .then_some(Protocol::Redis)
        }
    }
}

/// One connection's session, in the protocol it speaks.
#[derive(Debug)]
pub enum Session {
    Postgres(postgres::session::Session),
    Redis(redis::session::Session),
    Mysql(mysql::session::Session),
}

impl Session {
    /// A session of `protocol`, if its sessions are read.
    pub fn new(protocol: Protocol) -> Option<Session> {
        Some(match protocol {
            Protocol::Postgres => Session::Postgres(postgres::session::Session::new()),
            Protocol::Redis => Session::Redis(redis::session::Session::new()),
            Protocol::Mysql => Session::Mysql(mysql::session::Session::new()),
            _ => return None,
        })
    }

    /// Whether the session still reads bytes.
    pub fn reading(&self) -> bool {
        match self {
            Session::Postgres(s) => s.reading(),
            Session::Redis(s) => s.reading(),
            Session::Mysql(s) => s.reading(),
        }
    }

    /// Whether the connection's protocol was reported.
    pub fn recognized(&self) -> bool {
        match self {
            Session::Postgres(s) => s.recognized().is_some(),
            Session::Redis(s) => s.recognized().is_some(),
            Session::Mysql(s) => s.recognized().is_some(),
        }
    }

    /// Whether events in `dir` must be rewritten even when no rule may act on new requests.
    pub fn rewriting(&self, dir: Direction) -> bool {
        match self {
            Session::Postgres(s) => s.rewriting(dir),
            Session::Redis(s) => s.rewriting(dir),
            Session::Mysql(s) => s.rewriting(dir),
        }
    }

    /// How many of the next bytes in `dir` need not be read.
    pub fn skippable(&self, dir: Direction) -> usize {
        match self {
            Session::Postgres(s) => s.skippable(dir),
            Session::Redis(s) => s.skippable(dir),
            Session::Mysql(s) => s.skippable(dir),
        }
    }

    /// Passes over `n` bytes (at most [`Session::skippable`]).
    pub fn skip(&mut self, dir: Direction, n: usize, cb: &mut dyn Callbacks) {
        match self {
            Session::Postgres(s) => s.skip(dir, n, cb),
            Session::Redis(s) => s.skip(dir, n),
            Session::Mysql(s) => s.skip(dir, n),
        }
    }

    /// Bytes of one data event in `dir`, read only.
    pub fn on_data(&mut self, dir: Direction, bytes: &[u8], cb: &mut dyn Callbacks) {
        match self {
            Session::Postgres(s) => s.on_data(dir, bytes, cb),
            Session::Redis(s) => s.on_data(dir, bytes, cb),
            Session::Mysql(s) => s.on_data(dir, bytes, cb),
        }
    }

    /// Bytes of one data event in `dir`, read and rewritten (see each protocol's session).
    pub fn rewrite(&mut self, dir: Direction, chunk: &[u8], cb: &mut dyn Callbacks) -> Verdict {
        match self {
            Session::Postgres(s) => s.rewrite(dir, chunk, cb),
            Session::Redis(s) => s.rewrite(dir, chunk, cb),
            Session::Mysql(s) => s.rewrite(dir, chunk, cb),
        }
    }
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
