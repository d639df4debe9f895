//! The app's recovery, measured from the sidecar: once a rule stops acting (switched off, its
//! window closed, expired, removed), how long until the app's first successful request on
//! each upstream the rule named — a reply that is not an error on a session whose protocol is
//! read, else the first connection opened after the end that carries bytes both ways.
//!
//! Pure bookkeeping: the filter reports ends and successes with their times and turns what
//! comes back into a gauge and a log line.

use super::matching::{Match, UpstreamInfo};
use std::rc::Rc;

/// How long after its end a rule's recovery is still waited for.
const HORIZON: u64 = 3_600_000_000_000;

#[derive(Debug)]
struct Awaiting {
    rule: Rc<str>,
    matcher: Match,
    ended_at: u64,
    /// Upstreams (metric slots) whose recovery was measured.
    recorded: Vec<usize>,
}

/// A success that ends a wait: the rule, and the milliseconds since it stopped acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub rule: Rc<str>,
    pub millis: u64,
    /// When the rule stopped acting (this VM's view of it).
    pub ended_at: u64,
}

#[derive(Debug, Default)]
pub struct Recovery {
    awaiting: Vec<Awaiting>,
}

impl Recovery {
    pub const fn new() -> Recovery {
        Recovery {
            awaiting: Vec::new(),
        }
    }

    /// `rule`, which named what `matcher` matches, stopped acting at `now`.
    pub fn ended(&mut self, rule: Rc<str>, matcher: Match, now: u64) {
        self.started(&rule);
        self.awaiting.push(Awaiting {
            rule,
            matcher,
            ended_at: now,
            recorded: Vec::new(),
        });
    }

    /// `rule` acts again: its earlier end is no longer waited on.
    pub fn started(&mut self, rule: &str) {
        self.awaiting.retain(|a| &*a.rule != rule);
    }

    /// Whether any end is waited on.
    pub fn waiting(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// Forgets ends older than the horizon.
    pub fn expire(&mut self, now: u64) {
        self.awaiting
            .retain(|a| now.saturating_sub(a.ended_at) < HORIZON);
    }

    /// A success at `now` on `up` (metric slot `slot`); `opened_at`: for a connection that
    /// carried bytes both ways, when it opened (it counts only if opened after the end).
    /// Returns the waits it ends.
    pub fn succeeded(
        &mut self,
        up: &UpstreamInfo,
        slot: usize,
        opened_at: Option<u64>,
        now: u64,
    ) -> Vec<Recovered> {
        let mut out = Vec::new();
        for a in &mut self.awaiting {
            if a.recorded.contains(&slot)
                || opened_at.is_some_and(|t| t < a.ended_at)
                || !a.matcher.matches(up)
            {
                continue;
            }
            a.recorded.push(slot);
            out.push(Recovered {
                rule: Rc::clone(&a.rule),
                millis: now.saturating_sub(a.ended_at) / 1_000_000,
                ended_at: a.ended_at,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn on(host: &str) -> (Match, UpstreamInfo) {
        let m = Match {
            hosts: vec![crate::fault::matching::HostPattern::parse(host).unwrap()],
            ..Match::default()
        };
        let up = UpstreamInfo {
            host: host.into(),
            ..UpstreamInfo::default()
        };
        (m, up)
    }

    #[test]
    fn the_first_success_on_each_named_upstream_after_the_end_is_measured_once() {
        let (m, pg) = on("pg");
        let (_, other) = on("redis");
        let mut r = Recovery::default();
        r.ended("down".into(), m, 1_000 * MS);
        assert!(r.waiting());
        assert!(r.succeeded(&other, 2, None, 1_100 * MS).is_empty());
        // A connection opened before the end carrying bytes is no proof; a request is.
        assert!(r.succeeded(&pg, 1, Some(900 * MS), 1_200 * MS).is_empty());
        assert_eq!(
            r.succeeded(&pg, 1, None, 5_200 * MS),
            [Recovered {
                rule: "down".into(),
                millis: 4_200,
                ended_at: 1_000 * MS
            }]
        );
        assert!(r.succeeded(&pg, 1, None, 6_000 * MS).is_empty());
        // Another upstream the rule named has its own measurement.
        let (_, pg2) = on("pg");
        assert_eq!(r.succeeded(&pg2, 3, Some(7_000 * MS), 7_000 * MS).len(), 1);
        // The rule acts again: nothing is waited on for it.
        r.started("down");
        assert!(!r.waiting());
    }

    #[test]
    fn ends_are_forgotten_after_the_horizon() {
        let (m, _) = on("pg");
        let mut r = Recovery::default();
        r.ended("down".into(), m, 0);
        r.expire(HORIZON - 1);
        assert!(r.waiting());
        r.expire(HORIZON);
        assert!(!r.waiting());
    }
}
