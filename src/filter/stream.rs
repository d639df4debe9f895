use super::watch::Watch;
use super::{with_vm, Entry};
use crate::fault::connection::Connection;
use crate::fault::matching::UpstreamInfo;
use crate::flow::{Close, Direction, Effect};
use crate::host::Host;
use crate::protocol::Protocol;
use crate::schedule::mix;
use crate::throughput::Traffic;
use crate::upstream::{self, ConnectionFacts};
use log::debug;
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

/// Where a downstream connection stands.
enum Phase {
    /// `tcp_proxy` picks the cluster after our `on_new_connection`: the upstream is known at the
    /// first data event in either direction (or at close, for a connection that carried none).
    Unidentified,
    Open(Rc<RefCell<Entry>>),
    Finished,
}

/// One downstream connection.
pub struct Stream {
    id: u32,
    /// The root context that created it (its ticks act on this connection).
    root: u32,
    phase: Phase,
    /// The identifying client chunk, when identification had to read it (the TLS check, the
    /// protocol): handed to the request metrics so that it is copied out of Envoy only once.
    first_chunk: Option<Vec<u8>>,
    /// Directions that carried forwarded bytes (bit 0 to the database, bit 1 to the client),
    /// until both did.
    ways: u8,
}

impl Stream {
    pub fn new(id: u32, root: u32) -> Stream {
        Stream {
            id,
            root,
            phase: Phase::Unidentified,
            first_chunk: None,
            ways: 0,
        }
    }

    /// Resolves the upstream once, counts the connection and lets the first active matching
    /// rule decide. `first`: the event that identifies it and its size (`None`: a close).
    fn identify(&mut self, host: &mut dyn Host, first: Option<(Direction, usize)>) {
        // Property lookups are the expensive part of a new connection (each costs about 5% of
        // Envoy's connection rate, measured): ask only for what the identity or the current
        // rules need.
        let cluster = host.property(&["xds", "cluster_name"]);
        let (uses_hosts, uses_ports, reads) = with_vm(|vm| {
            let m = &vm.metrics;
            (
                vm.engine.uses_hosts(),
                vm.engine.uses_ports(),
                (m.enabled && m.requests) || vm.engine.uses_protocol(),
            )
        })
        .unwrap_or_default();
        // The first chunk, read once when host rules need the TLS check (client bytes) or the
        // request metrics or protocol rules need the protocol (either side: MySQL's server
        // speaks first).
        match first {
            Some((Direction::ToDatabase, size)) if uses_hosts || reads => {
                self.first_chunk = host.read_data(Direction::ToDatabase, 0, size);
            }
            Some((Direction::ToClient, size)) if reads => {
                self.first_chunk = host.read_data(Direction::ToClient, 0, size);
            }
            _ => {}
        }
        let client_first = matches!(first, Some((Direction::ToDatabase, _)));
        // A TLS client speaks first: a connection identified by anything but client bytes that
        // open a TLS handshake has no SNI.
        let first_byte = self
            .first_chunk
            .as_deref()
            .filter(|_| client_first)
            .and_then(|c| c.first().copied());
        let wants_sni = upstream::needs_sni(cluster.as_deref())
            || (uses_hosts && upstream::starts_tls(first_byte));
        let sni = if wants_sni {
            host.property(&["connection", "requested_server_name"])
        } else {
            None
        };
        let destination = if upstream::needs_destination(cluster.as_deref(), sni.as_deref()) {
            host.property(&["destination", "address"])
        } else {
            None
        };
        let upstream_address = if uses_ports && upstream::cluster_port(cluster.as_deref()).is_none()
        {
            host.property(&["upstream", "address"])
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
            protocol: self.first_chunk.as_deref().and_then(|chunk| {
                if client_first {
                    crate::protocol::sniff(chunk)
                } else {
                    crate::protocol::sniff_server(chunk)
                }
            }),
        };
        debug!(
            "dbfault: connection {} to {label} (cluster {}, sni {})",
            self.id,
            cluster.as_deref().unwrap_or("-"),
            sni.as_deref().unwrap_or("-")
        );
        let id = self.id;
        let now = host.now_nanos().unwrap_or(0);
        super::advance_tick_clock(now);
        let entry = with_vm(|vm| {
            // Rules switch at each worker's tick: one due since is switched now, before the
            // connection is judged (its session's rules, its episode, the deciding rule), so
            // that a window's start or end holds for new connections to the moment.
            vm.catch_up(host, now);
            vm.seeds = vm.seeds.wrapping_add(1);
            let seed = mix(vm.seeds ^ mix(u64::from(id)));
            let metrics = &vm.metrics;
            let stats = metrics.enabled.then(|| {
                vm.telemetry
                    .open(host.metrics(), &label, metrics.max_upstreams)
            });
            let traffic = stats
                .as_ref()
                .map_or_else(Rc::default, |s| Rc::clone(&s.traffic));
            let counting = metrics.enabled && metrics.requests;
            let watch = match info.protocol {
                Some(protocol) if counting || vm.engine.has_protocol_rules(&info) => Watch::new(
                    protocol,
                    counting,
                    vm.engine.judging(&info),
                    vm.engine.last_episode(),
                )
                .map(Box::new),
                _ => None,
            };
            let watch = match watch {
                Some(watch) => Some(watch),
                None => {
                    // Not a protocol dbfault reads (or it spoke first from the server).
                    if let (true, Some(stats)) = (counting, stats.as_ref()) {
                        stats.requests.session(Protocol::Unknown);
                    }
                    None
                }
            };
            let mut entry = Entry {
                conn: Connection::new(seed, now, traffic),
                upstream: info,
                stats,
                watch,
            };
            let hurry = vm.decide(host, id, &mut entry, now, true);
            let entry = Rc::new(RefCell::new(entry));
            vm.connections.insert(id, Rc::clone(&entry));
            (entry, hurry)
        });
        let entry = entry.map(|(entry, hurry)| {
            if hurry {
                self.hurry_root(host);
            }
            entry
        });
        // Without the VM state (re-entered: should not happen) the connection goes unwatched.
        let entry = entry.unwrap_or_else(|| {
            Rc::new(RefCell::new(Entry {
                conn: Connection::new(0, now, Rc::new(Traffic::default())),
                upstream: UpstreamInfo::default(),
                stats: None,
                watch: None,
            }))
        });
        self.phase = Phase::Open(entry);
    }

    /// A data event of `size` bytes in `dir` (Envoy's whole buffer): what Envoy does with it.
    pub fn on_data(&mut self, host: &mut dyn Host, dir: Direction, size: usize) -> Action {
        if let Phase::Unidentified = self.phase {
            self.identify(host, Some((dir, size)));
        }
        let Phase::Open(entry) = &self.phase else {
            return Action::Continue;
        };
        let Ok(mut entry) = entry.try_borrow_mut() else {
            return Action::Continue;
        };
        let timed = entry.conn.next_wake().is_some();
        let Entry {
            conn,
            watch,
            stats,
            upstream,
        } = &mut *entry;
        let prefetched = self.first_chunk.take();
        // Envoy's buffer size, and the bytes counted: what reaches the database (rewritten),
        // what came from it (as Envoy's cluster counters count them).
        let mut buffer = size;
        let mut counted = size;
        let mut rewritten = None;
        // Rules on statements decide before the bytes go anywhere.
        if let Some(w) = watch.as_mut().filter(|w| w.rewrites(dir, conn)) {
            match w.rewrite(
                host,
                dir,
                size,
                conn,
                upstream,
                stats.as_ref(),
                prefetched.as_deref(),
            ) {
                Some(r) => {
                    buffer = r.size;
                    if dir == Direction::ToDatabase {
                        counted = r.size;
                    }
                    if let Some(until) = r.verdict.hold_until {
                        conn.hold_until(until);
                    }
                    rewritten = Some(r.verdict.close);
                }
                None => *watch = None,
            }
        }
        conn.touch(super::tick_clock());
        let outcome = conn.on_data(dir, counted, &mut || host.now_nanos().unwrap_or(0));
        let mut close_now = outcome.close == Some(Close::Now);
        match rewritten {
            Some(close) => {
                if let Some(w) = watch.as_mut() {
                    w.rewritten(dir, buffer, outcome.effect);
                }
                match close {
                    Some(Close::Now) => {
                        conn.close(true);
                        close_now = true;
                    }
                    Some(Close::AtNextTick) => conn.close(false),
                    _ => {}
                }
            }
            None => {
                // Read before a drop changes Envoy's buffer.
                if let Some(w) = watch.as_mut() {
                    if !w.on_data(
                        host,
                        dir,
                        size,
                        outcome.effect,
                        upstream,
                        stats.as_ref(),
                        prefetched.as_deref(),
                    ) {
                        *watch = None;
                    }
                }
            }
        }
        // A connection whose protocol is not read succeeds when it first carries bytes both
        // ways (the app's recovery after a rule stopped): looked at once per connection.
        if self.ways < 3 && outcome.effect == Effect::Forward {
            self.ways |= match dir {
                Direction::ToDatabase => 1,
                Direction::ToClient => 2,
            };
            if self.ways == 3 && watch.is_none() && super::outcomes_watched() {
                let now = host.now_nanos().unwrap_or(0);
                let opened_at = conn.opened_at();
                with_vm(|vm| vm.succeeded(host, upstream, stats.as_ref(), Some(opened_at), now));
            }
        }
        let hurry = conn.next_wake().is_some() != timed && {
            let id = self.id;
            with_vm(|vm| vm.track(id, conn)).unwrap_or(false)
        };
        drop(entry);
        if hurry {
            self.hurry_root(host);
        }
        let action = match outcome.effect {
            Effect::Forward => Action::Continue,
            Effect::Hold => Action::Pause,
            Effect::Drop { keep } => {
                host.drop_data(dir, buffer, keep);
                Action::Continue
            }
        };
        if close_now {
            host.close_connection();
        }
        action
    }

    /// Switches the root to the fast tick now: this connection holds data (or is otherwise due)
    /// while the roots tick slowly, and waiting for the next base tick would release it late.
    fn hurry_root(&self, host: &mut dyn Host) {
        if host.set_effective_context(self.root) {
            host.set_tick_period(super::FAST_TICK);
            with_vm(|vm| vm.hurry(self.root));
            host.set_effective_context(self.id);
        }
    }

    /// The connection is done (logged, or its context ends).
    pub fn finish(&mut self, host: &mut dyn Host) {
        if let Phase::Unidentified = self.phase {
            self.identify(host, None);
        }
        let Phase::Open(entry) = std::mem::replace(&mut self.phase, Phase::Finished) else {
            return;
        };
        let Ok(mut entry) = entry.try_borrow_mut() else {
            return;
        };
        entry.conn.finish();
        if let Some(watch) = entry.watch.take() {
            watch.finish(entry.stats.as_ref());
        }
        let id = self.id;
        with_vm(|vm| {
            if let Some(stats) = entry.stats.take() {
                vm.telemetry.close(&stats);
            }
            vm.connections.remove(&id);
            vm.timed.remove(&id);
        });
    }
}

impl Stream {
    /// Either side closed: a connection that carried no byte is identified now.
    pub fn closed(&mut self, host: &mut dyn Host) {
        if let Phase::Unidentified = self.phase {
            self.identify(host, None);
        }
    }
}
