//! End to end: what reaches the database is exactly what the app sent, minus what a rule acted
//! on, and an injected error leaves the server as the real error does (issue 19). Real Envoy
//! 1.40, real MariaDB and PostgreSQL 15, real clients (PyMySQL, psycopg with libpq 18); the
//! servers' own logs and tables are the oracle.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{psql, python_json, repo, Envoy, MariaDb, Postgres};
use serde_json::{json, Value};

fn config(rules: &str) -> String {
    format!(r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{rules}]}}"#)
}

fn mysql_rule(name: &str, matching: &str, error: &str) -> String {
    format!(
        r#"{{"name": "{name}", "match": {{"clusters": ["mariadb"], "protocol": "mysql", {matching}}}, "error": {{{error}}}}}"#
    )
}

const DEADLOCK: &str = r#""errno": 1213, "sqlstate": "40001", "message": "Deadlock found when trying to get lock; try restarting transaction""#;

/// A MariaDB behind Envoy with dbfault under `rules`.
fn mariadb_with(rules: &str) -> (MariaDb, Envoy) {
    MariaDb::behind_envoy(&config(rules))
}

fn mysql_client(mode: &str, envoy: &Envoy, db: &MariaDb) -> Value {
    let script = repo().join("tests/clients/mysql_safety.py");
    python_json(&[
        script.to_str().unwrap(),
        mode,
        &envoy.mariadb().to_string(),
        &db.port.to_string(),
    ])
}

#[test]
fn mysql_statements_are_split_as_the_server_reads_them() {
    let rules = [
        mysql_rule(
            "unions",
            r#""queryContains": ["union"]"#,
            &format!(r#"{DEADLOCK}, "rollback": false"#),
        ),
        mysql_rule(
            "inserts",
            r#""commands": ["INSERT"]"#,
            &format!(r#"{DEADLOCK}, "rollback": false"#),
        ),
        mysql_rule(
            "second",
            r#""queryContains": ["select 2"], "commands": ["SELECT"]"#,
            &format!(r#"{DEADLOCK}, "rollback": false"#),
        ),
    ]
    .join(",");
    let (db, envoy) = mariadb_with(&rules);
    let v = mysql_client("lexing", &envoy, &db);
    let logged: Vec<&str> = v["logged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    let deadlock = json!([
        "error",
        1213,
        "Deadlock found when trying to get lock; try restarting transaction"
    ]);
    // What the server ran for the four queries, in order, as its general log says (PyMySQL's
    // own queries when it connects left out).
    let ours: Vec<&str> = logged
        .iter()
        .copied()
        .filter(|q| !q.starts_with("SELECT CONNECTION_ID") && !q.starts_with("SET "))
        .collect();
    let sent = v["queries"][3].as_str().unwrap();
    assert_eq!(
        ours,
        [
            // A `#` comment: the whole query is one statement, answered by the rule; only the
            // stand-in ran (before the fix: `SELECT 1 # note; dbfault_injected_1213`, which
            // ran `SELECT 1`).
            "dbfault_injected_1213",
            // A backslash-escaped quote: the whole INSERT is the stand-in.
            "dbfault_injected_1213",
            // The first statement as sent, then the stand-in for the second.
            r"SELECT 'it\'s; ok'; dbfault_injected_1213",
            // `5--1` is arithmetic and `-- ;` a comment: nothing acts, it ran as sent.
            sent,
        ],
        "{logged:?}"
    );
    // The client heard the rule's error, not ERR 1064 from a mangled stand-in...
    assert_eq!(v["replies"][0], json!([deadlock]), "{v}");
    assert_eq!(v["replies"][1], json!([deadlock]), "{v}");
    assert_eq!(v["rows"], 0, "{v}");
    // ...the first statement's row and then the error...
    assert_eq!(
        v["replies"][2],
        json!([["rows", [["it's; ok"]]], deadlock]),
        "{v}"
    );
    // ...and both results of the query nothing acted on.
    assert_eq!(
        v["replies"][3],
        json!([["rows", [[6]]], ["rows", []]]),
        "{v}"
    );
}

#[test]
fn an_injected_deadlock_rolls_back_the_transaction_as_a_real_one_does() {
    let rules = [
        mysql_rule("first-try", r#""queryContains": ["try 1"]"#, DEADLOCK),
        mysql_rule(
            "keep",
            r#""queryContains": ["/* keep */"]"#,
            &format!(r#"{DEADLOCK}, "rollback": false"#),
        ),
    ]
    .join(",");
    let (db, envoy) = mariadb_with(&rules);
    let v = mysql_client("deadlock", &envoy, &db);
    // The reference: a real deadlock on the same server rolls the victim's transaction back.
    assert_eq!(v["real"]["errno"], 1213, "{v}");
    assert_eq!(v["real"]["in_transaction"], 0, "{v}");
    assert_eq!(v["real"]["rows"], 0, "{v}");
    assert_eq!(v["real_retried_rows"], 1, "{v}");
    // The injected one leaves the session the same: no transaction, the INSERT undone...
    assert_eq!(v["injected_errors"], json!([1213]), "{v}");
    assert_eq!(
        v["injected_in_transaction"], v["real"]["in_transaction"],
        "{v}"
    );
    assert_eq!(v["injected_rows_after_error"], 0, "{v}");
    // ...so the retry from the start writes the row once (twice before the fix: the retry's
    // START TRANSACTION committed the first attempt's INSERT).
    assert_eq!(v["injected_rows"], 1, "{v}");
    // `rollback: false`: the statement only; the transaction and its INSERT stay.
    assert_eq!(v["kept_errno"], 1213, "{v}");
    assert_eq!(v["kept_in_transaction"], 1, "{v}");
    assert_eq!(v["kept_rows"], 1, "{v}");
}

#[test]
fn an_injected_lock_wait_timeout_undoes_the_statement_only_as_a_real_one_does() {
    let rule = mysql_rule(
        "waits",
        r#""queryContains": ["/* waits */"]"#,
        r#""errno": 1205, "sqlstate": "HY000", "message": "Lock wait timeout exceeded; try restarting transaction""#,
    );
    let (db, envoy) = mariadb_with(&rule);
    let v = mysql_client("lockwait", &envoy, &db);
    assert_eq!(v["real_errno"], 1205, "{v}");
    assert_eq!(v["injected_errno"], 1205, "{v}");
    // Both stay in their transaction, whose INSERT commits.
    assert_eq!(v["real_in_transaction"], 1, "{v}");
    assert_eq!(
        v["injected_in_transaction"], v["real_in_transaction"],
        "{v}"
    );
    assert_eq!(v["real_rows"], 1, "{v}");
    assert_eq!(v["injected_rows"], v["real_rows"], "{v}");
}

#[test]
fn a_protocol_3_2_client_is_read_after_the_server_negotiates_3_0() {
    let pg = Postgres::start();
    psql(pg.port, "CREATE TABLE plants (id int, name text)");
    let rule = r#"{"name": "plants-conflict", "match": {"clusters": ["postgres"], "protocol": "postgres", "commands": ["INSERT"], "queryContains": ["plants"]},
        "error": {"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(rule))
        .start();
    // libpq 18 asks for 3.2; PostgreSQL 15 answers NegotiateProtocolVersion (3.0).
    let script = r#"
import json, sys, psycopg
out = {}
with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                     max_protocol_version="3.2", min_protocol_version="3.0", connect_timeout=10,
                     autocommit=True) as c:
    out["version"] = c.pgconn.protocol_version
    try:
        c.execute("INSERT INTO plants VALUES (1, 'fern')")
        out["insert"] = "ok"
    except psycopg.Error as e:
        out["insert"] = e.sqlstate
    out["select"] = c.execute("SELECT count(*) FROM plants").fetchone()[0]
print(json.dumps(out))
"#;
    let v = python_json(&["-c", script, &envoy.pg().to_string()]);
    assert_eq!(v["insert"], "40001", "the rule acted on a 3.2 session: {v}");
    assert_eq!(v["select"], 0, "the INSERT never ran: {v}");
    envoy.wait_series(
        "dbfault_upstream_requests_total",
        &[
            ("upstream", "postgres"),
            ("protocol", "postgres"),
            ("command", "insert"),
        ],
        1.0,
    );
}
