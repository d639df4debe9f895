//! `dbfault check` and `dbfault list`: what the configurations in files say and do, read with the
//! module's own parser, without changing anything.

use super::command::{configs_in, now_nanos, opts, print_json, usage_err, Unreadable};
use crate::config::{digest, time};
use crate::fault::Rule;
use crate::plugin::Config;
use serde_json::{json, Value};

pub(super) const HELP_CHECK: &str =
    "usage: dbfault check [--strict] [--skip-unknown] [--output text|json] FILE...

Validates every plugin configuration in the files with the parser the module itself runs, and
says in words what each rule will do. Prints each configuration's id (the `config` label of
dbfault_config_info) and every error it finds (each rule's first), not only the first one.
Warns about enabled rules without expiresAt and rules already expired; with --strict an expired
rule makes the configuration invalid.
A file is read as JSON when it opens with { or [, as YAML otherwise; a syntax error is given as
FILE:LINE:COLUMN. A file that is well-formed but holds no dbfault configuration, WasmPlugin
(also inside a `kind: List`) or ECDS resource is an error, or passed over with --skip-unknown.
--output json prints one list, one object per configuration (or per file that gave none), always
with the keys file, origin, config (null without one), valid, skipped, description, errors and
warnings (lists of strings).
Exit status: 0 valid, 1 invalid (or not dbfault's), 2 usage or unreadable file.";

pub(super) const HELP_LIST: &str =
    "usage: dbfault list [--output text|json|names] [--node-id ID] FILE

Lists the rules of every configuration in FILE: enabled or not, what each does, and whether it is
active now (expiry, absolute windows). A window counted from load (`window.after`) depends on when
each sidecar loaded the configuration and is shown as such. With --node-id (a sidecar's Envoy node
id, e.g. sidecar~10.8.0.7~plants-7d9f.plants~plants.svc.cluster.local), rules whose
sidecarPercentage leaves that sidecar out are shown as `left out`. --output names prints the rule
names only, one per line (for scripts and shell completion).
Exit status: 0, 1 invalid configuration, 2 usage or unreadable file.";

pub(super) fn check(args: &[String]) -> i32 {
    let o = match opts(args, &super::spec::flags("check")) {
        Ok(o) if o.names => return usage_err("dbfault check: --output takes text or json"),
        Ok(o) if !o.files.is_empty() => o,
        Ok(_) => return usage_err(HELP_CHECK),
        Err(e) => return usage_err(&format!("dbfault check: {e}\n\n{HELP_CHECK}")),
    };
    let now = now_nanos();
    let mut status = 0;
    let mut report = Vec::new();
    for file in &o.files {
        let found = match configs_in(file) {
            Ok(f) => f,
            Err(Unreadable { code, why, foreign }) => {
                let skipped = foreign && o.skip_unknown;
                if !skipped {
                    status = status.max(code);
                }
                if o.json {
                    report.push(checked(file, file, None, &[], &[why], &[], skipped));
                } else if skipped {
                    println!("{why}: skipped (--skip-unknown)");
                } else {
                    eprintln!("{why}");
                }
                continue;
            }
        };
        for f in found {
            let id = digest::config_id(&f.bytes);
            let (description, warnings, errors) = match Config::check(&f.bytes) {
                Err(errs) => {
                    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
                    (Vec::new(), Vec::new(), errs)
                }
                Ok(config) => {
                    let (w, e) = expiry_notes(&config.faults, now, o.strict);
                    (super::describe(&config), w, e)
                }
            };
            if !errors.is_empty() {
                status = status.max(1);
            }
            if o.json {
                report.push(checked(
                    file,
                    &f.origin,
                    Some(&id),
                    &description,
                    &errors,
                    &warnings,
                    false,
                ));
                continue;
            }
            match errors.as_slice() {
                [] => println!(
                    "{}: valid (config {id}: the `config` label of dbfault_config_info)",
                    f.origin
                ),
                [one] if description.is_empty() => {
                    println!("{}: invalid configuration: {one}", f.origin);
                }
                many => println!(
                    "{}: invalid configuration ({} error{})",
                    f.origin,
                    many.len(),
                    if many.len() == 1 { "" } else { "s" }
                ),
            }
            let several = errors.len() > 1 || !description.is_empty();
            for e in errors.iter().filter(|_| several) {
                println!("  error: {e}");
            }
            for line in &description {
                println!("  {line}");
            }
            for w in &warnings {
                println!("  warning: {w}");
            }
        }
    }
    if o.json {
        print_json(&Value::Array(report));
    }
    status
}

/// One entry of `check --output json`: the same keys whatever happened.
fn checked(
    file: &str,
    origin: &str,
    config: Option<&str>,
    description: &[String],
    errors: &[String],
    warnings: &[String],
    skipped: bool,
) -> Value {
    json!({
        "file": file,
        "origin": origin,
        "config": config,
        "valid": errors.is_empty() && !skipped,
        "skipped": skipped,
        "description": description,
        "errors": errors,
        "warnings": warnings,
    })
}

/// Warnings (and, with `strict`, errors) about rules that never end or have ended.
fn expiry_notes(rules: &[Rule], now: u64, strict: bool) -> (Vec<String>, Vec<String>) {
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    for rule in rules {
        match rule.expires_at {
            None if rule.enabled => warnings.push(format!(
                "rule {} has no expiresAt: a forgotten fault never ends by itself",
                rule.name
            )),
            // A rule that is off does not act anyway; `on --for` gives it a new expiry.
            Some(at) if at <= now && rule.enabled => {
                let when = time::format(at);
                if strict {
                    errors.push(format!("rule {} expired at {when} (--strict)", rule.name));
                } else {
                    warnings.push(format!(
                        "rule {} expired at {when}: it will not act",
                        rule.name
                    ));
                }
            }
            _ => {}
        }
    }
    (warnings, errors)
}

/// Whether a rule is active at `now`, as far as a file can tell: (state, explanation).
pub fn activity(rule: &Rule, now: u64, node_id: Option<&str>) -> (&'static str, String) {
    if !rule.enabled {
        return ("off", "disabled".into());
    }
    if let Some(node) = node_id {
        if !crate::schedule::sidecar_selected(node, &rule.name, rule.sidecar_bp) {
            return (
                "left out",
                format!("sidecarPercentage leaves out node {node}"),
            );
        }
    }
    if let Some(at) = rule.expires_at.filter(|at| *at <= now) {
        return ("expired", format!("expired at {}", time::format(at)));
    }
    let until = rule
        .expires_at
        .map(|at| format!(" until {}", time::format(at)))
        .unwrap_or_default();
    let Some(w) = rule.window else {
        return ("active", format!("active now{until}"));
    };
    let Some(start) = w.start else {
        return (
            "scheduled",
            "window counted from when each sidecar loaded the configuration".into(),
        );
    };
    // The absolute window's state comes from the schedule the module runs; only the wording
    // is the command's.
    let at = |d: std::time::Duration| time::format(now.saturating_add(crate::schedule::nanos(d)));
    match w.state_at(0, now) {
        (true, Some(left)) => ("active", format!("window open until {}", at(left))),
        (true, None) => ("active", "window open".into()),
        (false, Some(wait)) if now < start => ("inactive", format!("window opens at {}", at(wait))),
        (false, Some(wait)) => ("inactive", format!("window opens again at {}", at(wait))),
        (false, None) => (
            "inactive",
            format!(
                "window closed at {}",
                time::format(start.saturating_add(crate::schedule::nanos(w.duration)))
            ),
        ),
    }
}

pub(super) fn list(args: &[String]) -> i32 {
    let o = match opts(args, &super::spec::flags("list")) {
        Ok(o) if o.files.len() == 1 => o,
        Ok(_) => return usage_err(HELP_LIST),
        Err(e) => return usage_err(&format!("dbfault list: {e}\n\n{HELP_LIST}")),
    };
    let file = o.files.first().map_or("-", String::as_str);
    let found = match configs_in(file) {
        Ok(f) => f,
        Err(u) => {
            eprintln!("{}", u.why);
            return u.code;
        }
    };
    let now = now_nanos();
    let mut status = 0;
    let mut report = Vec::new();
    for f in found {
        let id = digest::config_id(&f.bytes);
        let config = match Config::check(&f.bytes) {
            Ok(c) => c,
            Err(errs) => {
                status = 1;
                let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
                if o.json {
                    report.push(json!({"file": file, "origin": f.origin, "config": id,
                        "valid": false, "errors": errs, "rules": []}));
                } else {
                    println!("{}: invalid configuration: {}", f.origin, errs.join("; "));
                }
                continue;
            }
        };
        if o.names {
            for r in &config.faults {
                println!("{}", r.name);
            }
            continue;
        }
        let rules: Vec<Value> = config
            .faults
            .iter()
            .map(|r| {
                let (state, why) = activity(r, now, o.node_id.as_deref());
                let what = super::describe::rule(r);
                let what = what
                    .strip_prefix(&format!("rule {}: ", r.name))
                    .unwrap_or(&what)
                    .to_owned();
                json!({
                    "name": r.name,
                    "enabled": r.enabled,
                    "dryRun": r.dry_run,
                    "kind": r.kind.name(),
                    "state": state,
                    "detail": why,
                    "expiresAt": r.expires_at.map(time::format),
                    "does": what,
                })
            })
            .collect();
        if o.json {
            report.push(json!({"file": file, "origin": f.origin, "config": id,
                "valid": true, "errors": [], "rules": rules}));
            continue;
        }
        println!("{} (config {id})", f.origin);
        if rules.is_empty() {
            println!("  no rules");
        }
        let width = config
            .faults
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        for r in &rules {
            let s = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let state = s("state");
            // The description already says DISABLED; other states say why in words.
            let why = if state == "off" {
                String::new()
            } else {
                format!("  ({})", s("detail"))
            };
            println!("  {:width$}  {state:9}  {}{why}", s("name"), s("does"));
        }
    }
    if o.json {
        print_json(&Value::Array(report));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(extra: &str) -> Rule {
        let c = format!(
            r#"{{"faults": [{{"name": "r", "match": {{"hosts": ["h"]}}, "abort": {{}}{extra}}}]}}"#
        );
        Config::parse(c.as_bytes()).unwrap().faults.remove(0)
    }

    const T0: u64 = 1_800_000_000_000_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn activity_follows_expiry_and_absolute_windows() {
        assert_eq!(activity(&rule(r#", "enabled": false"#), T0, None).0, "off");
        assert_eq!(activity(&rule(""), T0, None).0, "active");
        let start = time::format(T0 + 60 * S);
        let w = rule(&format!(
            r#", "window": {{"start": "{start}", "for": "10s", "every": "1m"}}"#
        ));
        assert_eq!(
            activity(&w, T0, None),
            ("inactive", format!("window opens at {start}"))
        );
        assert_eq!(
            activity(&w, T0 + 65 * S, None),
            (
                "active",
                format!("window open until {}", time::format(T0 + 70 * S))
            )
        );
        assert_eq!(
            activity(&w, T0 + 75 * S, None),
            (
                "inactive",
                format!("window opens again at {}", time::format(T0 + 120 * S))
            )
        );
        let once = rule(&format!(
            r#", "window": {{"start": "{start}", "for": "10s"}}"#
        ));
        assert_eq!(activity(&once, T0 + 80 * S, None).0, "inactive");
        assert_eq!(
            activity(
                &rule(r#", "window": {"after": "5s", "for": "10s"}"#),
                T0,
                None
            )
            .0,
            "scheduled"
        );
        let exp = rule(&format!(r#", "expiresAt": "{}""#, time::format(T0)));
        assert_eq!(activity(&exp, T0, None).0, "expired");
        assert_eq!(activity(&exp, T0 - 1, None).0, "active");
    }
}
