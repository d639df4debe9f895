//! One event's rewriting, message by message: what happens to each message's bytes (kept,
//! replaced, the rest of it dropped as it arrives, or the stream ended) as the readers report
//! them.

use super::reader::Step;
use crate::protocol::{Edit, Output, Splice};

/// Where a reported message lies: its start in the chunk (negative: it began in an earlier
/// one and that part is withheld), its body length, the bytes read of it, its type.
#[derive(Clone, Copy)]
pub(super) struct Reported {
    start: isize,
    len: u32,
    head: usize,
    tag: u8,
}

impl Reported {
    pub(super) fn of(step: &Step<'_>) -> Option<Reported> {
        match step {
            Step::Message(m) => Some(Reported {
                start: m.at as isize - m.head as isize,
                len: m.len,
                head: m.head,
                tag: m.tag,
            }),
            _ => None,
        }
    }
}

/// Carries out, on one event's output, what happens to each message as it is read.
pub(super) struct Place<'a, 'b> {
    pub(super) output: &'a mut Output<'b>,
    /// The withheld start of the message being read, from earlier events.
    pub(super) carry: &'a mut Vec<u8>,
    pub(super) splice: &'a mut Splice,
    /// Server → client: a message that ends the stream ends the connection (on the client
    /// side, a fatal statement's connection ends when its answer has reached the client).
    pub(super) server: bool,
    pub(super) closes: bool,
}

impl Place<'_, '_> {
    pub(super) fn edit(&mut self, edit: Option<Edit>, reported: Option<Reported>) {
        let Some(edit) = edit else {
            // Kept: withheld bytes of this message go out first.
            if !self.carry.is_empty() {
                let carry = std::mem::take(self.carry);
                self.output.insert(&carry);
            }
            return;
        };
        let Some(r) = reported else {
            return;
        };
        let chunk_len = self.output.chunk.len();
        let header = if r.tag == 0 { 8 } else { 5 };
        let at = usize::try_from(r.start + r.head as isize).unwrap_or(0);
        self.output.copy_to(usize::try_from(r.start).unwrap_or(0));
        self.carry.clear();
        let ends = matches!(edit, Edit::ReplaceThenEnd(_) | Edit::End);
        self.closes |= matches!(edit, Edit::End) || (ends && self.server);
        if let Edit::Replace(bytes) | Edit::ReplaceThenEnd(bytes) = edit {
            self.output.insert(&bytes);
            // The rest of the replaced message (its body beyond what was read) is discarded,
            // here and as it arrives.
            let rest = u64::from(r.len).saturating_sub(r.head.saturating_sub(header) as u64);
            let here = chunk_len.saturating_sub(at) as u64;
            let now_dropped = rest.min(here);
            self.output.drop_to(at + now_dropped as usize);
            self.splice.drop_left = rest - now_dropped;
        }
        if ends {
            self.splice.ended = true;
            self.output.drop_to(chunk_len);
        }
    }
}
