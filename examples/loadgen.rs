//! ferrocast load generator (loopback only).
//!
//! ```text
//! cargo run --release --example loadgen -- idle    -n 1000 [--hold 5]
//! cargo run --release --example loadgen -- fanout  -n 1000 --rate 2000 --messages 500 --size 64 --publish fifo:/tmp/b.fifo
//! cargo run --release --example loadgen -- connect -c 64 --duration 5
//! cargo run --release --example loadgen -- route   -c 16 --duration 5 --size 64 --protocol raw --url ws://127.0.0.1:PORT/raw
//! ```
//! Common options: `--url ws://127.0.0.1:PORT/ws` (repeatable: connections spread round-robin over
//! several servers), `--protocol channel|pusher|nchan|raw`, `--channel NAME`,
//! `--server-pid PID[,PID…]` (CPU and RSS summed), `--threads N`, `--json`.
//!
//! Every receiving thread runs its own `mio` loop over its share of the connections; the publisher
//! (fanout) runs on the main thread, a progress line is printed on stderr every second.
//! Nothing is allocated per received message: payloads are parsed in place, latencies go into a
//! log-bucketed histogram, sequence numbers into a preallocated bitmap per subscriber.
//!
//! Timestamps are `CLOCK_MONOTONIC` nanoseconds (publisher and receivers are the same process/machine).
//! Payload format (the `data` of each published message): `"<seq> <ts_ns> xxxx…"`, padded to `--size`;
//! with `fanout --laravel` the padding is a Laravel-broadcast-style JSON event (`App\Events\OrderShipped`,
//! an order with 10–20 items, values drawn per message), cut or padded to exactly `--size` bytes.
//!
//! `--deflate` offers permessage-deflate (RFC 7692) in every handshake; compressed messages (RSV1)
//! are inflated before they are checked: with one inflater per thread, reset per message, when the
//! server answers `server_no_context_takeover`, else with one inflater per connection. The report
//! counts the connections that agreed (`deflate_agreed`) and, in fanout mode, the bytes read from
//! the subscribers' sockets (`wire_bytes_received`, `wire_bytes_per_delivery`).
//! With `--protocol raw` a FIFO publisher writes each payload as a bare line (what raw-mode clients hear).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flate2::{Decompress, FlushDecompress, Status};
use hmac::{Hmac, KeyInit, Mac};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Map, Value, json};
use sha1::{Digest as _, Sha1};

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const PIPE_BUF: usize = 4096;
const MAX_FRAME: u64 = 16 << 20;
/// What a permessage-deflate sender took off the end of each message (RFC 7692 §7.2.2).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The offer of every handshake with `--deflate`.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

// ------------------------------------------------------------------------------------------------
// Command line
// ------------------------------------------------------------------------------------------------

#[derive(Parser)]
#[command(name = "loadgen", about = "ferrocast load generator (loopback only)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Open N connections, subscribe each, measure server RSS per connection, hold, close.
    Idle(IdleArgs),
    /// N subscribers, publish M messages at R msg/s, measure delivery, loss and latency.
    Fanout(FanoutArgs),
    /// Handshake + subscribe + close cycles with C concurrent connections for a duration.
    Connect(ConnectArgs),
    /// Request/reply through a raw-mode path (a `route` handler): C connections, each sends one
    /// message, waits for the reply, repeats, for a duration.
    Route(RouteArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// WebSocket URL of the server (loopback only). For `pusher` and `nchan` the path is replaced by
    /// `{prefix}/app/{key}?protocol=7` or `{prefix}/sub/{channel}` (prefix = the URL path without a final `/ws`).
    /// Repeat `--url` (or separate with commas) to spread the connections round-robin over several
    /// servers (e.g. nodes of one cluster); every URL must have the same path.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    url: Vec<String>,
    #[arg(long, value_enum, default_value_t = Protocol::Channel)]
    protocol: Protocol,
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Server process id(s), comma separated (summed): RSS from /proc/PID/status, CPU from /proc/PID/stat.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<i32>,
    /// Machine-readable result on stdout.
    #[arg(long)]
    json: bool,
    /// Receiving threads, each with its own mio loop and share of the connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Take a message's arrival time from the kernel (SO_TIMESTAMPNS: when it reached the
    /// subscriber's socket) instead of from when this process read it. One process reading a
    /// thousand sockets in turn adds its own queueing to the latency; a thousand browsers do not.
    #[arg(long)]
    kernel_rx: bool,
    /// Handshakes in flight at once during setup (all threads together).
    #[arg(long, default_value_t = 256)]
    max_pending: usize,
    /// Per-connection deadline for connect + handshake + subscribe (seconds).
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Deadline for all connections to be subscribed (seconds).
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
    /// Spread source addresses over 127.0.0.2 ..= 127.0.0.(1+K) (0: let the kernel choose).
    #[arg(long, default_value_t = 253)]
    source_addrs: u32,
    /// Pusher application key (for `--protocol pusher` and `pusher-rest:`).
    #[arg(long, default_value = "app-key")]
    app_key: String,
    #[arg(long, default_value = "app-id")]
    app_id: String,
    #[arg(long, default_value = "app-secret")]
    app_secret: String,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// An extra header of every handshake, `Name: value` (repeatable), e.g. a session cookie
    /// for a validation handler.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Offer permessage-deflate (`permessage-deflate; client_max_window_bits`) and inflate the
    /// compressed messages the server sends.
    #[arg(long)]
    deflate: bool,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'n', long = "connections")]
    n: usize,
    /// Seconds to hold the connections open after measuring.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'n', long = "connections")]
    n: usize,
    /// Messages per second offered (token bucket; lines are batched when behind schedule).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Payload (data) size in bytes; at least the "<seq> <ts> " header.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// fifo:PATH | http:URL (raw body POST, `{channel}` substituted; nchan) | pusher-rest:URL
    #[arg(long)]
    publish: String,
    /// Event name used in FIFO lines and Pusher REST calls.
    #[arg(long, default_value = "loadgen")]
    event: String,
    /// Seconds to wait after the last publish for deliveries to arrive.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Seconds to let the server settle between subscribing and measuring RSS / publishing.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Fill each payload after its "<seq> <ts> " header with a Laravel-style broadcast event
    /// (JSON, values varying per message) instead of `x` padding.
    #[arg(long)]
    laravel: bool,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connections (each loops: connect, handshake, subscribe, close).
    #[arg(short = 'c', long = "concurrency", default_value_t = 32)]
    c: usize,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

#[derive(Args)]
struct RouteArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connections, each with one request in flight.
    #[arg(short = 'c', long = "concurrency", default_value_t = 16)]
    c: usize,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Request size in bytes (`"<seq> <ts_ns> xxx…"`); the reply must echo the first two fields.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Protocol {
    /// ferrocast / cadsock channel protocol: {"action":"subscribe","channel":C}
    Channel,
    /// Pusher protocol v7 at /app/{key}
    Pusher,
    /// nginx nchan websocket subscriber at /sub/{channel} (raw messages)
    Nchan,
    /// A plain WebSocket at the URL's path, nothing to subscribe (ferrocast raw mode).
    Raw,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Idle,
    Fanout,
    Connect,
    Route,
}

// ------------------------------------------------------------------------------------------------
// Small utilities
// ------------------------------------------------------------------------------------------------

/// `read` with the kernel's arrival time of the data (`SO_TIMESTAMPNS`), on the monotonic
/// clock the payload timestamps use.
fn read_stamped(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let real = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
                stamp = Some(real.saturating_sub(realtime_offset_ns()));
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, measured once.
fn realtime_offset_ns() -> u64 {
    static OFFSET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let real = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        real.saturating_sub(now_ns())
    })
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A log-bucketed histogram (HDR-like): 2^SUB sub-buckets per power of two, < 1 % error.
const SUB: u32 = 7;
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
    min: u64,
    sum: u128,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; ((64 - SUB as usize) << SUB) + (1 << (SUB + 1))],
            n: 0,
            max: 0,
            min: u64::MAX,
            sum: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < (1 << (SUB + 1)) {
            v as usize
        } else {
            let e = 63 - v.leading_zeros();
            let shift = e - SUB;
            ((shift as usize) << SUB) + (v >> shift) as usize
        }
    }
    fn value_at(idx: usize) -> u64 {
        if idx < (1 << (SUB + 1)) {
            idx as u64
        } else {
            let shift = (idx >> SUB) - 1;
            let mant = (idx - (shift << SUB)) as u64;
            (mant << shift) + ((1u64 << shift) >> 1)
        }
    }
    #[inline]
    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
        self.min = self.min.min(o.min);
    }
    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::value_at(i).clamp(self.min, self.max);
            }
        }
        self.max
    }
    fn mean(&self) -> u64 {
        if self.n == 0 {
            0
        } else {
            (self.sum / self.n as u128) as u64
        }
    }
}

fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        }
    }
    rl.rlim_cur
}

// ------------------------------------------------------------------------------------------------
// URLs: loopback only
// ------------------------------------------------------------------------------------------------

struct Url {
    addr: SocketAddr,
    host_header: String,
    path: String,
}

fn parse_url(url: &str, scheme: &str, default_port: u16) -> Result<Url, String> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| format!("{url}: expected a {scheme}:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, p) = r
            .split_once(']')
            .ok_or_else(|| format!("{url}: bad IPv6 host"))?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
        None => default_port,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("{url}: host must be a loopback IP address or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: refusing a non-loopback target ({ip}); loadgen only targets this machine"
        ));
    }
    Ok(Url {
        addr: SocketAddr::new(ip, port),
        host_header: authority.to_string(),
        path: path.to_string(),
    })
}

/// The URL path without a trailing `/ws` or `/`: where `/up`, `/app/…`, `/sub/…` live.
fn base_path(path: &str) -> String {
    let p = path.split('?').next().unwrap_or("");
    let p = p.strip_suffix("/ws").unwrap_or(p);
    p.trim_end_matches('/').to_string()
}

// ------------------------------------------------------------------------------------------------
// Server probes: /proc and /up
// ------------------------------------------------------------------------------------------------

struct Probe {
    pids: Vec<i32>,
    tck: f64,
}

impl Probe {
    fn new(pids: Vec<i32>) -> Probe {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Probe {
            pids,
            tck: if tck > 0.0 { tck } else { 100.0 },
        }
    }
    fn rss_kb(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        let mut total = 0;
        for pid in &self.pids {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        }
        Some(total)
    }
    fn cpu_secs(&self) -> Option<f64> {
        self.stat_ticks(11)
    }
    /// CPU of the server's reaped children (cutime + cstime): forked handlers.
    fn children_cpu_secs(&self) -> Option<f64> {
        self.stat_ticks(13)
    }
    fn stat_ticks(&self, first: usize) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        let mut ticks = 0u64;
        for pid in &self.pids {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = after.split_whitespace().collect();
            // after ")": state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17)
            //  → indices 11, 12 (self) and 13, 14 (children)
            ticks += f.get(first)?.parse::<u64>().ok()? + f.get(first + 1)?.parse::<u64>().ok()?;
        }
        Some(ticks as f64 / self.tck)
    }
}

/// `GET {base}/up` → JSON (ferrocast's health endpoint; None when absent).
fn fetch_up(addr: SocketAddr, host: &str, base: &str) -> Option<Value> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {base}/up HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
        return None;
    }
    let body = &buf[find(&buf, b"\r\n\r\n")? + 4..];
    serde_json::from_slice(body).ok()
}

// ------------------------------------------------------------------------------------------------
// Shared state between the main thread and the workers
// ------------------------------------------------------------------------------------------------

const PHASE_RUN: u8 = 0;
const PHASE_CLOSE: u8 = 1;
const PHASE_STOP: u8 = 2;

#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    published: AtomicU64,
    progress_stop: AtomicBool,
}

/// Per-thread counters, stored (not added) by their one worker; the main thread sums them.
#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    connected: AtomicU64,
    subscribed: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    unique: AtomicU64,
    cycles: AtomicU64,
    live: AtomicU64,
    last_rx_ns: AtomicU64,
}

#[derive(Default, Clone, Copy)]
struct Sums {
    opened: u64,
    connected: u64,
    subscribed: u64,
    failed: u64,
    received: u64,
    unique: u64,
    cycles: u64,
    live: u64,
    last_rx_ns: u64,
}

fn sum(counters: &[Arc<Counters>]) -> Sums {
    let mut s = Sums::default();
    for c in counters {
        s.opened += c.opened.load(Relaxed);
        s.connected += c.connected.load(Relaxed);
        s.subscribed += c.subscribed.load(Relaxed);
        s.failed += c.failed.load(Relaxed);
        s.received += c.received.load(Relaxed);
        s.unique += c.unique.load(Relaxed);
        s.cycles += c.cycles.load(Relaxed);
        s.live += c.live.load(Relaxed);
        s.last_rx_ns = s.last_rx_ns.max(c.last_rx_ns.load(Relaxed));
    }
    s
}

// ------------------------------------------------------------------------------------------------
// Worker: one mio loop, a share of the connections
// ------------------------------------------------------------------------------------------------

struct WorkerCfg {
    id: usize,
    threads: usize,
    kind: Kind,
    protocol: Protocol,
    /// idle/fanout: connections of this thread; connect: concurrency of this thread.
    conns: usize,
    max_pending: usize,
    /// Targets (one per `--url`), connections spread round-robin.
    addrs: Vec<SocketAddr>,
    sources: Vec<Ipv4Addr>,
    host_headers: Vec<String>,
    /// `--header` lines, each ending in CRLF.
    extra_headers: String,
    ws_path: String,
    /// Route mode: request size.
    req_size: usize,
    subscribe_msg: Vec<u8>,
    messages: u64,
    bitmap: bool,
    connect_timeout_ns: u64,
    /// Offer permessage-deflate.
    deflate: bool,
    /// Arrival times from the kernel (`--kernel-rx`).
    kernel_rx: bool,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Connecting,
    Handshaking,
    WaitEstablished,
    WaitSubscribed,
    Subscribed,
    Closing,
}

fn pending_state(s: St) -> bool {
    matches!(
        s,
        St::Connecting | St::Handshaking | St::WaitEstablished | St::WaitSubscribed
    )
}

struct Conn {
    stream: TcpStream,
    /// Index into the worker's targets.
    target: usize,
    generation: u32,
    state: St,
    t0: u64,
    deadline: u64,
    out: Vec<u8>,
    inb: Vec<u8>,
    frag: Vec<u8>,
    frag_open: bool,
    /// The fragmented message being gathered is compressed (RSV1 on its first frame).
    frag_z: bool,
    /// What the server agreed to about permessage-deflate.
    z: Zx,
    accept: [u8; 28],
    next_seq: u64,
    bits: Vec<u64>,
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.out.is_empty() {
            match self.stream.write(bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => self.out.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.out.extend_from_slice(bytes)
                }
                Err(e) => return Err(e),
            }
        } else {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out = Vec::new();
        Ok(())
    }
}

fn client_frame(op: u8, payload: &[u8], mask: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let m = mask.to_be_bytes();
    out.extend_from_slice(&m);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
    out
}

struct FrameHead {
    fin: bool,
    /// RSV1: the first frame of a compressed message (permessage-deflate).
    rsv1: bool,
    op: u8,
    start: usize,
    end: usize,
}

/// The next frame of `b`, when whole. RSV1 is accepted on the first frame of a data message
/// when `rsv1_ok` (the connection agreed to permessage-deflate); RSV2/RSV3 never.
fn parse_frame(b: &[u8], rsv1_ok: bool) -> Result<Option<FrameHead>, &'static str> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let rsv1 = b[0] & 0x40 != 0;
    let op = b[0] & 0x0f;
    if b[0] & 0x30 != 0 {
        return Err("reserved bits set in a server frame");
    }
    if rsv1 && !rsv1_ok {
        return Err("RSV1 set in a server frame without permessage-deflate");
    }
    if rsv1 && !matches!(op, 0x1 | 0x2) {
        return Err("RSV1 set on a control or continuation frame");
    }
    if b[1] & 0x80 != 0 {
        return Err("masked server frame");
    }
    let mut len = (b[1] & 0x7f) as u64;
    let mut pos = 2;
    if len == 126 {
        if b.len() < 4 {
            return Ok(None);
        }
        len = u16::from_be_bytes([b[2], b[3]]) as u64;
        pos = 4;
    } else if len == 127 {
        if b.len() < 10 {
            return Ok(None);
        }
        len = u64::from_be_bytes(b[2..10].try_into().unwrap());
        pos = 10;
    }
    if len > MAX_FRAME {
        return Err("server frame over 16 MiB");
    }
    let end = pos + len as usize;
    if b.len() < end {
        return Ok(None);
    }
    Ok(Some(FrameHead {
        fin,
        rsv1,
        op,
        start: pos,
        end,
    }))
}

/// permessage-deflate as agreed on one connection.
enum Zx {
    /// Not negotiated: RSV1 is a protocol error.
    Off,
    /// `server_no_context_takeover`: every message stands alone, the thread's inflater serves.
    Shared,
    /// The server keeps its window between messages: this connection's own inflater.
    Own(Box<Decompress>),
}

/// What to do with the server's `Sec-WebSocket-Extensions` answer (all its values, joined).
fn negotiate(offered: bool, answer: &str) -> Result<Zx, String> {
    if !offered {
        return Err(format!("extensions {answer:?} answered to no offer"));
    }
    let mut parts = answer.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") || answer.contains(',') {
        return Err(format!("unexpected extensions {answer:?}"));
    }
    let mut no_takeover = false;
    for param in parts {
        let name = param.split('=').next().unwrap_or("").trim();
        match name {
            "server_no_context_takeover" => no_takeover = true,
            // We do not compress; an inflater with a 15-bit window takes any smaller window.
            "client_no_context_takeover" | "client_max_window_bits" | "server_max_window_bits" => {}
            _ => {
                return Err(format!(
                    "unknown permessage-deflate parameter in {answer:?}"
                ));
            }
        }
    }
    Ok(if no_takeover {
        Zx::Shared
    } else {
        Zx::Own(Box::new(Decompress::new(false)))
    })
}

/// Inflates one message into `out` (cleared first; its capacity is reused), the four bytes the
/// sender took off put back. The inflater is not reset here: the caller resets a shared one.
fn inflate(z: &mut Decompress, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    for input in [payload, &DEFLATE_TAIL[..]] {
        let mut taken = 0;
        loop {
            if out.capacity() - out.len() < 1024 {
                if out.len() as u64 > MAX_FRAME {
                    return Err("a message inflates past 16 MiB".into());
                }
                out.reserve(out.capacity().max(16 * 1024));
            }
            let (in0, out0) = (z.total_in(), out.len());
            let status = z
                .decompress_vec(&input[taken..], out, FlushDecompress::Sync)
                .map_err(|e| format!("inflate: {e}"))?;
            taken += (z.total_in() - in0) as usize;
            if status == Status::StreamEnd {
                // A final block ends the stream: the next message starts a new one.
                z.reset(false);
                return Ok(());
            }
            let full = out.len() == out.capacity();
            if taken == input.len() && !full {
                break;
            }
            if z.total_in() == in0 && out.len() == out0 && !full {
                return Err("inflate: no progress (malformed deflate data)".into());
            }
        }
    }
    Ok(())
}

/// Parses `"<seq> <ts> …"` (for Pusher, inside `"data":"…"`).
fn parse_bench(msg: &[u8], protocol: Protocol) -> Option<(u64, u64)> {
    let s = match protocol {
        Protocol::Pusher => {
            let i = find(msg, b"\"data\":\"")?;
            &msg[i + 8..]
        }
        _ => msg,
    };
    let mut it = s.iter();
    let mut num = |end_ok: bool| -> Option<u64> {
        let mut v: u64 = 0;
        let mut digits = 0;
        for &c in it.by_ref() {
            match c {
                b'0'..=b'9' => {
                    v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
                    digits += 1;
                }
                b' ' if digits > 0 => return Some(v),
                _ => return None,
            }
        }
        if end_ok && digits > 0 { Some(v) } else { None }
    };
    let seq = num(false)?;
    let ts = num(true)?;
    Some((seq, ts))
}

enum Flow {
    Keep,
    /// Finished normally (closed cleanly).
    Done,
    Fail(&'static str, String),
}

#[derive(Default)]
struct WorkerResult {
    lat: Option<Hist>,
    hs: Option<Hist>,
    opened: u64,
    connected: u64,
    subscribed: u64,
    failed: u64,
    fails: BTreeMap<String, u64>,
    samples: Vec<String>,
    received: u64,
    unique: u64,
    dups: u64,
    out_of_order: u64,
    other: u64,
    server_closed: u64,
    clean_closes: u64,
    close_timeouts: u64,
    aborted: u64,
    cycles: u64,
    /// Per-subscriber (unique received) for the subscribed connections of this thread.
    per_sub_min: u64,
    per_sub_max: u64,
    subs_complete: u64,
    lost: u64,
    /// Bytes read from the sockets (handshake answers included).
    wire_bytes: u64,
    /// Connections whose handshake answer agreed to permessage-deflate; of them, those where
    /// the server keeps its context between messages.
    deflate_agreed: u64,
    deflate_takeover: u64,
    /// The first such answer (`Sec-WebSocket-Extensions`).
    deflate_answer: Option<String>,
    /// Messages that arrived compressed (RSV1).
    compressed: u64,
}

struct Worker {
    cfg: WorkerCfg,
    poll: Poll,
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    generation: u32,
    scratch: Vec<u8>,
    rng: Rng,
    pending: usize,
    live: usize,
    r: WorkerResult,
    lat: Hist,
    hs: Hist,
    last_rx_ns: u64,
    /// Subscribers' bitmaps and counts of conns that finished (closed) during the run.
    retired: Vec<(u64, u64)>,
    /// The inflater of the connections without context takeover (reset per message), made on
    /// first use, and where every compressed message is inflated to.
    inflater: Option<Decompress>,
    inflated: Vec<u8>,
}

fn open_socket(src: Option<Ipv4Addr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we own; structures are zero-initialised.
    unsafe {
        let fd = libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            sz,
        );
        if let (Some(src), true) = (src, dst.is_ipv4()) {
            // Defer the port choice to connect() so the 4-tuple, not the bind, must be unique.
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                sz,
            );
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from(src).to_be();
            if libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let rc = match dst {
            SocketAddr::V4(v4) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = v4.port().to_be();
                sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                libc::connect(
                    fd,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            }
            SocketAddr::V6(v6) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = v6.port().to_be();
                sa.sin6_addr.s6_addr = v6.ip().octets();
                libc::connect(
                    fd,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(TcpStream::from_std(std::net::TcpStream::from(owned)))
    }
}

impl Worker {
    fn new(cfg: WorkerCfg) -> io::Result<Worker> {
        let seed = now_ns() ^ ((cfg.id as u64 + 1) << 40);
        Ok(Worker {
            poll: Poll::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            generation: 0,
            scratch: vec![0; 256 * 1024],
            rng: Rng::new(seed),
            pending: 0,
            live: 0,
            r: WorkerResult {
                per_sub_min: u64::MAX,
                ..Default::default()
            },
            lat: Hist::new(),
            hs: Hist::new(),
            last_rx_ns: 0,
            retired: Vec::new(),
            inflater: None,
            inflated: Vec::new(),
            cfg,
        })
    }

    fn fail_note(&mut self, key: &str, detail: String) {
        self.r.failed += 1;
        *self.r.fails.entry(key.to_string()).or_default() += 1;
        if self.r.samples.len() < 5 {
            self.r.samples.push(format!("{key}: {detail}"));
        }
    }

    fn open_one(&mut self, now: u64) -> io::Result<()> {
        let global = self.r.opened as usize * self.cfg.threads + self.cfg.id;
        let src = if self.cfg.sources.is_empty() {
            None
        } else {
            Some(self.cfg.sources[global % self.cfg.sources.len()])
        };
        self.r.opened += 1;
        let target = global % self.cfg.addrs.len();
        let mut stream = match open_socket(src, self.cfg.addrs[target]) {
            Ok(s) if self.cfg.kernel_rx => {
                let one: libc::c_int = 1;
                // SAFETY: a valid socket and option value.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_TIMESTAMPNS,
                        (&raw const one).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
                s
            }
            Ok(s) => s,
            Err(e) => {
                self.fail_note("socket/connect", e.to_string());
                return Err(e);
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.generation = self.generation.wrapping_add(1);
        let token = Token(((self.generation as usize) << 32) | slot);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(slot);
            self.fail_note("register", e.to_string());
            return Err(e);
        }
        let bits = if self.cfg.bitmap {
            vec![0u64; self.cfg.messages.div_ceil(64) as usize]
        } else {
            Vec::new()
        };
        self.slots[slot] = Some(Conn {
            stream,
            target,
            generation: self.generation,
            state: St::Connecting,
            t0: now,
            deadline: now + self.cfg.connect_timeout_ns,
            out: Vec::new(),
            inb: Vec::new(),
            frag: Vec::new(),
            frag_open: false,
            frag_z: false,
            z: Zx::Off,
            accept: [0; 28],
            next_seq: 0,
            bits,
        });
        self.pending += 1;
        self.live += 1;
        Ok(())
    }

    /// Drops a connection, keeping its sequence statistics.
    fn retire(&mut self, slot: usize, conn: Conn) {
        let mut conn = conn;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if pending_state(conn.state) {
            self.pending -= 1;
        }
        self.live -= 1;
        self.free.push(slot);
        if self.cfg.kind == Kind::Fanout && !pending_state(conn.state) {
            self.retired.push((self.sub_unique(&conn), conn.next_seq));
        }
    }

    fn sub_unique(&self, conn: &Conn) -> u64 {
        if self.cfg.bitmap {
            conn.bits.iter().map(|w| w.count_ones() as u64).sum()
        } else {
            conn.next_seq.min(self.cfg.messages)
        }
    }

    fn send_text(&mut self, conn: &mut Conn, text: &[u8]) -> io::Result<()> {
        let f = client_frame(0x1, text, self.rng.next() as u32);
        conn.send(&f)
    }

    fn start_handshake(&mut self, conn: &mut Conn) -> io::Result<()> {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        raw[8..].copy_from_slice(&self.rng.next().to_le_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut h = Sha1::new();
        h.update(key.as_bytes());
        h.update(WS_GUID.as_bytes());
        let acc = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        conn.accept.copy_from_slice(acc.as_bytes());
        let ext = if self.cfg.deflate {
            format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
        } else {
            String::new()
        };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: ferrocast-loadgen\r\n{ext}{}\r\n",
            self.cfg.ws_path, self.cfg.host_headers[conn.target], key, self.cfg.extra_headers
        );
        conn.state = St::Handshaking;
        conn.send(req.as_bytes())
    }

    fn on_subscribed(&mut self, conn: &mut Conn, now: u64) -> Flow {
        conn.state = St::Subscribed;
        self.pending -= 1;
        self.r.subscribed += 1;
        self.hs.record(now.saturating_sub(conn.t0));
        if self.cfg.kind == Kind::Connect {
            return self.begin_close(conn, now, self.cfg.connect_timeout_ns);
        }
        if self.cfg.kind == Kind::Route {
            return self.send_request(conn);
        }
        Flow::Keep
    }

    /// Route mode: the next request of this connection (`"<seq> <ts_ns> xxx…"`).
    fn send_request(&mut self, conn: &mut Conn) -> Flow {
        let mut buf = Vec::with_capacity(self.cfg.req_size + 32);
        make_payload(&mut buf, conn.next_seq, now_ns(), self.cfg.req_size);
        match self.send_text(conn, &buf) {
            Ok(()) => Flow::Keep,
            Err(e) => Flow::Fail("write", e.to_string()),
        }
    }

    /// Route mode: a reply must echo the request's sequence number and timestamp.
    fn on_route_reply(&mut self, conn: &mut Conn, msg: &[u8], now: u64) -> Flow {
        match parse_bench(msg, Protocol::Raw) {
            Some((seq, ts)) if seq == conn.next_seq => {
                self.r.received += 1;
                self.r.unique += 1;
                self.last_rx_ns = now;
                self.lat.record(now.saturating_sub(ts));
                conn.next_seq += 1;
            }
            _ => {
                self.r.other += 1;
                if self.r.samples.len() < 5 {
                    let t = String::from_utf8_lossy(&msg[..msg.len().min(120)]).into_owned();
                    self.r.samples.push(format!("unexpected reply: {t}"));
                }
                conn.next_seq += 1;
            }
        }
        if self.cfg.shared.phase.load(Relaxed) == PHASE_RUN {
            return self.send_request(conn);
        }
        Flow::Keep
    }

    fn begin_close(&mut self, conn: &mut Conn, now: u64, timeout: u64) -> Flow {
        let f = client_frame(0x8, &1000u16.to_be_bytes(), self.rng.next() as u32);
        conn.state = St::Closing;
        conn.deadline = now + timeout;
        match conn.send(&f) {
            Ok(()) => Flow::Keep,
            Err(e) => Flow::Fail("write", e.to_string()),
        }
    }

    /// Checks the server's handshake answer and records what it agreed about permessage-deflate.
    fn check_handshake(&mut self, conn: &mut Conn, head: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(format!("{status:?}"));
        }
        let mut accept = None;
        let mut extensions: Vec<&str> = Vec::new();
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(v.trim());
            } else if k.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
                extensions.push(v.trim());
            }
        }
        match accept {
            None => return Err("101 without Sec-WebSocket-Accept".into()),
            Some(a) if a.as_bytes() != conn.accept => {
                return Err(format!("bad Sec-WebSocket-Accept {a:?}"));
            }
            Some(_) => {}
        }
        if extensions.is_empty() {
            return Ok(());
        }
        let answer = extensions.join(", ");
        conn.z = negotiate(self.cfg.deflate, &answer)?;
        self.r.deflate_agreed += 1;
        if matches!(conn.z, Zx::Own(_)) {
            self.r.deflate_takeover += 1;
        }
        if self.r.deflate_answer.is_none() {
            self.r.deflate_answer = Some(answer);
        }
        Ok(())
    }

    /// Consumes what it can from `data`; returns bytes used and what to do next.
    fn process(&mut self, conn: &mut Conn, data: &[u8], now: u64) -> (usize, Flow) {
        let mut pos = 0;
        if conn.state == St::Handshaking {
            let Some(i) = find(data, b"\r\n\r\n") else {
                if data.len() > 16384 {
                    return (
                        0,
                        Flow::Fail("handshake", "response head over 16 KiB".into()),
                    );
                }
                return (0, Flow::Keep);
            };
            if let Err(e) = self.check_handshake(conn, &data[..i + 4]) {
                return (i + 4, Flow::Fail("handshake refused", e));
            }
            pos = i + 4;
            let flow = match self.cfg.protocol {
                Protocol::Channel => {
                    conn.state = St::WaitSubscribed;
                    let msg = self.cfg.subscribe_msg.clone();
                    match self.send_text(conn, &msg) {
                        Ok(()) => Flow::Keep,
                        Err(e) => Flow::Fail("write", e.to_string()),
                    }
                }
                Protocol::Pusher => {
                    conn.state = St::WaitEstablished;
                    Flow::Keep
                }
                Protocol::Nchan | Protocol::Raw => self.on_subscribed(conn, now),
            };
            if !matches!(flow, Flow::Keep) {
                return (pos, flow);
            }
        }
        while pos < data.len() {
            match parse_frame(&data[pos..], !matches!(conn.z, Zx::Off)) {
                Err(e) => return (data.len(), Flow::Fail("protocol", e.into())),
                Ok(None) => break,
                Ok(Some(f)) => {
                    let payload = &data[pos + f.start..pos + f.end];
                    pos += f.end;
                    let flow = self.on_frame(conn, &f, payload, now);
                    if !matches!(flow, Flow::Keep) {
                        return (pos, flow);
                    }
                }
            }
        }
        (pos, Flow::Keep)
    }

    fn on_frame(&mut self, conn: &mut Conn, f: &FrameHead, payload: &[u8], now: u64) -> Flow {
        let (fin, op) = (f.fin, f.op);
        match op {
            0x1 | 0x2 if fin && !conn.frag_open => self.on_data(conn, f.rsv1, payload, now),
            0x1 | 0x2 => {
                conn.frag.clear();
                conn.frag.extend_from_slice(payload);
                conn.frag_open = true;
                conn.frag_z = f.rsv1;
                Flow::Keep
            }
            0x0 => {
                if !conn.frag_open {
                    return Flow::Fail("protocol", "continuation without a start".into());
                }
                conn.frag.extend_from_slice(payload);
                if fin {
                    conn.frag_open = false;
                    let msg = std::mem::take(&mut conn.frag);
                    let flow = self.on_data(conn, conn.frag_z, &msg, now);
                    conn.frag = msg;
                    conn.frag.clear();
                    return flow;
                }
                Flow::Keep
            }
            0x9 => {
                let f = client_frame(0xA, payload, self.rng.next() as u32);
                match conn.send(&f) {
                    Ok(()) => Flow::Keep,
                    Err(e) => Flow::Fail("write", e.to_string()),
                }
            }
            0xA => Flow::Keep,
            0x8 => {
                if conn.state == St::Closing {
                    return Flow::Done;
                }
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                let f = client_frame(0x8, payload.get(..2).unwrap_or(&[]), self.rng.next() as u32);
                let _ = conn.send(&f);
                if conn.state == St::Subscribed {
                    self.r.server_closed += 1;
                }
                Flow::Fail(
                    "server close frame",
                    format!("{code} {reason:?} in state {:?}", conn.state),
                )
            }
            _ => Flow::Fail("protocol", format!("opcode {op}")),
        }
    }

    /// A whole data message: inflated first when it came compressed (into the worker's one
    /// reused buffer), then handed to [`Worker::on_message`].
    fn on_data(&mut self, conn: &mut Conn, compressed: bool, msg: &[u8], now: u64) -> Flow {
        if !compressed {
            return self.on_message(conn, msg, now);
        }
        self.r.compressed += 1;
        let mut out = std::mem::take(&mut self.inflated);
        let inflated = match &mut conn.z {
            Zx::Off => Err("a compressed message without permessage-deflate".into()),
            Zx::Shared => {
                let z = self.inflater.get_or_insert_with(|| Decompress::new(false));
                z.reset(false);
                inflate(z, msg, &mut out)
            }
            Zx::Own(z) => inflate(z, msg, &mut out),
        };
        let flow = match inflated {
            Ok(()) => self.on_message(conn, &out, now),
            Err(e) => Flow::Fail("inflate", e),
        };
        self.inflated = out;
        flow
    }

    fn on_message(&mut self, conn: &mut Conn, msg: &[u8], now: u64) -> Flow {
        match conn.state {
            St::Subscribed if self.cfg.kind == Kind::Route => self.on_route_reply(conn, msg, now),
            St::Subscribed => {
                if let Some((seq, ts)) = parse_bench(msg, self.cfg.protocol) {
                    self.r.received += 1;
                    self.last_rx_ns = now;
                    self.lat.record(now.saturating_sub(ts));
                    if self.cfg.bitmap {
                        if seq >= self.cfg.messages {
                            self.r.other += 1;
                            return Flow::Keep;
                        }
                        let (w, b) = ((seq / 64) as usize, seq % 64);
                        if conn.bits[w] & (1 << b) != 0 {
                            self.r.dups += 1;
                        } else {
                            conn.bits[w] |= 1 << b;
                            self.r.unique += 1;
                            if seq < conn.next_seq {
                                self.r.out_of_order += 1;
                            }
                        }
                    } else if seq < conn.next_seq {
                        // Without a bitmap, "backwards" is a duplicate or a late arrival.
                        self.r.dups += 1;
                    } else {
                        self.r.unique += 1;
                    }
                    conn.next_seq = conn.next_seq.max(seq + 1);
                    return Flow::Keep;
                }
                if self.cfg.protocol == Protocol::Pusher && contains(msg, b"pusher:ping") {
                    return self.pusher_pong(conn);
                }
                self.r.other += 1;
                Flow::Keep
            }
            St::WaitEstablished => {
                if contains(msg, b"pusher:connection_established") {
                    conn.state = St::WaitSubscribed;
                    let m = self.cfg.subscribe_msg.clone();
                    return match self.send_text(conn, &m) {
                        Ok(()) => Flow::Keep,
                        Err(e) => Flow::Fail("write", e.to_string()),
                    };
                }
                if contains(msg, b"pusher:error") {
                    return Flow::Fail("pusher:error", String::from_utf8_lossy(msg).into_owned());
                }
                self.r.other += 1;
                Flow::Keep
            }
            St::WaitSubscribed => match self.cfg.protocol {
                Protocol::Pusher => {
                    if contains(msg, b"pusher_internal:subscription_succeeded") {
                        self.on_subscribed(conn, now)
                    } else if contains(msg, b"pusher:error")
                        || contains(msg, b"pusher:subscription_error")
                    {
                        Flow::Fail(
                            "subscribe refused",
                            String::from_utf8_lossy(msg).into_owned(),
                        )
                    } else if contains(msg, b"pusher:ping") {
                        self.pusher_pong(conn)
                    } else {
                        self.r.other += 1;
                        Flow::Keep
                    }
                }
                _ => {
                    if contains(msg, b"\"event\":\"subscribed\"") {
                        self.on_subscribed(conn, now)
                    } else if contains(msg, b"\"event\":\"error\"") {
                        Flow::Fail(
                            "subscribe refused",
                            String::from_utf8_lossy(msg).into_owned(),
                        )
                    } else {
                        self.r.other += 1;
                        Flow::Keep
                    }
                }
            },
            _ => Flow::Keep,
        }
    }

    fn pusher_pong(&mut self, conn: &mut Conn) -> Flow {
        match self.send_text(conn, br#"{"event":"pusher:pong","data":{}}"#) {
            Ok(()) => Flow::Keep,
            Err(e) => Flow::Fail("write", e.to_string()),
        }
    }

    fn on_eof(&mut self, conn: &Conn) -> Flow {
        if conn.state == St::Closing {
            return Flow::Done;
        }
        if conn.state == St::Subscribed {
            self.r.server_closed += 1;
        }
        Flow::Fail(
            "eof",
            format!("server closed the TCP connection in state {:?}", conn.state),
        )
    }

    fn on_event(&mut self, slot: usize, generation: u32, ev: &mio::event::Event) {
        let Some(mut conn) = self.slots.get_mut(slot).and_then(|s| s.take()) else {
            return;
        };
        if conn.generation != generation {
            self.slots[slot] = Some(conn);
            return;
        }
        let flow = self.drive(&mut conn, ev);
        self.finish(slot, conn, flow);
    }

    fn finish(&mut self, slot: usize, conn: Conn, flow: Flow) {
        match flow {
            Flow::Keep => self.slots[slot] = Some(conn),
            Flow::Done => {
                self.r.clean_closes += 1;
                if self.cfg.kind == Kind::Connect {
                    self.r.cycles += 1;
                }
                self.retire(slot, conn);
            }
            Flow::Fail(key, detail) => {
                if self.cfg.shared.phase.load(Relaxed) != PHASE_RUN && conn.state == St::Closing {
                    // Ending: the server may close first; not a failure.
                    self.r.clean_closes += 1;
                } else {
                    self.fail_note(key, detail);
                }
                self.retire(slot, conn);
            }
        }
    }

    fn drive(&mut self, conn: &mut Conn, ev: &mio::event::Event) -> Flow {
        if conn.state == St::Connecting {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Flow::Fail("connect", e.to_string()),
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => {
                    self.r.connected += 1;
                    if let Err(e) = self.start_handshake(conn) {
                        return Flow::Fail("write", e.to_string());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                    if ev.is_error() || ev.is_read_closed() {
                        return Flow::Fail("connect", "connection refused or reset".into());
                    }
                    return Flow::Keep;
                }
                Err(e) => return Flow::Fail("connect", e.to_string()),
            }
        }
        if ev.is_writable()
            && let Err(e) = conn.flush()
        {
            return Flow::Fail("write", e.to_string());
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            let mut scratch = std::mem::take(&mut self.scratch);
            let flow = self.read_all(conn, &mut scratch);
            self.scratch = scratch;
            return flow;
        }
        Flow::Keep
    }

    fn read_all(&mut self, conn: &mut Conn, scratch: &mut [u8]) -> Flow {
        loop {
            let read = if self.cfg.kernel_rx {
                read_stamped(conn.stream.as_raw_fd(), scratch)
            } else {
                conn.stream.read(scratch).map(|n| (n, None))
            };
            match read {
                Ok((0, _)) => return self.on_eof(conn),
                Ok((n, stamp)) => {
                    self.r.wire_bytes += n as u64;
                    let now = stamp.unwrap_or_else(now_ns);
                    let (used, flow) = if conn.inb.is_empty() {
                        let (used, flow) = self.process(conn, &scratch[..n], now);
                        if used < n && matches!(flow, Flow::Keep) {
                            conn.inb.extend_from_slice(&scratch[used..n]);
                        }
                        (0, flow)
                    } else {
                        conn.inb.extend_from_slice(&scratch[..n]);
                        let inb = std::mem::take(&mut conn.inb);
                        let (used, flow) = self.process(conn, &inb, now);
                        conn.inb = inb;
                        (used, flow)
                    };
                    if used > 0 {
                        conn.inb.drain(..used);
                        if conn.inb.is_empty() {
                            conn.inb = Vec::new();
                        }
                    }
                    if !matches!(flow, Flow::Keep) {
                        return flow;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if conn.state == St::Closing {
                        return Flow::Done;
                    }
                    return Flow::Fail("read", e.to_string());
                }
            }
        }
    }

    fn publish_counters(&self) {
        let c = &self.cfg.counters;
        c.opened.store(self.r.opened, Relaxed);
        c.connected.store(self.r.connected, Relaxed);
        c.subscribed.store(self.r.subscribed, Relaxed);
        c.failed.store(self.r.failed, Relaxed);
        c.received.store(self.r.received, Relaxed);
        c.unique.store(self.r.unique, Relaxed);
        c.cycles.store(self.r.cycles, Relaxed);
        c.live.store(self.live as u64, Relaxed);
        c.last_rx_ns.store(self.last_rx_ns, Relaxed);
    }

    fn open_more(&mut self, now: u64) {
        match self.cfg.kind {
            Kind::Idle | Kind::Fanout | Kind::Route => {
                while (self.r.opened as usize) < self.cfg.conns
                    && self.pending < self.cfg.max_pending
                {
                    if self.open_one(now).is_err() {
                        break;
                    }
                }
            }
            Kind::Connect => {
                while self.live < self.cfg.conns {
                    if self.open_one(now).is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// Deadlines: handshakes that take too long, closes that never finish.
    fn scan(&mut self, now: u64) {
        for slot in 0..self.slots.len() {
            let expired = matches!(&self.slots[slot], Some(c) if c.state != St::Subscribed && now > c.deadline);
            if !expired {
                continue;
            }
            let conn = self.slots[slot].take().unwrap();
            if conn.state == St::Closing {
                self.r.close_timeouts += 1;
                if self.cfg.kind == Kind::Connect
                    && self.cfg.shared.phase.load(Relaxed) == PHASE_RUN
                {
                    self.fail_note("close timeout", "no close frame/EOF from the server".into());
                }
            } else {
                self.fail_note("timeout", format!("no progress in state {:?}", conn.state));
            }
            self.retire(slot, conn);
        }
    }

    fn begin_close_all(&mut self, now: u64) {
        for slot in 0..self.slots.len() {
            let Some(mut conn) = self.slots[slot].take() else {
                continue;
            };
            if pending_state(conn.state) {
                if self.cfg.kind == Kind::Connect {
                    // Let in-flight cycles finish; they close themselves once subscribed.
                    self.slots[slot] = Some(conn);
                } else {
                    self.r.aborted += 1;
                    self.retire(slot, conn);
                }
                continue;
            }
            let flow = if conn.state == St::Subscribed {
                self.begin_close(&mut conn, now, 3_000_000_000)
            } else {
                Flow::Keep
            };
            match flow {
                Flow::Keep => self.slots[slot] = Some(conn),
                _ => self.retire(slot, conn),
            }
        }
    }

    fn run(mut self) -> WorkerResult {
        let mut events = Events::with_capacity(4096);
        let mut next_scan = now_ns() + 100_000_000;
        let mut closing_since: Option<u64> = None;
        loop {
            let now = now_ns();
            let phase = self.cfg.shared.phase.load(Relaxed);
            if phase == PHASE_STOP {
                break;
            }
            if phase == PHASE_RUN {
                self.open_more(now);
            } else if closing_since.is_none() {
                closing_since = Some(now);
                self.begin_close_all(now);
            }
            if let Some(t) = closing_since
                && (self.live == 0 || now > t + 4_000_000_000)
            {
                break;
            }
            self.publish_counters();
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(20)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                eprintln!("loadgen: poll: {e}");
                break;
            }
            let now = now_ns();
            for ev in events.iter() {
                let t = ev.token().0;
                self.on_event(t & 0xffff_ffff, (t >> 32) as u32, ev);
            }
            if now >= next_scan {
                self.scan(now);
                next_scan = now + 100_000_000;
            }
        }
        // Anything still open: count it and drop it.
        for slot in 0..self.slots.len() {
            if let Some(conn) = self.slots[slot].take() {
                if pending_state(conn.state) {
                    self.r.aborted += 1;
                } else if conn.state == St::Closing {
                    self.r.close_timeouts += 1;
                }
                self.retire(slot, conn);
            }
        }
        self.publish_counters();
        // Per-subscriber completeness.
        if self.cfg.kind == Kind::Fanout {
            for &(unique, _) in &self.retired {
                self.r.per_sub_min = self.r.per_sub_min.min(unique);
                self.r.per_sub_max = self.r.per_sub_max.max(unique);
                if unique >= self.cfg.messages {
                    self.r.subs_complete += 1;
                }
                self.r.lost += self.cfg.messages.saturating_sub(unique);
            }
        }
        self.r.lat = Some(self.lat);
        self.r.hs = Some(self.hs);
        self.r
    }
}

// ------------------------------------------------------------------------------------------------
// Publishers
// ------------------------------------------------------------------------------------------------

enum PublishTarget {
    Fifo(String),
    Http(String),
    PusherRest(String),
}

fn parse_publish(s: &str) -> Result<PublishTarget, String> {
    if let Some(p) = s.strip_prefix("fifo:") {
        Ok(PublishTarget::Fifo(p.to_string()))
    } else if let Some(u) = s.strip_prefix("http:") {
        Ok(PublishTarget::Http(u.to_string()))
    } else if let Some(u) = s.strip_prefix("pusher-rest:") {
        Ok(PublishTarget::PusherRest(u.to_string()))
    } else {
        Err(format!(
            "--publish {s:?}: expected fifo:PATH, http:URL or pusher-rest:URL"
        ))
    }
}

trait Publisher {
    /// How many messages one call may carry when behind schedule.
    fn max_batch(&self) -> usize;
    /// Publishes the payloads (each the `data` of one message).
    fn publish(&mut self, datas: &[Vec<u8>]) -> Result<(), String>;
    /// Publisher-side statistics for the report.
    fn stats(&self) -> Value;
    /// Whether every publish call was accepted (HTTP publishers: all answers 2xx).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

struct FifoPublisher {
    file: std::fs::File,
    path: String,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    /// Each payload as a bare line (global, what raw-mode clients hear), not a JSON string.
    bare: bool,
    buf: Vec<u8>,
    writes: u64,
    bytes: u64,
}

impl FifoPublisher {
    fn open(path: &str, channel: &str, event: &str, bare: bool) -> Result<FifoPublisher, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENXIO) {
                    format!("no server is reading the FIFO {path}")
                } else {
                    format!("{path}: {e}")
                }
            })?;
        // Blocking writes from here on: the publisher thread does nothing else.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = file.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        let prefix = format!(
            "{{\"channel\":{},\"event\":{},\"data\":\"",
            serde_json::to_string(channel).unwrap(),
            serde_json::to_string(event).unwrap()
        );
        let (prefix, suffix) = if bare {
            (Vec::new(), b"\n".to_vec())
        } else {
            (prefix.into_bytes(), b"\"}\n".to_vec())
        };
        Ok(FifoPublisher {
            file,
            path: path.to_string(),
            prefix,
            suffix,
            bare,
            buf: Vec::with_capacity(64 * 1024),
            writes: 0,
            bytes: 0,
        })
    }
    fn flush(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| format!("write to FIFO {}: {e}", self.path))?;
        self.writes += 1;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl Publisher for FifoPublisher {
    fn max_batch(&self) -> usize {
        256
    }
    fn publish(&mut self, datas: &[Vec<u8>]) -> Result<(), String> {
        for d in datas {
            let start = self.buf.len();
            self.buf.extend_from_slice(&self.prefix);
            if self.bare {
                self.buf.extend_from_slice(d);
            } else {
                push_json_escaped(&mut self.buf, d);
            }
            self.buf.extend_from_slice(&self.suffix);
            // Keep each write within PIPE_BUF (atomic) unless one line alone is bigger.
            if start > 0 && self.buf.len() > PIPE_BUF {
                let line = self.buf.split_off(start);
                self.flush()?;
                self.buf = line;
            }
        }
        self.flush()
    }
    fn stats(&self) -> Value {
        json!({"kind": "fifo", "path": self.path, "writes": self.writes, "bytes": self.bytes})
    }
}

/// A minimal keep-alive HTTP/1.1 client; pipelines a batch of requests, then reads the responses.
struct HttpClient {
    addr: SocketAddr,
    stream: Option<std::net::TcpStream>,
    rbuf: Vec<u8>,
    statuses: BTreeMap<u16, u64>,
    round_trips: u64,
    connections: u64,
    /// Set once the server answers `Connection: close`: one request per connection from then on.
    no_pipeline: bool,
}

impl HttpClient {
    fn new(addr: SocketAddr) -> HttpClient {
        HttpClient {
            addr,
            stream: None,
            rbuf: Vec::new(),
            statuses: BTreeMap::new(),
            round_trips: 0,
            connections: 0,
            no_pipeline: false,
        }
    }

    /// Sends the requests `buf[bounds[i]..bounds[i + 1]]` (pipelined while the server keeps the
    /// connection alive) and reads one response to each. A server that answers `Connection: close`
    /// gets one request per connection from then on, so no pipelined request is ever lost or repeated.
    fn round_trip(&mut self, buf: &[u8], bounds: &[usize]) -> Result<(), String> {
        let n = bounds.len().saturating_sub(1);
        let mut done = 0;
        while done < n {
            if self.stream.is_none() {
                let s = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                self.stream = Some(s);
                self.connections += 1;
                self.rbuf.clear();
            }
            let upto = if self.no_pipeline { done + 1 } else { n };
            let s = self.stream.as_mut().unwrap();
            s.write_all(&buf[bounds[done]..bounds[upto]])
                .map_err(|e| format!("HTTP write: {e}"))?;
            while done < upto {
                let close = self.read_response()?;
                done += 1;
                if close {
                    self.stream = None;
                    if done < upto {
                        // Pipelined requests after a closing answer were not served: resend them.
                        self.no_pipeline = true;
                    }
                    break;
                }
            }
        }
        self.round_trips += 1;
        Ok(())
    }

    fn fill(&mut self) -> Result<(), String> {
        let s = self.stream.as_mut().ok_or("HTTP connection closed")?;
        let mut tmp = [0u8; 16384];
        match s.read(&mut tmp) {
            Ok(0) => Err("HTTP server closed the connection".into()),
            Ok(n) => {
                self.rbuf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) => Err(format!("HTTP read: {e}")),
        }
    }

    /// Reads one response; returns whether the server closes the connection after it.
    fn read_response(&mut self) -> Result<bool, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.rbuf) {
                Ok(httparse::Status::Complete(head)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut clen: Option<usize> = None;
                    let mut chunked = false;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        let v = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            clen = v.trim().parse().ok();
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = v.to_ascii_lowercase().contains("chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = v.to_ascii_lowercase().contains("close");
                        }
                    }
                    *self.statuses.entry(status).or_default() += 1;
                    self.rbuf.drain(..head);
                    if chunked {
                        self.skip_chunked()?;
                    } else {
                        let len = clen.unwrap_or(0);
                        while self.rbuf.len() < len {
                            self.fill()?;
                        }
                        self.rbuf.drain(..len);
                    }
                    if close {
                        self.no_pipeline = true;
                    }
                    return Ok(close);
                }
                Ok(httparse::Status::Partial) => self.fill()?,
                Err(e) => return Err(format!("bad HTTP response: {e}")),
            }
        }
    }

    fn skip_chunked(&mut self) -> Result<(), String> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.rbuf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.rbuf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            while self.rbuf.len() < line_end + 2 + size + 2 {
                self.fill()?;
            }
            self.rbuf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(());
            }
        }
    }

    fn stats(&self) -> Value {
        let st: Map<String, Value> = self
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"statuses": st, "round_trips": self.round_trips, "connections": self.connections, "keep_alive": !self.no_pipeline})
    }

    fn check_statuses(&self) -> Result<(), String> {
        let bad: Vec<String> = self
            .statuses
            .iter()
            .filter(|(k, _)| !(200..300).contains(*k))
            .map(|(k, v)| format!("{v}× {k}"))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("publisher got non-2xx answers: {}", bad.join(", ")))
        }
    }
}

/// `http:URL`: POSTs each payload as the raw body (nchan's publisher endpoint).
struct HttpPublisher {
    client: HttpClient,
    head_prefix: String,
    buf: Vec<u8>,
}

impl HttpPublisher {
    fn new(url: &str, channel: &str) -> Result<HttpPublisher, String> {
        let u = parse_url(url, "http", 80)?;
        let path = if u.path == "/" || u.path.is_empty() {
            format!("/pub/{channel}")
        } else {
            u.path.replace("{channel}", channel)
        };
        Ok(HttpPublisher {
            client: HttpClient::new(u.addr),
            head_prefix: format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: ",
                u.host_header
            ),
            buf: Vec::new(),
        })
    }
}

impl Publisher for HttpPublisher {
    fn max_batch(&self) -> usize {
        64
    }
    fn publish(&mut self, datas: &[Vec<u8>]) -> Result<(), String> {
        self.buf.clear();
        let mut bounds = Vec::with_capacity(datas.len() + 1);
        for d in datas {
            bounds.push(self.buf.len());
            self.buf.extend_from_slice(self.head_prefix.as_bytes());
            write!(self.buf, "{}\r\n\r\n", d.len()).unwrap();
            self.buf.extend_from_slice(d);
        }
        let reqs = std::mem::take(&mut self.buf);
        bounds.push(reqs.len());
        let r = self.client.round_trip(&reqs, &bounds);
        self.buf = reqs;
        r
    }
    fn stats(&self) -> Value {
        let mut v = self.client.stats();
        v["kind"] = json!("http");
        v
    }
    fn check(&self) -> Result<(), String> {
        self.client.check_statuses()
    }
}

/// `pusher-rest:URL`: Pusher HTTP API `POST {prefix}/apps/{id}/events`, signed per the public docs
/// ("HTTP API reference" → Authentication): auth_key, auth_timestamp, auth_version=1.0, body_md5,
/// auth_signature = hex(HMAC-SHA256(secret, "POST\n{path}\n{sorted query}")).
struct PusherRestPublisher {
    client: HttpClient,
    host_header: String,
    path: String,
    channel_json: String,
    event_json: String,
    key: String,
    secret: String,
    buf: Vec<u8>,
}

impl PusherRestPublisher {
    fn new(
        url: &str,
        channel: &str,
        event: &str,
        app_id: &str,
        key: &str,
        secret: &str,
    ) -> Result<Self, String> {
        let u = parse_url(url, "http", 80)?;
        let prefix = u.path.trim_end_matches('/');
        Ok(PusherRestPublisher {
            client: HttpClient::new(u.addr),
            host_header: u.host_header,
            path: format!("{prefix}/apps/{app_id}/events"),
            channel_json: serde_json::to_string(channel).unwrap(),
            event_json: serde_json::to_string(event).unwrap(),
            key: key.to_string(),
            secret: secret.to_string(),
            buf: Vec::new(),
        })
    }
}

fn pusher_rest_query(secret: &str, key: &str, path: &str, body: &[u8], timestamp: u64) -> String {
    use md5::Md5;
    let body_md5 = hex::encode(Md5::digest(body));
    let query =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let to_sign = format!("POST\n{path}\n{query}");
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(to_sign.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    format!("{query}&auth_signature={sig}")
}

impl Publisher for PusherRestPublisher {
    fn max_batch(&self) -> usize {
        64
    }
    fn publish(&mut self, datas: &[Vec<u8>]) -> Result<(), String> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.buf.clear();
        let mut bounds = Vec::with_capacity(datas.len() + 1);
        for d in datas {
            bounds.push(self.buf.len());
            let mut body = format!(
                "{{\"name\":{},\"channels\":[{}],\"data\":\"",
                self.event_json, self.channel_json
            )
            .into_bytes();
            push_json_escaped(&mut body, d);
            body.extend_from_slice(b"\"}");
            let q = pusher_rest_query(&self.secret, &self.key, &self.path, &body, ts);
            write!(
                self.buf,
                "POST {}?{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.path,
                q,
                self.host_header,
                body.len(),
            )
            .unwrap();
            self.buf.extend_from_slice(&body);
        }
        let reqs = std::mem::take(&mut self.buf);
        bounds.push(reqs.len());
        let r = self.client.round_trip(&reqs, &bounds);
        self.buf = reqs;
        r
    }
    fn stats(&self) -> Value {
        let mut v = self.client.stats();
        v["kind"] = json!("pusher-rest");
        v
    }
    fn check(&self) -> Result<(), String> {
        self.client.check_statuses()
    }
}

fn make_payload(buf: &mut Vec<u8>, seq: u64, ts: u64, size: usize) {
    buf.clear();
    write!(buf, "{seq} {ts} ").unwrap();
    while buf.len() < size {
        buf.push(b'x');
    }
}

// ------------------------------------------------------------------------------------------------
// Laravel-style payloads (`fanout --laravel`)
// ------------------------------------------------------------------------------------------------

const FIRST_NAMES: &[&str] = &[
    "Maria", "James", "Sofia", "Lucas", "Emma", "Noah", "Olivia", "Liam", "Mila", "Daan", "Julia",
    "Mohammed", "Anna", "Thomas", "Fatima", "Lars", "Chloe", "Mateo", "Hannah", "Yusuf",
];
const LAST_NAMES: &[&str] = &[
    "Lopez", "Smith", "de Vries", "Jansen", "Muller", "Rossi", "Dubois", "Kowalski", "Nguyen",
    "Bakker", "Garcia", "Visser", "Schmidt", "Moreau", "Novak", "Peeters", "Silva", "Berg",
];
/// A catalogue: name, SKU, price in cents.
const PRODUCTS: &[(&str, &str, u64)] = &[
    ("Wireless Mouse", "WM-2231-BK", 1999),
    ("Mechanical Keyboard", "KB-8812-US", 8950),
    ("USB-C Charger 65W", "CH-0065-WH", 3495),
    ("Noise Cancelling Headphones", "HP-7700-BK", 19900),
    ("27\" 4K Monitor", "MN-2704-SL", 32900),
    ("Laptop Stand, Aluminium", "LS-1020-AL", 4450),
    ("HDMI Cable 2m", "HC-0200-BK", 899),
    ("Webcam 1080p", "WC-1080-BK", 5995),
    ("Desk Lamp LED", "DL-0450-WH", 2750),
    ("Ergonomic Office Chair", "OC-3300-GR", 24900),
    ("Portable SSD 1TB", "SD-1000-BL", 10990),
    ("Bluetooth Speaker", "BS-0360-RD", 6490),
    ("Phone Case \"Slim\"", "PC-0015-CL", 1495),
    ("Smart Watch Strap", "WS-0022-BK", 1990),
];
/// An order that shipped: most of its lines did.
const ITEM_STATUSES: &[&str] = &[
    "shipped",
    "shipped",
    "shipped",
    "shipped",
    "shipped",
    "shipped",
    "shipped",
    "backordered",
    "cancelled",
    "shipped",
];
const CARRIERS: &[&str] = &["DHL", "UPS", "FedEx", "PostNL", "GLS", "DPD"];
const CITIES: &[(&str, &str)] = &[
    ("Amsterdam", "NL"),
    ("Berlin", "DE"),
    ("Lyon", "FR"),
    ("Milano", "IT"),
    ("Kraków", "PL"),
    ("Antwerpen", "BE"),
    ("Porto", "PT"),
    ("Göteborg", "SE"),
];
const STREETS: &[&str] = &[
    "Keizersgracht",
    "Hauptstraße",
    "Rue de la République",
    "Via Roma",
    "Main Street",
    "Kerkstraat",
];
const NOTE_WORDS: &[&str] = &[
    "please",
    "leave",
    "the",
    "parcel",
    "at",
    "back",
    "door",
    "ring",
    "twice",
    "gift",
    "wrap",
    "no",
    "invoice",
    "in",
    "box",
    "deliver",
    "after",
    "5pm",
    "neighbour",
    "number",
    "call",
    "first",
];

fn pick(rng: &mut Rng, list: &[&'static str]) -> &'static str {
    list[(rng.next() % list.len() as u64) as usize]
}

/// `2025-03-14T09:31:02.000000Z` (how Laravel serialises dates) for Unix time `secs`.
fn iso_time(buf: &mut Vec<u8>, secs: u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    write!(
        buf,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
    .unwrap();
}

/// A string as JSON text, quotes included.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    push_json_escaped(buf, s.as_bytes());
    buf.push(b'"');
}

/// Appends `d` escaped for the inside of a JSON string.
fn push_json_escaped(out: &mut Vec<u8>, d: &[u8]) {
    for &c in d {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => write!(out, "\\u{c:04x}").unwrap(),
            _ => out.push(c),
        }
    }
}

struct Item {
    id: u64,
    product: usize,
    price: u64,
    qty: u64,
    status: &'static str,
}

/// One order, drawn from `rng`: what stays the same while items are dropped to fit.
struct Order {
    id: u64,
    customer: u64,
    first: &'static str,
    last: &'static str,
    city: usize,
    street: &'static str,
    house: u64,
    carrier: &'static str,
    tracking: u64,
    created: u64,
    shipped: u64,
    items: Vec<Item>,
}

impl Order {
    fn draw(rng: &mut Rng) -> Order {
        let id = 100_000 + rng.next() % 900_000;
        let created = 1_735_689_600 + rng.next() % (365 * 86400);
        let n = 10 + (rng.next() % 11) as usize;
        let first_item = 1_000_000 + rng.next() % 9_000_000;
        let items = (0..n as u64)
            .map(|i| {
                let product = (rng.next() % PRODUCTS.len() as u64) as usize;
                let list = PRODUCTS[product].2;
                Item {
                    id: first_item + i,
                    product,
                    // One line in ten is discounted; most lines are of one piece.
                    price: if rng.next().is_multiple_of(10) {
                        list * 9 / 10
                    } else {
                        list
                    },
                    qty: [1, 1, 1, 1, 1, 2, 2, 3][(rng.next() % 8) as usize],
                    status: pick(rng, ITEM_STATUSES),
                }
            })
            .collect();
        Order {
            id,
            customer: 1000 + rng.next() % 99_000,
            first: pick(rng, FIRST_NAMES),
            last: pick(rng, LAST_NAMES),
            city: (rng.next() % CITIES.len() as u64) as usize,
            street: pick(rng, STREETS),
            house: 1 + rng.next() % 300,
            carrier: pick(rng, CARRIERS),
            tracking: rng.next() % 10_000_000_000_000,
            created,
            shipped: created + 3600 + rng.next() % (3 * 86400),
            items,
        }
    }

    /// The event as JSON, with its first `n` items and `notes` as the customer's note.
    fn write(&self, buf: &mut Vec<u8>, n: usize, notes: &str) {
        let (city, country) = CITIES[self.city];
        write!(buf, "{{\"event\":\"App\\\\Events\\\\OrderShipped\",\"data\":{{\"order\":{{\"id\":{},\"number\":\"ORD-2025-{:06}\",\"status\":\"shipped\",\"currency\":\"EUR\",\"customer\":{{\"id\":{},\"name\":", self.id, self.id, self.customer).unwrap();
        json_str(buf, &format!("{} {}", self.first, self.last));
        let email = format!("{}.{}@example.com", self.first, self.last.replace(' ', ""));
        buf.extend_from_slice(b",\"email\":");
        json_str(buf, &email.to_lowercase());
        buf.extend_from_slice(b"},\"shipping_address\":{\"line1\":");
        json_str(buf, &format!("{} {}", self.street, self.house));
        buf.extend_from_slice(b",\"city\":");
        json_str(buf, city);
        write!(buf, ",\"country\":\"{country}\"}},\"items\":[").unwrap();
        let mut subtotal = 0;
        for (i, it) in self.items.iter().take(n).enumerate() {
            let (name, sku, _) = PRODUCTS[it.product];
            let line = it.price * it.qty;
            subtotal += line;
            let comma = if i == 0 { "" } else { "," };
            write!(
                buf,
                "{comma}{{\"id\":{},\"order_id\":{},\"sku\":\"{sku}\",\"name\":",
                it.id, self.id
            )
            .unwrap();
            json_str(buf, name);
            write!(
                buf,
                ",\"price\":\"{}.{:02}\",\"quantity\":{},\"status\":\"{}\"}}",
                it.price / 100,
                it.price % 100,
                it.qty,
                it.status
            )
            .unwrap();
        }
        let tax = subtotal * 21 / 121;
        write!(buf, "],\"totals\":{{\"subtotal\":\"{}.{:02}\",\"shipping\":\"4.95\",\"tax\":\"{}.{:02}\",\"grand_total\":\"{}.{:02}\"}},\"shipment\":{{\"carrier\":\"{}\",\"tracking_number\":\"JD{:014}\",\"shipped_at\":\"",
            subtotal / 100, subtotal % 100, tax / 100, tax % 100, (subtotal + 495) / 100, (subtotal + 495) % 100, self.carrier, self.tracking).unwrap();
        iso_time(buf, self.shipped);
        buf.extend_from_slice(b"\"},\"notes\":");
        json_str(buf, notes);
        buf.extend_from_slice(b",\"created_at\":\"");
        iso_time(buf, self.created);
        buf.extend_from_slice(b"\",\"updated_at\":\"");
        iso_time(buf, self.shipped);
        buf.extend_from_slice(b"\"}},\"socket\":null}");
    }
}

/// `"<seq> <ts> "` and a Laravel broadcast event (`App\Events\OrderShipped`) drawn from `rng`:
/// exactly `size` bytes (not below the header), valid JSON when `size` leaves room for an
/// order without items (about 700 bytes), cut otherwise. Items are dropped from the end while
/// the event is too long; the customer's note takes up what is left.
fn make_laravel_payload(buf: &mut Vec<u8>, seq: u64, ts: u64, size: usize, rng: &mut Rng) {
    buf.clear();
    write!(buf, "{seq} {ts} ").unwrap();
    let head = buf.len();
    let order = Order::draw(rng);
    let mut n = order.items.len();
    loop {
        buf.truncate(head);
        order.write(buf, n, "");
        if buf.len() <= size || n == 0 {
            break;
        }
        n -= 1;
    }
    if buf.len() > size {
        // No room for even an order without items: cut, on a character boundary.
        buf.truncate(size.max(head));
        while std::str::from_utf8(&buf[head..]).is_err() {
            buf.pop();
        }
        buf.resize(size.max(head), b' ');
        return;
    }
    let gap = size - buf.len();
    if gap > 0 {
        let mut notes = String::with_capacity(gap + 16);
        while notes.len() < gap {
            if !notes.is_empty() {
                notes.push(' ');
            }
            notes.push_str(pick(rng, NOTE_WORDS));
        }
        notes.truncate(gap);
        buf.truncate(head);
        order.write(buf, n, &notes);
    }
    debug_assert_eq!(buf.len(), size);
}

struct PublishReport {
    sent: u64,
    calls: u64,
    max_batch: usize,
    max_lag_ns: u64,
    start_ns: u64,
    end_ns: u64,
    error: Option<String>,
}

/// Token-bucket pacing: message k is due at start + k/rate; when behind, everything due goes out in
/// one call (up to the publisher's batch limit).
fn run_publisher(
    p: &mut dyn Publisher,
    rate: f64,
    messages: u64,
    size: usize,
    laravel: bool,
    shared: &Shared,
    deadline: Instant,
) -> PublishReport {
    let mut rng = Rng::new(now_ns());
    let interval_ns = (1e9 / rate.max(0.001)) as u64;
    let start = now_ns();
    let mut sent = 0u64;
    let mut rep = PublishReport {
        sent: 0,
        calls: 0,
        max_batch: 0,
        max_lag_ns: 0,
        start_ns: start,
        end_ns: start,
        error: None,
    };
    let mut batch: Vec<Vec<u8>> = (0..p.max_batch())
        .map(|_| Vec::with_capacity(size + 32))
        .collect();
    while sent < messages {
        let now = now_ns();
        let due = ((now - start) / interval_ns + 1).min(messages);
        if due <= sent {
            let next = start + sent * interval_ns;
            let wait = next.saturating_sub(now);
            if wait > 50_000 {
                thread::sleep(Duration::from_nanos(wait - 20_000));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        if Instant::now() > deadline {
            rep.error = Some("publish deadline passed".into());
            break;
        }
        rep.max_lag_ns = rep
            .max_lag_ns
            .max(now.saturating_sub(start + sent * interval_ns));
        let n = ((due - sent) as usize).min(batch.len());
        let ts = now_ns();
        for (i, b) in batch.iter_mut().take(n).enumerate() {
            if laravel {
                make_laravel_payload(b, sent + i as u64, ts, size, &mut rng);
            } else {
                make_payload(b, sent + i as u64, ts, size);
            }
        }
        if let Err(e) = p.publish(&batch[..n]) {
            rep.error = Some(e);
            break;
        }
        rep.calls += 1;
        rep.max_batch = rep.max_batch.max(n);
        sent += n as u64;
        shared.published.store(sent, Relaxed);
    }
    rep.sent = sent;
    rep.end_ns = now_ns();
    rep
}

// ------------------------------------------------------------------------------------------------
// Orchestration
// ------------------------------------------------------------------------------------------------

struct Run {
    common: Common,
    kind: Kind,
    target: Url,
    /// Every `--url` (the first is `target`).
    targets: Vec<(SocketAddr, String)>,
    base: String,
    ws_path: String,
    shared: Arc<Shared>,
    counters: Vec<Arc<Counters>>,
    handles: Vec<thread::JoinHandle<WorkerResult>>,
    progress: Option<thread::JoinHandle<()>>,
    t0: Instant,
}

struct Totals {
    r: WorkerResult,
    lat: Hist,
    hs: Hist,
}

impl Run {
    fn new(common: Common, kind: Kind, conns: usize, messages: u64) -> Result<Run, String> {
        Run::new_sized(common, kind, conns, messages, 64)
    }

    fn new_sized(
        common: Common,
        kind: Kind,
        conns: usize,
        messages: u64,
        req_size: usize,
    ) -> Result<Run, String> {
        if common.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let first = common.url.first().ok_or("--url is required")?;
        let target = parse_url(first, "ws", 80)?;
        let mut targets = Vec::new();
        for u in &common.url {
            let t = parse_url(u, "ws", 80)?;
            if t.path != target.path {
                return Err(format!(
                    "--url {u}: every URL must have the path {}",
                    target.path
                ));
            }
            targets.push((t.addr, t.host_header));
        }
        let base = base_path(&target.path);
        let ws_path = match common.protocol {
            Protocol::Channel => target.path.clone(),
            Protocol::Pusher => format!(
                "{base}/app/{}?protocol=7&client=ferrocast-loadgen&version=0.1&flash=false",
                common.app_key
            ),
            Protocol::Nchan => format!("{base}/sub/{}", common.channel),
            Protocol::Raw => target.path.clone(),
        };
        let limit = raise_nofile();
        // One descriptor per connection (connect mode: per concurrent cycle), plus a margin.
        let need = conns as u64 + 64;
        if need > limit {
            return Err(format!(
                "{} connections need about {need} open files; RLIMIT_NOFILE is {limit} (hard limit). Raise it (ulimit -Hn / LimitNOFILE) or use fewer connections",
                conns
            ));
        }
        let sources: Vec<Ipv4Addr> = if target.addr.is_ipv4() {
            (0..common.source_addrs.min(253))
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
                .collect()
        } else {
            Vec::new()
        };
        let channel_json = serde_json::to_string(&common.channel).unwrap();
        let subscribe_msg = match common.protocol {
            Protocol::Pusher => format!(
                "{{\"event\":\"pusher:subscribe\",\"data\":{{\"channel\":{channel_json}}}}}"
            ),
            _ => format!("{{\"action\":\"subscribe\",\"channel\":{channel_json}}}"),
        }
        .into_bytes();
        // Exact loss/duplicate detection with a bitmap per subscriber, while it fits in 256 MiB.
        let bitmap = kind == Kind::Fanout
            && (conns as u128) * (messages.div_ceil(64) as u128) * 8 <= 256 << 20;
        let shared = Arc::new(Shared::default());
        let threads = common.threads.min(conns.max(1));
        let mut counters = Vec::new();
        let mut handles = Vec::new();
        for id in 0..threads {
            let c = Arc::new(Counters::default());
            counters.push(c.clone());
            let share = conns / threads + usize::from(id < conns % threads);
            let cfg = WorkerCfg {
                id,
                threads,
                kind,
                protocol: common.protocol,
                conns: share,
                max_pending: (common.max_pending / threads).max(1),
                addrs: targets.iter().map(|t| t.0).collect(),
                sources: sources.clone(),
                host_headers: targets.iter().map(|t| t.1.clone()).collect(),
                extra_headers: common.headers.iter().map(|h| format!("{h}\r\n")).collect(),
                ws_path: ws_path.clone(),
                req_size,
                subscribe_msg: subscribe_msg.clone(),
                messages,
                bitmap,
                connect_timeout_ns: (common.connect_timeout * 1e9) as u64,
                deflate: common.deflate,
                kernel_rx: common.kernel_rx,
                shared: shared.clone(),
                counters: c,
            };
            let h = thread::Builder::new()
                .name(format!("loadgen-{id}"))
                .spawn(move || match Worker::new(cfg) {
                    Ok(w) => w.run(),
                    Err(e) => {
                        eprintln!("loadgen: worker: {e}");
                        WorkerResult::default()
                    }
                })
                .map_err(|e| e.to_string())?;
            handles.push(h);
        }
        let mut run = Run {
            kind,
            target,
            targets,
            base,
            ws_path,
            shared,
            counters,
            handles,
            progress: None,
            t0: Instant::now(),
            common,
        };
        run.start_progress();
        Ok(run)
    }

    fn start_progress(&mut self) {
        if self.common.quiet {
            return;
        }
        let shared = self.shared.clone();
        let counters = self.counters.clone();
        let t0 = self.t0;
        let kind = self.kind;
        self.progress = Some(thread::spawn(move || {
            let mut last = Sums::default();
            let mut last_t = Instant::now();
            loop {
                for _ in 0..20 {
                    if shared.progress_stop.load(Relaxed) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                let s = sum(&counters);
                let dt = last_t.elapsed().as_secs_f64();
                last_t = Instant::now();
                let el = t0.elapsed().as_secs_f64();
                match kind {
                    Kind::Connect => eprintln!(
                        "[{el:6.1}s] handshakes {} (+{:.0}/s) cycles {} failed {} live {}",
                        s.subscribed,
                        (s.subscribed - last.subscribed) as f64 / dt,
                        s.cycles,
                        s.failed,
                        s.live
                    ),
                    _ => eprintln!(
                        "[{el:6.1}s] opened {} connected {} subscribed {} failed {} live {} | published {} received {} (+{:.0}/s)",
                        s.opened,
                        s.connected,
                        s.subscribed,
                        s.failed,
                        s.live,
                        shared.published.load(Relaxed),
                        s.received,
                        (s.received - last.received) as f64 / dt
                    ),
                }
                last = s;
            }
        }));
    }

    fn sums(&self) -> Sums {
        sum(&self.counters)
    }

    /// Waits until every connection is subscribed or failed (or the setup deadline passes).
    fn wait_setup(&self, n: usize) -> (f64, bool) {
        let deadline = Instant::now() + Duration::from_secs_f64(self.common.setup_timeout);
        loop {
            let s = self.sums();
            if (s.subscribed + s.failed) as usize >= n {
                return (self.t0.elapsed().as_secs_f64(), true);
            }
            if Instant::now() > deadline {
                return (self.t0.elapsed().as_secs_f64(), false);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> Totals {
        self.shared.phase.store(PHASE_CLOSE, Relaxed);
        let mut total = WorkerResult {
            per_sub_min: u64::MAX,
            ..Default::default()
        };
        let mut lat = Hist::new();
        let mut hs = Hist::new();
        for h in self.handles.drain(..) {
            let r = h.join().unwrap_or_default();
            if let Some(l) = &r.lat {
                lat.merge(l);
            }
            if let Some(l) = &r.hs {
                hs.merge(l);
            }
            let t = &mut total;
            t.opened += r.opened;
            t.connected += r.connected;
            t.subscribed += r.subscribed;
            t.failed += r.failed;
            for (k, v) in r.fails {
                *t.fails.entry(k).or_default() += v;
            }
            for s in r.samples {
                if t.samples.len() < 8 {
                    t.samples.push(s);
                }
            }
            t.received += r.received;
            t.unique += r.unique;
            t.dups += r.dups;
            t.out_of_order += r.out_of_order;
            t.other += r.other;
            t.server_closed += r.server_closed;
            t.clean_closes += r.clean_closes;
            t.close_timeouts += r.close_timeouts;
            t.aborted += r.aborted;
            t.cycles += r.cycles;
            t.per_sub_min = t.per_sub_min.min(r.per_sub_min);
            t.per_sub_max = t.per_sub_max.max(r.per_sub_max);
            t.subs_complete += r.subs_complete;
            t.lost += r.lost;
            t.wire_bytes += r.wire_bytes;
            t.deflate_agreed += r.deflate_agreed;
            t.deflate_takeover += r.deflate_takeover;
            t.compressed += r.compressed;
            if t.deflate_answer.is_none() {
                t.deflate_answer = r.deflate_answer;
            }
        }
        self.shared.phase.store(PHASE_STOP, Relaxed);
        self.shared.progress_stop.store(true, Relaxed);
        if let Some(p) = self.progress.take() {
            let _ = p.join();
        }
        Totals { r: total, lat, hs }
    }
}

/// Result rows: printed as a table, or as one JSON object with `--json`.
struct Report {
    title: String,
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
}

impl Report {
    fn new(title: &str) -> Report {
        Report {
            title: title.to_string(),
            rows: Vec::new(),
            json: Map::new(),
        }
    }
    fn add(&mut self, key: &str, display: impl Into<String>, value: Value) {
        self.rows.push((key.to_string(), display.into()));
        self.json.insert(slug(key), value);
    }
    fn json_only(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }
    fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", Value::Object(self.json.clone()));
            return;
        }
        let w = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!("== {} ==", self.title);
        for (k, v) in &self.rows {
            println!("  {k:<w$}  {v}");
        }
    }
}

/// "handshake p50/p99" → "handshake_p50_p99" (JSON keys).
fn slug(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "n/a".into())
}

fn add_common(rep: &mut Report, run: &Run, t: &Totals) {
    rep.json_only("mode", json!(format!("{:?}", run.kind).to_lowercase()));
    rep.add(
        "protocol",
        format!("{:?}", run.common.protocol).to_lowercase(),
        json!(format!("{:?}", run.common.protocol).to_lowercase()),
    );
    rep.add(
        "target",
        format!("{}{}", run.target.addr, run.ws_path),
        json!(format!("ws://{}{}", run.target.addr, run.ws_path)),
    );
    if run.targets.len() > 1 {
        let all: Vec<String> = run.targets.iter().map(|t| t.0.to_string()).collect();
        rep.add("targets (round-robin)", all.join(", "), json!(all));
    }
    rep.add(
        "threads",
        run.common.threads.to_string(),
        json!(run.common.threads),
    );
    rep.add("failures", t.r.failed.to_string(), json!(t.r.failed));
    if !t.r.fails.is_empty() {
        let f: Vec<String> = t.r.fails.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        rep.add("failure reasons", f.join(", "), json!(t.r.fails));
        for (i, s) in t.r.samples.iter().enumerate() {
            rep.rows.push((format!("  sample {}", i + 1), s.clone()));
        }
        rep.json_only("failure_samples", json!(t.r.samples));
    }
    rep.add("handshake p50/p99", format!("{} / {}", us(t.hs.quantile(0.5)), us(t.hs.quantile(0.99))), json!({
        "p50_ns": t.hs.quantile(0.5), "p99_ns": t.hs.quantile(0.99), "max_ns": t.hs.max, "n": t.hs.n
    }));
    add_deflate(rep, run, t);
}

/// What permessage-deflate came to: `deflate_offered`, `deflate_agreed` (connections),
/// `deflate_context_takeover` (of those, where the server keeps its window),
/// `compressed_messages`, and the server's answer.
fn add_deflate(rep: &mut Report, run: &Run, t: &Totals) {
    rep.json_only("deflate_offered", json!(run.common.deflate));
    rep.add(
        "deflate agreed",
        format!(
            "{} connections ({}{})",
            t.r.deflate_agreed,
            if run.common.deflate {
                "offered"
            } else {
                "not offered"
            },
            if t.r.deflate_takeover > 0 {
                format!(", {} with context takeover", t.r.deflate_takeover)
            } else {
                String::new()
            }
        ),
        json!(t.r.deflate_agreed),
    );
    rep.json_only("deflate_context_takeover", json!(t.r.deflate_takeover));
    rep.add(
        "compressed messages",
        t.r.compressed.to_string(),
        json!(t.r.compressed),
    );
    if let Some(a) = &t.r.deflate_answer {
        rep.add("deflate answer", a.clone(), json!(a));
    }
}

fn run_idle(a: IdleArgs) -> Result<(), String> {
    let probe = Probe::new(a.common.server_pid.clone());
    let rss0 = probe.rss_kb();
    let cpu0 = probe.cpu_secs();
    let run = Run::new(a.common.clone(), Kind::Idle, a.n, 0)?;
    let (setup_s, complete) = run.wait_setup(a.n);
    let cpu_setup = match (cpu0, probe.cpu_secs()) {
        (Some(c0), Some(c1)) => Some(c1 - c0),
        _ => None,
    };
    let s = run.sums();
    if !complete {
        eprintln!(
            "loadgen: setup deadline passed with {} of {} subscribed",
            s.subscribed, a.n
        );
    }
    thread::sleep(Duration::from_secs(1)); // settle
    let rss1 = probe.rss_kb();
    let up = fetch_up(run.target.addr, &run.target.host_header, &run.base);
    let hold_until = Instant::now() + Duration::from_secs_f64(a.hold);
    while Instant::now() < hold_until {
        thread::sleep(Duration::from_millis(50));
    }
    let t = run_finish(run, |run, t| {
        let mut rep = Report::new("idle");
        add_common(&mut rep, run, t);
        rep.add(
            "connections",
            format!("{} requested, {} subscribed", a.n, t.r.subscribed),
            json!({"requested": a.n, "subscribed": t.r.subscribed}),
        );
        rep.add("setup time", format!("{setup_s:.3} s"), json!(setup_s));
        let rate = t.r.subscribed as f64 / setup_s.max(1e-9);
        rep.add(
            "connect rate",
            format!("{rate:.0} subscribed/s"),
            json!(rate),
        );
        let per_cpu = cpu_setup
            .filter(|c| *c > 0.0)
            .map(|c| t.r.subscribed as f64 / c);
        rep.add(
            "server CPU during setup",
            format!(
                "{} s ({} subscribed connections per server CPU-second)",
                opt_f(cpu_setup, 2),
                opt_f(per_cpu, 0)
            ),
            json!({"cpu_s": cpu_setup, "subscribed_per_cpu_s": per_cpu}),
        );
        rep.add(
            "server RSS before/after",
            format!(
                "{} / {} KiB",
                opt_f(rss0.map(|v| v as f64), 0),
                opt_f(rss1.map(|v| v as f64), 0)
            ),
            json!({"before_kb": rss0, "after_kb": rss1}),
        );
        let per = match (rss0, rss1) {
            (Some(a0), Some(a1)) if t.r.subscribed > 0 => {
                Some((a1 as f64 - a0 as f64) * 1024.0 / t.r.subscribed as f64)
            }
            _ => None,
        };
        rep.add(
            "RSS delta per connection",
            format!("{} bytes", opt_f(per, 0)),
            json!(per),
        );
        if let Some(up) = &up {
            rep.add(
                "server /up connections",
                up["connections"].to_string(),
                up.clone(),
            );
        }
        rep.add("hold", format!("{:.1} s", a.hold), json!(a.hold));
        rep.add(
            "clean closes",
            t.r.clean_closes.to_string(),
            json!(t.r.clean_closes),
        );
        rep.add(
            "unexpected server closes",
            t.r.server_closed.to_string(),
            json!(t.r.server_closed),
        );
        rep
    });
    t.print(a.common.json);
    Ok(())
}

fn run_finish(run: Run, build: impl FnOnce(&Run, &Totals) -> Report) -> Report {
    // `finish` consumes the run; keep what the report needs.
    let view = Run {
        common: run.common.clone(),
        kind: run.kind,
        target: Url {
            addr: run.target.addr,
            host_header: run.target.host_header.clone(),
            path: run.target.path.clone(),
        },
        targets: run.targets.clone(),
        base: run.base.clone(),
        ws_path: run.ws_path.clone(),
        shared: run.shared.clone(),
        counters: Vec::new(),
        handles: Vec::new(),
        progress: None,
        t0: run.t0,
    };
    let totals = run.finish();
    build(&view, &totals)
}

fn up_counter(v: &Option<Value>, key: &str) -> Option<u64> {
    v.as_ref()?.get(key)?.as_u64()
}

/// `/up` of every target, with `write_calls` and `frames_out` summed (None if any is missing).
fn fetch_up_all(run: &Run) -> Option<Value> {
    let mut w = 0;
    let mut f = 0;
    let mut first = None;
    for (addr, host) in &run.targets {
        let up = fetch_up(*addr, host, &run.base);
        w += up_counter(&up, "write_calls")?;
        f += up_counter(&up, "frames_out")?;
        if first.is_none() {
            first = up;
        }
    }
    let mut v = first?;
    v["write_calls"] = json!(w);
    v["frames_out"] = json!(f);
    Some(v)
}

fn run_fanout(a: FanoutArgs) -> Result<(), String> {
    let target = parse_publish(&a.publish)?;
    let mut publisher: Box<dyn Publisher> = match &target {
        PublishTarget::Fifo(p) => Box::new(FifoPublisher::open(
            p,
            &a.common.channel,
            &a.event,
            a.common.protocol == Protocol::Raw,
        )?),
        PublishTarget::Http(u) => Box::new(HttpPublisher::new(u, &a.common.channel)?),
        PublishTarget::PusherRest(u) => Box::new(PusherRestPublisher::new(
            u,
            &a.common.channel,
            &a.event,
            &a.common.app_id,
            &a.common.app_key,
            &a.common.app_secret,
        )?),
    };
    let header_len = format!("{} {} ", a.messages, now_ns()).len();
    if a.size < header_len {
        eprintln!(
            "loadgen: --size {} is below the {header_len}-byte header; payloads will be {header_len} bytes",
            a.size
        );
    }
    let probe = Probe::new(a.common.server_pid.clone());
    let rss0 = probe.rss_kb();
    let run = Run::new(a.common.clone(), Kind::Fanout, a.n, a.messages)?;
    let (setup_s, complete) = run.wait_setup(a.n);
    let subs = run.sums().subscribed;
    if !complete {
        eprintln!(
            "loadgen: setup deadline passed with {subs} of {} subscribed",
            a.n
        );
    }
    thread::sleep(Duration::from_secs_f64(a.settle));
    let rss1 = probe.rss_kb();
    let up0 = fetch_up_all(&run);
    let cpu0 = probe.cpu_secs();
    let expected = subs * a.messages;
    // Publishing must finish within 2x its nominal duration + 30 s, whatever happens.
    let pub_deadline = Instant::now()
        + Duration::from_secs_f64(2.0 * a.messages as f64 / a.rate.max(0.001) + 30.0);
    let prep = run_publisher(
        publisher.as_mut(),
        a.rate,
        a.messages,
        a.size,
        a.laravel,
        &run.shared,
        pub_deadline,
    );
    let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain_timeout);
    let mut drained = false;
    while Instant::now() < drain_deadline {
        if run.sums().unique >= subs * prep.sent {
            drained = true;
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let cpu1 = probe.cpu_secs();
    let window_s = (now_ns() - prep.start_ns) as f64 / 1e9;
    let up1 = fetch_up_all(&run);
    let last_rx = run.sums().last_rx_ns;
    let pub_stats = publisher.stats();
    let pub_check = publisher.check();
    let rep = run_finish(run, |run, t| {
        let mut rep = Report::new("fanout");
        add_common(&mut rep, run, t);
        rep.add(
            "subscribers",
            format!("{} requested, {subs} subscribed", a.n),
            json!({"requested": a.n, "subscribed": subs}),
        );
        rep.add(
            "setup time",
            format!(
                "{setup_s:.3} s ({:.0} subscribed/s)",
                subs as f64 / setup_s.max(1e-9)
            ),
            json!(setup_s),
        );
        let per = match (rss0, rss1) {
            (Some(a0), Some(a1)) if subs > 0 => {
                Some((a1 as f64 - a0 as f64) * 1024.0 / subs as f64)
            }
            _ => None,
        };
        rep.add(
            "server RSS delta per subscriber",
            format!("{} bytes", opt_f(per, 0)),
            json!(per),
        );
        let pub_s = (prep.end_ns - prep.start_ns) as f64 / 1e9;
        rep.add(
            "published",
            format!(
                "{} of {} in {pub_s:.3} s ({:.0}/s offered {:.0}/s), {} calls, max batch {}, max lag {}",
                prep.sent,
                a.messages,
                prep.sent as f64 / pub_s.max(1e-9),
                a.rate,
                prep.calls,
                prep.max_batch,
                us(prep.max_lag_ns)
            ),
            json!({"sent": prep.sent, "requested": a.messages, "seconds": pub_s, "rate_offered": a.rate, "calls": prep.calls,
                   "max_batch": prep.max_batch, "max_lag_ns": prep.max_lag_ns, "size": a.size, "publisher": pub_stats}),
        );
        if let Some(e) = &prep.error {
            rep.add("publish error", e.clone(), json!(e));
        }
        if let Err(e) = &pub_check {
            rep.add("publisher answers", e.clone(), json!(e));
        }
        let expected_all = subs * prep.sent;
        rep.add("delivered/expected", format!("{}/{} ({})", t.r.unique, expected_all, if drained { "complete" } else { "drain timeout" }),
            json!({"delivered": t.r.unique, "expected": expected_all, "expected_offered": expected, "drained": drained}));
        let loss = expected_all.saturating_sub(t.r.unique);
        rep.add(
            "loss",
            format!(
                "{loss} ({:.4} %)",
                100.0 * loss as f64 / expected_all.max(1) as f64
            ),
            json!(loss),
        );
        rep.add(
            "duplicates / out-of-order",
            format!(
                "{} / {}{}",
                t.r.dups,
                t.r.out_of_order,
                if t.r.dups + t.r.out_of_order > 0 && !run_bitmap(subs, a.messages) {
                    " (no bitmap: dup = backwards)"
                } else {
                    ""
                }
            ),
            json!({"duplicates": t.r.dups, "out_of_order": t.r.out_of_order}),
        );
        rep.add("per-subscriber received min/max", format!("{} / {} ({} complete)", if t.r.per_sub_min == u64::MAX { 0 } else { t.r.per_sub_min }, t.r.per_sub_max, t.r.subs_complete),
            json!({"min": if t.r.per_sub_min == u64::MAX { 0 } else { t.r.per_sub_min }, "max": t.r.per_sub_max, "complete": t.r.subs_complete}));
        rep.add("other messages", t.r.other.to_string(), json!(t.r.other));
        add_wire(&mut rep, t);
        let wall = if last_rx > prep.start_ns {
            (last_rx - prep.start_ns) as f64 / 1e9
        } else {
            0.0
        };
        let dps = t.r.unique as f64 / wall.max(1e-9);
        rep.add(
            "deliveries/s (wall)",
            format!("{dps:.0} (first publish → last delivery {wall:.3} s)"),
            json!(dps),
        );
        rep.add("latency p50/p90/p99/max",
            format!("{} / {} / {} / {}", us(t.lat.quantile(0.5)), us(t.lat.quantile(0.9)), us(t.lat.quantile(0.99)), us(t.lat.max)),
            json!({"p50_ns": t.lat.quantile(0.5), "p90_ns": t.lat.quantile(0.9), "p99_ns": t.lat.quantile(0.99), "p999_ns": t.lat.quantile(0.999),
                   "max_ns": t.lat.max, "mean_ns": t.lat.mean(), "n": t.lat.n}));
        let cpu = match (cpu0, cpu1) {
            (Some(a0), Some(a1)) => Some(a1 - a0),
            _ => None,
        };
        rep.add(
            "server CPU (publish window)",
            format!("{} s over {window_s:.3} s", opt_f(cpu, 2)),
            json!({"cpu_s": cpu, "window_s": window_s}),
        );
        let per_cpu = cpu.filter(|c| *c > 0.0).map(|c| t.r.unique as f64 / c);
        rep.add(
            "deliveries per server CPU-second",
            opt_f(per_cpu, 0),
            json!(per_cpu),
        );
        let fpw = match (
            up_counter(&up0, "write_calls"),
            up_counter(&up1, "write_calls"),
            up_counter(&up0, "frames_out"),
            up_counter(&up1, "frames_out"),
        ) {
            (Some(w0), Some(w1), Some(f0), Some(f1)) if w1 > w0 => {
                Some((f1 - f0) as f64 / (w1 - w0) as f64)
            }
            _ => None,
        };
        let writes = match (
            up_counter(&up0, "write_calls"),
            up_counter(&up1, "write_calls"),
        ) {
            (Some(w0), Some(w1)) => Some(w1.saturating_sub(w0)),
            _ => None,
        };
        let cpu_per_write = match (cpu, writes) {
            (Some(c), Some(w)) if w > 0 => Some(c * 1e6 / w as f64),
            _ => None,
        };
        rep.add(
            "server write calls / CPU per write",
            format!(
                "{} / {} µs",
                writes
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| "n/a".into()),
                opt_f(cpu_per_write, 2)
            ),
            json!({"write_calls": writes, "cpu_us_per_write": cpu_per_write}),
        );
        rep.add(
            "frames per write syscall",
            match fpw {
                Some(v) => format!("{v:.2}"),
                None => "n/a (server /up has no write_calls/frames_out)".into(),
            },
            json!(fpw),
        );
        rep.add(
            "server RSS before/after connect",
            format!(
                "{} / {} KiB",
                opt_f(rss0.map(|v| v as f64), 0),
                opt_f(rss1.map(|v| v as f64), 0)
            ),
            json!({"before_kb": rss0, "after_kb": rss1}),
        );
        rep.add(
            "unexpected server closes",
            t.r.server_closed.to_string(),
            json!(t.r.server_closed),
        );
        rep
    });
    rep.print(a.common.json);
    if let Some(e) = prep.error {
        return Err(e);
    }
    pub_check
}

/// Bytes the subscribers read from their sockets, in all and per delivery (unique message
/// received by one subscriber).
fn add_wire(rep: &mut Report, t: &Totals) {
    rep.add(
        "wire bytes received",
        t.r.wire_bytes.to_string(),
        json!(t.r.wire_bytes),
    );
    let per = (t.r.unique > 0).then(|| t.r.wire_bytes as f64 / t.r.unique as f64);
    rep.add("wire bytes per delivery", opt_f(per, 1), json!(per));
}

fn run_bitmap(subs: u64, messages: u64) -> bool {
    (subs as u128) * (messages.div_ceil(64) as u128) * 8 <= 256 << 20
}

fn run_connect(a: ConnectArgs) -> Result<(), String> {
    let probe = Probe::new(a.common.server_pid.clone());
    let cpu0 = probe.cpu_secs();
    let ccpu0 = probe.children_cpu_secs();
    let run = Run::new(a.common.clone(), Kind::Connect, a.c, 0)?;
    let until = Instant::now() + Duration::from_secs_f64(a.duration);
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    let s_end = run.sums();
    let cpu1 = probe.cpu_secs();
    let ccpu1 = probe.children_cpu_secs();
    let dur = run.t0.elapsed().as_secs_f64();
    let rep = run_finish(run, |run, t| {
        let mut rep = Report::new("connect");
        add_common(&mut rep, run, t);
        rep.add("concurrency", a.c.to_string(), json!(a.c));
        rep.add("duration", format!("{dur:.3} s"), json!(dur));
        rep.add("attempts", t.r.opened.to_string(), json!(t.r.opened));
        rep.add(
            "handshakes (subscribed)",
            format!(
                "{} ({} within the duration)",
                t.r.subscribed, s_end.subscribed
            ),
            json!(s_end.subscribed),
        );
        let hps = s_end.subscribed as f64 / dur.max(1e-9);
        rep.add("handshakes/s", format!("{hps:.0}"), json!(hps));
        rep.add(
            "completed cycles (clean close)",
            t.r.cycles.to_string(),
            json!(t.r.cycles),
        );
        let cpu = match (cpu0, cpu1) {
            (Some(a0), Some(a1)) => Some(a1 - a0),
            _ => None,
        };
        rep.add("server CPU", format!("{} s", opt_f(cpu, 2)), json!(cpu));
        let per = cpu
            .filter(|c| *c > 0.0)
            .map(|c| s_end.subscribed as f64 / c);
        rep.add(
            "handshakes per server CPU-second",
            opt_f(per, 0),
            json!(per),
        );
        let ccpu = match (ccpu0, ccpu1) {
            (Some(a0), Some(a1)) => Some(a1 - a0),
            _ => None,
        };
        rep.add(
            "server children CPU (forked handlers)",
            format!("{} s", opt_f(ccpu, 2)),
            json!(ccpu),
        );
        rep.add(
            "aborted at end / close timeouts",
            format!("{} / {}", t.r.aborted, t.r.close_timeouts),
            json!({"aborted": t.r.aborted, "close_timeouts": t.r.close_timeouts}),
        );
        rep
    });
    rep.print(a.common.json);
    Ok(())
}

fn run_route(a: RouteArgs) -> Result<(), String> {
    let probe = Probe::new(a.common.server_pid.clone());
    let run = Run::new_sized(a.common.clone(), Kind::Route, a.c, 0, a.size)?;
    let (setup_s, complete) = run.wait_setup(a.c);
    if !complete {
        eprintln!("loadgen: setup deadline passed");
    }
    // The window starts once every connection is open (each has its first request out).
    let s0 = run.sums();
    let cpu0 = probe.cpu_secs();
    let ccpu0 = probe.children_cpu_secs();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(a.duration);
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    let s1 = run.sums();
    let cpu1 = probe.cpu_secs();
    let ccpu1 = probe.children_cpu_secs();
    let dur = t0.elapsed().as_secs_f64();
    let rep = run_finish(run, |run, t| {
        let mut rep = Report::new("route");
        add_common(&mut rep, run, t);
        rep.add(
            "connections",
            format!(
                "{} requested, {} open (setup {setup_s:.3} s)",
                a.c, s0.subscribed
            ),
            json!({"requested": a.c, "open": s0.subscribed}),
        );
        rep.add("request size", format!("{} B", a.size), json!(a.size));
        rep.add("window", format!("{dur:.3} s"), json!(dur));
        let n = s1.unique - s0.unique;
        rep.add("replies in window", n.to_string(), json!(n));
        let rps = n as f64 / dur.max(1e-9);
        rep.add("requests/s", format!("{rps:.0}"), json!(rps));
        rep.add(
            "replies total (incl. setup and drain)",
            t.r.unique.to_string(),
            json!(t.r.unique),
        );
        rep.add(
            "unexpected replies",
            t.r.other.to_string(),
            json!(t.r.other),
        );
        if !t.r.samples.is_empty() {
            rep.json_only("samples", json!(t.r.samples));
        }
        rep.add("latency p50/p90/p99/max",
            format!("{} / {} / {} / {}", us(t.lat.quantile(0.5)), us(t.lat.quantile(0.9)), us(t.lat.quantile(0.99)), us(t.lat.max)),
            json!({"p50_ns": t.lat.quantile(0.5), "p90_ns": t.lat.quantile(0.9), "p99_ns": t.lat.quantile(0.99),
                   "max_ns": t.lat.max, "mean_ns": t.lat.mean(), "n": t.lat.n}));
        let cpu = match (cpu0, cpu1) {
            (Some(a0), Some(a1)) => Some(a1 - a0),
            _ => None,
        };
        let ccpu = match (ccpu0, ccpu1) {
            (Some(a0), Some(a1)) => Some(a1 - a0),
            _ => None,
        };
        rep.add(
            "server CPU / children CPU",
            format!("{} s / {} s", opt_f(cpu, 2), opt_f(ccpu, 2)),
            json!({"server_cpu_s": cpu, "children_cpu_s": ccpu}),
        );
        let per = cpu.filter(|c| *c > 0.0).map(|c| n as f64 / c);
        rep.add("requests per server CPU-second", opt_f(per, 0), json!(per));
        rep.add(
            "unexpected server closes",
            t.r.server_closed.to_string(),
            json!(t.r.server_closed),
        );
        rep
    });
    rep.print(a.common.json);
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.mode {
        Mode::Idle(a) => run_idle(a),
        Mode::Fanout(a) => run_fanout(a),
        Mode::Connect(a) => run_connect(a),
        Mode::Route(a) => run_route(a),
    };
    if let Err(e) = r {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast::deflate::Compressor;

    #[test]
    fn laravel_payloads_are_exact_valid_and_vary() {
        let mut rng = Rng::new(7);
        let mut buf = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for size in [700usize, 1024, 2048, 4096, 16384] {
            for seq in 0..50 {
                make_laravel_payload(&mut buf, seq, 123_456_789, size, &mut rng);
                assert_eq!(buf.len(), size);
                assert_eq!(parse_bench(&buf, Protocol::Raw), Some((seq, 123_456_789)));
                let body = &buf[find(&buf, b" 123456789 ").unwrap() + 11..];
                let v: Value = serde_json::from_slice(body).expect("valid JSON");
                assert_eq!(v["event"], "App\\Events\\OrderShipped");
                let items = v["data"]["order"]["items"].as_array().unwrap().len();
                assert!(size < 2048 || items >= 9, "{items} items in {size} bytes");
                seen.insert(body.to_vec());
            }
        }
        assert_eq!(seen.len(), 250);
        // Tiny sizes are cut, still exact and still UTF-8.
        make_laravel_payload(&mut buf, 1, 2, 100, &mut rng);
        assert_eq!(buf.len(), 100);
        assert!(std::str::from_utf8(&buf).is_ok());
    }

    #[test]
    fn laravel_payloads_compress_like_json() {
        let mut rng = Rng::new(11);
        let mut buf = Vec::new();
        let mut z = Compressor::default();
        let (mut plain, mut packed) = (0, 0);
        for seq in 0..100 {
            make_laravel_payload(&mut buf, seq, now_ns(), 2048, &mut rng);
            plain += buf.len();
            packed += z.compress(&buf).unwrap().len();
        }
        // Each message compressed on its own, as a server without context takeover does.
        let ratio = plain as f64 / packed as f64;
        assert!((2.5..=6.0).contains(&ratio), "ratio {ratio:.2}");
    }

    #[test]
    fn inflates_with_and_without_context_takeover() {
        let mut rng = Rng::new(3);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        // No context takeover: what ferrocast sends, one inflater reset per message.
        let mut c = Compressor::default();
        let mut z = Decompress::new(false);
        for seq in 0..20 {
            make_laravel_payload(&mut buf, seq, 1, 2048, &mut rng);
            z.reset(false);
            inflate(&mut z, &c.compress(&buf).unwrap(), &mut out).unwrap();
            assert_eq!(out, buf);
        }
        // Context takeover: one stream, each message sync-flushed, its tail taken off.
        let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut z = Decompress::new(false);
        for seq in 0..20 {
            make_laravel_payload(&mut buf, seq, 1, 2048, &mut rng);
            let mut m = Vec::with_capacity(4096);
            c.compress_vec(&buf, &mut m, flate2::FlushCompress::Sync)
                .unwrap();
            assert!(m.ends_with(&DEFLATE_TAIL));
            m.truncate(m.len() - 4);
            inflate(&mut z, &m, &mut out).unwrap();
            assert_eq!(out, buf);
        }
        assert!(inflate(&mut Decompress::new(false), b"\xff\xff\xff", &mut out).is_err());
    }

    #[test]
    fn negotiation_follows_the_answer() {
        assert!(matches!(
            negotiate(
                true,
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ),
            Ok(Zx::Shared)
        ));
        assert!(matches!(
            negotiate(true, "permessage-deflate; client_max_window_bits=15"),
            Ok(Zx::Own(_))
        ));
        assert!(negotiate(false, "permessage-deflate").is_err());
        assert!(negotiate(true, "x-webkit-deflate-frame").is_err());
        assert!(negotiate(true, "permessage-deflate; foo").is_err());
        // RSV1 only where agreed, never on control frames.
        assert!(parse_frame(&[0xc1, 0x00], false).is_err());
        assert!(parse_frame(&[0xc1, 0x00], true).unwrap().unwrap().rsv1);
        assert!(parse_frame(&[0xc9, 0x00], true).is_err());
        assert!(parse_frame(&[0xa1, 0x00], true).is_err());
    }
}
