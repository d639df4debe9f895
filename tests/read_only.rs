//! End to end (issue 22): `match.access: "write"` answers writes as a real read-only server
//! does, statement by statement against that server — a PostgreSQL 15 hot standby
//! (`pg_basebackup -R`) and a MariaDB with `read_only` and a user without the privilege that
//! bypasses it — while reads pass to the primary untouched and no refused write lands there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{config, mariadb, pg_url, psql, wait_for, Envoy, MariaDb, Postgres};
use std::time::Duration;

const PG: &str = r#""match": {"clusters": ["postgres"], "protocol": "postgres""#;

/// The two rules a standby is made of: the commands it refuses "during recovery" first, then
/// every other write "in a read-only transaction" (both SQLSTATE 25006).
fn standby_rules() -> String {
    format!(
        r#"{{"name": "standby-recovery", {PG}, "access": "write",
              "commands": ["copy", "vacuum", "analyze", "cluster", "reindex", "listen", "notify", "lock", "prepare"]}},
            "error": {{"sqlstate": "25006", "message": "cannot execute {{command}} during recovery"}}}},
           {{"name": "standby", {PG}, "access": "write"}},
            "error": {{"sqlstate": "25006", "message": "cannot execute {{command}} in a read-only transaction"}}}}"#
    )
}

/// What a statement got: `ok`, or its SQLSTATE and message (a fresh session each time, so
/// that one statement's failure cannot colour the next).
fn outcome(port: u16, sql: &str) -> String {
    let mut client = postgres::Client::connect(&pg_url(port), postgres::NoTls).unwrap();
    let result = if let Some(copy) = sql.strip_prefix("copy-out:") {
        client.copy_out(copy).map(|mut r| {
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut sink).unwrap();
        })
    } else {
        client.simple_query(sql).map(|_| ())
    };
    match result {
        Ok(()) => "ok".into(),
        Err(e) => match e.as_db_error() {
            Some(db) => format!("{} {}", db.code().code(), db.message()),
            None => format!("not a server error: {e}"),
        },
    }
}

/// The first column of the first row, as text.
fn scalar(port: u16, sql: &str) -> String {
    let mut client = postgres::Client::connect(&pg_url(port), postgres::NoTls).unwrap();
    let rows = client.simple_query(sql).unwrap();
    rows.iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .unwrap()
}

const SCHEMA: &str = "CREATE TABLE t (id int primary key, v text);
    INSERT INTO t VALUES (1, 'a');
    CREATE SEQUENCE s;
    CREATE MATERIALIZED VIEW mv AS SELECT * FROM t;
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';";

/// Statements a standby refuses and reads it runs; each through dbfault (to the primary) must
/// get what the standby answers.
const STATEMENTS: &[&str] = &[
    "SELECT * FROM t",
    "INSERT INTO t VALUES (2, 'b')",
    "insert into t values (2, 'b') on conflict do nothing",
    "UPDATE t SET v = 'x'",
    "/* a comment */ DELETE FROM t",
    "MERGE INTO t USING t u ON t.id = u.id WHEN MATCHED THEN UPDATE SET v = 'm'",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR NO KEY UPDATE",
    "SELECT * FROM t FOR SHARE",
    "SELECT * FROM t FOR KEY SHARE",
    "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
    "SELECT 'for update', $$ insert $$ FROM t -- for share",
    "SELECT * INTO t2 FROM t",
    "WITH x AS (INSERT INTO t VALUES (3, 'c') RETURNING *) SELECT * FROM x",
    "WITH x AS (SELECT 1) INSERT INTO t SELECT 4, 'd' FROM x",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "EXPLAIN INSERT INTO t VALUES (5, 'e')",
    "EXPLAIN ANALYZE INSERT INTO t VALUES (5, 'e')",
    "EXPLAIN (ANALYZE) DELETE FROM t",
    "EXPLAIN (ANALYZE false) DELETE FROM t",
    "COPY t FROM STDIN",
    "copy-out:COPY t TO STDOUT",
    "CREATE TABLE t3 (id int)",
    "CREATE TEMP TABLE t4 (id int)",
    "CREATE TABLE t6 AS SELECT 1",
    "CREATE UNIQUE INDEX i2 ON t (v)",
    "CREATE OR REPLACE VIEW v1 AS SELECT 1",
    "CREATE MATERIALIZED VIEW mv2 AS SELECT 1",
    "CREATE SCHEMA sc",
    "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE SEQUENCE s2",
    "CREATE ROLE r1",
    "CREATE USER u1",
    "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
    "ALTER TABLE t ADD COLUMN w int",
    "ALTER SEQUENCE s RESTART",
    "DROP TABLE t",
    "DROP TABLE IF EXISTS nope",
    "DROP OWNED BY r1",
    "TRUNCATE t",
    "GRANT SELECT ON t TO public",
    "REVOKE SELECT ON t FROM public",
    "COMMENT ON TABLE t IS 'x'",
    "REFRESH MATERIALIZED VIEW mv",
    "VACUUM t",
    "ANALYZE",
    "CLUSTER t",
    "REINDEX TABLE t",
    "CHECKPOINT",
    "LISTEN ch",
    "UNLISTEN ch",
    "NOTIFY ch",
    "BEGIN; LOCK TABLE t; COMMIT",
    "LOCK TABLE t",
    "BEGIN; LOCK TABLE t IN ROW EXCLUSIVE MODE; COMMIT",
    "BEGIN; LOCK TABLE t IN SHARE MODE; COMMIT",
    "PREPARE TRANSACTION 'x'",
    "BEGIN; DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE; COMMIT",
    "BEGIN; DECLARE c CURSOR FOR SELECT * FROM t; COMMIT",
    "SELECT 1; INSERT INTO t VALUES (8, 'h'); SELECT 2",
    "DO $$BEGIN END$$",
    "SET work_mem = '8MB'",
    "SHOW work_mem",
    "DISCARD ALL",
    "SELECT pg_advisory_lock(1)",
    "VALUES (1)",
    "TABLE t",
];

/// What the text cannot tell (documented): the standby refuses these, dbfault lets them pass.
const UNTOLD: &[&str] = &[
    "SELECT nextval('s')",
    "SELECT pg_notify('ch', 'x')",
    "BEGIN; SET TRANSACTION READ WRITE; COMMIT",
];

#[test]
fn access_write_answers_each_statement_as_a_postgres_hot_standby_does() {
    let primary = Postgres::start();
    psql(primary.port, SCHEMA);
    let standby = Postgres::standby_of(&primary);
    wait_for(
        "the standby has the schema",
        Duration::from_secs(30),
        || (outcome(standby.port, "SELECT f() FROM mv") == "ok").then_some(()),
    );
    let envoy = Envoy::builder()
        .postgres(primary.port)
        .plugin_config(&config(&standby_rules()))
        .start();
    let mut differ = Vec::new();
    for sql in STATEMENTS {
        let want = outcome(standby.port, sql);
        let got = outcome(envoy.pg(), sql);
        if got != want {
            differ.push(format!("{sql}\n  standby: {want}\n  dbfault: {got}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    for sql in UNTOLD {
        assert_ne!(outcome(standby.port, sql), "ok", "{sql}");
        assert_eq!(outcome(envoy.pg(), sql), "ok", "{sql}");
    }
    // No refused write landed on the primary: its table, sequence and catalog are as before
    // (the reads ran there; `SELECT nextval` was let through, as documented).
    assert_eq!(
        scalar(primary.port, "SELECT string_agg(id || v, ',') FROM t"),
        "1a"
    );
    let created = scalar(
        primary.port,
        "SELECT count(*) FROM pg_class WHERE relname IN ('t2', 't3', 't4', 't6', 'i2', 'v1', 'mv2', 's2')",
    );
    assert_eq!(created, "0");
    let roles = scalar(
        primary.port,
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('r1', 'u1')",
    );
    assert_eq!(roles, "0");
}

const MYSQL: &str = r#""match": {"clusters": ["mariadb"], "protocol": "mysql""#;

/// What MariaDB 10.11 answers a write under `read_only`.
const READ_ONLY_1290: &str = r#""errno": 1290, "sqlstate": "HY000", "message": "The MariaDB server is running with the --read-only option so it cannot execute this statement""#;

const MARIADB_SCHEMA: &str = "CREATE TABLE shop.t (id int primary key, v text);
    INSERT INTO shop.t VALUES (1, 'a');";

/// Statements a MariaDB with `read_only` refuses to `app` and reads it runs.
const MYSQL_STATEMENTS: &[&str] = &[
    "SELECT * FROM t",
    "INSERT INTO t VALUES (2, 'b')",
    "INSERT INTO t VALUES (1, 'b') ON DUPLICATE KEY UPDATE v = 'c'",
    "update t set v = 'x'",
    "# a comment\nDELETE FROM t",
    "/*!40101 DELETE FROM t */",
    "REPLACE INTO t VALUES (1, 'r')",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "SELECT 'for update', `insert` FROM (SELECT 1 AS `insert`) s",
    "CREATE TABLE t3 (id int)",
    "CREATE TEMPORARY TABLE t4 (id int)",
    "CREATE INDEX i ON t (id)",
    "CREATE VIEW v1 AS SELECT 1",
    "ALTER TABLE t ADD COLUMN w int",
    "DROP TABLE t",
    "TRUNCATE TABLE t",
    "RENAME TABLE t TO t9",
    "ANALYZE TABLE t",
    "OPTIMIZE TABLE t",
    "LOCK TABLES t WRITE",
    "LOCK TABLES t READ",
    "SET @x = 1",
    "START TRANSACTION",
    "DO 1",
    "SHOW TABLES",
    "SELECT 1; INSERT INTO t VALUES (8, 'h'); SELECT 2",
];

/// What a statement got as `app` in `shop`: `ok`, or the server's errno and message (a fresh
/// connection each time).
fn mysql_outcome(port: u16, sql: &str) -> String {
    use mysql::prelude::Queryable;
    let deadline = Some(Duration::from_secs(20));
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("app"))
        .db_name(Some("shop"))
        .prefer_socket(false)
        .tcp_connect_timeout(deadline)
        .read_timeout(deadline)
        .write_timeout(deadline);
    let mut conn = mysql::Conn::new(opts).unwrap();
    let result = conn.query_iter(sql).and_then(|mut r| {
        while let Some(set) = r.iter() {
            for row in set {
                row?;
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => "ok".into(),
        Err(mysql::Error::MySqlError(e)) => format!("{} {} {}", e.code, e.state, e.message),
        Err(e) => format!("not a server error: {e}"),
    }
}

#[test]
fn access_write_answers_each_statement_as_a_read_only_mariadb_does() {
    let reference = MariaDb::read_only();
    reference.as_root_by_socket(MARIADB_SCHEMA);
    let rule = format!(
        r#"{{"name": "read-only", {MYSQL}, "access": "write"}}, "error": {{{READ_ONLY_1290}}}}}"#
    );
    let (db, envoy) = MariaDb::behind_envoy(&config(&rule));
    let (ok, out) = mariadb(db.port, &format!("CREATE DATABASE shop; {MARIADB_SCHEMA}"));
    assert!(ok, "{out}");
    let mut differ = Vec::new();
    for sql in MYSQL_STATEMENTS {
        let want = mysql_outcome(reference.port, sql);
        let got = mysql_outcome(envoy.mariadb(), sql);
        if got != want {
            differ.push(format!(
                "{sql}\n  read-only server: {want}\n  dbfault: {got}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // No refused write landed: the table is as it was (the reads ran on the server).
    let (ok, out) = mariadb(
        db.port,
        "SELECT group_concat(id, v) FROM shop.t; SHOW TABLES FROM shop",
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["group_concat(id,", "v)", "1a", "Tables_in_shop", "t"],
        "{out}"
    );
}
