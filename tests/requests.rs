//! End to end: the request metrics (issue 11) of real PostgreSQL clients through a real Envoy
//! 1.40 with dbfault: psql (simple protocol, after an SSLRequest answered `N`), the Rust
//! `postgres` crate (extended protocol, a named prepared statement), and Redis as the
//! protocol that is not PostgreSQL (its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{pg_url, psql, psql_try, wait_for, Envoy, Postgres, Redis, RedisConn};
use std::time::Duration;

fn series(envoy: &Envoy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    envoy.series(name, labels)
}

fn wait_series(envoy: &Envoy, name: &str, labels: &[(&str, &str)], want: f64) {
    envoy.wait_series(name, labels, want);
}

const PG: (&str, &str) = ("upstream", "postgres");
const POSTGRES: (&str, &str) = ("protocol", "postgres");

#[test]
fn postgres_statements_errors_and_durations_are_counted() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms"}}"#)
        .start();
    // psql: 4 sessions, 6 statements (2 in one Query), one of them failing with 22012.
    psql(envoy.pg(), "CREATE TABLE plants (id int, name text)");
    psql(
        envoy.pg(),
        "INSERT INTO plants VALUES (1, 'fern'); SELECT count(*) FROM plants",
    );
    let (ok, err) = psql_try(envoy.pg(), "SELECT 1/0");
    assert!(!ok && err.contains("division by zero"), "{err}");
    psql(envoy.pg(), "BEGIN; UPDATE plants SET name = 'rose'; COMMIT");
    // The postgres crate: a named prepared statement executed 3 times, and an unnamed one.
    {
        let url = pg_url(envoy.pg());
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let insert = client
            .prepare("INSERT INTO plants VALUES ($1, $2)")
            .unwrap();
        for i in 0..3 {
            client.execute(&insert, &[&i, &"moss"]).unwrap();
        }
        let n: i64 = client
            .query_one("SELECT count(*) FROM plants WHERE name = $1", &[&"moss"])
            .unwrap()
            .get(0);
        assert_eq!(n, 3);
    }
    // Redis is not PostgreSQL: it is counted as Redis.
    RedisConn::connect(envoy.redis()).cmd(&[b"PING"]);

    let requests = "dbfault_upstream_requests_total";
    wait_series(
        &envoy,
        requests,
        &[PG, POSTGRES, ("command", "create")],
        1.0,
    );
    wait_series(
        &envoy,
        requests,
        &[PG, POSTGRES, ("command", "insert")],
        4.0,
    );
    wait_series(
        &envoy,
        requests,
        &[PG, POSTGRES, ("command", "select")],
        3.0,
    );
    for command in ["begin", "update", "commit"] {
        wait_series(&envoy, requests, &[PG, POSTGRES, ("command", command)], 1.0);
    }
    let errors = "dbfault_upstream_request_errors_total";
    wait_series(&envoy, errors, &[PG, POSTGRES, ("code", "22")], 1.0);
    let sessions = "dbfault_upstream_sessions_total";
    wait_series(&envoy, sessions, &[PG, POSTGRES], 5.0);
    wait_series(
        &envoy,
        sessions,
        &[("upstream", "redis"), ("protocol", "redis")],
        1.0,
    );
    assert_eq!(
        series(
            &envoy,
            requests,
            &[("upstream", "redis"), POSTGRES, ("command", "other")]
        ),
        None,
        "Redis commands are not PostgreSQL statements"
    );
    // Every statement answered has a duration sample: all 11 (the failing one included).
    // Histograms reach /stats/prometheus at Envoy's stats flush (every 5 s by default).
    wait_series(
        &envoy,
        "dbfault_upstream_request_duration_us_count",
        &[PG, POSTGRES],
        11.0,
    );
    // Byte counters are untouched by the reading.
    envoy.wait_byte_counters("postgres", "postgres");
}

#[test]
fn request_metrics_off_reads_nothing() {
    let pg = Postgres::start();
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms", "requests": false}}"#)
        .start();
    psql(envoy.pg(), "SELECT 1");
    // The connection is counted (so its series exist), its statements are not.
    wait_for(
        "the connection to be counted",
        Duration::from_secs(10),
        || (envoy.metric("dbfault_upstream_cx_total", "postgres") == Some(1.0)).then_some(()),
    );
    let prom = envoy.prometheus();
    assert!(
        !prom
            .keys()
            .any(|k| k.starts_with("dbfault_upstream_requests_total")
                || k.starts_with("dbfault_upstream_sessions_total")),
        "{prom:?}"
    );
}
