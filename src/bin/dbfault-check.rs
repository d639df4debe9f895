//! `dbfault-check FILE...`: validates dbfault plugin configurations before they are pushed, with
//! the parser the module itself runs.
//!
//! A FILE (or `-` for standard input) may be:
//! - the plugin configuration itself (JSON);
//! - an Istio `WasmPlugin` manifest (YAML or JSON, several documents allowed): its
//!   `spec.pluginConfig` is checked;
//! - an ECDS file as Envoy reads it (`resources:` of `TypedExtensionConfig`): the `StringValue`
//!   plugin configuration of each Wasm filter is checked.
//!
//! Prints what the rules will do, or one line per error naming the field and the value. Exit
//! status: 0 valid, 1 invalid, 2 unreadable or not a configuration.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(check::run(std::env::args().skip(1).collect()));
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod check {
    use dbfault::config::Config;
    use serde_json::Value;
    use std::io::Read;

    /// One plugin configuration found in a file, with where it came from.
    struct Found {
        origin: String,
        bytes: Vec<u8>,
    }

    pub fn run(args: Vec<String>) -> i32 {
        if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
            eprintln!("usage: dbfault-check FILE... (plugin config JSON, WasmPlugin YAML, or ECDS file; - for stdin)");
            return 2;
        }
        let mut status = 0;
        for arg in &args {
            let text = match read(arg) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{arg}: cannot read: {e}");
                    status = status.max(2);
                    continue;
                }
            };
            match extract(arg, &text) {
                Err(why) => {
                    eprintln!("{arg}: {why}");
                    status = status.max(2);
                }
                Ok(found) => {
                    for f in found {
                        match Config::parse(&f.bytes) {
                            Ok(config) => {
                                println!("{}: valid", f.origin);
                                for line in dbfault::cli::describe(&config) {
                                    println!("  {line}");
                                }
                            }
                            Err(err) => {
                                println!("{}: invalid configuration: {err}", f.origin);
                                status = status.max(1);
                            }
                        }
                    }
                }
            }
        }
        status
    }

    fn read(arg: &str) -> std::io::Result<Vec<u8>> {
        if arg == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Ok(buf)
        } else {
            std::fs::read(arg)
        }
    }

    /// The plugin configurations in a file, by its shape.
    fn extract(name: &str, bytes: &[u8]) -> Result<Vec<Found>, String> {
        // A JSON document that is not a manifest is the plugin configuration itself, checked
        // byte for byte as the module would see it (including its syntax errors).
        let as_json: Option<Value> = serde_json::from_slice(bytes).ok();
        let docs: Vec<Value> = match as_json {
            Some(v) => vec![v],
            None => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    "not UTF-8 (a plugin configuration must be UTF-8 JSON)".to_owned()
                });
                let Ok(text) = text else {
                    return Ok(vec![Found {
                        origin: name.to_owned(),
                        bytes: bytes.to_vec(),
                    }]);
                };
                let mut docs = Vec::new();
                for doc in serde_yaml_ng::Deserializer::from_str(text) {
                    match serde::Deserialize::deserialize(doc) {
                        Ok(Value::Null) => {}
                        Ok(v) => docs.push(v),
                        // Neither JSON nor YAML: let the module's parser say why.
                        Err(_) => {
                            return Ok(vec![Found {
                                origin: name.to_owned(),
                                bytes: bytes.to_vec(),
                            }])
                        }
                    }
                }
                docs
            }
        };
        let mut found = Vec::new();
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
                found.push(Found {
                    origin: format!("{at}: WasmPlugin {plugin}"),
                    bytes,
                });
            } else if let Some(resources) = doc.get("resources").and_then(Value::as_array) {
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
                    found.push(Found {
                        origin: format!("{at}: ECDS resource {rname}"),
                        bytes,
                    });
                }
            } else if docs.len() == 1 && as_json_object(bytes) {
                found.push(Found {
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
            return Err("no configuration found".into());
        }
        Ok(found)
    }

    fn as_json_object(bytes: &[u8]) -> bool {
        matches!(serde_json::from_slice::<Value>(bytes), Ok(Value::Object(_)))
    }
}
