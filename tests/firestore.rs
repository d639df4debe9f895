//! End to end: the story dbfault exists for (issue 13) — `plants` writing to a real Firestore
//! server (Google's emulator) over gRPC with Google's official client, through a real Envoy 1.40
//! with dbfault on the Istio-named cluster `outbound|8080||firestore.googleapis.com`: exact byte
//! counters, an established HTTP/2 channel cut by `applyTo: all`, writes slowed by `delay`, and a
//! `percentage` of new channels failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    config, lines, plants_firestore, repo, wait_for, Envoy, FirestoreEmulator, OutputByDeadline,
    Process,
};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const UPSTREAM: &str = "firestore.googleapis.com";
const CLUSTER: &str = "outbound|8080||firestore.googleapis.com";
const FIRESTORE: &str = r#""match": {"hosts": ["firestore.googleapis.com"]}"#;

/// The next line that `pick` accepts, within `timeout`.
fn next<T>(
    rx: &Receiver<(Instant, String)>,
    timeout: Duration,
    pick: impl FnMut(&str) -> Option<T>,
) -> T {
    next_after(rx, None, timeout, pick)
}

/// The next line read after `since` (when given) that `pick` accepts, within `timeout`: lines
/// the app printed before a push returned may still wait in the channel.
fn next_after<T>(
    rx: &Receiver<(Instant, String)>,
    since: Option<Instant>,
    timeout: Duration,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (read, line) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no such line from plants within {timeout:?}"));
        if since.is_some_and(|since| read < since) {
            continue;
        }
        if let Some(v) = pick(&line) {
            return v;
        }
    }
}

/// A success line's write time in ms.
fn success_ms(line: &str) -> Option<u64> {
    let rest = line.split("✅ success (").nth(1)?;
    rest.split(", ").nth(1)?.strip_suffix(" ms)")?.parse().ok()
}

#[test]
fn plants_on_firestore_through_dbfault() {
    assert!(
        dbfault_testkit::firestore_emulator_installed(),
        "the Firestore emulator is missing: it comes with the machine image (Debian packages \
         google-cloud-cli and google-cloud-cli-firestore-emulator, from Google's apt repository)"
    );
    let emulator = FirestoreEmulator::start();
    let envoy = Envoy::builder()
        .firestore(emulator.port)
        .plugin_config(&config(""))
        .start();
    let port = envoy.firestore();

    // Healthy: every write succeeds, and dbfault's byte counters equal Envoy's.
    let out = plants_firestore(
        port,
        &[("PLANTS_WRITES", "10"), ("PLANTS_INTERVAL_MS", "20")],
    )
    .output_by_deadline()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("writing a new plant to Firestore... ✅ success")
            .count(),
        10,
        "{text}"
    );
    envoy.wait_byte_counters(UPSTREAM, CLUSTER);

    // The long-lived app: one channel, one HTTP/2 connection.
    let mut app = Process(
        plants_firestore(
            port,
            &[("PLANTS_INTERVAL_MS", "100"), ("PLANTS_TIMEOUT_S", "2")],
        )
        .spawn()
        .unwrap(),
    );
    let rx = lines(&mut app.0, "plants");
    for _ in 0..3 {
        next(&rx, Duration::from_secs(30), success_ms);
    }
    // An outage with `applyTo: all`: the established channel is cut within one base tick
    // (50 ms) of every worker running the configuration, plus scheduling slack (Envoy's own count
    // of the cluster's open connections), and the app's writes fail with the client's own error.
    let active = format!("cluster.{CLUSTER}.upstream_cx_active");
    assert_eq!(envoy.stat(&active), 1, "one channel");
    let outage =
        format!(r#"{{"name": "firestore-outage", {FIRESTORE}, "applyTo": "all", "abort": {{}}}}"#);
    assert!(envoy.push_plugin_config(&config(&outage)));
    let applied = Instant::now();
    wait_for("the channel to be cut", Duration::from_secs(5), || {
        (envoy.stat(&active) == 0).then_some(())
    });
    let cut = applied.elapsed();
    assert!(
        cut <= Duration::from_millis(250),
        "cut {cut:?} after every worker ran the configuration"
    );
    let failure = next(&rx, Duration::from_secs(10), |l| {
        l.contains("🚫 Failed adding plant: ").then(|| l.to_owned())
    });
    assert!(
        failure.contains("503"),
        "the client's Unavailable: {failure}"
    );
    // Recovery.
    assert!(envoy.push_plugin_config(&config("")));
    next_after(
        &rx,
        Some(Instant::now()),
        Duration::from_secs(30),
        success_ms,
    );
    // A delay: each write takes the latency longer.
    let delay =
        format!(r#"{{"name": "firestore-slow", {FIRESTORE}, "delay": {{"latency": "300ms"}}}}"#);
    assert!(envoy.push_plugin_config(&config(&delay)));
    let applied = Instant::now();
    // Lines printed before every worker ran the delay are passed over, and so is the write in
    // flight then (it may be quicker). Each later write waits the latency in full, also when
    // one of gRPC's own HTTP/2 frames (a ping, a window update) started the hold just before
    // it: the hold is extended for the write.
    next_after(&rx, Some(applied), Duration::from_secs(10), success_ms);
    let slow: Vec<u64> = (0..6)
        .map(|_| next(&rx, Duration::from_secs(10), success_ms))
        .collect();
    let slow: Vec<Duration> = slow.iter().map(|ms| Duration::from_millis(*ms)).collect();
    dbfault_testkit::assert_held(
        "writes",
        &slow,
        Duration::from_millis(300),
        Duration::from_millis(5),
    );
    drop(app);

    // 50% of new channels aborted: of 60 new clients, about half fail.
    let half = format!(
        r#"{{"name": "half", {FIRESTORE}, "applyTo": "new", "percentage": 50, "abort": {{}}}}"#
    );
    let cx = || {
        envoy
            .metric("dbfault_upstream_cx_total", UPSTREAM)
            .unwrap_or(0.0)
    };
    let cx_before = cx();
    assert!(envoy.push_plugin_config(&config(&half)));
    let v = dbfault_testkit::python_json(&[
        repo()
            .join("tests/clients/firestore_channels.py")
            .into_os_string(),
        "--port".into(),
        port.to_string().into(),
        "--writes".into(),
        "60".into(),
    ]);
    let failed = v["failed"].as_i64().unwrap();
    assert_eq!(failed + v["ok"].as_i64().unwrap(), 60);
    // Each client is its own connection, and a write fails exactly when dbfault aborted its
    // connection.
    wait_for(
        "60 more connections counted",
        Duration::from_secs(10),
        || (cx() - cx_before == 60.0).then_some(()),
    );
    wait_for("the aborts counted", Duration::from_secs(10), || {
        (envoy.injected(UPSTREAM, "half") == failed as f64).then_some(())
    });
    // Binomial(60, 0.5): mean 30, standard deviation 3.9; ±4.5 of them.
    assert!((12..=48).contains(&failed), "{v}");
}
