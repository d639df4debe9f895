//! Unit tests of `session.rs`: the reading, what is counted and timed (the rewriting is in
//! `session_rewrite_tests.rs`).

use super::super::wire_bytes::{complete, error, hello, msg, query, ready, startup};
use super::*;
use crate::protocol::With;
use crate::protocol::MAX_PENDING;

/// A session fed `steps` (direction, bytes, time in ms), with its events as text.
fn run(steps: &[(Direction, Vec<u8>, u64)]) -> Vec<String> {
    let mut s = Session::new();
    let mut out = Vec::new();
    for (dir, bytes, ms) in steps {
        let t = ms * 1_000_000;
        s.on_data(
            *dir,
            bytes,
            &mut With {
                now: &mut || t,
                event: &mut |e| {
                    out.push(match e {
                        Event::Recognized(k) => format!("{k:?}"),
                        Event::Request(c) => format!("request {c}"),
                        Event::Answered {
                            command,
                            nanos,
                            failed,
                            ..
                        } => format!(
                            "{} {} {}ms",
                            if failed { "failed" } else { "done" },
                            command,
                            nanos / 1_000_000
                        ),
                        Event::Error(c) => format!("error {}", c.label()),
                    })
                },
                judge: None,
            },
        );
    }
    out
}

use Direction::{ToClient as Down, ToDatabase as Up};

/// Reads `bytes` in `dir` (no rule is asked); returns the events.
fn feed(s: &mut Session, dir: Direction, bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    s.on_data(
        dir,
        bytes,
        &mut With {
            now: &mut || 0,
            event: &mut |e| events.push(e),
            judge: None,
        },
    );
    events
}

#[test]
fn a_simple_query_with_several_statements() {
    let events = run(&[
        (Up, startup(), 0),
        (Down, [msg(b'R', &[0; 4]), ready(b'I')].concat(), 1),
        (Up, query("BEGIN; INSERT INTO t VALUES (1); COMMIT"), 10),
        (
            Down,
            [complete("BEGIN"), complete("INSERT 0 1")].concat(),
            12,
        ),
        (Down, [complete("COMMIT"), ready(b'I')].concat(), 15),
    ]);
    assert_eq!(
        events,
        [
            "Postgres",
            "request begin",
            "request insert",
            "request commit",
            "done begin 2ms",
            "done insert 2ms",
            "done commit 5ms",
        ]
    );
}

#[test]
fn an_error_ends_the_rest_of_a_query() {
    let events = run(&[
        (Up, startup(), 0),
        (Down, [msg(b'R', &[0; 4]), ready(b'I')].concat(), 1),
        (Up, query("SELECT 1/0; SELECT 2"), 10),
        (Down, [error("22012"), ready(b'I')].concat(), 11),
        (Up, query(""), 20),
        (Down, [msg(b'I', b""), ready(b'I')].concat(), 21),
        (Up, query("SELECT 3"), 30),
        (Down, [complete("SELECT 1"), ready(b'I')].concat(), 33),
    ]);
    assert_eq!(
        events,
        [
            "Postgres",
            "request select",
            "request select",
            "error 22",
            "failed select 1ms",
            "request select",
            "done select 3ms",
        ]
    );
}

#[test]
fn extended_protocol_pipelines_and_named_statements() {
    let parse = msg(b'P', b"ins\0INSERT INTO plants VALUES ($1)\0\0\0");
    let bind = msg(b'B', b"\0ins\0\0\0\0\0\0\0");
    let exec = msg(b'E', b"\0\0\0\0\0");
    let sync = msg(b'S', b"");
    // Two executions of the named statement in one pipeline, then a failing group.
    let up = [
        parse,
        bind.clone(),
        exec.clone(),
        bind.clone(),
        exec.clone(),
        sync.clone(),
    ]
    .concat();
    let bad = [bind.clone(), exec.clone(), bind, exec, sync].concat();
    let events = run(&[
        (Up, startup(), 0),
        (Down, [msg(b'R', &[0; 4]), ready(b'I')].concat(), 1),
        (Up, up, 10),
        (Up, bad, 11),
        (
            Down,
            [
                msg(b'1', b""),
                msg(b'2', b""),
                complete("INSERT 0 1"),
                msg(b'2', b""),
                complete("INSERT 0 1"),
                ready(b'I'),
            ]
            .concat(),
            14,
        ),
        (
            Down,
            [msg(b'2', b""), error("23505"), ready(b'I')].concat(),
            16,
        ),
    ]);
    assert_eq!(
        events,
        [
            "Postgres",
            "request insert",
            "request insert",
            "request insert",
            "request insert",
            "done insert 4ms",
            "done insert 4ms",
            "error 23",
            "failed insert 5ms",
        ]
    );
}

#[test]
fn encryption_cancel_and_other_protocols() {
    let mut ssl = 8u32.to_be_bytes().to_vec();
    ssl.extend_from_slice(&80_877_103u32.to_be_bytes());
    // Answered N: a plaintext session follows.
    let events = run(&[
        (Up, ssl.clone(), 0),
        (Down, b"N".to_vec(), 1),
        (Up, [startup(), query("SHOW x")].concat(), 2),
        (
            Down,
            [ready(b'I'), complete("SHOW"), ready(b'I')].concat(),
            3,
        ),
    ]);
    assert_eq!(
        events,
        ["Postgres", "request show", "done show 1ms"],
        "pipelined behind the startup"
    );
    // Answered S: encrypted, nothing more is read.
    let mut s = Session::new();
    let mut kinds = Vec::new();
    for (dir, bytes) in [
        (Up, ssl),
        (Down, b"S".to_vec()),
        (Up, vec![0x16, 3, 1, 0, 5]),
    ] {
        kinds.extend(feed(&mut s, dir, &bytes));
    }
    assert_eq!(kinds, [Event::Recognized(Protocol::PostgresTls)]);
    assert!(!s.reading());
    // Redis: unknown, nothing more is read.
    let mut s = Session::new();
    let mut kinds = Vec::new();
    kinds.extend(feed(&mut s, Up, b"*1\r\n$4\r\nPING\r\n"));
    assert_eq!(kinds, [Event::Recognized(Protocol::Unknown)]);
    assert!(!s.reading());
    // MySQL: the server speaks first.
    let mut s = Session::new();
    let mut kinds = Vec::new();
    kinds.extend(feed(&mut s, Down, b"\x4a\0\0\0\x0a11.4.5-MariaDB\0"));
    assert_eq!(kinds, [Event::Recognized(Protocol::Unknown)]);
    assert!(!s.reading());
    assert_eq!(s.skippable(Up), usize::MAX);
}

#[test]
fn pending_groups_are_bounded_and_stay_in_order() {
    let mut s = Session::new();
    feed(&mut s, Up, &startup());
    feed(&mut s, Down, &hello());
    let syncs = msg(b'S', b"").repeat(MAX_GROUPS * 3);
    feed(&mut s, Up, &syncs);
    assert_eq!(s.track.groups.len(), MAX_GROUPS);
    assert_eq!(s.track.untracked, MAX_GROUPS * 2);
    // A query behind them is counted but not tracked; all are answered in order.
    feed(&mut s, Up, &query("SELECT 1"));
    let answered = |events: Vec<Event>| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Answered { .. }))
            .count()
    };
    let answers = [
        ready(b'I').repeat(MAX_GROUPS * 3),
        complete("SELECT 1"),
        ready(b'I'),
    ]
    .concat();
    assert_eq!(answered(feed(&mut s, Down, &answers)), 0);
    assert!(s.track.groups.is_empty() && s.track.untracked == 0);
    // Tracked again from here.
    feed(&mut s, Up, &query("SELECT 1"));
    let answer = [complete("SELECT 1"), ready(b'I')].concat();
    assert_eq!(answered(feed(&mut s, Down, &answer)), 1);
}

#[test]
fn pending_statements_are_bounded() {
    let mut s = Session::new();
    feed(&mut s, Up, &startup());
    let many = query(&"SELECT 1;".repeat(MAX_PENDING + 10));
    let requests = feed(&mut s, Up, &many)
        .iter()
        .filter(|e| matches!(e, Event::Request(_)))
        .count();
    assert!(requests <= MAX_PENDING + 10 && requests > 400, "{requests}");
    assert!(s.track.pending_count <= MAX_PENDING);
}
