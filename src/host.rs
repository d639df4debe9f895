//! The seam between the filter and Envoy: every host call the filter makes goes through
//! [`Host`]. `ProxyWasm` (Wasm only) is the real one, the only code that calls
//! `proxy_wasm::hostcalls`: every `Status` is handled there, a failed call logged and turned
//! into `None` or a no-op, so that callers fail open. Native unit tests of the filter use a
//! recording host instead.

use crate::flow::Direction;
use crate::metrics::MetricSink;
use std::time::Duration;

/// The host calls the filter makes.
pub trait Host {
    /// A string property such as `["xds", "cluster_name"]`; `None` when unset or not UTF-8.
    fn property(&mut self, path: &[&str]) -> Option<String>;
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_nanos(&mut self) -> Option<u64>;
    /// The plugin configuration bytes of the current `on_configure` (empty when none).
    fn plugin_configuration(&mut self, size: usize) -> Vec<u8>;
    /// Makes the `log` crate's level follow the host's.
    fn sync_log_level(&mut self);
    /// Sets the calling root context's tick period.
    fn set_tick_period(&mut self, period: Duration);
    /// Inside a data callback of `dir`: `len` bytes of its buffer from `start`.
    fn read_data(&mut self, dir: Direction, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Inside a data callback of `size` bytes: keeps the first `keep` bytes, discards the rest.
    fn drop_data(&mut self, dir: Direction, size: usize, keep: usize);
    /// Replaces the buffer's bytes from `from` to `size` with `bytes`.
    fn replace_data(&mut self, dir: Direction, from: usize, size: usize, bytes: &[u8]);
    /// Closes the current (effective) connection: pending writes flushed, then a FIN.
    fn close_connection(&mut self);
    /// Resumes the current (effective) connection's paused client → database stream.
    fn resume_downstream(&mut self);
    /// Makes `context_id` the target of the following calls; false when it is gone.
    fn set_effective_context(&mut self, context_id: u32) -> bool;
    /// Process-wide shared data and its version (CAS).
    fn shared_data(&mut self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn set_shared_data(&mut self, key: &str, value: &[u8]);
    /// The host's stats.
    fn metrics(&mut self) -> &mut dyn MetricSink;
}

#[cfg(target_arch = "wasm32")]
pub use proxy::{log_critical, ProxyWasm};

#[cfg(target_arch = "wasm32")]
mod proxy {
    use super::Host;
    use crate::flow::Direction;
    use crate::metrics::{MetricId, MetricKind, MetricSink};
    use log::{debug, warn};
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::{BufferType, MetricType};
    use std::time::{Duration, UNIX_EPOCH};

    /// Envoy, through proxy-wasm.
    pub struct ProxyWasm;

    /// Logs at critical level without going through `log` (the panic hook: nothing there may
    /// panic again, and the SDK's own hook unwraps its log call).
    pub fn log_critical(message: &str) {
        let _ = hostcalls::log(proxy_wasm::types::LogLevel::Critical, message);
    }

    /// Envoy's stats, through `define_metric` / `increment_metric`.
    impl MetricSink for ProxyWasm {
        fn define(&mut self, kind: MetricKind, name: &str) -> Option<MetricId> {
            let kind = match kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
                MetricKind::Histogram => MetricType::Histogram,
            };
            match hostcalls::define_metric(kind, name) {
                Ok(id) => Some(id),
                Err(status) => {
                    warn!("dbfault: cannot define metric {name}: {status:?}");
                    None
                }
            }
        }

        fn record(&mut self, id: MetricId, value: u64) {
            if let Err(status) = hostcalls::record_metric(id, value) {
                debug!("dbfault: record of metric {id} failed: {status:?}");
            }
        }

        fn add(&mut self, id: MetricId, delta: i64) {
            if let Err(status) = hostcalls::increment_metric(id, delta) {
                debug!("dbfault: increment of metric {id} by {delta} failed: {status:?}");
            }
        }
    }

    impl Host for ProxyWasm {
        /// A string property such as `["xds", "cluster_name"]`; `None` when unset or not UTF-8.
        fn property(&mut self, path: &[&str]) -> Option<String> {
            match hostcalls::get_property(path.to_vec()) {
                Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
                Ok(None) => None,
                Err(status) => {
                    let name = path.last().copied().unwrap_or_default();
                    debug!("dbfault: property {name} unavailable: {status:?}");
                    None
                }
            }
        }

        /// Host wall-clock time in nanoseconds since the Unix epoch.
        fn now_nanos(&mut self) -> Option<u64> {
            let now = hostcalls::get_current_time().ok()?;
            let since = now.duration_since(UNIX_EPOCH).ok()?;
            u64::try_from(since.as_nanos()).ok()
        }

        /// The plugin configuration bytes of the current `on_configure` (empty when there is none).
        fn plugin_configuration(&mut self, size: usize) -> Vec<u8> {
            if size == 0 {
                return Vec::new();
            }
            match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
                Ok(bytes) => bytes.unwrap_or_default(),
                Err(status) => {
                    warn!("dbfault: cannot read the plugin configuration: {status:?}");
                    Vec::new()
                }
            }
        }

        /// Makes the `log` crate's level follow Envoy's level for Wasm logs, so that a disabled debug
        /// line costs neither formatting nor a host call (per connection, that adds up).
        fn sync_log_level(&mut self) {
            if let Ok(level) = hostcalls::get_log_level() {
                proxy_wasm::set_log_level(level);
            }
        }

        /// Sets the calling root context's tick period.
        fn set_tick_period(&mut self, period: Duration) {
            if let Err(status) = hostcalls::set_tick_period(period) {
                warn!("dbfault: cannot set the tick period: {status:?}");
            }
        }

        /// Inside a data callback of `dir`: `len` bytes of its buffer from `start`.
        fn read_data(&mut self, dir: Direction, start: usize, len: usize) -> Option<Vec<u8>> {
            match hostcalls::get_buffer(buffer(dir), start, len) {
                Ok(bytes) => bytes,
                Err(status) => {
                    debug!("dbfault: cannot read the data buffer: {status:?}");
                    None
                }
            }
        }

        /// Inside a data callback of `size` bytes: keeps the first `keep` bytes and discards the rest.
        /// Envoy's buffer API can only replace from the start, so the kept head is copied out first.
        fn drop_data(&mut self, dir: Direction, size: usize, keep: usize) {
            let head = if keep == 0 {
                Vec::new()
            } else {
                match hostcalls::get_buffer(buffer(dir), 0, keep) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => Vec::new(),
                    Err(status) => {
                        warn!("dbfault: cannot read the data buffer: {status:?}");
                        return;
                    }
                }
            };
            if let Err(status) = hostcalls::set_buffer(buffer(dir), 0, size, &head) {
                warn!("dbfault: cannot drop bytes from the data buffer: {status:?}");
            }
        }

        /// Replaces the bytes of the current data buffer from `from` to `size` with `bytes` (the
        /// ABI only replaces from the front: the first `from` bytes are read and written back).
        fn replace_data(&mut self, dir: Direction, from: usize, size: usize, bytes: &[u8]) {
            let mut all = if from == 0 {
                Vec::new()
            } else {
                match hostcalls::get_buffer(buffer(dir), 0, from) {
                    Ok(Some(head)) => head,
                    Ok(None) => Vec::new(),
                    Err(status) => {
                        warn!("dbfault: cannot read the data buffer: {status:?}");
                        return;
                    }
                }
            };
            all.extend_from_slice(bytes);
            if let Err(status) = hostcalls::set_buffer(buffer(dir), 0, size, &all) {
                warn!("dbfault: cannot rewrite the data buffer: {status:?}");
            }
        }

        /// Closes the current (effective) connection: Envoy flushes pending writes, then sends a FIN.
        fn close_connection(&mut self) {
            if let Err(status) = hostcalls::close_downstream() {
                warn!("dbfault: cannot close the connection: {status:?}");
            }
        }

        /// Resumes the current (effective) connection's paused client → database stream.
        fn resume_downstream(&mut self) {
            if let Err(status) = hostcalls::resume_downstream() {
                warn!("dbfault: cannot resume the connection: {status:?}");
            }
        }

        /// Makes `context_id` the target of the following host calls (from a root context's tick).
        /// Returns false when the context is gone.
        fn set_effective_context(&mut self, context_id: u32) -> bool {
            match hostcalls::set_effective_context(context_id) {
                Ok(()) => true,
                Err(status) => {
                    debug!("dbfault: context {context_id} unavailable: {status:?}");
                    false
                }
            }
        }

        /// Process-wide shared data (all VMs with the same `vm_id`) and its version (CAS).
        fn shared_data(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
            match hostcalls::get_shared_data(key) {
                Ok((bytes, cas)) => bytes.map(|b| (b, cas.unwrap_or(0))),
                Err(status) => {
                    debug!("dbfault: shared data {key} unavailable: {status:?}");
                    None
                }
            }
        }

        fn set_shared_data(&mut self, key: &str, value: &[u8]) {
            if let Err(status) = hostcalls::set_shared_data(key, Some(value), None) {
                warn!("dbfault: cannot write shared data {key}: {status:?}");
            }
        }

        fn metrics(&mut self) -> &mut dyn MetricSink {
            self
        }
    }

    /// The buffer a data callback of `dir` carries.
    fn buffer(dir: Direction) -> BufferType {
        match dir {
            Direction::ToDatabase => BufferType::DownstreamData,
            Direction::ToClient => BufferType::UpstreamData,
        }
    }
}
