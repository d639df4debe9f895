//! Istio around dbfault, on Envoy 1.40.0 and 1.36.4 configured the way istiod configures a
//! sidecar: listeners by LDS and the WasmPlugin's filter by ECDS (both from watched files here,
//! over ADS in a mesh), Istio's `--drain-time-s` and `--drain-strategy immediate`.
//!
//! - Deleting the WasmPlugin: istiod sends the listener again without the filter. Envoy
//!   updates the filter chain in place and drains the old one: open connections keep dbfault,
//!   and its fault, until the drain time ends and Envoy closes them; new connections run
//!   without it; dbfault's series go away with the last connection. Creating it again is the
//!   same update the other way round.
//! - What Istio's TCP byte metrics count: `istio.stats` reads the downstream connection's
//!   bytes meter, which tcp_proxy (after dbfault) advances. The same meter is Envoy's
//!   `%DOWNSTREAM_WIRE_BYTES_RECEIVED%` / `%DOWNSTREAM_WIRE_BYTES_SENT%`, read here through
//!   tcp_proxy's access log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    envoy_1_36_bin, envoy_bin, istiod_ecds, read_to_close, repo, stays_silent, wait_for, wasm_path,
    Envoy, TempDir,
};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Istio's outbound listener and cluster for the plain-TCP ServiceEntry in
/// examples/istio-overlay/serviceentry-postgres.yaml (address 10.20.30.40, port 5432).
const LISTENER: &str = "10.20.30.40_5432";
const CLUSTER: &str = "outbound|5432||pg.db.example.com";
const HOST: &str = "pg.db.example.com";
/// Envoy's `--drain-time-s` here (Istio passes `proxyConfig.drainDuration`, 45 s by default).
const DRAIN: Duration = Duration::from_secs(4);

/// The WasmPlugin of istio/wasmplugin.yaml with `faults` as its rules and metrics every 100 ms.
fn plugin(faults: &Value) -> Value {
    let text = fs::read_to_string(repo().join("istio/wasmplugin.yaml")).unwrap();
    let mut plugin: Value = serde_yaml_ng::from_str(&text).unwrap();
    plugin["spec"]["pluginConfig"] = json!({
        "metrics": {"enabled": true, "interval": "100ms"},
        "faults": faults,
    });
    plugin
}

/// The ECDS resource name istiod gives the plugin (Istio < 1.30; see README).
fn filter_name(plugin: &Value) -> String {
    let m = &plugin["metadata"];
    format!(
        "extensions.istio.io/wasmplugin/{}.{}",
        m["namespace"].as_str().unwrap(),
        m["name"].as_str().unwrap()
    )
}

/// Writes `text` to `path` the way a watched file must change: a temp file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A sidecar's Envoy: bootstrap with LDS from `lds/lds.json` and the stats tags of
/// `extraStatTags`; the cluster goes to 127.0.0.1:`upstream_port`; tcp_proxy logs each
/// connection's byte counts to `access.log`.
struct Sidecar {
    envoy: Envoy,
    filter: String,
    version: u32,
    module: std::path::PathBuf,
}

impl Sidecar {
    fn start(binary: &Path, upstream_port: u16, plugin: &Value) -> Sidecar {
        let dir = TempDir::new("istio-lifecycle");
        // LDS and ECDS in directories of their own: a rename in a watched directory reloads
        // every file watched there.
        for sub in ["lds", "ecds"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let filter = filter_name(plugin);
        let module = wasm_path();
        let tags: Vec<Value> = dbfault::metrics::LABELS
            .iter()
            .map(|t| json!({"tag_name": t, "regex": format!("({t}=\\.=(.*?);\\.;)")}))
            .collect();
        let bootstrap = json!({
            "node": {"id": "sidecar~10.0.0.7~plants-6d4f9-abcde.plants~plants.svc.cluster.local",
                     "cluster": "plants.plants"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "stats_config": {"use_all_default_tags": false, "stats_tags": tags},
            "dynamic_resources": {"lds_config": {
                "path_config_source": {
                    "path": dir.path().join("lds/lds.json"),
                    "watched_directory": {"path": dir.path().join("lds")},
                },
                "resource_api_version": "V3",
            }},
            "static_resources": {"clusters": [{
                "name": CLUSTER, "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": CLUSTER, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address":
                        {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }]},
        });
        fs::write(dir.path().join("envoy.yaml"), bootstrap.to_string()).unwrap();
        fs::write(
            dir.path().join("ecds/ecds.json"),
            istiod_ecds(plugin, &module, 1),
        )
        .unwrap();
        fs::write(
            dir.path().join("lds/lds.json"),
            lds(dir.path(), Some(&filter)),
        )
        .unwrap();
        let args: Vec<String> = [
            "--drain-time-s",
            &DRAIN.as_secs().to_string(),
            "--drain-strategy",
            "immediate",
            "--file-flush-interval-msec",
            "20",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let envoy = Envoy::launch_with(dir, binary, 2, &args);
        Sidecar {
            envoy,
            filter,
            version: 1,
            module,
        }
    }

    fn port(&self) -> u16 {
        self.envoy.listener(LISTENER)
    }

    fn stat(&self, name: &str) -> i64 {
        self.envoy.stat(name)
    }

    /// istiod's ECDS push for `plugin` (a new resource version); waits until every worker
    /// runs it.
    fn push_plugin(&mut self, plugin: &Value) {
        let reload = format!(
            "extension_config_discovery.network_filter.{}.config_reload",
            self.filter
        );
        let before = self.stat(&reload);
        self.version += 1;
        replace(
            &self.envoy.dir.path().join("ecds/ecds.json"),
            &istiod_ecds(plugin, &self.module, self.version),
        );
        wait_for(
            "the ECDS push on every worker",
            Duration::from_secs(15),
            || (self.stat(&reload) > before).then_some(()),
        );
    }

    /// istiod's LDS push: the same listener, its filter chain with the plugin's filter (the
    /// WasmPlugin exists) or without it (deleted). Waits until Envoy updated the listener in
    /// place for the `n`-th time and drains the old filter chain; returns when it was written.
    fn push_listener(&self, with_plugin: bool, n: i64) -> Instant {
        let path = self.envoy.dir.path().join("lds/lds.json");
        let filter = with_plugin.then_some(self.filter.as_str());
        let written = Instant::now();
        replace(&path, &lds(self.envoy.dir.path(), filter));
        wait_for(
            "the filter chain updated in place and the old one draining",
            Duration::from_secs(10),
            || {
                (self.stat("listener_manager.listener_in_place_updated") == n
                    && self.stat("listener_manager.total_filter_chains_draining") == 1)
                    .then_some(())
            },
        );
        written
    }

    /// Waits until the old filter chain is drained.
    fn wait_drained(&self) {
        wait_for("the drain to end", Duration::from_secs(15), || {
            (self.stat("listener_manager.total_filter_chains_draining") == 0).then_some(())
        });
    }

    /// Whether Envoy has stats of the plugin's ECDS subscription.
    fn subscribed(&self) -> bool {
        let prefix = format!("extension_config_discovery.network_filter.{}.", self.filter);
        self.envoy.stats().keys().any(|k| k.starts_with(&prefix))
    }

    /// The access log's lines: `rx tx socket_rx socket_tx` per closed connection.
    fn access_log(&self) -> Vec<[u64; 4]> {
        fs::read_to_string(self.envoy.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Vec<u64> = l.split(' ').map(|n| n.parse().unwrap()).collect();
                [v[0], v[1], v[2], v[3]]
            })
            .collect()
    }

    /// Waits for the access log's `n`-th line.
    fn logged(&self, n: usize) -> [u64; 4] {
        wait_for(
            &format!("access log line {n}"),
            Duration::from_secs(10),
            || self.access_log().get(n - 1).copied(),
        )
    }

    /// dbfault's series on `/stats/prometheus`.
    fn dbfault_series(&self) -> Vec<String> {
        self.envoy
            .prometheus()
            .into_keys()
            .filter(|k| k.starts_with("dbfault_"))
            .collect()
    }
}

/// The LDS file istiod's listener becomes: the ServiceEntry's listener on a loopback port of
/// its own (port 0 in both versions: only the filter chain differs, so Envoy updates it in
/// place), with the WasmPlugin's filter (`Some(name)`, delivered by ECDS as istiod references
/// it) before tcp_proxy, or without it. tcp_proxy's access log records, per connection, the
/// downstream bytes meter Istio's TCP metrics read and the socket's own byte counts.
fn lds(dir: &Path, filter: Option<&str>) -> String {
    let mut filters: Vec<Value> = filter
        .map(|name| {
            json!({"name": name, "config_discovery": {
                "config_source": {
                    "path_config_source": {
                        "path": dir.join("ecds/ecds.json"),
                        "watched_directory": {"path": dir.join("ecds")},
                    },
                    "initial_fetch_timeout": "0s",
                },
                "type_urls": [
                    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                ],
            }})
        })
        .into_iter()
        .collect();
    let format = "%DOWNSTREAM_WIRE_BYTES_RECEIVED% %DOWNSTREAM_WIRE_BYTES_SENT% \
                  %BYTES_RECEIVED% %BYTES_SENT%\n";
    filters.push(json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": CLUSTER,
            "cluster": CLUSTER,
            "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join("access.log"),
                "log_format": {"text_format_source": {"inline_string": format}},
            }}],
        },
    }));
    json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": LISTENER,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": filters}],
    }]})
    .to_string()
}

/// A database stand-in on a port the OS picked: each connection is sent `greeting` first (a
/// server-first protocol like MySQL's; empty: none), then gets its bytes echoed.
fn echo_server(greeting: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                if conn.write_all(greeting).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `line` and reads it back.
/// Waits for Envoy to close `conn` (a FIN, nothing more read) when the drain of the filter chain
/// it runs on ends, `DRAIN` after `pushed`; `what` names it in the log line.
fn closed_by_the_drain(conn: &mut TcpStream, pushed: Instant, binary: &Path, what: &str) {
    let rest = read_to_close(conn, Duration::from_secs(15));
    let closed = pushed.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        closed >= DRAIN - Duration::from_millis(250) && closed < DRAIN + Duration::from_secs(3),
        "{what} closed {closed:?} after the push (drain time {DRAIN:?})"
    );
    eprintln!(
        "{}: {what} was closed {closed:?} after the listener push",
        binary.display()
    );
}

fn echoes(s: &mut TcpStream, line: &[u8]) -> bool {
    s.write_all(line).unwrap();
    let mut got = vec![0u8; line.len()];
    s.read_exact(&mut got).is_ok() && got == line
}

const OUTAGE: &str = "pg-outage";

fn outage(enabled: bool) -> Value {
    json!([{"name": OUTAGE, "enabled": enabled, "match": {"hosts": [HOST]}, "blackhole": {}}])
}

/// The WasmPlugin is deleted while its blackhole holds an open connection, then created again.
fn deleting_and_recreating_the_wasmplugin(binary: &Path) {
    let upstream = echo_server(b"");
    let mut sidecar = Sidecar::start(binary, upstream, &plugin(&outage(false)));
    let port = sidecar.port();

    // The app's pooled connection, counted by dbfault.
    let mut pooled = connect(port);
    assert!(echoes(&mut pooled, b"before\n"));
    wait_for(
        "dbfault to count the connection",
        Duration::from_secs(10),
        || (sidecar.envoy.metric("dbfault_upstream_cx_active", HOST) == Some(1.0)).then_some(()),
    );

    // The outage is switched on: the pooled connection is blackholed.
    sidecar.push_plugin(&plugin(&outage(true)));
    wait_for(
        "the blackhole on the open connection",
        Duration::from_secs(10),
        || (sidecar.envoy.injected(HOST, OUTAGE) >= 1.0).then_some(()),
    );
    pooled.write_all(b"swallowed\n").unwrap();
    assert!(stays_silent(&mut pooled, Duration::from_millis(300)));

    // The WasmPlugin is deleted: istiod sends the listener without the filter.
    let deleted = sidecar.push_listener(false, 1);

    // New connections run without dbfault: answered, and not counted by it.
    let mut fresh = connect(port);
    assert!(echoes(&mut fresh, b"after\n"));

    // The open connection keeps the old filter chain, and its blackhole, until the drain
    // time has passed since the push (Envoy cannot have applied the push before it was made).
    let drain_end = deleted + DRAIN - Duration::from_millis(250);
    let half = drain_end.saturating_duration_since(Instant::now()) / 2;
    assert!(
        half >= Duration::from_millis(500),
        "too slow to observe the drain: {:?} of {DRAIN:?} left",
        half * 2
    );
    pooled.write_all(b"still swallowed\n").unwrap();
    assert!(stays_silent(&mut pooled, half), "answered or closed early");
    // Meanwhile (≥ 5 metric intervals after the new connection's first byte) dbfault still
    // has its series, and never counted the new connection.
    assert_eq!(
        sidecar.envoy.metric("dbfault_upstream_cx_total", HOST),
        Some(1.0)
    );
    assert_eq!(
        sidecar.stat(&format!("tcp.{CLUSTER}.downstream_cx_total")),
        2
    );
    let left = drain_end.saturating_duration_since(Instant::now());
    assert!(
        stays_silent(&mut pooled, left.max(Duration::from_millis(1))),
        "answered or closed early"
    );

    // Then Envoy closes it (a FIN: the client reads the end of the stream).
    closed_by_the_drain(&mut pooled, deleted, binary, "the blackholed connection");
    sidecar.wait_drained();

    // With its last connection the filter's VM is gone, and dbfault's series and the ECDS
    // subscription's stats with it.
    wait_for("dbfault's series to go", Duration::from_secs(10), || {
        sidecar.dbfault_series().is_empty().then_some(())
    });
    wait_for("the ECDS stats to go", Duration::from_secs(10), || {
        (!sidecar.subscribed()).then_some(())
    });
    // The new connection was untouched by the drain.
    assert!(echoes(&mut fresh, b"still there\n"));

    // The WasmPlugin is created again (as shipped: every rule off). The same in-place update
    // the other way: new connections get dbfault, the ones opened without it keep their chain
    // until the drain ends and are closed then.
    replace(
        &sidecar.envoy.dir.path().join("ecds/ecds.json"),
        &istiod_ecds(&plugin(&outage(false)), &sidecar.module, 1),
    );
    let created = sidecar.push_listener(true, 2);
    let mut newer = connect(port);
    assert!(echoes(&mut newer, b"with dbfault again\n"));
    wait_for(
        "dbfault to count the new connection",
        Duration::from_secs(10),
        || (sidecar.envoy.metric("dbfault_upstream_cx_total", HOST) == Some(1.0)).then_some(()),
    );
    assert!(sidecar.subscribed());
    assert!(echoes(&mut fresh, b"on the old chain\n"));
    closed_by_the_drain(
        &mut fresh,
        created,
        binary,
        "the connection opened without dbfault",
    );
    sidecar.wait_drained();
    assert!(echoes(&mut newer, b"still with dbfault\n"));
}

#[test]
fn deleting_and_recreating_the_wasmplugin_on_envoy_1_40() {
    deleting_and_recreating_the_wasmplugin(&envoy_bin());
}

#[test]
fn deleting_and_recreating_the_wasmplugin_on_envoy_1_36() {
    deleting_and_recreating_the_wasmplugin(&envoy_1_36_bin());
}

/// What Istio's `istio_tcp_received_bytes_total` / `istio_tcp_sent_bytes_total` would count on
/// this chain, whatever the WasmPlugin's `phase`: the downstream bytes meter that tcp_proxy
/// advances, not the socket's counts.
#[test]
fn istio_tcp_byte_metrics_count_what_passed_dbfault() {
    const GREETING: &[u8] = b"HELLO 5.7\n";
    let upstream = echo_server(GREETING);
    let mut sidecar = Sidecar::start(&envoy_bin(), upstream, &plugin(&outage(false)));
    let port = sidecar.port();
    let greeting = GREETING.len() as u64;

    // Healthy: the meter and the socket agree.
    let mut healthy = connect(port);
    let mut got = vec![0u8; GREETING.len()];
    healthy.read_exact(&mut got).unwrap();
    assert!(echoes(&mut healthy, b"select 1\n"));
    drop(healthy);
    assert_eq!(
        sidecar.logged(1),
        [9, greeting + 9, 9, greeting + 9],
        "healthy: [meter rx, meter tx, socket rx, socket tx]"
    );

    // Blackholed: the server's greeting went through tcp_proxy and was then dropped by
    // dbfault's write callback; the client's bytes were dropped before tcp_proxy.
    sidecar.push_plugin(&plugin(&outage(true)));
    wait_for("the outage to be active", Duration::from_secs(10), || {
        (sidecar.envoy.fault_active(OUTAGE) == Some(1.0)).then_some(())
    });
    let mut holed = connect(port);
    holed.write_all(b"select 2\n").unwrap();
    assert!(stays_silent(&mut holed, Duration::from_millis(500)));
    drop(holed);
    wait_for(
        "dbfault to count the blackholed connection",
        Duration::from_secs(10),
        || (sidecar.envoy.injected(HOST, OUTAGE) >= 1.0).then_some(()),
    );
    assert_eq!(
        sidecar.logged(2),
        [0, greeting, 9, 0],
        "blackholed: [meter rx, meter tx, socket rx, socket tx]"
    );
}
