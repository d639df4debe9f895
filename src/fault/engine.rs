//! The rules of one VM over time: which are active now, and which rule decides for a connection.
//!
//! Each time a rule becomes active it starts a new *episode* (a VM-unique id). A connection's
//! percentage draw is a function of its seed and the episode, so re-evaluating a connection
//! never re-rolls, and a rule carried unchanged across a configuration update keeps its episode
//! (connections it spared stay spared).

use super::matching::{Match, UpstreamInfo};
use super::{ApplyTo, FaultKind, Rule};
use crate::protocol::access;
use crate::protocol::Protocol;
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
    /// The rule acted (it was active, not a dry run) and stopped: what it matched, for the
    /// app's recovery to be measured on those upstreams.
    pub ended: Option<Match>,
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
                let ended = previous
                    .filter(|p| was_active && episode.is_none() && !p.rule.dry_run)
                    .map(|p| p.rule.matcher.clone());
                changes.push(Change {
                    name: Rc::clone(&name),
                    active: episode.is_some(),
                    removed: false,
                    ended,
                });
            } else if let (Some(p), Some(e)) = (previous, episode) {
                if p.episode != Some(e) {
                    // Redefined while active: a new episode, reported as a (re)activation.
                    changes.push(Change {
                        name: Rc::clone(&name),
                        active: true,
                        removed: false,
                        ended: None,
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
                ended: (gone.episode.is_some() && !gone.rule.dry_run)
                    .then(|| gone.rule.matcher.clone()),
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
                    ended: (!active && !slot.rule.dry_run).then(|| slot.rule.matcher.clone()),
                });
            }
        }
        changes
    }

    /// The first active rule matching `up` decides (rules the protocol layer carries out are
    /// not about bytes: see [`Engine::judge`]). `identifying`: the upstream is being
    /// identified now (rules with `applyTo: new` apply only then).
    pub fn decide(&self, up: &UpstreamInfo, seed: u64, identifying: bool) -> Option<Decision<'_>> {
        self.decide_with(up, seed, (!identifying).then_some(0))
    }

    /// [`Engine::decide`] for a connection: `open` is `None` while it is identified, else the
    /// newest episode it was considered for already (`applyTo: open` rules act only on
    /// connections open before their episode began).
    pub fn decide_with(
        &self,
        up: &UpstreamInfo,
        seed: u64,
        open: Option<u64>,
    ) -> Option<Decision<'_>> {
        self.rules.iter().find_map(|slot| {
            let episode = slot.episode?;
            if slot.rule.is_protocol_rule() {
                return None;
            }
            let applies = match (slot.rule.apply_to, open) {
                (ApplyTo::New, Some(_)) | (ApplyTo::Open, None) => false,
                (ApplyTo::Open, Some(considered)) => episode > considered,
                _ => true,
            };
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
                Ask::Startup if statement_rule || rule.apply_to == ApplyTo::Open => return None,
                Ask::Startup => selected(seed, episode, rule.percentage_bp),
                Ask::Statement {
                    command,
                    text,
                    queued,
                } if statement_rule => {
                    // A missing key's answer cannot stand in for a queued command's `QUEUED`.
                    if (queued && matches!(rule.kind, FaultKind::Miss(_)))
                        || !rule.matcher.statement(command, text)
                        || !rule.apply_to.reaches(episode, opened_in)
                    {
                        return None;
                    }
                    selected(draw, episode, rule.percentage_bp)
                }
                // Redis has no session start: a connection-level error answers every command
                // (of sessions opened during the episode, with `applyTo: new`), drawn per
                // connection.
                Ask::Statement { .. } if up.protocol == Some(Protocol::Redis) => {
                    if !rule.apply_to.reaches(episode, opened_in) {
                        return None;
                    }
                    selected(seed, episode, rule.percentage_bp)
                }
                // A connection-level error reaches open PostgreSQL sessions at their next
                // statement (with the connection's own draw, as at startup).
                Ask::Statement { .. }
                    if rule.apply_to != ApplyTo::New
                        && rule.apply_to.reaches(episode, opened_in) =>
                {
                    selected(seed, episode, rule.percentage_bp)
                }
                Ask::Statement { .. } => return None,
            };
            let act = chosen.then(|| match &rule.kind {
                FaultKind::Error(e) => {
                    let mut reply = e.reply.clone();
                    if let Ask::Statement { command, text, .. } = ask {
                        if e.names_command {
                            reply.message =
                                name_command(&reply.message, command, text, up.protocol);
                        }
                    }
                    // Refusing a PostgreSQL session, or ending an open one, is always fatal.
                    reply.fatal |= !statement_rule && up.protocol != Some(Protocol::Redis);
                    Act::Error(reply)
                }
                FaultKind::Delay(d) => Act::Delay(d.release_at(now(), &mut Rng::new(mix(draw)))),
                FaultKind::Miss(_) => Act::Miss,
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

/// `message` with `{command}` replaced by the statement's command as its server names it in
/// its own errors: PostgreSQL's name for a statement a read-only server refuses (`SELECT FOR
/// UPDATE`, `CREATE TABLE AS`), else the command in upper case (`INSERT`, Redis's `SET`; an
/// unlisted command's first word).
fn name_command(message: &str, command: &str, text: &[u8], protocol: Option<Protocol>) -> Rc<str> {
    let named = match protocol {
        Some(Protocol::Postgres) => access::postgres(text).map(|w| w.command),
        _ => None,
    };
    let name = named.unwrap_or_else(|| {
        let word = if command == "other" {
            let start = text
                .iter()
                .position(u8::is_ascii_alphabetic)
                .unwrap_or(text.len());
            let rest = text.get(start..).unwrap_or_default();
            let len = rest
                .iter()
                .position(|b| !b.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            rest.get(..len).unwrap_or_default()
        } else {
            command.as_bytes()
        };
        word.iter()
            .map(|b| char::from(b.to_ascii_uppercase()))
            .collect()
    });
    // By bytes: the placeholder is ASCII, so the result is as valid UTF-8 as `message`.
    let (message, placeholder) = (message.as_bytes(), b"{command}");
    let mut out = Vec::with_capacity(message.len() + name.len());
    let mut at = 0;
    while let Some(rest) = message.get(at..).filter(|r| !r.is_empty()) {
        if rest.starts_with(placeholder) {
            out.extend_from_slice(name.as_bytes());
            at += placeholder.len();
        } else {
            out.extend_from_slice(rest.get(..1).unwrap_or_default());
            at += 1;
        }
    }
    String::from_utf8(out).map_or_else(|_| Rc::from(""), Rc::from)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
