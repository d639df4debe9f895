use super::{with_vm, Entry};
use crate::fault::connection::Connection;
use crate::fault::matching::UpstreamInfo;
use crate::fault::{Direction, Effect};
use crate::host::{self, HostMetrics, Side};
use crate::metrics::Traffic;
use crate::schedule::mix;
use crate::upstream::{self, ConnectionFacts};
use log::debug;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, PeerType};
use std::cell::RefCell;
use std::rc::Rc;

/// One downstream connection.
pub struct Stream {
    id: u32,
    entry: Rc<RefCell<Entry>>,
    /// The upstream is known (`tcp_proxy` picks the cluster after our `on_new_connection`; it
    /// is known at the first data event in either direction).
    identified: bool,
    finished: bool,
}

impl Stream {
    pub fn new(id: u32) -> Stream {
        let seed = with_vm(|vm| {
            vm.seeds = vm.seeds.wrapping_add(1);
            vm.seeds
        })
        .unwrap_or(0);
        let entry = Rc::new(RefCell::new(Entry {
            fault: Connection::new(
                mix(seed ^ mix(u64::from(id))),
                0,
                Rc::new(Traffic::default()),
            ),
            upstream: None,
            stats: None,
        }));
        with_vm(|vm| vm.connections.insert(id, Rc::clone(&entry)));
        Stream {
            id,
            entry,
            identified: false,
            finished: false,
        }
    }

    /// Resolves the upstream once, counts the connection and lets the first active matching
    /// rule decide. Called at the first data event in either direction, or at close for a
    /// connection that carried no data.
    fn identify(&mut self) {
        self.identified = true;
        // Property lookups are the expensive part of a new connection (each costs about 5% of
        // Envoy's connection rate, measured): ask only for what the identity or the current
        // rules need.
        let cluster = host::property(&["xds", "cluster_name"]);
        let wants_sni = upstream::needs_sni(cluster.as_deref())
            || with_vm(|vm| vm.engine.uses_hosts()).unwrap_or(false);
        let sni = if wants_sni {
            host::property(&["connection", "requested_server_name"])
        } else {
            None
        };
        let destination = if upstream::needs_destination(cluster.as_deref(), sni.as_deref()) {
            host::property(&["destination", "address"])
        } else {
            None
        };
        let wants_port = upstream::cluster_port(cluster.as_deref()).is_none()
            && with_vm(|vm| vm.engine.uses_ports()).unwrap_or(false);
        let upstream_address = if wants_port {
            host::property(&["upstream", "address"])
        } else {
            None
        };
        let facts = ConnectionFacts {
            cluster: cluster.as_deref(),
            sni: sni.as_deref(),
            destination: destination.as_deref(),
        };
        let label = upstream::identify(facts);
        let info = UpstreamInfo {
            host: upstream::raw_identity(facts).to_ascii_lowercase(),
            sni: sni
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase),
            cluster: cluster.clone(),
            port: upstream::port(facts, upstream_address.as_deref()),
        };
        debug!(
            "dbfault: connection {} to {label} (cluster {}, sni {})",
            self.id,
            cluster.as_deref().unwrap_or("-"),
            sni.as_deref().unwrap_or("-")
        );
        let Ok(mut entry) = self.entry.try_borrow_mut() else {
            return;
        };
        entry.upstream = Some(info);
        let id = self.id;
        with_vm(|vm| {
            let metrics = &vm.config.metrics;
            if metrics.enabled {
                let max = metrics.max_upstreams;
                let stats = vm.telemetry.open(&mut HostMetrics, &label, max);
                entry.fault.set_traffic(Rc::clone(&stats.traffic));
                entry.stats = Some(stats);
            }
            let now = host::now_nanos().unwrap_or(0);
            entry.fault.set_opened_at(now);
            vm.decide(id, &mut entry, now, true);
        });
    }

    fn on_data(&mut self, dir: Direction, size: usize) -> Action {
        if !self.identified {
            self.identify();
        }
        let Ok(mut entry) = self.entry.try_borrow_mut() else {
            return Action::Continue;
        };
        let outcome = entry
            .fault
            .on_data(dir, size, &mut || host::now_nanos().unwrap_or(0));
        if entry.fault.fault.is_some() {
            let id = self.id;
            with_vm(|vm| vm.track(id, &entry.fault));
        }
        drop(entry);
        let side = match dir {
            Direction::ToDatabase => Side::Downstream,
            Direction::ToClient => Side::Upstream,
        };
        let action = match outcome.effect {
            Effect::Forward => Action::Continue,
            Effect::Hold => Action::Pause,
            Effect::Drop { keep } => {
                host::drop_data(side, size, keep);
                Action::Continue
            }
        };
        if outcome.close {
            host::close_connection();
        }
        action
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.identified {
            self.identify();
        }
        let id = self.id;
        let Ok(mut entry) = self.entry.try_borrow_mut() else {
            return;
        };
        entry.fault.finish();
        with_vm(|vm| {
            if let Some(stats) = entry.stats.take() {
                vm.telemetry.close(&stats);
            }
            vm.connections.remove(&id);
            vm.timed.remove(&id);
        });
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
    }
}

impl StreamContext for Stream {
    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        self.on_data(Direction::ToDatabase, data_size)
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        self.on_data(Direction::ToClient, data_size)
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        if !self.identified {
            self.identify();
        }
    }

    fn on_upstream_close(&mut self, _peer_type: PeerType) {
        if !self.identified {
            self.identify();
        }
    }

    fn on_log(&mut self) {
        self.finish();
    }
}
