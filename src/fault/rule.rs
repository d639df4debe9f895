//! One entry of `faults[]`: the fields every rule has, and their parsing. The kind-specific
//! object (`abort`, `delay`...) is parsed by the kind's own module through the registry in
//! [`crate::fault`]; `match` by [`crate::fault::matching`].

use super::matching::Match;
use super::{FaultKind, KIND_KEYS};
use crate::config::fields::{number_text, push_list, Fields};
use crate::config::{quote, ConfigError};
use crate::protocol::WireProtocol;
use crate::schedule::Window;
use std::time::Duration;

/// More rules than this is a generated config gone wrong; each rule is checked per connection.
pub const MAX_RULES: usize = 256;

/// Keys every rule may have, besides its kind's key.
const COMMON_KEYS: &[&str] = &[
    "name",
    "enabled",
    "match",
    "percentage",
    "applyTo",
    "window",
    "dryRun",
    "expiresAt",
    "sidecarPercentage",
];

/// One validated rule from `faults[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `[a-z0-9._-]+`, unique: the `fault` label and the name in logs.
    pub name: String,
    pub enabled: bool,
    pub matcher: Match,
    /// Share of matching connections affected, in basis points (0 to 10000).
    pub percentage_bp: u32,
    pub apply_to: ApplyTo,
    pub window: Option<Window>,
    /// Counted and logged, traffic untouched.
    pub dry_run: bool,
    /// After this instant (nanoseconds since the Unix epoch) the rule is inactive, whatever else.
    pub expires_at: Option<u64>,
    /// Share of sidecars the rule is active on, in basis points, chosen by a stable hash of the
    /// sidecar's node id and the rule name ([`crate::schedule::sidecar_selected`]).
    pub sidecar_bp: u32,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Connections already open are affected too when the rule becomes active.
    All,
    /// Only connections whose upstream is identified while the rule is active.
    New,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(path, message))
}

/// `faults[]` of the configuration document `root` (absent: no rules).
pub fn parse_all(root: &Fields<'_>) -> Result<Vec<Rule>, ConfigError> {
    let Some(raw) = root.array("faults")? else {
        return Ok(Vec::new());
    };
    if raw.len() > MAX_RULES {
        return err(
            "faults",
            format!("{} rules, at most {MAX_RULES} are allowed", raw.len()),
        );
    }
    let known: Vec<&str> = COMMON_KEYS.iter().chain(KIND_KEYS).copied().collect();
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let at = format!("faults[{i}]");
        let rule = parse(&Fields::of(value, &at, &known)?)?;
        if rules.iter().any(|r| r.name == rule.name) {
            return err(
                &format!("{at}.name"),
                format!("duplicate rule name {}", quote(&rule.name)),
            );
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn parse(raw: &Fields<'_>) -> Result<Rule, ConfigError> {
    let name = match raw.str("name")? {
        None => return err(&raw.path("name"), "missing (every rule needs a name)"),
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                }) =>
        {
            n.to_owned()
        }
        Some(n) => {
            return err(
                &raw.path("name"),
                format!("invalid name {}: use 1 to 64 of [a-z0-9._-]", quote(n)),
            )
        }
    };
    let Some(matcher) = raw.object("match", Match::KEYS)? else {
        return err(
            &raw.path("match"),
            "missing (a rule needs match.hosts or match.clusters)",
        );
    };
    let matcher = Match::parse(&matcher)?;
    let percentage_bp = share(raw, "percentage")?;
    let sidecar_bp = share(raw, "sidecarPercentage")?;
    let apply_to = match raw.str("applyTo")? {
        None | Some("all") => ApplyTo::All,
        Some("new") => ApplyTo::New,
        Some(other) => {
            return err(
                &raw.path("applyTo"),
                format!("{} is not one of \"all\", \"new\"", quote(other)),
            )
        }
    };
    let window = match raw.object("window", &["after", "start", "for", "every"])? {
        None => None,
        Some(w) => Some(parse_window(&w)?),
    };
    let kind = parse_kind(raw)?;
    check_protocol_kind(raw, &matcher, &kind)?;
    Ok(Rule {
        name,
        enabled: raw.bool("enabled")?.unwrap_or(true),
        matcher,
        percentage_bp,
        apply_to,
        window,
        dry_run: raw.bool("dryRun")?.unwrap_or(false),
        expires_at: raw.instant("expiresAt")?,
        sidecar_bp,
        kind,
    })
}

/// A percentage field (0 to 100, default 100) in basis points.
fn share(raw: &Fields<'_>, key: &str) -> Result<u32, ConfigError> {
    match raw.get(key) {
        None => Ok(10_000),
        Some(v) => match (raw.f64(key)?, v) {
            (Some(p), _) if (0.0..=100.0).contains(&p) => Ok((p * 100.0).round() as u32),
            (_, crate::config::json::Value::Number(n)) => err(
                &raw.path(key),
                format!("{} is out of range (0 to 100)", number_text(n)),
            ),
            _ => err(&raw.path(key), "not a number"),
        },
    }
}

/// Kinds that need a protocol, and the kinds a statement rule can have.
fn check_protocol_kind(
    raw: &Fields<'_>,
    matcher: &Match,
    kind: &FaultKind,
) -> Result<(), ConfigError> {
    let key = raw.path(kind.name());
    if let FaultKind::Error(e) = kind {
        match matcher.protocol {
            None => {
                return err(
                    &key,
                    "needs match.protocol \"postgres\", \"mysql\" or \"redis\" (the error is written in the session's protocol)",
                )
            }
            Some(WireProtocol::Postgres) if e.reply.code.is_none() => {
                return err(
                    &format!("{key}.sqlstate"),
                    "missing (a PostgreSQL error has a SQLSTATE, as in \"40001\")",
                )
            }
            Some(WireProtocol::Postgres | WireProtocol::Redis) if e.reply.errno.is_some() => {
                return err(
                    &format!("{key}.errno"),
                    "only for MySQL (PostgreSQL errors are named by their sqlstate, Redis errors by their message's first word)",
                )
            }
            Some(WireProtocol::Postgres | WireProtocol::Redis) if e.reply.rollback.is_some() => {
                return err(
                    &format!("{key}.rollback"),
                    "only for MySQL (a PostgreSQL error always fails the transaction until ROLLBACK; Redis has no transactions to roll back)",
                )
            }
            Some(WireProtocol::Mysql) if e.reply.errno.is_none() => {
                return err(
                    &format!("{key}.errno"),
                    "missing (a MySQL error has an error number, as in 1213)",
                )
            }
            Some(WireProtocol::Redis) if e.reply.code.is_some() => {
                return err(
                    &format!("{key}.sqlstate"),
                    "not for Redis (a Redis error's code is the message's first word, as in \"READONLY You can't write against a read only replica.\")",
                )
            }
            _ => {}
        }
    }
    if matcher.is_statement_rule() {
        match kind {
            FaultKind::Error(_) | FaultKind::Abort(_) => {}
            FaultKind::Delay(d) if !d.first_only => {}
            FaultKind::Delay(_) => {
                return err(
                    &format!("{key}.firstOnly"),
                    "not available on a statement rule (match.commands or match.queryContains): each matching statement is delayed",
                )
            }
            _ => {
                return err(
                    &key,
                    format!(
                        "not available on a statement rule (match.commands or match.queryContains): use error, delay or abort ({} acts on whole connections)",
                        kind.name()
                    ),
                )
            }
        }
    }
    Ok(())
}

impl Rule {
    /// Whether the protocol layer carries the rule out (a statement rule, or an `error`),
    /// rather than the byte-level faults.
    pub fn is_protocol_rule(&self) -> bool {
        self.matcher.is_statement_rule() || matches!(self.kind, FaultKind::Error(_))
    }
}

fn parse_window(raw: &Fields<'_>) -> Result<Window, ConfigError> {
    // `after` is an offset and may be zero ("0s": from the start); the others are periods.
    let after = raw.offset("after")?.unwrap_or(Duration::ZERO);
    let start = raw.instant("start")?;
    if start.is_some() && raw.has("after") {
        return err(
            &raw.path("start"),
            "and window.after are exclusive (start: an instant; after: an offset from the load)",
        );
    }
    let (Some(for_text), Some(for_)) = (raw.str("for")?, raw.duration("for")?) else {
        return err(&raw.path("for"), "missing (how long the window stays open)");
    };
    let every = match (raw.str("every")?, raw.duration("every")?) {
        (Some(text), Some(every)) if every <= for_ => {
            return err(
                &raw.path("every"),
                format!(
                    "{} must be longer than window.for ({})",
                    quote(text),
                    quote(for_text)
                ),
            )
        }
        (_, every) => every,
    };
    Ok(Window {
        after,
        start,
        duration: for_,
        every,
    })
}

/// The one kind key a rule must have, parsed by its kind.
fn parse_kind(raw: &Fields<'_>) -> Result<FaultKind, ConfigError> {
    let given: Vec<&str> = KIND_KEYS.iter().copied().filter(|k| raw.has(k)).collect();
    if let [key] = given.as_slice() {
        if let Some(kind) = FaultKind::parse(key, raw) {
            return kind;
        }
    }
    let mut message = "needs exactly one fault kind of ".to_owned();
    push_list(&mut message, KIND_KEYS);
    message.push_str(" (found: ");
    if given.is_empty() {
        message.push_str("none");
    } else {
        push_list(&mut message, &given);
    }
    message.push(')');
    err(raw.at(), message)
}

#[cfg(test)]
pub(crate) mod tests {
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
        let json =
            format!(r#"{{"faults": [{{"name": "r", "match": {{"hosts": ["pg"]}}, {kind}}}]}}"#);
        rules(&json).remove(0).kind
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
            (format!(r#"{{"faults": [{{"name": "x", {m}}}]}}"#), "faults[0]: needs exactly one fault kind of abort, blackhole, delay, cut, error (found: none)"),
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
}
