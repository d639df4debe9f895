//! Unit tests of `engine.rs`.

use super::*;
use crate::fault::matching::{HostPattern, Match};
use crate::fault::FaultKind;
use crate::schedule::Window;
use std::time::Duration;

const SEC: u64 = 1_000_000_000;

fn rule(name: &str, host: &str) -> Rule {
    Rule {
        name: name.into(),
        enabled: true,
        matcher: Match {
            hosts: vec![HostPattern::parse(host).unwrap()],
            ..Match::default()
        },
        percentage_bp: 10_000,
        apply_to: ApplyTo::All,
        window: None,
        dry_run: false,
        expires_at: None,
        sidecar_bp: 10_000,
        kind: FaultKind::Abort(crate::fault::abort::Abort),
    }
}

#[test]
fn a_sidecar_outside_the_share_never_activates_the_rule() {
    let half = Rule {
        sidecar_bp: 5000,
        ..rule("half", "pg")
    };
    // Two sidecars the hash puts on either side of 50% for this rule.
    let pick = |want: bool| {
        (0..100)
            .map(|i| format!("pod-{i}"))
            .find(|p| crate::schedule::sidecar_selected(p, "half", 5000) == want)
            .unwrap()
    };
    for (node, active) in [(pick(true), true), (pick(false), false)] {
        let mut e = Engine::new();
        e.set_sidecar(&node);
        let changes = e.load(vec![half.clone()], 0, 0);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].active, active, "{node}");
        assert_eq!(e.decide(&up("pg"), 1, true).is_some(), active);
        // Windows and pushes do not re-roll the choice.
        assert!(e.update(SEC).is_empty());
        assert!(e.load(vec![half.clone()], SEC, SEC).is_empty());
    }
}

fn up(host: &str) -> UpstreamInfo {
    UpstreamInfo {
        host: host.into(),
        ..UpstreamInfo::default()
    }
}

#[test]
fn first_active_matching_rule_decides() {
    let mut e = Engine::default();
    let mut off = rule("off", "pg");
    off.enabled = false;
    let changes = e.load(vec![off, rule("a", "*"), rule("b", "pg")], 0, 0);
    assert_eq!(changes.len(), 3);
    assert!(!changes[0].active && changes[1].active && changes[2].active);
    let d = e.decide(&up("pg"), 1, true).unwrap();
    assert_eq!(&*d.slot.name, "a");
    assert!(d.selected);
}

#[test]
fn apply_to_new_only_at_identification() {
    let mut e = Engine::default();
    let mut r = rule("n", "pg");
    r.apply_to = ApplyTo::New;
    e.load(vec![r, rule("later", "*")], 0, 0);
    assert_eq!(&*e.decide(&up("pg"), 1, true).unwrap().slot.name, "n");
    assert_eq!(&*e.decide(&up("pg"), 1, false).unwrap().slot.name, "later");
}

#[test]
fn windows_switch_rules_and_start_episodes() {
    let mut e = Engine::default();
    let mut r = rule("w", "pg");
    r.window = Some(Window {
        start: None,
        after: Duration::from_secs(10),
        duration: Duration::from_secs(5),
        every: Some(Duration::from_secs(20)),
    });
    let loaded = 100 * SEC;
    let changes = e.load(vec![r], loaded, loaded);
    assert_eq!(
        changes,
        vec![Change {
            name: "w".into(),
            active: false,
            removed: false,
            ended: None
        }]
    );
    assert!(e.decide(&up("pg"), 1, true).is_none());
    assert!(e.update(loaded + 9 * SEC).is_empty());
    let on = e.update(loaded + 10 * SEC);
    assert!(on[0].active);
    let first = e.decide(&up("pg"), 1, true).unwrap().episode;
    assert!(e.update(loaded + 14 * SEC).is_empty());
    let off = e.update(loaded + 15 * SEC);
    assert!(!off[0].active);
    // The rule acted and stopped: what it matched comes with the change (recovery).
    assert_eq!(off[0].ended.as_ref().map(|m| m.hosts.len()), Some(1));
    assert!(!e.episode_running(first));
    assert!(e.update(loaded + 30 * SEC)[0].active);
    let second = e.decide(&up("pg"), 1, true).unwrap().episode;
    assert!(second > first);
}

#[test]
fn unchanged_rules_keep_their_episode_across_reloads() {
    let mut e = Engine::default();
    e.load(vec![rule("a", "pg"), rule("b", "redis")], 0, 0);
    let a = e.decide(&up("pg"), 1, true).unwrap().episode;
    let b = e.decide(&up("redis"), 1, true).unwrap().episode;
    let mut b2 = rule("b", "redis");
    b2.percentage_bp = 5_000;
    let changes = e.load(vec![rule("a", "pg"), b2], SEC, SEC);
    assert_eq!(e.decide(&up("pg"), 1, true).unwrap().episode, a);
    assert_ne!(e.decide(&up("redis"), 1, true).unwrap().episode, b);
    assert_eq!(
        changes,
        vec![Change {
            name: "b".into(),
            active: true,
            removed: false,
            ended: None
        }]
    );
    assert!(e.episode_running(a) && !e.episode_running(b));

    let changes = e.load(vec![], 2 * SEC, 2 * SEC);
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.removed && c.ended.is_some()));
    assert!(changes.iter().all(|c| c.removed && !c.active));
    assert!(e.decide(&up("pg"), 1, true).is_none());
}

#[test]
fn percentage_is_per_connection_and_stable() {
    let mut e = Engine::default();
    let mut r = rule("half", "pg");
    r.percentage_bp = 5_000;
    e.load(vec![r], 0, 0);
    let hits = (0..2000u64)
        .filter(|&seed| {
            e.decide(&up("pg"), crate::schedule::mix(seed), true)
                .unwrap()
                .selected
        })
        .count();
    assert!((850..1150).contains(&hits), "{hits}");
    for seed in 0..100 {
        let d1 = e.decide(&up("pg"), seed, true).unwrap().selected;
        assert_eq!(d1, e.decide(&up("pg"), seed, false).unwrap().selected);
    }
}

#[test]
fn protocol_rules_judge_statements_and_session_starts() {
    use crate::fault::error::Error;
    use crate::protocol::ErrorReply;
    let error = |fatal| {
        FaultKind::Error(Error {
            names_command: false,
            reply: ErrorReply {
                errno: None,
                code: Some(*b"40001"),
                message: "m".into(),
                fatal,
                rollback: None,
            },
        })
    };
    let mut statements = rule("conflict", "pg");
    statements.matcher.commands = vec!["insert"];
    statements.percentage_bp = 3_000;
    statements.kind = error(false);
    let mut refuse = rule("refuse", "pg");
    refuse.kind = error(false);
    refuse.apply_to = ApplyTo::New;
    let mut e = Engine::default();
    e.load(vec![statements, refuse, rule("bytes", "pg")], 0, 0);
    assert!(e.uses_protocol() && e.judging(&up("pg")) && !e.judging(&up("redis")));
    assert_eq!(&*e.decide(&up("pg"), 1, true).unwrap().slot.name, "bytes");
    let insert = Ask::Statement {
        command: "insert",
        text: b"INSERT INTO t VALUES (1)",
        queued: false,
    };
    let hits = (0..4000u64)
        .filter(|&draw| {
            let (slot, act) = e
                .judge(&up("pg"), insert, 1, mix(draw), 0, &mut || 0)
                .unwrap();
            assert_eq!(&*slot.name, "conflict");
            act.is_some()
        })
        .count();
    assert!((1050..1350).contains(&hits), "{hits} of 4000 at 30%");
    // A SELECT is not named by the statement rule; the connection-level one is `new`
    // only: it acts at session starts, always fatal.
    let select = Ask::Statement {
        command: "select",
        text: b"SELECT 1",
        queued: false,
    };
    assert!(e.judge(&up("pg"), select, 1, 2, 0, &mut || 0).is_none());
    let (slot, act) = e
        .judge(&up("pg"), Ask::Startup, 1, 2, 0, &mut || 0)
        .unwrap();
    assert_eq!(&*slot.name, "refuse");
    assert!(matches!(act, Some(Act::Error(r)) if r.fatal));
    // `applyTo: new` statement rules spare sessions opened before their episode.
    let mut later = rule("later", "pg");
    later.apply_to = ApplyTo::New;
    later.matcher.commands = vec!["select"];
    later.kind = FaultKind::Abort(crate::fault::abort::Abort);
    let mut e = Engine::default();
    e.load(vec![later], 0, 0);
    let episode = e.last_episode();
    assert!(e
        .judge(&up("pg"), select, 1, 2, episode - 1, &mut || 0)
        .is_none());
    assert_eq!(
        e.judge(&up("pg"), select, 1, 2, episode, &mut || 0)
            .unwrap()
            .1,
        Some(Act::Abort)
    );
}

#[test]
fn expired_rules_are_inactive_and_absolute_windows_ignore_the_load() {
    let mut e = Engine::default();
    let mut r = rule("until", "pg");
    r.expires_at = Some(10 * SEC);
    let mut w = rule("at", "redis");
    w.window = Some(Window {
        start: Some(100 * SEC),
        after: Duration::ZERO,
        duration: Duration::from_secs(5),
        every: None,
    });
    e.load(vec![r, w], 0, 0);
    assert!(e.decide(&up("pg"), 1, true).is_some());
    assert!(e.decide(&up("redis"), 1, true).is_none());
    assert!(!e.update(10 * SEC)[0].active, "expired at 10 s");
    assert!(e.decide(&up("pg"), 1, true).is_none());
    // Reloading (a push) at 102 s neither revives the expired rule nor restarts the window.
    e.load(
        e.rules.iter().map(|s| s.rule.clone()).collect(),
        102 * SEC,
        102 * SEC,
    );
    assert!(e.decide(&up("pg"), 1, true).is_none());
    assert!(
        e.decide(&up("redis"), 1, true).is_some(),
        "open from 100 s to 105 s"
    );
    assert!(!e.update(105 * SEC)[0].active);
}

#[test]
fn apply_to_open_reaches_only_connections_open_before_the_episode() {
    let mut e = Engine::default();
    let mut gone = rule("gone", "pg");
    gone.apply_to = ApplyTo::Open;
    e.load(vec![gone], 0, 0);
    let episode = e.last_episode();
    // A connection identified now, or considered during the episode: untouched.
    assert!(e.decide_with(&up("pg"), 1, None).is_none());
    assert!(e.decide_with(&up("pg"), 1, Some(episode)).is_none());
    // One open before it: closed.
    assert!(e.decide_with(&up("pg"), 1, Some(episode - 1)).is_some());
    assert!(
        ApplyTo::Open.reaches(episode, episode - 1) && !ApplyTo::Open.reaches(episode, episode)
    );
    assert!(ApplyTo::New.reaches(episode, episode) && !ApplyTo::New.reaches(episode, episode - 1));
}
