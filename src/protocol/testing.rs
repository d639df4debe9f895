//! What the protocol sessions' unit tests share: a session driven through its rewriting in
//! chunks of a given size, with what reached each side and its events as text.

use crate::flow::{Close, Direction};
use crate::protocol::With;
use crate::protocol::{Event, Judge, Session};

/// An event as the tests write it: `redis`, `request get`, `done get`, `error READONLY`.
pub fn describe(e: Event) -> String {
    match e {
        Event::Recognized(p) => p.label().to_owned(),
        Event::Request(c) => format!("request {c}"),
        Event::Answered {
            command, failed, ..
        } => {
            format!("{} {command}", if failed { "failed" } else { "done" })
        }
        Event::Error(c) => format!("error {}", c.label()),
    }
}

/// The events, what reached the server and the client, and the first close asked for, when
/// `steps` pass through `session` in chunks of `size` under `judge` (`None`: no rule acts).
pub fn rewrite_all(
    mut session: Session,
    steps: &[(Direction, Vec<u8>)],
    size: usize,
    mut judge: Option<&mut Judge<'_>>,
) -> (Vec<String>, Vec<u8>, Vec<u8>, Option<Close>) {
    let mut events = Vec::new();
    let (mut up, mut down, mut close) = (Vec::new(), Vec::new(), None);
    for (dir, bytes) in steps {
        for chunk in bytes.chunks(size) {
            let v = session.rewrite(
                *dir,
                chunk,
                &mut With {
                    now: &mut || 0,
                    event: &mut |e| events.push(describe(e)),
                    judge: judge.as_deref_mut(),
                },
            );
            let out = v.replace.unwrap_or_else(|| chunk.to_vec());
            match dir {
                Direction::ToDatabase => up.extend(out),
                Direction::ToClient => down.extend(out),
            }
            close = close.or(v.close);
        }
    }
    (events, up, down, close)
}
