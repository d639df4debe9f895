//! The PostgreSQL wire reader on real sessions: psql (simple protocol, an SSLRequest answered
//! `N`, COPY both ways, an error) and the Rust `postgres` crate (extended protocol, named
//! prepared statements) talk to a real PostgreSQL 15 through a recording relay; the recorded
//! bytes are then read back in several chunkings and must give the statements the clients sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault::flow::Direction;
use dbfault::protocol::postgres::session::{Event, Session};
use dbfault::protocol::postgres::{sqlstate, statement_text, Opening, Reader, Step};
use dbfault::protocol::Protocol;
use dbfault::protocol::With;
use dbfault_testkit::postgres::{psql, psql_try, Postgres};
use dbfault_testkit::{core::wait_for, pg_url};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the session layer counted for one connection: requests by command, answers, error
/// classes, and the connection's kind.
type Counted = (Vec<&'static str>, usize, Vec<String>, Option<Protocol>);

/// Bytes of each connection through the relay: (client → server, server → client).
type Recording = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// A TCP relay on a free port in front of `upstream` that records every connection.
fn relay(upstream: u16) -> (u16, Recording) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let recording: Recording = Arc::default();
    let rec = Arc::clone(&recording);
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let slot = {
                let mut all = rec.lock().unwrap();
                all.push((Vec::new(), Vec::new()));
                all.len() - 1
            };
            let pump = |mut from: TcpStream, mut to: TcpStream, rec: Recording, up: bool| {
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let mut all = rec.lock().unwrap();
                                let entry = &mut all[slot];
                                let side = if up { &mut entry.0 } else { &mut entry.1 };
                                side.extend_from_slice(&buf[..n]);
                                drop(all);
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                })
            };
            let a = pump(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Arc::clone(&rec),
                true,
            );
            let b = pump(server, client, Arc::clone(&rec), false);
            thread::spawn(move || {
                let _ = a.join();
                let _ = b.join();
            });
        }
    });
    (port, recording)
}

/// What the reader makes of one recorded connection, each direction read `size` bytes at a
/// time. (The client direction is read first: the server only answers an SSLRequest after it,
/// and the recording keeps no timing to interleave the two by.)
#[derive(Debug, Default, PartialEq)]
struct Seen {
    opening: Vec<Opening>,
    encryption: Vec<bool>,
    /// Client messages: tag and statement text (for Q and P).
    client: Vec<(char, String)>,
    /// Server messages' tags, and the SQLSTATEs of ErrorResponses.
    server: Vec<char>,
    errors: Vec<String>,
    unreadable: bool,
}

fn read_back(up: &[u8], down: &[u8], size: usize) -> Seen {
    let (mut client, mut server) = (Reader::client(), Reader::server());
    let mut seen = Seen::default();
    for chunk in up.chunks(size) {
        client.read(chunk, &mut |s| match s {
            Step::Opened(o) => seen.opening.push(o),
            Step::Message(m) => seen.client.push((
                m.tag as char,
                String::from_utf8_lossy(statement_text(m.tag, m.body)).into_owned(),
            )),
            Step::Unreadable => seen.unreadable = true,
            Step::Encryption(_) => unreachable!(),
        });
    }
    if seen.opening.first() == Some(&Opening::EncryptionRequest) {
        server.expect_encryption_answer();
    }
    for chunk in down.chunks(size) {
        server.read(chunk, &mut |s| match s {
            Step::Encryption(e) => seen.encryption.push(e),
            Step::Message(m) => {
                seen.server.push(m.tag as char);
                if m.tag == b'E' {
                    let code = sqlstate(m.body).unwrap_or_default();
                    seen.errors.push(String::from_utf8_lossy(code).into_owned());
                }
            }
            Step::Unreadable => seen.unreadable = true,
            Step::Opened(_) => unreachable!(),
        });
    }
    seen
}

#[test]
fn real_sessions_read_back_in_any_chunking() {
    let pg = Postgres::start();
    let (port, recording) = relay(pg.port);
    psql(port, "CREATE TABLE plants (id int, name text)");
    psql(
        port,
        "INSERT INTO plants VALUES (1, 'fern'); SELECT count(*) FROM plants",
    );
    let (ok, err) = psql_try(port, "SELECT 1/0");
    assert!(!ok && err.contains("division by zero"), "{err}");
    psql(port, "\\copy plants TO '/dev/null'");
    let rows: String = (0..2000).map(|i| format!("{i}\tplant {i}\n")).collect();
    let copy_in = dbfault_testkit::output_with_input(
        std::process::Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string())
            .args(["-c", "\\copy plants FROM STDIN"]),
        rows.as_bytes(),
    );
    assert!(copy_in.status.success(), "{copy_in:?}");
    {
        let url = pg_url(port);
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let insert = client
            .prepare("INSERT INTO plants VALUES ($1, $2)")
            .unwrap();
        for i in 0..3 {
            client.execute(&insert, &[&i, &"rose"]).unwrap();
        }
        let n: i64 = client
            .query_one("SELECT count(*) FROM plants WHERE name = $1", &[&"rose"])
            .unwrap()
            .get(0);
        assert_eq!(n, 3);
    }
    let count = psql(port, "SELECT count(*) FROM plants");
    assert!(count.lines().any(|l| l.trim() == "2004"), "{count}");
    // The clients have their answers (the relay records before it forwards); their closing
    // Terminate may still be on its way through the relay.
    let terminate = b"X\0\0\0\x04";
    let sessions = wait_for("every session to end", Duration::from_secs(10), || {
        let all = recording.lock().unwrap().clone();
        all.iter()
            .all(|(up, _)| up.ends_with(terminate))
            .then_some(all)
    });
    assert_eq!(sessions.len(), 7, "one recorded connection per client");

    for (i, (up, down)) in sessions.iter().enumerate() {
        let whole = read_back(up, down, usize::MAX);
        assert!(!whole.unreadable, "session {i}: {whole:?}");
        for size in [1, 3, 17, 512] {
            assert_eq!(
                read_back(up, down, size),
                whole,
                "session {i}, chunks of {size}"
            );
        }
        // Whole sessions: the server's last message is ReadyForQuery, the client's Terminate.
        assert_eq!(whole.server.last(), Some(&'Z'), "session {i}");
        assert_eq!(
            whole.client.last().map(|(t, _)| *t),
            Some('X'),
            "session {i}"
        );
    }
    let all: Vec<Seen> = sessions
        .iter()
        .map(|(up, down)| read_back(up, down, usize::MAX))
        .collect();
    // psql asks for TLS first (sslmode=prefer); the server answers N and the session goes on.
    assert_eq!(
        all[0].opening,
        [Opening::EncryptionRequest, Opening::Startup { minor: 0 }]
    );
    assert_eq!(all[0].encryption, [false]);
    let queries = |s: &Seen| -> Vec<String> {
        s.client
            .iter()
            .filter(|(t, _)| *t == 'Q')
            .map(|(_, q)| q.clone())
            .collect()
    };
    assert_eq!(
        queries(&all[0]),
        ["CREATE TABLE plants (id int, name text)"]
    );
    assert_eq!(
        queries(&all[1]),
        ["INSERT INTO plants VALUES (1, 'fern'); SELECT count(*) FROM plants"]
    );
    assert_eq!(all[2].errors, ["22012"], "division by zero");
    // COPY TO: the server's CopyOutResponse and CopyData rows; COPY FROM: the client's rows
    // are CopyData ('d'), never mistaken for queries.
    assert!(all[3].server.contains(&'H') && all[3].server.contains(&'d'));
    assert!(all[4].client.iter().filter(|(t, _)| *t == 'd').count() >= 1);
    let copy_from: Vec<String> = queries(&all[4])
        .iter()
        .map(|q| q.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        copy_from,
        ["COPY plants FROM STDIN"],
        "psql's \\copy as sent"
    );
    // The postgres crate: Parse with the statement text, then Bind/Execute per execution.
    let parses: Vec<&String> = all[5]
        .client
        .iter()
        .filter(|(t, _)| *t == 'P')
        .map(|(_, q)| q)
        .collect();
    assert!(
        parses
            .iter()
            .any(|q| *q == "INSERT INTO plants VALUES ($1, $2)"),
        "{parses:?}"
    );
    assert_eq!(
        all[5].client.iter().filter(|(t, _)| *t == 'E').count(),
        4,
        "3 inserts + 1 select"
    );

    // The session layer over the same bytes (client side first, then the server's answers,
    // which keeps every request before its answer): what would be counted and timed.
    let summary: Vec<Counted> = sessions
        .iter()
        .map(|(up, down)| {
            let mut session = Session::new();
            let (mut requests, mut answered, mut errors) = (Vec::new(), 0, Vec::new());
            for (dir, bytes) in [(Direction::ToDatabase, up), (Direction::ToClient, down)] {
                for chunk in bytes.chunks(700) {
                    let mut event = |e| match e {
                        Event::Request(c) => requests.push(c),
                        Event::Answered { .. } => answered += 1,
                        Event::Error(class) => errors.push(class.label().to_owned()),
                        Event::Recognized(_) => {}
                    };
                    // As the filter does: bytes the session need not see are not read at all.
                    let skip = session.skippable(dir).min(chunk.len());
                    session.skip(
                        dir,
                        skip,
                        &mut With {
                            now: &mut || 0,
                            event: &mut event,
                            judge: None,
                        },
                    );
                    session.on_data(
                        dir,
                        &chunk[skip..],
                        &mut With {
                            now: &mut || 0,
                            event: &mut event,
                            judge: None,
                        },
                    );
                }
            }
            (requests, answered, errors, session.recognized())
        })
        .collect();
    let expect: [(&[&str], usize, &[&str]); 7] = [
        (&["create"], 1, &[]),
        (&["insert", "select"], 2, &[]),
        (&["select"], 1, &["22"]),
        (&["copy"], 1, &[]),
        (&["copy"], 1, &[]),
        (&["insert", "insert", "insert", "select"], 4, &[]),
        (&["select"], 1, &[]),
    ];
    for (i, ((requests, answered, errors, kind), (want_requests, want_answered, want_errors))) in
        summary.iter().zip(expect).enumerate()
    {
        assert_eq!(*kind, Some(Protocol::Postgres), "session {i}");
        assert_eq!(requests.as_slice(), want_requests, "session {i}");
        assert_eq!(*answered, want_answered, "session {i}");
        assert_eq!(errors.as_slice(), want_errors, "session {i}");
    }
}
