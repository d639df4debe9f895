//! Load generator and echo server for `make bench` (scripts/bench.py). Std only, so that the
//! numbers measure Envoy and dbfault rather than a runtime.
//!
//! ```text
//! loadgen echo PORT                         echo server (thread per connection)
//! loadgen connrate ADDR THREADS SECS [RATE] connect, 64-byte exchange, close, in a loop
//! loadgen latency ADDR RATE SECS            64-byte ping-pong on one connection at RATE/s
//! loadgen idle ADDR N                       open N connections, exchange once, hold until stdin closes
//! loadgen pings ADDR N                      N connections one after another: Redis PING, +PONG, close
//! ```
//! Results are printed as one JSON object.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MSG: [u8; 64] = [b'x'; 64];

fn exchange(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(&MSG)?;
    let mut buf = [0u8; 64];
    s.read_exact(&mut buf)
}

fn echo(port: u16) {
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => return eprintln!("bind {port}: {e}"),
    };
    for conn in listener.incoming().flatten() {
        // Small stacks: the idle-connection measurement holds thousands of these threads.
        let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let mut conn = conn;
            let _ = conn.set_nodelay(true);
            let mut buf = [0u8; 16384];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            eprintln!("echo: {e}");
        }
    }
}

/// `rate` > 0 paces the connections (total per second over all threads), so that long runs do
/// not exhaust the ephemeral ports (each closed connection sits in TIME_WAIT for a minute).
fn connrate(addr: &str, threads: usize, secs: f64, rate: f64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (addr, done, failed, stop) = (
                addr.to_owned(),
                Arc::clone(&done),
                Arc::clone(&failed),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if rate > 0.0 {
                        n += 1;
                        let due = Duration::from_secs_f64(f64::from(n) * threads as f64 / rate);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            thread::sleep(wait);
                        }
                    }
                    let ok = TcpStream::connect(&addr).and_then(|mut s| {
                        s.set_nodelay(true)?;
                        exchange(&mut s)
                    });
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "{{\"connections\": {n}, \"failed\": {}, \"seconds\": {elapsed:.3}, \"per_second\": {:.1}}}",
        failed.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn latency(addr: &str, rate: f64, secs: f64) {
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return eprintln!("connect {addr}: {e}"),
    };
    let _ = s.set_nodelay(true);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * secs) as u64;
    let mut rtts = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for i in 0..total {
        if let Some(wait) = (start + interval * i as u32).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let t = Instant::now();
        if exchange(&mut s).is_err() {
            break;
        }
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    rtts.sort_unstable();
    println!(
        "{{\"requests\": {}, \"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"seconds\": {:.3}}}",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        percentile(&rtts, 0.999),
        start.elapsed().as_secs_f64()
    );
}

fn idle(addr: &str, n: usize) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect(addr).and_then(|mut s| exchange(&mut s).map(|()| s)) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("connection {}: {e}", conns.len());
                break;
            }
        }
    }
    println!("{{\"open\": {}}}", conns.len());
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(conns);
}

/// `n` connections one after another, each sending a Redis `PING` and reading its `+PONG`
/// (within 5 s) before closing: what one connection costs a proxy in front of Redis.
fn pings(addr: &str, n: u64) {
    let (mut done, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..n {
        let ok = TcpStream::connect(addr).and_then(|mut s| {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(&buf == b"+PONG\r\n")
        });
        match ok {
            Ok(true) => done += 1,
            _ => failed += 1,
        }
    }
    println!(
        "{{\"connections\": {done}, \"failed\": {failed}, \"seconds\": {:.3}}}",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let num = |i: usize| arg(i).parse::<f64>().unwrap_or(0.0);
    match arg(1) {
        "echo" => echo(arg(2).parse().unwrap_or(0)),
        "connrate" => connrate(arg(2), num(3) as usize, num(4), num(5)),
        "latency" => latency(arg(2), num(3), num(4)),
        "idle" => idle(arg(2), num(3) as usize),
        "pings" => pings(arg(2), num(3) as u64),
        _ => eprintln!("usage: loadgen echo PORT | connrate ADDR THREADS SECS | latency ADDR RATE SECS | idle ADDR N | pings ADDR N"),
    }
}
