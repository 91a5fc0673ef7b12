//! Channel history across the nodes of a cluster (a real `redis-server`): every node keeps the
//! same publication under the same position, so a client that comes back on another node gets
//! exactly what it missed; without Redis, a node numbers alone and a client is told what it
//! cannot recover, never given a partial replay.
//!
//! Rules: generous deadlines (`T` = 15 s), wait on events, never assert on elapsed time.
mod common;
use common::*;

fn node(dir: &std::path::Path, redis: &Redis, name: &str) -> Server {
    let cfg = json!({
        "apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                  "history": [{"prefix": "orders", "size": 100, "ttl_secs": 300}]}],
        "scaling": {"driver": "redis", "redis_url": format!("redis://127.0.0.1:{}/0", redis.port)}
    });
    let path = write_config(dir, &format!("{name}.json"), &cfg);
    let s = Server::start(&["--config", &path.display().to_string()], &[]);
    assert!(
        s.wait_for_log("redis link up", T).is_some(),
        "node never connected to Redis:\n{}",
        s.logs_text()
    );
    s
}

/// Subscribes over the channel protocol; returns the client and what came up to `subscribed`.
fn subscribe(s: &Server, request: Value) -> (Client, Vec<Value>) {
    let mut c = s.channel_client();
    c.send_json(&request);
    let mut got = Vec::new();
    loop {
        let v = c.recv_json(T);
        let done = v["event"] == "subscribed";
        got.push(v);
        if done {
            return (c, got);
        }
    }
}

fn positioned(channel: &str) -> Value {
    json!({"action": "subscribe", "channel": channel, "positions": true})
}

/// (data, offset) of `n` positioned messages.
fn receive(c: &mut Client, n: usize) -> Vec<(String, u64)> {
    (0..n)
        .map(|_| {
            let v = c.recv_json(T);
            let data = v["data"].as_str().expect("data").to_string();
            (data, v["offset"].as_u64().expect("offset"))
        })
        .collect()
}

#[test]
fn a_client_that_comes_back_on_another_node_gets_exactly_what_it_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let (a, b) = (node(dir.path(), &redis, "a"), node(dir.path(), &redis, "b"));
    let (mut on_a, got) = subscribe(&a, positioned("orders"));
    let epoch = got[0]["epoch"].as_str().expect("epoch").to_string();
    assert!(epoch.contains('.'), "a cluster epoch, from Redis: {epoch}");
    assert_eq!(got[0]["offset"], 0);
    // A client already on B sees the same positions.
    let (mut on_b, got) = subscribe(&b, positioned("orders"));
    assert_eq!(
        (got[0]["epoch"].as_str(), &got[0]["offset"]),
        (Some(epoch.as_str()), &json!(0))
    );

    a.publish_json(&json!({"channel": "orders", "data": "m1"}));
    b.publish_json(&json!({"channel": "orders", "data": "m2"}));
    let seen_a = receive(&mut on_a, 2);
    assert_eq!(seen_a, receive(&mut on_b, 2), "one order, one numbering");
    assert_eq!(seen_a.iter().map(|m| m.1).collect::<Vec<_>>(), [1, 2]);
    drop(on_a);

    // While it is away: 100 publications, through both nodes' FIFOs and REST.
    let sent: Vec<String> = (3..=102).map(|i| format!("m{i}")).collect();
    for (i, data) in sent.iter().enumerate() {
        let body = json!({"channel": "orders", "data": data});
        match i % 4 {
            0 => a.publish_json(&body),
            1 => b.publish_json(&body),
            2 => a.rest_event(&json!({"name": "e", "channel": "orders", "data": data})),
            _ => b.rest_event(&json!({"name": "e", "channel": "orders", "data": data})),
        }
        // Sources publish independently; one at a time keeps the expected order known.
        assert_eq!(on_b.recv_json(T)["data"].as_str(), Some(data.as_str()));
    }

    // It comes back on B.
    let recover = json!({"action": "subscribe", "channel": "orders", "positions": true,
                         "recover": {"epoch": epoch, "offset": 2}});
    let (mut back, got) = subscribe(&b, recover);
    let (answer, replayed) = got.split_last().expect("answer");
    let replayed: Vec<(&str, u64)> = (replayed.iter())
        .map(|v| {
            (
                v["data"].as_str().unwrap_or(""),
                v["offset"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(&str, u64)> = (sent.iter().zip(3..))
        .map(|(d, o)| (d.as_str(), o))
        .collect();
    assert_eq!(
        replayed, expected,
        "all 100, once, in order, before the answer"
    );
    assert_eq!(answer["recovered"], true, "{answer}");
    assert_eq!(answer["offset"], 102);
    a.publish_json(&json!({"channel": "orders", "data": "live"}));
    assert_eq!(
        receive(&mut back, 1),
        [("live".to_string(), 103)],
        "then live"
    );
    assert_eq!(b.metric("history_replayed_total"), 100);
}

#[test]
fn a_node_that_never_saw_a_stream_asks_redis_where_it_stands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let a = node(dir.path(), &redis, "a");
    for i in 1..=5 {
        a.publish_json(&json!({"channel": "orders.7", "data": format!("m{i}")}));
    }
    // Numbered through Redis, so delivered (and kept) a moment later.
    assert!(wait_until(T, || a.metric("history_messages") == 5));
    let (mut on_a, got) = subscribe(&a, positioned("orders.7"));
    assert_eq!(got[0]["offset"], 5, "{got:?}");
    let epoch = got[0]["epoch"].clone();
    // B starts after those five: it learns the position from Redis, not from a publication.
    let b = node(dir.path(), &redis, "b");
    let (mut on_b, got) = subscribe(&b, positioned("orders.7"));
    assert_eq!(
        (&got[0]["epoch"], &got[0]["offset"]),
        (&epoch, &json!(5)),
        "{got:?}"
    );
    b.publish_json(&json!({"channel": "orders.7", "data": "m6"}));
    assert_eq!(receive(&mut on_a, 1), receive(&mut on_b, 1));
    // A client that was at 5 on A, and comes to B: B follows from 5, so nothing is lost.
    let recover = json!({"action": "subscribe", "channel": "orders.7", "positions": true,
                         "recover": {"epoch": epoch, "offset": 5}});
    let (_c, got) = subscribe(&b, recover);
    assert_eq!(got.len(), 2, "m6, then the answer: {got:?}");
    assert_eq!(got[1]["recovered"], true);
    // At 4 it missed m5, which B never kept: told so.
    let recover = json!({"action": "subscribe", "channel": "orders.7",
                         "recover": {"epoch": epoch, "offset": 4}});
    let (_c, got) = subscribe(&b, recover);
    assert_eq!(
        (got.len(), &got[0]["recovered"]),
        (1, &json!(false)),
        "{got:?}"
    );
}

#[test]
fn without_redis_a_node_numbers_alone_and_recovery_is_never_told_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = Redis::start();
    let a = node(dir.path(), &redis, "a");
    let (mut on_a, got) = subscribe(&a, positioned("orders"));
    let epoch = got[0]["epoch"].as_str().expect("epoch").to_string();
    a.publish_json(&json!({"channel": "orders", "data": "before"}));
    assert_eq!(receive(&mut on_a, 1), [("before".to_string(), 1)]);
    let mark = a.log_mark();
    redis.stop();
    assert!(a.wait_for_log_since(mark, "redis link down", T).is_some());
    a.publish_json(&json!({"channel": "orders", "data": "during"}));
    let v = on_a.recv_json(T);
    assert_eq!(v["data"], "during", "local delivery goes on");
    let local = v["epoch"].as_str().expect("epoch");
    assert!(!local.contains('.'), "numbered by the node alone: {local}");
    let recover = json!({"action": "subscribe", "channel": "orders",
                         "recover": {"epoch": epoch, "offset": 1}});
    let (_c, got) = subscribe(&a, recover);
    assert_eq!(got.last().expect("answer")["recovered"], false, "{got:?}");
}
