//! The request path of a read protocol session, natively, for `valgrind --tool=callgrind` or a
//! plain timing: N pipelined Redis GETs (batches of 16, as redis-benchmark -P 16 sends them)
//! and their replies through one session.
//!
//! `request_path N`: prints the commands counted.

use dbfault::flow::Direction;
use dbfault::protocol::redis::session::Session;
use dbfault::protocol::Event;
use dbfault::protocol::With;
use std::hint::black_box;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let get = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n";
    let up: Vec<u8> = get.repeat(16);
    let down: Vec<u8> = b"$3\r\nxxx\r\n".repeat(16);
    let mut s = Session::new();
    let mut requests = 0u64;
    let mut event = |e: Event| {
        if let Event::Request(_) = e {
            requests += 1;
        }
    };
    for t in 0..(n / 16) as u64 {
        s.on_data(
            Direction::ToDatabase,
            black_box(&up),
            &mut With {
                now: &mut || t,
                event: &mut event,
                judge: None,
            },
        );
        s.on_data(
            Direction::ToClient,
            black_box(&down),
            &mut With {
                now: &mut || t,
                event: &mut event,
                judge: None,
            },
        );
    }
    println!("{requests}");
}
