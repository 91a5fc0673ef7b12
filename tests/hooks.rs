//! Lifecycle hooks (`hooks` of an app): connections, subscriptions and sign-ins told to a real
//! PHP application — `examples/hooks.php` as a php-cli child and through a real php-fpm — and a
//! dead application that costs batches, never a client's time.
//!
//! Rules: generous deadlines (`T` = 15 s), wait on events, never assert on elapsed time.
mod common;
use common::fpm::Fpm;
use common::*;

use std::path::{Path, PathBuf};

use ferrocast::pusher::auth;

fn hooks_php() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hooks.php")
}

fn start(dir: &Path, hooks: Value) -> Server {
    let cfg = json!({"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                               "hooks": hooks}],
                     "webhooks": {"batch_ms": 20}});
    let path = write_config(dir, "ferrocast.json", &cfg);
    Server::start(&["--config", &path.display().to_string()], &[])
}

/// The events hooks.php logged so far, one JSON object per line.
fn logged(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_logged(log: &Path, s: &Server, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let ok = wait_until(T, || pred(&logged(log)));
    assert!(ok, "{what}: {:?}\n{}", logged(log), s.logs_text());
    logged(log)
}

/// A Pusher session signed in as `user`, subscribed to `orders` then unsubscribed, then
/// closed; returns its socket id.
fn pusher_session(s: &Server, user: &str) -> String {
    let mut c = s.ws("/app/app-key?protocol=7");
    let hello = c.recv_json(T);
    let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
    let sid = data["socket_id"].as_str().unwrap().to_string();
    let user_data = json!({ "id": user }).to_string();
    let sig = auth::user_auth("app-key", "app-secret", &sid, &user_data);
    c.send_json(&json!({"event": "pusher:signin", "data": {"auth": sig, "user_data": user_data}}));
    assert_eq!(c.recv_json(T)["event"], "pusher:signin_success");
    c.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "orders"}}));
    assert_eq!(
        c.recv_json(T)["event"],
        "pusher_internal:subscription_succeeded"
    );
    c.send_json(&json!({"event": "pusher:unsubscribe", "data": {"channel": "orders"}}));
    c.send_json(&json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(
        c.recv_json(T)["event"],
        "pusher:pong",
        "the unsubscribe was handled"
    );
    c.close();
    sid
}

fn named<'a>(events: &'a [Value], name: &str, sid: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["name"] == name && e["socket_id"] == sid)
}

/// What a Pusher session and a channel-protocol session leave in the log, field by field.
fn check_lifecycle(s: &Server, log: &Path) {
    let sid = pusher_session(s, "alice");
    let mut ch = s.channel_client();
    ch.send_json(&json!({"action": "subscribe", "channel": "news"}));
    assert_eq!(ch.recv_json(T)["event"], "subscribed");
    drop(ch);
    let mut raw = s.ws("/chat");
    raw.raw_ping_pong();
    raw.close();
    let gone = |e: &[Value], protocol: &str| {
        e.iter()
            .filter(|e| e["protocol"] == protocol && e["name"] == "disconnected")
            .count()
            == 1
    };
    let events = wait_logged(log, s, "every event of the three sessions", |e| {
        named(e, "disconnected", &sid).is_some() && gone(e, "channel") && gone(e, "raw")
    });
    let get =
        |name: &str| named(&events, name, &sid).unwrap_or_else(|| panic!("{name}: {events:?}"));
    assert_eq!(get("connected")["remote_address"], "127.0.0.1");
    assert_eq!(get("connected")["protocol"], "pusher");
    assert!(
        get("connected").get("user_id").is_none(),
        "not signed in yet"
    );
    assert_eq!(get("signed_in")["user_id"], "alice");
    assert_eq!(get("subscribed")["channel"], "orders");
    assert_eq!(get("subscribed")["user_id"], "alice");
    assert_eq!(get("unsubscribed")["channel"], "orders");
    let gone = get("disconnected");
    assert_eq!(gone["reason"], "closed by the client", "{gone}");
    assert_eq!(gone["code"], 1000, "{gone}");
    assert!(gone["duration_secs"].is_u64(), "{gone}");
    assert!(gone["time_ms"].is_u64(), "the batch's time: {gone}");
    let channel: Vec<&Value> = events
        .iter()
        .filter(|e| e["protocol"] == "channel")
        .collect();
    let names: Vec<&str> = channel.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        ["connected", "subscribed", "disconnected"],
        "{channel:?}"
    );
    assert_eq!(channel[1]["channel"], "news");
    assert_eq!(channel[2]["reason"], "peer closed");
    let raw: Vec<&str> = events
        .iter()
        .filter(|e| e["protocol"] == "raw")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(raw, ["connected", "disconnected"]);
}

#[test]
fn hooks_reach_a_php_cli_script_signed_and_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("hooks.log");
    let command = json!([
        "env",
        "PUSHER_APP_SECRET=app-secret",
        format!("FERROCAST_HOOKS_LOG={}", log.display()),
        "php",
        hooks_php()
    ]);
    let s = start(dir.path(), json!([{"handler": "exec", "command": command}]));
    check_lifecycle(&s, &log);
}

#[test]
fn hooks_reach_php_fpm_and_filter_by_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("hooks.log");
    let log_env = log.display().to_string();
    let fpm = Fpm::start_with_env(
        2,
        &[
            ("PUSHER_APP_SECRET", "app-secret"),
            ("FERROCAST_HOOKS_LOG", &log_env),
        ],
    );
    let all = json!({"handler": "fastcgi", "socket": fpm.socket(), "script": hooks_php()});
    let s = start(dir.path(), json!([all]));
    check_lifecycle(&s, &log);
    drop(s);
    // Only what a hook asks for.
    std::fs::remove_file(&log).expect("remove log");
    let some = json!({"events": ["signed_in"], "handler": "fastcgi", "socket": fpm.socket(),
                      "script": hooks_php()});
    let s = start(dir.path(), json!([some]));
    let sid = pusher_session(&s, "bob");
    let events = wait_logged(&log, &s, "the sign-in", |e| {
        named(e, "signed_in", &sid).is_some()
    });
    assert!(
        events.iter().all(|e| e["name"] == "signed_in"),
        "only signed_in asked for: {events:?}\n{}",
        fpm.log()
    );
}

#[test]
fn a_bad_signature_is_refused_by_the_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("hooks.log");
    let command = json!([
        "env",
        "PUSHER_APP_SECRET=not-the-secret",
        format!("FERROCAST_HOOKS_LOG={}", log.display()),
        "php",
        hooks_php()
    ]);
    let s = start(dir.path(), json!([{"handler": "exec", "command": command}]));
    let mark = s.log_mark();
    s.channel_client().ping_pong();
    assert!(
        s.wait_for_log_since(mark, "hooks.php: bad signature", T)
            .is_some(),
        "{}",
        s.logs_text()
    );
    assert!(
        logged(&log).is_empty(),
        "nothing taken from a batch it cannot trust"
    );
}

#[test]
fn a_dead_application_costs_batches_never_a_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = json!({"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                               "hooks": [{"handler": "exec", "command": ["sleep", "30"]}]}],
                     "webhooks": {"batch_ms": 10, "timeout_secs": 1, "tries": 1, "max_pending": 5}});
    let path = write_config(dir.path(), "ferrocast.json", &cfg);
    let s = Server::start(&["--config", &path.display().to_string()], &[]);
    // Sessions come and go faster than the hung hook takes batches: every one is served.
    for _ in 0..60 {
        let mut c = s.channel_client();
        c.send_json(&json!({"action": "subscribe", "channel": "busy"}));
        assert_eq!(c.recv_json(T)["event"], "subscribed");
        c.ping_pong();
    }
    let dropped = wait_until(T, || s.metric("webhooks_dropped_total") > 0);
    assert!(
        dropped,
        "batches past the bound are dropped and counted\n{}",
        s.logs_text()
    );
    assert!(
        s.wait_for_log("dropped", T).is_some(),
        "a log line says what was lost\n{}",
        s.logs_text()
    );
}
