//! What the server asks its forked workers to do, and what it does with their answers:
//! session validation before the 101, application routing of raw-mode messages (CarbonPHP's
//! `startApplication`), and per-user FIFOs.
//!
//! The loop never waits on a child: a job is submitted, the connection waits in a state of its
//! own, and the outcome arrives later as an event like any other.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use slab::Slab;

use crate::config::HandlerConfig;
use crate::conn::{Mode, Phase};
use crate::fifo::Fifo;
use crate::http::{self, Request};
use crate::server::Server;
use crate::worker::{Handler, Job, Outcome};
use crate::ws;

/// First token of the worker range ([`crate::worker::TOKEN_SPAN`] tokens).
pub const WORKER_TOKENS: usize = 1 << 40;
/// First token of the per-user FIFOs.
pub const USER_FIFO_TOKENS: usize = 1 << 39;
/// Routed messages a connection may have waiting behind the one in flight.
const MAX_WAITING_PER_CONNECTION: usize = 64;

/// Why a job runs.
pub enum JobFor {
    /// A handshake waiting for its verdict.
    Validate {
        key: usize,
        conn_id: u64,
        mode: Mode,
        accept: String,
        started: std::time::Instant,
    },
    /// A raw-mode message; the output goes back to that connection.
    Route { key: usize, conn_id: u64 },
    /// A line from a user's FIFO in `route` mode; the output goes to all the user's connections.
    UserRoute { user: String },
    /// A signed webhook batch.
    Webhook(crate::pusher::webhooks::Delivery),
    /// The Redis host name, resolved outside the loop (`getaddrinfo` blocks).
    Resolve { host: String },
}

/// How long a resolver child may take (the link's own connect timeout also applies).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Routing state of a connection: kept only for raw-mode connections when routing is on.
#[derive(Default)]
pub struct RouteState {
    /// The handshake's CGI environment, the base of every routed request's.
    pub env: Vec<(String, String)>,
    pub inflight: usize,
    pub waiting: VecDeque<String>,
}

/// The CGI-style environment of a handshake: what PHP's `$_SERVER`, `$_COOKIE` and session code
/// expect. Nothing of the server's own environment (secrets included) is passed on.
pub fn cgi_env(
    req: &Request,
    peer: SocketAddr,
    server_port: u16,
    socket_id: &str,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        (
            "SERVER_SOFTWARE".into(),
            format!("ferrocast/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("REQUEST_METHOD".into(), req.method.into()),
        ("REQUEST_URI".into(), req.target.into()),
        ("QUERY_STRING".into(), req.query().into()),
        ("REMOTE_ADDR".into(), peer.ip().to_string()),
        ("REMOTE_PORT".into(), peer.port().to_string()),
        ("SERVER_PORT".into(), server_port.to_string()),
        ("FERROCAST_SOCKET_ID".into(), socket_id.into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
    ];
    for (name, value) in &req.headers {
        let key: String = name
            .chars()
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        // Only names a shell would accept, and never a second copy of one we set.
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let var = format!("HTTP_{key}");
        if env.iter().any(|(k, _)| *k == var) {
            continue;
        }
        env.push((var, String::from_utf8_lossy(value).into_owned()));
    }
    env
}

/// A user id as a file name: kept when plainly safe; hex-encoded otherwise; a SHA-256 digest
/// when even that would be too long for a file name. Ids that look like the encoded forms are
/// encoded too, so two users can never share a FIFO.
pub fn user_file_name(user: &str) -> String {
    let safe = !user.is_empty()
        && user.len() <= 128
        && !user.starts_with('.')
        && !user.starts_with("hex-")
        && !user.starts_with("sha256-")
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if safe {
        return user.to_string();
    }
    let hex = hex::encode(user.as_bytes());
    // 255 bytes per file name, less "hex-" and ".fifo".
    if hex.len() <= 240 {
        format!("hex-{hex}")
    } else {
        use sha2::Digest;
        format!(
            "sha256-{}",
            hex::encode(sha2::Sha256::digest(user.as_bytes()))
        )
    }
}

/// The program a handler runs.
fn handler_argv(cfg: &HandlerConfig, purpose: &str) -> Vec<String> {
    match cfg.handler.as_str() {
        "http" => vec![
            // Our own binary, in a child: the HTTP call never runs in the loop's process.
            "/proc/self/exe".into(),
            "http-request".into(),
            purpose.into(),
            cfg.url.clone(),
        ],
        _ => cfg.command.clone(),
    }
}

/// One open per-user FIFO.
struct UserFifo {
    fifo: Fifo,
    slot: usize,
    conns: Vec<usize>,
}

#[derive(Default)]
pub struct UserFifos {
    by_user: HashMap<String, UserFifo>,
    /// Slot → user, for tokens.
    slots: Slab<String>,
}

impl Server {
    fn job(
        &self,
        cfg: &HandlerConfig,
        purpose: &str,
        env: Vec<(String, String)>,
        stdin: Vec<u8>,
        timeout_secs: u64,
    ) -> Job {
        let mut env = env;
        if cfg.handler == "http" {
            env.push((
                "FERROCAST_HTTP_TIMEOUT_SECS".into(),
                timeout_secs.to_string(),
            ));
            env.push((
                "FERROCAST_MAX_OUTPUT_BYTES".into(),
                self.cfg.max_worker_output_bytes.to_string(),
            ));
        }
        Job {
            handler: Handler::Exec {
                argv: handler_argv(cfg, purpose),
            },
            env,
            stdin,
            deadline: Duration::from_secs(timeout_secs),
            max_output: self.cfg.max_worker_output_bytes,
        }
    }

    /// Starts validating a handshake; the connection waits in `Validating`.
    pub(crate) fn start_validation(
        &mut self,
        key: usize,
        mode: Mode,
        accept: String,
        env: Vec<(String, String)>,
        rest: &[u8],
    ) {
        let job = self.job(
            &self.cfg.validate.clone(),
            "validate",
            env,
            Vec::new(),
            self.cfg.validate_timeout_secs,
        );
        match self
            .workers
            .submit(self.poll.registry(), job, &mut self.finished_jobs)
        {
            Ok(id) => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                conn.phase = Phase::Validating;
                conn.inbuf = rest.to_vec();
                // The worker's deadline rules now; the handshake timer must not fire.
                conn.timer_due = u32::MAX;
                self.jobs.insert(
                    id,
                    JobFor::Validate {
                        key,
                        conn_id: conn.id,
                        mode,
                        accept,
                        started: std::time::Instant::now(),
                    },
                );
                self.stats.workers_started += 1;
            }
            Err(_) => {
                self.stats.workers_refused += 1;
                warn!(
                    "refusing a handshake: all {} workers busy and the queue is full",
                    self.cfg.max_workers
                );
                self.respond_and_close(
                    key,
                    http::response(
                        503,
                        &[("Retry-After", "1")],
                        &http::error_body("too many handshakes being validated; retry"),
                    ),
                );
            }
        }
    }

    /// A raw-mode message for the application.
    pub(crate) fn route_message(&mut self, key: usize, text: &str) {
        let max_inflight = self.cfg.max_inflight_per_connection;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let state = conn.route.get_or_insert_with(Default::default);
        if state.inflight >= max_inflight {
            if state.waiting.len() >= MAX_WAITING_PER_CONNECTION {
                self.reply(
                    key,
                    "[ferrocast] too many requests waiting for the application; slow down",
                );
                return;
            }
            state.waiting.push_back(text.to_string());
            return;
        }
        self.submit_route(key, text);
    }

    fn submit_route(&mut self, key: usize, text: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let conn_id = conn.id;
        let user = conn
            .user
            .as_deref()
            .map(str::to_string)
            .unwrap_or_else(|| conn.socket_id(self.process_id));
        let mut env = conn
            .route
            .as_ref()
            .map(|r| r.env.clone())
            .unwrap_or_default();
        set_var(&mut env, "REQUEST_URI", text);
        set_var(&mut env, "FERROCAST_USER_ID", &user);
        let job = self.job(
            &self.cfg.route.clone(),
            "route",
            env,
            text.as_bytes().to_vec(),
            self.cfg.route_timeout_secs,
        );
        match self
            .workers
            .submit(self.poll.registry(), job, &mut self.finished_jobs)
        {
            Ok(id) => {
                if let Some(state) = self.conns.get_mut(key).and_then(|c| c.route.as_mut()) {
                    state.inflight += 1;
                }
                self.jobs.insert(id, JobFor::Route { key, conn_id });
                self.stats.workers_started += 1;
            }
            Err(_) => {
                self.stats.workers_refused += 1;
                self.reply(
                    key,
                    "[ferrocast] the application is busy (worker queue full); try again",
                );
            }
        }
    }

    /// Handles every finished job.
    pub(crate) fn finish_jobs(&mut self) {
        let mut done = std::mem::take(&mut self.finished_jobs);
        for (id, outcome) in done.drain(..) {
            let Some(why) = self.jobs.remove(&id) else {
                continue;
            };
            if !matches!(outcome, Outcome::Exited { code: 0, .. }) {
                self.stats.workers_failed += 1;
            }
            match why {
                JobFor::Validate {
                    key,
                    conn_id,
                    mode,
                    accept,
                    started,
                } => self.finish_validation(key, conn_id, mode, &accept, started, outcome),
                JobFor::Route { key, conn_id } => {
                    if self.conns.get(key).is_some_and(|c| c.id == conn_id) {
                        let texts = route_replies(&outcome, self.cfg.max_worker_output_bytes);
                        for t in texts {
                            self.route_reply(key, &t);
                        }
                        self.next_route(key);
                    }
                }
                JobFor::Webhook(delivery) => self.finish_webhook(delivery, outcome),
                JobFor::Resolve { host } => self.finish_resolve(&host, &outcome),
                JobFor::UserRoute { user } => {
                    for t in route_replies(&outcome, self.cfg.max_worker_output_bytes) {
                        self.send_to_user(&user, t.as_bytes());
                    }
                }
            }
        }
        self.finished_jobs = done;
    }

    /// Resolves the Redis host name in a child (`ferrocast resolve`), so a slow or dead DNS
    /// server delays the link, never the clients.
    pub(crate) fn start_resolve(&mut self, host: String, port: u16) {
        let job = Job {
            handler: Handler::Exec {
                argv: vec![
                    "/proc/self/exe".into(),
                    "resolve".into(),
                    host.clone(),
                    port.to_string(),
                ],
            },
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
            stdin: Vec::new(),
            deadline: RESOLVE_TIMEOUT,
            max_output: 64 * 1024,
        };
        match self
            .workers
            .submit(self.poll.registry(), job, &mut self.finished_jobs)
        {
            Ok(id) => {
                self.jobs.insert(id, JobFor::Resolve { host });
                self.stats.workers_started += 1;
            }
            Err(_) => {
                self.stats.workers_refused += 1;
                self.link_resolved(Err(format!("cannot resolve {host}: worker queue full")));
            }
        }
    }

    fn finish_resolve(&mut self, host: &str, outcome: &Outcome) {
        let result = resolved_addresses(outcome).map_err(|why| format!("resolving {host}: {why}"));
        self.link_resolved(result);
    }

    fn link_resolved(&mut self, result: Result<Vec<SocketAddr>, String>) {
        if let Some(scaling) = self.scaling.as_mut() {
            scaling
                .link
                .resolved(self.poll.registry(), std::time::Instant::now(), result);
        }
    }

    fn next_route(&mut self, key: usize) {
        let Some(state) = self.conns.get_mut(key).and_then(|c| c.route.as_mut()) else {
            return;
        };
        state.inflight = state.inflight.saturating_sub(1);
        if let Some(next) = state.waiting.pop_front() {
            self.submit_route(key, &next);
        }
    }

    fn finish_validation(
        &mut self,
        key: usize,
        conn_id: u64,
        mode: Mode,
        accept: &str,
        started: std::time::Instant,
        outcome: Outcome,
    ) {
        let Some(conn) = self
            .conns
            .get(key)
            .filter(|c| c.id == conn_id && c.phase == Phase::Validating)
        else {
            return; // the client left meanwhile
        };
        let peer = conn.peer;
        let user = match validation_verdict(&outcome, self.cfg.validate_timeout_secs) {
            Ok(user) => user,
            Err(refusal) => {
                self.refuse_validation(key, peer, refusal);
                return;
            }
        };
        log::debug!("validated {peer} as {user} in {:?}", started.elapsed());
        let rest = self
            .conns
            .get_mut(key)
            .map(|c| std::mem::take(&mut c.inbuf))
            .unwrap_or_default();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.phase = Phase::Request;
            conn.user = Some(user.clone().into());
        }
        self.upgrade(key, mode, accept, None, &rest);
        let Some(app) = self
            .conns
            .get(key)
            .filter(|c| c.phase == Phase::Open)
            .map(|c| c.app())
        else {
            return;
        };
        self.user_attached(app, &user, key);
        if self.cfg.user_fifo != "off" {
            self.add_user_fifo(&user, key);
        }
    }

    fn refuse_validation(&mut self, key: usize, peer: std::net::SocketAddr, refusal: Refusal) {
        let Refusal { forbidden, why } = refusal;
        let status = if forbidden { 403 } else { 401 };
        info!("validation refused {peer} ({status}): {why}");
        self.console_event(
            "worker",
            None,
            None,
            None,
            Some(&format!("validation refused {peer}: {why}")),
        );
        let message = if forbidden {
            "forbidden"
        } else {
            "not logged in"
        };
        self.respond_and_close(key, http::response(status, &[], &http::error_body(message)));
    }

    // ---- per-user FIFOs ------------------------------------------------------------------

    fn user_fifo_path(&self, user: &str) -> PathBuf {
        let dir = self.cfg.fifo.parent().unwrap_or(Path::new("."));
        dir.join("users")
            .join(format!("{}.fifo", user_file_name(user)))
    }

    fn add_user_fifo(&mut self, user: &str, key: usize) {
        if let Some(u) = self.user_fifos.by_user.get_mut(user) {
            u.conns.push(key);
            return;
        }
        let path = self.user_fifo_path(user);
        let mode = self.cfg.fifo_mode_bits().unwrap_or(0o660);
        let fifo = match Fifo::open(&path, mode) {
            Ok(f) => f,
            // `users/` is ours: a plain file there is what a script writing to an absent user's
            // FIFO leaves behind. Replace it.
            Err(crate::fifo::FifoError::NotAFifo { .. }) => {
                warn!(
                    "{} is a plain file, not a FIFO; replacing it",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                match Fifo::open(&path, mode) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!("per-user FIFO for {user}: {e}");
                        return;
                    }
                }
            }
            Err(e) => {
                warn!("per-user FIFO for {user}: {e}");
                return;
            }
        };
        let slot = self.user_fifos.slots.insert(user.to_string());
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fifo.raw_fd()),
            Token(USER_FIFO_TOKENS + slot),
            Interest::READABLE,
        ) {
            warn!("cannot watch {}: {e}", path.display());
            self.user_fifos.slots.remove(slot);
            fifo.remove();
            return;
        }
        self.user_fifos.by_user.insert(
            user.to_string(),
            UserFifo {
                fifo,
                slot,
                conns: vec![key],
            },
        );
    }

    /// A connection of `user` closed: the FIFO goes with the user's last connection.
    pub(crate) fn drop_user_conn(&mut self, user: &str, key: usize) {
        let Some(u) = self.user_fifos.by_user.get_mut(user) else {
            return;
        };
        u.conns.retain(|&k| k != key);
        if u.conns.is_empty()
            && let Some(u) = self.user_fifos.by_user.remove(user)
        {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&u.fifo.raw_fd()));
            self.user_fifos.slots.try_remove(u.slot);
            u.fifo.remove();
        }
    }

    pub(crate) fn remove_all_user_fifos(&mut self) {
        for (_, u) in self.user_fifos.by_user.drain() {
            u.fifo.remove();
        }
    }

    pub(crate) fn owns_user_fifo(token: Token) -> bool {
        (USER_FIFO_TOKENS..WORKER_TOKENS).contains(&token.0)
    }

    pub(crate) fn read_user_fifo(&mut self, token: Token) {
        let slot = token.0 - USER_FIFO_TOKENS;
        let Some(user) = self.user_fifos.slots.get(slot).cloned() else {
            return;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let max = self.cfg.max_fifo_line_bytes;
        let budget = crate::server::FIFO_READ_BUDGET;
        if let Some(u) = self.user_fifos.by_user.get_mut(&user) {
            match u
                .fifo
                .read_lines_within(&mut scratch, max, budget, |l| lines.push(l.to_vec()))
            {
                Ok(stats) if stats.more => {
                    self.stats.fifo_yields += 1;
                    self.user_fifos_again.push(token);
                }
                Ok(_) => {}
                Err(e) => warn!("reading the FIFO of {user}: {e}"),
            }
        }
        self.scratch = scratch;
        for line in lines.into_iter().filter(|l| !l.is_empty()) {
            if self.cfg.user_fifo == "route" && self.cfg.route.enabled() {
                let mut env = vec![(
                    "PATH".to_string(),
                    "/usr/local/bin:/usr/bin:/bin".to_string(),
                )];
                let text = String::from_utf8_lossy(&line).into_owned();
                set_var(&mut env, "REQUEST_URI", &text);
                set_var(&mut env, "FERROCAST_USER_ID", &user);
                let job = self.job(
                    &self.cfg.route.clone(),
                    "route",
                    env,
                    line,
                    self.cfg.route_timeout_secs,
                );
                match self
                    .workers
                    .submit(self.poll.registry(), job, &mut self.finished_jobs)
                {
                    Ok(id) => {
                        self.jobs
                            .insert(id, JobFor::UserRoute { user: user.clone() });
                        self.stats.workers_started += 1;
                    }
                    Err(_) => {
                        self.stats.workers_refused += 1;
                        warn!("dropped a line for {user}: worker queue full");
                    }
                }
            } else {
                self.send_to_user(&user, &line);
            }
        }
    }

    /// One text message to every connection of a validated user, within each one's queue limit.
    fn send_to_user(&mut self, user: &str, text: &[u8]) {
        let Some(u) = self.user_fifos.by_user.get(user) else {
            return;
        };
        let frame = ws::text(text);
        let limit = self.cfg.outbound_queue_bytes;
        for &key in &u.conns {
            if let Some(conn) = self.conns.get_mut(key) {
                crate::server::deliver(
                    conn,
                    key,
                    &frame,
                    limit,
                    &mut self.dirty,
                    &mut self.overflowed,
                );
            }
        }
    }

    /// A routed reply, subject to the client's queue limit like any broadcast: a client that
    /// sends requests without reading the answers is a slow consumer too.
    fn route_reply(&mut self, key: usize, text: &str) {
        let limit = self.cfg.outbound_queue_bytes;
        if let Some(conn) = self.conns.get_mut(key) {
            let frame = ws::text(text.as_bytes());
            crate::server::deliver(
                conn,
                key,
                &frame,
                limit,
                &mut self.dirty,
                &mut self.overflowed,
            );
        }
    }
}

/// Why a session validation refused a connection: `forbidden` (403, the handler said so) or
/// not logged in (401), and the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub forbidden: bool,
    pub why: String,
}

/// Longest user id a validation handler may return.
pub const MAX_USER_ID: usize = 256;

/// Decodes a validation handler's result: the user id is the first line of its output, trimmed,
/// on exit 0. `forbidden` on the first line refuses with 403 whatever the exit status
/// (`echo "forbidden"; exit;` exits 0 in PHP: the word decides, not the status).
pub fn validation_verdict(outcome: &Outcome, timeout_secs: u64) -> Result<String, Refusal> {
    let first = match outcome {
        Outcome::Exited { stdout, .. } | Outcome::Signaled { stdout, .. } => {
            String::from_utf8_lossy(stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Outcome::TimedOut | Outcome::SpawnFailed(_) => String::new(),
    };
    let forbidden = first == "forbidden";
    if matches!(outcome, Outcome::Exited { code: 0, .. })
        && !forbidden
        && !first.is_empty()
        && first.len() <= MAX_USER_ID
    {
        return Ok(first);
    }
    let why = match outcome {
        _ if forbidden => "the handler said forbidden".to_string(),
        Outcome::Exited { code: 0, .. } => {
            format!("exit 0 but no user id (1 to {MAX_USER_ID} bytes) on the first line")
        }
        Outcome::Exited { code, .. } => format!("exit {code}"),
        Outcome::Signaled { signal, .. } => format!("killed by signal {signal}"),
        Outcome::TimedOut => format!("no answer within validate_timeout_secs ({timeout_secs})"),
        Outcome::SpawnFailed(e) => format!("could not start: {e}"),
    };
    Err(Refusal { forbidden, why })
}

/// The addresses a `ferrocast resolve` child printed, one per line.
pub fn resolved_addresses(outcome: &Outcome) -> Result<Vec<SocketAddr>, String> {
    match outcome {
        Outcome::Exited {
            code: 0, stdout, ..
        } => {
            let addrs: Vec<SocketAddr> = String::from_utf8_lossy(stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if addrs.is_empty() {
                Err("no address".into())
            } else {
                Ok(addrs)
            }
        }
        Outcome::Exited { code, .. } => Err(format!("the resolver failed (exit {code})")),
        Outcome::Signaled { signal, .. } => Err(format!("the resolver died (signal {signal})")),
        Outcome::TimedOut => Err(format!("no answer within {}s", RESOLVE_TIMEOUT.as_secs())),
        Outcome::SpawnFailed(e) => Err(format!("cannot start the resolver: {e}")),
    }
}

fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

/// What a routed request's client receives: the output (cut when over the limit), a notice when
/// there was none, or the reason the application failed. The connection always stays open.
pub fn route_replies(outcome: &Outcome, max: usize) -> Vec<String> {
    match outcome {
        Outcome::Exited {
            code: 0,
            stdout,
            truncated,
        } => {
            let text = String::from_utf8_lossy(stdout).trim_end().to_string();
            let mut out = Vec::new();
            if text.is_empty() {
                out.push(
                    "[ferrocast] the application produced no output for this request".to_string(),
                );
            } else {
                out.push(text);
            }
            if *truncated {
                out.push(format!(
                    "[ferrocast] output cut at max_worker_output_bytes ({max})"
                ));
            }
            out
        }
        Outcome::Exited { code, .. } => {
            vec![format!("[ferrocast] the application failed (exit {code})")]
        }
        Outcome::Signaled { signal, .. } => vec![format!(
            "[ferrocast] the application crashed (signal {signal})"
        )],
        Outcome::TimedOut => vec![
            "[ferrocast] the application did not answer in time (route_timeout_secs)".to_string(),
        ],
        Outcome::SpawnFailed(e) => {
            vec![format!("[ferrocast] the application could not start: {e}")]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_file_names() {
        assert_eq!(user_file_name("alice-42"), "alice-42");
        assert_eq!(user_file_name("a@b.c"), "a@b.c");
        assert_eq!(
            user_file_name("../etc"),
            format!("hex-{}", hex::encode("../etc"))
        );
        assert_eq!(user_file_name(".."), "hex-2e2e");
        assert_eq!(user_file_name("a/b"), "hex-612f62");
        assert_eq!(user_file_name("nul\0"), "hex-6e756c00");
        let long = user_file_name(&"y".repeat(200));
        assert!(long.starts_with("sha256-") && long.len() < 250, "{long}");
        // An id that looks encoded is encoded too: "hex-2e2e" cannot collide with "..".
        assert_ne!(user_file_name("hex-2e2e"), user_file_name(".."));
        assert!(user_file_name("hex-2e2e").starts_with("hex-6865"));
        assert!(user_file_name(&format!("{}/", "x".repeat(100))).starts_with("hex-"));
        assert!(user_file_name(&"x".repeat(129)).starts_with("sha256-"));
    }

    #[test]
    fn cgi_environment() {
        let raw = b"GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nCookie: PHPSESSID=abc\r\nX-Forwarded.For: no\r\nUser-Agent: t\r\n\r\n";
        let req = http::parse(raw, 10_000).unwrap().unwrap();
        let env = cgi_env(&req, "10.1.2.3:5555".parse().unwrap(), 8080, "1.2");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTP_COOKIE"), Some("PHPSESSID=abc"));
        assert_eq!(get("REQUEST_URI"), Some("/chat?room=1"));
        assert_eq!(get("QUERY_STRING"), Some("room=1"));
        assert_eq!(get("REMOTE_ADDR"), Some("10.1.2.3"));
        assert_eq!(get("REMOTE_PORT"), Some("5555"));
        assert_eq!(get("HTTP_USER_AGENT"), Some("t"));
        assert_eq!(get("FERROCAST_SOCKET_ID"), Some("1.2"));
        assert!(env.iter().all(|(k, _)| !k.contains(' ')));
    }

    #[test]
    fn route_reply_texts() {
        let ok = Outcome::Exited {
            code: 0,
            stdout: b"hello\n".to_vec(),
            truncated: false,
        };
        assert_eq!(route_replies(&ok, 10), vec!["hello"]);
        let empty = Outcome::Exited {
            code: 0,
            stdout: vec![],
            truncated: false,
        };
        assert!(route_replies(&empty, 10)[0].contains("no output"));
        let cut = Outcome::Exited {
            code: 0,
            stdout: b"x".to_vec(),
            truncated: true,
        };
        assert_eq!(route_replies(&cut, 10).len(), 2);
        assert!(route_replies(&Outcome::TimedOut, 10)[0].contains("in time"));
    }
}
