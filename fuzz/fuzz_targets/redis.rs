//! The Redis reader on arbitrary bytes, both directions: never panics, and reports the same
//! values however the bytes are chunked (the first input byte picks the chunk size, the second
//! the direction). The rewriting of a client stream under rules that act on commands (by their
//! text): the same output in any chunking, untouched when no rule acts, withheld bytes bounded.
//! Both directions alternating under acting rules: never panics. An input holding a client
//! stream, a marker and the server's replies: the replies come out the same however they are
//! chunked, whole RESP replies when they went in whole, untouched when no rule acts.
#![no_main]

use dbfault::protocol::redis::resp::{Resp, Step};
use dbfault::protocol::redis::session::Session;
use dbfault::protocol::ErrorReply;
use libfuzzer_sys::fuzz_target;

fn steps(reader: &mut Resp, data: &[u8], size: usize) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        reader.read(chunk, &mut |s| {
            out.push(match s {
                // Where in a chunk a value is reported depends on the chunking; what is
                // reported does not.
                Step::Command {
                    name, text, head, ..
                } => {
                    assert!(text.len() <= 4096 && name.len() <= text.len());
                    format!("command {name:?} {text:?} {head}")
                }
                Step::CommandEnd { .. } => "end".to_owned(),
                Step::Reply {
                    kind,
                    text,
                    number,
                    head,
                    ..
                } => {
                    assert!(text.len() <= 512);
                    format!("reply {kind} {text:?} {number:?} {head}")
                }
                other => format!("{other:?}"),
            })
        });
    }
    out
}

mod common;

/// The crate's session of any protocol: the shared checks drive that one type.
use dbfault::protocol::Session as AnySession;

/// Whether `data` is whole commands — RESP arrays of bulk strings, or inline lines — nothing
/// left over.
fn framed(data: &[u8]) -> bool {
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let rest = data.get(at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..end], at + end + 2))
    };
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<usize>().ok();
    let mut at = 0;
    while at < data.len() {
        if data.get(at) != Some(&b'*') {
            // Inline: one line, which a bare `\n` ends too.
            let Some(end) = data
                .get(at..)
                .and_then(|r| r.iter().position(|&b| b == b'\n'))
            else {
                return false;
            };
            at += end + 1;
            continue;
        }
        let Some((head, next)) = line(at) else {
            return false;
        };
        let Some(n) = number(&head[1..]) else {
            return false;
        };
        at = next;
        for _ in 0..n {
            let Some((bulk, next)) = line(at) else {
                return false;
            };
            let Some(len) = bulk.strip_prefix(b"$").and_then(number) else {
                return false;
            };
            if data.get(next + len..next + len + 2) != Some(b"\r\n") {
                return false;
            }
            at = next + len + 2;
        }
    }
    true
}

/// Whether `data` is whole RESP2/RESP3 replies, nothing left over.
fn replies_framed(data: &[u8]) -> bool {
    let mut at = 0;
    while at < data.len() {
        match value(data, at, 0) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// Where the reply starting at `at` ends, if it is whole (`depth` bounds nesting).
fn value(data: &[u8], at: usize, depth: u32) -> Option<usize> {
    if depth > 64 {
        return None;
    }
    let rest = data.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let (kind, line, mut next) = (*rest.first()?, rest.get(1..end)?, at + end + 2);
    // RESP lines hold no CR or LF of their own (a real server never sends one).
    if line.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        return None;
    }
    let count = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
        b'$' | b'!' | b'=' => match count()? {
            -1 => Some(next),
            n if n >= 0 => {
                let n = usize::try_from(n).ok()?;
                (data.get(next + n..next + n + 2)? == b"\r\n").then_some(next + n + 2)
            }
            _ => None,
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = count()?;
            if n == -1 && kind == b'*' {
                return Some(next);
            }
            let n = u64::try_from(n).ok()? * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            for _ in 0..n {
                next = value(data, next, depth + 1)?;
            }
            // An attribute is followed by the reply it annotates.
            if kind == b'|' {
                next = value(data, next, depth + 1)?;
            }
            Some(next)
        }
        _ => None,
    }
}

fn reply() -> ErrorReply {
    ErrorReply {
        code: None,
        errno: None,
        message: "READONLY m".into(),
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
            Resp::client()
        } else {
            Resp::server()
        }
    };
    let whole = steps(&mut new(), rest, rest.len().max(1));
    let chunked = steps(&mut new(), rest, size);
    assert_eq!(whole, chunked);
    assert!(whole.iter().filter(|s| *s == "Unreadable").count() <= 1);

    // Withheld: at most an inline command (64 KiB) or a command's first 4 KiB of text with
    // its framing.
    common::check_rewriting(
        rest,
        size,
        *side,
        &reply(),
        64 * 1024 + 4096 * 8,
        &framed,
        &|| AnySession::Redis(Session::new()),
    );
    // The server's replies to a client stream, when the input holds both.
    common::check_skipping(&|| AnySession::Redis(Session::new()), rest, size);
    common::check_replies(rest, size, &reply(), 0, &replies_framed, &|| {
        AnySession::Redis(Session::new())
    });
});
