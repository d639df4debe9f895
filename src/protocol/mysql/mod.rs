//! MySQL and MariaDB (the client/server protocol, `CLIENT_PROTOCOL_41`), as it passes through
//! the filter: [`session`] frames the packets of both directions, follows the connection phase
//! and pairs each command with its response (what gets counted and timed), and rewrites them
//! for rules.

mod packet;
pub mod session;
mod stand_in;
mod tracker;
#[cfg(test)]
mod wire_bytes;

/// What a MySQL/MariaDB error undoes, by errno, as InnoDB does it: `true` for the whole
/// transaction, `false` for the failed statement only. Errnos not listed undo the statement.
/// A rule's `error.rollback` overrides it.
pub const ROLLBACK_TABLE: [(u16, bool, &str); 2] = [
    // ER_LOCK_DEADLOCK: the victim's whole transaction is rolled back ("try restarting
    // transaction"); drivers and ORMs retry it from the start.
    (1213, true, "deadlock: the whole transaction"),
    // ER_LOCK_WAIT_TIMEOUT: only the statement, unless the server runs with
    // innodb_rollback_on_timeout.
    (1205, false, "lock wait timeout: the statement only"),
];

/// Whether an error with `errno` rolls back the whole transaction (see [`ROLLBACK_TABLE`]).
pub fn rolls_back(errno: u16) -> bool {
    ROLLBACK_TABLE
        .iter()
        .find(|(e, ..)| *e == errno)
        .is_some_and(|(_, whole, _)| *whole)
}

/// Whether a server's first bytes are a MySQL greeting: a packet with sequence id 0 whose
/// payload is a protocol-10 handshake (or the ERR a server sends instead, as at its connection
/// limit).
pub fn greets(first: &[u8]) -> bool {
    match first {
        [l0, l1, l2, 0, kind, ..] => {
            let len = usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16;
            (*kind == 0x0a && (20..=1024).contains(&len))
                || (*kind == 0xff && (3..=1024).contains(&len))
        }
        _ => false,
    }
}
