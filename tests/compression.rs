//! permessage-deflate (RFC 7692) from the wire: negotiation on every client path, a broadcast
//! compressed once and shared, clients' compressed messages inflated within
//! `max_message_bytes`, and hostile compressed input closed with the right code.
//!
//! Rules: generous deadlines (`T` = 15 s), wait on events, never assert on elapsed time.
mod common;
use common::*;

use ferrocast::deflate::{Compressor, Inflater, RESPONSE};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// A channel-protocol client that offered permessage-deflate, subscribed to `channel`.
fn deflating_subscriber(s: &Server, channel: &str) -> RawConn {
    let mut c = s.raw();
    let resp = c.handshake_with("/ws", OFFER);
    assert_eq!(
        resp.header("Sec-WebSocket-Extensions"),
        Some(RESPONSE),
        "{resp:?}"
    );
    let sub = format!(r#"{{"action":"subscribe","channel":"{channel}"}}"#);
    c.send(&client_frame(true, OP_TEXT, sub.as_bytes()))
        .unwrap();
    let reply = next_frame(&mut c);
    assert!(!reply.rsv1, "a short reply goes as it is");
    assert!(String::from_utf8_lossy(&reply.payload).contains("subscribed"));
    c
}

fn next_frame(c: &mut RawConn) -> Frame {
    match c.read_frame(T) {
        RawEvent::Frame(f) => f,
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn inflate(payload: &[u8]) -> String {
    let mut out = Vec::new();
    Inflater::default()
        .inflate(payload, 1 << 20, &mut out)
        .expect("a valid deflate stream");
    String::from_utf8(out).expect("UTF-8")
}

/// A Laravel-style event of about 2 KB.
fn event_json() -> String {
    let items: Vec<Value> = (0..20)
        .map(|i| json!({"id": i, "sku": format!("SKU-{i:05}"), "name": "Blue T-shirt", "qty": 1}))
        .collect();
    json!({"event": "App\\Events\\OrderShipped", "order": {"id": 42, "items": items}}).to_string()
}

/// A masked client frame with RSV1 set: a compressed message (or its first fragment).
fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    build_frame(fin, 4, opcode, payload, Some([1, 2, 3, 4]))
}

#[test]
fn a_broadcast_is_compressed_once_and_shared() {
    let s = Server::start(&[], &[]);
    let mut a = deflating_subscriber(&s, "orders");
    let mut b = deflating_subscriber(&s, "orders");
    let mut plain = s.channel_client();
    plain.send_json(&json!({"action": "subscribe", "channel": "orders"}));
    assert_eq!(plain.recv_json(T)["event"], "subscribed");
    let data = event_json();
    s.publish_json(&json!({"channel": "orders", "data": data}));
    let (fa, fb) = (next_frame(&mut a), next_frame(&mut b));
    assert!(fa.rsv1 && fb.rsv1, "compressed for the clients that asked");
    assert_eq!(fa.payload, fb.payload, "the same compressed bytes");
    assert!(
        fa.payload.len() * 3 < data.len(),
        "{} → {}",
        data.len(),
        fa.payload.len()
    );
    assert_eq!(inflate(&fa.payload), data);
    assert_eq!(
        plain.recv_text(T),
        data,
        "plain for the client that did not ask"
    );
    // Once per loop that has compressing clients (each loop is a process with its deflater).
    let loops = common::loop_count() as u64;
    let deflated = || s.metric("deflated_frames_total");
    assert!(
        common::wait_until(T, || deflated() >= 1),
        "never compressed"
    );
    assert!(deflated() <= loops, "compressed {} times", deflated());
}

#[test]
fn every_client_path_negotiates_and_compression_off_declines() {
    let s = Server::start(&[], &[]);
    for path in ["/ws", "/chat", "/app/app-key?protocol=7"] {
        let resp = s.raw().handshake_with(path, OFFER);
        assert_eq!(
            resp.header("Sec-WebSocket-Extensions"),
            Some(RESPONSE),
            "{path}"
        );
    }
    let declined = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let resp = s.raw().handshake_with("/ws", declined);
    assert_eq!(
        resp.header("Sec-WebSocket-Extensions"),
        None,
        "a window we cannot keep"
    );
    let off = Server::start(&["--set", "compression=off"], &[]);
    let mut c = off.raw();
    let resp = c.handshake_with("/ws", OFFER);
    assert_eq!(resp.header("Sec-WebSocket-Extensions"), None);
    c.send(&compressed_frame(true, OP_TEXT, b"x")).unwrap();
    assert_eq!(c.expect_close(T).0, 1002, "RSV1 without an agreement");
}

#[test]
fn compressed_client_messages_are_inflated_whole_or_fragmented() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.handshake_with("/ws", OFFER);
    let sub = Compressor::default()
        .compress(br#"{"action":"subscribe","channel":"deflated-news-channel-name"}"#)
        .expect("compressible");
    c.send(&compressed_frame(true, OP_TEXT, &sub)).unwrap();
    let reply = String::from_utf8_lossy(&next_frame(&mut c).payload).into_owned();
    assert!(reply.contains("deflated-news-channel-name"), "{reply}");
    // The same message in two fragments: RSV1 on the first only.
    let (head, tail) = sub.split_at(sub.len() / 2);
    c.send(&compressed_frame(false, OP_TEXT, head)).unwrap();
    c.send(&client_frame(true, OP_CONT, tail)).unwrap();
    let reply = String::from_utf8_lossy(&next_frame(&mut c).payload).into_owned();
    assert!(reply.contains("deflated-news-channel-name"), "{reply}");
    // RSV1 on a continuation is a protocol error.
    c.send(&compressed_frame(false, OP_TEXT, head)).unwrap();
    c.send(&compressed_frame(true, OP_CONT, tail)).unwrap();
    assert_eq!(c.expect_close(T).0, 1002);
}

#[test]
fn a_bomb_and_garbage_are_closed_and_others_are_served() {
    let s = Server::start(&[], &[]);
    let mut bystander = s.channel_client();
    let bomb = Compressor::default()
        .compress(&vec![b'{'; 4 << 20])
        .unwrap();
    assert!(
        bomb.len() < 10_000,
        "fits max_message_bytes compressed: {}",
        bomb.len()
    );
    let mut c = s.raw();
    c.handshake_with("/ws", OFFER);
    c.send(&compressed_frame(true, OP_TEXT, &bomb)).unwrap();
    let (code, reason) = c.expect_close(T);
    assert_eq!(
        (code, reason.as_str()),
        (1009, "message too big once inflated")
    );
    let mut c = s.raw();
    c.handshake_with("/ws", OFFER);
    c.send(&compressed_frame(true, OP_TEXT, &[0xff, 0xfe, 0xfd, 0xfc]))
        .unwrap();
    assert_eq!(c.expect_close(T).0, 1007, "not a deflate stream");
    bystander.ping_pong();
}

#[test]
fn the_console_feed_negotiates_and_its_frames_inflate() {
    use base64::Engine;
    let s = Server::start(&["--console", "--set", "console.token=t0k"], &[]);
    let login = base64::engine::general_purpose::STANDARD.encode("token:t0k");
    let req = format!(
        "GET /console HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {login}\r\nConnection: close\r\n\r\n"
    );
    let page = http_raw(&s.addr(), req.as_bytes()).expect("the console page");
    assert_eq!(page.status, 200);
    let body = page.body_text();
    let session = body
        .split("var SESSION = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page carries its session")
        .to_string();
    let mut feed = s.raw();
    let resp = feed.handshake_with(&format!("/console/feed?session={session}"), OFFER);
    assert_eq!(resp.header("Sec-WebSocket-Extensions"), Some(RESPONSE));
    let hello = next_frame(&mut feed);
    let text = if hello.rsv1 {
        inflate(&hello.payload)
    } else {
        String::from_utf8(hello.payload).expect("UTF-8")
    };
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["type"], "hello", "{v}");
}
