//! Channel protocol on /ws and raw mode on other paths.
mod common;
use common::*;

fn assert_error_reply(c: &mut Client, sent: &str) {
    let v = c.recv_json(T);
    assert_eq!(v["event"], "error", "reply to {sent:?}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message for {sent:?}: {v}"
    );
}

#[test]
fn subscribe_and_unsubscribe_replies() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("news");
    c.subscribe("sport");
    c.unsubscribe("news");
    c.ping_pong();
}

#[test]
fn ping_action_gets_pong() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    for _ in 0..3 {
        c.ping_pong();
    }
}

#[test]
fn bad_json_is_an_error_and_does_not_disconnect() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    for bad in [
        "{not json",
        "",
        "   ",
        "\"just a string\"",
        "[1,2,3]",
        "42",
        "null",
    ] {
        c.send_text(bad);
        assert_error_reply(&mut c, bad);
    }
    c.ping_pong();
}

#[test]
fn unknown_or_missing_action_is_an_error() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    for bad in [
        r#"{"action":"dance"}"#,
        r#"{"action":42}"#,
        r#"{"channel":"news"}"#,
        r#"{"action":"subscribe"}"#,
        r#"{"action":"subscribe","channel":42}"#,
        r#"{"action":"unsubscribe"}"#,
    ] {
        c.send_text(bad);
        assert_error_reply(&mut c, bad);
    }
    c.ping_pong();
}

#[test]
fn invalid_channel_names_are_errors() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    let long = "x".repeat(201);
    for name in [
        "",
        "has space",
        "slash/name",
        "ümlaut",
        "star*",
        "quote\"",
        "tab\tname",
        long.as_str(),
    ] {
        let msg = json!({"action":"subscribe","channel":name}).to_string();
        c.send_text(&msg);
        assert_error_reply(&mut c, &msg);
        let msg = json!({"action":"unsubscribe","channel":name}).to_string();
        c.send_text(&msg);
        assert_error_reply(&mut c, &msg);
    }
    c.ping_pong();
}

#[test]
fn valid_channel_name_edges() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    let max = "y".repeat(200);
    // (`private-` / `presence-` names need Pusher authorization and are not tested here.)
    for name in [
        "a",
        "chat-room",
        "A-Za-z0-9_-=@,.;",
        "user@example.com",
        "room.1;x=2,y",
        max.as_str(),
    ] {
        c.subscribe(name);
    }
}

#[test]
fn invalid_subscription_does_not_subscribe() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.send_json(&json!({"action":"subscribe","channel":"bad name"}));
    assert_error_reply(&mut c, "bad name");
    c.subscribe("good");
    // A line for the invalid name is not routable to c; the next one for "good" must be the first c sees.
    s.publish_json(&json!({"channel":"bad name","data":"nope"}));
    s.publish_json(&json!({"channel":"good","data":"yes"}));
    assert_eq!(c.recv_text(T), "yes");
}

#[test]
fn raw_mode_ping_and_other_text_ignored() {
    let s = Server::start(&[], &[]);
    let mut c = s.ws("/raw");
    c.send_text("hello there");
    c.send_text(r#"{"action":"subscribe","channel":"news"}"#);
    // Ignored: the next thing the client receives is the pong.
    c.raw_ping_pong();
}

#[test]
fn raw_mode_client_does_not_get_channel_messages() {
    let s = Server::start(&[], &[]);
    let mut raw = s.ws("/raw");
    raw.send_text(r#"{"action":"subscribe","channel":"news"}"#);
    raw.raw_ping_pong();
    s.publish_json(&json!({"channel":"news","data":"channel-only"}));
    s.publish_line("global line");
    assert_eq!(raw.recv_text(T), "global line");
}

#[test]
fn binary_message_on_ws_does_not_disconnect() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.ws.send(tungstenite::Message::Binary(vec![1u8, 2, 3].into()))
        .unwrap();
    // Either ignored or answered with an error; the connection stays usable.
    c.send_json(&json!({"action":"ping"}));
    loop {
        let v = c.recv_json(T);
        if is_reply(&v, &json!({"event":"pong"})) {
            break;
        }
        assert_eq!(v["event"], "error", "unexpected reply {v}");
    }
}

#[test]
fn client_close_is_answered() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.handshake("/ws");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send(&client_frame(true, OP_CLOSE, &payload)).unwrap();
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1000, "server echoes the close code");
    let (_, eof) = c.read_to_end(T);
    assert!(
        eof,
        "server closes the TCP connection after the close handshake"
    );
}

#[test]
fn fragmented_text_message_is_reassembled() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.handshake("/ws");
    let msg = br#"{"action":"subscribe","channel":"frag"}"#;
    let (a, b) = msg.split_at(10);
    c.send(&client_frame(false, OP_TEXT, a)).unwrap();
    // A control frame in the middle of a fragmented message is allowed.
    c.send(&client_frame(true, OP_PING, b"mid")).unwrap();
    c.send(&client_frame(true, OP_CONT, b)).unwrap();
    let mut got_pong = false;
    loop {
        match c.read_frame(T) {
            RawEvent::Frame(f) if f.opcode == OP_PONG => {
                assert_eq!(f.payload, b"mid");
                got_pong = true;
            }
            RawEvent::Frame(f) if f.opcode == OP_TEXT => {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                assert_reply(
                    &v,
                    &json!({"event":"subscribed","channel":"frag"}),
                    "fragmented subscribe",
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if !got_pong {
        match c.read_frame(T) {
            RawEvent::Frame(f) => assert_eq!((f.opcode, f.payload), (OP_PONG, b"mid".to_vec())),
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

#[test]
fn websocket_ping_frame_is_answered_with_pong() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.handshake("/raw");
    c.send(&client_frame(true, OP_PING, b"hello")).unwrap();
    match c.read_frame(T) {
        RawEvent::Frame(f) => {
            assert_eq!(f.opcode, OP_PONG);
            assert_eq!(f.payload, b"hello");
        }
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[test]
fn handshake_and_first_frame_in_one_write() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    bytes.extend(client_frame(
        true,
        OP_TEXT,
        br#"{"action":"subscribe","channel":"early"}"#,
    ));
    c.send(&bytes).unwrap();
    let resp = c.read_http_response(T).expect("answer");
    assert_eq!(resp.status, 101, "{resp:?}");
    let v: Value = serde_json::from_str(&c.recv_text(T)).unwrap();
    assert_reply(
        &v,
        &json!({"event":"subscribed","channel":"early"}),
        "frame sent with the handshake",
    );
}

#[test]
fn handshake_arriving_in_pieces() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    let req = format!(
        "GET /raw HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    for chunk in req.as_bytes().chunks(7) {
        c.send(chunk).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let resp = c.read_http_response(T).expect("answer");
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    // A frame split in pieces too.
    let f = client_frame(true, OP_TEXT, b"ping");
    for b in f.chunks(1) {
        c.send(b).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(c.recv_text(T), "pong");
}
