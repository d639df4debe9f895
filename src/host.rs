//! The only module that calls `proxy_wasm::hostcalls`. Every `Status` is handled here: a failed
//! host call is logged and turned into `None`/no-op, so that callers fail open.

use crate::flow::Direction;
use crate::metrics::{MetricId, MetricKind, MetricSink};
use log::{debug, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MetricType};
use std::time::{Duration, UNIX_EPOCH};

/// Envoy's stats, through `define_metric` / `increment_metric`.
pub struct HostMetrics;

impl MetricSink for HostMetrics {
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

/// A string property such as `["xds", "cluster_name"]`; `None` when unset or not UTF-8.
pub fn property(path: &[&str]) -> Option<String> {
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
pub fn now_nanos() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

/// The plugin configuration bytes of the current `on_configure` (empty when there is none).
pub fn plugin_configuration(size: usize) -> Vec<u8> {
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
pub fn sync_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// Sets the calling root context's tick period.
pub fn set_tick_period(period: Duration) {
    if let Err(status) = hostcalls::set_tick_period(period) {
        warn!("dbfault: cannot set the tick period: {status:?}");
    }
}

/// The buffer a data callback of `dir` carries.
fn buffer(dir: Direction) -> BufferType {
    match dir {
        Direction::ToDatabase => BufferType::DownstreamData,
        Direction::ToClient => BufferType::UpstreamData,
    }
}

/// Inside a data callback of `dir`: `len` bytes of its buffer from `start`.
pub fn read_data(dir: Direction, start: usize, len: usize) -> Option<Vec<u8>> {
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
pub fn drop_data(dir: Direction, size: usize, keep: usize) {
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
pub fn replace_data(dir: Direction, from: usize, size: usize, bytes: &[u8]) {
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
pub fn close_connection() {
    if let Err(status) = hostcalls::close_downstream() {
        warn!("dbfault: cannot close the connection: {status:?}");
    }
}

/// Resumes the current (effective) connection's paused client → database stream.
pub fn resume_downstream() {
    if let Err(status) = hostcalls::resume_downstream() {
        warn!("dbfault: cannot resume the connection: {status:?}");
    }
}

/// Makes `context_id` the target of the following host calls (from a root context's tick).
/// Returns false when the context is gone.
pub fn set_effective_context(context_id: u32) -> bool {
    match hostcalls::set_effective_context(context_id) {
        Ok(()) => true,
        Err(status) => {
            debug!("dbfault: context {context_id} unavailable: {status:?}");
            false
        }
    }
}

/// Process-wide shared data (all VMs with the same `vm_id`) and its version (CAS).
pub fn shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    match hostcalls::get_shared_data(key) {
        Ok((bytes, cas)) => bytes.map(|b| (b, cas.unwrap_or(0))),
        Err(status) => {
            debug!("dbfault: shared data {key} unavailable: {status:?}");
            None
        }
    }
}

pub fn set_shared_data(key: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_shared_data(key, Some(value), None) {
        warn!("dbfault: cannot write shared data {key}: {status:?}");
    }
}
