//! HTTP side of the port: upgrades accepted and refused, /up, 404, path prefix.
mod common;
use common::*;

fn upgrade_request(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const VERSION: &str = "Sec-WebSocket-Version: 13";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";

/// A refusal per contract: status, `Connection: close`, JSON body with an `error` string.
fn assert_refusal(resp: &HttpResponse, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    let conn = resp.header("Connection").unwrap_or("").to_ascii_lowercase();
    assert!(
        conn.contains("close"),
        "{what}: refusal without `Connection: close`: {resp:?}"
    );
    let body = resp.json();
    assert!(
        body.get("error")
            .and_then(|e| e.as_str())
            .is_some_and(|e| !e.is_empty()),
        "{what}: body {body}"
    );
}

#[test]
fn upgrade_on_ws_path_is_accepted_with_channel_protocol() {
    let s = Server::start(&[], &[]);
    let mut c = s.ws("/ws");
    c.ping_pong();
}

#[test]
fn upgrade_on_other_path_is_accepted_in_raw_mode() {
    let s = Server::start(&[], &[]);
    for path in ["/", "/chat", "/some/deep/path?x=1"] {
        let mut c = s.ws(path);
        c.raw_ping_pong();
    }
}

#[test]
fn raw_handshake_returns_correct_accept_key() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.handshake("/ws"); // asserts 101 + Sec-WebSocket-Accept
    c.send(&client_frame(true, OP_TEXT, br#"{"action":"ping"}"#))
        .unwrap();
    let v: Value = serde_json::from_str(&c.recv_text(T)).unwrap();
    assert_reply(&v, &json!({"event":"pong"}), "ping");
}

#[test]
fn malformed_request_is_400() {
    let s = Server::start(&[], &[]);
    for req in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nno colon header line\r\n\r\n",
    ] {
        let resp = http_raw(&s.addr(), req)
            .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(req)));
        assert_refusal(&resp, 400, &String::from_utf8_lossy(req));
    }
}

#[test]
fn missing_upgrade_header_is_400() {
    let s = Server::start(&[], &[]);
    let resp = http_raw(
        &s.addr(),
        &upgrade_request("/ws", &[CONNECTION, KEY, VERSION]),
    )
    .expect("answer");
    assert_refusal(&resp, 400, "missing Upgrade");
}

#[test]
fn invalid_upgrade_header_is_400() {
    let s = Server::start(&[], &[]);
    let resp = http_raw(
        &s.addr(),
        &upgrade_request("/ws", &["Upgrade: h2c", CONNECTION, KEY, VERSION]),
    )
    .expect("answer");
    assert_refusal(&resp, 400, "Upgrade: h2c");
}

#[test]
fn missing_connection_upgrade_is_400() {
    let s = Server::start(&[], &[]);
    let resp =
        http_raw(&s.addr(), &upgrade_request("/ws", &[UPGRADE, KEY, VERSION])).expect("answer");
    assert_refusal(&resp, 400, "missing Connection");
    let resp = http_raw(
        &s.addr(),
        &upgrade_request("/ws", &[UPGRADE, "Connection: keep-alive", KEY, VERSION]),
    )
    .expect("answer");
    assert_refusal(&resp, 400, "Connection: keep-alive");
}

#[test]
fn connection_header_with_token_list_is_accepted() {
    // Browsers (Firefox) send `Connection: keep-alive, Upgrade`.
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.send(&upgrade_request(
        "/ws",
        &[
            "upgrade: WebSocket",
            "Connection: keep-alive, Upgrade",
            KEY,
            VERSION,
        ],
    ))
    .unwrap();
    let resp = c.read_http_response(T).expect("answer");
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
}

#[test]
fn missing_or_invalid_key_is_400() {
    let s = Server::start(&[], &[]);
    let resp = http_raw(
        &s.addr(),
        &upgrade_request("/ws", &[UPGRADE, CONNECTION, VERSION]),
    )
    .expect("answer");
    assert_refusal(&resp, 400, "missing key");
    let resp = http_raw(
        &s.addr(),
        &upgrade_request(
            "/ws",
            &[UPGRADE, CONNECTION, VERSION, "Sec-WebSocket-Key: abc"],
        ),
    )
    .expect("answer");
    assert_refusal(&resp, 400, "key not 16 bytes base64");
}

#[test]
fn version_8_is_426_with_version_13_header() {
    let s = Server::start(&[], &[]);
    // Real client, custom version header.
    let err = s
        .try_ws("/ws", &[("Sec-WebSocket-Version", "8")])
        .err()
        .expect("version 8 must be refused");
    let ConnectError::Refused(r) = err else {
        panic!("expected an HTTP refusal, got {err:?}")
    };
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
    // Raw: check the full refusal shape as well.
    let resp = http_raw(
        &s.addr(),
        &upgrade_request(
            "/ws",
            &[UPGRADE, CONNECTION, KEY, "Sec-WebSocket-Version: 8"],
        ),
    )
    .expect("answer");
    assert_refusal(&resp, 426, "version 8");
    assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn origin_restricted_by_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"allowed_origins": ["http://good.example", "https://*.example.com"]}),
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    for origin in [
        "http://evil.example",
        "http://good.example:8080",
        "https://good.example",
        "http://app.example.com",
        "https://example.org",
    ] {
        let err = s
            .try_ws("/ws", &[("Origin", origin)])
            .err()
            .unwrap_or_else(|| panic!("origin {origin} must be refused"));
        assert_eq!(err.status(), Some(403), "origin {origin}: {err:?}");
    }
    for origin in ["http://good.example", "https://app.example.com"] {
        let mut c = s
            .try_ws("/ws", &[("Origin", origin)])
            .unwrap_or_else(|e| panic!("origin {origin} must be accepted: {e:?}"));
        c.ping_pong();
    }
    // No Origin at all is allowed.
    let mut c = s.ws("/ws");
    c.ping_pong();
    // Raw path is subject to the same check.
    let err = s
        .try_ws("/raw", &[("Origin", "http://evil.example")])
        .err()
        .expect("refused");
    assert_eq!(err.status(), Some(403));
    // Full refusal shape.
    let resp = http_raw(
        &s.addr(),
        &upgrade_request(
            "/ws",
            &[
                UPGRADE,
                CONNECTION,
                KEY,
                VERSION,
                "Origin: http://evil.example",
            ],
        ),
    )
    .expect("answer");
    assert_refusal(&resp, 403, "bad origin");
}

#[test]
fn origin_restricted_by_environment() {
    let s = Server::start(
        &[],
        &[(
            "FERROCAST_ALLOWED_ORIGINS",
            "http://a.example,http://b.example",
        )],
    );
    for ok in ["http://a.example", "http://b.example"] {
        let mut c = s
            .try_ws("/ws", &[("Origin", ok)])
            .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        c.ping_pong();
    }
    let err = s
        .try_ws("/ws", &[("Origin", "http://c.example")])
        .err()
        .expect("refused");
    assert_eq!(err.status(), Some(403));
}

#[test]
fn oversized_request_is_431() {
    let s = Server::start(&[], &[]);
    let mut req =
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            .to_vec();
    req.extend_from_slice(format!("X-Padding: {}\r\n", "a".repeat(12_000)).as_bytes());
    req.extend_from_slice(
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let resp = http_raw(&s.addr(), &req).expect("an answer to an oversized request");
    assert_refusal(&resp, 431, "oversized");
    // The server is fine afterwards.
    s.ws("/ws").ping_pong();
}

#[test]
fn oversized_request_limit_follows_config() {
    let s = Server::start(&["--set", "max_request_bytes=600"], &[]);
    let mut req = b"GET /ws HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    req.extend_from_slice(format!("X-Padding: {}\r\n", "b".repeat(700)).as_bytes());
    req.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let resp = http_raw(&s.addr(), &req).expect("answer");
    assert_refusal(&resp, 431, "over max_request_bytes=600");
    // A normal handshake (well under 600 bytes) still works.
    s.ws("/ws").ping_pong();
}

#[test]
fn plain_http_to_other_path_is_404() {
    let s = Server::start(&[], &[]);
    for path in ["/", "/nothing", "/index.html?x=1"] {
        let resp = s.get(path);
        assert_refusal(&resp, 404, path);
    }
}

#[test]
fn up_reports_ok_and_connection_count() {
    let s = Server::start(&[], &[]);
    let before = s.get("/up");
    assert_eq!(before.status, 200, "{before:?}");
    assert!(
        before.header("Content-Type").unwrap_or("").contains("json"),
        "{before:?}"
    );
    let v = before.json();
    assert_eq!(v["status"], "ok", "{v}");
    let n0 = v["connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("connections not a number: {v}"));
    let mut a = s.ws("/ws");
    let mut b = s.ws("/raw");
    a.ping_pong();
    b.raw_ping_pong();
    let n1 = s.get("/up").json()["connections"].as_u64().unwrap();
    assert_eq!(n1, n0 + 2, "two more WebSocket connections");
    a.close();
    b.close();
    assert!(
        wait_until(T, || s.get("/up").json()["connections"].as_u64()
            == Some(n0)),
        "connections back to {n0} after both closed"
    );
}

#[test]
fn path_prefix_from_flag() {
    let s = Server::start(&["--path", "/rt"], &[]);
    let mut c = s.ws("/rt/ws");
    c.ping_pong();
    let mut r = s.ws("/rt/anything");
    r.raw_ping_pong();
    let up = s.get("/rt/up");
    assert_eq!(up.status, 200, "{up:?}");
    assert_eq!(up.json()["status"], "ok");
    assert_eq!(s.get("/up").status, 404, "/up outside the prefix");
}

#[test]
fn path_prefix_from_environment() {
    let s = Server::start(&[], &[("FERROCAST_PATH", "/realtime")]);
    s.ws("/realtime/ws").ping_pong();
    assert_eq!(s.get("/realtime/up").status, 200);
}

#[test]
fn handshake_timeout_closes_slow_requests() {
    let s = Server::start(&["--set", "handshake_timeout_secs=1"], &[]);
    // Partial request: closed, with 408 since something was received.
    let mut c = s.raw();
    c.send(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let resp = c
        .read_http_response(T)
        .expect("408 for an incomplete request");
    assert_eq!(resp.status, 408, "{resp:?}");
    let (_, eof) = c.read_to_end(T);
    assert!(eof, "connection closed after 408");
    // Nothing sent at all: just closed.
    let mut idle = s.raw();
    let (bytes, eof) = idle.read_to_end(T);
    assert!(
        eof,
        "idle connection must be closed after handshake_timeout_secs"
    );
    let _ = bytes;
    // The server still works.
    s.ws("/ws").ping_pong();
}
