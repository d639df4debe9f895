//! Reliability: every Envoy configuration we ship passes `envoy --mode validate`, the
//! fail-open path when the module cannot load, a flood of distinct upstreams, and a sample of
//! invalid configurations through a real Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn envoys() -> Vec<PathBuf> {
    let old = std::env::var_os("DBFAULT_ENVOY_1_36")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-1.36/bin/envoy"));
    vec![envoy_bin(), old]
}

/// `python3 scripts/localenv.py ARGS...`, the renderer of the shipped config for local runs.
fn localenv<'a>(args: impl IntoIterator<Item = &'a OsStr>) -> Output {
    Command::new("python3")
        .arg(repo().join("scripts/localenv.py"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn validate(envoy: &Path, config: &Path, cwd: &Path) -> (bool, String) {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .current_dir(cwd)
        .output()
        .unwrap();
    let text = text(&out);
    (out.status.success() && text.contains("OK"), text)
}

#[test]
fn every_shipped_envoy_config_passes_validate_mode() {
    let dir = TempDir::new("validate");
    let mut configs: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    // The local Envoy, from envoy/ where its relative paths point.
    configs.push((
        "envoy/envoy.yaml".into(),
        repo().join("envoy/envoy.yaml"),
        repo().join("envoy"),
    ));
    // The Istio-shaped sidecar bootstrap of the tests.
    let ecds = dir.path().join("ecds.json");
    fs::write(&ecds, "{\"resources\": []}").unwrap();
    let sidecar = fs::read_to_string(repo().join("tests/istio-sidecar/bootstrap.yaml"))
        .unwrap()
        .replace("__ECDS_PATH__", &ecds.display().to_string())
        .replace("__ECDS_DIR__", &dir.path().display().to_string())
        .replace("__FIRESTORE_PORT__", "8443");
    let sidecar_path = dir.path().join("sidecar.yaml");
    fs::write(&sidecar_path, sidecar).unwrap();
    configs.push((
        "tests/istio-sidecar/bootstrap.yaml".into(),
        sidecar_path,
        dir.path().to_owned(),
    ));
    // The local Envoy as scripts/localenv.py renders it for the tests and the demo: free ports,
    // absolute paths (checked from another directory), clusters pointed elsewhere.
    let rendered = dir.path().join("localenv");
    let out = localenv([
        "envoy-config".as_ref(),
        "--dir".as_ref(),
        rendered.as_os_str(),
        "--module".as_ref(),
        repo()
            .join("target/wasm32-wasip1/release/dbfault.wasm")
            .as_os_str(),
        "--upstream".as_ref(),
        "postgres=25432".as_ref(),
        "--upstream".as_ref(),
        "outbound|443||firestore.googleapis.com=28443".as_ref(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    configs.push((
        "localenv.py envoy-config".into(),
        rendered.join("envoy.yaml"),
        dir.path().to_owned(),
    ));
    // A cluster the shipped config lacks is an error that names it, not a silent no-op.
    let out = localenv([
        "envoy-config".as_ref(),
        "--dir".as_ref(),
        rendered.as_os_str(),
        "--module".as_ref(),
        "x.wasm".as_ref(),
        "--upstream".as_ref(),
        "postgress=5432".as_ref(),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("no cluster named 'postgress'"),
        "{}",
        text(&out)
    );
    // The benchmark's bootstraps (the Wasm filters inline, as in ECDS resources).
    for config in ["tcp_proxy", "noop", "dbfault", "dbfault20"] {
        let out = Command::new("python3")
            .arg(repo().join("scripts/bench.py"))
            .args(["--print-bootstrap", config])
            .output()
            .unwrap();
        assert!(out.status.success());
        let path = dir.path().join(format!("bench-{config}.yaml"));
        fs::write(&path, out.stdout).unwrap();
        configs.push((format!("bench {config}"), path, dir.path().to_owned()));
    }
    for envoy in envoys() {
        for (name, path, cwd) in &configs {
            let (ok, out) = validate(&envoy, path, cwd);
            assert!(ok, "{name} with {}:\n{out}", envoy.display());
        }
    }
    // And validate mode does catch a broken one.
    let broken = dir.path().join("broken.yaml");
    let text = fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    fs::write(
        &broken,
        text.replace("stat_prefix: redis", "stat_prefx: redis"),
    )
    .unwrap();
    assert!(!validate(&envoy_bin(), &broken, &repo().join("envoy")).0);
}

#[test]
fn a_module_that_cannot_load_fails_open() {
    let redis = Redis::start();
    // Start with a valid module, then push one whose file is not Wasm at all.
    let envoy = Envoy::start(EnvoyOptions::new(free_port(), redis.port, "{}"));
    let garbage = envoy.dir.path().join("garbage.wasm");
    fs::write(&garbage, b"this is not a wasm module").unwrap();
    let ecds = render_ecds_with_module("{}", &garbage);
    assert!(ecds.contains("failure_policy: FAIL_OPEN"));
    envoy.push_ecds(&ecds);
    // Whatever Envoy did with the update, traffic keeps flowing.
    for _ in 0..5 {
        let mut c = RedisConn::connect(envoy.redis);
        assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    }
    // A fresh Envoy that has never seen a good module: FAIL_OPEN lets traffic through.
    let dir = TempDir::new("failopen");
    let out = localenv([
        "envoy-config".as_ref(),
        "--dir".as_ref(),
        dir.path().as_os_str(),
        "--module".as_ref(),
        garbage.as_os_str(),
        "--plugin-config".as_ref(),
        "{}".as_ref(),
        "--upstream".as_ref(),
        OsStr::new(&format!("redis={}", redis.port)),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let fresh = Envoy::launch(dir, &envoy_bin(), 2);
    let port = fresh.listener("redis");
    let reply = wait_for(
        "traffic through an Envoy whose filter failed to load",
        Duration::from_secs(10),
        || RedisConn::connect(port).try_cmd(&[b"PING"]).ok(),
    );
    assert_eq!(reply, b"+PONG\r\n");
    assert!(
        fresh.log().to_lowercase().contains("wasm"),
        "no trace of the failed module in the log"
    );
}

#[test]
fn a_flood_of_distinct_upstreams_stays_within_max_upstreams() {
    // A TLS listener whose cluster is named like Envoy's PassthroughCluster: the upstream
    // identity is then each connection's SNI, which the client chooses freely.
    let echo = TlsEchoServer::start();
    let dir = TempDir::new("flood");
    let ecds = dir.path().join("ecds.yaml");
    let bootstrap = fs::read_to_string(repo().join("tests/istio-sidecar/bootstrap.yaml"))
        .unwrap()
        .replace("__ECDS_PATH__", &ecds.display().to_string())
        .replace("__ECDS_DIR__", &dir.path().display().to_string())
        .replace("__FIRESTORE_PORT__", &echo.port.to_string())
        .replace("server_names: [firestore.googleapis.com]\n        ", "")
        .replace(
            "outbound|443||firestore.googleapis.com",
            "PassthroughCluster",
        );
    fs::write(dir.path().join("envoy.yaml"), bootstrap).unwrap();
    let resource = render_ecds(r#"{"metrics": {"maxUpstreams": 20}}"#).replace(
        "name: dbfault\n  typed_config",
        "name: extensions.istio.io/wasmplugin/plants.dbfault\n  typed_config",
    );
    fs::write(&ecds, resource).unwrap();
    let envoy = Envoy::launch(dir, &envoy_bin(), 2);
    let port = envoy.listener("0.0.0.0_443");
    let n = 200;
    for i in 0..n {
        assert!(tls_echo_once(
            port,
            &format!("db{i}.flood.example.com"),
            "x"
        ));
    }
    envoy.settle();
    let series: Vec<String> = envoy
        .prometheus()
        .keys()
        .filter(|k| k.starts_with("dbfault_upstream_cx_total{"))
        .cloned()
        .collect();
    let total: f64 = series.iter().map(|k| envoy.prometheus()[k]).sum();
    eprintln!("{} series for {n} distinct upstreams", series.len());
    // Per worker: 20 named series, the rest `other`; two workers share names they both saw.
    assert!(
        series.len() <= 2 * 20 + 1,
        "{} series: {series:?}",
        series.len()
    );
    assert!(series.iter().any(|k| k.contains("upstream=\"other\"")));
    assert!(series
        .iter()
        .any(|k| k.contains("upstream=\"db0.flood.example.com\"")));
    assert_eq!(total, f64::from(n), "every connection counted once");
}
