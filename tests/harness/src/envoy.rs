//! A real Envoy running dbfault: started from the shipped configuration (rendered by
//! `scripts/localenv.py`, the one renderer the demo, the benchmark and `make run` use too) or
//! from a bootstrap a test wrote; its stats; configuration pushes through the watched ECDS file,
//! each waited for until every worker runs the result.

use crate::core::{localenv, repo, test_deadline, wait_for, Process, TempDir};
use crate::http::{http_get, http_request};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Envoy's counter of ECDS updates it refused (dbfault's `on_configure` said no, or the module
/// did not load).
const UPDATE_REJECTED: &str = "extension_config_discovery.network_filter.dbfault.update_rejected";
/// Envoy's counter of ECDS updates applied on every worker thread (rejected ones included).
const CONFIG_RELOAD: &str = "extension_config_discovery.network_filter.dbfault.config_reload";
/// dbfault's counter of accepted configurations, one per Wasm VM that loads one.
const CONFIG_LOADED: &str = "wasmcustom.dbfault_config_loaded_total";

/// The Envoy binary of `make envoy` (`DBFAULT_ENVOY` overrides it).
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("DBFAULT_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/envoy"))
}

/// The older Envoy (an older Istio's proxy) of `make envoy` (`DBFAULT_ENVOY_1_36` overrides it).
pub fn envoy_1_36_bin() -> PathBuf {
    std::env::var_os("DBFAULT_ENVOY_1_36")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-1.36/bin/envoy"))
}

/// The module `make build` builds (`DBFAULT_WASM` overrides it, e.g. to run the tests against
/// another build).
pub fn wasm_path() -> PathBuf {
    let p = std::env::var_os("DBFAULT_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/wasm32-wasip1/release/dbfault.wasm"));
    assert!(
        p.exists(),
        "{} missing: run `make build` (or `make test`)",
        p.display()
    );
    p
}

/// The shipped ECDS file (`envoy/dbfault.yaml`) with `module` and `plugin_config`.
pub fn render_ecds(module: &Path, plugin_config: &str) -> String {
    localenv([
        OsStr::new("ecds"),
        OsStr::new("--module"),
        module.as_os_str(),
        OsStr::new("--plugin-config"),
        OsStr::new(plugin_config),
    ])
}

/// Options of an Envoy started from the shipped `envoy/envoy.yaml`: every listener and the
/// admin on a port of their own, the clusters a test names pointed at its servers (the others
/// keep their shipped endpoints, which no test connects to).
pub struct EnvoyBuilder {
    binary: PathBuf,
    module: PathBuf,
    plugin_config: String,
    upstreams: Vec<(String, u16)>,
    concurrency: u32,
    node_id: Option<String>,
}

impl EnvoyBuilder {
    /// The `postgres` cluster (listener `postgres`) goes to 127.0.0.1:`port`.
    pub fn postgres(self, port: u16) -> Self {
        self.upstream("postgres", port)
    }

    /// The `redis` cluster (listener `redis`).
    pub fn redis(self, port: u16) -> Self {
        self.upstream("redis", port)
    }

    /// The `mariadb` cluster (listener `mariadb`).
    pub fn mariadb(self, port: u16) -> Self {
        self.upstream("mariadb", port)
    }

    /// The Istio-named TLS passthrough cluster `outbound|443||firestore.googleapis.com`
    /// (listener `tls`).
    pub fn tls(self, port: u16) -> Self {
        self.upstream("outbound|443||firestore.googleapis.com", port)
    }

    /// The Istio-named plaintext cluster `outbound|8080||firestore.googleapis.com` of the
    /// Firestore emulator (listener `firestore`).
    pub fn firestore(self, port: u16) -> Self {
        self.upstream("outbound|8080||firestore.googleapis.com", port)
    }

    /// Cluster `name` goes to 127.0.0.1:`port`.
    pub fn upstream(mut self, name: &str, port: u16) -> Self {
        self.upstreams.push((name.to_owned(), port));
        self
    }

    /// The plugin configuration (JSON) Envoy starts with; default `{}` (the module's defaults).
    pub fn plugin_config(mut self, json: &str) -> Self {
        json.clone_into(&mut self.plugin_config);
        self
    }

    /// Another module file (default: the one `make build` builds).
    pub fn module(mut self, path: &Path) -> Self {
        path.clone_into(&mut self.module);
        self
    }

    /// Envoy worker threads (default 2).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Envoy's node id (`--service-node`), as Istio sets one per pod; default the shipped
    /// `dbfault-local`.
    pub fn node_id(mut self, id: &str) -> Self {
        self.node_id = Some(id.to_owned());
        self
    }

    /// Another Envoy binary (default: `envoy_bin()`).
    pub fn binary(mut self, path: &Path) -> Self {
        path.clone_into(&mut self.binary);
        self
    }

    /// Starts Envoy and waits until it is ready and its first dbfault configuration is settled:
    /// loaded by every Wasm VM, or rejected (the shipped config then lets traffic through
    /// unfiltered).
    pub fn start(self) -> Envoy {
        let dir = TempDir::new("envoy");
        let mut args = vec![
            "envoy-config".to_owned(),
            "--dir".to_owned(),
            dir.path().display().to_string(),
            "--module".to_owned(),
            self.module.display().to_string(),
            "--plugin-config".to_owned(),
            self.plugin_config.clone(),
        ];
        for (name, port) in &self.upstreams {
            args.push("--upstream".to_owned());
            args.push(format!("{name}={port}"));
        }
        localenv(&args);
        let extra: Vec<String> = self
            .node_id
            .iter()
            .flat_map(|id| ["--service-node".to_owned(), id.clone()])
            .collect();
        let mut envoy = Envoy::launch_with(dir, &self.binary, self.concurrency, &extra);
        envoy.module = self.module;
        // Each VM loads the first configuration: two on the main thread and one per worker
        // (measured on Envoy 1.36 and 1.40).
        let vms = i64::from(self.concurrency) + 2;
        wait_for(
            "Envoy's first dbfault configuration to load in every VM, or to be rejected",
            Duration::from_secs(30),
            || {
                let stats = envoy.stats();
                let get = |name| stats.get(name).copied().unwrap_or(0);
                (get(CONFIG_LOADED) >= vms || get(UPDATE_REJECTED) > 0).then_some(())
            },
        );
        envoy
    }
}

/// Kills Envoy `pid` if it still runs after [`test_deadline`]: every connection through it then
/// ends, so a client blocked on a read that has no deadline of its own fails its test instead
/// of hanging CI. Ends when the returned sender is dropped (with the [`Envoy`]).
fn watchdog(pid: u32) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let deadline = test_deadline();
    thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
            eprintln!(
                "Envoy {pid} outlived the test deadline ({deadline:?}, DBFAULT_TEST_DEADLINE): \
                 killed, so that clients blocked on it fail"
            );
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    tx
}

/// A running Envoy, stopped on drop (its log is printed when the test failed).
pub struct Envoy {
    process: Process,
    pub dir: TempDir,
    pub admin: u16,
    listeners: HashMap<String, u16>,
    /// The module `push_plugin_config` renders ECDS files with.
    module: PathBuf,
    /// Dropped with the Envoy, which ends its watchdog.
    _watchdog: std::sync::mpsc::Sender<()>,
}

impl Envoy {
    pub fn builder() -> EnvoyBuilder {
        EnvoyBuilder {
            binary: envoy_bin(),
            module: wasm_path(),
            plugin_config: "{}".to_owned(),
            upstreams: Vec::new(),
            concurrency: 2,
            node_id: None,
        }
    }

    /// Starts `binary` on `dir/envoy.yaml` (already written, as are the files it names) and
    /// waits until it is ready. Nothing is known of its dbfault configuration: waiting for it
    /// is the caller's business.
    pub fn launch(dir: TempDir, binary: &Path, concurrency: u32) -> Envoy {
        Envoy::launch_with(dir, binary, concurrency, &[])
    }

    /// [`Envoy::launch`] with further command-line arguments.
    pub fn launch_with(dir: TempDir, binary: &Path, concurrency: u32, extra: &[String]) -> Envoy {
        let log = fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.path().join("envoy.yaml"))
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(dir.path().join("admin"))
            .args(["--log-level", "info", "--component-log-level", "wasm:debug"])
            .args(extra)
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `make test` to install Envoy)",
                    binary.display()
                )
            });
        let pid = child.id();
        let mut envoy = Envoy {
            process: Process(child),
            dir,
            admin: 0,
            listeners: HashMap::new(),
            module: wasm_path(),
            _watchdog: watchdog(pid),
        };
        let admin_file = envoy.dir.path().join("admin");
        envoy.admin = wait_for("Envoy's admin address", Duration::from_secs(30), || {
            if let Ok(Some(status)) = envoy.process.0.try_wait() {
                panic!("Envoy exited ({status}):\n{}", envoy.log());
            }
            let text = fs::read_to_string(&admin_file).ok()?;
            text.trim().rsplit_once(':')?.1.parse().ok()
        });
        wait_for("Envoy /ready", Duration::from_secs(30), || {
            envoy.try_get("/ready").filter(|(code, _)| *code == 200)
        });
        let listeners: serde_json::Value =
            serde_json::from_str(&envoy.get("/listeners?format=json")).unwrap();
        for l in listeners["listener_statuses"].as_array().unwrap() {
            let port = l["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("listener without a port: {l}"));
            envoy
                .listeners
                .insert(l["name"].as_str().unwrap().to_owned(), port);
        }
        envoy
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The port a named listener is bound to.
    pub fn listener(&self, name: &str) -> u16 {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    /// The shipped config's PostgreSQL listener.
    pub fn pg(&self) -> u16 {
        self.listener("postgres")
    }

    /// The shipped config's Redis listener.
    pub fn redis(&self) -> u16 {
        self.listener("redis")
    }

    /// The shipped config's MariaDB listener.
    pub fn mariadb(&self) -> u16 {
        self.listener("mariadb")
    }

    /// The shipped config's TLS passthrough listener.
    pub fn firestore(&self) -> u16 {
        self.listener("firestore")
    }

    pub fn tls(&self) -> u16 {
        self.listener("tls")
    }

    fn try_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin, path)
    }

    /// POSTs to an admin endpoint (e.g. `/logging?wasm=trace`); panics unless it answers 200.
    pub fn post(&self, path: &str) -> String {
        let (code, body) =
            http_request(self.admin, "POST", path).unwrap_or_else(|| panic!("POST {path} failed"));
        assert_eq!(code, 200, "POST {path}: {body}");
        body
    }

    /// An admin endpoint's body; panics unless it answers 200.
    pub fn get(&self, path: &str) -> String {
        let (code, body) = self
            .try_get(path)
            .unwrap_or_else(|| panic!("GET {path} failed"));
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Envoy's own stats (`/stats`, text form), name → value, counters and gauges only.
    pub fn stats(&self) -> HashMap<String, i64> {
        self.get("/stats")
            .lines()
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(": ")?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// One stat (0 when it does not exist).
    pub fn stat(&self, name: &str) -> i64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// `/stats/prometheus` as `name{labels}` → value.
    pub fn prometheus(&self) -> HashMap<String, f64> {
        self.get("/stats/prometheus")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// A dbfault series from `/stats/prometheus`, e.g. `("dbfault_upstream_cx_total",
    /// "postgres")`; `None` when the series does not exist.
    pub fn metric(&self, name: &str, upstream: &str) -> Option<f64> {
        self.prometheus()
            .get(&format!("{name}{{upstream=\"{upstream}\"}}"))
            .copied()
    }

    /// The value of the series `name` whose labels include all of `labels` (label order as
    /// Envoy prints it does not matter); `None` when there is none.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.prometheus().into_iter().find_map(|(key, value)| {
            let (n, rest) = key.split_once('{')?;
            let got: Vec<&str> = rest.strip_suffix('}')?.split(',').collect();
            (n == name
                && labels
                    .iter()
                    .all(|(l, v)| got.contains(&format!("{l}=\"{v}\"").as_str())))
            .then_some(value)
        })
    }

    /// Waits until dbfault's byte counters for `upstream` equal Envoy's own for `cluster`
    /// (`cluster.<cluster>.upstream_cx_{tx,rx}_bytes_total`).
    pub fn wait_byte_counters(&self, upstream: &str, cluster: &str) {
        let envoy = |dir| self.stat(&format!("cluster.{cluster}.upstream_cx_{dir}_bytes_total"));
        wait_for(
            &format!("{upstream}'s byte counters to equal Envoy's"),
            Duration::from_secs(10),
            || {
                let tx = self.metric("dbfault_upstream_tx_bytes_total", upstream)?;
                let rx = self.metric("dbfault_upstream_rx_bytes_total", upstream)?;
                (tx == envoy("tx") as f64 && rx == envoy("rx") as f64).then_some(())
            },
        );
    }

    /// Waits until [`Envoy::series`] reads `want`.
    pub fn wait_series(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        wait_for(
            &format!("{name}{labels:?} == {want}"),
            Duration::from_secs(15),
            || (self.series(name, labels) == Some(want)).then_some(()),
        );
    }

    /// `dbfault_faults_injected_total{upstream, fault}` (0 when the series does not exist).
    pub fn injected(&self, upstream: &str, fault: &str) -> f64 {
        self.fault_series("dbfault_faults_injected_total", upstream, fault)
            .unwrap_or(0.0)
    }

    /// A `metric{upstream,fault}` series (`None`: it does not exist).
    pub fn fault_series(&self, metric: &str, upstream: &str, fault: &str) -> Option<f64> {
        let prom = self.prometheus();
        // Envoy orders labels by tag extraction; accept either order.
        [
            format!("{metric}{{upstream=\"{upstream}\",fault=\"{fault}\"}}"),
            format!("{metric}{{fault=\"{fault}\",upstream=\"{upstream}\"}}"),
        ]
        .iter()
        .find_map(|k| prom.get(k).copied())
    }

    /// `dbfault_fault_active{fault}`.
    pub fn fault_active(&self, fault: &str) -> Option<f64> {
        self.prometheus()
            .get(&format!("dbfault_fault_active{{fault=\"{fault}\"}}"))
            .copied()
    }

    /// Waits until dbfault's series for `upstream` account for every connection that passed
    /// through the tcp_proxy with `stat_prefix` (`tcp.<stat_prefix>.downstream_cx_total`) and
    /// all of them are closed (`cx_active` 0). A worker flushes its byte counters in the same
    /// step as its connection counts, so dbfault's byte counters for `upstream` are final too.
    pub fn wait_closed(&self, upstream: &str, stat_prefix: &str) {
        let envoy_cx = format!("tcp.{stat_prefix}.downstream_cx_total");
        wait_for(
            &format!(
                "dbfault's {upstream} series to count every connection of {envoy_cx}, all closed"
            ),
            Duration::from_secs(10),
            || {
                let envoy_total = self.stat(&envoy_cx) as f64;
                let total = self.metric("dbfault_upstream_cx_total", upstream)?;
                let active = self.metric("dbfault_upstream_cx_active", upstream)?;
                (envoy_total > 0.0 && total == envoy_total && active == 0.0).then_some(())
            },
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// When Envoy logged each line containing `needle`: milliseconds since midnight, from the
    /// log's `[2026-11-26 15:47:36.951]` prefix (lines of one run, so one day).
    pub fn log_times(&self, needle: &str) -> Vec<i64> {
        self.log_entries(needle)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// The lines containing `needle`, each with its time as [`Envoy::log_times`] gives it.
    pub fn log_entries(&self, needle: &str) -> Vec<(i64, String)> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| {
                let (hms, frac) = l.get(12..24)?.split_once('.')?;
                let mut s = hms.split(':').map(|x| x.parse::<i64>().ok());
                let (h, m, sec) = (s.next()??, s.next()??, s.next()??);
                let ms = ((h * 60 + m) * 60 + sec) * 1000 + frac.parse::<i64>().ok()?;
                Some((ms, l.to_owned()))
            })
            .collect()
    }

    /// Replaces the ECDS file atomically (as an operator would) with `plugin_config` and the
    /// module this Envoy started with; waits for the outcome (see `update_with`).
    pub fn push_plugin_config(&self, plugin_config: &str) -> bool {
        self.push_ecds(&render_ecds(&self.module, plugin_config))
    }

    /// Replaces the ECDS file with `ecds` atomically; waits for the outcome (see `update_with`).
    pub fn push_ecds(&self, ecds: &str) -> bool {
        self.update_with(|| {
            let tmp = self.dir.path().join(".dbfault.yaml.tmp");
            fs::write(&tmp, ecds).unwrap();
            fs::rename(&tmp, self.ecds_path()).unwrap();
        })
    }

    /// The ECDS file this Envoy watches.
    pub fn ecds_path(&self) -> PathBuf {
        self.dir.path().join("dbfault.yaml")
    }

    /// Runs `change` (which replaces the ECDS file with a configuration that differs from the
    /// one in force) and waits until every worker runs the new configuration (true), or Envoy
    /// rejected it (false).
    ///
    /// Envoy counts `update_success` on the main thread before the workers install the update
    /// (and a rename in the watched directory can count it twice); it counts `config_reload`
    /// once the update has been applied on every worker thread, after each worker built its
    /// plugin for the new configuration. dbfault's `config_loaded_total` is no signal here: a
    /// worker that still holds a plugin for the same configuration (a connection still open from
    /// an earlier push of it) reuses that plugin without loading the configuration again; its VM
    /// adopts the configuration at its next tick instead (dbfault polls Envoy's shared data
    /// every 50 ms), which a test re-pushing an earlier configuration has to allow for.
    pub fn update_with(&self, change: impl FnOnce()) -> bool {
        let before = self.stats();
        let get = |stats: &HashMap<String, i64>, name| stats.get(name).copied().unwrap_or(0);
        let (reloaded0, rejected0) = (get(&before, CONFIG_RELOAD), get(&before, UPDATE_REJECTED));
        change();
        wait_for(
            "every worker to run the pushed configuration, or Envoy to reject it",
            Duration::from_secs(15),
            || {
                // Both counters move in one main-thread event when an update is rejected, and
                // the admin handler runs on the main thread: a snapshot sees both or neither.
                let now = self.stats();
                if get(&now, UPDATE_REJECTED) > rejected0 {
                    Some(false)
                } else {
                    (get(&now, CONFIG_RELOAD) > reloaded0).then_some(true)
                }
            },
        )
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // SIGTERM first, so that Envoy shuts down as it would in production.
        let _ = Command::new("kill")
            .arg(self.process.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.0.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- Envoy log (last 60 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
