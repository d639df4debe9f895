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
//!
//! Warns about enabled rules without `expiresAt` (a forgotten fault never ends) and rules
//! already expired; with `--strict`, an expired rule makes the configuration invalid (exit 1).
//!
//! `dbfault-check --plugin-config FILE` prints the one plugin configuration in FILE as found,
//! unvalidated (the scripts read the local ECDS file with it); exit 1 when there is none or
//! several. The shapes are read by [`dbfault::manifest`].

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(check::run(std::env::args().skip(1).collect()));
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod check {
    use dbfault::config::Config;
    use dbfault::manifest::{plugin_configs, single_plugin_config};
    use std::io::{Read, Write};

    pub fn run(args: Vec<String>) -> i32 {
        if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
            eprintln!("usage: dbfault-check [--strict] FILE... (plugin config JSON, WasmPlugin YAML, or ECDS file; - for stdin)");
            eprintln!("       dbfault-check --plugin-config FILE (print the one plugin configuration in FILE)");
            return 2;
        }
        if args.first().is_some_and(|a| a == "--plugin-config") {
            let [_, file] = args.as_slice() else {
                eprintln!("usage: dbfault-check --plugin-config FILE");
                return 2;
            };
            return print_plugin_config(file);
        }
        let strict = args.iter().any(|a| a == "--strict");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut status = 0;
        for arg in args.iter().filter(|a| *a != "--strict") {
            let text = match read(arg) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{arg}: cannot read: {e}");
                    status = status.max(2);
                    continue;
                }
            };
            match plugin_configs(arg, &text) {
                Err(why) => {
                    eprintln!("{arg}: {why}");
                    status = status.max(2);
                }
                Ok(found) => {
                    for f in found {
                        match Config::parse(&f.bytes) {
                            Ok(config) => {
                                println!(
                                    "{}: valid (config {}: the `config` label of dbfault_config_info)",
                                    f.origin,
                                    dbfault::config::digest::config_id(&f.bytes)
                                );
                                for line in dbfault::cli::describe(&config) {
                                    println!("  {line}");
                                }
                                for rule in &config.faults {
                                    match rule.expires_at {
                                        None if rule.enabled => println!(
                                            "  warning: rule {} has no expiresAt: a forgotten fault never ends by itself",
                                            rule.name
                                        ),
                                        Some(at) if at <= now => {
                                            let when = dbfault::config::time::format(at);
                                            if strict {
                                                println!("  error: rule {} expired at {when} (--strict)", rule.name);
                                                status = status.max(1);
                                            } else {
                                                println!("  warning: rule {} expired at {when}: it will not act", rule.name);
                                            }
                                        }
                                        _ => {}
                                    }
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

    /// `--plugin-config FILE`: the configuration as found (not validated, so that a broken one
    /// can still be read and fixed), then one newline. Exit 1 when there is not exactly one.
    fn print_plugin_config(file: &str) -> i32 {
        let text = match read(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                return 2;
            }
        };
        match single_plugin_config(file, &text) {
            Ok(found) => {
                let mut out = std::io::stdout().lock();
                let written = out
                    .write_all(&found.bytes)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                match written {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("dbfault-check: cannot write: {e}");
                        2
                    }
                }
            }
            Err(why) => {
                eprintln!("{file}: {why}");
                1
            }
        }
    }
}
