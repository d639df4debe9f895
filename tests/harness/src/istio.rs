//! What Istio would give a sidecar of the `plants` app: the bootstrap in
//! tests/istio-sidecar/bootstrap.yaml and the ECDS resource istiod renders for a WasmPlugin.

use crate::core::repo;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;

/// tests/istio-sidecar/bootstrap.yaml with its ECDS file at `ecds` (watched in its directory)
/// and the Firestore cluster's endpoint on 127.0.0.1:`firestore_port`.
pub fn sidecar_bootstrap(ecds: &Path, firestore_port: u16) -> String {
    let dir = ecds.parent().expect("the ECDS file's directory");
    let mut text = fs::read_to_string(repo().join("tests/istio-sidecar/bootstrap.yaml")).unwrap();
    for (token, value) in [
        ("__ECDS_PATH__", ecds.display().to_string()),
        ("__ECDS_DIR__", dir.display().to_string()),
        ("__FIRESTORE_PORT__", firestore_port.to_string()),
    ] {
        text = replace_once(&text, token, &value);
    }
    text
}

/// `text` with the one occurrence of `from` replaced; panics when there is not exactly one, so
/// that a change to a shipped file cannot silently leave a test running something else.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected {from:?} exactly once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// The ECDS resource istiod builds for a `type: NETWORK` WasmPlugin (pilot/pkg/model's
/// buildPluginConfig, with istio-agent having fetched the image into the local file `module`).
pub fn istiod_ecds(plugin: &Value, module: &Path, resource_version: u32) -> String {
    let (ns, name) = (
        plugin["metadata"]["namespace"].as_str().unwrap(),
        plugin["metadata"]["name"].as_str().unwrap(),
    );
    let spec = &plugin["spec"];
    let mut env = json!({"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": resource_version.to_string()});
    if let Some(policy) = spec["imagePullPolicy"].as_str() {
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = json!(policy);
    }
    let mut config = json!({
        "name": format!("{ns}.{name}"),
        "root_id": spec["pluginName"].as_str().unwrap_or(""),
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": module}},
            "environment_variables": {"key_values": env},
        },
    });
    if spec["pluginConfig"]
        .as_object()
        .is_some_and(|o| !o.is_empty())
    {
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": serde_json::to_string(&spec["pluginConfig"]).unwrap(),
        });
    }
    config["failure_policy"] = json!(match spec["failStrategy"].as_str() {
        Some("FAIL_OPEN") => "FAIL_OPEN",
        Some("FAIL_RELOAD") => "FAIL_RELOAD",
        _ => "FAIL_CLOSED",
    });
    serde_json::to_string_pretty(&json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": format!("extensions.istio.io/wasmplugin/{ns}.{name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": config,
        },
    }]}))
    .unwrap()
}
