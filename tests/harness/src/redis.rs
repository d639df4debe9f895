//! A throwaway Redis server and a raw RESP client (the tests control every byte sent).

use crate::core::{start_on_free_port, Process, TempDir};
use crate::tcp::read_to_close;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `redis-server` on loopback without persistence, killed on drop.
pub struct Redis {
    pub port: u16,
    _process: Process,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = TempDir::new("redis");
        let log = dir.path().join("redis.log");
        let (port, process) = start_on_free_port("redis-server", |port| {
            let _ = fs::remove_file(&log);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--logfile"])
                .arg(&log)
                // Its own directory: a replica's full sync writes an RDB there, which a server
                // started in the same directory later would load (and the checkout stays clean).
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server)");
            let mut process = Process(child);
            let logged = || fs::read_to_string(&log).unwrap_or_default();
            match process.wait_ready("redis-server ready", Duration::from_secs(10), || {
                logged().contains("Ready to accept connections")
            }) {
                Ok(()) => Some((port, process)),
                Err(status) => {
                    let text = logged();
                    assert!(
                        text.contains("Address already in use"),
                        "redis-server exited ({status}):\n{text}"
                    );
                    None
                }
            }
        });
        Redis {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// The RESP encoding of a command (an array of bulk strings).
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    req
}

/// The RESP encoding of a bulk string reply (what `GET` answers for an existing key).
pub fn resp_bulk(value: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// A minimal RESP client over a raw socket.
pub struct RedisConn(pub TcpStream);

impl RedisConn {
    pub fn connect(port: u16) -> RedisConn {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        RedisConn(s)
    }

    /// Sends one command and reads one reply; returns the raw reply bytes.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(args[0])))
    }

    /// Like `cmd`, but a closed connection or a timeout is an `Err`.
    pub fn try_cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        self.send(&resp(args))?;
        self.read_reply()
    }

    /// Writes raw bytes (a command the test encoded itself, or part of one).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
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

    /// One reply, whole, in RESP2 or RESP3: a line (status, error, integer, null, boolean,
    /// double, big number), a bulk value with its body (string, verbatim string, blob error),
    /// or an aggregate with its elements (array, set, push; map and attribute by pairs).
    fn read_reply(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_value(&mut out)?;
        Ok(out)
    }

    fn read_value(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let start = out.len();
        self.read_line(out)?;
        let kind = out[start];
        let n: i64 = match kind {
            b'$' | b'=' | b'!' | b'*' | b'~' | b'>' | b'%' | b'|' => {
                std::str::from_utf8(&out[start + 1..out.len() - 2])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| std::io::Error::other("a length that is not a number"))?
            }
            _ => return Ok(()),
        };
        let Ok(n) = usize::try_from(n) else {
            return Ok(());
        };
        match kind {
            b'$' | b'=' | b'!' => {
                let mut body = vec![0u8; n + 2];
                self.0.read_exact(&mut body)?;
                out.extend_from_slice(&body);
            }
            _ => {
                let elements = if matches!(kind, b'%' | b'|') {
                    2 * n
                } else {
                    n
                };
                for _ in 0..elements {
                    self.read_value(out)?;
                }
                if kind == b'|' {
                    // An attribute precedes the reply it describes.
                    self.read_value(out)?;
                }
            }
        }
        Ok(())
    }

    /// Reads until the peer closes; returns everything received. Panics after `timeout`.
    pub fn read_to_close(&mut self, timeout: Duration) -> Vec<u8> {
        read_to_close(&mut self.0, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_encodes_arrays_of_bulk_strings() {
        assert_eq!(resp(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            resp(&[b"SET", b"k", b"ab"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nab\r\n"
        );
        assert_eq!(resp_bulk(b"xyz"), b"$3\r\nxyz\r\n");
    }
}
