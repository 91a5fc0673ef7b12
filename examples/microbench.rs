//! Micro-benchmarks of the hot paths, so regressions show up as numbers:
//! encoding a broadcast frame once and queueing it to many recipients (alone, and through the
//! whole core), closing every subscriber of a large channel, parsing FIFO lines, parsing client
//! frames and client messages.
//!
//! `cargo run --release --example microbench` (add `-- --quick` for a short run).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ferrocast::config::Config;
use ferrocast::core::Core;
use ferrocast::ws::{self, Frame};

/// Runs `f` repeatedly for about `budget`, returns nanoseconds per call (best of 3 rounds).
fn bench(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget / 3 {
            for _ in 0..64 {
                f();
            }
            n += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn masked(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![0x81];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A core with `n` channel-protocol clients (keys 0..n) subscribed to `orders`, queues drained.
fn core_with_subscribers(n: usize) -> Core {
    let cfg = Config {
        outbound_queue_bytes: 1 << 30,
        ..Config::default()
    };
    let mut core = Core::new(cfg, 1, Instant::now(), 0);
    let sub = masked(br#"{"action":"subscribe","channel":"orders"}"#);
    for key in 0..n {
        let peer = format!("127.0.0.{}:{}", 1 + key % 250, 1000 + key % 60000);
        core.open(key, peer.parse().expect("address"));
        core.on_bytes(key, &mut UPGRADE.to_vec());
        core.on_bytes(key, &mut sub.clone());
    }
    drain(&mut core);
    core
}

/// Takes every queued byte, as sockets that read everything would.
fn drain(core: &mut Core) {
    let mut dirty = Vec::new();
    core.take_dirty(&mut dirty);
    for key in dirty {
        if let Some(out) = core.outbox_mut(key) {
            while let Some(front) = out.front() {
                let n = front.len();
                out.advance(n);
            }
        }
    }
}

/// Measured through `core::Core` itself: a FIFO line delivered to 1 000 subscribers, and the
/// close of every subscriber of one channel (O(1) each: a mass disconnect is O(N)).
fn core_rows(quick: bool, rows: &mut Vec<(&'static str, f64, &'static str)>) {
    let budget = if quick {
        Duration::from_millis(150)
    } else {
        Duration::from_millis(1500)
    };
    let mut core = core_with_subscribers(1000);
    let line =
        br#"{"channel":"orders","data":"shipped #42, 64 bytes of payload to every client.."}"#;
    let per_line = bench(budget, || {
        core.on_fifo_line(black_box(line));
        drain(&mut core);
    });
    rows.push((
        "core: FIFO line to 1 000 subscribers, queued",
        per_line,
        "per line",
    ));
    rows.push((
        "  of which per recipient",
        per_line / 1000.0,
        "per recipient",
    ));
    // Twice: the cost per connection must not grow with the channel (O(1) each, O(N) in all).
    let sizes: [(usize, &'static str); 2] = if quick {
        [
            (2_000, "core: close all 2 000 subscribers of a channel"),
            (20_000, "core: close all 20 000 subscribers of a channel"),
        ]
    } else {
        [
            (10_000, "core: close all 10 000 subscribers of a channel"),
            (100_000, "core: close all 100 000 subscribers of a channel"),
        ]
    };
    for (n, label) in sizes {
        let mut core = core_with_subscribers(n);
        let start = Instant::now();
        for key in 0..n {
            core.on_gone(key, "closed");
        }
        let per_close = start.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(core.connections(), 0);
        rows.push((label, per_close, "per connection"));
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick {
        Duration::from_millis(150)
    } else {
        Duration::from_millis(1500)
    };
    let mut rows: Vec<(&str, f64, &str)> = Vec::new();

    // Fan-out: one frame, 1 000 recipients' queues (what publish() does per recipient:
    // an Rc clone and a push onto a queue that keeps its capacity).
    let payload = vec![b'x'; 64];
    let mut queues: Vec<VecDeque<Frame>> = (0..1000).map(|_| VecDeque::with_capacity(4)).collect();
    let per_fanout = bench(budget, || {
        let frame = ws::text(black_box(&payload));
        for q in queues.iter_mut() {
            q.push_back(frame.clone());
        }
        for q in queues.iter_mut() {
            q.clear();
        }
    });
    rows.push((
        "encode 64 B once + queue to 1 000 recipients",
        per_fanout,
        "per broadcast",
    ));
    rows.push((
        "  of which per recipient",
        per_fanout / 1000.0,
        "per recipient",
    ));
    rows.push((
        "encode a 64 B text frame",
        bench(budget, || drop(black_box(ws::text(black_box(&payload))))),
        "per frame",
    ));
    let big = vec![b'y'; 1024];
    rows.push((
        "encode a 1 KiB text frame",
        bench(budget, || drop(black_box(ws::text(black_box(&big))))),
        "per frame",
    ));

    // FIFO lines.
    let json_line = br#"{"channel":"orders","event":"shipped","data":{"id":42,"items":[1,2,3]}}"#;
    rows.push((
        "parse a FIFO JSON line (object data)",
        bench(budget, || {
            drop(black_box(ferrocast::message::parse_line(black_box(
                json_line,
            ))))
        }),
        "per line",
    ));
    let string_line = br#"{"channel":"orders","data":"shipped #42"}"#;
    rows.push((
        "parse a FIFO JSON line (string data)",
        bench(budget, || {
            drop(black_box(ferrocast::message::parse_line(black_box(
                string_line,
            ))))
        }),
        "per line",
    ));
    rows.push((
        "parse a FIFO raw line",
        bench(budget, || {
            drop(black_box(ferrocast::message::parse_line(black_box(
                b"reload the page",
            ))))
        }),
        "per line",
    ));

    // Client side.
    let frame = masked(br#"{"action":"subscribe","channel":"orders"}"#);
    rows.push((
        "parse + unmask a client frame",
        bench(budget, || {
            let mut buf = frame.clone();
            let mut frags = None;
            drop(black_box(ws::parse_frame(&mut buf, &mut frags, 10_000)));
        }),
        "per frame",
    ));
    rows.push((
        "parse a channel-protocol subscribe",
        bench(budget, || {
            drop(black_box(ferrocast::channel_protocol::parse(black_box(
                r#"{"action":"subscribe","channel":"orders"}"#,
            ))))
        }),
        "per message",
    ));
    let pusher_sub = r#"{"event":"pusher:subscribe","data":{"channel":"private-orders","auth":"key:0123456789abcdef"}}"#;
    rows.push((
        "parse a pusher:subscribe",
        bench(budget, || {
            drop(black_box(ferrocast::pusher::protocol::parse(black_box(
                pusher_sub,
            ))))
        }),
        "per message",
    ));
    let head = b"GET /app/app-key?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\nUser-Agent: bench\r\n\r\n";
    rows.push((
        "parse + check an upgrade request",
        bench(budget, || {
            if let Ok(Some(req)) = ferrocast::http::parse(black_box(head), 10_000) {
                drop(black_box(ferrocast::http::check_upgrade(
                    &req,
                    &["*".to_string()],
                )));
            }
        }),
        "per request",
    ));

    core_rows(quick, &mut rows);

    println!("{:<48} {:>12}", "path", "ns");
    for (name, ns, unit) in rows {
        println!("{name:<48} {ns:>12.1}  {unit}");
    }
}
