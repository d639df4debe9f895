//! What the fault tests (`fault_kinds.rs`, `rule_lifecycle.rs`) share: ticks, one-rule
//! configurations, Redis pings, Envoy's own byte counters.

use dbfault_testkit::{Envoy, RedisConn};
use std::time::{Duration, Instant};

/// How early a delay's release may come: on the tick nearest to its time, at most 2 ms ahead.
pub const EARLY: Duration = Duration::from_millis(2);

/// The root tick while a delay holds data.
pub const FAST_TICK: Duration = Duration::from_millis(1);

/// The root tick when nothing is held: rule windows and `applyTo: all` act within it.
pub const BASE_TICK: Duration = Duration::from_millis(50);

/// A configuration with one rule, given as the JSON body of the rule without its name/match.
pub fn one_rule(name: &str, hosts: &str, body: &str) -> String {
    format!(
        r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{{"name": "{name}", "match": {{"hosts": [{hosts}]}}, {body}}}]}}"#
    )
}

pub const NO_FAULTS: &str = r#"{"metrics": {"interval": "100ms"}}"#;

pub fn ping(port: u16) -> std::io::Result<Vec<u8>> {
    RedisConn::connect(port).try_cmd(&[b"PING"])
}

pub fn cluster_tx(envoy: &Envoy, cluster: &str) -> i64 {
    envoy.stat(&format!("cluster.{cluster}.upstream_cx_tx_bytes_total"))
}

pub fn cluster_rx(envoy: &Envoy, cluster: &str) -> i64 {
    envoy.stat(&format!("cluster.{cluster}.upstream_cx_rx_bytes_total"))
}

/// The tcp_proxy stat prefix of the shipped listener that carries `upstream`.
pub fn stat_prefix(upstream: &str) -> &str {
    match upstream {
        "firestore.googleapis.com" => "firestore",
        other => other,
    }
}

/// Waits until every connection to `upstream` is closed and in dbfault's stats.
pub fn wait_closed(envoy: &Envoy, upstream: &str) {
    envoy.wait_closed(upstream, stat_prefix(upstream));
}

/// Round trips of `n` PINGs on one connection.
pub fn ping_rtts(port: u16, n: usize) -> Vec<Duration> {
    let mut c = RedisConn::connect(port);
    (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
            t.elapsed()
        })
        .collect()
}

/// Root ticks per second in Envoy's wasm trace log, per (thread, root context), over the span
/// of the traced ticks; and that span in ms.
pub fn tick_rates(envoy: &Envoy) -> (Vec<f64>, i64) {
    let mut ticks: std::collections::HashMap<(String, String), Vec<i64>> = Default::default();
    for (time, line) in envoy.log_entries("[host->vm] proxy_on_tick(") {
        // `[<date> <time>][<thread>][...] ... proxy_on_tick(<root>)`
        let thread = line.get(26..).and_then(|r| r.split(']').next());
        let root = line.rsplit("proxy_on_tick(").next();
        if let (Some(thread), Some(root)) = (thread, root) {
            ticks
                .entry((thread.to_owned(), root.to_owned()))
                .or_default()
                .push(time);
        }
    }
    let all: Vec<i64> = ticks.values().flatten().copied().collect();
    let span = all.iter().max().unwrap_or(&0) - all.iter().min().unwrap_or(&0);
    let rates = ticks
        .values()
        .map(|t| t.len() as f64 * 1000.0 / span.max(1) as f64)
        .collect();
    (rates, span)
}

/// Bytes Envoy moved for one listener and its cluster: (written to the server, written to the
/// client), from Envoy's own counters (tcp_proxy's downstream connection stats count what
/// reached the client's socket, after dbfault).
pub fn envoy_bytes(envoy: &Envoy, stat_prefix: &str, cluster: &str) -> (i64, i64) {
    (
        cluster_tx(envoy, cluster),
        envoy.stat(&format!("tcp.{stat_prefix}.downstream_cx_tx_bytes_total")),
    )
}

/// The instant `secs` seconds from now, in RFC 3339 (whole seconds, rounded up).
pub fn in_secs(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    dbfault::config::time::format((now.as_secs() + 1 + secs) * 1_000_000_000)
}

/// How soon an `applyTo: all` rule reaches an open connection once every worker runs the
/// configuration (a base tick at most, with room for a loaded machine). Envoy's own part —
/// noticing the replaced ECDS file and handing it to the workers — comes before and is not
/// dbfault's: 150 ms here idle, 250 ms with the suite's other tests running.
pub const APPLIED_WITHIN: Duration = Duration::from_millis(250);
