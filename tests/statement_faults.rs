//! End to end: statement rules (issue 11) on real PostgreSQL 15 sessions through a real Envoy
//! 1.40 with dbfault — injected SQLSTATEs heard by psql, the Rust `postgres` crate and a
//! pipelining psycopg/libpq client; the session staying in step (transactions fail with 25P02
//! until ROLLBACK, later statements work); fatal errors, refused startups, delays, aborts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{psql_script, wait_for, Envoy, Postgres};
use std::time::Duration;

const PG: &str = r#""match": {"clusters": ["postgres"], "protocol": "postgres""#;

fn config(rules: &str) -> String {
    format!(r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{rules}]}}"#)
}

fn wait_metric(what: &str, mut get: impl FnMut() -> Option<f64>, want: f64) {
    wait_for(what, Duration::from_secs(15), || {
        (get() == Some(want)).then_some(())
    });
}

fn errors(envoy: &Envoy, class: &str) -> Option<f64> {
    envoy.prometheus().into_iter().find_map(|(k, v)| {
        (k.starts_with("dbfault_upstream_request_errors_total{")
            && k.contains("upstream=\"postgres\"")
            && k.contains(&format!("code=\"{class}\"")))
        .then_some(v)
    })
}

#[test]
fn psql_hears_the_injected_sqlstate_and_its_transaction_fails_until_rollback() {
    let pg = Postgres::start();
    let rule = format!(
        r#"{{"name": "plants-conflict", {PG}, "commands": ["INSERT", "UPDATE"], "queryContains": ["plants"]}},
            "error": {{"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(&rule))
        .start();
    // The CREATE names the table but is not an INSERT/UPDATE: it runs. psql asks for TLS
    // first (sslmode=prefer); the server answers N and the session is read in plaintext.
    let (out, err) = psql_script(
        envoy.pg(),
        "CREATE TABLE plants (id int, name text);
         INSERT INTO plants VALUES (1, 'fern');
         SELECT 'count ' || count(*) FROM plants;
         INSERT INTO trees_log VALUES (1);
         BEGIN;
         SELECT 'in transaction';
         UPDATE plants SET name = 'rose';
         SELECT 'skipped';
         ROLLBACK;
         SELECT 'after rollback';
         SELECT 'a' \\; INSERT INTO plants VALUES (2, 'moss') \\; SELECT 'b';
        ",
        &[("PGSSLMODE", "prefer")],
    );
    let injected = "ERROR:  40001: could not serialize access due to concurrent update";
    assert_eq!(err.matches(injected).count(), 3, "stderr:\n{err}");
    assert_eq!(
        err.matches("ERROR:  25P02: current transaction is aborted")
            .count(),
        1,
        "stderr:\n{err}"
    );
    assert!(
        err.contains("ERROR:  42P01: relation \"trees_log\" does not exist"),
        "other statements reach the server:\n{err}"
    );
    assert!(out.contains("count 0"), "the row was not inserted:\n{out}");
    assert!(
        out.contains("in transaction") && out.contains("after rollback"),
        "{out}"
    );
    assert!(!out.contains("skipped"), "{out}");
    // In one Query of three statements (psql's `\;`), the one before ran and the one after
    // was skipped, as after a real error.
    assert!(out.lines().any(|l| l == "a"), "{out}");
    assert!(!out.lines().any(|l| l == "b"), "{out}");
    assert_eq!(
        psql_script(envoy.pg(), "SELECT count(*) FROM plants", &[])
            .0
            .trim(),
        "0"
    );
    wait_metric(
        "3 injections counted",
        || Some(envoy.injected("postgres", "plants-conflict")),
        3.0,
    );
    wait_metric("3 errors of class 40", || errors(&envoy, "40"), 3.0);
    wait_metric("1 error of class 25", || errors(&envoy, "25"), 1.0);
    // The byte counters follow what was forwarded, as Envoy's do.
    let cluster = |dir| envoy.stat(&format!("cluster.postgres.upstream_cx_{dir}_bytes_total"));
    wait_for(
        "byte counters to equal Envoy's",
        Duration::from_secs(10),
        || {
            let tx = envoy.metric("dbfault_upstream_tx_bytes_total", "postgres")?;
            let rx = envoy.metric("dbfault_upstream_rx_bytes_total", "postgres")?;
            (tx == cluster("tx") as f64 && rx == cluster("rx") as f64).then_some(())
        },
    );
}
