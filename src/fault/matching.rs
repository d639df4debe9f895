//! Which upstreams a rule names: `match: {"hosts": [...], "clusters": [...], "ports": [...]}`,
//! and, for rules about a protocol, which sessions and statements:
//! `"protocol": "postgres", "commands": ["INSERT"], "queryContains": ["plants"]`.

use crate::config::fields::{as_str, as_u64, push_list, Fields};
use crate::config::{quote, ConfigError};
use crate::protocol::access;
use crate::protocol::redis::commands::{self as redis_commands, COMMANDS as REDIS_COMMANDS};
use crate::protocol::sql::COMMANDS as SQL_COMMANDS;
use crate::protocol::Protocol;

/// What a connection's upstream is known as, gathered once at identification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamInfo {
    /// The upstream identity before label sanitising, lowercased (see [`crate::upstream`]).
    pub host: String,
    /// The TLS SNI, lowercased, when there is one.
    pub sni: Option<String>,
    /// The Envoy cluster name.
    pub cluster: Option<String>,
    /// The upstream port (from an Istio cluster name or the upstream address).
    pub port: Option<u16>,
    /// The protocol its client's first bytes open, when they were read and recognised.
    pub protocol: Option<Protocol>,
}

/// A host pattern: exact name, `*.suffix`, or `*` (any). Stored lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    /// `*.db.example` is stored as `.db.example`: a name ending with it (and longer).
    Suffix(String),
    Exact(String),
}

impl HostPattern {
    /// Parses a pattern; `Err` explains what is wrong with it.
    pub fn parse(text: &str) -> Result<HostPattern, &'static str> {
        let lower = text.to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty host");
        }
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (suffix, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if rest.as_bytes().contains(&b'*') {
            return Err("a wildcard is allowed only as a leading \"*.\" or as \"*\" alone");
        }
        if rest.is_empty()
            || rest.starts_with('.')
            || rest.ends_with('.')
            || rest.as_bytes().windows(2).any(|w| w == b"..")
        {
            return Err("not a host name");
        }
        if !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err("a host name has only letters, digits, '.', '-', '_' (and ':' in IPv6)");
        }
        Ok(if suffix {
            HostPattern::Suffix(format!(".{rest}"))
        } else {
            HostPattern::Exact(rest.to_owned())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostPattern::Exact(name) => host == name,
        }
    }
}

/// The longest `queryContains` entry: statement text is matched on its first 4 KiB.
pub const MAX_CONTAINS: usize = 256;

/// `match: {hosts, clusters, ports, protocol, commands, queryContains}`. A connection matches
/// when its host or SNI matches one of `hosts`, or its cluster is one of `clusters`; and, when
/// `ports` is set, its port is listed. `protocol` limits the rule to sessions of that protocol;
/// `commands` / `queryContains` make it a statement rule (see [`Match::statement`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub hosts: Vec<HostPattern>,
    pub clusters: Vec<String>,
    pub ports: Vec<u16>,
    pub protocol: Option<Protocol>,
    /// `command` label values: SQL first keywords, Redis command names (empty: any).
    pub commands: Vec<&'static str>,
    /// Lowercased substrings, one of which the statement must contain (empty: any).
    pub query_contains: Vec<String>,
    /// Only writes (`Some(true)`) or only reads (`Some(false)`), as a read-only server tells
    /// them (`access`).
    pub writes: Option<bool>,
}

impl Match {
    pub const KEYS: &'static [&'static str] = &[
        "hosts",
        "clusters",
        "ports",
        "protocol",
        "commands",
        "queryContains",
        "access",
    ];

    /// Whether the rule acts on statements rather than connections.
    pub fn is_statement_rule(&self) -> bool {
        !self.commands.is_empty() || !self.query_contains.is_empty() || self.writes.is_some()
    }

    /// Whether a statement (its command and the start of its text) is one the rule names: its
    /// command is listed (when `commands` is given) and it contains one of the substrings
    /// (when `queryContains` is given), ignoring ASCII case.
    pub fn statement(&self, command: &str, text: &[u8]) -> bool {
        (self.commands.is_empty() || self.commands.contains(&command))
            && self.writes.is_none_or(|w| {
                w == match self.protocol {
                    Some(Protocol::Postgres) => access::postgres(text).is_some(),
                    Some(Protocol::Mysql) => access::mysql(text),
                    _ => redis_commands::writes(command, text),
                }
            })
            && (self.query_contains.is_empty()
                || self
                    .query_contains
                    .iter()
                    .any(|needle| contains_ignore_case(text, needle.as_bytes())))
    }

    /// Validates a rule's `match` object: `hosts` or `clusters` (or both), non-empty lists.
    pub fn parse(raw: &Fields<'_>) -> Result<Match, ConfigError> {
        let err = |path: &str, message: String| Err(ConfigError::new(path, message));
        let mut m = Match::default();
        if let Some(hosts) = raw.array("hosts")? {
            if hosts.is_empty() {
                return err(
                    &raw.path("hosts"),
                    "empty list (leave it out or name a host)".into(),
                );
            }
            for (j, host) in hosts.iter().enumerate() {
                let at = format!("{}[{j}]", raw.path("hosts"));
                let host = as_str(host, &at)?;
                match HostPattern::parse(host) {
                    Ok(p) => m.hosts.push(p),
                    Err(why) => return err(&at, format!("invalid host {}: {why}", quote(host))),
                }
            }
        }
        if let Some(clusters) = raw.array("clusters")? {
            if clusters.is_empty() {
                return err(
                    &raw.path("clusters"),
                    "empty list (leave it out or name a cluster)".into(),
                );
            }
            for (j, cluster) in clusters.iter().enumerate() {
                let at = format!("{}[{j}]", raw.path("clusters"));
                let cluster = as_str(cluster, &at)?;
                if cluster.is_empty() {
                    return err(&at, "empty cluster name".into());
                }
                m.clusters.push(cluster.to_owned());
            }
        }
        if m.hosts.is_empty() && m.clusters.is_empty() {
            return err(raw.at(), "needs \"hosts\" or \"clusters\"".into());
        }
        if let Some(ports) = raw.array("ports")? {
            if ports.is_empty() {
                return err(
                    &raw.path("ports"),
                    "empty list (leave it out to match any port)".into(),
                );
            }
            for (j, port) in ports.iter().enumerate() {
                let at = format!("{}[{j}]", raw.path("ports"));
                let n = as_u64(port, &at)?;
                match u16::try_from(n) {
                    Ok(p) if p > 0 => m.ports.push(p),
                    _ => return err(&at, format!("{n} is not a port (1 to 65535)")),
                }
            }
        }
        m.parse_protocol_keys(raw)?;
        Ok(m)
    }

    fn parse_protocol_keys(&mut self, raw: &Fields<'_>) -> Result<(), ConfigError> {
        let err = |path: &str, message: String| Err(ConfigError::new(path, message));
        match raw.str("protocol")? {
            None => {}
            Some(name) if Protocol::parse(name).is_some() => {
                self.protocol = Protocol::parse(name);
            }
            Some(other) => {
                let mut message = format!("{} is not a protocol dbfault reads (", quote(other));
                push_list(&mut message, Protocol::NAMES);
                message.push(')');
                return err(&raw.path("protocol"), message);
            }
        }
        if let Some(commands) = raw.array("commands")? {
            if commands.is_empty() {
                return err(
                    &raw.path("commands"),
                    "empty list (leave it out to match any statement)".into(),
                );
            }
            for (j, command) in commands.iter().enumerate() {
                let at = format!("{}[{j}]", raw.path("commands"));
                let word = as_str(command, &at)?;
                let found = match self.protocol {
                    Some(p) => p.command(word),
                    None => Protocol::Postgres
                        .command(word)
                        .or_else(|| Protocol::Redis.command(word)),
                };
                let Some(command) = found else {
                    let known = match self.protocol {
                        Some(Protocol::Redis) => format!(
                            "a Redis command name: get, set, hset, lpush... the {} values of the `command` label for Redis",
                            REDIS_COMMANDS.len()
                        ),
                        _ => format!(
                            "one keyword, the first of a statement: select, insert, update, delete, merge, begin, commit, copy... the {} values of the `command` label",
                            SQL_COMMANDS.len()
                        ),
                    };
                    return err(
                        &at,
                        format!(
                            "{} is not a {} command dbfault recognises ({known})",
                            quote(word),
                            match self.protocol {
                                Some(Protocol::Redis) => "Redis",
                                _ => "SQL",
                            }
                        ),
                    );
                };
                if !self.commands.contains(&command) {
                    self.commands.push(command);
                }
            }
        }
        if let Some(needles) = raw.array("queryContains")? {
            if needles.is_empty() {
                return err(
                    &raw.path("queryContains"),
                    "empty list (leave it out to match any statement)".into(),
                );
            }
            for (j, needle) in needles.iter().enumerate() {
                let at = format!("{}[{j}]", raw.path("queryContains"));
                let text = as_str(needle, &at)?;
                if text.is_empty() || text.len() > MAX_CONTAINS {
                    return err(
                        &at,
                        format!("{} bytes (1 to {MAX_CONTAINS} are allowed)", text.len()),
                    );
                }
                self.query_contains.push(text.to_ascii_lowercase());
            }
        }
        match raw.str("access")? {
            None => {}
            Some(access @ ("read" | "write")) if self.protocol.is_some() => {
                self.writes = Some(access == "write");
            }
            Some("read" | "write") => {
                return err(
                    &raw.path("access"),
                    "needs match.protocol: reads and writes are told apart by each protocol's own rules".into(),
                );
            }
            Some(other) => {
                return err(
                    &raw.path("access"),
                    format!(
                        "{} is not an access (expected one of: \"read\", \"write\")",
                        quote(other)
                    ),
                );
            }
        }
        Ok(())
    }

    pub fn matches(&self, up: &UpstreamInfo) -> bool {
        let named =
            self.hosts.iter().any(|p| {
                p.matches(&up.host) || up.sni.as_deref().is_some_and(|sni| p.matches(sni))
            }) || up
                .cluster
                .as_deref()
                .is_some_and(|c| self.clusters.iter().any(|name| name == c));
        named
            && (self.ports.is_empty() || up.port.is_some_and(|p| self.ports.contains(&p)))
            && self.protocol.is_none_or(|p| up.protocol == Some(p))
    }
}

/// Whether `haystack` contains `needle` (lowercase), ignoring ASCII case. Every request a
/// rule judges is searched: the needle is compared only where its first byte is found (a
/// comparison at every position cost about 11,000 instructions for a 55-byte statement).
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last) = haystack.len().checked_sub(needle.len()) else {
        return false;
    };
    let mut from = 0;
    while let Some(at) = haystack
        .get(from..=last)
        .and_then(|h| h.iter().position(|b| b.to_ascii_lowercase() == first))
    {
        let at = from + at;
        if haystack
            .get(at + 1..at + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
        {
            return true;
        }
        from = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_ignore_case_finds_what_a_comparison_everywhere_finds() {
        let naive = |h: &[u8], n: &[u8]| {
            n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
        };
        let haystacks: [&[u8]; 6] = [
            b"",
            b"p",
            b"SELECT * FROM Plants WHERE id = 1",
            b"pplants plant PLANTS",
            b"xPLANTx\xc3\xa9plants",
            b"plan",
        ];
        for h in haystacks {
            for n in [
                &b""[..],
                b"p",
                b"plants",
                b"plantsx",
                b"s",
                b"\xc3\xa9p",
                b"select *",
            ] {
                assert_eq!(contains_ignore_case(h, n), naive(h, n), "{h:?} {n:?}");
            }
        }
    }

    fn up(host: &str, sni: Option<&str>, cluster: Option<&str>, port: Option<u16>) -> UpstreamInfo {
        UpstreamInfo {
            host: host.into(),
            sni: sni.map(Into::into),
            cluster: cluster.map(Into::into),
            port,
            protocol: None,
        }
    }

    #[test]
    fn patterns() {
        let p = |t| HostPattern::parse(t).unwrap();
        assert!(p("*").matches("anything"));
        assert!(p("*.db.svc").matches("pg.db.svc"));
        assert!(p("*.DB.svc").matches("a.b.db.svc"));
        assert!(!p("*.db.svc").matches("db.svc"));
        assert!(!p("*.db.svc").matches("xdb.svc"));
        assert!(p("Firestore.googleapis.com").matches("firestore.googleapis.com"));
        assert!(!p("firestore.googleapis.com").matches("x.firestore.googleapis.com"));
        for bad in [
            "", "foo*", "*foo", "a.*.b", "**.x", "*.", ".x", "x..y", "a b", "*.*",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matching() {
        let m = Match {
            hosts: vec![HostPattern::parse("firestore.googleapis.com").unwrap()],
            clusters: vec!["postgres".into()],
            ..Match::default()
        };
        assert!(m.matches(&up("firestore.googleapis.com", None, None, Some(443))));
        assert!(m.matches(&up(
            "10.0.0.1",
            Some("firestore.googleapis.com"),
            None,
            None
        )));
        assert!(m.matches(&up("postgres", None, Some("postgres"), Some(5432))));
        assert!(!m.matches(&up("redis", None, Some("redis"), Some(6379))));
        let with_port = Match {
            ports: vec![443],
            ..m.clone()
        };
        assert!(with_port.matches(&up("firestore.googleapis.com", None, None, Some(443))));
        assert!(!with_port.matches(&up("firestore.googleapis.com", None, None, Some(80))));
        assert!(!with_port.matches(&up("firestore.googleapis.com", None, None, None)));
    }
}
