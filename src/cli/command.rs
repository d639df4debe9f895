//! The `dbfault` command line: `check`, `list`, `on`, `off`, `show`. Exit status 0 when all is
//! well, 1 when a configuration is invalid (or a rule unknown), 2 for usage errors and files that
//! cannot be read or written.

use super::toggle::{apply_change, ToggleError};
use crate::config::time;
use crate::manifest::{read_configs, single_plugin_config};
use crate::plugin::Config;
use serde_json::Value;
use std::io::{Read, Write};

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
        "check" if help => usage_ok(super::inspect::HELP_CHECK),
        "list" if help => usage_ok(super::inspect::HELP_LIST),
        "on" | "off" if help => usage_ok(HELP_TOGGLE),
        "show" if help => usage_ok(HELP_SHOW),
        "drill" if help => usage_ok(super::drill::HELP),
        "status" if help => usage_ok(super::status::HELP),
        "status" => super::status::command(rest),
        "drill" => super::drill::command(rest),
        "check" => super::inspect::check(rest),
        "list" => super::inspect::list(rest),
        "on" | "off" => switch(command == "on", rest),
        "show" => match rest {
            [file] => show(file),
            _ => usage_err(HELP_SHOW),
        },
        "completion" if help => usage_ok(super::completion::HELP),
        "man" if help => usage_ok(super::spec::HELP_MAN),
        "completion" => match rest {
            [shell] => match super::completion::script(shell) {
                Some(script) => write_stdout(&script),
                None => usage_err(super::completion::HELP),
            },
            _ => usage_err(super::completion::HELP),
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
pub(super) struct Opts {
    pub(super) json: bool,
    pub(super) names: bool,
    pub(super) strict: bool,
    pub(super) skip_unknown: bool,
    pub(super) in_place: bool,
    pub(super) all: bool,
    pub(super) for_: Option<String>,
    pub(super) node_id: Option<String>,
    pub(super) files: Vec<String>,
}

pub(super) fn opts(args: &[String], allowed: &[&str]) -> Result<Opts, String> {
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
pub(super) struct Unreadable {
    pub(super) code: i32,
    pub(super) why: String,
    pub(super) foreign: bool,
}

/// The plugin configurations in `file` (see [`read_configs`]).
pub(super) fn configs_in(file: &str) -> Result<Vec<crate::manifest::PluginConfig>, Unreadable> {
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
