//! What every server and client here shares: the repository, throwaway directories, polling
//! with a deadline, child processes that die with their owner, and starting a server on a free
//! port without racing other processes for it.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/harness`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/harness sits two levels below the repository root")
        .to_owned()
}

/// A directory under the system temp dir, removed on drop; owned by `postgres` when the tests
/// run as root, so that database servers (which refuse root) can write into it.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "dbfault-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

/// Whether the tests run as root (then servers run as their own users).
pub(crate) fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
                Some(uid.split_whitespace().nth(2)? == "0")
            })
            .unwrap_or(false)
    })
}

/// How long any program a test runs (a client, a CLI, a script) may take: past it, the program
/// is killed and the test fails, so a fault that makes a client hang fails a test instead of
/// stalling CI. Envoys get the same deadline ([`crate::Envoy`]): a library client whose reads
/// cannot be given a deadline of their own (the `postgres` crate) sees its connection end when
/// Envoy is killed. `DBFAULT_TEST_DEADLINE` (seconds) raises it for long runs (`make soak`,
/// `make safety`).
pub fn test_deadline() -> Duration {
    std::env::var("DBFAULT_TEST_DEADLINE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs)
}

/// `Command::output` with a deadline.
pub trait OutputByDeadline {
    /// Runs to completion (stdin closed) and returns what it printed; kills it and panics if it
    /// takes longer than [`test_deadline`].
    fn output_by_deadline(&mut self) -> std::io::Result<Output>;
}

impl OutputByDeadline for Command {
    fn output_by_deadline(&mut self) -> std::io::Result<Output> {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(finish_by_deadline(child, &format!("{self:?}")))
    }
}

/// Collects a spawned child's output (stdout and stderr piped), killing it and panicking with
/// what it printed if it outlives [`test_deadline`].
pub fn finish_by_deadline(child: Child, what: &str) -> Output {
    finish_within(child, what, test_deadline())
}

fn finish_within(mut child: Child, what: &str, deadline: Duration) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let end = Instant::now() + deadline;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default(),
            );
            panic!(
                "{what} did not finish within {deadline:?} (DBFAULT_TEST_DEADLINE): killed\n{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs `cmd` to completion (within [`test_deadline`]); panics with its output unless it
/// succeeds. Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// A child process, killed and reaped when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits until `ready()` holds (`Ok`) or the process exits (`Err` with its status).
    pub fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), ExitStatus> {
        wait_for(what, timeout, || match self.0.try_wait() {
            Ok(Some(status)) => Some(Err(status)),
            _ => ready().then_some(Ok(())),
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server on a port nobody listens on, for servers that cannot bind port 0 and report
/// it. Another process may take the port between the pick and the server's bind: `start(port)`
/// returns `None` when the server failed because the port was taken, and is then called again
/// with another port. (It panics itself on any other failure.)
pub fn start_on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Option<T>) -> T {
    const ATTEMPTS: usize = 5;
    let mut tried = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = unused_port();
        if let Some(server) = start(port) {
            return server;
        }
        tried.push(port);
    }
    panic!("{what}: every port tried was taken: {tried:?}")
}

/// A port that was free a moment ago. Only `start_on_free_port` hands these out, because a
/// server that binds one later can lose it to another process.
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// `python3 scripts/localenv.py ARGS...` (the local environment: servers, rendered Envoy
/// configurations), whatever its outcome.
pub fn localenv_output<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new("python3")
        .arg(repo().join("scripts/localenv.py"))
        .args(args)
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("python3 scripts/localenv.py: {e}"))
}

/// `python3 scripts/localenv.py ARGS...`: its stdout; panics with its message on failure.
pub(crate) fn localenv<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_ok(
        Command::new("python3")
            .arg(repo().join("scripts/localenv.py"))
            .args(args),
    )
}

/// Checks the times of requests a delay rule of `latency` held: none earlier than the latency
/// (less `early`, what the clock that releases them may be ahead), none later than twice the
/// latency plus 500 ms (generous for a loaded 2-core machine, yet it fails a request held until
/// some later event or held again), and their median under twice the latency plus 50 ms (each
/// held once, not once per chunk or per retry).
pub fn assert_held(what: &str, samples: &[Duration], latency: Duration, early: Duration) {
    assert!(!samples.is_empty(), "{what}: no samples");
    for d in samples {
        assert!(
            *d + early >= latency,
            "{what}: {d:?} is shorter than the latency {latency:?}: {samples:?}"
        );
        assert!(
            *d <= 2 * latency + Duration::from_millis(500),
            "{what}: {d:?} is far longer than the latency {latency:?}: {samples:?}"
        );
    }
    let m = median(samples.to_vec());
    assert!(
        m < 2 * latency + Duration::from_millis(50),
        "{what}: median {m:?} for a latency of {latency:?}: held twice? {samples:?}"
    );
}

/// A plugin configuration with `rules` (the inside of `faults: [...]`) and a 100 ms metrics
/// interval, so that tests waiting on metrics wait little.
pub fn config(rules: &str) -> String {
    format!(r#"{{"metrics": {{"interval": "100ms"}}, "faults": [{rules}]}}"#)
}

/// What `f` returned and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// A child's standard output, line by line as it comes, each with when it was read (echoed
/// to stderr as `tag> line`, for the test's log).
pub fn lines(child: &mut Child, tag: &'static str) -> std::sync::mpsc::Receiver<(Instant, String)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("the child's stdout is piped");
    thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("{tag}> {line}");
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Median of durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty(), "median of nothing");
    v.sort();
    v[v.len() / 2]
}

/// Runs a Python client in the repository's `.venv` (the test clients' libraries are installed
/// there) with `args` (a script and its arguments, or `-c CODE ...`) and returns the JSON it
/// prints on its last line; panics with its output unless it succeeds (within
/// [`test_deadline`]).
pub fn python_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let python = repo().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .args(args)
        .output_by_deadline()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Which of `nodes` the README's `sidecarPercentage` hash puts in a rule's share, computed
/// by Python's `hashlib` (an implementation independent of the crate's own SHA-256): the first
/// 8 bytes of SHA-256(node id, `\n`, rule name), big-endian, modulo 10000, below `share_bp`.
pub fn documented_sidecar_choice(nodes: &[String], rule: &str, share_bp: u32) -> Vec<bool> {
    let script = r#"
import hashlib, json, sys
rule, bp, nodes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(json.dumps([int.from_bytes(hashlib.sha256(f"{n}\n{rule}".encode()).digest()[:8], "big")
                  % 10000 < bp for n in nodes]))
"#;
    let out = run_ok(
        Command::new("python3")
            .args(["-c", script, rule, &share_bp.to_string()])
            .args(nodes),
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs `cmd` with `input` on its standard input (closed after it) and returns what it did;
/// panics if it cannot be started.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Written beside the wait, so a program that never reads cannot block us past the deadline;
    // one that exits before reading everything closes the pipe: not our failure.
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    finish_by_deadline(child, &format!("{cmd:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(secs: &str) -> Child {
        Command::new("sleep")
            .arg(secs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_program_past_its_deadline_is_killed_and_fails_the_test() {
        let started = Instant::now();
        let failed = std::panic::catch_unwind(|| {
            finish_within(sleeper("30"), "sleep 30", Duration::from_millis(300))
        });
        let message = *failed.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("did not finish within 300ms"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(20));
        // One that finishes in time gives its output.
        let out = finish_within(sleeper("0"), "sleep 0", Duration::from_secs(20));
        assert!(out.status.success());
    }
}
