use super::with_vm;
use crate::fault::TickAction;
use crate::host::Host;
use crate::plugin::Config;
use log::{error, info};
use std::time::Duration;

use super::{BASE_TICK, FAST_TICK};

/// One per plugin configuration per VM.
pub struct Root {
    context_id: u32,
    /// Whether this root's configuration was accepted (and so counts in `live_roots`).
    live: bool,
    tick: Option<Duration>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            live: false,
            tick: None,
        }
    }

    fn set_tick(&mut self, host: &mut dyn Host, period: Duration) {
        if self.tick != Some(period) {
            host.set_tick_period(period);
            self.tick = Some(period);
        }
    }
}

fn summary(config: &Config) -> String {
    let m = &config.metrics;
    let mut text = format!(
        "metrics {} (interval {} ms, maxUpstreams {}); {} fault rule(s)",
        if m.enabled { "on" } else { "off" },
        crate::schedule::nanos(m.interval) / 1_000_000,
        m.max_upstreams,
        config.faults.len()
    );
    for rule in &config.faults {
        for part in [
            "; ",
            &rule.name,
            " = ",
            rule.kind.name(),
            if rule.enabled { "" } else { " (disabled)" },
            if rule.dry_run { " (dry run)" } else { "" },
        ] {
            text.push_str(part);
        }
    }
    text
}

impl Root {
    /// The host is done with this root (its configuration was replaced or the VM ends).
    pub fn done(&mut self, host: &mut dyn Host) {
        if self.live {
            self.live = false;
            with_vm(|vm| {
                vm.live_roots = vm.live_roots.saturating_sub(1);
                if vm.live_roots == 0 {
                    // The last configuration of this VM is going away: its share of the
                    // bytes-per-second gauges must not stay behind in Envoy's stats.
                    vm.telemetry.withdraw(host.metrics());
                }
            });
        }
    }

    /// A plugin configuration of `size` bytes: accepted (true) or refused, the previous one
    /// staying in force.
    pub fn configure(&mut self, host: &mut dyn Host, size: usize) -> bool {
        host.sync_log_level();
        let bytes = host.plugin_configuration(size);
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(err) => {
                error!("dbfault: invalid configuration: {err}");
                with_vm(|vm| vm.telemetry.config_rejected(host.metrics()));
                return false;
            }
        };
        info!("dbfault: configuration loaded: {}", summary(&config));
        let now = host.now_nanos().unwrap_or(0);
        let was_live = std::mem::replace(&mut self.live, true);
        let tick = BASE_TICK.min(config.metrics.interval);
        with_vm(|vm| {
            if !was_live {
                vm.live_roots += 1;
            }
            vm.configure(host, config, bytes, now);
        });
        self.set_tick(host, tick);
        // Open connections meet the new rules now rather than at the next tick (up to a base
        // tick later: that wait showed in `applyTo: all` on a loaded machine).
        self.tick(host);
        true
    }

    /// A tick: the VM's rules and connections at this time, and the host actions they need.
    pub fn tick(&mut self, host: &mut dyn Host) {
        let Some(now) = host.now_nanos() else {
            return;
        };
        let id = self.context_id;
        let Some((actions, fast, interval, hurried)) = with_vm(|vm| {
            let (actions, fast, interval) = vm.tick(host, now);
            (actions, fast, interval, vm.hurried(id))
        }) else {
            return;
        };
        if hurried {
            self.tick = Some(FAST_TICK);
        }
        // Host actions run outside the VM state borrow: a close calls back into the stream
        // context (`on_downstream_close`, `on_log`), which needs the state.
        for (id, action) in &actions {
            if host.set_effective_context(*id) {
                match action {
                    TickAction::Close => host.close_connection(),
                    TickAction::Resume => host.resume_downstream(),
                }
            }
        }
        if !actions.is_empty() {
            host.set_effective_context(self.context_id);
        }
        // The buffer goes back for the next tick (no allocation per tick).
        with_vm(|vm| vm.actions = actions);
        self.set_tick(
            host,
            if fast {
                FAST_TICK
            } else {
                BASE_TICK.min(interval)
            },
        );
    }

    pub fn context_id(&self) -> u32 {
        self.context_id
    }
}
