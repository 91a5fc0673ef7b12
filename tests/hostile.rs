//! Hostile clients, replayed against the real binary the way an attacker would send them: raw
//! sockets, hand-built frames and requests, clients that never read, floods of the FIFO and of
//! Redis, a DNS server that never answers, a Redis host name that moves.
//!
//! Each test's doc comment names the attack it replays. Rules: loopback only, every loop bounded
//! in count and time, every process cleaned up, waits on events with generous deadlines (a loaded
//! 2-core machine running a debug build), measured numbers printed with `println!` (run with
//! `--nocapture` to see them). The heavy tests (18 000 connections, floods) take one lock so two
//! of them never overlap.
mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn rss_kib(s: &Server) -> u64 {
    status_kib(s.pid(), "VmRSS")
}

fn up(s: &Server) -> Value {
    s.get("/up").json()
}

fn up_status(s: &Server) -> String {
    up(s)["status"].as_str().unwrap_or("").to_string()
}

fn server_addr(s: &Server) -> SocketAddrV4 {
    SocketAddrV4::new(s.host().parse().expect("IPv4 host"), s.port())
}

/// Source address number `i` in 127.0.1.1..=127.0.1.254 (away from 127.0.0.1 and 127.0.0.2,
/// where other tests bind listeners).
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 1 + (i % 254) as u8)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (max, p99, median) of round trips, in ms.
fn rtt_summary(rtts: &[Duration]) -> (f64, f64, f64) {
    assert!(!rtts.is_empty(), "no round trip measured");
    let mut v: Vec<Duration> = rtts.to_vec();
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (ms(v[v.len() - 1]), ms(at(0.99)), ms(at(0.5)))
}

/// A raw WebSocket client on `/ws` (handshake done).
fn raw_ws(s: &Server) -> RawConn {
    let mut c = s.raw();
    c.handshake("/ws");
    c
}

/// Sends a masked control ping carrying `n` and waits for the pong with the same payload;
/// returns the round trip.
fn control_ping(c: &mut RawConn, n: u64) -> Duration {
    let payload = n.to_be_bytes();
    let t = Instant::now();
    c.send(&client_frame(true, OP_PING, &payload))
        .expect("send ping");
    loop {
        match c.read_frame(T) {
            RawEvent::Frame(f) if f.opcode == OP_PONG && f.payload == payload => {
                return t.elapsed();
            }
            RawEvent::Frame(f) if f.opcode == OP_CLOSE => {
                panic!("closed instead of a pong: {:?}", f.payload)
            }
            RawEvent::Frame(_) => continue,
            other => panic!("no pong within {T:?}: {other:?}"),
        }
    }
}

/// A timed channel-protocol round trip (`{"action":"ping"}` → pong).
fn timed_ping_pong(c: &mut Client) -> Duration {
    let t = Instant::now();
    c.ping_pong();
    t.elapsed()
}

/// A request with `Connection: close` on a fresh connection; the answer (panics on none).
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    http_raw(addr, &bytes).unwrap_or_else(|| panic!("no answer to {method} {path}"))
}

fn rest_event(s: &Server, bearer: &str, body: &Value) -> HttpResponse {
    let auth = format!("Bearer {bearer}");
    http_request(
        &s.addr(),
        "POST",
        "/apps/app-id/events",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// A Pusher connection (`pusher:connection_established` read).
fn pusher(s: &Server) -> Client {
    let mut c = s.ws("/app/app-key?protocol=7");
    let first = c.recv_json(T);
    assert_eq!(first["event"], "pusher:connection_established", "{first}");
    c
}

/// Subscribes a Pusher connection to a public channel and returns the message that follows
/// `subscription_succeeded` (for a cache channel: the cached event or `pusher:cache_miss`).
fn pusher_subscribe_then_next(c: &mut Client, channel: &str) -> Value {
    c.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": channel}}));
    loop {
        let v = c.recv_json(T);
        assert_ne!(v["event"], "pusher:subscription_error", "{v}");
        if v["event"] == "pusher_internal:subscription_succeeded" && v["channel"] == channel {
            break;
        }
    }
    c.recv_json(T)
}

/// Fails with a clear message when the machine cannot give a process a private mount namespace.
fn require_unshare() {
    let st = Command::new("unshare").args(["--mount", "true"]).status();
    match st {
        Ok(s) if s.success() => {}
        other => panic!(
            "this test needs `unshare --mount` (util-linux, run as root or with CAP_SYS_ADMIN) to give \
             the server a private /etc/resolv.conf or /etc/hosts; `unshare --mount true` gave {other:?}"
        ),
    }
}

/// The command prefix that runs the server in a private mount namespace where `file` is
/// bind-mounted over `target` (e.g. `/etc/resolv.conf`); the shell execs the server, so the
/// server keeps the child's pid.
fn bind_mount_script(file: &Path, target: &str) -> String {
    let f = file.to_str().expect("UTF-8 path");
    assert!(!f.contains('\''), "temporary path with a quote: {f}");
    format!("mount --bind '{f}' '{target}' && exec \"$0\" \"$@\"")
}

/// Pids of processes whose command line contains `needle` (e.g. a resolver child left behind).
fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Content-Length that wraps, and other framing attacks
// ---------------------------------------------------------------------------------------------

fn post_head(content_length: &str) -> String {
    format!(
        "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

/// The POST head whose Content-Length is exactly 2^64 − (length of the head): head length +
/// Content-Length wraps a u64 to 0. The head's length depends on the number of digits, so the
/// number is found by trying every digit count.
fn wrapping_post() -> (u128, String) {
    for digits in 1..=20 {
        let head_len = post_head(&"0".repeat(digits)).len() as u128;
        let n = (1u128 << 64) - head_len;
        if n.to_string().len() == digits {
            let head = post_head(&n.to_string());
            assert_eq!(head.len() as u128 + n, 1u128 << 64);
            return (n, head);
        }
    }
    unreachable!("no digit count fits")
}

/// Sends `request` on a fresh connection; expects one answer with `status`, then EOF.
fn expect_status_then_close(s: &Server, what: &str, request: &[u8], status: u16) {
    let mut c = s.raw();
    let _ = c.send(request);
    let resp = c
        .read_http_response(T)
        .unwrap_or_else(|| panic!("{what}: no answer within {T:?}"));
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    let (rest, eof) = c.read_to_end(T);
    assert!(
        eof,
        "{what}: the connection stayed open after {status} (then sent {rest:?})"
    );
    println!("{what}: {status}, then closed");
}

/// Replays the Content-Length wrap: `POST /apps/app-id/events` (no credentials) whose
/// Content-Length is 2^64 − (length of the head), so that head length + body length wraps to 0
/// in u64 arithmetic (which used to hang the server forever). Then the other oversized lengths
/// (u64::MAX, 2^63, 40 digits), the malformed ones (`+5`, `-1`, `5 5`, two different values),
/// `Transfer-Encoding: chunked`, and the wrapping POST pipelined behind a keep-alive `GET /up`.
#[test]
fn content_length_wrap_and_malformed_framing() {
    let s = Server::start(&[], &[]);
    assert_eq!(s.get("/up").status, 200);
    let rss0 = rss_kib(&s);

    let (n, head) = wrapping_post();
    println!(
        "wrapping Content-Length: {n} (head {} bytes; sum = 2^64)",
        head.len()
    );
    expect_status_then_close(&s, "Content-Length 2^64 - head", head.as_bytes(), 413);
    let t = Instant::now();
    assert_eq!(s.get("/up").status, 200, "/up after the wrapping POST");
    println!(
        "/up answered {:.1} ms after the wrapping POST",
        ms(t.elapsed())
    );

    for (what, cl) in [
        ("Content-Length u64::MAX", u64::MAX.to_string()),
        ("Content-Length 2^63", (1u64 << 63).to_string()),
        ("Content-Length 40 digits", "9".repeat(40)),
        ("Content-Length max_body_bytes + 1", "262145".to_string()),
    ] {
        expect_status_then_close(&s, what, post_head(&cl).as_bytes(), 413);
    }
    for (what, headers) in [
        ("Content-Length +5", "Content-Length: +5\r\n"),
        ("Content-Length -1", "Content-Length: -1\r\n"),
        ("Content-Length '5 5'", "Content-Length: 5 5\r\n"),
        ("Content-Length 0x10", "Content-Length: 0x10\r\n"),
        (
            "two different Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
    ] {
        let req = format!("POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\n{headers}\r\nhello!");
        expect_status_then_close(&s, what, req.as_bytes(), 400);
    }
    expect_status_then_close(
        &s,
        "Transfer-Encoding: chunked",
        b"POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        411,
    );
    // Control: the same value twice is one length, and the request goes on to authentication.
    let twice = http_raw(
        &s.addr(),
        b"POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    )
    .expect("an answer to a repeated equal Content-Length");
    assert_eq!(twice.status, 401, "{twice:?}");

    // Pipelined: a keep-alive GET /up, then the wrapping POST, in one write.
    let mut c = s.raw();
    let mut req = b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    req.extend_from_slice(head.as_bytes());
    c.send(&req).expect("send pipelined requests");
    let first = c.read_http_response(T).expect("answer to the GET /up");
    assert_eq!(first.status, 200, "{first:?}");
    let second = c
        .read_http_response(T)
        .expect("answer to the wrapping POST");
    assert_eq!(second.status, 413, "{second:?}");
    let (rest, eof) = c.read_to_end(T);
    assert!(eof, "still open after the 413: {rest:?}");
    println!("pipelined GET /up + wrapping POST: 200, 413, EOF");

    // The server is not stuck and did not allocate for the announced bodies.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(s.get("/up").status, 200);
    let rss1 = rss_kib(&s);
    let growth = rss1 as i64 - rss0 as i64;
    println!("server RSS {rss0} KiB -> {rss1} KiB ({growth:+} KiB) after every framing attack");
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB after a few refused requests"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Clients that send and never read
// ---------------------------------------------------------------------------------------------

/// What a client that never reads sends, over and over.
#[derive(Clone, Copy, Debug)]
enum Junk {
    /// WebSocket control pings (125-byte payload) on `/ws`: each earns a pong as large.
    WsPing,
    /// `{"action":"ping"}` on `/ws`.
    ActionPing,
    /// `{"event":"pusher:ping","data":{}}` on the Pusher endpoint.
    PusherPing,
    /// Invalid JSON on `/ws`: each earns an error reply.
    BadJson,
    /// Pipelined keep-alive `GET /up` on plain HTTP.
    HttpGetUp,
}

const ALL_JUNK: [Junk; 5] = [
    Junk::WsPing,
    Junk::ActionPing,
    Junk::PusherPing,
    Junk::BadJson,
    Junk::HttpGetUp,
];

impl Junk {
    fn path(self) -> Option<&'static str> {
        match self {
            Junk::WsPing | Junk::ActionPing | Junk::BadJson => Some("/ws"),
            Junk::PusherPing => Some("/app/app-key?protocol=7"),
            Junk::HttpGetUp => None,
        }
    }
    fn message(self) -> Vec<u8> {
        match self {
            Junk::WsPing => client_frame(true, OP_PING, &[b'p'; 125]),
            Junk::ActionPing => client_frame(true, OP_TEXT, br#"{"action":"ping"}"#),
            Junk::PusherPing => {
                client_frame(true, OP_TEXT, br#"{"event":"pusher:ping","data":{}}"#)
            }
            Junk::BadJson => client_frame(true, OP_TEXT, b"{not json"),
            Junk::HttpGetUp => b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        }
    }
}

struct Attack {
    sent: u64,
    ended: &'static str,
    secs: f64,
    /// Kept open until the measurements are done: the server still holds its queue.
    _conn: RawConn,
}

/// A client with a 4 KiB receive buffer sends `junk` until 60 MB are sent, its writes block for
/// 3 s, or the server closes; it never reads a byte after the handshake.
fn send_and_never_read(addr: &str, junk: Junk) -> Attack {
    const CAP: u64 = 60 * 1000 * 1000;
    const BLOCKED: Duration = Duration::from_secs(3);
    const MAX_TIME: Duration = Duration::from_secs(90);
    let mut c = RawConn::from_stream(tiny_rcvbuf_stream(addr));
    c.stream.set_write_timeout(Some(T)).unwrap();
    if let Some(path) = junk.path() {
        c.handshake(path);
    }
    let msg = junk.message();
    let chunk = msg.repeat((65536 / msg.len()).max(1));
    c.stream.set_write_timeout(Some(BLOCKED)).unwrap();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut off = 0usize;
    let ended = loop {
        if sent >= CAP {
            break "60 MB sent";
        }
        if start.elapsed() > MAX_TIME {
            break "time cap";
        }
        match (&c.stream).write(&chunk[off..]) {
            Ok(0) => break "closed by the server",
            Ok(n) => {
                sent += n as u64;
                off = (off + n) % chunk.len();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break "writes blocked";
            }
            Err(_) => break "closed by the server",
        }
    };
    Attack {
        sent,
        ended,
        secs: start.elapsed().as_secs_f64(),
        _conn: c,
    }
}

/// Runs the five never-reading attackers at once against `s` while a healthy client pings.
/// Asserts the server's RSS growth stays under `bound_kib`, that the server stopped reading every
/// attacker (its writes blocked, or it was closed), that the healthy client was answered
/// throughout, and that `ferrocast_output_pauses_total` rose once per attacker at least.
fn never_reading_attacks(s: &Server, label: &str, bound_kib: u64) {
    let mut healthy = s.channel_client();
    healthy.ping_pong();
    let pauses0 = s.metric("output_pauses_total");
    let rss0 = rss_kib(s);
    let attackers: Vec<_> = ALL_JUNK
        .iter()
        .map(|&junk| {
            let addr = s.addr();
            (
                junk,
                thread::spawn(move || send_and_never_read(&addr, junk)),
            )
        })
        .collect();
    let mut peak = rss0;
    let mut worst = Duration::ZERO;
    let mut rounds = 0usize;
    while attackers.iter().any(|(_, a)| !a.is_finished()) {
        worst = worst.max(timed_ping_pong(&mut healthy));
        rounds += 1;
        peak = peak.max(rss_kib(s));
        thread::sleep(Duration::from_millis(50));
    }
    let attacks: Vec<(Junk, Attack)> = attackers
        .into_iter()
        .map(|(junk, a)| (junk, a.join().expect("attacker thread")))
        .collect();
    // The attackers' connections are still open, their queues still held: a few more samples.
    for _ in 0..10 {
        worst = worst.max(timed_ping_pong(&mut healthy));
        rounds += 1;
        peak = peak.max(rss_kib(s));
        thread::sleep(Duration::from_millis(100));
    }
    let pauses1 = s.metric("output_pauses_total");
    let slow = s.metric("slow_consumers_total");
    let growth = peak.saturating_sub(rss0);
    for (junk, a) in &attacks {
        println!(
            "{label} {junk:?}: sent {:.1} MB in {:.1} s, then {}",
            a.sent as f64 / 1e6,
            a.secs,
            a.ended
        );
    }
    println!(
        "{label}: server RSS {rss0} KiB, peak {peak} KiB (+{growth} KiB) with 5 clients that never read; \
         healthy client: {rounds} round trips, worst {:.1} ms; output pauses {pauses0} -> {pauses1}; slow consumers {slow}",
        ms(worst),
    );
    assert!(
        growth < bound_kib,
        "{label}: server RSS grew by {growth} KiB (bound {bound_kib} KiB) for 5 clients that never read"
    );
    for (junk, a) in &attacks {
        assert!(
            matches!(a.ended, "writes blocked" | "closed by the server"),
            "{label} {junk:?}: the server kept reading a client that never reads ({:.1} MB, {})",
            a.sent as f64 / 1e6,
            a.ended
        );
    }
    assert!(
        pauses1 >= pauses0 + attacks.len() as u64,
        "{label}: ferrocast_output_pauses_total {pauses0} -> {pauses1} for {} clients that never read",
        attacks.len()
    );
    drop(attacks);
    healthy.ping_pong();
}

/// Replays five clients that send and never read, all at once, each with a 4 KiB receive
/// buffer: WebSocket pings, `{"action":"ping"}`, `pusher:ping`, invalid JSON earning error
/// replies, pipelined `GET /up`. With default settings (1 MiB output bound, reading paused past
/// 256 KiB) the server stops reading each one, its RSS stays bounded (it used to grow by hundreds
/// of MB), and a healthy client is answered meanwhile.
#[test]
fn clients_that_never_read_default_settings() {
    let _g = heavy();
    let s = Server::start(&[], &[]);
    never_reading_attacks(&s, "default", 40 * 1024);
    assert_eq!(up_status(&s), "ok");
}

/// The same attack with `outbound_queue_bytes=65536` (reading paused past 16 KiB).
#[test]
fn clients_that_never_read_small_queue() {
    let _g = heavy();
    let s = Server::start(&["--set", "outbound_queue_bytes=65536"], &[]);
    never_reading_attacks(&s, "queue 64 KiB", 16 * 1024);
    assert_eq!(up_status(&s), "ok");
}

// ---------------------------------------------------------------------------------------------
// 3. Cache channels
// ---------------------------------------------------------------------------------------------

/// Replays a publisher filling cache channels nobody listens to, expecting them to stay forever:
/// with `cache_ttl_secs=2`, the cached event of `cache-x` is really dropped (the gauge returns to
/// 0, an expiration is counted) and a new subscriber gets `pusher:cache_miss`.
#[test]
fn cache_channel_events_expire() {
    let s = Server::start(&["--set", "cache_ttl_secs=2"], &[]);
    assert_eq!(s.metric("cache_channels"), 0);
    s.publish_json(&json!({"channel": "cache-x", "data": "stale soon"}));
    assert!(
        wait_until(T, || s.metric("cache_channels") == 1),
        "the FIFO line never filled the cache"
    );
    let filled = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || s.metric("cache_channels") == 0),
        "the cached event was never dropped (cache_ttl_secs=2)"
    );
    println!(
        "cache-x: cached, dropped {:.1} s later (ttl 2 s)",
        filled.elapsed().as_secs_f64()
    );
    assert!(s.metric("cache_expirations_total") >= 1);
    assert_eq!(s.metric("cache_bytes"), 0);
    let mut c = pusher(&s);
    let next = pusher_subscribe_then_next(&mut c, "cache-x");
    assert_eq!(next["event"], "pusher:cache_miss", "{next}");
    assert_eq!(next["channel"], "cache-x", "{next}");
}

/// Replays a publisher filling 2 000 distinct cache channels to exhaust memory: with
/// `max_cache_bytes=65536` the store stays under the bound, the oldest are evicted, and the
/// newest channel's event is still served to a new subscriber.
#[test]
fn cache_channels_are_bounded() {
    const N: usize = 2000;
    let s = Server::start(&["--set", "max_cache_bytes=65536"], &[]);
    let pad = "p".repeat(64);
    let mut f = fifo_open(s.fifo());
    let mut batch = Vec::new();
    for i in 0..N {
        let line =
            json!({"channel": format!("cache-{i}"), "event": "tick", "data": format!("v{i}-{pad}")})
                .to_string();
        if batch.len() + line.len() + 1 > 4096 {
            f.write_all(&batch).expect("write FIFO");
            batch.clear();
        }
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
    }
    f.write_all(&batch).expect("write FIFO");
    drop(f);
    assert!(
        wait_until(T, || s.metric("fifo_lines_total") >= N as u64),
        "the server did not read the {N} lines"
    );
    // With several loops, the FIFO's publications go out once the bus's barrier passed, and
    // the other loops' numbers follow a moment later.
    assert!(
        wait_until(T, || s.metric("barrier_held_publications") == 0
            && s.metric("cache_evictions_total") > 0),
        "nothing evicted, or publications still held"
    );
    let bytes = s.metric("cache_bytes");
    let channels = s.metric("cache_channels");
    let evicted = s.metric("cache_evictions_total");
    println!(
        "{N} cache channels published: {channels} kept, {bytes} bytes (bound 65536), {evicted} evicted"
    );
    assert!(bytes <= 65536, "cache holds {bytes} bytes");
    assert!(evicted > 0, "nothing evicted");
    assert!(channels > 0 && channels < N as u64, "{channels} kept");
    let mut c = pusher(&s);
    let last = format!("cache-{}", N - 1);
    let next = pusher_subscribe_then_next(&mut c, &last);
    assert_eq!(
        next,
        json!({"event": "tick", "channel": last, "data": format!("v{}-{pad}", N - 1)})
    );
    let next = pusher_subscribe_then_next(&mut c, "cache-0");
    assert_eq!(
        next["event"], "pusher:cache_miss",
        "the oldest channel should have been evicted first: {next}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Mass disconnect
// ---------------------------------------------------------------------------------------------

/// One server frame at the start of `b`: (opcode, payload, bytes used).
fn next_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    common::parse_frame(b).map(|(f, used)| (f.opcode, f.payload, used))
}

struct MassConn {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    /// 0 = waiting for the 101, 1 = waiting for `subscribed`, 2 = subscribed.
    stage: u8,
    close: Option<(u16, Duration)>,
    gone: bool,
}

/// Reads everything available; Ok(true) on EOF.
fn pump(c: &mut MassConn, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        match c.stream.read(scratch) {
            Ok(0) => return Ok(true),
            Ok(n) => c.buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Replays a mass disconnect: 18 000 channel-protocol subscribers on one channel (from 254
/// source addresses), then SIGTERM. Every client gets a close frame with code 1001 within
/// `shutdown_timeout_secs` (60); leaving the channel is O(1) per connection, so closing them all
/// is O(N) (it used to be quadratic).
#[test]
fn mass_disconnect_of_18000_subscribers() {
    let _g = heavy();
    const N: usize = 18_000;
    const IN_FLIGHT: usize = 500;
    let nofile = raise_nofile();
    assert!(
        nofile >= N as u64 + 500,
        "RLIMIT_NOFILE hard limit {nofile} too low for {N} clients"
    );
    let mut s = Server::start_opts(Opts {
        args: &[
            "--set",
            "shutdown_timeout_secs=60",
            "--set",
            "ping_interval_secs=600",
            "--set",
            "activity_timeout_secs=1200",
        ],
        nofile: Some(20_000),
        ..Default::default()
    });
    let addr = server_addr(&s);
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    // The subscription right behind the request head (pipelined).
    request.extend_from_slice(&client_frame(
        true,
        OP_TEXT,
        br#"{"action":"subscribe","channel":"mass"}"#,
    ));

    let mut poll = mio::Poll::new().expect("poll");
    let mut events = mio::Events::with_capacity(4096);
    let mut scratch = vec![0u8; 16384];
    let mut conns: Vec<MassConn> = Vec::with_capacity(N);
    let started = Instant::now();
    let connect_deadline = started + Duration::from_secs(180);
    let mut subscribed = 0usize;
    while subscribed < N {
        assert!(
            Instant::now() < connect_deadline,
            "only {subscribed} of {N} clients subscribed within 180 s ({} connected)",
            conns.len()
        );
        while conns.len() < N && conns.len() - subscribed < IN_FLIGHT {
            let i = conns.len();
            let mut sock =
                connect_from(source(i), addr, None).unwrap_or_else(|e| panic!("connect #{i}: {e}"));
            sock.set_write_timeout(Some(T)).unwrap();
            sock.write_all(&request).expect("send handshake");
            sock.set_nonblocking(true).unwrap();
            let mut stream = mio::net::TcpStream::from_std(sock);
            poll.registry()
                .register(&mut stream, mio::Token(i), mio::Interest::READABLE)
                .expect("register");
            conns.push(MassConn {
                stream,
                buf: Vec::new(),
                stage: 0,
                close: None,
                gone: false,
            });
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            let eof = pump(c, &mut scratch).unwrap_or_else(|e| panic!("client #{i}: {e}"));
            if c.stage == 0
                && let Some(end) = c.buf.windows(4).position(|w| w == b"\r\n\r\n")
            {
                assert!(
                    c.buf.starts_with(b"HTTP/1.1 101"),
                    "client #{i}: {:?}",
                    String::from_utf8_lossy(&c.buf[..end])
                );
                c.buf.drain(..end + 4);
                c.stage = 1;
            }
            while c.stage == 1 {
                let Some((op, payload, used)) = next_server_frame(&c.buf) else {
                    break;
                };
                c.buf.drain(..used);
                let text = String::from_utf8_lossy(&payload);
                assert!(
                    op == OP_TEXT && text.contains(r#""event":"subscribed""#),
                    "client #{i}: unexpected frame {op} {text}"
                );
                c.stage = 2;
                subscribed += 1;
            }
            assert!(
                !eof || c.stage == 2,
                "client #{i} closed during its handshake"
            );
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let health = up(&s);
    println!(
        "{N} subscribers connected in {connect_secs:.1} s; /up: connections {}, channels {}; server RSS {} KiB",
        health["connections"],
        health["channels"],
        rss_kib(&s)
    );
    assert_eq!(health["connections"], json!(N));

    // SIGTERM: every client must get a close 1001. Each answers like a browser: a close frame
    // back, and its own close of the socket once the server's FIN arrives.
    let sigterm = Instant::now();
    s.signal(Signal::SIGTERM);
    let close_deadline = sigterm + Duration::from_secs(90);
    let mut closed = 0usize;
    let mut gone = 0usize;
    let close_reply = client_frame(true, OP_CLOSE, &1001u16.to_be_bytes());
    while closed + gone < N && Instant::now() < close_deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.gone {
                continue;
            }
            let eof = pump(c, &mut scratch).unwrap_or(true);
            if c.close.is_none() {
                while let Some((op, payload, used)) = next_server_frame(&c.buf) {
                    c.buf.drain(..used);
                    if op == OP_CLOSE {
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        };
                        c.close = Some((code, sigterm.elapsed()));
                        closed += 1;
                        let _ = c.stream.write(&close_reply);
                        break;
                    }
                }
            }
            if eof {
                if c.close.is_none() {
                    gone += 1;
                }
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                c.gone = true;
            }
        }
    }
    let last_close = conns
        .iter()
        .filter_map(|c| c.close.map(|(_, t)| t))
        .max()
        .unwrap_or_default();
    let codes_1001 = conns
        .iter()
        .filter(|c| matches!(c.close, Some((1001, _))))
        .count();
    let status = s.wait_exit(Duration::from_secs(90));
    let exit_secs = sigterm.elapsed().as_secs_f64();
    println!(
        "SIGTERM with {N} subscribers: {closed} close frames ({codes_1001} with 1001), {gone} ended without one; \
         last close frame {:.2} s after the signal; server exited after {exit_secs:.2} s ({status})",
        last_close.as_secs_f64()
    );
    assert_eq!(
        codes_1001, N,
        "{closed} close frames ({codes_1001} with 1001) and {gone} connections ended without one, of {N}"
    );
    assert!(status.success(), "exit status {status}");
    drop(conns);
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. DNS: a resolver that hangs, a Redis host name that moves
// ---------------------------------------------------------------------------------------------

/// Replays a DNS server that never answers: the server runs in a private mount namespace whose
/// resolv.conf names 127.0.0.153 (timeout 30 s), where the test reads the queries and never
/// answers, and its Redis host is `redis.hang.test`. The query arrives (the resolution really
/// hangs), yet a WebSocket client is answered promptly again and again, and `/up` says
/// `degraded`.
#[test]
fn dns_that_hangs_never_blocks_the_loop() {
    require_unshare();
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.153\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    let dns = UdpSocket::bind("127.0.0.153:53").unwrap_or_else(|e| {
        panic!("cannot bind the silent DNS server to 127.0.0.153:53 (needs root or CAP_NET_BIND_SERVICE): {e}")
    });
    dns.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let first_query: Arc<Mutex<Vec<u8>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let (queries, first_query, stop) = (queries.clone(), first_query.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((n, _)) = dns.recv_from(&mut buf) {
                    let mut q = first_query.lock().unwrap();
                    if q.is_empty() {
                        q.extend_from_slice(&buf[..n]);
                    }
                    queries.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    let script = bind_mount_script(&resolv, "/etc/resolv.conf");
    let wrap = ["unshare", "--mount", "sh", "-c", script.as_str()];
    let mut s = Server::start_opts(Opts {
        args: &[
            "--set",
            "scaling.driver=redis",
            "--set",
            "scaling.redis_url=redis://redis.hang.test:6379",
        ],
        wrap: &wrap,
        ..Default::default()
    });
    assert!(
        wait_until(T, || queries.load(Ordering::SeqCst) > 0),
        "no DNS query reached 127.0.0.153:53: the server did not resolve redis.hang.test through the private resolv.conf\n{}",
        s.logs_text()
    );
    let q = first_query.lock().unwrap().clone();
    assert!(
        q.windows(16).any(|w| w == b"\x05redis\x04hang\x04test"),
        "the query is not for redis.hang.test: {q:?}"
    );

    // Meanwhile (the resolver waits 30 s for an answer that never comes): prompt answers.
    let mut c = s.channel_client();
    c.subscribe("dns");
    let mut rtts = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(6) && rtts.len() < 10_000 {
        rtts.push(timed_ping_pong(&mut c));
        thread::sleep(Duration::from_millis(20));
    }
    s.publish_json(&json!({"channel": "dns", "data": "local delivery"}));
    assert_eq!(c.recv_text(T), "local delivery");
    assert!(
        wait_until(T, || up_status(&s) == "degraded"),
        "/up never said degraded: {}",
        up(&s)
    );
    let (max, p99, median) = rtt_summary(&rtts);
    let n_queries = queries.load(Ordering::SeqCst);
    println!(
        "DNS hanging: {n_queries} queries received, none answered; {} ping round trips in 6 s: max {max:.1} ms, p99 {p99:.1} ms, median {median:.1} ms; /up: {}",
        rtts.len(),
        up(&s)
    );
    assert!(
        max < 5000.0,
        "a round trip took {max:.0} ms while DNS hung (the loop waited on the resolver?)"
    );

    // A clean stop kills the resolver child; none is left hanging on the silent server.
    s.signal(Signal::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "exit status {st}");
    let left = || processes_with("redis.hang.test");
    let clean = wait_until(T, || left().is_empty());
    let leftovers = left();
    for pid in &leftovers {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
    }
    stop.store(true, Ordering::Relaxed);
    listener.join().unwrap();
    assert!(
        clean,
        "resolver processes left behind after the server exited: {leftovers:?}"
    );
}

/// Replays a Redis failover by DNS: the node's Redis host `redis.failover.test` is in its private
/// /etc/hosts (127.0.0.1); a second redis-server comes up on 127.0.0.2 on the same port, the hosts
/// file is rewritten in place to point there, and the first Redis is killed. The node resolves
/// again before reconnecting, follows the new address (`redis link up again`), and a FIFO
/// broadcast on it reaches a node attached directly to the new Redis.
#[test]
fn dns_failover_is_followed_on_reconnect() {
    require_unshare();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 redis.failover.test\n",
    )
    .unwrap();
    let port = free_port();
    let mut redis_a = Redis::start_with("127.0.0.1", port, &[]);

    let script = bind_mount_script(&hosts, "/etc/hosts");
    let wrap = ["unshare", "--mount", "sh", "-c", script.as_str()];
    let url = format!("scaling.redis_url=redis://redis.failover.test:{port}/0");
    let x = Server::start_opts(Opts {
        args: &["--set", "scaling.driver=redis", "--set", &url],
        wrap: &wrap,
        ..Default::default()
    });
    let up_line = x
        .wait_for_log("redis link up", T)
        .unwrap_or_else(|| panic!("node never connected to Redis A:\n{}", x.logs_text()));
    println!("node X: {up_line}");
    let numsub = |r: &Redis| -> u64 {
        r.cli(&["PUBSUB", "NUMSUB", "ferrocast#broadcast"])
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(T, || numsub(&redis_a) == 1),
        "node X is not subscribed on Redis A"
    );

    let redis_b = Redis::start_with("127.0.0.2", port, &[]);
    let inode = std::fs::metadata(&hosts).unwrap().ino();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&hosts)
            .unwrap();
        f.write_all(b"127.0.0.1 localhost\n127.0.0.2 redis.failover.test\n")
            .unwrap();
    }
    assert_eq!(
        std::fs::metadata(&hosts).unwrap().ino(),
        inode,
        "the hosts file must be rewritten in place (the bind mount follows the inode)"
    );
    let mark = x.log_mark();
    let killed = Instant::now();
    redis_a.stop();
    let again = x
        .wait_for_log_since(mark, "redis link up again", Duration::from_secs(45))
        .unwrap_or_else(|| panic!("node X never reconnected:\n{}", x.logs_text()));
    println!(
        "node X, {:.2} s after Redis A was killed: {again}",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        wait_until(T, || numsub(&redis_b) == 1),
        "node X is not subscribed on Redis B (127.0.0.2): {}",
        redis_b.cli(&["CLIENT", "LIST"])
    );

    // A second node attached to Redis B directly hears node X's FIFO broadcasts.
    let url_b = format!("scaling.redis_url=redis://127.0.0.2:{port}/0");
    let y = Server::start(&["--set", "scaling.driver=redis", "--set", &url_b], &[]);
    assert!(
        y.wait_for_log("redis link up", T).is_some(),
        "node Y never connected to Redis B:\n{}",
        y.logs_text()
    );
    assert!(
        wait_until(T, || numsub(&redis_b) == 2),
        "Redis B does not have both nodes subscribed"
    );
    let mut on_x = x.channel_client();
    on_x.subscribe("failover");
    let mut on_y = y.channel_client();
    on_y.subscribe("failover");
    x.publish_json(&json!({"channel": "failover", "data": "through redis B"}));
    assert_eq!(on_x.recv_text(T), "through redis B");
    assert_eq!(on_y.recv_text(T), "through redis B");
    assert_eq!(up_status(&x), "ok");
}

// ---------------------------------------------------------------------------------------------
// 7. Floods: the FIFO, the Redis link
// ---------------------------------------------------------------------------------------------

/// Pings `c` one at a time until `done()` (checked every ~250 ms) or the deadline; returns the
/// round trips.
fn ping_until(c: &mut RawConn, deadline: Instant, mut done: impl FnMut() -> bool) -> Vec<Duration> {
    let mut rtts = Vec::new();
    let mut checked = Instant::now();
    let mut n = 0u64;
    loop {
        n += 1;
        rtts.push(control_ping(c, n));
        if checked.elapsed() > Duration::from_millis(250) {
            checked = Instant::now();
            if done() {
                return rtts;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the flood was not absorbed before the deadline ({} pings so far)",
            rtts.len()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Replays a FIFO flood: one writer pushes 1 000 000 lines `{"channel":"nobody","data":1}` as
/// fast as the pipe takes them, while a WebSocket client sends control pings one at a time. The
/// FIFO is read at most 128 KiB per loop turn, so the pings stay fast, and no line is lost.
#[test]
fn fifo_flood_keeps_clients_answered() {
    let _g = heavy();
    const LINES: usize = 1_000_000;
    let s = Server::start(&[], &[]);
    let mut c = raw_ws(&s);
    control_ping(&mut c, 0);
    let fifo = s.fifo().to_path_buf();
    let started = Instant::now();
    let writer = thread::spawn(move || -> io::Result<Duration> {
        let line = b"{\"channel\":\"nobody\",\"data\":1}\n";
        let per = 4096 / line.len();
        let chunk = line.repeat(per);
        let mut f = fifo_open(&fifo);
        let t = Instant::now();
        let mut left = LINES;
        while left > 0 {
            let k = left.min(per);
            f.write_all(&chunk[..k * line.len()])?;
            left -= k;
        }
        Ok(t.elapsed())
    });
    let deadline = started + Duration::from_secs(240);
    let rtts = ping_until(&mut c, deadline, || {
        writer.is_finished() && s.metric("fifo_lines_total") >= LINES as u64
    });
    let wrote = writer.join().expect("writer").expect("FIFO write");
    let total = started.elapsed();
    let lines = s.metric("fifo_lines_total");
    let pauses = s.metric("fifo_read_pauses_total");
    let dropped = s.metric("fifo_dropped_total");
    let (max, p99, median) = rtt_summary(&rtts);
    println!(
        "FIFO flood: {LINES} lines written in {:.1} s, all read after {:.1} s; {lines} lines counted, {dropped} dropped, \
         {pauses} read pauses; {} pings during the flood: max {max:.1} ms, p99 {p99:.1} ms, median {median:.1} ms",
        wrote.as_secs_f64(),
        total.as_secs_f64(),
        rtts.len()
    );
    assert_eq!(lines, LINES as u64, "lines lost or duplicated");
    assert_eq!(dropped, 0);
    assert!(pauses > 0, "the FIFO never yielded to the clients");
    assert!(rtts.len() >= 10, "too few pings during the flood");
    assert!(
        max < 500.0,
        "a ping waited {max:.0} ms behind the FIFO flood (p99 {p99:.1} ms)"
    );
}

/// Replays a Redis flood: anyone who can reach the Redis server pipelines 200 000
/// `PUBLISH ferrocast#broadcast <publish envelope>` commands (from a node id nobody knows),
/// while a client of the node pings. The node reads its Redis link at most 64 KiB per turn, so
/// the pings stay fast, and it takes every message.
#[test]
fn redis_flood_keeps_clients_answered() {
    let _g = heavy();
    const MESSAGES: usize = 200_000;
    // Redis's own protection (a subscriber more than 32 MB behind is cut) is lifted, so that the
    // node's read budget is what keeps the loop responsive, and nothing is lost.
    let redis = Redis::start_with(
        "127.0.0.1",
        free_port(),
        &["--client-output-buffer-limit", "pubsub 0 0 0"],
    );
    let url = format!("scaling.redis_url=redis://127.0.0.1:{}/0", redis.port);
    let s = Server::start(&["--set", "scaling.driver=redis", "--set", &url], &[]);
    assert!(
        s.wait_for_log("redis link up", T).is_some(),
        "node never connected to Redis:\n{}",
        s.logs_text()
    );
    let mark = s.log_mark();
    let mut c = raw_ws(&s);
    control_ping(&mut c, 0);

    let envelope = json!({"node": "flood", "app": "app-id", "kind": "publish", "channels": ["nobody"], "event": "e", "data": "x"}).to_string();
    let topic = "ferrocast#broadcast";
    let command = format!(
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{topic}\r\n${}\r\n{envelope}\r\n",
        topic.len(),
        envelope.len()
    );
    let port = redis.port;
    let started = Instant::now();
    let flooder = thread::spawn(move || -> io::Result<(usize, Duration)> {
        let mut w = TcpStream::connect(("127.0.0.1", port))?;
        w.set_write_timeout(Some(Duration::from_secs(60)))?;
        w.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut r = w.try_clone()?;
        // Replies (`:N\r\n`) are read on another thread, so neither side blocks the other.
        let reader = thread::spawn(move || -> io::Result<usize> {
            let mut buf = vec![0u8; 65536];
            let mut replies = 0usize;
            while replies < MESSAGES {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                replies += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
            Ok(replies)
        });
        let batch = command.repeat(256);
        let t = Instant::now();
        for _ in 0..MESSAGES / 256 {
            w.write_all(batch.as_bytes())?;
        }
        w.write_all(command.repeat(MESSAGES % 256).as_bytes())?;
        let replies = reader.join().expect("reply reader")?;
        Ok((replies, t.elapsed()))
    });
    let received = || {
        up(&s)["scaling"]["received"]
            .as_u64()
            .expect("/up scaling.received")
    };
    let deadline = started + Duration::from_secs(240);
    let rtts = ping_until(&mut c, deadline, || {
        flooder.is_finished() && received() >= MESSAGES as u64
    });
    let (replies, published) = flooder.join().expect("flooder").expect("redis flood");
    let pauses = s.metric("redis_read_pauses_total");
    let got = received();
    let (max, p99, median) = rtt_summary(&rtts);
    println!(
        "Redis flood: {MESSAGES} PUBLISH pipelined in {:.1} s ({replies} replies), node received {got} after {:.1} s, \
         {pauses} read pauses; {} pings during the flood: max {max:.1} ms, p99 {p99:.1} ms, median {median:.1} ms",
        published.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        rtts.len()
    );
    assert_eq!(replies, MESSAGES, "Redis did not answer every PUBLISH");
    assert!(got >= MESSAGES as u64);
    assert!(pauses > 0, "the Redis link never yielded to the clients");
    assert!(
        s.wait_for_log_since(mark, "redis link down", Duration::ZERO)
            .is_none(),
        "the link went down during the flood:\n{}",
        s.logs_text()
    );
    assert!(rtts.len() >= 10, "too few pings during the flood");
    assert!(
        max < 500.0,
        "a ping waited {max:.0} ms behind the Redis flood (p99 {p99:.1} ms)"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. One publication to several channels, exactly once on every node
// ---------------------------------------------------------------------------------------------

/// Replays a publisher that names several channels at once to get duplicate deliveries: with two
/// nodes through a real Redis, a client subscribed to both `a` and `b` on each node receives
/// `{"channels":["a","b"],...}` exactly once (FIFO and REST, both on node A), then the marker.
#[test]
fn multi_channel_publication_is_delivered_once_on_every_node() {
    let redis = Redis::start();
    let url = format!("scaling.redis_url=redis://127.0.0.1:{}/0", redis.port);
    let node = || {
        let s = Server::start(&["--set", "scaling.driver=redis", "--set", &url], &[]);
        assert!(
            s.wait_for_log("redis link up", T).is_some(),
            "node never connected to Redis:\n{}",
            s.logs_text()
        );
        s
    };
    let (a, b) = (node(), node());
    assert!(
        wait_until(T, || redis
            .cli(&["PUBSUB", "NUMSUB", "ferrocast#broadcast"])
            .ends_with('2')),
        "both nodes must be subscribed"
    );
    let mut clients = [a.channel_client(), b.channel_client()];
    for c in clients.iter_mut() {
        c.subscribe("a");
        c.subscribe("b");
    }
    a.publish_json(&json!({"channels": ["a", "b"], "data": "x"}));
    a.publish_json(&json!({"channel": "a", "data": "marker 1"}));
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv_text(T), "x", "client on node {i}");
        assert_eq!(
            c.recv_text(T),
            "marker 1",
            "client on node {i}: a duplicate before the marker"
        );
    }
    let resp = rest_event(
        &a,
        "app-secret",
        &json!({"name": "e", "channels": ["a", "b"], "data": "y"}),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    a.publish_json(&json!({"channel": "a", "data": "marker 2"}));
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv_text(T), "y", "client on node {i}");
        assert_eq!(
            c.recv_text(T),
            "marker 2",
            "client on node {i}: a duplicate before the marker"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Secrets
// ---------------------------------------------------------------------------------------------

/// Replays secret guessing: prefixes, extensions, case changes, an empty token and a same-length
/// near miss of `internal_token` on `POST /internal/broadcast`, and of the app secret as a REST
/// bearer. Only the exact secret is accepted, and nothing refused is published.
#[test]
fn only_the_exact_secret_is_accepted() {
    let s = Server::start(&["--set", "internal_token=s3cret"], &[]);
    let mut sub = s.channel_client();
    sub.subscribe("c");
    let post = |auth: Option<&str>| {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        let value;
        if let Some(t) = auth {
            value = format!("Bearer {t}");
            headers.push(("Authorization", value.as_str()));
        }
        http_request(
            &s.addr(),
            "POST",
            "/internal/broadcast",
            &headers,
            b"channel=c&message=m",
        )
        .status
    };
    let long = "s3cret".repeat(100);
    for bad in [
        "s3cre",
        "s3cretX",
        "S3CRET",
        "",
        "s3creu",
        "x",
        long.as_str(),
    ] {
        assert_eq!(post(Some(bad)), 401, "internal token {bad:?}");
    }
    assert_eq!(post(None), 401, "no Authorization header");
    assert_eq!(post(Some("s3cret")), 200, "the right token");
    assert_eq!(sub.recv_text(T), "m", "only the accepted request publishes");

    for bad in ["app-secre", "app-secretX", "APP-SECRET", ""] {
        let resp = rest_event(
            &s,
            bad,
            &json!({"name": "e", "channel": "c", "data": "rest"}),
        );
        assert_eq!(resp.status, 401, "REST bearer {bad:?}: {resp:?}");
    }
    let resp = rest_event(
        &s,
        "app-secret",
        &json!({"name": "e", "channel": "c", "data": "rest"}),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        sub.recv_text(T),
        "rest",
        "only the accepted event publishes"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. A last message and the FIN in one go
// ---------------------------------------------------------------------------------------------

/// Sends `data` and the FIN in one TCP segment: corked, the data waits in the socket, and the
/// shutdown sets FIN on that same segment, so the server sees both in one readiness event.
fn send_then_fin(stream: &TcpStream, data: &[u8]) {
    let cork = |on: libc::c_int| unsafe {
        let r = libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "TCP_CORK: {}", io::Error::last_os_error());
    };
    cork(1);
    (&*stream).write_all(data).expect("send");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown(SHUT_WR)");
}

/// Replays clients that send their last bytes and their FIN together (corked into one segment,
/// as a script or a client that exits right after writing does): 50 WebSocket clients send the
/// upgrade request and a subscription, and a plain HTTP client a keep-alive `GET /up`, each
/// followed by the FIN. The server must notice the end of each connection, not keep a subscribed
/// phantom session until the activity timeout (120 s by default) or an idle HTTP connection until
/// the handshake timeout.
#[test]
fn data_followed_by_fin_ends_the_session() {
    const N: usize = 50;
    let s = Server::start(&[], &[]);
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&client_frame(
        true,
        OP_TEXT,
        br#"{"action":"subscribe","channel":"fin"}"#,
    ));
    let mut conns = Vec::new();
    for _ in 0..N {
        let c = s.raw();
        send_then_fin(&c.stream, &request);
        conns.push(c);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let resp = c.read_http_response(T).expect("101");
        assert_eq!(resp.status, 101, "client #{i}: {resp:?}");
        let reply = c.recv_text(T);
        assert!(reply.contains(r#""subscribed""#), "client #{i}: {reply}");
    }
    let ws_gone = wait_until(T, || up(&s)["connections"] == json!(0));
    let ws_left = up(&s)["connections"].clone();
    println!(
        "{N} WebSocket clients sent their subscription and FIN together: {ws_left} sessions still open {T:?} later"
    );

    // Plain HTTP: a keep-alive request and the FIN.
    let mut h = s.raw();
    let me = h.stream.local_addr().unwrap().to_string();
    send_then_fin(&h.stream, b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n");
    let resp = h.read_http_response(T).expect("an answer to GET /up");
    assert_eq!(resp.status, 200);
    let t = Instant::now();
    let (_, eof) = h.read_to_end(T);
    let how = s
        .wait_for_log(&format!("{me} closed:"), T)
        .unwrap_or_else(|| format!("(no close logged for {me})"));
    println!(
        "keep-alive GET /up + FIN: EOF {} after {:.1} s; {how}",
        if eof { "seen" } else { "not seen" },
        t.elapsed().as_secs_f64()
    );
    assert!(
        ws_gone,
        "{ws_left} of {N} sessions are still open {T:?} after their clients sent FIN (the server missed the EOF)"
    );
    assert!(
        how.ends_with("closed: peer closed"),
        "the server missed the HTTP client's EOF: {how}"
    );
}

/// Replays a client that answers the server's close frame with its own close frame and its FIN
/// in one go (as soon as it sees the server's close, during a SIGTERM): the server must see the
/// EOF and close the connection as "peer closed", not wait out its linger time for an EOF that
/// already came.
#[test]
fn close_reply_followed_by_fin_is_noticed_at_shutdown() {
    let mut s = Server::start(&[], &[]);
    let mut c = raw_ws(&s);
    c.send(&client_frame(
        true,
        OP_TEXT,
        br#"{"action":"subscribe","channel":"bye"}"#,
    ))
    .expect("subscribe");
    assert!(c.recv_text(T).contains(r#""subscribed""#));
    let me = c.stream.local_addr().unwrap().to_string();
    let sigterm = Instant::now();
    s.signal(Signal::SIGTERM);
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1001);
    let bye = client_frame(true, OP_CLOSE, &1001u16.to_be_bytes());
    send_then_fin(&c.stream, &bye);
    let st = s.wait_exit(T);
    let exit = sigterm.elapsed();
    assert!(st.success(), "{st}");
    let how = s
        .logs()
        .into_iter()
        .find(|l| l.contains(&format!("{me} closed:")))
        .unwrap_or_else(|| panic!("no close logged for {me}:\n{}", s.logs_text()));
    println!(
        "close reply + FIN at shutdown: server exited {:.2} s after SIGTERM; {how}",
        exit.as_secs_f64()
    );
    assert!(
        how.ends_with("closed: peer closed"),
        "the server did not see the client's EOF and waited out its linger time instead: {how}"
    );
}
