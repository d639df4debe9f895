//! What the observability-stack tests (`stack_files.rs`, `prometheus.rs`) share: running the
//! tools, the alert rules and the dashboard's queries.

use dbfault_testkit::{repo, OutputByDeadline, TempDir};
use serde_json::Value;
use std::fs;
use std::process::Command;

pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub const ALERTS: &str = "envoy/prometheus/dbfault-alerts.yml";

pub const ALERT_TESTS: &str = "envoy/prometheus/dbfault-alerts.test.yml";

pub const PROMETHEUS_RULE: &str = "istio/alerts/prometheusrule.yaml";

pub fn yaml_file(path: &str) -> Value {
    serde_yaml_ng::from_str(&fs::read_to_string(repo().join(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `promtool test rules` of the shipped unit tests against `rules` (the text of a rules file).
pub fn promtool_test_rules(rules: &str) -> (bool, String) {
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

/// The dashboard's template variables (besides `datasource`) and the label each filters on:
/// Istio's scrape labels (README, docker-compose, Prometheus and Grafana).
pub const DASHBOARD_VARIABLES: [(&str, &str); 3] = [
    ("namespace", "namespace"),
    ("workload", "service_istio_io_canonical_name"),
    ("pod", "pod"),
];

pub fn dashboard() -> Value {
    serde_json::from_str(
        &fs::read_to_string(repo().join("envoy/grafana/dashboards/dbfault.json")).unwrap(),
    )
    .unwrap()
}

/// Every panel query of the dashboard (rows have none).
pub fn dashboard_queries(dash: &Value) -> Vec<String> {
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
pub fn substitute(expr: &str, value: impl Fn(&str) -> String, rate_interval: &str) -> String {
    let mut out = expr.replace("$__rate_interval", rate_interval);
    for (var, _) in DASHBOARD_VARIABLES {
        out = out.replace(&format!("${var}"), &value(var));
    }
    out
}

/// The dbfault metrics a query reads, each with the matchers in braces after it (`None`: none).
pub fn dbfault_selectors(expr: &str) -> Vec<(&str, Option<&str>)> {
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
pub fn query_problems(expr: &str) -> Vec<String> {
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
