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
    http_get, replace_once, repo, resp, start_on_free_port, wait_for, Envoy, OutputByDeadline,
    Process, Redis, RedisConn, TempDir,
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
        let shipped = fs::read_to_string(repo().join("envoy/prometheus/prometheus.yml")).unwrap();
        let config = replace_once(&shipped, "127.0.0.1:9901", &format!("127.0.0.1:{admin}"))
            .replace("interval: 5s", "interval: 1s");
        Prometheus::start_with(&config)
    }

    /// Prometheus with the configuration `config` (its rule file beside it).
    fn start_with(config: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
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

/// `dbfault status`: which sidecars run a file's configuration, asked of a real Prometheus
/// scraping several real Envoys labelled as Istio's pods are (`namespace`, `pod`,
/// `service_istio_io_canonical_name`); then `--wait` follows a push to the one left behind.
#[test]
fn status_tells_which_sidecars_run_a_files_configuration() {
    let redis = Redis::start();
    let future = "2100-01-01T00:00:00Z";
    let file_config = format!(
        r#"{{"metrics": {{"interval": "200ms"}}, "faults": [
          {{"name": "redis-down", "match": {{"hosts": ["redis"]}}, "abort": {{}}, "expiresAt": "{future}"}},
          {{"name": "redis-slow", "enabled": false, "match": {{"hosts": ["redis"]}}, "delay": {{"latency": "10ms"}}}}]}}"#
    );
    let other_config =
        file_config.replacen(r#""abort": {}"#, r#""enabled": false, "abort": {}"#, 1);
    let envoy = |config: &str| {
        Envoy::builder()
            .redis(redis.port)
            .plugin_config(config)
            .concurrency(1)
            .start()
    };
    let a = envoy(&file_config);
    let b = envoy(&other_config);
    let c = envoy(&file_config);
    let shop = envoy(&other_config);
    let target = |e: &Envoy, ns: &str, pod: &str, workload: &str| {
        format!(
            "      - targets: [\"127.0.0.1:{}\"]\n        labels: {{namespace: {ns}, pod: {pod}, service_istio_io_canonical_name: {workload}}}\n",
            e.admin
        )
    };
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    static_configs:\n{}{}{}{}",
        target(&a, "plants", "plants-a", "plants"),
        target(&b, "plants", "plants-b", "plants"),
        target(&c, "plants", "plants-c", "plants"),
        target(&shop, "shop", "shop-a", "shop"),
    );
    let prom = Prometheus::start_with(&config);
    // Three connections through sidecar a, each closed by the rule (counted by Envoy itself).
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", a.redis())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = std::io::Write::write_all(&mut s, b"PING\r\n");
        let mut buf = [0u8; 16];
        assert!(matches!(
            std::io::Read::read(&mut s, &mut buf),
            Ok(0) | Err(_)
        ));
    }
    wait_for("a's injections counted", Duration::from_secs(10), || {
        (a.injected("redis", "redis-down") == 3.0).then_some(())
    });
    let dir = TempDir::new("status");
    let file = dir.path().join("plugin.json");
    fs::write(&file, &file_config).unwrap();
    let url = format!("http://127.0.0.1:{}", prom.port);
    // `dbfault status` of the file, for namespace and workload plants, stale after 3 s.
    let status_command = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dbfault"));
        c.args(["status", file.to_str().unwrap(), "--prometheus", &url])
            .args(["--namespace", "plants", "--workload", "plants"])
            .args(["--stale", "3s"])
            .args(extra);
        c
    };
    let status = |extra: &[&str]| {
        let out = status_command(extra).output_by_deadline().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
        )
    };
    // The ids come from `dbfault check`, the injections from Envoy: independent of `status`.
    let id = |config: &str| {
        let out = dbfault_testkit::output_with_input(
            Command::new(env!("CARGO_BIN_EXE_dbfault")).args(["check", "--output", "json", "-"]),
            config.as_bytes(),
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["config"].as_str().unwrap().to_owned()
    };
    let (mine, other) = (id(&file_config), id(&other_config));
    // Every sidecar scraped and its injections in: then sidecar c goes away.
    wait_for(
        "Prometheus scraping the four sidecars",
        Duration::from_secs(30),
        || {
            (prom.query("count(dbfault_config_info == 1)") == Some(4.0)
                && prom.query(r#"sum(dbfault_faults_injected_total{pod="plants-a"})"#) == Some(3.0))
            .then_some(())
        },
    );
    drop(c);
    let (code, out) = wait_for("sidecar c stale", Duration::from_secs(30), || {
        let (code, out) = status(&[]);
        out.contains("stopped reporting (no sample in the last 3s)")
            .then_some((code, out))
    });
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}");
    let line = |pod: &str| {
        out.lines()
            .find(|l| l.contains(pod))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("plants/plants-a").contains(&format!("{mine}  runs the file's configuration")),
        "{out}"
    );
    assert!(
        line("plants/plants-b").contains(&format!("{other}  runs another configuration")),
        "{out}"
    );
    assert!(
        line("plants/plants-c").contains("stopped reporting"),
        "{out}"
    );
    assert!(
        !out.contains("shop"),
        "another namespace and workload are not selected: {out}"
    );
    assert!(
        out.contains("redis-down: active on 1 of 2 pods (plants/plants-a); injected 3"),
        "{out}"
    );
    assert!(
        out.contains("redis-slow: active nowhere; injected 0"),
        "{out}"
    );
    assert!(
        out.contains(
            "not converged: 1 of 2 reporting pods run another configuration; 1 stopped reporting"
        ),
        "{out}"
    );
    // JSON: the same in one shape.
    let (_, json_out) = status(&["--output", "json"]);
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["converged"], false);
    assert_eq!(v["configs"][0], mine.as_str());
    let states: BTreeSet<String> = v["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["pod"].as_str().unwrap(),
                p["state"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        states,
        ["plants-a current", "plants-b other", "plants-c stale"]
            .map(String::from)
            .into()
    );
    // The rollout reaches b while `status --wait` waits for it: pushed once the command has
    // said (on stderr) that it waits for one pod.
    let mut waiter = status_command(&["--wait", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = waiter.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all += &line;
            all.push('\n');
        }
        all
    });
    let said = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("status --wait said nothing within 30 s");
    assert_eq!(
        said, "waiting: 1 of 2 reporting pods run the file's configuration",
        "status --wait's first word"
    );
    assert!(b.push_plugin_config(&file_config));
    let done = dbfault_testkit::finish_by_deadline(waiter, "dbfault status --wait");
    let err = reader.join().unwrap();
    let code = done.status.code().unwrap();
    let out = String::from_utf8(done.stdout).unwrap() + &err;
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("waiting: 1 of 2 reporting pods run the file's configuration"),
        "{out}"
    );
    assert!(
        out.contains(&format!("converged: all 2 reporting pods run {mine}")),
        "{out}"
    );
    assert!(out.contains("redis-down: active on 2 of 2 pods"), "{out}");
    // A Prometheus that does not answer is an error of its own (2), not "not converged".
    drop(prom);
    let (code, out) = status(&[]);
    assert_eq!(code, 2, "{out}");
}
