//! Request telemetry per upstream: connections by recognised protocol, statements by command,
//! errors by SQLSTATE class, statement durations.
//!
//! Connections count into [`RequestCounts`] in memory (a `Cell` add, no host call); the
//! counters reach Envoy once per interval with the byte counters ([`RequestSeries::flush`]),
//! each series defined the first time it has something to report. Durations are histogram
//! samples and go to Envoy as they happen (a histogram cannot be batched by sum).
//!
//! Cardinality per upstream: the protocols, the fixed command list plus `other`, and SQLSTATE
//! classes (two characters of `[0-9A-Z]`; anything else counts as `XX`).

use super::{add_nonzero, saturating_i64, tagged, MetricId, MetricKind, MetricSink};
use crate::protocol::postgres::sql::{Command, COMMANDS};
use std::cell::{Cell, RefCell};

pub const UPSTREAM_SESSIONS_TOTAL: &str = "dbfault_upstream_sessions_total";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "dbfault_upstream_requests_total";
pub const UPSTREAM_REQUEST_ERRORS_TOTAL: &str = "dbfault_upstream_request_errors_total";
pub const UPSTREAM_REQUEST_DURATION_US: &str = "dbfault_upstream_request_duration_us";

/// The `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    /// PostgreSQL whose client and server agreed to encrypt: L4 only.
    PostgresTls,
    /// Anything not recognised.
    Unknown,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Postgres, Protocol::PostgresTls, Protocol::Unknown];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::PostgresTls => "postgres-tls",
            Protocol::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const COMMAND_SLOTS: usize = COMMANDS.len() + 1;

/// What one upstream's connections counted since the VM started (monotonic).
#[derive(Debug)]
pub struct RequestCounts {
    /// The upstream label (for defining the duration histogram from a connection).
    upstream: String,
    sessions: [Cell<u64>; 3],
    /// Statements by command; PostgreSQL is the only protocol with statements so far.
    requests: [Cell<u64>; COMMAND_SLOTS],
    errors: RefCell<Vec<([u8; 2], u64)>>,
    /// The duration histogram, once defined (`Some(None)`: Envoy refused it).
    duration: Cell<Option<Option<MetricId>>>,
}

impl RequestCounts {
    pub fn new(upstream: &str) -> RequestCounts {
        RequestCounts {
            upstream: upstream.to_owned(),
            sessions: Default::default(),
            requests: std::array::from_fn(|_| Cell::new(0)),
            errors: RefCell::default(),
            duration: Cell::new(None),
        }
    }
}

fn bump(cell: Option<&Cell<u64>>) {
    if let Some(cell) = cell {
        cell.set(cell.get().wrapping_add(1));
    }
}

impl RequestCounts {
    pub fn session(&self, protocol: Protocol) {
        bump(self.sessions.get(protocol.index()));
    }

    pub fn request(&self, command: Command) {
        bump(self.requests.get(command.index()));
    }

    /// An ErrorResponse with this SQLSTATE class.
    pub fn error(&self, class: [u8; 2]) {
        let class = if class
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            class
        } else {
            *b"XX"
        };
        let Ok(mut errors) = self.errors.try_borrow_mut() else {
            return;
        };
        match errors.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => errors.push((class, 1)),
        }
    }

    /// A statement's duration, recorded at once on the upstream's histogram.
    pub fn duration(&self, sink: &mut dyn MetricSink, micros: u64) {
        let upstream = self.upstream.as_str();
        let id = match self.duration.get() {
            Some(id) => id,
            None => {
                let name = tagged(
                    UPSTREAM_REQUEST_DURATION_US,
                    &[
                        ("upstream", upstream),
                        ("protocol", Protocol::Postgres.label()),
                    ],
                );
                let id = sink.define(MetricKind::Histogram, &name);
                self.duration.set(Some(id));
                id
            }
        };
        if let Some(id) = id {
            sink.record(id, micros);
        }
    }
}

/// One counter series: its id once defined, and how much of its count Envoy has.
#[derive(Debug, Default, Clone, Copy)]
struct Series {
    id: Option<Option<MetricId>>,
    flushed: u64,
}

impl Series {
    /// Adds what `total` has gained since the last flush, defining the series (named by
    /// `name`) the first time there is something to add.
    fn flush(&mut self, sink: &mut dyn MetricSink, total: u64, name: impl FnOnce() -> String) {
        let delta = total.wrapping_sub(self.flushed);
        if delta == 0 {
            return;
        }
        self.flushed = total;
        let id = *self
            .id
            .get_or_insert_with(|| sink.define(MetricKind::Counter, &name()));
        add_nonzero(sink, id, saturating_i64(delta));
    }
}

/// One upstream's request counter series in Envoy.
#[derive(Debug)]
pub struct RequestSeries {
    sessions: [Series; 3],
    requests: [Series; COMMAND_SLOTS],
    errors: Vec<([u8; 2], Series)>,
}

impl Default for RequestSeries {
    fn default() -> Self {
        RequestSeries {
            sessions: [Series::default(); 3],
            requests: [Series::default(); COMMAND_SLOTS],
            errors: Vec::new(),
        }
    }
}

impl RequestSeries {
    /// Brings Envoy's counters up to `counts`.
    pub fn flush(&mut self, sink: &mut dyn MetricSink, counts: &RequestCounts) {
        let upstream = counts.upstream.as_str();
        for (protocol, (series, count)) in Protocol::ALL
            .iter()
            .zip(self.sessions.iter_mut().zip(&counts.sessions))
        {
            series.flush(sink, count.get(), || {
                tagged(
                    UPSTREAM_SESSIONS_TOTAL,
                    &[("upstream", upstream), ("protocol", protocol.label())],
                )
            });
        }
        for (i, (series, count)) in self.requests.iter_mut().zip(&counts.requests).enumerate() {
            series.flush(sink, count.get(), || {
                tagged(
                    UPSTREAM_REQUESTS_TOTAL,
                    &[
                        ("upstream", upstream),
                        ("protocol", Protocol::Postgres.label()),
                        ("command", COMMANDS.get(i).copied().unwrap_or("other")),
                    ],
                )
            });
        }
        let Ok(errors) = counts.errors.try_borrow() else {
            return;
        };
        for &(class, total) in errors.iter() {
            let at = match self.errors.iter().position(|(c, _)| *c == class) {
                Some(at) => at,
                None => {
                    self.errors.push((class, Series::default()));
                    self.errors.len() - 1
                }
            };
            if let Some((_, series)) = self.errors.get_mut(at) {
                let code = std::str::from_utf8(&class).unwrap_or("XX");
                series.flush(sink, total, || {
                    tagged(
                        UPSTREAM_REQUEST_ERRORS_TOTAL,
                        &[
                            ("upstream", upstream),
                            ("protocol", Protocol::Postgres.label()),
                            ("code", code),
                        ],
                    )
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::fake_sink::RecordingSink;

    #[test]
    fn counts_reach_envoy_at_the_flush_and_series_appear_when_used() {
        let mut sink = RecordingSink::default();
        let counts = RequestCounts::new("pg");
        let mut series = RequestSeries::default();
        series.flush(&mut sink, &counts);
        assert!(
            sink.series().is_empty(),
            "nothing to report, nothing defined"
        );
        counts.session(Protocol::Postgres);
        counts.request(Command::of(b"SELECT 1"));
        counts.request(Command::of(b"select 2"));
        counts.request(Command::of(b"frobnicate"));
        counts.error(*b"40");
        counts.error(*b"4\0");
        counts.duration(&mut sink, 1500);
        counts.duration(&mut sink, 700);
        series.flush(&mut sink, &counts);
        fn value(sink: &RecordingSink, tags: &[(&str, &str)], name: &str) -> Option<i64> {
            sink.value(&tagged(name, tags))
        }
        let pg = [("upstream", "pg"), ("protocol", "postgres")];
        assert_eq!(value(&sink, &pg, UPSTREAM_SESSIONS_TOTAL), Some(1));
        assert_eq!(
            value(
                &sink,
                &[pg[0], pg[1], ("command", "select")],
                UPSTREAM_REQUESTS_TOTAL
            ),
            Some(2)
        );
        assert_eq!(
            value(
                &sink,
                &[pg[0], pg[1], ("command", "other")],
                UPSTREAM_REQUESTS_TOTAL
            ),
            Some(1)
        );
        assert_eq!(
            value(
                &sink,
                &[pg[0], pg[1], ("code", "40")],
                UPSTREAM_REQUEST_ERRORS_TOTAL
            ),
            Some(1)
        );
        assert_eq!(
            value(
                &sink,
                &[pg[0], pg[1], ("code", "XX")],
                UPSTREAM_REQUEST_ERRORS_TOTAL
            ),
            Some(1)
        );
        assert_eq!(
            value(&sink, &pg, UPSTREAM_REQUEST_DURATION_US),
            Some(2),
            "two samples"
        );
        let defined = sink.series().len();
        // A second flush with nothing new makes no host call and defines nothing.
        let calls = sink.calls;
        series.flush(&mut sink, &counts);
        assert_eq!((sink.calls, sink.series().len()), (calls, defined));
        counts.request(Command::of(b"SELECT 3"));
        series.flush(&mut sink, &counts);
        assert_eq!(
            value(
                &sink,
                &[pg[0], pg[1], ("command", "select")],
                UPSTREAM_REQUESTS_TOTAL
            ),
            Some(3)
        );
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }
}
