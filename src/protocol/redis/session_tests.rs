//! Unit tests of `session.rs`.

use super::super::tracker::PROVOKING;
use super::*;
use crate::flow::Close;
use crate::protocol::Act;
use crate::protocol::{Ask, ErrorReply};
use crate::protocol::{Event, Judge, With};
use Direction::{ToClient as Down, ToDatabase as Up};

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    out
}

use crate::protocol::testing::{describe, rewrite_all};

fn run(
    steps: &[(Direction, Vec<u8>)],
    size: usize,
    judge: Option<&mut Judge<'_>>,
) -> (Vec<String>, Vec<u8>, Vec<u8>, Option<Close>) {
    rewrite_all(
        crate::protocol::Session::Redis(Session::new()),
        steps,
        size,
        judge,
    )
}

#[test]
fn a_pipeline_pairs_replies_in_order_in_any_chunking() {
    let up = [
        cmd(&["SET", "k", "v"]),
        cmd(&["get", "k"]),
        b"PING\r\n".to_vec(),
        cmd(&["LPUSH", "k", "x"]),
        cmd(&["FROBNICATE"]),
    ]
    .concat();
    let down = b"+OK\r\n$1\r\nv\r\n+PONG\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n-ERR unknown command 'FROBNICATE'\r\n".to_vec();
    let want = [
        "redis",
        "request set",
        "request get",
        "request ping",
        "request lpush",
        "request other",
        "done set",
        "done get",
        "done ping",
        "failed lpush",
        "error WRONGTYPE",
        "failed other",
        "error ERR",
    ];
    for size in [1, 2, 3, 7, 100] {
        let (events, up_out, down_out, _) =
            run(&[(Up, up.clone()), (Down, down.clone())], size, None);
        assert_eq!(events, want, "chunks of {size}");
        assert_eq!((up_out, down_out), (up.clone(), down.clone()));
    }
}

#[test]
fn multi_exec_subscribe_and_resp3_pushes() {
    let (events, ..) = run(
        &[
            (Up, [cmd(&["MULTI"]), cmd(&["INCR", "n"]), cmd(&["EXEC"])].concat()),
            (Down, b"+OK\r\n+QUEUED\r\n*1\r\n-WRONGTYPE bad\r\n".to_vec()),
            (Up, cmd(&["SUBSCRIBE", "a", "b"])),
            (
                Down,
                b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n".to_vec(),
            ),
            (Up, cmd(&["PING"])),
            (Down, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n".to_vec()),
            (Up, cmd(&["UNSUBSCRIBE"])),
            (
                Down,
                b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n".to_vec(),
            ),
            // RESP3: a push between a command and its reply, an attribute before one.
            (Up, cmd(&["GET", "k"])),
            (Down, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n".to_vec()),
        ],
        5,
        None,
    );
    assert_eq!(
        events,
        [
            "redis",
            "request multi",
            "request incr",
            "request exec",
            "done multi",
            "done incr",
            "error WRONGTYPE",
            "done exec",
            "request subscribe",
            "done subscribe",
            "request ping",
            "done ping",
            "request unsubscribe",
            "done unsubscribe",
            "request get",
            "done get",
        ]
    );
}

fn readonly(fatal: bool) -> Act {
    Act::Error(ErrorReply {
        errno: None,
        code: None,
        message: "READONLY You can't write against a read only replica.".into(),
        fatal,
        rollback: None,
    })
}

#[test]
fn an_injected_error_takes_its_place_in_the_pipeline() {
    let big = "x".repeat(100_000);
    let up = [
        cmd(&["GET", "a"]),
        cmd(&["SET", "k", &big]),
        cmd(&["GET", "b"]),
    ]
    .concat();
    let provoked = b"-ERR unknown command 'dbfault-injected', with args beginning with: \r\n";
    let down = [&b"$1\r\n1\r\n"[..], provoked, b"$1\r\n2\r\n"].concat();
    for size in [1, 3, 1000, 300_000] {
        let mut writes = |ask: Ask<'_>| match ask {
            Ask::Statement { command: "set", .. } => Some(readonly(false)),
            _ => None,
        };
        let (events, up_out, down_out, close) = run(
            &[(Up, up.clone()), (Down, down.clone())],
            size,
            Some(&mut writes),
        );
        assert_eq!(
            up_out,
            [cmd(&["GET", "a"]), PROVOKING.to_vec(), cmd(&["GET", "b"])].concat(),
            "chunks of {size}"
        );
        assert_eq!(
            down_out,
            b"$1\r\n1\r\n-READONLY You can't write against a read only replica.\r\n$1\r\n2\r\n",
            "chunks of {size}"
        );
        assert!(events.contains(&"error READONLY".to_owned()));
        assert_eq!(close, None);
    }
    // Fatal: nothing after it, and the connection closes after the error.
    let mut writes = |_: Ask<'_>| Some(readonly(true));
    let (_, up_out, down_out, close) = run(
        &[
            (Up, [cmd(&["SET", "k", "v"]), cmd(&["GET", "k"])].concat()),
            (Down, provoked.to_vec()),
        ],
        4,
        Some(&mut writes),
    );
    assert_eq!(up_out, PROVOKING);
    assert_eq!(
        down_out,
        b"-READONLY You can't write against a read only replica.\r\n"
    );
    assert!(close.is_some());
    // Whatever answers a fatal injection is replaced, in any chunking: the fuzzer found
    // a reply that was no error (here `+OK`) leaking its first byte ahead of the rule's.
    for size in [1, 2, 3, 100] {
        let mut writes = |_: Ask<'_>| Some(readonly(true));
        let (_, _, down_out, close) = run(
            &[
                (Up, cmd(&["SET", "k", "v"])),
                (Down, b"+OK\r\n$1\r\nv\r\n".to_vec()),
            ],
            size,
            Some(&mut writes),
        );
        assert_eq!(
            down_out, b"-READONLY You can't write against a read only replica.\r\n",
            "chunks of {size}"
        );
        assert!(close.is_some());
    }
}

#[test]
fn inline_commands_and_other_protocols() {
    let (events, ..) = run(
        &[
            (Up, b"PING\r\nset k v\r\n".to_vec()),
            (Down, b"+PONG\r\n+OK\r\n".to_vec()),
        ],
        2,
        None,
    );
    assert_eq!(
        events,
        [
            "redis",
            "request ping",
            "request set",
            "done ping",
            "done set"
        ]
    );
    // Bytes that are not RESP stop the reading once.
    let mut s = Session::new();
    let mut events = Vec::new();
    s.on_data(
        Up,
        b"*2\r\n:12\r\n",
        &mut With {
            now: &mut || 0,
            event: &mut |e| events.push(describe(e)),
            judge: None,
        },
    );
    assert_eq!(events, ["unknown"]);
    assert!(!s.reading());
}

#[test]
fn one_duration_sample_per_round_trip() {
    let mut s = Session::new();
    let mut samples = Vec::new();
    let mut step = |dir, bytes: &[u8], t: u64, s: &mut Session| {
        s.on_data(
            dir,
            bytes,
            &mut With {
                now: &mut || t,
                event: &mut |e| {
                    if let Event::Answered { nanos, sampled, .. } = e {
                        samples.push((nanos, sampled));
                    }
                },
                judge: None,
            },
        )
    };
    // Three commands in one write, answered in one read: one sample.
    step(
        Up,
        &[cmd(&["GET", "a"]), cmd(&["GET", "b"]), cmd(&["GET", "c"])].concat(),
        10,
        &mut s,
    );
    step(Down, b"$-1\r\n$-1\r\n$-1\r\n", 15, &mut s);
    // Then one at a time: a sample each.
    step(Up, &cmd(&["GET", "d"]), 20, &mut s);
    step(Down, b"$-1\r\n", 22, &mut s);
    step(Up, &cmd(&["GET", "e"]), 30, &mut s);
    step(Down, b"$-1\r\n", 33, &mut s);
    assert_eq!(
        samples,
        [(5, true), (5, false), (5, false), (2, true), (3, true)]
    );
}

#[test]
fn a_miss_answers_as_for_missing_keys_in_the_session_s_protocol() {
    let provoked = b"-ERR unknown command 'dbfault-injected', with args beginning with: \r\n";
    let hello3 = b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n";
    // RESP2, then HELLO 3 (answered: RESP3 from then on), a queued MGET in MULTI (not acted
    // on), and the EXEC's answer passing untouched.
    let up = [
        cmd(&["MGET", "a", "b c", "d"]),
        cmd(&["HELLO", "3"]),
        cmd(&["HGETALL", "h"]),
        cmd(&["MULTI"]),
        cmd(&["GET", "q"]),
        cmd(&["EXEC"]),
        cmd(&["SET", "k", "v"]),
    ]
    .concat();
    let down = [
        &provoked[..],
        hello3,
        provoked,
        b"+OK\r\n",
        b"+QUEUED\r\n",
        b"*1\r\n$1\r\nv\r\n",
        b"+OK\r\n",
    ]
    .concat();
    for size in [1, 2, 5, 1000] {
        let mut asked = Vec::new();
        let mut miss = |ask: Ask<'_>| match ask {
            Ask::Statement {
                command: "mget" | "hgetall" | "get",
                queued,
                ..
            } => {
                asked.push(queued);
                (!queued).then_some(Act::Miss)
            }
            _ => None,
        };
        let (events, up_out, down_out, close) = run(
            &[(Up, up.clone()), (Down, down.clone())],
            size,
            Some(&mut miss),
        );
        assert_eq!(asked, [false, false, true], "chunks of {size}");
        assert_eq!(
            up_out,
            [
                PROVOKING.to_vec(),
                cmd(&["HELLO", "3"]),
                PROVOKING.to_vec(),
                cmd(&["MULTI"]),
                cmd(&["GET", "q"]),
                cmd(&["EXEC"]),
                cmd(&["SET", "k", "v"]),
            ]
            .concat(),
            "chunks of {size}"
        );
        assert_eq!(
            down_out,
            [
                &b"*3\r\n$-1\r\n$-1\r\n$-1\r\n"[..],
                hello3,
                b"%0\r\n",
                b"+OK\r\n",
                b"+QUEUED\r\n",
                b"*1\r\n$1\r\nv\r\n",
                b"+OK\r\n",
            ]
            .concat(),
            "chunks of {size}"
        );
        // Answered, not failed: a miss is no error to the app.
        assert!(events.contains(&"done mget".to_owned()), "{events:?}");
        assert!(!events.iter().any(|e| e.starts_with("error")), "{events:?}");
        assert_eq!(close, None);
    }
}
