//! Several loops in one service (`--loops 2`), black-box: the supervisor forks two loop
//! processes sharing the port; clients land on either. Which loop a client is on shows in its
//! socket id (each loop process has its own first half).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Client, Event, Server, Value, json, wait_until};
use hmac::{Hmac, KeyInit, Mac};
use nix::sys::signal::Signal;
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(20);

fn start() -> Server {
    Server::start(&["--loops", "2"], &[])
}

/// A Pusher client of the default app: the client and its socket id.
fn pusher(s: &Server) -> (Client, String) {
    let mut c = s.ws("/app/app-key?protocol=7&client=rust-test&version=1.0");
    let first = c.recv_json(WAIT);
    assert_eq!(first["event"], "pusher:connection_established", "{first}");
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    (c, data["socket_id"].as_str().unwrap().to_string())
}

/// The loop a socket id belongs to.
fn loop_of(socket_id: &str) -> String {
    socket_id.split('.').next().unwrap().to_string()
}

/// Clients until both loops have at least `each`; every client is returned, with its socket id.
fn on_both_loops(s: &Server, each: usize) -> Vec<(Client, String)> {
    let mut clients = Vec::new();
    for _ in 0..400 {
        clients.push(pusher(s));
        let loops: HashSet<String> = clients.iter().map(|(_, id)| loop_of(id)).collect();
        let least = loops
            .iter()
            .map(|l| clients.iter().filter(|(_, id)| loop_of(id) == *l).count())
            .min()
            .unwrap_or(0);
        if loops.len() == 2 && least >= each {
            return clients;
        }
    }
    panic!("400 connections all landed on one loop");
}

fn subscribe(c: &mut Client, channel: &str, auth: Option<(&str, &str)>) {
    let mut data = json!({ "channel": channel });
    if let Some((auth, channel_data)) = auth {
        data["auth"] = json!(auth);
        data["channel_data"] = json!(channel_data);
    }
    c.send_json(&json!({"event": "pusher:subscribe", "data": data}));
    let got = next_event(c, "pusher_internal:subscription_succeeded");
    assert_eq!(got["channel"], channel, "{got}");
}

/// The next frame with this event name (others, like member_added, are skipped).
fn next_event(c: &mut Client, event: &str) -> Value {
    for _ in 0..50 {
        let v = c.recv_json(WAIT);
        if v["event"] == event {
            return v;
        }
    }
    panic!("no {event}");
}

fn presence_auth(socket_id: &str, channel: &str, user: &str) -> (String, String) {
    let channel_data = json!({ "user_id": user }).to_string();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"app-secret").unwrap();
    mac.update(format!("{socket_id}:{channel}:{channel_data}").as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    (format!("app-key:{sig}"), channel_data)
}

/// Every text frame that arrives within `quiet` of the last one.
fn drain(c: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Event::Text(t) = c.next_event(quiet) {
        got.push(serde_json::from_str(&t).unwrap());
    }
    got
}

#[test]
fn every_publication_reaches_every_loop_once() {
    let s = start();
    let mut clients = on_both_loops(&s, 2);
    for (c, _) in clients.iter_mut() {
        subscribe(c, "news", None);
    }
    for i in 0..10 {
        s.publish_json(&json!({"channel": "news", "event": "fifo", "data": {"i": i}}));
        s.rest_event(&json!({"name": "rest", "channel": "news", "data": i.to_string()}));
    }
    for (c, l) in clients.iter_mut() {
        let mut fifo = Vec::new();
        let mut rest = Vec::new();
        while fifo.len() < 10 || rest.len() < 10 {
            let v = c.recv_json(WAIT);
            match v["event"].as_str() {
                Some("fifo") => fifo.push(v),
                Some("rest") => rest.push(v),
                _ => {}
            }
        }
        let extra = drain(c, Duration::from_millis(500));
        assert!(extra.is_empty(), "{l}: more than once: {extra:?}");
    }
}

/// A script that publishes through REST (on either loop) and then writes to the FIFO (read
/// by the first loop) has the line delivered after the publication on every loop; REST
/// publications and FIFO lines each keep their own order. (A FIFO write is never answered, so
/// a REST call right after it on another loop is not ordered behind it.)
#[test]
fn a_fifo_line_comes_after_what_was_published_before_it_on_another_loop() {
    let s = start();
    let mut clients = on_both_loops(&s, 1);
    for (c, _) in clients.iter_mut() {
        subscribe(c, "order", None);
    }
    for i in 0..30 {
        s.rest_event(&json!({"name": "rest", "channel": "order", "data": i.to_string()}));
        s.publish_json(&json!({"channel": "order", "event": "fifo", "data": i.to_string()}));
    }
    for (c, id) in clients.iter_mut() {
        let (mut rest, mut fifo) = (Vec::new(), Vec::new());
        while rest.len() + fifo.len() < 60 {
            let v = c.recv_json(WAIT);
            let n: u32 = v["data"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0);
            match v["event"].as_str() {
                Some("rest") => rest.push(n),
                Some("fifo") => {
                    assert!(rest.contains(&n), "{id}: fifo {n} before rest {n}");
                    fifo.push(n);
                }
                _ => {}
            }
        }
        let want: Vec<u32> = (0..30).collect();
        assert_eq!((rest, fifo), (want.clone(), want), "{id}");
    }
}

/// A REST read of the test app, over a fresh connection (which loop answers is the kernel's
/// choice): the JSON it answered.
fn rest_get(s: &Server, path: &str) -> Value {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nConnection: close\r\n\r\n"
    );
    let resp = common::http_raw(&s.addr(), req.as_bytes()).expect("an answer");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    serde_json::from_slice(&resp.body).unwrap()
}

/// What one loop just did, another sees at once, as with one loop: a question put to it right
/// after (a REST count, a presence channel's members, a cache channel's last event) waits for
/// the bus to bring everything the other loops sent before. Many rounds, both directions:
/// without that wait, some answers miss the change.
#[test]
fn a_loop_answers_after_what_the_others_did_before_the_question() {
    let s = start();
    let clients = on_both_loops(&s, 2);
    let first = loop_of(&clients[0].1);
    let (mut here, mut there): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .partition(|(_, id)| loop_of(id) == first);
    for round in 0..40 {
        let (a, b) = if round % 2 == 0 {
            (&mut here[0], &mut there[0])
        } else {
            (&mut there[1], &mut here[1])
        };
        // A subscription on one loop, counted by whichever loop answers REST.
        let channel = format!("seen-{round}");
        subscribe(&mut a.0, &channel, None);
        let info = rest_get(
            &s,
            &format!("/apps/app-id/channels/{channel}?info=subscription_count"),
        );
        assert_eq!(info["subscription_count"], 1, "round {round}: {info}");

        // A member on one loop, listed to a member joining on the other.
        let presence = format!("presence-seen-{round}");
        let (auth, data) = presence_auth(&a.1, &presence, "ann");
        subscribe(&mut a.0, &presence, Some((&auth, &data)));
        let (auth, data) = presence_auth(&b.1, &presence, "bob");
        let mut sub = json!({"channel": presence, "auth": auth, "channel_data": data});
        b.0.send_json(&json!({"event": "pusher:subscribe", "data": sub.take()}));
        let ok = next_event(&mut b.0, "pusher_internal:subscription_succeeded");
        let members: Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
        assert_eq!(members["presence"]["count"], 2, "round {round}: {ok}");

        // A cache channel's event published through REST, replayed by the other loop.
        let cache = format!("cache-seen-{round}");
        s.rest_event(&json!({"name": "last", "channel": cache, "data": round.to_string()}));
        subscribe(&mut b.0, &cache, None);
        let replay = loop {
            let v = b.0.recv_json(WAIT);
            if v["channel"] == cache.as_str() {
                break v;
            }
        };
        assert_eq!(replay["event"], "last", "round {round}: {replay}");
    }
}

#[test]
fn presence_spans_the_loops_and_a_killed_loop_is_replaced() {
    let s = start();
    let clients = on_both_loops(&s, 1);
    let mut by_loop: Vec<(Client, String)> = Vec::new();
    for (c, id) in clients {
        if !by_loop.iter().any(|(_, m)| loop_of(m) == loop_of(&id)) {
            by_loop.push((c, id));
        }
    }
    let (mut b, b_id) = by_loop.pop().unwrap();
    let (mut a, a_id) = by_loop.pop().unwrap();
    let b_loop = loop_of(&b_id);
    let ch = "presence-room";
    let (auth, data) = presence_auth(&a_id, ch, "alice");
    subscribe(&mut a, ch, Some((&auth, &data)));
    let (auth, data) = presence_auth(&b_id, ch, "bob");
    subscribe(&mut b, ch, Some((&auth, &data)));
    let added = next_event(&mut a, "pusher_internal:member_added");
    assert!(added["data"].as_str().unwrap().contains("bob"), "{added}");
    // Kill -9 the loop that holds bob.
    let pid = loop_pid(&s, &b_loop);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let removed = next_event(&mut a, "pusher_internal:member_removed");
    assert!(
        removed["data"].as_str().unwrap().contains("bob"),
        "{removed}"
    );
    let again = drain(&mut a, Duration::from_millis(1500));
    assert!(
        !again
            .iter()
            .any(|v| v["event"] == "pusher_internal:member_removed"),
        "removed once: {again:?}"
    );
    // Bob's connection ends with its loop (frames already on the wire may come first).
    let ended = loop {
        match b.next_event(WAIT) {
            Event::Close(_) | Event::Gone(_) => break true,
            Event::Timeout => break false,
            _ => {}
        }
    };
    assert!(ended, "bob's connection outlived its loop");
    // Another loop takes its place, and serves.
    assert!(
        wait_until(WAIT, || loop_pids(&s).len() == 2
            && !loop_pids(&s).contains(&pid)),
        "the dead loop was not replaced: {:?}",
        loop_pids(&s)
    );
    let _ = on_both_loops(&s, 1);
}

fn loop_pids(s: &Server) -> Vec<i32> {
    let path = format!("/proc/{0}/task/{0}/children", s.pid());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The pid of the loop whose socket ids start with `prefix` (each loop logs both at start).
fn loop_pid(s: &Server, prefix: &str) -> i32 {
    for pid in loop_pids(s) {
        let line = format!("(pid {pid}) gives socket ids {prefix}.");
        if s.logs().iter().any(|l| l.contains(&line)) {
            return pid;
        }
    }
    panic!("no loop with socket ids {prefix}: {:?}", s.logs());
}

#[test]
fn metrics_and_up_count_the_whole_process() {
    let s = start();
    let clients = on_both_loops(&s, 2);
    let n = clients.len() as u64;
    assert!(
        wait_until(WAIT, || s.metric("connections") == n),
        "metrics connections {} != {n}",
        s.metric("connections")
    );
    let up: Value = serde_json::from_slice(&s.get("/up").body).unwrap();
    assert_eq!(up["connections"], n, "{up}");
    assert_eq!(up["loops"], 2, "{up}");
}

#[test]
fn sigterm_stops_every_loop_and_removes_the_fifo() {
    let mut s = start();
    let _clients = on_both_loops(&s, 1);
    let pids = loop_pids(&s);
    assert_eq!(pids.len(), 2, "{pids:?}");
    s.signal(Signal::SIGTERM);
    assert!(s.wait_exit(WAIT).success());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "loop {pid} left"
        );
    }
    assert!(!s.fifo().exists());
}

/// A process of `loops` loops scaling through `redis`, named `id`.
fn redis_node(redis: &common::Redis, id: &str, loops: &str) -> Server {
    let url = format!("scaling.redis_url=redis://127.0.0.1:{}/0", redis.port);
    let node = format!("scaling.node_id={id}");
    let args = [
        "--loops",
        loops,
        "--set",
        "scaling.driver=redis",
        "--set",
        &url,
        "--set",
        &node,
        // Long, so that a dead loop leaving at once is told apart from a silent one timing out.
        "--set",
        "scaling.node_timeout_secs=120",
    ];
    let s = Server::start(&args, &[]);
    assert!(
        s.wait_for_log("redis link up", WAIT).is_some(),
        "never connected to Redis:\n{}",
        s.logs_text()
    );
    s
}

#[test]
fn through_redis_each_loop_is_a_node_and_the_machines_share_everything() {
    let mut redis = common::Redis::start();
    let a = redis_node(&redis, "a", "2");
    let b = redis_node(&redis, "b", "1");
    // Each of A's loops is a node (`a-0`, `a-1`); B, one loop, is `b`.
    let member = |n: &str| redis.cli(&["SISMEMBER", "ferrocast:nodes", n]) == "1";
    assert!(
        wait_until(WAIT, || ["a-0", "a-1", "b"].iter().all(|n| member(n))),
        "nodes in Redis: {}",
        redis.cli(&["SMEMBERS", "ferrocast:nodes"])
    );
    // Clients on both loops of A and on B; publications through A's FIFO and B's REST.
    let mut clients = on_both_loops(&a, 1);
    clients.push(pusher(&b));
    for (c, _) in clients.iter_mut() {
        subscribe(c, "news", None);
    }
    // B hears of A's subscribers before it publishes (the count is replicated).
    let count = || {
        let path = "/apps/app-id/channels/news?info=subscription_count";
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\n\
             Connection: close\r\n\r\n"
        );
        let v = common::http_raw(&b.addr(), req.as_bytes()).map(|r| r.json());
        v.map_or(0, |v| v["subscription_count"].as_u64().unwrap_or(0))
    };
    let want = clients.len() as u64;
    assert!(wait_until(WAIT, || count() == want), "B counts {}", count());
    a.publish_json(&json!({"channel": "news", "event": "fifo", "data": "1"}));
    b.rest_event(&json!({"name": "rest", "channel": "news", "data": "2"}));
    for (c, id) in clients.iter_mut() {
        let got: Vec<String> = (0..2)
            .map(|_| {
                c.recv_json(WAIT)["event"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(
            got.contains(&"fifo".into()) && got.contains(&"rest".into()),
            "{id}: {got:?}"
        );
        let extra = drain(c, Duration::from_millis(500));
        assert!(extra.is_empty(), "{id}: more than once: {extra:?}");
    }
    // Redis stops: A says so, and its loops still share what A publishes.
    redis.stop();
    let degraded = || {
        let v: Value = serde_json::from_slice(&a.get("/up").body).unwrap_or_default();
        v["status"] == "degraded"
    };
    assert!(wait_until(WAIT, degraded), "A's /up never said degraded");
    a.publish_json(&json!({"channel": "news", "event": "alone", "data": "3"}));
    for (c, id) in clients
        .iter_mut()
        .filter(|(_, id)| !id.starts_with(&loop_of_b(&b)))
    {
        assert_eq!(next_event(c, "alone")["event"], "alone", "{id}");
    }
}

/// The socket-id prefix of B's one loop (its clients miss what A publishes without Redis).
fn loop_of_b(b: &Server) -> String {
    let (_c, id) = pusher(b);
    loop_of(&id)
}

#[test]
fn through_redis_a_killed_loop_leaves_the_other_machines_at_once() {
    let redis = common::Redis::start();
    let a = redis_node(&redis, "a", "2");
    let b = redis_node(&redis, "b", "1");
    let ch = "presence-room";
    let (mut bob, bob_id) = pusher(&a);
    let (mut alice, alice_id) = pusher(&b);
    let (auth, data) = presence_auth(&alice_id, ch, "alice");
    subscribe(&mut alice, ch, Some((&auth, &data)));
    let (auth, data) = presence_auth(&bob_id, ch, "bob");
    subscribe(&mut bob, ch, Some((&auth, &data)));
    let added = next_event(&mut alice, "pusher_internal:member_added");
    assert!(added["data"].as_str().unwrap().contains("bob"), "{added}");
    // Long before node_timeout_secs (120): the supervisor says the loop is gone.
    let pid = loop_pid(&a, &loop_of(&bob_id));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let started = std::time::Instant::now();
    let removed = next_event(&mut alice, "pusher_internal:member_removed");
    assert!(
        removed["data"].as_str().unwrap().contains("bob"),
        "{removed}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let again = drain(&mut alice, Duration::from_millis(1500));
    assert!(
        !again
            .iter()
            .any(|v| v["event"] == "pusher_internal:member_removed"),
        "removed once: {again:?}"
    );
}

/// The loop process serving a client: from `ss`, the server-side socket whose peer is the
/// client's own port.
fn loop_serving(s: &Server, c: &Client) -> Option<u32> {
    let port = c.ws.get_ref().local_addr().ok()?.port();
    let out = std::process::Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 4
            && f[2].ends_with(&format!(":{}", s.port()))
            && f[3].ends_with(&format!(":{port}"))
    })?;
    let pid = line.split("pid=").nth(1)?.split(',').next()?;
    pid.parse().ok()
}

/// Alice's connections until both loops have one (`extra` more after that), with the loop
/// process serving each.
fn alice_on_both_loops(s: &Server, extra: usize) -> Vec<(Client, u32)> {
    let mut alice: Vec<(Client, u32)> = Vec::new();
    let mut more = None;
    for _ in 0..200 {
        let c = s.try_ws("/raw", &[("Cookie", "sid=alice")]).expect("alice");
        let Some(pid) = loop_serving(s, &c) else {
            continue;
        };
        alice.push((c, pid));
        let loops: HashSet<u32> = alice.iter().map(|(_, p)| *p).collect();
        if loops.len() == 2 && more.is_none() {
            more = Some(alice.len() + extra);
        }
        if more == Some(alice.len()) {
            return alice;
        }
    }
    panic!("alice's connections all on one loop");
}

/// Each connection gets `lines` in their order, then nothing more (a ping is answered next).
fn expect_lines(alice: &mut [(Client, u32)], lines: &[String]) {
    for (c, pid) in alice.iter_mut() {
        for line in lines {
            assert_eq!(&c.recv_text(WAIT), line, "loop {pid}");
        }
        c.send_text("ping");
        assert_eq!(c.recv_text(WAIT), "pong", "loop {pid}: nothing more");
    }
}

#[test]
fn a_users_fifo_reaches_its_connections_on_every_loop_and_goes_with_the_last() {
    let (_dir, s) = alice_server();
    let mut alice = alice_on_both_loops(&s, 0);
    let fifo = s.fifo().parent().unwrap().join("users").join("alice.fifo");
    assert!(common::is_fifo(&fifo), "{} exists", fifo.display());
    let lines: Vec<String> = (0..5).map(|i| format!("for alice {i}")).collect();
    for line in &lines {
        common::fifo_write(&fifo, format!("{line}\n").as_bytes());
    }
    expect_lines(&mut alice, &lines);
    // The FIFO stays while any loop has one of her connections, and goes with the last. The
    // loop of her first connections read it; the other reads it once they are gone.
    let last_pid = alice.last().map(|(_, p)| *p).unwrap();
    let (first_loop, mut last_loop): (Vec<_>, Vec<_>) =
        alice.into_iter().partition(|(_, p)| *p != last_pid);
    for (c, _) in first_loop {
        c.close();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        common::is_fifo(&fifo),
        "alice still has a connection on loop {last_pid}"
    );
    let later: Vec<String> = (0..5).map(|i| format!("later {i}")).collect();
    for line in &later {
        common::fifo_write(&fifo, format!("{line}\n").as_bytes());
    }
    expect_lines(&mut last_loop, &later);
    for (c, _) in last_loop {
        c.close();
    }
    assert!(
        wait_until(WAIT, || !fifo.exists()),
        "the FIFO outlived alice"
    );
}

/// One loop reads a user's FIFO (the bus says which): every connection gets the lines in the
/// order they were written, on whichever loop it is.
#[test]
fn a_users_fifo_keeps_the_order_of_its_lines_on_every_loop() {
    let (_dir, s) = alice_server();
    let mut alice = alice_on_both_loops(&s, 4);
    let fifo = s.fifo().parent().unwrap().join("users").join("alice.fifo");
    let lines: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
    for chunk in lines.chunks(7) {
        let text: String = chunk.iter().map(|l| format!("{l}\n")).collect();
        common::fifo_write(&fifo, text.as_bytes());
    }
    expect_lines(&mut alice, &lines);
}

/// Two loops that validate `sid=alice` as alice (a user with a FIFO).
fn alice_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let validate = dir.path().join("validate.sh");
    let script =
        "#!/bin/sh\ncase \"$HTTP_COOKIE\" in *sid=alice*) echo alice ;; *) exit 1 ;; esac\n";
    std::fs::write(&validate, script).unwrap();
    let cfg = json!({"validate": {"handler": "exec", "command": ["/bin/sh", validate]}});
    let cfg = common::write_config(dir.path(), "c.json", &cfg);
    let s = Server::start(&["--loops", "2", "--config", cfg.to_str().unwrap()], &[]);
    (dir, s)
}
