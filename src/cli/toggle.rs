//! `dbfault on|off RULE FILE`: switch a rule by name in a plugin configuration, a `WasmPlugin`
//! manifest or an ECDS file, changing only that rule's `enabled` value in the text. The result is
//! read back and must differ from the input in exactly that value and be a valid configuration,
//! or nothing is emitted.

use super::yaml::{self, Edit, Node};
use crate::manifest::plugin_configs;
use crate::plugin::Config;
use serde_json::Value;

/// What switching did.
#[derive(Debug, PartialEq, Eq)]
pub struct Toggled {
    /// The whole file with the change.
    pub text: String,
    /// Configurations (by origin) whose rule changed, and ones where it already was so.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ToggleError {
    /// No rule of that name; the names there are.
    Unknown(Vec<String>),
    /// The file or the result is not a valid configuration (exit status 1).
    Invalid(String),
}

/// Where a configuration sits in a file: directly in it, or as the string of an ECDS resource.
pub(super) struct Site<'a> {
    pub(super) origin: String,
    pub(super) config: Option<&'a Node>,
    /// The enclosing scalar (ECDS `configuration.value`) and the column its block would indent to.
    pub(super) holder: Option<(&'a Node, usize)>,
    /// A WasmPlugin: where its `pluginConfig` key starts (a drill rewrites the block after it).
    pub(super) key: Option<usize>,
}

/// The configurations in the documents of `text`, in the order [`plugin_configs`] reports them.
pub(super) fn sites<'a>(name: &str, text: &str, docs: &'a [Node]) -> Vec<Site<'a>> {
    // The documents with where each is, a `kind: List` standing for its items (as
    // `crate::manifest` reads them).
    let several = docs.len() > 1;
    let mut flat: Vec<(String, &'a Node)> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = if several {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_owned()
        };
        let is_list = doc.get("kind").and_then(Node::as_str) == Some("List")
            && doc.get("apiVersion").is_some();
        match doc.get("items").filter(|_| is_list) {
            Some(items) => {
                for (k, item) in items.items().iter().enumerate() {
                    let item_at = if several {
                        format!("{name} (document {}, item {})", i + 1, k + 1)
                    } else {
                        format!("{name} (item {})", k + 1)
                    };
                    flat.push((item_at, item));
                }
            }
            None => flat.push((at, doc)),
        }
    }
    let mut out = Vec::new();
    for (at, doc) in flat {
        if crate::manifest::is_istio_wasmplugin(
            doc.get("kind").and_then(Node::as_str),
            doc.get("apiVersion").and_then(Node::as_str),
        ) {
            let plugin = doc
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                .unwrap_or("?");
            let entry = doc.get("spec").and_then(|s| s.entry("pluginConfig"));
            out.push(Site {
                origin: format!("{at}: WasmPlugin {plugin}"),
                config: entry.map(|(_, v)| v),
                holder: None,
                key: match entry {
                    Some((Node::Scalar { start, .. }, _)) => Some(*start),
                    _ => None,
                },
            });
        } else if let Some(resources) = doc.get("resources").filter(|r| {
            doc.get("kind").is_none()
                && r.items().iter().all(|i| {
                    i.get("@type").and_then(Node::as_str)
                        == Some(crate::manifest::ECDS_RESOURCE_TYPE)
                })
        }) {
            for r in resources.items() {
                let rname = r.get("name").and_then(Node::as_str).unwrap_or("?");
                let value = r
                    .get("typed_config")
                    .and_then(|t| t.get("config"))
                    .and_then(|c| c.get("configuration"))
                    .and_then(|c| c.entry("value"));
                out.push(Site {
                    origin: format!("{at}: ECDS resource {rname}"),
                    config: None,
                    key: None,
                    holder: value.map(|(k, v)| {
                        let indent = match k {
                            Node::Scalar { start, .. } => yaml::column(text, *start),
                            _ => 0,
                        };
                        (v, indent)
                    }),
                });
            }
        } else if !is_other_object(doc) {
            out.push(Site {
                origin: at,
                key: None,
                config: Some(doc),
                holder: None,
            });
        }
    }
    out
}

/// Another Kubernetes object (not a configuration), as [`crate::manifest::other_object`] tells.
fn is_other_object(doc: &Node) -> bool {
    let api = doc.get("apiVersion").and_then(Node::as_str);
    let kind = doc.get("kind").and_then(Node::as_str);
    api.is_some() && kind.is_some() && !crate::manifest::is_istio_wasmplugin(kind, api)
}

/// What `on`/`off` changes: `enabled` of one rule (or, switching off, of every rule), and with
/// `on --for` its `expiresAt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The rule's name; `None`: every rule.
    pub rule: Option<String>,
    pub on: bool,
    /// `expiresAt` to set (RFC 3339), replacing any there.
    pub expires_at: Option<String>,
}

impl Change {
    fn targets(&self, name: Option<&str>) -> bool {
        match &self.rule {
            None => true,
            Some(r) => name == Some(r.as_str()),
        }
    }
}

/// The edits that apply `change` to the configuration `config` (whose source is `text`):
/// `None` when it has no rule the change names, an empty list when they already are so.
fn edit_rules(text: &str, config: &Node, change: &Change) -> Result<Option<Vec<Edit>>, String> {
    let mut edits = Vec::new();
    let mut any = false;
    for item in config.get("faults").map(Node::items).unwrap_or_default() {
        let name = item.get("name").and_then(Node::as_str);
        if !change.targets(name) {
            continue;
        }
        any = true;
        edits.extend(edit_rule(text, item, name.unwrap_or("?"), change)?);
    }
    Ok(any.then_some(edits))
}

/// The edits of one rule (`item`, named `rule`).
fn edit_rule(text: &str, item: &Node, rule: &str, change: &Change) -> Result<Vec<Edit>, String> {
    let wanted = if change.on { "true" } else { "false" };
    let mut edits = Vec::new();
    match item.get("enabled") {
        Some(Node::Scalar {
            value, start, end, ..
        }) if value == "true" || value == "false" => {
            if value != wanted {
                edits.push(Edit {
                    start: *start,
                    end: *end,
                    text: wanted.to_owned(),
                });
            }
        }
        Some(_) => return Err(format!("rule {rule}: enabled is not true or false")),
        // Absent means enabled.
        None if change.on => {}
        None => edits.push(add_under_name(text, item, rule, "enabled", "false")?),
    }
    if let Some(at) = &change.expires_at {
        let quoted = format!("\"{at}\"");
        match item.get("expiresAt") {
            Some(Node::Scalar { start, end, .. }) => edits.push(Edit {
                start: *start,
                end: *end,
                text: quoted,
            }),
            Some(_) => return Err(format!("rule {rule}: expiresAt is not a plain value")),
            None => edits.push(add_under_name(text, item, rule, "expiresAt", &quoted)?),
        }
    }
    Ok(edits)
}

/// Inserts `key: value` into the rule `item` after its name (in a block, after the rest of the
/// name's line: a comment stays with it), in the rule's own style.
fn add_under_name(
    text: &str,
    item: &Node,
    rule: &str,
    key: &str,
    value: &str,
) -> Result<Edit, String> {
    let Some((
        Node::Scalar {
            start: key_at,
            style,
            ..
        },
        Node::Scalar { end, .. },
    )) = item.entry("name")
    else {
        return Err(format!("rule {rule}: name is not a plain value"));
    };
    let Node::Map { flow, .. } = item else {
        return Err(format!("rule {rule} is not a mapping"));
    };
    let quoted = *style != saphyr_parser::ScalarStyle::Plain;
    let added = if *flow {
        if quoted {
            format!(", \"{key}\": {value}")
        } else {
            format!(", {key}: {value}")
        }
    } else {
        format!(
            "\n{}{key}: {value}",
            " ".repeat(yaml::column(text, *key_at))
        )
    };
    let at = if *flow {
        *end
    } else {
        text.get(*end..)
            .and_then(|t| t.find('\n'))
            .map_or(text.len(), |i| end + i)
    };
    Ok(Edit {
        start: at,
        end: at,
        text: added,
    })
}

/// The rule names of a configuration node.
fn names(config: &Node) -> Vec<String> {
    config
        .get("faults")
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.get("name").and_then(Node::as_str).map(str::to_owned))
        .collect()
}

/// Sets rule `rule` on or off in every configuration of the file `name` (contents `text`) that
/// has it.
pub fn toggle(name: &str, text: &str, rule: &str, on: bool) -> Result<Toggled, ToggleError> {
    let change = Change {
        rule: Some(rule.to_owned()),
        on,
        expires_at: None,
    };
    apply_change(name, text, &change)
}

/// Applies `change` to every configuration of the file `name` (contents `text`) that has a rule
/// it names.
pub fn apply_change(name: &str, text: &str, change: &Change) -> Result<Toggled, ToggleError> {
    // The file as `check` reads it first: a syntax error is said the same way (FILE:LINE:COLUMN;
    // the YAML editor below would take a JSON trailing comma), and a file that is not dbfault's
    // is named as such.
    plugin_configs(name, text.as_bytes()).map_err(ToggleError::Invalid)?;
    let docs = yaml::documents(text).map_err(|e| ToggleError::Invalid(format!("{name}: {e}")))?;
    let mut edits = Vec::new();
    let (mut changed, mut unchanged, mut known) = (Vec::new(), Vec::new(), Vec::new());
    for site in sites(name, text, &docs) {
        let mut found = |inner: &str, config: &Node| -> Result<Option<Vec<Edit>>, ToggleError> {
            known.extend(names(config));
            edit_rules(inner, config, change)
                .map_err(|e| ToggleError::Invalid(format!("{}: {e}", site.origin)))
        };
        let edit = match (site.config, site.holder) {
            (Some(config), _) => found(text, config)?,
            (
                None,
                Some((
                    Node::Scalar {
                        value,
                        style,
                        start,
                        end,
                    },
                    indent,
                )),
            ) => {
                let inner_docs = yaml::documents(value)
                    .map_err(|e| ToggleError::Invalid(format!("{}: {e}", site.origin)))?;
                match inner_docs.first() {
                    None => None,
                    Some(config) => match found(value, config)? {
                        Some(inner) if !inner.is_empty() => {
                            let new = yaml::apply(value, &inner).map_err(ToggleError::Invalid)?;
                            Some(vec![Edit {
                                start: *start,
                                end: *end,
                                text: yaml::scalar(&new, *style, indent + 2),
                            }])
                        }
                        other => other,
                    },
                }
            }
            _ => None,
        };
        match edit {
            None => {}
            Some(e) if e.is_empty() => unchanged.push(site.origin),
            Some(e) => {
                edits.extend(e);
                changed.push(site.origin);
            }
        }
    }
    if changed.is_empty() && unchanged.is_empty() {
        known.sort();
        known.dedup();
        return Err(ToggleError::Unknown(known));
    }
    let out = yaml::apply(text, &edits).map_err(ToggleError::Invalid)?;
    verify(name, text, &out, change)?;
    Ok(Toggled {
        text: out,
        changed,
        unchanged,
    })
}

/// The configurations read back from `after` equal those of `before` with only the named rules'
/// `enabled` (and `expiresAt`) set, and every one that has such a rule is valid.
fn verify(name: &str, before: &str, after: &str, change: &Change) -> Result<(), ToggleError> {
    let on = change.on;
    let read = |text: &str| -> Result<Vec<(String, Value, Vec<u8>)>, ToggleError> {
        plugin_configs(name, text.as_bytes())
            .map_err(|e| ToggleError::Invalid(format!("{name}: {e}")))?
            .into_iter()
            .map(|c| {
                let value = if c.bytes.is_empty() {
                    Value::Object(serde_json::Map::new())
                } else {
                    serde_json::from_slice(&c.bytes)
                        .map_err(|e| ToggleError::Invalid(format!("{}: not JSON: {e}", c.origin)))?
                };
                Ok((c.origin, value, c.bytes))
            })
            .collect()
    };
    let (old, new) = (read(before)?, read(after)?);
    if old.len() != new.len() {
        return Err(ToggleError::Invalid(format!(
            "{name}: editing changed the number of configurations (a bug: nothing written)"
        )));
    }
    for ((origin, mut expected, _), (_, got, bytes)) in old.into_iter().zip(new) {
        let mut has_rule = false;
        if let Some(rules) = expected.get_mut("faults").and_then(Value::as_array_mut) {
            for r in rules {
                if change.targets(r.get("name").and_then(Value::as_str)) {
                    has_rule = true;
                    if let Some(obj) = r.as_object_mut() {
                        if let Some(at) = &change.expires_at {
                            obj.insert("expiresAt".into(), Value::String(at.clone()));
                        }
                        if on && !obj.contains_key("enabled") {
                            continue;
                        }
                        obj.insert("enabled".into(), Value::Bool(on));
                    }
                }
            }
        }
        if expected != got {
            return Err(ToggleError::Invalid(format!(
                "{origin}: editing changed more than the rules' `enabled` and `expiresAt` (a bug: nothing written)"
            )));
        }
        if has_rule {
            if let Err(e) = Config::parse(&bytes) {
                return Err(ToggleError::Invalid(format!(
                    "{origin}: invalid configuration: {e}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN: &str = "# our game day
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: dbfault   # keep
spec:
  url: oci://x/y:1
  pluginConfig:
    faults:
    # the outage
    - name: firestore-outage
      enabled: false   # off until the game day
      match: {hosts: [firestore.googleapis.com]}
      abort: {}
    - name: slow   # no enabled: means on
      match:
        hosts: [pg]
      delay: {latency: 100ms}
";

    fn on(text: &str, rule: &str) -> Result<Toggled, ToggleError> {
        toggle("f", text, rule, true)
    }

    #[test]
    fn only_the_value_changes_in_a_manifest() {
        let t = on(PLUGIN, "firestore-outage").unwrap();
        assert_eq!(
            t.text,
            PLUGIN.replace("enabled: false   # off", "enabled: true   # off")
        );
        assert_eq!(t.changed, ["f: WasmPlugin dbfault"]);
        let back = toggle("f", &t.text, "firestore-outage", false).unwrap();
        assert_eq!(back.text, PLUGIN);
    }

    #[test]
    fn an_absent_enabled_is_added_under_the_name() {
        let t = toggle("f", PLUGIN, "slow", false).unwrap();
        assert_eq!(
            t.text,
            PLUGIN.replace(
                "- name: slow   # no enabled: means on\n",
                "- name: slow   # no enabled: means on\n      enabled: false\n"
            )
        );
        let same = on(PLUGIN, "slow").unwrap();
        assert_eq!((same.text.as_str(), same.changed.len()), (PLUGIN, 0));
        assert_eq!(same.unchanged.len(), 1);
    }

    #[test]
    fn json_keeps_its_layout() {
        let json = "{\"faults\": [{\"name\": \"a\", \"match\": {\"hosts\": [\"h\"]}, \"abort\": {}},\n  {\"name\": \"b\", \"enabled\": true, \"match\": {\"hosts\": [\"h\"]}, \"abort\": {}}]}";
        let t = toggle("c.json", json, "a", false).unwrap();
        assert_eq!(
            t.text,
            json.replace("\"name\": \"a\",", "\"name\": \"a\", \"enabled\": false,")
        );
        let t = toggle("c.json", json, "b", false).unwrap();
        assert_eq!(
            t.text,
            json.replace("\"enabled\": true", "\"enabled\": false")
        );
    }

    #[test]
    fn an_ecds_value_is_edited_inside_its_string() {
        let ecds = |v: &str| {
            format!(
                "# watched by Envoy\nresources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: dbfault\n  typed_config:\n    config:\n      configuration:\n        value: {v}\n"
            )
        };
        let before = ecds(
            "'{\"faults\": [{\"name\": \"r\", \"enabled\": false, \"match\": {\"hosts\": [\"h\"]}, \"error\": {\"message\": \"READONLY can''t\"}, \"match\": {\"hosts\": [\"h\"], \"protocol\": \"redis\"}}]}'",
        );
        // Duplicate keys are not JSON this crate accepts; use a clean one.
        let before = before.replace(
            ", \"match\": {\"hosts\": [\"h\"]}, \"error\"",
            ", \"error\"",
        );
        let t = on(&before, "r").unwrap();
        assert_eq!(
            t.text,
            before.replace("\"enabled\": false", "\"enabled\": true")
        );
        assert_eq!(t.changed, ["f: ECDS resource dbfault"]);
        // A literal block stays one.
        let block = ecds("|\n          {\"faults\": [{\"name\": \"r\", \"match\": {\"hosts\": [\"h\"]}, \"abort\": {}}]}");
        let t = toggle("f", &block, "r", false).unwrap();
        assert_eq!(
            t.text,
            block.replace("\"name\": \"r\",", "\"name\": \"r\", \"enabled\": false,")
        );
    }

    #[test]
    fn unknown_names_and_invalid_results_are_refused() {
        assert_eq!(
            on(PLUGIN, "nope"),
            Err(ToggleError::Unknown(vec![
                "firestore-outage".into(),
                "slow".into()
            ]))
        );
        // Switching on a rule whose configuration is invalid emits nothing.
        let bad = PLUGIN.replace("latency: 100ms", "latency: soon");
        let Err(ToggleError::Invalid(e)) = on(&bad, "firestore-outage") else {
            panic!()
        };
        assert!(
            e.contains("invalid configuration") && e.contains("latency"),
            "{e}"
        );
        let Err(ToggleError::Invalid(e)) = on(
            &PLUGIN.replace("enabled: false", "enabled: 0"),
            "firestore-outage",
        ) else {
            panic!()
        };
        assert!(e.contains("not true or false"), "{e}");
    }

    #[test]
    fn every_configuration_with_the_rule_is_switched() {
        let two = format!(
            "{PLUGIN}---\n{}",
            PLUGIN.replace("name: dbfault", "name: other")
        );
        let t = on(&two, "firestore-outage").unwrap();
        assert_eq!(t.changed.len(), 2);
        assert_eq!(t.text.matches("enabled: true   # off").count(), 2);
    }

    proptest::proptest! {
        /// Any mix of rules with and without `enabled`, written as JSON (compact or spread over
        /// lines), as a block-YAML manifest, or inside an ECDS string: switching any rule on and
        /// off succeeds, changes only that rule, and switching back gives the text back when the
        /// rule had an explicit `enabled`.
        #[test]
        fn switching_is_exact_in_every_shape(
            rules in proptest::collection::vec(proptest::option::of(proptest::bool::ANY), 1..6),
            pick in 0usize..6,
            shape in 0u8..4,
        ) {
            let pick = pick % rules.len();
            let json_rule = |i: usize, e: &Option<bool>| {
                let enabled = e.map(|b| format!(", \"enabled\": {b}")).unwrap_or_default();
                format!("{{\"name\": \"r{i}\"{enabled}, \"match\": {{\"hosts\": [\"h{i}\"]}}, \"abort\": {{}}}}")
            };
            let list: Vec<String> = rules.iter().enumerate().map(|(i, e)| json_rule(i, e)).collect();
            let text = match shape {
                0 => format!("{{\"faults\": [{}]}}", list.join(", ")),
                1 => format!("{{\n  \"faults\": [\n    {}\n  ]\n}}\n", list.join(",\n    ")),
                2 => {
                    let mut t = String::from("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: p}\nspec:\n  pluginConfig:\n    faults:\n");
                    for (i, e) in rules.iter().enumerate() {
                        t.push_str(&format!("    # rule {i}\n    - name: r{i}   # its name\n"));
                        if let Some(b) = e {
                            t.push_str(&format!("      enabled: {b}\n"));
                        }
                        t.push_str(&format!("      match: {{hosts: [h{i}]}}\n      abort: {{}}\n"));
                    }
                    t
                }
                _ => {
                    let inner = format!("{{\"faults\": [{}]}}", list.join(", "));
                    format!("resources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: d\n  typed_config:\n    config:\n      configuration:\n        value: '{}'\n", inner.replace('\'', "''"))
                }
            };
            let name = format!("r{pick}");
            let on = toggle("f", &text, &name, true).unwrap();
            let off = toggle("f", &on.text, &name, false).unwrap();
            let again = toggle("f", &off.text, &name, true).unwrap();
            // Once `enabled` is written, off and on alternate between two texts.
            proptest::prop_assert_eq!(&toggle("f", &again.text, &name, false).unwrap().text, &off.text);
            if rules[pick].is_some() {
                proptest::prop_assert_eq!(&again.text, &on.text);
            }
            let original = rules[pick];
            match original {
                Some(true) => proptest::prop_assert_eq!(&on.text, &text),
                Some(false) => proptest::prop_assert_eq!(&off.text, &text),
                None => proptest::prop_assert_eq!(&on.text, &text),
            }
            // Every other rule reads as before.
            let before = plugin_configs("f", text.as_bytes()).unwrap();
            let after = plugin_configs("f", off.text.as_bytes()).unwrap();
            let rules_of = |c: &[crate::manifest::PluginConfig]| -> Vec<Value> {
                let v: Value = serde_json::from_slice(&c[0].bytes).unwrap();
                v["faults"].as_array().unwrap().clone()
            };
            for (i, (b, a)) in rules_of(&before).iter().zip(rules_of(&after)).enumerate() {
                if i != pick {
                    proptest::prop_assert_eq!(b, &a);
                } else {
                    proptest::prop_assert_eq!(&a["enabled"], &Value::Bool(false));
                }
            }
        }
    }
}
