//! Reliability: every Envoy configuration we ship passes `envoy --mode validate`, the
//! fail-open path when the module cannot load, a flood of distinct upstreams, and a sample of
//! invalid configurations through a real Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    envoy_1_36_bin, envoy_bin, istiod_ecds, localenv_output, render_ecds, replace_once, repo,
    sidecar_bootstrap, tls_echo_once, wait_for, wasm_path, Envoy, OutputByDeadline, Redis,
    RedisConn, TempDir, TlsEchoServer,
};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn envoys() -> Vec<PathBuf> {
    vec![envoy_bin(), envoy_1_36_bin()]
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn validate(envoy: &Path, config: &Path, cwd: &Path) -> (bool, String) {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .current_dir(cwd)
        .output_by_deadline()
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
    let sidecar = sidecar_bootstrap(&ecds, 8443);
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
    let out = localenv_output([
        "envoy-config".as_ref(),
        "--dir".as_ref(),
        rendered.as_os_str(),
        "--module".as_ref(),
        wasm_path().as_os_str(),
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
    let out = localenv_output([
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
            .output_by_deadline()
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
        replace_once(&text, "stat_prefix: redis", "stat_prefx: redis"),
    )
    .unwrap();
    assert!(!validate(&envoy_bin(), &broken, &repo().join("envoy")).0);
}

#[test]
fn a_module_that_cannot_load_fails_open() {
    let redis = Redis::start();
    // Start with a valid module, then push one whose file is not Wasm at all.
    let envoy = Envoy::builder().redis(redis.port).start();
    let garbage = envoy.dir.path().join("garbage.wasm");
    fs::write(&garbage, b"this is not a wasm module").unwrap();
    let ecds = render_ecds(&garbage, "{}");
    assert!(ecds.contains("failure_policy: FAIL_OPEN"));
    assert!(
        !envoy.push_ecds(&ecds),
        "Envoy accepted a module that is not Wasm"
    );
    // The previous module keeps filtering, and traffic keeps flowing.
    for _ in 0..5 {
        let mut c = RedisConn::connect(envoy.redis());
        assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    }
    // A fresh Envoy that has never seen a good module: FAIL_OPEN lets traffic through.
    let fresh = Envoy::builder().redis(redis.port).module(&garbage).start();
    let reply = RedisConn::connect(fresh.redis()).cmd(&[b"PING"]);
    assert_eq!(reply, b"+PONG\r\n");
    // The module was refused, and the log says why (not merely that Envoy has Wasm).
    assert_eq!(
        fresh.stat("extension_config_discovery.network_filter.dbfault.update_rejected"),
        1
    );
    assert!(
        fresh.log().contains("Failed to load Wasm code"),
        "no trace of the failed module in the log"
    );
}

#[test]
fn a_flood_of_distinct_upstreams_stays_within_max_upstreams() {
    // A TLS listener whose cluster is named like Envoy's PassthroughCluster: the upstream
    // identity is then each connection's SNI, which the client chooses freely.
    let echo = TlsEchoServer::start();
    let dir = TempDir::new("flood");
    let ecds = dir.path().join("ecds.json");
    let bootstrap = sidecar_bootstrap(&ecds, echo.port);
    let bootstrap = replace_once(
        &bootstrap,
        "server_names: [firestore.googleapis.com]\n        ",
        "",
    )
    .replace(
        "outbound|443||firestore.googleapis.com",
        "PassthroughCluster",
    );
    fs::write(dir.path().join("envoy.yaml"), bootstrap).unwrap();
    let mut plugin: Value =
        serde_yaml_ng::from_str(&fs::read_to_string(repo().join("istio/wasmplugin.yaml")).unwrap())
            .unwrap();
    plugin["spec"]["pluginConfig"] = json!({"metrics": {"interval": "100ms", "maxUpstreams": 20}});
    fs::write(&ecds, istiod_ecds(&plugin, &wasm_path(), 1)).unwrap();
    let envoy = Envoy::launch(dir, &envoy_bin(), 2);
    let port = envoy.listener("0.0.0.0_443");
    let n = 200;
    // Four clients at a time (each is an `openssl s_client` process); client k sends SNIs
    // k, k + 4, ..., so db0 comes first.
    let clients = 4;
    std::thread::scope(|s| {
        for k in 0..clients {
            s.spawn(move || {
                for i in (k..n).step_by(clients as usize) {
                    let sni = format!("db{i}.flood.example.com");
                    assert!(tls_echo_once(port, &sni, "x"), "{sni}");
                }
            });
        }
    });
    // The sidecar's stats inclusion list leaves out Envoy's own connection counters: wait for
    // dbfault's to show every connection, all closed, then check that none was counted twice.
    let cx_series = |name: &str| -> Vec<(String, f64)> {
        envoy
            .prometheus()
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .collect()
    };
    wait_for(
        "dbfault to count the flood, every connection closed",
        Duration::from_secs(10),
        || {
            let total: f64 = cx_series("dbfault_upstream_cx_total")
                .iter()
                .map(|s| s.1)
                .sum();
            let active: f64 = cx_series("dbfault_upstream_cx_active")
                .iter()
                .map(|s| s.1)
                .sum();
            (total >= f64::from(n) && active == 0.0).then_some(())
        },
    );
    let series = cx_series("dbfault_upstream_cx_total");
    let total: f64 = series.iter().map(|s| s.1).sum();
    eprintln!("{} series for {n} distinct upstreams", series.len());
    // Per worker: 20 named series, the rest `other`; two workers share names they both saw.
    assert!(
        series.len() <= 2 * 20 + 1,
        "{} series: {series:?}",
        series.len()
    );
    assert!(series.iter().any(|s| s.0.contains("upstream=\"other\"")));
    assert!(series
        .iter()
        .any(|s| s.0.contains("upstream=\"db0.flood.example.com\"")));
    assert_eq!(total, f64::from(n), "every connection counted once");
}
