//! The `dbfault` command's commands and options as data: the overview `dbfault --help` prints,
//! the shell completions ([`super::completion`]) and the man page (`dbfault man`) are all
//! generated from this table and each command's `--help` text, so they cannot drift.
//!
//! Hand-written rather than clap: clap with clap_complete and clap_mangen adds about 810 KB to the
//! binary (measured: a two-command program with the three crates is 1,158 KB stripped against 347
//! KB without), and its stable completions cannot offer the rule names of the file on the line.

use super::{command, completion, drill, inspect, status};

/// A value an option or operand takes, for completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// Anything (no completion).
    Free,
    /// A file name.
    File,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A rule name of the file given on the line.
    Rule,
    /// A drill name.
    Drill,
}

#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub long: &'static str,
    /// Its value (`None`: a switch), with the placeholder the help uses.
    pub value: Option<(&'static str, Value)>,
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Cmd {
    pub name: &'static str,
    /// One line for the overview: the operands, then what it does.
    pub synopsis: &'static str,
    pub summary: &'static str,
    /// The operands in order, for completion (the last repeats for `check`).
    pub operands: &'static [Value],
    pub options: &'static [Opt],
    /// The `--help` text.
    pub help: &'static str,
}

const fn switch(long: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        value: None,
        help,
    }
}

const fn valued(long: &'static str, name: &'static str, v: Value, help: &'static str) -> Opt {
    Opt {
        long,
        value: Some((name, v)),
        help,
    }
}

const OUTPUT: Opt = valued(
    "--output",
    "text|json",
    Value::OneOf(&["text", "json"]),
    "how to print",
);
const IN_PLACE: Opt = switch("--in-place", "replace FILE atomically instead of printing");
const DURATION: Value = Value::Free;

pub const SHELLS: &[&str] = &["bash", "zsh", "fish"];

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        name: "check",
        synopsis: "[--strict] [--skip-unknown] [--output json] FILE...",
        summary: "validate configurations before pushing them",
        operands: &[Value::File],
        options: &[
            switch(
                "--strict",
                "an expired rule that is on makes the configuration invalid",
            ),
            switch("--skip-unknown", "pass over files that are not dbfault's"),
            OUTPUT,
        ],
        help: inspect::HELP_CHECK,
    },
    Cmd {
        name: "list",
        synopsis: "[--output json|names] [--node-id ID] FILE",
        summary: "the rules, what each does, whether it is active now",
        operands: &[Value::File],
        options: &[
            valued(
                "--output",
                "text|json|names",
                Value::OneOf(&["text", "json", "names"]),
                "how to print (names: the rule names, one per line)",
            ),
            valued("--node-id", "ID", Value::Free, "a sidecar's Envoy node id"),
        ],
        help: inspect::HELP_LIST,
    },
    Cmd {
        name: "on",
        synopsis: "RULE FILE [--for 15m] [--in-place]",
        summary: "switch a rule on by name (for a while)",
        operands: &[Value::Rule, Value::File],
        options: &[
            valued(
                "--for",
                "DURATION",
                DURATION,
                "also set expiresAt to now + DURATION",
            ),
            IN_PLACE,
        ],
        help: command::HELP_TOGGLE,
    },
    Cmd {
        name: "off",
        synopsis: "RULE|--all FILE [--in-place]",
        summary: "switch a rule, or every rule, off",
        operands: &[Value::Rule, Value::File],
        options: &[switch("--all", "every rule (the kill switch)"), IN_PLACE],
        help: command::HELP_TOGGLE,
    },
    Cmd {
        name: "show",
        synopsis: "FILE",
        summary: "the one plugin configuration in FILE, as found",
        operands: &[Value::File],
        options: &[],
        help: command::HELP_SHOW,
    },
    Cmd {
        name: "drill",
        synopsis: "NAME --host H [options] [FILE]",
        summary: "a realistic incident as rules (drill --list: which)",
        operands: &[Value::Drill, Value::File],
        options: &[
            switch("--list", "describe each drill"),
            valued(
                "--host",
                "HOST",
                Value::Free,
                "the database as the sidecar names it",
            ),
            valued(
                "--protocol",
                "P",
                Value::OneOf(&["postgres", "mysql", "redis"]),
                "the database's protocol",
            ),
            valued(
                "--start",
                "WHEN",
                Value::Free,
                "RFC 3339, or +DURATION from now",
            ),
            valued("--down", "DURATION", DURATION, "failover: the down phase"),
            valued(
                "--read-only",
                "DURATION",
                DURATION,
                "failover: the read-only phase",
            ),
            valued("--for", "DURATION", DURATION, "the other drills' length"),
            valued(
                "--after",
                "DURATION",
                DURATION,
                "idle-drop: the silence before the drop",
            ),
            valued(
                "--mode",
                "M",
                Value::OneOf(&["blackhole", "close"]),
                "idle-drop: what happens to the connection",
            ),
            valued("--latency", "DURATION", DURATION, "slow-queries: the hold"),
            valued(
                "--share",
                "N",
                Value::Free,
                "slow-queries: the percentage held",
            ),
            valued(
                "--output",
                "json|yaml",
                Value::OneOf(&["json", "yaml"]),
                "how the rules are printed",
            ),
            IN_PLACE,
        ],
        help: drill::HELP,
    },
    Cmd {
        name: "status",
        synopsis: "FILE --prometheus URL [options]",
        summary: "which sidecars run FILE's configuration, per Prometheus",
        operands: &[Value::File],
        options: &[
            valued(
                "--prometheus",
                "URL",
                Value::Free,
                "Prometheus's base URL (http)",
            ),
            valued(
                "--namespace",
                "NS",
                Value::Free,
                "only pods of this namespace",
            ),
            valued("--workload", "W", Value::Free, "only pods of this workload"),
            valued(
                "--stale",
                "DURATION",
                DURATION,
                "no sample for this long: stopped",
            ),
            valued(
                "--window",
                "DURATION",
                DURATION,
                "injections counted over this",
            ),
            valued(
                "--wait",
                "DURATION",
                DURATION,
                "ask again until converged, this long",
            ),
            OUTPUT,
        ],
        help: status::HELP,
    },
    Cmd {
        name: "completion",
        synopsis: "bash|zsh|fish",
        summary: "a shell completion script (rule names from the file on the line)",
        operands: &[Value::OneOf(SHELLS)],
        options: &[],
        help: completion::HELP,
    },
    Cmd {
        name: "man",
        synopsis: "",
        summary: "the manual page, as roff (man -l <(dbfault man))",
        operands: &[],
        options: &[],
        help: HELP_MAN,
    },
];

pub const HELP_MAN: &str = "usage: dbfault man

Prints dbfault(1) as roff, generated from the same text as --help:
  dbfault man > /usr/local/share/man/man1/dbfault.1    or    man -l <(dbfault man)";

pub fn find(name: &str) -> Option<&'static Cmd> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// The overview `dbfault --help` prints.
pub fn usage() -> String {
    let mut out = String::from("usage: dbfault <command> [options]\n\nCommands:\n");
    for c in COMMANDS {
        let head = format!("{} {}", c.name, c.synopsis);
        let head = head.trim_end();
        // A synopsis too long for the column puts its summary on the next line.
        if head.len() < 43 {
            out.push_str(&format!("  {head:43}{}\n", c.summary));
        } else {
            out.push_str(&format!("  {head}\n  {:43}{}\n", "", c.summary));
        }
    }
    out.push_str(
        "\nFILE is a plugin configuration (JSON), an Istio WasmPlugin manifest (YAML or JSON, several
documents or a `kind: List` allowed) or an ECDS file; `-` reads standard input.
Exit status: 0 ok, 1 invalid input, unknown rule or (status) pods not converged, 2 usage,
unreadable file or Prometheus not answering. `dbfault <command> --help` tells more.",
    );
    out
}

/// The option names a command accepts.
pub fn flags(name: &str) -> Vec<&'static str> {
    find(name)
        .map(|c| c.options.iter().map(|o| o.long).collect())
        .unwrap_or_default()
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would be a request.
fn roff(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// dbfault(1) as roff: the overview, then each command's help text as it prints it.
pub fn man() -> String {
    let mut out = format!(
        ".TH DBFAULT 1 \"\" \"dbfault {}\" \"User Commands\"\n.SH NAME\ndbfault \\- check, list and switch dbfault's rules; drills; rollout status\n.SH SYNOPSIS\n",
        env!("CARGO_PKG_VERSION")
    );
    for c in COMMANDS {
        out.push_str(&format!(
            ".B dbfault {}\n{}\n.br\n",
            c.name,
            roff(c.synopsis)
        ));
    }
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(&roff(
        "dbfault is a proxy-wasm network filter for Envoy and Istio sidecars in front of database \
traffic: per-database telemetry and fault injection. This command validates its configurations, \
lists and switches their rules in the files operators keep (plugin JSON, Istio WasmPlugin \
manifests, ECDS files), writes drills, and asks Prometheus which sidecars run a configuration.",
    ));
    out.push_str("\n.SH COMMANDS\n");
    for c in COMMANDS {
        out.push_str(&format!(".SS {}\n{}\n.PP\n.nf\n", c.name, roff(c.summary)));
        out.push_str(&roff(c.help));
        out.push_str("\n.fi\n");
        if !c.options.is_empty() {
            for o in c.options {
                let value = o.value.map(|(n, _)| format!(" {n}")).unwrap_or_default();
                out.push_str(&format!(
                    ".TP\n.B {}{}\n{}\n",
                    roff(o.long),
                    roff(&value),
                    roff(o.help)
                ));
            }
        }
    }
    out.push_str(".SH EXIT STATUS\n0 ok; 1 invalid configuration, unknown rule or (status) not converged; 2 usage, unreadable file or Prometheus not answering.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_in_the_table_is_dispatched_and_documented() {
        for c in COMMANDS {
            let args = vec![c.name.to_owned(), "--help".to_owned()];
            assert_eq!(command::main(&args), 0, "{}", c.name);
            // Every option the table lists appears in the command's help text.
            for o in c.options {
                assert!(
                    c.help.contains(o.long),
                    "{} {}: not in its help",
                    c.name,
                    o.long
                );
            }
        }
        let overview = usage();
        for c in COMMANDS {
            assert!(overview.contains(&format!("  {} ", c.name)), "{overview}");
        }
        assert!(overview.contains("--node-id"), "{overview}");
    }

    #[test]
    fn the_man_page_has_every_command_and_no_stray_requests() {
        let page = man();
        for c in COMMANDS {
            assert!(page.contains(&format!(".SS {}\n", c.name)), "{}", c.name);
        }
        for line in page.lines() {
            if let Some(req) = line.strip_prefix('.') {
                let name = req.split(' ').next().unwrap_or_default();
                assert!(
                    ["TH", "SH", "SS", "B", "br", "PP", "nf", "fi", "TP"].contains(&name),
                    "{line}"
                );
            }
        }
    }
}
