//! Fault tests against the real binary (loopback only, every loop bounded in count and time):
//!
//! - 2 000 clients that never read while a publisher floods a channel: the server's peak RSS stays
//!   under a bound computed from `outbound_queue_bytes`, the slow clients are closed, and a healthy
//!   subscriber receives every message in order;
//! - connection churn: 20 000 connect/subscribe/close cycles, then descriptors, sessions, channels
//!   and RSS are back to their baseline;
//! - a second server on the same FIFO refuses to start; a stale FIFO left by a `kill -9`'d server is
//!   reused;
//! - SIGTERM under load: every line written to the FIFO before the signal reaches every client
//!   before its close 1001;
//! - slowloris: a client sending one byte per second is cut after `handshake_timeout_secs`.
//!
//! No assertion is on elapsed time: every wait is for an event, with a generous deadline. The
//! heavy tests take a process-wide lock so two of them never run at once on a 2-core machine.
mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read fd dir")
        .count()
}

fn health(s: &Server) -> Value {
    s.get("/up").json()
}

fn ws_connections(s: &Server) -> u64 {
    health(s)["connections"].as_u64().expect("connections")
}

fn server_addr(s: &Server) -> SocketAddrV4 {
    SocketAddrV4::new(s.host().parse().expect("IPv4 host"), s.port())
}

/// Source address number `i` in 127.0.0.2..=127.0.0.254.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 253) as u8)
}

fn subscribe_frame(channel: &str) -> Vec<u8> {
    client_frame(
        true,
        OP_TEXT,
        json!({"action": "subscribe", "channel": channel})
            .to_string()
            .as_bytes(),
    )
}

/// Server frames in `bytes` (unmasked), as (opcode, payload); stops at an incomplete tail.
fn server_frames(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while bytes.len() >= i + 2 {
        let opcode = bytes[i] & 0x0f;
        let mut len = (bytes[i + 1] & 0x7f) as usize;
        let mut h = 2;
        if len == 126 {
            if bytes.len() < i + 4 {
                break;
            }
            len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
            h = 4;
        } else if len == 127 {
            if bytes.len() < i + 10 {
                break;
            }
            len = u64::from_be_bytes(bytes[i + 2..i + 10].try_into().unwrap()) as usize;
            h = 10;
        }
        if bytes.len() < i + h + len {
            break;
        }
        out.push((opcode, &bytes[i + h..i + h + len]));
        i += h + len;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 2 000 clients that never read, one publisher flooding their channel
// ---------------------------------------------------------------------------------------------

#[test]
fn flood_with_2000_clients_that_never_read() {
    let _g = heavy();
    let nofile = raise_nofile();
    const SLOW: usize = 2000;
    const Q: usize = 64 * 1024; // outbound_queue_bytes
    const PAYLOAD: usize = 1000;
    const BATCH: usize = 16; // ~16 KiB per FIFO write: under Q, so a reader keeping up stays under it
    const MAX_MESSAGES: usize = 8192; // ~8 MiB at most: 128 × Q
    assert!(
        nofile > (SLOW as u64) * 2 + 200,
        "RLIMIT_NOFILE hard limit {nofile} too low for {SLOW} clients"
    );
    let s = Server::start(
        &[
            "--set",
            &format!("outbound_queue_bytes={Q}"),
            "--set",
            "ping_interval_secs=600",
            "--set",
            "activity_timeout_secs=1200",
        ],
        &[],
    );
    let addr = server_addr(&s);

    // The slow clients: a 4 KiB receive buffer, handshake, subscribe, read the reply, then never
    // read again. Connected from 8 threads.
    let slow: Vec<RawConn> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                scope.spawn(move || {
                    let mut v = Vec::new();
                    for i in 0..SLOW / 8 {
                        let n = t * (SLOW / 8) + i;
                        let stream = connect_from(source(n), addr, Some(4096)).expect("connect");
                        let mut c = RawConn::from_stream(stream);
                        c.handshake("/ws");
                        c.send(&subscribe_frame("flood")).expect("send subscribe");
                        let reply: Value = serde_json::from_str(&c.recv_text(T)).unwrap();
                        assert_eq!(reply["event"], "subscribed", "{reply}");
                        v.push(c);
                    }
                    v
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("connect thread"))
            .collect()
    });
    assert_eq!(slow.len(), SLOW);

    // The healthy subscriber reads on its own thread and reports its progress.
    let mut healthy = s.channel_client();
    healthy.subscribe("flood");
    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let progress = progress.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut got: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match healthy.next_event(Duration::from_millis(200)) {
                    Event::Text(t) => {
                        got.push(t);
                        progress.store(got.len(), Ordering::Release);
                    }
                    Event::Timeout => {}
                    other => panic!("healthy subscriber: {other:?} after {} messages", got.len()),
                }
            }
            got
        })
    };
    assert_eq!(ws_connections(&s), SLOW as u64 + 1);
    let baseline_kib = status_kib(s.pid(), "VmRSS");

    // Flood in batches; the next batch goes once the healthy reader has the previous one (the test
    // is the healthy client's flow control, not the server's). Stop once every slow client is cut.
    let line = |i: usize| {
        let data = format!("{i:08}{}", "x".repeat(PAYLOAD - 8));
        format!("{}\n", json!({"channel": "flood", "data": data}))
    };
    let mut fifo = fifo_open(s.fifo());
    let mut sent = 0;
    while sent < MAX_MESSAGES {
        let batch: String = (sent..sent + BATCH).map(line).collect();
        fifo.write_all(batch.as_bytes()).expect("write FIFO");
        sent += BATCH;
        let want = sent;
        assert!(
            wait_until(T, || progress.load(Ordering::Acquire) >= want),
            "healthy subscriber stuck at {} of {want} messages",
            progress.load(Ordering::Acquire)
        );
        if sent % (BATCH * 16) == 0 && ws_connections(&s) == 1 {
            break;
        }
    }
    assert!(
        wait_until(T, || ws_connections(&s) == 1),
        "slow clients still connected after {sent} messages: {}",
        health(&s)
    );
    stop.store(true, Ordering::Relaxed);
    let got = reader.join().expect("healthy reader");

    // Every message, in order, to the healthy subscriber.
    assert_eq!(got.len(), sent, "healthy subscriber message count");
    for (i, m) in got.iter().enumerate() {
        assert!(
            m.len() == PAYLOAD && m.starts_with(&format!("{i:08}")),
            "message {i} out of order or altered: {:?}",
            &m[..m.len().min(20)]
        );
    }

    // Peak RSS over the server's life. Bound: each slow client's queue is capped at Q plus the
    // frame that crossed it (frames are shared Rc<[u8]> between queues, so the real cost is far
    // lower); per-connection state for all 2 001 sessions is already in the baseline, measured
    // with every client connected and subscribed; 64 MiB slack for the allocator, the FIFO read
    // buffer and log formatting. An unbounded queue would hold up to 8 MiB for each of them.
    let frame = PAYLOAD + 16;
    let bound_kib = baseline_kib + ((SLOW * (Q + 2 * frame)) as u64 + (64 << 20)) / 1024;
    let peak_kib = status_kib(s.pid(), "VmHWM");
    eprintln!(
        "flood: {sent} messages of {PAYLOAD} B; server RSS baseline {baseline_kib} KiB, peak {peak_kib} KiB, bound {bound_kib} KiB"
    );
    assert!(
        peak_kib <= bound_kib,
        "server peak RSS {peak_kib} KiB over the bound {bound_kib} KiB"
    );

    // Every slow client was cut: what reached it is an in-order prefix, then close 1008 (best
    // effort: the close frame may not fit in its full socket) and/or EOF. Drained on 8 threads.
    let chunks: Vec<Vec<RawConn>> = {
        let mut slow = slow;
        let mut chunks = Vec::new();
        while !slow.is_empty() {
            let n = slow.len().min(SLOW / 8);
            chunks.push(slow.drain(..n).collect());
        }
        chunks
    };
    let closes: usize = thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut with_close = 0;
                    for mut c in chunk {
                        let (bytes, eof) = c.read_to_end(Duration::from_secs(30));
                        assert!(eof, "a slow client's connection is still open");
                        let mut next = 0;
                        for (op, payload) in server_frames(&bytes) {
                            match op {
                                OP_TEXT => {
                                    assert!(
                                        payload.starts_with(format!("{next:08}").as_bytes()),
                                        "slow client: message {next} out of order"
                                    );
                                    next += 1;
                                }
                                OP_CLOSE => {
                                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                                    assert_eq!(code, 1008, "slow consumer close code");
                                    with_close += 1;
                                }
                                _ => {}
                            }
                        }
                        assert!(next < sent, "a slow client received every message");
                    }
                    with_close
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    eprintln!("flood: {closes} of {SLOW} slow clients got the 1008 close frame before EOF");
    let warned = s
        .logs()
        .iter()
        .filter(|l| l.contains("slow consumer"))
        .count();
    assert!(warned >= SLOW, "only {warned} slow-consumer log lines");
}

// ---------------------------------------------------------------------------------------------
// Connection churn
// ---------------------------------------------------------------------------------------------

/// One connect/subscribe/close cycle. Most close cleanly (close frame, wait for the server's);
/// every 4th drops the connection after subscribing; every 10th drops it halfway through the
/// request.
fn churn_cycle(addr: SocketAddrV4, n: usize) {
    let stream =
        connect_from(source(n), addr, None).unwrap_or_else(|e| panic!("cycle {n}: connect: {e}"));
    let mut c = RawConn::from_stream(stream);
    if n % 10 == 9 {
        let _ = c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpg");
        return;
    }
    c.handshake("/ws");
    let channel = format!("churn-{n}");
    let mut out = subscribe_frame(&channel);
    let clean = n % 4 != 3;
    if clean {
        out.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
    }
    c.send(&out).expect("send");
    let reply: Value = serde_json::from_str(&c.recv_text(T)).unwrap();
    assert_eq!(reply["event"], "subscribed", "cycle {n}: {reply}");
    if clean {
        let (code, _) = c.expect_close(T);
        assert_eq!(code, 1000, "cycle {n}");
    }
}

fn run_churn(addr: SocketAddrV4, from: usize, count: usize, threads: usize) {
    let next = AtomicUsize::new(from);
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= from + count {
                        break;
                    }
                    churn_cycle(addr, n);
                }
            });
        }
    });
}

#[test]
fn churn_20000_cycles_leaks_nothing() {
    let _g = heavy();
    raise_nofile();
    // max_connections_per_ip exercises the per-address bookkeeping too (253 source addresses).
    let s = Server::start(
        &[
            "--set",
            "max_connections_per_ip=1000",
            "--set",
            "handshake_timeout_secs=5",
        ],
        &[],
    );
    let addr = server_addr(&s);
    let pid = s.pid();
    let idle = |s: &Server| {
        let h = health(s);
        h["connections"] == 0 && h["channels"] == 0
    };

    // Descriptors of the idle server: listener, FIFO, poll, signals, log pipe...
    assert!(idle(&s));
    let fds0 = fd_count(pid);

    // Warm-up at the same concurrency, so that the slab, the maps and the allocator have reached
    // their working size before the RSS baseline is taken.
    const THREADS: usize = 16;
    run_churn(addr, 0, 2000, THREADS);
    // Closing connections linger until the peer's EOF (a few seconds at most).
    assert!(
        wait_until(Duration::from_secs(30), || idle(&s)),
        "{}",
        health(&s)
    );
    assert!(
        wait_until(Duration::from_secs(30), || fd_count(pid) <= fds0),
        "server descriptors after the warm-up: {}, {fds0} when idle",
        fd_count(pid)
    );
    let rss0 = status_kib(pid, "VmRSS");

    const CYCLES: usize = 20_000;
    run_churn(addr, 2000, CYCLES, THREADS);

    assert!(
        wait_until(Duration::from_secs(30), || idle(&s)),
        "sessions or channels left after churn: {}",
        health(&s)
    );
    assert!(
        wait_until(Duration::from_secs(30), || fd_count(pid) <= fds0),
        "server descriptors: {} after churn, {fds0} before",
        fd_count(pid)
    );
    let rss1 = status_kib(pid, "VmRSS");
    eprintln!(
        "churn: {CYCLES} cycles; fds {fds0} -> {}; RSS {rss0} KiB -> {rss1} KiB",
        fd_count(pid)
    );
    // A leak of 1 KiB per cycle (less than one connection's state with its buffers, or a channel
    // entry with its subscriber list) would be 20 MiB: 16 MiB of slack tolerates allocator
    // fragmentation and still catches that.
    assert!(
        rss1 <= rss0 + 16 * 1024,
        "server RSS grew from {rss0} KiB to {rss1} KiB over {CYCLES} cycles"
    );
    // And it still serves.
    let mut c = s.channel_client();
    c.subscribe("after-churn");
    s.publish_json(&json!({"channel": "after-churn", "data": "still here"}));
    assert_eq!(c.recv_text(T), "still here");
}

// ---------------------------------------------------------------------------------------------
// The FIFO lock: a second server refuses, a stale FIFO is reused
// ---------------------------------------------------------------------------------------------

fn start_on(fifo: &Path) -> Server {
    Server::start_opts(Opts {
        fifo: Some(fifo.to_path_buf()),
        ..Default::default()
    })
}

#[test]
fn second_server_on_the_same_fifo_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("b.fifo");
    let first = start_on(&fifo);
    let out = run_cli_in(
        dir.path(),
        &["websocket", "--port", "0", "--fifo", fifo.to_str().unwrap()],
        &[],
        None,
    );
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.status.code().is_some(),
        "exited by a signal: {}",
        out.describe()
    );
    assert!(out.stderr.contains("already"), "{}", out.describe());
    // The first server still owns and reads its FIFO.
    assert!(is_fifo(&fifo));
    let mut c = first.channel_client();
    c.subscribe("lock");
    first.publish_json(&json!({"channel": "lock", "data": "first still reads"}));
    assert_eq!(c.recv_text(T), "first still reads");
}

#[test]
fn stale_fifo_from_killed_server_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("b.fifo");
    let mut killed = start_on(&fifo);
    killed.signal(Signal::SIGKILL);
    killed.wait_exit(T);
    assert!(
        is_fifo(&fifo),
        "the FIFO of a kill -9'd server stays behind"
    );
    let second = start_on(&fifo);
    assert!(is_fifo(&fifo));
    let mut c = second.channel_client();
    c.subscribe("stale");
    second.publish_json(&json!({"channel": "stale", "data": "reused"}));
    assert_eq!(c.recv_text(T), "reused");
    // `broadcast` finds the new reader too.
    let out = run_cli_in(
        dir.path(),
        &[
            "broadcast",
            "--fifo",
            fifo.to_str().unwrap(),
            "--channel",
            "stale",
            "via cli",
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(c.recv_text(T), "via cli");
}

// ---------------------------------------------------------------------------------------------
// SIGTERM under load
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_under_load_delivers_everything_accepted_before_the_close() {
    let _g = heavy();
    let mut s = Server::start(&["--set", "shutdown_timeout_secs=30"], &[]);
    // Channel-mode and raw-mode clients all get global lines.
    let mut readers = Vec::new();
    for i in 0..6 {
        let mut c = if i % 2 == 0 {
            let mut c = s.channel_client();
            c.subscribe("load");
            c
        } else {
            let mut c = s.ws("/raw");
            c.raw_ping_pong();
            c
        };
        readers.push(thread::spawn(move || {
            let mut seq = Vec::new();
            loop {
                match c.next_event(Duration::from_secs(60)) {
                    Event::Text(t) => seq.push(t),
                    Event::Close(code) => return (seq, code),
                    other => panic!("client {i}: {other:?} after {} messages", seq.len()),
                }
            }
        }));
    }

    // The writer keeps writing one line per write (atomic) in small bursts; `done` counts the
    // writes that returned.
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, stop) = (done.clone(), stop.clone());
        let mut f = fifo_open(s.fifo());
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&f);
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        thread::spawn(move || {
            let mut i = 0usize;
            let deadline = Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let line = format!("seq-{i:07}\n");
                match f.write(line.as_bytes()) {
                    Ok(n) => {
                        assert_eq!(n, line.len(), "short write to the FIFO");
                        i += 1;
                        done.store(i, Ordering::Release);
                        if i.is_multiple_of(50) {
                            thread::sleep(Duration::from_millis(2));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break, // the server is gone
                }
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || done.load(Ordering::Acquire)
            >= 5000),
        "writer stalled at {}",
        done.load(Ordering::Acquire)
    );
    // Every write counted here returned before the signal is sent.
    let accepted = done.load(Ordering::Acquire);
    eprintln!("sigterm: {accepted} lines written to the FIFO before SIGTERM");
    s.signal(Signal::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(45));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(st.code(), Some(0), "exit status");

    for (i, r) in readers.into_iter().enumerate() {
        let (seq, close) = r.join().expect("reader");
        assert_eq!(
            close.as_ref().map(|c| c.0),
            Some(1001),
            "client {i}: close after {} messages",
            seq.len()
        );
        assert!(
            seq.len() >= accepted,
            "client {i}: {} messages before its close, {accepted} were written before SIGTERM",
            seq.len()
        );
        for (j, m) in seq.iter().enumerate() {
            assert_eq!(m, &format!("seq-{j:07}"), "client {i}: message {j}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------------------------

#[test]
fn slowloris_one_byte_per_second_is_cut_at_handshake_timeout() {
    const CLIENTS: usize = 20;
    let s = Server::start(&["--set", "handshake_timeout_secs=2"], &[]);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // (socket, bytes read, bytes sent, cut)
    #[allow(clippy::type_complexity)]
    let mut conns: Vec<(TcpStream, Vec<u8>, usize, bool)> = (0..CLIENTS)
        .map(|_| {
            let st = TcpStream::connect(s.addr()).expect("connect");
            st.set_nonblocking(true).unwrap();
            (st, Vec::new(), 0, false)
        })
        .collect();
    // One byte per second to each; a connection is cut when it reads EOF or an error. At that
    // rate the request would need ~150 s: the loop gives up after 40.
    let deadline = Instant::now() + Duration::from_secs(40);
    while conns.iter().any(|c| !c.3) && Instant::now() < deadline {
        for (st, got, sent, cut) in conns.iter_mut().filter(|c| !c.3) {
            let mut buf = [0u8; 4096];
            loop {
                match st.read(&mut buf) {
                    Ok(0) => {
                        *cut = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *cut = true;
                        break;
                    }
                }
            }
            if !*cut {
                match st.write(&request.as_bytes()[*sent..*sent + 1]) {
                    Ok(_) => *sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => *cut = true,
                }
            }
        }
        thread::sleep(Duration::from_secs(1));
    }
    for (i, (_, got, sent, cut)) in conns.iter().enumerate() {
        assert!(
            cut,
            "slowloris client {i} still connected after sending {sent} bytes"
        );
        assert!(*sent < request.len(), "client {i} completed its request");
        let text = String::from_utf8_lossy(got);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "client {i} got {text:?}"
        );
    }
    let answered = conns.iter().filter(|c| !c.1.is_empty()).count();
    eprintln!("slowloris: {CLIENTS} clients cut, {answered} with a 408 answer");
    // The server still serves others.
    let mut c = s.channel_client();
    c.ping_pong();
    assert!(
        s.wait_for_log("no complete request in time", T).is_some(),
        "handshake timeouts are logged"
    );
}
