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
