//! FastCGI jobs: a request to a FastCGI application (php-fpm) over a connection that is kept
//! for the next request (`FCGI_KEEP_CONN`), driven by the loop like a child's output. A request
//! holds a slot of the workers' pool (it counts against `max_workers` and waits in the same
//! queue); its connection is registered under the slot's token, readable and writable.
//!
//! php-fpm serves one request per connection at a time and keeps the worker process attached
//! to a kept connection, so idle connections are capped at `max_workers`, and the application
//! should give ferrocast a pool of its own (`examples/php-fpm-pool.conf`).

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::{JobId, Outcome};
use crate::fastcgi::{self, Reply};
use crate::job::{FcgiTarget, Handler, Job};

/// Every request's id: one request per connection at a time.
const REQUEST_ID: u16 = 1;
/// Bytes read from one connection per call before the loop serves others.
const READ_BUDGET: usize = 256 * 1024;
/// Lines of a script's STDERR logged per request.
const STDERR_LINES: usize = 20;

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// A non-blocking connect: a TCP connection completes (or fails) later, seen on the first
    /// write or read.
    fn connect(target: &FcgiTarget) -> io::Result<Stream> {
        match target {
            FcgiTarget::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            FcgiTarget::Tcp(addr) => TcpStream::connect(*addr).map(Stream::Tcp),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
}

/// A connection to one application.
struct Conn {
    target: FcgiTarget,
    stream: Stream,
}

/// One request in flight.
struct Request {
    id: JobId,
    conn: Conn,
    /// The connection came from the idle list: php-fpm may have closed it since.
    reused: bool,
    deadline: Instant,
    script: String,
    bytes: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    reply: Reply,
    max_output: usize,
    /// Some answer came: from here on a failure is the request's, not a stale connection's.
    answered: bool,
    /// The request ended as the protocol says, nothing after it: the connection can be kept.
    clean: bool,
}

/// Where a request stands after its connection was served.
enum Progress {
    Pending,
    Done(Outcome),
}

/// FastCGI requests in flight and the connections kept between them.
pub(super) struct FastCgi {
    slots: Vec<Option<Request>>,
    free: Vec<usize>,
    idle: Vec<Conn>,
    max_idle: usize,
    token_base: usize,
}

impl FastCgi {
    pub(super) fn new(token_base: usize, max_idle: usize) -> FastCgi {
        FastCgi {
            slots: Vec::new(),
            free: Vec::new(),
            idle: Vec::new(),
            max_idle,
            token_base,
        }
    }

    pub(super) fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base
    }

    /// Sends job `id` to its application. `Ok(Some)`: it ended at once (an answer that came
    /// with the first read); `Err`: it could not be sent (the reason is for the log).
    pub(super) fn start(
        &mut self,
        registry: &Registry,
        id: JobId,
        job: Job,
    ) -> Result<Option<Outcome>, String> {
        let Handler::FastCgi { target, script } = job.handler else {
            return Err("not a FastCGI job".into());
        };
        let script = script.to_string_lossy().into_owned();
        let bytes = encode(&job.env, &script, &job.stdin)?;
        let (conn, reused) = self.connection(&target)?;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let mut req = Request {
            id,
            conn,
            reused,
            deadline: Instant::now() + job.deadline,
            script,
            bytes,
            written: 0,
            inbuf: Vec::new(),
            reply: Reply::new(REQUEST_ID, job.max_output),
            max_output: job.max_output,
            answered: false,
            clean: false,
        };
        let token = Token(self.token_base + slot);
        if let Err(e) = register(registry, &mut req.conn, token) {
            self.free.push(slot);
            return Err(format!("register: {e}"));
        }
        self.slots[slot] = Some(req);
        Ok(self.on_ready(registry, token).map(|(_, outcome)| outcome))
    }

    /// The connection of a slot is ready: write what is left of the request, read what came.
    pub(super) fn on_ready(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> Option<(JobId, Outcome)> {
        let slot = token.0.checked_sub(self.token_base)?;
        let req = self.slots.get_mut(slot)?.as_mut()?;
        let progress = match req.serve(registry, token) {
            Ok(p) => p,
            Err(e) if req.reused && !req.answered => {
                // A kept connection php-fpm had closed: once more on a fresh one.
                log::debug!(
                    "fastcgi {}: kept connection failed ({e}), reconnecting",
                    req.conn.target
                );
                match req.reconnect(registry, token) {
                    Ok(()) => req
                        .serve(registry, token)
                        .unwrap_or_else(|e| Progress::Done(failure(req, &e))),
                    Err(e) => Progress::Done(failure(req, &e)),
                }
            }
            Err(e) => Progress::Done(failure(req, &e)),
        };
        match progress {
            Progress::Pending => None,
            Progress::Done(outcome) => Some(self.finish(registry, slot, outcome)),
        }
    }

    /// Aborts every request past its deadline: `TimedOut`.
    pub(super) fn expire(
        &mut self,
        registry: &Registry,
        now: Instant,
        out: &mut Vec<(JobId, Outcome)>,
    ) -> usize {
        let mut ended = 0;
        for slot in 0..self.slots.len() {
            let Some(req) = self.slots[slot].as_mut() else {
                continue;
            };
            if req.deadline > now {
                continue;
            }
            // Best effort: the connection is closed right after, which php-fpm notices too.
            let _ = req.conn.stream.write(&fastcgi::encode_abort(REQUEST_ID));
            let _ = registry.deregister(req.conn.stream.source());
            let Some(req) = self.slots[slot].take() else {
                continue;
            };
            log::warn!(
                "fastcgi {}: {} did not answer in time",
                req.conn.target,
                req.script
            );
            self.free.push(slot);
            out.push((req.id, Outcome::TimedOut));
            ended += 1;
        }
        ended
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|r| r.deadline).min()
    }

    /// Shutdown: every request and connection goes (closing them is all php-fpm needs).
    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.idle.clear();
    }

    /// A kept connection to `target`, or a new one.
    fn connection(&mut self, target: &FcgiTarget) -> Result<(Conn, bool), String> {
        if let Some(i) = self.idle.iter().position(|c| &c.target == target) {
            return Ok((self.idle.swap_remove(i), true));
        }
        let stream =
            Stream::connect(target).map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let conn = Conn {
            target: target.clone(),
            stream,
        };
        Ok((conn, false))
    }

    fn finish(&mut self, registry: &Registry, slot: usize, outcome: Outcome) -> (JobId, Outcome) {
        let req = self.slots[slot].take();
        self.free.push(slot);
        let Some(mut req) = req else {
            return (0, outcome);
        };
        let _ = registry.deregister(req.conn.stream.source());
        if req.clean && self.idle.len() < self.max_idle {
            self.idle.push(req.conn);
        }
        (req.id, outcome)
    }
}

impl Request {
    fn serve(&mut self, registry: &Registry, token: Token) -> io::Result<Progress> {
        while self.written < self.bytes.len() {
            match self.conn.stream.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        loop {
            match self.conn.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the application closed the connection before answering",
                    ));
                }
                Ok(n) => {
                    self.answered = true;
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    let used = self.reply.read(&self.inbuf).map_err(io::Error::other)?;
                    self.inbuf.drain(..used);
                    if let Some(end) = self.reply.end() {
                        self.clean = end.protocol_status == 0 && self.inbuf.is_empty();
                        return Ok(Progress::Done(self.outcome()));
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        // More may be waiting: re-arm the edge-triggered registration.
                        registry.reregister(
                            self.conn.stream.source(),
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        return Ok(Progress::Pending);
                    }
                }
                Err(e) if would_block(&e) => return Ok(Progress::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn reconnect(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let _ = registry.deregister(self.conn.stream.source());
        self.conn.stream = Stream::connect(&self.conn.target)?;
        self.reused = false;
        self.written = 0;
        self.inbuf.clear();
        self.reply = Reply::new(REQUEST_ID, self.max_output);
        register(registry, &mut self.conn, token)
    }

    /// What the answer means, once END_REQUEST came.
    fn outcome(&mut self) -> Outcome {
        let reply = std::mem::replace(&mut self.reply, Reply::new(REQUEST_ID, 0));
        for line in String::from_utf8_lossy(reply.stderr())
            .lines()
            .take(STDERR_LINES)
        {
            log::warn!("fastcgi {}: {line}", self.script);
        }
        let status = reply.end().map_or(0, |e| e.protocol_status);
        if status != 0 {
            let why = match status {
                1 => "cannot multiplex connections",
                2 => "overloaded",
                3 => "unknown role",
                _ => "refused",
            };
            return Outcome::SpawnFailed(format!(
                "{} refused the request: {why}",
                self.conn.target
            ));
        }
        let (out, truncated) = reply.into_output();
        match fastcgi::parse_response(&out) {
            Ok(r) => Outcome::Answered {
                status: r.status,
                body: r.body.to_vec(),
                truncated,
            },
            Err(e) => Outcome::SpawnFailed(format!("{}: {e}", self.script)),
        }
    }
}

/// The request bytes: the job's environment as parameters (with what PHP needs to find the
/// script and read the body), its stdin as the body.
fn encode(env: &[(String, String)], script: &str, stdin: &[u8]) -> Result<Vec<u8>, String> {
    let length = stdin.len().to_string();
    let has = |name: &str| env.iter().any(|(k, _)| k == name);
    let mut extra: Vec<(&str, &str)> =
        vec![("SCRIPT_FILENAME", script), ("CONTENT_LENGTH", &length)];
    // PHP sends only headers to a request without a method, and reads a body only up to
    // CONTENT_LENGTH.
    if !has("REQUEST_METHOD") {
        extra.push((
            "REQUEST_METHOD",
            if stdin.is_empty() { "GET" } else { "POST" },
        ));
    }
    if !stdin.is_empty() && !has("CONTENT_TYPE") {
        extra.push(("CONTENT_TYPE", "text/plain"));
    }
    let pairs = env
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "SCRIPT_FILENAME" | "CONTENT_LENGTH"))
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .chain(extra.into_iter().map(|(k, v)| (k, v.as_bytes())));
    let pairs = fastcgi::encode_pairs(pairs).map_err(|e| e.to_string())?;
    Ok(fastcgi::encode_request(REQUEST_ID, &pairs, stdin))
}

fn register(registry: &Registry, conn: &mut Conn, token: Token) -> io::Result<()> {
    registry.register(
        conn.stream.source(),
        token,
        Interest::READABLE | Interest::WRITABLE,
    )
}

/// A connect still in progress reads and writes as "would block" (`ENOTCONN` on a read).
fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOTCONN)
}

fn failure(req: &Request, e: &io::Error) -> Outcome {
    log::warn!("fastcgi {}: {}: {e}", req.conn.target, req.script);
    Outcome::SpawnFailed(format!("{}: {e}", req.conn.target))
}
