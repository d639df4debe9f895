//! The configuration toolkit: the JSON tree (`json`), field-by-field reading that refuses unknown
//! keys and names paths in errors (`fields`), durations, times, SHA-256, [`ConfigError`], and the
//! `metrics` section. The whole plugin configuration is assembled in [`crate::plugin`]; `faults[]`
//! is read by [`crate::fault::rule`] and each kind's own module.
//!
//! Every error names the field path and the bad value, so that the single log line Envoy shows
//! is enough to fix the push: `metrics.interval: invalid duration "fast"`.

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

pub(crate) const METRICS_KEYS: &[&str] = &["enabled", "interval", "maxUpstreams", "requests"];

pub(crate) fn compile_metrics(raw: Option<Fields<'_>>) -> Result<MetricsConfig, ConfigError> {
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
pub(crate) fn json_message(err: &serde_json::Error) -> String {
    match err.classify() {
        serde_json::error::Category::Eof => "not valid JSON: unexpected end of input".to_owned(),
        _ => format!("not valid JSON: {err}"),
    }
}
