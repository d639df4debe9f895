//! End to end: the dbfault module in a real Envoy 1.40 (`--concurrency 2`) in front of a real
//! PostgreSQL 15 and a real Redis, driven by real clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    psql, resp, resp_bulk, wait_for, Envoy, Postgres, PsqlSession, Redis, RedisConn,
};
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_CONFIG: &str =
    r#"{"metrics": {"enabled": true, "interval": "100ms", "maxUpstreams": 256}}"#;

const METRICS: [&str; 7] = [
    "dbfault_upstream_cx_total",
    "dbfault_upstream_cx_active",
    "dbfault_upstream_tx_bytes_total",
    "dbfault_upstream_rx_bytes_total",
    "dbfault_upstream_tx_bytes_per_second",
    "dbfault_upstream_rx_bytes_per_second",
    "dbfault_upstream_dropped_bytes_total",
];

fn wait_metric(envoy: &Envoy, name: &str, upstream: &str, want: f64) {
    let what = format!("{name}{{upstream={upstream:?}}} == {want}");
    wait_for(&what, Duration::from_secs(10), || {
        (envoy.metric(name, upstream) == Some(want)).then_some(())
    });
}

#[test]
fn byte_counters_equal_envoy_cluster_counters() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(DEFAULT_CONFIG)
        .start();

    // Known work through Envoy: three psql sessions, five Redis connections.
    psql(
        envoy.pg(),
        "CREATE TABLE plants (id serial PRIMARY KEY, name text)",
    );
    psql(
        envoy.pg(),
        "INSERT INTO plants (name) SELECT 'fern-' || g FROM generate_series(1, 500) g",
    );
    let out = psql(envoy.pg(), "SELECT count(*), max(name) FROM plants");
    assert!(out.contains("500"), "{out}");
    for i in 0..5usize {
        let mut c = RedisConn::connect(envoy.redis());
        let value = vec![b'x'; 1000 * (i + 1)];
        assert_eq!(c.cmd(&[b"SET", b"k", &value]), b"+OK\r\n");
        assert_eq!(c.cmd(&[b"GET", b"k"]), resp_bulk(&value));
    }

    for upstream in ["postgres", "redis"] {
        // The listeners' tcp_proxy stat prefixes are the upstream names.
        envoy.wait_closed(upstream, upstream);
    }
    let stats = envoy.stats();
    for (upstream, connections) in [("postgres", 3.0), ("redis", 5.0)] {
        let tx = stats[&format!("cluster.{upstream}.upstream_cx_tx_bytes_total")];
        let rx = stats[&format!("cluster.{upstream}.upstream_cx_rx_bytes_total")];
        assert!(tx > 0 && rx > 0, "{upstream}: Envoy saw no traffic");
        let m = |name| envoy.metric(name, upstream).unwrap();
        assert_eq!(
            m("dbfault_upstream_tx_bytes_total"),
            tx as f64,
            "{upstream} tx"
        );
        assert_eq!(
            m("dbfault_upstream_rx_bytes_total"),
            rx as f64,
            "{upstream} rx"
        );
        assert_eq!(
            m("dbfault_upstream_cx_total"),
            connections,
            "{upstream} cx_total"
        );
    }
}

#[test]
fn cx_active_follows_open_connections() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(DEFAULT_CONFIG)
        .start();

    let mut conns: Vec<RedisConn> = (0..4)
        .map(|_| {
            let mut c = RedisConn::connect(envoy.redis());
            assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
            c
        })
        .collect();
    let mut session = PsqlSession::open(envoy.pg());
    session.send("SELECT 1;");
    wait_metric(&envoy, "dbfault_upstream_cx_active", "redis", 4.0);
    wait_metric(&envoy, "dbfault_upstream_cx_active", "postgres", 1.0);

    conns.truncate(1);
    wait_metric(&envoy, "dbfault_upstream_cx_active", "redis", 1.0);
    session.close();
    wait_metric(&envoy, "dbfault_upstream_cx_active", "postgres", 0.0);
    drop(conns);
    wait_metric(&envoy, "dbfault_upstream_cx_active", "redis", 0.0);

    // A connection that never carries a byte is identified at close and counted once.
    drop(std::net::TcpStream::connect(("127.0.0.1", envoy.redis())).unwrap());
    wait_metric(&envoy, "dbfault_upstream_cx_total", "redis", 5.0);
    wait_metric(&envoy, "dbfault_upstream_cx_active", "redis", 0.0);
    assert_eq!(
        envoy.metric("dbfault_upstream_cx_total", "postgres"),
        Some(1.0)
    );
}

/// Sends `SET` commands with `chunk`-byte values at `rate` bytes/s for `duration`; returns the
/// bytes written and the time it took.
fn paced_sets(port: u16, chunk: usize, rate: f64, duration: Duration) -> (usize, Duration) {
    let mut c = RedisConn::connect(port);
    let value = vec![b'v'; chunk];
    let command = resp(&[b"SET", b"rate", &value]);
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < duration {
        assert_eq!(c.cmd(&[b"SET", b"rate", &value]), b"+OK\r\n");
        sent += command.len();
        let due = Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
    (sent, start.elapsed())
}

#[test]
fn bytes_per_second_gauges_follow_a_steady_transfer() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let config = r#"{"metrics": {"interval": "500ms"}}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(config)
        .start();
    let interval = Duration::from_millis(500);
    let chunk = 8000usize;

    // Two writers (likely on both workers) at 150 kB/s each, and a reader pulling a 20 kB value
    // 10 times per second.
    let target = 150_000.0;
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let port = envoy.redis();
            thread::spawn(move || paced_sets(port, chunk, target, Duration::from_secs(5)))
        })
        .collect();
    let reader = {
        let port = envoy.redis();
        thread::spawn(move || {
            let mut c = RedisConn::connect(port);
            assert_eq!(c.cmd(&[b"SET", b"big", &vec![b'b'; 20_000]]), b"+OK\r\n");
            let start = Instant::now();
            let mut received = 0usize;
            for i in 1..=50u32 {
                received += c.cmd(&[b"GET", b"big"]).len();
                if let Some(wait) = (Duration::from_millis(100) * i).checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
            }
            (received, start.elapsed())
        })
    };

    // Sample the gauges in the middle of the 5 s transfer: each sample is a new value (a
    // worker's flush), taken once three intervals of traffic have passed, so that every sample
    // covers steady traffic only.
    let started = Instant::now();
    let gauges = || {
        Some((
            envoy.metric("dbfault_upstream_tx_bytes_per_second", "redis")?,
            envoy.metric("dbfault_upstream_rx_bytes_per_second", "redis")?,
        ))
    };
    let mut tx_samples = Vec::new();
    let mut rx_samples = Vec::new();
    let mut last = None;
    while tx_samples.len() < 4 {
        let (tx, rx) = wait_for("the rate gauges to move", 2 * interval, || {
            gauges().filter(|g| Some(*g) != last)
        });
        last = Some((tx, rx));
        if started.elapsed() >= 3 * interval {
            tx_samples.push(tx);
            rx_samples.push(rx);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sampled after the transfer"
    );
    let written: Vec<(usize, Duration)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let (received, read_time) = reader.join().unwrap();
    let stopped = Instant::now();

    let tx_rate: f64 = written
        .iter()
        .map(|(b, d)| *b as f64 / d.as_secs_f64())
        .sum();
    let rx_rate = received as f64 / read_time.as_secs_f64();
    eprintln!("measured tx {tx_rate:.0} B/s, gauge samples {tx_samples:?}");
    eprintln!("measured rx {rx_rate:.0} B/s, gauge samples {rx_samples:?}");
    for (what, samples, rate) in [("tx", &tx_samples, tx_rate), ("rx", &rx_samples, rx_rate)] {
        for s in samples {
            assert!(
                (s - rate).abs() <= 0.25 * rate,
                "{what}: gauge {s} not within 25% of measured {rate:.0}"
            );
        }
    }

    // Back to 0 within two intervals once the traffic stops (plus timer slack).
    for name in [
        "dbfault_upstream_tx_bytes_per_second",
        "dbfault_upstream_rx_bytes_per_second",
    ] {
        wait_metric(&envoy, name, "redis", 0.0);
    }
    let settled = stopped.elapsed();
    assert!(
        settled <= 2 * interval + Duration::from_millis(300),
        "gauges took {settled:?} to return to 0"
    );
}

#[test]
fn prometheus_exposition_has_labelled_series() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(DEFAULT_CONFIG)
        .start();
    psql(envoy.pg(), "SELECT 1");
    RedisConn::connect(envoy.redis()).cmd(&[b"PING"]);
    wait_metric(&envoy, "dbfault_upstream_cx_active", "redis", 0.0);

    let text = envoy.get("/stats/prometheus");
    for name in METRICS {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE line for {name}"
        );
        for upstream in ["postgres", "redis"] {
            let series = format!("\n{name}{{upstream=\"{upstream}\"}} ");
            assert!(text.contains(&series), "missing {series:?} in:\n{text}");
        }
    }
    assert!(
        !text.contains("upstream=.="),
        "a tag was left inside a metric name"
    );
}

#[test]
fn invalid_configuration_is_refused_and_the_old_one_stays() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(DEFAULT_CONFIG)
        .start();

    let accepted = envoy.push_plugin_config(r#"{"metrics": {"interval": "fast"}}"#);
    assert!(!accepted, "Envoy accepted an invalid configuration");
    let line = r#"dbfault: invalid configuration: metrics.interval: invalid duration "fast""#;
    wait_for(
        "the error line in Envoy's log",
        Duration::from_secs(5),
        || envoy.log().contains(line).then_some(()),
    );
    assert!(!envoy.push_plugin_config(r#"{"metrics": {"maxUpstreams": 0, "extra": 1}}"#));
    assert!(envoy
        .log()
        .contains("dbfault: invalid configuration: metrics.extra: unknown field"));

    // The previous configuration still counts traffic.
    assert_eq!(
        RedisConn::connect(envoy.redis()).cmd(&[b"PING"]),
        b"+PONG\r\n"
    );
    wait_metric(&envoy, "dbfault_upstream_cx_total", "redis", 1.0);
}

#[test]
fn invalid_configuration_at_startup_is_logged() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let config = r#"{"metrics": {"interval": "1s", "maxUpstreams": "many"}}"#;
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(config)
        .start();
    let line =
        r#"dbfault: invalid configuration: metrics.maxUpstreams: invalid type: string "many""#;
    wait_for(
        "the error line in Envoy's log",
        Duration::from_secs(10),
        || envoy.log().contains(line).then_some(()),
    );
    assert_eq!(
        envoy.stat("extension_config_discovery.network_filter.dbfault.update_rejected"),
        1
    );
}

#[test]
fn live_reconfiguration_through_the_ecds_file() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(DEFAULT_CONFIG)
        .start();
    let ping = || {
        assert_eq!(
            RedisConn::connect(envoy.redis()).cmd(&[b"PING"]),
            b"+PONG\r\n"
        )
    };

    ping();
    wait_metric(&envoy, "dbfault_upstream_cx_total", "redis", 1.0);
    // Metrics off: traffic flows, nothing is counted.
    assert!(envoy.push_plugin_config(r#"{"metrics": {"enabled": false}}"#));
    for _ in 0..3 {
        ping();
    }
    let closed = "cluster.redis.upstream_cx_destroy";
    wait_for(
        "the three connections to close",
        Duration::from_secs(10),
        || (envoy.stat(closed) >= 4).then_some(()),
    );
    assert_eq!(
        envoy.metric("dbfault_upstream_cx_total", "redis"),
        Some(1.0)
    );
    // And on again, without a restart.
    assert!(envoy.push_plugin_config(DEFAULT_CONFIG));
    ping();
    wait_metric(&envoy, "dbfault_upstream_cx_total", "redis", 2.0);
}

#[test]
fn upstreams_beyond_max_upstreams_are_reported_as_other() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    // The limit is per VM: one worker makes the order of first connections deterministic.
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .redis(redis.port)
        .plugin_config(r#"{"metrics": {"interval": "100ms", "maxUpstreams": 1}}"#)
        .concurrency(1)
        .start();
    psql(envoy.pg(), "SELECT 1");
    for _ in 0..2 {
        RedisConn::connect(envoy.redis()).cmd(&[b"PING"]);
    }
    envoy.wait_closed("postgres", "postgres");
    // Both Redis connections went to `other`.
    envoy.wait_closed("other", "redis");
    assert_eq!(
        envoy.metric("dbfault_upstream_cx_total", "other"),
        Some(2.0)
    );
    assert_eq!(
        envoy.metric("dbfault_upstream_cx_total", "postgres"),
        Some(1.0)
    );
    assert_eq!(envoy.metric("dbfault_upstream_cx_total", "redis"), None);
    let stats = envoy.stats();
    assert_eq!(
        envoy.metric("dbfault_upstream_tx_bytes_total", "other"),
        Some(stats["cluster.redis.upstream_cx_tx_bytes_total"] as f64)
    );
}

#[test]
fn the_running_configuration_is_named_and_a_refused_one_counted() {
    let first = r#"{"metrics": {"interval": "100ms"}}"#;
    let envoy = Envoy::builder().plugin_config(first).start();
    // The id `dbfault check` prints for a file is the one the module reports.
    let id = |config: &str| {
        let out = dbfault_testkit::output_with_input(
            std::process::Command::new(env!("CARGO_BIN_EXE_dbfault")).args(["check", "-"]),
            config.as_bytes(),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("(config ").nth(1).unwrap()[..12].to_owned()
    };
    let info = |config: &str| envoy.series("dbfault_config_info", &[("config", config)]);
    let (a, b) = (id(first), id(r#"{"metrics": {"interval": "200ms"}}"#));
    assert_ne!(a, b);
    wait_for(
        "the first configuration's info",
        Duration::from_secs(10),
        || (info(&a) == Some(1.0)).then_some(()),
    );
    assert!(envoy.push_plugin_config(r#"{"metrics": {"interval": "200ms"}}"#));
    wait_for("the rollout to converge", Duration::from_secs(10), || {
        (info(&b) == Some(1.0) && info(&a) == Some(0.0)).then_some(())
    });
    // A refused push: counted, and the running configuration stays.
    assert!(!envoy.push_plugin_config(r#"{"metrics": {"interval": "fast"}}"#));
    wait_for("the refusal to be counted", Duration::from_secs(10), || {
        envoy
            .series("dbfault_config_rejected_total", &[])
            .filter(|n| *n >= 1.0)
    });
    assert_eq!(info(&b), Some(1.0));
}
