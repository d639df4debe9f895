//! The `dbfault` command line: `check`, `list`, `on`, `off`, `show`. Exit status 0 when all is
//! well, 1 when a configuration is invalid (or a rule unknown), 2 for usage errors and files that
//! cannot be read or written.

use super::toggle::{apply_change, ToggleError};
use crate::config::{digest, time};
use crate::fault::Rule;
use crate::manifest::{read_configs, single_plugin_config};
use crate::plugin::Config;
use serde_json::{json, Value};
use std::io::{Read, Write};

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

pub(super) const HELP_TOGGLE: &str = "usage: dbfault on RULE FILE [--for DURATION] [--in-place]
       dbfault off RULE FILE [--in-place]
       dbfault off --all FILE [--in-place]

Sets `enabled` of the rule named RULE in every configuration of FILE that has it, changing nothing
else in the text (comments, key order and quoting stay). Prints the whole document to standard
output, or with --in-place replaces FILE atomically (a watching Envoy sees one complete file).
--for 15m also sets the rule's expiresAt to now + 15 minutes in the same edit: the rule switches
itself off then, even if nobody comes back. off --all switches every rule off (the kill switch).
Refuses an unknown rule name (listing the known ones) and never emits an invalid configuration.
  kubectl get wasmplugin dbfault -n plants -o yaml | dbfault on firestore-outage - | kubectl apply -f -
Exit status: 0 (also when the rule already was so), 1 unknown rule or invalid configuration,
2 usage or unreadable/unwritable file.";

pub(super) const HELP_SHOW: &str = "usage: dbfault show FILE

Prints the one plugin configuration in FILE as the module would receive it, unvalidated (so that
a broken one can be read and fixed). Exit status 1 when FILE holds none or several.";

/// Makes a write to a closed pipe end the process as it ends `cat` or `grep` (`dbfault list F |
/// head`): Rust ignores SIGPIPE, so `println!` would panic on the broken pipe instead.
pub fn die_on_closed_pipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: restores the default disposition of one signal before any thread starts.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}

/// Runs `dbfault ARGS`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{}", super::spec::usage());
        return 2;
    };
    let help = rest.iter().any(|a| a == "-h" || a == "--help");
    match command.as_str() {
        "-h" | "--help" | "help" => {
            println!("{}", super::spec::usage());
            0
        }
        "-V" | "--version" => {
            println!("dbfault {}", env!("CARGO_PKG_VERSION"));
            0
        }
        "check" if help => usage_ok(HELP_CHECK),
        "list" if help => usage_ok(HELP_LIST),
        "on" | "off" if help => usage_ok(HELP_TOGGLE),
        "show" if help => usage_ok(HELP_SHOW),
        "drill" if help => usage_ok(super::drill::HELP),
        "status" if help => usage_ok(super::status::HELP),
        "status" => super::status::command(rest),
        "drill" => super::drill::command(rest),
        "check" => check(rest),
        "list" => list(rest),
        "on" | "off" => switch(command == "on", rest),
        "show" => match rest {
            [file] => show(file),
            _ => usage_err(HELP_SHOW),
        },
        "completion" if help => usage_ok(super::spec::HELP_COMPLETION),
        "man" if help => usage_ok(super::spec::HELP_MAN),
        "completion" => match rest {
            [shell] => match super::spec::completion(shell) {
                Some(script) => write_stdout(&script),
                None => usage_err(super::spec::HELP_COMPLETION),
            },
            _ => usage_err(super::spec::HELP_COMPLETION),
        },
        "man" if rest.is_empty() => write_stdout(&super::spec::man()),
        "man" => usage_err(super::spec::HELP_MAN),
        other => {
            eprintln!(
                "dbfault: unknown command {other:?}\n\n{}",
                super::spec::usage()
            );
            2
        }
    }
}

pub(super) fn usage_ok(text: &str) -> i32 {
    println!("{text}");
    0
}

pub(super) fn usage_err(text: &str) -> i32 {
    eprintln!("{text}");
    2
}

/// Options shared by `check` and `list`: `--output`, `--strict`, and the files.
struct Opts {
    json: bool,
    names: bool,
    strict: bool,
    skip_unknown: bool,
    in_place: bool,
    all: bool,
    for_: Option<String>,
    node_id: Option<String>,
    files: Vec<String>,
}

fn opts(args: &[String], allowed: &[&str]) -> Result<Opts, String> {
    let mut o = Opts {
        json: false,
        names: false,
        strict: false,
        skip_unknown: false,
        in_place: false,
        all: false,
        for_: None,
        node_id: None,
        files: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.split('=').next().unwrap_or_default();
        if a.starts_with("--") && !allowed.contains(&flag) {
            return Err(format!("unknown option {a}"));
        }
        match flag {
            "--strict" => o.strict = true,
            "--skip-unknown" => o.skip_unknown = true,
            "--in-place" => o.in_place = true,
            "--all" => o.all = true,
            "--for" => {
                let value = match a.split_once('=') {
                    Some((_, v)) => Some(v.to_owned()),
                    None => it.next().cloned(),
                };
                o.for_ = Some(value.ok_or("--for takes a duration, e.g. 15m")?);
            }
            "--node-id" => {
                let value = match a.split_once('=') {
                    Some((_, v)) => Some(v.to_owned()),
                    None => it.next().cloned(),
                };
                o.node_id = Some(value.ok_or("--node-id takes a sidecar's node id")?);
            }
            "--output" => {
                let value = match a.split_once('=') {
                    Some((_, v)) => Some(v.to_owned()),
                    None => it.next().cloned(),
                };
                match value.as_deref() {
                    Some("json") => o.json = true,
                    Some("text") => o.json = false,
                    Some("names") => o.names = true,
                    _ => return Err("--output takes text or json (list: or names)".into()),
                }
            }
            _ => o.files.push(a.clone()),
        }
    }
    Ok(o)
}

pub(super) fn read(arg: &str) -> std::io::Result<Vec<u8>> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(arg)
    }
}

/// Why a file gives no configuration: the exit status (2 unreadable, 1 otherwise), what to say,
/// and whether it is well-formed but not dbfault's (`--skip-unknown` passes over it).
struct Unreadable {
    code: i32,
    why: String,
    foreign: bool,
}

/// The plugin configurations in `file` (see [`read_configs`]).
fn configs_in(file: &str) -> Result<Vec<crate::manifest::PluginConfig>, Unreadable> {
    let text = read(file).map_err(|e| Unreadable {
        code: 2,
        why: format!("{file}: cannot read: {e}"),
        foreign: false,
    })?;
    read_configs(file, &text).map_err(|u| Unreadable {
        code: 1,
        why: if u.message.starts_with(file) {
            u.message
        } else {
            format!("{file}: {}", u.message)
        },
        foreign: u.foreign,
    })
}

pub(super) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(super) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

fn check(args: &[String]) -> i32 {
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

fn list(args: &[String]) -> i32 {
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

fn switch(on: bool, args: &[String]) -> i32 {
    let o = match opts(args, &super::spec::flags(if on { "on" } else { "off" })) {
        Ok(o) => o,
        Err(e) => return usage_err(&format!("dbfault: {e}\n\n{HELP_TOGGLE}")),
    };
    let (rule, file) = match (o.all, o.files.as_slice()) {
        (false, [rule, file]) => (Some(rule.clone()), file),
        (true, [file]) => (None, file),
        _ => return usage_err(HELP_TOGGLE),
    };
    if o.in_place && file.as_str() == "-" {
        return usage_err("dbfault: --in-place needs a file, not standard input");
    }
    // `--for`: expiresAt is now + the duration, to the second (RFC 3339 as the configuration
    // writes it), so that the rule switches itself off even if nobody comes back.
    let expires_at = match o
        .for_
        .as_deref()
        .map(|d| crate::config::parse_duration("--for", d))
    {
        None => None,
        Some(Ok(d)) => {
            let secs = now_nanos() / 1_000_000_000 + d.as_secs() + u64::from(d.subsec_nanos() > 0);
            Some(time::format(secs.saturating_mul(1_000_000_000)))
        }
        Some(Err(e)) => return usage_err(&format!("dbfault: {e}\n\n{HELP_TOGGLE}")),
    };
    let text = match read_text(file) {
        Ok(t) => t,
        Err(status) => return status,
    };
    // What the file holds, read as `check` reads it: a syntax error is said the same way
    // (FILE:LINE:COLUMN), and a file that is not dbfault's is named as such.
    if let Err(u) = read_configs(file, text.as_bytes()) {
        eprintln!("{}", u.message);
        return 1;
    }
    let change = super::toggle::Change {
        rule: rule.clone(),
        on,
        expires_at: expires_at.clone(),
    };
    let rule = rule.unwrap_or_else(|| "every rule".to_owned());
    let done = match apply_change(file, &text, &change) {
        Ok(t) => t,
        Err(ToggleError::Unknown(_)) if change.rule.is_none() => {
            eprintln!("{file}: no rules to switch off");
            return 1;
        }
        Err(ToggleError::Unknown(known)) => {
            eprintln!(
                "{file}: no rule named {rule:?} (rules: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            return 1;
        }
        Err(ToggleError::Invalid(e)) => {
            eprintln!("{e}");
            return 1;
        }
    };
    // Switched on without --for, a rule whose expiresAt has passed would not act: say so.
    if on && expires_at.is_none() {
        if let Ok(configs) = read_configs(file, done.text.as_bytes()) {
            let now = now_nanos();
            for c in configs {
                let Ok(config) = Config::parse(&c.bytes) else {
                    continue;
                };
                for r in config
                    .faults
                    .iter()
                    .filter(|r| Some(&r.name) == change.rule.as_ref())
                {
                    if let Some(at) = r.expires_at.filter(|at| *at <= now) {
                        eprintln!(
                            "{}: warning: {} expired at {}: it will not act (switch it on with --for 30m to give it a new expiry)",
                            c.origin,
                            r.name,
                            time::format(at)
                        );
                    }
                }
            }
        }
    }
    let word = if on { "on" } else { "off" };
    for origin in &done.unchanged {
        eprintln!("{origin}: {rule} already {word}");
    }
    if o.in_place {
        if done.changed.is_empty() {
            return 0;
        }
        if let Err(e) = write_atomic(file, &done.text) {
            eprintln!("{file}: cannot write: {e}");
            return 2;
        }
        let until = expires_at
            .map(|at| format!(" until {at}"))
            .unwrap_or_default();
        for origin in &done.changed {
            println!("{origin}: {rule} {word}{until}");
        }
        return 0;
    }
    write_stdout(&done.text)
}

/// A file's text (`-`: standard input); the exit status when it cannot be read (2) or is not
/// UTF-8 text (1: invalid input).
pub(super) fn read_text(file: &str) -> Result<String, i32> {
    match read(file).map(String::from_utf8) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(_)) => {
            eprintln!("{file}: not UTF-8 text");
            Err(1)
        }
        Err(e) => {
            eprintln!("{file}: cannot read: {e}");
            Err(2)
        }
    }
}

/// Writes a whole document to standard output; the exit status.
pub(super) fn write_stdout(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dbfault: cannot write: {e}");
            2
        }
    }
}

/// Replaces `path` by a complete new file (a temporary file beside it, then a rename), keeping
/// its permissions: a watcher (Envoy's ECDS file watch) never sees half a file.
pub(super) fn write_atomic(path: &str, text: &str) -> std::io::Result<()> {
    let target = std::path::Path::new(path);
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.dbfault-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(target) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `show FILE`: the configuration as found, then one newline.
fn show(file: &str) -> i32 {
    let text = match read(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: cannot read: {e}");
            return 2;
        }
    };
    match single_plugin_config(file, &text) {
        Ok(found) => {
            let mut out = std::io::stdout().lock();
            match out
                .write_all(&found.bytes)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
            {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("dbfault: cannot write: {e}");
                    2
                }
            }
        }
        Err(why) if why.starts_with(file) => {
            eprintln!("{why}");
            1
        }
        Err(why) => {
            eprintln!("{file}: {why}");
            1
        }
    }
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

    #[test]
    fn options_are_checked() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(
            opts(&s(&["--output", "json", "f"]), &["--output"])
                .unwrap()
                .json
        );
        assert!(
            opts(&s(&["--output=json", "f"]), &["--output"])
                .unwrap()
                .json
        );
        assert!(opts(&s(&["--output", "xml"]), &["--output"]).is_err());
        assert!(opts(&s(&["--strict"]), &["--output"]).is_err());
        assert_eq!(main(&s(&["frobnicate"])), 2);
        assert_eq!(main(&s(&["on", "only-one-arg"])), 2);
        assert_eq!(main(&s(&["list", "--help"])), 0);
    }
}
