//! Plugin configuration: the JSON Envoy hands to `on_configure`, parsed in two steps.
//!
//! 1. serde reads the raw, camelCase form and refuses unknown keys;
//! 2. [`Config::parse`] validates values into the runtime form.
//!
//! Every error names the field path and the bad value, so that the single log line Envoy shows
//! is enough to fix the push: `metrics.interval: invalid duration "fast"`.

use crate::fault::Rule;
use fields::Fields;
use std::fmt;
use std::time::Duration;

/// Shortest and longest accepted `metrics.interval`: the rate gauges are recomputed once per
/// interval, so below 100 ms they would mostly measure timer jitter.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Upper bound for `metrics.maxUpstreams`: each upstream costs six Envoy stats per worker.
pub const MAX_UPSTREAMS_LIMIT: u64 = 10_000;
/// Largest accepted configuration: 256 rules with long host lists fit in a fraction of this.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

mod faults;
mod fields;

pub use fields::quote;

/// The validated configuration the filter runs with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub metrics: MetricsConfig,
    /// `faults[]`, in order: the first active matching rule decides.
    pub faults: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// When false, no series are defined and nothing is counted.
    pub enabled: bool,
    /// How often counters are flushed and the bytes-per-second gauges recomputed.
    pub interval: Duration,
    /// Distinct upstream labels per VM; further upstreams are reported as `other`.
    pub max_upstreams: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            interval: Duration::from_secs(1),
            max_upstreams: 256,
        }
    }
}

/// A configuration mistake: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field (`metrics.interval`), or `configuration` for the whole
    /// document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Parses the plugin configuration bytes. Empty (or all-whitespace) input means defaults,
    /// which is what Istio sends for a `WasmPlugin` without `pluginConfig`.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(
                "configuration",
                format!(
                    "{} bytes, at most {MAX_CONFIG_BYTES} are accepted",
                    bytes.len()
                ),
            ));
        }
        let doc: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|err| ConfigError::new("configuration", json_message(&err)))?;
        let root = Fields::of(&doc, "", &["metrics", "faults"])?;
        let metrics = compile_metrics(root.object("metrics", METRICS_KEYS)?)?;
        let faults = faults::compile(&root)?;
        Ok(Config { metrics, faults })
    }
}

const METRICS_KEYS: &[&str] = &["enabled", "interval", "maxUpstreams"];

fn compile_metrics(raw: Option<Fields<'_>>) -> Result<MetricsConfig, ConfigError> {
    let defaults = MetricsConfig::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let interval = match raw.str("interval")? {
        Some(text) => {
            let interval = parse_duration("metrics.interval", text)?;
            if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
                return Err(ConfigError::new(
                    "metrics.interval",
                    format!("{} is out of range (100ms to 1h)", quote(text)),
                ));
            }
            interval
        }
        None => defaults.interval,
    };
    let max_upstreams = match raw.u64("maxUpstreams")? {
        Some(n) if (1..=MAX_UPSTREAMS_LIMIT).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::new(
                "metrics.maxUpstreams",
                format!("{n} is out of range (1 to {MAX_UPSTREAMS_LIMIT})"),
            ))
        }
        None => defaults.max_upstreams,
    };
    Ok(MetricsConfig {
        enabled: raw.bool("enabled")?.unwrap_or(defaults.enabled),
        interval,
        max_upstreams,
    })
}

/// Parses a duration such as `"250ms"`, `"1s"` or `"1m30s"`. Zero is refused: every duration in
/// the configuration is a period or a delay for which zero would be a mistake.
pub fn parse_duration(path: &str, text: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Err(ConfigError::new(
            path,
            format!(
                "invalid duration {}: must be greater than zero",
                quote(text)
            ),
        )),
        Ok(d) => Ok(d),
        Err(_) => Err(ConfigError::new(
            path,
            format!(
                "invalid duration {} (expected e.g. \"250ms\", \"1s\", \"1m30s\")",
                quote(text)
            ),
        )),
    }
}

/// What a configuration will do, one line per item, in words (for `dbfault-check`).
pub fn describe(config: &Config) -> Vec<String> {
    use crate::fault::matching::HostPattern;
    use crate::fault::{ApplyTo, FaultKind};
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    let m = &config.metrics;
    let mut out = vec![if m.enabled {
        format!(
            "metrics on: interval {}, at most {} upstream labels per worker",
            ms(m.interval),
            m.max_upstreams
        )
    } else {
        "metrics off".to_owned()
    }];
    if config.faults.is_empty() {
        out.push("no fault rules".to_owned());
    }
    for r in &config.faults {
        let kind = match r.kind {
            FaultKind::Abort => "abort (close as soon as the upstream is known)".to_owned(),
            FaultKind::Blackhole(b) => match b.close_after {
                Some(d) => format!("blackhole, closed after {}", ms(d)),
                None => "blackhole (hang until the client gives up)".to_owned(),
            },
            FaultKind::Delay(d) => format!(
                "delay client → database by {} ± {}{}",
                ms(d.latency),
                ms(d.jitter),
                if d.first_only {
                    ", first chunk only"
                } else {
                    ""
                }
            ),
            FaultKind::Cut(c) => {
                let mut parts = Vec::new();
                if let Some(b) = c.after_bytes {
                    parts.push(format!("{b} bytes"));
                }
                if let Some(d) = c.after {
                    parts.push(ms(d));
                }
                format!("cut after {}", parts.join(" or "))
            }
        };
        let hosts: Vec<String> = r
            .matcher
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Any => "*".to_owned(),
                HostPattern::Suffix(s) => format!("*{s}"),
                HostPattern::Exact(e) => e.clone(),
            })
            .collect();
        let mut target = Vec::new();
        if !hosts.is_empty() {
            target.push(format!("hosts {}", hosts.join(", ")));
        }
        if !r.matcher.clusters.is_empty() {
            target.push(format!("clusters {}", r.matcher.clusters.join(", ")));
        }
        if !r.matcher.ports.is_empty() {
            let ports: Vec<String> = r.matcher.ports.iter().map(u16::to_string).collect();
            target.push(format!("ports {}", ports.join(", ")));
        }
        let state = match (r.enabled, r.dry_run) {
            (false, _) => "DISABLED",
            (true, true) => "dry run (counted, traffic untouched)",
            (true, false) => "enabled",
        };
        let when = match r.window {
            None => "whenever enabled".to_owned(),
            Some(w) => format!(
                "from {} after load for {}{}",
                ms(w.after),
                ms(w.duration),
                w.every
                    .map(|e| format!(", every {}", ms(e)))
                    .unwrap_or_default()
            ),
        };
        out.push(format!(
            "rule {}: {kind}; {state}; {}; {}.{:02}% of connections; {}; {when}",
            r.name,
            target.join("; "),
            r.percentage_bp / 100,
            r.percentage_bp % 100,
            match r.apply_to {
                ApplyTo::All => "open and new connections",
                ApplyTo::New => "new connections only",
            }
        ));
    }
    out
}

/// serde_json's syntax errors carry the line and column, which is what helps here.
fn json_message(err: &serde_json::Error) -> String {
    match err.classify() {
        serde_json::error::Category::Eof => "not valid JSON: unexpected end of input".to_owned(),
        _ => format!("not valid JSON: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Config::parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn empty_means_defaults() {
        assert_eq!(Config::parse(b"").unwrap(), Config::default());
        assert_eq!(Config::parse(b"  \n").unwrap(), Config::default());
        assert_eq!(Config::parse(b"{}").unwrap(), Config::default());
        assert_eq!(
            Config::parse(br#"{"metrics":{}}"#).unwrap(),
            Config::default()
        );
        assert_eq!(
            Config::parse(br#"{"metrics":null}"#).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn full_metrics_section() {
        let c = Config::parse(
            br#"{"metrics": {"enabled": false, "interval": "1m30s", "maxUpstreams": 3}}"#,
        )
        .unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                enabled: false,
                interval: Duration::from_secs(90),
                max_upstreams: 3
            }
        );
        let c = Config::parse(br#"{"metrics": {"interval": "250ms"}}"#).unwrap();
        assert_eq!(c.metrics.interval, Duration::from_millis(250));
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let cases = [
            (
                r#"{"metrics": {"interval": "fast"}}"#,
                r#"metrics.interval: invalid duration "fast""#,
            ),
            (
                r#"{"metrics": {"interval": "0s"}}"#,
                "must be greater than zero",
            ),
            (
                r#"{"metrics": {"interval": "10ms"}}"#,
                r#"metrics.interval: "10ms" is out of range"#,
            ),
            (
                r#"{"metrics": {"interval": "2h"}}"#,
                r#"metrics.interval: "2h" is out of range"#,
            ),
            (
                r#"{"metrics": {"interval": 5}}"#,
                "metrics.interval: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"metrics": {"maxUpstreams": 0}}"#,
                "metrics.maxUpstreams: 0 is out of range",
            ),
            (
                r#"{"metrics": {"maxUpstreams": 20000}}"#,
                "metrics.maxUpstreams: 20000 is out of range",
            ),
            (
                r#"{"metrics": {"maxUpstreams": -1}}"#,
                "metrics.maxUpstreams: invalid value: integer `-1`",
            ),
            (
                r#"{"metrics": {"maxUpstreams": 1.5}}"#,
                "metrics.maxUpstreams: invalid type: floating point `1.5`",
            ),
            (
                r#"{"metrics": {"enabled": "yes"}}"#,
                r#"metrics.enabled: invalid type: string "yes", expected a boolean"#,
            ),
            (
                r#"{"metrics": {"intervall": "1s"}}"#,
                "metrics.intervall: unknown field `intervall`",
            ),
            (r#"{"metric": {}}"#, "metric: unknown field `metric`"),
            (
                r#"{"faults": {}}"#,
                "faults: invalid type: map, expected a sequence",
            ),
            (
                r#"{"metrics": []}"#,
                "metrics: invalid type: sequence, expected an object",
            ),
            (
                r#"{"metrics": [true, "1s", 5]}"#,
                "metrics: invalid type: sequence, expected an object",
            ),
            (
                r#"[]"#,
                "configuration: invalid type: sequence, expected an object",
            ),
            (r#""x""#, "configuration: invalid type: string"),
            (r#"{"metrics": {}"#, "configuration: not valid JSON"),
            (
                r#"{} x"#,
                "configuration: not valid JSON: trailing characters",
            ),
            ("\u{1}", "configuration: not valid JSON"),
        ];
        for (json, want) in cases {
            let got = err(json);
            assert!(got.contains(want), "{json}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn the_shipped_ecds_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/dbfault.yaml");
        let found =
            crate::manifest::single_plugin_config(path, &std::fs::read(path).unwrap()).unwrap();
        let c = Config::parse(&found.bytes).unwrap();
        assert_eq!(c.faults.len(), 5);
        assert!(
            c.faults.iter().all(|r| !r.enabled),
            "shipped rules must be off"
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        let e = Config::parse(b"{\"metrics\": {\"interval\": \"\xff\"}}").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }
}
