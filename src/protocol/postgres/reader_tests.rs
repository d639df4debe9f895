//! Unit tests of `reader.rs`.

use super::super::wire_bytes::{msg, startup};
use super::*;

fn untagged(code: u32) -> Vec<u8> {
    let mut out = 8u32.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// Everything `reader` reports for `bytes` fed in chunks of `size`, as owned values.
fn read_all(reader: &mut Reader, bytes: &[u8], size: usize) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(size.max(1)) {
        reader.read(chunk, &mut |s| {
            out.push(match s {
                Step::Opened(o) => format!("opened {o:?}"),
                Step::Encryption(e) => format!("encryption {e}"),
                Step::Message(m) => format!(
                    "{} {} {:?}{}",
                    m.tag as char,
                    m.len,
                    String::from_utf8_lossy(m.body),
                    if m.truncated { " truncated" } else { "" }
                ),
                Step::Unreadable => "unreadable".into(),
            })
        });
    }
    out
}

#[test]
fn a_client_session_in_every_chunking() {
    let mut bytes = startup();
    bytes.extend(msg(b'Q', b"SELECT 1; SELECT 2\0"));
    bytes.extend(msg(b'P', b"s1\0INSERT INTO plants VALUES ($1)\0\0\0"));
    bytes.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
    bytes.extend(msg(b'E', b"\0\0\0\0\0"));
    bytes.extend(msg(b'S', b""));
    bytes.extend(msg(b'd', &[7u8; 300]));
    bytes.extend(msg(b'X', b""));
    let whole = read_all(&mut Reader::client(), &bytes, bytes.len());
    assert_eq!(whole.len(), 9, "{whole:?}");
    assert_eq!(whole[0], "opened Startup { minor: 0 }");
    assert!(whole[2].starts_with("Q 19 \"SELECT 1; SELECT 2"));
    assert_eq!(whole[7], "d 300 \"\"", "CopyData is counted past, not kept");
    for size in [1, 2, 3, 5, 7, 64] {
        assert_eq!(
            read_all(&mut Reader::client(), &bytes, size),
            whole,
            "chunks of {size}"
        );
    }
}

#[test]
fn uncaptured_bodies_can_be_skipped_unseen() {
    let mut bytes = msg(b'D', &[9u8; 1000]);
    bytes.extend(msg(b'C', b"SELECT 1\0"));
    let mut reader = Reader::server();
    let mut seen = Vec::new();
    let mut rest: &[u8] = &bytes;
    while !rest.is_empty() {
        let skip = reader.skippable().min(rest.len());
        if skip > 0 {
            reader.skip(skip);
            rest = &rest[skip..];
        } else {
            let n = 7.min(rest.len());
            reader.read(&rest[..n], &mut |s| seen.push(format!("{s:?}")));
            rest = &rest[n..];
        }
    }
    let whole = read_all(&mut Reader::server(), &bytes, bytes.len());
    assert_eq!(seen.len(), 2);
    assert!(seen[0].contains("tag: 68, len: 1000"), "{seen:?}");
    assert_eq!(whole.len(), 2);
}

#[test]
fn server_tags_include_digits() {
    // ParseComplete, BindComplete, CloseComplete (found by the real-client test: the Rust
    // postgres crate's extended protocol).
    let mut bytes = msg(b'1', b"");
    bytes.extend(msg(b'2', b""));
    bytes.extend(msg(b'3', b""));
    bytes.extend(msg(b'Z', b"I"));
    assert_eq!(
        read_all(&mut Reader::server(), &bytes, 2),
        ["1 0 \"\"", "2 0 \"\"", "3 0 \"\"", "Z 1 \"\""]
    );
}

#[test]
fn encryption_requests_and_their_answers() {
    // Answered N: the client then starts in plaintext.
    let mut client = Reader::client();
    assert_eq!(
        read_all(&mut client, &untagged(SSL_REQUEST), 3),
        ["opened EncryptionRequest"]
    );
    let mut server = Reader::server();
    server.expect_encryption_answer();
    assert_eq!(read_all(&mut server, b"N", 1), ["encryption false"]);
    client.expect_opening();
    assert_eq!(
        read_all(&mut client, &startup(), 4)[0],
        "opened Startup { minor: 0 }"
    );
    assert!(client.reading() && server.reading());
    // Answered S: nothing more is read.
    let mut server = Reader::server();
    server.expect_encryption_answer();
    assert_eq!(
        read_all(&mut server, b"S\x16\x03\x01", 4),
        ["encryption true"]
    );
    assert!(!server.reading());
    // GSSENC, answered G.
    let mut client = Reader::client();
    assert_eq!(
        read_all(&mut client, &untagged(GSSENC_REQUEST), 8),
        ["opened EncryptionRequest"]
    );
}

#[test]
fn a_cancel_request_is_not_a_session() {
    let mut bytes = 16u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut client = Reader::client();
    assert_eq!(read_all(&mut client, &bytes, 5), ["opened Cancel"]);
    assert!(!client.reading());
}

#[test]
fn other_protocols_are_unreadable_once() {
    for bytes in [
        b"*1\r\n$4\r\nPING\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        untagged(0x0002_0000), // protocol 2.0
    ] {
        let mut client = Reader::client();
        assert_eq!(
            read_all(&mut client, &bytes, 3),
            ["unreadable"],
            "{bytes:?}"
        );
        assert!(!client.reading());
    }
    let mut server = Reader::server();
    assert_eq!(
        read_all(&mut server, b"\x00\x00\x00\x00\x05", 2),
        ["unreadable"]
    );
}

#[test]
fn long_statements_are_captured_up_to_the_limit() {
    let text = vec![b'x'; 1 << 20];
    let mut body = text.clone();
    body.push(0);
    let mut reader = Reader::server();
    reader.dir = Direction::ToDatabase;
    let mut got = Vec::new();
    for chunk in msg(b'Q', &body).chunks(1000) {
        reader.read(chunk, &mut |s| {
            if let Step::Message(m) = s {
                got.push((m.len, m.body.len(), m.truncated));
            }
        });
    }
    assert_eq!(got, [((1 << 20) + 1, CAPTURE_LIMIT, true)]);
    assert!(reader.capture.capacity() <= 2 * CAPTURE_LIMIT);
}

#[test]
fn openings_are_recognised_from_the_first_bytes() {
    assert!(opens_connection(&startup()));
    assert!(opens_connection(&untagged(SSL_REQUEST)));
    assert!(opens_connection(&untagged(GSSENC_REQUEST)));
    assert!(
        !opens_connection(&untagged(CANCEL_REQUEST)),
        "a cancel request is 16 bytes"
    );
    assert!(!opens_connection(b"*1\r\n$4\r\nPING\r\n"));
    assert!(!opens_connection(&[0x16, 3, 1, 0, 200, 1, 0, 0, 196]));
    assert!(!opens_connection(&startup()[..7]));
}

#[test]
fn error_fields_and_statement_text() {
    let error = b"SERROR\0VERROR\0C40001\0Mcould not serialize\0\0";
    assert_eq!(sqlstate(error), Some(&b"40001"[..]));
    assert_eq!(sqlstate(b"SERROR\0\0"), None);
    assert_eq!(sqlstate(b"SERR"), None);
    assert_eq!(statement_text(b'Q', b"SELECT 1\0"), b"SELECT 1");
    assert_eq!(statement_text(b'P', b"s1\0INSERT 1\0\0\0"), b"INSERT 1");
    assert_eq!(statement_text(b'P', b"s1"), b"");
    assert_eq!(statement_text(b'Q', b"SELECT trunc"), b"SELECT trunc");
}
