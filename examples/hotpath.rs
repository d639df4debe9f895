//! The per-chunk hot path of an unfaulted connection, for `valgrind --tool=callgrind`
//! (scripts/bench.py runs it with two iteration counts and divides the difference).
//!
//! `hotpath N`: N client → database data events on one connection.

use dbfault::fault::connection::Connection;
use dbfault::flow::Direction;
use dbfault::throughput::Traffic;
use std::hint::black_box;
use std::rc::Rc;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let traffic = Rc::new(Traffic::default());
    let mut conn = Connection::new(42, 0, Rc::clone(&traffic));
    let mut now = || 0u64;
    for _ in 0..n {
        black_box(conn.on_data(Direction::ToDatabase, black_box(64), &mut now));
    }
    println!("{}", traffic.tx.get());
}
