//! A small blocking HTTP/1.1 client, `http://` and `https://` (rustls), for worker processes
//! (`ferrocast http-request`), never used by the server loop itself: validation, routing and
//! webhook calls run in forked children.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported URL \"{0}\": use http://host[:port]/path or https://host[:port]/path")]
    Url(String),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
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
    /// `https://`
    pub tls: bool,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
}

pub fn parse_url(url: &str) -> Result<Url<'_>, ClientError> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Err(ClientError::Url(url.into())),
    };
    let default_port = if tls { 443 } else { 80 };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse().map_err(|_| ClientError::Url(url.into()))?)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return Err(ClientError::Url(url.into()));
    }
    Ok(Url {
        tls,
        host: host.trim_start_matches('[').trim_end_matches(']'),
        port,
        path,
    })
}

/// A connection to the server: plain, or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(data),
            Conn::Tls(s) => s.write_all(data),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            // A server that closes without close_notify ends the response all the same (the
            // body's length is checked when it is parsed).
            Conn::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

/// Sends one request (`Connection: close`) and reads the whole response, up to `max_body`.
/// `https://` trusts the system's CA bundle and `ca_file`, and checks the host name.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
    ca_file: Option<&Path>,
) -> Result<Response, ClientError> {
    let u = parse_url(url)?;
    let target = format!("{}:{}", u.host, u.port);
    let mut conn = connect(&u, &target, timeout, ca_file)?;
    let err = |e: io::Error| io_error(&target, e);
    let default_port = if u.tls { 443 } else { 80 };
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: ferrocast/{}\r\n",
        u.path,
        if u.port == default_port {
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
    conn.write_all(head.as_bytes()).map_err(err)?;
    conn.write_all(body).map_err(err)?;
    let mut raw = Vec::new();
    let limit = max_body + 64 * 1024;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > limit {
                    return Err(ClientError::TooLarge(target, max_body));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        }
    }
    parse_response(&raw, max_body).ok_or(ClientError::Malformed(target))
}

fn connect(
    u: &Url<'_>,
    target: &str,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<Conn, ClientError> {
    let addr = (u.host, u.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Connect(target.into(), e))?
        .next()
        .ok_or_else(|| ClientError::Connect(target.into(), io::ErrorKind::NotFound.into()))?;
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| ClientError::Connect(target.into(), e))?;
    let io_err = |e| ClientError::Io(target.into(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    if !u.tls {
        return Ok(Conn::Plain(stream));
    }
    let tls_err = |e: String| ClientError::Tls(target.into(), e);
    let config = crate::tls::client_config(ca_file).map_err(tls_err)?;
    let name = ServerName::try_from(u.host.to_string())
        .map_err(|_| tls_err(format!("\"{}\" is not a host name", u.host)))?;
    let tls = ClientConnection::new(config, name).map_err(|e| tls_err(e.to_string()))?;
    Ok(Conn::Tls(Box::new(StreamOwned::new(tls, stream))))
}

/// An I/O error, or the TLS error inside one, said plainly.
fn io_error(target: &str, e: io::Error) -> ClientError {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return ClientError::Io(target.into(), e);
    };
    use rustls::CertificateError as C;
    let reason = match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (add its CA with tls_ca_file)"
                .into()
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the server's certificate is not valid for this host name".into(),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        other => other.to_string(),
    };
    ClientError::Tls(target.into(), reason)
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
        let u = parse_url("https://app.example.com/pusher/webhook").unwrap();
        assert_eq!((u.tls, u.host, u.port), (true, "app.example.com", 443));
        let u = parse_url("https://[::1]:8443/").unwrap();
        assert_eq!((u.tls, u.host, u.port), (true, "::1", 8443));
        assert!(!parse_url("http://x/").unwrap().tls);
        assert!(parse_url("ftp://x/").is_err());
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
