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

use dbfault_testkit::{
    config, pg_url, psql_script, timed, wait_for, Envoy, OutputByDeadline, PgMessage, Postgres,
    RawPg,
};
use std::time::Duration;

const PG: &str = r#""match": {"clusters": ["postgres"], "protocol": "postgres""#;

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
    envoy.wait_byte_counters("postgres", "postgres");
}

fn connect(envoy: &Envoy) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls)
}

/// The SQLSTATE and severity of a database error.
fn code(e: &postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e}"));
    (db.code().code().to_owned(), db.severity().to_owned())
}

#[test]
fn fatal_errors_end_open_sessions_and_refuse_new_ones_at_startup() {
    let pg = Postgres::start();
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(""))
        .start();
    // Spoken byte by byte: the `postgres` crate may report only the close that follows a FATAL.
    let (mut open, started) = RawPg::connect(envoy.pg());
    assert_eq!(started.last().map(|m| m.tag), Some(b'Z'), "{started:?}");
    assert_eq!(open.query("SELECT 1").last().map(|m| m.tag), Some(b'Z'));
    // A failover: open sessions hear FATAL 57P01 at their next statement and are closed; new
    // sessions are refused at startup with it (as a server shutting down answers).
    let failover = format!(
        r#"{{"name": "failover", {PG}}}, "error": {{"sqlstate": "57P01",
            "message": "terminating connection due to administrator command", "fatal": true}}}}"#
    );
    assert!(envoy.push_plugin_config(&config(&failover)));
    // The answer is the FATAL alone (no ReadyForQuery), then the session is closed.
    let answer = open.query("SELECT 1");
    let fields = |m: &PgMessage| {
        (
            m.tag,
            m.field(b'S').map(str::to_owned),
            m.field(b'C').map(str::to_owned),
        )
    };
    assert_eq!(
        answer.iter().map(fields).collect::<Vec<_>>(),
        [(b'E', Some("FATAL".into()), Some("57P01".into()))],
        "{answer:?}"
    );
    assert!(open.closed(), "the session stays open after its FATAL");
    let e = connect(&envoy).err().expect("a new session is refused");
    assert_eq!(code(&e), ("57P01".into(), "FATAL".into()), "{e}");

    // A server starting up refuses new sessions only (`applyTo: new`): one opened before
    // stays usable.
    assert!(envoy.push_plugin_config(&config("")));
    let mut before = connect(&envoy).unwrap();
    let starting = format!(
        r#"{{"name": "starting-up", {PG}}}, "applyTo": "new",
            "error": {{"sqlstate": "57P03", "message": "the database system is starting up"}}}}"#
    );
    assert!(envoy.push_plugin_config(&config(&starting)));
    let e = connect(&envoy).err().expect("a new session is refused");
    assert_eq!(code(&e), ("57P03".into(), "FATAL".into()), "{e}");
    let (out, err) = psql_script(envoy.pg(), "SELECT 1", &[]);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("FATAL:  the database system is starting up"),
        "psql: {err}"
    );
    let one: i32 = before.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    wait_metric(
        "two refused startups counted",
        || Some(envoy.injected("postgres", "starting-up")),
        2.0,
    );
    wait_metric("FATALs counted as class 57", || errors(&envoy, "57"), 4.0);
}

#[test]
fn a_share_of_prepared_statements_fail_and_the_rest_execute() {
    let pg = Postgres::start();
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(""))
        .start();
    let mut client = connect(&envoy).unwrap();
    client
        .batch_execute("CREATE TABLE plants (id int, name text)")
        .unwrap();
    let insert = client
        .prepare("INSERT INTO plants VALUES ($1, $2)")
        .unwrap();
    let rule = |extra: &str| {
        config(&format!(
            r#"{{"name": "plants-conflict", {PG}, "commands": ["INSERT"], "queryContains": ["plants"]}},
                {extra} "error": {{"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}}}}"#
        ))
    };
    // A dry run: counted, nothing fails. The statement was prepared before the rule existed:
    // it is matched by the text it was prepared with.
    assert!(envoy.push_plugin_config(&rule(r#""dryRun": true,"#)));
    for i in 0..20 {
        client.execute(&insert, &[&i, &"dry"]).unwrap();
    }
    wait_metric(
        "20 dry-run injections",
        || Some(envoy.injected("postgres", "plants-conflict")),
        20.0,
    );
    // 30% of 400 executions fail with 40001, drawn per statement; the rest insert their row.
    assert!(envoy.push_plugin_config(&rule(r#""percentage": 30,"#)));
    let (mut ok, mut failed) = (0, 0);
    for i in 0..400 {
        match client.execute(&insert, &[&i, &"moss"]) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(code(&e), ("40001".into(), "ERROR".into()), "{e}");
                failed += 1;
            }
        }
    }
    // Binomial(400, 0.3): mean 120, standard deviation 9.2; ±5 of them.
    assert!(
        (74..=166).contains(&failed),
        "{failed} of 400 failed at 30%"
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM plants WHERE name = 'moss'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        rows, ok,
        "every failed statement did not execute, every other did"
    );
    wait_metric(
        "every failure counted",
        || Some(envoy.injected("postgres", "plants-conflict")),
        20.0 + f64::from(failed),
    );
}

#[test]
fn only_the_listed_commands_are_delayed_and_aborts_never_reach_the_server() {
    let pg = Postgres::start();
    let rules = format!(
        r#"{{"name": "slow-selects", {PG}, "commands": ["SELECT"]}}, "delay": {{"latency": "200ms"}}}},
           {{"name": "no-deletes", {PG}, "commands": ["DELETE"]}}, "abort": {{}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(&rules))
        .start();
    let mut client = connect(&envoy).unwrap();
    client
        .batch_execute("CREATE TABLE plants (id int); INSERT INTO plants VALUES (1)")
        .unwrap();
    let mut time = |sql: &str| timed(|| client.simple_query(sql).unwrap()).1;
    let selects: Vec<Duration> = (0..5)
        .map(|_| time("SELECT count(*) FROM plants"))
        .collect();
    let inserts: Vec<Duration> = (0..5)
        .map(|i| time(&format!("INSERT INTO plants VALUES ({i})")))
        .collect();
    // Held for the latency (released on a tick: up to 2 ms early at most), and once.
    dbfault_testkit::assert_held(
        "SELECTs",
        &selects,
        Duration::from_millis(200),
        Duration::from_millis(2),
    );
    let median = dbfault_testkit::median(inserts.clone());
    assert!(median < Duration::from_millis(100), "{inserts:?}");
    // The DELETE closes the connection and never reaches the server.
    let e = client.simple_query("DELETE FROM plants").unwrap_err();
    assert!(
        e.as_db_error().is_none(),
        "a closed connection, not a server error: {e}"
    );
    let e = client.simple_query("SELECT 1").unwrap_err();
    assert!(e.is_closed() || e.as_db_error().is_none(), "{e}");
    let mut other = connect(&envoy).unwrap();
    let rows: i64 = other
        .query_one("SELECT count(*) FROM plants", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 6, "nothing was deleted");
    // The five timed SELECTs and the count.
    wait_metric(
        "each delayed statement counted",
        || Some(envoy.injected("postgres", "slow-selects")),
        6.0,
    );
}

#[test]
fn a_pipelining_libpq_client_with_named_statements() {
    let pg = Postgres::start();
    let rule = format!(
        r#"{{"name": "plants-conflict", {PG}, "commands": ["INSERT"], "queryContains": ["plants"]}},
            "percentage": 30, "error": {{"sqlstate": "40001", "message": "could not serialize access"}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(&rule))
        .start();
    let result = dbfault_testkit::python_json(&[
        dbfault_testkit::repo()
            .join("tests/clients/pg_pipeline.py")
            .into_os_string(),
        "--port".into(),
        envoy.pg().to_string().into(),
        "--inserts".into(),
        "400".into(),
        "--selects".into(),
        "100".into(),
        "--batch".into(),
        "16".into(),
    ]);
    let failed = result["inserts"]["errors"]["40001"].as_i64().unwrap_or(0);
    let ok = result["inserts"]["ok"].as_i64().unwrap();
    assert_eq!(ok + failed, 400, "{result}");
    assert!(
        (74..=166).contains(&failed),
        "{failed} of 400 failed at 30%: {result}"
    );
    assert_eq!(result["rows"].as_i64(), Some(ok), "{result}");
    assert_eq!(result["selects"]["ok"].as_i64(), Some(100), "{result}");
    // Every statement of the pipeline was counted (the CREATE and the final count too).
    wait_metric(
        "every insert counted",
        || {
            envoy.prometheus().into_iter().find_map(|(k, v)| {
                (k.starts_with("dbfault_upstream_requests_total{")
                    && k.contains("command=\"insert\""))
                .then_some(v)
            })
        },
        400.0,
    );
    wait_metric(
        "every failure counted",
        || errors(&envoy, "40"),
        failed as f64,
    );
}

#[test]
fn copy_and_megabyte_statements_pass_byte_for_byte_or_fail_whole() {
    let pg = Postgres::start();
    let rule = format!(
        r#"{{"name": "marked", {PG}, "commands": ["INSERT"], "queryContains": ["marker-7f3a"]}},
            "error": {{"sqlstate": "40001", "message": "could not serialize access"}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(&rule))
        .start();
    let dir = dbfault_testkit::TempDir::new("copy");
    // About 1.3 MB of COPY data, and statements of a megabyte (split over many reads).
    let data = dir.path().join("plants.tsv");
    let rows: String = (0..20_000)
        .map(|i| format!("{i}\tplant number {i} {}\n", "x".repeat(i % 97)))
        .collect();
    std::fs::write(&data, &rows).unwrap();
    let big = "y".repeat(1_000_000);
    let script = format!(
        "CREATE TABLE plants (id int, name text);
         \\copy plants FROM '{}'
         INSERT INTO plants VALUES (-1, '{big}');
         INSERT INTO plants VALUES (-2, 'marker-7f3a {big}');
         \\copy plants TO '{}'
         LISTEN plants_channel;
         NOTIFY plants_channel, 'a notification between statements';
         DO $$BEGIN RAISE NOTICE 'a notice inside a statement'; END$$;
         SET application_name = 'plants';
         SELECT 'still in step ' || count(*) FROM plants;
        ",
        data.display(),
        dir.path().join("out.tsv").display()
    );
    let (out, err) = psql_script(envoy.pg(), &script, &[]);
    // COPY out, a NotificationResponse, a NoticeResponse and a ParameterStatus between the
    // server's answers: the session stays in step.
    assert!(out.contains("still in step 20001"), "{out}\n{err}");
    assert!(err.contains("a notice inside a statement"), "{err}");
    let copied_out = std::fs::read_to_string(dir.path().join("out.tsv")).unwrap();
    assert_eq!(copied_out.lines().count(), 20_001);
    assert_eq!(
        err.matches("ERROR:  40001: could not serialize access")
            .count(),
        1,
        "{err}"
    );
    // The same file loaded straight into PostgreSQL gives the same table.
    let (direct, err) = psql_script(
        pg.port,
        &format!(
            "CREATE TABLE direct (id int, name text);
             \\copy direct FROM '{}'
             SELECT (SELECT md5(string_agg(id || ':' || name, ',' ORDER BY id)) FROM direct)
                  = (SELECT md5(string_agg(id || ':' || name, ',' ORDER BY id)) FROM plants WHERE id >= 0);
             SELECT length(name) FROM plants WHERE id < 0;",
            data.display()
        ),
        &[],
    );
    assert_eq!(
        direct.lines().collect::<Vec<_>>(),
        ["t", "1000000"],
        "{err}"
    );
    let requests = |command: &str| {
        envoy.prometheus().into_iter().find_map(|(k, v)| {
            (k.starts_with("dbfault_upstream_requests_total{")
                && k.contains(&format!("command=\"{command}\"")))
            .then_some(v)
        })
    };
    wait_metric("both COPYs counted", || requests("copy"), 2.0);
    wait_metric("the NOTIFY counted", || requests("notify"), 1.0);
    wait_metric("both INSERTs counted", || requests("insert"), 2.0);
    envoy.wait_byte_counters("postgres", "postgres");
}

#[test]
fn match_protocol_limits_a_byte_level_rule_to_postgres_sessions() {
    let (pg, redis) = (Postgres::start(), dbfault_testkit::Redis::start());
    let rule =
        r#"{"name": "pg-only", "match": {"hosts": ["*"], "protocol": "postgres"}, "abort": {}}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(&config(rule))
        .start();
    let (out, err) = psql_script(envoy.pg(), "SELECT 1", &[]);
    assert!(out.is_empty() && !err.is_empty(), "{out}{err}");
    let pong = dbfault_testkit::RedisConn::connect(envoy.redis()).cmd(&[b"PING"]);
    assert_eq!(pong, b"+PONG\r\n", "Redis is not PostgreSQL: untouched");
    wait_metric(
        "one PostgreSQL connection aborted",
        || Some(envoy.injected("postgres", "pg-only")),
        1.0,
    );
    assert_eq!(envoy.injected("redis", "pg-only"), 0.0);
}

/// pgbench's summary value after `label` (e.g. "number of transactions retried: 40 (10.0%)").
fn pgbench_value(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split(['/', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in pgbench's output:\n{out}"))
}

#[test]
fn pgbench_retries_injected_serialization_failures_in_every_protocol_mode() {
    let pg = Postgres::start();
    dbfault_testkit::run_ok(
        std::process::Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-i", "-s", "1", "-q"])
            .args(["-p", &pg.port.to_string(), "postgres"]),
    );
    let rule = format!(
        r#"{{"name": "busy-accounts", {PG}, "commands": ["SELECT"], "queryContains": ["pgbench_accounts"]}},
            "percentage": 20, "error": {{"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&config(&rule))
        .start();
    let mut injected = 0;
    for mode in ["simple", "extended", "prepared"] {
        // pgbench -S: one SELECT on pgbench_accounts per transaction; it retries a
        // transaction that fails with 40001 (--max-tries), as its documentation says.
        let out = std::process::Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-n",
                "-S",
                "-c",
                "2",
                "-t",
                "200",
            ])
            .args([
                "-M",
                mode,
                "--max-tries",
                "50",
                "-p",
                &envoy.pg().to_string(),
                "postgres",
            ])
            .output_by_deadline()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            pgbench_value(&text, "number of transactions actually processed: "),
            400,
            "{mode}: {text}"
        );
        assert_eq!(
            pgbench_value(&text, "number of failed transactions: "),
            0,
            "{mode}: {text}"
        );
        let retries = pgbench_value(&text, "total number of retries: ");
        // 20% of about 500 tries: mean 100, standard deviation 9; ±5 of them.
        assert!(
            (55..=150).contains(&retries),
            "{mode}: {retries} retries\n{text}"
        );
        injected += retries;
    }
    // Every injection reached pgbench as a 40001 error, and pgbench retried for (nearly) each:
    // in some runs it counts one or two retries fewer than the errors it received.
    let n = wait_for(
        "every injection counted and heard as class 40",
        Duration::from_secs(15),
        || {
            let n = envoy.injected("postgres", "busy-accounts");
            (n > 0.0 && errors(&envoy, "40") == Some(n)).then_some(n as u64)
        },
    );
    assert!(
        injected <= n && n - injected <= n / 50,
        "{injected} retries, {n} injected"
    );
}
