//! A minimal client of Prometheus's HTTP API for `dbfault status`: a plain HTTP/1.0 GET (the
//! server answers without chunking and closes), instant queries, PromQL quoting. No HTTP or TLS
//! crate: `https://` is refused with advice to use `kubectl port-forward`.

use super::status::Sample;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A Prometheus base URL split for a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Base {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) prefix: String,
}

pub(super) fn base(url: &str) -> Result<Base, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "{url}: https is not supported; use a plain HTTP address (kubectl port-forward)"
            ))
        }
        Some((other, _)) => return Err(format!("{url}: unsupported scheme {other}")),
        None => url,
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.is_empty() => (
            h.to_owned(),
            p.parse()
                .map_err(|_| format!("{url}: invalid port {p:?}"))?,
        ),
        _ => (authority.to_owned(), 80),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok(Base {
        host,
        port,
        prefix: prefix.trim_end_matches('/').to_owned(),
    })
}

/// Percent-encodes a query parameter.
pub(super) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET base/path` over HTTP/1.0: the status code and body.
pub(super) fn get(base: &Base, path: &str) -> Result<(u16, String), String> {
    let addr = (base.host.as_str(), base.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", base.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", base.host))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {}{path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
        base.prefix, base.host
    )
    .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.take(64 << 20)
        .read_to_end(&mut resp)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer without HTTP headers")?;
    let (head, body) = resp.split_at(split);
    let head = String::from_utf8_lossy(head);
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("an answer without an HTTP status")?;
    let body = body.get(4..).unwrap_or_default();
    Ok((code, String::from_utf8_lossy(body).into_owned()))
}

/// An instant query's vector result.
pub(super) fn query(base: &Base, promql: &str) -> Result<Vec<Sample>, String> {
    let (code, body) = get(base, &format!("/api/v1/query?query={}", encode(promql)))?;
    let v: Value = serde_json::from_str(&body)
        .map_err(|_| format!("HTTP {code}: not a Prometheus API answer"))?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        let why = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason");
        return Err(format!("query {promql}: {why}"));
    }
    let result = v
        .pointer("/data/result")
        .and_then(Value::as_array)
        .ok_or("an answer without data.result")?;
    Ok(result
        .iter()
        .filter_map(|r| {
            let labels = r
                .get("metric")?
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            let value = r.pointer("/value/1")?.as_str()?.parse().ok()?;
            Some((labels, value))
        })
        .collect())
}

/// PromQL label value quoting.
pub(super) fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Prometheus range syntax for a duration (whole seconds, at least 1s).
pub(super) fn range(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}
