//! The only module that calls `proxy_wasm::hostcalls`. Every `Status` is handled here: a failed
//! host call is logged and turned into `None`/no-op, so that callers fail open.

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
        };
        match hostcalls::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(status) => {
                warn!("dbfault: cannot define metric {name}: {status:?}");
                None
            }
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
            debug!(
                "dbfault: property {} unavailable: {status:?}",
                path.join(".")
            );
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

/// Sets the calling root context's tick period.
pub fn set_tick_period(period: Duration) {
    if let Err(status) = hostcalls::set_tick_period(period) {
        warn!("dbfault: cannot set the tick period: {status:?}");
    }
}
