//! WebSocket session rules: close codes, keep-alive, backpressure.
mod common;
use common::*;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn message_over_max_message_bytes_is_closed_1009() {
    let s = Server::start(&["--set", "max_message_bytes=1000"], &[]);
    let mut ok = s.channel_client();
    // At the limit: fine (the reply is an error for bad JSON, but no close).
    ok.send_text(&"a".repeat(1000));
    let v = ok.recv_json(T);
    assert_eq!(v["event"], "error");
    let mut c = s.channel_client();
    c.send_text(&"a".repeat(2000));
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1009);
    // The other client is unaffected.
    ok.ping_pong();
}

#[test]
fn fragmented_message_over_limit_after_reassembly_is_1009() {
    let s = Server::start(&["--set", "max_message_bytes=1000"], &[]);
    let mut c = s.raw();
    c.handshake("/raw");
    // Each fragment is under the limit; together they are over it.
    c.send(&client_frame(false, OP_TEXT, &[b'x'; 600])).unwrap();
    let _ = c.send(&client_frame(true, OP_CONT, &[b'y'; 600]));
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1009);
}

#[test]
fn binary_message_over_limit_is_1009() {
    let s = Server::start(&["--set", "max_message_bytes=1000"], &[]);
    let mut c = s.ws("/raw");
    c.ws.send(tungstenite::Message::Binary(vec![0u8; 5000].into()))
        .unwrap();
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1009);
}

#[test]
fn invalid_utf8_text_is_closed_1007() {
    let s = Server::start(&[], &[]);
    for path in ["/ws", "/raw"] {
        let mut c = s.raw();
        c.handshake(path);
        c.send(&client_frame(
            true,
            OP_TEXT,
            &[b'o', b'k', 0xff, 0xfe, 0xc3],
        ))
        .unwrap();
        let (code, _) = c.expect_close(T);
        assert_eq!(code, 1007, "on {path}");
    }
}

#[test]
fn invalid_utf8_split_across_fragments_is_1007() {
    let s = Server::start(&[], &[]);
    let mut c = s.raw();
    c.handshake("/ws");
    // A 2-byte sequence cut in the middle is fine...
    c.send(&client_frame(false, OP_TEXT, &[b'{', 0xc3]))
        .unwrap();
    // ...but this continuation does not complete it.
    let _ = c.send(&client_frame(true, OP_CONT, &[0x28, b'}']));
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1007);
}

#[test]
fn unmasked_client_frame_is_closed_1002() {
    let s = Server::start(&[], &[]);
    for path in ["/ws", "/raw"] {
        let mut c = s.raw();
        c.handshake(path);
        c.send(&build_frame(true, 0, OP_TEXT, b"ping", None))
            .unwrap();
        let (code, _) = c.expect_close(T);
        assert_eq!(code, 1002, "on {path}");
    }
}

#[test]
fn protocol_errors_are_closed_1002() {
    let s = Server::start(&[], &[]);
    let mask = Some([1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "reserved bit RSV1",
            build_frame(true, 0b100, OP_TEXT, b"ping", mask),
        ),
        (
            "reserved bits RSV2+RSV3",
            build_frame(true, 0b011, OP_TEXT, b"ping", mask),
        ),
        ("reserved opcode 0x3", build_frame(true, 0, 0x3, b"x", mask)),
        (
            "reserved control opcode 0xB",
            build_frame(true, 0, 0xB, b"x", mask),
        ),
        (
            "fragmented ping",
            build_frame(false, 0, OP_PING, b"x", mask),
        ),
        (
            "ping over 125 bytes",
            build_frame(true, 0, OP_PING, &[b'p'; 126], mask),
        ),
        (
            "continuation without start",
            build_frame(true, 0, OP_CONT, b"x", mask),
        ),
        ("new text frame inside a fragmented message", {
            let mut v = build_frame(false, 0, OP_TEXT, b"a", mask);
            v.extend(build_frame(true, 0, OP_TEXT, b"b", mask));
            v
        }),
        (
            "close with 1-byte payload",
            build_frame(true, 0, OP_CLOSE, &[3], mask),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = s.raw();
        c.handshake("/ws");
        let _ = c.send(&bytes);
        let (code, _) = c.expect_close(T);
        assert_eq!(code, 1002, "{what}");
    }
    // Still serving.
    s.channel_client().ping_pong();
}

#[test]
fn silent_client_is_pinged_then_closed_for_activity_timeout() {
    let s = Server::start(
        &[
            "--set",
            "ping_interval_secs=1",
            "--set",
            "activity_timeout_secs=2",
        ],
        &[],
    );
    let mut c = s.raw();
    c.handshake("/ws");
    let mut pings = 0;
    let (code, reason) = loop {
        match c.read_frame(Duration::from_secs(20)) {
            RawEvent::Frame(f) if f.opcode == OP_PING => pings += 1, // never answered
            RawEvent::Frame(f) if f.opcode == OP_CLOSE => {
                break (
                    u16::from_be_bytes([f.payload[0], f.payload[1]]),
                    String::from_utf8_lossy(&f.payload[2..]).into_owned(),
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        pings >= 1,
        "the server pings a silent client before giving up"
    );
    assert_eq!(code, 1000);
    assert_eq!(reason, "activity timeout");
}

#[test]
fn client_answering_pings_stays_connected() {
    let s = Server::start(
        &[
            "--set",
            "ping_interval_secs=1",
            "--set",
            "activity_timeout_secs=3",
        ],
        &[],
    );
    let mut c = s.channel_client();
    c.subscribe("alive");
    // tungstenite answers the server's pings while we read; stay connected over several
    // activity timeouts and keep receiving.
    // next_event answers pings and only returns on data, a close or the deadline.
    match c.next_event(Duration::from_secs(8)) {
        Event::Timeout => {}
        other => panic!("a client answering pings must not be closed: {other:?}"),
    }
    assert!(
        c.pings >= 2,
        "server pinged the quiet client ({} pings)",
        c.pings
    );
    s.publish_json(&json!({"channel":"alive","data":"still subscribed"}));
    assert_eq!(c.recv_text(T), "still subscribed");
}

#[test]
fn client_sending_data_is_not_timed_out() {
    let s = Server::start(
        &[
            "--set",
            "ping_interval_secs=1",
            "--set",
            "activity_timeout_secs=3",
        ],
        &[],
    );
    let mut c = s.raw();
    c.handshake("/raw");
    // Never answer pings, but keep sending messages: that is activity.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        c.send(&client_frame(true, OP_TEXT, b"ping")).unwrap();
        let text = c.recv_text(T);
        assert_eq!(text, "pong");
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn slow_consumer_is_dropped_while_others_get_everything() {
    const N: usize = 3000;
    let s = Server::start(&["--set", "outbound_queue_bytes=65536"], &[]);
    // A subscriber that never reads, with a tiny receive buffer.
    let mut slow = RawConn::from_stream(tiny_rcvbuf_stream(&s.addr()));
    slow.stream.set_write_timeout(Some(T)).unwrap();
    slow.handshake("/ws");
    slow.send(&client_frame(
        true,
        OP_TEXT,
        br#"{"action":"subscribe","channel":"flood"}"#,
    ))
    .unwrap();
    let reply = slow.recv_text(T);
    assert_reply(
        &serde_json::from_str::<Value>(&reply).unwrap(),
        &json!({"event":"subscribed","channel":"flood"}),
        "subscribe",
    );

    let mut good = s.channel_client();
    good.subscribe("flood");

    // ~12 MB through the FIFO: far beyond the kernel's socket buffers plus 64 KiB.
    let fifo = s.fifo().to_path_buf();
    let writer = thread::spawn(move || {
        let mut f = fifo_open(&fifo);
        for i in 0..N {
            let line = format!(
                "{}\n",
                json!({"channel":"flood","data":format!("{i:06}:{}", "f".repeat(4000))})
            );
            f.write_all(line.as_bytes()).unwrap();
        }
    });
    for i in 0..N {
        let m = good.recv_text(Duration::from_secs(30));
        assert_eq!(
            m.get(..7).unwrap_or(&m),
            format!("{i:06}:"),
            "the reading subscriber gets every message in order"
        );
        assert_eq!(m.len(), 4007);
    }
    writer.join().unwrap();

    // The slow client was disconnected: draining what reached it ends in a close/EOF, not in
    // all N messages.
    let mut got = 0usize;
    let mut close_code = None;
    loop {
        match slow.read_frame(Duration::from_secs(20)) {
            RawEvent::Frame(f) if f.opcode == OP_TEXT => {
                let m = String::from_utf8_lossy(&f.payload);
                assert_eq!(
                    m.get(..7).unwrap_or(&m),
                    format!("{got:06}:"),
                    "what the slow client got is an in-order prefix"
                );
                got += 1;
            }
            RawEvent::Frame(f) if f.opcode == OP_CLOSE => {
                close_code = Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
                let (_, eof) = slow.read_to_end(T);
                assert!(eof, "connection dropped after the close frame");
                break;
            }
            RawEvent::Frame(f) if f.opcode == OP_PING => {}
            RawEvent::Eof | RawEvent::Error(_) => break,
            RawEvent::Timeout => {
                panic!("slow consumer still connected after the flood (read {got} messages)")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        got < N,
        "the slow consumer must have been dropped before getting all {N} messages"
    );
    if let Some(code) = close_code {
        assert_eq!(code, 1008, "slow consumer close code");
    }
    // The good client is still fine.
    good.ping_pong();
}

#[test]
fn abrupt_disconnects_do_not_disturb_others() {
    let s = Server::start(&[], &[]);
    let mut good = s.channel_client();
    good.subscribe("room");
    for _ in 0..10 {
        let mut c = s.channel_client();
        c.subscribe("room");
        // Reset instead of FIN: SO_LINGER with a zero timeout, then close.
        let stream = c.ws.get_ref();
        let lin = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        unsafe {
            use std::os::unix::io::AsRawFd;
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lin as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(c);
    }
    // Half-finished handshakes and half frames, then gone.
    for _ in 0..5 {
        let mut r = s.raw();
        let _ = r.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n");
        drop(r);
        let mut r = s.raw();
        r.handshake("/ws");
        let f = client_frame(true, OP_TEXT, b"{\"action\":\"ping\"}");
        let _ = r.send(&f[..5]);
        drop(r);
    }
    for n in 0..50 {
        s.publish_json(&json!({"channel":"room","data":format!("m{n}")}));
    }
    for n in 0..50 {
        assert_eq!(good.recv_text(T), format!("m{n}"));
    }
    good.ping_pong();
    assert_eq!(s.get("/up").status, 200);
}
