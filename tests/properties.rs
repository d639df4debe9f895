//! Property tests of the pure core: byte accounting under every fault kind, connection
//! counting, and gauges returning to zero.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault::fault::abort::Abort;
use dbfault::fault::blackhole::Blackhole;
use dbfault::fault::connection::Connection;
use dbfault::fault::cut::Cut;
use dbfault::fault::delay::Delay;
use dbfault::fault::matching::Match;
use dbfault::fault::{ApplyTo, FaultKind, Rule, TickAction};
use dbfault::flow::{Close, Direction, Effect};
use dbfault::metrics::fake_sink::RecordingSink;
use dbfault::metrics::Telemetry;
use dbfault::throughput::Traffic;
use proptest::prelude::*;
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Event {
    /// `n` new bytes arrive in a direction.
    Data(bool, usize),
    /// Time passes by this many milliseconds, then a tick.
    Tick(u64),
    /// The rule stops being active.
    End,
    /// Another rule becomes active and, as the VM does, acts on the connection if no fault
    /// does (it is "open to rules"), as on an open connection (`applyTo: all`).
    Apply(Option<FaultKind>),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (any::<bool>(), 0usize..5000).prop_map(|(d, n)| Event::Data(d, n)),
        3 => (0u64..300).prop_map(Event::Tick),
        1 => Just(Event::End),
        1 => kind().prop_map(Event::Apply),
    ]
}

fn kind() -> impl Strategy<Value = Option<FaultKind>> {
    prop_oneof![
        Just(None),
        Just(Some(FaultKind::Abort(Abort))),
        (0u64..500).prop_map(|ms| Some(FaultKind::Blackhole(Blackhole {
            close_after: (ms > 0).then(|| Duration::from_millis(ms)),
        }))),
        (1u64..300, 0u64..100, any::<bool>()).prop_map(|(l, j, f)| Some(FaultKind::Delay(Delay {
            latency: Duration::from_millis(l),
            jitter: Duration::from_millis(j.min(l)),
            first_only: f,
        }))),
        (
            proptest::option::of(1u64..20_000),
            proptest::option::of(1u64..1000)
        )
            .prop_map(|(b, t)| {
                Some(FaultKind::Cut(Cut {
                    after_bytes: b.or(if t.is_none() { Some(1) } else { None }),
                    after: t.map(Duration::from_millis),
                }))
            }),
    ]
}

fn rule(kind: FaultKind, dry_run: bool) -> Rule {
    Rule {
        name: "r".into(),
        enabled: true,
        matcher: Match::default(),
        percentage_bp: 10_000,
        apply_to: ApplyTo::All,
        window: None,
        dry_run,
        expires_at: None,
        sidecar_bp: 10_000,
        kind,
    }
}

const MS: u64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Envoy simulated around one connection: whatever the fault and the event order,
    /// forwarded + dropped = bytes seen, and what the connection counts as forwarded is what
    /// Envoy would have forwarded.
    #[test]
    fn forwarded_plus_dropped_is_everything_seen(
        kind in kind(),
        dry_run in any::<bool>(),
        identifying in any::<bool>(),
        events in proptest::collection::vec(event(), 0..60),
    ) {
        let traffic = Rc::new(Traffic::default());
        let mut conn = Connection::new(7, 0, Rc::clone(&traffic));
        let mut now = 0u64;
        if let Some(k) = kind.clone() {
            conn.apply(&rule(k, dry_run), "r".into(), 1, now, identifying);
        }
        let ended = events.iter().any(|e| matches!(e, Event::End | Event::Apply(_)));
        let reapplied = events.iter().any(|e| matches!(e, Event::Apply(Some(_))));
        let (mut seen, mut held, mut to_db, mut to_client) = (0u64, 0usize, 0u64, 0u64);
        let mut closed = false;
        for e in events {
            if closed {
                break;
            }
            match e {
                Event::Data(to_database, n) => {
                    let dir = if to_database { Direction::ToDatabase } else { Direction::ToClient };
                    seen += n as u64;
                    // Envoy hands a paused client → database stream over whole.
                    let size = if to_database { held + n } else { n };
                    let t = now;
                    let outcome = conn.on_data(dir, size, &mut || t);
                    let delivered = match outcome.effect {
                        Effect::Forward => size,
                        Effect::Hold => {
                            prop_assert!(to_database, "the database → client side was held");
                            held = size;
                            0
                        }
                        Effect::Drop { keep } => {
                            prop_assert!(keep <= size);
                            keep
                        }
                    };
                    if !matches!(outcome.effect, Effect::Hold) && to_database {
                        held = 0;
                    }
                    if to_database { to_db += delivered as u64 } else { to_client += delivered as u64 }
                    closed |= outcome.close == Some(Close::Now);
                }
                Event::Tick(ms) => {
                    now += ms * MS;
                    match conn.on_tick(now) {
                        Some(TickAction::Resume) => {
                            to_db += held as u64;
                            held = 0;
                        }
                        Some(TickAction::Close) => closed = true,
                        None => {}
                    }
                }
                Event::End => conn.end_fault(),
                Event::Apply(next) => {
                    if let Some(k) = next {
                        if conn.open_to(u64::MAX) {
                            conn.apply(&rule(k, false), "r2".into(), 2, now, false);
                        }
                    }
                }
            }
        }
        conn.finish();
        prop_assert_eq!(traffic.tx.get(), to_db, "client → database forwarded");
        prop_assert_eq!(traffic.rx.get(), to_client, "database → client forwarded");
        prop_assert_eq!(traffic.tx.get() + traffic.rx.get() + traffic.dropped.get(), seen);
        if (kind.is_none() || dry_run) && !reapplied {
            prop_assert_eq!(traffic.dropped.get(), 0);
        }
        // A cut that had not happened yet is called off when its rule ends.
        if let Some(FaultKind::Cut(Cut { after_bytes: Some(limit), .. })) = kind {
            if !dry_run && !ended {
                prop_assert!(to_db + to_client <= limit, "cut let {} of {limit} bytes through", to_db + to_client);
            }
        }
    }

    /// Every connection is counted once, cx_active follows opens and closes, and every gauge
    /// returns to zero once traffic stops.
    #[test]
    fn connections_are_counted_once_and_gauges_return_to_zero(
        ops in proptest::collection::vec((0usize..6, 0usize..3000, any::<bool>()), 1..200),
        limit in 1usize..4,
    ) {
        let mut sink = RecordingSink::default();
        let mut t = Telemetry::default();
        let mut open = Vec::new();
        let mut opened = 0i64;
        let mut clock = 0u64;
        for (upstream, bytes, close) in ops {
            if close && !open.is_empty() {
                let c = open.remove(bytes % open.len());
                t.close(&c);
            } else {
                let c = t.open(&mut sink, &format!("db{upstream}"), limit);
                c.traffic.tx.add(bytes);
                opened += 1;
                open.push(c);
            }
            clock += 300 * MS;
            t.flush_if_due(&mut sink, clock, 1000 * MS);
        }
        let still_open = open.len() as i64;
        for _ in 0..3 {
            clock += 1000 * MS;
            t.flush_if_due(&mut sink, clock, 1000 * MS);
        }
        fn sum(sink: &RecordingSink, metric: &str) -> i64 {
            sink.series().iter().filter(|(n, _)| n.ends_with(metric)).map(|(_, v)| *v).sum()
        }
        prop_assert_eq!(sum(&sink, ";.;dbfault_upstream_cx_total"), opened);
        prop_assert_eq!(sum(&sink, ";.;dbfault_upstream_cx_active"), still_open);
        prop_assert_eq!(sum(&sink, ";.;dbfault_upstream_tx_bytes_per_second"), 0, "rates after the traffic stopped");
        let named = sink.series().iter().filter(|(n, _)| n.ends_with(";.;dbfault_upstream_cx_total")).count();
        prop_assert!(named <= limit + 1, "{named} series for a limit of {limit}");
        for c in open.drain(..) {
            t.close(&c);
        }
        t.withdraw(&mut sink);
        prop_assert_eq!(sum(&sink, ";.;dbfault_upstream_cx_active"), 0);
        prop_assert!(sink.violations.is_empty(), "{:?}", sink.violations);
    }
}
