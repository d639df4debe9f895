//! What a validated configuration will do, in words: the text `dbfault-check` prints. It lives
//! with the command-line tools, not in the module (native builds only).

use crate::fault::matching::{HostPattern, Match};
use crate::fault::{ApplyTo, FaultKind, Rule};
use crate::plugin::Config;
use crate::protocol::Protocol;
use std::time::Duration;

/// A percentage in basis points, without needless decimals ("30%", "12.5%").
fn percent(bp: u32) -> String {
    let text = format!("{}.{:02}", bp / 100, bp % 100);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The statements a statement rule names: "INSERT/UPDATE statements containing 'plants'".
fn statements(m: &Match) -> String {
    let commands: Vec<String> = m.commands.iter().map(|c| c.to_ascii_uppercase()).collect();
    let noun = if m.protocol == Some(Protocol::Redis) {
        "commands"
    } else {
        "statements"
    };
    let mut what = if commands.is_empty() {
        noun.to_owned()
    } else {
        format!("{} {noun}", commands.join("/"))
    };
    match m.writes {
        Some(true) => what = format!("write {what} (as a read-only replica refuses them)"),
        Some(false) => what = format!("read {what} (those a read-only replica runs)"),
        None => {}
    }
    if !m.query_contains.is_empty() {
        let quoted: Vec<String> = m.query_contains.iter().map(|c| format!("'{c}'")).collect();
        what.push_str(" containing ");
        what.push_str(&quoted.join(" or "));
    }
    what
}

/// A duration the way an operator writes it: `10m`, `1m30s`, `250ms`, `1.5s` — the shortest exact
/// form in the configuration's own units, so that `list` and `check` echo what the file says.
pub fn human(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    const S: u128 = 1_000_000_000;
    // Whole hours, minutes and seconds as terms; a sub-second remainder joins the seconds as a
    // fraction when there are whole seconds, or stands alone in ms/µs/ns.
    let (whole, frac) = (ns / S, ns % S);
    let mut out = String::new();
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        if s > 0 {
            out.push_str(&format!("{s}s"));
        }
        return out;
    }
    if whole > 0 {
        let digits = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", digits.trim_end_matches('0')));
        return out;
    }
    let (value, unit) = if frac % 1_000_000 == 0 {
        (frac / 1_000_000, "ms")
    } else if frac % 1_000 == 0 {
        (frac / 1_000, "µs")
    } else {
        (frac, "ns")
    };
    format!("{value}{unit}")
}

/// ` ± 20ms`, or nothing without jitter.
fn jitter(d: Duration) -> String {
    if d.is_zero() {
        String::new()
    } else {
        format!(" ± {}", human(d))
    }
}

/// What a configuration will do, one line per item, in words.
pub fn describe(config: &Config) -> Vec<String> {
    let ms = human;
    let m = &config.metrics;
    let mut out = vec![if m.enabled {
        format!(
            "metrics on: interval {}, at most {} upstream labels per worker, {}",
            ms(m.interval),
            m.max_upstreams,
            if m.requests {
                "PostgreSQL, MySQL and Redis sessions read for request metrics"
            } else {
                "no request metrics (connections' bytes never read)"
            }
        )
    } else {
        "metrics off".to_owned()
    }];
    if config.faults.is_empty() {
        out.push("no fault rules".to_owned());
    }
    for r in &config.faults {
        out.push(rule(r));
    }
    out
}

/// What one rule does, in words: `rule NAME: ...`.
pub fn rule(r: &Rule) -> String {
    let ms = human;
    let kind = match &r.kind {
        FaultKind::Abort(_) => "abort (close as soon as the upstream is known)".to_owned(),
        FaultKind::Blackhole(b) => match b.close_after {
            Some(d) => format!("blackhole, closed after {}", ms(d)),
            None => "blackhole (hang until the client gives up)".to_owned(),
        },
        FaultKind::Delay(d) => format!(
            "delay client → database by {}{}{}",
            ms(d.latency),
            jitter(d.jitter),
            if d.first_only {
                ", first chunk only"
            } else {
                ""
            }
        ),
        FaultKind::Cut(c) => {
            let mut parts = Vec::new();
            if let Some(b) = c.after_bytes {
                parts.push(format!("{b} bytes"));
            }
            if let Some(d) = c.after {
                parts.push(ms(d));
            }
            format!("cut after {}", parts.join(" or "))
        }
        FaultKind::Miss(_) => format!(
            "answer {} as if the keys did not exist (the commands do not execute)",
            r.matcher.commands.join(", ").to_ascii_uppercase()
        ),
        FaultKind::Idle(i) => format!(
            "{} connections silent for {}",
            if i.close { "close" } else { "blackhole" },
            ms(i.after)
        ),
        FaultKind::Error(e) => {
            let reply = &e.reply;
            if let Some(errno) = reply.errno {
                let state = String::from_utf8_lossy(&reply.code.unwrap_or(*b"HY000")).into_owned();
                let err = format!("ERROR {errno} ({state}) \"{}\"", reply.message);
                if r.matcher.is_statement_rule() {
                    format!(
                        "fail with {err}{}",
                        if reply.fatal {
                            ", then close the connection"
                        } else {
                            " (the statement does not execute)"
                        }
                    )
                } else if r.apply_to == ApplyTo::Open {
                    format!(
                        "end the sessions open when it starts with {err} at their next statement"
                    )
                } else {
                    format!(
                        "refuse new sessions with {err} instead of the greeting{}",
                        if r.apply_to == ApplyTo::All {
                            ", and end open sessions with it at their next statement"
                        } else {
                            ""
                        }
                    )
                }
            } else {
                match reply.code {
                    // Redis: the message is the whole error line.
                    None if r.matcher.is_statement_rule() => format!(
                        "fail with -{}{}",
                        reply.message,
                        if reply.fatal {
                            ", then close the connection"
                        } else {
                            " (the command does not execute)"
                        }
                    ),
                    None => format!(
                        "answer every command of {} with -{}{}",
                        match r.apply_to {
                            ApplyTo::All => "open and new connections",
                            ApplyTo::New => "new connections",
                            ApplyTo::Open => "the connections open when it starts",
                        },
                        reply.message,
                        if reply.fatal {
                            ", then close the connection"
                        } else {
                            " (commands do not execute)"
                        }
                    ),
                    Some(code) => {
                        let code = String::from_utf8_lossy(&code);
                        if r.matcher.is_statement_rule() {
                            format!(
                                "fail with {}{code} \"{}\"{}",
                                if reply.fatal { "FATAL " } else { "" },
                                reply.message,
                                if reply.fatal {
                                    " and close the session"
                                } else {
                                    " (the statement does not execute)"
                                }
                            )
                        } else if r.apply_to == ApplyTo::Open {
                            format!(
                                "end the sessions open when it starts with FATAL {code} \"{}\" at their next statement",
                                reply.message
                            )
                        } else {
                            format!(
                                "refuse new sessions at startup with FATAL {code} \"{}\"{}",
                                reply.message,
                                if r.apply_to == ApplyTo::All {
                                    ", and end open sessions with it at their next statement"
                                } else {
                                    ""
                                }
                            )
                        }
                    }
                }
            }
        }
    };
    let hosts: Vec<String> = r
        .matcher
        .hosts
        .iter()
        .map(|h| match h {
            HostPattern::Any => "*".to_owned(),
            HostPattern::Suffix(s) => format!("*{s}"),
            HostPattern::Exact(e) => e.clone(),
        })
        .collect();
    let mut target = Vec::new();
    if !hosts.is_empty() {
        target.push(format!("hosts {}", hosts.join(", ")));
    }
    if !r.matcher.clusters.is_empty() {
        target.push(format!("clusters {}", r.matcher.clusters.join(", ")));
    }
    if !r.matcher.ports.is_empty() {
        let ports: Vec<String> = r.matcher.ports.iter().map(u16::to_string).collect();
        target.push(format!("ports {}", ports.join(", ")));
    }
    let state = match (r.enabled, r.dry_run) {
        (false, _) => "DISABLED",
        (true, true) => "dry run (counted, traffic untouched)",
        (true, false) => "enabled",
    };
    let mut when = match r.window {
        None => "whenever enabled".to_owned(),
        Some(w) => format!(
            "from {} for {}{}",
            match w.start {
                Some(start) => crate::config::time::format(start),
                None => format!("{} after load", ms(w.after)),
            },
            ms(w.duration),
            w.every
                .map(|e| format!(", every {}", ms(e)))
                .unwrap_or_default()
        ),
    };
    match r.expires_at {
        Some(at) => when.push_str(&format!("; expires {}", crate::config::time::format(at))),
        None if r.enabled => when.push_str("; never expires"),
        None => {}
    }
    if let Some(p) = r.matcher.protocol {
        target.push(format!("{} sessions only", p.label()));
    }
    if r.sidecar_bp < 10_000 {
        when.push_str(&format!(
            "; on {} of sidecars (chosen by node id)",
            percent(r.sidecar_bp)
        ));
    }
    let apply = match r.apply_to {
        ApplyTo::All => "open and new connections",
        ApplyTo::New => "new connections only",
        ApplyTo::Open => "connections open when it starts",
    };
    if r.matcher.is_statement_rule() {
        let action = match &r.kind {
            FaultKind::Delay(d) => format!(
                "wait {}{} before reaching the server",
                ms(d.latency),
                jitter(d.jitter)
            ),
            FaultKind::Abort(_) => {
                "close their connection (the statement never reaches the server)".to_owned()
            }
            _ => kind,
        };
        let mut to: Vec<String> = hosts.clone();
        to.extend(r.matcher.clusters.iter().map(|c| format!("cluster {c}")));
        let mut to = to.join(" or ");
        if !r.matcher.ports.is_empty() {
            let ports: Vec<String> = r.matcher.ports.iter().map(u16::to_string).collect();
            to.push_str(&format!(" (port {})", ports.join(", ")));
        }
        return format!(
            "rule {}: {} of {} to {to} {action}; {state}; {apply}; {when}",
            r.name,
            percent(r.percentage_bp),
            statements(&r.matcher),
        );
    }
    format!(
        "rule {}: {kind}; {state}; {}; {} of connections; {apply}; {when}",
        r.name,
        target.join("; "),
        percent(r.percentage_bp),
    )
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_as_written() {
        let cases = [
            ("10m", "10m"),
            ("1m30s", "1m30s"),
            ("250ms", "250ms"),
            ("1.5s", "1.5s"),
            ("2h", "2h"),
            ("90s", "1m30s"),
            ("1h0m5s", "1h5s"),
            ("1500us", "1500µs"),
            ("61.25s", "1m1.25s"),
        ];
        for (text, shown) in cases {
            let d = crate::config::parse_duration("x", text).unwrap();
            assert_eq!(human(d), shown, "{text}");
            // What is shown reads back as the same duration.
            assert_eq!(crate::config::parse_duration("x", shown), Ok(d), "{shown}");
        }
        assert_eq!(human(Duration::from_nanos(7)), "7ns");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
