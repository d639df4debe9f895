//! Unit tests of `session.rs`.

use super::super::packet::packet;
use super::super::tracker::{CLIENT_DEPRECATE_EOF, COM_PING, COM_STMT_EXECUTE};
use super::super::wire_bytes::{greeting_payload, handshake_payload};
use super::*;
use crate::flow::Close;
use crate::protocol::{Act, Ask, ErrorReply};
use crate::protocol::{Judge, With};
use Direction::{ToClient as Down, ToDatabase as Up};

fn greeting() -> Vec<u8> {
    packet(0, &greeting_payload())
}

fn handshake(caps: u32) -> Vec<u8> {
    packet(1, &handshake_payload(caps))
}

const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

fn query(sql: &str) -> Vec<u8> {
    packet(0, &[&[COM_QUERY][..], sql.as_bytes()].concat())
}

/// A one-column, one-row text result set; `more`: another result follows.
fn result_set(seq0: u8, deprecate: bool, more: bool) -> Vec<u8> {
    let status: u8 = if more { 0x0a } else { 0x02 };
    let mut out = packet(seq0, &[1]);
    out.extend(packet(
        seq0 + 1,
        b"\x03def\0\0\0\x011\0\x0c\x3f\0\x01\0\0\0\x08\x81\0\0\0\0",
    ));
    let mut seq = seq0 + 2;
    if !deprecate {
        out.extend(packet(seq, &[0xfe, 0, 0, 2, 0]));
        seq += 1;
    }
    out.extend(packet(seq, b"\x011"));
    seq += 1;
    if deprecate {
        out.extend(packet(seq, &[0xfe, 0, 0, status, 0, 0, 0]));
    } else {
        out.extend(packet(seq, &[0xfe, 0, 0, status, 0]));
    }
    out
}

fn err(seq: u8, errno: u16, state: &str, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&errno.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(msg.as_bytes());
    packet(seq, &p)
}

use crate::protocol::testing::rewrite_all;

fn run(
    steps: &[(Direction, Vec<u8>)],
    size: usize,
    judge: Option<&mut Judge<'_>>,
) -> (Vec<String>, Vec<u8>, Vec<u8>, Option<Close>) {
    rewrite_all(
        crate::protocol::Session::Mysql(Session::new()),
        steps,
        size,
        judge,
    )
}

#[test]
fn queries_result_sets_multi_results_and_prepared_statements() {
    for deprecate in [false, true] {
        let caps = 0x000a_a205 | if deprecate { CLIENT_DEPRECATE_EOF } else { 0 };
        let mut prepare_ok = vec![0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        prepare_ok.truncate(12);
        let mut prepare_reply = packet(1, &prepare_ok);
        prepare_reply.extend(packet(
            2,
            b"\x03def\0\0\0\x01?\0\x0c\x3f\0\0\0\0\0\xfd\x80\0\0\0\0",
        ));
        if !deprecate {
            prepare_reply.extend(packet(3, &[0xfe, 0, 0, 2, 0]));
        }
        let execute = packet(
            0,
            &[
                COM_STMT_EXECUTE,
                7,
                0,
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                1,
                3,
                0,
                2,
                0,
                0,
                0,
            ],
        );
        let steps = [
            (Down, greeting()),
            (Up, handshake(caps)),
            (Down, packet(2, OK)),
            (Up, query("SELECT 1")),
            (Down, result_set(1, deprecate, false)),
            (Up, query("INSERT INTO t VALUES (1); SELECT 1")),
            (
                Down,
                [
                    packet(1, &[0, 1, 0, 0x0a, 0, 0, 0]),
                    result_set(2, deprecate, false),
                ]
                .concat(),
            ),
            (Up, query("SELECT * FROM nowhere; SELECT 2")),
            (Down, err(1, 1146, "42S02", "Table 'nowhere' doesn't exist")),
            (
                Up,
                packet(
                    0,
                    &[&[COM_STMT_PREPARE][..], b"UPDATE plants SET name = ?"].concat(),
                ),
            ),
            (Down, prepare_reply),
            (Up, execute),
            (Down, packet(1, &[0, 1, 0, 2, 0, 0, 0])),
            (Up, packet(0, &[COM_PING])),
            (Down, packet(1, OK)),
        ];
        for size in [1, 5, 1000] {
            let (events, up, down, _) = run(&steps, size, None);
            assert_eq!(
                events,
                [
                    "mysql",
                    "request select",
                    "done select",
                    "request insert",
                    "request select",
                    "done insert",
                    "done select",
                    "request select",
                    "request select",
                    "failed select",
                    "error 42",
                    "request update",
                    "done update",
                    "request ping",
                    "done ping",
                ],
                "deprecate_eof {deprecate}, chunks of {size}"
            );
            let sent: Vec<u8> = steps
                .iter()
                .filter(|(d, _)| *d == Up)
                .flat_map(|(_, b)| b.clone())
                .collect();
            assert_eq!(up, sent, "untouched");
            assert!(!down.is_empty());
        }
    }
}

fn deadlock(fatal: bool, rollback: Option<bool>) -> Act {
    Act::Error(ErrorReply {
        code: Some(*b"40001"),
        errno: Some(1213),
        message: "Deadlock found when trying to get lock; try restarting transaction".into(),
        fatal,
        rollback,
    })
}

/// Rules that answer every statement of `command` with a deadlock (`rollback` as given).
fn deadlocks(command: &'static str, rollback: Option<bool>) -> impl FnMut(Ask<'_>) -> Option<Act> {
    move |ask| match ask {
        Ask::Statement { command: c, .. } if c == command => Some(deadlock(false, rollback)),
        _ => None,
    }
}

fn deadlock_err(seq: u8) -> Vec<u8> {
    err(
        seq,
        1213,
        "40001",
        "Deadlock found when trying to get lock; try restarting transaction",
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn session_start() -> Vec<(Direction, Vec<u8>)> {
    vec![
        (Down, greeting()),
        (Up, handshake(0x000a_a205)),
        (Down, packet(2, OK)),
    ]
}

#[test]
fn an_injected_err_takes_the_statement_s_place() {
    let provoked = err(1, 1064, "42000", "You have an error in your SQL syntax; check the manual near 'dbfault_injected_1213' at line 1");
    for size in [1, 3, 1000] {
        // `rollback: false`: the statement only, provoked by a query that does not parse.
        let mut judge = deadlocks("insert", Some(false));
        let mut steps = session_start();
        steps.extend([
            (Up, query("INSERT INTO plants VALUES (1)")),
            (Down, provoked.clone()),
            (Up, query("SELECT 1")),
            (Down, result_set(1, false, false)),
        ]);
        let (events, up, down, close) = run(&steps, size, Some(&mut judge));
        assert!(
            up.ends_with(&[query("dbfault_injected_1213"), query("SELECT 1")].concat()),
            "chunks of {size}"
        );
        assert!(contains(&down, &deadlock_err(1)), "chunks of {size}");
        assert!(
            events.contains(&"error 40".to_owned()) && events.contains(&"done select".to_owned())
        );
        assert_eq!(close, None);
    }
    // A refused session: the ERR instead of the greeting, then closed.
    let mut refuse = |ask: Ask<'_>| match ask {
        Ask::Startup => Some(Act::Error(ErrorReply {
            code: Some(*b"08004"),
            errno: Some(1040),
            message: "Too many connections".into(),
            fatal: false,
            rollback: None,
        })),
        _ => None,
    };
    let (_, _, down, close) = run(&[(Down, greeting())], 7, Some(&mut refuse));
    assert_eq!(down, err(0, 1040, "08004", "Too many connections"));
    assert!(close.is_some());
}

#[test]
fn a_deadlock_rolls_the_transaction_back_with_a_rollback_whose_ok_becomes_the_err() {
    let standin = "ROLLBACK AND NO CHAIN NO RELEASE /* dbfault_injected_1213 */";
    for size in [1, 4, 1000] {
        let mut judge = deadlocks("update", None);
        let mut steps = session_start();
        steps.extend([
            // One statement: the whole query is the stand-in.
            (Up, query("UPDATE t SET v = 2")),
            (Down, packet(1, &[0, 0, 0, 2, 0, 0, 0])),
            // Statements before it run as sent; the rest is dropped.
            (
                Up,
                query("INSERT INTO t VALUES (1); UPDATE t SET v = 3; SELECT 1"),
            ),
            (
                Down,
                [
                    packet(1, &[0, 1, 0, 0x0b, 0, 0, 0]),
                    packet(2, &[0, 0, 0, 2, 0, 0, 0]),
                ]
                .concat(),
            ),
            (Up, query("SELECT 1")),
            (Down, result_set(1, false, false)),
        ]);
        let (events, up, down, close) = run(&steps, size, Some(&mut judge));
        let want_up = [
            query(standin),
            query(&format!("INSERT INTO t VALUES (1); {standin}")),
            query("SELECT 1"),
        ]
        .concat();
        assert!(up.ends_with(&want_up), "chunks of {size}");
        // Both OKs of the stand-ins became the deadlock; the INSERT's OK is untouched.
        assert!(contains(&down, &deadlock_err(1)), "chunks of {size}");
        assert!(contains(&down, &deadlock_err(2)), "chunks of {size}");
        assert!(contains(&down, &packet(1, &[0, 1, 0, 0x0b, 0, 0, 0])));
        assert_eq!(
            events.iter().filter(|e| *e == "error 40").count(),
            2,
            "{events:?}"
        );
        assert!(events.contains(&"done select".to_owned()));
        // Counted as failed statements, as the client sees them.
        assert_eq!(
            events.iter().filter(|e| *e == "failed update").count(),
            2,
            "{events:?}"
        );
        assert!(!events.contains(&"done update".to_owned()), "{events:?}");
        assert_eq!(close, None);
    }
}

#[test]
fn injections_skipped_after_a_real_error_are_forgotten() {
    // The first statement fails for real: the targeted second one never runs, and the
    // session stops awaiting its injection (it went down the rewrite path for good).
    let mut judge = deadlocks("update", Some(false));
    let mut steps = session_start();
    steps.extend([
        (
            Up,
            query("INSERT INTO nowhere VALUES (1); UPDATE t SET v = 1"),
        ),
        (Down, err(1, 1146, "42S02", "Table 'nowhere' doesn't exist")),
    ]);
    let mut session = Session::new();
    let mut now = || 0u64;
    for (dir, bytes) in &steps {
        let _ = session.rewrite(
            *dir,
            bytes,
            &mut With {
                now: &mut now,
                event: &mut |_| {},
                judge: Some(&mut judge),
            },
        );
    }
    assert_eq!(session.track.injections, 0);
    assert!(session.track.pending.is_empty());
    assert!(!session.rewriting(Down));
}

#[test]
fn statements_split_in_mysql_s_own_lexical_rules() {
    // Under a rule on `union`, a `#` comment must not hide the stand-in: the query is one
    // statement, replaced whole.
    let mut judge = |ask: Ask<'_>| match ask {
        Ask::Statement { text, .. } if contains(text, b"UNION") => {
            Some(deadlock(false, Some(false)))
        }
        _ => None,
    };
    let mut steps = session_start();
    steps.push((Up, query("SELECT 1 # note; b\nUNION SELECT 2")));
    let (events, up, ..) = run(&steps, 1000, Some(&mut judge));
    assert!(up.ends_with(&query("dbfault_injected_1213")), "{up:?}");
    assert_eq!(
        events.iter().filter(|e| e.starts_with("request")).count(),
        1
    );
    // A backslash-escaped quote does not end the string.
    let mut judge = deadlocks("insert", Some(false));
    let mut steps = session_start();
    steps.push((Up, query(r"INSERT INTO t (v) VALUES ('it\'s; x')")));
    let (_, up, ..) = run(&steps, 1000, Some(&mut judge));
    assert!(up.ends_with(&query("dbfault_injected_1213")));
    // NO_BACKSLASH_ESCAPES, announced in the OK's status flags: a backslash is plain.
    let mut judge = deadlocks("update", Some(false));
    let steps = [
        (Down, greeting()),
        (Up, handshake(0x000a_a205)),
        (Down, packet(2, &[0, 0, 0, 0x02, 0x02, 0, 0])),
        (Up, query(r"SELECT 'a\'; UPDATE t SET v = 1")),
    ];
    let (_, up, ..) = run(&steps, 1000, Some(&mut judge));
    assert!(
        up.ends_with(&query(r"SELECT 'a\'; dbfault_injected_1213")),
        "{}",
        String::from_utf8_lossy(&up)
    );
}

#[test]
fn tls_and_compression_are_not_read() {
    let (events, ..) = run(&[(Down, greeting()), (Up, handshake(0x000a_aa05))], 9, None);
    assert_eq!(events, ["mysql-tls"]);
    let (events, ..) = run(&[(Down, greeting()), (Up, handshake(0x000a_a225))], 9, None);
    assert_eq!(events, ["mysql-compressed"]);
    // A session is read as MySQL only when the server's first bytes greet (the caller
    // checks them with `greets`).
    assert!(greets(&greeting()) && !greets(b"+OK\r\n") && !greets(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_long_row_is_passed_over_unread_and_nothing_reported_changes() {
    let value = vec![b'x'; 100_000];
    let mut row = vec![0xfd];
    row.extend_from_slice(&(value.len() as u32).to_le_bytes()[..3]);
    row.extend_from_slice(&value);
    let mut rows = packet(1, &[1]);
    rows.extend(packet(
        2,
        b"\x03def\0\0\0\x011\0\x0c\x3f\0\x01\0\0\0\x08\x81\0\0\0\0",
    ));
    rows.extend(packet(3, &[0xfe, 0, 0, 2, 0]));
    rows.extend(packet(4, &row));
    rows.extend(packet(5, &[0xfe, 0, 0, 2, 0]));
    let steps = [session_start(), vec![(Up, query("SELECT v FROM t"))]].concat();
    // Read as the filter reads a large event: what can be skipped is, the rest read in
    // pieces of 1,000 bytes.
    let read = |skipping: bool| {
        let mut s = crate::protocol::Session::Mysql(Session::new());
        let mut events = Vec::new();
        let mut seen = 0;
        let mut event = |e| events.push(crate::protocol::testing::describe(e));
        let mut cb = With {
            now: &mut || 0,
            event: &mut event,
            judge: None,
        };
        for (dir, bytes) in steps.iter().chain([(Down, rows.clone())].iter()) {
            let mut at = 0;
            while at < bytes.len() {
                let skip = if skipping { s.skippable(*dir) } else { 0 };
                if skip > 0 {
                    let n = skip.min(bytes.len() - at);
                    s.skip(*dir, n, &mut cb);
                    at += n;
                    continue;
                }
                let n = 1_000.min(bytes.len() - at);
                s.on_data(*dir, &bytes[at..at + n], &mut cb);
                seen += n;
                at += n;
            }
        }
        let _ = cb;
        (events, seen)
    };
    let (all, _) = read(false);
    let (skipped, seen) = read(true);
    assert!(all.contains(&"done select".to_owned()), "{all:?}");
    assert_eq!(skipped, all);
    assert!(seen < 3_000, "{seen} bytes read");
}
