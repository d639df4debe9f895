//! End to end: each fault kind (abort, blackhole, delay, cut) and a rule's share, dry run and
//! reach, in a real Envoy 1.40 (`--concurrency 2`) against real PostgreSQL, Redis, MariaDB and
//! a TLS server, observed through real clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::faults::*;
use dbfault_testkit::{
    mariadb, median, psql, psql_try, read_to_close, resp, resp_bulk, stays_silent, timed, tls_get,
    wait_for, Envoy, MariaDb, Postgres, Redis, RedisConn, TlsServer,
};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn abort_client_first_postgres_and_redis() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let config = one_rule("outage", r#""postgres", "redis""#, r#""abort": {}"#);
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(&config)
        .start();
    assert_eq!(envoy.fault_active("outage"), Some(1.0));

    // psql: the server "goes away" before answering the startup message.
    let (ok, stderr) = psql_try(envoy.pg(), "SELECT 1");
    assert!(!ok);
    assert!(
        stderr.contains("server closed the connection unexpectedly"),
        "{stderr}"
    );

    // Redis: the PING gets no answer, the connection is closed.
    let ping = resp(&[b"PING"]);
    for _ in 0..3 {
        let mut c = RedisConn::connect(envoy.redis());
        c.send(&ping).unwrap();
        assert_eq!(c.read_to_close(Duration::from_secs(5)), b"");
    }
    wait_closed(&envoy, "redis");
    wait_closed(&envoy, "postgres");
    // The client's first bytes never reached the database.
    assert_eq!(cluster_tx(&envoy, "redis"), 0);
    assert_eq!(cluster_tx(&envoy, "postgres"), 0);
    assert_eq!(
        envoy.metric("dbfault_upstream_tx_bytes_total", "redis"),
        Some(0.0)
    );
    assert_eq!(
        envoy.metric("dbfault_upstream_dropped_bytes_total", "redis"),
        Some((3 * ping.len()) as f64)
    );
    assert_eq!(envoy.injected("redis", "outage"), 3.0);
    // Every connection psql made (it may retry without SSL) was aborted.
    let psql_connections = envoy.stat("tcp.postgres.downstream_cx_total");
    assert!(psql_connections >= 1);
    assert_eq!(
        envoy.injected("postgres", "outage"),
        psql_connections as f64
    );
}

#[test]
fn abort_server_first_mariadb_greeting_never_reaches_the_client() {
    let maria = MariaDb::start();
    let envoy = Envoy::builder()
        .mariadb(maria.port)
        .plugin_config(NO_FAULTS)
        .start();
    let (ok, out) = mariadb(envoy.mariadb(), "SELECT 1");
    assert!(ok, "MariaDB through Envoy without faults: {out}");

    assert!(envoy.push_plugin_config(&one_rule("maria-down", r#""mariadb""#, r#""abort": {}"#)));
    let (ok, out) = mariadb(envoy.mariadb(), "SELECT 1");
    assert!(!ok);
    assert!(out.contains("Lost connection"), "{out}");
    // A raw client receives nothing at all: not even the greeting.
    let mut s = TcpStream::connect(("127.0.0.1", envoy.mariadb())).unwrap();
    assert_eq!(read_to_close(&mut s, Duration::from_secs(5)), b"");
    wait_closed(&envoy, "mariadb");
    let forwarded = envoy
        .metric("dbfault_upstream_rx_bytes_total", "mariadb")
        .unwrap();
    let dropped = envoy
        .metric("dbfault_upstream_dropped_bytes_total", "mariadb")
        .unwrap();
    assert!(dropped > 0.0, "the greetings were dropped");
    // Forwarded bytes still equal Envoy's view of what the clients got: only the healthy run.
    let envoy_rx = cluster_rx(&envoy, "mariadb") as f64;
    assert_eq!(
        forwarded + dropped,
        envoy_rx,
        "forwarded + dropped = bytes from the server"
    );
    assert_eq!(
        forwarded,
        envoy.stat("tcp.mariadb.downstream_cx_tx_bytes_total") as f64,
        "forwarded = bytes Envoy wrote to the clients"
    );
    assert_eq!(envoy.injected("mariadb", "maria-down"), 2.0);
}

#[test]
fn abort_tls_by_sni() {
    let tls = TlsServer::start();
    let envoy = Envoy::builder()
        .tls(tls.port)
        .plugin_config(NO_FAULTS)
        .start();
    let (ok, out) = tls_get(envoy.tls(), "db.example.com");
    assert!(ok, "TLS through Envoy without faults: {out}");

    // The rule names only the SNI; the cluster (`outbound|443||firestore.googleapis.com`) is
    // the same for both clients.
    assert!(envoy.push_plugin_config(&one_rule("sni", r#""*.example.com""#, r#""abort": {}"#)));
    let (ok, out) = tls_get(envoy.tls(), "db.example.com");
    assert!(!ok, "{out}");
    let (ok, out) = tls_get(envoy.tls(), "firestore.googleapis.com");
    assert!(ok, "{out}");
    wait_closed(&envoy, "firestore.googleapis.com");
    assert_eq!(envoy.injected("firestore.googleapis.com", "sni"), 1.0);
}

#[test]
fn blackhole_hangs_clients_and_close_after_closes() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let close_after = Duration::from_millis(700);
    let config = r#"{"metrics": {"interval": "100ms"}, "faults": [
        {"name": "hang", "match": {"clusters": ["redis"]}, "blackhole": {}},
        {"name": "hang-pg", "match": {"hosts": ["postgres"]}, "blackhole": {"closeAfter": "700ms"}}
    ]}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(config)
        .start();

    let ping = resp(&[b"PING"]);
    let mut c = RedisConn::connect(envoy.redis());
    c.send(&ping).unwrap();
    assert!(
        stays_silent(&mut c.0, Duration::from_millis(1500)),
        "blackholed PING answered"
    );
    assert_eq!(
        envoy.metric("dbfault_upstream_cx_active", "redis"),
        Some(1.0)
    );
    assert_eq!(cluster_tx(&envoy, "redis"), 0);

    // psql waits for the server, which never answers; closeAfter ends it: not before its time
    // (less one base tick), and long before psql's own 10 s connect timeout.
    let start = Instant::now();
    let (ok, _) = psql_try(envoy.pg(), "SELECT 1");
    let took = start.elapsed();
    assert!(!ok);
    assert!(
        took >= close_after - BASE_TICK && took < 2 * close_after + Duration::from_millis(100),
        "psql ended after {took:?}, closeAfter is {close_after:?}"
    );
    drop(c);
    wait_closed(&envoy, "redis");
    wait_closed(&envoy, "postgres");
    assert_eq!(
        envoy.metric("dbfault_upstream_dropped_bytes_total", "redis"),
        Some(ping.len() as f64)
    );
    assert_eq!(cluster_tx(&envoy, "postgres"), 0);
}

/// An active delay rule that holds nothing costs no fast ticks: every root ticks at the base
/// period (it took about 3% of Envoy's connection rate with five such rules), and the root
/// switches to the fast tick only when a hold begins, still releasing it on time.
#[test]
fn an_idle_delay_rule_keeps_the_base_tick() {
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&one_rule(
            "slow",
            r#""redis""#,
            r#""delay": {"latency": "100ms"}"#,
        ))
        .start();
    envoy.wait_series("dbfault_fault_active", &[("fault", "slow")], 1.0);
    envoy.post("/logging?wasm=trace");
    let (rates, span) = wait_for("2 s of traced ticks", Duration::from_secs(20), || {
        let (rates, span) = tick_rates(&envoy);
        (span >= 2000).then_some((rates, span))
    });
    envoy.post("/logging?wasm=debug");
    eprintln!("ticks per second per root over {span} ms: {rates:?}");
    // A base tick of 50 ms is 20 per second; the fast tick gives about 250 (Envoy's timers
    // fire every ~4 ms at a 1 ms period). Every root is seen ticking.
    let base = 1.0 / BASE_TICK.as_secs_f64();
    assert!(!rates.is_empty());
    assert!(rates.iter().all(|r| *r <= 2.0 * base), "{rates:?}");
    assert!(rates.iter().all(|r| *r >= base / 4.0), "{rates:?}");
    // A hold shorter than a base tick, begun while the roots tick slowly, is released on time:
    // its stream switches its root to the fast tick at once. (Left to the next base tick, a
    // 20 ms hold would end up to 30 ms late, more than 20 ms late one time in five: 30 pings
    // all within 20 ms of their time would then have a chance of 0.8^30, about 0.1%.)
    let latency = Duration::from_millis(20);
    assert!(latency < BASE_TICK);
    let slow = format!(r#""delay": {{"latency": "{}ms"}}"#, latency.as_millis());
    assert!(envoy.push_plugin_config(&one_rule("slow", r#""redis""#, &slow)));
    let rtts = ping_rtts(envoy.redis(), 30);
    for rtt in &rtts {
        assert!(*rtt + EARLY + FAST_TICK >= latency, "{rtts:?}");
        assert!(*rtt <= latency + Duration::from_millis(20), "{rtts:?}");
    }
}

#[test]
fn delay_adds_the_configured_latency() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(NO_FAULTS)
        .start();
    let base = median(ping_rtts(envoy.redis(), 30));

    for (latency, jitter, samples) in [(100u64, 0u64, 30), (20, 0, 40), (60, 10, 100)] {
        let body = format!(r#""delay": {{"latency": "{latency}ms", "jitter": "{jitter}ms"}}"#);
        assert!(envoy.push_plugin_config(&one_rule("slow", r#""redis""#, &body)));
        let rtts = ping_rtts(envoy.redis(), samples);
        let added = median(rtts.clone()).saturating_sub(base);
        let (latency, jitter) = (
            Duration::from_millis(latency),
            Duration::from_millis(jitter),
        );
        let tolerance = (latency / 10).max(Duration::from_millis(5));
        eprintln!("delay {latency:?} ±{jitter:?}: median added {added:?} (base {base:?})");
        assert!(
            added.abs_diff(latency) <= tolerance,
            "median added latency {added:?}, configured {latency:?}"
        );
        let (lo, hi) = (*rtts.iter().min().unwrap(), *rtts.iter().max().unwrap());
        assert!(lo + EARLY + FAST_TICK >= latency - jitter, "{lo:?}");
        assert!(
            hi <= latency + jitter + Duration::from_millis(20),
            "{hi:?} in {rtts:?}"
        );
        if !jitter.is_zero() {
            assert!(hi - lo >= jitter, "no jitter: {lo:?}..{hi:?}");
        }
    }

    // firstOnly: only the first chunk of each connection waits.
    let latency = Duration::from_millis(100);
    let body = r#""delay": {"latency": "100ms", "firstOnly": true}"#;
    assert!(envoy.push_plugin_config(&one_rule("slow-start", r#""redis""#, body)));
    let rtts = ping_rtts(envoy.redis(), 10);
    assert!(
        rtts[0] + EARLY + FAST_TICK >= latency
            && rtts[0] <= 2 * latency + Duration::from_millis(500),
        "first {:?}",
        rtts[0]
    );
    assert!(median(rtts[1..].to_vec()) < latency / 5, "{rtts:?}");

    // PostgreSQL through a real client: each client → server message waits (two flights at
    // least: the startup message and the query).
    let latency = Duration::from_millis(200);
    let body = r#""delay": {"latency": "200ms"}"#;
    assert!(envoy.push_plugin_config(&one_rule("slow-pg", r#""postgres""#, body)));
    let start = Instant::now();
    psql(envoy.pg(), "SELECT 1");
    let took = start.elapsed();
    // At most four flights (SSLRequest, startup, query, and slack for one more) and psql's own
    // start.
    assert!(
        took >= 2 * latency && took <= 4 * latency + Duration::from_secs(2),
        "psql took {took:?}"
    );
    wait_closed(&envoy, "postgres");
    assert_eq!(
        envoy
            .metric("dbfault_upstream_tx_bytes_total", "postgres")
            .unwrap(),
        cluster_tx(&envoy, "postgres") as f64
    );
}

#[test]
fn cut_after_bytes_is_exact_and_cut_after_time_interrupts_traffic() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(NO_FAULTS)
        .start();
    let big = vec![b'b'; 10_000];
    RedisConn::connect(envoy.redis()).cmd(&[b"SET", b"big", &big]);

    // Client → database: a 1000-byte command is truncated to the 300 allowed bytes.
    let body = r#""cut": {"afterBytes": 300}"#;
    assert!(envoy.push_plugin_config(&one_rule("cut", r#""redis""#, body)));
    let m = |n| envoy.metric(n, "redis").unwrap_or(0.0);
    let (tx0, dropped0) = (
        cluster_tx(&envoy, "redis"),
        m("dbfault_upstream_dropped_bytes_total"),
    );
    let mut c = RedisConn::connect(envoy.redis());
    let cmd = resp(&[b"SET", b"k", &vec![b'x'; 972]]);
    c.send(&cmd).unwrap();
    assert_eq!(c.read_to_close(Duration::from_secs(5)), b"");
    wait_closed(&envoy, "redis");
    assert_eq!(
        cluster_tx(&envoy, "redis") - tx0,
        300,
        "bytes that reached Redis"
    );
    assert_eq!(
        m("dbfault_upstream_dropped_bytes_total") - dropped0,
        (cmd.len() - 300) as f64
    );

    // Database → client: the answer is truncated so that both directions total 100 bytes.
    let body = r#""cut": {"afterBytes": 100}"#;
    assert!(envoy.push_plugin_config(&one_rule("cut-small", r#""redis""#, body)));
    let (rx0, fwd0, dropped0) = (
        cluster_rx(&envoy, "redis"),
        m("dbfault_upstream_rx_bytes_total"),
        m("dbfault_upstream_dropped_bytes_total"),
    );
    let mut c = RedisConn::connect(envoy.redis());
    let get = resp(&[b"GET", b"big"]);
    c.send(&get).unwrap();
    let got = c.read_to_close(Duration::from_secs(5));
    assert_eq!(got.len(), 100 - get.len(), "bytes the client received");
    assert_eq!(got, resp_bulk(&big)[..got.len()], "the start of the reply");
    wait_closed(&envoy, "redis");
    // Exact accounting: what Redis sent = forwarded to the client + dropped.
    let from_redis = (cluster_rx(&envoy, "redis") - rx0) as f64;
    let forwarded = m("dbfault_upstream_rx_bytes_total") - fwd0;
    let dropped = m("dbfault_upstream_dropped_bytes_total") - dropped0;
    assert_eq!(forwarded, got.len() as f64);
    assert_eq!(forwarded + dropped, from_redis);
    assert_eq!(
        m("dbfault_upstream_tx_bytes_total"),
        cluster_tx(&envoy, "redis") as f64
    );

    // By time, while traffic flows: a PING every 50 ms until the cut.
    let (after, pace) = (Duration::from_secs(1), Duration::from_millis(50));
    let body = r#""cut": {"after": "1s"}"#;
    assert!(envoy.push_plugin_config(&one_rule("cut-time", r#""redis""#, body)));
    let mut c = RedisConn::connect(envoy.redis());
    let start = Instant::now();
    let mut answered = 0u32;
    while c.try_cmd(&[b"PING"]).is_ok() {
        answered += 1;
        thread::sleep(pace);
        assert!(start.elapsed() < 5 * after, "never cut");
    }
    let took = start.elapsed();
    // Paced, a PING goes every 50 ms and a bit: three quarters of the 20 that fit before the cut.
    assert!(
        f64::from(answered) >= 0.75 * after.as_secs_f64() / pace.as_secs_f64(),
        "traffic flowed before the cut ({answered} PINGs)"
    );
    assert!(
        took + BASE_TICK >= after && took < after + 6 * pace,
        "cut after {took:?}"
    );
}

#[test]
fn percentage_affects_a_binomial_share_of_connections() {
    let redis = Redis::start();
    let config = one_rule("some", r#""redis""#, r#""abort": {}, "percentage": 30"#);
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&config)
        .start();
    let n = 400;
    let aborted = (0..n).filter(|_| ping(envoy.redis()).is_err()).count();
    // Binomial(400, 0.3): mean 120, sd 9.17; 99.9% two-sided bounds are mean ± 3.29 sd.
    let (mean, sd) = (120.0, (400.0f64 * 0.3 * 0.7).sqrt());
    eprintln!("{aborted} of {n} connections aborted");
    assert!(
        (aborted as f64 - mean).abs() <= 3.29 * sd,
        "{aborted} aborted, expected {mean} ± {:.0}",
        3.29 * sd
    );
    wait_closed(&envoy, "redis");
    assert_eq!(envoy.injected("redis", "some"), aborted as f64);
}

#[test]
fn dry_run_counts_and_touches_nothing() {
    let redis = Redis::start();
    let config = one_rule("rehearsal", r#""redis""#, r#""abort": {}, "dryRun": true"#);
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&config)
        .start();
    for _ in 0..5 {
        assert_eq!(ping(envoy.redis()).unwrap(), b"+PONG\r\n");
    }
    wait_closed(&envoy, "redis");
    assert_eq!(envoy.injected("redis", "rehearsal"), 5.0);
    assert_eq!(
        envoy.metric("dbfault_upstream_dropped_bytes_total", "redis"),
        Some(0.0)
    );
    assert_eq!(
        envoy
            .metric("dbfault_upstream_tx_bytes_total", "redis")
            .unwrap(),
        cluster_tx(&envoy, "redis") as f64
    );
    assert_eq!(
        cluster_tx(&envoy, "redis"),
        5 * resp(&[b"PING"]).len() as i64
    );
}

#[test]
fn other_upstreams_are_untouched_while_rules_are_active() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(NO_FAULTS)
        .start();
    let before = median(ping_rtts(envoy.redis(), 300));

    // The delay a mistaken match would add to Redis.
    let latency = Duration::from_millis(50);
    let config = r#"{"faults": [
        {"name": "pg-down", "match": {"hosts": ["postgres"]}, "abort": {}},
        {"name": "pg-slow", "match": {"clusters": ["postgres"]}, "delay": {"latency": "50ms"}},
        {"name": "maria-hang", "match": {"hosts": ["mariadb", "*.example.com"]}, "blackhole": {}}
    ]}"#;
    assert!(envoy.push_plugin_config(config));
    assert!(!psql_try(envoy.pg(), "SELECT 1").0);

    // A 4 MiB value of pseudo-random bytes through Redis arrives intact.
    let mut x = 0x1234_5678_9abc_def0u64;
    let value: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut c = RedisConn::connect(envoy.redis());
    assert_eq!(c.cmd(&[b"SET", b"blob", &value]), b"+OK\r\n");
    assert!(
        c.cmd(&[b"GET", b"blob"]) == resp_bulk(&value),
        "the value came back altered"
    );

    // No added latency: the median moves by less than a tenth of the delay a mistaken match
    // would add (machine noise on a loaded runner stays well within that).
    let after = median(ping_rtts(envoy.redis(), 300));
    eprintln!("Redis PING median before {before:?}, with rules for other upstreams {after:?}");
    assert!(after < before + latency / 10, "{before:?} → {after:?}");
    assert_eq!(envoy.injected("redis", "pg-down"), 0.0);
}

#[test]
fn mariadb_and_tls_clients_see_each_fault_kind() {
    let (maria, tls) = (MariaDb::start(), TlsServer::start());
    let envoy = Envoy::builder()
        .mariadb(maria.port)
        .tls(tls.port)
        .plugin_config(NO_FAULTS)
        .start();
    let ((ok, out), base_maria) = timed(|| mariadb(envoy.mariadb(), "SELECT 1"));
    assert!(ok, "{out}");
    let ((ok, out), base_tls) = timed(|| tls_get(envoy.tls(), "db.example.com"));
    assert!(ok, "{out}");
    let rules = |body: &str| {
        format!(
            r#"{{"metrics": {{"interval": "100ms"}}, "faults": [
                {{"name": "maria", "match": {{"hosts": ["mariadb"]}}, {body}}},
                {{"name": "tls", "match": {{"hosts": ["db.example.com"]}}, {body}}}
            ]}}"#
        )
    };

    // Blackhole: both clients hang until closeAfter closes the connection.
    let close_after = Duration::from_secs(1);
    assert!(envoy.push_plugin_config(&rules(r#""blackhole": {"closeAfter": "1s"}"#)));
    let ((ok, out), took) = timed(|| mariadb(envoy.mariadb(), "SELECT 1"));
    assert!(!ok && out.contains("Lost connection"), "{out}");
    assert!(
        took + BASE_TICK >= close_after,
        "MariaDB client gave up after {took:?}"
    );
    let ((ok, out), took) = timed(|| tls_get(envoy.tls(), "db.example.com"));
    assert!(!ok, "{out}");
    assert!(
        took + BASE_TICK >= close_after,
        "TLS client gave up after {took:?}"
    );

    // Delay: both succeed, slower by one latency per client flight (two or more here).
    let latency = Duration::from_millis(250);
    assert!(envoy.push_plugin_config(&rules(r#""delay": {"latency": "250ms"}"#)));
    let ((ok, out), took) = timed(|| mariadb(envoy.mariadb(), "SELECT 1"));
    assert!(ok, "{out}");
    eprintln!("MariaDB SELECT 1: {base_maria:?} → {took:?} with a 250 ms delay");
    // At most five flights (handshake response, the client's own query, the SELECT, quit,
    // and slack for one more), with a second for a loaded machine.
    let most = |base: Duration| base + 5 * latency + Duration::from_secs(1);
    assert!(
        took + 2 * EARLY >= 2 * latency && took <= most(base_maria),
        "{took:?}"
    );
    let ((ok, out), took) = timed(|| tls_get(envoy.tls(), "db.example.com"));
    assert!(ok, "{out}");
    eprintln!("TLS GET: {base_tls:?} → {took:?} with a 250 ms delay");
    assert!(
        took + 2 * EARLY >= 2 * latency && took <= most(base_tls),
        "{took:?}"
    );

    // Cut after 200 bytes: the MariaDB login and the TLS handshake are both longer, so exactly
    // 200 bytes pass on each connection (both directions together), as Envoy counts them.
    let tls_cluster = "outbound|443||firestore.googleapis.com";
    let (maria0, tls0) = (
        envoy_bytes(&envoy, "mariadb", "mariadb"),
        envoy_bytes(&envoy, "firestore", tls_cluster),
    );
    assert!(envoy.push_plugin_config(&rules(r#""cut": {"afterBytes": 200}"#)));
    let (ok, out) = mariadb(envoy.mariadb(), "SELECT 1");
    assert!(!ok && out.contains("Lost connection"), "{out}");
    let (ok, out) = tls_get(envoy.tls(), "db.example.com");
    assert!(!ok, "{out}");
    wait_closed(&envoy, "mariadb");
    wait_closed(&envoy, "firestore.googleapis.com");
    for fault in ["maria", "tls"] {
        let upstream = if fault == "maria" {
            "mariadb"
        } else {
            "firestore.googleapis.com"
        };
        assert_eq!(envoy.injected(upstream, fault), 3.0, "{fault}");
    }
    let (maria1, tls1) = (
        envoy_bytes(&envoy, "mariadb", "mariadb"),
        envoy_bytes(&envoy, "firestore", tls_cluster),
    );
    for (what, before, after) in [("MariaDB", maria0, maria1), ("TLS", tls0, tls1)] {
        let (to_server, to_client) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(
            to_server + to_client,
            200,
            "{what}: {to_server} bytes reached the server, {to_client} the client"
        );
        assert!(to_server > 0, "{what}: nothing reached the server");
    }
    // dbfault's own count of the client → server bytes is Envoy's.
    assert_eq!(
        envoy
            .metric("dbfault_upstream_tx_bytes_total", "mariadb")
            .unwrap(),
        cluster_tx(&envoy, "mariadb") as f64
    );
}
