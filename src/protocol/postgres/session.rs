//! One PostgreSQL connection's statements and their answers: what is counted (`requests`),
//! timed (`duration`) and what failed (`errors`), from the messages of both directions.
//!
//! The server answers in order. A simple Query is one *group* (its statements, then
//! ReadyForQuery); extended-protocol messages up to a Sync are another (each Execute a
//! statement, then ReadyForQuery), and a client may pipeline many groups. Each statement ends
//! with CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse; after an error
//! the server skips the rest of the group, so those statements end without an answer (counted
//! as requests, not timed). A named prepared statement is known by the text it was prepared
//! with, on every execution.
//!
//! Bounds: at most [`MAX_PENDING`] statements awaiting answers (a longer pipeline is counted
//! but not timed) and [`MAX_PREPARED`] named statements and portals (the oldest is forgotten
//! first: its executions count as `other`).

use super::reader::{sqlstate, statement_text, Opening, Reader, Step};
use super::sql::{statements, Command};
use crate::fault::Direction;
use std::collections::VecDeque;

pub const MAX_PENDING: usize = 1024;
pub const MAX_PREPARED: usize = 256;

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

/// What the session reports, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The connection's kind, once known (once per connection).
    Recognized(Kind),
    /// The client issued a statement.
    Request(Command),
    /// A statement's answer ended: its command, nanoseconds since its request, and whether
    /// it was an error.
    Answered {
        command: Command,
        nanos: u64,
        failed: bool,
    },
    /// The client received an ErrorResponse; the first two characters of its SQLSTATE.
    Error([u8; 2]),
}

#[derive(Debug)]
struct Pending {
    command: Command,
    since: u64,
}

#[derive(Debug, Default)]
struct Group {
    pending: VecDeque<Pending>,
    /// An error ended the group's work: the rest of its statements get no answer.
    failed: bool,
}

#[derive(Debug)]
struct Prepared {
    name: Vec<u8>,
    command: Command,
}

/// Named statements or portals (by their command), oldest first. (Their text joins them when
/// rules match statements by content.)
#[derive(Debug, Default)]
struct Names(VecDeque<Prepared>);

impl Names {
    fn set(&mut self, name: &[u8], command: Command) {
        self.remove(name);
        if self.0.len() >= MAX_PREPARED {
            self.0.pop_front();
        }
        self.0.push_back(Prepared {
            name: name.to_vec(),
            command,
        });
    }

    fn get(&self, name: &[u8]) -> Option<Command> {
        self.0
            .iter()
            .rev()
            .find(|p| p.name == name)
            .map(|p| p.command)
    }

    fn remove(&mut self, name: &[u8]) {
        self.0.retain(|p| p.name != name);
    }
}

/// The first NUL-terminated string of `body` and what follows it.
fn cstr(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|&b| b == 0) {
        Some(end) => (
            body.get(..end).unwrap_or_default(),
            body.get(end + 1..).unwrap_or_default(),
        ),
        None => (body, &[]),
    }
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
}

/// Everything but the two readers (so that a reader's steps can act on it while the reader is
/// still reading: no step is copied or buffered).
#[derive(Debug, Default)]
struct Tracker {
    kind: Option<Kind>,
    /// The client has sent something (a server speaking first is not PostgreSQL).
    client_spoke: bool,
    groups: VecDeque<Group>,
    /// Extended-protocol messages since the last Sync belong to the last group.
    extended_open: bool,
    pending_count: usize,
    statements: Names,
    portals: Names,
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
        self.feed(dir, now, event, &mut |reader, step| reader.skip(n, step));
    }

    /// Bytes of one data event in `dir` at `now` (nanoseconds).
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
        } = self;
        if dir == Direction::ToDatabase {
            track.client_spoke = true;
        } else if !track.client_spoke && track.kind.is_none() {
            // A PostgreSQL server never speaks first (MySQL's does).
            track.recognize(Kind::Unknown, event);
            client.stop();
            server.stop();
            return;
        }
        match dir {
            Direction::ToDatabase if client.reading() => {
                drive(client, &mut |step| {
                    track.client_step(step, server, now, event)
                });
                if let Some(Kind::Unknown | Kind::Cancel) = track.kind {
                    server.stop();
                }
            }
            Direction::ToClient if server.reading() => {
                let mut stop_client = false;
                let mut reopen_client = false;
                drive(server, &mut |step| match step {
                    Step::Encryption(true) => {
                        track.recognize(Kind::PostgresTls, event);
                        stop_client = true;
                    }
                    Step::Encryption(false) => reopen_client = true,
                    Step::Unreadable => {
                        track.recognize(Kind::Unknown, event);
                        stop_client = true;
                    }
                    Step::Message(m) => {
                        let class = (m.tag == b'E')
                            .then(|| sqlstate(m.body).and_then(|c| c.get(..2)))
                            .flatten()
                            .and_then(|c| <[u8; 2]>::try_from(c).ok());
                        track.server_message(m.tag, class, now, event);
                    }
                    Step::Opened(_) => {}
                });
                if stop_client {
                    client.stop();
                } else if reopen_client {
                    client.expect_opening();
                }
            }
            _ => {}
        }
    }
}

impl Tracker {
    fn recognize(&mut self, kind: Kind, event: &mut dyn FnMut(Event)) {
        if self.kind.is_none() || kind == Kind::PostgresTls {
            self.kind = Some(kind);
            event(Event::Recognized(kind));
        }
    }

    fn client_step(
        &mut self,
        step: Step<'_>,
        server: &mut Reader,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) {
        match step {
            Step::Opened(Opening::Startup) => {
                self.recognize(Kind::Postgres, event);
                // The startup is answered by the first ReadyForQuery: a group of its own.
                self.extended_open = false;
                self.groups.push_back(Group::default());
            }
            Step::Opened(Opening::EncryptionRequest) => server.expect_encryption_answer(),
            Step::Opened(Opening::Cancel) => self.recognize(Kind::Cancel, event),
            Step::Unreadable => self.recognize(Kind::Unknown, event),
            Step::Message(m) => self.client_message(m.tag, m.body, now, event),
            Step::Encryption(_) => {}
        }
    }

    fn push(&mut self, command: Command, now: &mut Clock<'_>, event: &mut dyn FnMut(Event)) {
        event(Event::Request(command));
        if self.pending_count >= MAX_PENDING {
            return;
        }
        if let Some(group) = self.groups.back_mut() {
            group.pending.push_back(Pending {
                command,
                since: now(),
            });
            self.pending_count += 1;
        }
    }

    /// The group extended-protocol messages go to (a new one after a Sync).
    fn extended_group(&mut self) {
        if !self.extended_open {
            self.groups.push_back(Group::default());
            self.extended_open = true;
        }
    }

    fn client_message(
        &mut self,
        tag: u8,
        body: &[u8],
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) {
        match tag {
            b'Q' => {
                self.extended_open = false;
                self.groups.push_back(Group::default());
                let text = statement_text(b'Q', body);
                for statement in statements(text) {
                    self.push(Command::of(statement), now, event);
                }
            }
            b'P' => {
                self.extended_group();
                let (name, _) = cstr(body);
                let text = statement_text(b'P', body);
                self.statements.set(name, Command::of(text));
            }
            b'B' => {
                self.extended_group();
                let (portal, rest) = cstr(body);
                let (statement, _) = cstr(rest);
                let command = self.statements.get(statement).unwrap_or(Command::OTHER);
                self.portals.set(portal, command);
            }
            b'E' => {
                self.extended_group();
                let (portal, _) = cstr(body);
                let command = self.portals.get(portal).unwrap_or(Command::OTHER);
                self.push(command, now, event);
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
                self.groups.push_back(Group::default());
            }
            _ => {}
        }
    }

    fn server_message(
        &mut self,
        tag: u8,
        class: Option<[u8; 2]>,
        now: &mut Clock<'_>,
        event: &mut dyn FnMut(Event),
    ) {
        match tag {
            b'C' | b'I' | b's' | b'E' => {
                let failed = tag == b'E';
                if failed {
                    event(Event::Error(class.unwrap_or(*b"XX")));
                }
                let Some(group) = self.groups.front_mut() else {
                    return;
                };
                if group.failed {
                    return;
                }
                if let Some(done) = group.pending.pop_front() {
                    self.pending_count -= 1;
                    event(Event::Answered {
                        command: done.command,
                        nanos: now().saturating_sub(done.since),
                        failed,
                    });
                }
                group.failed = failed;
            }
            b'Z' => {
                if let Some(group) = self.groups.pop_front() {
                    self.pending_count -= group.pending.len();
                }
                if self.groups.is_empty() {
                    self.extended_open = false;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire_bytes::{msg, startup};
    use super::*;

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
                    Event::Request(c) => format!("request {}", c.name()),
                    Event::Answered {
                        command,
                        nanos,
                        failed,
                    } => format!(
                        "{} {} {}ms",
                        if failed { "failed" } else { "done" },
                        command.name(),
                        nanos / 1_000_000
                    ),
                    Event::Error(c) => format!("error {}", String::from_utf8_lossy(&c)),
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
        assert_eq!(kinds, [Event::Recognized(Kind::PostgresTls)]);
        assert!(!s.reading());
        // Redis: unknown, nothing more is read.
        let mut s = Session::new();
        let mut kinds = Vec::new();
        s.on_data(Up, b"*1\r\n$4\r\nPING\r\n", &mut || 0, &mut |e| {
            kinds.push(e)
        });
        assert_eq!(kinds, [Event::Recognized(Kind::Unknown)]);
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
        assert_eq!(kinds, [Event::Recognized(Kind::Unknown)]);
        assert!(!s.reading());
        assert_eq!(s.skippable(Up), usize::MAX);
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
}
