//! What the protocol fuzz targets share: rules that act on requests by their text, and a
//! client stream passed through a session's rewriting.

use dbfault::fault::Direction;
use dbfault::protocol::{Act, Ask, ErrorReply, Judge, Verdict};

/// Acts on requests by their text: `!` fails them with `reply`, `~` fatally, `^` aborts, `@`
/// delays.
pub fn judge(ask: Ask<'_>, reply: &ErrorReply) -> Option<Act> {
    let Ask::Statement { text, .. } = ask else {
        return None;
    };
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
    } else {
        None
    }
}

/// The client stream `data` in chunks of `size` as it leaves `rewrite` (a session's), under
/// rules that act (`acting`) or never do.
pub fn rewritten(
    data: &[u8],
    size: usize,
    acting: bool,
    reply: &ErrorReply,
    rewrite: &mut dyn FnMut(&[u8], &mut Judge<'_>) -> Verdict,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut never = |_: Ask<'_>| None;
    let mut acts = |ask: Ask<'_>| judge(ask, reply);
    for chunk in data.chunks(size) {
        let j: &mut Judge<'_> = if acting { &mut acts } else { &mut never };
        let v = rewrite(chunk, j);
        out.extend(v.replace.unwrap_or_else(|| chunk.to_vec()));
    }
    out
}

/// The direction of the `i`th chunk when both alternate (`side` picks the first).
pub fn direction(i: usize, side: u8) -> Direction {
    if (i + usize::from(side)) % 2 == 0 {
        Direction::ToDatabase
    } else {
        Direction::ToClient
    }
}
