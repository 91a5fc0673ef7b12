//! Several nodes through a real `redis-server`: every broadcast reaches every node exactly once,
//! socket_id exclusion holds across nodes, and a Redis outage degrades to local delivery.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Redis, Server, T, wait_until};
use serde_json::Value;

fn node(redis: &Redis) -> Server {
    let url = format!("scaling.redis_url=redis://127.0.0.1:{}/0", redis.port);
    let s = Server::start(&["--set", "scaling.driver=redis", "--set", &url], &[]);
    assert!(
        s.wait_for_log("redis link up", T).is_some(),
        "node never connected to Redis:\n{}",
        s.logs_text()
    );
    s
}

fn up_status(node: &Server) -> String {
    let v: Value = serde_json::from_slice(&node.get("/up").body).unwrap();
    v["status"].as_str().unwrap_or("").to_string()
}

#[test]
fn fifo_and_rest_reach_every_node_exactly_once() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    let mut clients: Vec<_> = nodes.iter().map(|n| n.channel_client()).collect();
    for c in clients.iter_mut() {
        c.subscribe("orders");
    }
    nodes[0].publish_json(&serde_json::json!({"channel": "orders", "data": "from A's FIFO"}));
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(T), "from A's FIFO");
    }
    nodes[1].rest_event(
        &serde_json::json!({"name": "e", "channel": "orders", "data": "from B's REST"}),
    );
    for c in clients.iter_mut() {
        assert_eq!(
            c.recv_text(T),
            "from B's REST",
            "a duplicate or a loss before this message"
        );
    }
    // A marker after both: anything delivered twice would arrive before it.
    nodes[2].publish_line(r#"{"channel":"orders","data":"marker"}"#);
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(T), "marker");
    }
}

#[test]
fn socket_id_exclusion_holds_across_nodes() {
    let redis = Redis::start();
    let a = node(&redis);
    let b = node(&redis);
    let mut on_a = a.channel_client();
    let sender = on_a
        .subscribe("chat")
        .expect("subscribed reply carries the socket id");
    let mut on_b = b.channel_client();
    on_b.subscribe("chat");
    // The event was caused by A's client (its socket id), triggered through B's REST API.
    b.rest_event(&serde_json::json!({"name": "msg", "channel": "chat", "data": "not for the sender", "socket_id": sender}));
    assert_eq!(on_b.recv_text(T), "not for the sender");
    a.publish_line(r#"{"channel":"chat","data":"marker"}"#);
    assert_eq!(
        on_a.recv_text(T),
        "marker",
        "the sender got its own event back"
    );
    assert_eq!(on_b.recv_text(T), "marker");
}

#[test]
fn redis_outage_keeps_local_delivery_and_recovers() {
    let mut redis = Redis::start();
    let port = redis.port;
    let a = node(&redis);
    let b = node(&redis);
    let mut on_a = a.channel_client();
    on_a.subscribe("news");
    let mut on_b = b.channel_client();
    on_b.subscribe("news");

    let mark_a = a.log_mark();
    let mark_b = b.log_mark();
    redis.stop();
    assert!(
        wait_until(T, || up_status(&a) == "degraded"),
        "A never reported degraded"
    );
    assert!(
        wait_until(T, || up_status(&b) == "degraded"),
        "B never reported degraded"
    );
    a.publish_line(r#"{"channel":"news","data":"during the outage"}"#);
    assert_eq!(
        on_a.recv_text(T),
        "during the outage",
        "local delivery must not wait for Redis"
    );

    let redis = Redis::start_on(port);
    assert!(
        a.wait_for_log_since(mark_a, "redis link up", Duration::from_secs(30))
            .is_some(),
        "A did not reconnect"
    );
    assert!(
        b.wait_for_log_since(mark_b, "redis link up", Duration::from_secs(30))
            .is_some(),
        "B did not reconnect"
    );
    let deadline = Instant::now() + T;
    while up_status(&a) != "ok" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    a.publish_line(r#"{"channel":"news","data":"after the outage"}"#);
    assert_eq!(on_a.recv_text(T), "after the outage");
    // B never sees the message from the outage (dropped, counted), and sees the next one once.
    assert_eq!(on_b.recv_text(T), "after the outage");
    let outage_logs = a.logs_text().matches("redis link down").count();
    assert_eq!(
        outage_logs,
        1,
        "the outage is logged once, not per message or attempt:\n{}",
        a.logs_text()
    );
    drop(redis);
}

// ---------------------------------------------------------------------------------------------
// Cluster state: presence, queries, node death, terminate
// ---------------------------------------------------------------------------------------------

use common::{Client, Event};
use ferrocast::pusher::auth;

fn node_with(redis: &Redis, extra: &[&str]) -> Server {
    let url = format!("scaling.redis_url=redis://127.0.0.1:{}/0", redis.port);
    let mut args = vec!["--set", "scaling.driver=redis", "--set", &url];
    args.extend_from_slice(extra);
    let s = Server::start(&args, &[]);
    assert!(
        s.wait_for_log("redis link up", T).is_some(),
        "node never connected to Redis:\n{}",
        s.logs_text()
    );
    s
}

/// A Pusher connection signed in as `user`.
fn signed_in_as(node: &Server, user: &str) -> Client {
    let (mut c, sid) = pusher(node);
    let user_data = serde_json::json!({ "id": user }).to_string();
    let sig = auth::user_auth("app-key", "app-secret", &sid, &user_data);
    c.send_json(
        &serde_json::json!({"event":"pusher:signin","data":{"auth":sig,"user_data":user_data}}),
    );
    assert_eq!(c.recv_json(T)["event"], "pusher:signin_success");
    c
}

fn pusher(node: &Server) -> (Client, String) {
    let mut c = node.ws("/app/app-key?protocol=7");
    let first = c.recv_json(T);
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    (c, data["socket_id"].as_str().unwrap().to_string())
}

/// Joins a presence channel as `user`; returns the member ids in subscription_succeeded.
fn join(c: &mut Client, socket_id: &str, channel: &str, user: &str) -> Vec<String> {
    let data = format!(r#"{{"user_id":"{user}"}}"#);
    let sig = auth::channel_auth("app-key", "app-secret", socket_id, channel, Some(&data));
    c.send_json(&serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":sig,"channel_data":data}}));
    loop {
        let v = c.recv_json(T);
        if v["event"] == "pusher_internal:subscription_succeeded" {
            let inner: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
            let mut ids: Vec<String> = inner["presence"]["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect();
            ids.sort();
            return ids;
        }
        assert_ne!(v["event"], "pusher:subscription_error", "{v}");
    }
}

/// Reads member events until the members known to `c` (its subscription snapshot plus what was
/// announced since) are exactly `expected`. Each user is announced at most once and never when
/// already known: that is the cluster-wide once-only rule, whatever order the nodes' messages
/// take through Redis.
fn settle(c: &mut Client, snapshot: &[String], expected: &[&str]) {
    let mut known: std::collections::BTreeSet<String> = snapshot.iter().cloned().collect();
    let want: std::collections::BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    while known != want {
        match member_event(c, T) {
            Some((ev, user)) if ev == "pusher_internal:member_added" => {
                assert!(
                    known.insert(user.clone()),
                    "{user} announced twice (known: {known:?})"
                );
            }
            Some((ev, user)) => panic!("unexpected {ev} for {user} while waiting for {want:?}"),
            None => panic!("members never converged: known {known:?}, expected {want:?}"),
        }
    }
}

/// The next member event (added/removed, user id), skipping pings; None if none within `wait`.
fn member_event(c: &mut Client, wait: Duration) -> Option<(String, String)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_event(left) {
            Event::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let ev = v["event"].as_str().unwrap_or("").to_string();
                if ev.starts_with("pusher_internal:member_") {
                    let d: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
                    return Some((ev, d["user_id"].as_str().unwrap().to_string()));
                }
            }
            Event::Timeout => return None,
            other => panic!("waiting for a member event: {other:?}"),
        }
    }
}

fn get_json(node: &Server, path: &str) -> Value {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(node.addr()).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"))
}

#[test]
fn presence_is_one_membership_across_nodes() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let ch = "presence-lobby";
    let (mut watcher, wsid) = pusher(&c);
    assert_eq!(join(&mut watcher, &wsid, ch, "watcher"), vec!["watcher"]);
    // Wait until node A knows of the watcher (a presence delta through Redis).
    let users_path = format!("/apps/app-id/channels/{ch}/users");
    assert!(wait_until(T, || get_json(&a, &users_path)["users"]
        .as_array()
        .is_some_and(|u| u.len() == 1)));

    let (mut tab1, s1) = pusher(&a);
    let ids = join(&mut tab1, &s1, ch, "ann");
    assert_eq!(ids, vec!["ann", "watcher"], "the member list spans nodes");
    assert_eq!(
        member_event(&mut watcher, T),
        Some(("pusher_internal:member_added".into(), "ann".into()))
    );
    let (mut tab2, s2) = pusher(&b);
    join(&mut tab2, &s2, ch, "ann");
    assert_eq!(
        member_event(&mut watcher, Duration::from_secs(2)),
        None,
        "a second tab on another node is not a new member"
    );

    // The cluster agrees on who is there, asked from any node.
    for n in [&a, &b, &c] {
        let users = get_json(n, &format!("/apps/app-id/channels/{ch}/users"));
        let mut ids: Vec<&str> = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, vec!["ann", "watcher"], "from node {}", n.port());
        let info = get_json(
            n,
            &format!("/apps/app-id/channels/{ch}?info=user_count,subscription_count"),
        );
        assert_eq!(info["user_count"], 2, "{info}");
        assert_eq!(info["subscription_count"], 3, "{info}");
    }

    tab1.close();
    assert_eq!(
        member_event(&mut watcher, Duration::from_secs(2)),
        None,
        "ann still has a tab on node B"
    );
    tab2.close();
    assert_eq!(
        member_event(&mut watcher, T),
        Some(("pusher_internal:member_removed".into(), "ann".into()))
    );
}

#[test]
fn a_dead_nodes_members_are_removed_by_the_others() {
    let redis = Redis::start();
    let timeout = ["--set", "scaling.node_timeout_secs=3"];
    let a = node_with(&redis, &timeout);
    let b = node_with(&redis, &timeout);
    let mut doomed = node_with(&redis, &timeout);
    let ch = "presence-ops";
    let (mut on_a, sa) = pusher(&a);
    let snap_a = join(&mut on_a, &sa, ch, "alice");
    let (mut on_b, sb) = pusher(&b);
    let snap_b = join(&mut on_b, &sb, ch, "bob");
    let (mut on_c, sc) = pusher(&doomed);
    join(&mut on_c, &sc, ch, "carol");
    settle(&mut on_a, &snap_a, &["alice", "bob", "carol"]);
    settle(&mut on_b, &snap_b, &["alice", "bob", "carol"]);

    // kill -9: no goodbye, no state left behind but what the others remember.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(doomed.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = doomed.wait_exit(T);
    for watcher in [&mut on_a, &mut on_b] {
        assert_eq!(
            member_event(watcher, Duration::from_secs(20)),
            Some(("pusher_internal:member_removed".into(), "carol".into())),
            "carol's node died: the survivors remove her within node_timeout_secs"
        );
    }
    let users = get_json(&a, &format!("/apps/app-id/channels/{ch}/users"));
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "{users}");
}

#[test]
fn heartbeat_keys_in_redis_expire_and_teach_new_nodes() {
    let redis = Redis::start();
    // One loop per node: this test reads a node's key by its configured name and freezes the
    // node's one process (with loops, each loop has a key, `{node_id}-N`, and freezing the
    // supervisor stops the loops' link only: `tests/loops.rs` covers loops through Redis).
    let opts = |id: &'static str| {
        [
            "--loops",
            "1",
            "--set",
            "scaling.node_timeout_secs=4",
            "--set",
            if id == "a" {
                "scaling.node_id=node-a"
            } else {
                "scaling.node_id=node-b"
            },
        ]
    };
    let mut a = node_with(&redis, &opts("a"));
    let mut on_a = a.channel_client();
    on_a.subscribe("orders");
    // The node's state is in Redis under its heartbeat key, with an expiry.
    assert!(
        wait_until(T, || redis
            .cli(&["HKEYS", "ferrocast:node:node-a"])
            .contains("\"orders\"")),
        "no heartbeat key: {:?}",
        redis.cli(&["HKEYS", "ferrocast:node:node-a"])
    );
    let pttl: i64 = redis
        .cli(&["PTTL", "ferrocast:node:node-a"])
        .parse()
        .unwrap();
    assert!((1..=4000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(redis.cli(&["SMEMBERS", "ferrocast:nodes"]), "node-a");
    // Signed-in users' connection counts are there too, for operators.
    let alice = r#"["user","app-id","alice"]"#;
    let mut signed_in = vec![signed_in_as(&a, "alice"), signed_in_as(&a, "alice")];
    let alice_count = || redis.cli(&["HGET", "ferrocast:node:node-a", alice]);
    assert!(
        wait_until(T, || alice_count() == "2"),
        "{:?}",
        alice_count()
    );
    signed_in.pop().unwrap().close();
    assert!(
        wait_until(T, || alice_count() == "1"),
        "{:?}",
        alice_count()
    );
    signed_in.pop().unwrap().close();
    assert!(
        wait_until(T, || alice_count().is_empty()),
        "{:?}",
        alice_count()
    );

    // A frozen node answers no Sync; a node starting meanwhile learns its state from the key.
    a.signal(nix::sys::signal::Signal::SIGSTOP);
    let b = node_with(&redis, &opts("b"));
    let count = |n: &Server| {
        get_json(n, "/apps/app-id/channels/orders?info=subscription_count")["subscription_count"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        wait_until(T, || count(&b) == 1),
        "B never learned A's subscriber:\n{}",
        b.logs_text()
    );
    assert!(
        b.wait_for_log("node node-a known from its heartbeat key", T)
            .is_some()
    );
    // Nobody refreshes A's key: it expires, and B forgets A within node_timeout_secs.
    assert!(wait_until(Duration::from_secs(15), || count(&b) == 0));
    assert!(wait_until(T, || redis
        .cli(&["EXISTS", "ferrocast:node:node-a"])
        == "0"));

    // Back to life, A writes its key again; stopped cleanly, it removes it at once.
    a.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(wait_until(T, || count(&b) == 1), "A came back");
    assert!(wait_until(T, || redis
        .cli(&["EXISTS", "ferrocast:node:node-a"])
        == "1"));
    a.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = a.wait_exit(T);
    assert_eq!(redis.cli(&["EXISTS", "ferrocast:node:node-a"]), "0");
    assert_eq!(redis.cli(&["SMEMBERS", "ferrocast:nodes"]), "node-b");
}

#[test]
fn a_missed_change_is_repaired_by_a_full_state() {
    let redis = Redis::start();
    let a = node_with(&redis, &["--set", "scaling.node_id=node-a"]);
    let b = node_with(&redis, &["--set", "scaling.node_id=node-b"]);
    let count = |n: &Server, ch: &str| {
        get_json(
            n,
            &format!("/apps/app-id/channels/{ch}?info=subscription_count"),
        )["subscription_count"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut on_a = a.channel_client();
    on_a.subscribe("orders");
    assert!(wait_until(T, || count(&b, "orders") == 1));
    // Nodes send only what changed, numbered. A change from A that B cannot place (here a
    // forged one, numbered far ahead, as if B had missed some) is not applied: B asks A for
    // its full state instead.
    let forged = serde_json::json!({"node": "node-a", "kind": "delta", "seq": 1_000_000,
        "changed": [{"app": "app-id", "channel": "ghost", "subscribers": 5}]});
    let mark = b.log_mark();
    redis.cli(&["PUBLISH", "ferrocast#broadcast", &forged.to_string()]);
    assert!(
        b.wait_for_log_since(mark, "out of step with node node-a", T)
            .is_some(),
        "B took the numbered-ahead change:\n{}",
        b.logs_text()
    );
    assert_eq!(
        count(&b, "ghost"),
        0,
        "an out-of-order change is not applied"
    );
    // A answered with its full state: B is in step again, and A's next change reaches it.
    let mut more = a.channel_client();
    more.subscribe("orders");
    more.subscribe("invoices");
    assert!(wait_until(T, || count(&b, "orders") == 2 && count(&b, "invoices") == 1));
    drop(more);
    assert!(wait_until(T, || count(&b, "orders") == 1 && count(&b, "invoices") == 0));
}

#[test]
fn terminate_connections_reaches_every_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut victims = [signed_in_as(&a, "mallory"), signed_in_as(&b, "mallory")];
    let (mut bystander, _) = pusher(&b);
    let req = "POST /apps/app-id/users/mallory/terminate_connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(a.addr()).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    for v in victims.iter_mut() {
        assert_eq!(v.expect_close(T).0, 4009);
    }
    bystander.send_json(&serde_json::json!({"event":"pusher:ping","data":{}}));
    assert_eq!(bystander.recv_json(T)["event"], "pusher:pong");
}

#[test]
fn backend_rate_limit_is_shared_by_the_nodes() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "c.json",
        &serde_json::json!({"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                                       "max_backend_events_per_second": 4}]}),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let a = node_with(&redis, &["--config", &cfg]);
    let _b = node_with(&redis, &["--config", &cfg]);
    assert!(
        a.wait_for_log("2 node(s) in the cluster", T).is_some(),
        "A never saw B:\n{}",
        a.logs_text()
    );
    // A's share of 4 events/s is 2: a burst of 6 gets at most 2-3 through (a little refill).
    let mut statuses = Vec::new();
    let mut s = TcpStream::connect(a.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    for i in 0..6 {
        let body = format!(r#"{{"name":"e","channel":"rl","data":"{i}"}}"#);
        let req = format!(
            "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        statuses.push(head[9..12].parse::<u16>().unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((1..=3).contains(&ok), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// A webhook receiver on loopback: collects the event names (with channels) of every POST.
fn webhook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(T)).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read the head, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        let v: Value = serde_json::from_str(&body[..len]).unwrap_or(Value::Null);
                        for e in v["events"].as_array().cloned().unwrap_or_default() {
                            out.lock().unwrap().push(format!(
                                "{} {}",
                                e["name"].as_str().unwrap_or(""),
                                e["channel"].as_str().unwrap_or("")
                            ));
                        }
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        break;
                    }
                }
            }
        }
    });
    (port, seen)
}

#[test]
fn channel_occupied_and_vacated_fire_once_for_the_cluster() {
    let redis = Redis::start();
    let (port, seen) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "c.json",
        &serde_json::json!({"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
            "webhooks": [{"url": format!("http://127.0.0.1:{port}/hook"),
                          "event_types": ["channel_occupied", "channel_vacated"]}]}]}),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let a = node_with(&redis, &["--config", &cfg]);
    let b = node_with(&redis, &["--config", &cfg]);
    let count_of = |n: &Server, channel: &str| {
        get_json(
            n,
            &format!("/apps/app-id/channels/{channel}?info=subscription_count"),
        )["subscription_count"]
            .as_u64()
            .unwrap_or(0)
    };
    let events = || seen.lock().unwrap().clone();

    let mut on_a = a.channel_client();
    on_a.subscribe("orders");
    assert!(
        wait_until(T, || events() == vec!["channel_occupied orders"]),
        "{:?}",
        events()
    );
    assert!(
        wait_until(T, || count_of(&b, "orders") == 1),
        "B never learned of A's subscriber"
    );
    let mut on_b = b.channel_client();
    on_b.subscribe("orders");
    assert!(wait_until(T, || count_of(&a, "orders") == 2));
    on_a.close();
    assert!(wait_until(T, || count_of(&b, "orders") == 1));
    on_b.close();
    assert!(
        wait_until(T, || events().len() == 2),
        "expected the vacated event: {:?}",
        events()
    );
    // Past both nodes' grace periods: nothing more.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        events(),
        vec!["channel_occupied orders", "channel_vacated orders"]
    );

    // Both nodes empty a channel at the same moment: each sees the other empty when its grace
    // period ends, and still only one of them (the later) sends the event.
    let mut on_a = a.channel_client();
    on_a.subscribe("invoices");
    let mut on_b = b.channel_client();
    on_b.subscribe("invoices");
    assert!(wait_until(T, || count_of(&a, "invoices") == 2
        && count_of(&b, "invoices") == 2));
    on_a.close();
    on_b.close();
    assert!(
        wait_until(T, || events().len() == 4),
        "expected the vacated event: {:?}",
        events()
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        events()[2..],
        ["channel_occupied invoices", "channel_vacated invoices"]
    );
}

#[test]
fn rediss_links_nodes_over_tls() {
    // A redis-server speaking only TLS, with a certificate made here; the nodes trust it through
    // scaling.redis_ca_file.
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("redis.crt");
    let key = dir.path().join("redis.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args(["--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (tests/run.sh installs it)");
    assert!(
        wait_until(T, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "TLS redis never listened"
    );

    let url = format!("scaling.redis_url=rediss://localhost:{port}/0");
    let ca = format!("scaling.redis_ca_file={}", cert.display());
    let start = || {
        let s = Server::start(
            &["--set", "scaling.driver=redis", "--set", &url, "--set", &ca],
            &[],
        );
        assert!(
            s.wait_for_log("redis link up", T).is_some(),
            "no TLS link:\n{}",
            s.logs_text()
        );
        s
    };
    let (a, b) = (start(), start());
    let mut on_b = b.channel_client();
    on_b.subscribe("secure");
    a.publish_line(r#"{"channel":"secure","data":"over TLS"}"#);
    assert_eq!(on_b.recv_text(T), "over TLS");

    // Without the CA the certificate is refused, and the node says why.
    let untrusting = Server::start(&["--set", "scaling.driver=redis", "--set", &url], &[]);
    assert!(
        untrusting.wait_for_log("redis link down", T).is_some(),
        "{}",
        untrusting.logs_text()
    );
    assert!(
        untrusting.logs_text().contains("certificate"),
        "{}",
        untrusting.logs_text()
    );
    let _ = child.kill();
    let _ = child.wait();
}
