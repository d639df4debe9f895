//! Putting a drill's rules into the files operators keep: ahead of each configuration's own
//! rules (replacing the same drill's from an earlier run), in a plain JSON configuration, a
//! WasmPlugin manifest (its `pluginConfig` block rewritten, the rest of the text kept) or an
//! ECDS file (its configuration string), read back and validated before anything is written.

use super::drill::prefix;
use super::toggle::{sites, Site};
use super::yaml::{self, Edit, Node};
use crate::manifest::plugin_configs;
use crate::plugin::Config;
use serde_json::{json, Map, Value};

/// `config` with the drill's `rules` first and any earlier rules of the same drill gone.
pub fn merged(config: &Value, drill: &str, rules: &[Value]) -> Value {
    let mut out = match config {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let old = out
        .get("faults")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mine = prefix(drill);
    let kept = old.into_iter().filter(|r| {
        !r.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with(&mine))
    });
    out.insert(
        "faults".into(),
        Value::Array(rules.iter().cloned().chain(kept).collect()),
    );
    Value::Object(out)
}

/// `value` as block YAML at `indent` (strings JSON-quoted: always valid YAML).
pub fn to_yaml(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    block(value, indent, &mut out);
    out
}

fn inline(value: &Value) -> Option<String> {
    match value {
        Value::Object(m) if m.is_empty() => Some("{}".into()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(_) | Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(m) => {
            // A rule's name first, as people write them.
            let named = m.get_key_value("name").into_iter();
            for (k, v) in named.chain(m.iter().filter(|(k, _)| *k != "name")) {
                let simple = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                let key = if simple {
                    k.clone()
                } else {
                    serde_json::to_string(k).unwrap_or_default()
                };
                match inline(v) {
                    Some(s) => out.push_str(&format!("{pad}{key}: {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        block(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                match inline(v) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        // The item's block, its first line after the dash.
                        let mut item = String::new();
                        block(v, indent + 2, &mut item);
                        out.push_str(&format!(
                            "{pad}- {}",
                            item.get(indent + 2..).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{other}\n")),
    }
}

/// The file `name` (contents `text`) with the drill merged into each of its configurations,
/// verified by reading it back: every configuration valid, the drill's rules first.
pub fn merge_into(name: &str, text: &str, drill: &str, rules: &[Value]) -> Result<String, String> {
    // The configurations as the module reads them (the one reader of these shapes), and only
    // valid ones: nothing of them is dropped unseen.
    let before = plugin_configs(name, text.as_bytes())?;
    let mut current = Vec::with_capacity(before.len());
    for c in &before {
        Config::parse(&c.bytes).map_err(|e| format!("{}: {e} (nothing merged)", c.origin))?;
        current.push(if c.bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&c.bytes).map_err(|e| format!("{}: {e}", c.origin))?
        });
    }
    let plain = matches!(before.as_slice(), [only] if only.origin == name)
        && serde_json::from_str::<Value>(text).is_ok();
    let out = if let (true, Some(config)) = (plain, current.first()) {
        // A plain configuration in JSON: written whole.
        let mut s = serde_json::to_string_pretty(&merged(config, drill, rules))
            .map_err(|e| e.to_string())?;
        s.push('\n');
        s
    } else {
        let docs = yaml::documents(text).map_err(|e| format!("{name}: {e}"))?;
        let found = sites(name, text, &docs);
        if found.len() != current.len() {
            return Err(format!(
                "{name}: the configurations could not be placed in the text"
            ));
        }
        let mut edits = Vec::new();
        for (site, config) in found.iter().zip(&current) {
            edits.push(site_edit(name, text, site, &merged(config, drill, rules))?);
        }
        yaml::apply(text, &edits)?
    };
    // Read back: each configuration valid, the drill first.
    let configs = plugin_configs(name, out.as_bytes())?;
    for c in &configs {
        let parsed = Config::parse(&c.bytes).map_err(|e| format!("{}: {e}", c.origin))?;
        let first: Vec<&str> = parsed
            .faults
            .iter()
            .take(rules.len())
            .map(|r| r.name.as_str())
            .collect();
        let want: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
        if first != want {
            return Err(format!("{}: the merged rules did not read back", c.origin));
        }
    }
    Ok(out)
}

/// The edit that writes `merged` in place of one configuration of a YAML file.
fn site_edit(name: &str, text: &str, site: &Site<'_>, merged: &Value) -> Result<Edit, String> {
    match (site.config, site.holder) {
        (
            _,
            Some((
                Node::Scalar {
                    style, start, end, ..
                },
                indent,
            )),
        ) => {
            let json = if *style == saphyr_parser::ScalarStyle::Literal {
                serde_json::to_string_pretty(merged)
            } else {
                serde_json::to_string(merged)
            }
            .map_err(|e| e.to_string())?;
            Ok(Edit {
                start: *start,
                end: *end,
                text: yaml::scalar(&json, *style, indent + 2),
            })
        }
        (Some(_), _) => {
            let (start, end, indent) = block_range(text, site).ok_or_else(|| {
                format!(
                    "{name}: {}: cannot find where pluginConfig ends",
                    site.origin
                )
            })?;
            Ok(Edit {
                start,
                end,
                text: format!("\n{}", to_yaml(merged, indent)),
            })
        }
        _ => Err(format!("{}: no configuration to merge into", site.origin)),
    }
}

/// A WasmPlugin's `spec.pluginConfig` value in the text: from just after `pluginConfig:` to
/// the first line indented no deeper than the key (or a document marker, or the end), and the
/// indentation its block takes.
fn block_range(text: &str, site: &Site<'_>) -> Option<(usize, usize, usize)> {
    let key_start = site.key?;
    let col = yaml::column(text, key_start);
    let colon = key_start + text.get(key_start..)?.find(':')? + 1;
    let line_end = colon + text.get(colon..)?.find('\n').unwrap_or(text.len() - colon);
    let mut at = line_end;
    let mut end = text.len();
    while at < text.len() {
        let line_start = at + 1;
        let rest = text.get(line_start..)?;
        let line = rest.split('\n').next().unwrap_or("");
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if !body.is_empty()
            && !body.starts_with('#')
            && (indent <= col || body.starts_with("---") || body.starts_with("..."))
        {
            end = line_start.saturating_sub(1);
            break;
        }
        at = line_start + line.len();
    }
    Some((colon, end.max(colon), col + 2))
}
