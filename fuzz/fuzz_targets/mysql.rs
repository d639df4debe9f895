//! The MySQL session on arbitrary bytes after a real connection phase (greeting, handshake
//! response, OK): never panics; a client stream is rewritten the same in any chunking under
//! rules that act on statements by their text, and passes untouched when none acts; with both
//! directions alternating under acting rules, never panics (the first input byte picks the
//! chunk size, the second the directions).
#![no_main]

use dbfault::fault::Direction;
use dbfault::protocol::mysql::session::Session;
use dbfault::protocol::{Ask, ErrorReply};

mod common;
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
        s.rewrite(dir, &bytes, &mut || 0, &mut |_| {}, Some(&mut nothing));
    }
    s
}

fn reply() -> ErrorReply {
    ErrorReply {
        code: Some(*b"40001"),
        errno: Some(1213),
        message: "Deadlock".into(),
        fatal: false,
    }
}

fn rewritten(data: &[u8], size: usize, acting: bool, deprecate: bool) -> Vec<u8> {
    let mut session = opened(deprecate);
    common::rewritten(data, size, acting, &reply(), &mut |chunk, judge| {
        session.rewrite(
            Direction::ToDatabase,
            chunk,
            &mut || 0,
            &mut |_| {},
            Some(judge),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let [size, side, rest @ ..] = data else {
        return;
    };
    let size = usize::from(*size).max(1);
    let deprecate = side & 2 != 0;
    assert_eq!(
        rewritten(rest, rest.len().max(1), true, deprecate),
        rewritten(rest, size, true, deprecate)
    );
    let untouched = rewritten(rest, size, false, deprecate);
    assert!(rest.starts_with(&untouched));
    assert!(rest.len() - untouched.len() <= 4 + 4097);

    let mut session = opened(deprecate);
    for (i, chunk) in rest.chunks(size).enumerate() {
        let dir = common::direction(i, *side);
        let reply = reply();
        let mut acts = |ask: dbfault::protocol::Ask<'_>| common::judge(ask, &reply);
        let _ = session.rewrite(dir, chunk, &mut || i as u64, &mut |_| {}, Some(&mut acts));
    }
});
