//! The observability stack: the docker-compose file, Prometheus config and Grafana dashboard
//! checked statically (no Docker engine here), and a real Prometheus scraping a real Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault::metrics;
use dbfault_testkit::{
    http_get, replace_once, repo, resp, start_on_free_port, wait_for, Envoy, Process, Redis,
    RedisConn, TempDir,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn compose_file_is_valid_and_a_mistake_is_caught() {
    let compose = repo().join("envoy/docker-compose.yaml");
    let (ok, out) = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .args(["config", "-q"]));
    assert!(ok, "{out}");

    let text = fs::read_to_string(&compose).unwrap();
    let bad = repo().join("envoy/.compose-typo-test.yaml");
    fs::write(&bad, text.replacen("network_mode:", "netwrok_mode:", 1)).unwrap();
    let (ok, out) = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&bad)
        .args(["config", "-q"]));
    fs::remove_file(&bad).unwrap();
    assert!(!ok && out.contains("netwrok_mode"), "{out}");

    // The stack runs the Envoy version the tests run, and mounts files that exist.
    assert!(text.contains("image: envoyproxy/envoy:v1.40.0"));
    let (_, resolved) = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .arg("config"));
    let config: Value = serde_yaml_ng::from_str(&resolved).unwrap();
    let services = config["services"].as_object().unwrap();
    for name in [
        "envoy",
        "postgres",
        "plants",
        "firestore",
        "plants-firestore",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "no {name} service");
    }
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume["source"].as_str().or(volume.as_str()).unwrap();
            let source = source.split(':').next().unwrap();
            if source.starts_with('/') && !source.contains("/target/") {
                assert!(
                    std::path::Path::new(source).exists(),
                    "{name} mounts missing {source}"
                );
            }
        }
    }
    let dockerfile = repo().join("envoy/plants.Dockerfile");
    assert!(fs::read_to_string(dockerfile)
        .unwrap()
        .contains("--example plants"));
    // The Firestore app: the file it copies exists, and it reaches the emulator through Envoy's
    // `firestore` listener, whose cluster points at the emulator's port.
    let dockerfile = fs::read_to_string(repo().join("envoy/plants-firestore.Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY examples/plants_firestore.py"));
    assert!(repo().join("examples/plants_firestore.py").exists());
    let envoy_yaml = fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    assert!(envoy_yaml.contains("port_value: 18080") && envoy_yaml.contains("port_value: 8080}"));
    assert_eq!(
        services["plants-firestore"]["environment"]["FIRESTORE_EMULATOR_HOST"],
        "127.0.0.1:18080"
    );
    assert!(services["firestore"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--host-port=127.0.0.1:8080"));
}

#[test]
fn prometheus_config_passes_promtool() {
    let (ok, out) = run(Command::new("promtool")
        .args(["check", "config"])
        .arg(repo().join("envoy/prometheus/prometheus.yml")));
    assert!(ok, "{out}");
}

#[test]
fn dashboard_queries_are_valid_promql_over_metrics_that_exist() {
    let dash: Value = serde_json::from_str(
        &fs::read_to_string(repo().join("envoy/grafana/dashboards/dbfault.json")).unwrap(),
    )
    .unwrap();
    let known: BTreeSet<&str> = [
        metrics::UPSTREAM_CX_TOTAL,
        metrics::UPSTREAM_CX_ACTIVE,
        metrics::UPSTREAM_TX_BYTES_TOTAL,
        metrics::UPSTREAM_RX_BYTES_TOTAL,
        metrics::UPSTREAM_TX_BYTES_PER_SECOND,
        metrics::UPSTREAM_RX_BYTES_PER_SECOND,
        metrics::UPSTREAM_DROPPED_BYTES_TOTAL,
        metrics::FAULTS_INJECTED_TOTAL,
        metrics::FAULT_ACTIVE,
        metrics::requests::UPSTREAM_REQUESTS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_ERRORS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_DURATION_US,
        metrics::requests::UPSTREAM_SESSIONS_TOTAL,
    ]
    .into_iter()
    .collect();
    let mut exprs = Vec::new();
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap().to_owned();
            let names: Vec<String> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("dbfault_"))
                // A histogram's series in Prometheus: <name>_bucket, _sum, _count.
                .map(|w| {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| w.strip_suffix(s).filter(|n| known.contains(n)))
                        .unwrap_or(w)
                        .to_owned()
                })
                .collect();
            assert!(!names.is_empty(), "{expr} reads no dbfault metric");
            for n in names {
                assert!(known.contains(n.as_str()), "{expr}: no metric named {n}");
                used.insert(n);
            }
            exprs.push(expr);
        }
    }
    // What the issue asks the dashboard to show.
    for needed in [
        metrics::UPSTREAM_TX_BYTES_TOTAL,
        metrics::UPSTREAM_RX_BYTES_TOTAL,
        metrics::UPSTREAM_TX_BYTES_PER_SECOND,
        metrics::UPSTREAM_CX_ACTIVE,
        metrics::FAULT_ACTIVE,
        metrics::FAULTS_INJECTED_TOTAL,
        metrics::requests::UPSTREAM_REQUESTS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_ERRORS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_DURATION_US,
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    assert!(exprs.iter().any(|e| e.contains("* 8")), "no bits/s panel");
    // promtool parses every query (as recording rules).
    let dir = TempDir::new("promql");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = dir.path().join("rules.yml");
    fs::write(&file, rules).unwrap();
    let (ok, out) = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert!(ok, "{out}");
    // ...and would refuse a broken one.
    fs::write(&file, "groups:\n  - name: x\n    rules:\n      - record: x:y\n        expr: sum by (upstream (x)\n").unwrap();
    assert!(!run(Command::new("promtool").args(["check", "rules"]).arg(&file)).0);
}

/// The plugin configuration shipped in envoy/dbfault.yaml, read by the crate's own reader.
fn shipped_plugin_config() -> String {
    let path = repo().join("envoy/dbfault.yaml");
    let found =
        dbfault::manifest::single_plugin_config("envoy/dbfault.yaml", &fs::read(path).unwrap())
            .unwrap();
    String::from_utf8(found.bytes).unwrap()
}

struct Prometheus {
    port: u16,
    _process: Process,
    _dir: TempDir,
}

impl Prometheus {
    /// The shipped prometheus.yml, scraping `admin` every second instead of every 5 s.
    fn start(admin: u16) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let shipped = fs::read_to_string(repo().join("envoy/prometheus/prometheus.yml")).unwrap();
        let config = replace_once(&shipped, "127.0.0.1:9901", &format!("127.0.0.1:{admin}"))
            .replace("interval: 5s", "interval: 1s");
        let file = dir.path().join("prometheus.yml");
        fs::write(&file, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let (port, process) = start_on_free_port("prometheus", |port| {
            let out = fs::File::create(&log).unwrap();
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .unwrap();
            let mut process = Process(child);
            match process.wait_ready("Prometheus ready", Duration::from_secs(30), || {
                http_get(port, "/-/ready").is_some_and(|(c, _)| c == 200)
            }) {
                Ok(()) => Some((port, process)),
                Err(status) => {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        text.contains("address already in use"),
                        "prometheus exited ({status}):\n{text}"
                    );
                    None
                }
            }
        });
        Prometheus {
            port,
            _process: process,
            _dir: dir,
        }
    }

    /// An instant query through the HTTP API: the first sample's value, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        assert_eq!(code, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn a_real_prometheus_sees_the_traffic_and_the_toggles() {
    let redis = Redis::start();
    let shipped = shipped_plugin_config();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&shipped)
        .start();
    let prom = Prometheus::start(envoy.admin);

    // Prometheus starts scraping a few seconds after it is ready (its discovery throttle): wait
    // for the first scrape, so that the rate() window below is covered by samples.
    wait_for("Prometheus scraping Envoy", Duration::from_secs(30), || {
        (prom.query(r#"up{job="envoy"}"#) == Some(1.0)).then_some(())
    });

    // Steady traffic: 8 kB SETs at 120 kB/s for 14 s, rate() over the last 10 s of it.
    let port = envoy.redis();
    let writer = thread::spawn(move || {
        let mut c = RedisConn::connect(port);
        let value = vec![b'v'; 8000];
        let frame = resp(&[b"SET", b"k", &value]).len();
        let start = Instant::now();
        let mut sent = 0usize;
        while start.elapsed() < Duration::from_secs(14) {
            assert_eq!(c.cmd(&[b"SET", b"k", &value]), b"+OK\r\n");
            sent += frame;
            if let Some(w) =
                Duration::from_secs_f64(sent as f64 / 120_000.0).checked_sub(start.elapsed())
            {
                thread::sleep(w);
            }
        }
        sent as f64 / start.elapsed().as_secs_f64()
    });
    // The rate() window must lie inside the traffic: wait until dbfault's counter has grown at
    // nine of the ten 1 s scrapes in the last 10 s (it is flushed once per second).
    wait_for(
        "10 s of traffic in Prometheus",
        Duration::from_secs(30),
        || {
            prom.query(r#"changes(dbfault_upstream_tx_bytes_total{upstream="redis"}[10s])"#)
                .filter(|&n| n >= 9.0)
        },
    );
    let ours = prom
        .query(r#"rate(dbfault_upstream_tx_bytes_total{upstream="redis"}[10s])"#)
        .expect("no dbfault series in Prometheus");
    let envoys = prom
        .query(r#"rate(envoy_cluster_upstream_cx_tx_bytes_total{envoy_cluster_name="redis"}[10s])"#)
        .expect("no Envoy cluster series in Prometheus");
    let measured = writer.join().unwrap();
    eprintln!("client {measured:.0} B/s, PromQL rate over dbfault {ours:.0} B/s, over Envoy's own counter {envoys:.0} B/s");
    assert!(
        (ours - measured).abs() <= 0.15 * measured,
        "{ours} vs measured {measured}"
    );
    assert!(
        (ours - envoys).abs() <= 0.15 * envoys,
        "{ours} vs Envoy's {envoys}"
    );

    // fault_active follows a toggle, as Prometheus sees it.
    let active = r#"dbfault_fault_active{fault="redis-slow"}"#;
    wait_for(
        "fault_active 0 in Prometheus",
        Duration::from_secs(10),
        || (prom.query(active) == Some(0.0)).then_some(()),
    );
    let mut config: Value = serde_json::from_str(&shipped).unwrap();
    let rule = config["faults"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "redis-slow")
        .unwrap();
    rule["enabled"] = Value::Bool(true);
    assert!(envoy.push_plugin_config(&config.to_string()));
    wait_for(
        "fault_active 1 in Prometheus",
        Duration::from_secs(10),
        || (prom.query(active) == Some(1.0)).then_some(()),
    );
    assert!(envoy.push_plugin_config(&shipped));
    wait_for(
        "fault_active back to 0 in Prometheus",
        Duration::from_secs(10),
        || (prom.query(active) == Some(0.0)).then_some(()),
    );
}
