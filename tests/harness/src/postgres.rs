//! A throwaway PostgreSQL 15 server and the real `psql` client.

use crate::core::{localenv, repo, run_ok, OutputByDeadline, TempDir};
use std::ffi::OsStr;
use std::io::Write;
use std::process::{Child, Command, Stdio};

/// A throwaway PostgreSQL 15 cluster (trust auth, user `postgres`) started by
/// `scripts/localenv.py postgres-start` (the bootstrap the demo and the benchmark use; it
/// retries on another port when the bind fails), stopped on drop.
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = TempDir::new("pg");
        let out = localenv([
            OsStr::new("postgres-start"),
            OsStr::new("--dir"),
            dir.path().as_os_str(),
        ]);
        let port = out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("postgres-start printed {out:?}, not a port"));
        Postgres { port, dir }
    }

    /// The server's log (its stderr, as `pg_ctl -l` writes it).
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("postgres.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(repo().join("scripts/localenv.py"))
            .arg("postgres-stop")
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The libpq connection string of the throwaway servers' `postgres` user on `port` (also what
/// the `postgres` crate reads), with a connect timeout.
pub fn pg_url(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=postgres connect_timeout=10")
}

fn psql_command(port: u16) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string()]);
    c
}

/// Runs SQL through `psql` against `port`; panics unless it succeeds. Returns its stdout.
pub fn psql(port: u16, sql: &str) -> String {
    run_ok(
        psql_command(port)
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5"),
    )
}

/// Runs SQL through `psql` that may fail; returns (success, stderr).
pub fn psql_try(port: u16, sql: &str) -> (bool, String) {
    let out = psql_command(port)
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a `psql` script (statements, `\set`...) that may fail anywhere, with verbose errors
/// (SQLSTATEs shown); returns (stdout, stderr). `env`: extra environment (e.g. `PGSSLMODE`).
pub fn psql_script(port: u16, script: &str, env: &[(&str, &str)]) -> (String, String) {
    let mut command = psql_command(port);
    command
        .args(["-At", "-v", "VERBOSITY=verbose", "-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("psql: {e}"));
    let mut stdin = child.stdin.take().expect("psql's stdin");
    stdin.write_all(script.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An interactive `psql` session held open until closed or dropped.
pub struct PsqlSession(Child);

impl PsqlSession {
    pub fn open(port: u16) -> PsqlSession {
        let child = psql_command(port)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        PsqlSession(child)
    }

    pub fn send(&mut self, sql: &str) {
        let stdin = self.0.stdin.as_mut().expect("psql's stdin");
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the session as a user would (end of input) and waits for `psql` to exit.
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
