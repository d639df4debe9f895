//! The proxy-wasm contexts: they translate host callbacks into calls on the pure core.
//!
//! State that must outlive one plugin configuration lives in `VmState`, one per Wasm VM (one
//! VM per Envoy worker): an ECDS update creates a new root context in the same VM, while the
//! connections opened under the old one keep their stream contexts. When an update brings a new
//! VM instead (the module changed), the old VM learns of the new configuration through Envoy's
//! process-wide shared data, which every root context polls on its tick.

#[cfg(target_arch = "wasm32")]
mod contexts;
mod root;
mod stream;
mod watch;

pub use root::Root;
pub use stream::Stream;

use crate::config::MetricsConfig;
use crate::fault::connection::Connection;
use crate::fault::engine::{Change, Engine};
use crate::fault::matching::UpstreamInfo;
use crate::fault::recovery::Recovery;
use crate::fault::{FaultKind, TickAction};
use crate::host::Host;
use crate::metrics::{ConnectionStats, Telemetry};
use crate::plugin::Config;
use crate::schedule::nanos;
use log::{debug, info};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::Duration;

/// How often a root context ticks when no connection is due soon: rule windows, `applyTo: all`
/// activations and configurations from other VMs are noticed within this.
const BASE_TICK: Duration = Duration::from_millis(50);
/// While a connection is due within a base tick (a hold to release, a close): it is acted on
/// within this of its time. An active delay rule that holds nothing costs no fast ticks (it
/// took about 3% of the connection rate with 5 such rules on 5 listeners).
const FAST_TICK: Duration = Duration::from_millis(1);
/// How far ahead of its time a tick may act on a deadline (see [`VmState::tick`]).
const MAX_EARLY: Duration = Duration::from_millis(2);

/// Shared-data key holding the newest accepted configuration: 8 bytes of load time (ns since
/// the epoch, little endian), then the plugin configuration bytes.
const SHARED_CONFIG_KEY: &str = "dbfault.config.v1";

/// One identified connection, shared by its stream context and the VM (whose ticks act on it).
struct Entry {
    conn: Connection,
    upstream: UpstreamInfo,
    /// `None` when metrics are off.
    stats: Option<ConnectionStats>,
    /// The connection's protocol, read for the request metrics (`None`: not read, or no
    /// longer: not PostgreSQL, encrypted).
    watch: Option<Box<watch::Watch>>,
}

struct VmState {
    /// The newest accepted configuration's metrics settings (its rules live in `engine`) and
    /// its bytes (compared with shared data).
    metrics: MetricsConfig,
    config_bytes: Vec<u8>,
    telemetry: Telemetry,
    engine: Engine,
    connections: HashMap<u32, Rc<RefCell<Entry>>, BuildHasherDefault<IdHasher>>,
    /// Connections that need a tick (a deadline, a hold, a pending close).
    timed: Timed,
    /// Rules changed: open connections need another look at the next tick.
    reevaluate: bool,
    /// Root contexts whose configuration was accepted and that are not done yet.
    live_roots: usize,
    /// Shared configuration bytes this VM could not parse (logged once).
    refused_shared: Option<Vec<u8>>,
    /// The shared-data version (CAS) of the configuration last looked at, and when.
    shared_cas: Option<u32>,
    last_shared_poll: u64,
    /// When a root context of this VM last ticked.
    last_tick: Option<u64>,
    /// Scratch space of the tick, kept to avoid allocating per tick.
    due: Vec<u32>,
    actions: Vec<(u32, TickAction)>,
    /// Per-connection seeds come from this counter, mixed with the VM's first load time.
    seeds: u64,
    /// Whether the engine has this sidecar's node id (read once per VM).
    sidecar_known: bool,
    /// The last tick found a connection due within a base tick, so the roots tick fast.
    fast: bool,
    /// Roots that a stream switched to the fast tick since their last tick (the root's own
    /// record of its period is stale then).
    hurried: Vec<u32>,
    /// Rules that stopped acting, waiting for the app's first success (its recovery).
    recovery: Recovery,
}

impl VmState {
    /// Built at compile time: a lazily initialised thread-local costs its own init code.
    const fn new() -> VmState {
        VmState {
            metrics: MetricsConfig::DEFAULT,
            config_bytes: Vec::new(),
            telemetry: Telemetry::new(),
            engine: Engine::new(),
            connections: HashMap::with_hasher(BuildHasherDefault::new()),
            timed: Timed(Vec::new()),
            reevaluate: false,
            live_roots: 0,
            refused_shared: None,
            shared_cas: None,
            last_shared_poll: 0,
            last_tick: None,
            due: Vec::new(),
            actions: Vec::new(),
            seeds: 0,
            sidecar_known: false,
            fast: false,
            hurried: Vec::new(),
            recovery: Recovery::new(),
        }
    }
}

thread_local! {
    static VM: RefCell<VmState> = const { RefCell::new(VmState::new()) };
    /// The tick clock: the latest time a root tick or an identification read (as old as the
    /// last tick, 50 ms at most when the worker is not overloaded). Data events read it to
    /// stamp a connection's last byte without a host call.
    static TICK_CLOCK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// A rule that stopped waits for the app's recovery: successful requests are reported to
    /// the VM (a data event reads this instead of borrowing the VM).
    static OUTCOMES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether requests' outcomes matter now (see `OUTCOMES`).
fn outcomes_watched() -> bool {
    OUTCOMES.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Shared-data key prefix under which the first VM to see an upstream recover after a rule
/// stopped records it (8 bytes: the end, as that VM saw it), so that one value is reported per
/// sidecar.
const SHARED_RECOVERY_PREFIX: &str = "dbfault.recovery.v1.";

/// Ends seen by two VMs within this much of each other are the same end.
const SAME_END: u64 = 10_000_000_000;

/// The tick clock (see `TICK_CLOCK`).
fn tick_clock() -> u64 {
    TICK_CLOCK.try_with(std::cell::Cell::get).unwrap_or(0)
}

/// Moves the tick clock to `now` (never back).
fn advance_tick_clock(now: u64) {
    let _ = TICK_CLOCK.try_with(|c| c.set(c.get().max(now)));
}

/// Hashes Envoy's context ids (small integers Envoy chooses, not an attacker) with one multiply:
/// SipHash and its random seed cost module size for nothing here.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The ids of the connections that need ticks, sorted (a second hash table type would add its
/// own copy of the table code to the module; few connections are timed at once).
struct Timed(Vec<u32>);

impl Timed {
    fn insert(&mut self, id: u32) {
        if let Err(at) = self.0.binary_search(&id) {
            self.0.insert(at, id);
        }
    }

    fn remove(&mut self, id: &u32) {
        if let Ok(at) = self.0.binary_search(id) {
            self.0.remove(at);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &u32> {
        self.0.iter()
    }
}

/// Runs `f` on this VM's state; `None` if it is unavailable (re-entered), so callers fail open.
fn with_vm<R>(f: impl FnOnce(&mut VmState) -> R) -> Option<R> {
    VM.try_with(|vm| vm.try_borrow_mut().ok().map(|mut vm| f(&mut vm)))
        .ok()
        .flatten()
}

fn encode_shared(loaded_at: u64, bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + bytes.len());
    value.extend_from_slice(&loaded_at.to_le_bytes());
    value.extend_from_slice(bytes);
    value
}

fn decode_shared(value: &[u8]) -> Option<(u64, &[u8])> {
    let (time, bytes) = value.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*time), bytes))
}

impl VmState {
    /// Makes `config` the running configuration, loaded at `loaded_at`.
    fn adopt(
        &mut self,
        host: &mut dyn Host,
        config: Config,
        bytes: Vec<u8>,
        loaded_at: u64,
        now: u64,
    ) {
        let metrics_on = config.metrics.enabled;
        if !metrics_on {
            self.telemetry.withdraw(host.metrics());
        }
        let changes = self.engine.load(config.faults, loaded_at, now);
        self.telemetry
            .config_info(host.metrics(), &crate::config::digest::config_id(&bytes));
        self.metrics = config.metrics;
        self.config_bytes = bytes;
        // Rules a configuration removed or switched off stopped when it was loaded (one time
        // for every VM of the sidecar, however late a VM learns of it).
        self.report(host, &changes, loaded_at);
        self.watch_outcomes();
        self.reevaluate = true;
    }

    /// Switches the rules whose windows or expiry passed since the last tick (the next tick
    /// reconsiders open connections).
    fn catch_up(&mut self, host: &mut dyn Host, now: u64) {
        let changes = self.engine.update(now);
        if !changes.is_empty() {
            self.report(host, &changes, now);
            self.watch_outcomes();
            self.reevaluate = true;
        }
    }

    /// Keeps `OUTCOMES` in step with the recoveries waited for.
    fn watch_outcomes(&self) {
        let watched = self.recovery.waiting();
        let _ = OUTCOMES.try_with(|o| o.set(watched));
    }

    /// A request on a connection to `up` was answered without an error, or (`opened_at`) a
    /// connection opened then carried bytes both ways: it ends the wait for the app's recovery
    /// after rules that named `up` stopped.
    fn succeeded(
        &mut self,
        host: &mut dyn Host,
        up: &UpstreamInfo,
        stats: Option<&ConnectionStats>,
        opened_at: Option<u64>,
        now: u64,
    ) {
        if !self.recovery.waiting() {
            return;
        }
        let slot = stats.map_or(usize::MAX, ConnectionStats::slot);
        for r in self.recovery.succeeded(up, slot, opened_at, now) {
            // The first VM of the sidecar to see it reports it.
            let key = format!("{SHARED_RECOVERY_PREFIX}{}.{}", r.rule, up.host);
            let seen = host
                .shared_data(&key)
                .and_then(|(v, _)| v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()))
                .map(u64::from_le_bytes);
            if seen.is_some_and(|t| t.abs_diff(r.ended_at) < SAME_END) {
                continue;
            }
            host.set_shared_data(&key, &r.ended_at.to_le_bytes());
            info!(
                "dbfault: fault {} stopped {} ms before the first successful request to {}",
                r.rule, r.millis, up.host
            );
            if let (Some(stats), true) = (stats, self.metrics.enabled) {
                self.telemetry
                    .fault_recovery(host.metrics(), stats, &r.rule, r.millis);
            }
        }
    }

    /// Logs rule switches and sets the `fault_active` gauges.
    /// Logs and gauges what switched; a rule that stopped acting at `ended_at` starts the wait
    /// for the app's recovery.
    fn report(&mut self, host: &mut dyn Host, changes: &[Change], ended_at: u64) {
        for change in changes {
            if change.active {
                self.recovery.started(&change.name);
            } else if let Some(matcher) = &change.ended {
                self.recovery
                    .ended(Rc::clone(&change.name), matcher.clone(), ended_at);
            }
            let state = match (change.removed, change.active) {
                (true, _) => "removed",
                (false, true) => "active",
                (false, false) => "inactive",
            };
            info!("dbfault: fault {} {state}", &*change.name);
            if self.metrics.enabled {
                self.telemetry
                    .fault_active(host.metrics(), &change.name, change.active);
            }
        }
    }

    /// Accepts a configuration from `on_configure`: shares it with the other VMs, or takes the
    /// load time from shared data when another worker already loaded the same bytes.
    fn configure(&mut self, host: &mut dyn Host, config: Config, bytes: Vec<u8>, now: u64) {
        if !self.sidecar_known {
            // Envoy's node id: Istio sets it per pod (`sidecar~<ip>~<pod>.<ns>~<ns>.svc...`).
            // `xds.node` is the attribute (verified on Envoy 1.40: `node.id` answers nothing).
            let node = host.property(&["xds", "node", "id"]).unwrap_or_default();
            self.engine.set_sidecar(&node);
            self.sidecar_known = true;
        }
        let shared = host
            .shared_data(SHARED_CONFIG_KEY)
            .map(|(value, _cas)| value);
        let (loaded_at, first) = match shared.as_deref().and_then(decode_shared) {
            Some((at, shared_bytes)) if shared_bytes == bytes.as_slice() => (at, false),
            _ => {
                host.set_shared_data(SHARED_CONFIG_KEY, &encode_shared(now, &bytes));
                (now, true)
            }
        };
        if self.seeds == 0 {
            self.seeds = crate::schedule::mix(now);
        }
        self.adopt(host, config, bytes, loaded_at, now);
        if first {
            // The first VM to load these bytes says which rules this sidecar takes part in (the
            // others decide the same).
            for slot in self.engine.rules() {
                let share = slot.rule.sidecar_bp;
                if share < 10_000 {
                    info!(
                        "dbfault: rule {} {} on this sidecar (node id {}, sidecarPercentage {}.{:02})",
                        slot.name,
                        if slot.left_out { "left out" } else { "chosen" },
                        self.engine.sidecar(),
                        share / 100,
                        share % 100
                    );
                }
            }
        }
        self.telemetry.config_loaded(host.metrics());
    }

    /// Picks up a configuration another VM accepted (a module update creates new VMs; the old
    /// ones keep serving their open connections and must follow the new rules).
    ///
    /// Polled about once per `interval` (the base tick), however fast the VM ticks: a
    /// configuration can be up to 1 MiB, and the host copies it out on every read. (Three
    /// quarters of it: base ticks arrive with jitter, and each should poll.)
    fn poll_shared_config(&mut self, host: &mut dyn Host, now: u64, interval: u64) {
        if now.saturating_sub(self.last_shared_poll) < interval / 4 * 3 {
            return;
        }
        self.last_shared_poll = now;
        let Some((value, cas)) = host.shared_data(SHARED_CONFIG_KEY) else {
            return;
        };
        if self.shared_cas.replace(cas) == Some(cas) {
            return;
        }
        let Some((loaded_at, bytes)) = decode_shared(&value) else {
            return;
        };
        if bytes == self.config_bytes.as_slice() || self.refused_shared.as_deref() == Some(bytes) {
            return;
        }
        match Config::parse(bytes) {
            Ok(config) => {
                info!("dbfault: configuration updated from another VM");
                self.adopt(host, config, bytes.to_vec(), loaded_at, now);
                self.telemetry.config_loaded(host.metrics());
            }
            Err(err) => {
                // Another module version may know keys this one does not: keep the current rules.
                info!("dbfault: ignoring another VM's configuration: {err}");
                self.refused_shared = Some(bytes.to_vec());
            }
        }
    }

    /// One tick at `now`: follows rule switches and configurations from other VMs, acts on the
    /// connections that are due, flushes metrics. Returns the host actions to carry out (the
    /// `actions` buffer, to be handed back), whether the next tick must be fast, and the
    /// metrics interval.
    fn tick(&mut self, host: &mut dyn Host, now: u64) -> (Vec<(u32, TickAction)>, bool, Duration) {
        // Ticks arrive with some granularity (about 4 ms in Envoy 1.40 even at a 1 ms period):
        // act on what is due by the middle of the next gap, so that releases and closes land on
        // the nearest tick instead of always the one after; never more than MAX_EARLY ahead, so
        // that a loaded, slowly ticking worker does not release holds noticeably early.
        let gap = self.last_tick.map_or(0, |last| now.saturating_sub(last));
        self.last_tick = Some(now);
        advance_tick_clock(now);
        let due_by = now.saturating_add((gap / 2).min(nanos(MAX_EARLY)));
        self.poll_shared_config(host, now, nanos(BASE_TICK));
        let changes = self.engine.update(now);
        if !changes.is_empty() {
            self.report(host, &changes, now);
            self.reevaluate = true;
        }
        self.recovery.expire(now);
        self.watch_outcomes();
        let mut ids = std::mem::take(&mut self.due);
        if std::mem::take(&mut self.reevaluate) {
            ids.clear();
            ids.extend(self.connections.keys().copied());
            for &id in &ids {
                let Some(entry) = self.connections.get(&id).map(Rc::clone) else {
                    continue;
                };
                if let Ok(mut entry) = entry.try_borrow_mut() {
                    self.reevaluate_entry(host, id, &mut entry, now);
                };
            }
        }
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let mut soonest = u64::MAX;
        ids.clear();
        ids.extend(self.timed.iter().copied());
        for &id in &ids {
            let Some(entry) = self.connections.get(&id).map(Rc::clone) else {
                self.timed.remove(&id);
                continue;
            };
            let Ok(mut entry) = entry.try_borrow_mut() else {
                continue;
            };
            if let Some(action) = entry.conn.on_tick(due_by) {
                if action == TickAction::Resume {
                    if let Some(watch) = entry.watch.as_mut() {
                        watch.resumed();
                    }
                }
                actions.push((id, action));
            }
            if entry.conn.open_to(self.engine.last_episode()) {
                // Released from an ended delay while rules changed: they get their look now.
                self.decide(host, id, &mut entry, now, false);
            }
            soonest = soonest.min(entry.conn.next_wake().unwrap_or(u64::MAX));
            self.track(id, &entry.conn);
        }
        self.due = ids;
        let metrics = &self.metrics;
        if metrics.enabled {
            let interval = nanos(metrics.interval);
            self.telemetry.flush_if_due(host.metrics(), now, interval);
        }
        self.fast = soonest < now.saturating_add(nanos(BASE_TICK));
        (actions, self.fast, self.metrics.interval)
    }

    /// Applies the current rules to an open connection: ends a fault whose rule is no longer
    /// active, and lets newly active `applyTo: all` rules act on it.
    fn reevaluate_entry(&mut self, host: &mut dyn Host, id: u32, entry: &mut Entry, now: u64) {
        if let Some(watch) = entry.watch.as_mut() {
            watch.judging = self.engine.judging(&entry.upstream);
        }
        if let Some((rule, episode)) = entry.conn.fault() {
            if !self.engine.episode_running(episode) {
                debug!("dbfault: connection {id}: fault {} ends", &**rule);
                entry.conn.end_fault();
            }
        }
        if entry.conn.open_to(self.engine.last_episode()) {
            self.decide(host, id, entry, now, false);
        } else {
            self.track(id, &entry.conn);
        }
    }

    /// Lets the first active matching rule act on a connection. `identifying`: the connection's
    /// first event is being handled now (rules with `applyTo: new` apply only then).
    /// Returns whether the connection now needs ticks that no root gives it (see
    /// [`VmState::track`]).
    fn decide(
        &mut self,
        host: &mut dyn Host,
        id: u32,
        entry: &mut Entry,
        now: u64,
        identifying: bool,
    ) -> bool {
        if let Some(d) = self.engine.decide_with(
            &entry.upstream,
            entry.conn.seed(),
            (!identifying).then(|| entry.conn.considered_up_to()),
        ) {
            if d.selected {
                let rule = &d.slot.rule;
                debug!(
                    "dbfault: connection {id} to {}: fault {} ({}{})",
                    entry.upstream.host,
                    &*d.slot.name,
                    rule.kind.name(),
                    if rule.dry_run { ", dry run" } else { "" }
                );
                let name = Rc::clone(&d.slot.name);
                entry
                    .conn
                    .apply(rule, Rc::clone(&name), d.episode, now, identifying);
                // Closed or hung: a request of the app's fails.
                let refused = !rule.dry_run
                    && matches!(rule.kind, FaultKind::Abort(_) | FaultKind::Blackhole(_));
                if let Some(stats) = entry.stats.as_ref() {
                    self.telemetry.fault_injected(host.metrics(), stats, &name);
                    if refused && self.metrics.enabled {
                        self.telemetry
                            .fault_failed_request(host.metrics(), stats, &name);
                    }
                }
            }
        }
        entry.conn.considered(self.engine.last_episode());
        self.track(id, &entry.conn)
    }

    /// Keeps `timed` in step with whether the connection needs ticks. Returns true when it does
    /// and the roots tick slowly: the caller (a stream) hurries its root with
    /// [`VmState::hurry`], so that a hold begun between ticks is released on time.
    fn track(&mut self, id: u32, conn: &Connection) -> bool {
        if conn.next_wake().is_some() {
            self.timed.insert(id);
            !self.fast
        } else {
            self.timed.remove(&id);
            false
        }
    }

    /// Records that a stream switched `root` to the fast tick.
    fn hurry(&mut self, root: u32) {
        self.fast = true;
        if !self.hurried.contains(&root) {
            self.hurried.push(root);
        }
    }

    /// Whether a stream switched `root` to the fast tick since its last tick (and forgets it).
    fn hurried(&mut self, root: u32) -> bool {
        let at = self.hurried.iter().position(|&r| r == root);
        at.map(|at| self.hurried.swap_remove(at)).is_some()
    }
}

#[cfg(test)]
mod tests;
