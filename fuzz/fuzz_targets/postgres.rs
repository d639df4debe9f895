//! The PostgreSQL reader on arbitrary bytes, both directions: never panics, never keeps more
//! than the capture limit, and reports the same steps however the bytes are chunked (the
//! first input byte picks the chunk size, the second the direction). The session layer on
//! the same bytes, alternating directions chunk by chunk: never panics, and answers never
//! outnumber requests. The rewriting under rules that act on statements (by their text): never
//! panics; a client stream comes out the same however it is chunked, and byte for byte when
//! no rule acts; withheld bytes stay within a message's header and capture. An input holding
//! a client stream, a marker and the server's replies: the replies come out the same however
//! they are chunked, well-framed when they went in well-framed, untouched when no rule acts.
#![no_main]

use dbfault::flow::Direction;
use dbfault::protocol::postgres::session::{Event, Session};
use dbfault::protocol::postgres::{Reader, Step, CAPTURE_LIMIT};
use dbfault::protocol::ErrorReply;
use dbfault::protocol::With;
use libfuzzer_sys::fuzz_target;

mod common;

/// The crate's session of any protocol: the shared checks drive that one type.
use dbfault::protocol::Session as AnySession;

fn steps(reader: &mut Reader, data: &[u8], size: usize) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        reader.read(chunk, &mut |s| {
            match &s {
                Step::Message(m) => {
                    assert!(m.body.len() <= CAPTURE_LIMIT);
                    assert!(m.body.len() as u64 <= u64::from(m.len));
                    assert!(m.at <= chunk.len());
                    // Where in a chunk a message is reported depends on the chunking; what
                    // is reported does not.
                    out.push(format!(
                        "{} {} {:?} {} {}",
                        m.tag, m.len, m.body, m.truncated, m.head
                    ));
                }
                other => out.push(format!("{other:?}")),
            }
        });
    }
    out
}

/// Whether `data` is a startup message and then whole tagged messages, nothing left over.
fn framed(data: &[u8]) -> bool {
    let word = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(len) = word(0).filter(|l| *l >= 8) else {
        return false;
    };
    let mut at = len;
    while at < data.len() {
        match word(at + 1) {
            Some(l) if l >= 4 => at += 1 + l,
            _ => return false,
        }
    }
    at == data.len()
}

/// Whether `data` is whole tagged messages, nothing left over (a server's stream).
fn replies_framed(data: &[u8]) -> bool {
    let mut at = 0;
    while at < data.len() {
        match data.get(at + 1..at + 5) {
            Some(b) if u32::from_be_bytes([b[0], b[1], b[2], b[3]]) >= 4 => {
                at += 1 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
            }
            _ => return false,
        }
    }
    at == data.len()
}

fn reply() -> ErrorReply {
    ErrorReply {
        code: Some(*b"40001"),
        errno: None,
        message: "m".into(),
        fatal: false,
        rollback: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [size, side, rest @ ..] = data else {
        return;
    };
    let size = usize::from(*size).max(1);
    let new = || {
        if side & 1 == 0 {
            Reader::client()
        } else {
            Reader::server()
        }
    };
    let whole = steps(&mut new(), rest, rest.len().max(1));
    let chunked = steps(&mut new(), rest, size);
    assert_eq!(whole, chunked);
    assert!(whole.iter().filter(|s| *s == "Unreadable").count() <= 1);

    let mut session = Session::new();
    let (mut requests, mut answered) = (0u64, 0u64);
    for (i, chunk) in rest.chunks(size).enumerate() {
        let dir = if (i + usize::from(*side)) % 2 == 0 {
            Direction::ToDatabase
        } else {
            Direction::ToClient
        };
        session.on_data(
            dir,
            chunk,
            &mut With {
                now: &mut || i as u64,
                event: &mut |e| match e {
                    Event::Request(_) => requests += 1,
                    Event::Answered { .. } => answered += 1,
                    _ => {}
                },
                judge: None,
            },
        );
    }
    assert!(answered <= requests);

    // Rewriting: withheld bytes at the end of a stream stay within a message's header and
    // capture.
    common::check_rewriting(
        rest,
        size,
        *side,
        &reply(),
        CAPTURE_LIMIT + 8,
        &framed,
        &|| AnySession::Postgres(Session::new()),
    );
    // The server's replies to a client stream, when the input holds both.
    common::check_skipping(&|| AnySession::Postgres(Session::new()), rest, size);
    common::check_replies(rest, size, &reply(), 0, &replies_framed, &|| {
        AnySession::Postgres(Session::new())
    });
});
