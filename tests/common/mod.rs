//! Black-box test harness for the `ferrocast` binary.
//!
//! Everything here talks to a real server process over real sockets and a real FIFO:
//! `Server` spawns `ferrocast websocket --port 0 --fifo <tmp>/broadcast.fifo ...`, `Client` is a
//! tungstenite WebSocket client, `RawConn` is a plain TCP connection for malformed traffic and
//! hand-built frames, and `run_cli` runs the other sub-commands with a deadline.
//!
//! Rules followed by every helper: wait on events with generous deadlines, never assert on
//! elapsed time, never leave a process behind (Drop kills it).
#![allow(dead_code)]

pub mod db;
pub mod fpm;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
pub use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Deadline for anything that should happen "soon" (a reply, a delivery, a close).
pub const T: Duration = Duration::from_secs(15);
/// Deadline for the server to start (it may be built or loaded on a busy machine).
pub const START: Duration = Duration::from_secs(20);

/// The binary under test: the one cargo built for this package, unless `FERROCAST_TEST_BIN`
/// names another (e.g. a release build).
pub fn bin() -> PathBuf {
    match std::env::var_os("FERROCAST_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ferrocast")),
    }
}

// ---------------------------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------------------------

/// A `Command` for the ferrocast binary with a clean environment: no inherited `FERROCAST_*`
/// variable, and runtime directories pointing at `runtime_dir` so nothing touches the real
/// `/run` or `/tmp/ferrocast-$UID`.
pub fn command(runtime_dir: &Path) -> Command {
    command_wrapped(runtime_dir, &[])
}

/// Like [`command`], but run through a command prefix: `wrap[0] wrap[1..] <ferrocast> ...`
/// (e.g. `unshare --mount sh -c '...; exec "$0" "$@"'`). An empty `wrap` runs the binary itself.
pub fn command_wrapped(runtime_dir: &Path, wrap: &[&str]) -> Command {
    let mut cmd = match wrap.split_first() {
        None => Command::new(bin()),
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin());
            c
        }
    };
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FERROCAST_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("RUNTIME_DIRECTORY", runtime_dir);
    cmd.env("XDG_RUNTIME_DIR", runtime_dir);
    cmd.env_remove("RUST_LOG");
    // The suite runs once with one loop and once with two (`tests/run.sh`).
    if let Some(loops) = loops() {
        cmd.env("FERROCAST_LOOPS", loops);
    }
    cmd
}

/// How many loops each server of this run has (some observations, such as a process's
/// children or a log line per loop, depend on it).
pub fn loop_count() -> usize {
    match loops().as_deref() {
        None => 1,
        Some("auto") => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) => n.parse().unwrap_or(1),
    }
}

/// The loops every server of this run has: `FERROCAST_TEST_LOOPS`, else the default.
pub fn loops() -> Option<String> {
    std::env::var("FERROCAST_TEST_LOOPS")
        .ok()
        .filter(|l| !l.is_empty())
}

/// Collects the lines of a child's pipe in a background thread.
/// The lines read so far and whether the stream has ended.
type LogState = (Vec<String>, bool);

#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

impl Lines {
    pub fn spawn_reader<R: Read + Send + 'static>(pipe: R) -> Lines {
        let lines = Lines::default();
        let l2 = lines.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let s = strip_ansi(&String::from_utf8_lossy(&buf));
                        let s = s.trim_end_matches(['\n', '\r']).to_string();
                        let (m, c) = &*l2.inner;
                        m.lock().unwrap().0.push(s);
                        c.notify_all();
                    }
                }
            }
            let (m, c) = &*l2.inner;
            m.lock().unwrap().1 = true;
            c.notify_all();
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().0.clone()
    }

    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().0.len()
    }

    /// Whether the pipe reached EOF.
    pub fn closed(&self) -> bool {
        self.inner.0.lock().unwrap().1
    }

    /// Waits until a line with index >= `from` satisfies `pred`; returns it.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.inner;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.0.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            if g.1 {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = c.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits for EOF on the pipe (the process and its children closed it).
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.inner;
        let mut g = m.lock().unwrap();
        while !g.1 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = c.wait_timeout(g, deadline - now).unwrap().0;
        }
        true
    }

    pub fn joined(&self) -> String {
        self.snapshot().join("\n")
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Polls a child until it exits; kills it and panics past the deadline.
pub fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: process did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Result of a CLI run.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `ferrocast ARGS` to completion (deadline 20 s) with extra environment and optional stdin.
pub fn run_cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> CliOutput {
    let rt = tempfile::tempdir().expect("tempdir");
    run_cli_in(rt.path(), args, env, stdin)
}

pub fn run_cli_in(
    runtime_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> CliOutput {
    let mut cmd = command(runtime_dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ferrocast");
    let out = Lines::spawn_reader(child.stdout.take().unwrap());
    let err = Lines::spawn_reader(child.stderr.take().unwrap());
    if let Some(data) = stdin {
        let mut si = child.stdin.take().unwrap();
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = si.write_all(&data);
        });
    }
    let status = wait_child(&mut child, START, &format!("ferrocast {args:?}"));
    out.wait_closed(T);
    err.wait_closed(T);
    CliOutput {
        status,
        stdout: out.joined(),
        stderr: err.joined(),
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Options for starting a server beyond the plain `Server::start(args, env)`.
#[derive(Default)]
pub struct Opts<'a> {
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Use this FIFO path instead of `<tempdir>/broadcast.fifo`.
    pub fifo: Option<PathBuf>,
    /// Set RLIMIT_NOFILE (soft and hard) of the server process.
    pub nofile: Option<u64>,
    /// Pass `--port N` instead of `--port 0`.
    pub port: Option<u16>,
    /// A command prefix the binary is run through (see [`command_wrapped`]); the prefix must
    /// end by exec'ing the binary, so the server's pid is the child's pid.
    pub wrap: &'a [&'a str],
}

pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
    fifo: PathBuf,
    host: String,
    port: u16,
    logs: Lines,
    exit: Option<ExitStatus>,
}

impl Server {
    /// `ferrocast websocket --port 0 --fifo <tempdir>/broadcast.fifo ARGS...` with
    /// RUST_LOG=ferrocast=debug; waits for the `listening on` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_opts(Opts {
            args,
            env,
            ..Default::default()
        })
    }

    pub fn start_opts(opts: Opts) -> Server {
        match Server::try_start_opts(opts) {
            Ok(s) => s,
            Err(e) => panic!("server did not start: {e}"),
        }
    }

    /// Like `start_opts` but returns the collected stderr if the server exits or never logs
    /// its listening line.
    pub fn try_start_opts(opts: Opts) -> Result<Server, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = opts
            .fifo
            .clone()
            .unwrap_or_else(|| dir.path().join("broadcast.fifo"));
        let mut cmd = command_wrapped(dir.path(), opts.wrap);
        cmd.arg("websocket")
            .arg("--port")
            .arg(opts.port.unwrap_or(0).to_string())
            .arg("--fifo")
            .arg(&fifo);
        cmd.args(opts.args);
        cmd.env("RUST_LOG", "ferrocast=debug");
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = opts.nofile {
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn ferrocast websocket");
        let logs = Lines::spawn_reader(child.stderr.take().unwrap());
        let line = logs.wait_for(0, START, |l| parse_listening(l).is_some());
        let Some(line) = line else {
            let _ = child.kill();
            let st = child.wait().ok();
            logs.wait_closed(Duration::from_secs(5));
            return Err(format!(
                "no `listening on` line (exit {st:?}); stderr:\n{}",
                logs.joined()
            ));
        };
        let (host, port) = parse_listening(&line).unwrap();
        let host = match host.as_str() {
            "0.0.0.0" | "[::]" | "::" => "127.0.0.1".to_string(),
            _ => host,
        };
        Ok(Server {
            child,
            dir,
            fifo,
            host,
            port,
            logs,
            exit: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    pub fn fifo(&self) -> &Path {
        &self.fifo
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn logs(&self) -> Vec<String> {
        self.logs.snapshot()
    }
    pub fn logs_text(&self) -> String {
        self.logs.joined()
    }
    /// Index to pass to `wait_for_log_since` to only look at lines logged after now.
    pub fn log_mark(&self) -> usize {
        self.logs.len()
    }
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.logs.wait_for(0, timeout, |l| l.contains(needle))
    }
    /// Waits until the server's reload after `mark` is complete: the loop's `configuration
    /// reloaded`, or with several loops the supervisor's word that every loop's is.
    pub fn wait_for_reload(&self, mark: usize, timeout: Duration) -> Option<String> {
        // Several loops: their supervisor says when every loop's reload is complete (the app
        // store's table read again too). One loop says so itself.
        let supervised = self.logs().iter().any(|l| l.contains(" supervising "));
        let needle = if supervised {
            "every loop reloaded its configuration"
        } else {
            "configuration reloaded"
        };
        self.wait_for_log_since(mark, needle, timeout)
            .map(|_| needle.to_string())
    }

    pub fn wait_for_log_since(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        self.logs.wait_for(mark, timeout, |l| l.contains(needle))
    }
    pub fn wait_for_log_where(
        &self,
        mark: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        self.logs.wait_for(mark, timeout, pred)
    }
    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill(2)");
    }
    /// Waits for the server to exit; panics (with the logs) past the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(st);
                self.logs.wait_closed(Duration::from_secs(5));
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "server did not exit within {timeout:?}; logs:\n{}",
                    self.logs_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(st) => {
                self.exit = Some(st);
                false
            }
            None => true,
        }
    }

    // --- convenience wrappers ------------------------------------------------------------------

    pub fn ws(&self, path: &str) -> Client {
        connect(&self.addr(), path, &[])
            .unwrap_or_else(|e| panic!("connect {path}: {e:?}\nlogs:\n{}", self.logs_text()))
    }
    /// A channel-protocol client (`/ws`).
    pub fn channel_client(&self) -> Client {
        self.ws("/ws")
    }
    pub fn try_ws(&self, path: &str, headers: &[(&str, &str)]) -> Result<Client, ConnectError> {
        connect(&self.addr(), path, headers)
    }
    pub fn raw(&self) -> RawConn {
        RawConn::connect(&self.addr())
    }
    /// One unlabelled sample of `/metrics`: `ferrocast_{name} <value>`; panics when absent.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics").body_text();
        let full = format!("ferrocast_{name}");
        text.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(full.as_str())).then(|| it.next())?
            })
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no {full} sample in /metrics:\n{text}"))
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(&self.addr(), path)
    }
    /// Writes `data` to this server's FIFO.
    pub fn publish(&self, data: &[u8]) {
        fifo_write(&self.fifo, data);
    }
    pub fn publish_line(&self, line: &str) {
        let mut v = line.as_bytes().to_vec();
        v.push(b'\n');
        fifo_write(&self.fifo, &v);
    }
    pub fn publish_json(&self, v: &Value) {
        self.publish_line(&v.to_string());
    }
    /// Publishes through REST (`POST /apps/app-id/events`, the test app's bearer secret);
    /// panics unless it is accepted.
    pub fn rest_event(&self, body: &Value) {
        let body = body.to_string();
        let req = format!(
            "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = TcpStream::connect(self.addr()).expect("connect");
        s.write_all(req.as_bytes()).expect("write");
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "REST event refused: {resp}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            self.logs.wait_closed(Duration::from_secs(2));
            eprintln!(
                "----- ferrocast server log (port {}) -----\n{}\n-----",
                self.port,
                self.logs_text()
            );
        }
    }
}

/// Parses a log line matching `listening on wss?://[^\s/]+:(\d+)`.
pub fn parse_listening(line: &str) -> Option<(String, u16)> {
    let i = line.find("listening on ")?;
    let rest = &line[i + "listening on ".len()..];
    let rest = rest
        .strip_prefix("ws://")
        .or_else(|| rest.strip_prefix("wss://"))?;
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(rest.len());
    let hostport = &rest[..end];
    let colon = hostport.rfind(':')?;
    let port: u16 = hostport[colon + 1..].parse().ok()?;
    let host = hostport[..colon].to_string();
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

// ---------------------------------------------------------------------------------------------
// FIFO
// ---------------------------------------------------------------------------------------------

/// Opens the FIFO for writing. Opening non-blocking first makes "nobody reads it" an error
/// (ENXIO) instead of a hang; the descriptor is then switched back to blocking writes.
pub fn fifo_open(path: &Path) -> std::fs::File {
    let deadline = Instant::now() + T;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => {
                let fd = f.as_raw_fd();
                unsafe {
                    let fl = libc::fcntl(fd, libc::F_GETFL);
                    assert!(fl >= 0);
                    assert_eq!(libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK), 0);
                }
                return f;
            }
            // The server may be re-creating its FIFO: retry until the deadline.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot open FIFO {} for writing: {e}", path.display()),
        }
    }
}

pub fn fifo_write(path: &Path, data: &[u8]) {
    let mut f = fifo_open(path);
    f.write_all(data).expect("write to FIFO");
}

pub fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

/// Waits until `pred()` holds; false past the deadline.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket client (tungstenite)
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Refusal {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }
}

#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with a non-101 HTTP response.
    Refused(Refusal),
    /// No answer to the handshake within the deadline.
    NoAnswer,
    /// Connection failed, reset or closed without an HTTP answer.
    Failed(String),
}

impl ConnectError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectError::Refused(r) => Some(r.status),
            _ => None,
        }
    }
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
    /// Ping frames seen while reading.
    pub pings: usize,
}

/// Connects a WebSocket client to `ws://addr{path}` with extra/overriding request headers.
pub fn connect(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Client, ConnectError> {
    connect_timeout(addr, path, headers, T)
}

pub fn connect_timeout(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let stream =
        TcpStream::connect(addr).map_err(|e| ConnectError::Failed(format!("tcp connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _resp)) => Ok(Client { ws, pings: 0 }),
        Err(tungstenite::HandshakeError::Interrupted(_)) => Err(ConnectError::NoAnswer),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let mut h = HashMap::new();
            for (k, v) in resp.headers() {
                h.insert(
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                );
            }
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(ConnectError::Refused(Refusal {
                status: resp.status().as_u16(),
                headers: h,
                body,
            }))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e)))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ConnectError::NoAnswer)
        }
        Err(tungstenite::HandshakeError::Failure(e)) => Err(ConnectError::Failed(e.to_string())),
    }
}

/// Whether `got` is the reply `expected`: every field of `expected` is present with that value;
/// the only extra field allowed is `socket_id` (a string), which the server adds to `subscribed`
/// and `pong`.
pub fn is_reply(got: &Value, expected: &Value) -> bool {
    let (Some(g), Some(e)) = (got.as_object(), expected.as_object()) else {
        return false;
    };
    e.iter().all(|(k, v)| g.get(k) == Some(v))
        && g.iter()
            .all(|(k, v)| e.contains_key(k) || (k == "socket_id" && v.is_string()))
}

pub fn assert_reply(got: &Value, expected: &Value, what: &str) {
    assert!(
        is_reply(got, expected),
        "{what}: expected reply {expected} (+ optional socket_id), got {got}"
    );
}

/// What a read returned.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<(u16, String)>),
    /// The connection ended without (further) close frame: EOF, reset, ...
    Gone(String),
    Timeout,
}

impl Client {
    fn set_timeout(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let left = (deadline - now).max(Duration::from_millis(1));
        self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
        true
    }

    /// Next data or close event (pings are answered by tungstenite and counted).
    pub fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.set_timeout(deadline) {
                return Event::Timeout;
            }
            match self.ws.read() {
                Ok(Message::Text(t)) => return Event::Text(t.as_str().to_string()),
                Ok(Message::Binary(b)) => return Event::Binary(b.to_vec()),
                Ok(Message::Ping(_)) => self.pings += 1,
                Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {}
                Ok(Message::Close(cf)) => {
                    return Event::Close(
                        cf.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                    );
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Event::Timeout;
                    }
                }
                Err(e) => return Event::Gone(e.to_string()),
            }
        }
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).expect("send text");
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    pub fn recv_text(&mut self, timeout: Duration) -> String {
        match self.next_event(timeout) {
            Event::Text(t) => t,
            other => panic!("expected a text message within {timeout:?}, got {other:?}"),
        }
    }

    pub fn recv_json(&mut self, timeout: Duration) -> Value {
        let t = self.recv_text(timeout);
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t:?}"))
    }

    /// Reads until a close frame arrives; returns (code, reason). Text received meanwhile is
    /// skipped. Panics on timeout or if the connection ends without a close frame.
    pub fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline.saturating_duration_since(Instant::now())) {
                Event::Text(_) | Event::Binary(_) => continue,
                Event::Close(Some(c)) => return c,
                Event::Close(None) => return (1005, String::new()),
                other => panic!("expected a close frame within {timeout:?}, got {other:?}"),
            }
        }
    }

    /// Subscribes and checks the `subscribed` reply; returns the socket id it carries, if any.
    pub fn subscribe(&mut self, channel: &str) -> Option<String> {
        self.send_json(&json!({"action": "subscribe", "channel": channel}));
        let v = self.recv_json(T);
        assert_reply(
            &v,
            &json!({"event": "subscribed", "channel": channel}),
            &format!("subscribe {channel:?}"),
        );
        v.get("socket_id")
            .and_then(|s| s.as_str())
            .map(String::from)
    }

    pub fn unsubscribe(&mut self, channel: &str) {
        self.send_json(&json!({"action": "unsubscribe", "channel": channel}));
        let v = self.recv_json(T);
        assert_reply(
            &v,
            &json!({"event": "unsubscribed", "channel": channel}),
            &format!("unsubscribe {channel:?}"),
        );
    }

    /// Channel-protocol round trip: `{"action":"ping"}` → `{"event":"pong"}`; returns the
    /// socket id the pong carries, if any.
    pub fn ping_pong(&mut self) -> Option<String> {
        self.send_json(&json!({"action": "ping"}));
        let v = self.recv_json(T);
        assert_reply(&v, &json!({"event": "pong"}), "ping");
        v.get("socket_id")
            .and_then(|s| s.as_str())
            .map(String::from)
    }

    /// Raw-mode round trip: `ping` → `pong`.
    pub fn raw_ping_pong(&mut self) {
        self.send_text("ping");
        assert_eq!(self.recv_text(T), "pong");
    }

    /// Sends a normal close and waits for the server's close reply.
    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let deadline = Instant::now() + T;
        loop {
            if !self.set_timeout(deadline) {
                return;
            }
            match self.ws.read() {
                Ok(_) => continue,
                Err(_) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_text()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: the payload is deflated (permessage-deflate).
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Builds one frame. `rsv` is the 3 reserved bits (0..=7); `mask` None sends it unmasked.
pub fn build_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        f.push(m | n as u8);
    } else if n <= 0xffff {
        f.push(m | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A masked client frame with a fixed non-trivial key.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    build_frame(fin, 0, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// What `RawConn::read_frame` saw.
#[derive(Debug)]
pub enum RawEvent {
    Frame(Frame),
    Eof,
    Error(String),
    Timeout,
}

pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    pub fn connect(addr: &str) -> RawConn {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        let _ = stream.set_nodelay(true);
        stream.set_write_timeout(Some(T)).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Wraps an already connected stream (e.g. one with a tiny receive buffer).
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Sends bytes; errors (the server may already have closed) are returned, not panicked.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Reads more bytes into the buffer. Ok(false) on timeout, Ok(true) on data, Err on EOF/error.
    fn fill(&mut self, deadline: Instant) -> Result<bool, RawEvent> {
        if self.eof {
            return Err(RawEvent::Eof);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        self.stream
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .unwrap();
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                Err(RawEvent::Eof)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => {
                self.eof = true;
                Err(RawEvent::Error(e.to_string()))
            }
        }
    }

    /// Reads everything until EOF (or deadline); returns the bytes and whether EOF was seen.
    pub fn read_to_end(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(true) => continue,
                Ok(false) => return (std::mem::take(&mut self.buf), false),
                Err(_) => return (std::mem::take(&mut self.buf), true),
            }
        }
    }

    /// Reads one HTTP response head (+ Content-Length body). None if the connection ended or
    /// the deadline passed before a full head arrived.
    pub fn read_http_response(&mut self, timeout: Duration) -> Option<HttpResponse> {
        let deadline = Instant::now() + timeout;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill(deadline) {
                Ok(true) => {}
                _ => return None,
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next()?;
        assert!(
            version.starts_with("HTTP/1."),
            "bad status line {status_line:?}"
        );
        let status: u16 = parts.next()?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        self.buf.drain(..head_end);
        let clen = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body = if status == 101 {
            Vec::new()
        } else if let Some(n) = clen {
            while self.buf.len() < n {
                if !matches!(self.fill(deadline), Ok(true)) {
                    break;
                }
            }
            let n = n.min(self.buf.len());
            self.buf.drain(..n).collect()
        } else {
            // No length: the body runs to EOF.
            let (mut rest, _) =
                self.read_to_end(deadline.saturating_duration_since(Instant::now()));
            let mut b = std::mem::take(&mut self.buf);
            b.append(&mut rest);
            b
        };
        Some(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends a correct upgrade request for `path` and checks the 101 answer.
    pub fn handshake(&mut self, path: &str) {
        self.handshake_with(path, "");
    }

    /// [`RawConn::handshake`] with extra header lines (each ending in CRLF); returns the 101.
    pub fn handshake_with(&mut self, path: &str, headers: &str) -> HttpResponse {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        self.send(req.as_bytes()).expect("send handshake");
        let resp = self
            .read_http_response(T)
            .expect("no answer to the handshake");
        assert_eq!(resp.status, 101, "handshake on {path}: {resp:?}");
        assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
        resp
    }

    /// Reads one frame sent by the server.
    pub fn read_frame(&mut self, timeout: Duration) -> RawEvent {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return RawEvent::Frame(frame);
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => return RawEvent::Timeout,
                Err(e) => return e,
            }
        }
    }

    /// Reads frames (never answering pings) until a close frame; returns (code, reason).
    pub fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_frame(deadline.saturating_duration_since(Instant::now())) {
                RawEvent::Frame(f) if f.opcode == OP_CLOSE => return close_payload(&f.payload),
                RawEvent::Frame(_) => continue,
                other => panic!("expected a close frame within {timeout:?}, got {other:?}"),
            }
        }
    }

    /// Reads frames until a text frame; panics on anything else but pings/pongs.
    pub fn recv_text(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_frame(deadline.saturating_duration_since(Instant::now())) {
                RawEvent::Frame(f) if f.opcode == OP_TEXT && f.fin => {
                    return String::from_utf8(f.payload).expect("utf-8");
                }
                RawEvent::Frame(f) if f.opcode == OP_PING || f.opcode == OP_PONG => continue,
                other => panic!("expected a text frame within {timeout:?}, got {other:?}"),
            }
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn close_payload(p: &[u8]) -> (u16, String) {
    if p.len() < 2 {
        return (1005, String::new());
    }
    (
        u16::from_be_bytes([p[0], p[1]]),
        String::from_utf8_lossy(&p[2..]).into_owned(),
    )
}

/// One frame at the start of `b` (masked or not), and the bytes it used; `None` if incomplete.
pub fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let mut len = (b[1] & 0x7f) as usize;
    let mut i = 2;
    if len == 126 {
        if b.len() < 4 {
            return None;
        }
        len = u16::from_be_bytes([b[2], b[3]]) as usize;
        i = 4;
    } else if len == 127 {
        if b.len() < 10 {
            return None;
        }
        len = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
        i = 10;
    }
    let mask = if masked {
        if b.len() < i + 4 {
            return None;
        }
        let k = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        i += 4;
        Some(k)
    } else {
        None
    };
    if b.len() < i + len {
        return None;
    }
    let mut payload = b[i..i + len].to_vec();
    if let Some(k) = mask {
        for (j, x) in payload.iter_mut().enumerate() {
            *x ^= k[j % 4];
        }
    }
    Some((
        Frame {
            fin,
            rsv1: b[0] & 0x40 != 0,
            opcode,
            payload,
        },
        i + len,
    ))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// `GET path` over a fresh connection (`Connection: close`).
pub fn http_get(addr: &str, path: &str) -> HttpResponse {
    let mut c = RawConn::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send GET");
    c.read_http_response(T)
        .unwrap_or_else(|| panic!("no HTTP answer to GET {path}"))
}

/// Sends `request` bytes on a fresh connection and reads the HTTP answer (None: closed without one).
pub fn http_raw(addr: &str, request: &[u8]) -> Option<HttpResponse> {
    let mut c = RawConn::connect(addr);
    let _ = c.send(request);
    c.read_http_response(T)
}

/// A connected TCP stream whose receive buffer is set tiny before connecting, so that a client
/// that does not read makes the server's queue grow quickly.
pub fn tiny_rcvbuf_stream(addr: &str) -> TcpStream {
    let dst: SocketAddrV4 = addr.parse().expect("IPv4 addr");
    connect_from(Ipv4Addr::LOCALHOST, dst, Some(4096)).expect("connect")
}

/// Writes a JSON config file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).expect("write config");
    p
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// A private `redis-server` (no persistence) bound to one loopback address; killed on drop.
pub struct Redis {
    pub host: String,
    pub port: u16,
    child: Child,
}

impl Redis {
    /// On 127.0.0.1:`port`.
    pub fn start_on(port: u16) -> Redis {
        Redis::start_with("127.0.0.1", port, &[])
    }

    /// On 127.0.0.1, a free port.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Bound to `bind`:`port`, with extra `redis-server` arguments (e.g.
    /// `["--client-output-buffer-limit", "pubsub 0 0 0"]`).
    pub fn start_with(bind: &str, port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                bind,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        let up = wait_until(T, || {
            TcpStream::connect((bind, port))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"PING\r\n")?;
                    let mut buf = [0u8; 7];
                    s.read_exact(&mut buf)?;
                    Ok(&buf == b"+PONG\r\n")
                })
                .unwrap_or(false)
        });
        assert!(up, "redis-server did not come up on {bind}:{port}");
        Redis {
            host: bind.to_string(),
            port,
            child,
        }
    }

    /// One command through the real `redis-cli`; its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.host, "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli must be installed (tests/run.sh installs redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- process limits and memory -------------------------------------------------------------

/// One heavy test at a time within a test binary (cargo runs a file's tests on 2 threads).
pub fn heavy() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises this process's RLIMIT_NOFILE to its hard limit (20 000 on the CI machines); servers
/// spawned afterwards inherit it. Returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "setrlimit: {}",
            io::Error::last_os_error()
        );
    }
    lim.rlim_cur
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A TCP connection from `src` (any 127.x.y.z address is local on Linux) to `dst`, optionally
/// with a small receive buffer set before connecting (so a client that does not read makes the
/// server's queue grow at once).
pub fn connect_from(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    rcvbuf: Option<i32>,
) -> io::Result<TcpStream> {
    fn sin(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd); // closes fd on every error path below
        if let Some(sz) = rcvbuf {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &sz as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let local = sin(SocketAddrV4::new(src, 0));
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(dst);
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(T))?;
        stream.set_write_timeout(Some(T))?;
        Ok(stream)
    }
}

// ---- handshakes ----------------------------------------------------------------------------

/// The HTTP status a handshake got: 101, or the refusal's. Panics on no answer / no HTTP reply.
pub fn handshake_status(r: &Result<Client, ConnectError>) -> u16 {
    match r {
        Ok(_) => 101,
        Err(ConnectError::Refused(refusal)) => refusal.status,
        Err(e) => panic!("handshake got no HTTP answer: {e:?}"),
    }
}

/// A handshake on `path` (with `cookie_header`) must be refused with `want`.
pub fn expect_refused(s: &Server, path: &str, cookie_header: Option<&str>, want: u16) {
    let headers: Vec<(&str, &str)> = cookie_header.map(|c| ("Cookie", c)).into_iter().collect();
    let r = s.try_ws(path, &headers);
    let got = handshake_status(&r);
    assert_eq!(
        got,
        want,
        "handshake on {path} with cookie {cookie_header:?}: expected {want}, got {got}\nlogs:\n{}",
        s.logs_text()
    );
}

/// What `examples/route.php` answers `user`'s raw-mode connection, route by route.
pub fn check_example_routes(a: &mut Client, user: &str) {
    a.send_text("/whoami");
    let v = a.recv_json(T);
    assert_eq!(
        (v["route"].as_str(), v["user"].as_str()),
        (Some("/whoami"), Some(user)),
        "{v}"
    );
    a.send_text("/users/42");
    assert_eq!(
        a.recv_json(T),
        json!({"route": "/users/{id}", "id": 42, "requested_by": user})
    );
    a.send_text(r#"{"route":"/echo","text":"héllo"}"#);
    assert_eq!(a.recv_json(T), json!({"route": "/echo", "echo": "héllo"}));
    a.send_text("/silent");
    assert!(
        a.recv_text(T)
            .starts_with("[ferrocast] the application produced no output")
    );
    a.send_text("/nowhere");
    assert_eq!(a.recv_json(T)["error"], "no route");
}
