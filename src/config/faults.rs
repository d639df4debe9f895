//! `faults[]`: raw serde form → validated [`Rule`]s.

use super::fields::{as_str, as_u64, number_text, Fields};
use super::{parse_duration, quote, ConfigError};
use crate::fault::blackhole::Blackhole;
use crate::fault::cut::Cut;
use crate::fault::delay::Delay;
use crate::fault::matching::{HostPattern, Match};
use crate::fault::{ApplyTo, FaultKind, Rule};
use crate::schedule::Window;
use std::collections::HashSet;
use std::time::Duration;

/// More rules than this is a generated config gone wrong; each rule is checked per connection.
pub const MAX_RULES: usize = 256;
/// Longest accepted duration anywhere in a rule.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

const RULE_KEYS: &[&str] = &[
    "name",
    "enabled",
    "match",
    "percentage",
    "applyTo",
    "window",
    "dryRun",
    "abort",
    "blackhole",
    "delay",
    "cut",
];
const KINDS: [&str; 4] = ["abort", "blackhole", "delay", "cut"];

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(path, message))
}

fn duration(path: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(path, text)?;
    if d > MAX_DURATION {
        return err(
            path,
            format!("{} is too long (at most 30 days)", quote(text)),
        );
    }
    Ok(d)
}

/// A duration that may also be zero (`window.after`, `delay.jitter`).
fn offset(path: &str, text: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Ok(d),
        _ => duration(path, text),
    }
}

/// An optional duration field of `fields`, read with `read` (`duration` or `offset`).
fn duration_field(
    fields: &Fields<'_>,
    key: &str,
    read: fn(&str, &str) -> Result<Duration, ConfigError>,
) -> Result<Option<Duration>, ConfigError> {
    fields
        .str(key)?
        .map(|text| read(&fields.path(key), text))
        .transpose()
}

pub(crate) fn compile(root: &Fields<'_>) -> Result<Vec<Rule>, ConfigError> {
    let Some(raw) = root.array("faults")? else {
        return Ok(Vec::new());
    };
    if raw.len() > MAX_RULES {
        return err(
            "faults",
            format!("{} rules, at most {MAX_RULES} are allowed", raw.len()),
        );
    }
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let at = format!("faults[{i}]");
        let rule = compile_rule(&Fields::of(value, &at, RULE_KEYS)?)?;
        if !names.insert(rule.name.clone()) {
            return err(
                &format!("{at}.name"),
                format!("duplicate rule name {}", quote(&rule.name)),
            );
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn compile_rule(raw: &Fields<'_>) -> Result<Rule, ConfigError> {
    let name = match raw.str("name")? {
        None => return err(&raw.path("name"), "missing (every rule needs a name)"),
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)) =>
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
    let Some(matcher) = raw.object("match", &["hosts", "clusters", "ports"])? else {
        return err(
            &raw.path("match"),
            "missing (a rule needs match.hosts or match.clusters)",
        );
    };
    let matcher = compile_match(&matcher)?;
    let percentage_bp = match raw.get("percentage") {
        None => 10_000,
        Some(v) => match (raw.f64("percentage")?, v) {
            (Some(p), _) if (0.0..=100.0).contains(&p) => (p * 100.0).round() as u32,
            (_, serde_json::Value::Number(n)) => {
                return err(
                    &raw.path("percentage"),
                    format!("{} is out of range (0 to 100)", number_text(n)),
                )
            }
            _ => return err(&raw.path("percentage"), "not a number"),
        },
    };
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
    let window = match raw.object("window", &["after", "for", "every"])? {
        None => None,
        Some(w) => Some(compile_window(&w)?),
    };
    let kind = compile_kind(raw)?;
    Ok(Rule {
        name,
        enabled: raw.bool("enabled")?.unwrap_or(true),
        matcher,
        percentage_bp,
        apply_to,
        window,
        dry_run: raw.bool("dryRun")?.unwrap_or(false),
        kind,
    })
}

fn compile_match(raw: &Fields<'_>) -> Result<Match, ConfigError> {
    let mut m = Match::default();
    if let Some(hosts) = raw.array("hosts")? {
        if hosts.is_empty() {
            return err(
                &raw.path("hosts"),
                "empty list (leave it out or name a host)",
            );
        }
        for (j, host) in hosts.iter().enumerate() {
            let at = format!("{}[{j}]", raw.path("hosts"));
            let host = as_str(host, &at)?;
            match HostPattern::parse(host) {
                Ok(p) => m.hosts.push(p),
                Err(why) => return err(&at, format!("invalid host {}: {why}", quote(host))),
            }
        }
    }
    if let Some(clusters) = raw.array("clusters")? {
        if clusters.is_empty() {
            return err(
                &raw.path("clusters"),
                "empty list (leave it out or name a cluster)",
            );
        }
        for (j, cluster) in clusters.iter().enumerate() {
            let at = format!("{}[{j}]", raw.path("clusters"));
            let cluster = as_str(cluster, &at)?;
            if cluster.is_empty() {
                return err(&at, "empty cluster name");
            }
            m.clusters.push(cluster.to_owned());
        }
    }
    if m.hosts.is_empty() && m.clusters.is_empty() {
        return err(&raw.path(""), "needs \"hosts\" or \"clusters\"").map_err(|mut e| {
            e.path = e.path.trim_end_matches('.').to_owned();
            e
        });
    }
    if let Some(ports) = raw.array("ports")? {
        if ports.is_empty() {
            return err(
                &raw.path("ports"),
                "empty list (leave it out to match any port)",
            );
        }
        for (j, port) in ports.iter().enumerate() {
            let at = format!("{}[{j}]", raw.path("ports"));
            let n = as_u64(port, &at)?;
            match u16::try_from(n) {
                Ok(p) if p > 0 => m.ports.push(p),
                _ => return err(&at, format!("{n} is not a port (1 to 65535)")),
            }
        }
    }
    Ok(m)
}

fn compile_window(raw: &Fields<'_>) -> Result<Window, ConfigError> {
    // `after` is an offset and may be zero ("0s": from the start); the others are periods.
    let after = duration_field(raw, "after", offset)?.unwrap_or(Duration::ZERO);
    let Some(for_text) = raw.str("for")? else {
        return err(&raw.path("for"), "missing (how long the window stays open)");
    };
    let for_ = duration(&raw.path("for"), for_text)?;
    let every = match raw.str("every")? {
        None => None,
        Some(text) => {
            let every = duration(&raw.path("every"), text)?;
            if every <= for_ {
                return err(
                    &raw.path("every"),
                    format!(
                        "{} must be longer than window.for ({})",
                        quote(text),
                        quote(for_text)
                    ),
                );
            }
            Some(every)
        }
    };
    Ok(Window {
        after,
        duration: for_,
        every,
    })
}

fn compile_kind(raw: &Fields<'_>) -> Result<FaultKind, ConfigError> {
    let given: Vec<&str> = KINDS.iter().copied().filter(|k| raw.has(k)).collect();
    let [kind] = given.as_slice() else {
        let found = if given.is_empty() {
            "none".to_owned()
        } else {
            given.join(", ")
        };
        let at = raw.path("");
        return err(
            at.trim_end_matches('.'),
            format!(
                "needs exactly one fault kind of abort, blackhole, delay, cut (found: {found})"
            ),
        );
    };
    match *kind {
        "abort" => {
            raw.object("abort", &[])?;
            Ok(FaultKind::Abort)
        }
        "blackhole" => {
            let b = raw.object("blackhole", &["closeAfter"])?;
            let close_after = match &b {
                Some(b) => duration_field(b, "closeAfter", duration)?,
                None => None,
            };
            Ok(FaultKind::Blackhole(Blackhole { close_after }))
        }
        "delay" => {
            let Some(d) = raw.object("delay", &["latency", "jitter", "firstOnly"])? else {
                return err(&raw.path("delay"), "missing");
            };
            let Some(latency_text) = d.str("latency")? else {
                return err(&d.path("latency"), "missing");
            };
            let latency = duration(&d.path("latency"), latency_text)?;
            let jitter = duration_field(&d, "jitter", offset)?.unwrap_or(Duration::ZERO);
            if jitter > latency {
                return err(
                    &d.path("jitter"),
                    format!(
                        "{} is larger than the latency ({})",
                        quote(d.str("jitter")?.unwrap_or_default()),
                        quote(latency_text)
                    ),
                );
            }
            Ok(FaultKind::Delay(Delay {
                latency,
                jitter,
                first_only: d.bool("firstOnly")?.unwrap_or(false),
            }))
        }
        _ => {
            let Some(c) = raw.object("cut", &["afterBytes", "after"])? else {
                return err(&raw.path("cut"), "missing");
            };
            let after = duration_field(&c, "after", duration)?;
            let after_bytes = c.u64("afterBytes")?;
            if after_bytes == Some(0) {
                return err(
                    &c.path("afterBytes"),
                    "0 is out of range (at least 1; use abort to forward nothing)",
                );
            }
            if after_bytes.is_none() && after.is_none() {
                return err(&raw.path("cut"), "needs afterBytes or after (or both)");
            }
            Ok(FaultKind::Cut(Cut { after_bytes, after }))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::fault::{ApplyTo, FaultKind};
    use std::time::Duration;

    fn rules(json: &str) -> Vec<crate::fault::Rule> {
        Config::parse(json.as_bytes()).unwrap().faults
    }

    fn err(json: &str) -> String {
        Config::parse(json.as_bytes()).unwrap_err().to_string()
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
        assert_eq!(r.kind, FaultKind::Abort);
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
            (format!(r#"{{"faults": [{{"name": "x", {m}}}]}}"#), "faults[0]: needs exactly one fault kind of abort, blackhole, delay, cut (found: none)"),
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
            (format!(r#"{{"faults": [{{"name": "x", {m}, "blackhole": {{"closeAfter": "soon"}}}}]}}"#), r#"faults[0].blackhole.closeAfter: invalid duration "soon""#),
            (format!(r#"{{"faults": [{{"name": "x", {m}, "delay": {{}}}}]}}"#), "faults[0].delay.latency: missing"),
            (format!(r#"{{"faults": [{{"name": "x", {m}, "delay": {{"latency": "0ms"}}}}]}}"#), "faults[0].delay.latency: invalid duration \"0ms\": must be greater than zero"),
            (format!(r#"{{"faults": [{{"name": "x", {m}, "delay": {{"latency": "10ms", "jitter": "20ms"}}}}]}}"#), r#"faults[0].delay.jitter: "20ms" is larger than the latency"#),
            (format!(r#"{{"faults": [{{"name": "x", {m}, "cut": {{}}}}]}}"#), "faults[0].cut: needs afterBytes or after"),
            (format!(r#"{{"faults": [{{"name": "x", {m}, "cut": {{"afterBytes": 0}}}}]}}"#), "faults[0].cut.afterBytes: 0 is out of range"),
            (format!(r#"{{"faults": [{{"name": "x", {m}, "cut": {{"afterBytes": -5}}}}]}}"#), "faults[0].cut.afterBytes: invalid value: integer `-5`"),
            (r#"{"faults": [1]}"#.into(), "faults[0]: invalid type: integer `1`, expected an object"),
        ];
        for (json, want) in cases {
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
