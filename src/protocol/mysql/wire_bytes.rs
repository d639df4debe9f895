//! MySQL protocol payloads as servers and clients write them, for the unit tests and the
//! native cost examples (which include this file): framing is the caller's.

/// A MariaDB 11.8 server greeting (protocol 10, `mysql_native_password`).
pub fn greeting_payload() -> Vec<u8> {
    let mut g = vec![0x0a];
    g.extend_from_slice(b"11.8.3-MariaDB\0");
    g.extend_from_slice(&[1, 0, 0, 0]);
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&[
        0xff, 0xf7, 8, 2, 0, 0xff, 0x81, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    g
}

/// The client's handshake response with capability flags `caps`, user `root`.
pub fn handshake_payload(caps: u32) -> Vec<u8> {
    let mut h = caps.to_le_bytes().to_vec();
    h.extend_from_slice(&[0, 0, 0, 1, 33]);
    h.extend_from_slice(&[0; 23]);
    h.extend_from_slice(b"root\0\0");
    h
}
