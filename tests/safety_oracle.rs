//! The safety oracle (issue 19) in `make test`: a seeded workload of what real apps send
//! (comments, quoting, multi-statement queries, transactions with savepoints, the extended
//! protocol and prepared statements) through a real Envoy with dbfault under seeded rules,
//! checked against what MariaDB and PostgreSQL themselves logged as run and Redis's MONITOR
//! and error counts showed, and against a
//! reference run straight on the server (see `tests/clients/oracle.py` for the contract).
//!
//! `DBFAULT_SAFETY_SEED` replays a seed (a failure prints it); `DBFAULT_SAFETY_STATEMENTS`
//! sets the statements per protocol (2,000 by default; `make safety` runs a long one).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{python_json, repo, run_ok, Envoy, MariaDb, Postgres, Redis};
use std::process::Command;

fn seed() -> u64 {
    std::env::var("DBFAULT_SAFETY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
                % 1_000_000
        })
}

fn statements() -> u64 {
    std::env::var("DBFAULT_SAFETY_STATEMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

fn oracle() -> String {
    repo()
        .join("tests/clients/oracle.py")
        .to_string_lossy()
        .into_owned()
}

fn rules(protocol: &str, seed: u64) -> String {
    run_ok(
        Command::new(repo().join(".venv/bin/python"))
            .arg(oracle())
            .args(["rules", "--protocol", protocol, "--seed", &seed.to_string()]),
    )
}

/// Runs the oracle and checks its report: no violation, the statements all checked, and rules
/// that acted (a run where none did would check nothing of the rewriting).
fn check(protocol: &str, seed: u64, proxy: u16, direct: u16, log: Option<&std::path::Path>) {
    let n = statements();
    let mut args = vec![
        oracle(),
        "run".into(),
        "--protocol".into(),
        protocol.into(),
        "--seed".into(),
        seed.to_string(),
        "--proxy".into(),
        proxy.to_string(),
        "--direct".into(),
        direct.to_string(),
        "--statements".into(),
        n.to_string(),
    ];
    if let Some(log) = log {
        args.extend(["--log".into(), log.to_string_lossy().into_owned()]);
    }
    let v = python_json(&args);
    eprintln!("safety oracle, {protocol}, seed {seed}: {v}");
    assert_eq!(
        v["violations"].as_array().map(Vec::len),
        Some(0),
        "{protocol}: replay with DBFAULT_SAFETY_SEED={seed}\nrules: {}\n{v:#}",
        rules(protocol, seed)
    );
    assert!(v["statements"].as_u64().unwrap() >= n, "{v}");
    assert!(v["acted"].as_u64().unwrap() > 0, "no rule acted: {v}");
    // A `miss` rule among the rules answered some reads (the oracle checked each answer).
    if rules(protocol, seed).contains("\"miss\"") {
        assert!(
            v["missed"].as_u64().unwrap_or(0) > 0,
            "the miss rule acted on nothing: {v}"
        );
    }
    // Most replies to what no rule acted on were compared with the reference run (rules that
    // act on most messages leave fewer to compare: seed 87109 acted on 588 of 1,105).
    let untouched = v["messages"].as_u64().unwrap() - v["acted"].as_u64().unwrap();
    assert!(v["compared"].as_u64().unwrap() > untouched / 2, "{v}");
}

#[test]
fn mariadb_ran_what_the_app_sent_minus_what_rules_acted_on() {
    let seed = seed();
    let (db, envoy) = MariaDb::behind_envoy(&rules("mysql", seed));
    check("mysql", seed, envoy.mariadb(), db.port, None);
}

#[test]
fn postgres_ran_what_the_app_sent_minus_what_rules_acted_on() {
    let seed = seed();
    let pg = Postgres::start();
    let envoy = Envoy::builder()
        .postgres(pg.port)
        .plugin_config(&rules("postgres", seed))
        .start();
    check("postgres", seed, envoy.pg(), pg.port, Some(&pg.log_path()));
}

#[test]
fn redis_ran_what_the_app_sent_minus_what_rules_acted_on() {
    let seed = seed();
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&rules("redis", seed))
        .start();
    check("redis", seed, envoy.redis(), redis.port, None);
}
