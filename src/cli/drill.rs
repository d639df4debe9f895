//! `dbfault drill NAME`: a realistic incident as rules the module already understands — each
//! phase a rule (or two) named `drill-<drill>-<phase>`, with an absolute `window.start` shared
//! by every sidecar and an `expiresAt` at its end — printed as a plugin configuration, or merged
//! into the configurations of a file (a plain configuration, a WasmPlugin manifest, an ECDS
//! file) ahead of their own rules, replacing that drill's rules from an earlier run.

use super::command::{now_nanos, print_json, read_text, usage_err, write_atomic, write_stdout};
use super::merge::{merge_into, to_yaml};
use crate::config::{parse_duration, time};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A drill: its name, the incident it imitates, what it tests in the app, its phases.
pub struct Drill {
    pub name: &'static str,
    pub imitates: &'static str,
    pub tests: &'static str,
    pub phases: &'static str,
}

pub const DRILLS: [Drill; 6] = [
    Drill {
        name: "failover",
        imitates: "a primary database failing over to a replica (RDS/Aurora, Patroni, Sentinel)",
        tests: "reconnecting after the primary ends its sessions, riding out refused connections, \
                handling read-only errors from a stale primary, and the time back to normal",
        phases: "down (--down, 30s): open sessions end as the server ends them (PostgreSQL: FATAL 57P01 at their \
                 next statement; MySQL, Redis: closed at once), new ones are refused (PostgreSQL 57P03, MySQL: \
                 closed at connect, Redis -LOADING); \
                 read-only (--read-only, 2m): writes get the read-only server's error (25006 / 1290 / -READONLY)",
    },
    Drill {
        name: "connection-storm",
        imitates: "the database's connection limit reached (a pool misconfigured, a deploy that doubled the pods)",
        tests: "what the app does when new connections are refused: back-off, pool limits, error handling",
        phases: "storm (--for, 5m): new sessions refused with the connection-limit error \
                 (53300 / 1040 / -ERR max number of clients reached); open sessions go on",
    },
    Drill {
        name: "idle-drop",
        imitates: "a NAT gateway, load balancer or firewall forgetting idle connections",
        tests: "the pool's connection checks and the app's timeouts on connections that sat idle",
        phases: "drop (--for, 5m): connections silent for --after (30s) are blackholed, or closed with --mode close",
    },
    Drill {
        name: "cache-miss",
        imitates: "a cold or flushed cache (Redis restarted empty, keys evicted)",
        tests: "the load a miss storm puts on the database behind the cache",
        phases: "miss (--for, 5m): Redis reads answered as for missing keys, for --share (100%) of them",
    },
    Drill {
        name: "slow-queries",
        imitates: "a slow database (lock contention, a noisy neighbour, a bad plan)",
        tests: "timeouts, retries and latency budgets",
        phases: "slow (--for, 5m): --share (10%) of statements or commands held --latency (500ms)",
    },
    Drill {
        name: "partition",
        imitates: "a network partition between the app and the database",
        tests: "connect and read timeouts: nothing answers, nothing closes",
        phases: "partition (--for, 5m): everything blackholed; when it ends the connections are closed",
    },
];

/// What a drill is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub drill: String,
    pub hosts: Vec<String>,
    pub protocol: Option<String>,
    /// When it starts (ns since the epoch).
    pub start: u64,
    pub down: Duration,
    pub read_only: Duration,
    pub duration: Duration,
    pub after: Duration,
    pub close: bool,
    pub latency: Duration,
    pub share: f64,
}

impl Options {
    pub fn new(drill: &str, now: u64) -> Options {
        Options {
            drill: drill.to_owned(),
            hosts: Vec::new(),
            protocol: None,
            start: now + 60_000_000_000,
            down: Duration::from_secs(30),
            read_only: Duration::from_secs(120),
            duration: Duration::from_secs(300),
            after: Duration::from_secs(30),
            close: false,
            latency: Duration::from_millis(500),
            share: -1.0,
        }
    }
}

/// `--start`: RFC 3339, or `+<duration>` from `now`.
pub fn parse_start(text: &str, now: u64) -> Result<u64, String> {
    if let Some(rest) = text.strip_prefix('+') {
        let d = parse_duration("--start", rest).map_err(|e| e.to_string())?;
        return Ok(now.saturating_add(d.as_nanos() as u64));
    }
    time::parse(text)
        .ok_or_else(|| format!("--start {text}: not RFC 3339 (2026-12-07T10:00:00Z) or +DURATION"))
}

/// The prefix of a drill's rule names.
pub(super) fn prefix(drill: &str) -> String {
    format!("drill-{drill}-")
}

/// The rules of the drill, in the order they must be consulted.
pub fn rules(o: &Options) -> Result<Vec<Value>, String> {
    if !DRILLS.iter().any(|d| d.name == o.drill) {
        return Err(format!(
            "unknown drill {:?} (one of: {})",
            o.drill,
            DRILLS.map(|d| d.name).join(", ")
        ));
    }
    if o.hosts.is_empty() {
        return Err(
            "needs --host (the database's host name as the sidecar sees it; repeatable)".into(),
        );
    }
    let protocol = o.protocol.as_deref();
    let needs_protocol = matches!(
        o.drill.as_str(),
        "failover" | "connection-storm" | "slow-queries"
    );
    match protocol {
        None if needs_protocol => {
            return Err(format!(
                "drill {} needs --protocol postgres|mysql|redis",
                o.drill
            ))
        }
        Some(p) if !matches!(p, "postgres" | "mysql" | "redis") => {
            return Err(format!("--protocol {p}: one of postgres, mysql, redis"))
        }
        Some(p) if o.drill == "cache-miss" && p != "redis" => {
            return Err("drill cache-miss is for Redis (--protocol redis)".into())
        }
        _ => {}
    }
    let protocol = if o.drill == "cache-miss" {
        Some("redis")
    } else {
        protocol
    };
    let mut matching = json!({ "hosts": o.hosts });
    if let (Some(p), Some(m)) = (protocol, matching.as_object_mut()) {
        m.insert("protocol".into(), json!(p));
    }
    let mut out = Vec::new();
    let mut at = o.start;
    // One phase: its rules, each `(suffix, extra match keys, the rest)`.
    let mut phase = |name: &str, length: Duration, rules: Vec<(&str, Value, Value)>| {
        let end = at.saturating_add(length.as_nanos() as u64);
        for (suffix, extra, body) in rules {
            let mut m = matching.clone();
            if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
                m.extend(extra);
            }
            let mut rule = json!({
                "name": format!("{}{name}{suffix}", prefix(&o.drill)),
                "match": m,
                "window": {"start": time::format(at), "for": super::describe::human(length)},
                "expiresAt": time::format(end),
            });
            if let (Some(r), Value::Object(body)) = (rule.as_object_mut(), body) {
                r.extend(body);
            }
            out.push(rule);
        }
        at = end;
    };
    let none = Value::Object(Map::new());
    let share = |default: f64| if o.share < 0.0 { default } else { o.share };
    match (o.drill.as_str(), protocol) {
        ("failover", Some(p)) => {
            // PostgreSQL ends open sessions with FATAL 57P01 and a server starting up refuses
            // new ones with 57P03; Redis closes its connections, and a restarted replica
            // answers -LOADING until its data is in memory; MySQL closes its connections and
            // refuses new ones while it is down (no listener: the client's connect fails).
            let down = match p {
                "postgres" => vec![
                    (
                        "-new",
                        none.clone(),
                        json!({"applyTo": "new", "error": {"sqlstate": "57P03",
                            "message": "the database system is starting up"}}),
                    ),
                    (
                        "",
                        none.clone(),
                        json!({"applyTo": "open", "error": {"sqlstate": "57P01",
                            "message": "terminating connection due to administrator command", "fatal": true}}),
                    ),
                ],
                "mysql" => vec![("", none.clone(), json!({"applyTo": "all", "abort": {}}))],
                _ => vec![
                    (
                        "-new",
                        none.clone(),
                        json!({"applyTo": "new", "error":
                            {"message": "LOADING Redis is loading the dataset in memory"}}),
                    ),
                    ("", none.clone(), json!({"applyTo": "open", "abort": {}})),
                ],
            };
            // New sessions meet their refusal first; open ones the end of their session.
            phase("down", o.down, down);
            let write = json!({"access": "write"});
            let read_only = match p {
                "postgres" => vec![
                    (
                        "-recovery",
                        json!({"access": "write", "commands":
                            ["copy", "vacuum", "analyze", "cluster", "reindex", "listen", "notify", "lock", "prepare"]}),
                        json!({"error": {"sqlstate": "25006", "message": "cannot execute {command} during recovery"}}),
                    ),
                    (
                        "",
                        write,
                        json!({"error": {"sqlstate": "25006",
                            "message": "cannot execute {command} in a read-only transaction"}}),
                    ),
                ],
                "mysql" => vec![(
                    "",
                    write,
                    json!({"error": {"errno": 1290, "sqlstate": "HY000", "message":
                        "The MariaDB server is running with the --read-only option so it cannot execute this statement"}}),
                )],
                _ => vec![(
                    "",
                    write,
                    json!({"error": {"message": "READONLY You can't write against a read only replica."}}),
                )],
            };
            phase("read-only", o.read_only, read_only);
        }
        ("connection-storm", Some(p)) => {
            let error = match p {
                "postgres" => {
                    json!({"sqlstate": "53300", "message": "sorry, too many clients already"})
                }
                "mysql" => {
                    json!({"errno": 1040, "sqlstate": "08004", "message": "Too many connections"})
                }
                _ => json!({"message": "ERR max number of clients reached"}),
            };
            phase(
                "storm",
                o.duration,
                vec![("", none, json!({"applyTo": "new", "error": error}))],
            );
        }
        ("idle-drop", _) => {
            let mode = if o.close { "close" } else { "blackhole" };
            phase(
                "drop",
                o.duration,
                vec![(
                    "",
                    none,
                    json!({"idle": {"after": super::describe::human(o.after), "mode": mode}}),
                )],
            );
        }
        ("cache-miss", _) => {
            phase(
                "miss",
                o.duration,
                vec![("", none, json!({"percentage": share(100.0), "miss": {}}))],
            );
        }
        ("slow-queries", Some(p)) => {
            let commands = if p == "redis" {
                json!(["get", "set", "mget", "hget", "hgetall", "hset", "incr", "del"])
            } else {
                json!(["select", "insert", "update", "delete"])
            };
            phase(
                "slow",
                o.duration,
                vec![(
                    "",
                    json!({"commands": commands}),
                    json!({"percentage": share(10.0), "delay": {"latency": super::describe::human(o.latency)}}),
                )],
            );
        }
        _ => {
            // partition: hang everything; the blackhole's end closes what it held.
            phase(
                "partition",
                o.duration,
                vec![("", none, json!({"blackhole": {}}))],
            );
        }
    }
    Ok(out)
}

/// `dbfault drill --help`.
pub const HELP: &str = "usage: dbfault drill NAME --host HOST [options] [FILE [--in-place]]
       dbfault drill --list

Writes the rules of a realistic incident: each phase a rule named drill-NAME-PHASE with an
absolute window.start (the same instant on every sidecar) and an expiresAt at its end. Without
FILE, prints them as a plugin configuration; with FILE (a plugin configuration, a WasmPlugin
manifest or an ECDS file), merges them ahead of each configuration's own rules, replacing the
drill's rules from an earlier run, and prints the file (or with --in-place replaces it).
`dbfault list` then shows the phases and which one is active; `dbfault off` switches one off.
Options:
  --host HOST             the database as the sidecar names it (repeatable; required)
  --protocol P            postgres, mysql or redis (failover, connection-storm, slow-queries)
  --start WHEN            RFC 3339, or +DURATION from now (default +1m)
  --down D, --read-only D failover's phases (default 30s, 2m)
  --for D                 the other drills' length (default 5m)
  --after D, --mode M     idle-drop: silence before the drop (30s); blackhole or close
  --latency D, --share N  slow-queries: the hold (500ms), the percentage held (10)
  --output json|yaml      how the rules are printed (default json)
Exit status: 0, 1 the file holds an invalid configuration, 2 usage or unreadable file.";

/// `dbfault drill ARGS`: the exit status.
pub fn command(args: &[String]) -> i32 {
    if args.first().is_some_and(|a| a == "--list") {
        for d in DRILLS {
            println!(
                "{}\n  imitates: {}\n  tests:    {}\n  phases:   {}\n",
                d.name, d.imitates, d.tests, d.phases
            );
        }
        return 0;
    }
    let Some((name, rest)) = args.split_first() else {
        return usage_err(HELP);
    };
    let now = now_nanos();
    let mut o = Options::new(name, now);
    let (mut yaml_out, mut in_place, mut file) = (false, false, None);
    let mut it = rest.iter();
    let parsed: Result<(), String> = (|| {
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            let dur = |v: String| crate::config::parse_duration(arg, &v).map_err(|e| e.to_string());
            match arg.as_str() {
                "--host" => o.hosts.push(value()?),
                "--protocol" => o.protocol = Some(value()?),
                "--start" => o.start = parse_start(&value()?, now)?,
                "--down" => o.down = dur(value()?)?,
                "--read-only" => o.read_only = dur(value()?)?,
                "--for" => o.duration = dur(value()?)?,
                "--after" => o.after = dur(value()?)?,
                "--latency" => o.latency = dur(value()?)?,
                "--mode" => {
                    o.close = match value()?.as_str() {
                        "close" => true,
                        "blackhole" => false,
                        other => return Err(format!("--mode {other}: blackhole or close")),
                    }
                }
                "--share" => {
                    let v = value()?;
                    o.share = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| (0.0..=100.0).contains(s))
                        .ok_or_else(|| format!("--share {v}: a percentage, 0 to 100"))?;
                }
                "--output" => {
                    yaml_out = match value()?.as_str() {
                        "yaml" => true,
                        "json" => false,
                        other => return Err(format!("--output {other}: json or yaml")),
                    }
                }
                "--in-place" => in_place = true,
                f if !f.starts_with("--") && file.is_none() => file = Some(f.to_owned()),
                other => return Err(format!("unexpected {other}")),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        return usage_err(&format!("dbfault drill: {e}\n\n{HELP}"));
    }
    let rules = match rules(&o) {
        Ok(r) => r,
        Err(e) => return usage_err(&format!("dbfault drill: {e}")),
    };
    let Some(file) = file else {
        if in_place {
            return usage_err("dbfault drill: --in-place needs a FILE");
        }
        let config = json!({ "faults": rules });
        if yaml_out {
            print!("{}", to_yaml(&config, 0));
        } else {
            print_json(&config);
        }
        return 0;
    };
    if in_place && file == "-" {
        return usage_err("dbfault: --in-place needs a file, not standard input");
    }
    let text = match read_text(&file) {
        Ok(t) => t,
        Err(status) => return status,
    };
    let merged = match merge_into(&file, &text, name, &rules) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if in_place {
        if let Err(e) = write_atomic(&file, &merged) {
            eprintln!("{file}: cannot write: {e}");
            return 2;
        }
        for r in &rules {
            println!("{file}: {}", r["name"].as_str().unwrap_or_default());
        }
        return 0;
    }
    write_stdout(&merged)
}

#[cfg(test)]
mod tests {
    use super::super::merge::merged;
    use super::*;
    use crate::manifest::plugin_configs;
    use crate::plugin::Config;

    const NOW: u64 = 1_796_000_000_000_000_000;

    fn opts(drill: &str, protocol: Option<&str>) -> Options {
        let mut o = Options::new(drill, NOW);
        o.hosts = vec!["pg.db.svc".into()];
        o.protocol = protocol.map(str::to_owned);
        o
    }

    #[test]
    fn every_drill_is_a_valid_configuration_for_each_protocol() {
        for d in DRILLS {
            for p in ["postgres", "mysql", "redis"] {
                if d.name == "cache-miss" && p != "redis" {
                    continue;
                }
                let rules = rules(&opts(d.name, Some(p))).unwrap();
                let config = json!({"faults": rules}).to_string();
                let parsed = Config::parse(config.as_bytes())
                    .unwrap_or_else(|e| panic!("{} {p}: {e}", d.name));
                assert!(parsed
                    .faults
                    .iter()
                    .all(|r| r.name.starts_with(&format!("drill-{}-", d.name))));
                assert!(parsed.faults.iter().all(|r| r.expires_at.is_some()));
            }
        }
    }

    #[test]
    fn failover_phases_follow_each_other_from_the_start() {
        let mut o = opts("failover", Some("postgres"));
        o.start = time::parse("2026-12-07T10:00:00Z").unwrap();
        let r = rules(&o).unwrap();
        let names: Vec<&str> = r.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "drill-failover-down-new",
                "drill-failover-down",
                "drill-failover-read-only-recovery",
                "drill-failover-read-only"
            ]
        );
        assert_eq!(
            r[0]["window"],
            json!({"start": "2026-12-07T10:00:00Z", "for": "30s"})
        );
        assert_eq!(r[1]["expiresAt"], "2026-12-07T10:00:30Z");
        assert_eq!(
            r[3]["window"],
            json!({"start": "2026-12-07T10:00:30Z", "for": "2m"})
        );
        assert_eq!(r[3]["expiresAt"], "2026-12-07T10:02:30Z");
    }

    #[test]
    fn a_drill_run_again_replaces_its_own_rules_and_keeps_the_others() {
        let first = rules(&opts("partition", None)).unwrap();
        let config =
            json!({"metrics": {"interval": "1s"}, "faults": [{"name": "mine"}, first[0].clone()]});
        let again = rules(&opts("partition", None)).unwrap();
        let m = merged(&config, "partition", &again);
        let names: Vec<&str> = m["faults"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["drill-partition-partition", "mine"]);
        assert_eq!(m["metrics"]["interval"], "1s");
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(rules(&opts("failover", None))
            .unwrap_err()
            .contains("--protocol"));
        assert!(rules(&opts("flood", None))
            .unwrap_err()
            .contains("unknown drill"));
        assert!(rules(&opts("cache-miss", Some("postgres")))
            .unwrap_err()
            .contains("Redis"));
        let mut o = opts("partition", None);
        o.hosts.clear();
        assert!(rules(&o).unwrap_err().contains("--host"));
        assert_eq!(parse_start("+90s", NOW), Ok(NOW + 90_000_000_000));
        assert!(parse_start("tomorrow", NOW).is_err());
    }

    #[test]
    fn merging_keeps_the_rest_of_a_manifest() {
        let manifest = "# the plants team's plugin\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: dbfault # keep\nspec:\n  type: NETWORK\n  pluginConfig:\n    faults:\n      - name: mine\n        match: {hosts: [pg]}\n        abort: {}\n  url: oci://x/dbfault:1\n";
        let rules = rules(&opts("partition", None)).unwrap();
        let out = merge_into("m.yaml", manifest, "partition", &rules).unwrap();
        assert!(out.starts_with("# the plants team's plugin\n"), "{out}");
        assert!(out.contains("name: dbfault # keep"), "{out}");
        assert!(out.contains("  url: oci://x/dbfault:1\n"), "{out}");
        let configs = plugin_configs("m.yaml", out.as_bytes()).unwrap();
        let parsed = Config::parse(&configs[0].bytes).unwrap();
        let names: Vec<&str> = parsed.faults.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["drill-partition-partition", "mine"]);
        // Again: replaced, not added.
        let twice = merge_into("m.yaml", &out, "partition", &rules).unwrap();
        assert_eq!(twice, out);
    }
}
