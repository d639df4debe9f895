//! Unit tests of `session.rs`: the rewriting, as rules act on statements and a session's
//! start (the reading alone is in `session_tests.rs`).

use super::super::stand_in::provoking_startup;
use super::super::wire_bytes::{
    complete, error_with, hello, key_data, msg, negotiate, query, ready, startup, startup_version,
};
use super::*;
use crate::flow::Close;
use crate::protocol::testing::describe;
use crate::protocol::With;
use crate::protocol::{Act, Ask, ErrorReply};
use Direction::{ToClient as Down, ToDatabase as Up};

/// A rule for the rewriting tests: statements containing `needle` get `act`; a session's
/// start gets `startup`.
fn rule(
    needle: &'static str,
    act: Act,
    startup: Option<Act>,
) -> impl FnMut(Ask<'_>) -> Option<Act> {
    move |ask| match ask {
        Ask::Startup => startup.clone(),
        Ask::Statement { text, .. } => String::from_utf8_lossy(text)
            .contains(needle)
            .then(|| act.clone()),
    }
}

fn reply(code: &str, fatal: bool) -> ErrorReply {
    ErrorReply {
        errno: None,
        code: Some(code.as_bytes().try_into().unwrap()),
        message: "could not serialize access".into(),
        fatal,
        rollback: None,
    }
}

/// What reaches each peer when `steps` pass in chunks of `size` under `judge`, with the
/// events and the last verdict's hold and close.
struct Rewritten {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    events: Vec<String>,
    hold_until: Option<u64>,
    close: Option<Close>,
}

fn rewrite(
    steps: &[(Direction, Vec<u8>)],
    size: usize,
    judge: &mut dyn FnMut(Ask<'_>) -> Option<Act>,
) -> Rewritten {
    let mut s = Session::new();
    let mut r = Rewritten {
        to_server: Vec::new(),
        to_client: Vec::new(),
        events: Vec::new(),
        hold_until: None,
        close: None,
    };
    for (dir, bytes) in steps {
        for chunk in bytes.chunks(size) {
            let events = &mut r.events;
            let v = s.rewrite(
                *dir,
                chunk,
                &mut With {
                    now: &mut || 0,
                    event: &mut |e| events.push(describe(e)),
                    judge: Some(&mut *judge),
                },
            );
            let out = v.replace.unwrap_or_else(|| chunk.to_vec());
            match dir {
                Up => r.to_server.extend(out),
                Down => r.to_client.extend(out),
            }
            r.hold_until = r.hold_until.or(v.hold_until);
            r.close = r.close.or(v.close);
        }
    }
    r
}

#[test]
fn an_injected_error_replaces_the_statement_and_the_provoked_error() {
    let sql = "BEGIN; INSERT INTO plants VALUES (1); COMMIT";
    let provoked = error_with("34000", "cursor does not exist", "ERROR");
    for size in [1, 2, 3, 5, 8, 13, 4096] {
        let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (Up, [query(sql), query("SELECT 1")].concat()),
                (
                    Down,
                    [complete("BEGIN"), provoked.clone(), ready(b'E')].concat(),
                ),
                (Down, [complete("SELECT 1"), ready(b'E')].concat()),
            ],
            size,
            &mut judge,
        );
        assert_eq!(
            r.to_server,
            [
                startup(),
                query("BEGIN; FETCH \"dbfault: injected 40001\""),
                query("SELECT 1")
            ]
            .concat(),
            "chunks of {size}"
        );
        assert_eq!(
            r.to_client,
            [
                hello(),
                complete("BEGIN"),
                error_with("40001", "could not serialize access", "ERROR"),
                ready(b'E'),
                complete("SELECT 1"),
                ready(b'E')
            ]
            .concat(),
            "chunks of {size}"
        );
        assert_eq!(
            r.events,
            [
                "postgres",
                "request begin",
                "request insert",
                "request commit",
                "request select",
                "done begin",
                "error 40",
                "failed insert",
                "done select"
            ]
        );
        assert_eq!((r.hold_until, r.close), (None, None));
    }
}

#[test]
fn only_the_provoked_error_is_rewritten() {
    // In a failed transaction the server answers the replacement with 25P02: heard as is.
    let aborted = error_with("25P02", "current transaction is aborted", "ERROR");
    let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
    let r = rewrite(
        &[
            (Up, startup()),
            (Down, hello()),
            (Up, query("INSERT INTO plants VALUES (1)")),
            (Down, [aborted.clone(), ready(b'E')].concat()),
            (Up, query("SELECT 2")),
            (Down, [complete("SELECT 1"), ready(b'E')].concat()),
        ],
        4096,
        &mut judge,
    );
    assert!(r
        .to_client
        .ends_with(&[aborted, ready(b'E'), complete("SELECT 1"), ready(b'E')].concat()));
    assert!(r.events.contains(&"error 25".to_owned()));
}

#[test]
fn an_execute_is_replaced_by_one_of_a_missing_portal() {
    let parse = msg(b'P', b"ins\0INSERT INTO plants VALUES ($1)\0\0\0");
    let bind = msg(b'B', b"\0ins\0\0\0\0\0\0\0");
    let exec = msg(b'E', b"\0\0\0\0\0");
    let sync = msg(b'S', b"");
    let provoked = error_with("34000", "portal does not exist", "ERROR");
    for size in [1, 4, 7, 4096] {
        let mut judge = rule("plants", Act::Error(reply("40P01", false)), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                // Prepared once, executed twice: only the second execution is judged to fail.
                (
                    Up,
                    [parse.clone(), bind.clone(), exec.clone(), sync.clone()].concat(),
                ),
                (
                    Down,
                    [
                        msg(b'1', b""),
                        msg(b'2', b""),
                        provoked.clone(),
                        ready(b'I'),
                    ]
                    .concat(),
                ),
            ],
            size,
            &mut judge,
        );
        let mut execute = b"dbfault: injected 40P01\0".to_vec();
        execute.extend_from_slice(&[0; 4]);
        assert_eq!(
            r.to_server,
            [
                startup(),
                parse.clone(),
                bind.clone(),
                msg(b'E', &execute),
                sync.clone()
            ]
            .concat(),
            "chunks of {size}"
        );
        assert!(r.to_client.ends_with(
            &[
                msg(b'2', b""),
                error_with("40P01", "could not serialize access", "ERROR"),
                ready(b'I')
            ]
            .concat()
        ));
    }
}

#[test]
fn a_fatal_error_ends_both_directions() {
    let provoked = error_with("34000", "cursor does not exist", "ERROR");
    let mut judge = rule("plants", Act::Error(reply("57P01", true)), None);
    let r = rewrite(
        &[
            (Up, startup()),
            (Down, hello()),
            (
                Up,
                [query("DELETE FROM plants"), query("SELECT 1")].concat(),
            ),
            (Down, [provoked, ready(b'I')].concat()),
            (Up, query("SELECT 2")),
        ],
        3,
        &mut judge,
    );
    assert_eq!(
        r.to_server,
        [startup(), query("FETCH \"dbfault: injected 57P01\"")].concat(),
        "nothing after the fatal statement reaches the server"
    );
    assert_eq!(
        r.to_client,
        [
            hello(),
            error_with("57P01", "could not serialize access", "FATAL")
        ]
        .concat()
    );
    assert!(r.close.is_some());
}

#[test]
fn a_fatal_injection_never_answered_ends_the_session_at_ready_for_query_in_any_chunking() {
    // The statement before the fatal one fails for real: the server never runs the
    // stand-in, and the fatal error takes the place of the group's ReadyForQuery. The
    // fuzzer found the ReadyForQuery's first bytes passing ahead of it when it came in
    // pieces.
    let real = error_with("22012", "division by zero", "ERROR");
    for size in [1, 2, 3, 4, 4096] {
        let mut judge = rule("plants", Act::Error(reply("57P01", true)), None);
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, hello()),
                (Up, query("SELECT 1/0; DELETE FROM plants")),
                (Down, [real.clone(), ready(b'I')].concat()),
            ],
            size,
            &mut judge,
        );
        assert_eq!(
            r.to_client,
            [
                hello(),
                real.clone(),
                error_with("57P01", "could not serialize access", "FATAL")
            ]
            .concat(),
            "chunks of {size}"
        );
        assert!(r.close.is_some());
    }
}

#[test]
fn a_new_session_is_refused_at_startup() {
    let provoked = error_with("28000", "no PostgreSQL user name specified", "FATAL");
    for size in [1, 6, 4096] {
        let mut judge = rule("-", Act::Abort, Some(Act::Error(reply("57P03", false))));
        let r = rewrite(
            &[(Up, startup()), (Down, provoked.clone())],
            size,
            &mut judge,
        );
        assert_eq!(r.to_server, provoking_startup(), "chunks of {size}");
        assert_eq!(
            r.to_client,
            error_with("57P03", "could not serialize access", "FATAL"),
            "always FATAL at startup"
        );
        assert_eq!(r.close, Some(Close::AtNextTick));
    }
}

#[test]
fn delay_holds_and_abort_ends() {
    let mut judge = rule("plants", Act::Delay(77), None);
    let r = rewrite(
        &[
            (Up, startup()),
            (Down, hello()),
            (Up, query("SELECT * FROM plants")),
        ],
        4096,
        &mut judge,
    );
    assert_eq!(r.hold_until, Some(77));
    assert_eq!(
        r.to_server,
        [startup(), query("SELECT * FROM plants")].concat()
    );
    let mut judge = rule("plants", Act::Abort, None);
    let r = rewrite(
        &[
            (Up, startup()),
            (Down, hello()),
            (
                Up,
                [
                    query("SELECT 1"),
                    query("SELECT * FROM plants"),
                    query("SELECT 2"),
                ]
                .concat(),
            ),
        ],
        5,
        &mut judge,
    );
    assert_eq!(r.to_server, [startup(), query("SELECT 1")].concat());
    assert!(r.close.is_some());
}

#[test]
fn a_long_statement_is_decided_on_its_start_and_dropped_as_it_arrives() {
    let long = format!("INSERT INTO plants VALUES ('{}')", "x".repeat(100_000));
    let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
    let r = rewrite(
        &[
            (Up, startup()),
            (Down, hello()),
            (Up, [query(&long), query("SELECT 1")].concat()),
        ],
        1000,
        &mut judge,
    );
    assert_eq!(
        r.to_server,
        [
            startup(),
            query("FETCH \"dbfault: injected 40001\""),
            query("SELECT 1")
        ]
        .concat()
    );
    // Unmatched, it passes byte for byte.
    let mut judge = rule("nothing", Act::Abort, None);
    let r = rewrite(
        &[(Up, startup()), (Down, hello()), (Up, query(&long))],
        777,
        &mut judge,
    );
    assert_eq!(r.to_server, [startup(), query(&long)].concat());
}

#[test]
fn protocol_3_2_is_read_and_a_newer_one_only_when_negotiated_down() {
    let stand_in = query("FETCH \"dbfault: injected 40001\"");
    let provoked = error_with("34000", "cursor does not exist", "ERROR");
    let cases = [
        // libpq 18's max_protocol_version=3.2 against a 3.0 server: negotiated down.
        (
            2,
            [negotiate(0), msg(b'R', &[0; 4]), key_data(4), ready(b'I')].concat(),
            true,
        ),
        // ...against a 3.2 server: a 32-byte key.
        (
            2,
            [msg(b'R', &[0; 4]), key_data(32), ready(b'I')].concat(),
            true,
        ),
        // 3.5 negotiated down to 3.2.
        (
            5,
            [negotiate(2), msg(b'R', &[0; 4]), key_data(256), ready(b'I')].concat(),
            true,
        ),
        // 3.5 accepted as it is: nothing this session can vouch for, so nothing is touched.
        (
            5,
            [msg(b'R', &[0; 4]), key_data(4), ready(b'I')].concat(),
            false,
        ),
    ];
    for (minor, hello, read) in cases {
        for size in [1, 3, 4096] {
            let mut judge = rule("plants", Act::Error(reply("40001", false)), None);
            let answer = if read {
                provoked.clone()
            } else {
                complete("SELECT 1")
            };
            let r = rewrite(
                &[
                    (Up, startup_version(minor)),
                    (Down, hello.clone()),
                    (Up, query("SELECT * FROM plants")),
                    (Down, [answer, ready(b'I')].concat()),
                ],
                size,
                &mut judge,
            );
            let want = if read {
                stand_in.clone()
            } else {
                query("SELECT * FROM plants")
            };
            assert!(r.to_server.ends_with(&want), "3.{minor}, chunks of {size}");
            assert_eq!(
                r.to_client.windows(5).any(|w| w == b"40001"),
                read,
                "3.{minor}, chunks of {size}"
            );
        }
    }
    // Found by the fuzzer: a statement sent before the server said which version it runs is
    // not judged (it was rewritten, and its provoked error then reached the client once the
    // reading stopped); and what follows in the chunk where the reading stops is not read
    // (a ReadyForQuery after it completed the group in one chunking and not in another).
    let seed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/seeds/postgres/regression-newer-version-unconfirmed"
    ))
    .unwrap();
    let marker = b"\xffdbfault-server\xff";
    let at = seed
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    let (client, server) = (&seed[2..at], &seed[at + marker.len()..]);
    let mut outputs = Vec::new();
    for size in [1, 7, server.len()] {
        let mut judge = rule("~", Act::Error(reply("40001", true)), None);
        let mut s = Session::new();
        let mut cb = With {
            now: &mut || 0,
            event: &mut |_| {},
            judge: Some(&mut judge),
        };
        assert_eq!(s.rewrite(Up, client, &mut cb).replace, None);
        let mut out = Vec::new();
        for chunk in server.chunks(size) {
            out.extend(
                s.rewrite(Down, chunk, &mut cb)
                    .replace
                    .unwrap_or(chunk.to_vec()),
            );
        }
        outputs.push(out);
    }
    assert!(outputs.iter().all(|o| o == server));

    // A 3.2 CancelRequest carries a longer key: still a cancel, not a session.
    let mut cancel = 44u32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80_877_102u32.to_be_bytes());
    cancel.extend_from_slice(&[1; 36]);
    assert!(super::super::reader::opens_connection(&cancel));
    let r = rewrite(&[(Up, cancel)], 7, &mut |_| None);
    assert_eq!(r.events, ["postgres"]);
}

#[test]
fn strings_are_split_as_standard_conforming_strings_says() {
    let text = r"SELECT 'a\'; SELECT 2";
    for (setting, want) in [
        // On: the string ends at the second quote; `SELECT 2` alone is replaced.
        (
            "on",
            query(r#"SELECT 'a\'; FETCH "dbfault: injected 40001""#),
        ),
        // Off: `\'` escapes the quote, and everything is one statement.
        ("off", query("FETCH \"dbfault: injected 40001\"")),
    ] {
        let mut judge = rule("SELECT 2", Act::Error(reply("40001", false)), None);
        let status = msg(
            b'S',
            format!("standard_conforming_strings\0{setting}\0").as_bytes(),
        );
        let r = rewrite(
            &[
                (Up, startup()),
                (Down, [msg(b'R', &[0; 4]), status, ready(b'I')].concat()),
                (Up, query(text)),
            ],
            5,
            &mut judge,
        );
        assert!(r.to_server.ends_with(&want), "{setting}");
    }
}
