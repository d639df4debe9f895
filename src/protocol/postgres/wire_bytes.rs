//! PostgreSQL protocol bytes as clients and servers write them, for the unit tests (the
//! session's and the filter's).

/// A tagged message.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A protocol 3.0 StartupMessage.
pub fn startup() -> Vec<u8> {
    startup_version(0)
}

/// A protocol 3.`minor` StartupMessage.
pub fn startup_version(minor: u16) -> Vec<u8> {
    let params = b"user\0postgres\0database\0postgres\0\0";
    let mut out = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&(3u32 << 16 | u32::from(minor)).to_be_bytes());
    out.extend_from_slice(params);
    out
}

/// A simple Query.
pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

/// The server's answer to a startup: authenticated, ready (idle).
pub fn hello() -> Vec<u8> {
    [msg(b'R', &[0; 4]), msg(b'Z', b"I")].concat()
}

/// An ErrorResponse with SQLSTATE `code`.
pub fn error(code: &str) -> Vec<u8> {
    msg(b'E', format!("SERROR\0C{code}\0Mboom\0\0").as_bytes())
}

/// A CommandComplete.
pub fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', format!("{tag}\0").as_bytes())
}

/// A ReadyForQuery with transaction `status`.
pub fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// A server's NegotiateProtocolVersion: its newest minor version, no unknown options.
pub fn negotiate(minor: u32) -> Vec<u8> {
    msg(b'v', &[minor.to_be_bytes(), 0u32.to_be_bytes()].concat())
}

/// BackendKeyData with a `key_len`-byte key (4 in 3.0, up to 256 in 3.2).
pub fn key_data(key_len: usize) -> Vec<u8> {
    msg(
        b'K',
        &[&7u32.to_be_bytes()[..], &vec![0xab; key_len]].concat(),
    )
}

/// An ErrorResponse with its severity, SQLSTATE and message.
pub fn error_with(code: &str, message: &str, severity: &str) -> Vec<u8> {
    msg(
        b'E',
        format!("S{severity}\0V{severity}\0C{code}\0M{message}\0\0").as_bytes(),
    )
}
