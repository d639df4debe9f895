//! The plugin configuration: the JSON Envoy hands to `on_configure` → the validated [`Config`]:
//! the `metrics` section (read by [`crate::config`]) and the rules (read by [`crate::fault`]).

use crate::config::fields::Fields;
use crate::config::{
    compile_metrics, json, json_message, ConfigError, MetricsConfig, MAX_CONFIG_BYTES, METRICS_KEYS,
};
use crate::fault::Rule;

/// The validated configuration the filter runs with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub metrics: MetricsConfig,
    /// `faults[]`, in order: the first active matching rule decides.
    pub faults: Vec<Rule>,
}

impl Config {
    /// Parses the plugin configuration bytes. Empty (or all-whitespace) input means defaults,
    /// which is what Istio sends for a `WasmPlugin` without `pluginConfig`. The error is the
    /// first of [`Config::check`]'s.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::check(bytes).map_err(|mut errors| {
            if errors.is_empty() {
                ConfigError::new("configuration", "invalid")
            } else {
                errors.swap_remove(0)
            }
        })
    }

    /// Parses the plugin configuration bytes, or says everything wrong with them: a size or
    /// syntax error alone; otherwise unknown top-level keys, the `metrics` section's first
    /// error and each rule's first error, in document order.
    pub fn check(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(vec![ConfigError::new(
                "configuration",
                format!(
                    "{} bytes, at most {MAX_CONFIG_BYTES} are accepted",
                    bytes.len()
                ),
            )]);
        }
        let doc = json::parse(bytes)
            .map_err(|err| vec![ConfigError::new("configuration", json_message(&err))])?;
        let mut errors = Vec::new();
        let root = match Fields::of(&doc, "", &["metrics", "faults"]) {
            Ok(root) => root,
            Err(e) => {
                // Go on with what the known keys say.
                errors.push(e);
                Fields::unchecked(&doc).map_err(|e| vec![e])?
            }
        };
        let metrics = root
            .object("metrics", METRICS_KEYS)
            .and_then(compile_metrics)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let faults = crate::fault::rule::parse_all(&root)
            .map_err(|e| errors.extend(e))
            .unwrap_or_default();
        if errors.is_empty() {
            Ok(Config { metrics, faults })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
