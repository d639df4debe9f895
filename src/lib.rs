//! dbfault: a proxy-wasm network (L4) filter for Envoy and Istio sidecars in front of database
//! connections. It counts connections and bytes per upstream database, exported as Envoy stats
//! with `upstream` and `fault` labels, and injects faults (abort, blackhole, delay, cut) into
//! the connections its rules name.
//!
//! # Layout
//! - [`config`]: plugin configuration JSON → validated [`config::Config`]: the JSON tree
//!   (`json`), field-by-field reading with paths for errors (`fields`), durations
//!   (`duration`), and the `metrics` section. Errors name the field and the bad value.
//! - [`fault`]: everything about fault rules — `rule` (a rule's common fields), `matching`
//!   (which upstreams it names), `engine` (which rules are active, which one decides),
//!   `connection` (a connection's byte ledger and the dispatch to its fault), and one module per
//!   fault kind (`abort`, `blackhole`, `delay`, `cut`) owning its parameters, their validation,
//!   its per-connection state and its behaviour.
//! - [`protocol`]: database wire protocols read as they pass (PostgreSQL so far; not yet used by
//!   the filter).
//! - [`upstream`]: the upstream identity of a connection, label sanitising.
//! - [`schedule`]: rule windows, per-connection percentage draws, jitter.
//! - [`throughput`]: byte counts and the windowed bytes-per-second rate.
//! - [`metrics`]: metric names and the per-upstream series registry, over a [`metrics::MetricSink`].
//! - `host` (Wasm only): the one place that calls `proxy_wasm::hostcalls`.
//! - `filter` (Wasm only): the root and stream contexts, a thin layer over the above.
//! - `cli`, `manifest` (native only): text, file reading and editing for the `dbfault` command.
//!
//! Everything but `host` and `filter` is plain Rust, unit-tested natively with `cargo test`; time
//! and randomness are arguments.

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod config;
pub mod fault;
#[cfg(not(target_arch = "wasm32"))]
pub mod manifest;
pub mod metrics;
pub mod protocol;
pub mod schedule;
pub mod throughput;
pub mod upstream;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod host;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    // Replace the SDK's hook (which unwraps its own log call) with one that cannot panic again.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("dbfault: panic: {info}"),
        );
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root::new(context_id))
    });
}}
