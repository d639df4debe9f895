//! End to end (issue 22): `idle` drops connections that stayed silent, as a NAT gateway or a
//! load balancer does, and real connection pools show which of their settings survive it —
//! psycopg's pool and SQLAlchemy's (over psycopg 3) against PostgreSQL 15, redis-py's against
//! Redis, each with its defaults and with its connection check on, through a real Envoy.
//! Whether the write after the silence ran is read from the servers themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    config, lines, mariadb, pg_url, psql, repo, Envoy, MariaDb, Postgres, Redis,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The silence a rule with `after: 1s` must catch: `after`, plus the tick clock's 50 ms and a
/// loaded machine's slack.
const SILENCE: &str = "2";
/// A request that has not finished this long after it was sent is hung (a local round trip
/// takes milliseconds).
const HUNG: Duration = Duration::from_secs(4);

const POOLS: [(&str, &str); 9] = [
    ("psycopg_pool", "plain"),
    ("psycopg_pool", "checked"),
    ("sqlalchemy", "plain"),
    ("sqlalchemy", "checked"),
    ("sqlalchemy_mysql", "plain"),
    ("sqlalchemy_mysql", "checked"),
    ("redis", "plain"),
    ("redis", "checked"),
    ("redis", "timeout"),
];

/// The outcomes of one pooled app's three steps (`first`, `write`, `again`): `ok`,
/// `error: <class>`, or `hung` for a step that did not finish (the app is then killed).
fn run_pool(pool: &str, setting: &str, port: u16, id: usize) -> Vec<String> {
    let mut child = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/clients/pools.py"))
        .args([pool, setting, &port.to_string(), SILENCE, &id.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child, "pool");
    let silence: f64 = SILENCE.parse().unwrap();
    let mut outcomes = Vec::new();
    // The first step, then the silence, then each step within HUNG of the one before.
    let mut deadline = Instant::now() + Duration::from_secs(20) + Duration::from_secs_f64(silence);
    while outcomes.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                outcomes.push(v["outcome"].as_str().unwrap().to_owned());
                deadline = at
                    + HUNG
                    + Duration::from_secs_f64(if outcomes.len() == 1 { silence } else { 0.0 });
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    while outcomes.len() < 3 {
        outcomes.push("hung".into());
    }
    outcomes
}

/// Every pool's outcomes through an Envoy whose dbfault runs `idle` with `mode`, and whether
/// each pool's write reached its server.
fn drill(mode: &str) -> Vec<(String, Vec<String>, bool)> {
    let pg = Postgres::start();
    psql(pg.port, "CREATE TABLE idle_probe (id int)");
    let redis = Redis::start();
    let db = MariaDb::start();
    let (ok, out) = mariadb(
        db.port,
        "CREATE DATABASE shop; CREATE TABLE shop.idle_probe (id int)",
    );
    assert!(ok, "{out}");
    let rule = format!(
        r#"{{"name": "nat", "match": {{"clusters": ["postgres", "redis", "mariadb"]}}, "idle": {{"after": "1s", "mode": "{mode}"}}}}"#
    );
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .mariadb(db.port)
        .plugin_config(&config(&rule))
        .start();
    let runs: Vec<_> = POOLS
        .iter()
        .enumerate()
        .map(|(id, &(pool, setting))| {
            let port = match pool {
                "redis" => envoy.redis(),
                "sqlalchemy_mysql" => envoy.mariadb(),
                _ => envoy.pg(),
            };
            std::thread::spawn(move || run_pool(pool, setting, port, id))
        })
        .collect();
    let outcomes: Vec<Vec<String>> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let mut client = postgres::Client::connect(&pg_url(pg.port), postgres::NoTls).unwrap();
    let rows: Vec<i32> = client
        .query("SELECT id FROM idle_probe", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut direct = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    POOLS
        .iter()
        .zip(outcomes)
        .enumerate()
        .map(|(id, (&(pool, setting), outcomes))| {
            let landed = if pool == "sqlalchemy_mysql" {
                let (ok, out) = mariadb(
                    db.port,
                    &format!("SELECT 'n=', count(*) FROM shop.idle_probe WHERE id = {id}"),
                );
                assert!(ok, "{out}");
                out.contains("n=\t1")
            } else if pool == "redis" {
                redis::cmd("EXISTS")
                    .arg(format!("idle:{id}"))
                    .query::<i64>(&mut direct)
                    .unwrap()
                    == 1
            } else {
                rows.contains(&(id as i32))
            };
            (format!("{pool} {setting}"), outcomes, landed)
        })
        .collect()
}

fn table(results: &[(String, Vec<String>, bool)]) -> String {
    results
        .iter()
        .map(|(name, o, landed)| format!("{name}: {} / landed {landed}", o.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each pool's outcomes as `(pool setting, [first, write, again])`, and the server-side check:
/// a write landed exactly when the app saw it succeed.
fn check(results: &[(String, Vec<String>, bool)], want: &[(&str, [&str; 3])]) {
    let got: Vec<(String, Vec<String>)> = results
        .iter()
        .map(|(name, o, _)| (name.clone(), o.clone()))
        .collect();
    let want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(name, o)| (name.to_string(), o.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(got, want, "\n{}", table(results));
    for (name, o, landed) in results {
        assert_eq!(
            *landed,
            o[1] == "ok",
            "{name}: the write landed = {landed}, the app saw {}",
            o[1]
        );
    }
}

#[test]
fn idle_blackhole_hangs_pooled_connections_that_went_quiet() {
    // What a NAT gateway's silent drop does through a sidecar: the request after the silence
    // never reaches the server and never gets an answer. A pool's connection check is a
    // request like any other: it hangs too. Only a client-side read timeout gets the app out
    // (redis-py's socket_timeout: one TimeoutError, then a fresh connection).
    let results = drill("blackhole");
    check(
        &results,
        &[
            ("psycopg_pool plain", ["ok", "hung", "hung"]),
            ("psycopg_pool checked", ["ok", "hung", "hung"]),
            ("sqlalchemy plain", ["ok", "hung", "hung"]),
            ("sqlalchemy checked", ["ok", "hung", "hung"]),
            ("sqlalchemy_mysql plain", ["ok", "hung", "hung"]),
            ("sqlalchemy_mysql checked", ["ok", "hung", "hung"]),
            ("redis plain", ["ok", "hung", "hung"]),
            ("redis checked", ["ok", "hung", "hung"]),
            ("redis timeout", ["ok", "error: TimeoutError", "ok"]),
        ],
    );
}

#[test]
fn idle_close_is_survived_by_pools_that_check_their_connections() {
    // A load balancer's idle timeout closes the connection: pools that check a connection
    // before lending it (psycopg_pool's check, SQLAlchemy's pool_pre_ping, redis-py, which
    // always looks for a closed socket) reconnect and the write succeeds; the others hand
    // the dead connection to the app, which gets one error, then a fresh connection.
    let results = drill("close");
    check(
        &results,
        &[
            (
                "psycopg_pool plain",
                ["ok", "error: OperationalError", "ok"],
            ),
            ("psycopg_pool checked", ["ok", "ok", "ok"]),
            ("sqlalchemy plain", ["ok", "error: OperationalError", "ok"]),
            ("sqlalchemy checked", ["ok", "ok", "ok"]),
            (
                "sqlalchemy_mysql plain",
                ["ok", "error: OperationalError", "ok"],
            ),
            ("sqlalchemy_mysql checked", ["ok", "ok", "ok"]),
            ("redis plain", ["ok", "ok", "ok"]),
            ("redis checked", ["ok", "ok", "ok"]),
            ("redis timeout", ["ok", "ok", "ok"]),
        ],
    );
}
