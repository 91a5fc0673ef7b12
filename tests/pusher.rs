//! Pusher protocol v7 and HTTP API, black-box: the real binary, a tungstenite client, raw HTTP.
//!
//! Error codes (Pusher Channels Protocol, "Error codes"): 4001 app does not exist, 4003 app
//! disabled, 4004 over connection quota, 4006 invalid version string, 4007 unsupported protocol
//! version, 4008 no protocol version, 4009 unauthorized, 4301 client event rate limit (4300-4399:
//! the connection stays open). Golden frames follow the protocol document's examples: `data` of
//! server events is a JSON *string* (pusher-js parses it again), `pusher:pong` carries `{}`.
//! HTTP API statuses follow the Pusher HTTP API reference.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Client, Event, Server, T, Value, http_raw, json, write_config};
use ferrocast::pusher::auth;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const ID: &str = "app-1";
const KEY: &str = "key-1";
const SECRET: &str = "secret-1";

fn app(extra: Value) -> Value {
    let mut a =
        json!({"id": ID, "key": KEY, "secret": SECRET, "name": "rust-tests", "enabled": true});
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// A server with these apps (a config file in a directory that outlives the server).
struct Fixture {
    server: Server,
    _dir: tempfile::TempDir,
}

fn start(apps: Vec<Value>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "config.json", &json!({ "apps": apps }));
    let cfg = cfg.to_str().unwrap().to_string();
    let server = Server::start(&["--config", &cfg], &[]);
    Fixture { server, _dir: dir }
}

fn start_default() -> Fixture {
    start(vec![app(json!({}))])
}

// ---------------------------------------------------------------------------------------------
// WebSocket helpers
// ---------------------------------------------------------------------------------------------

fn hmac_hex(secret: &str, msg: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Channel auth computed here, independently of the server's code.
fn channel_sig(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let msg = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{KEY}:{}", hmac_hex(SECRET, &msg))
}

fn user_sig(socket_id: &str, user_data: &str) -> String {
    format!(
        "{KEY}:{}",
        hmac_hex(SECRET, &format!("{socket_id}::user::{user_data}"))
    )
}

/// Reads the next text frame as JSON, panicking on anything else.
fn next_json(c: &mut Client) -> Value {
    c.recv_json(T)
}

/// Waits for a frame satisfying `pred`, skipping others.
fn wait_frame(c: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_event(left) {
            Event::Text(t) => {
                let v: Value =
                    serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"));
                if pred(&v) {
                    return v;
                }
            }
            other => panic!("waiting for {what}: got {other:?}"),
        }
    }
}

/// A connected Pusher client: (client, socket_id, the raw connection_established frame).
fn pusher_connect(s: &Server, key: &str) -> (Client, String, Value) {
    let mut c = s.ws(&format!(
        "/app/{key}?protocol=7&client=rust-test&version=1.0"
    ));
    let first = next_json(&mut c);
    assert_eq!(first["event"], "pusher:connection_established", "{first}");
    let data: Value =
        serde_json::from_str(first["data"].as_str().expect("data is a string")).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_string();
    (c, socket_id, first)
}

fn subscribe(
    c: &mut Client,
    channel: &str,
    auth: Option<&str>,
    channel_data: Option<&str>,
) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(a) = auth {
        data["auth"] = json!(a);
    }
    if let Some(d) = channel_data {
        data["channel_data"] = json!(d);
    }
    c.send_json(&json!({"event": "pusher:subscribe", "data": data}));
    wait_frame(c, &format!("subscription answer for {channel}"), |v| {
        v["channel"] == channel
            && (v["event"] == "pusher_internal:subscription_succeeded"
                || v["event"] == "pusher:subscription_error")
    })
}

/// Expects `pusher:error` with `code`, then a close frame with the same code.
fn expect_error_then_close(c: &mut Client, code: u16) -> Value {
    let err = next_json(c);
    assert_eq!(err["event"], "pusher:error", "{err}");
    assert_eq!(err["data"]["code"], json!(code), "{err}");
    assert!(err["data"]["message"].is_string(), "{err}");
    let (close, _) = c.expect_close(T);
    assert_eq!(close, code, "close code");
    err
}

// ---------------------------------------------------------------------------------------------
// Connection refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_app_key_gets_4001_then_close_4001() {
    let f = start_default();
    let mut c = f.server.ws("/app/no-such-key?protocol=7");
    let err = expect_error_then_close(&mut c, 4001);
    assert!(
        err["data"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-key"),
        "{err}"
    );
}

#[test]
fn disabled_app_gets_4003() {
    let f = start(vec![app(json!({"enabled": false}))]);
    let mut c = f.server.ws(&format!("/app/{KEY}?protocol=7"));
    expect_error_then_close(&mut c, 4003);
}

#[test]
fn missing_protocol_gets_4008() {
    // The protocol document: without `protocol` (and no inferable `version`) protocol 1 is used,
    // "deprecated and will in future be replaced by a 4008 error code"; protocol 1 is no longer
    // supported, so refusing is right and 4008 is the code the document names.
    let f = start_default();
    let mut c = f.server.ws(&format!("/app/{KEY}"));
    expect_error_then_close(&mut c, 4008);
}

#[test]
fn unsupported_protocol_gets_4007() {
    let f = start_default();
    let mut c = f.server.ws(&format!("/app/{KEY}?protocol=3"));
    expect_error_then_close(&mut c, 4007);
    let mut c = f.server.ws(&format!("/app/{KEY}?protocol=99"));
    expect_error_then_close(&mut c, 4007);
}

#[test]
fn invalid_protocol_string_gets_4006() {
    let f = start_default();
    let mut c = f.server.ws(&format!("/app/{KEY}?protocol=seven"));
    expect_error_then_close(&mut c, 4006);
}

#[test]
fn over_app_connection_quota_gets_4004() {
    let f = start(vec![app(json!({"max_connections": 2}))]);
    let (mut a, _, _) = pusher_connect(&f.server, KEY);
    let (mut b, _, _) = pusher_connect(&f.server, KEY);
    let mut c = f.server.ws(&format!("/app/{KEY}?protocol=7"));
    expect_error_then_close(&mut c, 4004);
    // The first two stay usable.
    for x in [&mut a, &mut b] {
        x.send_json(&json!({"event": "pusher:ping", "data": {}}));
        assert_eq!(next_json(x)["event"], "pusher:pong");
    }
    // A slot frees when one leaves.
    a.close();
    assert!(
        common::wait_until(T, || {
            let mut d = f.server.ws(&format!("/app/{KEY}?protocol=7"));
            let first = next_json(&mut d);
            first["event"] == "pusher:connection_established"
        }),
        "a new connection is admitted after one closed"
    );
}

// ---------------------------------------------------------------------------------------------
// Golden frames
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_connection_established() {
    let f = start(vec![app(json!({"activity_timeout": 30}))]);
    let (_c, socket_id, first) = pusher_connect(&f.server, KEY);
    let obj = first.as_object().unwrap();
    assert_eq!(obj.len(), 2, "only event and data: {first}");
    let data_text = first["data"].as_str().expect("data must be a JSON string");
    let data: Value = serde_json::from_str(data_text).unwrap();
    assert_eq!(data.as_object().unwrap().len(), 2, "{data}");
    assert_eq!(data["activity_timeout"], json!(30), "{data}");
    let (a, b) = socket_id.split_once('.').expect("socket_id has a dot");
    assert!(
        !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()),
        "socket_id {socket_id:?} must match ^\\d+\\.\\d+$"
    );
}

#[test]
fn golden_subscription_succeeded_public_and_private() {
    let f = start_default();
    let (mut c, sid, _) = pusher_connect(&f.server, KEY);
    let v = subscribe(&mut c, "my-channel", None, None);
    assert_eq!(
        v,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "my-channel", "data": "{}"})
    );
    let sig = channel_sig(&sid, "private-x", None);
    let v = subscribe(&mut c, "private-x", Some(&sig), None);
    assert_eq!(
        v,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "private-x", "data": "{}"})
    );
}

#[test]
fn golden_presence_subscription_succeeded() {
    let f = start_default();
    let (mut a, sa, _) = pusher_connect(&f.server, KEY);
    let da = r#"{"user_id":"1","user_info":{"name":"Ann"}}"#;
    subscribe(
        &mut a,
        "presence-room",
        Some(&channel_sig(&sa, "presence-room", Some(da))),
        Some(da),
    );
    let (mut b, sb, _) = pusher_connect(&f.server, KEY);
    let db = r#"{"user_id":"2"}"#;
    let v = subscribe(
        &mut b,
        "presence-room",
        Some(&channel_sig(&sb, "presence-room", Some(db))),
        Some(db),
    );
    assert_eq!(v["event"], "pusher_internal:subscription_succeeded", "{v}");
    let text = v["data"].as_str().expect("presence data is a JSON string");
    let data: Value = serde_json::from_str(text).unwrap();
    let p = &data["presence"];
    assert_eq!(data.as_object().unwrap().len(), 1, "{data}");
    assert_eq!(p["count"], json!(2), "{data}");
    let mut ids: Vec<&str> = p["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(p["hash"]["1"], json!({"name": "Ann"}), "{data}");
    assert!(p["hash"].as_object().unwrap().contains_key("2"), "{data}");
    // Ann saw Bob join: member_added with a string data holding user_id.
    let added = wait_frame(&mut a, "member_added", |v| {
        v["event"] == "pusher_internal:member_added"
    });
    assert_eq!(added["channel"], "presence-room");
    let d: Value = serde_json::from_str(added["data"].as_str().expect("string data")).unwrap();
    assert_eq!(d["user_id"], "2");
    // Bob leaves: member_removed, data string {"user_id":"2"}.
    b.close();
    let removed = wait_frame(&mut a, "member_removed", |v| {
        v["event"] == "pusher_internal:member_removed"
    });
    assert_eq!(
        removed,
        json!({"event": "pusher_internal:member_removed", "channel": "presence-room", "data": "{\"user_id\":\"2\"}"})
    );
}

#[test]
fn golden_ping_pong() {
    let f = start_default();
    let (mut c, _, _) = pusher_connect(&f.server, KEY);
    c.send_json(&json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(
        next_json(&mut c),
        json!({"event": "pusher:pong", "data": {}})
    );
    // Some clients send data as a string.
    c.send_json(&json!({"event": "pusher:ping", "data": "{}"}));
    assert_eq!(next_json(&mut c)["event"], "pusher:pong");
}

#[test]
fn golden_published_event_data_is_a_string() {
    let f = start_default();
    let (mut c, _, _) = pusher_connect(&f.server, KEY);
    subscribe(&mut c, "news", None, None);
    let body = r#"{"name":"flash","channel":"news","data":"{\"a\":1}"}"#;
    let r = rest(
        &f.server,
        "POST",
        &format!("/apps/{ID}/events"),
        &[],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        next_json(&mut c),
        json!({"event": "flash", "channel": "news", "data": "{\"a\":1}"})
    );
}

// ---------------------------------------------------------------------------------------------
// Subscription and sign-in errors
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_channel_auth_gets_subscription_error_and_stays_open() {
    let f = start_default();
    let (mut c, sid, _) = pusher_connect(&f.server, KEY);
    let wrong = format!(
        "{KEY}:{}",
        hmac_hex("wrong-secret", &format!("{sid}:private-a"))
    );
    let v = subscribe(&mut c, "private-a", Some(&wrong), None);
    assert_eq!(v["event"], "pusher:subscription_error", "{v}");
    assert_eq!(v["channel"], "private-a");
    assert_eq!(v["data"]["type"], "AuthError", "{v}");
    assert_eq!(v["data"]["status"], json!(401), "{v}");
    // Missing auth, and a presence signature that does not cover channel_data.
    let v = subscribe(&mut c, "private-b", None, None);
    assert_eq!(v["event"], "pusher:subscription_error", "{v}");
    let sig = channel_sig(&sid, "presence-c", Some(r#"{"user_id":"1"}"#));
    let v = subscribe(&mut c, "presence-c", Some(&sig), Some(r#"{"user_id":"2"}"#));
    assert_eq!(v["event"], "pusher:subscription_error", "{v}");
    // Still open and usable.
    c.send_json(&json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(next_json(&mut c)["event"], "pusher:pong");
    let v = subscribe(
        &mut c,
        "private-a",
        Some(&channel_sig(&sid, "private-a", None)),
        None,
    );
    assert_eq!(v["event"], "pusher_internal:subscription_succeeded", "{v}");
}

#[test]
fn signin_with_bad_auth_gets_4009_then_close_4009() {
    let f = start_default();
    let (mut c, sid, _) = pusher_connect(&f.server, KEY);
    let user_data = r#"{"id":"u1"}"#;
    let wrong = format!(
        "{KEY}:{}",
        hmac_hex("wrong", &format!("{sid}::user::{user_data}"))
    );
    c.send_json(
        &json!({"event": "pusher:signin", "data": {"auth": wrong, "user_data": user_data}}),
    );
    expect_error_then_close(&mut c, 4009);
}

#[test]
fn signin_success_frame() {
    let f = start_default();
    let (mut c, sid, _) = pusher_connect(&f.server, KEY);
    let user_data = r#"{"id":"u1","name":"Ann"}"#;
    c.send_json(&json!({"event": "pusher:signin", "data": {"auth": user_sig(&sid, user_data), "user_data": user_data}}));
    assert_eq!(
        next_json(&mut c),
        json!({"event": "pusher:signin_success", "data": {"user_data": user_data}})
    );
}

// ---------------------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------------------

#[test]
fn client_event_over_rate_gets_4301_and_connection_stays_open() {
    let f = start(vec![app(
        json!({"enable_client_messages": true, "max_client_events_per_second": 2}),
    )]);
    let (mut a, sa, _) = pusher_connect(&f.server, KEY);
    let (mut b, sb, _) = pusher_connect(&f.server, KEY);
    subscribe(
        &mut a,
        "private-chat",
        Some(&channel_sig(&sa, "private-chat", None)),
        None,
    );
    subscribe(
        &mut b,
        "private-chat",
        Some(&channel_sig(&sb, "private-chat", None)),
        None,
    );
    for i in 0..10 {
        a.send_json(
            &json!({"event": "client-typing", "channel": "private-chat", "data": {"i": i}}),
        );
    }
    let err = wait_frame(&mut a, "pusher:error 4301", |v| {
        v["event"] == "pusher:error"
    });
    assert_eq!(err["data"]["code"], json!(4301), "{err}");
    // The connection stays open: a ping is answered, and no close frame (4300-4399 or any) came.
    a.send_json(&json!({"event": "pusher:ping", "data": {}}));
    let deadline = Instant::now() + T;
    loop {
        match a.next_event(deadline.saturating_duration_since(Instant::now())) {
            Event::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] == "pusher:pong" {
                    break;
                }
                assert_eq!(v["event"], "pusher:error", "unexpected frame {v}");
                assert_eq!(v["data"]["code"], json!(4301), "{v}");
            }
            other => panic!("connection must stay open after 4301, got {other:?}"),
        }
    }
    // The receiver got some, but not all ten; the first is a client event with object data.
    let first = next_json(&mut b);
    assert_eq!(
        first,
        json!({"event": "client-typing", "channel": "private-chat", "data": {"i": 0}})
    );
    let mut got = 1;
    while let Event::Text(_) = b.next_event(Duration::from_millis(500)) {
        got += 1;
    }
    assert!(got < 10, "rate limit let all {got} client events through");
    // After a second the budget refills.
    std::thread::sleep(Duration::from_millis(1100));
    a.send_json(&json!({"event": "client-typing", "channel": "private-chat", "data": {"i": 99}}));
    let v = wait_frame(&mut b, "client event after refill", |v| {
        v["data"]["i"] == json!(99)
    });
    assert_eq!(v["event"], "client-typing");
}

#[test]
fn client_event_on_presence_carries_user_id() {
    let f = start(vec![app(json!({"enable_client_messages": true}))]);
    let (mut a, sa, _) = pusher_connect(&f.server, KEY);
    let (mut b, sb, _) = pusher_connect(&f.server, KEY);
    let da = r#"{"user_id":"alice"}"#;
    let db = r#"{"user_id":"bob"}"#;
    subscribe(
        &mut a,
        "presence-p",
        Some(&channel_sig(&sa, "presence-p", Some(da))),
        Some(da),
    );
    subscribe(
        &mut b,
        "presence-p",
        Some(&channel_sig(&sb, "presence-p", Some(db))),
        Some(db),
    );
    a.send_json(&json!({"event": "client-hi", "channel": "presence-p", "data": {"x": 1}}));
    let v = wait_frame(&mut b, "client-hi", |v| v["event"] == "client-hi");
    assert_eq!(
        v,
        json!({"event": "client-hi", "channel": "presence-p", "data": {"x": 1}, "user_id": "alice"})
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------------------------

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signed request (sign_rest_request), `params` as extra query parameters.
fn rest(
    s: &Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> common::HttpResponse {
    let q = auth::sign_rest_request(method, path, params, body, KEY, SECRET, now());
    raw_http(s, method, &format!("{path}?{q}"), body, &[])
}

fn raw_http(
    s: &Server,
    method: &str,
    target: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> common::HttpResponse {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        s.addr(),
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    http_raw(&s.addr(), &bytes).unwrap_or_else(|| panic!("no HTTP answer to {method} {target}"))
}

fn events_path() -> String {
    format!("/apps/{ID}/events")
}

#[test]
fn rest_signature_errors() {
    let f = start_default();
    let s = &f.server;
    let body = br#"{"name":"e","channel":"c","data":"x"}"#;
    // Valid.
    assert_eq!(rest(s, "POST", &events_path(), &[], body).status, 200);
    // Signed with the wrong secret.
    let q = auth::sign_rest_request("POST", &events_path(), &[], body, KEY, "wrong", now());
    let r = raw_http(s, "POST", &format!("{}?{q}", events_path()), body, &[]);
    assert_eq!(r.status, 401, "{}", r.body_text());
    // Body changed after signing (body_md5 mismatch).
    let q = auth::sign_rest_request("POST", &events_path(), &[], body, KEY, SECRET, now());
    let r = raw_http(
        s,
        "POST",
        &format!("{}?{q}", events_path()),
        br#"{"name":"f","channel":"c","data":"x"}"#,
        &[],
    );
    assert_eq!(r.status, 401, "{}", r.body_text());
    // Expired timestamp (Pusher allows 600 s of skew).
    let q = auth::sign_rest_request("POST", &events_path(), &[], body, KEY, SECRET, now() - 3600);
    let r = raw_http(s, "POST", &format!("{}?{q}", events_path()), body, &[]);
    assert_eq!(r.status, 401, "{}", r.body_text());
    // No signature at all.
    let r = raw_http(s, "POST", &events_path(), body, &[]);
    assert_eq!(r.status, 401, "{}", r.body_text());
    // Unknown app id.
    let path = "/apps/no-such-app/events";
    let q = auth::sign_rest_request("POST", path, &[], body, KEY, SECRET, now());
    let r = raw_http(s, "POST", &format!("{path}?{q}"), body, &[]);
    assert_eq!(r.status, 404, "{}", r.body_text());
}

#[test]
fn rest_bearer_secret() {
    let f = start_default();
    let s = &f.server;
    let (mut c, _, _) = pusher_connect(s, KEY);
    subscribe(&mut c, "bearer-news", None, None);
    let body = br#"{"name":"b","channel":"bearer-news","data":"via bearer"}"#;
    let r = raw_http(
        s,
        "POST",
        &events_path(),
        body,
        &[("Authorization", &format!("Bearer {SECRET}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        next_json(&mut c),
        json!({"event": "b", "channel": "bearer-news", "data": "via bearer"})
    );
    let r = raw_http(
        s,
        "POST",
        &events_path(),
        body,
        &[("Authorization", "Bearer not-the-secret")],
    );
    assert_eq!(r.status, 401);
    let r = raw_http(
        s,
        "GET",
        &format!("/apps/{ID}/channels"),
        b"",
        &[("Authorization", &format!("Bearer {SECRET}"))],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn rest_event_validation() {
    let f = start_default();
    let s = &f.server;
    let (mut c, _, _) = pusher_connect(s, KEY);
    subscribe(&mut c, "c", None, None);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            r#"{"name":"e","channel":"c","channels":["c"],"data":"x"}"#.into(),
            400,
            "channel and channels",
        ),
        (
            format!(
                r#"{{"name":"e","channels":[{}],"data":"x"}}"#,
                (0..101)
                    .map(|i| format!("\"c{i}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            400,
            "101 channels",
        ),
        (
            format!(
                r#"{{"name":"e","channel":"c","data":"{}"}}"#,
                "x".repeat(10 * 1024 + 1)
            ),
            413,
            "data over 10 KB",
        ),
        (
            r#"{"name":"e","channel":"c","data":"x","info":"user_count"}"#.into(),
            400,
            "user_count on non-presence",
        ),
        (r#"{"name":"e","data":"x"}"#.into(), 400, "no channel"),
        (r#"{"channel":"c","data":"x"}"#.into(), 400, "no name"),
        ("not json".into(), 400, "not JSON"),
    ];
    for (body, status, what) in &cases {
        let r = rest(s, "POST", &events_path(), &[], body.as_bytes());
        assert_eq!(r.status, *status, "{what}: {}", r.body_text());
        assert!(
            r.json()["error"].is_string() || !r.body.is_empty(),
            "{what}: error body"
        );
    }
    // 100 channels (one of them "c") and exactly 10 KB are fine.
    let body = format!(
        r#"{{"name":"e","channels":["c",{}],"data":"x"}}"#,
        (1..100)
            .map(|i| format!("\"c{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(
        rest(s, "POST", &events_path(), &[], body.as_bytes()).status,
        200
    );
    let body = format!(
        r#"{{"name":"big","channel":"c","data":"{}"}}"#,
        "x".repeat(10 * 1024)
    );
    assert_eq!(
        rest(s, "POST", &events_path(), &[], body.as_bytes()).status,
        200
    );
    // Nothing of the refused calls reached the subscriber: first the 100-channel "e", then "big".
    let v = next_json(&mut c);
    assert_eq!(
        (v["event"].as_str(), v["data"].as_str()),
        (Some("e"), Some("x")),
        "first frame after the refusals"
    );
    let v = next_json(&mut c);
    assert_eq!(v["event"].as_str(), Some("big"));
    assert_eq!(v["data"].as_str().map(str::len), Some(10 * 1024));
}

#[test]
fn rest_batch_validation() {
    let f = start_default();
    let s = &f.server;
    let path = format!("/apps/{ID}/batch_events");
    let item = r#"{"name":"a","channel":"c","data":"1"}"#;
    let batch = |n: usize| format!(r#"{{"batch":[{}]}}"#, vec![item; n].join(","));
    let r = rest(s, "POST", &path, &[], batch(11).as_bytes());
    assert_eq!(r.status, 400, "batch of 11: {}", r.body_text());
    let r = rest(s, "POST", &path, &[], batch(10).as_bytes());
    assert_eq!(r.status, 200, "batch of 10: {}", r.body_text());
    assert_eq!(r.body_text(), "{}");
}

#[test]
fn rest_channel_queries() {
    let f = start_default();
    let s = &f.server;
    let chans = format!("/apps/{ID}/channels");
    // Empty maps render as {} not [].
    let r = rest(s, "GET", &chans, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), r#"{"channels":{}}"#);
    let (mut a, sa, _) = pusher_connect(s, KEY);
    subscribe(&mut a, "public-1", None, None);
    let d = r#"{"user_id":"u1"}"#;
    subscribe(
        &mut a,
        "presence-q",
        Some(&channel_sig(&sa, "presence-q", Some(d))),
        Some(d),
    );
    let r = rest(s, "GET", &chans, &[], b"");
    assert_eq!(
        r.json(),
        json!({"channels": {"public-1": {}, "presence-q": {}}})
    );
    assert_eq!(
        r.body_text().matches("{}").count(),
        2,
        "per-channel empty objects: {}",
        r.body_text()
    );
    let r = rest(
        s,
        "GET",
        &chans,
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        b"",
    );
    assert_eq!(
        r.json(),
        json!({"channels": {"presence-q": {"user_count": 1}}})
    );
    // user_count without the presence- prefix filter is 400 (HTTP API reference).
    let r = rest(s, "GET", &chans, &[("info", "user_count")], b"");
    assert_eq!(r.status, 400);
    // One channel.
    let r = rest(
        s,
        "GET",
        &format!("{chans}/public-1"),
        &[("info", "subscription_count")],
        b"",
    );
    assert_eq!(r.json(), json!({"occupied": true, "subscription_count": 1}));
    let r = rest(
        s,
        "GET",
        &format!("{chans}/public-1"),
        &[("info", "user_count")],
        b"",
    );
    assert_eq!(r.status, 400, "user_count on a non-presence channel");
    let r = rest(
        s,
        "GET",
        &format!("{chans}/presence-q"),
        &[("info", "user_count,subscription_count")],
        b"",
    );
    assert_eq!(
        r.json(),
        json!({"occupied": true, "user_count": 1, "subscription_count": 1})
    );
    // Users.
    let r = rest(s, "GET", &format!("{chans}/presence-q/users"), &[], b"");
    assert_eq!(r.json(), json!({"users": [{"id": "u1"}]}));
    let r = rest(s, "GET", &format!("{chans}/public-1/users"), &[], b"");
    assert_eq!(r.status, 400, "users of a non-presence channel");
    let r = rest(s, "GET", &format!("{chans}/presence-empty/users"), &[], b"");
    assert_eq!(r.body_text(), r#"{"users":[]}"#);
}

#[test]
fn rest_over_backend_event_rate_is_429() {
    let f = start(vec![app(json!({"max_backend_events_per_second": 3}))]);
    let s = &f.server;
    let body = br#"{"name":"e","channel":"c","data":"x"}"#;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(rest(s, "POST", &events_path(), &[], body).status);
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "10 events at 3/s must hit 429: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Reads are not counted against the backend-event limit.
    assert_eq!(
        rest(s, "GET", &format!("/apps/{ID}/channels"), &[], b"").status,
        200
    );
}

#[test]
fn rest_terminate_user_connections() {
    let f = start_default();
    let s = &f.server;
    let (mut a, sa, _) = pusher_connect(s, KEY);
    let ud = r#"{"id":"bad-user"}"#;
    a.send_json(
        &json!({"event": "pusher:signin", "data": {"auth": user_sig(&sa, ud), "user_data": ud}}),
    );
    assert_eq!(next_json(&mut a)["event"], "pusher:signin_success");
    let path = format!("/apps/{ID}/users/bad-user/terminate_connections");
    let r = rest(s, "POST", &path, &[], b"{}");
    assert_eq!(r.status, 200, "{}", r.body_text());
    expect_error_then_close(&mut a, 4009);
}

#[test]
fn health_and_metrics() {
    let f = start_default();
    let s = &f.server;
    let (_c, _, _) = pusher_connect(s, KEY);
    for path in ["/up", "/pusher/health"] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["status"], "ok", "{path}: {}", r.body_text());
    }
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    let text = r.body_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("ferrocast_connections"))
        .unwrap_or_else(|| panic!("no ferrocast_connections sample:\n{text}"));
    let n: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
}

// ---------------------------------------------------------------------------------------------
// Cache channels, /internal/broadcast, sign-in requirement, presence limits, timeouts, flags
// ---------------------------------------------------------------------------------------------

/// A server from a whole configuration object (apps and top-level keys).
fn start_cfg(cfg: Value) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.json", &cfg);
    let path = path.to_str().unwrap().to_string();
    let server = Server::start(&["--config", &path], &[]);
    Fixture { server, _dir: dir }
}

#[test]
fn cache_channel_replays_last_event_or_reports_a_miss() {
    let f = start_default();
    let s = &f.server;
    // Published while nobody listens: remembered anyway.
    let body = br#"{"name":"price","channel":"cache-prices","data":"{\"eur\":1.08}"}"#;
    assert_eq!(rest(s, "POST", &events_path(), &[], body).status, 200);
    let (mut c, _, _) = pusher_connect(s, KEY);
    let ok = subscribe(&mut c, "cache-prices", None, None);
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let replay = next_json(&mut c);
    assert_eq!(
        replay,
        json!({"event":"price","channel":"cache-prices","data":"{\"eur\":1.08}"})
    );
    let ok = subscribe(&mut c, "cache-empty", None, None);
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let miss = next_json(&mut c);
    assert_eq!(miss["event"], "pusher:cache_miss", "{miss}");
    assert_eq!(miss["channel"], "cache-empty", "{miss}");
}

#[test]
fn internal_broadcast_needs_its_token() {
    let f = start_cfg(json!({"apps": [app(json!({}))], "internal_token": "t0ken"}));
    let s = &f.server;
    let mut sub = s.channel_client();
    sub.subscribe("news");
    let form = b"channel=news&message=hello+from+cadsock";
    let post = |headers: &[(&str, &str)]| raw_http(s, "POST", "/internal/broadcast", form, headers);
    assert_eq!(post(&[]).status, 401);
    assert_eq!(post(&[("Authorization", "Bearer wrong")]).status, 401);
    assert_eq!(post(&[("Authorization", "Bearer t0ken")]).status, 200);
    assert_eq!(sub.recv_text(T), "hello from cadsock");
    // Without a configured token the endpoint does not exist.
    let g = start_default();
    let r = raw_http(
        &g.server,
        "POST",
        "/internal/broadcast",
        form,
        &[("Authorization", "Bearer ")],
    );
    assert_eq!(r.status, 404);
}

#[test]
fn connections_that_must_sign_in_are_closed_when_they_do_not() {
    let f = start(vec![app(json!({
        "require_user_authentication": true,
        "user_authentication_timeout_secs": 1
    }))]);
    let s = &f.server;
    let (mut lazy, _, _) = pusher_connect(s, KEY);
    let (mut good, socket_id, _) = pusher_connect(s, KEY);
    let user_data = r#"{"id":"u1"}"#;
    good.send_json(&json!({"event":"pusher:signin","data":{"auth": user_sig(&socket_id, user_data), "user_data": user_data}}));
    let ok = next_json(&mut good);
    assert_eq!(ok["event"], "pusher:signin_success", "{ok}");
    expect_error_then_close(&mut lazy, 4009);
    // Well past the deadline, the signed-in connection still answers.
    std::thread::sleep(Duration::from_millis(1500));
    good.send_json(&json!({"event":"pusher:ping","data":{}}));
    let pong = wait_frame(&mut good, "pong", |v| v["event"] == "pusher:pong");
    assert_eq!(pong["event"], "pusher:pong");
}

#[test]
fn presence_limits_refuse_new_members_not_new_connections() {
    let f = start(vec![app(json!({
        "max_presence_members_per_channel": 1,
        "max_presence_member_size_kb": 1
    }))]);
    let s = &f.server;
    let ch = "presence-room";
    let join = |user: &str, info: &str| {
        let (mut c, sid, _) = pusher_connect(s, KEY);
        let data = format!(r#"{{"user_id":"{user}","user_info":{{"name":"{info}"}}}}"#);
        let ans = subscribe(
            &mut c,
            ch,
            Some(&channel_sig(&sid, ch, Some(&data))),
            Some(&data),
        );
        (c, ans)
    };
    let (_a, first) = join("1", "ann");
    assert_eq!(
        first["event"], "pusher_internal:subscription_succeeded",
        "{first}"
    );
    let (_b, second_tab) = join("1", "ann");
    assert_eq!(
        second_tab["event"], "pusher_internal:subscription_succeeded",
        "same user, second tab: {second_tab}"
    );
    let (_c, full) = join("2", "bob");
    assert_eq!(full["event"], "pusher:subscription_error", "{full}");
    let g = start(vec![app(json!({"max_presence_member_size_kb": 1}))]);
    let (mut c, sid, _) = pusher_connect(&g.server, KEY);
    let big = format!(
        r#"{{"user_id":"3","user_info":{{"bio":"{}"}}}}"#,
        "x".repeat(2000)
    );
    let ans = subscribe(
        &mut c,
        ch,
        Some(&channel_sig(&sid, ch, Some(&big))),
        Some(&big),
    );
    assert_eq!(ans["event"], "pusher:subscription_error", "{ans}");
}

#[test]
fn silent_pusher_client_gets_4201() {
    let f = start_cfg(json!({
        "apps": [app(json!({}))],
        "ping_interval_secs": 1,
        "activity_timeout_secs": 2
    }));
    let (mut c, _, _) = pusher_connect(&f.server, KEY);
    // We never answer the server's pusher:ping: after activity_timeout_secs we are told to
    // reconnect (4200-4299), with the error first.
    let deadline = Instant::now() + T;
    let mut saw_ping = false;
    loop {
        assert!(Instant::now() < deadline, "no 4201 in time");
        match c.next_event(T) {
            Event::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] == "pusher:ping" {
                    saw_ping = true;
                    continue;
                }
                assert_eq!(v["event"], "pusher:error", "{v}");
                assert_eq!(v["data"]["code"], 4201, "{v}");
                break;
            }
            other => panic!("expected pusher:ping / pusher:error, got {other:?}"),
        }
    }
    assert!(
        saw_ping,
        "the server pings an idle client before giving up on it"
    );
    assert_eq!(c.expect_close(T).0, 4201);
}

#[test]
fn read_requests_over_their_rate_get_429() {
    let f = start(vec![app(json!({"max_read_requests_per_second": 1}))]);
    let s = &f.server;
    let path = format!("/apps/{ID}/channels");
    let statuses: Vec<u16> = (0..3)
        .map(|_| rest(s, "GET", &path, &[], b"").status)
        .collect();
    assert_eq!(statuses[0], 200);
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn default_app_from_flags() {
    let s = Server::start(
        &[
            "--app-id",
            "flag-id",
            "--app-key",
            "flag-key",
            "--app-secret",
            "flag-secret",
        ],
        &[],
    );
    let (mut c, _, _) = pusher_connect(&s, "flag-key");
    let ok = subscribe(&mut c, "public-x", None, None);
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let body = br#"{"name":"e","channel":"public-x","data":"via flags"}"#;
    let r = raw_http(
        &s,
        "POST",
        "/apps/flag-id/events",
        body,
        &[("Authorization", "Bearer flag-secret")],
    );
    assert_eq!(r.status, 200);
    let ev = next_json(&mut c);
    assert_eq!(ev["data"], "via flags", "{ev}");
    let r = raw_http(
        &s,
        "POST",
        "/apps/flag-id/events",
        body,
        &[("Authorization", "Bearer app-secret")],
    );
    assert_eq!(r.status, 401, "the built-in default secret no longer works");
}
