//! Finding dbfault plugin configurations in the files operators handle (native builds only):
//! - the plugin configuration itself (JSON);
//! - an Istio `WasmPlugin` manifest (YAML or JSON, several documents allowed): `spec.pluginConfig`,
//!   as the JSON istiod sends;
//! - an ECDS file as Envoy reads it (`resources:` of `TypedExtensionConfig`): the `StringValue`
//!   plugin configuration of each resource.
//!
//! `dbfault check` validates what this finds, and the scripts read the local ECDS file through it
//! (`dbfault show`), so there is one reader of these shapes.

use serde_json::Value;

/// The type of an ECDS resource: a file's `resources` are ECDS resources only when each says so.
pub const ECDS_RESOURCE_TYPE: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// An ECDS file's resources: a document without `kind` whose `resources` are all
/// `TypedExtensionConfig`s (a Kustomization's `resources`, for one, are not).
fn ecds_resources(doc: &Value) -> Option<&Vec<Value>> {
    if doc.get("kind").is_some() {
        return None;
    }
    let resources = doc.get("resources")?.as_array()?;
    let typed = |r: &Value| r.get("@type").and_then(Value::as_str) == Some(ECDS_RESOURCE_TYPE);
    resources.iter().all(typed).then_some(resources)
}

/// One plugin configuration found in a file, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// The file name, document and resource or manifest, e.g. `envoy/dbfault.yaml: ECDS resource dbfault`.
    pub origin: String,
    /// The configuration as the module would receive it (empty when the file sets none).
    pub bytes: Vec<u8>,
}

/// The plugin configurations in a file named `name`, by its shape.
///
/// A file that is neither JSON nor YAML (or not UTF-8) is returned whole as one configuration, so
/// that the module's parser says what is wrong with it. Errors: a document that is none of the
/// shapes above, an ECDS `configuration.value` that is not a string, or no configuration at all.
pub fn plugin_configs(name: &str, bytes: &[u8]) -> Result<Vec<PluginConfig>, String> {
    let whole = || {
        vec![PluginConfig {
            origin: name.to_owned(),
            bytes: bytes.to_vec(),
        }]
    };
    // A JSON document that is not a manifest is the plugin configuration itself, checked byte
    // for byte as the module would see it (including its syntax errors).
    let as_json: Option<Value> = serde_json::from_slice(bytes).ok();
    let json_object = matches!(as_json, Some(Value::Object(_)));
    let docs: Vec<Value> = match as_json {
        Some(v) => vec![v],
        None => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Ok(whole());
            };
            let mut docs = Vec::new();
            for doc in serde_yaml_ng::Deserializer::from_str(text) {
                match serde::Deserialize::deserialize(doc) {
                    Ok(Value::Null) => {}
                    Ok(v) => docs.push(v),
                    // Neither JSON nor YAML: let the module's parser say why.
                    Err(_) => return Ok(whole()),
                }
            }
            docs
        }
    };
    let mut found = Vec::new();
    // Other Kubernetes objects in the same stream (`kubectl kustomize` renders the ServiceEntries
    // and the PrometheusRule with the WasmPlugin) are not configurations: passed over.
    let mut skipped = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = if docs.len() > 1 {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_owned()
        };
        if doc.get("kind").and_then(Value::as_str) == Some("WasmPlugin") {
            let plugin = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let bytes = match doc.pointer("/spec/pluginConfig") {
                None | Some(Value::Null) => Vec::new(),
                // As istiod sends it: the JSON of the pluginConfig struct.
                Some(v) => serde_json::to_vec(v).map_err(|e| e.to_string())?,
            };
            found.push(PluginConfig {
                origin: format!("{at}: WasmPlugin {plugin}"),
                bytes,
            });
        } else if let Some(resources) = ecds_resources(doc) {
            for r in resources {
                let rname = r.get("name").and_then(Value::as_str).unwrap_or("?");
                let config = r.pointer("/typed_config/config/configuration");
                let bytes = match config.and_then(|c| c.get("value")) {
                    Some(Value::String(s)) => s.clone().into_bytes(),
                    None => Vec::new(),
                    Some(_) => {
                        return Err(format!(
                            "resource {rname}: configuration.value is not a string"
                        ))
                    }
                };
                found.push(PluginConfig {
                    origin: format!("{at}: ECDS resource {rname}"),
                    bytes,
                });
            }
        } else if let Some(kind) = other_object(doc) {
            skipped.push(kind);
        } else if docs.len() == 1 && json_object {
            found.push(PluginConfig {
                origin: at,
                bytes: bytes.to_vec(),
            });
        } else {
            return Err(format!(
                "{at}: not a dbfault configuration, a WasmPlugin or an ECDS file"
            ));
        }
    }
    if found.is_empty() {
        if !skipped.is_empty() {
            return Err(format!(
                "{name}: no WasmPlugin or dbfault configuration (only {})",
                skipped.join(", ")
            ));
        }
        return Err("no configuration found".into());
    }
    Ok(found)
}

/// A Kubernetes object other than a WasmPlugin (it has `apiVersion` and `kind`): `Kind name`.
pub fn other_object(doc: &Value) -> Option<String> {
    let kind = doc.get("kind").and_then(Value::as_str)?;
    doc.get("apiVersion").and_then(Value::as_str)?;
    (kind != "WasmPlugin").then(
        || match doc.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) => format!("{kind} {name}"),
            None => kind.to_owned(),
        },
    )
}

/// The one plugin configuration in a file (see [`plugin_configs`]); an error naming them when
/// there are several, since a caller that edits "the" configuration must not pick one silently.
pub fn single_plugin_config(name: &str, bytes: &[u8]) -> Result<PluginConfig, String> {
    let mut found = plugin_configs(name, bytes)?;
    if found.len() > 1 {
        let origins: Vec<&str> = found.iter().map(|f| f.origin.as_str()).collect();
        return Err(format!(
            "{} plugin configurations, expected one: {}",
            found.len(),
            origins.join("; ")
        ));
    }
    found
        .pop()
        .ok_or_else(|| "no configuration found".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECDS: &str = r#"
resources:
- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: dbfault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
    config:
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{"faults": [], "it''s": 1}'
"#;

    const WASMPLUGIN: &str = "apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: dbfault}
spec:
  pluginConfig:
    metrics: {interval: 2s}
";

    fn text(c: &PluginConfig) -> &str {
        std::str::from_utf8(&c.bytes).unwrap()
    }

    #[test]
    fn an_ecds_file_gives_each_resource_value_as_written() {
        let found = plugin_configs("e.yaml", ECDS.as_bytes()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].origin, "e.yaml: ECDS resource dbfault");
        assert_eq!(text(&found[0]), r#"{"faults": [], "it's": 1}"#);
    }

    #[test]
    fn an_ecds_resource_without_a_value_gives_an_empty_configuration() {
        let found = plugin_configs(
            "e.yaml",
            b"resources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: dbfault\n",
        )
        .unwrap();
        assert_eq!(found[0].bytes, b"");
        let e = plugin_configs(
            "e.yaml",
            ECDS.replace("value: '{", "value: ['{")
                .replace("1}'", "1}']")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e, "resource dbfault: configuration.value is not a string");
    }

    #[test]
    fn a_wasmplugin_gives_its_plugin_config_as_istiod_sends_it() {
        let found = single_plugin_config("w.yaml", WASMPLUGIN.as_bytes()).unwrap();
        assert_eq!(found.origin, "w.yaml: WasmPlugin dbfault");
        assert_eq!(text(&found), r#"{"metrics":{"interval":"2s"}}"#);
        let bare = WASMPLUGIN.replace(
            "  pluginConfig:\n    metrics: {interval: 2s}\n",
            "  url: x\n",
        );
        assert_eq!(
            single_plugin_config("w.yaml", bare.as_bytes())
                .unwrap()
                .bytes,
            b""
        );
    }

    #[test]
    fn plain_json_is_the_configuration_byte_for_byte() {
        let json = br#"{ "metrics" : {"enabled": false} }"#;
        let found = single_plugin_config("c.json", json).unwrap();
        assert_eq!(
            (found.origin.as_str(), found.bytes.as_slice()),
            ("c.json", &json[..])
        );
        // Neither JSON nor YAML, or not UTF-8: handed over whole for the parser to refuse.
        for bad in [&b"{\"metrics\": "[..], b"\xff\xfe{}"] {
            assert_eq!(single_plugin_config("-", bad).unwrap().bytes, bad);
        }
    }

    #[test]
    fn other_kubernetes_objects_in_a_stream_are_passed_over() {
        let stream = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: firestore}}\n---\n{WASMPLUGIN}---\napiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {{name: alerts}}\n"
        );
        let found = single_plugin_config("-", stream.as_bytes()).unwrap();
        assert_eq!(found.origin, "- (document 2): WasmPlugin dbfault");
        let only = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: plants}\n";
        assert_eq!(
            plugin_configs("d.yaml", only.as_bytes()).unwrap_err(),
            "d.yaml: no WasmPlugin or dbfault configuration (only Deployment plants)"
        );
    }

    #[test]
    fn none_and_several_are_errors_that_say_so() {
        let e =
            single_plugin_config("d.yaml", b"kind: Deployment\nmetadata: {name: x}\n").unwrap_err();
        assert_eq!(
            e,
            "d.yaml: not a dbfault configuration, a WasmPlugin or an ECDS file"
        );
        assert_eq!(
            single_plugin_config("empty.yaml", b"resources: []\n").unwrap_err(),
            "no configuration found"
        );
        assert_eq!(
            single_plugin_config("n.json", b"[1]").unwrap_err(),
            "n.json: not a dbfault configuration, a WasmPlugin or an ECDS file"
        );
        let two = format!(
            "{WASMPLUGIN}---\n{}",
            WASMPLUGIN.replace("name: dbfault", "name: other")
        );
        let all = plugin_configs("two.yaml", two.as_bytes()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].origin, "two.yaml (document 2): WasmPlugin other");
        assert_eq!(
            single_plugin_config("two.yaml", two.as_bytes()).unwrap_err(),
            "2 plugin configurations, expected one: two.yaml (document 1): WasmPlugin dbfault; two.yaml (document 2): WasmPlugin other"
        );
    }
}
