//! Test harness: real processes (Envoy, PostgreSQL, Redis) on free loopback ports, readiness
//! waits instead of sleeps, logs dumped when a test fails, cleanup in `Drop`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory under /tmp removed on drop, readable by the `postgres` user.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "dbfault-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        if is_root() {
            run_ok(Command::new("chown").arg("postgres").arg(&path));
        }
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn is_root() -> bool {
    // SAFETY-free check: /proc/self/status would do too; `id -u` keeps it simple.
    String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0"
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port that was free a moment ago (for servers that cannot report the port they bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_port(port: u16, timeout: Duration) {
    wait_for(&format!("port {port}"), timeout, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

fn as_db_user(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL 15 cluster (trust auth, user `postgres`).
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = TempDir::new("pg");
        let data = dir.path().join("data");
        run_ok(
            as_db_user(&format!("{PG_BIN}/initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        let port = free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            dir.path().display()
        );
        run_ok(
            as_db_user(&format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("postgres.log"))
                .args(["-w", "-o", &opts, "start"]),
        );
        Postgres { port, dir }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_db_user(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs SQL through `psql` (a real PostgreSQL client) against `port`; returns its stdout.
pub fn psql(port: u16, sql: &str) -> String {
    run_ok(
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &port.to_string(), "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5"),
    )
}

/// Runs SQL through `psql` that may fail; returns (success, stderr).
pub fn psql_try(port: u16, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An interactive `psql` session held open until dropped.
pub struct PsqlSession(Child);

impl PsqlSession {
    pub fn open(port: u16) -> PsqlSession {
        let child = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &port.to_string(),
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        PsqlSession(child)
    }

    pub fn send(&mut self, sql: &str) {
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn close(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        wait_port(port, Duration::from_secs(10));
        Redis { port, child }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal RESP client over a raw socket: the tests control exactly what is sent.
pub struct RedisConn(pub TcpStream);

impl RedisConn {
    pub fn connect(port: u16) -> RedisConn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        RedisConn(s)
    }

    /// The RESP encoding of a command.
    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        req
    }

    /// Sends one command and reads one reply; returns the raw reply bytes.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.try_cmd(args).unwrap()
    }

    /// Like `cmd`, but a closed connection or a timeout is an `Err`.
    pub fn try_cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        self.0.write_all(&Self::encode(args))?;
        self.read_reply()
    }

    fn read_line(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut b = [0u8; 1];
        loop {
            self.0.read_exact(&mut b)?;
            out.push(b[0]);
            if out.ends_with(b"\r\n") {
                return Ok(());
            }
        }
    }

    fn read_reply(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_line(&mut out)?;
        if out[0] == b'$' {
            let n: i64 = std::str::from_utf8(&out[1..out.len() - 2])
                .unwrap()
                .parse()
                .unwrap();
            if n >= 0 {
                let mut body = vec![0u8; n as usize + 2];
                self.0.read_exact(&mut body)?;
                out.extend_from_slice(&body);
            }
        }
        Ok(out)
    }

    /// Reads until the peer closes; returns everything received. Panics after `timeout`.
    pub fn read_to_close(&mut self, timeout: Duration) -> Vec<u8> {
        read_to_close(&mut self.0, timeout)
    }
}

/// Reads from `s` until the peer closes (EOF or reset); returns the bytes received. Panics if
/// the connection is still open after `timeout`.
pub fn read_to_close(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection still open after {timeout:?}");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("connection still open after {timeout:?}")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether `s` stays open and silent for `wait` (a hang, as on a network partition).
pub fn stays_silent(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// Median of durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// Envoy

pub fn envoy_bin() -> PathBuf {
    std::env::var_os("DBFAULT_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/envoy"))
}

pub fn wasm_path() -> PathBuf {
    let p = repo().join("target/wasm32-wasip1/release/dbfault.wasm");
    assert!(
        p.exists(),
        "{} missing: run `make build` (or `make test`)",
        p.display()
    );
    p
}

/// Replaces `from` by `to` in `text`, requiring exactly one occurrence so that a change to the
/// shipped config cannot silently leave a test running against the wrong port or file.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected {from:?} once in the shipped config"
    );
    text.replacen(from, to, 1)
}

/// The shipped `envoy/dbfault.yaml` with the module path made absolute and `plugin_config` as
/// the plugin configuration.
pub fn render_ecds(plugin_config: &str) -> String {
    render_ecds_with_module(plugin_config, &wasm_path())
}

/// Like `render_ecds` with another module file (a different path makes Envoy create a new VM).
pub fn render_ecds_with_module(plugin_config: &str, module: &Path) -> String {
    let text = fs::read_to_string(repo().join("envoy/dbfault.yaml")).unwrap();
    let text = replace_once(
        &text,
        "filename: ../target/wasm32-wasip1/release/dbfault.wasm",
        &format!("filename: {}", module.display()),
    );
    let value_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("value: "))
        .expect("a `value:` line in envoy/dbfault.yaml")
        .to_owned();
    let indent = &value_line[..value_line.len() - value_line.trim_start().len()];
    let quoted = serde_json::to_string(plugin_config).unwrap();
    replace_once(&text, &value_line, &format!("{indent}value: {quoted}"))
}

/// The plugin configuration shipped in `envoy/dbfault.yaml` (its one-line `value:`).
pub fn shipped_plugin_config() -> String {
    let text = fs::read_to_string(repo().join("envoy/dbfault.yaml")).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("value: '"))
        .expect("a single-quoted `value:` line in envoy/dbfault.yaml");
    let quoted = line
        .strip_prefix("value: '")
        .unwrap()
        .strip_suffix('\'')
        .unwrap();
    quoted.replace("''", "'")
}

pub struct EnvoyOptions {
    pub pg_port: u16,
    pub redis_port: u16,
    /// Upstream ports of the MariaDB and TLS listeners (a closed port when a test needs none).
    pub mariadb_port: u16,
    pub tls_port: u16,
    pub plugin_config: String,
    pub concurrency: u32,
}

impl EnvoyOptions {
    pub fn new(pg_port: u16, redis_port: u16, plugin_config: &str) -> EnvoyOptions {
        EnvoyOptions {
            pg_port,
            redis_port,
            mariadb_port: free_port(),
            tls_port: free_port(),
            plugin_config: plugin_config.to_owned(),
            concurrency: 2,
        }
    }
}

/// A real Envoy running the shipped `envoy/envoy.yaml`, with only ports and paths changed.
pub struct Envoy {
    child: Child,
    pub dir: TempDir,
    pub admin: u16,
    pub pg: u16,
    pub redis: u16,
    pub mariadb: u16,
    pub tls: u16,
    listeners: HashMap<String, u16>,
}

impl Envoy {
    pub fn start(opts: EnvoyOptions) -> Envoy {
        let dir = TempDir::new("envoy");
        let text = fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
        let mut text = text;
        for (from, to) in [
            ("port_value: 9901}", "port_value: 0}".to_owned()),
            ("port_value: 15432}", "port_value: 0}".to_owned()),
            ("port_value: 16379}", "port_value: 0}".to_owned()),
            (
                "port_value: 5432}",
                format!("port_value: {}}}", opts.pg_port),
            ),
            (
                "port_value: 6379}",
                format!("port_value: {}}}", opts.redis_port),
            ),
            ("port_value: 13306}", "port_value: 0}".to_owned()),
            ("port_value: 18443}", "port_value: 0}".to_owned()),
            (
                "port_value: 3306}",
                format!("port_value: {}}}", opts.mariadb_port),
            ),
            (
                "port_value: 8443}",
                format!("port_value: {}}}", opts.tls_port),
            ),
        ] {
            text = replace_once(&text, from, &to);
        }
        text = replace_once(
            &text,
            "path: dbfault.yaml",
            &format!("path: {}", dir.path().join("dbfault.yaml").display()),
        );
        text = replace_once(
            &text,
            "watched_directory: {path: .}",
            &format!("watched_directory: {{path: {}}}", dir.path().display()),
        );
        fs::write(dir.path().join("envoy.yaml"), text).unwrap();
        fs::write(
            dir.path().join("dbfault.yaml"),
            render_ecds(&opts.plugin_config),
        )
        .unwrap();
        let mut envoy = Envoy::launch(dir, &envoy_bin(), opts.concurrency);
        envoy.pg = envoy.listener("postgres");
        envoy.redis = envoy.listener("redis");
        envoy.mariadb = envoy.listener("mariadb");
        envoy.tls = envoy.listener("tls");
        envoy
    }

    /// Starts `binary` on `dir/envoy.yaml` (already written, as are the files it names) and
    /// waits until it is ready.
    pub fn launch(dir: TempDir, binary: &Path, concurrency: u32) -> Envoy {
        let log = fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.path().join("envoy.yaml"))
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--disable-hot-restart",
            ])
            .arg("--admin-address-path")
            .arg(dir.path().join("admin"))
            .args(["--log-level", "info", "--component-log-level", "wasm:debug"])
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
        let mut envoy = Envoy {
            child,
            dir,
            admin: 0,
            pg: 0,
            redis: 0,
            mariadb: 0,
            tls: 0,
            listeners: HashMap::new(),
        };
        let admin_file = envoy.dir.path().join("admin");
        envoy.admin = wait_for("Envoy admin address", Duration::from_secs(30), || {
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
                .unwrap() as u16;
            envoy
                .listeners
                .insert(l["name"].as_str().unwrap().to_owned(), port);
        }
        envoy
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port a named listener is bound to.
    pub fn listener(&self, name: &str) -> u16 {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    fn try_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin, path)
    }

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

    /// A dbfault series value from `/stats/prometheus`, e.g. `("dbfault_upstream_cx_total",
    /// "postgres")`; `None` when the series does not exist.
    pub fn metric(&self, name: &str, upstream: &str) -> Option<f64> {
        self.prometheus()
            .get(&format!("{name}{{upstream=\"{upstream}\"}}"))
            .copied()
    }

    /// `dbfault_faults_injected_total{upstream, fault}` (0 when the series does not exist).
    pub fn injected(&self, upstream: &str, fault: &str) -> f64 {
        let prom = self.prometheus();
        // Envoy orders labels by tag extraction; accept either order.
        [
            format!("dbfault_faults_injected_total{{upstream=\"{upstream}\",fault=\"{fault}\"}}"),
            format!("dbfault_faults_injected_total{{fault=\"{fault}\",upstream=\"{upstream}\"}}"),
        ]
        .iter()
        .find_map(|k| prom.get(k).copied())
        .unwrap_or(0.0)
    }

    /// `dbfault_fault_active{fault}`.
    pub fn fault_active(&self, fault: &str) -> Option<f64> {
        self.prometheus()
            .get(&format!("dbfault_fault_active{{fault=\"{fault}\"}}"))
            .copied()
    }

    /// Waits out dbfault's flush: its stats are at most one metrics interval stale (1 s in the
    /// tests' configurations), and each worker flushes on its own tick.
    pub fn settle(&self) {
        thread::sleep(Duration::from_millis(1300));
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Replaces the ECDS file atomically (as an operator would) and waits until Envoy has
    /// accepted or rejected the update. Returns true when accepted.
    pub fn push_plugin_config(&self, plugin_config: &str) -> bool {
        self.push_ecds(&render_ecds(plugin_config))
    }

    /// Replaces the ECDS file with `ecds` atomically; waits for Envoy's verdict (true: accepted).
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

    /// Runs `change` (which replaces the ECDS file) and waits for Envoy's verdict.
    pub fn update_with(&self, change: impl FnOnce()) -> bool {
        let success = "extension_config_discovery.network_filter.dbfault.update_success";
        let rejected = "extension_config_discovery.network_filter.dbfault.update_rejected";
        let (ok0, bad0) = (self.stat(success), self.stat(rejected));
        change();
        let accepted = wait_for(
            "the ECDS update to be processed",
            Duration::from_secs(15),
            || {
                let (ok, bad) = (self.stat(success), self.stat(rejected));
                (ok > ok0 || bad > bad0).then_some(ok > ok0)
            },
        );
        // The main thread counts the update; each worker then installs it from its own event
        // loop a moment later, with nothing to observe from outside. Give them that moment.
        thread::sleep(Duration::from_millis(150));
        accepted
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`: (status, body), `None` when it cannot connect.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1;
    // Envoy's admin answers chunked; the pieces tests read are small enough to take the chunk
    // framing out line by line.
    let chunked = resp
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((code, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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

// ---------------------------------------------------------------------------------------------
// MariaDB (a server-first protocol: the server sends its greeting before the client speaks)

pub struct MariaDb {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let dir = TempDir::new("mariadb");
        if is_root() {
            run_ok(Command::new("chown").arg("mysql").arg(dir.path()));
        }
        let data = dir.path().join("data");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            install.arg("--user=mysql");
        }
        run_ok(&mut install);
        let port = free_port();
        let log = fs::File::create(dir.path().join("mariadb.log")).unwrap();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-log-bin",
            ])
            .args(["--innodb-buffer-pool-size=16M", "--skip-name-resolve"]);
        if is_root() {
            cmd.arg("--user=mysql");
        }
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_port(port, Duration::from_secs(60));
        MariaDb {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs SQL with the `mariadb` command-line client; returns (success, stdout + stderr).
pub fn mariadb(port: u16, sql: &str) -> (bool, String) {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "root",
        ])
        .args(["--connect-timeout=5", "--skip-ssl", "-e", sql])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// A TLS server (openssl s_server) standing in for an external database reached by SNI

pub struct TlsServer {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

/// A self-signed certificate for firestore.googleapis.com in `dir`: (cert, key) paths.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=firestore.googleapis.com", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (cert, key)
}

impl TlsServer {
    pub fn start() -> TlsServer {
        let dir = TempDir::new("tls");
        let (cert, key) = self_signed(dir.path());
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, Duration::from_secs(10));
        TlsServer {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS GET through `openssl s_client` with `sni`; returns (got an HTTP answer, output).
pub fn tls_get(port: u16, sni: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-servername", sni])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("HTTP/1.0 200 ok"), text)
}

/// A TLS line-echo server (tests/istio-sidecar/tls_echo.py) that serves connections
/// concurrently: a pooled connection can stay open while new ones come and go.
pub struct TlsEchoServer {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsEchoServer {
    pub fn start() -> TlsEchoServer {
        let dir = TempDir::new("tls-echo");
        let (cert, key) = self_signed(dir.path());
        let port = free_port();
        let child = Command::new("python3")
            .arg(repo().join("tests/istio-sidecar/tls_echo.py"))
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, Duration::from_secs(10));
        TlsEchoServer {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsEchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client session (`openssl s_client`) kept open, like a connection in an app's pool.
pub struct TlsSession {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl TlsSession {
    pub fn open(port: u16, sni: &str) -> TlsSession {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-ign_eof"])
            .args(["-connect", &format!("127.0.0.1:{port}"), "-servername", sni])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        TlsSession { child, out }
    }

    /// Sends a line and returns the echoed line; `None` when the connection is gone.
    pub fn echo(&mut self, line: &str) -> Option<String> {
        use std::io::BufRead;
        let stdin = self.child.stdin.as_mut()?;
        writeln!(stdin, "{line}").ok()?;
        stdin.flush().ok()?;
        let mut got = String::new();
        match self.out.read_line(&mut got) {
            Ok(n) if n > 0 => Some(got.trim_end().to_owned()),
            _ => None,
        }
    }

    /// Waits up to `timeout` for the session to end (the connection was closed).
    pub fn ended_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One exchange on a new TLS connection: sends `line`, then "bye"; true when it was echoed.
pub fn tls_echo_once(port: u16, sni: &str, line: &str) -> bool {
    let mut s = TlsSession::open(port, sni);
    let echoed = s.echo(line).as_deref() == Some(line);
    let _ = s.echo("bye");
    echoed
}
