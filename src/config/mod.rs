//! Plugin configuration: the JSON Envoy hands to `on_configure` → the validated [`Config`].
//!
//! `serde_json` parses the document into a `Value`; [`fields::Fields`] then reads it object by
//! object, refusing unknown keys. This module reads `metrics`; `faults[]` is read by
//! [`crate::fault::rule`] and each kind's own module.
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

pub mod digest;
mod duration;
pub mod fields;
pub mod json;
pub mod time;

pub use fields::{parse_duration, quote};

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
    /// Whether connections are read as their database protocol (PostgreSQL so far) for the
    /// request metrics. Off: their bytes are never read.
    pub requests: bool,
}

impl MetricsConfig {
    pub const DEFAULT: MetricsConfig = MetricsConfig {
        enabled: true,
        interval: Duration::from_secs(1),
        max_upstreams: 256,
        requests: true,
    };
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig::DEFAULT
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
        let doc = json::parse(bytes)
            .map_err(|err| ConfigError::new("configuration", json_message(&err)))?;
        let root = Fields::of(&doc, "", &["metrics", "faults"])?;
        let metrics = compile_metrics(root.object("metrics", METRICS_KEYS)?)?;
        let faults = crate::fault::rule::parse_all(&root)?;
        Ok(Config { metrics, faults })
    }
}

const METRICS_KEYS: &[&str] = &["enabled", "interval", "maxUpstreams", "requests"];

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
        requests: raw.bool("requests")?.unwrap_or(defaults.requests),
    })
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
            br#"{"metrics": {"enabled": false, "interval": "1m30s", "maxUpstreams": 3, "requests": false}}"#,
        )
        .unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                enabled: false,
                interval: Duration::from_secs(90),
                max_upstreams: 3,
                requests: false,
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
        assert_eq!(c.faults.len(), 10);
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
