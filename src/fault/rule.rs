//! One entry of `faults[]`: the fields every rule has, and their parsing. The kind-specific
//! object (`abort`, `delay`...) is parsed by the kind's own module through the registry in
//! [`crate::fault`]; `match` by [`crate::fault::matching`].

use super::matching::Match;
use super::{FaultKind, KIND_KEYS};
use crate::config::fields::{number_text, push_list, Fields};
use crate::config::{quote, ConfigError};
use crate::protocol::redis::miss as redis_miss;
use crate::protocol::Protocol;
use crate::schedule::Window;
use std::time::Duration;

/// More rules than this is a generated config gone wrong; each rule is checked per connection.
pub const MAX_RULES: usize = 256;

/// Keys every rule may have, besides its kind's key.
const COMMON_KEYS: &[&str] = &[
    "name",
    "enabled",
    "match",
    "percentage",
    "applyTo",
    "window",
    "dryRun",
    "expiresAt",
    "sidecarPercentage",
];

/// One validated rule from `faults[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `[a-z0-9._-]+`, unique: the `fault` label and the name in logs.
    pub name: String,
    pub enabled: bool,
    pub matcher: Match,
    /// Share of matching connections affected, in basis points (0 to 10000).
    pub percentage_bp: u32,
    pub apply_to: ApplyTo,
    pub window: Option<Window>,
    /// Counted and logged, traffic untouched.
    pub dry_run: bool,
    /// After this instant (nanoseconds since the Unix epoch) the rule is inactive, whatever else.
    pub expires_at: Option<u64>,
    /// Share of sidecars the rule is active on, in basis points, chosen by a stable hash of the
    /// sidecar's node id and the rule name ([`crate::schedule::sidecar_selected`]).
    pub sidecar_bp: u32,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Connections already open are affected too when the rule becomes active.
    All,
    /// Only connections whose upstream is identified while the rule is active.
    New,
    /// Only connections already open when the rule became active (a server going away ends
    /// the sessions it has; new ones meet another rule, or none).
    Open,
}

impl ApplyTo {
    /// Whether a rule whose episode is `episode` reaches a session identified when the newest
    /// episode was `opened_in` (so opened during the episode when `opened_in >= episode`).
    pub fn reaches(self, episode: u64, opened_in: u64) -> bool {
        match self {
            ApplyTo::All => true,
            ApplyTo::New => opened_in >= episode,
            ApplyTo::Open => opened_in < episode,
        }
    }
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(path, message))
}

/// `faults[]` of the configuration document `root` (absent: no rules). Errors: each rule's
/// first, in order (a rule that fails is not compared for a duplicate name), so that `dbfault
/// check` can show them all; the module logs the first.
pub fn parse_all(root: &Fields<'_>) -> Result<Vec<Rule>, Vec<ConfigError>> {
    let raw = match root.array("faults") {
        Ok(Some(raw)) => raw,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(vec![e]),
    };
    if raw.len() > MAX_RULES {
        return Err(vec![ConfigError::new(
            "faults",
            format!("{} rules, at most {MAX_RULES} are allowed", raw.len()),
        )]);
    }
    let known: Vec<&str> = COMMON_KEYS.iter().chain(KIND_KEYS).copied().collect();
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (i, value) in raw.iter().enumerate() {
        let at = format!("faults[{i}]");
        let rule = match Fields::of(value, &at, &known).and_then(|f| parse(&f)) {
            Ok(rule) => rule,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if rules.iter().any(|r| r.name == rule.name) {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                format!("duplicate rule name {}", quote(&rule.name)),
            ));
            continue;
        }
        rules.push(rule);
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

fn parse(raw: &Fields<'_>) -> Result<Rule, ConfigError> {
    let name = match raw.str("name")? {
        None => return err(&raw.path("name"), "missing (every rule needs a name)"),
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                }) =>
        {
            n.to_owned()
        }
        Some(n) => {
            return err(
                &raw.path("name"),
                format!("invalid name {}: use 1 to 64 of [a-z0-9._-]", quote(n)),
            )
        }
    };
    let Some(matcher) = raw.object("match", Match::KEYS)? else {
        return err(
            &raw.path("match"),
            "missing (a rule needs match.hosts or match.clusters)",
        );
    };
    let matcher = Match::parse(&matcher)?;
    let percentage_bp = share(raw, "percentage")?;
    let sidecar_bp = share(raw, "sidecarPercentage")?;
    let apply_to = match raw.str("applyTo")? {
        None | Some("all") => ApplyTo::All,
        Some("new") => ApplyTo::New,
        Some("open") => ApplyTo::Open,
        Some(other) => {
            return err(
                &raw.path("applyTo"),
                format!("{} is not one of \"all\", \"new\", \"open\"", quote(other)),
            )
        }
    };
    let window = match raw.object("window", &["after", "start", "for", "every"])? {
        None => None,
        Some(w) => Some(parse_window(&w)?),
    };
    let kind = parse_kind(raw)?;
    let mut matcher = matcher;
    if let FaultKind::Miss(_) = kind {
        check_miss(raw, &mut matcher)?;
    }
    check_protocol_kind(raw, &matcher, &kind)?;
    Ok(Rule {
        name,
        enabled: raw.bool("enabled")?.unwrap_or(true),
        matcher,
        percentage_bp,
        apply_to,
        window,
        dry_run: raw.bool("dryRun")?.unwrap_or(false),
        expires_at: raw.instant("expiresAt")?,
        sidecar_bp,
        kind,
    })
}

/// A percentage field (0 to 100, default 100) in basis points.
fn share(raw: &Fields<'_>, key: &str) -> Result<u32, ConfigError> {
    match raw.get(key) {
        None => Ok(10_000),
        Some(v) => match (raw.f64(key)?, v) {
            (Some(p), _) if (0.0..=100.0).contains(&p) => Ok((p * 100.0).round() as u32),
            (_, crate::config::json::Value::Number(n)) => err(
                &raw.path(key),
                format!("{} is out of range (0 to 100)", number_text(n)),
            ),
            _ => err(&raw.path(key), "not a number"),
        },
    }
}

/// `miss`: a Redis rule whose commands all have a "missing" answer (all such commands when it
/// names none).
fn check_miss(raw: &Fields<'_>, matcher: &mut Match) -> Result<(), ConfigError> {
    if matcher.protocol != Some(Protocol::Redis) {
        return err(
            &raw.path("miss"),
            "needs match.protocol \"redis\" (a cache miss is answered in Redis's protocol)",
        );
    }
    if matcher.writes.is_some() {
        return err(
            &raw.path("match.access"),
            "not with miss (it acts on reads of keys, named by match.commands)",
        );
    }
    if let Some(c) = matcher.commands.iter().find(|c| !redis_miss::has_answer(c)) {
        return err(
            &raw.path("match.commands"),
            format!(
                "{} has no answer for a missing key (miss acts on: {})",
                quote(c),
                redis_miss::commands().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if matcher.commands.is_empty() {
        matcher.commands = redis_miss::commands().collect();
    }
    Ok(())
}

/// Kinds that need a protocol, and the kinds a statement rule can have.
fn check_protocol_kind(
    raw: &Fields<'_>,
    matcher: &Match,
    kind: &FaultKind,
) -> Result<(), ConfigError> {
    let key = raw.path(kind.name());
    if let FaultKind::Error(e) = kind {
        match matcher.protocol {
            None => {
                return err(
                    &key,
                    "needs match.protocol \"postgres\", \"mysql\" or \"redis\" (the error is written in the session's protocol)",
                )
            }
            Some(Protocol::Postgres) if e.reply.code.is_none() => {
                return err(
                    &format!("{key}.sqlstate"),
                    "missing (a PostgreSQL error has a SQLSTATE, as in \"40001\")",
                )
            }
            Some(Protocol::Postgres | Protocol::Redis) if e.reply.errno.is_some() => {
                return err(
                    &format!("{key}.errno"),
                    "only for MySQL (PostgreSQL errors are named by their sqlstate, Redis errors by their message's first word)",
                )
            }
            Some(Protocol::Postgres | Protocol::Redis) if e.reply.rollback.is_some() => {
                return err(
                    &format!("{key}.rollback"),
                    "only for MySQL (a PostgreSQL error always fails the transaction until ROLLBACK; Redis has no transactions to roll back)",
                )
            }
            Some(Protocol::Mysql) if e.reply.errno.is_none() => {
                return err(
                    &format!("{key}.errno"),
                    "missing (a MySQL error has an error number, as in 1213)",
                )
            }
            Some(Protocol::Redis) if e.reply.code.is_some() => {
                return err(
                    &format!("{key}.sqlstate"),
                    "not for Redis (a Redis error's code is the message's first word, as in \"READONLY You can't write against a read only replica.\")",
                )
            }
            _ => {}
        }
    }
    if matcher.is_statement_rule() {
        match kind {
            FaultKind::Error(_) | FaultKind::Abort(_) | FaultKind::Miss(_) => {}
            FaultKind::Delay(d) if !d.first_only => {}
            FaultKind::Delay(_) => {
                return err(
                    &format!("{key}.firstOnly"),
                    "not available on a statement rule (match.commands or match.queryContains): each matching statement is delayed",
                )
            }
            _ => {
                return err(
                    &key,
                    format!(
                        "not available on a statement rule (match.commands or match.queryContains): use error, delay or abort ({} acts on whole connections)",
                        kind.name()
                    ),
                )
            }
        }
    }
    Ok(())
}

impl Rule {
    /// Whether the protocol layer carries the rule out (a statement rule, or an `error`),
    /// rather than the byte-level faults.
    pub fn is_protocol_rule(&self) -> bool {
        self.matcher.is_statement_rule()
            || matches!(self.kind, FaultKind::Error(_) | FaultKind::Miss(_))
    }
}

fn parse_window(raw: &Fields<'_>) -> Result<Window, ConfigError> {
    // `after` is an offset and may be zero ("0s": from the start); the others are periods.
    let after = raw.offset("after")?.unwrap_or(Duration::ZERO);
    let start = raw.instant("start")?;
    if start.is_some() && raw.has("after") {
        return err(
            &raw.path("start"),
            "and window.after are exclusive (start: an instant; after: an offset from the load)",
        );
    }
    let (Some(for_text), Some(for_)) = (raw.str("for")?, raw.duration("for")?) else {
        return err(&raw.path("for"), "missing (how long the window stays open)");
    };
    let every = match (raw.str("every")?, raw.duration("every")?) {
        (Some(text), Some(every)) if every <= for_ => {
            return err(
                &raw.path("every"),
                format!(
                    "{} must be longer than window.for ({})",
                    quote(text),
                    quote(for_text)
                ),
            )
        }
        (_, every) => every,
    };
    Ok(Window {
        after,
        start,
        duration: for_,
        every,
    })
}

/// The one kind key a rule must have, parsed by its kind.
fn parse_kind(raw: &Fields<'_>) -> Result<FaultKind, ConfigError> {
    let given: Vec<&str> = KIND_KEYS.iter().copied().filter(|k| raw.has(k)).collect();
    if let [key] = given.as_slice() {
        if let Some(kind) = FaultKind::parse(key, raw) {
            return kind;
        }
    }
    let mut message = "needs exactly one fault kind of ".to_owned();
    push_list(&mut message, KIND_KEYS);
    message.push_str(" (found: ");
    if given.is_empty() {
        message.push_str("none");
    } else {
        push_list(&mut message, &given);
    }
    message.push(')');
    err(raw.at(), message)
}

#[cfg(test)]
#[path = "rule_tests.rs"]
pub(crate) mod tests;
