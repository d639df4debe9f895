//! What dbfault writes in a MySQL session for a rule's error: the command that stands in for
//! the acted-on one (the server refuses it without running anything, or rolls the transaction
//! back as the real error would), and the ERR that takes the server's answer's place.

use super::packet::{err_packet, packet, COM_QUERY};
use crate::protocol::Callbacks;
use crate::protocol::{Code, Edit, ErrorReply, Event};

/// The query that stands in for an acted-on statement after the statements `before` it: one
/// that makes the server refuse it, or, for an error that rolls back the whole transaction, a
/// `ROLLBACK` that leaves no transaction open (whatever `completion_type` says). Both carry the
/// marker `dbfault_injected_<errno>`.
pub(super) fn stand_in(before: &[u8], reply: &ErrorReply) -> Vec<u8> {
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(before);
    if before.last().is_some_and(|b| !b.is_ascii_whitespace()) {
        q.push(b' ');
    }
    let errno = reply_errno(reply).to_string();
    if rolls_back(reply) {
        q.extend_from_slice(b"ROLLBACK AND NO CHAIN NO RELEASE /* dbfault_injected_");
        q.extend_from_slice(errno.as_bytes());
        q.extend_from_slice(b" */");
    } else {
        q.extend_from_slice(b"dbfault_injected_");
        q.extend_from_slice(errno.as_bytes());
    }
    packet(0, &q)
}

/// The rule's ERR in place of the server's answer (sequence id `seq`), and the session's end
/// after it when the error is fatal.
pub(super) fn injected_err(seq: u8, reply: &ErrorReply, cb: &mut dyn Callbacks) -> Edit {
    cb.event(Event::Error(Code::class(class_of(reply))));
    Edit::for_error(reply, err_packet(seq, reply, reply_errno(reply)))
}

/// Whether the rule's error rolls back the whole transaction.
pub(super) fn rolls_back(reply: &ErrorReply) -> bool {
    reply
        .rollback
        .unwrap_or_else(|| super::rolls_back(reply_errno(reply)))
}

pub(super) fn reply_errno(reply: &ErrorReply) -> u16 {
    reply.errno.unwrap_or(1105)
}

pub(super) fn class_of(reply: &ErrorReply) -> [u8; 2] {
    let code = reply.code.unwrap_or(*b"HY000");
    [code[0], code[1]]
}
