//! TLS servers standing in for an external database reached by SNI (Firestore in the Istio
//! scenario), and `openssl s_client` sessions against them.

use crate::core::{repo, run_ok, Process, TempDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

/// Reads the port a server bound on port 0 from the first line of its `stdout` that starts
/// with `prefix` (e.g. `ACCEPT 127.0.0.1:41235`), then keeps draining its output so that the
/// server never blocks on a full pipe.
fn port_from_output(what: &str, stdout: ChildStdout, prefix: &str) -> u16 {
    let mut out = BufReader::new(stdout);
    let mut seen = String::new();
    let port = loop {
        let mut line = String::new();
        match out.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => panic!("{what} exited before reporting its port; it printed:\n{seen}"),
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let port = rest.rsplit(':').next().and_then(|p| p.parse().ok());
            break port.unwrap_or_else(|| panic!("{what}: no port in {line:?}"));
        }
        seen.push_str(&line);
    };
    thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
    });
    port
}

/// `openssl s_server -www` on a port it picked itself: answers an HTTP GET with a status page.
pub struct TlsServer {
    pub port: u16,
    _process: Process,
    _dir: TempDir,
}

impl TlsServer {
    pub fn start() -> TlsServer {
        let dir = TempDir::new("tls");
        let (cert, key) = self_signed(dir.path());
        let mut child = Command::new("openssl")
            .args(["s_server", "-www", "-accept", "127.0.0.1:0"])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("openssl s_server: {e}"));
        let stdout = child.stdout.take().expect("s_server's stdout");
        let process = Process(child);
        // s_server prints `ACCEPT` once it listens.
        let port = port_from_output("openssl s_server", stdout, "ACCEPT ");
        TlsServer {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// An HTTPS GET through `openssl s_client` with `sni`; returns (got an HTTP answer, output).
pub fn tls_get(port: u16, sni: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet"])
        .args(["-connect", &format!("127.0.0.1:{port}"), "-servername", sni])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl s_client: {e}"));
    let mut stdin = child.stdin.take().expect("s_client's stdin");
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
    _process: Process,
    _dir: TempDir,
}

impl TlsEchoServer {
    pub fn start() -> TlsEchoServer {
        let dir = TempDir::new("tls-echo");
        let (cert, key) = self_signed(dir.path());
        let mut child = Command::new("python3")
            .arg(repo().join("tests/istio-sidecar/tls_echo.py"))
            .arg("0")
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 tls_echo.py: {e}"));
        let stdout = child.stdout.take().expect("tls_echo.py's stdout");
        let process = Process(child);
        let port = port_from_output("tls_echo.py", stdout, "listening on ");
        TlsEchoServer {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// A TLS client session (`openssl s_client`) kept open, like a connection in an app's pool.
pub struct TlsSession {
    child: Child,
    out: BufReader<ChildStdout>,
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
            .unwrap_or_else(|e| panic!("openssl s_client: {e}"));
        let out = BufReader::new(child.stdout.take().expect("s_client's stdout"));
        TlsSession { child, out }
    }

    /// Sends a line and returns the echoed line; `None` when the connection is gone.
    pub fn echo(&mut self, line: &str) -> Option<String> {
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
