//! What an observed request costs the module's own code, natively, through the filter as Envoy
//! drives it (a minimal host that hands over each event's buffer): for
//! `valgrind --tool=callgrind` (run it with two counts and divide the difference) or a profile.
//!
//! `request_cost PROTOCOL N [CONFIG]`: N round trips of pgbench -S's query (`postgres`), a
//! mariadb-slap `SELECT 1` (`mysql`) or redis-benchmark's GET (`redis`) and their answers, one
//! data event each way, under the plugin configuration CONFIG (default: dbfault's defaults).
//! `connect` instead: N connections, each a Redis `PING` and its `+PONG`, then closed (as
//! `loadgen pings` makes them).

use dbfault::filter::{Root, Stream};
use dbfault::flow::Direction;
use dbfault::host::Host;
use dbfault::metrics::{MetricId, MetricKind, MetricSink};
use std::time::Duration;

struct Sink(u32);

impl MetricSink for Sink {
    fn define(&mut self, _kind: MetricKind, _name: &str) -> Option<MetricId> {
        self.0 += 1;
        Some(self.0)
    }
    fn record(&mut self, _id: MetricId, _value: u64) {}
    fn add(&mut self, _id: MetricId, _delta: i64) {}
}

/// Envoy as far as the data path needs it: the event's buffer, a clock, the cluster's name.
struct Minimal {
    config: Vec<u8>,
    buffer: Vec<u8>,
    now: u64,
    sink: Sink,
}

impl Host for Minimal {
    fn property(&mut self, path: &[&str]) -> Option<String> {
        (path == ["xds", "cluster_name"]).then(|| "outbound|5432||db.example.svc".to_owned())
    }
    fn now_nanos(&mut self) -> Option<u64> {
        self.now += 1_000;
        Some(self.now)
    }
    fn plugin_configuration(&mut self, size: usize) -> Vec<u8> {
        self.config.get(..size).unwrap_or_default().to_vec()
    }
    fn sync_log_level(&mut self) {}
    fn set_tick_period(&mut self, _period: Duration) {}
    fn read_data(&mut self, _dir: Direction, start: usize, len: usize) -> Option<Vec<u8>> {
        self.buffer.get(start..start + len).map(<[u8]>::to_vec)
    }
    fn drop_data(&mut self, _dir: Direction, _size: usize, _keep: usize) {}
    fn replace_data(&mut self, _dir: Direction, _from: usize, _size: usize, _bytes: &[u8]) {}
    fn close_connection(&mut self) {}
    fn resume_downstream(&mut self) {}
    fn set_effective_context(&mut self, _context_id: u32) -> bool {
        true
    }
    fn shared_data(&mut self, _key: &str) -> Option<(Vec<u8>, u32)> {
        None
    }
    fn set_shared_data(&mut self, _key: &str, _value: &[u8]) {}
    fn metrics(&mut self) -> &mut dyn MetricSink {
        &mut self.sink
    }
}

// The protocol bytes the unit tests build, from the one place each is written.
#[path = "../src/protocol/mysql/wire_bytes.rs"]
mod mysql_bytes;
#[path = "../src/protocol/postgres/wire_bytes.rs"]
#[allow(dead_code)]
mod pg_bytes;
use pg_bytes::{complete, hello, msg as pg, query, ready, startup};

fn mysql(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// The session's start (client, server, ...) and one round trip (request, answer).
fn streams(protocol: &str) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    match protocol {
        "postgres" => {
            let query = query("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;");
            let answer = [
                pg(
                    b'T',
                    b"\0\x01abalance\0\0\0@\x04\0\x03\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
                ),
                pg(b'D', b"\0\x01\0\0\0\x010"),
                complete("SELECT 1"),
                ready(b'I'),
            ]
            .concat();
            (vec![startup(), hello()], query, answer)
        }
        "mysql" => {
            let ok = mysql(2, &[0, 0, 0, 2, 0, 0, 0]);
            let query = mysql(0, b"\x03SELECT 1");
            let answer = [
                mysql(1, &[1]),
                mysql(
                    2,
                    b"\x03def\0\0\0\x011\0\x0c\x3f\0\x01\0\0\0\x08\x81\0\0\0\0",
                ),
                mysql(3, &[0xfe, 0, 0, 2, 0]),
                mysql(4, b"\x011"),
                mysql(5, &[0xfe, 0, 0, 2, 0]),
            ]
            .concat();
            (
                vec![
                    mysql(0, &mysql_bytes::greeting_payload()),
                    mysql(1, &mysql_bytes::handshake_payload(0x000a_a205)),
                    ok,
                ],
                query,
                answer,
            )
        }
        _ => (
            Vec::new(),
            b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n".to_vec(),
            b"$3\r\nxxx\r\n".to_vec(),
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let protocol = args.get(1).map_or("redis", String::as_str);
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let config = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| r#"{"metrics": {"interval": "1s"}}"#.to_owned());
    let mut host = Minimal {
        config: config.into_bytes(),
        buffer: Vec::new(),
        now: 1_000_000_000,
        sink: Sink(0),
    };
    let mut root = Root::new(1);
    let size = host.config.len();
    if !root.configure(&mut host, size) {
        eprintln!("configuration refused");
        std::process::exit(2);
    }
    if protocol == "connect" {
        for id in 0..n {
            let mut stream = Stream::new(10 + id as u32, 1);
            for (dir, bytes) in [
                (Direction::ToDatabase, &b"PING\r\n"[..]),
                (Direction::ToClient, b"+PONG\r\n"),
            ] {
                host.buffer.clear();
                host.buffer.extend_from_slice(bytes);
                std::hint::black_box(stream.on_data(&mut host, dir, bytes.len()));
            }
            stream.closed(&mut host);
            stream.finish(&mut host);
            if id % 1000 == 999 {
                host.now += 1_000_000_000;
                root.tick(&mut host);
            }
        }
        println!("{n} connections");
        return;
    }
    let mut stream = Stream::new(2, 1);
    let (start, request, answer) = streams(protocol);
    // MySQL's server speaks first; PostgreSQL's and Redis's client.
    let first = if protocol == "mysql" {
        Direction::ToClient
    } else {
        Direction::ToDatabase
    };
    let mut send = |host: &mut Minimal, dir: Direction, bytes: &[u8]| {
        host.buffer.clear();
        host.buffer.extend_from_slice(bytes);
        std::hint::black_box(stream.on_data(host, dir, bytes.len()));
    };
    for (i, bytes) in start.iter().enumerate() {
        let dir = if (i % 2 == 0) == (first == Direction::ToDatabase) {
            Direction::ToDatabase
        } else {
            Direction::ToClient
        };
        send(&mut host, dir, bytes);
    }
    for _ in 0..n {
        send(&mut host, Direction::ToDatabase, &request);
        send(&mut host, Direction::ToClient, &answer);
    }
    root.tick(&mut host);
    println!("{n} round trips");
}
