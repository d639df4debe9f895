//! What a raw TCP client observes: a connection closed by the peer, or one left hanging.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open after {timeout:?}")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether `s` stays open and silent for `wait` (a hang, as on a network partition). When it
/// does not, what broke the silence (bytes, the peer closing, an error) goes to stderr, so that a
/// failing test's output tells an answer from a close.
pub fn stays_silent(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        s.set_read_timeout(Some(left)).unwrap();
        let broke = match s.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return true
            }
            // A signal, not the peer: keep waiting.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Ok(0) => "the peer closed the connection".to_owned(),
            Ok(n) => format!(
                "{n} bytes arrived: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => format!("read failed: {e}"),
        };
        eprintln!(
            "stays_silent: {broke}, {:?} into a {wait:?} wait",
            wait.saturating_sub(left)
        );
        return false;
    }
}
