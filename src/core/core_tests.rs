//! The core driven without sockets: bytes in, bytes and effects out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;

const PEER: &str = "127.0.0.1:40000";

fn core() -> Core {
    let cfg = Config {
        outbound_queue_bytes: 64 * 1024,
        ..Config::default()
    };
    Core::new(cfg, 7, Instant::now(), 1_700_000_000_000)
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    let mask = [9u8, 8, 7, 6];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Everything queued for a connection, as if the socket took it all.
fn take_output(core: &mut Core, key: usize) -> Vec<u8> {
    let mut dirty = Vec::new();
    core.take_dirty(&mut dirty);
    let mut out = Vec::new();
    if let Some(outbox) = core.outbox_mut(key) {
        while let Some(front) = outbox.front() {
            let n = front.len();
            out.extend_from_slice(front);
            outbox.advance(n);
        }
    }
    core.flushed(key);
    out
}

/// The text payloads of the server frames in `bytes` (after an HTTP head, if any).
fn texts(bytes: &[u8]) -> Vec<String> {
    let mut i = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let mut out = Vec::new();
    while i + 2 <= bytes.len() {
        let opcode = bytes[i] & 0x0f;
        let (len, h) = match bytes[i + 1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize, 4),
            127 => panic!("no frames that large here"),
            n => (n as usize, 2),
        };
        let payload = &bytes[i + h..i + h + len];
        if opcode == 1 {
            out.push(String::from_utf8_lossy(payload).into_owned());
        }
        i += h + len;
    }
    out
}

fn channel_client(core: &mut Core, key: usize, channels: &[&str]) {
    core.open(key, PEER.parse::<SocketAddr>().unwrap());
    core.on_bytes(key, &mut upgrade_request("/ws"));
    for c in channels {
        let sub = format!(r#"{{"action":"subscribe","channel":"{c}"}}"#);
        core.on_bytes(key, &mut masked(1, sub.as_bytes()));
    }
    let replies = texts(&take_output(core, key));
    assert_eq!(replies.len(), channels.len(), "{replies:?}");
}

#[test]
fn a_fifo_line_reaches_subscribers_once_across_channels() {
    let mut core = core();
    channel_client(&mut core, 1, &["a", "b"]);
    channel_client(&mut core, 2, &["b"]);
    core.on_fifo_line(br#"{"channels":["a","b"],"data":"hello"}"#);
    assert_eq!(texts(&take_output(&mut core, 1)), ["hello"]);
    assert_eq!(texts(&take_output(&mut core, 2)), ["hello"]);
}

#[test]
fn a_protocol_error_closes_and_the_socket_is_dropped_later() {
    let mut core = core();
    channel_client(&mut core, 3, &[]);
    // An unmasked frame: 1002.
    core.on_bytes(3, &mut [0x81, 0x01, b'x']);
    let out = take_output(&mut core, 3);
    assert_eq!(&out[..4], &[0x88, 0x1e, 0x03, 0xea], "close 1002");
    assert_eq!(core.phase(3), Some(Phase::Closing));
    core.on_gone(3, "peer closed");
    assert_eq!(core.take_effects().closed, [3]);
    assert_eq!(core.connections(), 0);
}

#[test]
fn a_client_that_does_not_read_is_paused_not_grown() {
    let mut core = core();
    channel_client(&mut core, 4, &[]);
    let ping = masked(1, br#"{"action":"ping"}"#);
    let mut flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 20_000)
        .collect();
    core.on_bytes(4, &mut flood);
    assert!(!core.wants_input(4), "past the pause mark: no more reading");
    let queued = core.state().stats.messages_in;
    assert!(
        queued < 20_000,
        "handling stopped at the pause mark ({queued} handled)"
    );
    let pause = core.cfg().output_bounds().0;
    let before = take_output(&mut core, 4).len();
    assert!(
        before <= pause + 200,
        "{before} bytes queued, pause at {pause}"
    );
    // The client took its replies: the backlog is handled.
    assert!(core.resume(4) || core.state().stats.messages_in > queued);
}

#[test]
fn a_content_length_that_wraps_is_refused_and_closed() {
    let mut core = core();
    core.open(5, PEER.parse().unwrap());
    let head = "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nContent-Length: ";
    let len = u64::MAX - 70;
    let mut req = format!("{head}{len}\r\n\r\n").into_bytes();
    core.on_bytes(5, &mut req);
    let out = String::from_utf8(take_output(&mut core, 5)).unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(core.phase(5), Some(Phase::Closing));
}

#[test]
fn time_closes_a_silent_handshake() {
    let mut core = core();
    let t0 = Instant::now();
    core.open(6, PEER.parse().unwrap());
    let timeout = core.cfg().handshake_timeout_secs;
    core.set_time(t0 + Duration::from_secs(timeout + 1), 0);
    core.tick();
    assert_eq!(core.take_effects().closed, [6]);
}

#[test]
fn a_line_that_is_not_utf8_still_makes_a_valid_text_frame() {
    let mut core = core();
    channel_client(&mut core, 7, &[]);
    core.on_fifo_line(b"caf\xe9 \xff!");
    let got = texts(&take_output(&mut core, 7));
    assert_eq!(got, ["caf\u{fffd} \u{fffd}!"]);
}

/// Opens a Pusher connection; returns its socket id.
fn pusher_client(core: &mut Core, key: usize) -> String {
    core.open(key, PEER.parse::<SocketAddr>().unwrap());
    core.on_bytes(key, &mut upgrade_request("/app/app-key?protocol=7"));
    let hello = texts(&take_output(core, key));
    assert!(
        hello[0].contains("pusher:connection_established"),
        "{hello:?}"
    );
    let outer: serde_json::Value = serde_json::from_str(&hello[0]).unwrap();
    let data: serde_json::Value = serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
    data["socket_id"].as_str().unwrap().to_string()
}

fn pusher_send(core: &mut Core, key: usize, event: &str, channel: &str) {
    let msg = format!(r#"{{"event":"{event}","data":{{"channel":"{channel}"}}}}"#);
    core.on_bytes(key, &mut masked(1, msg.as_bytes()));
}

fn counting_core(t0: Instant) -> Core {
    let app = crate::config::AppConfig {
        subscription_count_events: true,
        subscription_count_interval_ms: 1000,
        ..Default::default()
    };
    let cfg = Config {
        apps: vec![app],
        ..Config::default()
    };
    Core::new(cfg, 7, t0, 1_700_000_000_000)
}

fn counts(out: &[String]) -> Vec<&str> {
    out.iter()
        .filter(|t| t.contains("pusher_internal:subscription_count"))
        .map(|t| t.as_str())
        .collect()
}

#[test]
fn subscription_counts_are_told_at_once_then_throttled_with_the_latest_value() {
    let t0 = Instant::now();
    let mut core = counting_core(t0);
    pusher_client(&mut core, 1);
    pusher_send(&mut core, 1, "pusher:subscribe", "orders");
    core.tick();
    let out = texts(&take_output(&mut core, 1));
    assert!(out[0].contains("subscription_succeeded"), "{out:?}");
    assert_eq!(
        out[1],
        r#"{"channel":"orders","data":"{\"subscription_count\":1}","event":"pusher_internal:subscription_count"}"#
    );
    // Three changes within the interval: nothing yet, then one telling of the last count.
    for key in [2, 3] {
        pusher_client(&mut core, key);
        pusher_send(&mut core, key, "pusher:subscribe", "orders");
    }
    pusher_send(&mut core, 2, "pusher:unsubscribe", "orders");
    channel_client(&mut core, 4, &["orders"]);
    core.set_time(t0 + Duration::from_millis(999), 0);
    core.tick();
    assert!(counts(&texts(&take_output(&mut core, 1))).is_empty());
    assert!(
        core.next_wake()
            .is_some_and(|w| w <= t0 + Duration::from_secs(1))
    );
    core.set_time(t0 + Duration::from_millis(1000), 0);
    core.tick();
    for key in [1, 3] {
        let out = texts(&take_output(&mut core, key));
        assert_eq!(
            counts(&out),
            [
                r#"{"channel":"orders","data":"{\"subscription_count\":3}","event":"pusher_internal:subscription_count"}"#
            ],
            "connection {key}: two Pusher subscribers and a channel-protocol one"
        );
    }
    assert!(
        counts(&texts(&take_output(&mut core, 2))).is_empty(),
        "left"
    );
    assert!(
        texts(&take_output(&mut core, 4)).is_empty(),
        "not a Pusher client"
    );
    // Nothing changed since: nothing more is told.
    core.set_time(t0 + Duration::from_secs(5), 0);
    core.tick();
    assert!(counts(&texts(&take_output(&mut core, 1))).is_empty());
}

#[test]
fn subscription_counts_are_off_by_default_and_never_on_presence_channels() {
    let mut core = core();
    pusher_client(&mut core, 1);
    pusher_send(&mut core, 1, "pusher:subscribe", "orders");
    core.tick();
    assert!(counts(&texts(&take_output(&mut core, 1))).is_empty());
    let t0 = Instant::now();
    let mut core = counting_core(t0);
    let st = &mut core.st;
    for channel in ["presence-room", "cache-presence-room", "#server-to-user-7"] {
        count_news::changed(st, 0, channel);
    }
    assert!(st.sub_counts.next_due().is_none());
    count_news::changed(st, 0, "private-encrypted-x");
    assert!(st.sub_counts.next_due().is_some());
}

fn watching_core() -> Core {
    let app = crate::config::AppConfig {
        watchlist_events: true,
        max_watchlist_users: 3,
        ..Default::default()
    };
    let cfg = Config {
        apps: vec![app],
        ..Config::default()
    };
    Core::new(cfg, 7, Instant::now(), 1_700_000_000_000)
}

/// Opens a Pusher connection and signs it in with `user_data`.
fn signed_in(core: &mut Core, key: usize, user_data: &str) {
    let socket_id = pusher_client(core, key);
    let auth = crate::pusher::auth::user_auth("app-key", "app-secret", &socket_id, user_data);
    let msg = serde_json::json!({
        "event": "pusher:signin",
        "data": {"auth": auth, "user_data": user_data}
    });
    core.on_bytes(key, &mut masked(1, msg.to_string().as_bytes()));
}

fn watch_events(out: &[String]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter(|v| v["event"] == "pusher_internal:watchlist_events")
        .map(|v| serde_json::from_str(v["data"].as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn watchers_hear_of_users_coming_online_and_going_offline() {
    let mut core = watching_core();
    signed_in(&mut core, 1, r#"{"id":"a","watchlist":["b",7]}"#);
    let out = texts(&take_output(&mut core, 1));
    assert!(out[0].contains("pusher:signin_success"), "{out:?}");
    assert_eq!(
        watch_events(&out),
        [serde_json::json!({"events": [{"name": "offline", "user_ids": ["b", "7"]}]})]
    );
    // b's first connection brings b online; a second one is no news; the last one leaving is.
    signed_in(&mut core, 2, r#"{"id":"b"}"#);
    signed_in(&mut core, 3, r#"{"id":"b"}"#);
    let online = serde_json::json!({"events": [{"name": "online", "user_ids": ["b"]}]});
    assert_eq!(watch_events(&texts(&take_output(&mut core, 1))), [online]);
    core.on_gone(2, "peer closed");
    assert!(watch_events(&texts(&take_output(&mut core, 1))).is_empty());
    core.on_gone(3, "peer closed");
    let offline = serde_json::json!({"events": [{"name": "offline", "user_ids": ["b"]}]});
    assert_eq!(watch_events(&texts(&take_output(&mut core, 1))), [offline]);
    // A watcher signing in later learns who is online now.
    signed_in(&mut core, 4, r#"{"id":"7"}"#);
    signed_in(&mut core, 5, r#"{"id":"c","watchlist":["7","b"]}"#);
    assert_eq!(
        watch_events(&texts(&take_output(&mut core, 5))),
        [serde_json::json!({"events": [
            {"name": "online", "user_ids": ["7"]},
            {"name": "offline", "user_ids": ["b"]}
        ]})]
    );
    assert_eq!(core.state().watchers.sizes(), (2, 2));
    core.on_gone(1, "peer closed");
    core.on_gone(5, "peer closed");
    assert_eq!(core.state().watchers.sizes(), (0, 0));
    core.audit().unwrap();
}

#[test]
fn a_watchlist_past_the_limit_or_malformed_is_refused_by_name() {
    for (key, user_data, words) in [
        (
            1,
            r#"{"id":"a","watchlist":["1","2","3","4"]}"#,
            "has 4 user ids; this app allows 3",
        ),
        (2, r#"{"id":"a","watchlist":"b"}"#, "must be an array"),
        (
            3,
            r#"{"id":"a","watchlist":[{"x":1}]}"#,
            "must list user ids",
        ),
    ] {
        let mut core = watching_core();
        signed_in(&mut core, key, user_data);
        let out = texts(&take_output(&mut core, key));
        assert!(
            out.iter()
                .any(|t| t.contains("pusher:error") && t.contains(words)),
            "{user_data}: {out:?}"
        );
        assert_eq!(core.phase(key), Some(Phase::Closing));
    }
}

#[test]
fn watchlists_are_ignored_unless_the_app_enables_them() {
    let mut core = core();
    signed_in(&mut core, 1, r#"{"id":"a","watchlist":["b"]}"#);
    signed_in(&mut core, 2, r#"{"id":"b"}"#);
    assert!(watch_events(&texts(&take_output(&mut core, 1))).is_empty());
    assert_eq!(core.state().watchers.sizes(), (0, 0));
}
