use super::stream::Connection;
use super::with_vm;
use crate::config::Config;
use crate::host::{self, HostMetrics};
use log::{error, info};
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

/// One per plugin configuration per VM.
#[derive(Default)]
pub struct Root {
    /// Whether this root's configuration was accepted (and so counts in `live_roots`).
    live: bool,
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        if self.live {
            self.live = false;
            with_vm(|vm| {
                vm.live_roots = vm.live_roots.saturating_sub(1);
                if vm.live_roots == 0 {
                    // The last configuration of this VM is going away: its share of the
                    // bytes-per-second gauges must not stay behind in Envoy's stats.
                    vm.telemetry.withdraw(&mut HostMetrics);
                }
            });
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = host::plugin_configuration(plugin_configuration_size);
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(err) => {
                error!("dbfault: invalid configuration: {err}");
                return false;
            }
        };
        let metrics = &config.metrics;
        info!(
            "dbfault: configuration loaded: metrics {} (interval {:?}, maxUpstreams {})",
            if metrics.enabled { "on" } else { "off" },
            metrics.interval,
            metrics.max_upstreams
        );
        host::set_tick_period(metrics.interval);
        let was_live = std::mem::replace(&mut self.live, true);
        let config = Rc::new(config);
        with_vm(|vm| {
            if !was_live {
                vm.live_roots += 1;
            }
            if !config.metrics.enabled {
                vm.telemetry.withdraw(&mut HostMetrics);
            }
            vm.config = config;
        });
        true
    }

    fn on_tick(&mut self) {
        let Some(now) = host::now_nanos() else {
            return;
        };
        with_vm(|vm| {
            let metrics = &vm.config.metrics;
            if metrics.enabled {
                let interval = u64::try_from(metrics.interval.as_nanos()).unwrap_or(u64::MAX);
                vm.telemetry.flush_if_due(&mut HostMetrics, now, interval);
            }
        });
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Connection::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}
