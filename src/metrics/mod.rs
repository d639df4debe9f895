//! Metric names (the one place they are spelled) and the per-upstream series registry.
//!
//! Labels travel inside the stat name the way Istio's `extraStatTags` expects:
//! `upstream=.=pg;.;dbfault_upstream_tx_bytes_total`. Envoy's tag extractor regex
//! `(upstream=\.=(.*?);\.;)` cuts them out again, so `/stats/prometheus` shows
//! `dbfault_upstream_tx_bytes_total{upstream="pg"}`.

use crate::throughput::{Flushed, RateShare, Traffic};
use requests::{RequestCounts, RequestSeries};
use std::rc::Rc;

pub mod requests;

pub const UPSTREAM_CX_TOTAL: &str = "dbfault_upstream_cx_total";
pub const UPSTREAM_CX_ACTIVE: &str = "dbfault_upstream_cx_active";
pub const UPSTREAM_TX_BYTES_TOTAL: &str = "dbfault_upstream_tx_bytes_total";
pub const UPSTREAM_RX_BYTES_TOTAL: &str = "dbfault_upstream_rx_bytes_total";
pub const UPSTREAM_TX_BYTES_PER_SECOND: &str = "dbfault_upstream_tx_bytes_per_second";
pub const UPSTREAM_RX_BYTES_PER_SECOND: &str = "dbfault_upstream_rx_bytes_per_second";
pub const UPSTREAM_DROPPED_BYTES_TOTAL: &str = "dbfault_upstream_dropped_bytes_total";
pub const FAULTS_INJECTED_TOTAL: &str = "dbfault_faults_injected_total";
pub const FAULT_ACTIVE: &str = "dbfault_fault_active";
pub const FAULT_FAILED_REQUESTS_TOTAL: &str = "dbfault_fault_failed_requests_total";
pub const FAULT_RECOVERY_MS: &str = "dbfault_fault_recovery_ms";
/// Configurations a VM started running: accepted in `on_configure`, or taken over from another
/// VM through shared data (an older VM after a module change, or a worker whose plugin for an
/// identical earlier configuration Envoy reused). A rollout signal: it rises on every VM.
pub const CONFIG_LOADED_TOTAL: &str = "dbfault_config_loaded_total";
pub const CONFIG_INFO: &str = "dbfault_config_info";
pub const CONFIG_REJECTED_TOTAL: &str = "dbfault_config_rejected_total";

/// Every label a metric carries (Istio's `extraStatTags` must list them all).
pub const LABELS: [&str; 6] = ["upstream", "fault", "protocol", "command", "code", "config"];

/// Label value for upstreams beyond `metrics.maxUpstreams`.
pub const OTHER_UPSTREAM: &str = "other";

/// `tagged("m", &[("upstream", "pg")])` → `"upstream=.=pg;.;m"`.
pub fn tagged(name: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(name.len() + 32);
    for (key, value) in tags {
        out.push_str(key);
        out.push_str("=.=");
        out.push_str(value);
        out.push_str(";.;");
    }
    out.push_str(name);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

pub type MetricId = u32;

/// Where metrics go: Envoy's stats in the module, a recording fake in tests. Failures are the
/// sink's to log; callers carry on without the metric (fail open).
pub trait MetricSink {
    fn define(&mut self, kind: MetricKind, name: &str) -> Option<MetricId>;
    /// Adds `delta` (never called with zero: Envoy refuses zero increments).
    fn add(&mut self, id: MetricId, delta: i64);
    /// Sets a gauge to `value` (every VM records the same value, so the last write is right),
    /// or adds a sample to a histogram.
    fn record(&mut self, id: MetricId, value: u64);
}

fn add_nonzero(sink: &mut dyn MetricSink, id: Option<MetricId>, delta: i64) {
    if let (Some(id), true) = (id, delta != 0) {
        sink.add(id, delta);
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Ids of one upstream's six series; `None` where Envoy refused the definition.
#[derive(Debug, Default, Clone, Copy)]
struct SeriesIds {
    cx_total: Option<MetricId>,
    cx_active: Option<MetricId>,
    tx_bytes: Option<MetricId>,
    rx_bytes: Option<MetricId>,
    tx_rate: Option<MetricId>,
    rx_rate: Option<MetricId>,
    dropped_bytes: Option<MetricId>,
}

impl SeriesIds {
    fn define(sink: &mut dyn MetricSink, upstream: &str) -> SeriesIds {
        let mut def = |kind, name| sink.define(kind, &tagged(name, &[("upstream", upstream)]));
        SeriesIds {
            cx_total: def(MetricKind::Counter, UPSTREAM_CX_TOTAL),
            cx_active: def(MetricKind::Gauge, UPSTREAM_CX_ACTIVE),
            tx_bytes: def(MetricKind::Counter, UPSTREAM_TX_BYTES_TOTAL),
            rx_bytes: def(MetricKind::Counter, UPSTREAM_RX_BYTES_TOTAL),
            tx_rate: def(MetricKind::Gauge, UPSTREAM_TX_BYTES_PER_SECOND),
            rx_rate: def(MetricKind::Gauge, UPSTREAM_RX_BYTES_PER_SECOND),
            dropped_bytes: def(MetricKind::Counter, UPSTREAM_DROPPED_BYTES_TOTAL),
        }
    }
}

#[derive(Debug)]
struct UpstreamSeries {
    label: String,
    ids: SeriesIds,
    traffic: Rc<Traffic>,
    tx_flushed: Flushed,
    rx_flushed: Flushed,
    dropped_flushed: Flushed,
    tx_rate: RateShare,
    rx_rate: RateShare,
    /// Connections opened, and the change of open connections, not yet in Envoy's stats.
    opened: i64,
    active_change: i64,
    requests: Rc<RequestCounts>,
    request_series: RequestSeries,
}

impl UpstreamSeries {
    fn flush_counts(&mut self, sink: &mut dyn MetricSink) {
        add_nonzero(sink, self.ids.cx_total, std::mem::take(&mut self.opened));
        add_nonzero(
            sink,
            self.ids.cx_active,
            std::mem::take(&mut self.active_change),
        );
    }

    fn flush_bytes(&mut self, sink: &mut dyn MetricSink) {
        let tx = self.tx_flushed.take(self.traffic.tx.get());
        let rx = self.rx_flushed.take(self.traffic.rx.get());
        let dropped = self.dropped_flushed.take(self.traffic.dropped.get());
        add_nonzero(sink, self.ids.tx_bytes, saturating_i64(tx));
        add_nonzero(sink, self.ids.rx_bytes, saturating_i64(rx));
        add_nonzero(sink, self.ids.dropped_bytes, saturating_i64(dropped));
        self.request_series.flush(sink, &self.requests);
    }
}

/// A connection's handle on its upstream's series, taken once when the upstream is identified.
#[derive(Debug, Clone)]
pub struct ConnectionStats {
    slot: usize,
    /// The hot path adds forwarded bytes here.
    pub traffic: Rc<Traffic>,
    /// Sessions, statements and errors of the protocol the connection speaks.
    pub requests: Rc<RequestCounts>,
}

impl ConnectionStats {
    /// Its upstream's series slot (the upstream, as the metrics name it).
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// This VM's upstream series: defined once per upstream, cached, flushed once per interval.
///
/// Every counter and `cx_active` is at most one interval stale, whether connections are open
/// or closed: host calls per connection open and close cost more than all the rest of a
/// connection's bookkeeping (measured in the benchmark), so they are batched per interval. The
/// bytes-per-second gauges are recomputed at each flush.
#[derive(Debug)]
pub struct Telemetry {
    series: Vec<UpstreamSeries>,
    /// Upstream label → series slot, sorted by label (binary search: a map type per key would
    /// each add its own copy of the hash table code to the module).
    by_upstream: Vec<(String, usize)>,
    /// Distinct upstreams with their own series (`other` not included).
    named: usize,
    last_flush_nanos: Option<u64>,
    /// `faults_injected_total`, `fault_failed_requests_total` and `fault_recovery_ms` per
    /// (upstream series, fault name): few per upstream.
    injected: Vec<(usize, String, Option<MetricId>)>,
    failed: Vec<(usize, String, Option<MetricId>)>,
    recovery: Vec<(usize, String, Option<MetricId>)>,
    /// `fault_active` per fault name (at most 256 rules).
    active: Vec<(String, Option<MetricId>)>,
    /// `config_loaded_total`, once defined (`Some(None)`: Envoy refused it).
    config_loaded: Option<Option<MetricId>>,
    /// The running configuration's `config_info` gauge: its id and the gauge's.
    config_info: Option<(String, Option<MetricId>)>,
    config_rejected: Option<Option<MetricId>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub const fn new() -> Telemetry {
        Telemetry {
            series: Vec::new(),
            by_upstream: Vec::new(),
            named: 0,
            last_flush_nanos: None,
            injected: Vec::new(),
            failed: Vec::new(),
            recovery: Vec::new(),
            active: Vec::new(),
            config_loaded: None,
            config_info: None,
            config_rejected: None,
        }
    }

    /// Counts a new connection to `upstream` and returns its handle. Beyond `max_upstreams`
    /// distinct upstreams, new ones share the `other` series.
    pub fn open(
        &mut self,
        sink: &mut dyn MetricSink,
        upstream: &str,
        max_upstreams: usize,
    ) -> ConnectionStats {
        let slot = match self.slot_of(upstream) {
            Some(slot) => slot,
            None if self.named < max_upstreams && upstream != OTHER_UPSTREAM => {
                self.named += 1;
                self.insert(sink, upstream)
            }
            None => match self.slot_of(OTHER_UPSTREAM) {
                Some(slot) => slot,
                None => self.insert(sink, OTHER_UPSTREAM),
            },
        };
        let (traffic, requests) = match self.series.get_mut(slot) {
            Some(series) => {
                series.opened += 1;
                series.active_change += 1;
                (Rc::clone(&series.traffic), Rc::clone(&series.requests))
            }
            None => (Rc::default(), Rc::new(RequestCounts::new(upstream))),
        };
        ConnectionStats {
            slot,
            traffic,
            requests,
        }
    }

    fn insert(&mut self, sink: &mut dyn MetricSink, upstream: &str) -> usize {
        let slot = self.series.len();
        self.series.push(UpstreamSeries {
            label: upstream.to_owned(),
            ids: SeriesIds::define(sink, upstream),
            traffic: Rc::default(),
            tx_flushed: Flushed::default(),
            rx_flushed: Flushed::default(),
            dropped_flushed: Flushed::default(),
            tx_rate: RateShare::default(),
            rx_rate: RateShare::default(),
            opened: 0,
            active_change: 0,
            requests: Rc::new(RequestCounts::new(upstream)),
            request_series: RequestSeries::default(),
        });
        if let Err(at) = self.find(upstream) {
            self.by_upstream.insert(at, (upstream.to_owned(), slot));
        }
        slot
    }

    fn find(&self, upstream: &str) -> Result<usize, usize> {
        self.by_upstream
            .binary_search_by(|(label, _)| label.as_str().cmp(upstream))
    }

    fn slot_of(&self, upstream: &str) -> Option<usize> {
        let at = self.find(upstream).ok()?;
        self.by_upstream.get(at).map(|(_, slot)| *slot)
    }

    /// The upstream label a connection's series carries (`other` beyond the limit).
    pub fn label(&self, conn: &ConnectionStats) -> &str {
        self.series
            .get(conn.slot)
            .map_or(OTHER_UPSTREAM, |s| s.label.as_str())
    }

    /// Counts one connection `fault` acted on (dry runs included).
    pub fn fault_injected(
        &mut self,
        sink: &mut dyn MetricSink,
        conn: &ConnectionStats,
        fault: &str,
    ) {
        let id = self.fault_series(sink, conn, fault, FAULTS_INJECTED_TOTAL);
        add_nonzero(sink, id, 1);
    }

    /// Counts a request answered with an error (or a connection refused) on `conn`'s upstream
    /// while `fault` acted there.
    pub fn fault_failed_request(
        &mut self,
        sink: &mut dyn MetricSink,
        conn: &ConnectionStats,
        fault: &str,
    ) {
        let id = self.fault_series(sink, conn, fault, FAULT_FAILED_REQUESTS_TOTAL);
        add_nonzero(sink, id, 1);
    }

    /// Sets `fault_recovery_ms{upstream,fault}`: the app's first success on the upstream came
    /// `millis` after the fault stopped acting.
    pub fn fault_recovery(
        &mut self,
        sink: &mut dyn MetricSink,
        conn: &ConnectionStats,
        fault: &str,
        millis: u64,
    ) {
        if let Some(id) = self.fault_series(sink, conn, fault, FAULT_RECOVERY_MS) {
            sink.record(id, millis);
        }
    }

    /// The `metric{upstream,fault}` series of `conn`'s upstream, defined at first use.
    fn fault_series(
        &mut self,
        sink: &mut dyn MetricSink,
        conn: &ConnectionStats,
        fault: &str,
        metric: &str,
    ) -> Option<MetricId> {
        let (cache, kind) = match metric {
            FAULT_FAILED_REQUESTS_TOTAL => (&self.failed, MetricKind::Counter),
            FAULT_RECOVERY_MS => (&self.recovery, MetricKind::Gauge),
            _ => (&self.injected, MetricKind::Counter),
        };
        if let Some((_, _, id)) = cache
            .iter()
            .find(|(slot, name, _)| *slot == conn.slot && name == fault)
        {
            return *id;
        }
        let upstream = self.label(conn).to_owned();
        let id = sink.define(
            kind,
            &tagged(metric, &[("upstream", &upstream), ("fault", fault)]),
        );
        let cache = match metric {
            FAULT_FAILED_REQUESTS_TOTAL => &mut self.failed,
            FAULT_RECOVERY_MS => &mut self.recovery,
            _ => &mut self.injected,
        };
        cache.push((conn.slot, fault.to_owned(), id));
        id
    }

    /// Sets `dbfault_fault_active{fault}` to 1 or 0.
    pub fn fault_active(&mut self, sink: &mut dyn MetricSink, fault: &str, active: bool) {
        let id = match self.active.iter().find(|(name, _)| name == fault) {
            Some((_, id)) => *id,
            None => {
                let id = sink.define(
                    MetricKind::Gauge,
                    &tagged(FAULT_ACTIVE, &[("fault", fault)]),
                );
                self.active.push((fault.to_owned(), id));
                id
            }
        };
        if let Some(id) = id {
            sink.record(id, u64::from(active));
        }
    }

    /// Counts one accepted configuration. Counted whether or not metrics are enabled: it is
    /// how an operator (or a test) sees that every worker runs the configuration just pushed.
    pub fn config_loaded(&mut self, sink: &mut dyn MetricSink) {
        let id = *self
            .config_loaded
            .get_or_insert_with(|| sink.define(MetricKind::Counter, CONFIG_LOADED_TOTAL));
        add_nonzero(sink, id, 1);
    }

    /// The configuration this VM runs, by its id (`config_info{config}` = 1; the one it ran
    /// before goes to 0), so that `count by (config)` shows a rollout converge.
    pub fn config_info(&mut self, sink: &mut dyn MetricSink, config: &str) {
        if let Some((old, id)) = &self.config_info {
            if old == config {
                return;
            }
            if let Some(id) = id {
                sink.record(*id, 0);
            }
        }
        let id = sink.define(
            MetricKind::Gauge,
            &tagged(CONFIG_INFO, &[("config", config)]),
        );
        if let Some(id) = id {
            sink.record(id, 1);
        }
        self.config_info = Some((config.to_owned(), id));
    }

    /// Counts a configuration Envoy was given and dbfault refused (the previous one stays).
    pub fn config_rejected(&mut self, sink: &mut dyn MetricSink) {
        let id = *self
            .config_rejected
            .get_or_insert_with(|| sink.define(MetricKind::Counter, CONFIG_REJECTED_TOTAL));
        add_nonzero(sink, id, 1);
    }

    /// A connection ended. Its bytes are already in the upstream's in-memory counts; they and
    /// its leaving `cx_active` reach Envoy's stats at the next flush (within one interval).
    pub fn close(&mut self, conn: &ConnectionStats) {
        if let Some(series) = self.series.get_mut(conn.slot) {
            series.active_change -= 1;
        }
    }

    /// Flushes byte counters and recomputes the rate gauges, if at least three quarters of
    /// `interval_nanos` passed since the last flush (several root contexts of one VM may tick;
    /// the rate divides by the real elapsed time, so early or late ticks stay correct).
    /// Returns whether it flushed.
    pub fn flush_if_due(
        &mut self,
        sink: &mut dyn MetricSink,
        now_nanos: u64,
        interval_nanos: u64,
    ) -> bool {
        let elapsed = match self.last_flush_nanos {
            Some(last) if now_nanos < last => {
                // The wall clock stepped back: restart the window.
                self.last_flush_nanos = Some(now_nanos);
                return false;
            }
            Some(last) if now_nanos - last < interval_nanos / 4 * 3 => return false,
            Some(last) => now_nanos - last,
            None => 0,
        };
        self.last_flush_nanos = Some(now_nanos);
        for series in &mut self.series {
            series.flush_bytes(sink);
            series.flush_counts(sink);
            let tx = series.tx_rate.update(series.traffic.tx.get(), elapsed);
            let rx = series.rx_rate.update(series.traffic.rx.get(), elapsed);
            add_nonzero(sink, series.ids.tx_rate, tx);
            add_nonzero(sink, series.ids.rx_rate, rx);
        }
        true
    }

    /// Takes this VM's share out of the rate gauges (metrics switched off, or the last root
    /// context of the VM is going away) and flushes the counters.
    pub fn withdraw(&mut self, sink: &mut dyn MetricSink) {
        self.last_flush_nanos = None;
        for series in &mut self.series {
            series.flush_bytes(sink);
            series.flush_counts(sink);
            let tx = series.tx_rate.withdraw(series.traffic.tx.get());
            let rx = series.rx_rate.withdraw(series.traffic.rx.get());
            add_nonzero(sink, series.ids.tx_rate, tx);
            add_nonzero(sink, series.ids.rx_rate, rx);
        }
    }
}

/// A [`MetricSink`] that keeps everything in memory and notes misuse (a zero increment, a
/// counter going down), for unit and property tests. Native builds only: never in the module.
/// (A feature for it would need the crate as its own dev-dependency, which cargo builds twice
/// and whose release test build collides with the cdylib.)
#[cfg(not(target_arch = "wasm32"))]
pub mod fake_sink {
    use super::{MetricId, MetricKind, MetricSink};

    #[derive(Debug, Default)]
    pub struct RecordingSink {
        metrics: Vec<(MetricKind, String, i64)>,
        /// What a real Envoy would have refused or what would be a bug.
        pub violations: Vec<String>,
        /// Increments and records made (each one a host call in the module).
        pub calls: usize,
    }

    impl RecordingSink {
        /// Every defined series and its value.
        pub fn series(&self) -> Vec<(String, i64)> {
            self.metrics
                .iter()
                .map(|(_, n, v)| (n.clone(), *v))
                .collect()
        }

        pub fn value(&self, name: &str) -> Option<i64> {
            self.metrics
                .iter()
                .find(|(_, n, _)| n == name)
                .map(|(_, _, v)| *v)
        }
    }

    impl MetricSink for RecordingSink {
        fn define(&mut self, kind: MetricKind, name: &str) -> Option<MetricId> {
            if let Some(i) = self.metrics.iter().position(|(_, n, _)| n == name) {
                self.violations.push(format!("{name} defined twice"));
                return MetricId::try_from(i).ok();
            }
            self.metrics.push((kind, name.to_owned(), 0));
            MetricId::try_from(self.metrics.len() - 1).ok()
        }

        fn add(&mut self, id: MetricId, delta: i64) {
            self.calls += 1;
            let Some((kind, name, value)) = self.metrics.get_mut(id as usize) else {
                self.violations.push(format!("unknown metric {id}"));
                return;
            };
            if delta == 0 {
                self.violations.push(format!("{name}: zero increment"));
            }
            if *kind == MetricKind::Counter && delta < 0 {
                self.violations
                    .push(format!("{name}: counter decremented by {delta}"));
            }
            *value += delta;
        }

        fn record(&mut self, id: MetricId, value: u64) {
            self.calls += 1;
            match self.metrics.get_mut(id as usize) {
                Some((MetricKind::Gauge, _, v)) => *v = i64::try_from(value).unwrap_or(i64::MAX),
                // A histogram's value here is its sample count.
                Some((MetricKind::Histogram, _, v)) => *v += 1,
                _ => self
                    .violations
                    .push(format!("record on metric {id}, a counter")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake_sink::RecordingSink;
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn name(metric: &str, upstream: &str) -> String {
        tagged(metric, &[("upstream", upstream)])
    }

    #[test]
    fn tag_syntax() {
        assert_eq!(
            tagged("dbfault_x", &[("upstream", "pg"), ("fault", "f1")]),
            "upstream=.=pg;.;fault=.=f1;.;dbfault_x"
        );
        assert_eq!(tagged("dbfault_x", &[]), "dbfault_x");
    }

    #[test]
    fn connection_lifecycle_is_exact() {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        let a = t.open(&mut sink, "pg", 10);
        let b = t.open(&mut sink, "pg", 10);
        assert_eq!(sink.series().len(), 7, "series defined once per upstream");
        // Connection counts reach Envoy at the next flush.
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "pg")), Some(0));
        assert!(t.flush_if_due(&mut sink, SEC, SEC));
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "pg")), Some(2));
        assert_eq!(sink.value(&name(UPSTREAM_CX_ACTIVE, "pg")), Some(2));
        a.traffic.tx.add(100);
        a.traffic.rx.add(40);
        b.traffic.tx.add(1);
        // Nothing reaches the host before the next flush, open or closed.
        t.close(&a);
        assert_eq!(sink.value(&name(UPSTREAM_TX_BYTES_TOTAL, "pg")), Some(0));
        assert!(
            !t.flush_if_due(&mut sink, SEC + SEC / 2, SEC),
            "not due yet"
        );
        assert!(t.flush_if_due(&mut sink, 2 * SEC, SEC));
        assert_eq!(sink.value(&name(UPSTREAM_TX_BYTES_TOTAL, "pg")), Some(101));
        assert_eq!(sink.value(&name(UPSTREAM_RX_BYTES_TOTAL, "pg")), Some(40));
        assert_eq!(sink.value(&name(UPSTREAM_CX_ACTIVE, "pg")), Some(1));
        b.traffic.tx.add(9);
        t.close(&b);
        t.withdraw(&mut sink);
        assert_eq!(sink.value(&name(UPSTREAM_TX_BYTES_TOTAL, "pg")), Some(110));
        assert_eq!(sink.value(&name(UPSTREAM_CX_ACTIVE, "pg")), Some(0));
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "pg")), Some(2));
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }

    #[test]
    fn upstreams_beyond_the_limit_share_other() {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        for upstream in ["a", "b", "c", "d", "a"] {
            let c = t.open(&mut sink, upstream, 2);
            c.traffic.tx.add(1);
            t.close(&c);
        }
        t.withdraw(&mut sink);
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "a")), Some(2));
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "b")), Some(1));
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "other")), Some(2));
        assert_eq!(sink.value(&name(UPSTREAM_TX_BYTES_TOTAL, "other")), Some(2));
        assert_eq!(sink.value(&name(UPSTREAM_CX_TOTAL, "c")), None);
        assert_eq!(sink.series().len(), 21);
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }

    #[test]
    fn rates_follow_traffic_and_return_to_zero() {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        let c = t.open(&mut sink, "redis", 10);
        let rate = name(UPSTREAM_TX_BYTES_PER_SECOND, "redis");
        assert!(t.flush_if_due(&mut sink, 10 * SEC, SEC));
        c.traffic.tx.add(5000);
        c.traffic.rx.add(100);
        // Too early: a second root context ticking half an interval later does nothing.
        assert!(!t.flush_if_due(&mut sink, 10 * SEC + SEC / 2, SEC));
        assert!(t.flush_if_due(&mut sink, 12 * SEC, SEC));
        assert_eq!(sink.value(&rate), Some(2500));
        assert_eq!(
            sink.value(&name(UPSTREAM_RX_BYTES_PER_SECOND, "redis")),
            Some(50)
        );
        assert_eq!(
            sink.value(&name(UPSTREAM_TX_BYTES_TOTAL, "redis")),
            Some(5000)
        );
        assert!(t.flush_if_due(&mut sink, 13 * SEC, SEC));
        assert_eq!(sink.value(&rate), Some(0));
        c.traffic.tx.add(1000);
        assert!(t.flush_if_due(&mut sink, 14 * SEC, SEC));
        assert_eq!(sink.value(&rate), Some(1000));
        t.withdraw(&mut sink);
        assert_eq!(sink.value(&rate), Some(0));
        // A clock that steps back restarts the window instead of computing a bogus rate.
        assert!(t.flush_if_due(&mut sink, 20 * SEC, SEC));
        assert!(!t.flush_if_due(&mut sink, 19 * SEC, SEC));
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }

    #[test]
    fn fault_series() {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        let a = t.open(&mut sink, "pg", 1);
        let b = t.open(&mut sink, "redis", 1);
        t.fault_injected(&mut sink, &a, "outage");
        t.fault_injected(&mut sink, &a, "outage");
        t.fault_injected(&mut sink, &b, "outage");
        let injected = |up| {
            tagged(
                FAULTS_INJECTED_TOTAL,
                &[("upstream", up), ("fault", "outage")],
            )
        };
        assert_eq!(sink.value(&injected("pg")), Some(2));
        assert_eq!(sink.value(&injected("other")), Some(1));
        a.traffic.dropped.add(9);
        t.close(&a);
        t.withdraw(&mut sink);
        assert_eq!(
            sink.value(&name(UPSTREAM_DROPPED_BYTES_TOTAL, "pg")),
            Some(9)
        );
        let active = tagged(FAULT_ACTIVE, &[("fault", "outage")]);
        t.fault_active(&mut sink, "outage", true);
        assert_eq!(sink.value(&active), Some(1));
        t.fault_active(&mut sink, "outage", false);
        assert_eq!(sink.value(&active), Some(0));
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }

    #[test]
    fn config_loads_are_counted_on_one_series() {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        t.config_loaded(&mut sink);
        t.config_loaded(&mut sink);
        assert_eq!(sink.value(CONFIG_LOADED_TOTAL), Some(2));
        assert_eq!(sink.series().len(), 1);
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }

    #[test]
    fn idle_flushes_make_no_host_calls() {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        let _c = t.open(&mut sink, "pg", 10);
        // The first flush reports the new connection (cx_total, cx_active): two host calls.
        t.flush_if_due(&mut sink, SEC, SEC);
        assert_eq!(sink.calls, 2);
        for i in 2..10 {
            t.flush_if_due(&mut sink, i * SEC, SEC);
        }
        assert_eq!(
            sink.calls, 2,
            "an idle connection costs no host call per interval"
        );
        assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }
}
