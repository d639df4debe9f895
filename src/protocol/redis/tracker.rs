//! What one Redis connection's commands and replies mean, kept beside the two readers: the
//! commands pending their replies (pipelines pair by position; pub/sub confirmations and pushes
//! are not replies), the injections awaiting the provoked errors, and a rule's decisions as
//! edits. [`super::session`] drives it.

use super::resp::Step;
use crate::protocol::Callbacks;
use crate::protocol::{edit_for, Act, Ask, Edit, ErrorReply, Event, Protocol};
use std::collections::VecDeque;

use crate::protocol::MAX_PENDING;

use super::session::{command, error_code};

/// What replaces a command an error is injected into: a command Redis does not have.
pub(super) const PROVOKING: &[u8] = b"*1\r\n$16\r\ndbfault-injected\r\n";
/// How Redis's answer to it is recognised.
pub(super) const PROVOKED_MARK: &[u8] = b"dbfault-injected";

/// Pub/sub confirmations: the reply kinds of the subscribe family.
pub(super) const CONFIRMATIONS: [&[u8]; 6] = [
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"unsubscribe",
    b"punsubscribe",
    b"sunsubscribe",
];

pub(super) fn is_subscribe_family(command: &str) -> bool {
    command.ends_with("subscribe")
}

/// What takes the place of Redis's answer to the provoking command.
#[derive(Debug)]
pub(super) enum Injected {
    /// A rule's error.
    Error(ErrorReply),
    /// Redis's answer when the keys read are missing (`miss`), built when it is due (in the
    /// protocol then in force: a pipelined `HELLO 3` ahead of it changes it).
    Miss { command: &'static str, args: u64 },
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) command: &'static str,
    /// A subscribe-family command (answered by confirmations).
    pub(super) subscribes: bool,
    pub(super) since: u64,
    pub(super) injected: Option<Box<Injected>>,
    /// `HELLO`: the protocol version it asks for (2 or 3), taken on at its answer.
    pub(super) hello: Option<bool>,
    /// Subscribe family: confirmations still expected, and whether the first came.
    pub(super) confirmations: u64,
    pub(super) answered: bool,
}

/// Where the connection stands, as a whole (each reader keeps only its framing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// No command read yet.
    #[default]
    Start,
    /// Commands and their replies, read in step (a RESP2 subscriber too: its pushes are
    /// told from replies by `subscribed`).
    Commands,
    /// Either side was not RESP: nothing more is read, from either.
    NotRead,
}

#[derive(Debug, Default)]
pub(super) struct Tracker {
    pub(super) stage: Stage,
    /// What the connection was reported to speak, once known.
    pub(super) recognized: Option<Protocol>,
    /// The last command name looked up and its label (pipelines repeat commands).
    pub(super) last_name: Vec<u8>,
    pub(super) last_command: Option<&'static str>,
    /// When the last answer's command was written and when it was answered.
    pub(super) last_sample: Option<(u64, u64)>,
    pub(super) pending: VecDeque<Pending>,
    /// Subscriptions in force (from the last confirmation's count).
    pub(super) subscribed: i64,
    pub(super) injections: usize,
    /// Commands are being queued by `MULTI` until `EXEC` or `DISCARD`.
    pub(super) queuing: bool,
    /// The session speaks RESP3 (`HELLO 3` was answered).
    pub(super) resp3: bool,
}

impl Tracker {
    pub(super) fn recognize(&mut self, protocol: Protocol, cb: &mut dyn Callbacks) {
        if self.recognized.is_none() {
            self.recognized = Some(protocol);
            cb.event(Event::Recognized(protocol));
        }
    }

    pub(super) fn client_step(
        &mut self,
        step: Step<'_>,
        cb: &mut dyn Callbacks,
        hold: Option<&mut Option<u64>>,
    ) -> Option<Edit> {
        match step {
            Step::Command {
                name, text, args, ..
            } => {
                if self.stage == Stage::Start {
                    self.stage = Stage::Commands;
                    self.recognize(Protocol::Redis, cb);
                }
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
                cb.event(Event::Request(command));
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
                let hello = (command == "hello").then(|| {
                    let version = text.split(|&b| b == b' ').nth(1);
                    version == Some(b"3")
                });
                self.pending.push_back(Pending {
                    command,
                    subscribes,
                    since: cb.now(),
                    injected: None,
                    hello: hello.filter(|_| args > 0),
                    confirmations,
                    answered: false,
                });
                // Answered later, or not as itself: queued in MULTI, or sent by a RESP2
                // subscriber (Redis refuses it in that context).
                let queued = self.queuing || (self.subscribed > 0 && !self.resp3);
                match command {
                    "multi" => self.queuing = true,
                    "exec" | "discard" => self.queuing = false,
                    _ => {}
                }
                let hold = hold?;
                let act = cb.ask(Ask::Statement {
                    command,
                    text,
                    queued,
                });
                if let Some(Act::Miss) = act {
                    // The command does not execute; its answer is a missing key's.
                    if !super::miss::answers(command, args) {
                        return None;
                    }
                    let p = self.pending.back_mut()?;
                    p.injected = Some(Box::new(Injected::Miss { command, args }));
                    self.injections += 1;
                    return Some(Edit::Replace(PROVOKING.to_vec()));
                }
                edit_for(
                    act,
                    hold,
                    |_| PROVOKING.to_vec(),
                    |reply| {
                        if let Some(p) = self.pending.back_mut() {
                            p.injected = Some(Box::new(Injected::Error(reply)));
                            self.injections += 1;
                        }
                    },
                )
            }
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, cb);
                self.stage = Stage::NotRead;
                None
            }
            _ => None,
        }
    }

    /// Whether the next reply answers a command a fatal error was injected into.
    pub(super) fn front_is_fatal(&self) -> bool {
        self.pending
            .front()
            .and_then(|p| p.injected.as_deref())
            .is_some_and(|i| matches!(i, Injected::Error(r) if r.fatal))
    }

    /// Whether an answer at `now` to a command written at `since` carries a duration sample:
    /// not when the one before it was written and answered at the same moments (one write,
    /// one read).
    pub(super) fn sampled(&mut self, since: u64, now: u64) -> bool {
        self.last_sample.replace((since, now)) != Some((since, now))
    }

    /// Finishes the front command (popped), reporting its answer if it had none yet.
    pub(super) fn answer(&mut self, failed: bool, cb: &mut dyn Callbacks) -> Option<Pending> {
        let done = self.pending.pop_front()?;
        if !done.answered {
            let t = cb.now();
            cb.event(Event::Answered {
                command: done.command,
                nanos: t.saturating_sub(done.since),
                failed,
                sampled: self.sampled(done.since, t),
            });
        }
        Some(done)
    }

    pub(super) fn server_step(&mut self, step: Step<'_>, cb: &mut dyn Callbacks) -> Option<Edit> {
        let (kind, text, number) = match step {
            Step::Reply {
                kind, text, number, ..
            } => (kind, text, number),
            Step::NestedError(line) => {
                cb.event(Event::Error(error_code(line)));
                return None;
            }
            Step::Unreadable => {
                self.recognize(Protocol::Unknown, cb);
                self.stage = Stage::NotRead;
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
                        let (command, since, t) = (front.command, front.since, cb.now());
                        let sampled = self.last_sample.replace((since, t)) != Some((since, t));
                        cb.event(Event::Answered {
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
        let provoked = failed
            && text
                .windows(PROVOKED_MARK.len())
                .any(|w| w == PROVOKED_MARK);
        // A missing key's answer is no failure, as the app sees it.
        let missed = provoked
            && self
                .pending
                .front()
                .and_then(|p| p.injected.as_deref())
                .is_some_and(|i| matches!(i, Injected::Miss { .. }));
        let done = self.answer(failed && !missed, cb)?;
        if let Some(resp3) = done.hello.filter(|_| !failed) {
            self.resp3 = resp3;
        }
        let mut code = failed.then(|| error_code(text));
        let mut edit = None;
        if let Some(injected) = done.injected {
            self.injections = self.injections.saturating_sub(1);
            match *injected {
                Injected::Error(reply) if reply.fatal || provoked => {
                    let mut bytes = Vec::with_capacity(reply.message.len() + 3);
                    bytes.push(b'-');
                    bytes.extend_from_slice(reply.message.as_bytes());
                    bytes.extend_from_slice(b"\r\n");
                    code = Some(error_code(reply.message.as_bytes()));
                    edit = Some(Edit::for_error(&reply, bytes));
                }
                Injected::Miss { command, args } if provoked => {
                    code = None;
                    edit = super::miss::answer(command, args, self.resp3).map(Edit::Replace);
                }
                _ => {}
            }
        }
        if let Some(code) = code {
            cb.event(Event::Error(code));
        }
        edit
    }
}
