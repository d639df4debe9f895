//! End to end: fault injection in a real Envoy 1.40 (`--concurrency 2`) against real
//! PostgreSQL, Redis, MariaDB and a TLS server, observed through real clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::shipped_plugin_config;
use dbfault_testkit::{
    documented_sidecar_choice, mariadb, median, psql, psql_try, read_to_close, resp, resp_bulk,
    stays_silent, timed, tls_get, wait_for, Envoy, MariaDb, Postgres, Redis, RedisConn, TlsServer,
};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// How early a delay's release may come: on the tick nearest to its time, at most 2 ms ahead.
const EARLY: Duration = Duration::from_millis(2);
/// The root tick while a delay holds data.
const FAST_TICK: Duration = Duration::from_millis(1);
/// The root tick when nothing is held: rule windows and `applyTo: all` act within it.
const BASE_TICK: Duration = Duration::from_millis(50);

/// A configuration with one rule, given as the JSON body of the rule without its name/match.
fn one_rule(name: &str, hosts: &str, body: &str) -> String {
    format!(
        r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{{"name": "{name}", "match": {{"hosts": [{hosts}]}}, {body}}}]}}"#
    )
}

const NO_FAULTS: &str = r#"{"metrics": {"interval": "100ms"}}"#;

fn ping(port: u16) -> std::io::Result<Vec<u8>> {
    RedisConn::connect(port).try_cmd(&[b"PING"])
}

fn cluster_tx(envoy: &Envoy, cluster: &str) -> i64 {
    envoy.stat(&format!("cluster.{cluster}.upstream_cx_tx_bytes_total"))
}

fn cluster_rx(envoy: &Envoy, cluster: &str) -> i64 {
    envoy.stat(&format!("cluster.{cluster}.upstream_cx_rx_bytes_total"))
}

/// The tcp_proxy stat prefix of the shipped listener that carries `upstream`.
fn stat_prefix(upstream: &str) -> &str {
    match upstream {
        "firestore.googleapis.com" => "firestore",
        other => other,
    }
}

/// Waits until every connection to `upstream` is closed and in dbfault's stats.
fn wait_closed(envoy: &Envoy, upstream: &str) {
    envoy.wait_closed(upstream, stat_prefix(upstream));
}

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

/// Round trips of `n` PINGs on one connection.
fn ping_rtts(port: u16, n: usize) -> Vec<Duration> {
    let mut c = RedisConn::connect(port);
    (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
            t.elapsed()
        })
        .collect()
}

/// Root ticks per second in Envoy's wasm trace log, per (thread, root context), over the span
/// of the traced ticks; and that span in ms.
fn tick_rates(envoy: &Envoy) -> (Vec<f64>, i64) {
    let mut ticks: std::collections::HashMap<(String, String), Vec<i64>> = Default::default();
    for (time, line) in envoy.log_entries("[host->vm] proxy_on_tick(") {
        // `[<date> <time>][<thread>][...] ... proxy_on_tick(<root>)`
        let thread = line.get(26..).and_then(|r| r.split(']').next());
        let root = line.rsplit("proxy_on_tick(").next();
        if let (Some(thread), Some(root)) = (thread, root) {
            ticks
                .entry((thread.to_owned(), root.to_owned()))
                .or_default()
                .push(time);
        }
    }
    let all: Vec<i64> = ticks.values().flatten().copied().collect();
    let span = all.iter().max().unwrap_or(&0) - all.iter().min().unwrap_or(&0);
    let rates = ticks
        .values()
        .map(|t| t.len() as f64 * 1000.0 / span.max(1) as f64)
        .collect();
    (rates, span)
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
fn window_switches_the_rule_on_and_off_on_time() {
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(NO_FAULTS)
        .start();
    let body = r#""abort": {}, "window": {"after": "1s", "for": "1s", "every": "2s"}"#;
    let pushed = Instant::now();
    assert!(envoy.push_plugin_config(&one_rule("flap", r#""redis""#, body)));
    // The window counts from when a worker loaded the rule: between these two instants.
    let applied = pushed.elapsed();
    assert_eq!(envoy.fault_active("flap"), Some(0.0));
    assert!(ping(envoy.redis()).is_ok(), "the window is not open yet");

    // Follow fault_active: on at ~1s, off at ~2s, on again at ~3s.
    let mut switches = Vec::new();
    let mut last = 0.0;
    while switches.len() < 3 && pushed.elapsed() < Duration::from_secs(6) {
        let now = envoy.fault_active("flap").unwrap();
        if now != last {
            switches.push((pushed.elapsed(), now));
            // Each worker's VM switches at its own tick: the gauge shows the first one, the
            // others follow within a base tick. A new connection may land on any worker.
            wait_for(
                &format!(
                    "traffic to follow fault_active {now} (switched at {:?})",
                    pushed.elapsed()
                ),
                BASE_TICK * 3,
                || (ping(envoy.redis()).is_ok() == (now == 0.0)).then_some(()),
            );
            last = now;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("switches: {switches:?}");
    assert_eq!(
        switches.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![1.0, 0.0, 1.0]
    );
    for (i, (at, _)) in switches.iter().enumerate() {
        let want = Duration::from_secs(i as u64 + 1);
        assert!(
            *at >= want.saturating_sub(BASE_TICK)
                && at.saturating_sub(applied) <= want + Duration::from_millis(300),
            "switch {i} at {at:?} after the push ({applied:?} to apply it), expected ~{want:?}"
        );
    }
}

/// How soon an `applyTo: all` rule reaches an open connection once every worker runs the
/// configuration (a base tick at most, with room for a loaded machine). Envoy's own part —
/// noticing the replaced ECDS file and handing it to the workers — comes before and is not
/// dbfault's: 150 ms here idle, 250 ms with the suite's other tests running.
const APPLIED_WITHIN: Duration = Duration::from_millis(250);

#[test]
fn apply_to_all_reaches_open_idle_connections_and_new_does_not() {
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(NO_FAULTS)
        .start();

    // applyTo all: an idle pooled connection is closed soon after the update.
    let mut idle = RedisConn::connect(envoy.redis());
    assert_eq!(idle.cmd(&[b"PING"]), b"+PONG\r\n");
    let waiter = thread::spawn(move || {
        idle.read_to_close(Duration::from_secs(5));
        Instant::now()
    });
    let pushed = Instant::now();
    assert!(envoy.push_plugin_config(&one_rule("all", r#""redis""#, r#""abort": {}"#)));
    let applied = Instant::now();
    let closed = waiter.join().unwrap();
    eprintln!(
        "idle connection closed {:?} after the ECDS file was replaced",
        closed - pushed
    );
    // (Usually before the push is seen to be applied: each worker acts on its open
    // connections as it loads the configuration.)
    let took = closed.saturating_duration_since(applied);
    assert!(
        took < APPLIED_WITHIN,
        "closed {took:?} after every worker ran the rule"
    );
    assert!(ping(envoy.redis()).is_err());

    // applyTo new: the open connection keeps working, new ones fail.
    assert!(envoy.push_plugin_config(NO_FAULTS));
    let mut open = RedisConn::connect(envoy.redis());
    assert_eq!(open.cmd(&[b"PING"]), b"+PONG\r\n");
    let body = r#""abort": {}, "applyTo": "new""#;
    assert!(envoy.push_plugin_config(&one_rule("new-only", r#""redis""#, body)));
    // Every worker runs the rule now; an `applyTo: all` would have closed the connection by
    // the time this hold ends.
    assert!(
        stays_silent(&mut open.0, APPLIED_WITHIN),
        "applyTo new closed an open connection"
    );
    assert_eq!(
        open.cmd(&[b"PING"]),
        b"+PONG\r\n",
        "applyTo new touched an open connection"
    );
    assert!(
        ping(envoy.redis()).is_err(),
        "a new connection was not aborted"
    );

    // And off again: traffic flows. This configuration is the one `open` was opened under, so
    // the worker holding `open` reuses that plugin instead of loading the configuration again,
    // and its VM adopts it at its next tick (dbfault's shared-data poll).
    assert!(envoy.push_plugin_config(NO_FAULTS));
    wait_for("new connections to pass again", APPLIED_WITHIN, || {
        ping(envoy.redis()).is_ok().then_some(())
    });
    assert_eq!(open.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(envoy.fault_active("new-only"), Some(0.0));
}

#[test]
fn an_update_that_replaces_the_vm_reaches_connections_of_the_old_one() {
    let redis = Redis::start();
    let workers = 2;
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(NO_FAULTS)
        .concurrency(workers)
        .start();
    let mut idle = RedisConn::connect(envoy.redis());
    assert_eq!(idle.cmd(&[b"PING"]), b"+PONG\r\n");

    // Another module (same code plus a custom section, so its hash differs): Envoy builds a new
    // VM; the idle connection lives in the old one.
    let copy = envoy.dir.path().join("dbfault-v2.wasm");
    let mut module = std::fs::read(dbfault_testkit::wasm_path()).unwrap();
    let name = b"dbfault-test";
    module.extend_from_slice(&[0, (1 + name.len() + 2) as u8, name.len() as u8]);
    module.extend_from_slice(name);
    module.extend_from_slice(b"v2");
    std::fs::write(&copy, module).unwrap();
    let config = one_rule("outage", r#""redis""#, r#""abort": {}"#);
    let waiter = thread::spawn(move || {
        idle.read_to_close(Duration::from_secs(5));
        Instant::now()
    });
    let created = "wasm.envoy.wasm.runtime.v8.created";
    let created0 = envoy.stat(created);
    let loads0 = envoy.log_times("dbfault: configuration loaded").len();
    let pushed = Instant::now();
    assert!(envoy.push_ecds(&dbfault_testkit::render_ecds(&copy, &config)));
    let took = waiter.join().unwrap() - pushed;
    eprintln!("old VM's connection closed {took:?} after the ECDS file was replaced");
    // Closed, not timed out (read_to_close gives up after 5 s).
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    // The time V8 takes to compile the new module comes first and grows with the module (about
    // 300 ms for this one on one loaded CPU); what dbfault controls is the rest: once the first
    // new VM has published its configuration, the old VM adopts it at its next base tick (50 ms).
    let published = envoy.log_times("dbfault: configuration loaded")[loads0];
    let adopted = envoy.log_times("configuration updated from another VM")[0];
    assert!(
        adopted - published <= 200,
        "published at {published} ms, adopted by the old VM at {adopted} ms"
    );
    assert!(ping(envoy.redis()).is_err(), "the new VM does not abort");
    // The scenario did replace the VMs: a new one per worker at least (a configuration-only
    // update creates one VM on the main thread, none on the workers).
    let new_vms = envoy.stat(created) - created0;
    assert!(new_vms >= i64::from(workers), "{new_vms} VMs created");
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
fn a_rejected_update_leaves_the_previous_rules_in_force() {
    let redis = Redis::start();
    let config = one_rule("outage", r#""redis""#, r#""abort": {}"#);
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&config)
        .start();
    assert!(ping(envoy.redis()).is_err());
    let bad = one_rule("outage", r#""redis""#, r#""abort": {}, "blackhole": {}"#);
    assert!(!envoy.push_plugin_config(&bad));
    assert!(envoy
        .log()
        .contains("dbfault: invalid configuration: faults[0]: needs exactly one fault kind"));
    assert!(
        ping(envoy.redis()).is_err(),
        "the old rule is no longer in force"
    );
    assert_eq!(envoy.fault_active("outage"), Some(1.0));
}

#[test]
fn the_dbfault_command_toggles_the_shipped_rules_in_a_running_envoy() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(&shipped_plugin_config())
        .start();
    assert_eq!(envoy.fault_active("postgres-outage"), Some(0.0));
    psql(envoy.pg(), "SELECT 1");

    // `make fault-on RULE=...` runs `dbfault on RULE FILE --in-place` on the live ECDS file.
    let dbfault = |args: &[&str]| {
        dbfault_testkit::run_ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_dbfault"))
                .args(args)
                .arg(envoy.ecds_path())
                .args(
                    args.first()
                        .filter(|a| ["on", "off"].contains(a))
                        .map(|_| "--in-place"),
                ),
        )
    };
    let listed = dbfault(&["list"]);
    assert!(
        listed.contains("  postgres-outage    off        abort"),
        "{listed}"
    );
    assert!(envoy.update_with(|| {
        dbfault(&["on", "postgres-outage"]);
    }));
    assert_eq!(envoy.fault_active("postgres-outage"), Some(1.0));
    let connections = || envoy.stat("tcp.postgres.downstream_cx_total");
    let before = connections();
    assert!(!psql_try(envoy.pg(), "SELECT 1").0);
    // Every connection psql made during the outage (it may retry without SSL) was aborted.
    let aborted = connections() - before;
    assert!(
        ping(envoy.redis()).is_ok(),
        "Redis is not part of the outage"
    );

    assert!(envoy.update_with(|| {
        dbfault(&["off", "postgres-outage"]);
    }));
    assert_eq!(envoy.fault_active("postgres-outage"), Some(0.0));
    psql(envoy.pg(), "SELECT 1");
    assert!(aborted >= 1);
    assert_eq!(
        envoy.injected("postgres", "postgres-outage"),
        aborted as f64
    );
}

/// Bytes Envoy moved for one listener and its cluster: (written to the server, written to the
/// client), from Envoy's own counters (tcp_proxy's downstream connection stats count what
/// reached the client's socket, after dbfault).
fn envoy_bytes(envoy: &Envoy, stat_prefix: &str, cluster: &str) -> (i64, i64) {
    (
        cluster_tx(envoy, cluster),
        envoy.stat(&format!("tcp.{stat_prefix}.downstream_cx_tx_bytes_total")),
    )
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

/// The instant `secs` seconds from now, in RFC 3339 (whole seconds, rounded up).
fn in_secs(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    dbfault::config::time::format((now.as_secs() + 1 + secs) * 1_000_000_000)
}

#[test]
fn an_expired_rule_stays_off_whatever_is_pushed() {
    let pg = Postgres::start();
    let rule = |expires: &str| {
        format!(
            r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{{"name": "forgotten", "match": {{"hosts": ["postgres"]}}, "abort": {{}}, "expiresAt": "{expires}"}}]}}"#
        )
    };
    let expires = in_secs(2);
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&rule(&expires))
        .start();
    assert!(
        !psql_try(envoy.pg(), "SELECT 1").0,
        "active before {expires}"
    );
    // Every thread that ran the rule switches it off at its own tick; the gauge is written by
    // the first (it read 0 while a busy worker still aborted: seen once under the full suite).
    let threads = |needle: &str| -> std::collections::BTreeSet<String> {
        envoy
            .log_entries(needle)
            .into_iter()
            .filter_map(|(_, line)| line.split("][").nth(1).map(str::to_owned))
            .collect()
    };
    wait_for(
        "every thread to expire the rule",
        Duration::from_secs(10),
        || {
            let on = threads("dbfault: fault forgotten active");
            (!on.is_empty() && threads("dbfault: fault forgotten inactive") == on).then_some(())
        },
    );
    assert_eq!(envoy.fault_active("forgotten"), Some(0.0));
    psql(envoy.pg(), "SELECT 1");
    // Pushed again (or any other push, or a restart): still expired.
    assert!(envoy.push_plugin_config(&format!("{} ", rule(&expires))));
    psql(envoy.pg(), "SELECT 1");
    assert_eq!(envoy.fault_active("forgotten"), Some(0.0));
}

#[test]
fn two_envoys_with_the_same_absolute_window_switch_together() {
    let start = in_secs(2);
    let config = format!(
        r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{{"name": "drill", "match": {{"hosts": ["postgres"]}}, "abort": {{}}, "window": {{"start": "{start}", "for": "1s"}}}}]}}"#
    );
    // Started one after the other, so each loads the configuration at its own time (a window
    // counted from the load would open that much later on the second).
    let a = Envoy::builder().plugin_config(&config).start();
    let b = Envoy::builder().plugin_config(&config).start();
    let activation = |envoy: &Envoy| {
        wait_for("the window to open", Duration::from_secs(15), || {
            envoy
                .log_times("dbfault: fault drill active")
                .first()
                .copied()
        })
    };
    let loaded = |envoy: &Envoy| envoy.log_times("dbfault: configuration loaded")[0];
    let (la, lb) = (loaded(&a), loaded(&b));
    let (ta, tb) = (activation(&a), activation(&b));
    // The loads were apart (so the test can tell), the openings together.
    assert!(lb - la >= 200, "loaded at {la} and {lb} ms");
    assert!((ta - tb).abs() <= 100, "opened at {ta} and {tb} ms");
}

#[test]
fn pushing_no_active_rule_ends_every_fault_within_a_second() {
    use std::io::Write;
    let (pg, redis) = (Postgres::start(), Redis::start());
    let rules = r#"{"metrics": {"interval": "100ms"}, "faults": [
        {"name": "slow", "match": {"hosts": ["redis"]}, "delay": {"latency": "10s"}},
        {"name": "hole", "match": {"hosts": ["postgres"]}, "blackhole": {}}]}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(rules)
        .start();
    // A PING held for 10 s; a PostgreSQL startup swallowed by the blackhole.
    let mut held = TcpStream::connect(("127.0.0.1", envoy.redis())).unwrap();
    held.write_all(&resp(&[b"PING"])).unwrap();
    let mut swallowed = TcpStream::connect(("127.0.0.1", envoy.pg())).unwrap();
    let mut startup = 41u32.to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    swallowed.write_all(&startup).unwrap();
    assert!(stays_silent(&mut held, Duration::from_millis(300)));
    // The kill switch: a configuration with no active rule.
    let pushed = Instant::now();
    assert!(envoy.push_plugin_config(r#"{"metrics": {"interval": "100ms"}}"#));
    // The held bytes are forwarded: the PING is answered.
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reply = [0u8; 7];
    std::io::Read::read_exact(&mut held, &mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
    let answered = pushed.elapsed();
    // The blackholed connection is closed (its bytes were lost: it cannot resume).
    let rest = read_to_close(&mut swallowed, Duration::from_secs(2));
    let closed = pushed.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        answered < Duration::from_secs(1) && closed < Duration::from_secs(1),
        "answered after {answered:?}, closed after {closed:?}"
    );
}

#[test]
fn sidecar_percentage_picks_the_same_sidecars_across_restarts() {
    let redis = Redis::start();
    let config = r#"{"metrics": {"interval": "100ms"}, "faults": [{"name": "half", "sidecarPercentage": 50, "match": {"hosts": ["redis"]}, "abort": {}}]}"#;
    // Node ids shaped like Istio's, one per pod.
    let nodes: Vec<String> = (1..=6)
        .map(|i| format!("sidecar~10.8.0.{i}~plants-7d9f-{i}.plants~plants.svc.cluster.local"))
        .collect();
    let run = || -> Vec<bool> {
        nodes
            .iter()
            .map(|node| {
                let envoy = Envoy::builder()
                    .redis(redis.port)
                    .concurrency(1)
                    .node_id(node)
                    .plugin_config(config)
                    .start();
                let active = envoy.fault_active("half") == Some(1.0);
                // The rule acts exactly on the sidecars where fault_active says so.
                assert_eq!(ping(envoy.redis()).is_err(), active, "{node}");
                let said = if active { "chosen" } else { "left out" };
                let log = envoy.log();
                assert_eq!(
                    log.matches("dbfault: rule half ").count(),
                    1,
                    "logged once per rule: {log}"
                );
                assert!(
                    log.contains(&format!(
                        "dbfault: rule half {said} on this sidecar (node id {node}, sidecarPercentage 50.00)"
                    )),
                    "{log}"
                );
                active
            })
            .collect()
    };
    let first = run();
    // The pods the documented hash picks (computed by Python's hashlib); some in, some out for
    // these names.
    let expected = documented_sidecar_choice(&nodes, "half", 5000);
    assert_eq!(first, expected);
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    // Restarted, the same sidecars take part.
    assert_eq!(run(), first);
}
