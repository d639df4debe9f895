use super::with_vm;
use crate::host::{self, HostMetrics};
use crate::metrics::ConnectionStats;
use crate::upstream::{self, ConnectionFacts};
use log::debug;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, PeerType};

/// One downstream connection.
#[derive(Default)]
pub struct Connection {
    phase: Phase,
}

#[derive(Default)]
enum Phase {
    /// The upstream is not known yet (`tcp_proxy` picks the cluster after our
    /// `on_new_connection`; it is known at the first data event).
    #[default]
    New,
    /// Identified and counted.
    Tracked(ConnectionStats),
    /// Identified, with metrics off.
    Untracked,
    /// Closed and uncounted from `cx_active`.
    Done,
}

impl Connection {
    /// Resolves the upstream once and counts the connection. Called at the first data event in
    /// either direction, or at close for a connection that carried no data.
    fn identify(&mut self) {
        let cluster = host::property(&["xds", "cluster_name"]);
        let sni = host::property(&["connection", "requested_server_name"]);
        let destination = host::property(&["destination", "address"]);
        let upstream = upstream::identify(ConnectionFacts {
            cluster: cluster.as_deref(),
            sni: sni.as_deref(),
            destination: destination.as_deref(),
        });
        debug!("dbfault: connection to upstream {upstream} (cluster {cluster:?}, sni {sni:?})");
        self.phase = with_vm(|vm| {
            let metrics = &vm.config.metrics;
            if metrics.enabled {
                let max = metrics.max_upstreams;
                Phase::Tracked(vm.telemetry.open(&mut HostMetrics, &upstream, max))
            } else {
                Phase::Untracked
            }
        })
        .unwrap_or(Phase::Untracked);
    }

    fn finish(&mut self) {
        if matches!(self.phase, Phase::New) {
            self.identify();
        }
        if let Phase::Tracked(stats) = std::mem::replace(&mut self.phase, Phase::Done) {
            with_vm(|vm| vm.telemetry.close(&mut HostMetrics, &stats));
        }
    }
}

impl Context for Connection {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
    }
}

impl StreamContext for Connection {
    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if matches!(self.phase, Phase::New) {
            self.identify();
        }
        if let Phase::Tracked(stats) = &self.phase {
            stats.traffic.tx.add(data_size);
        }
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if matches!(self.phase, Phase::New) {
            self.identify();
        }
        if let Phase::Tracked(stats) = &self.phase {
            stats.traffic.rx.add(data_size);
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        if matches!(self.phase, Phase::New) {
            self.identify();
        }
    }

    fn on_upstream_close(&mut self, _peer_type: PeerType) {
        if matches!(self.phase, Phase::New) {
            self.identify();
        }
    }

    fn on_log(&mut self) {
        self.finish();
    }
}
