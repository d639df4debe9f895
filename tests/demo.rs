//! `make demo` (scripts/demo.py) driven as a user would: the scripted timeline, the interactive
//! mode and Ctrl-C, with the real plants app, PostgreSQL and Envoy it starts itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{envoy_bin, lines, repo, run_ok, OutputByDeadline};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn plants_bin() -> std::path::PathBuf {
    let p = repo().join("target/release/examples/plants");
    assert!(
        p.exists(),
        "{} missing: run `make test` (it builds the example)",
        p.display()
    );
    p
}

fn demo(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/demo.py"))
        .args(args)
        .arg("--envoy")
        .arg(envoy_bin())
        .arg("--plants")
        .arg(plants_bin())
        // The demo reads the ECDS file with the crate's reader: this build's, not a stale one.
        .env("DBFAULT_BIN", env!("CARGO_BIN_EXE_dbfault"));
    cmd
}

fn wait_line(
    rx: &Receiver<(Instant, String)>,
    seen: &mut Vec<String>,
    what: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, line) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {what:?} within {timeout:?}"));
        seen.push(line.clone());
        if line.contains(what) {
            return line;
        }
    }
}

/// Both stories start the same: every write of the healthy phase succeeds, most of the
/// outage's fail. The healthy phase is 3 s of one write per 500 ms, but the first write opens
/// the app's connection (1.4 s seen for a gRPC channel under the full suite), so at least 2.
fn healthy_then_outage(text: &str) {
    let (ok, failed, _) = phase_row(text, "healthy");
    assert!(
        ok >= 2 && failed == 0,
        "healthy: {ok} ok, {failed} failed\n{text}"
    );
    let (_, failed, _) = phase_row(text, "outage");
    assert!(failed >= 3, "outage: only {failed} failures\n{text}");
}

/// Writes (ok, failed) counted in one phase of the summary table.
fn phase_row(output: &str, phase: &str) -> (u32, u32, String) {
    let row = output
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{phase} ")))
        .unwrap_or_else(|| panic!("no summary row for {phase}:\n{output}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    (
        cols[2].parse().unwrap(),
        cols[3].parse().unwrap(),
        cols[4..].join(" "),
    )
}

#[test]
fn the_scripted_timeline_tells_the_story() {
    let text = run_ok(&mut demo(&[
        "--db",
        "postgres",
        "--healthy",
        "3",
        "--outage",
        "3",
        "--recover",
        "3",
        "--conflicts",
        "4",
        "--delay",
        "3",
        "--latency",
        "200ms",
        "--down",
        "3",
        "--read-only",
        "3",
    ]));

    healthy_then_outage(&text);
    // The pooled connection fails with the client's own error, then reconnects fail too.
    assert!(
        text.contains("🚫 Failed adding plant: connection closed"),
        "{text}"
    );
    let (ok, failed, _) = phase_row(&text, "recovery");
    assert!(
        ok >= 3 && failed <= 1,
        "recovery: {ok} ok, {failed} failed\n{text}"
    );
    // A share of the INSERTs fail with the injected serialization failure; the app retries on
    // its connection and most writes succeed.
    let (ok, failed, _) = phase_row(&text, "conflicts");
    assert!(
        ok >= 2 && failed >= 1,
        "conflicts: {ok} ok, {failed} failed\n{text}"
    );
    assert!(
        text.contains("🚫 Failed adding plant: db error: ERROR: could not serialize access due to concurrent update (SQLSTATE 40001), retrying"),
        "{text}"
    );
    assert!(
        text.contains("faults injected: postgres-conflict")
            || text.contains(", postgres-conflict "),
        "{text}"
    );
    let (ok, _, median) = phase_row(&text, "slow");
    let ms: u64 = median.trim_end_matches(" ms").parse().unwrap();
    assert!(
        ok >= 3 && (195..=230).contains(&ms),
        "slow: {ok} ok, median {median}\n{text}"
    );
    let injected = text
        .lines()
        .find(|l| l.contains("faults injected: "))
        .unwrap_or_default();
    assert!(
        injected.contains("postgres-outage") && injected.contains("postgres-conflict"),
        "{text}"
    );
    assert!(text.contains("dbfault metrics for upstream=\"postgres\""));
    // The failover drill: the app's writes fail while the primary is down and read-only
    // (refused sessions, 25006), then succeed; dbfault tells the recovery and the failures.
    let (_, failed, _) = phase_row(&text, "down");
    assert!(failed >= 2, "down: {failed} failed\n{text}");
    assert!(
        text.contains("(SQLSTATE 57P01)") || text.contains("(SQLSTATE 57P03)"),
        "{text}"
    );
    let (ok, failed, _) = phase_row(&text, "read-only");
    assert!(
        ok == 0 && failed >= 2,
        "read-only: {ok} ok, {failed} failed\n{text}"
    );
    // (The app creates its table when it connects: a standby refuses that too.)
    assert!(
        text.contains("in a read-only transaction (SQLSTATE 25006)"),
        "{text}"
    );
    let (ok, _, _) = phase_row(&text, "after");
    assert!(ok >= 2, "after: {ok} ok\n{text}");
    let recovered = text
        .lines()
        .find(|l| l.contains("drill-failover-read-only:"))
        .unwrap_or_else(|| panic!("no recovery line\n{text}"));
    assert!(
        recovered.contains("requests failed; the app's first success"),
        "{recovered}"
    );

    let removed = text
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(removed.starts_with("/tmp/dbfault-demo-"), "{removed}");
    assert!(
        !std::path::Path::new(&removed).exists(),
        "{removed} left behind"
    );
}

#[test]
fn interactive_mode_toggles_rules_by_name() {
    let mut child = demo(&["--db", "postgres", "--interactive"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child, "demo");
    let mut seen = Vec::new();
    let mut stdin = child.stdin.take().unwrap();
    let long = Duration::from_secs(30);
    wait_line(&rx, &mut seen, "type: on NAME", long);
    wait_line(&rx, &mut seen, "✅ success", long);
    writeln!(stdin, "list").unwrap();
    wait_line(&rx, &mut seen, "postgres-outage", long);
    writeln!(stdin, "on postgres-outage").unwrap();
    wait_line(&rx, &mut seen, "🚫 Failed adding plant", long);
    writeln!(stdin, "off postgres-outage").unwrap();
    wait_line(&rx, &mut seen, "switched off", long);
    wait_line(&rx, &mut seen, "✅ success", long);
    writeln!(stdin, "on no-such-rule").unwrap();
    // `dbfault off|on` refuses it and names the rules there are.
    wait_line(
        &rx,
        &mut seen,
        r#"no rule named "no-such-rule" (rules: "#,
        long,
    );
    writeln!(stdin, "quit").unwrap();
    wait_line(&rx, &mut seen, "faults injected: postgres-outage", long);
    assert!(child.wait().unwrap().success());
}

#[test]
fn ctrl_c_stops_and_cleans_up_everything() {
    let mut child = demo(&["--db", "postgres", "--healthy", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child, "demo");
    let mut seen = Vec::new();
    let started = wait_line(
        &rx,
        &mut seen,
        "demo: PostgreSQL 15 on",
        Duration::from_secs(30),
    );
    let data_dir = started
        .rsplit('(')
        .next()
        .unwrap()
        .trim_start_matches("throwaway, ")
        .trim_end_matches(')')
        .to_owned();
    wait_line(&rx, &mut seen, "✅ success", Duration::from_secs(30));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    wait_line(&rx, &mut seen, "demo: interrupted", Duration::from_secs(10));
    wait_line(&rx, &mut seen, "demo: stopped", Duration::from_secs(20));
    child.wait().unwrap();
    let tmp = std::path::Path::new(&data_dir).parent().unwrap().to_owned();
    assert!(!tmp.exists(), "{} left behind", tmp.display());
    // Nothing it started is still running.
    let ps = Command::new("pgrep")
        .args(["-f", &tmp.display().to_string()])
        .output_by_deadline()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "still running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn the_firestore_story_by_default() {
    let text = run_ok(&mut demo(&[
        "--healthy",
        "3",
        "--outage",
        "3",
        "--recover",
        "6",
        "--delay",
        "3",
        "--latency",
        "200ms",
    ]));
    assert!(
        text.contains("demo: Firestore emulator on 127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("(cluster outbound|8080||firestore.googleapis.com)"),
        "{text}"
    );
    healthy_then_outage(&text);
    // The app's long-lived gRPC channel is cut; the client's own Unavailable error.
    assert!(
        text.contains("writing a new plant to Firestore... 🚫 Failed adding plant: 503 "),
        "{text}"
    );
    let (ok, _, _) = phase_row(&text, "recovery");
    assert!(ok >= 2, "recovery: {ok} ok\n{text}");
    // Every write of the slow phase waits the latency (after the one in flight at the push).
    let (ok, _, median) = phase_row(&text, "slow");
    let ms: u64 = median.trim_end_matches(" ms").parse().unwrap();
    assert!(
        ok >= 3 && (195..=260).contains(&ms),
        "slow: {ok} ok, median {median}\n{text}"
    );
    // Throughput in bits per second, as a service graph shows it.
    assert!(
        text.contains("[ healthy ] firestore.googleapis.com ↑ "),
        "{text}"
    );
    assert!(text.contains("b/s  ↓ "), "{text}");
    assert!(text.contains("faults injected: firestore-outage"), "{text}");
    assert!(text.contains("demo: stopped Firestore, Envoy and plants; removed /tmp/dbfault-demo-"));
}

/// The demo run with `gcloud` as its Google Cloud CLI, expected to fail: what it printed.
fn failed_demo(gcloud: &str) -> String {
    let out = demo(&["--gcloud", gcloud]).output_by_deadline().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    text
}

#[test]
fn without_the_emulator_one_line_says_what_to_do() {
    let text = failed_demo("/nonexistent/gcloud");
    assert!(
        text.contains("demo: the Firestore emulator is missing: install Google's google-cloud-cli and google-cloud-cli-firestore-emulator packages (Java 17+), or run the PostgreSQL story: make demo DB=postgres"),
        "{text}"
    );
    assert!(!text.contains("Traceback"), "{text}");
}

/// gcloud without the emulator component: it starts, then says so and exits. The demo says what
/// to install in one line, and points at no log (it deletes its directory on the way out).
#[test]
fn a_gcloud_without_the_emulator_component_is_named() {
    let dir = dbfault_testkit::TempDir::new("fake-gcloud");
    let gcloud = dir.path().join("gcloud");
    // What gcloud 5xx from apt prints when the component is missing (update_manager.py).
    std::fs::write(
        &gcloud,
        "#!/bin/sh\ncase \"$*\" in *--help*) exit 0;; esac\necho 'You need the [cloud-firestore-emulator] component to use the Firestore emulator.' >&2\necho 'You cannot perform this action because the Google Cloud CLI component manager is disabled for this installation.' >&2\necho 'sudo apt-get install google-cloud-cli-firestore-emulator' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gcloud, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = failed_demo(gcloud.to_str().unwrap());
    assert!(
        text.contains("the Firestore emulator is not installed in")
            && text.contains("google-cloud-cli-firestore-emulator package")
            && text.contains("make demo DB=postgres"),
        "{text}"
    );
    assert!(!text.contains("firestore.log"), "{text}");
    assert!(!text.contains("Traceback"), "{text}");
}
