//! End to end: MySQL/MariaDB awareness (issue 12) on a real MariaDB through a real Envoy 1.40
//! with dbfault — per-statement telemetry and injected MySQL errors heard by the `mariadb`
//! command-line client, the Rust `mysql` crate (server-side prepared statements,
//! multi-statement queries) and PyMySQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    config, mariadb, mariadb_command, python_json, timed, wait_for, Envoy, MariaDb,
    OutputByDeadline,
};
use mysql::prelude::Queryable;
use std::time::Duration;

const MYSQL: &str = r#""match": {"clusters": ["mariadb"], "protocol": "mysql""#;
const DEADLOCK: &str = r#""errno": 1213, "sqlstate": "40001", "message": "Deadlock found when trying to get lock; try restarting transaction""#;

fn start(rules: &str) -> (MariaDb, Envoy) {
    MariaDb::behind_envoy(&config(rules))
}

fn connect(port: u16) -> Result<mysql::Conn, mysql::Error> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(10)))
        .read_timeout(Some(Duration::from_secs(20)))
        .write_timeout(Some(Duration::from_secs(20)));
    mysql::Conn::new(opts)
}

fn wait_series(envoy: &Envoy, name: &str, labels: &[(&str, &str)], want: f64) {
    envoy.wait_series(name, &[&[("upstream", "mariadb")], labels].concat(), want);
}

/// The `garden` database with its `plants (id, name)` table, made straight on the server, and
/// `more` SQL after it.
fn garden(db: &MariaDb, more: &str) {
    let (ok, out) = mariadb(
        db.port,
        &format!("CREATE DATABASE garden; CREATE TABLE garden.plants (id int, name text); {more}"),
    );
    assert!(ok, "{out}");
}

const REQUESTS: &str = "dbfault_upstream_requests_total";
const ERRORS: &str = "dbfault_upstream_request_errors_total";
const MY: (&str, &str) = ("protocol", "mysql");

fn server_error(e: &mysql::Error) -> (u16, String) {
    match e {
        mysql::Error::MySqlError(e) => (e.code, e.state.clone()),
        other => panic!("not a server error: {other}"),
    }
}

#[test]
fn statements_of_the_cli_and_of_a_multi_statement_query_are_counted() {
    let (_db, envoy) = start("");
    let (ok, out) = mariadb(
        envoy.mariadb(),
        "CREATE DATABASE garden; CREATE TABLE garden.plants (id int, name text);
         INSERT INTO garden.plants VALUES (1, 'fern'), (2, 'rose'); SELECT * FROM garden.plants",
    );
    assert!(ok && out.contains("rose"), "{out}");
    let (ok, out) = mariadb(envoy.mariadb(), "SELECT * FROM garden.trees");
    assert!(!ok && out.contains("ERROR 1146 (42S02)"), "{out}");
    // LOCAL INFILE: the file's packets pass unread, and the session stays in step.
    let dir = dbfault_testkit::TempDir::new("infile");
    let file = dir.path().join("plants.tsv");
    std::fs::write(&file, "10\tivy\n11\tsage\n").unwrap();
    let out = mariadb_command(envoy.mariadb())
        .args(["--skip-ssl", "--local-infile=1", "-e"])
        .arg(format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE garden.plants; SELECT count(*) FROM garden.plants",
            file.display()
        ))
        .output_by_deadline()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains('4'),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A compressed session is L4-only.
    let out = mariadb_command(envoy.mariadb())
        .args(["--skip-ssl", "--compress", "-e", "SELECT 'compressed'"])
        .output_by_deadline()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("compressed"));
    // The mysql crate: a multi-statement query (several results), prepared statements.
    let mut conn = connect(envoy.mariadb()).unwrap();
    let mut sets = 0;
    let mut result = conn
        .query_iter("INSERT INTO garden.plants VALUES (3, 'moss'); SELECT name FROM garden.plants; SELECT 1")
        .unwrap();
    while let Some(set) = result.iter() {
        sets += 1;
        for row in set {
            row.unwrap();
        }
    }
    drop(result);
    assert_eq!(sets, 3);
    let stmt = conn
        .prep("SELECT name FROM garden.plants WHERE id = ?")
        .unwrap();
    for id in 1..=5 {
        let _: Option<String> = conn.exec_first(&stmt, (id,)).unwrap();
    }
    conn.query_drop("DO 1").unwrap();
    assert!(conn.ping().is_ok());
    drop(conn);
    // 10 SELECTs of ours and the one the mysql crate sends when it connects (it reads the
    // server's max_allowed_packet and wait_timeout); each client's COM_QUIT (the compressed
    // session's is not read). The LOAD DATA is `other`.
    for (command, n) in [
        ("insert", 2.0),
        ("create", 2.0),
        ("select", 11.0),
        ("quit", 4.0),
        ("other", 1.0),
        ("do", 1.0),
        ("ping", 1.0),
    ] {
        wait_series(&envoy, REQUESTS, &[MY, ("command", command)], n);
    }
    wait_series(&envoy, ERRORS, &[MY, ("code", "42")], 1.0);
    wait_series(&envoy, "dbfault_upstream_sessions_total", &[MY], 4.0);
    wait_series(
        &envoy,
        "dbfault_upstream_sessions_total",
        &[("protocol", "mysql-compressed")],
        1.0,
    );
    envoy.wait_byte_counters("mariadb", "mariadb");
}

#[test]
fn the_cli_hears_the_injected_error_and_the_row_is_not_written() {
    let rule = format!(
        r#"{{"name": "deadlocks", {MYSQL}, "commands": ["INSERT", "UPDATE"], "queryContains": ["plants"]}}, "error": {{{DEADLOCK}}}}}"#
    );
    let (db, envoy) = start(&rule);
    garden(&db, "");
    let (ok, out) = mariadb(
        envoy.mariadb(),
        "INSERT INTO garden.plants VALUES (1, 'fern')",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("ERROR 1213 (40001) at line 1: Deadlock found when trying to get lock; try restarting transaction"),
        "{out}"
    );
    // In one multi-statement query: the statement before runs, the failing one and the rest
    // do not, as after a real error.
    let mut conn = connect(envoy.mariadb()).unwrap();
    let mut result = conn
        .query_iter("SELECT 1; UPDATE garden.plants SET name = 'x'; SELECT 2")
        .unwrap();
    let first: Vec<_> = result.iter().unwrap().collect();
    assert_eq!(first.len(), 1, "the SELECT before ran");
    let err = result.iter().unwrap().next().unwrap().unwrap_err();
    assert_eq!(server_error(&err), (1213, "40001".to_owned()));
    assert!(
        result.iter().is_none(),
        "nothing after the failed statement"
    );
    drop(result);
    // The session stays usable.
    let one: Option<i32> = conn.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
    let (_, out) = mariadb(db.port, "SELECT count(*) AS n FROM garden.plants");
    assert!(out.contains("\n0\n"), "nothing was written: {out}");
    wait_series(&envoy, ERRORS, &[MY, ("code", "40")], 2.0);
    wait_for("2 injections", Duration::from_secs(10), || {
        (envoy.injected("mariadb", "deadlocks") == 2.0).then_some(())
    });
}

#[test]
fn a_share_of_prepared_executions_fail_and_the_rest_execute() {
    let rule = format!(
        r#"{{"name": "deadlocks", {MYSQL}, "commands": ["INSERT"], "queryContains": ["plants"]}}, "percentage": 30, "error": {{{DEADLOCK}}}}}"#
    );
    let (db, envoy) = start(&rule);
    garden(&db, "");
    let mut conn = connect(envoy.mariadb()).unwrap();
    // Prepared before the rule could act on it; matched by its text on every execution.
    let insert = conn
        .prep("INSERT INTO garden.plants VALUES (?, ?)")
        .unwrap();
    let (mut ok, mut failed) = (0, 0);
    for i in 0..400 {
        match conn.exec_drop(&insert, (i, "moss")) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert_eq!(server_error(&e), (1213, "40001".to_owned()));
                failed += 1;
            }
        }
    }
    // Binomial(400, 0.3): mean 120, standard deviation 9.2; ±5 of them.
    assert!(
        (74..=166).contains(&failed),
        "{failed} of 400 failed at 30%"
    );
    let rows: Option<i64> = conn
        .query_first("SELECT count(*) FROM garden.plants")
        .unwrap();
    assert_eq!(rows, Some(ok));
    wait_for("every failure counted", Duration::from_secs(10), || {
        (envoy.injected("mariadb", "deadlocks") == f64::from(failed)).then_some(())
    });
}

#[test]
fn too_many_connections_replaces_the_greeting_and_ends_open_sessions() {
    let (_db, envoy) = start("");
    let mut open = connect(envoy.mariadb()).unwrap();
    let rule = format!(
        r#"{{"name": "full", {MYSQL}}}, "error": {{"errno": 1040, "sqlstate": "08004", "message": "Too many connections"}}}}"#
    );
    assert!(envoy.push_plugin_config(&config(&rule)));
    let (ok, out) = mariadb(envoy.mariadb(), "SELECT 1");
    assert!(
        !ok && out.contains("ERROR 1040 (08004): Too many connections"),
        "{out}"
    );
    let Err(err) = connect(envoy.mariadb()) else {
        panic!("a new session is refused")
    };
    assert!(err.to_string().contains("Too many connections"), "{err}");
    // The open session hears it at its next statement, and is closed.
    let err = open.query_drop("SELECT 1").unwrap_err();
    assert_eq!(server_error(&err).0, 1040);
    assert!(open.query_drop("SELECT 1").is_err());
    wait_series(&envoy, ERRORS, &[MY, ("code", "08")], 3.0);
}

#[test]
fn pymysql_hears_the_injected_error_and_a_megabyte_passes_byte_for_byte() {
    let rule = format!(
        r#"{{"name": "deadlocks", {MYSQL}, "commands": ["INSERT"], "queryContains": ["plants"]}}, "error": {{{DEADLOCK}}}}}"#
    );
    let (db, envoy) = start(&rule);
    garden(&db, "CREATE TABLE garden.blobs (b longblob)");
    let script = r#"
import hashlib, json, sys, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="garden", autocommit=True)
cur = c.cursor()
errors = []
for i in range(10):
    try:
        cur.execute("INSERT INTO plants VALUES (%s, %s)", (i, "fern"))
    except pymysql.err.OperationalError as e:
        errors.append(e.args[0])
big = bytes(i % 251 for i in range(1 << 20))
cur.execute("INSERT INTO blobs VALUES (%s)", (big,))
cur.execute("SELECT b FROM blobs")
back = cur.fetchone()[0]
print(json.dumps({"errors": errors, "same": back == big}))
"#;
    let v = python_json(&["-c", script, &envoy.mariadb().to_string()]);
    assert_eq!(v["errors"].as_array().unwrap().len(), 10, "{v}");
    assert!(
        v["errors"].as_array().unwrap().iter().all(|e| e == 1213),
        "{v}"
    );
    assert_eq!(v["same"], true, "{v}");
    wait_series(&envoy, REQUESTS, &[MY, ("command", "insert")], 11.0);
}

#[test]
fn delays_hold_only_the_listed_statements_and_aborts_never_reach_the_server() {
    let rules = format!(
        r#"{{"name": "slow-selects", {MYSQL}, "commands": ["SELECT"]}}, "delay": {{"latency": "150ms"}}}},
           {{"name": "no-drops", {MYSQL}, "commands": ["DROP"]}}, "abort": {{}}}}"#
    );
    let (db, envoy) = start(&rules);
    assert!(mariadb(db.port, "CREATE DATABASE garden").0);
    let mut conn = connect(envoy.mariadb()).unwrap();
    let mut timed_query = |sql: &str| timed(|| conn.query_drop(sql).unwrap()).1;
    let selects: Vec<Duration> = (0..4).map(|_| timed_query("SELECT 1")).collect();
    let others: Vec<Duration> = (0..4).map(|_| timed_query("DO 1")).collect();
    dbfault_testkit::assert_held(
        "SELECTs",
        &selects,
        Duration::from_millis(150),
        Duration::from_millis(2),
    );
    assert!(
        dbfault_testkit::median(others.clone()) < Duration::from_millis(100),
        "{others:?}"
    );
    assert!(conn.query_drop("DROP DATABASE garden").is_err());
    let (_, out) = mariadb(db.port, "SHOW DATABASES LIKE 'garden'");
    assert!(
        out.contains("garden"),
        "the DROP never reached the server: {out}"
    );
}

#[test]
fn a_tls_session_is_counted_and_left_alone() {
    let db = MariaDb::start_with(true);
    let rule = format!(
        r#"{{"name": "all-selects", {MYSQL}, "commands": ["SELECT"]}}, "error": {{{DEADLOCK}}}}}"#
    );
    let envoy = Envoy::builder()
        .mariadb(db.port)
        .plugin_config(&config(&rule))
        .start();
    // The client asks for TLS: L4 only, so the rule cannot touch its statements.
    let out = mariadb_command(envoy.mariadb())
        .args(["--ssl", "--ssl-verify-server-cert=0", "-e"])
        .arg("SHOW STATUS LIKE 'Ssl_cipher'; SELECT 'over tls'")
        .output_by_deadline()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("over tls"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Ssl_cipher\t\n"),
        "the session is encrypted: {text}"
    );
    wait_series(
        &envoy,
        "dbfault_upstream_sessions_total",
        &[("protocol", "mysql-tls")],
        1.0,
    );
}
