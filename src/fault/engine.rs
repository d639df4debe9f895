//! The rules of one VM over time: which are active now, and which rule decides for a connection.
//!
//! Each time a rule becomes active it starts a new *episode* (a VM-unique id). A connection's
//! percentage draw is a function of its seed and the episode, so re-evaluating a connection
//! never re-rolls, and a rule carried unchanged across a configuration update keeps its episode
//! (connections it spared stay spared).

use super::matching::UpstreamInfo;
use super::{ApplyTo, FaultKind, Rule};
use crate::protocol::WireProtocol;
use crate::protocol::{Act, Ask};
use crate::schedule::{mix, selected, Rng};
use std::rc::Rc;

#[derive(Debug)]
pub struct RuleSlot {
    pub rule: Rule,
    pub name: Rc<str>,
    /// `Some(episode)` while the rule is active.
    pub episode: Option<u64>,
    /// This sidecar is outside the rule's `sidecarPercentage`: the rule never acts here.
    pub left_out: bool,
}

/// A rule switched on or off (for logs and the `fault_active` gauge). `removed`: the rule is
/// gone from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: Rc<str>,
    pub active: bool,
    pub removed: bool,
}

/// The rule that decides for a connection.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub slot: &'a RuleSlot,
    pub episode: u64,
    /// Whether the connection falls in the rule's percentage.
    pub selected: bool,
}

#[derive(Debug)]
pub struct Engine {
    rules: Vec<RuleSlot>,
    loaded_at: u64,
    last_episode: u64,
    /// Whether any rule matches host names / ports: computed once per configuration, asked
    /// per connection.
    uses_hosts: bool,
    uses_ports: bool,
    /// This sidecar's identity (Envoy's node id), for `sidecarPercentage`.
    sidecar: String,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub const fn new() -> Engine {
        Engine {
            rules: Vec::new(),
            loaded_at: 0,
            last_episode: 0,
            uses_hosts: false,
            uses_ports: false,
            sidecar: String::new(),
        }
    }

    /// Sets this sidecar's identity (Envoy's node id); configurations loaded afterwards choose
    /// their `sidecarPercentage` share by it.
    pub fn set_sidecar(&mut self, node_id: &str) {
        node_id.clone_into(&mut self.sidecar);
    }

    /// This sidecar's identity, as set.
    pub fn sidecar(&self) -> &str {
        &self.sidecar
    }

    /// Whether this sidecar is outside `rule`'s `sidecarPercentage` share.
    fn left_out(&self, rule: &Rule) -> bool {
        !crate::schedule::sidecar_selected(&self.sidecar, &rule.name, rule.sidecar_bp)
    }

    fn is_active(rule: &Rule, left_out: bool, loaded_at: u64, now: u64) -> bool {
        rule.enabled
            && !left_out
            && rule.expires_at.is_none_or(|at| now < at)
            && rule.window.is_none_or(|w| w.is_open_at(loaded_at, now))
    }

    fn new_episode(&mut self) -> u64 {
        self.last_episode += 1;
        self.last_episode
    }

    /// Replaces the rules (a configuration loaded at `loaded_at`); returns what switched.
    pub fn load(&mut self, rules: Vec<Rule>, loaded_at: u64, now: u64) -> Vec<Change> {
        let old = std::mem::take(&mut self.rules);
        self.loaded_at = loaded_at;
        self.uses_hosts = rules.iter().any(|r| !r.matcher.hosts.is_empty());
        self.uses_ports = rules.iter().any(|r| !r.matcher.ports.is_empty());
        let mut changes = Vec::new();
        for rule in rules {
            let previous = old.iter().find(|s| *s.name == *rule.name);
            let was_active = previous.is_some_and(|s| s.episode.is_some());
            let left_out = self.left_out(&rule);
            let episode = if Self::is_active(&rule, left_out, loaded_at, now) {
                match previous {
                    Some(p) if p.rule == rule && p.episode.is_some() => p.episode,
                    _ => Some(self.new_episode()),
                }
            } else {
                None
            };
            let name: Rc<str> =
                previous.map_or_else(|| Rc::from(rule.name.as_str()), |p| Rc::clone(&p.name));
            if was_active != episode.is_some() || previous.is_none() {
                changes.push(Change {
                    name: Rc::clone(&name),
                    active: episode.is_some(),
                    removed: false,
                });
            } else if let (Some(p), Some(e)) = (previous, episode) {
                if p.episode != Some(e) {
                    // Redefined while active: a new episode, reported as a (re)activation.
                    changes.push(Change {
                        name: Rc::clone(&name),
                        active: true,
                        removed: false,
                    });
                }
            }
            self.rules.push(RuleSlot {
                rule,
                name,
                episode,
                left_out,
            });
        }
        for gone in old
            .iter()
            .filter(|o| !self.rules.iter().any(|s| s.name == o.name))
        {
            changes.push(Change {
                name: Rc::clone(&gone.name),
                active: false,
                removed: true,
            });
        }
        changes
    }

    /// Re-evaluates windows at `now`; returns the rules that switched.
    pub fn update(&mut self, now: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        for i in 0..self.rules.len() {
            let Some(slot) = self.rules.get(i) else {
                continue;
            };
            let active = Self::is_active(&slot.rule, slot.left_out, self.loaded_at, now);
            if active == slot.episode.is_some() {
                continue;
            }
            let episode = if active {
                Some(self.new_episode())
            } else {
                None
            };
            if let Some(slot) = self.rules.get_mut(i) {
                slot.episode = episode;
                changes.push(Change {
                    name: Rc::clone(&slot.name),
                    active,
                    removed: false,
                });
            }
        }
        changes
    }

    /// The first active rule matching `up` decides (rules the protocol layer carries out are
    /// not about bytes: see [`Engine::judge`]). `identifying`: the upstream is being
    /// identified now (rules with `applyTo: new` apply only then).
    pub fn decide(&self, up: &UpstreamInfo, seed: u64, identifying: bool) -> Option<Decision<'_>> {
        self.rules.iter().find_map(|slot| {
            let episode = slot.episode?;
            if slot.rule.is_protocol_rule() {
                return None;
            }
            let applies = identifying || slot.rule.apply_to == ApplyTo::All;
            (applies && slot.rule.matcher.matches(up)).then(|| Decision {
                slot,
                episode,
                selected: selected(seed, episode, slot.rule.percentage_bp),
            })
        })
    }

    /// Whether the configuration has rules the protocol layer carries out or limited to a
    /// protocol (then connections' first client bytes are read).
    pub fn uses_protocol(&self) -> bool {
        self.rules
            .iter()
            .any(|s| s.rule.is_protocol_rule() || s.rule.matcher.protocol.is_some())
    }

    /// Whether rules the protocol layer carries out may ever act on `up`'s sessions (active
    /// or not yet: its sessions are read from their start when so).
    pub fn has_protocol_rules(&self, up: &UpstreamInfo) -> bool {
        self.rules
            .iter()
            .any(|s| s.rule.is_protocol_rule() && s.rule.matcher.matches(up))
    }

    /// Whether an active rule the protocol layer carries out may act on `up`'s sessions now.
    pub fn judging(&self, up: &UpstreamInfo) -> bool {
        self.rules
            .iter()
            .any(|s| s.episode.is_some() && s.rule.is_protocol_rule() && s.rule.matcher.matches(up))
    }

    /// The first active protocol rule naming `ask` on a session to `up` decides what happens
    /// to it. `seed`: the connection's; `draw`: a fresh number for this statement (statement
    /// rules draw their percentage per statement); `opened_in`: the newest episode when the
    /// connection was identified (`applyTo: new` statement rules act only on sessions opened
    /// during their episode). Returns the rule, and what it does (`None`: the draw spared it).
    pub fn judge(
        &self,
        up: &UpstreamInfo,
        ask: Ask<'_>,
        seed: u64,
        draw: u64,
        opened_in: u64,
        now: &mut dyn FnMut() -> u64,
    ) -> Option<(&RuleSlot, Option<Act>)> {
        self.rules.iter().find_map(|slot| {
            let episode = slot.episode?;
            let rule = &slot.rule;
            if !rule.is_protocol_rule() || !rule.matcher.matches(up) {
                return None;
            }
            let statement_rule = rule.matcher.is_statement_rule();
            let chosen = match ask {
                // A session's start: connection-level errors only.
                Ask::Startup if statement_rule => return None,
                Ask::Startup => selected(seed, episode, rule.percentage_bp),
                Ask::Statement { command, text } if statement_rule => {
                    if !rule.matcher.statement(command, text)
                        || (rule.apply_to == ApplyTo::New && episode > opened_in)
                    {
                        return None;
                    }
                    selected(draw, episode, rule.percentage_bp)
                }
                // Redis has no session start: a connection-level error answers every command
                // (of sessions opened during the episode, with `applyTo: new`), drawn per
                // connection.
                Ask::Statement { .. } if up.protocol == Some(WireProtocol::Redis) => {
                    if rule.apply_to == ApplyTo::New && episode > opened_in {
                        return None;
                    }
                    selected(seed, episode, rule.percentage_bp)
                }
                // A connection-level error reaches open PostgreSQL sessions at their next
                // statement (with the connection's own draw, as at startup).
                Ask::Statement { .. } if rule.apply_to == ApplyTo::All => {
                    selected(seed, episode, rule.percentage_bp)
                }
                Ask::Statement { .. } => return None,
            };
            let act = chosen.then(|| match &rule.kind {
                FaultKind::Error(e) => {
                    let mut reply = e.reply.clone();
                    // Refusing a PostgreSQL session, or ending an open one, is always fatal.
                    reply.fatal |= !statement_rule && up.protocol != Some(WireProtocol::Redis);
                    Act::Error(reply)
                }
                FaultKind::Delay(d) => Act::Delay(d.release_at(now(), &mut Rng::new(mix(draw)))),
                _ => Act::Abort,
            });
            Some((slot, act))
        })
    }

    /// Whether the episode a connection was faulted in is still running.
    pub fn episode_running(&self, episode: u64) -> bool {
        self.rules.iter().any(|s| s.episode == Some(episode))
    }

    /// The newest episode id: connections evaluated before it may need another look.
    pub fn last_episode(&self) -> u64 {
        self.last_episode
    }

    pub fn rules(&self) -> &[RuleSlot] {
        &self.rules
    }

    /// Whether any rule matches host names (only then is the SNI worth a host call for a
    /// connection whose cluster already names it).
    pub fn uses_hosts(&self) -> bool {
        self.uses_hosts
    }

    /// Whether any rule matches on ports (only then is the upstream address worth a host call
    /// for clusters whose name carries no port).
    pub fn uses_ports(&self) -> bool {
        self.uses_ports
    }
}

#[cfg(test)]
mod tests {
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
                removed: false
            }]
        );
        assert!(e.decide(&up("pg"), 1, true).is_none());
        assert!(e.update(loaded + 9 * SEC).is_empty());
        let on = e.update(loaded + 10 * SEC);
        assert!(on[0].active);
        let first = e.decide(&up("pg"), 1, true).unwrap().episode;
        assert!(e.update(loaded + 14 * SEC).is_empty());
        assert!(!e.update(loaded + 15 * SEC)[0].active);
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
                removed: false
            }]
        );
        assert!(e.episode_running(a) && !e.episode_running(b));

        let changes = e.load(vec![], 2 * SEC, 2 * SEC);
        assert_eq!(changes.len(), 2);
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
}
