//! Several nodes through a real `redis-server`: every broadcast reaches every node exactly once,
//! socket_id exclusion holds across nodes, and a Redis outage degrades to local delivery.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, T, wait_until};
use serde_json::Value;

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        let up = wait_until(T, || {
            TcpStream::connect(("127.0.0.1", port))
                .and_then(|mut s| {
                    s.write_all(b"PING\r\n")?;
                    let mut buf = [0u8; 7];
                    s.read_exact(&mut buf)?;
                    Ok(&buf == b"+PONG\r\n")
                })
                .unwrap_or(false)
        });
        assert!(up, "redis-server did not come up on port {port}");
        Redis { port, child }
    }

    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

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

fn rest_event(node: &Server, body: &Value) {
    let body = body.to_string();
    let req = format!(
        "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(node.addr()).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "REST event refused: {resp}"
    );
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
    rest_event(
        &nodes[1],
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
    rest_event(
        &b,
        &serde_json::json!({"name": "msg", "channel": "chat", "data": "not for the sender", "socket_id": sender}),
    );
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
