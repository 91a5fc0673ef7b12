//! Property tests over the parsers that read untrusted input (the same ones `fuzz/` fuzzes):
//! HTTP request heads and upgrade checks, WebSocket frames, FIFO lines (splitter + parser),
//! the channel protocol, Pusher client messages, the REST API checks and worker results.
//!
//! Two kinds of properties: "never panics, stays bounded" on arbitrary bytes, and round trips
//! on generated well-formed input (what a correct client sends is understood exactly). Every
//! input that a fuzz target found crashing is kept at the end (`mod regressions`), with its
//! fuzz/regressions/<target>/ file name.
//!
//! A few hundred cases each (`CASES`), so the whole file runs in seconds.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use ferrocast::channel_protocol::{self, Request};
use ferrocast::config::AppConfig;
use ferrocast::fifo::Fifo;
use ferrocast::http::{self, ParseError};
use ferrocast::jobs;
use ferrocast::message::{self, Line};
use ferrocast::pusher::protocol::{self as pp, ClientMessage};
use ferrocast::pusher::{auth, rest};
use ferrocast::worker::{self, Outcome};
use ferrocast::ws::{self, Inbound, MessageRef, Parsed, Reassembly};
use proptest::prelude::*;
use proptest::test_runner::Config;

const CASES: u32 = 300;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Valid channel names: 1..=200 of `[A-Za-z0-9_\-=@,.;]`.
fn channel_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_\\-=@,.;]{1,200}"
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A correct upgrade request, with headers in random order and random case, and extra headers.
fn upgrade_request() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        "/[a-z]{0,10}",
        proptest::collection::vec(any::<u8>(), 16),
        proptest::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,30}"), 0..8),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(path, key, extra, shuffle, upper)| {
            use base64::Engine;
            let key = base64::engine::general_purpose::STANDARD.encode(key);
            let mut headers: Vec<(String, String)> = vec![
                ("Host".into(), "localhost".into()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "keep-alive, Upgrade".into()),
                ("Sec-WebSocket-Key".into(), key.clone()),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ];
            headers.extend(extra.into_iter().map(|(k, v)| (k, v.trim().to_string())));
            // Deterministic shuffle from the generated seed.
            let mut s = shuffle;
            for i in (1..headers.len()).rev() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                headers.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut text = format!("GET {path} HTTP/1.1\r\n");
            for (k, v) in headers {
                let k = if upper {
                    k.to_uppercase()
                } else {
                    k.to_lowercase()
                };
                text.push_str(&format!("{k}: {v}\r\n"));
            }
            text.push_str("\r\n");
            (key, text.into_bytes())
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http_parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..2048), max in 1usize..4096) {
        match http::parse(&buf, max) {
            Ok(Some(req)) => {
                prop_assert!(req.head_len <= buf.len() && req.head_len <= max);
                let _ = http::wants_upgrade(&req);
                let _ = http::check_upgrade(&req, &["*".to_string()]);
                let _ = req.content_length();
            }
            Ok(None) => prop_assert!(buf.len() < max),
            Err(ParseError::TooLarge | ParseError::Malformed) => {}
        }
    }

    #[test]
    fn http_valid_upgrade_is_accepted((key, req) in upgrade_request()) {
        let parsed = http::parse(&req, 10_000).unwrap().expect("complete head");
        prop_assert_eq!(parsed.head_len, req.len());
        prop_assert!(http::wants_upgrade(&parsed));
        let accept = http::check_upgrade(&parsed, &["*".to_string()]).unwrap();
        prop_assert_eq!(accept, tungstenite::handshake::derive_accept_key(key.as_bytes()));
        // Every strict prefix is "need more bytes", never an error.
        for cut in [0, 1, req.len() / 2, req.len() - 1] {
            prop_assert!(matches!(http::parse(&req[..cut], 10_000), Ok(None)));
        }
        // The same head over the limit is 431, complete or not.
        prop_assert_eq!(http::parse(&req, req.len() - 1).err(), Some(ParseError::TooLarge));
    }

    #[test]
    fn http_origin_patterns_never_panic(origin in "\\PC{0,40}", pattern in "\\PC{0,30}") {
        // Whatever Origin a client sends, against whatever patterns are configured.
        let patterns = vec![
            pattern.clone(),
            format!("https://*.{pattern}"),
            "https://*.example.com".to_string(),
            "http://exact.test".to_string(),
        ];
        let _ = http::origin_allowed(&origin, &patterns);
        let _ = http::origin_allowed(&format!("https://{origin}"), &patterns);
    }

    #[test]
    fn http_wildcard_origin_matches_subdomains(sub in "[a-z0-9]{1,12}(\\.[a-z0-9]{1,12}){0,2}", other in "[a-z]{1,12}") {
        let patterns = vec!["https://*.example.com".to_string()];
        let subdomain = format!("https://{sub}.example.com");
        prop_assert!(http::origin_allowed(&subdomain, &patterns));
        prop_assert!(!http::origin_allowed("https://example.com", &patterns));
        let lookalike = format!("https://{other}example.com");
        prop_assert!(!http::origin_allowed(&lookalike, &patterns));
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames
// ---------------------------------------------------------------------------------------------

fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
    Violation(u16),
}

/// Feeds `stream` to the parser `chunk` bytes at a time, as the server's read loop does.
fn parse_stream(stream: &[u8], chunk: usize, max: usize) -> Vec<Got> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut frags: Option<Box<Reassembly>> = None;
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match ws::parse_frame(&mut buf, &mut frags, max) {
                Ok(Parsed::Incomplete) => break,
                Err(v) => {
                    out.push(Got::Violation(v.code));
                    return out;
                }
                Ok(Parsed::Frame { consumed, message }) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    if let Some(m) = message {
                        match ws::view(&buf, frags.as_deref(), m) {
                            Ok(Inbound::Text(t)) => out.push(Got::Text(t.to_string())),
                            Ok(Inbound::Binary(b)) => out.push(Got::Binary(b.to_vec())),
                            Ok(Inbound::Ping(p)) => out.push(Got::Ping(p.to_vec())),
                            Ok(Inbound::Pong) => out.push(Got::Pong),
                            Ok(Inbound::Close(c, r)) => out.push(Got::Close(c, r.to_string())),
                            Err(v) => {
                                out.push(Got::Violation(v.code));
                                return out;
                            }
                        }
                        if matches!(m, MessageRef::Reassembled { .. }) {
                            frags = None;
                        }
                    }
                    if let Some(f) = &frags {
                        assert!(f.data.len() <= max);
                    }
                    buf.drain(..consumed);
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Msg {
    Text(String, usize),
    Binary(Vec<u8>, usize),
    Ping(Vec<u8>),
}

fn ws_message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        ("\\PC{0,300}", 1usize..5).prop_map(|(t, n)| Msg::Text(t, n)),
        (proptest::collection::vec(any::<u8>(), 0..300), 1usize..5)
            .prop_map(|(b, n)| Msg::Binary(b, n)),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Msg::Ping),
    ]
}

/// Encodes a message as `parts` fragments, with a ping between the first two when fragmented.
fn encode_msg(m: &Msg, mask: [u8; 4]) -> (Vec<u8>, Vec<Got>) {
    let (opcode, payload, parts, got) = match m {
        Msg::Text(t, n) => (ws::OP_TEXT, t.as_bytes().to_vec(), *n, Got::Text(t.clone())),
        Msg::Binary(b, n) => (ws::OP_BINARY, b.clone(), *n, Got::Binary(b.clone())),
        Msg::Ping(p) => {
            return (
                client_frame(true, ws::OP_PING, p, mask),
                vec![Got::Ping(p.clone())],
            );
        }
    };
    let mut out = Vec::new();
    let mut expect = Vec::new();
    let size = payload.len().div_ceil(parts).max(1);
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(size).collect()
    };
    for (i, piece) in pieces.iter().enumerate() {
        let op = if i == 0 { opcode } else { ws::OP_CONT };
        out.extend(client_frame(i + 1 == pieces.len(), op, piece, mask));
        if i == 0 && pieces.len() > 1 {
            out.extend(client_frame(true, ws::OP_PING, b"mid", mask));
            expect.push(Got::Ping(b"mid".to_vec()));
        }
    }
    expect.push(got);
    (out, expect)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ws_messages_round_trip(msgs in proptest::collection::vec(ws_message(), 1..8), mask in any::<[u8; 4]>(), chunk in 1usize..64) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for m in &msgs {
            let (bytes, got) = encode_msg(m, mask);
            stream.extend(bytes);
            want.extend(got);
        }
        stream.extend(client_frame(true, ws::OP_CLOSE, &[0x03, 0xe8, b'o', b'k'], mask));
        want.push(Got::Close(Some(1000), "ok".into()));
        prop_assert_eq!(parse_stream(&stream, stream.len(), 10_000), want.clone());
        prop_assert_eq!(parse_stream(&stream, chunk, 10_000), want);
    }

    #[test]
    fn ws_arbitrary_bytes_are_split_independent(stream in proptest::collection::vec(any::<u8>(), 0..1024), chunk in 1usize..32, max in 0usize..2000) {
        let whole = parse_stream(&stream, stream.len(), max);
        let split = parse_stream(&stream, chunk, max);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn ws_message_over_limit_is_1009(len in 1usize..3000, max in 0usize..3000, parts in 1usize..4) {
        let m = Msg::Binary(vec![7; len], parts);
        let (stream, _) = encode_msg(&m, [9, 8, 7, 6]);
        let got = parse_stream(&stream, 17, max);
        if len > max {
            prop_assert_eq!(got.last(), Some(&Got::Violation(1009)));
            // Nothing of the message was delivered.
            prop_assert!(!got.iter().any(|g| matches!(g, Got::Binary(_))));
        } else {
            prop_assert_eq!(got.last(), Some(&Got::Binary(vec![7; len])));
        }
    }

    #[test]
    fn ws_huge_declared_length_is_refused_before_buffering(len in 10_001u64..u64::MAX >> 1, opcode in prop_oneof![Just(1u8), Just(2u8)]) {
        // A header that announces more than max_message bytes is refused at once: the server
        // never waits for (or allocates) the announced payload.
        let mut f = vec![0x80 | opcode, 0x80 | 127];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        let mut frags = None;
        let r = ws::parse_frame(&mut f, &mut frags, 10_000);
        prop_assert!(matches!(r, Err(ref v) if v.code == 1009));
    }
}

// ---------------------------------------------------------------------------------------------
// FIFO lines: splitter (through a real FIFO) and line parser
// ---------------------------------------------------------------------------------------------

/// The splitter (`Fifo::split_lines`) is private; it is exercised through the public
/// `Fifo::read_lines` on a real FIFO, with a small read buffer so lines are cut anywhere.
fn split_through_fifo(input: &[u8], read_size: usize, max: usize) -> (Vec<Vec<u8>>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.fifo");
    let mut fifo = Fifo::open(&path, 0o600).unwrap();
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let mut got = Vec::new();
    let mut dropped = 0;
    let mut scratch = vec![0u8; read_size];
    // Written in a few pieces, read after each: partial lines wait across reads.
    for piece in input.chunks(97) {
        w.write_all(piece).unwrap();
        let st = fifo
            .read_lines(&mut scratch, max, |l| got.push(l.to_vec()))
            .unwrap();
        dropped += st.dropped.len();
    }
    (got, dropped)
}

fn reference_split(input: &[u8], max: usize) -> (Vec<Vec<u8>>, usize) {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = pieces.pop().unwrap_or(&[]);
    let mut lines = Vec::new();
    let mut dropped = 0;
    for p in pieces {
        if p.len() > max {
            dropped += 1;
        } else {
            lines.push(p.strip_suffix(b"\r").unwrap_or(p).to_vec());
        }
    }
    // An unterminated tail over the limit is already known to be dropped.
    if tail.len() > max {
        dropped += 1;
    }
    (lines, dropped)
}

fn fifo_input() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\n'),
            1 => Just(b'\r'),
        ],
        0..600,
    )
}

proptest! {
    #![proptest_config(Config { cases: 100, ..config() })]

    #[test]
    fn fifo_lines_split_like_the_reference(input in fifo_input(), read_size in 1usize..80, max in 1usize..64) {
        let (got, dropped) = split_through_fifo(&input, read_size, max);
        let (want, want_dropped) = reference_split(&input, max);
        prop_assert_eq!(got, want);
        prop_assert_eq!(dropped, want_dropped);
    }
}

fn string_data() -> impl Strategy<Value = String> {
    "\\PC{0,100}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fifo_line_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..512)) {
        match message::parse_line(&line) {
            Line::Publish(p) => {
                prop_assert!(!p.channels.is_empty());
                prop_assert!(p.channels.iter().all(|c| ferrocast::channels::valid_name(c)));
            }
            Line::Global(g) => prop_assert_eq!(g, &line[..]),
            Line::Invalid(_) => {}
        }
    }

    #[test]
    fn fifo_publish_round_trip(channels in proptest::collection::vec(channel_name(), 1..4), data in string_data(), event in proptest::option::of("[a-z\\-]{1,20}"), many in any::<bool>()) {
        let mut v = serde_json::json!({"data": data});
        if many || channels.len() > 1 {
            v["channels"] = serde_json::json!(channels);
        } else {
            v["channel"] = serde_json::json!(channels[0]);
        }
        if let Some(e) = &event {
            v["event"] = serde_json::json!(e);
        }
        let line = v.to_string();
        match message::parse_line(line.as_bytes()) {
            Line::Publish(p) => {
                prop_assert_eq!(p.channels, channels);
                prop_assert_eq!(p.data, data);
                prop_assert_eq!(p.event, event);
            }
            other => prop_assert!(false, "{line} parsed as {other:?}"),
        }
    }

    #[test]
    fn fifo_non_json_lines_are_global(line in "[^{ \\t\\n\\r][^\\n]{0,100}") {
        prop_assert_eq!(message::parse_line(line.as_bytes()), Line::Global(line.as_bytes()));
    }

    #[test]
    fn fifo_object_data_is_compact_json(channel in channel_name(), k in "[a-z]{1,8}", n in any::<i64>()) {
        let line = format!("{{ \"channel\" : \"{channel}\" , \"data\" : {{ \"{k}\" : [ {n} , true ] }} }}");
        match message::parse_line(line.as_bytes()) {
            Line::Publish(p) => prop_assert_eq!(p.data, format!("{{\"{k}\":[{n},true]}}")),
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Channel protocol
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn channel_protocol_never_panics(text in "\\PC{0,300}") {
        match channel_protocol::parse(&text) {
            Ok(Request::Subscribe(c) | Request::Unsubscribe(c)) => {
                prop_assert!(ferrocast::channels::valid_name(&c));
            }
            Ok(Request::Ping) => {}
            Err(e) => prop_assert!(e.len() <= 1024),
        }
    }

    #[test]
    fn channel_protocol_round_trip(name in channel_name(), sub in any::<bool>(), extra in "[a-z]{1,6}") {
        let action = if sub { "subscribe" } else { "unsubscribe" };
        let text = serde_json::json!({"action": action, "channel": name, extra: 1}).to_string();
        let want = if sub { Request::Subscribe(name) } else { Request::Unsubscribe(name) };
        prop_assert_eq!(channel_protocol::parse(&text), Ok(want));
    }

    #[test]
    fn channel_protocol_invalid_names_are_errors(name in "\\PC{0,250}") {
        prop_assume!(!ferrocast::channels::valid_name(&name));
        let text = serde_json::json!({"action": "subscribe", "channel": name}).to_string();
        let err = channel_protocol::parse(&text).unwrap_err();
        prop_assert!(err.contains("invalid channel name"), "{}", err);
        // The error names the channel, cut to a bounded length.
        prop_assert!(err.len() <= 1024);
    }
}

// ---------------------------------------------------------------------------------------------
// Pusher client messages
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pusher_parse_never_panics(text in "\\PC{0,300}") {
        if let Ok(ClientMessage::ClientEvent { event, channel, data }) = pp::parse(&text) {
            let frame = pp::client_event(&event, &channel, data, None);
            prop_assert!(serde_json::from_str::<serde_json::Value>(&frame).is_ok());
        }
    }

    #[test]
    fn pusher_subscribe_round_trip(channel in "(private-|presence-)?[A-Za-z0-9_\\-=@,.;]{1,50}", auth in proptest::option::of("[a-z\\-]{1,10}:[0-9a-f]{64}"), channel_data in proptest::option::of("\\PC{0,60}"), as_string in any::<bool>()) {
        let mut d = serde_json::json!({"channel": channel});
        if let Some(a) = &auth { d["auth"] = serde_json::json!(a); }
        if let Some(cd) = &channel_data { d["channel_data"] = serde_json::json!(cd); }
        let data = if as_string { serde_json::Value::String(d.to_string()) } else { d };
        let text = serde_json::json!({"event": "pusher:subscribe", "data": data}).to_string();
        match pp::parse(&text) {
            Ok(ClientMessage::Subscribe { channel: c, auth: a, channel_data: cd, .. }) => {
                prop_assert_eq!(c, channel);
                prop_assert_eq!(a, auth);
                prop_assert_eq!(cd, channel_data);
            }
            other => prop_assert!(false, "{text} parsed as {other:?}"),
        }
    }

    #[test]
    fn pusher_client_event_forwards_data_verbatim(name in "client-[a-z]{1,20}", channel in "private-[a-z]{1,20}", k in "[a-z]{1,8}", v in "\\PC{0,40}") {
        let data = serde_json::json!({k.clone(): v.clone()});
        let text = serde_json::json!({"event": name, "channel": channel, "data": data}).to_string();
        match pp::parse(&text) {
            Ok(ClientMessage::ClientEvent { event, channel: c, data: raw }) => {
                prop_assert_eq!(event.as_ref(), name.as_str());
                prop_assert_eq!(&c, &channel);
                let frame: serde_json::Value = serde_json::from_str(&pp::client_event(&event, &c, raw, Some("u"))).unwrap();
                prop_assert_eq!(&frame["data"], &data);
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST API: signatures and bodies
// ---------------------------------------------------------------------------------------------

fn param() -> impl Strategy<Value = (String, String)> {
    ("[A-Za-z_\\[\\]]{1,12}", "\\PC{0,20}").prop_filter("reserved", |(k, _)| {
        !matches!(
            k.to_lowercase().as_str(),
            "auth_key" | "auth_timestamp" | "auth_version" | "auth_signature" | "body_md5"
        )
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rest_signed_requests_verify_and_tampering_fails(
        method in prop_oneof![Just("GET"), Just("POST")],
        path in "/apps/[a-z0-9\\-]{1,10}/(events|channels|batch_events)",
        params in proptest::collection::vec(param(), 0..5),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        now in 1_000_000u64..4_000_000_000,
        skew in -599i64..599,
    ) {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ts = now.saturating_add_signed(skew);
        let query = auth::sign_rest_request(method, &path, &params, &body, "app-key", "app-secret", ts);
        let app = AppConfig::default();
        prop_assert_eq!(rest::authenticate(&app, method, &path, &query, &body, None, now), Ok(()));
        // Other body, other path, other method, stale clock, wrong secret: all refused with 401.
        let mut other = body.clone();
        other.push(b'!');
        prop_assert_eq!(rest::authenticate(&app, method, &path, &query, &other, None, now).unwrap_err().status, 401);
        let other_path = format!("{path}x");
        prop_assert_eq!(rest::authenticate(&app, method, &other_path, &query, &body, None, now).unwrap_err().status, 401);
        let other_method = if method == "GET" { "POST" } else { "GET" };
        prop_assert_eq!(rest::authenticate(&app, other_method, &path, &query, &body, None, now).unwrap_err().status, 401);
        prop_assert_eq!(rest::authenticate(&app, method, &path, &query, &body, None, ts + 600).unwrap_err().status, 401);
        let req = auth::RestRequest { method, path: &path, query: &query, body: &body };
        prop_assert!(auth::verify_rest_request(&req, |_| Some("other".into()), now, 600).is_err());
        // The verified parameters are decoded exactly as they were signed.
        let decoded = auth::parse_query(&query);
        for (k, v) in &params {
            prop_assert!(decoded.iter().any(|(dk, dv)| dk == k && dv == v), "{k}={v} lost in {query}");
        }
    }

    #[test]
    fn rest_arbitrary_requests_never_panic(
        method in "\\PC{0,8}",
        path in "\\PC{0,40}",
        query in "[ -~]{0,200}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
        authorization in proptest::option::of("\\PC{0,40}"),
        now in any::<u64>(),
    ) {
        let app = AppConfig::default();
        if let Err(e) = rest::authenticate(&app, &method, &path, &query, &body, authorization.as_deref(), now) {
            prop_assert!(e.status == 400 || e.status == 401);
        }
        let _ = rest::route(&method, &path);
        let _ = rest::parse_events(&body, &app);
        let _ = rest::parse_batch(&body, &app);
    }

    #[test]
    fn rest_event_body_round_trip(name in "[a-z\\-]{1,30}", channels in proptest::collection::vec("[A-Za-z0-9_\\-]{1,30}", 1..5), data in "\\PC{0,200}", socket_id in proptest::option::of("[0-9]{1,6}\\.[0-9]{1,6}")) {
        let mut v = serde_json::json!({"name": name, "channels": channels, "data": data});
        if let Some(s) = &socket_id { v["socket_id"] = serde_json::json!(s); }
        let ev = rest::parse_events(v.to_string().as_bytes(), &AppConfig::default()).unwrap();
        prop_assert_eq!(ev.name, name);
        prop_assert_eq!(ev.channels, channels);
        prop_assert_eq!(ev.data, data);
        prop_assert_eq!(ev.socket_id, socket_id);
    }

    #[test]
    fn rest_batch_size_limit(n in 0usize..20) {
        let app = AppConfig::default();
        let items: Vec<serde_json::Value> = (0..n).map(|i| serde_json::json!({"name": "e", "channel": format!("c{i}"), "data": "x"})).collect();
        let body = serde_json::json!({"batch": items}).to_string();
        let r = rest::parse_batch(body.as_bytes(), &app);
        if n <= app.max_event_batch_size {
            prop_assert_eq!(r.unwrap().len(), n);
        } else {
            prop_assert_eq!(r.unwrap_err().status, 400);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker results: the framing and what a handler's exit and output decode to
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn worker_frames_round_trip_at_any_read_boundary(body in proptest::collection::vec(any::<u8>(), 0..300), extra in proptest::collection::vec(any::<u8>(), 0..4)) {
        let framed = worker::encode_result(&body).unwrap();
        for cut in 0..framed.len() {
            prop_assert_eq!(worker::decode_result(&framed[..cut], 300), Ok(None));
        }
        prop_assert_eq!(worker::decode_result(&framed, 300), Ok(Some(&body[..])));
        if !body.is_empty() {
            let short = body.len() - 1;
            let refused = matches!(worker::decode_result(&framed[..4], short), Err(worker::FrameError::TooLong { .. }));
            prop_assert!(refused, "a length over the limit is refused from the header alone");
        }
        let mut more = framed.clone();
        more.extend_from_slice(&extra);
        if !extra.is_empty() {
            prop_assert_eq!(worker::decode_result(&more, 300), Err(worker::FrameError::Trailing { extra: extra.len() }));
        }
    }

    #[test]
    fn validation_takes_the_first_line_as_the_user(user in "[A-Za-z0-9_@.\\-]{1,40}", rest in "\\PC{0,40}", code in 1i32..255) {
        let ok = Outcome::Exited { code: 0, stdout: format!(" {user} \r\n{rest}").into_bytes(), truncated: false };
        prop_assert_eq!(jobs::validation_verdict(&ok, 5), Ok(user.clone()));
        // Any other exit status refuses with 401, whatever was printed.
        let failed = Outcome::Exited { code, stdout: user.clone().into_bytes(), truncated: false };
        let refusal = jobs::validation_verdict(&failed, 5).unwrap_err();
        prop_assert!(!refusal.forbidden);
        prop_assert_eq!(refusal.why, format!("exit {code}"));
    }

    #[test]
    fn validation_forbidden_wins_whatever_the_status(code in -1i32..255, tail in "(\\n\\PC{0,20})?") {
        for outcome in [
            Outcome::Exited { code, stdout: format!("forbidden{tail}").into_bytes(), truncated: false },
            Outcome::Signaled { signal: 9, stdout: format!("  forbidden \t{tail}").into_bytes(), truncated: true },
        ] {
            let refusal = jobs::validation_verdict(&outcome, 5).unwrap_err();
            prop_assert!(refusal.forbidden);
        }
    }

    #[test]
    fn validation_and_routing_never_panic(stdout in proptest::collection::vec(any::<u8>(), 0..600), code in any::<i32>(), truncated in any::<bool>(), signaled in any::<bool>()) {
        let outcome = if signaled {
            Outcome::Signaled { signal: code, stdout: stdout.clone(), truncated }
        } else {
            Outcome::Exited { code, stdout: stdout.clone(), truncated }
        };
        match jobs::validation_verdict(&outcome, 5) {
            Ok(user) => {
                prop_assert!(!user.is_empty() && user.len() <= jobs::MAX_USER_ID && !user.contains('\n'));
                let file = jobs::user_file_name(&user);
                prop_assert!(!file.contains('/') && !file.starts_with('.') && file.len() <= 250);
            }
            Err(refusal) => prop_assert!(!refusal.why.contains('\n') && refusal.why.len() <= 200),
        }
        let replies = jobs::route_replies(&outcome, 1024);
        prop_assert!(!replies.is_empty() && replies.iter().all(|r| !r.is_empty()));
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs found by the fuzz targets (fuzz/regressions/<target>/<file>)
// ---------------------------------------------------------------------------------------------

mod regressions {
    use super::*;

    fn upgrade_with_origin(origin: &[u8]) -> Vec<u8> {
        let mut req =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: "
                .to_vec();
        req.extend_from_slice(origin);
        req.extend_from_slice(b"\r\n\r\n");
        req
    }

    /// fuzz/regressions/http_request/origin-wildcard-char-boundary (minimized from
    /// crash-2c4dc544…): `origin_allowed` slices the Origin's host at a byte offset computed from
    /// the pattern's length, which panics when it falls inside a multi-byte character. Any client
    /// can send such an Origin, so with a `https://*.example.com` entry in `allowed_origins` one
    /// handshake kills the server (panic = "abort" in release).
    #[test]
    fn origin_wildcard_with_multibyte_host_does_not_panic() {
        let allowed = vec!["https://*.example.com".to_string()];
        // "a" + U+04A2 (2 bytes) + "xample.com": 13 bytes; 13 - len("example.com") = 2 is inside
        // U+04A2.
        assert!(!http::origin_allowed(
            "https://a\u{4a2}xample.com",
            &allowed
        ));
        let req = upgrade_with_origin("https://a\u{4a2}xample.com".as_bytes());
        let parsed = http::parse(&req, 10_000).unwrap().unwrap();
        assert_eq!(
            http::check_upgrade(&parsed, &allowed).unwrap_err(),
            http::Refusal::OriginForbidden
        );
    }

    /// fuzz/regressions/pusher_protocol/crash-8e6c62faabd1b193e66ef11b6f492c0939cfa488:
    /// `{"event":"client-x","channel":"p-a","data":{"k":19999999999999998E99473}}`. The `data` of a
    /// client event is kept as a `RawValue`, which checks JSON syntax but not number range, and
    /// is forwarded verbatim (`client_event`): the other subscribers then get a frame that strict
    /// JSON parsers (serde_json, Go, Java) reject. The server must refuse such a message, or send
    /// valid JSON.
    #[test]
    fn client_event_data_out_of_range_number_is_not_forwarded_as_invalid_json() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/pusher_protocol/crash-8e6c62faabd1b193e66ef11b6f492c0939cfa488"
        ))
        .unwrap();
        for text in [
            text.as_str(),
            r#"{"event":"client-x","channel":"private-a","data":1E400}"#,
        ] {
            if let Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) = pp::parse(text)
            {
                let frame = pp::client_event(&event, &channel, data, None);
                assert!(
                    serde_json::from_str::<serde_json::Value>(&frame).is_ok(),
                    "forwarded frame is not valid JSON: {frame}"
                );
            }
        }
    }

    /// fuzz/regressions/http_request/crash-2c4dc544a9fa5d8bbdceec3e311e61edecef744e, as found
    /// (first byte: the harness's limit selector).
    #[test]
    fn http_request_crash_2c4dc544() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/http_request/crash-2c4dc544a9fa5d8bbdceec3e311e61edecef744e"
        ))
        .unwrap();
        let buf = &data[1..];
        let req = http::parse(buf, 10_000).unwrap().unwrap();
        let origin = req.header("origin").unwrap();
        for list in [
            vec!["https://*.example.com".to_string()],
            vec!["http://*.x".to_string()],
        ] {
            let _ = http::origin_allowed(origin, &list);
            let _ = http::check_upgrade(&req, &list);
        }
    }
}
