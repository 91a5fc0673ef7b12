//! Deployment under systemd, without systemd as PID 1: the unit files are checked with
//! `systemd-analyze verify`, and the two protocols the service relies on are played by the test
//! itself with real sockets — socket activation (a listening socket as fd 3, `LISTEN_FDS`,
//! `LISTEN_PID`) and sd_notify (a unix datagram socket named by `NOTIFY_SOCKET`).

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Unit files
// ---------------------------------------------------------------------------------------------

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let script = manifest_dir().join("tests/systemd/verify-units.sh");
    assert!(script.is_file(), "{} is missing", script.display());
    // The script fails with a clear message when systemd-analyze is missing; say it here too.
    let have = Command::new("sh")
        .arg("-c")
        .arg("command -v systemd-analyze")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        have,
        "systemd-analyze not found: install the Debian package `systemd` (apt-get install -y systemd)"
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg(bin())
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run tests/systemd/verify-units.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "verify-units.sh failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // Any warning of systemd-analyze is a failure; the script prints only its OK line.
    assert_eq!(
        stdout.trim(),
        "verify-units: systemd units OK",
        "unexpected output:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.trim().is_empty(), "unexpected stderr:\n{stderr}");
}

#[test]
fn socket_unit_matches_the_service_and_the_apache_examples() {
    // The address the socket unit listens on is the backend Apache proxies to.
    let socket = std::fs::read_to_string(manifest_dir().join("systemd/ferrocast.socket")).unwrap();
    let service =
        std::fs::read_to_string(manifest_dir().join("systemd/ferrocast.service")).unwrap();
    let htaccess = std::fs::read_to_string(manifest_dir().join("apache/.htaccess")).unwrap();
    let listen = socket
        .lines()
        .find_map(|l| l.strip_prefix("ListenStream="))
        .expect("ListenStream= in ferrocast.socket")
        .trim()
        .to_string();
    assert!(
        htaccess.contains(&format!("ws://{listen}/")),
        "apache/.htaccess does not proxy to the socket unit's ListenStream={listen}"
    );
    assert!(
        socket
            .lines()
            .any(|l| l.trim() == "Service=ferrocast.service")
    );
    assert!(
        service
            .lines()
            .any(|l| l.trim() == "Sockets=ferrocast.socket")
    );
    assert!(service.lines().any(|l| l.trim() == "Type=notify"));
}

// ---------------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------------

/// Spawns `ferrocast websocket` as a socket-activated service: `listener` becomes fd 3 and
/// `LISTEN_FDS=1`, `LISTEN_PID=<the server's own pid>`. `sh` receives fd 3, exports its own pid
/// (`$$`) and `exec`s the server, which keeps that pid and inherits fd 3.
fn spawn_activated(
    runtime: &Path,
    listener: &impl AsRawFd,
    fifo: &Path,
    extra: &[&str],
) -> (std::process::Child, Lines) {
    let cmd = command(runtime);
    // command() targets the binary directly; run it through sh instead, with the same env.
    let mut sh = Command::new("/bin/sh");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(bin())
        .arg("websocket")
        .arg("--fifo")
        .arg(fifo)
        .args(extra)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "ferrocast.socket")
        .env_remove("LISTEN_PID")
        .env("RUST_LOG", "ferrocast=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let fd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        sh.pre_exec(move || {
            if fd == 3 {
                let fl = libc::fcntl(3, libc::F_GETFD);
                if fl < 0 || libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                // dup2 leaves FD_CLOEXEC clear on the new descriptor.
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = sh.spawn().expect("spawn sh -> ferrocast");
    let logs = Lines::spawn_reader(child.stderr.take().unwrap());
    (child, logs)
}

struct KillOnDrop(std::process::Child, Lines);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            self.1.wait_closed(Duration::from_secs(2));
            eprintln!("----- ferrocast log -----\n{}\n-----", self.1.joined());
        }
    }
}

#[test]
fn socket_activation_serves_on_the_passed_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    // A port the server must NOT use: taken, so a server ignoring LISTEN_FDS fails to bind it.
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    let decoy_port = decoy.local_addr().unwrap().port().to_string();
    let fifo = dir.path().join("b.fifo");
    // A client that connects before the service runs waits in the socket's backlog (the point
    // of socket activation): its handshake must be answered once the server is up.
    let addr = format!("127.0.0.1:{port}");
    let mut early = RawConn::connect(&addr);
    early
        .send(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send handshake before the server starts");
    let (child, logs) = spawn_activated(dir.path(), &listener, &fifo, &["--port", &decoy_port]);
    let mut guard = KillOnDrop(child, logs);
    // The server now holds its own copy of the socket; ours is no longer needed.
    drop(listener);

    let line = guard
        .1
        .wait_for(0, START, |l| parse_listening(l).is_some())
        .unwrap_or_else(|| {
            let st = guard.0.try_wait().ok().flatten();
            panic!(
                "socket-activated server did not start (exit {st:?}); logs:\n{}",
                guard.1.joined()
            )
        });
    let (_, logged_port) = parse_listening(&line).unwrap();
    assert_eq!(
        logged_port,
        port,
        "server must listen on the passed socket (port {port}), not bind its own; logs:\n{}",
        guard.1.joined()
    );

    let resp = early
        .read_http_response(T)
        .expect("a connection queued before the start got no answer");
    assert_eq!(resp.status, 101, "queued handshake: {resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    drop(early);

    let mut c = connect(&addr, "/ws", &[]).unwrap_or_else(|e| panic!("connect {addr}/ws: {e:?}"));
    c.subscribe("orders");
    fifo_write(&fifo, b"{\"channel\":\"orders\",\"data\":\"hi\"}\n");
    assert_eq!(c.recv_text(T), "hi");
    let up = http_get(&addr, "/up");
    assert_eq!(up.status, 200);

    // SIGTERM: clean exit, even with an inherited socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard.0.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let (code, _) = c.expect_close(T);
    assert_eq!(code, 1001);
    drop(c);
    let st = wait_child(&mut guard.0, T, "socket-activated ferrocast after SIGTERM");
    assert!(
        st.success(),
        "exit status {st}; logs:\n{}",
        guard.1.joined()
    );
    drop(decoy);
}

#[test]
fn socket_activation_for_another_pid_is_ignored() {
    // LISTEN_PID names another process: the fds are not ours, the server binds --port itself.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("b.fifo");
    let server = Server::start_opts(Opts {
        args: &[],
        env: &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
        fifo: Some(fifo),
        ..Default::default()
    });
    assert!(
        !server.logs_text().contains("socket activation: received"),
        "LISTEN_PID of another process must be ignored; logs:\n{}",
        server.logs_text()
    );
    let mut c = server.channel_client();
    c.ping_pong();
}

// ---------------------------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------------------------

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The next notification that carries a state change (READY/RELOADING/STOPPING); datagrams
/// with only STATUS= or WATCHDOG=1 are skipped.
fn next_state(sock: &UnixDatagram, what: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + T;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no notification {what} within {T:?}; datagrams so far: {seen:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if msg.lines().any(|l| {
                    l.starts_with("READY=")
                        || l.starts_with("RELOADING=")
                        || l.starts_with("STOPPING=")
                }) {
                    return msg;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv on NOTIFY_SOCKET: {e}"),
        }
    }
}

fn lines(msg: &str) -> Vec<&str> {
    msg.lines().collect()
}

#[test]
fn sd_notify_ready_reloading_ready_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind NOTIFY_SOCKET");
    let mut seen = Vec::new();
    let notify = sock_path.to_str().unwrap().to_string();
    let mut server = Server::start_opts(Opts {
        args: &[],
        env: &[("NOTIFY_SOCKET", &notify)],
        ..Default::default()
    });

    let ready = next_state(&sock, "READY=1 after start", &mut seen);
    assert!(
        lines(&ready).contains(&"READY=1"),
        "first state notification must be READY=1, got {ready:?}"
    );
    // READY=1 means serving: a client connects at once.
    server.channel_client().ping_pong();

    let before = monotonic_usec();
    server.signal(Signal::SIGHUP);
    let reloading = next_state(&sock, "RELOADING=1 after SIGHUP", &mut seen);
    let l = lines(&reloading);
    assert!(
        l.contains(&"RELOADING=1"),
        "after SIGHUP expected RELOADING=1, got {reloading:?}"
    );
    let usec: u64 = l
        .iter()
        .find_map(|x| x.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC=: {reloading:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("MONOTONIC_USEC not a number ({e}): {reloading:?}"));
    let after = monotonic_usec();
    assert!(
        before <= usec && usec <= after,
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC at the reload ({before}..={after})"
    );
    let ready2 = next_state(&sock, "READY=1 after the reload", &mut seen);
    assert!(
        lines(&ready2).contains(&"READY=1"),
        "after RELOADING=1 expected READY=1, got {ready2:?}"
    );
    assert!(server.wait_for_log("configuration reloaded", T).is_some());

    server.signal(Signal::SIGTERM);
    let stopping = next_state(&sock, "STOPPING=1 after SIGTERM", &mut seen);
    assert!(
        lines(&stopping).contains(&"STOPPING=1"),
        "after SIGTERM expected STOPPING=1, got {stopping:?}"
    );
    let st = server.wait_exit(T);
    assert!(st.success(), "exit status {st} after SIGTERM");
}

#[test]
fn sd_notify_stopping_is_sent_when_the_shutdown_begins() {
    // systemd: STOPPING=1 "tells the service manager that the service is beginning its
    // shutdown". A client that never answers the close frame keeps the drain going (the server
    // lingers for its EOF): STOPPING=1 must arrive while that connection is still open, not
    // after the drain.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind NOTIFY_SOCKET");
    let mut seen = Vec::new();
    let notify = sock_path.to_str().unwrap().to_string();
    let mut server = Server::start_opts(Opts {
        args: &["--set", "shutdown_timeout_secs=30"],
        env: &[("NOTIFY_SOCKET", &notify)],
        ..Default::default()
    });
    let ready = next_state(&sock, "READY=1 after start", &mut seen);
    assert!(lines(&ready).contains(&"READY=1"), "{ready:?}");

    let mut raw = server.raw();
    raw.handshake("/ws");
    server.signal(Signal::SIGTERM);
    // The shutdown has begun once the close frame arrives.
    let (code, _) = raw.expect_close(T);
    assert_eq!(code, 1001);
    let stopping = next_state(&sock, "STOPPING=1 after SIGTERM", &mut seen);
    assert!(lines(&stopping).contains(&"STOPPING=1"), "{stopping:?}");
    // The server half-closes right after its close frame (RFC 6455 lets the server close
    // first) and then lingers for the client's EOF, which never comes, before dropping the
    // connection. STOPPING=1 must come before that drop, i.e. at the start of the shutdown.
    let dropped = server
        .logs()
        .iter()
        .any(|l| l.contains(" closed: ") && !l.contains("closed: peer closed"));
    assert!(
        !dropped,
        "STOPPING=1 arrived only after the server had finished draining; it must be sent when \
         SIGTERM starts the shutdown:\n{}",
        server.logs_text()
    );
    drop(raw);
    let st = server.wait_exit(T);
    assert!(st.success(), "exit status {st}");
}

#[test]
fn socket_activation_with_a_non_listening_socket_is_refused_clearly() {
    // A wrong .socket unit (ListenDatagram=): fd 3 is a UDP socket. The server must exit
    // non-zero with a message, not serve nothing or crash later.
    let dir = tempfile::tempdir().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fifo = dir.path().join("b.fifo");
    let (child, logs) = spawn_activated(dir.path(), &udp, &fifo, &["--port", "0"]);
    let mut guard = KillOnDrop(child, logs);
    let st = wait_child(&mut guard.0, START, "ferrocast with a UDP socket as fd 3");
    guard.1.wait_closed(T);
    let text = guard.1.joined();
    assert!(
        !st.success(),
        "server must refuse a non-listening fd 3 (exit {st}); logs:\n{text}"
    );
    assert!(
        text.contains("not a listening TCP socket"),
        "the error must say fd 3 is not a listening TCP socket; logs:\n{text}"
    );
    assert!(!text.contains("listening on"), "logs:\n{text}");
}

#[test]
fn sd_notify_watchdog_pings_at_half_the_interval() {
    // WatchdogSec= in the unit: systemd sets WATCHDOG_USEC (and WATCHDOG_PID); the server must
    // send WATCHDOG=1 regularly from its loop even when idle. 2 s here: pings every ~1 s.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind NOTIFY_SOCKET");
    let notify = sock_path.to_str().unwrap().to_string();
    let server = Server::start_opts(Opts {
        args: &[],
        env: &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "2000000")],
        ..Default::default()
    });
    let deadline = Instant::now() + T;
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    let mut pings = 0;
    while pings < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "expected 3 WATCHDOG=1 within {T:?} with WATCHDOG_USEC=2000000; got {seen:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            }
            seen.push(msg);
        }
    }
    drop(server);
}
