//! End to end (issue 22): the app's recovery measured from the sidecar — once a rule stops
//! acting, `dbfault_fault_recovery_ms{upstream,fault}` is the time to the app's first
//! successful request there, and `dbfault_fault_failed_requests_total{upstream,fault}` counts
//! what failed while it acted. Both are checked against the test's own clock and counts (it
//! plays the app): a real PostgreSQL 15 whose requests are read, and Redis with request
//! metrics off (a success is then a new connection that carries bytes both ways).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{pg_url, wait_for, Envoy, Postgres, Redis, RedisConn};
use std::time::{Duration, Instant};

const RECOVERY: &str = "dbfault_fault_recovery_ms";
const FAILED: &str = "dbfault_fault_failed_requests_total";

/// How long the app stays away after the rule stops (its own back-off, say).
const AWAY: Duration = Duration::from_millis(1500);

fn wait_series(envoy: &Envoy, metric: &str, upstream: &str, fault: &str, want: f64) {
    wait_for(
        &format!("{metric}{{{upstream},{fault}}} = {want}"),
        Duration::from_secs(15),
        || (envoy.fault_series(metric, upstream, fault) == Some(want)).then_some(()),
    );
}

/// The recovery gauge once it exists.
fn recovery(envoy: &Envoy, upstream: &str, fault: &str) -> f64 {
    wait_for("the recovery gauge", Duration::from_secs(15), || {
        envoy.fault_series(RECOVERY, upstream, fault)
    })
}

#[test]
fn postgres_recovery_is_the_time_to_the_first_answer_that_is_not_an_error() {
    let pg = Postgres::start();
    let plain = r#"{"metrics": {"interval": "100ms"}, "faults": []}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(plain)
        .start();
    let mut client = postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls).unwrap();
    client.batch_execute("CREATE TABLE t (id int)").unwrap();
    // Writes fail with 40001 while the rule acts; new sessions are refused by the second.
    let rules = r#"{"metrics": {"interval": "100ms"}, "faults": [
        {"name": "conflict", "match": {"clusters": ["postgres"], "protocol": "postgres", "commands": ["INSERT"]},
         "error": {"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}},
        {"name": "starting", "match": {"clusters": ["postgres"], "protocol": "postgres"}, "applyTo": "new",
         "error": {"sqlstate": "57P03", "message": "the database system is starting up"}}]}"#;
    assert!(envoy.push_plugin_config(rules));
    let mut failed = 0;
    for i in 0..5 {
        let e = client
            .execute("INSERT INTO t VALUES ($1)", &[&i])
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e}");
        failed += 1;
    }
    // A read passes (it is no failure, and the rule is still acting: no recovery yet).
    client.simple_query("SELECT 1").unwrap();
    for _ in 0..3 {
        let e = postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls)
            .err()
            .unwrap();
        assert_eq!(e.code().map(|c| c.code()), Some("57P03"), "{e}");
    }
    wait_series(&envoy, FAILED, "postgres", "conflict", f64::from(failed));
    wait_series(&envoy, FAILED, "postgres", "starting", 3.0);
    assert_eq!(envoy.fault_series(RECOVERY, "postgres", "conflict"), None);
    // The rules stop; the app comes back after AWAY.
    let stopping = Instant::now();
    assert!(envoy.push_plugin_config(plain));
    let stopped = Instant::now();
    std::thread::sleep(AWAY); // the app's own absence: the quantity measured
    let asking = Instant::now();
    client.execute("INSERT INTO t VALUES (9)", &[]).unwrap();
    let answered = Instant::now();
    let got = recovery(&envoy, "postgres", "conflict");
    assert_between(got, (stopping, stopped), (asking, answered));
    // The session-refusing rule named the same upstream: its own measurement, same success.
    let starting = recovery(&envoy, "postgres", "starting");
    assert_between(starting, (stopping, stopped), (asking, answered));
    // Measured once: a later success (seen by dbfault once its request is counted) leaves it.
    let selects = || {
        envoy.prometheus().into_iter().find_map(|(k, v)| {
            (k.starts_with("dbfault_upstream_requests_total{")
                && k.contains("upstream=\"postgres\"")
                && k.contains("command=\"select\""))
            .then_some(v)
        })
    };
    let before = selects().unwrap_or(0.0);
    client.simple_query("SELECT 1").unwrap();
    wait_for("the later SELECT counted", Duration::from_secs(10), || {
        (selects().unwrap_or(0.0) > before).then_some(())
    });
    assert_eq!(
        envoy.fault_series(RECOVERY, "postgres", "conflict"),
        Some(got)
    );
    assert!(envoy.log().contains("dbfault: fault conflict stopped"));
}

#[test]
fn a_connection_that_carries_bytes_both_ways_is_the_recovery_when_requests_are_not_read() {
    let redis = Redis::start();
    let plain = r#"{"metrics": {"interval": "100ms", "requests": false}, "faults": []}"#;
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(plain)
        .start();
    let rules = r#"{"metrics": {"interval": "100ms", "requests": false}, "faults": [
        {"name": "gone", "match": {"clusters": ["redis"]}, "abort": {}}]}"#;
    assert!(envoy.push_plugin_config(rules));
    for _ in 0..4 {
        let mut c = RedisConn::connect(envoy.redis());
        assert!(
            c.try_cmd(&[b"PING"]).is_err(),
            "an aborted connection answered"
        );
    }
    wait_series(&envoy, FAILED, "redis", "gone", 4.0);
    let stopping = Instant::now();
    assert!(envoy.push_plugin_config(plain));
    let stopped = Instant::now();
    std::thread::sleep(AWAY); // the app's own absence: the quantity measured
    let asking = Instant::now();
    let mut c = RedisConn::connect(envoy.redis());
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    let answered = Instant::now();
    let got = recovery(&envoy, "redis", "gone");
    assert_between(got, (stopping, stopped), (asking, answered));
}

/// A recovery gauge `got` (ms) against the clocks around it: the rule ended between the push and
/// its acknowledgement (`stop`), the success came between the request and its answer
/// (`success`), so the gauge lies between what those bound (±1 ms of rounding).
fn assert_between(got: f64, stop: (Instant, Instant), success: (Instant, Instant)) {
    let low = success.0.duration_since(stop.1).as_millis() as f64;
    let high = success.1.duration_since(stop.0).as_millis() as f64;
    assert!(
        (low - 1.0..=high + 1.0).contains(&got),
        "recovery {got} ms, expected {low}..{high}"
    );
}
