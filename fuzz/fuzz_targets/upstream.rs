//! Upstream identity and host matching on arbitrary cluster names, SNIs and addresses: never
//! panic, and labels only ever hold [A-Za-z0-9._-].
#![no_main]

use dbfault::fault::matching::{HostPattern, Match, UpstreamInfo};
use dbfault::upstream::{self, ConnectionFacts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{0}');
    let (cluster, sni, dest, pattern) = (parts.next(), parts.next(), parts.next(), parts.next());
    let facts = ConnectionFacts {
        cluster,
        sni,
        destination: dest,
    };
    let label = upstream::identify(facts);
    assert!(
        label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
        "{label:?}"
    );
    let _ = upstream::port(facts, dest);
    if let Some(Ok(p)) = pattern.map(HostPattern::parse) {
        let m = Match {
            hosts: vec![p],
            ports: vec![443],
            ..Match::default()
        };
        let info = UpstreamInfo {
            host: upstream::raw_identity(facts).to_ascii_lowercase(),
            sni: sni.map(str::to_ascii_lowercase),
            cluster: cluster.map(str::to_owned),
            port: upstream::port(facts, dest),
            protocol: None,
        };
        let _ = m.matches(&info);
    }
});
