//! Channel history and recovery over the channel protocol: positions on request, a client that
//! comes back given exactly what it missed (or told it cannot be), never a partial replay.
//!
//! Rules: generous deadlines (`T` = 15 s), wait on events, never assert on elapsed time.
mod common;
use common::*;

fn start(dir: &std::path::Path) -> Server {
    let cfg = json!({"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                               "history": [{"prefix": "orders", "size": 5, "ttl_secs": 300}]}]});
    let path = write_config(dir, "ferrocast.json", &cfg);
    Server::start(&["--config", &path.display().to_string()], &[])
}

fn subscribe(s: &Server, request: Value) -> (Client, Vec<Value>) {
    let mut c = s.channel_client();
    c.send_json(&request);
    let mut before = Vec::new();
    loop {
        let v = c.recv_json(T);
        if v["event"] == "subscribed" {
            before.push(v);
            return (c, before);
        }
        before.push(v);
    }
}

fn publish(s: &Server, data: &str) {
    s.publish_json(&json!({"channel": "orders", "data": data}));
}

#[test]
fn a_client_that_comes_back_gets_exactly_what_it_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path());
    let (mut a, got) = subscribe(
        &s,
        json!({"action": "subscribe", "channel": "orders", "positions": true}),
    );
    // Where the stream stands, even before its first publication: a client that leaves
    // before anything is published can still recover what follows.
    assert_eq!(got[0]["offset"], 0, "{got:?}");
    let first_epoch = got[0]["epoch"].as_str().expect("epoch").to_string();
    for m in ["m1", "m2", "m3"] {
        publish(&s, m);
    }
    let seen: Vec<Value> = (0..3).map(|_| a.recv_json(T)).collect();
    assert_eq!(seen[2]["event"], "message");
    assert_eq!(
        (seen[2]["data"].as_str(), seen[2]["offset"].as_u64()),
        (Some("m3"), Some(3))
    );
    let epoch = seen[2]["epoch"].as_str().expect("epoch").to_string();
    assert_eq!(epoch, first_epoch);
    drop(a);
    publish(&s, "m4");
    publish(&s, "m5");
    let recover = json!({"action": "subscribe", "channel": "orders", "positions": true,
                         "recover": {"epoch": epoch, "offset": 3}});
    let (mut b, got) = subscribe(&s, recover.clone());
    let replayed: Vec<(&str, u64)> = got[..got.len() - 1]
        .iter()
        .map(|v| (v["data"].as_str().unwrap(), v["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        replayed,
        [("m4", 4), ("m5", 5)],
        "in order, before the answer"
    );
    let answer = got.last().unwrap();
    assert_eq!(answer["recovered"], true, "{answer}");
    assert_eq!(
        (answer["epoch"].as_str(), answer["offset"].as_u64()),
        (Some(epoch.as_str()), Some(5))
    );
    publish(&s, "m6");
    assert_eq!(b.recv_json(T)["offset"], 6, "then the live ones");
    // A client without positions gets the bare payloads replayed.
    let plain = json!({"action": "subscribe", "channel": "orders", "recover": {"epoch": epoch, "offset": 4}});
    let mut c = s.channel_client();
    c.send_json(&plain);
    assert_eq!(c.recv_text(T), "m5");
    assert_eq!(c.recv_text(T), "m6");
    assert_eq!(c.recv_json(T)["recovered"], true);
    assert_eq!(s.metric("history_messages"), 5, "the ring keeps 5");
}

#[test]
fn a_gap_longer_than_history_or_another_epoch_is_never_told_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path());
    let (mut a, _) = subscribe(
        &s,
        json!({"action": "subscribe", "channel": "orders", "positions": true}),
    );
    publish(&s, "first");
    let epoch = a.recv_json(T)["epoch"].as_str().unwrap().to_string();
    for i in 0..7 {
        publish(&s, &format!("n{i}"));
    }
    for _ in 0..7 {
        a.recv_json(T);
    }
    let cases = [
        (
            json!({"epoch": epoch, "offset": 1}),
            "offsets 2 and 3 left the ring of 5",
        ),
        (json!({"epoch": "another", "offset": 8}), "another epoch"),
    ];
    for (recover, why) in cases {
        let request = json!({"action": "subscribe", "channel": "orders", "recover": recover});
        let (_c, got) = subscribe(&s, request);
        assert_eq!(got.len(), 1, "{why}: nothing replayed: {got:?}");
        assert_eq!(got[0]["recovered"], false, "{why}");
        assert_eq!(
            got[0]["offset"], 8,
            "{why}: the stream's position, to start again from"
        );
    }
    // Ahead of this node's stream (what another node of a cluster gave, still on its way
    // here): nothing to replay, the rest comes live.
    let ahead = json!({"action": "subscribe", "channel": "orders",
                       "recover": {"epoch": epoch, "offset": 99}});
    let (_c, got) = subscribe(&s, ahead);
    assert_eq!(
        (got.len(), &got[0]["recovered"]),
        (1, &json!(true)),
        "{got:?}"
    );
    assert_eq!(got[0]["offset"], 99, "it stands where it was, not behind");
    // A channel without history can never recover.
    let request =
        json!({"action": "subscribe", "channel": "news", "recover": {"epoch": epoch, "offset": 1}});
    let (_c, got) = subscribe(&s, request);
    assert_eq!((got.len(), &got[0]["recovered"]), (1, &json!(false)));
    let bad = json!({"action": "subscribe", "channel": "orders", "recover": {"offset": "x"}});
    let mut c = s.channel_client();
    c.send_json(&bad);
    let err = c.recv_json(T);
    assert_eq!(err["event"], "error");
    assert!(
        err["message"].as_str().unwrap().contains("recover"),
        "{err}"
    );
}

#[test]
fn history_is_bounded_by_max_history_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = json!({"max_history_bytes": 4096,
                     "apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                               "history": [{"prefix": "", "size": 1000, "ttl_secs": 300}]}]});
    let path = write_config(dir.path(), "ferrocast.json", &cfg);
    let s = Server::start(&["--config", &path.display().to_string()], &[]);
    for i in 0..200 {
        s.publish_json(&json!({"channel": format!("c{}", i % 7), "data": "x".repeat(100)}));
    }
    let settled = wait_until(T, || s.metric("history_evicted_total") > 0);
    assert!(settled, "{}", s.logs_text());
    assert!(s.metric("history_bytes") <= 4096);
}

#[test]
fn rest_reports_a_channels_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path());
    for m in ["a", "b", "c"] {
        publish(&s, m);
    }
    let get = |channel: &str| {
        let req = format!(
            "GET /apps/app-id/channels/{channel}?info=history HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer app-secret\r\nConnection: close\r\n\r\n"
        );
        let resp = http_raw(&s.addr(), req.as_bytes()).expect("an answer");
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        resp.json()
    };
    let ok = wait_until(T, || get("orders")["history"]["offset"] == 3);
    assert!(ok, "{}", get("orders"));
    let h = &get("orders")["history"];
    assert_eq!(h["retained"], 3);
    assert!(
        h["epoch"].is_string() && h["bytes"].as_u64().unwrap() > 0,
        "{h}"
    );
    assert_eq!(get("news")["history"], Value::Null, "no history there");
}

#[test]
fn a_restart_hands_history_on_so_a_deploy_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path());
    let (mut a, _) = subscribe(
        &s,
        json!({"action": "subscribe", "channel": "orders", "positions": true}),
    );
    publish(&s, "before-1");
    publish(&s, "before-2");
    a.recv_json(T);
    let second = a.recv_json(T);
    let (before, last) = (second["epoch"].clone(), second["offset"].clone());
    assert_eq!(last, 2, "{second}");
    let mark = s.log_mark();
    let fifo = s.fifo().to_str().unwrap().to_string();
    let out = run_cli(&["restart", "--fifo", &fifo], &[], None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(a.expect_close(T).0, 1012);
    // Published while the process is replaced: the FIFO waits for the new one.
    publish(&s, "during");
    assert!(
        s.wait_for_log_since(mark, "took over the history of 1 channel(s)", T)
            .is_some(),
        "{}",
        s.logs_text()
    );
    let recover = json!({"action": "subscribe", "channel": "orders", "positions": true,
                         "recover": {"epoch": before, "offset": last}});
    let (_c, got) = subscribe(&s, recover);
    let replayed: Vec<&str> = got[..got.len() - 1]
        .iter()
        .filter_map(|v| v["data"].as_str())
        .collect();
    assert_eq!(replayed, ["during"], "{got:?}");
    let answer = got.last().unwrap();
    assert_eq!(answer["recovered"], true, "{answer}");
    assert_eq!(
        (&answer["epoch"], &answer["offset"]),
        (&before, &json!(3)),
        "the same stream"
    );
}

#[test]
fn a_pusher_client_excluded_by_socket_id_is_told_the_stream_moved_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path());
    let mut c = s.ws("/app/app-key?protocol=7");
    let hello = c.recv_json(T);
    let data: Value = serde_json::from_str(hello["data"].as_str().expect("data")).expect("json");
    let socket_id = data["socket_id"].as_str().expect("socket id").to_string();
    c.send_json(
        &json!({"event": "pusher:subscribe", "data": {"channel": "orders", "positions": true}}),
    );
    assert_eq!(
        c.recv_json(T)["event"],
        "pusher_internal:subscription_succeeded"
    );
    let at = c.recv_json(T);
    assert_eq!(at["event"], "pusher_internal:ferrocast_position");
    // Its own event comes back as "everything up to 1 was given", not as a hole before 2.
    s.rest_event(
        &json!({"name": "e", "channel": "orders", "data": "mine", "socket_id": socket_id}),
    );
    publish(&s, "theirs");
    let positions: Vec<Value> = (0..3).map(|_| c.recv_json(T)).collect();
    let data = |v: &Value| -> Value {
        serde_json::from_str(v["data"].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
    };
    assert_eq!(data(&positions[0])["at"], 1, "{positions:?}");
    assert_eq!(data(&positions[1])["next"], 2, "{positions:?}");
    assert_eq!(positions[2]["data"], "theirs");
}
