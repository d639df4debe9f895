//! A throwaway MariaDB server (a server-first protocol: the server greets before the client
//! speaks) and the real `mariadb` client.

use crate::core::{is_root, run_ok, start_on_free_port, OutputByDeadline, Process, TempDir};
use crate::envoy::Envoy;
use std::fs;
use std::process::Command;
use std::time::Duration;

/// `mariadbd` on loopback with a fresh data directory, killed on drop.
pub struct MariaDb {
    pub port: u16,
    _process: Process,
    _dir: TempDir,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        MariaDb::start_with(false)
    }

    /// A server and an Envoy in front of it (listener `mariadb`) whose dbfault runs
    /// `plugin_config`.
    pub fn behind_envoy(plugin_config: &str) -> (MariaDb, Envoy) {
        let db = MariaDb::start();
        let envoy = Envoy::builder()
            .mariadb(db.port)
            .plugin_config(plugin_config)
            .start();
        (db, envoy)
    }

    /// With `tls`, the server offers TLS (a self-signed certificate made with `openssl`).
    pub fn start_with(tls: bool) -> MariaDb {
        MariaDb::launch(tls, false)
    }

    /// A server that refuses writes as a read replica does: `--read-only`, with grant tables, so
    /// that the user `app` (all privileges on the database `shop`, and not the privilege that
    /// bypasses `read_only`, which `root` has) is refused them. `root` has no password.
    pub fn read_only() -> MariaDb {
        let db = MariaDb::launch(false, true);
        db.as_root_by_socket(
            "CREATE DATABASE shop; CREATE USER app@'%'; GRANT ALL ON shop.* TO app@'%';",
        );
        db
    }

    /// Runs SQL as `root` over the server's Unix socket (with grant tables, `root` may log in
    /// only there); panics unless it succeeds.
    pub fn as_root_by_socket(&self, sql: &str) {
        run_ok(
            Command::new("mariadb")
                .args(["--no-defaults", "-u", "root"])
                .arg(format!(
                    "--socket={}",
                    self._dir.path().join("sock").display()
                ))
                .args(["-e", sql]),
        );
    }

    fn launch(tls: bool, read_only: bool) -> MariaDb {
        let dir = TempDir::new("mariadb");
        let mut tls_args = Vec::new();
        if tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            run_ok(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    ])
                    .args(["-subj", "/CN=localhost", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
            );
            run_ok(Command::new("chmod").arg("644").arg(&cert).arg(&key));
            tls_args.push(format!("--ssl-cert={}", cert.display()));
            tls_args.push(format!("--ssl-key={}", key.display()));
        }
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
        {
            // Two `mariadb-install-db` at once (tests run in parallel) now and then fail their
            // bootstrap ("Installation of system tables failed", seen 2 in 6 runs): one at a
            // time.
            static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
            run_ok(&mut install);
        }
        let log = dir.path().join("mariadb.log");
        let (port, process) = start_on_free_port("mariadbd", |port| {
            let file = fs::File::create(&log).unwrap();
            let mut cmd = Command::new("mariadbd");
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
                .arg(if read_only {
                    "--read-only"
                } else {
                    "--skip-grant-tables"
                })
                .args(["--innodb-buffer-pool-size=16M", "--skip-name-resolve"])
                .args(&tls_args);
            if is_root() {
                cmd.arg("--user=mysql");
            }
            let child = cmd
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("mariadbd: {e}"));
            let mut process = Process(child);
            let logged = || fs::read_to_string(&log).unwrap_or_default();
            match process.wait_ready("mariadbd ready", Duration::from_secs(60), || {
                logged().contains("ready for connections")
            }) {
                Ok(()) => Some((port, process)),
                Err(status) => {
                    let text = logged();
                    assert!(
                        text.contains("Address already in use"),
                        "mariadbd exited ({status}):\n{text}"
                    );
                    None
                }
            }
        });
        MariaDb {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// The `mariadb` command-line client for the throwaway servers' `root` on `port`, before
/// the test's own options (TLS, compression, the statement).
pub fn mariadb_command(port: u16) -> Command {
    let mut c = Command::new("mariadb");
    c.args(["--no-defaults", "-h", "127.0.0.1", "-u", "root"])
        .args(["-P", &port.to_string()])
        .arg("--connect-timeout=5");
    c
}

/// Runs SQL with the `mariadb` command-line client; returns (success, stdout + stderr).
pub fn mariadb(port: u16, sql: &str) -> (bool, String) {
    let out = mariadb_command(port)
        .args(["--skip-ssl", "-e", sql])
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("mariadb: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
