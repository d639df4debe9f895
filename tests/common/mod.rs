//! Helpers the end-to-end tests share that need the crate itself (the harness,
//! `tests/harness`, knows nothing of it): `mod common;` in a test file. Each test file uses
//! some of them.
#![allow(dead_code)]

pub mod faults;
pub mod stack;

/// The plugin configuration shipped in envoy/dbfault.yaml, read by the crate's own reader.
pub fn shipped_plugin_config() -> String {
    let path = dbfault_testkit::repo().join("envoy/dbfault.yaml");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let found = dbfault::manifest::single_plugin_config("envoy/dbfault.yaml", &bytes)
        .unwrap_or_else(|e| panic!("envoy/dbfault.yaml: {e}"));
    String::from_utf8(found.bytes).unwrap_or_else(|e| panic!("envoy/dbfault.yaml: {e}"))
}
