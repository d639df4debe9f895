//! MySQL and MariaDB (the client/server protocol, `CLIENT_PROTOCOL_41`), as it passes through
//! the filter: [`session`] frames the packets of both directions, follows the connection phase
//! and pairs each command with its response (what gets counted and timed), and rewrites them
//! for rules.

pub mod session;

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
