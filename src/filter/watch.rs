//! Reading a connection's protocol: for the request metrics, which bytes of a data event the
//! PostgreSQL session sees (only what passes to the peer, each byte once), copied out of
//! Envoy's buffer only when the session needs to see them; and, while rules act on
//! statements, the rewriting of the event's bytes (see
//! [`crate::protocol::postgres::session`]).

use super::with_vm;
use crate::fault::connection::Connection;
use crate::fault::matching::UpstreamInfo;
use crate::flow::{Direction, Effect};
use crate::host::Host;
use crate::metrics::requests::{Protocol, RequestCounts};
use crate::metrics::ConnectionStats;
use crate::protocol::{passing, Act, Ask, Callbacks, Event, Session, Verdict};
use crate::schedule::mix;
use log::debug;

/// A data event longer than this is read in two steps when its first bytes may start a long
/// message body that nothing needs (a large value, a long row): a head of [`PEEK`] bytes,
/// then, past what the session can skip, the rest. One more host call on such an event
/// (about 2 µs of Envoy CPU), against copying up to the whole event out of Envoy.
const LARGE_EVENT: usize = 16 * 1024;
pub(super) const PEEK: usize = 1024;

/// One connection whose protocol is read.
pub struct Watch {
    session: Session,
    /// The `protocol` label of its requests.
    protocol: Protocol,
    /// Client → database bytes at the front of Envoy's buffer already read: a held (paused)
    /// stream presents them again with the next event.
    seen_held: usize,
    /// The request metrics are counted (off: the session is read only for rules).
    counting: bool,
    /// An active rule may act on this connection's statements (kept current by the VM).
    pub judging: bool,
    /// The newest rule episode when the connection was identified.
    opened_in: u64,
    /// Statements judged so far (each gets its own percentage draw).
    draws: u64,
}

/// What a connection's session reports to and asks of the filter: the host's clock (read at
/// most once per data event, and only if a request starts or ends), the request metrics, and
/// (while rules may act) the VM's rules.
struct Reporting<'a> {
    host: &'a mut dyn Host,
    time: &'a mut Option<u64>,
    protocol: Protocol,
    counts: Option<&'a RequestCounts>,
    /// The connection's upstream and series (answers count against the rules acting there,
    /// or end the wait for the app's recovery).
    up: &'a UpstreamInfo,
    stats: Option<&'a ConnectionStats>,
    /// The rules are asked only when this is set.
    rules: Option<Rules<'a>>,
}

/// What asking the rules about a connection's request needs.
struct Rules<'a> {
    up: &'a UpstreamInfo,
    stats: Option<&'a ConnectionStats>,
    seed: u64,
    opened_in: u64,
    /// Requests judged so far on the connection (each gets its own percentage draw).
    draws: &'a mut u64,
}

impl Callbacks for Reporting<'_> {
    fn now(&mut self) -> u64 {
        let host = &mut *self.host;
        *self
            .time
            .get_or_insert_with(|| host.now_nanos().unwrap_or(0))
    }

    fn event(&mut self, event: Event) {
        if let Event::Answered { failed: false, .. } = event {
            if super::outcomes_watched() {
                let now = self.now();
                let (up, stats, host) = (self.up, self.stats, &mut *self.host);
                with_vm(|vm| vm.succeeded(host, up, stats, None, now));
            }
        }
        count(self.host, event, self.protocol, self.counts);
    }

    fn judging(&self) -> bool {
        self.rules.is_some()
    }

    fn judge(&mut self, ask: Ask<'_>) -> Option<Act> {
        let r = self.rules.as_mut()?;
        *r.draws += 1;
        let draw = mix(r.seed ^ mix(*r.draws));
        judge(self.host, ask, r.up, r.stats, r.seed, draw, r.opened_in)
    }
}

fn count(host: &mut dyn Host, event: Event, protocol: Protocol, counts: Option<&RequestCounts>) {
    let Some(counts) = counts else {
        return;
    };
    match event {
        Event::Recognized(p) => counts.session(p),
        Event::Request(command) => counts.request(protocol, command),
        Event::Answered {
            nanos,
            sampled: true,
            ..
        } => counts.duration(host.metrics(), protocol, nanos / 1_000),
        Event::Answered { .. } => {}
        Event::Error(code) => counts.error(protocol, code),
    }
}

/// What the stream does with an event after [`Watch::rewrite`].
pub struct Rewritten {
    /// Envoy's buffer size after the rewrite.
    pub size: usize,
    pub verdict: Verdict,
}

impl Watch {
    /// Watches a connection of `protocol`, if its sessions are read.
    pub fn new(protocol: Protocol, counting: bool, judging: bool, opened_in: u64) -> Option<Watch> {
        Some(Watch {
            session: Session::new(protocol)?,
            protocol,
            seen_held: 0,
            counting,
            judging,
            opened_in,
            draws: 0,
        })
    }

    /// Whether an event in `dir` must be rewritten (decided before its bytes go anywhere)
    /// rather than only read.
    pub fn rewrites(&self, dir: Direction, conn: &Connection) -> bool {
        self.session.reading()
            && ((dir == Direction::ToDatabase && self.judging && conn.statements_may_act())
                || self.session.rewriting(dir))
    }

    /// A data event of `size` bytes (Envoy's whole buffer) whose bytes meet `effect`;
    /// `prefetched`: the buffer's bytes when they were read already. Returns whether the
    /// connection is still read (when not, the watch can go).
    // The event, the host, and the connection's parts (borrowed apart from its entry).
    #[allow(clippy::too_many_arguments)]
    pub fn on_data(
        &mut self,
        host: &mut dyn Host,
        dir: Direction,
        size: usize,
        effect: Effect,
        up: &UpstreamInfo,
        stats: Option<&ConnectionStats>,
        prefetched: Option<&[u8]>,
    ) -> bool {
        let counts = stats.filter(|_| self.counting).map(|s| &*s.requests);
        let (range, held_seen) = passing(dir, size, effect, self.seen_held);
        self.seen_held = held_seen;
        let (mut at, end) = (range.start, range.end);
        // The identifying chunk was read already: not copied again.
        let prefetched = prefetched.filter(|p| p.len() == size);
        // The clock is read at most once per event, however many steps it takes.
        let mut time = None;
        // Whether to read a head first (see PEEK).
        let mut peek = true;
        while at < end {
            let skip = self.session.skippable(dir).min(end - at);
            if skip > 0 {
                let mut cb = self.reporting(host, &mut time, counts, up, stats);
                self.session.skip(dir, skip, &mut cb);
                at += skip;
                // A peek that let a long body pass unread pays for another.
                peek = skip >= LARGE_EVENT;
                continue;
            }
            let take = if peek && end - at > LARGE_EVENT {
                PEEK
            } else {
                end - at
            };
            peek = false;
            let read;
            let bytes: &[u8] = match prefetched {
                Some(p) => p.get(at..at + take).unwrap_or_default(),
                None => match host.read_data(dir, at, take) {
                    Some(bytes) => {
                        read = bytes;
                        &read
                    }
                    // Bytes the session cannot see would put it out of step: it stops here.
                    None => return false,
                },
            };
            let mut cb = self.reporting(host, &mut time, counts, up, stats);
            self.session.on_data(dir, bytes, &mut cb);
            at += take;
        }
        self.session.reading()
    }

    fn reporting<'a>(
        &self,
        host: &'a mut dyn Host,
        time: &'a mut Option<u64>,
        counts: Option<&'a RequestCounts>,
        up: &'a UpstreamInfo,
        stats: Option<&'a ConnectionStats>,
    ) -> Reporting<'a> {
        Reporting {
            host,
            time,
            protocol: self.protocol,
            counts,
            up,
            stats,
            rules: None,
        }
    }

    /// A data event of `size` bytes read, judged and rewritten before it goes anywhere; Envoy's
    /// buffer is rewritten here when the verdict says so. `None`: the bytes could not be read
    /// (the event passes untouched and the connection is no longer read).
    // The event, the host, and the connection's parts (borrowed apart from its entry).
    #[allow(clippy::too_many_arguments)]
    pub fn rewrite(
        &mut self,
        host: &mut dyn Host,
        dir: Direction,
        size: usize,
        conn: &Connection,
        up: &UpstreamInfo,
        stats: Option<&ConnectionStats>,
        prefetched: Option<&[u8]>,
    ) -> Option<Rewritten> {
        // A held stream presents what was read already again: only the rest is new.
        let from = match dir {
            Direction::ToDatabase => self.seen_held.min(size),
            Direction::ToClient => 0,
        };
        // The identifying chunk was read already: not copied again.
        let read;
        let fresh: &[u8] = match prefetched.filter(|p| p.len() == size && from == 0) {
            Some(bytes) => bytes,
            None => {
                read = host.read_data(dir, from, size - from)?;
                &read
            }
        };
        let counts = stats.filter(|_| self.counting).map(|s| &*s.requests);
        // (MySQL's server side is judged too: its greeting, when a rule refuses new sessions.)
        let judging = self.judging && conn.statements_may_act();
        let mut time = None;
        let mut cb = Reporting {
            host: &mut *host,
            time: &mut time,
            protocol: self.protocol,
            counts,
            up,
            stats,
            rules: judging.then_some(Rules {
                up,
                stats,
                seed: conn.seed(),
                opened_in: self.opened_in,
                draws: &mut self.draws,
            }),
        };
        let verdict = self.session.rewrite(dir, fresh, &mut cb);
        let size = match &verdict.replace {
            Some(bytes) => {
                host.replace_data(dir, from, size, bytes);
                from + bytes.len()
            }
            None => size,
        };
        Some(Rewritten { size, verdict })
    }

    /// The effect the rewritten event met (a held stream presents its bytes again).
    pub fn rewritten(&mut self, dir: Direction, size: usize, effect: Effect) {
        self.seen_held = passing(dir, size, effect, self.seen_held).1;
    }

    /// The held client → database stream was released: Envoy hands the held bytes on without
    /// presenting them again, so the next event is new bytes only.
    pub fn resumed(&mut self) {
        self.seen_held = 0;
    }

    /// The connection ended: one never recognised is `unknown`.
    pub fn finish(&self, stats: Option<&ConnectionStats>) {
        if !self.session.recognized() && self.counting {
            if let Some(s) = stats {
                s.requests.session(Protocol::Unknown);
            }
        }
    }
}

/// Asks the VM's rules about a statement (or a session's start) of a connection to `up`;
/// counts and logs what a rule does (dry runs included), and returns it unless it is a dry run.
fn judge(
    host: &mut dyn Host,
    ask: Ask<'_>,
    up: &UpstreamInfo,
    stats: Option<&ConnectionStats>,
    seed: u64,
    draw: u64,
    opened_in: u64,
) -> Option<Act> {
    // The clock is read only for a delay's release time.
    with_vm(|vm| {
        let now = &mut || host.now_nanos().unwrap_or(0);
        let (slot, act) = vm.engine.judge(up, ask, seed, draw, opened_in, now)?;
        let act = act?;
        debug!(
            "dbfault: {} to {}: fault {}{}",
            match ask {
                Ask::Startup => "session start",
                Ask::Statement { command, .. } => command,
            },
            up.host,
            &*slot.name,
            if slot.rule.dry_run { " (dry run)" } else { "" }
        );
        if let Some(stats) = stats {
            vm.telemetry
                .fault_injected(host.metrics(), stats, &slot.name);
            // A request the rule fails: an error instead of its answer (a refused session
            // included), or its connection closed.
            let fails = matches!(act, Act::Error(_) | Act::Abort);
            if fails && !slot.rule.dry_run && vm.metrics.enabled {
                vm.telemetry
                    .fault_failed_request(host.metrics(), stats, &slot.name);
            }
        }
        (!slot.rule.dry_run).then_some(act)
    })
    .flatten()
}
