//! dbfault: a proxy-wasm network (L4) filter for Envoy and Istio sidecars in front of database
//! connections. It counts connections and bytes per upstream database, exported as Envoy stats
//! with `upstream` and `fault` labels, and injects faults (abort, blackhole, delay, cut) into
//! the connections its rules name.
//!
//! # Layout
//! Bottom to top; each module uses only the modules below it that the table lists.
//! - [`flow`]: the vocabulary of a data event — [`flow::Direction`], [`flow::Effect`],
//!   [`flow::Close`].
//! - [`config`]: the configuration toolkit — the JSON tree, field-by-field reading that refuses
//!   unknown keys and names the path in errors, durations, times, SHA-256, the `metrics`
//!   section.
//! - [`upstream`]: the upstream identity of a connection, label sanitising.
//! - [`throughput`]: byte counts ([`throughput::Traffic`]) and the windowed bytes-per-second
//!   rate.
//! - [`schedule`]: rule windows, per-connection and per-sidecar draws, jitter, time helpers.
//! - [`protocol`]: the database wire protocols (PostgreSQL, MySQL/MariaDB, Redis) read and
//!   rewritten as they pass: readers, lexers, sessions. Pure: it knows nothing of faults or
//!   metrics; it reports and asks through one interface, [`protocol::Callbacks`] (the time, the
//!   events, the rules).
//! - [`metrics`]: metric names and the per-upstream series registry, over a
//!   [`metrics::MetricSink`].
//! - [`fault`]: fault rules — `rule`, `matching`, `engine` (which rules are active, which one
//!   decides), `connection` (a connection's byte ledger), one module per kind.
//! - [`plugin`]: the whole plugin configuration, [`plugin::Config`].
//! - `manifest`, `cli` (native only): reading and editing files for the `dbfault` command.
//! - [`host`]: the seam, [`host::Host`]: every host call the filter makes. Its real one (Wasm
//!   only, `ProxyWasm`) is the one place that calls `proxy_wasm::hostcalls`.
//! - [`filter`]: the root and stream contexts over the seam, a thin layer over the above; only
//!   their proxy-wasm trait impls (`filter/contexts.rs`) are Wasm only.
//!
//! Everything but the real host is plain Rust, unit-tested natively with `cargo test` (the
//! filter through a fake host, `filter/tests.rs`); time
//! and randomness are arguments.
//!
//! # Layers
//! What each module may use (besides itself). `tests/layering.rs` reads every `crate::` path in
//! every module's production code and fails on one this table does not allow, and on a circle
//! in the table.
//!
//! | module | may use |
//! |---|---|
//! | `flow` | — |
//! | `config` | — |
//! | `upstream` | — |
//! | `throughput` | — |
//! | `schedule` | `config` |
//! | `protocol` | `flow` |
//! | `metrics` | `throughput`, `protocol` |
//! | `fault` | `flow`, `config`, `upstream`, `throughput`, `schedule`, `protocol` |
//! | `plugin` | `config`, `fault` |
//! | `manifest` | — |
//! | `cli` | `config`, `schedule`, `protocol`, `fault`, `plugin`, `manifest` |
//! | `host` | `flow`, `metrics` |
//! | `filter` | `flow`, `config`, `upstream`, `throughput`, `schedule`, `protocol`, `metrics`, `fault`, `plugin`, `host` |

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod config;
pub mod fault;
pub mod flow;
#[cfg(not(target_arch = "wasm32"))]
pub mod manifest;
pub mod metrics;
pub mod plugin;
pub mod protocol;
pub mod schedule;
pub mod throughput;
pub mod upstream;

pub mod filter;
pub mod host;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    // Replace the SDK's hook (which unwraps its own log call) with one that cannot panic again.
    std::panic::set_hook(Box::new(|info| host::log_critical(&format!("dbfault: panic: {info}"))));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root::new(context_id))
    });
}}
