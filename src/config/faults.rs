//! `faults[]`: raw serde form → validated [`Rule`]s.

use super::{parse_duration, ConfigError, Obj};
use crate::fault::blackhole::Blackhole;
use crate::fault::cut::Cut;
use crate::fault::delay::Delay;
use crate::fault::matching::{HostPattern, Match};
use crate::fault::{ApplyTo, FaultKind, Rule};
use crate::schedule::Window;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// More rules than this is a generated config gone wrong; each rule is checked per connection.
pub const MAX_RULES: usize = 256;
/// Longest accepted duration anywhere in a rule.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawFault {
    name: Option<String>,
    enabled: Option<bool>,
    #[serde(rename = "match")]
    matcher: Option<Obj<RawMatch>>,
    percentage: Option<f64>,
    apply_to: Option<String>,
    window: Option<Obj<RawWindow>>,
    dry_run: Option<bool>,
    abort: Option<Obj<RawAbort>>,
    blackhole: Option<Obj<RawBlackhole>>,
    delay: Option<Obj<RawDelay>>,
    cut: Option<Obj<RawCut>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    hosts: Option<Vec<String>>,
    clusters: Option<Vec<String>>,
    ports: Option<Vec<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWindow {
    after: Option<String>,
    #[serde(rename = "for")]
    duration: Option<String>,
    every: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbort {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBlackhole {
    close_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDelay {
    latency: Option<String>,
    jitter: Option<String>,
    first_only: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCut {
    after_bytes: Option<u64>,
    after: Option<String>,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(path, message))
}

fn duration(path: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(path, text)?;
    if d > MAX_DURATION {
        return err(path, format!("{text:?} is too long (at most 30 days)"));
    }
    Ok(d)
}

pub(crate) fn compile(raw: Vec<Obj<RawFault>>) -> Result<Vec<Rule>, ConfigError> {
    if raw.len() > MAX_RULES {
        return err(
            "faults",
            format!("{} rules, at most {MAX_RULES} are allowed", raw.len()),
        );
    }
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, Obj(fault)) in raw.into_iter().enumerate() {
        let at = format!("faults[{i}]");
        let rule = compile_rule(&at, fault)?;
        if !names.insert(rule.name.clone()) {
            return err(
                &format!("{at}.name"),
                format!("duplicate rule name {:?}", rule.name),
            );
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn compile_rule(at: &str, raw: RawFault) -> Result<Rule, ConfigError> {
    let name = match raw.name {
        None => return err(&format!("{at}.name"), "missing (every rule needs a name)"),
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)) =>
        {
            n
        }
        Some(n) => {
            return err(
                &format!("{at}.name"),
                format!("invalid name {n:?}: use 1 to 64 of [a-z0-9._-]"),
            )
        }
    };
    let Some(Obj(matcher)) = raw.matcher else {
        return err(
            &format!("{at}.match"),
            "missing (a rule needs match.hosts or match.clusters)",
        );
    };
    let matcher = compile_match(&format!("{at}.match"), matcher)?;
    let percentage_bp = match raw.percentage {
        None => 10_000,
        Some(p) if (0.0..=100.0).contains(&p) => (p * 100.0).round() as u32,
        Some(p) => {
            return err(
                &format!("{at}.percentage"),
                format!("{p} is out of range (0 to 100)"),
            )
        }
    };
    let apply_to = match raw.apply_to.as_deref() {
        None | Some("all") => ApplyTo::All,
        Some("new") => ApplyTo::New,
        Some(other) => {
            return err(
                &format!("{at}.applyTo"),
                format!("{other:?} is not one of \"all\", \"new\""),
            )
        }
    };
    let window = match raw.window {
        None => None,
        Some(Obj(w)) => Some(compile_window(&format!("{at}.window"), w)?),
    };
    let kind = compile_kind(at, raw.abort, raw.blackhole, raw.delay, raw.cut)?;
    Ok(Rule {
        name,
        enabled: raw.enabled.unwrap_or(true),
        matcher,
        percentage_bp,
        apply_to,
        window,
        dry_run: raw.dry_run.unwrap_or(false),
        kind,
    })
}

fn compile_match(at: &str, raw: RawMatch) -> Result<Match, ConfigError> {
    let mut m = Match::default();
    if let Some(hosts) = raw.hosts {
        if hosts.is_empty() {
            return err(
                &format!("{at}.hosts"),
                "empty list (leave it out or name a host)",
            );
        }
        for (j, host) in hosts.iter().enumerate() {
            match HostPattern::parse(host) {
                Ok(p) => m.hosts.push(p),
                Err(why) => {
                    return err(
                        &format!("{at}.hosts[{j}]"),
                        format!("invalid host {host:?}: {why}"),
                    )
                }
            }
        }
    }
    if let Some(clusters) = raw.clusters {
        if clusters.is_empty() {
            return err(
                &format!("{at}.clusters"),
                "empty list (leave it out or name a cluster)",
            );
        }
        for (j, cluster) in clusters.into_iter().enumerate() {
            if cluster.is_empty() {
                return err(&format!("{at}.clusters[{j}]"), "empty cluster name");
            }
            m.clusters.push(cluster);
        }
    }
    if m.hosts.is_empty() && m.clusters.is_empty() {
        return err(at, "needs \"hosts\" or \"clusters\"");
    }
    if let Some(ports) = raw.ports {
        if ports.is_empty() {
            return err(
                &format!("{at}.ports"),
                "empty list (leave it out to match any port)",
            );
        }
        for (j, port) in ports.into_iter().enumerate() {
            match u16::try_from(port) {
                Ok(p) if p > 0 => m.ports.push(p),
                _ => {
                    return err(
                        &format!("{at}.ports[{j}]"),
                        format!("{port} is not a port (1 to 65535)"),
                    )
                }
            }
        }
    }
    Ok(m)
}

fn compile_window(at: &str, raw: RawWindow) -> Result<Window, ConfigError> {
    // `after` is an offset and may be zero ("0s": from the start); the others are periods.
    let after = match raw.after {
        None => Duration::ZERO,
        Some(text) => match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => d,
            _ => duration(&format!("{at}.after"), &text)?,
        },
    };
    let Some(for_text) = raw.duration else {
        return err(
            &format!("{at}.for"),
            "missing (how long the window stays open)",
        );
    };
    let for_ = duration(&format!("{at}.for"), &for_text)?;
    let every = match raw.every {
        None => None,
        Some(text) => {
            let every = duration(&format!("{at}.every"), &text)?;
            if every <= for_ {
                return err(
                    &format!("{at}.every"),
                    format!("{text:?} must be longer than window.for ({for_text:?})"),
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

fn compile_kind(
    at: &str,
    abort: Option<Obj<RawAbort>>,
    blackhole: Option<Obj<RawBlackhole>>,
    delay: Option<Obj<RawDelay>>,
    cut: Option<Obj<RawCut>>,
) -> Result<FaultKind, ConfigError> {
    let given: Vec<&str> = [
        ("abort", abort.is_some()),
        ("blackhole", blackhole.is_some()),
        ("delay", delay.is_some()),
        ("cut", cut.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    if given.len() != 1 {
        let found = if given.is_empty() {
            "none".to_owned()
        } else {
            given.join(", ")
        };
        return err(
            at,
            format!(
                "needs exactly one fault kind of abort, blackhole, delay, cut (found: {found})"
            ),
        );
    }
    if abort.is_some() {
        return Ok(FaultKind::Abort);
    }
    if let Some(Obj(b)) = blackhole {
        let close_after = match b.close_after {
            None => None,
            Some(text) => Some(duration(&format!("{at}.blackhole.closeAfter"), &text)?),
        };
        return Ok(FaultKind::Blackhole(Blackhole { close_after }));
    }
    if let Some(Obj(d)) = delay {
        let Some(latency_text) = d.latency else {
            return err(&format!("{at}.delay.latency"), "missing");
        };
        let latency = duration(&format!("{at}.delay.latency"), &latency_text)?;
        let jitter = match d.jitter {
            None => Duration::ZERO,
            Some(text) => {
                // Zero jitter is a plain fixed delay.
                let jitter = match humantime::parse_duration(text.trim()) {
                    Ok(d) if d.is_zero() => d,
                    _ => duration(&format!("{at}.delay.jitter"), &text)?,
                };
                if jitter > latency {
                    return err(
                        &format!("{at}.delay.jitter"),
                        format!("{text:?} is larger than the latency ({latency_text:?})"),
                    );
                }
                jitter
            }
        };
        return Ok(FaultKind::Delay(Delay {
            latency,
            jitter,
            first_only: d.first_only.unwrap_or(false),
        }));
    }
    if let Some(Obj(c)) = cut {
        let after = match c.after {
            None => None,
            Some(text) => Some(duration(&format!("{at}.cut.after"), &text)?),
        };
        if c.after_bytes == Some(0) {
            return err(
                &format!("{at}.cut.afterBytes"),
                "0 is out of range (at least 1; use abort to forward nothing)",
            );
        }
        if c.after_bytes.is_none() && after.is_none() {
            return err(&format!("{at}.cut"), "needs afterBytes or after (or both)");
        }
        return Ok(FaultKind::Cut(Cut {
            after_bytes: c.after_bytes,
            after,
        }));
    }
    err(at, "no fault kind")
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
