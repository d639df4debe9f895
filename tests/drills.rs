//! End to end (issue 22): `dbfault drill failover`, merged into the ECDS file a real Envoy
//! watches, runs its phases on the real servers as the real incident does — open sessions end
//! as the server ends them, new ones are refused, then writes get the read-only error, then
//! everything passes — seen by real clients and checked on the servers (the ended session gone
//! from `pg_stat_activity`, no refused write landed), and the app's recovery is measured.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    mariadb, pg_url, psql, wait_for, Envoy, MariaDb, PgMessage, Postgres, RawPg, Redis, RedisConn,
};
use std::process::Command;
use std::time::Duration;

/// Merges a drill starting 2 s from now into the Envoy's ECDS file with the real command.
fn run_drill(envoy: &Envoy, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend(["--down", "3s", "--read-only", "3s"]);
    merge_drill(envoy, &all);
}

/// `dbfault drill ARGS --start +2s ECDS-FILE`, written into the file Envoy watches.
fn merge_drill(envoy: &Envoy, args: &[&str]) {
    let file = envoy.ecds_path();
    let out = Command::new(env!("CARGO_BIN_EXE_dbfault"))
        .arg("drill")
        .args(args)
        .args(["--start", "+2s"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The merged file is written in place by the test, atomically, as --in-place does.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, &out.stdout).unwrap();
    assert!(envoy.update_with(|| std::fs::rename(&tmp, &file).unwrap()));
}

fn wait_active(envoy: &Envoy, rule: &str, on: bool) {
    wait_for(
        &format!("{rule} active = {on}"),
        Duration::from_secs(20),
        || (envoy.fault_active(rule) == Some(f64::from(u8::from(on)))).then_some(()),
    );
}

#[test]
fn a_postgres_failover_drill_runs_as_the_real_failover_does() {
    let pg = Postgres::start();
    psql(pg.port, "CREATE TABLE t (id int)");
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms"}}"#)
        .start();
    // A session open before the drill, as a pool's would be.
    let (mut open, _) = RawPg::connect(envoy.pg());
    assert_eq!(open.query("SELECT 1").last().map(|m| m.tag), Some(b'Z'));
    run_drill(
        &envoy,
        &["failover", "--host", "postgres", "--protocol", "postgres"],
    );
    wait_active(&envoy, "drill-failover-down", true);
    // Down: the open session hears FATAL 57P01 at its next statement and is closed; the
    // server no longer has it. New sessions are refused with 57P03.
    let fields = |m: &PgMessage| {
        (
            m.tag,
            m.field(b'S').map(str::to_owned),
            m.field(b'C').map(str::to_owned),
        )
    };
    // (Its worker switches at its own tick, up to 50 ms after the one that set the gauge: a
    // statement before then is answered by the server.)
    let answer = wait_for("the open session's FATAL", Duration::from_secs(10), || {
        let answer = open.query("SELECT 1");
        (answer.last().map(|m| m.tag) != Some(b'Z')).then_some(answer)
    });
    assert_eq!(
        answer.iter().map(fields).collect::<Vec<_>>(),
        [(b'E', Some("FATAL".into()), Some("57P01".into()))]
    );
    assert!(open.closed());
    wait_for(
        "the ended session gone from the server",
        Duration::from_secs(10),
        || {
            let n = psql(pg.port, "SELECT 'n=' || count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
            n.contains("n=1").then_some(())
        },
    );
    let (_, started) = RawPg::connect(envoy.pg());
    assert_eq!(
        started.iter().map(fields).collect::<Vec<_>>(),
        [(b'E', Some("FATAL".into()), Some("57P03".into()))]
    );
    // Read-only: writes refused as a standby refuses them, reads run.
    wait_active(&envoy, "drill-failover-read-only", true);
    // Each worker switches phase at its own tick: a session may still be refused for a tick.
    let mut client = wait_for("a session opens", Duration::from_secs(10), || {
        postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls).ok()
    });
    let e = client.execute("INSERT INTO t VALUES (1)", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(
        (db.code().code(), db.message()),
        ("25006", "cannot execute INSERT in a read-only transaction")
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the refused write did not land");
    // Over: everything passes, and the recovery is measured.
    wait_active(&envoy, "drill-failover-read-only", false);
    // (The worker serving the session may switch a tick after the one that set the gauge:
    // the app counts what it saw refused.)
    let mut refused = 1.0;
    wait_for(
        "the write after the drill",
        Duration::from_secs(10),
        || match client.execute("INSERT INTO t VALUES (2)", &[]) {
            Ok(_) => Some(()),
            Err(_) => {
                refused += 1.0;
                None
            }
        },
    );
    wait_for("the recovery gauge", Duration::from_secs(10), || {
        envoy.fault_series(
            "dbfault_fault_recovery_ms",
            "postgres",
            "drill-failover-read-only",
        )
    });
    wait_for(
        "the failed requests counted",
        Duration::from_secs(10),
        || {
            (envoy.fault_series(
                "dbfault_fault_failed_requests_total",
                "postgres",
                "drill-failover-read-only",
            ) == Some(refused))
            .then_some(())
        },
    );
}

#[test]
fn a_mariadb_failover_drill_closes_open_sessions_and_refuses_new_ones() {
    let db = MariaDb::start();
    let (ok, out) = mariadb(
        db.port,
        "CREATE DATABASE shop; CREATE TABLE shop.t (id int)",
    );
    assert!(ok, "{out}");
    let envoy = Envoy::builder()
        .mariadb(db.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms"}}"#)
        .start();
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(envoy.mariadb())
        .user(Some("root"))
        .db_name(Some("shop"))
        .prefer_socket(false)
        .read_timeout(Some(Duration::from_secs(10)))
        .tcp_connect_timeout(Some(Duration::from_secs(10)));
    let mut open = mysql::Conn::new(opts.clone()).unwrap();
    run_drill(
        &envoy,
        &["failover", "--host", "mariadb", "--protocol", "mysql"],
    );
    wait_active(&envoy, "drill-failover-down", true);
    // Down: the open session is closed at once (MariaDB sends nothing: the client finds the
    // connection gone).
    use mysql::prelude::Queryable;
    wait_for("the open session closed", Duration::from_secs(10), || {
        open.query_drop("SELECT 1").is_err().then_some(())
    });
    // New sessions are closed at connect, as a server that is down refuses them.
    assert!(
        mysql::Conn::new(opts.clone()).is_err(),
        "a new session opened while down"
    );
    // Read-only: writes refused, reads pass.
    wait_active(&envoy, "drill-failover-read-only", true);
    let mut sql = wait_for("a session opens", Duration::from_secs(10), || {
        mysql::Conn::new(opts.clone()).ok()
    });
    match sql.query_drop("INSERT INTO t VALUES (1)") {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1290, "{e}"),
        other => panic!("not refused: {other:?}"),
    }
    wait_active(&envoy, "drill-failover-read-only", false);
    wait_for("the write after the drill", Duration::from_secs(10), || {
        sql.query_drop("INSERT INTO t VALUES (2)").ok()
    });
    let rows: Vec<i32> = sql.query("SELECT id FROM t").unwrap();
    assert_eq!(rows, [2], "only the write after the drill landed");
}

#[test]
fn a_redis_failover_drill_closes_open_connections_then_answers_as_a_replica() {
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms"}}"#)
        .start();
    let mut open = RedisConn::connect(envoy.redis());
    assert_eq!(open.cmd(&[b"PING"]), b"+PONG\r\n");
    run_drill(
        &envoy,
        &["failover", "--host", "redis", "--protocol", "redis"],
    );
    wait_active(&envoy, "drill-failover-down", true);
    wait_for(
        "the open connection closed",
        Duration::from_secs(10),
        || open.try_cmd(&[b"PING"]).is_err().then_some(()),
    );
    let mut fresh = RedisConn::connect(envoy.redis());
    assert_eq!(
        fresh.cmd(&[b"GET", b"k"]),
        b"-LOADING Redis is loading the dataset in memory\r\n"
    );
    wait_active(&envoy, "drill-failover-read-only", true);
    // Each worker switches phase at its own tick: a new connection may hear -LOADING for a tick.
    let mut replica = wait_for(
        "a connection that hears the replica",
        Duration::from_secs(10),
        || {
            let mut c = RedisConn::connect(envoy.redis());
            (c.cmd(&[b"SET", b"k", b"v"])
                == b"-READONLY You can't write against a read only replica.\r\n")
                .then_some(c)
        },
    );
    assert_eq!(replica.cmd(&[b"GET", b"k"]), b"$-1\r\n");
    wait_active(&envoy, "drill-failover-read-only", false);
    wait_for("the write after the drill", Duration::from_secs(10), || {
        (replica.cmd(&[b"SET", b"k", b"v"]) == b"+OK\r\n").then_some(())
    });
}

#[test]
fn the_other_drills_do_what_they_say_on_the_real_servers() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms"}}"#)
        .start();
    let mut direct = RedisConn::connect(redis.port);
    direct.cmd(&[b"SET", b"k", b"v"]);

    // connection-storm: new sessions refused with the connection limit's error; an open one
    // goes on.
    let mut open = postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls).unwrap();
    merge_drill(
        &envoy,
        &[
            "connection-storm",
            "--host",
            "postgres",
            "--protocol",
            "postgres",
            "--for",
            "3s",
        ],
    );
    wait_active(&envoy, "drill-connection-storm-storm", true);
    let e = postgres::Client::connect(&pg_url(envoy.pg()), postgres::NoTls)
        .err()
        .unwrap();
    let db = e.as_db_error().unwrap();
    assert_eq!(
        (db.code().code(), db.message()),
        ("53300", "sorry, too many clients already")
    );
    open.simple_query("SELECT 1").unwrap();
    wait_active(&envoy, "drill-connection-storm-storm", false);

    // cache-miss: a key that exists reads as missing; the command did not run on Redis.
    merge_drill(&envoy, &["cache-miss", "--host", "redis", "--for", "2s"]);
    wait_active(&envoy, "drill-cache-miss-miss", true);
    let mut app = RedisConn::connect(envoy.redis());
    assert_eq!(app.cmd(&[b"GET", b"k"]), b"$-1\r\n");
    assert_eq!(app.cmd(&[b"SET", b"k2", b"w"]), b"+OK\r\n");
    wait_active(&envoy, "drill-cache-miss-miss", false);
    wait_for("the cache warm again", Duration::from_secs(10), || {
        (app.cmd(&[b"GET", b"k"]) == b"$1\r\nv\r\n").then_some(())
    });

    // slow-queries: every GET (share 100) is held the latency.
    merge_drill(
        &envoy,
        &[
            "slow-queries",
            "--host",
            "redis",
            "--protocol",
            "redis",
            "--for",
            "3s",
            "--share",
            "100",
            "--latency",
            "300ms",
        ],
    );
    wait_active(&envoy, "drill-slow-queries-slow", true);
    // A connection opened now (an open one switches at its worker's next tick).
    let mut slow = RedisConn::connect(envoy.redis());
    let held: Vec<Duration> = (0..3)
        .map(|_| dbfault_testkit::timed(|| slow.cmd(&[b"GET", b"k"])).1)
        .collect();
    dbfault_testkit::assert_held(
        "GETs",
        &held,
        Duration::from_millis(300),
        Duration::from_millis(2),
    );
    wait_active(&envoy, "drill-slow-queries-slow", false);

    // idle-drop (close): a connection silent longer than --after is closed.
    merge_drill(
        &envoy,
        &[
            "idle-drop",
            "--host",
            "redis",
            "--for",
            "4s",
            "--after",
            "1s",
            "--mode",
            "close",
        ],
    );
    wait_active(&envoy, "drill-idle-drop-drop", true);
    let mut quiet = RedisConn::connect(envoy.redis());
    assert_eq!(quiet.cmd(&[b"PING"]), b"+PONG\r\n");
    assert!(
        quiet.read_to_close(Duration::from_secs(5)).is_empty(),
        "closed without a word"
    );
    wait_active(&envoy, "drill-idle-drop-drop", false);

    // partition: nothing answers and nothing closes while it lasts; closed when it ends.
    merge_drill(&envoy, &["partition", "--host", "redis", "--for", "2s"]);
    wait_active(&envoy, "drill-partition-partition", true);
    let mut cut = RedisConn::connect(envoy.redis());
    cut.send(&dbfault_testkit::resp(&[b"PING"])).unwrap();
    assert!(dbfault_testkit::stays_silent(
        &mut cut.0,
        Duration::from_millis(800)
    ));
    assert!(cut.read_to_close(Duration::from_secs(10)).is_empty());
    wait_active(&envoy, "drill-partition-partition", false);
}
