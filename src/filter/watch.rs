//! Reading a connection's protocol for the request metrics: which bytes of a data event the
//! PostgreSQL session sees (only what passes to the peer, each byte once), copied out of
//! Envoy's buffer only when the session needs to see them.

use crate::fault::{Direction, Effect};
use crate::host::{self, HostMetrics};
use crate::metrics::requests::{Protocol, RequestCounts};
use crate::protocol::passing;
use crate::protocol::postgres::session::{Event, Kind, Session};

/// One connection whose protocol is read.
pub struct Watch {
    session: Session,
    /// Client → database bytes at the front of Envoy's buffer already read: a held (paused)
    /// stream presents them again with the next event.
    seen_held: usize,
}

fn protocol(kind: Kind) -> Protocol {
    match kind {
        // A cancel request is PostgreSQL too, though not a session.
        Kind::Postgres | Kind::Cancel => Protocol::Postgres,
        Kind::PostgresTls => Protocol::PostgresTls,
        Kind::Unknown => Protocol::Unknown,
    }
}

fn count(event: Event, counts: &RequestCounts) {
    match event {
        Event::Recognized(kind) => counts.session(protocol(kind)),
        Event::Request(command) => counts.request(command),
        Event::Answered { nanos, .. } => counts.duration(&mut HostMetrics, nanos / 1_000),
        Event::Error(class) => counts.error(class),
    }
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            session: Session::new(),
            seen_held: 0,
        }
    }

    /// A data event of `size` bytes (Envoy's whole buffer) whose bytes meet `effect`;
    /// `prefetched`: the buffer's bytes when they were read already. Returns whether the
    /// connection is still read (when not, the watch can go).
    pub fn on_data(
        &mut self,
        dir: Direction,
        size: usize,
        effect: Effect,
        counts: &RequestCounts,
        prefetched: Option<&[u8]>,
    ) -> bool {
        let (range, held_seen) = passing(dir, size, effect, self.seen_held);
        self.seen_held = held_seen;
        let (start, end) = (range.start, range.end);
        let len = end - start;
        if len > 0 {
            // The clock is read at most once per event, and only if a statement starts or ends.
            let mut time = None;
            let now = &mut || *time.get_or_insert_with(|| host::now_nanos().unwrap_or(0));
            let mut event = |e| count(e, counts);
            let skip = self.session.skippable(dir).min(len);
            self.session.skip(dir, skip, now, &mut event);
            if skip < len {
                let from = start + skip;
                match prefetched.filter(|p| p.len() == size) {
                    Some(bytes) => {
                        let part = bytes.get(from..end).unwrap_or_default();
                        self.session.on_data(dir, part, now, &mut event);
                    }
                    None => {
                        if let Some(bytes) = host::read_data(dir, from, len - skip) {
                            self.session.on_data(dir, &bytes, now, &mut event);
                        }
                    }
                }
            }
        }
        self.session.reading()
    }

    /// The connection ended: one never recognised (no byte from the client) is `unknown`.
    pub fn finish(&self, counts: &RequestCounts) {
        if self.session.kind().is_none() {
            counts.session(Protocol::Unknown);
        }
    }
}
