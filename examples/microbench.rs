//! Micro-benchmarks of the hot paths, so regressions show up as numbers:
//! encoding a broadcast frame once and queueing it to many recipients, parsing FIFO lines,
//! parsing client frames and client messages.
//!
//! `cargo run --release --example microbench` (add `-- --quick` for a short run).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

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

    println!("{:<48} {:>12}", "path", "ns");
    for (name, ns, unit) in rows {
        println!("{name:<48} {ns:>12.1}  {unit}");
    }
}
