//! Request telemetry per upstream: connections by recognised protocol, requests by protocol
//! and command, errors by protocol and code, request durations.
//!
//! Connections count into [`RequestCounts`] in memory (no host call); the counters reach Envoy
//! once per interval with the byte counters ([`RequestSeries::flush`]), each series defined the
//! first time it has something to report. Durations are histogram samples and go to Envoy as
//! they happen (a histogram cannot be batched by sum).
//!
//! Cardinality per upstream: the protocols, each protocol's fixed command list plus `other`,
//! and error codes (SQLSTATE classes, two characters of `[0-9A-Z]`, anything else `XX`; Redis
//! error words from a fixed list, anything else `other`).

use super::{add_nonzero, saturating_i64, tagged, MetricId, MetricKind, MetricSink};
use std::cell::{Cell, RefCell};

pub const UPSTREAM_SESSIONS_TOTAL: &str = "dbfault_upstream_sessions_total";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "dbfault_upstream_requests_total";
pub const UPSTREAM_REQUEST_ERRORS_TOTAL: &str = "dbfault_upstream_request_errors_total";
pub const UPSTREAM_REQUEST_DURATION_US: &str = "dbfault_upstream_request_duration_us";

use crate::protocol::PROTOCOLS;
pub use crate::protocol::{Code, Protocol};

fn same(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// What one upstream's connections counted since the VM started (monotonic).
#[derive(Debug)]
pub struct RequestCounts {
    /// The upstream label (for defining duration histograms from a connection).
    upstream: String,
    sessions: [Cell<u64>; PROTOCOLS],
    /// Requests by protocol and command (the commands seen so far: a handful per upstream).
    requests: RefCell<Vec<(Protocol, &'static str, u64)>>,
    errors: RefCell<Vec<(Protocol, Code, u64)>>,
    /// Duration histograms by protocol, once defined (`None`: Envoy refused it).
    durations: RefCell<Vec<(Protocol, Option<MetricId>)>>,
}

impl RequestCounts {
    pub fn new(upstream: &str) -> RequestCounts {
        RequestCounts {
            upstream: upstream.to_owned(),
            sessions: Default::default(),
            requests: RefCell::default(),
            errors: RefCell::default(),
            durations: RefCell::default(),
        }
    }

    pub fn session(&self, protocol: Protocol) {
        if let Some(cell) = self.sessions.get(protocol.index()) {
            cell.set(cell.get().wrapping_add(1));
        }
    }

    /// A request of `command` (the `command` label value).
    pub fn request(&self, protocol: Protocol, command: &'static str) {
        let Ok(mut requests) = self.requests.try_borrow_mut() else {
            return;
        };
        match requests
            .iter_mut()
            .find(|(p, c, _)| *p == protocol && same(c, command))
        {
            Some((_, _, n)) => *n += 1,
            None => requests.push((protocol, command, 1)),
        }
    }

    /// An error the client received.
    pub fn error(&self, protocol: Protocol, code: Code) {
        let Ok(mut errors) = self.errors.try_borrow_mut() else {
            return;
        };
        match errors
            .iter_mut()
            .find(|(p, c, _)| *p == protocol && *c == code)
        {
            Some((_, _, n)) => *n += 1,
            None => errors.push((protocol, code, 1)),
        }
    }

    /// A request's duration, recorded at once on the upstream's histogram for `protocol`.
    pub fn duration(&self, sink: &mut dyn MetricSink, protocol: Protocol, micros: u64) {
        let Ok(mut durations) = self.durations.try_borrow_mut() else {
            return;
        };
        let id = match durations.iter().find(|(p, _)| *p == protocol) {
            Some((_, id)) => *id,
            None => {
                let name = tagged(
                    UPSTREAM_REQUEST_DURATION_US,
                    &[
                        ("upstream", self.upstream.as_str()),
                        ("protocol", protocol.label()),
                    ],
                );
                let id = sink.define(MetricKind::Histogram, &name);
                durations.push((protocol, id));
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
#[derive(Debug, Default)]
pub struct RequestSeries {
    sessions: [Series; PROTOCOLS],
    requests: Vec<(Protocol, &'static str, Series)>,
    errors: Vec<(Protocol, Code, Series)>,
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
        if let Ok(requests) = counts.requests.try_borrow() {
            for &(protocol, command, total) in requests.iter() {
                let at = match self
                    .requests
                    .iter()
                    .position(|(p, c, _)| *p == protocol && same(c, command))
                {
                    Some(at) => at,
                    None => {
                        self.requests.push((protocol, command, Series::default()));
                        self.requests.len() - 1
                    }
                };
                if let Some((_, _, series)) = self.requests.get_mut(at) {
                    series.flush(sink, total, || {
                        tagged(
                            UPSTREAM_REQUESTS_TOTAL,
                            &[
                                ("upstream", upstream),
                                ("protocol", protocol.label()),
                                ("command", command),
                            ],
                        )
                    });
                }
            }
        }
        let Ok(errors) = counts.errors.try_borrow() else {
            return;
        };
        for &(protocol, code, total) in errors.iter() {
            let at = match self
                .errors
                .iter()
                .position(|(p, c, _)| *p == protocol && *c == code)
            {
                Some(at) => at,
                None => {
                    self.errors.push((protocol, code, Series::default()));
                    self.errors.len() - 1
                }
            };
            if let Some((_, _, series)) = self.errors.get_mut(at) {
                series.flush(sink, total, || {
                    tagged(
                        UPSTREAM_REQUEST_ERRORS_TOTAL,
                        &[
                            ("upstream", upstream),
                            ("protocol", protocol.label()),
                            ("code", code.label()),
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
    use crate::protocol::sql::{Command, Dialect};

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
        let pg = Protocol::Postgres;
        counts.request(pg, Command::of(b"SELECT 1", Dialect::POSTGRES).name());
        counts.request(pg, Command::of(b"select 2", Dialect::POSTGRES).name());
        counts.request(pg, Command::of(b"frobnicate", Dialect::POSTGRES).name());
        counts.error(pg, Code::class(*b"40"));
        counts.error(pg, Code::class(*b"4\0"));
        counts.duration(&mut sink, pg, 1500);
        counts.duration(&mut sink, pg, 700);
        counts.request(Protocol::Redis, "get");
        counts.error(Protocol::Redis, Code::Word("READONLY"));
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
        let redis = [("upstream", "pg"), ("protocol", "redis")];
        assert_eq!(
            value(
                &sink,
                &[redis[0], redis[1], ("command", "get")],
                UPSTREAM_REQUESTS_TOTAL
            ),
            Some(1)
        );
        assert_eq!(
            value(
                &sink,
                &[redis[0], redis[1], ("code", "READONLY")],
                UPSTREAM_REQUEST_ERRORS_TOTAL
            ),
            Some(1)
        );
        let defined = sink.series().len();
        // A second flush with nothing new makes no host call and defines nothing.
        let calls = sink.calls;
        series.flush(&mut sink, &counts);
        assert_eq!((sink.calls, sink.series().len()), (calls, defined));
        counts.request(
            Protocol::Postgres,
            Command::of(b"SELECT 3", Dialect::POSTGRES).name(),
        );
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
