//! The small part of the systemd service protocol that ferrocast needs, without libsystemd:
//!
//! * readiness and state notifications (`sd_notify`): [`notify`], [`ready`], [`reloading`],
//!   [`stopping`], [`watchdog`], [`status`];
//! * the service watchdog: [`watchdog_interval`] tells whether `WatchdogSec=` is in force and how
//!   often systemd expects a ping (ping at half of it from the poll loop);
//! * socket activation (`sd_listen_fds`): [`listen_fds`] takes the listening sockets that a
//!   `.socket` unit passed in, [`listen_fd_is_tcp_listener`] checks that one is usable.
//!
//! Everything here is synchronous, non-blocking and allocation-light, and nothing starts a
//! thread: ferrocast forks workers, so the process must stay single-threaded.
//!
//! Outside systemd (no `NOTIFY_SOCKET`, no `LISTEN_PID`) every call is a cheap no-op.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
    getsockname, getsockopt, sendto, socket, sockopt,
};

/// First file descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Sends one notification datagram (`KEY=VALUE` lines separated by `\n`) to the service
/// manager named by `NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when the variable is unset or empty (not running under systemd, or the
/// unit is not `Type=notify`), `Ok(true)` when the datagram was sent. `NOTIFY_SOCKET` may be a
/// filesystem path (`/run/systemd/notify`) or an abstract socket name (`@name`). The socket is
/// non-blocking: a full receive queue yields an error of kind `WouldBlock` rather than a stall.
/// Never panics; callers usually just log an error and carry on.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) if !target.is_empty() => send_to(&target, state).map(|()| true),
        _ => Ok(false),
    }
}

/// `READY=1` with a human-readable `STATUS=` line (shown by `systemctl status`). Send it once
/// the listener and the FIFO are open, and again after a reload has been applied.
pub fn ready(status: &str) -> io::Result<bool> {
    notify(&ready_message(status))
}

/// Updates only the `STATUS=` line (e.g. "draining 12 connections" during shutdown).
pub fn status(status: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", one_line(status)))
}

/// `STOPPING=1`: send when a graceful shutdown (SIGTERM) starts.
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (the current `CLOCK_MONOTONIC` time in µs, which newer
/// systemd versions use to match the reload with its `READY=1`). Send it when SIGHUP arrives,
/// then [`ready`] once the new configuration is in force: `systemctl reload` waits for that.
pub fn reloading() -> io::Result<bool> {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
}

/// `WATCHDOG=1`: the keep-alive ping for `WatchdogSec=`.
pub fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// The watchdog timeout systemd enforces (`WATCHDOG_USEC`), if it applies to this process
/// (`WATCHDOG_PID`, when set, must be our pid). The caller should ping with [`watchdog`] at half
/// this interval, e.g. by bounding its poll timeout by it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog_env(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// Takes the sockets passed by socket activation.
///
/// When `LISTEN_PID` is our pid, the `LISTEN_FDS` descriptors starting at 3 are returned as
/// owned fds with close-on-exec set (so forked-and-exec'd handlers do not inherit them). In
/// every case `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the environment,
/// so children never see them and a second call returns nothing. Returns an empty vector when
/// not socket-activated. The fds are left in whatever blocking mode systemd gave them (blocking):
/// set them non-blocking before registering them with the poll.
pub fn listen_fds() -> Vec<OwnedFd> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let n = parse_listen_env(pid.as_deref(), count.as_deref(), std::process::id());

    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        if std::env::var_os(key).is_some() {
            // SAFETY: `remove_var` is unsafe because another thread could read the environment
            // at the same time. ferrocast never starts a thread (it forks workers), so this
            // process has exactly one thread and nothing else can be touching the environment.
            unsafe { std::env::remove_var(key) };
        }
    }

    let mut fds = Vec::with_capacity(n);
    for offset in 0..n {
        // `parse_listen_env` caps `n` so this cannot overflow.
        let raw = LISTEN_FDS_START + offset as RawFd;
        // SAFETY: fcntl on an integer descriptor has no memory-safety requirements.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        if flags < 0 {
            log::warn!(
                "socket activation: fd {raw} announced by LISTEN_FDS is not open: {}",
                io::Error::last_os_error()
            );
            continue;
        }
        if flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
                log::warn!(
                    "socket activation: cannot set close-on-exec on fd {raw}: {}",
                    io::Error::last_os_error()
                );
            }
        }
        // SAFETY: the service manager passed this open descriptor to us for our exclusive use;
        // nothing else in the process refers to it, and because the LISTEN_* variables were
        // removed above it can be claimed only once.
        fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    if n > 0 {
        log::debug!("socket activation: received {} listening fd(s)", fds.len());
    }
    fds
}

/// Whether `fd` is a listening (`SO_ACCEPTCONN`) TCP socket over IPv4 or IPv6: lets the server
/// refuse a wrongly configured `.socket` unit (e.g. `ListenDatagram=` or a FIFO) with a clear
/// error instead of failing later in `accept`.
pub fn listen_fd_is_tcp_listener(fd: BorrowedFd<'_>) -> bool {
    let listening = matches!(getsockopt(&fd, sockopt::AcceptConn), Ok(true));
    let stream = matches!(getsockopt(&fd, sockopt::SockType), Ok(SockType::Stream));
    let inet = match getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(addr) => matches!(
            addr.family(),
            Some(AddressFamily::Inet) | Some(AddressFamily::Inet6)
        ),
        Err(_) => false,
    };
    listening && stream && inet
}

/// Number of fds passed by socket activation, from the raw `LISTEN_PID` / `LISTEN_FDS` values:
/// 0 unless both are present, well-formed, and `LISTEN_PID` is `my_pid`.
pub fn parse_listen_env(listen_pid: Option<&str>, listen_fds: Option<&str>, my_pid: u32) -> usize {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else {
        return 0;
    };
    if pid.trim().parse::<u32>() != Ok(my_pid) {
        return 0;
    }
    match count.trim().parse::<usize>() {
        // Keep `LISTEN_FDS_START + n` within the range of a file descriptor.
        Ok(n) => n.min((RawFd::MAX - LISTEN_FDS_START) as usize),
        Err(_) => 0,
    }
}

/// The watchdog timeout from the raw `WATCHDOG_USEC` / `WATCHDOG_PID` values: `None` unless
/// `WATCHDOG_USEC` is a positive integer and `WATCHDOG_PID`, when present, is `my_pid`.
pub fn parse_watchdog_env(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = watchdog_pid
        && pid.trim().parse::<u32>() != Ok(my_pid)
    {
        return None;
    }
    match watchdog_usec?.trim().parse::<u64>() {
        Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
        _ => None,
    }
}

/// The datagram [`ready`] sends.
pub fn ready_message(status: &str) -> String {
    format!("READY=1\nSTATUS={}", one_line(status))
}

/// A newline in a value would start a new `KEY=` assignment: fold it into a space.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds (the clock systemd uses for `MONOTONIC_USEC`).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1_000)
}

/// Resolves a `NOTIFY_SOCKET` value to a socket address.
fn notify_addr(target: &OsStr) -> io::Result<UnixAddr> {
    let bytes = target.as_bytes();
    match bytes.first() {
        Some(b'/') => Ok(UnixAddr::new(bytes)?),
        Some(b'@') => Ok(UnixAddr::new_abstract(&bytes[1..])?),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("unsupported NOTIFY_SOCKET address {target:?}"),
        )),
    }
}

fn send_to(target: &OsStr, state: &str) -> io::Result<()> {
    let addr = notify_addr(target)?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let sent = sendto(
        sock.as_raw_fd(),
        state.as_bytes(),
        &addr,
        MsgFlags::MSG_NOSIGNAL,
    )?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to NOTIFY_SOCKET",
        ));
    }
    log::trace!("sd_notify: {}", state.replace('\n', " "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Mutex;

    /// Tests that read or write the process environment hold this lock: the test harness runs
    /// tests on several threads, and they all share one environment.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn scratch_dir() -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("ferrocast-sd-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn recv_string(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("datagram from notify()");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notify_sends_datagrams_to_path_and_abstract_sockets() {
        let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = scratch_dir();
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        // SAFETY: environment access in tests is serialized by ENV_LOCK.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };

        assert!(ready("serving 0 connections").unwrap());
        assert_eq!(
            recv_string(&receiver),
            "READY=1\nSTATUS=serving 0 connections"
        );

        let before = monotonic_usec();
        assert!(reloading().unwrap());
        let msg = recv_string(&receiver);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected reloading message {msg:?}"))
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec(), "{usec}");

        assert!(stopping().unwrap());
        assert_eq!(recv_string(&receiver), "STOPPING=1");
        assert!(watchdog().unwrap());
        assert_eq!(recv_string(&receiver), "WATCHDOG=1");
        assert!(status("draining\n3 left").unwrap());
        assert_eq!(recv_string(&receiver), "STATUS=draining 3 left");

        // Abstract socket name: `@name` in NOTIFY_SOCKET.
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("ferrocast-sd-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let abstract_rx = UnixDatagram::bind_addr(&addr).unwrap();
            abstract_rx
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            // SAFETY: serialized by ENV_LOCK.
            unsafe { std::env::set_var("NOTIFY_SOCKET", format!("@{name}")) };
            assert!(watchdog().unwrap());
            assert_eq!(recv_string(&abstract_rx), "WATCHDOG=1");
        }

        // Nobody listening: an error, not a panic.
        let gone = dir.join("nobody.sock");
        // SAFETY: serialized by ENV_LOCK.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &gone) };
        assert!(ready("x").is_err());

        // Not an address systemd would hand out.
        // SAFETY: serialized by ENV_LOCK.
        unsafe { std::env::set_var("NOTIFY_SOCKET", "relative/path") };
        assert_eq!(ready("x").unwrap_err().kind(), io::ErrorKind::Unsupported);

        // Not under systemd.
        // SAFETY: serialized by ENV_LOCK.
        unsafe { std::env::set_var("NOTIFY_SOCKET", "") };
        assert!(!ready("x").unwrap());
        // SAFETY: serialized by ENV_LOCK.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!ready("x").unwrap());
        assert!(!watchdog().unwrap());

        drop(receiver);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ready_message_keeps_status_on_one_line() {
        assert_eq!(ready_message("a\nb\r\nc"), "READY=1\nSTATUS=a b  c");
    }

    #[test]
    fn parse_listen_env_cases() {
        assert_eq!(parse_listen_env(None, None, 42), 0);
        assert_eq!(parse_listen_env(Some("42"), None, 42), 0);
        assert_eq!(parse_listen_env(None, Some("2"), 42), 0);
        assert_eq!(parse_listen_env(Some("42"), Some("2"), 42), 2);
        assert_eq!(parse_listen_env(Some("42"), Some("0"), 42), 0);
        assert_eq!(parse_listen_env(Some("41"), Some("2"), 42), 0);
        assert_eq!(parse_listen_env(Some("x"), Some("2"), 42), 0);
        assert_eq!(parse_listen_env(Some("42"), Some("-1"), 42), 0);
        assert_eq!(parse_listen_env(Some("42"), Some("many"), 42), 0);
        assert_eq!(parse_listen_env(Some(" 42\n"), Some("1 "), 42), 1);
        assert_eq!(
            parse_listen_env(Some("42"), Some("99999999999999999999"), 42),
            0
        );
        assert_eq!(
            parse_listen_env(Some("42"), Some(&usize::MAX.to_string()), 42),
            (RawFd::MAX - LISTEN_FDS_START) as usize
        );
    }

    #[test]
    fn parse_watchdog_env_cases() {
        let d = Duration::from_secs(30);
        assert_eq!(parse_watchdog_env(None, None, 7), None);
        assert_eq!(parse_watchdog_env(Some("30000000"), None, 7), Some(d));
        assert_eq!(parse_watchdog_env(Some("30000000"), Some("7"), 7), Some(d));
        assert_eq!(parse_watchdog_env(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog_env(Some("30000000"), Some("x"), 7), None);
        assert_eq!(parse_watchdog_env(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog_env(Some("abc"), None, 7), None);
        assert_eq!(parse_watchdog_env(None, Some("7"), 7), None);
    }

    #[test]
    fn tcp_listener_check() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listen_fd_is_tcp_listener(tcp.as_fd()));
        let client = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        assert!(!listen_fd_is_tcp_listener(client.as_fd()));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!listen_fd_is_tcp_listener(udp.as_fd()));
        let dir = scratch_dir();
        let unix = std::os::unix::net::UnixListener::bind(dir.join("l.sock")).unwrap();
        assert!(!listen_fd_is_tcp_listener(unix.as_fd()));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!listen_fd_is_tcp_listener(file.as_fd()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs `child_takes_listen_fds` in a new process whose fd 3 is a listening socket and whose
    /// LISTEN_PID is its own pid: `sh` moves the socket from stdin to fd 3, exports its own pid
    /// (`$$`) and then `exec`s the test binary, which keeps that pid.
    #[test]
    fn listen_fds_in_child_process() {
        let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let exe = std::env::current_exe().unwrap();
        let script = r#"exec 3<&0 0</dev/null; LISTEN_PID=$$; export LISTEN_PID; exec "$0" systemd::tests::child_takes_listen_fds --exact --ignored --nocapture --test-threads=1"#;
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg(exe)
            .env("FERROCAST_SD_CHILD", "1")
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "ferrocast.socket")
            .stdin(std::process::Stdio::from(OwnedFd::from(listener)))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("CHILD-OK fds=1"),
            "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
    }

    /// The child half of `listen_fds_in_child_process`; does nothing when run on its own.
    #[test]
    #[ignore = "run by listen_fds_in_child_process in a child process"]
    fn child_takes_listen_fds() {
        if std::env::var_os("FERROCAST_SD_CHILD").is_none() {
            return;
        }
        assert_eq!(
            std::env::var("LISTEN_PID").unwrap(),
            std::process::id().to_string()
        );
        let fds = listen_fds();
        assert_eq!(fds.len(), 1);
        for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            assert!(std::env::var_os(key).is_none(), "{key} still set");
        }
        assert!(listen_fds().is_empty(), "second call must return nothing");

        let fd = fds.into_iter().next().unwrap();
        assert_eq!(fd.as_raw_fd(), LISTEN_FDS_START);
        assert!(listen_fd_is_tcp_listener(fd.as_fd()));
        // SAFETY: fcntl on an open descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0, "close-on-exec not set");

        let listener = TcpListener::from(fd);
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert!(peer.ip().is_loopback());
        println!("CHILD-OK fds=1");
    }
}
