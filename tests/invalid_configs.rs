//! Every kind of configuration mistake is refused with one line naming the field and the bad
//! value, by the parser the module runs (`Config::parse`). A sample also goes through a real
//! Envoy in tests/telemetry.rs and tests/faults.rs (startup and ECDS updates).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault::plugin::Config;
use dbfault_testkit::{wait_for, Envoy, Redis, RedisConn};

const M: &str = r#""match": {"hosts": ["pg"]}"#;

fn rule(body: &str) -> String {
    format!(r#"{{"faults": [{{"name": "r", {M}, {body}}}]}}"#)
}

fn bare_rule(fields: &str) -> String {
    format!(r#"{{"faults": [{{{fields}}}]}}"#)
}

/// (what is wrong, configuration, text the one error line must contain).
fn cases() -> Vec<(&'static str, Vec<u8>, String)> {
    let mut v: Vec<(&'static str, Vec<u8>, String)> = Vec::new();
    let mut add = |what: &'static str, cfg: String, want: &str| {
        v.push((what, cfg.into_bytes(), want.to_owned()))
    };
    // Wrong types, every level.
    add(
        "root is an array",
        "[]".into(),
        "configuration: invalid type: sequence, expected an object",
    );
    add(
        "root is a string",
        r#""metrics""#.into(),
        "configuration: invalid type: string \"metrics\"",
    );
    add(
        "metrics is an array",
        r#"{"metrics": []}"#.into(),
        "metrics: invalid type: sequence, expected an object",
    );
    add(
        "metrics.enabled is a string",
        r#"{"metrics": {"enabled": "yes"}}"#.into(),
        "metrics.enabled: invalid type: string \"yes\", expected a boolean",
    );
    add(
        "metrics.interval is a number",
        r#"{"metrics": {"interval": 5}}"#.into(),
        "metrics.interval: invalid type: integer `5`, expected a string",
    );
    add(
        "maxUpstreams is a float",
        r#"{"metrics": {"maxUpstreams": 1.5}}"#.into(),
        "metrics.maxUpstreams: invalid type: floating point `1.5`, expected an integer",
    );
    add(
        "faults is an object",
        r#"{"faults": {}}"#.into(),
        "faults: invalid type: map, expected a sequence",
    );
    add(
        "a rule is a number",
        r#"{"faults": [7]}"#.into(),
        "faults[0]: invalid type: integer `7`, expected an object",
    );
    add(
        "hosts is a string",
        rule(r#""abort": {}"#).replace(r#"["pg"]"#, r#""pg""#),
        "faults[0].match.hosts: invalid type: string \"pg\", expected a sequence",
    );
    add(
        "a host is a number",
        rule(r#""abort": {}"#).replace(r#"["pg"]"#, "[5432]"),
        "faults[0].match.hosts[0]: invalid type: integer `5432`, expected a string",
    );
    add(
        "percentage is a string",
        rule(r#""abort": {}, "percentage": "50""#),
        "faults[0].percentage: invalid type: string \"50\", expected a number",
    );
    add(
        "dryRun is a number",
        rule(r#""abort": {}, "dryRun": 1"#),
        "faults[0].dryRun: invalid type: integer `1`, expected a boolean",
    );
    add(
        "window is a string",
        rule(r#""abort": {}, "window": "10s""#),
        "faults[0].window: invalid type: string \"10s\", expected an object",
    );
    add(
        "abort is true",
        rule(r#""abort": true"#),
        "faults[0].abort: invalid type: boolean `true`, expected an object",
    );
    add(
        "latency is a number",
        rule(r#""delay": {"latency": 200}"#),
        "faults[0].delay.latency: invalid type: integer `200`, expected a string",
    );
    // Unknown keys, every level.
    add(
        "unknown top-level key",
        r#"{"metric": {}}"#.into(),
        "metric: unknown field `metric`",
    );
    add(
        "unknown metrics key",
        r#"{"metrics": {"intervall": "1s"}}"#.into(),
        "metrics.intervall: unknown field `intervall`",
    );
    add(
        "unknown rule key",
        rule(r#""abort": {}, "percent": 5"#),
        "faults[0].percent: unknown field `percent`",
    );
    add(
        "unknown match key",
        rule(r#""abort": {}"#).replace(r#""hosts""#, r#""host""#),
        "faults[0].match.host: unknown field `host`",
    );
    add(
        "unknown window key",
        rule(r#""abort": {}, "window": {"for": "1m", "evry": "5m"}"#),
        "faults[0].window.evry: unknown field `evry`",
    );
    add(
        "unknown abort key",
        rule(r#""abort": {"now": true}"#),
        "faults[0].abort.now: unknown field `now`",
    );
    add(
        "unknown blackhole key",
        rule(r#""blackhole": {"timeout": "1s"}"#),
        "faults[0].blackhole.timeout: unknown field `timeout`",
    );
    add(
        "unknown delay key",
        rule(r#""delay": {"latency": "1s", "jiter": "1ms"}"#),
        "faults[0].delay.jiter: unknown field `jiter`",
    );
    add(
        "unknown cut key",
        rule(r#""cut": {"bytes": 10}"#),
        "faults[0].cut.bytes: unknown field `bytes`",
    );
    // Found by `make fuzz`: a key with control characters used to break the one-line error.
    add(
        "key with a newline",
        r#"{"metrics": {"inter\nval": "1s"}}"#.into(),
        "metrics.inter\\u{a}val: unknown field `inter\\u{a}val`",
    );
    add(
        "unknown fault kind",
        rule(r#""explode": {}"#),
        "faults[0].explode: unknown field `explode`",
    );
    // Bad durations.
    add(
        "word for a duration",
        r#"{"metrics": {"interval": "fast"}}"#.into(),
        "metrics.interval: invalid duration \"fast\"",
    );
    add(
        "duration without unit",
        rule(r#""delay": {"latency": "200"}"#),
        "faults[0].delay.latency: invalid duration \"200\"",
    );
    add(
        "negative duration",
        rule(r#""abort": {}, "window": {"for": "-1s"}"#),
        "faults[0].window.for: invalid duration \"-1s\"",
    );
    add(
        "zero duration",
        rule(r#""blackhole": {"closeAfter": "0s"}"#),
        "faults[0].blackhole.closeAfter: invalid duration \"0s\": must be greater than zero",
    );
    add(
        "interval too short",
        r#"{"metrics": {"interval": "10ms"}}"#.into(),
        "metrics.interval: \"10ms\" is out of range",
    );
    add(
        "absurdly long duration",
        rule(r#""cut": {"after": "99999999999999h"}"#),
        "faults[0].cut.after:",
    );
    add(
        "every not longer than for",
        rule(r#""abort": {}, "window": {"for": "1m", "every": "1m"}"#),
        "faults[0].window.every: \"1m\" must be longer than window.for",
    );
    add(
        "jitter above latency",
        rule(r#""delay": {"latency": "10ms", "jitter": "11ms"}"#),
        "faults[0].delay.jitter: \"11ms\" is larger than the latency",
    );
    // Bad wildcards and names.
    add(
        "wildcard in the middle",
        rule(r#""abort": {}"#).replace(r#"["pg"]"#, r#"["db.*.svc"]"#),
        "faults[0].match.hosts[0]: invalid host \"db.*.svc\"",
    );
    add(
        "trailing wildcard",
        rule(r#""abort": {}"#).replace(r#"["pg"]"#, r#"["db*"]"#),
        "faults[0].match.hosts[0]: invalid host \"db*\"",
    );
    add(
        "empty host",
        rule(r#""abort": {}"#).replace(r#"["pg"]"#, r#"[""]"#),
        "faults[0].match.hosts[0]: invalid host \"\": empty host",
    );
    add(
        "empty hosts list",
        rule(r#""abort": {}"#).replace(r#"["pg"]"#, "[]"),
        "faults[0].match.hosts: empty list",
    );
    add(
        "empty cluster name",
        rule(r#""abort": {}"#).replace(r#""hosts": ["pg"]"#, r#""clusters": [""]"#),
        "faults[0].match.clusters[0]: empty cluster name",
    );
    add(
        "match names nothing",
        rule(r#""abort": {}"#).replace(r#"{"hosts": ["pg"]}"#, r#"{"ports": [5432]}"#),
        "faults[0].match: needs \"hosts\" or \"clusters\"",
    );
    add(
        "missing match",
        bare_rule(r#""name": "r", "abort": {}"#),
        "faults[0].match: missing",
    );
    add(
        "empty name",
        bare_rule(&format!(r#""name": "", {M}, "abort": {{}}"#)),
        "faults[0].name: invalid name \"\"",
    );
    add(
        "missing name",
        bare_rule(&format!(r#"{M}, "abort": {{}}"#)),
        "faults[0].name: missing",
    );
    add(
        "uppercase name",
        bare_rule(&format!(r#""name": "Outage", {M}, "abort": {{}}"#)),
        "faults[0].name: invalid name \"Outage\"",
    );
    add(
        "duplicate names",
        format!(
            r#"{{"faults": [{{"name": "x", {M}, "abort": {{}}}}, {{"name": "x", {M}, "abort": {{}}}}]}}"#
        ),
        "faults[1].name: duplicate rule name \"x\"",
    );
    // Fault kinds.
    add("two fault kinds", rule(r#""abort": {}, "blackhole": {}"#), "faults[0]: needs exactly one fault kind of abort, blackhole, delay, cut, error, idle, miss (found: abort, blackhole)");
    add("no fault kind", rule(r#""enabled": true"#), "(found: none)");
    add(
        "delay without latency",
        rule(r#""delay": {}"#),
        "faults[0].delay.latency: missing",
    );
    add(
        "cut with neither limit",
        rule(r#""cut": {}"#),
        "faults[0].cut: needs afterBytes or after",
    );
    add(
        "cut after zero bytes",
        rule(r#""cut": {"afterBytes": 0}"#),
        "faults[0].cut.afterBytes: 0 is out of range",
    );
    // Statement rules and the error kind (PostgreSQL).
    add(
        "error without match.protocol",
        rule(r#""error": {"sqlstate": "40001", "message": "m"}"#),
        "faults[0].error: needs match.protocol \"postgres\"",
    );
    add(
        "four-character SQLSTATE",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["pg"], "protocol": "postgres"}, "error": {"sqlstate": "4000", "message": "m"}"#,
        ),
        "faults[0].error.sqlstate: \"4000\" is not a SQLSTATE",
    );
    add(
        "error message with a newline",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["pg"], "protocol": "postgres"}, "error": {"sqlstate": "40001", "message": "a\nb"}"#,
        ),
        "faults[0].error.message: has a line break",
    );
    add(
        "commands not a list of words",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["pg"], "commands": ["INSERT INTO"]}, "abort": {}"#,
        ),
        "faults[0].match.commands[0]: \"INSERT INTO\" is not a SQL command",
    );
    add(
        "unknown protocol",
        bare_rule(r#""name": "r", "match": {"hosts": ["pg"], "protocol": "oracle"}, "abort": {}"#),
        "faults[0].match.protocol: \"oracle\" is not a protocol dbfault reads",
    );
    add(
        "miss without redis",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["pg"], "protocol": "postgres", "commands": ["SELECT"]}, "miss": {}"#,
        ),
        "faults[0].miss: needs match.protocol \"redis\"",
    );
    add(
        "miss on a command without a missing answer",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["r"], "protocol": "redis", "commands": ["GET", "INCR"]}, "miss": {}"#,
        ),
        "faults[0].match.commands: \"incr\" has no answer for a missing key",
    );
    add(
        "idle without after",
        bare_rule(r#""name": "r", "match": {"hosts": ["r"]}, "idle": {"mode": "close"}"#),
        "faults[0].idle.after: missing",
    );
    add(
        "unknown access",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["r"], "protocol": "redis", "access": "writes"}, "error": {"message": "READONLY x"}"#,
        ),
        "faults[0].match.access: \"writes\" is not an access",
    );
    add(
        "access without a protocol",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["pg"], "access": "write"}, "error": {"sqlstate": "25006", "message": "x"}"#,
        ),
        "faults[0].match.access: needs match.protocol",
    );
    add(
        "cut on a statement rule",
        bare_rule(
            r#""name": "r", "match": {"hosts": ["pg"], "commands": ["SELECT"]}, "cut": {"afterBytes": 1}"#,
        ),
        "faults[0].cut: not available on a statement rule",
    );
    add(
        "expiresAt not RFC 3339",
        rule(r#""abort": {}, "expiresAt": "tomorrow 5pm""#),
        "faults[0].expiresAt: invalid time \"tomorrow 5pm\": expected RFC 3339",
    );
    add(
        "window.start with window.after",
        rule(
            r#""abort": {}, "window": {"start": "2026-11-26T15:00:00Z", "after": "1m", "for": "1m"}"#,
        ),
        "faults[0].window.start: and window.after are exclusive",
    );
    // Out-of-range and huge numbers.
    add(
        "percentage above 100",
        rule(r#""abort": {}, "percentage": 100.5"#),
        "faults[0].percentage: 100.5 is out of range (0 to 100)",
    );
    add(
        "negative percentage",
        rule(r#""abort": {}, "percentage": -3"#),
        "faults[0].percentage: -3 is out of range",
    );
    add(
        "maxUpstreams zero",
        r#"{"metrics": {"maxUpstreams": 0}}"#.into(),
        "metrics.maxUpstreams: 0 is out of range",
    );
    add(
        "maxUpstreams huge",
        r#"{"metrics": {"maxUpstreams": 1e30}}"#.into(),
        "metrics.maxUpstreams: invalid type: floating point `huge`, expected an integer",
    );
    add(
        "negative maxUpstreams",
        r#"{"metrics": {"maxUpstreams": -1}}"#.into(),
        "metrics.maxUpstreams: invalid value: integer `-1`",
    );
    add(
        "port zero",
        rule(r#""abort": {}"#)
            .replace(r#"{"hosts": ["pg"]}"#, r#"{"hosts": ["pg"], "ports": [0]}"#),
        "faults[0].match.ports[0]: 0 is not a port",
    );
    add(
        "port above 65535",
        rule(r#""abort": {}"#).replace(
            r#"{"hosts": ["pg"]}"#,
            r#"{"hosts": ["pg"], "ports": [65536]}"#,
        ),
        "faults[0].match.ports[0]: 65536 is not a port",
    );
    add(
        "afterBytes beyond u64",
        rule(r#""cut": {"afterBytes": 18446744073709551616}"#),
        "faults[0].cut.afterBytes: invalid type: floating point",
    );
    add(
        "applyTo value",
        rule(r#""abort": {}, "applyTo": "old""#),
        "faults[0].applyTo: \"old\" is not one of \"all\", \"new\", \"open\"",
    );
    // Bytes that are not a JSON document.
    add(
        "truncated JSON",
        r#"{"metrics": {}"#.into(),
        "configuration: not valid JSON: unexpected end of input",
    );
    add(
        "trailing garbage",
        "{} x".into(),
        "configuration: not valid JSON: trailing characters",
    );
    add(
        "YAML instead of JSON",
        "metrics:\n  enabled: true\n".into(),
        "configuration: not valid JSON",
    );
    add(
        "single quotes",
        "{'metrics': {}}".into(),
        "configuration: not valid JSON: key must be a string",
    );
    add(
        "comment in JSON",
        "{\"metrics\": {} // on\n}".into(),
        "configuration: not valid JSON",
    );
    add(
        "deeply nested JSON",
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        "configuration: not valid JSON: recursion limit exceeded",
    );
    add(
        "too many rules",
        format!(
            r#"{{"faults": [{}]}}"#,
            (0..257)
                .map(|i| format!(r#"{{"name": "r{i}", {M}, "abort": {{}}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "faults: 257 rules, at most 256",
    );
    add(
        "a 10 MB configuration",
        format!(
            r#"{{"metrics": {{"interval": "1s"}}, "faults": [], "x": "{}"}}"#,
            "a".repeat(10 << 20)
        ),
        "configuration: 10485814 bytes, at most 1048576 are accepted",
    );
    v.push((
        "non-UTF-8 bytes",
        b"{\"metrics\": {\"interval\": \"\xff\xfe\"}}".to_vec(),
        "configuration: not valid JSON".into(),
    ));
    v.push((
        "binary garbage",
        vec![0x00, 0x9f, 0x92, 0x96],
        "configuration: not valid JSON".into(),
    ));
    v.push((
        "a UTF-8 BOM",
        b"\xef\xbb\xbf{}".to_vec(),
        "configuration: not valid JSON".into(),
    ));
    v
}

#[test]
fn every_mistake_is_refused_with_its_field_and_value() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (what, bytes, want) in &cases {
        match Config::parse(bytes) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(err) => {
                let line = err.to_string();
                if !line.contains(want.as_str()) {
                    failures.push(format!("{what}:\n    got:  {line}\n    want: {want}"));
                }
                if line.contains('\n') {
                    failures.push(format!("{what}: the error spans several lines: {line}"));
                }
                if line.len() > 400 {
                    failures.push(format!(
                        "{what}: the error is {} characters long",
                        line.len()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} invalid configurations refused", cases.len());
}

#[test]
fn a_sample_is_rejected_by_a_real_envoy_which_keeps_the_old_rules() {
    let redis = Redis::start();
    let good = r#"{"faults": [{"name": "outage", "match": {"hosts": ["redis"]}, "abort": {}}]}"#;
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(good)
        .start();
    assert!(RedisConn::connect(envoy.redis())
        .try_cmd(&[b"PING"])
        .is_err());
    let sample: Vec<(&str, Vec<u8>, String)> = cases()
        .into_iter()
        .filter(|(what, bytes, _)| {
            // The ECDS file carries the configuration in a YAML string: text only.
            std::str::from_utf8(bytes).is_ok()
                && bytes.len() < 4096
                && [
                    "unknown rule key",
                    "two fault kinds",
                    "bad wildcard",
                    "trailing wildcard",
                    "zero duration",
                    "percentage above 100",
                    "duplicate names",
                    "truncated JSON",
                    "YAML instead of JSON",
                    "metrics.enabled is a string",
                ]
                .contains(what)
        })
        .collect();
    assert!(sample.len() >= 8, "{}", sample.len());
    for (what, bytes, want) in &sample {
        let accepted = envoy.push_plugin_config(std::str::from_utf8(bytes).unwrap());
        assert!(!accepted, "{what}: Envoy accepted it");
        let line = format!("dbfault: invalid configuration: {want}");
        wait_for(
            &format!("{what}: the error in Envoy's log"),
            std::time::Duration::from_secs(5),
            || envoy.log().contains(&line).then_some(()),
        );
        // The previous rules are still in force.
        assert!(
            RedisConn::connect(envoy.redis())
                .try_cmd(&[b"PING"])
                .is_err(),
            "{what}: old rule gone"
        );
    }
    assert_eq!(envoy.fault_active("outage"), Some(1.0));
}
