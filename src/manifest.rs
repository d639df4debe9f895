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

/// The documents of a YAML stream (empty ones dropped), or its first syntax error as
/// `{name}:LINE:COLUMN: not valid YAML: …` (the caller puts the file name in).
fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        match serde::Deserialize::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push(v),
            Err(e) => {
                let e: serde_yaml_ng::Error = e;
                let what = e.to_string();
                // The message ends with its own "at line L column C": said once, up front.
                let what = what.split(" at line ").next().unwrap_or(&what).to_owned();
                return Err(match e.location() {
                    Some(at) => format!(
                        "{{name}}:{}:{}: not valid YAML: {what}",
                        at.line(),
                        at.column()
                    ),
                    None => format!("{{name}}: not valid YAML: {what}"),
                });
            }
        }
    }
    Ok(docs)
}

/// A JSON syntax error as `FILE:LINE:COLUMN: not valid JSON: …`.
pub fn json_syntax(name: &str, e: &serde_json::Error) -> String {
    let what = e.to_string();
    let what = what.split(" at line ").next().unwrap_or(&what).to_owned();
    if e.classify() == serde_json::error::Category::Eof {
        return format!("{name}: not valid JSON: unexpected end of input");
    }
    format!("{name}:{}:{}: not valid JSON: {what}", e.line(), e.column())
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
/// A file that opens with `{` or `[` is read as JSON, anything else as YAML. Errors: a syntax error
/// (`FILE:LINE:COLUMN: …`), text that is not UTF-8, a document that is none of the shapes above,
/// an ECDS `configuration.value` that is not a string, or no configuration at all.
pub fn plugin_configs(name: &str, bytes: &[u8]) -> Result<Vec<PluginConfig>, String> {
    read_configs(name, bytes).map_err(|u| u.message)
}

/// Why a file gives no configuration: `foreign` when it is well-formed but none of dbfault's
/// shapes (a Kustomization, a Deployment, an empty file), so that `check --skip-unknown` can pass
/// over it; otherwise it is broken (syntax, encoding, a malformed ECDS resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub foreign: bool,
    pub message: String,
}

/// The documents of a stream with where each is, a `kind: List` (what `kubectl get -o yaml`
/// prints for several objects) standing for its items.
fn flatten(name: &str, docs: Vec<Value>) -> Vec<(String, Value)> {
    let several = docs.len() > 1;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let at = if several {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_owned()
        };
        match list_items(&doc) {
            Some(items) => {
                let doc_at = at.trim_end_matches(')').to_owned();
                for (k, item) in items.iter().enumerate() {
                    let item_at = if several {
                        format!("{doc_at}, item {})", k + 1)
                    } else {
                        format!("{name} (item {})", k + 1)
                    };
                    out.push((item_at, item.clone()));
                }
            }
            None => out.push((at, doc)),
        }
    }
    out
}

/// The items of a Kubernetes `List` (`apiVersion: v1`, `kind: List`).
pub fn list_items(doc: &Value) -> Option<&Vec<Value>> {
    if doc.get("kind").and_then(Value::as_str) != Some("List") {
        return None;
    }
    doc.get("apiVersion")?;
    doc.get("items")?.as_array()
}

/// [`plugin_configs`], telling a foreign file from a broken one.
pub fn read_configs(name: &str, bytes: &[u8]) -> Result<Vec<PluginConfig>, Unusable> {
    let broken = |message: String| Unusable {
        foreign: false,
        message,
    };
    // A JSON document that is not a manifest is the plugin configuration itself, checked byte
    // for byte as the module would see it.
    let json = serde_json::from_slice::<Value>(bytes);
    let json_object = matches!(json, Ok(Value::Object(_)));
    let docs: Vec<Value> = match json {
        Ok(v) => vec![v],
        Err(json_err) => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Err(broken(format!("{name}: not UTF-8 text")));
            };
            // A file that opens with `{` or `[` is JSON (a YAML flow mapping also opens so, but
            // would accept a trailing comma that Envoy's and istiod's JSON parsers refuse).
            if matches!(text.trim_start().bytes().next(), Some(b'{' | b'[')) {
                return Err(broken(json_syntax(name, &json_err)));
            }
            yaml_documents(text).map_err(|e| broken(e.replacen("{name}", name, 1)))?
        }
    };
    let mut found = Vec::new();
    // Other Kubernetes objects in the same stream (`kubectl kustomize` renders the ServiceEntries
    // and the PrometheusRule with the WasmPlugin) are not configurations: passed over.
    let mut skipped = Vec::new();
    let docs = flatten(name, docs);
    let alone = docs.len() == 1;
    for (at, doc) in &docs {
        if is_istio_wasmplugin(
            doc.get("kind").and_then(Value::as_str),
            doc.get("apiVersion").and_then(Value::as_str),
        ) {
            let plugin = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let bytes = match doc.pointer("/spec/pluginConfig") {
                None | Some(Value::Null) => Vec::new(),
                // As istiod sends it: the JSON of the pluginConfig struct.
                Some(v) => serde_json::to_vec(v).map_err(|e| broken(e.to_string()))?,
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
                        return Err(broken(format!(
                            "{at}: ECDS resource {rname}: configuration.value is not a string"
                        )))
                    }
                };
                found.push(PluginConfig {
                    origin: format!("{at}: ECDS resource {rname}"),
                    bytes,
                });
            }
        } else if let Some(kind) = other_object(doc) {
            skipped.push(kind);
        } else if alone && json_object {
            found.push(PluginConfig {
                origin: at.clone(),
                bytes: bytes.to_vec(),
            });
        } else {
            return Err(Unusable {
                foreign: true,
                message: format!("{at}: not a dbfault configuration, a WasmPlugin or an ECDS file"),
            });
        }
    }
    if found.is_empty() {
        let message = if skipped.is_empty() {
            format!("{name}: no configuration found")
        } else {
            format!(
                "{name}: no WasmPlugin or dbfault configuration (only {})",
                skipped.join(", ")
            )
        };
        return Err(Unusable {
            foreign: true,
            message,
        });
    }
    Ok(found)
}

/// Whether `kind` and `apiVersion` are Istio's WasmPlugin (another project's `WasmPlugin` kind,
/// Higress's for one, has another schema: it is not dbfault's to read).
pub fn is_istio_wasmplugin(kind: Option<&str>, api_version: Option<&str>) -> bool {
    kind == Some("WasmPlugin") && api_version.is_some_and(|a| a.starts_with("extensions.istio.io/"))
}

/// A Kubernetes object other than Istio's WasmPlugin (it has `apiVersion` and `kind`):
/// `Kind name`, with its apiVersion when it is some other WasmPlugin.
pub fn other_object(doc: &Value) -> Option<String> {
    let kind = doc.get("kind").and_then(Value::as_str)?;
    let api = doc.get("apiVersion").and_then(Value::as_str)?;
    if is_istio_wasmplugin(Some(kind), Some(api)) {
        return None;
    }
    let mut what = match doc.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) => format!("{kind} {name}"),
        None => kind.to_owned(),
    };
    if kind == "WasmPlugin" {
        what.push_str(&format!(" of {api}, not Istio's"));
    }
    Some(what)
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
        assert_eq!(
            e,
            "e.yaml: ECDS resource dbfault: configuration.value is not a string"
        );
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
        // Syntax errors say where, in the syntax the file is written in; neither is foreign.
        let cases: [(&[u8], &str); 5] = [
            (
                b"{\"metrics\": ",
                "-: not valid JSON: unexpected end of input",
            ),
            (
                b"{\"faults\": [],}",
                "-:1:15: not valid JSON: trailing comma",
            ),
            (b"\xff\xfe{}", "-: not UTF-8 text"),
            (
                b"kind: WasmPlugin\nspec:\n  pluginConfig: {a: [}\n",
                "-:3:22: not valid YAML: did not find expected node content",
            ),
            (
                b"a: 1\n b: 2\n",
                "-:2:3: not valid YAML: mapping values are not allowed in this context",
            ),
        ];
        for (bad, said) in cases {
            let u = read_configs("-", bad).unwrap_err();
            assert_eq!((u.message.as_str(), u.foreign), (said, false));
        }
    }

    #[test]
    fn another_projects_wasmplugin_is_not_read_as_istios() {
        let higress = "apiVersion: extensions.higress.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: auth}\nspec:\n  defaultConfig: {a: 1}\n";
        let u = read_configs("h.yaml", higress.as_bytes()).unwrap_err();
        assert!(u.foreign, "{u:?}");
        assert_eq!(
            u.message,
            "h.yaml: no WasmPlugin or dbfault configuration (only WasmPlugin auth of extensions.higress.io/v1alpha1, not Istio's)"
        );
        // Without apiVersion it is no Kubernetes object at all.
        let bare = WASMPLUGIN.replace("apiVersion: extensions.istio.io/v1alpha1\n", "");
        assert!(read_configs("b.yaml", bare.as_bytes()).is_err());
    }

    #[test]
    fn a_kubectl_list_stands_for_its_items() {
        let item = |name: &str| {
            WASMPLUGIN
                .replace("name: dbfault", &format!("name: {name}"))
                .lines()
                .enumerate()
                .map(|(i, l)| format!("{}{l}\n", if i == 0 { "- " } else { "  " }))
                .collect::<String>()
        };
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}{}",
            item("a"),
            item("b")
        );
        let found = plugin_configs("l.yaml", list.as_bytes()).unwrap();
        let origins: Vec<&str> = found.iter().map(|f| f.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                "l.yaml (item 1): WasmPlugin a",
                "l.yaml (item 2): WasmPlugin b"
            ]
        );
        assert_eq!(text(&found[1]), r#"{"metrics":{"interval":"2s"}}"#);
        let streamed = format!("{WASMPLUGIN}---\n{list}");
        let found = plugin_configs("s.yaml", streamed.as_bytes()).unwrap();
        assert_eq!(found[2].origin, "s.yaml (document 2, item 2): WasmPlugin b");
        // A List of other objects is foreign.
        let other = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n";
        let u = read_configs("o.yaml", other.as_bytes()).unwrap_err();
        assert!(u.foreign, "{u:?}");
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
            "empty.yaml: no configuration found"
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
