//! Istio: the manifests in istio/ and the example overlay against Istio's CRD schemas (as files
//! and as kustomize renders them), the plugin configuration they carry against the module's own
//! parser, the stats-tags settings, the OCI image and its pin, and an Envoy configured the way
//! istiod would configure a `plants` sidecar for them (on Envoy 1.40.0 and 1.36.4).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault::config::digest::{hex, sha256};
use dbfault::plugin::Config;
use dbfault_testkit::{
    envoy_1_36_bin, envoy_bin, istiod_ecds, replace_once, repo, run_ok, sidecar_bootstrap,
    tls_echo_once, wait_for, wasm_path, Envoy, OutputByDeadline, TempDir, TlsEchoServer,
    TlsSession,
};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MANIFESTS: [&str; 3] = [
    "istio/wasmplugin.yaml",
    "examples/istio-overlay/serviceentry-firestore.yaml",
    "examples/istio-overlay/serviceentry-postgres.yaml",
];
const OVERLAY: &str = "examples/istio-overlay";

fn manifest(path: &str) -> Value {
    serde_yaml_ng::from_str(&fs::read_to_string(repo().join(path)).unwrap()).unwrap()
}

/// `node tests/istio-schema/validate.mjs FILES...`: (success, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("node")
        .arg(repo().join("tests/istio-schema/validate.mjs"))
        .args(files)
        .current_dir(repo())
        .output_by_deadline()
        .expect("node (run `make test`, which installs the schema package)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn manifests_validate_against_istio_crd_schemas() {
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| repo().join(m)).collect();
    let (ok, out) = validate(&files);
    assert!(ok, "{out}");
    assert!(out.contains("valid: 3 document(s)"), "{out}");
}

#[test]
fn a_misspelled_field_is_caught() {
    let dir = TempDir::new("istio-typo");
    let cases = [
        (
            "istio/wasmplugin.yaml",
            "  selector:",
            "  selectr:",
            "'\"selectr\"' does not exist",
        ),
        (
            "istio/wasmplugin.yaml",
            "failStrategy: FAIL_OPEN",
            "failStrategy: FAIL_OPN",
            "failStrategy",
        ),
        (
            "istio/wasmplugin.yaml",
            "  - mode: CLIENT",
            "  - mod: CLIENT",
            "'\"mod\"' does not exist",
        ),
        (
            "examples/istio-overlay/serviceentry-firestore.yaml",
            "  resolution: DNS",
            "  resolutoin: DNS",
            "'\"resolutoin\"' does not exist",
        ),
        (
            "examples/istio-overlay/serviceentry-postgres.yaml",
            "    protocol: TCP",
            "    protocl: TCP",
            "'\"protocl\"' does not exist",
        ),
    ];
    for (i, (file, from, to, want)) in cases.iter().enumerate() {
        let text = fs::read_to_string(repo().join(file)).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {file}");
        let bad = dir.path().join(format!("bad-{i}.yaml"));
        fs::write(&bad, text.replace(from, to)).unwrap();
        let (ok, out) = validate(&[bad]);
        assert!(!ok, "{to:?} in {file} passed validation: {out}");
        assert!(out.contains(want), "{to:?}: {out}");
    }
}

#[test]
fn the_manifests_say_what_the_module_and_the_labels_need() {
    let plugin = manifest("istio/wasmplugin.yaml");
    let spec = &plugin["spec"];
    assert_eq!(spec["type"], "NETWORK");
    assert_eq!(spec["failStrategy"], "FAIL_OPEN");
    assert_eq!(spec["match"][0]["mode"], "CLIENT");
    assert!(spec["url"].as_str().unwrap().starts_with("oci://"));
    // The pluginConfig goes through the parser the module runs (as JSON, as istiod sends it).
    let json = serde_json::to_string(&spec["pluginConfig"]).unwrap();
    let config = Config::parse(json.as_bytes()).unwrap_or_else(|e| panic!("pluginConfig: {e}"));
    assert!(config.metrics.enabled);
    let outage = config
        .faults
        .iter()
        .find(|r| r.name == "firestore-outage")
        .unwrap();
    assert!(!outage.enabled, "the shipped outage rule must be off");

    let se = manifest("examples/istio-overlay/serviceentry-firestore.yaml");
    assert_eq!(se["spec"]["location"], "MESH_EXTERNAL");
    assert_eq!(se["spec"]["resolution"], "DNS");
    assert_eq!(
        se["spec"]["ports"][0],
        json!({"number": 443, "name": "https", "protocol": "HTTPS"})
    );
}

/// `kubectl ARGS` in the repository (`kustomize` and `patch --local` need no cluster): its output.
fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .current_dir(repo())
        .output_by_deadline()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl {args:?}: {e}. These tests need kubectl (1.32 is on the machine image; \
                 no cluster is needed)"
            )
        });
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Deployment of the app with an annotation and a container of its own.
const PLANTS_DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: plants
  namespace: plants
spec:
  selector:
    matchLabels: {app: plants}
  template:
    metadata:
      labels: {app: plants}
      annotations:
        prometheus.io/scrape: \"true\"
    spec:
      containers:
      - name: plants
        image: plants:1
";

/// The three ways to give sidecars dbfault's stats tags each carry exactly `metrics::LABELS`, in
/// Istio's spelling: ProxyConfig's `extraStatTags` (mesh/v1alpha1/proxy.proto, `repeated string
/// extra_stat_tags`), held by MeshConfig as `defaultConfig` (config.proto, `default_config`).
/// Istio reads the annotation leniently (an unknown field is ignored), so a misspelling would
/// only show as labels missing in Prometheus: the exact objects are compared here.
#[test]
fn the_stats_tags_settings_carry_every_label() {
    let labels = json!(dbfault::metrics::LABELS);

    // Per pod: the patch, applied by kubectl to a Deployment.
    let dir = TempDir::new("stat-tags");
    let deployment = dir.path().join("deployment.yaml");
    fs::write(&deployment, PLANTS_DEPLOYMENT).unwrap();
    let patched = kubectl(&[
        "patch",
        "--local",
        "-f",
        deployment.to_str().unwrap(),
        "--patch-file",
        "istio/stat-tags/annotation-patch.yaml",
        "-o",
        "yaml",
    ]);
    let patched: Value = serde_yaml_ng::from_str(&patched).unwrap();
    let template = &patched["spec"]["template"];
    let annotations = template["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["prometheus.io/scrape", "proxy.istio.io/config"],
        "the app's own annotation stays, one is added"
    );
    let proxy_config: Value =
        serde_yaml_ng::from_str(annotations["proxy.istio.io/config"].as_str().unwrap()).unwrap();
    assert_eq!(proxy_config, json!({"extraStatTags": labels}));
    assert_eq!(template["spec"]["containers"][0]["image"], "plants:1");

    // Mesh-wide with Helm: the istiod chart's values.
    assert_eq!(
        manifest("istio/stat-tags/istiod-values.yaml"),
        json!({"meshConfig": {"defaultConfig": {"extraStatTags": labels}}})
    );

    // Mesh-wide with istioctl: the README's `--set` flags, index by index, next to the user's own
    // IstioOperator file (`-f`), without which istioctl would reinstall the default profile.
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let flag = "meshConfig.defaultConfig.extraStatTags[";
    let start = readme
        .find("istioctl install -f ")
        .expect("istioctl in README");
    let set: Vec<(usize, String)> = readme
        .match_indices(flag)
        .map(|(at, _)| {
            assert!(at > start, "a --set flag before `istioctl install -f`");
            let (index, rest) = readme[at + flag.len()..].split_once("]=").unwrap();
            let tag = rest.split(|c: char| !c.is_ascii_alphanumeric()).next();
            (index.parse().unwrap(), tag.unwrap().to_owned())
        })
        .collect();
    let want: Vec<(usize, String)> = dbfault::metrics::LABELS
        .iter()
        .enumerate()
        .map(|(i, l)| (i, (*l).to_owned()))
        .collect();
    assert_eq!(set, want);
}

/// `to` relative to the directory `from`: kustomize takes no absolute path to a base.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (
        fs::canonicalize(from).unwrap(),
        fs::canonicalize(to).unwrap(),
    );
    let mut path: PathBuf = from.components().skip(1).map(|_| "..").collect();
    path.push(to.strip_prefix("/").unwrap());
    path
}

/// `kubectl kustomize DIR`: the documents it renders.
fn kustomize(dir: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = kubectl(&["kustomize", dir.to_str().unwrap()]);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect()
}

/// The Istio objects of `docs` through validate.mjs (written to `file`). Other kinds may only be
/// the base's PrometheusRule, which has no Istio schema.
fn validate_rendered(docs: &[Value], file: &Path) -> (bool, String) {
    let mut text = String::new();
    for doc in docs {
        if doc["apiVersion"].as_str().unwrap().contains(".istio.io/") {
            text += "---\n";
            text += &serde_yaml_ng::to_string(doc).unwrap();
        } else {
            assert_eq!(doc["kind"], "PrometheusRule", "{doc}");
        }
    }
    fs::write(file, text).unwrap();
    validate(&[file.to_owned()])
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// `kubectl kustomize` of the base and of the example overlay (as shipped, and copied for another
/// app with the pin `make oci` prints pasted in): valid against Istio's CRD schemas, and every
/// value the overlay sets lands in what would be applied.
#[test]
fn the_kustomize_base_and_the_example_overlay_render_valid_manifests() {
    let dir = TempDir::new("kustomize");
    let rendered = dir.path().join("rendered.yaml");

    // The base: the shipped WasmPlugin as it is, nothing else (the alert rules are an optional
    // component: a cluster without the Prometheus Operator has no PrometheusRule kind).
    let base = kustomize(&repo().join("istio"));
    let (ok, out) = validate_rendered(&base, &rendered);
    assert!(ok, "{out}");
    assert_eq!(
        find(&base, "WasmPlugin"),
        [&manifest("istio/wasmplugin.yaml")]
    );
    assert_eq!(base.len(), 1, "nothing app-specific in the base");

    // The example overlay as shipped: the plants app, a pin that matches no image.
    let plants = kustomize(&repo().join(OVERLAY));
    let (ok, out) = validate_rendered(&plants, &rendered);
    assert!(ok, "{out}");
    let zeros = "0".repeat(64);
    let plugin = find(&plants, "WasmPlugin")[0];
    assert_eq!(
        plugin["spec"]["selector"],
        json!({"matchLabels": {"app": "plants"}})
    );
    assert_eq!(
        plugin["spec"]["url"],
        format!("oci://registry.example.com/dbfault@sha256:{zeros}")
    );
    assert_eq!(plugin["spec"]["sha256"], zeros);
    assert_eq!(find(&plants, "ServiceEntry").len(), 1);
    for doc in &plants {
        assert_eq!(doc["metadata"]["namespace"], "plants", "{doc}");
    }
    // The alert rules through the component, as generated.
    let mut alerts = manifest("istio/alerts/prometheusrule.yaml");
    alerts["metadata"]["namespace"] = json!("plants");
    assert_eq!(find(&plants, "PrometheusRule"), [&alerts]);
    // The rules are rules.yaml's (its faults replace the base's list), the metrics the base's.
    let rules_patch = manifest(&format!("{OVERLAY}/rules.yaml"));
    assert_eq!(
        plugin["spec"]["pluginConfig"]["faults"],
        rules_patch["spec"]["pluginConfig"]["faults"]
    );
    assert_eq!(
        plugin["spec"]["pluginConfig"]["metrics"],
        manifest("istio/wasmplugin.yaml")["spec"]["pluginConfig"]["metrics"]
    );

    // Copied for another app: its namespace, its pods' labels and the printed pin.
    let oci = build_oci(&dir.path().join("oci"));
    let app = dir.path().join("app");
    fs::create_dir_all(&app).unwrap();
    for entry in fs::read_dir(repo().join(OVERLAY)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), app.join(entry.file_name())).unwrap();
    }
    let kustomization = fs::read_to_string(app.join("kustomization.yaml")).unwrap();
    let pin_url = oci.pin["url"].as_str().unwrap();
    let pin_sha256 = oci.pin["sha256"].as_str().unwrap();
    // Copied out, the overlay names the base and the component by another path (as it would
    // name a released base, `https://github.com/OWNER/dbfault//istio?ref=vX.Y.Z`).
    let base_path = relative(&app, &repo().join("istio"));
    let mut text = replace_once(
        &kustomization,
        "- ../../istio\n",
        &format!("- {}\n", base_path.display()),
    );
    text = replace_once(
        &text,
        "- ../../istio/alerts\n",
        &format!("- {}/alerts\n", base_path.display()),
    );
    for (from, to) in [
        ("namespace: plants", "namespace: shop"),
        // The private registry's pull secret, as the comment shows it.
        (
            "    # - op: add\n    #   path: /spec/imagePullSecret\n    #   value: dbfault-pull\n",
            "    - op: add\n      path: /spec/imagePullSecret\n      value: dbfault-pull\n",
        ),
        ("        app: plants", "        app: checkout"),
        (
            &format!("oci://registry.example.com/dbfault@sha256:{zeros}"),
            pin_url,
        ),
        (&format!("\"{zeros}\""), &format!("\"{pin_sha256}\"")),
    ] {
        text = replace_once(&text, from, to);
    }
    fs::write(app.join("kustomization.yaml"), &text).unwrap();
    let shop = kustomize(&app);
    let (ok, out) = validate_rendered(&shop, &rendered);
    assert!(ok, "{out}");
    let plugin = find(&shop, "WasmPlugin")[0];
    assert_eq!(
        plugin["spec"]["selector"],
        json!({"matchLabels": {"app": "checkout"}})
    );
    assert_eq!(plugin["spec"]["url"], pin_url);
    assert_eq!(
        plugin["spec"]["sha256"],
        oci.digest.strip_prefix("sha256:").unwrap()
    );
    assert_eq!(plugin["spec"]["imagePullSecret"], "dbfault-pull");
    for doc in &shop {
        assert_eq!(doc["metadata"]["namespace"], "shop", "{doc}");
    }
    assert_eq!(find(&shop, "PrometheusRule").len(), 1);

    // The git path: a rule switched on in rules.yaml for 30 minutes, in place; the render
    // carries it, and `dbfault check` calls the render valid.
    let switched = Command::new(env!("CARGO_BIN_EXE_dbfault"))
        .args([
            "on",
            "postgres-read-only",
            "rules.yaml",
            "--for",
            "30m",
            "--in-place",
        ])
        .current_dir(&app)
        .output_by_deadline()
        .unwrap();
    assert!(switched.status.success(), "{switched:?}");
    let shop = kustomize(&app);
    let (ok, out) = validate_rendered(&shop, &rendered);
    assert!(ok, "{out}");
    let faults = &find(&shop, "WasmPlugin")[0]["spec"]["pluginConfig"]["faults"];
    let rule = faults
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "postgres-read-only")
        .unwrap();
    assert_eq!(rule["enabled"], true);
    let expires = dbfault::config::time::parse(rule["expiresAt"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let ahead = Duration::from_nanos(expires.saturating_sub(now));
    assert!(
        (Duration::from_secs(29 * 60)..=Duration::from_secs(31 * 60)).contains(&ahead),
        "{rule}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_dbfault"))
        .args(["check", rendered.to_str().unwrap()])
        .output_by_deadline()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("rule postgres-read-only: 100% of write statements"),
        "{said}"
    );
    assert!(!said.contains("warning"), "{said}");

    // Without the component (no Prometheus Operator): no PrometheusRule at all.
    fs::write(
        app.join("kustomization.yaml"),
        replace_once(&text, &format!("- {}/alerts\n", base_path.display()), ""),
    )
    .unwrap();
    assert!(find(&kustomize(&app), "PrometheusRule").is_empty());

    // A misspelled path in the overlay's patch: kustomize adds the field (a JSON patch `replace`
    // of a missing field adds it there) and the schema check of the render refuses it.
    fs::write(
        app.join("kustomization.yaml"),
        replace_once(&text, "path: /spec/url\n", "path: /spec/urll\n"),
    )
    .unwrap();
    let (ok, out) = validate_rendered(&kustomize(&app), &rendered);
    assert!(!ok, "/spec/urll passed validation: {out}");
    assert!(out.contains("'\"urll\"' does not exist"), "{out}");
}

/// What `scripts/build-oci.py` printed for the built module (tag `test`, default image name).
struct Oci {
    /// The image manifest's digest, `sha256:<hex>`.
    digest: String,
    /// The command to push it.
    push: String,
    /// The pin, as the YAML to paste into the WasmPlugin's spec: `url` and `sha256`.
    pin: Value,
    /// The pin's lines as printed.
    pin_text: String,
}

fn build_oci(layout: &Path) -> Oci {
    let text = run_ok(
        Command::new("python3")
            .arg(repo().join("scripts/build-oci.py"))
            .arg("--wasm")
            .arg(wasm_path())
            .arg("--out")
            .arg(layout)
            .args(["--tag", "test"]),
    );
    let digest = text.split(' ').nth(1).unwrap().to_owned();
    let push = text
        .lines()
        .find_map(|l| l.strip_prefix("push: "))
        .unwrap_or_else(|| panic!("no push command in:\n{text}"))
        .to_owned();
    let pin_text: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| format!("{l}\n"))
        .collect();
    let pin = serde_yaml_ng::from_str(&pin_text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    Oci {
        digest,
        push,
        pin,
        pin_text,
    }
}

#[test]
fn the_oci_image_round_trips_through_skopeo() {
    let dir = TempDir::new("oci");
    let layout = dir.path().join("oci");
    let oci = build_oci(&layout);
    let digest = &oci.digest;
    let image = format!("oci:{}:test", layout.display());

    // The pin is the digest of the image manifest: what Istio's agent compares `spec.sha256` with
    // for an `oci://` URL (the SHA-256 of the manifest's bytes), and what `@sha256:` names.
    let pinned = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        oci.pin,
        json!({"url": format!("oci://registry.example.com/dbfault@{digest}"), "sha256": pinned}),
        "{}",
        oci.pin_text
    );
    assert_eq!(
        oci.push,
        format!(
            "skopeo copy --preserve-digests {image} docker://registry.example.com/dbfault:test"
        )
    );
    let seen = run_ok(Command::new("skopeo").args(["inspect", "--format", "{{.Digest}}", &image]));
    assert_eq!(seen.trim(), digest);

    let raw = run_ok(Command::new("skopeo").args(["inspect", "--raw", &image]));
    assert_eq!(
        hex(&sha256(raw.as_bytes())),
        pinned,
        "the manifest's own digest"
    );
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        1,
        "Istio's compat format wants exactly one layer"
    );
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // skopeo checks every digest and size while copying; with --preserve-digests (as in the push
    // command printed) the copy's manifest is byte for byte the one pinned.
    let copied = dir.path().join("copied");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--preserve-digests", &image])
            .arg(format!("dir:{}", copied.display())),
    );
    assert_eq!(
        hex(&sha256(&fs::read(copied.join("manifest.json")).unwrap())),
        pinned
    );
    let layer_digest = layers[0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let extracted = dir.path().join("extracted");
    fs::create_dir_all(&extracted).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(copied.join(layer_digest))
            .arg("-C")
            .arg(&extracted),
    );
    let names: Vec<_> = fs::read_dir(&extracted)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["plugin.wasm"]);
    assert!(
        fs::read(extracted.join("plugin.wasm")).unwrap() == fs::read(wasm_path()).unwrap(),
        "plugin.wasm differs from the module"
    );

    // Reproducible: the same module gives the same digest.
    assert_eq!(&build_oci(&dir.path().join("again")).digest, digest);
}

fn push(dir: &Path, ecds: &str) {
    let tmp = dir.join(".ecds.json.tmp");
    fs::write(&tmp, ecds).unwrap();
    fs::rename(&tmp, dir.join("ecds.json")).unwrap();
}

const SNI: &str = "firestore.googleapis.com";

/// The `plants` story on one Envoy binary: metrics per database, the outage switched on by
/// editing the WasmPlugin's pluginConfig (new and pooled connections fail), and off again.
fn plants_sidecar_scenario(envoy_binary: &Path) {
    let firestore = TlsEchoServer::start();
    let dir = TempDir::new("istio-sidecar");
    let bootstrap = sidecar_bootstrap(&dir.path().join("ecds.json"), firestore.port);
    fs::write(dir.path().join("envoy.yaml"), bootstrap).unwrap();
    let mut plugin = manifest("istio/wasmplugin.yaml");
    let module = wasm_path();
    let mut version = 1;
    fs::write(
        dir.path().join("ecds.json"),
        istiod_ecds(&plugin, &module, version),
    )
    .unwrap();
    let envoy = Envoy::launch(dir, envoy_binary, 2);
    let port = envoy.listener("0.0.0.0_443");

    // The app: a pooled connection and fresh ones, all fine.
    let mut pooled = TlsSession::open(port, SNI);
    assert_eq!(pooled.echo("plant 1").as_deref(), Some("plant 1"));
    assert!(tls_echo_once(port, SNI, "plant 2"));
    wait_for("the firestore series", Duration::from_secs(10), || {
        let m = |n| envoy.metric(n, SNI).unwrap_or(0.0);
        (m("dbfault_upstream_cx_total") >= 2.0 && m("dbfault_upstream_tx_bytes_total") > 0.0)
            .then_some(())
    });
    assert_eq!(envoy.fault_active("firestore-outage"), Some(0.0));

    // The operator switches the outage on (`kubectl patch` of pluginConfig); istiod re-renders.
    plugin["spec"]["pluginConfig"]["faults"][0]["enabled"] = json!(true);
    version += 1;
    push(envoy.dir.path(), &istiod_ecds(&plugin, &module, version));
    assert!(
        pooled.ended_within(Duration::from_secs(2)),
        "the pooled connection survived the outage"
    );
    // The resource version in the VM environment changed. Envoy 1.40 then builds a new VM and
    // the pooled connection's old VM learns of the outage through shared data; Envoy 1.36 keeps
    // the VM. Either way the connection must be gone; which path ran is reported.
    let via_shared = envoy
        .log()
        .contains("configuration updated from another VM");
    eprintln!(
        "{}: outage reached the pooled connection {}",
        envoy_binary.display(),
        if via_shared {
            "from a new VM, through shared data"
        } else {
            "in the same VM"
        }
    );
    wait_for("new connections to fail", Duration::from_secs(5), || {
        (!tls_echo_once(port, SNI, "plant 3")).then_some(())
    });
    assert!(!tls_echo_once(port, SNI, "plant 4"));
    assert_eq!(envoy.fault_active("firestore-outage"), Some(1.0));
    assert!(envoy.injected(SNI, "firestore-outage") >= 2.0);

    // And off: the app recovers.
    plugin["spec"]["pluginConfig"]["faults"][0]["enabled"] = json!(false);
    version += 1;
    push(envoy.dir.path(), &istiod_ecds(&plugin, &module, version));
    wait_for("the app to recover", Duration::from_secs(5), || {
        tls_echo_once(port, SNI, "plant 5").then_some(())
    });
    let mut pooled = TlsSession::open(port, SNI);
    assert_eq!(pooled.echo("plant 6").as_deref(), Some("plant 6"));
    assert_eq!(envoy.fault_active("firestore-outage"), Some(0.0));
}

#[test]
fn plants_sidecar_on_envoy_1_40() {
    plants_sidecar_scenario(&envoy_bin());
}

#[test]
fn plants_sidecar_on_envoy_1_36() {
    plants_sidecar_scenario(&envoy_1_36_bin());
}
