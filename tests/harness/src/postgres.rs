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

    /// A hot standby of `primary` (`pg_basebackup -R`: it streams the primary's changes and
    /// refuses writes as a read replica does).
    pub fn standby_of(primary: &Postgres) -> Postgres {
        let dir = TempDir::new("pg-standby");
        let out = localenv([
            OsStr::new("postgres-standby"),
            OsStr::new("--dir"),
            dir.path().as_os_str(),
            OsStr::new("--primary-port"),
            OsStr::new(&primary.port.to_string()),
        ]);
        let port = out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("postgres-standby printed {out:?}, not a port"));
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

/// A PostgreSQL session spoken byte by byte (protocol 3.0, trust auth, user `postgres`): what
/// arrived is read whole, a FATAL followed at once by the server's close included. Client
/// libraries may report only the close then (the `postgres` crate's blocking client sees its
/// connection end before it reads the error already received).
pub struct RawPg(std::net::TcpStream);

/// One backend message: its type byte and, for an ErrorResponse, its fields by code.
#[derive(Debug, Clone, PartialEq)]
pub struct PgMessage {
    pub tag: u8,
    pub fields: Vec<(u8, String)>,
}

impl PgMessage {
    /// An ErrorResponse's field (`b'S'` severity, `b'C'` SQLSTATE, `b'M'` message).
    pub fn field(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }
}

impl RawPg {
    /// Connects and starts a session; the messages the server answered the startup with
    /// (up to its first ReadyForQuery, or its close).
    pub fn connect(port: u16) -> (RawPg, Vec<PgMessage>) {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut body = 196608u32.to_be_bytes().to_vec();
        for part in ["user", "postgres", "database", "postgres", ""] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        let mut msg = (body.len() as u32 + 4).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        let mut raw = RawPg(s);
        raw.write(&msg);
        let answer = raw.read_answer();
        (raw, answer)
    }

    /// Sends a simple Query and reads its answer (up to ReadyForQuery, or the server's close).
    pub fn query(&mut self, sql: &str) -> Vec<PgMessage> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        msg.extend_from_slice(&body);
        self.write(&msg);
        self.read_answer()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// Messages up to and including a ReadyForQuery, or all of them up to the peer's close;
    /// each read has a 10 s deadline.
    fn read_answer(&mut self) -> Vec<PgMessage> {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 1 + len {
                    break;
                }
                let tag = buf[0];
                let body: Vec<u8> = buf.drain(..1 + len).skip(5).collect();
                let mut fields = Vec::new();
                if tag == b'E' || tag == b'N' {
                    for f in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
                        fields.push((f[0], String::from_utf8_lossy(&f[1..]).into_owned()));
                    }
                }
                out.push(PgMessage { tag, fields });
                if tag == b'Z' {
                    return out;
                }
            }
            self.0
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            match self.0.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        buf.is_empty(),
                        "the server closed inside a message: {buf:?}"
                    );
                    return out;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("reading the answer: {e} (after {out:?})"),
            }
        }
    }

    /// Whether the server has closed the session (a read returns end of stream within 10 s).
    pub fn closed(&mut self) -> bool {
        use std::io::Read;
        self.0
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; 1];
        match self.0.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
