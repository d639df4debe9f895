//! What the protocol fuzz targets share: rules that act on requests by their text, and a
//! client stream passed through a session's rewriting.

use dbfault::flow::Direction;
use dbfault::protocol::access;
use dbfault::protocol::{Act, Ask, ErrorReply, Event, Judge, Session, Verdict, With};

/// Acts on requests by their text (and runs the read-only classifiers on it): `!` fails them
/// with `reply`, `~` fatally, `^` aborts, `@` delays, `?` answers as a cache miss (Redis).
pub fn judge(ask: Ask<'_>, reply: &ErrorReply) -> Option<Act> {
    let Ask::Statement { text, .. } = ask else {
        return None;
    };
    // The read-only classifiers read every statement the targets produce (no panic; a
    // PostgreSQL write is always named).
    if let Some(write) = access::postgres(text) {
        assert!(!write.command.is_empty() && write.command.is_ascii(), "{write:?}");
    }
    let _ = access::mysql(text);
    if text.contains(&b'!') {
        Some(Act::Error(reply.clone()))
    } else if text.contains(&b'~') {
        Some(Act::Error(ErrorReply {
            fatal: true,
            ..reply.clone()
        }))
    } else if text.contains(&b'^') {
        Some(Act::Abort)
    } else if text.contains(&b'@') {
        Some(Act::Delay(5))
    } else if text.contains(&b'?') {
        Some(Act::Miss)
    } else {
        None
    }
}

/// A session's rewriting of one chunk at time `now` under `judge`, as every check calls it.
fn rewrite(
    session: &mut Session,
    dir: Direction,
    chunk: &[u8],
    now: u64,
    judge: &mut Judge<'_>,
) -> Verdict {
    session.rewrite(
        dir,
        chunk,
        &mut With {
            now: &mut || now,
            event: &mut |_| {},
            judge: Some(judge),
        },
    )
}

/// The stream `data` in `dir`, in chunks of `size`, as it leaves `session`'s rewriting.
fn stream(
    session: &mut Session,
    dir: Direction,
    data: &[u8],
    size: usize,
    judge: &mut Judge<'_>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        let v = rewrite(session, dir, chunk, 0, judge);
        out.extend(v.replace.unwrap_or_else(|| chunk.to_vec()));
    }
    out
}

/// The client stream `data` in chunks of `size` as it leaves a new session's rewriting, under
/// rules that act (`acting`) or never do.
fn rewritten(
    data: &[u8],
    size: usize,
    acting: bool,
    reply: &ErrorReply,
    new: &dyn Fn() -> Session,
) -> Vec<u8> {
    let mut never = |_: Ask<'_>| None;
    let mut acts = |ask: Ask<'_>| judge(ask, reply);
    let j: &mut Judge<'_> = if acting { &mut acts } else { &mut never };
    stream(&mut new(), Direction::ToDatabase, data, size, j)
}

/// What every protocol session's rewriting must do with arbitrary bytes `data` in chunks of
/// `size`: a client stream comes out the same however it is chunked under rules that act, and
/// when it went in as whole, well-framed messages (`framed`, the fuzz target's own framing,
/// not the crate's) it comes out as whole, well-framed messages; untouched when none acts, but
/// for at most `withheld` bytes not out yet at its end (an unfinished request); and with both
/// directions alternating (`side` picks the first) under acting rules, it never panics.
#[allow(clippy::too_many_arguments)]
pub fn check_rewriting(
    data: &[u8],
    size: usize,
    side: u8,
    reply: &ErrorReply,
    withheld: usize,
    framed: &dyn Fn(&[u8]) -> bool,
    new: &dyn Fn() -> Session,
) {
    let whole = rewritten(data, data.len().max(1), true, reply, new);
    assert_eq!(whole, rewritten(data, size, true, reply, new));
    if framed(data) {
        assert!(framed(&whole), "a well-framed stream came out ill-framed");
    }
    let untouched = rewritten(data, size, false, reply, new);
    assert!(data.starts_with(&untouched));
    assert!(data.len() - untouched.len() <= withheld);
    let mut session = new();
    let mut acts = |ask: Ask<'_>| judge(ask, reply);
    for (i, chunk) in data.chunks(size).enumerate() {
        let _ = rewrite(&mut session, direction(i, side), chunk, i as u64, &mut acts);
    }
}

/// What splits an input into a client stream and the server's replies to it.
pub const SERVER: &[u8] = b"\xffdbfault-server\xff";

/// The server stream `server`, in chunks of `size`, as it leaves a session that has rewritten
/// the client stream `client` (whole) under rules that act (`acting`) or never do.
#[allow(clippy::too_many_arguments)]
fn replies(
    client: &[u8],
    server: &[u8],
    size: usize,
    acting: bool,
    reply: &ErrorReply,
    new: &dyn Fn() -> Session,
) -> Vec<u8> {
    let mut session = new();
    let mut never = |_: Ask<'_>| None;
    let mut acts = |ask: Ask<'_>| judge(ask, reply);
    let j: &mut Judge<'_> = if acting { &mut acts } else { &mut never };
    let _ = rewrite(&mut session, Direction::ToDatabase, client, 0, j);
    stream(&mut session, Direction::ToClient, server, size, j)
}

/// What every protocol session's rewriting must do with the server's replies, for an input
/// `client`, [`SERVER`], `server` (skipped without the marker): under rules that act on the
/// client's requests, the replies come out the same however they are chunked, and when they
/// went in as whole, well-framed messages (`framed`, the target's own server framing) they
/// come out as whole, well-framed messages — the injected errors are what clients read; when
/// no rule acts, untouched but for at most `withheld` bytes not out yet at the end.
#[allow(clippy::too_many_arguments)]
pub fn check_replies(
    data: &[u8],
    size: usize,
    reply: &ErrorReply,
    withheld: usize,
    framed: &dyn Fn(&[u8]) -> bool,
    new: &dyn Fn() -> Session,
) {
    let Some(at) = data.windows(SERVER.len()).position(|w| w == SERVER) else {
        return;
    };
    let (client, server) = (&data[..at], &data[at + SERVER.len()..]);
    let whole = replies(client, server, server.len().max(1), true, reply, new);
    assert_eq!(whole, replies(client, server, size, true, reply, new));
    if framed(server) {
        assert!(framed(&whole), "well-framed replies came out ill-framed");
    }
    let untouched = replies(client, server, size, false, reply, new);
    assert!(server.starts_with(&untouched));
    assert!(server.len() - untouched.len() <= withheld);
}

/// The direction of the `i`th chunk when both alternate (`side` picks the first).
fn direction(i: usize, side: u8) -> Direction {
    if (i + usize::from(side)).is_multiple_of(2) {
        Direction::ToDatabase
    } else {
        Direction::ToClient
    }
}

/// The events of a read-only session (`new`) over the input's client stream and (after
/// [`SERVER`]) the server's replies, fed in chunks of `size`; with `skipping`, as the filter
/// feeds a large event: whatever the session says it can skip is passed over unread, and the
/// rest fed `size` bytes at a time.
fn read_events(new: &dyn Fn() -> Session, data: &[u8], size: usize, skipping: bool) -> Vec<String> {
    let mut session = new();
    let at = data.windows(SERVER.len()).position(|w| w == SERVER);
    let (client, server) = match at {
        Some(at) => (&data[..at], &data[at + SERVER.len()..]),
        None => (data, &[][..]),
    };
    let mut events = Vec::new();
    for (dir, stream) in [
        (Direction::ToDatabase, client),
        (Direction::ToClient, server),
    ] {
        // Skipping: events of 4 pieces, so that skips also start inside an event.
        for chunk in stream.chunks(if skipping { size * 4 } else { size }) {
            let mut event = |e: Event| events.push(format!("{e:?}"));
            let mut cb = With {
                now: &mut || 0,
                event: &mut event,
                judge: None,
            };
            let mut at = 0;
            while at < chunk.len() {
                let skip = if skipping {
                    session.skippable(dir).min(chunk.len() - at)
                } else {
                    0
                };
                if skip > 0 {
                    session.skip(dir, skip, &mut cb);
                    at += skip;
                    continue;
                }
                let take = if skipping { size } else { chunk.len() - at }.min(chunk.len() - at);
                session.on_data(dir, &chunk[at..at + take], &mut cb);
                at += take;
            }
        }
    }
    events
}

/// Skipping what a session says it can skip changes nothing it reports.
pub fn check_skipping(new: &dyn Fn() -> Session, data: &[u8], size: usize) {
    assert_eq!(
        read_events(new, data, data.len().max(1), false),
        read_events(new, data, size, true)
    );
}
