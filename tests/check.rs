//! `dbfault check`, the command a CI pipeline runs before pushing a WasmPlugin (and its old name,
//! `dbfault-check`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{output_with_input, repo, TempDir};
use std::process::Command;

fn check(args: &[&str], stdin: Option<&str>) -> (i32, String) {
    run(
        env!("CARGO_BIN_EXE_dbfault"),
        &[&["check"], args].concat(),
        stdin,
    )
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let out = output_with_input(
        Command::new(program).args(args).current_dir(repo()),
        stdin.unwrap_or_default().as_bytes(),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn the_shipped_manifests_and_ecds_file_are_valid() {
    let (code, out) = check(&["istio/wasmplugin.yaml", "envoy/dbfault.yaml"], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("istio/wasmplugin.yaml: WasmPlugin dbfault: valid"),
        "{out}"
    );
    assert!(out.contains("rule firestore-outage: abort"), "{out}");
    assert!(out.contains("DISABLED"), "{out}");
    assert!(
        out.contains("envoy/dbfault.yaml: ECDS resource dbfault: valid"),
        "{out}"
    );
    assert!(
        out.contains("rule postgres-slow: delay client → database by 300ms"),
        "{out}"
    );
}

#[test]
fn a_plain_json_configuration_from_stdin() {
    let cfg = r#"{"faults": [{"name": "half", "match": {"hosts": ["*.db.svc"]}, "percentage": 50, "cut": {"afterBytes": 4096}}]}"#;
    let (code, out) = check(&["-"], Some(cfg));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "rule half: cut after 4096 bytes; enabled; hosts *.db.svc; 50% of connections"
        ),
        "{out}"
    );
}

#[test]
fn errors_name_the_field_and_fail_the_pipeline() {
    let dir = TempDir::new("check");
    let bad_plugin = dir.path().join("wasmplugin.yaml");
    let text = std::fs::read_to_string(repo().join("istio/wasmplugin.yaml")).unwrap();
    std::fs::write(
        &bad_plugin,
        text.replace("abort: {}", "abort: {}\n      delay: {latency: 1s}"),
    )
    .unwrap();
    let (code, out) = check(&[bad_plugin.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid configuration: faults[0]: needs exactly one fault kind"),
        "{out}"
    );

    let (code, out) = check(&["-"], Some(r#"{"metrics": {"interval": "fast"}}"#));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("-: invalid configuration: metrics.interval: invalid duration \"fast\""),
        "{out}"
    );

    let (code, out) = check(&["-"], Some("{\"metrics\": "));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid JSON"), "{out}");

    // A file that is readable but not dbfault's is invalid input (1), named once; only an
    // unreadable file is 2.
    let (code, out) = check(&["-"], Some("kind: Deployment\nmetadata: {name: x}\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a dbfault configuration"), "{out}");
    let (code, out) = check(&["examples/istio-overlay/kustomization.yaml"], None);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim(),
        "examples/istio-overlay/kustomization.yaml: no WasmPlugin or dbfault configuration (only Kustomization)"
    );

    let (code, out) = check(&["/nonexistent/file.yaml"], None);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn statement_rules_are_explained_and_bad_ones_refused() {
    let cfg = r#"{"faults": [
      {"name": "plants-conflict", "match": {"hosts": ["pg.db.svc.cluster.local"], "protocol": "postgres",
         "commands": ["INSERT", "UPDATE"], "queryContains": ["plants"]},
       "percentage": 30, "error": {"sqlstate": "40001", "message": "could not serialize access due to concurrent update"}},
      {"name": "failover", "match": {"hosts": ["pg.db.svc.cluster.local"], "protocol": "postgres"},
       "error": {"sqlstate": "57P01", "message": "terminating connection due to administrator command", "fatal": true}},
      {"name": "slow-selects", "match": {"hosts": ["pg.db.svc.cluster.local"], "protocol": "postgres", "commands": ["SELECT"]},
       "delay": {"latency": "200ms"}}
    ]}"#;
    let (code, out) = check(&["-"], Some(cfg));
    assert_eq!(code, 0, "{out}");
    for want in [
        "rule plants-conflict: 30% of INSERT/UPDATE statements containing 'plants' to pg.db.svc.cluster.local fail with 40001 \"could not serialize access due to concurrent update\" (the statement does not execute)",
        "rule failover: refuse new sessions at startup with FATAL 57P01 \"terminating connection due to administrator command\", and end open sessions with it at their next statement",
        "rule slow-selects: 100% of SELECT statements to pg.db.svc.cluster.local wait 200ms before reaching the server",
    ] {
        assert!(out.contains(want), "{out}\nwant: {want}");
    }
    let pg = r#""match": {"hosts": ["pg"], "protocol": "postgres""#;
    for (rule, want) in [
        (
            r#""match": {"hosts": ["pg"]}, "error": {"sqlstate": "40001", "message": "m"}"#
                .to_owned(),
            "faults[0].error: needs match.protocol \"postgres\"",
        ),
        (
            format!(r#"{pg}}}, "error": {{"sqlstate": "4000", "message": "m"}}"#),
            "faults[0].error.sqlstate: \"4000\" is not a SQLSTATE",
        ),
        (
            format!(r#"{pg}}}, "error": {{"sqlstate": "40001", "message": "two\nlines"}}"#),
            "faults[0].error.message: has a line break",
        ),
        (
            format!(r#"{pg}, "commands": "INSERT"}}, "abort": {{}}"#),
            "faults[0].match.commands: invalid type: string",
        ),
        (
            format!(r#"{pg}, "commands": ["INSERT INTO"]}}, "abort": {{}}"#),
            "faults[0].match.commands[0]: \"INSERT INTO\" is not a SQL command",
        ),
    ] {
        let json = format!(r#"{{"faults": [{{"name": "r", {rule}}}]}}"#);
        let (code, out) = check(&["-"], Some(&json));
        assert_eq!(code, 1, "{json}\n{out}");
        assert!(out.contains(want), "{json}\n{out}\nwant: {want}");
    }
}

#[test]
fn redis_and_mysql_rules_are_explained_and_their_fields_checked_per_protocol() {
    let cfg = r#"{"faults": [
      {"name": "replica", "match": {"hosts": ["redis.cache"], "protocol": "redis", "commands": ["SET", "HSET"], "queryContains": ["plant:"]},
       "error": {"message": "READONLY You can't write against a read only replica."}},
      {"name": "masterdown", "match": {"hosts": ["redis.cache"], "protocol": "redis"}, "error": {"message": "MASTERDOWN Link with MASTER is down", "fatal": true}},
      {"name": "deadlocks", "match": {"hosts": ["mysql.db"], "protocol": "mysql", "commands": ["INSERT"]}, "percentage": 20,
       "error": {"errno": 1213, "sqlstate": "40001", "message": "Deadlock found when trying to get lock; try restarting transaction"}},
      {"name": "full", "match": {"hosts": ["mysql.db"], "protocol": "mysql"}, "applyTo": "new", "error": {"errno": 1040, "sqlstate": "08004", "message": "Too many connections"}}
    ]}"#;
    let (code, out) = check(&["-"], Some(cfg));
    assert_eq!(code, 0, "{out}");
    for want in [
        "rule replica: 100% of SET/HSET commands containing 'plant:' to redis.cache fail with -READONLY You can't write against a read only replica. (the command does not execute)",
        "rule masterdown: answer every command of open and new connections with -MASTERDOWN Link with MASTER is down, then close the connection",
        "rule deadlocks: 20% of INSERT statements to mysql.db fail with ERROR 1213 (40001) \"Deadlock found when trying to get lock; try restarting transaction\" (the statement does not execute)",
        "rule full: refuse new sessions with ERROR 1040 (08004) \"Too many connections\" instead of the greeting",
    ] {
        assert!(out.contains(want), "{out}\nwant: {want}");
    }
    for (rule, want) in [
        (
            r#""match": {"hosts": ["r"], "protocol": "redis"}, "error": {"errno": 1213, "message": "READONLY x"}"#,
            "faults[0].error.errno: only for MySQL",
        ),
        (
            r#""match": {"hosts": ["r"], "protocol": "redis"}, "error": {"sqlstate": "40001", "message": "READONLY x"}"#,
            "faults[0].error.sqlstate: not for Redis",
        ),
        (
            r#""match": {"hosts": ["r"], "protocol": "redis"}, "error": {"message": "READONLY a\r\nb"}"#,
            "faults[0].error.message: has a line break",
        ),
        (
            r#""match": {"hosts": ["r"], "protocol": "redis", "commands": ["SELECTT"]}, "abort": {}"#,
            "faults[0].match.commands[0]: \"SELECTT\" is not a Redis command",
        ),
        (
            r#""match": {"hosts": ["m"], "protocol": "mysql"}, "error": {"sqlstate": "40001", "message": "x"}"#,
            "faults[0].error.errno: missing",
        ),
        (
            r#""match": {"hosts": ["m"], "protocol": "mysql"}, "error": {"errno": 0, "message": "x"}"#,
            "faults[0].error.errno: not an error number",
        ),
    ] {
        let json = format!(r#"{{"faults": [{{"name": "r", {rule}}}]}}"#);
        let (code, out) = check(&["-"], Some(&json));
        assert_eq!(code, 1, "{json}\n{out}");
        assert!(out.contains(want), "{json}\n{out}\nwant: {want}");
    }
}

#[test]
fn rules_without_expiry_are_warned_about_and_expired_ones_refused_when_strict() {
    let cfg = r#"{"faults": [
      {"name": "forever", "match": {"hosts": ["pg"]}, "abort": {}},
      {"name": "past", "match": {"hosts": ["pg"]}, "abort": {}, "expiresAt": "2020-01-01T00:00:00Z"},
      {"name": "bounded", "match": {"hosts": ["pg"]}, "abort": {}, "expiresAt": "2100-01-01T00:00:00Z",
       "window": {"start": "2099-12-31T23:00:00Z", "for": "10m"}}
    ]}"#;
    let (code, out) = check(&["-"], Some(cfg));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: rule forever has no expiresAt"),
        "{out}"
    );
    assert!(
        out.contains("warning: rule past expired at 2020-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(
        out.contains("from 2099-12-31T23:00:00Z for 10m; expires 2100-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(!out.contains("rule bounded has no expiresAt"), "{out}");
    let (code, out) = check(&["--strict", "-"], Some(cfg));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: rule past expired at 2020-01-01T00:00:00Z (--strict)"),
        "{out}"
    );
    // Never "valid" above its error.
    assert!(!out.contains("valid (config"), "{out}");
    assert!(out.contains("-: invalid configuration (1 error)"), "{out}");
}

/// What `dbfault check` says of files that are not valid dbfault configurations: never valid,
/// exit 1 for anything readable, 2 only for usage and unreadable files, and where a syntax error
/// is.
#[test]
fn the_checker_never_calls_a_wrong_file_valid() {
    let dir = TempDir::new("check-table");
    let plugin = std::fs::read_to_string(repo().join("istio/wasmplugin.yaml")).unwrap();
    // A YAML syntax error on line 41 of a WasmPlugin (`@` cannot start a plain scalar).
    let mut lines: Vec<String> = plugin.lines().map(str::to_owned).collect();
    lines.truncate(40);
    lines.push("      bad: @x".to_owned());
    let list_item = |name: &str| -> String {
        plugin
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.replacen("name: dbfault", &format!("name: {name}"), 1))
            .enumerate()
            .map(|(i, l)| format!("{}{l}\n", if i == 0 { "- " } else { "  " }))
            .collect()
    };
    let files: &[(&str, String)] = &[
        ("yaml-syntax.yaml", lines.join("\n") + "\n"),
        ("trailing-comma.json", r#"{"faults": [],}"#.to_owned()),
        ("latin1.json", String::from_utf8_lossy(b"{}").into_owned()),
        ("deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: plants}\n".to_owned()),
        ("values.yaml", "replicaCount: 2\nimage: {tag: v1}\n".to_owned()),
        ("empty.yaml", String::new()),
        (
            "higress.yaml",
            "apiVersion: extensions.higress.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: auth}\nspec:\n  defaultConfig: {faults: 1}\n".to_owned(),
        ),
        (
            "three-errors.json",
            r#"{"metrics": {"interval": "fast"}, "faults": [
              {"name": "a", "match": {"hosts": ["h"]}, "abort": {"after": "1s"}},
              {"name": "b", "match": {"hosts": ["h"]}, "delay": {"latency": "x"}}]}"#
                .to_owned(),
        ),
        (
            "list.yaml",
            format!("apiVersion: v1\nkind: List\nitems:\n{}{}", list_item("a"), list_item("b")),
        ),
        (
            "ecds-not-string.yaml",
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: dbfault\n  typed_config:\n    config:\n      configuration:\n        value: [1]\n".to_owned(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("not-utf8.json"), b"\xff\xfe{}").unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let overlay = "examples/istio-overlay/kustomization.yaml";
    // (arguments, exit status, what the output must contain, what it must not)
    type Case<'a> = (Vec<String>, i32, Vec<String>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![overlay.into()], 1, vec![format!("{overlay}: no WasmPlugin or dbfault configuration (only Kustomization)")], vec!["valid"]),
        (vec!["--skip-unknown".into(), overlay.into(), "istio/wasmplugin.yaml".into()], 0, vec!["skipped (--skip-unknown)".into(), "WasmPlugin dbfault: valid".into()], vec![]),
        (vec![at("yaml-syntax.yaml")], 1, vec![format!("{}:41:", at("yaml-syntax.yaml")), "not valid YAML".into()], vec!["valid (", "line 1 column 1"]),
        (vec![at("trailing-comma.json")], 1, vec![format!("{}:1:15: not valid JSON: trailing comma", at("trailing-comma.json"))], vec!["valid ("]),
        (vec![at("not-utf8.json")], 1, vec!["not UTF-8 text".into()], vec!["valid ("]),
        (vec![at("deployment.yaml")], 1, vec!["(only Deployment plants)".into()], vec!["valid ("]),
        (vec!["--skip-unknown".into(), at("deployment.yaml")], 0, vec!["skipped".into()], vec![]),
        (vec![at("values.yaml")], 1, vec!["not a dbfault configuration, a WasmPlugin or an ECDS file".into()], vec!["valid ("]),
        (vec![at("empty.yaml")], 1, vec!["no configuration found".into()], vec!["valid ("]),
        (vec![at("higress.yaml")], 1, vec!["(only WasmPlugin auth of extensions.higress.io/v1alpha1, not Istio's)".into()], vec!["valid ("]),
        (vec![at("ecds-not-string.yaml")], 1, vec!["ECDS resource dbfault: configuration.value is not a string".into()], vec!["valid ("]),
        (vec!["--skip-unknown".into(), at("ecds-not-string.yaml")], 1, vec!["not a string".into()], vec!["skipped"]),
        (
            vec![at("three-errors.json")],
            1,
            vec![
                "invalid configuration (3 errors)".into(),
                "error: metrics.interval: invalid duration \"fast\"".into(),
                "error: faults[0].abort.after: unknown field `after` (this object takes no fields: write {})".into(),
                "error: faults[1].delay.latency: invalid duration \"x\"".into(),
            ],
            vec!["expected one of: )"],
        ),
        (vec![at("list.yaml")], 0, vec!["list.yaml (item 1): WasmPlugin a: valid".into(), "list.yaml (item 2): WasmPlugin b: valid".into()], vec![]),
        (vec![at("missing.yaml")], 2, vec!["cannot read".into()], vec![]),
        (vec!["--frobnicate".into(), at("list.yaml")], 2, vec!["unknown option --frobnicate".into()], vec![]),
    ];
    for (args, code, want, never) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, out) = check(&args, None);
        assert_eq!(got, code, "{args:?}\n{out}");
        for w in &want {
            assert!(out.contains(w.as_str()), "{args:?}: want {w:?}\n{out}");
        }
        for n in never {
            assert!(!out.contains(n), "{args:?}: must not say {n:?}\n{out}");
        }
        // The file is named once per message, not twice.
        if let Some(file) = args.last().filter(|f| f.starts_with('/')) {
            for line in out.lines() {
                assert!(line.matches(file).count() <= 1, "{line}");
            }
        }
    }
}

#[test]
fn the_old_name_still_works() {
    let alias = |args: &[&str]| run(env!("CARGO_BIN_EXE_dbfault-check"), args, None);
    let (code, out) = alias(&["envoy/dbfault.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ECDS resource dbfault: valid"), "{out}");
    let (code, out) = alias(&["--plugin-config", "istio/wasmplugin.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("{\"faults\":[{"), "{out}");
    assert_eq!(alias(&[]).0, 2);
}

#[test]
fn json_output_for_pipelines() {
    let (code, out) = check(
        &["--output", "json", "envoy/dbfault.yaml", "-"],
        Some("{\"faults\": 1}"),
    );
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = report.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["valid"], true);
    assert_eq!(items[0]["config"].as_str().unwrap().len(), 12);
    assert!(items[0]["warnings"].as_array().unwrap().is_empty());
    assert_eq!(items[1]["valid"], false);
    assert!(
        items[1]["errors"][0].as_str().unwrap().contains("faults"),
        "{out}"
    );
    // One shape for every entry: valid, invalid, and a file that gave no configuration.
    let (_, out) = check(
        &[
            "--output",
            "json",
            "envoy/dbfault.yaml",
            "-",
            "examples/istio-overlay/kustomization.yaml",
        ],
        Some("{\"faults\": 1}"),
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for item in report.as_array().unwrap() {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "config",
                "description",
                "errors",
                "file",
                "origin",
                "skipped",
                "valid",
                "warnings"
            ],
            "{item}"
        );
        for list in ["description", "errors", "warnings"] {
            assert!(item[list].is_array(), "{item}");
        }
    }
}
