//! The observability stack: the docker-compose file, Prometheus config and Grafana dashboard
//! checked statically (no Docker engine here), and a real Prometheus scraping a real Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::shipped_plugin_config;
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

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
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
    // The mistake is written outside the checkout; its relative paths still resolve from envoy/.
    let tmp = TempDir::new("compose");
    let bad = tmp.path().join("docker-compose.yaml");
    fs::write(&bad, text.replacen("network_mode:", "netwrok_mode:", 1)).unwrap();
    let (ok, out) = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&bad)
        .arg("--project-directory")
        .arg(repo().join("envoy"))
        .args(["config", "-q"]));
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
    // Prometheus gets the alert rules next to its config (prometheus.yml names them relatively).
    let mounts: Vec<&str> = services["prometheus"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["target"]
                .as_str()
                .or_else(|| v.as_str()?.split(':').nth(1))
                .unwrap()
        })
        .collect();
    assert!(
        mounts.contains(&"/etc/prometheus/prometheus.yml")
            && mounts.contains(&"/etc/prometheus/dbfault-alerts.yml"),
        "{mounts:?}"
    );
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

const ALERTS: &str = "envoy/prometheus/dbfault-alerts.yml";
const ALERT_TESTS: &str = "envoy/prometheus/dbfault-alerts.test.yml";
const PROMETHEUS_RULE: &str = "istio/prometheusrule.yaml";

fn yaml_file(path: &str) -> Value {
    serde_yaml_ng::from_str(&fs::read_to_string(repo().join(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `promtool test rules` of the shipped unit tests against `rules` (the text of a rules file).
fn promtool_test_rules(rules: &str) -> (bool, String) {
    let dir = TempDir::new("alerts");
    fs::write(dir.path().join("dbfault-alerts.yml"), rules).unwrap();
    fs::copy(
        repo().join(ALERT_TESTS),
        dir.path().join("dbfault-alerts.test.yml"),
    )
    .unwrap();
    run(Command::new("promtool")
        .args(["test", "rules", "dbfault-alerts.test.yml"])
        .current_dir(dir.path()))
}

#[test]
fn alert_rules_pass_promtool_and_their_tests_catch_a_changed_rule() {
    let (ok, out) = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join(ALERTS)));
    assert!(ok && out.contains("5 rules found"), "{out}");
    let rules = fs::read_to_string(repo().join(ALERTS)).unwrap();
    let (ok, out) = promtool_test_rules(&rules);
    assert!(ok, "{out}");

    // Every alert: a severity, a summary, a description naming its labels, a runbook hint; and
    // tests where it fires and where it does not (a near miss).
    let plain = yaml_file(ALERTS);
    let tests = yaml_file(ALERT_TESTS);
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    let mut names = BTreeSet::new();
    for rule in plain["groups"][0]["rules"].as_array().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        names.insert(name);
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()),
            "{name}"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()),
                "{name}: no {key}"
            );
        }
        assert!(
            rule["annotations"]["description"]
                .as_str()
                .unwrap()
                .contains("$labels."),
            "{name}"
        );
        let of_it = || cases.iter().filter(|c| c["alertname"] == name);
        assert!(
            of_it().any(|c| !c["exp_alerts"].as_array().unwrap().is_empty()),
            "{name} is never tested firing"
        );
        assert!(
            of_it().any(|c| c["exp_alerts"].as_array().unwrap().is_empty()),
            "{name} is never tested not firing"
        );
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "DbfaultConfigRejected",
            "DbfaultConfigsDiverged",
            "DbfaultFaultActiveTooLong",
            "DbfaultGone",
            "DbfaultUpstreamStalled"
        ]
    );

    // The tests fail when a threshold or a condition changes.
    for (from, to) in [
        ("for: 30m", "for: 20m"),
        (
            "(dbfault_config_rejected_total unless dbfault_config_rejected_total offset 10m)",
            "(dbfault_config_rejected_total * 0)",
        ),
        (
            "count by (namespace, service_istio_io_canonical_name, config)",
            "count by (namespace, config)",
        ),
        (
            "(dbfault_upstream_cx_active) > 0",
            "(dbfault_upstream_cx_active) >= 0",
        ),
        (
            "(increase(dbfault_upstream_rx_bytes_total[1h]))\n            > 0",
            "(increase(dbfault_upstream_rx_bytes_total[1h]))\n            >= 0",
        ),
        // Without the pods still being scraped, a workload scaled to zero would fire.
        (
            "count by (namespace, service_istio_io_canonical_name) (up == 1)",
            "count by (namespace, service_istio_io_canonical_name) (max_over_time(dbfault_config_info[1h]))",
        ),
    ] {
        let (ok, out) = promtool_test_rules(&replace_once(&rules, from, to));
        assert!(!ok && out.contains("FAILED"), "{from} → {to}:\n{out}");
    }
}

#[test]
fn the_prometheusrule_holds_the_same_rules_and_is_up_to_date() {
    // Generated from the rules file by scripts/prometheusrule.py: the committed copy is current.
    let script = repo().join("scripts/prometheusrule.py");
    let (ok, out) = run(Command::new("python3").arg(&script).arg("--check"));
    assert!(ok, "{out}");

    let plain = yaml_file(ALERTS);
    let rule = yaml_file(PROMETHEUS_RULE);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert!(rule["metadata"]["name"].is_string());
    assert_eq!(plain.as_object().unwrap().len(), 1, "only groups");
    assert_eq!(rule["spec"].as_object().unwrap().len(), 1, "only groups");
    assert_eq!(rule["spec"]["groups"], plain["groups"]);

    // Its rules, as the operator hands them to Prometheus, pass promtool and the same tests.
    let spec = serde_yaml_ng::to_string(&rule["spec"]).unwrap();
    let dir = TempDir::new("prometheusrule");
    let file = dir.path().join("rules.yml");
    fs::write(&file, &spec).unwrap();
    let (ok, out) = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert!(ok && out.contains("5 rules found"), "{out}");
    let (ok, out) = promtool_test_rules(&spec);
    assert!(ok, "{out}");

    // --check notices a stale copy.
    let stale = dir.path().join("stale.yaml");
    let text = fs::read_to_string(repo().join(PROMETHEUS_RULE)).unwrap();
    fs::write(&stale, replace_once(&text, "for: 30m", "for: 40m")).unwrap();
    let (ok, out) = run(Command::new("python3")
        .arg(&script)
        .args(["--check", "--out"])
        .arg(&stale));
    assert!(!ok && out.contains("out of date"), "{out}");
}

/// The dashboard's template variables (besides `datasource`) and the label each filters on:
/// Istio's scrape labels (README, docker-compose, Prometheus and Grafana).
const DASHBOARD_VARIABLES: [(&str, &str); 3] = [
    ("namespace", "namespace"),
    ("workload", "service_istio_io_canonical_name"),
    ("pod", "pod"),
];

fn dashboard() -> Value {
    serde_json::from_str(
        &fs::read_to_string(repo().join("envoy/grafana/dashboards/dbfault.json")).unwrap(),
    )
    .unwrap()
}

/// Every panel query of the dashboard (rows have none).
fn dashboard_queries(dash: &Value) -> Vec<String> {
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// A panel query as Grafana sends it: each variable replaced by `value(variable)`, and
/// `$__rate_interval` by `rate_interval`.
fn substitute(expr: &str, value: impl Fn(&str) -> String, rate_interval: &str) -> String {
    let mut out = expr.replace("$__rate_interval", rate_interval);
    for (var, _) in DASHBOARD_VARIABLES {
        out = out.replace(&format!("${var}"), &value(var));
    }
    out
}

/// The dbfault metrics a query reads, each with the matchers in braces after it (`None`: none).
fn dbfault_selectors(expr: &str) -> Vec<(&str, Option<&str>)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = expr[at..].find("dbfault_").map(|i| at + i) {
        let end = expr[i..].find(|c| !word(c)).map_or(expr.len(), |n| i + n);
        if expr[..i].ends_with(word) {
            at = end;
            continue;
        }
        let matchers = expr[end..]
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(m, _)| m);
        found.push((&expr[i..end], matchers));
        at = end;
    }
    found
}

/// What is wrong with a panel query: a fixed rate window instead of `$__rate_interval`, a
/// dbfault selector without the variables' matchers, an unknown variable.
fn query_problems(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, _) in expr.match_indices('[') {
        if !expr[i..].starts_with("[$__rate_interval]") {
            problems.push(format!("a fixed window at {:?}", &expr[i..]));
        }
    }
    for (name, matchers) in dbfault_selectors(expr) {
        for (var, label) in DASHBOARD_VARIABLES {
            let matcher = format!("{label}=~\"${var}\"");
            if !matchers.is_some_and(|m| m.contains(&matcher)) {
                problems.push(format!("{name} without {matcher}"));
            }
        }
    }
    for (i, _) in expr.match_indices('$') {
        let var: String = expr[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if var != "__rate_interval" && !DASHBOARD_VARIABLES.iter().any(|(v, _)| *v == var) {
            problems.push(format!("unknown variable ${var}"));
        }
    }
    problems
}

#[test]
fn dashboard_queries_are_valid_promql_over_metrics_that_exist() {
    let dash = dashboard();
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
        metrics::CONFIG_LOADED_TOTAL,
        metrics::CONFIG_INFO,
        metrics::CONFIG_REJECTED_TOTAL,
        metrics::requests::UPSTREAM_REQUESTS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_ERRORS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_DURATION_US,
        metrics::requests::UPSTREAM_SESSIONS_TOTAL,
    ]
    .into_iter()
    .collect();
    // A histogram's series in Prometheus: <name>_bucket, _sum, _count.
    let metric = |w: &str| -> String {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| w.strip_suffix(s).filter(|n| known.contains(n)))
            .unwrap_or(w)
            .to_owned()
    };

    // The variables: a Prometheus data source to choose, and namespace → workload → pod, each
    // listing what sidecars running dbfault report, with All matching anything — also series
    // without the label at all, as on the docker-compose Prometheus.
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let source = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let mut before: Vec<String> = Vec::new();
    for (name, label) in DASHBOARD_VARIABLES {
        let v = var(name);
        assert_eq!(v["type"], "query", "${name}");
        assert_eq!(v["datasource"], source, "${name}");
        assert_eq!(v["includeAll"], true, "${name}");
        assert_eq!(v["allValue"], ".*", "${name}");
        let query = v["definition"].as_str().unwrap();
        assert_eq!(v["query"]["query"], query, "${name}");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(&format!(", {label})")))
            .unwrap_or_else(|| panic!("${name}: {query} does not list {label}"));
        let name_end = inner.find('{').unwrap_or(inner.len());
        assert!(known.contains(&inner[..name_end]), "${name}: {query}");
        // Chained: the pods of the chosen workloads of the chosen namespaces.
        for earlier in &before {
            assert!(
                query.contains(earlier.as_str()),
                "${name}: {query} ignores {earlier}"
            );
        }
        before.push(format!("{label}=~\"${name}\""));
    }

    let mut exprs = Vec::new();
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            assert_eq!(panel["collapsed"], false, "{}", panel["title"]);
            continue;
        }
        assert_eq!(panel["datasource"], source, "panel {}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            assert_eq!(t["datasource"], source, "panel {}", panel["title"]);
            let expr = t["expr"].as_str().unwrap().to_owned();
            let problems = query_problems(&expr);
            assert!(problems.is_empty(), "{expr}: {problems:?}");
            let selectors = dbfault_selectors(&expr);
            assert!(!selectors.is_empty(), "{expr} reads no dbfault metric");
            for (name, _) in selectors {
                let n = metric(name);
                assert!(known.contains(n.as_str()), "{expr}: no metric named {n}");
                used.insert(n);
            }
            exprs.push(expr);
        }
    }
    // The checks above refuse what they should.
    for bad in [
        "sum(rate(dbfault_upstream_cx_total{namespace=~\"$namespace\", service_istio_io_canonical_name=~\"$workload\", pod=~\"$pod\"}[1m]))",
        "sum(rate(dbfault_upstream_cx_total{namespace=~\"$namespace\", pod=~\"$pod\"}[$__rate_interval]))",
        "sum(dbfault_upstream_cx_active)",
        "sum(dbfault_upstream_cx_active{namespace=~\"$namespace\", service_istio_io_canonical_name=~\"$workload\", pod=~\"$pod\", upstream=~\"$db\"})",
    ] {
        assert!(!query_problems(bad).is_empty(), "{bad} passes");
    }
    // What the issue asks the dashboard to show.
    for needed in [
        metrics::UPSTREAM_TX_BYTES_TOTAL,
        metrics::UPSTREAM_RX_BYTES_TOTAL,
        metrics::UPSTREAM_TX_BYTES_PER_SECOND,
        metrics::UPSTREAM_CX_ACTIVE,
        metrics::FAULT_ACTIVE,
        metrics::FAULTS_INJECTED_TOTAL,
        metrics::CONFIG_INFO,
        metrics::CONFIG_REJECTED_TOTAL,
        metrics::requests::UPSTREAM_REQUESTS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_ERRORS_TOTAL,
        metrics::requests::UPSTREAM_REQUEST_DURATION_US,
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    // Bits per second each way (the service graph's edges), and the rollout's convergence.
    for direction in [
        metrics::UPSTREAM_TX_BYTES_TOTAL,
        metrics::UPSTREAM_RX_BYTES_TOTAL,
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| e.contains(direction) && e.ends_with("* 8")),
            "no bits/s panel over {direction}"
        );
    }
    assert!(exprs
        .iter()
        .any(|e| e.starts_with("count by (config) (dbfault_config_info{") && e.ends_with("== 1)")));

    // promtool parses every query (as recording rules), with the variables as Grafana fills them:
    // one value each, several, and All.
    let dir = TempDir::new("promql");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let fillings: [&dyn Fn(&str) -> String; 3] = [
        &|var| format!("{var}-1"),
        &|var| format!("({var}-1|{var}-2)"),
        &|_| ".*".to_owned(),
    ];
    for (i, e) in exprs.iter().enumerate() {
        for (j, fill) in fillings.iter().enumerate() {
            let e = substitute(e, fill, "1m");
            assert!(!e.contains('$'), "{e}");
            rules.push_str(&format!(
                "      - record: dashboard:q{i}_{j}\n        expr: {}\n",
                serde_json::to_string(&e).unwrap()
            ));
        }
    }
    let file = dir.path().join("rules.yml");
    fs::write(&file, rules).unwrap();
    let (ok, out) = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert!(ok, "{out}");
    // ...and would refuse a broken one.
    fs::write(&file, "groups:\n  - name: x\n    rules:\n      - record: x:y\n        expr: sum by (upstream (x)\n").unwrap();
    assert!(!run(Command::new("promtool").args(["check", "rules"]).arg(&file)).0);
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
