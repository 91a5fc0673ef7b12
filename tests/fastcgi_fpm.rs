//! The FastCGI codec (`ferrocast::fastcgi`) against a real php-fpm: requests as the loop will
//! send them, over one kept-alive connection, answers read back record by record.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::fpm::Fpm;
use ferrocast::fastcgi::{self, End, Reply};

const SCRIPT: &str = r#"<?php
if (($_COOKIE['banned'] ?? '') === '1') { http_response_code(403); echo "forbidden\n"; exit; }
echo "user-", $_COOKIE['sid'] ?? 'none', "\n";
echo $_SERVER['REQUEST_METHOD'], " ", $_SERVER['REQUEST_URI'], " ", $_SERVER['REMOTE_ADDR'], "\n";
echo file_get_contents('php://input');
"#;

/// One request on `conn`: its answer's end, status and body.
fn exchange(conn: &mut UnixStream, params: &[(&str, &str)], stdin: &[u8]) -> (End, u16, Vec<u8>) {
    // PHP reads the body only up to CONTENT_LENGTH.
    let length = stdin.len().to_string();
    let all = params
        .iter()
        .copied()
        .chain([("CONTENT_LENGTH", length.as_str())]);
    let pairs = fastcgi::encode_pairs(all.map(|(k, v)| (k, v.as_bytes()))).expect("pairs");
    conn.write_all(&fastcgi::encode_request(1, &pairs, stdin))
        .expect("send request");
    let mut reply = Reply::new(1, 1 << 20);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.end().is_none() {
        let n = conn.read(&mut chunk).expect("read answer");
        assert!(n > 0, "php-fpm closed the connection before END_REQUEST");
        buf.extend_from_slice(&chunk[..n]);
        let used = reply.read(&buf).expect("FastCGI records");
        buf.drain(..used);
    }
    assert!(buf.is_empty(), "bytes after END_REQUEST");
    let end = reply.end().expect("end");
    let (out, truncated) = reply.into_output();
    assert!(!truncated);
    let cgi = fastcgi::parse_response(&out).expect("a CGI response");
    (end, cgi.status, cgi.body.to_vec())
}

#[test]
fn requests_over_one_kept_connection() {
    let fpm = Fpm::start(2);
    let script = fpm.script("validate.php", SCRIPT);
    let script = script.to_str().expect("path");
    let mut conn = UnixStream::connect(fpm.socket()).expect("connect to php-fpm");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let base = [
        ("SCRIPT_FILENAME", script),
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/ws?room=1"),
        ("REMOTE_ADDR", "203.0.113.7"),
        ("CONTENT_TYPE", "text/plain"),
    ];
    let with = |cookie: &'static str| {
        let mut p = base.to_vec();
        p.push(("HTTP_COOKIE", cookie));
        p
    };
    let (end, status, body) = exchange(&mut conn, &with("sid=abc; x=1"), b"hello");
    assert_eq!((end.protocol_status, status), (0, 200));
    assert_eq!(
        String::from_utf8_lossy(&body),
        "user-abc\nPOST /ws?room=1 203.0.113.7\nhello"
    );
    // The same connection again (FCGI_KEEP_CONN), with a body over one record.
    let big = vec![b'z'; 150_000];
    let (_, status, body) = exchange(&mut conn, &with("sid=def"), &big);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"user-def\n") && body.ends_with(&big));
    let (_, status, body) = exchange(&mut conn, &with("banned=1"), b"");
    assert_eq!((status, body.as_slice()), (403, &b"forbidden\n"[..]));
}

#[test]
fn output_past_the_bound_is_read_and_dropped() {
    let fpm = Fpm::start(1);
    let script = fpm.script("flood.php", "<?php echo str_repeat('x', 1000000);");
    let mut conn = UnixStream::connect(fpm.socket()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // Without REQUEST_METHOD, PHP sends the headers only (as for HEAD).
    let pairs = fastcgi::encode_pairs([
        ("SCRIPT_FILENAME", script.to_str().expect("path").as_bytes()),
        ("REQUEST_METHOD", b"GET"),
    ])
    .expect("pairs");
    conn.write_all(&fastcgi::encode_request(1, &pairs, b""))
        .expect("send");
    let mut reply = Reply::new(1, 1000);
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
    while reply.end().is_none() {
        let n = conn.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before END_REQUEST");
        buf.extend_from_slice(&chunk[..n]);
        let used = reply.read(&buf).expect("records");
        buf.drain(..used);
    }
    let (out, truncated) = reply.into_output();
    assert_eq!(
        (out.len(), truncated),
        (1000, true),
        "{}\n{}",
        String::from_utf8_lossy(&out),
        fpm.log()
    );
}
