//! `dbfault status FILE --prometheus URL`: did every sidecar take the file's configuration? Asks
//! Prometheus for `dbfault_config_info`, `dbfault_fault_active` and
//! `dbfault_faults_injected_total` per pod and compares with the file's configuration id.
//!
//! The assessment ([`assess`]) is pure; the HTTP client is [`super::prometheus`].

use super::command::{print_json, usage_err};
use super::prometheus::{base, query, quoted, range, Base};
use crate::config::digest;
use crate::manifest::read_configs;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub const HELP: &str = "usage: dbfault status FILE --prometheus URL [--namespace NS] [--workload W]
                      [--stale 1m] [--window 5m] [--wait 2m] [--output text|json]

Asks Prometheus which sidecars run FILE's configuration: computes the configuration id of each
configuration in FILE (what `dbfault check` prints), queries dbfault_config_info,
dbfault_fault_active and dbfault_faults_injected_total per pod, and prints
  - the pods that run the file's configuration, those that run another (and its id), and those
    that stopped reporting (a sample in the last hour but none within --stale, default 1m);
  - per rule, the pods where it is active now and what it injected within --window (default 5m).
--namespace and --workload select pods by the `namespace` and `service_istio_io_canonical_name`
labels (as the dashboard does). A pod is named by its `pod` label, else by `instance`.
URL is Prometheus's base URL over plain HTTP, e.g. http://localhost:9090 after
`kubectl -n monitoring port-forward svc/prometheus 9090`.
--wait 2m asks again every 2 s until every reporting pod runs the file's configuration, or gives
up after 2 minutes (a pipeline waiting for a rollout).
Exit status: 0 when every reporting pod (at least one) runs the file's configuration, 1 when not
(or none reports), 2 for usage, an unreadable file or Prometheus not answering.";

/// One pod as Prometheus knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
}

impl Pod {
    fn of(labels: &BTreeMap<String, String>) -> Pod {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let name = match labels.get("pod") {
            Some(p) if !p.is_empty() => p.clone(),
            _ => get("instance"),
        };
        Pod {
            namespace: get("namespace"),
            name,
        }
    }

    fn shown(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// A sample of an instant query: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// What Prometheus said, gathered by [`gather`].
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// `config` of each pod's `dbfault_config_info == 1` within the stale window.
    pub running: Vec<Sample>,
    /// Pods with any `dbfault_config_info` sample in the last hour.
    pub seen: Vec<Sample>,
    /// `dbfault_fault_active` per pod and `fault` within the stale window.
    pub active: Vec<Sample>,
    /// `dbfault_faults_injected_total` per pod and `fault` within the window.
    pub injected: Vec<Sample>,
}

/// Where a pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Runs one of the file's configurations (its id).
    Current(String),
    /// Runs another configuration (its id).
    Other(String),
    /// Reported in the last hour, not within the stale window.
    Stale,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleStatus {
    pub name: String,
    /// In the file's configuration (or only seen in Prometheus).
    pub in_file: bool,
    pub active_on: Vec<Pod>,
    pub injected: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub pods: Vec<(Pod, PodState)>,
    pub rules: Vec<RuleStatus>,
}

impl Report {
    /// Every reporting pod, and at least one, runs the file's configuration.
    pub fn converged(&self) -> bool {
        let reporting = self.pods.iter().filter(|(_, s)| *s != PodState::Stale);
        let mut any = false;
        for (_, s) in reporting {
            if !matches!(s, PodState::Current(_)) {
                return false;
            }
            any = true;
        }
        any
    }

    fn count(&self, f: impl Fn(&PodState) -> bool) -> usize {
        self.pods.iter().filter(|(_, s)| f(s)).count()
    }
}

/// Compares what Prometheus observed with the file's configuration ids and rule names.
pub fn assess(ids: &BTreeSet<String>, rules: &[String], seen: &Observed) -> Report {
    let mut pods: BTreeMap<Pod, PodState> = BTreeMap::new();
    for (labels, _) in &seen.running {
        let config = labels.get("config").cloned().unwrap_or_default();
        let state = if ids.contains(&config) {
            PodState::Current(config)
        } else {
            PodState::Other(config)
        };
        // A pod with two configurations at 1 within the stale window is caught mid-switch (its
        // workers take a push within a tick): the file's one is where it is going.
        let pod = Pod::of(labels);
        match pods.get(&pod) {
            Some(PodState::Current(_)) => {}
            _ => {
                pods.insert(pod, state);
            }
        }
    }
    for (labels, _) in &seen.seen {
        pods.entry(Pod::of(labels)).or_insert(PodState::Stale);
    }
    let reporting: BTreeSet<&Pod> = pods
        .iter()
        .filter(|(_, s)| **s != PodState::Stale)
        .map(|(p, _)| p)
        .collect();
    let mut names: Vec<(String, bool)> = rules.iter().map(|r| (r.clone(), true)).collect();
    for (labels, _) in seen.active.iter().chain(&seen.injected) {
        if let Some(f) = labels.get("fault") {
            if !names.iter().any(|(n, _)| n == f) {
                names.push((f.clone(), false));
            }
        }
    }
    let rules = names
        .into_iter()
        .map(|(name, in_file)| {
            let mine = |l: &BTreeMap<String, String>| l.get("fault") == Some(&name);
            let mut active_on: Vec<Pod> = seen
                .active
                .iter()
                .filter(|(l, v)| mine(l) && *v >= 1.0 && reporting.contains(&Pod::of(l)))
                .map(|(l, _)| Pod::of(l))
                .collect();
            active_on.sort();
            active_on.dedup();
            let injected = seen
                .injected
                .iter()
                .filter(|(l, _)| mine(l))
                .map(|(_, v)| v)
                .sum();
            RuleStatus {
                name,
                in_file,
                active_on,
                injected,
            }
        })
        .collect();
    Report {
        pods: pods.into_iter().collect(),
        rules,
    }
}

struct Selection {
    namespace: Option<String>,
    workload: Option<String>,
    stale: Duration,
    window: Duration,
}

impl Selection {
    fn matchers(&self) -> String {
        let mut m = Vec::new();
        if let Some(ns) = &self.namespace {
            m.push(format!("namespace={}", quoted(ns)));
        }
        if let Some(w) = &self.workload {
            m.push(format!("service_istio_io_canonical_name={}", quoted(w)));
        }
        format!("{{{}}}", m.join(","))
    }
}

/// The four queries.
fn gather(base: &Base, sel: &Selection) -> Result<Observed, String> {
    let m = sel.matchers();
    let by = "namespace, pod, instance";
    let stale = range(sel.stale);
    Ok(Observed {
        running: query(
            base,
            &format!(
                "max by ({by}, config) (last_over_time(dbfault_config_info{m}[{stale}]) == 1)"
            ),
        )?,
        seen: query(
            base,
            &format!("max by ({by}) (max_over_time(dbfault_config_info{m}[1h]))"),
        )?,
        active: query(
            base,
            &format!("max by ({by}, fault) (last_over_time(dbfault_fault_active{m}[{stale}]))"),
        )?,
        // A rule's counter series is born at its first injection, so Prometheus's first sample
        // of it may already count some: `increase` would miss those. A series without a
        // sample a window ago counts whole instead.
        injected: query(
            base,
            &format!(
                "sum by ({by}, fault) ((increase({c}{m}[{w}]) and {c}{m} offset {w}) or {c}{m})",
                c = "dbfault_faults_injected_total",
                w = range(sel.window)
            ),
        )?,
    })
}

fn text(report: &Report, sel: &Selection, ids: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let width = report
        .pods
        .iter()
        .map(|(p, _)| p.shown().len())
        .max()
        .unwrap_or(0);
    for (pod, state) in &report.pods {
        let (id, what) = match state {
            PodState::Current(id) => (id.as_str(), "runs the file's configuration".to_owned()),
            PodState::Other(id) => (id.as_str(), "runs another configuration".to_owned()),
            PodState::Stale => (
                "-",
                format!(
                    "stopped reporting (no sample in the last {})",
                    super::describe::human(sel.stale)
                ),
            ),
        };
        out.push_str(&format!("  {:width$}  {id:12}  {what}\n", pod.shown()));
    }
    if report.pods.is_empty() {
        out.push_str("  no pod reports dbfault_config_info\n");
    }
    out.push_str(&format!(
        "rules (injected within the last {}):\n",
        super::describe::human(sel.window)
    ));
    let reporting = report.count(|s| *s != PodState::Stale);
    for r in &report.rules {
        let active = if r.active_on.is_empty() {
            "active nowhere".to_owned()
        } else {
            let names: Vec<String> = r.active_on.iter().map(Pod::shown).collect();
            format!(
                "active on {} of {reporting} pods ({})",
                r.active_on.len(),
                names.join(", ")
            )
        };
        out.push_str(&format!(
            "  {}{}: {active}; injected {}\n",
            r.name,
            if r.in_file { "" } else { " (not in the file)" },
            r.injected.round() + 0.0
        ));
    }
    let current = report.count(|s| matches!(s, PodState::Current(_)));
    let other = report.count(|s| matches!(s, PodState::Other(_)));
    let stale = report.count(|s| *s == PodState::Stale);
    out.push_str(&if report.converged() {
        format!(
            "converged: all {current} reporting pods run {}",
            ids.join(" or ")
        )
    } else if reporting == 0 {
        "not converged: no pod reports dbfault".to_owned()
    } else {
        format!("not converged: {other} of {reporting} reporting pods run another configuration")
    });
    if stale > 0 {
        out.push_str(&format!("; {stale} stopped reporting"));
    }
    out.push('\n');
    out
}

fn as_json(file: &str, report: &Report, ids: &BTreeSet<String>) -> Value {
    let pods: Vec<Value> = report
        .pods
        .iter()
        .map(|(p, s)| {
            let (state, config) = match s {
                PodState::Current(id) => ("current", Some(id)),
                PodState::Other(id) => ("other", Some(id)),
                PodState::Stale => ("stale", None),
            };
            json!({"namespace": p.namespace, "pod": p.name, "state": state, "config": config})
        })
        .collect();
    let rules: Vec<Value> = report
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "inFile": r.in_file,
                "activeOn": r.active_on.iter().map(Pod::shown).collect::<Vec<_>>(),
                "injected": r.injected,
            })
        })
        .collect();
    json!({
        "file": file,
        "configs": ids,
        "converged": report.converged(),
        "pods": pods,
        "rules": rules,
    })
}

/// `dbfault status ARGS`; the exit status.
pub fn command(args: &[String]) -> i32 {
    let mut file = None;
    let mut url = None;
    let mut sel = Selection {
        namespace: None,
        workload: None,
        stale: Duration::from_secs(60),
        window: Duration::from_secs(300),
    };
    let mut wait = None;
    let mut json_out = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        if !flag.starts_with("--") || flag == "-" {
            if file.replace(a.clone()).is_some() {
                return usage_err(HELP);
            }
            continue;
        }
        let Some(value) = inline.or_else(|| it.next().cloned()) else {
            return usage_err(&format!("dbfault status: {flag} takes a value\n\n{HELP}"));
        };
        let duration = |v: &str| crate::config::parse_duration(flag, v).map_err(|e| e.to_string());
        let set = match flag {
            "--prometheus" => {
                url = Some(value);
                Ok(())
            }
            "--namespace" => {
                sel.namespace = Some(value);
                Ok(())
            }
            "--workload" => {
                sel.workload = Some(value);
                Ok(())
            }
            "--stale" => duration(&value).map(|d| sel.stale = d),
            "--window" => duration(&value).map(|d| sel.window = d),
            "--wait" => duration(&value).map(|d| wait = Some(d)),
            "--output" => match value.as_str() {
                "json" | "text" => {
                    json_out = value == "json";
                    Ok(())
                }
                _ => Err("--output takes text or json".to_owned()),
            },
            _ => Err(format!("unknown option {flag}")),
        };
        if let Err(e) = set {
            return usage_err(&format!("dbfault status: {e}\n\n{HELP}"));
        }
    }
    let (Some(file), Some(url)) = (file, url) else {
        return usage_err(HELP);
    };
    let base = match base(&url) {
        Ok(b) => b,
        Err(e) => return usage_err(&format!("dbfault status: {e}")),
    };
    let bytes = match super::command::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{file}: cannot read: {e}");
            return 2;
        }
    };
    let configs = match read_configs(&file, &bytes) {
        Ok(c) => c,
        Err(u) => {
            eprintln!("{}", u.message);
            return 1;
        }
    };
    let ids: BTreeSet<String> = configs
        .iter()
        .map(|c| digest::config_id(&c.bytes))
        .collect();
    let mut rules = Vec::new();
    for c in &configs {
        match crate::plugin::Config::parse(&c.bytes) {
            Ok(config) => {
                for r in config.faults {
                    if !rules.contains(&r.name) {
                        rules.push(r.name);
                    }
                }
            }
            Err(e) => {
                eprintln!("{}: invalid configuration: {e}", c.origin);
                return 1;
            }
        }
    }
    let deadline = wait.map(|w| Instant::now() + w);
    let mut said = String::new();
    loop {
        let observed = match gather(&base, &sel) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("dbfault status: Prometheus at {url}: {e}");
                return 2;
            }
        };
        let report = assess(&ids, &rules, &observed);
        let done = report.converged();
        let waiting = deadline.is_some_and(|d| Instant::now() < d);
        if done || !waiting {
            let header = format!(
                "{file}: configuration {}; pods reporting to {url}{}{}:",
                ids.iter().cloned().collect::<Vec<_>>().join(", "),
                sel.namespace
                    .as_ref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default(),
                sel.workload
                    .as_ref()
                    .map(|w| format!(", workload {w}"))
                    .unwrap_or_default(),
            );
            if json_out {
                print_json(&as_json(&file, &report, &ids));
            } else {
                println!("{header}\n{}", text(&report, &sel, &ids).trim_end());
            }
            return if done { 0 } else { 1 };
        }
        let current = report.count(|s| matches!(s, PodState::Current(_)));
        let reporting = report.count(|s| *s != PodState::Stale);
        let line = format!(
            "waiting: {current} of {reporting} reporting pods run the file's configuration"
        );
        if line != said {
            eprintln!("{line}");
            said = line;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pairs: &[(&str, &str)], v: f64) -> Sample {
        (
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        )
    }

    #[test]
    fn pods_are_current_other_or_stale_and_rules_are_counted_per_pod() {
        let ids: BTreeSet<String> = ["aaaaaaaaaaaa".to_owned()].into();
        fn pod(p: &str) -> [(&str, &str); 2] {
            [("namespace", "plants"), ("pod", p)]
        }
        let observed = Observed {
            running: vec![
                sample(&[pod("a")[0], pod("a")[1], ("config", "aaaaaaaaaaaa")], 1.0),
                sample(&[pod("b")[0], pod("b")[1], ("config", "bbbbbbbbbbbb")], 1.0),
            ],
            seen: vec![
                sample(&pod("a"), 1.0),
                sample(&pod("b"), 1.0),
                sample(&pod("c"), 1.0),
            ],
            active: vec![
                sample(&[pod("a")[0], pod("a")[1], ("fault", "pg-down")], 1.0),
                sample(&[pod("b")[0], pod("b")[1], ("fault", "pg-down")], 0.0),
                sample(&[pod("b")[0], pod("b")[1], ("fault", "old-rule")], 1.0),
                // A stale pod's last word does not count as active.
                sample(&[pod("c")[0], pod("c")[1], ("fault", "pg-down")], 1.0),
            ],
            injected: vec![
                sample(&[pod("a")[0], pod("a")[1], ("fault", "pg-down")], 7.0),
                sample(&[pod("c")[0], pod("c")[1], ("fault", "pg-down")], 2.0),
            ],
        };
        let r = assess(
            &ids,
            &["pg-down".to_owned(), "redis-ro".to_owned()],
            &observed,
        );
        let states: Vec<(&str, &PodState)> =
            r.pods.iter().map(|(p, s)| (p.name.as_str(), s)).collect();
        assert_eq!(
            states,
            [
                ("a", &PodState::Current("aaaaaaaaaaaa".into())),
                ("b", &PodState::Other("bbbbbbbbbbbb".into())),
                ("c", &PodState::Stale),
            ]
        );
        assert!(!r.converged());
        let rule = |n: &str| r.rules.iter().find(|x| x.name == n).unwrap();
        assert_eq!(rule("pg-down").active_on.len(), 1);
        assert_eq!(rule("pg-down").injected, 9.0);
        assert_eq!(rule("redis-ro").active_on.len(), 0);
        assert!(!rule("old-rule").in_file);
        // Only a stale pod left behind besides current ones: converged.
        let mut only = observed.clone();
        only.running.remove(1);
        only.seen.remove(1);
        assert!(assess(&ids, &[], &only).converged());
        // Nobody reporting: not converged.
        assert!(!assess(&ids, &[], &Observed::default()).converged());
    }

    #[test]
    fn urls_and_queries() {
        assert_eq!(
            base("http://localhost:9090").unwrap(),
            Base {
                host: "localhost".into(),
                port: 9090,
                prefix: String::new()
            }
        );
        assert_eq!(
            base("prom.example/prometheus/").unwrap().prefix,
            "/prometheus"
        );
        assert_eq!(base("http://prom").unwrap().port, 80);
        assert!(base("https://prom").unwrap_err().contains("https"));
        assert!(base("http://:90").is_err());
        let sel = Selection {
            namespace: Some("pl\"ants".into()),
            workload: Some("plants".into()),
            stale: Duration::from_secs(60),
            window: Duration::from_millis(300),
        };
        assert_eq!(
            sel.matchers(),
            r#"{namespace="pl\"ants",service_istio_io_canonical_name="plants"}"#
        );
        assert_eq!(range(sel.window), "1s");
        assert_eq!(super::super::prometheus::encode("a b{}"), "a%20b%7B%7D");
    }
}
