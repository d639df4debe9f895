//! `dbfault-check`, the command a CI pipeline runs before pushing a WasmPlugin.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{repo, TempDir};
use std::io::Write;
use std::process::{Command, Stdio};

fn check(args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbfault-check"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
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
        out.contains("rule postgres-slow: delay client → database by 300 ms"),
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
            "rule half: cut after 4096 bytes; enabled; hosts *.db.svc; 50.00% of connections"
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

    let (code, out) = check(&["-"], Some("kind: Deployment\nmetadata: {name: x}\n"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a dbfault configuration"), "{out}");

    let (code, out) = check(&["/nonexistent/file.yaml"], None);
    assert_eq!(code, 2, "{out}");
}
