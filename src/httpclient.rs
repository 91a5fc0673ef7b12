//! A small blocking HTTP/1.1 client for worker processes (`ferrocast http-request`), never used
//! by the server loop itself: validation, routing and webhook calls run in forked children.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "unsupported URL \"{0}\": use http://host[:port]/path (put https endpoints behind a local http proxy)"
    )]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("HTTP exchange with {0} failed: {1}")]
    Io(String, io::Error),
    #[error("malformed HTTP response from {0}")]
    Malformed(String),
    #[error("response from {0} is over {1} bytes")]
    TooLarge(String, usize),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Url<'a> {
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
}

pub fn parse_url(url: &str) -> Result<Url<'_>, ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse().map_err(|_| ClientError::Url(url.into()))?)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(ClientError::Url(url.into()));
    }
    Ok(Url {
        host: host.trim_start_matches('[').trim_end_matches(']'),
        port,
        path,
    })
}

/// Sends one request (`Connection: close`) and reads the whole response, up to `max_body`.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError> {
    let u = parse_url(url)?;
    let target = format!("{}:{}", u.host, u.port);
    let addr = (u.host, u.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Connect(target.clone(), e))?
        .next()
        .ok_or_else(|| ClientError::Connect(target.clone(), io::ErrorKind::NotFound.into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| ClientError::Connect(target.clone(), e))?;
    let io_err = |e| ClientError::Io(target.clone(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: ferrocast/{}\r\n",
        u.path,
        if u.port == 80 {
            u.host.to_string()
        } else {
            target.clone()
        },
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        // A header value from a client must not smuggle another header in.
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let io_err = |e| ClientError::Io(target.clone(), e);
    stream.write_all(head.as_bytes()).map_err(io_err)?;
    stream
        .write_all(body)
        .map_err(|e| ClientError::Io(target.clone(), e))?;
    let mut raw = Vec::new();
    let limit = max_body + 64 * 1024;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > limit {
                    return Err(ClientError::TooLarge(target, max_body));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ClientError::Io(target, e)),
        }
    }
    parse_response(&raw, max_body).ok_or(ClientError::Malformed(target))
}

fn parse_response(raw: &[u8], max_body: usize) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let status = resp.code?;
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let rest = &raw[head_len..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest, max_body)?
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > max_body {
        return None;
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8], max_body: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if out.len() + size > max_body {
            return None;
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8000/auth.php?x=1").unwrap();
        assert_eq!(
            (u.host, u.port, u.path),
            ("127.0.0.1", 8000, "/auth.php?x=1")
        );
        let u = parse_url("http://localhost").unwrap();
        assert_eq!((u.host, u.port, u.path), ("localhost", 80, "/"));
        let u = parse_url("http://[::1]:9/p").unwrap();
        assert_eq!((u.host, u.port), ("::1", 9));
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 100).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.0 403 Forbidden\r\n\r\nno", 100).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, &b"no"[..]));
        assert!(parse_response(b"garbage", 100).is_none());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nab",
                100
            )
            .is_none()
        );
    }
}
