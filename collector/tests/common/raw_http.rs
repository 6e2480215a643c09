//! Raw HTTP/1.1: requests sent byte for byte as the test wrote them (no client library
//! would send most of them), and responses read off the wire until the server closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as the collector's JSON error `{"error","field","rule"}`, if it is one.
    pub fn json_error(&self) -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        (v.get("error")?.is_string() && v.get("rule")?.is_string() && v.get("field").is_some()).then_some(v)
    }
}

/// Send `request` bytes as-is (the caller includes `Connection: close`) and read the
/// whole response until the server closes. `None` when the server closed or reset the
/// connection without a response.
pub fn raw_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> Option<RawResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    // The server may answer (and close) before it has read everything; keep going.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Option<RawResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let raw_body = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(raw_body) } else { raw_body.to_vec() };
    Some(RawResponse { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

/// `GET path` with `Connection: close`.
pub fn raw_get(addr: SocketAddr, path: &str) -> Option<RawResponse> {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    )
}

/// Poll `GET path` until it answers `status` or `timeout` passes.
pub fn wait_for_status(addr: SocketAddr, path: &str, status: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if raw_get(addr, path).is_some_and(|r| r.status == status) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
