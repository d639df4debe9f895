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

use dbfault_testkit::{config, pg_url, psql, python_json, repo, Envoy, MariaDb, Postgres};
use mysql::prelude::Queryable;
use serde_json::{json, Value};
use std::time::Duration;

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

/// A `mysql` crate connection to `port` (database `shop`), every read and write with a deadline.
fn mysql_conn(port: u16) -> mysql::Conn {
    let deadline = Some(Duration::from_secs(20));
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("root"))
        .db_name(Some("shop"))
        .prefer_socket(false)
        .tcp_connect_timeout(deadline)
        .read_timeout(deadline)
        .write_timeout(deadline);
    mysql::Conn::new(opts).unwrap()
}

fn mysql_errno(e: &mysql::Error) -> u16 {
    match e {
        mysql::Error::MySqlError(e) => e.code,
        other => panic!("not a server error: {other}"),
    }
}

/// Reads every result of a multi-statement query: the first error, if one failed.
fn every_result(
    r: mysql::Result<mysql::QueryResult<'_, '_, '_, mysql::Text>>,
) -> mysql::Result<()> {
    let mut r = r?;
    while let Some(set) = r.iter() {
        for row in set {
            row?;
        }
    }
    Ok(())
}

/// The session's `@@in_transaction`.
fn in_transaction(q: &mut impl Queryable) -> u8 {
    q.query_first("SELECT @@in_transaction").unwrap().unwrap()
}

#[test]
fn the_mysql_crate_s_transactions_retries_and_multi_statements_see_the_real_errors_effects() {
    let rules = [
        mysql_rule("first-try", r#""queryContains": ["try 1"]"#, DEADLOCK),
        mysql_rule(
            "refused",
            r#""commands": ["INSERT"], "queryContains": ["refused"]"#,
            r#""errno": 1205, "sqlstate": "HY000", "message": "Lock wait timeout exceeded; try restarting transaction""#,
        ),
        mysql_rule(
            "statement-only",
            r#""queryContains": ["/* statement-only */"]"#,
            &format!(r#"{DEADLOCK}, "rollback": false"#),
        ),
        mysql_rule("whole", r#""queryContains": ["/* whole */"]"#, DEADLOCK),
    ]
    .join(",");
    let (db, envoy) = mariadb_with(&rules);
    let (ok, out) = dbfault_testkit::mariadb(
        db.port,
        "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1; CREATE DATABASE shop; \
         CREATE TABLE shop.orders (tag varchar(20)) ENGINE=InnoDB; \
         CREATE TABLE shop.counts (id int PRIMARY KEY, n int) ENGINE=InnoDB; \
         INSERT INTO shop.counts VALUES (1, 0), (2, 0), (3, 0)",
    );
    assert!(ok, "{out}");
    let mut direct = mysql_conn(db.port);
    let mut count = |sql: &str| -> i64 { direct.query_first(sql).unwrap().unwrap() };
    let mut app = mysql_conn(envoy.mariadb());

    // The retry pattern with prepared statements: catch 1213, retry the transaction.
    let mut errors = Vec::new();
    let mut after_error = None;
    for attempt in 1..=3 {
        let mut tx = app.start_transaction(mysql::TxOpts::default()).unwrap();
        let tried = tx
            .exec_drop("INSERT INTO orders VALUES (?)", ("retried",))
            .and_then(|()| {
                tx.exec_drop(
                    format!("UPDATE counts SET n = n + 1 WHERE id = 1 /* try {attempt} */"),
                    (),
                )
            });
        match tried {
            Ok(()) => {
                tx.commit().unwrap();
                break;
            }
            Err(e) => {
                errors.push(mysql_errno(&e));
                // Before the crate's own ROLLBACK (when `tx` drops): what the server left.
                after_error.get_or_insert_with(|| in_transaction(&mut tx));
            }
        }
    }
    assert_eq!(errors, [1213]);
    assert_eq!(
        after_error,
        Some(0),
        "a deadlock leaves no transaction open"
    );
    assert_eq!(
        count("SELECT count(*) FROM orders WHERE tag = 'retried'"),
        1
    );
    assert_eq!(count("SELECT n FROM counts WHERE id = 1"), 1);

    // Refused INSERTs (1205: the statement only) leave no rows, prepared or not, in a
    // transaction that then commits or in autocommit.
    let e = app
        .exec_drop("INSERT INTO orders VALUES (?) /* refused */", ("refused",))
        .unwrap_err();
    assert_eq!(mysql_errno(&e), 1205);
    let e = app
        .query_drop("INSERT INTO orders VALUES ('refused')")
        .unwrap_err();
    assert_eq!(mysql_errno(&e), 1205);
    let mut tx = app.start_transaction(mysql::TxOpts::default()).unwrap();
    tx.query_drop("INSERT INTO orders VALUES ('kept')").unwrap();
    let e = tx
        .exec_drop("INSERT INTO orders VALUES (?) -- refused", ("refused",))
        .unwrap_err();
    assert_eq!(mysql_errno(&e), 1205);
    assert_eq!(in_transaction(&mut tx), 1);
    tx.commit().unwrap();
    assert_eq!(
        count("SELECT count(*) FROM orders WHERE tag = 'refused'"),
        0
    );
    assert_eq!(count("SELECT count(*) FROM orders WHERE tag = 'kept'"), 1);

    // Multi-statement UPDATEs on a table with rows: the statements before the acted-on one run,
    // the ones after it do not (the server stops at an error).
    let first = "UPDATE counts SET n = n + 10 WHERE id = 2";
    let sql = format!(
        "{first}; UPDATE counts SET n = n + 10 WHERE id = 3 /* statement-only */; \
         UPDATE counts SET n = n + 10 WHERE id = 2"
    );
    let outcome = every_result(app.query_iter(&sql));
    assert_eq!(mysql_errno(&outcome.unwrap_err()), 1213);
    assert_eq!(count("SELECT n FROM counts WHERE id = 2"), 10);
    assert_eq!(count("SELECT n FROM counts WHERE id = 3"), 0);
    // The server ran exactly the first statement and the stand-in.
    let logged: Vec<String> = mysql_conn(db.port)
        .query("SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log WHERE command_type = 'Query' AND argument LIKE 'UPDATE counts SET n = n + 10%'")
        .unwrap();
    assert_eq!(logged, [format!("{first}; dbfault_injected_1213")]);
    // In a transaction, the default 1213 undoes the whole transaction, the statements of the
    // same query before it included, as a real deadlock does.
    app.query_drop("START TRANSACTION").unwrap();
    app.query_drop("UPDATE counts SET n = n + 100 WHERE id = 3")
        .unwrap();
    let outcome = every_result(app.query_iter(
        "UPDATE counts SET n = n + 100 WHERE id = 2; UPDATE counts SET n = 0 /* whole */",
    ));
    assert_eq!(mysql_errno(&outcome.unwrap_err()), 1213);
    assert_eq!(in_transaction(&mut app), 0);
    assert_eq!(count("SELECT n FROM counts WHERE id = 2"), 10);
    assert_eq!(count("SELECT n FROM counts WHERE id = 3"), 0);
    // The session goes on as one after a real deadlock.
    app.query_drop("UPDATE counts SET n = n + 1 WHERE id = 3")
        .unwrap();
    assert_eq!(count("SELECT n FROM counts WHERE id = 3"), 1);
}

const SERIALIZATION: &str =
    r#""sqlstate": "40001", "message": "could not serialize access due to concurrent update""#;

/// A PostgreSQL server logging every statement it runs, `plants (id, name)` holding
/// `(1, 'fern')`, behind an Envoy whose rule fails statements that say `/* target */`.
fn postgres_logging_all() -> (Postgres, Envoy) {
    let pg = Postgres::start();
    psql(pg.port, "ALTER SYSTEM SET log_statement = 'all'");
    psql(pg.port, "SELECT pg_reload_conf()");
    dbfault_testkit::wait_for("log_statement = all", Duration::from_secs(10), || {
        psql(pg.port, "SHOW log_statement")
            .contains("all")
            .then_some(())
    });
    psql(
        pg.port,
        "CREATE TABLE plants (id int PRIMARY KEY, name text); INSERT INTO plants VALUES (1, 'fern')",
    );
    let rule = format!(
        r#"{{"name": "target", "match": {{"clusters": ["postgres"], "protocol": "postgres", "queryContains": ["/* target */"]}}, "error": {{{SERIALIZATION}}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(&rule))
        .start();
    (pg, envoy)
}

/// The lines of the server's log that say it ran a statement naming `/* target */` (simple
/// `statement:` or extended `execute <name>:` lines).
fn targets_run(pg: &Postgres) -> Vec<String> {
    std::fs::read_to_string(pg.log_path())
        .unwrap()
        .lines()
        .filter(|l| l.contains("/* target */"))
        .filter(|l| l.contains("LOG:  statement:") || l.contains("LOG:  execute"))
        .map(str::to_owned)
        .collect()
}

/// The first column of the first row `sql` returns, as text, read straight from the server.
fn pg_text(port: u16, sql: &str) -> String {
    let mut c = postgres::Client::connect(&pg_url(port), postgres::NoTls).unwrap();
    c.simple_query(sql)
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

fn sqlstate(e: &postgres::Error) -> String {
    e.as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"))
        .code()
        .code()
        .to_owned()
}

/// Runs `steps` in one session against `port`, each step's outcome: `ok` or the SQLSTATE.
fn pg_outcomes(port: u16, steps: &[&str]) -> Vec<String> {
    let mut c = postgres::Client::connect(&pg_url(port), postgres::NoTls).unwrap();
    steps
        .iter()
        .map(|sql| match c.execute(*sql, &[]) {
            Ok(_) => "ok".to_owned(),
            Err(e) => sqlstate(&e),
        })
        .collect()
}

#[test]
fn the_postgres_crate_s_transactions_and_savepoints_see_the_real_errors_effects() {
    let (pg, envoy) = postgres_logging_all();
    let mut c = postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls).unwrap();
    // The extended protocol (Parse/Bind/Execute), in an explicit transaction with a savepoint.
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO plants VALUES ($1, $2)", &[&2, &"moss"])
        .unwrap();
    {
        let mut sp = tx.savepoint("before_rename").unwrap();
        let e = sp
            .execute(
                "UPDATE plants SET name = $1 WHERE id = 1 /* target */",
                &[&"cactus"],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&e), "40001");
        // Failed until ROLLBACK (TO): the server itself refuses the next statement.
        let e = sp.query("SELECT count(*) FROM plants", &[]).unwrap_err();
        assert_eq!(sqlstate(&e), "25P02");
        sp.rollback().unwrap();
    }
    tx.execute("INSERT INTO plants VALUES ($1, $2)", &[&3, &"ivy"])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        pg_text(
            pg.port,
            "SELECT string_agg(id || name, ',' ORDER BY id) FROM plants"
        ),
        "1fern,2moss,3ivy"
    );

    // Without a savepoint the whole transaction is lost, as after a real error: COMMIT rolls
    // back.
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO plants VALUES (4, 'lost')", &[])
        .unwrap();
    let e = tx
        .execute("DELETE FROM plants WHERE id = 1 /* target */", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "40001");
    drop(tx.commit());
    assert_eq!(
        pg_text(pg.port, "SELECT count(*) FROM plants WHERE id IN (1, 4)"),
        "1"
    );

    // A targeted statement in a transaction a real error already failed: the client hears
    // what it hears without dbfault (the server's 25P02, not the rule's error), directly and
    // through Envoy alike.
    let steps = [
        "BEGIN",
        "SELECT 1 / 0",
        "UPDATE plants SET name = 'x' WHERE id = 1 /* target */",
        "ROLLBACK",
        "SELECT 1",
    ];
    let direct = pg_outcomes(pg.port, &steps);
    assert_eq!(direct, ["ok", "22012", "25P02", "ok", "ok"]);
    assert_eq!(pg_outcomes(envoy.pg(), &steps), direct);

    // Simple-protocol multi-statement queries, in and out of a transaction block.
    c.batch_execute("BEGIN; INSERT INTO plants VALUES (5, 'kept'); SAVEPOINT s")
        .unwrap();
    let e = c
        .batch_execute(
            "UPDATE plants SET name = 'y' /* target */; INSERT INTO plants VALUES (6, 'never')",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "40001");
    c.batch_execute("ROLLBACK TO SAVEPOINT s; COMMIT").unwrap();
    assert_eq!(
        pg_text(
            pg.port,
            "SELECT string_agg(name, ',' ORDER BY id) FROM plants"
        ),
        "fern,moss,ivy,kept"
    );

    // The server never ran a statement the rule answered (the extended protocol's are logged
    // as `execute <name>:` when they run, simple ones as `statement:`), and it refused the
    // three stand-ins itself.
    let run = targets_run(&pg);
    assert!(run.is_empty(), "{run:#?}");
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    let provoked = log
        .lines()
        .filter(|l| {
            l.contains("ERROR:") && l.contains("\"dbfault: injected 40001\" does not exist")
        })
        .count();
    assert_eq!(provoked, 3, "{log}");
    // What ran through the extended protocol is logged so: the three INSERTs.
    let inserts = log
        .lines()
        .filter(|l| l.contains("LOG:  execute") && l.contains("INSERT INTO plants"))
        .count();
    assert_eq!(inserts, 3, "{log}");
}

#[test]
fn psycopg_s_transaction_blocks_savepoints_and_retries_see_the_real_errors_effects() {
    let (pg, envoy) = postgres_logging_all();
    let script = repo().join("tests/clients/pg_safety.py");
    let v = python_json(&[
        script.to_str().unwrap(),
        &envoy.pg().to_string(),
        &pg.port.to_string(),
    ]);
    // The savepoint's statement failed and only it was undone; the block went on.
    assert_eq!(v["savepoint"], "40001", "{v}");
    assert_eq!(v["after_savepoint"], 2, "{v}");
    // A failed block is rolled back whole; the retry wrote its row once; prepared statements
    // fail every time they are executed; the session ends idle.
    assert_eq!(v["block"], "40001", "{v}");
    assert_eq!(v["retry_errors"], json!(["40001"]), "{v}");
    assert_eq!(v["prepared"], json!(["40001", "40001", "40001"]), "{v}");
    assert_eq!(v["status"], "IDLE", "{v}");
    // Read straight from the server: the rows the app meant to keep, nothing else.
    assert_eq!(v["rows"], "1fern,10sage,11thyme,13retried", "{v}");
    let run = targets_run(&pg);
    assert!(run.is_empty(), "{run:#?}");
}
