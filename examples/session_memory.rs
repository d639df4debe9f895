//! Heap bytes one idle PostgreSQL session keeps in the filter's protocol reader, measured with a
//! counting allocator (natively: the same code the module runs). The session has started, prepared
//! a named statement, run a query, and waits. scripts/bench.py reports the figure.
//!
//! `session_memory N`: N sessions side by side; prints the bytes per session as JSON.

use dbfault::flow::Direction;
use dbfault::protocol::postgres::session::Session;
use dbfault::protocol::With;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// The PostgreSQL bytes the unit tests build, from the one place they are written.
#[path = "../src/protocol/postgres/wire_bytes.rs"]
#[allow(dead_code)]
mod wire_bytes;
use wire_bytes::{complete, msg as message, ready};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let params = b"user\0postgres\0database\0postgres\0application_name\0plants\0\0";
    let mut startup = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(params);
    let ready = ready(b'I');
    let hello = [
        message(b'R', &[0; 4]),
        message(b'S', b"server_version\x0015.4\0"),
        ready.clone(),
    ]
    .concat();
    let prepare = [
        message(
            b'P',
            b"plants_insert\0INSERT INTO plants (name) VALUES ($1) RETURNING id\0\0\0",
        ),
        message(b'S', b""),
    ]
    .concat();
    let query = message(b'Q', b"SELECT count(*) FROM plants\0");
    let answer = [
        message(
            b'T',
            b"\0\x01count\0\0\0\0\0\0\0\0\0\x14\0\x08\xff\xff\xff\xff\0\0",
        ),
        message(b'D', b"\0\x01\0\0\0\x0242"),
        complete("SELECT 1"),
        ready.clone(),
    ]
    .concat();
    let before = LIVE.load(Ordering::Relaxed);
    let mut sessions = Vec::with_capacity(n);
    let reserved = LIVE.load(Ordering::Relaxed) - before;
    for _ in 0..n {
        let mut s = Box::new(Session::new());
        let prepared = [message(b'1', b""), ready.clone()].concat();
        for (dir, bytes) in [
            (Direction::ToDatabase, &startup),
            (Direction::ToClient, &hello),
            (Direction::ToDatabase, &prepare),
            (Direction::ToClient, &prepared),
            (Direction::ToDatabase, &query),
            (Direction::ToClient, &answer),
        ] {
            s.on_data(
                dir,
                bytes,
                &mut With {
                    now: &mut || 0,
                    event: &mut |_| {},
                    judge: None,
                },
            );
        }
        sessions.push(s);
    }
    let per = (LIVE.load(Ordering::Relaxed) - before - reserved) as f64 / n as f64;
    println!(
        "{{\"sessions\": {n}, \"heap_bytes_per_session\": {per:.0}, \"struct_bytes\": {}}}",
        std::mem::size_of::<Session>()
    );
}
