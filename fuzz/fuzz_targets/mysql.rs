//! The MySQL session on arbitrary bytes after a real connection phase (greeting, handshake
//! response, OK): never panics; a client stream is rewritten the same in any chunking under
//! rules that act on statements by their text, and passes untouched when none acts; with both
//! directions alternating under acting rules, never panics (the first input byte picks the
//! chunk size, the second the directions). An input holding a client stream, a marker and the
//! server's replies: the replies come out the same however they are chunked, whole packets
//! when they went in whole, untouched when no rule acts.
#![no_main]

use dbfault::flow::Direction;
use dbfault::protocol::mysql::session::Session;
use dbfault::protocol::With;
use dbfault::protocol::{Ask, ErrorReply};

mod common;

/// The crate's session of any protocol: the shared checks drive that one type.
use dbfault::protocol::Session as AnySession;
use libfuzzer_sys::fuzz_target;

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// A session past its connection phase (DEPRECATE_EOF when `deprecate`).
fn opened(deprecate: bool) -> Session {
    let mut s = Session::new();
    let mut greeting = vec![0x0a];
    greeting.extend_from_slice(b"11.8.3-MariaDB\0\x01\0\0\0abcdefgh\0\xff\xf7\x08\x02\0\xff\x81\x15\0\0\0\0\0\0\0\0\0\0ijklmnopqrst\0mysql_native_password\0");
    let caps: u32 = 0x000a_a205 | if deprecate { 0x0100_0000 } else { 0 };
    let mut hello = caps.to_le_bytes().to_vec();
    hello.extend_from_slice(&[0, 0, 0, 1, 33]);
    hello.extend_from_slice(&[0; 23]);
    hello.extend_from_slice(b"root\0\0");
    let mut nothing = |_: Ask<'_>| None;
    for (dir, bytes) in [
        (Direction::ToClient, packet(0, &greeting)),
        (Direction::ToDatabase, packet(1, &hello)),
        (Direction::ToClient, packet(2, &[0, 0, 0, 2, 0, 0, 0])),
    ] {
        s.rewrite(
            dir,
            &bytes,
            &mut With {
                now: &mut || 0,
                event: &mut |_| {},
                judge: Some(&mut nothing),
            },
        );
    }
    s
}

/// Whether `data` is whole packets (3-byte length, sequence id, payload), nothing left over.
fn framed(data: &[u8]) -> bool {
    let mut at = 0;
    while at < data.len() {
        match data.get(at..at + 3) {
            Some(l) => {
                at += 4 + (usize::from(l[0]) | usize::from(l[1]) << 8 | usize::from(l[2]) << 16)
            }
            None => return false,
        }
    }
    at == data.len()
}

/// The events of a client stream read in chunks of `size`.
fn events(deprecate: bool, data: &[u8], size: usize) -> Vec<String> {
    let mut s = opened(deprecate);
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        s.on_data(
            Direction::ToDatabase,
            chunk,
            &mut With {
                now: &mut || 0,
                event: &mut |e| out.push(format!("{e:?}")),
                judge: None,
            },
        );
    }
    out
}

fn reply() -> ErrorReply {
    ErrorReply {
        code: Some(*b"40001"),
        errno: Some(1213),
        message: "Deadlock".into(),
        fatal: false,
        rollback: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [size, side, rest @ ..] = data else {
        return;
    };
    let size = usize::from(*size).max(1);
    let deprecate = side & 2 != 0;
    // The reader reports the same events however the bytes are chunked.
    assert_eq!(
        events(deprecate, rest, rest.len().max(1)),
        events(deprecate, rest, size)
    );
    // Withheld: at most a packet header and a statement's first 4 KiB (and its command byte).
    common::check_rewriting(rest, size, *side, &reply(), 4 + 4097, &framed, &|| {
        AnySession::Mysql(opened(deprecate))
    });
    // The server's replies to a client stream, when the input holds both: packets both ways.
    common::check_skipping(&|| AnySession::Mysql(opened(deprecate)), rest, size);
    common::check_replies(rest, size, &reply(), 0, &framed, &|| {
        AnySession::Mysql(opened(deprecate))
    });
});
