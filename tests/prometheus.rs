//! A real Prometheus scraping a real Envoy with dbfault: the traffic, the toggles, the alert
//! rules loaded, and every dashboard query answered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::shipped_plugin_config;
use common::stack::*;
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
        // The alert rules it names, next to it.
        fs::copy(repo().join(ALERTS), dir.path().join("dbfault-alerts.yml")).unwrap();
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
        let v = self.api(&format!("/api/v1/query?query={encoded}"))?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// A GET on the HTTP API: its JSON answer (`None` if Prometheus did not answer).
    fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = http_get(self.port, path)?;
        assert_eq!(code, 200, "{path}: {body}");
        Some(serde_json::from_str(&body).unwrap())
    }

    /// The alerting rules Prometheus runs, each with its health after the last evaluation.
    fn alert_rules(&self) -> Vec<(String, String)> {
        let v = self.api("/api/v1/rules?type=alert").unwrap_or_default();
        v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (field("name"), field("health"))
            })
            .collect()
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
    // Every dashboard query runs here too, the variables at All (this Prometheus's series have
    // none of a mesh's labels): the throughput panels show the traffic in bits/s each way, the
    // rollout panel one configuration.
    for expr in dashboard_queries(&dashboard()) {
        let value = prom.query(&substitute(&expr, |_| ".*".to_owned(), "10s"));
        if expr.contains(metrics::UPSTREAM_TX_BYTES_TOTAL) {
            let bits = value.unwrap_or_else(|| panic!("{expr}: no data"));
            assert!((bits / 8.0 - ours).abs() <= 0.15 * ours, "{expr}: {bits}");
        }
        if expr.contains(metrics::UPSTREAM_RX_BYTES_TOTAL) {
            assert!(value.is_some_and(|v| v > 0.0), "{expr}: {value:?}");
        }
        if expr.contains(metrics::CONFIG_INFO) {
            assert_eq!(value, Some(1.0), "{expr}");
        }
    }
    let measured = writer.join().unwrap();
    eprintln!("client {measured:.0} B/s, PromQL rate over dbfault {ours:.0} B/s, over Envoy's own counter {envoys:.0} B/s");

    // The alert rules prometheus.yml names are loaded and evaluate without error.
    let expected: BTreeSet<String> = yaml_file(ALERTS)["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    wait_for("the alert rules evaluated", Duration::from_secs(10), || {
        let rules = prom.alert_rules();
        let names: BTreeSet<String> = rules.iter().map(|(n, _)| n.clone()).collect();
        (names == expected && rules.iter().all(|(_, h)| h == "ok")).then_some(())
    });
    eprintln!("alert rules: {:?}", prom.alert_rules());
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
