//! What dbfault writes in a PostgreSQL session for a rule's error: the message that stands in
//! for the acted-on one (the server fails it without touching data, and so skips the rest of
//! the group and fails an explicit transaction, as a real error does), and the ErrorResponse
//! that takes the provoked error's place.

use crate::protocol::ErrorReply;

/// The SQLSTATE a replaced statement provokes (undefined cursor / portal).
pub(super) const PROVOKED_STATEMENT: [u8; 5] = *b"34000";
/// The SQLSTATE a startup without a user provokes (invalid authorization specification).
pub(super) const PROVOKED_STARTUP: [u8; 5] = *b"28000";

/// A rule's SQLSTATE (validated to be there for PostgreSQL; `XX000`, internal error, if not).
pub(super) fn sqlstate_of(reply: &ErrorReply) -> [u8; 5] {
    reply.code.unwrap_or(*b"XX000")
}

/// An ErrorResponse body: severity, SQLSTATE and message (the fields every client reads).
pub(super) fn error_response(reply: &ErrorReply) -> Vec<u8> {
    let severity: &[u8] = if reply.fatal { b"FATAL" } else { b"ERROR" };
    let message = reply.message.as_bytes();
    let mut body = Vec::with_capacity(32 + message.len());
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', &sqlstate_of(reply)[..]),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value);
        body.push(0);
    }
    body.push(0);
    tagged(b'E', &body)
}

/// A tagged message: type byte, length (counting itself), body.
pub(super) fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The cursor or portal name a replaced statement asks for: it does not exist, and names
/// the injection in the server's log.
pub(super) fn provoking_name(reply: &ErrorReply) -> String {
    let mut name = "dbfault: injected ".to_owned();
    name.push_str(std::str::from_utf8(&sqlstate_of(reply)).unwrap_or("error"));
    name
}

/// A simple Query running `before` (the statements ahead of the failing one, which run as
/// they would have), then failing.
pub(super) fn provoking_query(before: &[u8], reply: &ErrorReply) -> Vec<u8> {
    let mut text = before.to_vec();
    if text.last().is_some_and(|b| !b.is_ascii_whitespace()) {
        text.push(b' ');
    }
    text.extend_from_slice(b"FETCH \"");
    text.extend_from_slice(provoking_name(reply).as_bytes());
    text.extend_from_slice(b"\"\0");
    tagged(b'Q', &text)
}

/// An Execute of a portal that does not exist.
pub(super) fn provoking_execute(reply: &ErrorReply) -> Vec<u8> {
    let mut body = provoking_name(reply).into_bytes();
    body.push(0);
    body.extend_from_slice(&0u32.to_be_bytes());
    tagged(b'E', &body)
}

/// A StartupMessage (protocol 3.0) without a user.
pub(super) fn provoking_startup() -> Vec<u8> {
    let mut out = 9u32.to_be_bytes().to_vec();
    out.extend_from_slice(&196_608u32.to_be_bytes());
    out.push(0);
    out
}
