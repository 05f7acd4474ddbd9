//! A small blocking HTTP/1.1 client for the worker's control API: plain
//! HTTP only, one request per connection (`Connection: close`), bounded in
//! time and size. It is what `flowmesh status|get|set|post|probe` and the
//! control API's tests use (container images have no curl).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response read.
pub const MAX_RESPONSE: usize = 16 << 20;

/// Errors of a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not an http:// URL; the control API speaks plain HTTP (e.g. http://127.0.0.1:9400)")]
    Url(String),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} answered something that is not HTTP/1.1: {1}")]
    Protocol(String, String),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The reason phrase of the status line.
    pub reason: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Splits `http://host:port/path` (scheme optional) into the address and
/// the path (at least `/`).
pub fn split_url(url: &str) -> Result<(String, String), Error> {
    let rest = match url.split_once("://") {
        Some(("http", r)) => r,
        Some(_) => return Err(Error::Url(url.into())),
        None => url,
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(Error::Url(url.into()));
    }
    let host = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        || host.ends_with(']') && host.starts_with('[') && host.contains("]:")
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// Sends one request and reads the whole answer within `timeout`.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, Error> {
    let (host, path) = split_url(url)?;
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .map_err(|e| Error::Resolve(host.clone(), e))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut s = stream.ok_or_else(|| {
        Error::Connect(
            host.clone(),
            last.unwrap_or_else(|| std::io::Error::other("no address")),
        )
    })?;
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            Error::Timeout(host.clone(), timeout)
        } else {
            Error::Io(host.clone(), e)
        }
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left())).map_err(io)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: flowmesh\r\n"
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    // A server may answer (413) and stop reading before the whole body is
    // sent; its answer is still read below.
    let wrote = s.write_all(&req);
    let mut raw = vec![];
    let mut buf = [0u8; 16 * 1024];
    loop {
        s.set_read_timeout(Some(left())).map_err(io)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(Error::Protocol(host, "the answer is too large".into()));
                }
                if complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if raw.is_empty() {
                    return Err(match wrote {
                        Err(w) => io(w),
                        Ok(()) => io(e),
                    });
                }
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(host, timeout));
        }
    }
    parse(&raw).map_err(|m| Error::Protocol(host, m))
}

/// True once `raw` holds a whole answer with a `Content-Length`.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| raw.len() >= end + 4 + n)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Parses a whole HTTP/1.1 answer (body by `Content-Length`, chunked, or
/// up to the end of the connection).
fn parse(raw: &[u8]) -> Result<Response, String> {
    let end = find(raw, b"\r\n\r\n").ok_or("the answer ended inside its header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "a header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("status line {status_line:?}"));
    }
    let status: u16 = code
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let (mut length, mut chunked, mut content_type) = (None, false, String::new());
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "content-type" => content_type = v.to_string(),
            _ => {}
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("the answer is shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        reason,
        content_type,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    loop {
        let eol = find(b, b"\r\n").ok_or("a chunk size line does not end")?;
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("a chunk size is not hexadecimal")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("a chunk is cut short")?);
        b = b.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9400/status").unwrap(),
            ("127.0.0.1:9400".into(), "/status".into())
        );
        assert_eq!(
            split_url("localhost:9400").unwrap(),
            ("localhost:9400".into(), "/".into())
        );
        assert_eq!(
            split_url("http://worker/healthz").unwrap(),
            ("worker:80".into(), "/healthz".into())
        );
        assert_eq!(
            split_url("http://[::1]:9400/x").unwrap(),
            ("[::1]:9400".into(), "/x".into())
        );
        assert!(split_url("https://x:1/").is_err());
    }

    #[test]
    fn answers() {
        let r =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nhi")
                .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hi"));
        assert_eq!(r.content_type, "text/plain");
        let r = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi"));
    }
}
