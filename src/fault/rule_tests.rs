//! Unit tests of `rule.rs`.

use crate::fault::{ApplyTo, FaultKind};
use crate::plugin::Config;
use std::time::Duration;

fn rules(json: &str) -> Vec<crate::fault::Rule> {
    Config::parse(json.as_bytes()).unwrap().faults
}

fn err(json: &str) -> String {
    Config::parse(json.as_bytes()).unwrap_err().to_string()
}

/// The kind of a one-rule configuration whose kind part is `kind` (`"delay": {...}`).
pub(crate) fn parse_kind(kind: &str) -> FaultKind {
    let json = format!(r#"{{"faults": [{{"name": "r", "match": {{"hosts": ["pg"]}}, {kind}}}]}}"#);
    rules(&json).remove(0).kind
}

/// A plain rule (named `r`, matching host `pg`) with `kind`.
pub(crate) fn rule_with(kind: FaultKind) -> crate::fault::Rule {
    let mut rule =
        rules(r#"{"faults": [{"name": "r", "match": {"hosts": ["pg"]}, "abort": {}}]}"#).remove(0);
    rule.kind = kind;
    rule
}

/// The error for a one-rule configuration whose kind part is `kind`.
pub(crate) fn parse_error(kind: &str) -> String {
    err(&format!(
        r#"{{"faults": [{{"name": "r", "match": {{"hosts": ["pg"]}}, {kind}}}]}}"#
    ))
}

#[test]
fn the_documented_example_parses() {
    let r = rules(
        r#"{
      "metrics": {"enabled": true, "interval": "1s", "maxUpstreams": 256},
      "faults": [{
          "name": "firestore-outage", "enabled": true,
          "match": {"hosts": ["firestore.googleapis.com", "*.db.svc.cluster.local"], "ports": [443]},
          "percentage": 100, "applyTo": "all",
          "window": {"after": "10s", "for": "1m", "every": "5m"},
          "dryRun": false, "abort": {}
      }]}"#,
    );
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r.name, "firestore-outage");
    assert_eq!(r.kind, FaultKind::Abort(crate::fault::abort::Abort));
    assert_eq!(r.apply_to, ApplyTo::All);
    assert_eq!(r.percentage_bp, 10_000);
    assert_eq!(r.matcher.ports, vec![443]);
    let w = r.window.unwrap();
    assert_eq!(
        (w.after, w.duration, w.every),
        (
            Duration::from_secs(10),
            Duration::from_secs(60),
            Some(Duration::from_secs(300))
        )
    );
}

#[test]
fn kinds_and_defaults() {
    let r = rules(
        r#"{"faults": [
          {"name": "a", "match": {"clusters": ["postgres"]}, "blackhole": {}},
          {"name": "b", "match": {"hosts": ["*"]}, "blackhole": {"closeAfter": "30s"}, "percentage": 12.5, "applyTo": "new"},
          {"name": "c", "match": {"hosts": ["redis"]}, "delay": {"latency": "200ms", "jitter": "50ms", "firstOnly": true}},
          {"name": "d", "match": {"hosts": ["redis"]}, "cut": {"afterBytes": 4096}},
          {"name": "e", "match": {"hosts": ["redis"]}, "cut": {"after": "5s"}, "enabled": false, "dryRun": true},
          {"name": "f", "match": {"hosts": ["pg"]}, "abort": {}, "window": {"for": "1m"}}
        ]}"#,
    );
    assert_eq!(r.len(), 6);
    assert!(r[0].enabled && !r[0].dry_run);
    assert_eq!(r[1].percentage_bp, 1_250);
    assert_eq!(r[1].apply_to, ApplyTo::New);
    assert!(
        matches!(r[2].kind, FaultKind::Delay(d) if d.first_only && d.jitter == Duration::from_millis(50))
    );
    assert!(
        matches!(r[3].kind, FaultKind::Cut(c) if c.after_bytes == Some(4096) && c.after.is_none())
    );
    assert!(!r[4].enabled && r[4].dry_run);
    assert_eq!(r[5].window.unwrap().after, Duration::ZERO);
}

#[test]
fn bad_rules_name_field_and_value() {
    let m = r#""match": {"hosts": ["pg"]}"#;
    let cases: Vec<(String, &str)> = vec![
        (format!(r#"{{"faults": [{{{m}, "abort": {{}}}}]}}"#), "faults[0].name: missing"),
        (format!(r#"{{"faults": [{{"name": "", {m}, "abort": {{}}}}]}}"#), r#"faults[0].name: invalid name """#),
        (format!(r#"{{"faults": [{{"name": "Outage", {m}, "abort": {{}}}}]}}"#), r#"invalid name "Outage""#),
        (format!(r#"{{"faults": [{{"name": "a b", {m}, "abort": {{}}}}]}}"#), r#"invalid name "a b""#),
        (
            format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}}}, {{"name": "x", {m}, "abort": {{}}}}]}}"#),
            r#"faults[1].name: duplicate rule name "x""#,
        ),
        (r#"{"faults": [{"name": "x", "abort": {}}]}"#.into(), "faults[0].match: missing"),
        (r#"{"faults": [{"name": "x", "match": {}, "abort": {}}]}"#.into(), r#"faults[0].match: needs "hosts" or "clusters""#),
        (r#"{"faults": [{"name": "x", "match": {"hosts": []}, "abort": {}}]}"#.into(), "faults[0].match.hosts: empty list"),
        (r#"{"faults": [{"name": "x", "match": {"hosts": ["pg", "db*"]}, "abort": {}}]}"#.into(), r#"faults[0].match.hosts[1]: invalid host "db*""#),
        (r#"{"faults": [{"name": "x", "match": {"hosts": ["*.*.x"]}, "abort": {}}]}"#.into(), r#"invalid host "*.*.x""#),
        (r#"{"faults": [{"name": "x", "match": {"hosts": ["pg"], "ports": [0]}, "abort": {}}]}"#.into(), "faults[0].match.ports[0]: 0 is not a port"),
        (r#"{"faults": [{"name": "x", "match": {"hosts": ["pg"], "ports": [70000]}, "abort": {}}]}"#.into(), "70000 is not a port"),
        (r#"{"faults": [{"name": "x", "match": {"host": ["pg"]}, "abort": {}}]}"#.into(), "faults[0].match.host: unknown field `host`"),
        (format!(r#"{{"faults": [{{"name": "x", {m}}}]}}"#), "faults[0]: needs exactly one fault kind of abort, blackhole, delay, cut, error, idle, miss (found: none)"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "delay": {{"latency": "1s"}}}}]}}"#), "(found: abort, delay)"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "explode": {{}}}}]}}"#), "faults[0].explode: unknown field `explode`"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{"now": true}}}}]}}"#), "faults[0].abort.now: unknown field `now`"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "percentage": 101}}]}}"#), "faults[0].percentage: 101 is out of range"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "percentage": -1}}]}}"#), "faults[0].percentage: -1 is out of range"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "percentage": "50"}}]}}"#), "faults[0].percentage: invalid type: string"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "applyTo": "old"}}]}}"#), r#"faults[0].applyTo: "old" is not one of"#),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "enabled": 1}}]}}"#), "faults[0].enabled: invalid type: integer `1`, expected a boolean"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "window": {{"after": "1s"}}}}]}}"#), "faults[0].window.for: missing"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "window": {{"for": "0s"}}}}]}}"#), "faults[0].window.for: invalid duration \"0s\": must be greater than zero"),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "window": {{"for": "1m", "every": "30s"}}}}]}}"#), r#"faults[0].window.every: "30s" must be longer than window.for"#),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "window": {{"for": "1m", "after": "-1s"}}}}]}}"#), r#"faults[0].window.after: invalid duration "-1s""#),
        (format!(r#"{{"faults": [{{"name": "x", {m}, "abort": {{}}, "window": {{"for": "365d"}}}}]}}"#), "faults[0].window.for: \"365d\" is too long"),
        (r#"{"faults": [1]}"#.into(), "faults[0]: invalid type: integer `1`, expected an object"),
    ];
    for (json, want) in cases {
        let got = err(&json);
        assert!(got.contains(want), "{json}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn statement_rules() {
    let r = rules(
        r#"{"faults": [
          {"name": "conflict", "match": {"hosts": ["pg"], "protocol": "postgres", "commands": ["INSERT", "update"], "queryContains": ["Plants"]},
           "percentage": 30, "error": {"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}},
          {"name": "failover", "match": {"hosts": ["pg"], "protocol": "postgres"},
           "error": {"sqlstate": "57P01", "message": "terminating connection due to administrator command", "fatal": true}},
          {"name": "slow", "match": {"hosts": ["pg"], "commands": ["SELECT"]}, "delay": {"latency": "200ms"}},
          {"name": "die", "match": {"hosts": ["pg"], "queryContains": ["DROP TABLE"]}, "abort": {}}
        ]}"#,
    );
    assert!(r[0].is_protocol_rule() && r[0].matcher.is_statement_rule());
    assert_eq!(r[0].matcher.query_contains, ["plants"]);
    assert_eq!(r[0].matcher.commands.len(), 2);
    assert!(r[1].is_protocol_rule() && !r[1].matcher.is_statement_rule());
    assert!(r[2].is_protocol_rule() && r[3].is_protocol_rule());
    let m = &r[0].matcher;
    assert!(m.statement("insert", b"INSERT INTO PLANTS VALUES (1)"));
    assert!(!m.statement("select", b"SELECT * FROM plants"));
    assert!(!m.statement("insert", b"INSERT INTO trees VALUES (1)"));

    let pg = r#""match": {"hosts": ["pg"], "protocol": "postgres""#;
    let e = r#""error": {"sqlstate": "40001", "message": "x"}"#;
    for (json, want) in [
        (
            format!(r#"{{"faults": [{{"name": "x", "match": {{"hosts": ["pg"]}}, {e}}}]}}"#),
            "faults[0].error: needs match.protocol \"postgres\"",
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", "match": {{"hosts": ["pg"], "protocol": "oracle"}}, {e}}}]}}"#
            ),
            r#"faults[0].match.protocol: "oracle" is not a protocol dbfault reads (postgres, mysql, redis)"#,
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", "match": {{"hosts": ["pg"], "protocol": "mysql"}}, {e}}}]}}"#
            ),
            "faults[0].error.errno: missing (a MySQL error has an error number",
        ),
        (
            r#"{"faults": [{"name": "x", "match": {"hosts": ["r"], "protocol": "redis"}, "error": {"errno": 1213, "message": "READONLY x"}}]}"#.to_owned(),
            "faults[0].error.errno: only for MySQL",
        ),
        (
            r#"{"faults": [{"name": "x", "match": {"hosts": ["r"], "protocol": "redis"}, "error": {"sqlstate": "40001", "message": "READONLY x"}}]}"#.to_owned(),
            "faults[0].error.sqlstate: not for Redis",
        ),
        (
            r#"{"faults": [{"name": "x", "match": {"hosts": ["r"], "protocol": "redis"}, "error": {"message": "READONLY x\r\ny"}}]}"#.to_owned(),
            "faults[0].error.message: has a line break",
        ),
        (
            r#"{"faults": [{"name": "x", "match": {"hosts": ["m"], "protocol": "mysql"}, "error": {"errno": 70000, "message": "x"}}]}"#.to_owned(),
            "faults[0].error.errno: not an error number",
        ),
        (
            format!(r#"{{"faults": [{{"name": "x", {pg}, "commands": "INSERT"}}, {e}}}]}}"#),
            "faults[0].match.commands: invalid type: string",
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", {pg}, "commands": ["INSERT INTO"]}}, {e}}}]}}"#
            ),
            r#"faults[0].match.commands[0]: "INSERT INTO" is not a SQL command dbfault recognises"#,
        ),
        (
            format!(r#"{{"faults": [{{"name": "x", {pg}, "commands": []}}, {e}}}]}}"#),
            "faults[0].match.commands: empty list",
        ),
        (
            format!(r#"{{"faults": [{{"name": "x", {pg}, "queryContains": [""]}}, {e}}}]}}"#),
            "faults[0].match.queryContains[0]: 0 bytes",
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", {pg}, "commands": ["SELECT"]}}, "cut": {{"afterBytes": 10}}}}]}}"#
            ),
            "faults[0].cut: not available on a statement rule",
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", {pg}, "commands": ["SELECT"]}}, "blackhole": {{}}}}]}}"#
            ),
            "faults[0].blackhole: not available on a statement rule",
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", {pg}, "commands": ["SELECT"]}}, "delay": {{"latency": "1s", "firstOnly": true}}}}]}}"#
            ),
            "faults[0].delay.firstOnly: not available on a statement rule",
        ),
    ] {
        let got = err(&json);
        assert!(got.contains(want), "{json}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn expiry_and_absolute_windows() {
    let r = rules(
        r#"{"faults": [{"name": "x", "match": {"hosts": ["pg"]}, "abort": {},
            "expiresAt": "2026-11-26T16:00:00+01:00",
            "window": {"start": "2026-11-26T14:30:00Z", "for": "10m", "every": "1h"}}]}"#,
    );
    assert_eq!(r[0].expires_at, Some(1_795_705_200_000_000_000));
    assert_eq!(r[0].window.unwrap().start, Some(1_795_703_400_000_000_000));
    let m = r#""match": {"hosts": ["pg"]}, "abort": {}"#;
    for (json, want) in [
        (
            format!(r#"{{"faults": [{{"name": "x", {m}, "expiresAt": "tomorrow"}}]}}"#),
            r#"faults[0].expiresAt: invalid time "tomorrow": expected RFC 3339"#,
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", {m}, "window": {{"start": "2026-11-26T15:00:00Z", "after": "1m", "for": "1m"}}}}]}}"#
            ),
            "faults[0].window.start: and window.after are exclusive",
        ),
        (
            format!(
                r#"{{"faults": [{{"name": "x", {m}, "window": {{"start": "2026-11-26", "for": "1m"}}}}]}}"#
            ),
            "faults[0].window.start: invalid time",
        ),
    ] {
        let got = err(&json);
        assert!(got.contains(want), "{json}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn too_many_rules() {
    let one = r#"{"name": "r", "match": {"hosts": ["pg"]}, "abort": {}}"#;
    let many: Vec<String> = (0..257)
        .map(|i| one.replace("\"r\"", &format!("\"r{i}\"")))
        .collect();
    let json = format!(r#"{{"faults": [{}]}}"#, many.join(","));
    assert!(err(&json).contains("faults: 257 rules, at most 256"));
}
