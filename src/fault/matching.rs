//! Which upstreams a rule names: `match: {"hosts": [...], "clusters": [...], "ports": [...]}`.

use crate::config::fields::{as_str, as_u64, Fields};
use crate::config::{quote, ConfigError};

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

/// `match: {hosts, clusters, ports}`. A connection matches when its host or SNI matches one of
/// `hosts`, or its cluster is one of `clusters`; and, when `ports` is set, its port is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub hosts: Vec<HostPattern>,
    pub clusters: Vec<String>,
    pub ports: Vec<u16>,
}

impl Match {
    pub const KEYS: &'static [&'static str] = &["hosts", "clusters", "ports"];

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
        Ok(m)
    }

    pub fn matches(&self, up: &UpstreamInfo) -> bool {
        let named =
            self.hosts.iter().any(|p| {
                p.matches(&up.host) || up.sni.as_deref().is_some_and(|sni| p.matches(sni))
            }) || up
                .cluster
                .as_deref()
                .is_some_and(|c| self.clusters.iter().any(|name| name == c));
        named && (self.ports.is_empty() || up.port.is_some_and(|p| self.ports.contains(&p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(host: &str, sni: Option<&str>, cluster: Option<&str>, port: Option<u16>) -> UpstreamInfo {
        UpstreamInfo {
            host: host.into(),
            sni: sni.map(Into::into),
            cluster: cluster.map(Into::into),
            port,
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
            ports: vec![],
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
