//! HTTP/1.1 request heads on the WebSocket port: parsing with a size limit, the upgrade checks of
//! RFC 6455 §4.2.1, and plain responses.
//!
//! Parsing borrows from the connection's buffer (httparse, a fixed header array on the stack): no
//! allocation per header.

use std::fmt::Write as _;

use base64::Engine;

/// Most headers accepted in one request; more is answered 431.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head, borrowing the connection's read buffer.
pub struct Request<'b> {
    pub method: &'b str,
    /// Path and query as sent.
    pub target: &'b str,
    pub headers: Vec<(&'b str, &'b [u8])>,
    /// Bytes of the head, including the blank line; what follows is body or WebSocket frames.
    pub head_len: usize,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
}

impl<'b> Request<'b> {
    pub fn header(&self, name: &str) -> Option<&'b str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Every value of a header that may appear several times.
    pub fn headers_named(&self, name: &str) -> Vec<&'b str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect()
    }

    pub fn path(&self) -> &'b str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &'b str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// Whether a comma-separated header contains `token` (case-insensitive), as `Connection:
    /// keep-alive, Upgrade` does.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// HTTP/1.1 without `Connection: close`: the connection may carry another request.
    pub fn keep_alive(&self) -> bool {
        self.minor_version == 1 && !self.header_has_token("connection", "close")
    }

    /// The declared body length. Every `Content-Length` header must hold the same run of ASCII
    /// digits (RFC 9112 §6.3): a sign, a space inside or a list of different values is a
    /// request we cannot frame, never a number we guess at. A number past `u64` reads as
    /// `u64::MAX` (too large for any limit).
    pub fn content_length(&self) -> Result<Option<u64>, BadLength> {
        let mut found: Option<u64> = None;
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            for item in value.split(|&b| b == b',') {
                let digits = item.trim_ascii();
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(BadLength);
                }
                let n = digits.iter().fold(0u64, |n, d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                if found.is_some_and(|f| f != n) {
                    return Err(BadLength);
                }
                found = Some(n);
            }
        }
        Ok(found)
    }
}

/// A `Content-Length` that does not frame a request: answered 400 and the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength;

/// Where one plain-HTTP request ends in the connection's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The whole request is buffered: its body is `buf[head_len..end]`.
    Complete { end: usize },
    /// The head is in, the body is not yet.
    NeedBody,
    /// Refused with this status; the connection is closed after the answer, since the bytes
    /// that follow cannot be told apart from the body.
    Refuse(u16, &'static str),
}

/// Frames a request whose head is parsed, given how many bytes are buffered. The arithmetic is
/// checked: a declared length is compared with the limit before it is added to anything.
pub fn framing(req: &Request, buffered: usize, max_body: usize) -> Framing {
    if req.header("transfer-encoding").is_some() {
        return Framing::Refuse(411, "send the body with Content-Length");
    }
    let declared = match req.content_length() {
        Ok(n) => n.unwrap_or(0),
        Err(BadLength) => return Framing::Refuse(400, "invalid Content-Length"),
    };
    let Some(body) = usize::try_from(declared).ok().filter(|&n| n <= max_body) else {
        return Framing::Refuse(413, "body over max_body_bytes");
    };
    match req.head_len.checked_add(body) {
        Some(end) if end <= buffered => Framing::Complete { end },
        Some(_) => Framing::NeedBody,
        None => Framing::Refuse(413, "body over max_body_bytes"),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Head larger than the limit or too many headers: 431.
    TooLarge,
    /// Not HTTP: 400.
    Malformed,
}

/// Parses the request head at the front of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8], max_bytes: usize) -> Result<Option<Request<'_>>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            if head_len > max_bytes {
                return Err(ParseError::TooLarge);
            }
            let Some(minor_version) = req.version else {
                return Err(ParseError::Malformed);
            };
            Ok(Some(Request {
                minor_version,
                method: req.method.unwrap_or(""),
                target: req.path.unwrap_or(""),
                headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
                head_len,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => Err(ParseError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooLarge),
        Err(_) => Err(ParseError::Malformed),
    }
}

/// Why an upgrade request is refused, with the status it gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    BadRequest(&'static str),
    VersionUnsupported,
    OriginForbidden,
}

impl Refusal {
    pub fn response(&self) -> Vec<u8> {
        match self {
            Refusal::BadRequest(why) => response(400, &[], &error_body(why)),
            Refusal::VersionUnsupported => response(
                426,
                &[("Sec-WebSocket-Version", "13")],
                &error_body("only WebSocket version 13 is supported"),
            ),
            Refusal::OriginForbidden => response(403, &[], &error_body("origin not allowed")),
        }
    }
}

/// Is this request trying to open a WebSocket? Any of the upgrade headers counts, so that a
/// request with some of them wrong gets 400 rather than being served as plain HTTP.
pub fn wants_upgrade(req: &Request) -> bool {
    req.header_has_token("upgrade", "websocket")
        || req.header_has_token("connection", "upgrade")
        || req.header("sec-websocket-key").is_some()
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value.
pub fn check_upgrade(req: &Request, allowed_origins: &[String]) -> Result<String, Refusal> {
    if req.method != "GET" || req.minor_version != 1 {
        return Err(Refusal::BadRequest(
            "WebSocket upgrades must be HTTP/1.1 GET requests",
        ));
    }
    if !req.header_has_token("upgrade", "websocket") {
        return Err(Refusal::BadRequest("missing \"Upgrade: websocket\""));
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(Refusal::BadRequest("missing \"Connection: Upgrade\""));
    }
    let key = req
        .header("sec-websocket-key")
        .ok_or(Refusal::BadRequest("missing Sec-WebSocket-Key"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| Refusal::BadRequest("Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(Refusal::BadRequest(
            "Sec-WebSocket-Key must encode 16 bytes",
        ));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(Refusal::VersionUnsupported);
    }
    if let Some(origin) = req.header("origin")
        && !origin_allowed(origin, allowed_origins)
    {
        return Err(Refusal::OriginForbidden);
    }
    Ok(accept_key(key))
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2): base64 of the SHA-1 of the key
/// followed by the protocol's GUID.
pub fn accept_key(client_key: &str) -> String {
    use sha1::{Digest, Sha1};
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// `*` allows all; `https://*.example.com` allows subdomains; anything else must match exactly
/// (case-insensitive). Requests without `Origin` come from non-browser clients, which could send
/// any Origin they like, so refusing them protects nothing.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|pattern| {
        if pattern == "*" {
            return true;
        }
        if let Some((scheme, rest)) = pattern.split_once("://*.") {
            let Some((o_scheme, o_host)) = origin.split_once("://") else {
                return false;
            };
            // Compared as bytes: a multibyte host must not be sliced mid-character.
            let (host, suffix) = (o_host.as_bytes(), rest.as_bytes());
            return o_scheme.eq_ignore_ascii_case(scheme)
                && host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host[host.len() - suffix.len() - 1] == b'.';
        }
        pattern.eq_ignore_ascii_case(origin)
    })
}

/// The 101 answer; with `deflate`, the permessage-deflate agreement too.
pub fn switching_protocols(accept: &str, deflate: bool) -> Vec<u8> {
    let extensions = if deflate {
        format!("Sec-WebSocket-Extensions: {}\r\n", crate::deflate::RESPONSE)
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
    )
    .into_bytes()
}

/// Turns a response built by [`response`] into one that keeps the connection open.
pub fn keep_connection_open(resp: &mut Vec<u8>) {
    const CLOSE: &[u8] = b"\r\nConnection: close\r\n";
    const KEEP: &[u8] = b"\r\nConnection: keep-alive\r\n";
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    if let Some(pos) = resp[..head_end + 2]
        .windows(CLOSE.len())
        .position(|w| w == CLOSE)
    {
        resp.splice(pos..pos + CLOSE.len(), KEEP.iter().copied());
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// A complete JSON response that closes the connection after it.
pub fn response(status: u16, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    response_with(status, "application/json", extra_headers, body)
}

pub fn response_typed(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    response_with(status, content_type, &[], body)
}

pub fn response_with(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://a.test\r\n\r\n";

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_rfc_example() {
        let req = parse(GOOD.as_bytes(), 10_000).unwrap().unwrap();
        assert!(wants_upgrade(&req));
        // RFC 6455 §1.3 example key and accept value.
        assert_eq!(
            check_upgrade(&req, &origins(&["*"])).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            (GOOD.replace("GET", "POST"), "400"),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), "400"),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                "400",
            ),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), "400"),
            (GOOD.replace("Version: 13", "Version: 8"), "426"),
            (GOOD.replace("http://a.test", "http://evil.test"), "403"),
        ];
        for (text, status) in cases {
            let req = parse(text.as_bytes(), 10_000).unwrap().unwrap();
            let refusal = check_upgrade(&req, &origins(&["http://a.test"])).unwrap_err();
            let resp = String::from_utf8(refusal.response()).unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
            if status == "426" {
                assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
            }
        }
    }

    #[test]
    fn size_limits() {
        assert_eq!(
            parse(GOOD.as_bytes(), 100).err(),
            Some(ParseError::TooLarge)
        );
        assert!(parse(&GOOD.as_bytes()[..50], 10_000).unwrap().is_none());
        assert_eq!(parse(&[b'a'; 200], 100).err(), Some(ParseError::TooLarge));
        assert_eq!(
            parse(b"\x00\x01 nonsense\r\n\r\n", 100).err(),
            Some(ParseError::Malformed)
        );
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(text.as_bytes(), 10_000).err(),
            Some(ParseError::TooLarge)
        );
    }

    fn framed(head: &str, buffered_body: usize, max_body: usize) -> Framing {
        let text = format!("POST /apps/a/events HTTP/1.1\r\nHost: x\r\n{head}\r\n");
        let req = parse(text.as_bytes(), 10_000).unwrap().unwrap();
        framing(&req, req.head_len + buffered_body, max_body)
    }

    #[test]
    fn content_length_framing_is_checked() {
        assert_eq!(framed("", 0, 10), Framing::Complete { end: 41 });
        assert_eq!(
            framed("Content-Length: 5\r\n", 5, 10),
            framed("Content-Length: 5\r\n", 9, 10)
        );
        assert_eq!(framed("Content-Length: 5\r\n", 4, 10), Framing::NeedBody);
        assert!(matches!(
            framed("Content-Length: 11\r\n", 0, 10),
            Framing::Refuse(413, _)
        ));
        // Head length + Content-Length would wrap to 0 in unchecked usize arithmetic.
        for n in [u64::MAX, u64::MAX - 60, 1 << 63] {
            let head = format!("Content-Length: {n}\r\n");
            assert!(
                matches!(framed(&head, 0, 10), Framing::Refuse(413, _)),
                "{n}"
            );
        }
        let huge = format!("Content-Length: 1{}\r\n", "0".repeat(40));
        assert!(matches!(framed(&huge, 0, 10), Framing::Refuse(413, _)));
        for bad in ["+5", "-1", "5 5", "0x10", "", "5,6", "1e3"] {
            let head = format!("Content-Length: {bad}\r\n");
            assert!(
                matches!(framed(&head, 10, 10), Framing::Refuse(400, _)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            framed("Content-Length: 5\r\nContent-Length: 6\r\n", 10, 10),
            Framing::Refuse(400, _)
        ));
        assert!(matches!(
            framed("Content-Length: 5, 5\r\nContent-Length: 5\r\n", 5, 10),
            Framing::Complete { .. }
        ));
        assert!(matches!(
            framed("Transfer-Encoding: chunked\r\n", 0, 10),
            Framing::Refuse(411, _)
        ));
    }

    #[test]
    fn origin_patterns() {
        let list = origins(&["https://*.example.com", "http://exact.test:8080"]);
        assert!(origin_allowed("https://app.example.com", &list));
        assert!(origin_allowed("https://a.b.example.com", &list));
        assert!(!origin_allowed("https://example.com", &list));
        assert!(!origin_allowed("https://badexample.com", &list));
        assert!(!origin_allowed("http://app.example.com", &list));
        assert!(origin_allowed("HTTP://EXACT.test:8080", &list));
        assert!(!origin_allowed("http://exact.test", &list));
        // Multibyte hosts are compared as bytes, never sliced mid-character.
        assert!(!origin_allowed("https://ééé", &list));
        assert!(!origin_allowed("https://xé.example.co", &list));
    }
}
