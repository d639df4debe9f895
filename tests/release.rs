//! What a user checks before adopting: one version everywhere, `make release` and `make push`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault::config::digest::{hex, sha256};
use dbfault_testkit::{repo, run_ok, OutputByDeadline, TempDir};
use std::fs;
use std::process::Command;

fn version() -> String {
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

/// Runs `cmd` in the repository; its standard output.
fn run(cmd: &mut Command) -> String {
    run_ok(cmd.current_dir(repo()))
}

#[test]
fn the_version_lives_in_cargo_toml_and_everything_follows_it() {
    let v = version();
    let out = run(Command::new(env!("CARGO_BIN_EXE_dbfault")).arg("--version"));
    assert_eq!(out, format!("dbfault {v}\n"));
    let changelog = fs::read_to_string(repo().join("CHANGELOG.md")).unwrap();
    let newest = changelog
        .lines()
        .filter_map(|l| l.strip_prefix("## ["))
        .find(|l| !l.starts_with("Unreleased"))
        .unwrap();
    assert!(newest.starts_with(&format!("{v}]")), "{newest}");
    // The shipped manifest's placeholder image carries the same tag.
    let plugin = fs::read_to_string(repo().join("istio/wasmplugin.yaml")).unwrap();
    assert!(plugin.contains(&format!("/dbfault:{v}\n")), "{plugin}");
    let license = fs::read_to_string(repo().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
}

/// What `make release-check` left (it runs before the tests: building a release rebuilds the
/// module the other tests are running): `make release`'s artifacts and output, an image pushed
/// with `make push` to a local OCI layout, and `make push` to the placeholder registry.
fn release_check(file: &str) -> std::path::PathBuf {
    let path = repo().join("target/release-check").join(file);
    assert!(
        path.exists(),
        "{} missing: run `make release-check` (make test does)",
        path.display()
    );
    path
}

#[test]
fn make_release_and_make_push() {
    let v = version();
    let out = fs::read_to_string(release_check("release.log")).unwrap();
    let dir = repo().join(format!("target/release-artifacts/dbfault-{v}"));
    // Every artifact is listed in SHA256SUMS and matches it.
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let names: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert!(
        names.contains(&format!("dbfault-{v}.wasm").as_str()),
        "{sums}"
    );
    assert!(
        names.contains(&format!("dbfault-{v}-oci.tar").as_str()),
        "{sums}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("dbfault-{v}-linux-"))),
        "{sums}"
    );
    let checked = Command::new("sha256sum")
        .args(["--check", "SHA256SUMS"])
        .current_dir(&dir)
        .output_by_deadline()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    // The binary in the release is the command, at this version.
    let bin = names.iter().find(|n| n.contains("-linux-")).unwrap();
    let said = run(Command::new(dir.join(bin)).arg("--version"));
    assert_eq!(said, format!("dbfault {v}\n"));
    // The image tar is the layout skopeo reads, with the digest make printed.
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("image digest (the WasmPlugin pin): "))
        .unwrap()
        .to_owned();
    let unpacked = TempDir::new("release-oci");
    run(Command::new("tar")
        .arg("-xf")
        .arg(dir.join(format!("dbfault-{v}-oci.tar")))
        .arg("-C")
        .arg(unpacked.path()));
    let raw = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:{v}", unpacked.path().display())));
    let manifest_digest = format!("sha256:{}", hex(&sha256(raw.as_bytes())));
    assert_eq!(manifest_digest, digest);
    // make push: to a skopeo destination (a registry in real use), digest preserved.
    let dest = format!("oci:{}:{v}", release_check("img").display());
    let inspect: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").arg("inspect").arg(&dest))).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    // The placeholder registry is refused with a usage message.
    let status = fs::read_to_string(release_check("placeholder.status")).unwrap();
    assert_eq!(status.trim(), "2");
    let said = fs::read_to_string(release_check("placeholder.log")).unwrap();
    assert!(
        said.contains("registry.example.com is a placeholder"),
        "{said}"
    );
}
