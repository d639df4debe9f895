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
//! Bounds: at most [`MAX_PENDING`] commands awaiting replies (a longer pipeline is counted but
//! not timed, and rules do not act on it); while rules act, the start of one command (its
//! first 4 KiB of text and their framing, or an inline command of up to 64 KiB) withheld until
//! it is decided, and the start of one error reply while an injected error is awaited.

use super::commands::COMMANDS;
use super::resp::{Resp, Step};
use crate::flow::Direction;
use crate::protocol::{
    edit_for, place, Ask, Code, Edit, ErrorReply, Event, Judge, Protocol, Read, Splices, Verdict,
};
use std::collections::VecDeque;

use crate::protocol::MAX_PENDING;

/// What replaces a command an error is injected into: a command Redis does not have.
const PROVOKING: &[u8] = b"*1\r\n$16\r\ndbfault-injected\r\n";
/// How Redis's answer to it is recognised.
const PROVOKED_MARK: &[u8] = b"dbfault-injected";

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

/// Pub/sub confirmations: the reply kinds of the subscribe family.
const CONFIRMATIONS: [&[u8]; 6] = [
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"unsubscribe",
    b"punsubscribe",
    b"sunsubscribe",
];

fn is_subscribe_family(command: &str) -> bool {
    command.ends_with("subscribe")
}

#[derive(Debug)]
struct Pending {
    command: &'static str,
    /// A subscribe-family command (answered by confirmations).
    subscribes: bool,
    since: u64,
    injected: Option<Box<ErrorReply>>,
    /// Subscribe family: confirmations still expected, and whether the first came.
    confirmations: u64,
    answered: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Session {
    client: Resp,
    server: Resp,
    track: Tracker,
    splices: Splices,
}

#[derive(Debug, Default)]
struct Tracker {
    recognized: Option<Protocol>,
    /// The last command name looked up and its label (pipelines repeat commands).
    last_name: Vec<u8>,
    last_command: Option<&'static str>,
    /// When the last answer's command was written and when it was answered.
    last_sample: Option<(u64, u64)>,
    pending: VecDeque<Pending>,
    /// Subscriptions in force (from the last confirmation's count).
    subscribed: i64,
    injections: usize,
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
        self.client.reading() || self.server.reading()
    }

    pub fn recognized(&self) -> Option<Protocol> {
        self.track.recognized
    }

    /// Whether events in `dir` must be rewritten even when no rule may act on new commands.
    pub fn rewriting(&self, dir: Direction) -> bool {
        self.splices.busy(dir) || (dir == Direction::ToClient && self.track.injections > 0)
    }

    /// Bytes of one data event in `dir`, read only.
    pub fn on_data(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) {
        let Session {
            client,
            server,
            track,
            ..
        } = self;
        match dir {
            Direction::ToDatabase => client.read(bytes, &mut |step| {
                track.client_step(step, now, event, None);
            }),
            Direction::ToClient => server.read(bytes, &mut |step| {
                track.server_step(step, now, event);
            }),
        }
        self.after_read();
    }

    fn after_read(&mut self) {
        if !self.client.reading() || !self.server.reading() {
            self.client.stop();
            self.server.stop();
        }
    }

    /// Bytes of one data event in `dir`, read and rewritten as `judge` (asked for each new
    /// command; `None` when no rule may act) and earlier decisions require.
    pub fn rewrite(
        &mut self,
        dir: Direction,
        chunk: &[u8],
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
        mut judge: Option<&mut Judge<'_>>,
    ) -> Verdict {
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
        let judging = judge.is_some();
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
                                    let edit = track.client_step(
                                        step,
                                        now,
                                        event,
                                        judge.as_deref_mut().map(|j| (j, &mut rewrites)),
                                    );
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
                                    track.client_step(other, now, event, None);
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
                            let edit = track.server_step(step, now, event);
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

impl Tracker {
    fn recognize(&mut self, protocol: Protocol, event: &mut dyn FnMut(Event)) {
        if self.recognized.is_none() {
            self.recognized = Some(protocol);
            event(Event::Recognized(protocol));
        }
    }

    fn client_step(
        &mut self,
        step: Step<'_>,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
        judge: Option<(&mut Judge<'_>, &mut Option<u64>)>,
    ) -> Option<Edit> {
        match step {
            Step::Command { name, text, .. } => {
                self.recognize(Protocol::Redis, event);
                let command = match self.last_command {
                    Some(c) if self.last_name == name => c,
                    _ => {
                        let c = command(name);
                        self.last_name.clear();
                        self.last_name
                            .extend_from_slice(name.get(..32.min(name.len())).unwrap_or_default());
                        self.last_command = Some(c);
                        c
                    }
                };
                event(Event::Request(command));
                if self.pending.len() >= MAX_PENDING {
                    return None;
                }
                let subscribes = is_subscribe_family(command);
                let confirmations = if subscribes {
                    let channels = text.split(|&b| b == b' ').count() as u64 - 1;
                    if command.ends_with("unsubscribe") && channels == 0 {
                        u64::try_from(self.subscribed).unwrap_or(0).max(1)
                    } else {
                        channels.max(1)
                    }
                } else {
                    0
                };
                self.pending.push_back(Pending {
                    command,
                    subscribes,
                    since: now(),
                    injected: None,
                    confirmations,
                    answered: false,
                });
                let (judge, hold) = judge?;
                let act = judge(Ask::Statement { command, text });
                edit_for(
                    act,
                    hold,
                    |_| PROVOKING.to_vec(),
                    |reply| {
                        if let Some(p) = self.pending.back_mut() {
                            p.injected = Some(Box::new(reply));
                            self.injections += 1;
                        }
                    },
                )
            }
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, event);
                None
            }
            _ => None,
        }
    }

    /// Whether the next reply answers a command a fatal error was injected into.
    fn front_is_fatal(&self) -> bool {
        self.pending
            .front()
            .and_then(|p| p.injected.as_ref())
            .is_some_and(|r| r.fatal)
    }

    /// Whether an answer at `now` to a command written at `since` carries a duration sample:
    /// not when the one before it was written and answered at the same moments (one write,
    /// one read).
    fn sampled(&mut self, since: u64, now: u64) -> bool {
        self.last_sample.replace((since, now)) != Some((since, now))
    }

    /// Finishes the front command (popped), reporting its answer if it had none yet.
    fn answer(
        &mut self,
        failed: bool,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) -> Option<Pending> {
        let done = self.pending.pop_front()?;
        if !done.answered {
            let t = now();
            event(Event::Answered {
                command: done.command,
                nanos: t.saturating_sub(done.since),
                failed,
                sampled: self.sampled(done.since, t),
            });
        }
        Some(done)
    }

    fn server_step(
        &mut self,
        step: Step<'_>,
        now: &mut dyn FnMut() -> u64,
        event: &mut dyn FnMut(Event),
    ) -> Option<Edit> {
        let (kind, text, number) = match step {
            Step::Reply {
                kind, text, number, ..
            } => (kind, text, number),
            Step::NestedError(line) => {
                event(Event::Error(error_code(line)));
                return None;
            }
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, event);
                return None;
            }
            _ => return None,
        };
        if kind == b'|' {
            // An attribute: the reply follows.
            return None;
        }
        let aggregate = matches!(kind, b'*' | b'>');
        let confirmation = aggregate && CONFIRMATIONS.iter().any(|c| text.eq_ignore_ascii_case(c));
        let message = kind == b'>'
            || (kind == b'*'
                && self.subscribed > 0
                && [&b"message"[..], b"pmessage", b"smessage"]
                    .iter()
                    .any(|m| text.eq_ignore_ascii_case(m)));
        if confirmation {
            if let Some(n) = number {
                self.subscribed = n;
            }
            let front_subscribes = self.pending.front().is_some_and(|p| p.subscribes);
            if front_subscribes {
                if let Some(front) = self.pending.front_mut() {
                    if !front.answered {
                        front.answered = true;
                        let (command, since, t) = (front.command, front.since, now());
                        let sampled = self.last_sample.replace((since, t)) != Some((since, t));
                        event(Event::Answered {
                            command,
                            nanos: t.saturating_sub(since),
                            failed: false,
                            sampled,
                        });
                    }
                    front.confirmations = front.confirmations.saturating_sub(1);
                    if front.confirmations == 0 {
                        self.pending.pop_front();
                    }
                }
            }
            return None;
        }
        if message {
            return None;
        }
        // A reply: subscribe-family commands still waiting for confirmations are done.
        while self
            .pending
            .front()
            .is_some_and(|p| p.subscribes && p.answered)
        {
            self.pending.pop_front();
        }
        let failed = matches!(kind, b'-' | b'!');
        let done = self.answer(failed, now, event)?;
        let mut code = failed.then(|| error_code(text));
        let mut edit = None;
        if let Some(reply) = done.injected {
            self.injections = self.injections.saturating_sub(1);
            let provoked = failed
                && text
                    .windows(PROVOKED_MARK.len())
                    .any(|w| w == PROVOKED_MARK);
            if reply.fatal || provoked {
                let mut bytes = Vec::with_capacity(reply.message.len() + 3);
                bytes.push(b'-');
                bytes.extend_from_slice(reply.message.as_bytes());
                bytes.extend_from_slice(b"\r\n");
                code = Some(error_code(reply.message.as_bytes()));
                edit = Some(Edit::for_error(&reply, bytes));
            }
        }
        if let Some(code) = code {
            event(Event::Error(code));
        }
        edit
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
