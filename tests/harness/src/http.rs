//! A plain HTTP/1.1 client for admin endpoints (Envoy's, Prometheus').

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A GET on 127.0.0.1:`port`: (status, body), `None` when it cannot connect or the answer is
/// not well-formed HTTP.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path)
}

/// A request without a body (Envoy's admin takes its POST parameters in the query string).
pub fn http_request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let body = &resp[split + 4..];
    let code = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a chunked transfer; `None` when the framing is broken or cut short.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        let after = &rest[eol + 2..];
        out.extend_from_slice(after.get(..n)?);
        rest = after.get(n..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunk_joins_chunks_and_refuses_a_cut_body() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n5\r\nde"), None);
    }
}
