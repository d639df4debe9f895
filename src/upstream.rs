//! Upstream identity: the one name a connection's database gets in labels and rule matching.

/// Envoy's catch-all cluster for traffic it forwards to the original destination.
const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// What the host knows about a connection at its first data event (all optional: a property may
/// be missing, and the filter must still name the connection).
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    /// `xds.cluster_name`, e.g. `outbound|5432||pg.db.svc.cluster.local`.
    pub cluster: Option<&'a str>,
    /// `connection.requested_server_name` (SNI), when a TLS inspector ran.
    pub sni: Option<&'a str>,
    /// `destination.address`, `ip:port` or `[ipv6]:port`.
    pub destination: Option<&'a str>,
}

/// The upstream identity, already sanitised for use as a label value.
///
/// - `outbound|<port>|<subset>|<host>` (Istio) → `<host>`
/// - `PassthroughCluster` or no cluster → the SNI, else the destination IP
/// - any other cluster → the cluster name
/// - nothing known at all → `unknown`
pub fn identify(facts: ConnectionFacts<'_>) -> String {
    sanitize_label(raw_identity(facts))
}

/// The identity before sanitising (what rules match against).
pub fn raw_identity<'a>(facts: ConnectionFacts<'a>) -> &'a str {
    match nonempty(facts.cluster) {
        Some(cluster) if cluster != PASSTHROUGH_CLUSTER => {
            istio_outbound_host(cluster).unwrap_or(cluster)
        }
        _ => nonempty(facts.sni)
            .or_else(|| nonempty(facts.destination).map(address_ip))
            .unwrap_or("unknown"),
    }
}

/// The upstream port: from an Istio cluster name (`outbound|5432||pg` → 5432), else from the
/// upstream address, else from the destination address.
pub fn port(facts: ConnectionFacts<'_>, upstream_address: Option<&str>) -> Option<u16> {
    let from_cluster = cluster_port(facts.cluster);
    let from_address = |a: &str| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    from_cluster
        .or_else(|| upstream_address.and_then(from_address))
        .or_else(|| facts.destination.and_then(from_address))
}

/// Whether the identity falls back to the destination address (so that it is worth asking the
/// host for it): no usable cluster and no SNI.
pub fn needs_destination(cluster: Option<&str>, sni: Option<&str>) -> bool {
    nonempty(sni).is_none() && nonempty(cluster).is_none_or(|c| c == PASSTHROUGH_CLUSTER)
}

/// Whether the identity may come from the SNI: no usable cluster.
pub fn needs_sni(cluster: Option<&str>) -> bool {
    nonempty(cluster).is_none_or(|c| c == PASSTHROUGH_CLUSTER)
}

/// Whether client bytes starting with `first` open a TLS session (a handshake record). Only
/// then can the connection carry an SNI: rules matching host names look it up for TLS
/// connections only, which spares plaintext connections a host call (about 5% of Envoy's
/// connection rate, measured).
pub fn starts_tls(first: Option<u8>) -> bool {
    first == Some(0x16)
}

/// The port in an Istio outbound cluster name: `"outbound|5432||pg"` → `Some(5432)`.
pub fn cluster_port(cluster: Option<&str>) -> Option<u16> {
    let mut parts = cluster?.split('|');
    match (parts.next(), parts.next()) {
        (Some("outbound"), Some(port)) => port.parse().ok(),
        _ => None,
    }
}

fn nonempty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// `"outbound|5432||pg.example.com"` → `Some("pg.example.com")`; anything else → `None`.
pub fn istio_outbound_host(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    let (Some("outbound"), Some(_port), Some(_subset), Some(host), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    nonempty(Some(host))
}

/// `"10.0.0.7:5432"` → `"10.0.0.7"`, `"[::1]:5432"` → `"::1"`, a bare address is returned as is.
pub fn address_ip(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match address.rsplit_once(':') {
        // One colon: ip:port. More colons without brackets: a bare IPv6 address.
        Some((ip, _port)) if !ip.as_bytes().contains(&b':') => ip,
        _ => address,
    }
}

/// Keeps `[A-Za-z0-9._-]`, replaces every other character with `_`, so that a value can never
/// break the `name=.=value;.;` tag syntax or the Prometheus exposition.
pub fn sanitize_label(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cluster: Option<&str>, sni: Option<&str>, destination: Option<&str>) -> String {
        identify(ConnectionFacts {
            cluster,
            sni,
            destination,
        })
    }

    #[test]
    fn identity_table() {
        let cases = [
            (
                Some("outbound|5432||pg.db.svc.cluster.local"),
                None,
                None,
                "pg.db.svc.cluster.local",
            ),
            (
                Some("outbound|443|v1|firestore.googleapis.com"),
                Some("x.com"),
                None,
                "firestore.googleapis.com",
            ),
            (
                Some("PassthroughCluster"),
                Some("firestore.googleapis.com"),
                Some("10.0.0.1:443"),
                "firestore.googleapis.com",
            ),
            (
                Some("PassthroughCluster"),
                None,
                Some("10.0.0.1:443"),
                "10.0.0.1",
            ),
            (
                Some("PassthroughCluster"),
                Some(""),
                Some("10.0.0.1:443"),
                "10.0.0.1",
            ),
            (None, None, Some("[2001:db8::1]:5432"), "2001_db8__1"),
            (Some(""), Some("redis.local"), None, "redis.local"),
            (None, None, None, "unknown"),
            (
                Some("postgres"),
                Some("ignored.example"),
                Some("1.2.3.4:5"),
                "postgres",
            ),
            // Not quite Istio's shape: the cluster name is the identity, sanitised.
            (Some("outbound|5432|pg"), None, None, "outbound_5432_pg"),
            (Some("outbound|5432|||"), None, None, "outbound_5432___"),
            (Some("inbound|5432||pg"), None, None, "inbound_5432__pg"),
        ];
        for (cluster, sni, dest, want) in cases {
            assert_eq!(id(cluster, sni, dest), want, "{cluster:?} {sni:?} {dest:?}");
        }
    }

    #[test]
    fn ports() {
        let facts = |cluster, destination| ConnectionFacts {
            cluster,
            sni: None,
            destination,
        };
        assert_eq!(
            port(facts(Some("outbound|5432||pg"), None), Some("1.2.3.4:9")),
            Some(5432)
        );
        assert_eq!(
            port(
                facts(Some("postgres"), Some("1.1.1.1:1")),
                Some("127.0.0.1:6379")
            ),
            Some(6379)
        );
        assert_eq!(port(facts(None, Some("[::1]:443")), None), Some(443));
        assert_eq!(port(facts(None, None), None), None);
    }

    #[test]
    fn which_properties_are_needed() {
        assert!(needs_destination(None, None));
        assert!(needs_destination(Some("PassthroughCluster"), Some("")));
        assert!(!needs_destination(
            Some("PassthroughCluster"),
            Some("db.example.com")
        ));
        assert!(!needs_destination(Some("postgres"), None));
        assert!(needs_sni(None) && needs_sni(Some("PassthroughCluster")));
        assert!(!needs_sni(Some("outbound|443||firestore.googleapis.com")));
        assert!(starts_tls(Some(0x16)));
        assert!(!starts_tls(Some(b'Q')) && !starts_tls(Some(0)) && !starts_tls(None));
        assert_eq!(
            cluster_port(Some("outbound|443||firestore.googleapis.com")),
            Some(443)
        );
        assert_eq!(cluster_port(Some("postgres")), None);
    }

    #[test]
    fn address_forms() {
        assert_eq!(address_ip("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(address_ip("[::1]:5432"), "::1");
        assert_eq!(address_ip("::1"), "::1");
        assert_eq!(address_ip("10.1.2.3"), "10.1.2.3");
        assert_eq!(address_ip("[::1"), "::1");
    }

    #[test]
    fn sanitising() {
        assert_eq!(sanitize_label("pg.example.com"), "pg.example.com");
        assert_eq!(sanitize_label("a;.;b=.=c d/é"), "a_._b_._c_d__");
        assert_eq!(sanitize_label("My_DB-1"), "My_DB-1");
    }
}
