//! `dbfault list|on|off`: switching rules by name in the files operators keep in git, in a
//! kubectl pipeline, and in place for a watching Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    documented_sidecar_choice, finish_by_deadline, output_with_input, repo, OutputByDeadline,
    TempDir,
};
use serde_json::Value;
use std::fs;
use std::process::Command;

/// `dbfault ARGS` with `stdin`: (exit status, stdout, stderr).
fn dbfault(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let out = output_with_input(
        Command::new(env!("CARGO_BIN_EXE_dbfault"))
            .args(args)
            .current_dir(repo()),
        stdin.unwrap_or_default().as_bytes(),
    );
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn shipped(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap()
}

/// What `kubectl get wasmplugin -o yaml` prints: the manifest plus server-side fields, keys
/// sorted, no comments.
const FROM_KUBECTL: &str = "apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {\"apiVersion\":\"extensions.istio.io/v1alpha1\",\"kind\":\"WasmPlugin\"}
  creationTimestamp: \"2026-11-20T10:00:00Z\"
  generation: 3
  name: dbfault
  namespace: plants
  resourceVersion: \"123456\"
  uid: 5b3c1f5e-0000-4000-8000-000000000001
spec:
  failStrategy: FAIL_OPEN
  match:
  - mode: CLIENT
  pluginConfig:
    faults:
    - abort: {}
      enabled: false
      match:
        hosts:
        - firestore.googleapis.com
      name: firestore-outage
    - delay:
        latency: 300ms
      match:
        hosts:
        - firestore.googleapis.com
      name: firestore-slow
    metrics:
      enabled: true
  selector:
    matchLabels:
      app: plants
  type: NETWORK
  url: oci://registry.example.com/dbfault:0.1.0
";

#[test]
fn a_kubectl_pipeline_changes_one_value() {
    let (code, out, err) = dbfault(&["on", "firestore-outage", "-"], Some(FROM_KUBECTL));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        FROM_KUBECTL.replacen("      enabled: false\n", "      enabled: true\n", 1)
    );
    // A rule without `enabled` is on; switching it off adds the key beside its name.
    let (code, out, _) = dbfault(&["off", "firestore-slow", "-"], Some(FROM_KUBECTL));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        FROM_KUBECTL.replace(
            "      name: firestore-slow\n",
            "      name: firestore-slow\n      enabled: false\n"
        )
    );
    // The result is still a manifest Istio's CRD schema accepts (the check `make test` runs on
    // the shipped manifests, unknown fields included), and the module's parser reads the
    // switched rule.
    let dir = TempDir::new("cli-kubectl");
    let file = dir.path().join("wasmplugin.yaml");
    fs::write(&file, &out).unwrap();
    let checked = Command::new("node")
        .arg(repo().join("tests/istio-schema/validate.mjs"))
        .arg(&file)
        .current_dir(repo())
        .output_by_deadline()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (code, listed, _) = dbfault(&["list", "--output", "json", "-"], Some(&out));
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let rules = &listed[0]["rules"];
    assert_eq!(rules[1]["name"], "firestore-slow");
    assert_eq!(rules[1]["enabled"], false);
    assert_eq!(rules[1]["state"], "off");
}

/// The lines that differ between two texts, paired by position (an edit that keeps the layout
/// changes lines, never their number).
fn changed_lines<'a>(before: &'a str, after: &'a str) -> Vec<(&'a str, &'a str)> {
    assert_eq!(before.lines().count(), after.lines().count());
    before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect()
}

#[test]
fn the_shipped_files_keep_their_comments() {
    for (path, rule) in [
        ("istio/wasmplugin.yaml", "firestore-outage"),
        ("envoy/dbfault.yaml", "postgres-conflict"),
    ] {
        let text = shipped(path);
        let (code, on, err) = dbfault(&["on", rule, path], None);
        assert_eq!(code, 0, "{err}");
        // One line differs, and only in the value.
        let changed = changed_lines(&text, &on);
        assert_eq!(changed.len(), 1, "{path}: {changed:?}");
        let (before, after) = changed[0];
        assert!(
            before.contains("false") && after.contains("true"),
            "{after}"
        );
        // The file itself is untouched without --in-place; off again gives it back.
        assert_eq!(shipped(path), text);
        let (_, off, _) = dbfault(&["off", rule, "-"], Some(&on));
        assert_eq!(off, text);
    }
}

#[test]
fn in_place_replaces_the_file_atomically_and_keeps_its_mode() {
    let dir = TempDir::new("cli-in-place");
    let path = dir.path().join("dbfault.yaml");
    fs::write(&path, shipped("envoy/dbfault.yaml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let file = path.to_str().unwrap();
    let (code, out, err) = dbfault(&["on", "redis-slow", file, "--in-place"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{file}: ECDS resource dbfault: redis-slow on\n")
    );
    let (_, listed, _) = dbfault(&["list", file], None);
    let line = listed
        .lines()
        .find(|l| l.trim_start().starts_with("redis-slow "))
        .unwrap();
    assert!(line.contains(" active "), "{line}");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // Nothing left beside it.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    // Already on: nothing to write, said on stderr, still success.
    let (code, out, err) = dbfault(&["on", "redis-slow", file, "--in-place"], None);
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(err.contains("redis-slow already on"), "{err}");
}

#[test]
fn unknown_rules_invalid_configurations_and_usage_errors() {
    let (code, out, err) = dbfault(&["on", "firestore-outgae", "istio/wasmplugin.yaml"], None);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "istio/wasmplugin.yaml: no rule named \"firestore-outgae\" (rules: firestore-outage)\n"
    );
    // A configuration that is already invalid is never emitted, switched or not.
    let broken = FROM_KUBECTL.replace("latency: 300ms", "latency: soon");
    let (code, out, err) = dbfault(&["on", "firestore-outage", "-"], Some(&broken));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("invalid configuration") && err.contains("latency"),
        "{err}"
    );
    // Usage errors exit 2 and say how to call it.
    for args in [
        &["on", "x"][..],
        &["off", "x", "-", "--in-place"],
        &["on", "x", "f", "--frob"],
        &["list"],
        &["bogus"],
        &[],
    ] {
        let (code, _, err) = dbfault(args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("usage") || err.contains("--in-place"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = dbfault(&["on", "x", "/nonexistent.yaml"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    for cmd in ["check", "list", "on", "off", "show"] {
        let (code, out, _) = dbfault(&[cmd, "--help"], None);
        assert_eq!(code, 0);
        assert!(out.starts_with("usage: dbfault "), "{out}");
    }
}

#[test]
fn list_tells_what_is_active_now() {
    let config = r#"{"faults": [
      {"name": "off", "enabled": false, "match": {"hosts": ["h"]}, "abort": {}},
      {"name": "on", "match": {"hosts": ["h"]}, "abort": {}, "expiresAt": "2400-01-01T00:00:00Z"},
      {"name": "gone", "match": {"hosts": ["h"]}, "abort": {}, "expiresAt": "2020-01-01T00:00:00Z"},
      {"name": "later", "match": {"hosts": ["h"]}, "abort": {}, "window": {"start": "2400-01-01T00:00:00Z", "for": "1m"}},
      {"name": "relative", "match": {"hosts": ["h"]}, "abort": {}, "window": {"after": "1m", "for": "1m"}}]}"#;
    let (code, out, _) = dbfault(&["list", "--output=json", "-"], Some(config));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let states: Vec<(&str, &str)> = v[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("off", "off"),
            ("on", "active"),
            ("gone", "expired"),
            ("later", "inactive"),
            ("relative", "scheduled")
        ]
    );
    assert_eq!(
        v[0]["rules"][3]["detail"],
        "window opens at 2400-01-01T00:00:00Z"
    );
    let (code, text, _) = dbfault(&["list", "-"], Some(config));
    assert_eq!(code, 0);
    assert!(text.contains("expired at 2020-01-01T00:00:00Z"), "{text}");
    let (code, _, _) = dbfault(&["list", "-"], Some(r#"{"faults": 3}"#));
    assert_eq!(code, 1);
}

#[test]
fn list_tells_whether_a_sidecar_is_left_out() {
    let config = r#"{"faults": [{"name": "third", "sidecarPercentage": 33.3, "match": {"hosts": ["h"]}, "abort": {}}]}"#;
    // Which nodes are in is computed by Python's hashlib from the README's hash.
    let nodes: Vec<String> = (0..200)
        .map(|i| format!("sidecar~10.8.1.{i}~shop-{i}.shop~shop.svc.cluster.local"))
        .collect();
    let chosen = documented_sidecar_choice(&nodes, "third", 3330);
    let node = |want: bool| {
        nodes
            .iter()
            .zip(&chosen)
            .find(|(_, c)| **c == want)
            .map(|(n, _)| n.clone())
            .unwrap()
    };
    for (id, state) in [(node(true), "active"), (node(false), "left out")] {
        let (code, out, err) = dbfault(
            &["list", "--output", "json", "--node-id", &id, "-"],
            Some(config),
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["rules"][0]["state"], state, "{id}");
    }
    // Without a node id the share is described, not decided.
    let (_, out, _) = dbfault(&["list", "-"], Some(config));
    assert!(
        out.contains("on 33.3% of sidecars (chosen by node id)"),
        "{out}"
    );
    assert!(out.contains(" active "), "{out}");
}

#[test]
fn a_kustomize_render_is_checked_and_switched_as_a_whole() {
    // The overlay renders the WasmPlugin with a ServiceEntry and the PrometheusRule: those are
    // passed over, not refused.
    let rendered = Command::new("kubectl")
        .args(["kustomize", "examples/istio-overlay"])
        .current_dir(repo())
        .output_by_deadline()
        .expect("kubectl (on the machine image)");
    assert!(rendered.status.success());
    let rendered = String::from_utf8(rendered.stdout).unwrap();
    assert!(rendered.contains("kind: PrometheusRule") && rendered.contains("kind: ServiceEntry"));
    let (code, out, err) = dbfault(&["check", "-"], Some(&rendered));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("WasmPlugin dbfault: valid"), "{out}");
    let (code, on, err) = dbfault(&["on", "firestore-outage", "-"], Some(&rendered));
    assert_eq!(code, 0, "{err}");
    let changed = changed_lines(&rendered, &on);
    assert_eq!(changed, [("      enabled: false", "      enabled: true")]);
    // A stream with no configuration at all says what it did find.
    let (code, _, err) = dbfault(
        &["check", "-"],
        Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: plants}\n"),
    );
    assert_eq!(code, 1, "invalid input, not a usage error");
    assert!(err.contains("only Deployment plants"), "{err}");
}

#[test]
fn drill_prints_merges_and_refuses_what_it_cannot_do() {
    // Listed, printed as a configuration `check` calls valid, merged into the shipped
    // WasmPlugin (its own rule kept, after the drill's) and read back by `list`.
    let (status, out, _) = dbfault(&["drill", "--list"], None);
    assert_eq!(status, 0);
    for d in [
        "failover",
        "connection-storm",
        "idle-drop",
        "cache-miss",
        "slow-queries",
        "partition",
    ] {
        assert!(out.contains(&format!("{d}\n  imitates: ")), "{out}");
    }
    let (status, rules, err) = dbfault(
        &[
            "drill",
            "connection-storm",
            "--host",
            "pg",
            "--protocol",
            "postgres",
            "--start",
            "2030-01-01T00:00:00Z",
        ],
        None,
    );
    assert_eq!(status, 0, "{err}");
    let (status, checked, err) = dbfault(&["check", "-"], Some(&rules));
    assert_eq!(status, 0, "{err}");
    assert!(
        checked.contains(
            "rule drill-connection-storm-storm: refuse new sessions at startup with FATAL 53300"
        ),
        "{checked}"
    );
    let manifest = shipped("istio/wasmplugin.yaml");
    let (status, merged, err) = dbfault(
        &[
            "drill",
            "partition",
            "--host",
            "pg",
            "--start",
            "+1h",
            "--for",
            "10m",
            "-",
        ],
        Some(&manifest),
    );
    assert_eq!(status, 0, "{err}");
    let (status, listed, _) = dbfault(&["list", "-"], Some(&merged));
    assert_eq!(status, 0);
    let order: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        order,
        ["drill-partition-partition", "firestore-outage"],
        "{listed}"
    );
    // Usage errors: exit 2, saying what is missing.
    let (status, _, err) = dbfault(&["drill", "failover", "--host", "pg"], None);
    assert_eq!(status, 2);
    assert!(err.contains("needs --protocol"), "{err}");
    let (status, _, err) = dbfault(&["drill", "partition"], None);
    assert_eq!(status, 2);
    assert!(err.contains("needs --host"), "{err}");
    // A file that is not a configuration: exit 1.
    let (status, _, err) = dbfault(
        &["drill", "partition", "--host", "pg", "-"],
        Some("{\"faults\": 3}"),
    );
    assert_eq!(status, 1, "{err}");
}

#[test]
fn on_for_a_while_and_the_kill_switch() {
    // `on --for`: expiresAt is now + the duration, to the second, read back by `list`.
    let before = now_secs();
    let (code, on, err) = dbfault(
        &[
            "on",
            "firestore-outage",
            "istio/wasmplugin.yaml",
            "--for",
            "15m",
        ],
        None,
    );
    let after = now_secs();
    assert_eq!(code, 0, "{err}");
    let plugin = shipped("istio/wasmplugin.yaml");
    let line = on
        .lines()
        .find(|l| l.trim_start().starts_with("expiresAt:"))
        .unwrap();
    // One line added (under the name, indented as its siblings), one value changed.
    let without = on.replacen(&format!("{line}\n"), "", 1);
    let changed = changed_lines(&plugin, &without);
    assert_eq!(
        changed,
        [("      enabled: false", "      enabled: true")],
        "{on}"
    );
    assert!(line.starts_with("      expiresAt: \""), "{line}");
    let at = line.split('"').nth(1).unwrap();
    let at_secs = dbfault::config::time::parse(at).unwrap() / 1_000_000_000;
    assert!(
        (before + 900..=after + 901).contains(&at_secs),
        "{at}: not 15 minutes from now"
    );
    let (code, listed, _) = dbfault(&["list", "--output", "json", "-"], Some(&on));
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let rule = &listed[0]["rules"][0];
    assert_eq!(
        (rule["state"].as_str(), rule["expiresAt"].as_str()),
        (Some("active"), Some(at))
    );
    // Again later: the expiry is replaced, not added twice.
    let (code, again, _) = dbfault(&["on", "firestore-outage", "-", "--for", "1h"], Some(&on));
    assert_eq!(code, 0);
    assert_eq!(again.matches("expiresAt").count(), 1, "{again}");
    // `off --all` switches every rule off, in an ECDS file too, and nothing else.
    let ecds = shipped("envoy/dbfault.yaml");
    let (code, on_ecds, _) = dbfault(&["on", "postgres-slow", "-"], Some(&ecds));
    assert_eq!(code, 0);
    let (code, off, err) = dbfault(&["off", "--all", "-"], Some(&on_ecds));
    assert_eq!(code, 0, "{err}");
    let (_, listed, _) = dbfault(&["list", "--output", "json", "-"], Some(&off));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let rules = listed[0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 3, "{listed}");
    assert!(rules.iter().all(|r| r["state"] == "off"), "{listed}");
    assert_eq!(
        off, ecds,
        "all off again is the shipped file, byte for byte"
    );
    // `on --all` is not a thing; `--for` belongs to `on`.
    assert_eq!(dbfault(&["on", "--all", "-"], Some(&ecds)).0, 2);
    assert_eq!(dbfault(&["off", "x", "-", "--for", "1m"], Some(&ecds)).0, 2);
    assert_eq!(
        dbfault(&["on", "x", "-", "--for", "soon"], Some(&ecds)).0,
        2
    );
}

#[test]
fn a_kubectl_list_is_listed_and_switched_in_every_wasmplugin() {
    // What `kubectl get wasmplugin -A -o yaml` prints: a List of the WasmPlugins.
    let item = |ns: &str| -> String {
        FROM_KUBECTL
            .replace("namespace: plants", &format!("namespace: {ns}"))
            .lines()
            .enumerate()
            .map(|(i, l)| format!("{}{l}\n", if i == 0 { "- " } else { "  " }))
            .collect()
    };
    let list = format!(
        "apiVersion: v1\nitems:\n{}{}kind: List\nmetadata:\n  resourceVersion: \"\"\n",
        item("plants"),
        item("shop")
    );
    let (code, out, err) = dbfault(&["list", "-"], Some(&list));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("- (item 1): WasmPlugin dbfault"), "{out}");
    assert!(out.contains("- (item 2): WasmPlugin dbfault"), "{out}");
    let (code, on, err) = dbfault(&["on", "firestore-outage", "-"], Some(&list));
    assert_eq!(code, 0, "{err}");
    let changed = changed_lines(&list, &on);
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(changed
        .iter()
        .all(|(a, b)| a.replace("false", "true") == *b));
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    // `dbfault check F F F … | head -1`: the reader goes away after one line.
    let files: Vec<&str> = std::iter::repeat_n("istio/wasmplugin.yaml", 400).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbfault"))
        .arg("check")
        .args(&files)
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = finish_by_deadline(child, "dbfault check … | (closed)");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE as `cat` would be: {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// A file of `dbfault completion SHELL` in a temporary directory, and a PATH that finds this
/// build's `dbfault` first (the scripts call it for rule names).
fn completion_script(dir: &TempDir, shell: &str) -> (std::path::PathBuf, String) {
    let (code, script, err) = dbfault(&["completion", shell], None);
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join(format!("dbfault.{shell}"));
    fs::write(&file, script).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dbfault"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (file, path)
}

/// Runs `shell -c script` in the repository: its standard output.
fn shell_run(shell: &str, path: &str, script: &str) -> String {
    let out = Command::new(shell)
        .args(["-c", script])
        .env("PATH", path)
        .current_dir(repo())
        .output_by_deadline()
        .unwrap();
    assert!(out.status.success(), "{shell}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The non-empty lines `shell -c script` prints (printf prints one empty line for an empty list).
fn shell_lines(shell: &str, path: &str, script: &str) -> Vec<String> {
    shell_run(shell, path, script)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Words as a shell array's single-quoted elements.
fn quote_words(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    quoted.join(" ")
}

#[test]
fn completions_offer_commands_options_values_and_the_files_rule_names() {
    let dir = TempDir::new("completion");
    let rules = "examples/istio-overlay/rules.yaml";
    // The rule names as `list` gives them, from the file itself.
    let (_, names, _) = dbfault(&["list", "--output", "names", rules], None);
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 5, "{names:?}");

    // bash: COMP_WORDS/COMP_CWORD as readline sets them, COMPREPLY read back.
    let (file, path) = completion_script(&dir, "bash");
    let bash = |words: &[&str], cword: usize| -> Vec<String> {
        let script = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; _dbfault; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            quote_words(words)
        );
        shell_lines("bash", &path, &script)
    };
    assert_eq!(bash(&["dbfault", "st"], 1), ["status"]);
    assert_eq!(bash(&["dbfault", "on", "", rules], 2), names);
    assert_eq!(
        bash(&["dbfault", "on", "postgres-f", rules], 2),
        ["postgres-failover", "postgres-failover-new"]
    );
    assert_eq!(
        bash(&["dbfault", "off", "--all", "examples/istio-overlay/ru"], 3),
        [rules]
    );
    assert_eq!(
        bash(&["dbfault", "check", "--s"], 2),
        ["--strict", "--skip-unknown"]
    );
    assert_eq!(
        bash(&["dbfault", "drill", "failover", "--protocol", ""], 4),
        ["postgres", "mysql", "redis"]
    );
    assert_eq!(bash(&["dbfault", "drill", "cache"], 2), ["cache-miss"]);
    assert_eq!(
        bash(&["dbfault", "list", "--output", ""], 3),
        ["text", "json", "names"]
    );
    assert!(bash(&["dbfault", "status", "f", "--wait", ""], 4).is_empty());

    // zsh: the script's own logic, with compadd and _files standing in for the completion system.
    let (file, path) = completion_script(&dir, "zsh");
    let zsh = |words: &[&str], current: usize| -> Vec<String> {
        let script = format!(
            "compdef() {{ :; }}; compadd() {{ [[ $1 == -- ]] && shift; print -rl -- \"$@\"; }}; _files() {{ print -r -- '<files>'; }}; source {}; words=({}); CURRENT={current}; _dbfault",
            file.display(),
            quote_words(words)
        );
        shell_lines("zsh", &path, &script)
    };
    assert_eq!(zsh(&["dbfault", "on", "", rules], 3), names);
    assert_eq!(
        zsh(&["dbfault", "drill", "x", "--mode", ""], 5),
        ["blackhole", "close"]
    );
    assert_eq!(zsh(&["dbfault", "off", "--all", ""], 4), ["<files>"]);
    assert!(zsh(&["dbfault", ""], 2).contains(&"completion".to_owned()));

    // fish: its own `complete -C`.
    let (file, path) = completion_script(&dir, "fish");
    let fish = |line: &str| -> Vec<String> {
        let script = format!("source {}; complete -C '{line}'", file.display());
        shell_run("fish", &path, &script)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(fish("dbfault sho"), ["show"]);
    let offered = fish(&format!("dbfault on {rules} "));
    for n in &names {
        assert!(offered.contains(&n.to_string()), "{n}: {offered:?}");
    }
    assert_eq!(fish("dbfault list --output "), ["json", "names", "text"]);
    assert_eq!(fish("dbfault check --sk"), ["--skip-unknown"]);

    // An unknown shell is a usage error.
    assert_eq!(dbfault(&["completion", "tcsh"], None).0, 2);
}

#[test]
fn the_man_page_renders_without_warnings_and_says_what_help_says() {
    let (code, page, _) = dbfault(&["man"], None);
    assert_eq!(code, 0);
    let dir = TempDir::new("man");
    let file = dir.path().join("dbfault.1");
    fs::write(&file, &page).unwrap();
    // groff's own check: every warning enabled, nothing said.
    let checked = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&file)
        .output_by_deadline()
        .expect("groff (with man-db on the machine image)");
    assert!(checked.status.success(), "{checked:?}");
    assert_eq!(String::from_utf8_lossy(&checked.stderr), "");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "120")
        .env("MANPAGER", "cat")
        .output_by_deadline()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    // Each command's help, as --help prints it, is in the page.
    for cmd in ["check", "list", "on", "drill", "status", "completion"] {
        let (_, help, _) = dbfault(&[cmd, "--help"], None);
        let first = help.lines().next().unwrap();
        assert!(text.contains(first), "{cmd}: {first:?} not in the page");
    }
}

/// `on`, `off`, `list` and `show` say what is wrong with a file as `check` does, and exit 1 for
/// any invalid input (2 only for usage and unreadable files).
#[test]
fn every_command_reads_a_broken_file_as_check_does() {
    let dir = TempDir::new("broken");
    let comma = dir.path().join("comma.json");
    fs::write(&comma, r#"{"faults": [],}"#).unwrap();
    let latin = dir.path().join("latin.yaml");
    fs::write(&latin, b"faults: [\xe9]\n").unwrap();
    let (comma, latin) = (comma.to_str().unwrap(), latin.to_str().unwrap());
    let overlay = "examples/istio-overlay/kustomization.yaml";
    for args in [
        vec!["on", "x", comma],
        vec!["off", "--all", comma],
        vec!["list", comma],
        vec!["show", comma],
    ] {
        let (code, _, err) = dbfault(&args, None);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(
            err.trim(),
            format!("{comma}:1:15: not valid JSON: trailing comma"),
            "{args:?}"
        );
    }
    for args in [vec!["on", "x", latin], vec!["list", latin]] {
        let (code, _, err) = dbfault(&args, None);
        assert_eq!(
            (code, err.trim()),
            (1, format!("{latin}: not UTF-8 text").as_str())
        );
    }
    let (code, _, err) = dbfault(&["on", "x", overlay], None);
    assert_eq!(code, 1);
    assert!(err.contains("(only Kustomization)"), "{err}");
    let (code, _, _) = dbfault(&["on", "x", "/nonexistent/f.yaml"], None);
    assert_eq!(code, 2);
}
