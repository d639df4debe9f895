//! The observability stack's files checked statically (no Docker engine here): the
//! docker-compose file, the Prometheus configuration and alert rules with their tests, the
//! Operator's PrometheusRule, and the Grafana dashboard's queries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::stack::*;
use dbfault::metrics;
use dbfault_testkit::{replace_once, repo, TempDir};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

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
        metrics::FAULT_FAILED_REQUESTS_TOTAL,
        metrics::FAULT_RECOVERY_MS,
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
