//! What the server asks its forked workers to do, and what it does with their answers:
//! session validation before the 101, application routing of raw-mode messages (CarbonPHP's
//! `startApplication`), per-user FIFO lines, webhooks.
//!
//! The core never waits on a child: it asks for a job ([`super::Effects::jobs`]), the
//! connection waits in a state of its own, and the outcome arrives later as an input like any
//! other ([`done`]), or at once as a refusal when the worker queue is full ([`refused`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{info, warn};

use super::conns::{Conns, Mode, Phase};
use super::publish::Publication;
use super::state::{State, Via};
use super::webhooks::Delivery;
use super::{JobId, Peer, UserFifo, close, membership, upgrade, webhooks};
use crate::config::{Config, HandlerConfig};
use crate::http::{self, Request};
use crate::job::{Handler, Job, Outcome};
use crate::ws;

/// Routed messages a connection may have waiting behind the ones in flight.
const MAX_WAITING_PER_CONNECTION: usize = 64;

/// Why a job runs.
pub enum JobFor {
    /// A handshake waiting for its verdict.
    Validate {
        key: usize,
        conn_id: u64,
        mode: Mode,
        accept: String,
    },
    /// A raw-mode message; the output goes back to that connection.
    Route { key: usize, conn_id: u64 },
    /// A line from a user's FIFO in `route` mode; the output goes to all the user's connections.
    UserRoute { user: String },
    /// A signed webhook batch.
    Webhook(Delivery),
}

/// Jobs in flight, by id.
#[derive(Default)]
pub struct Jobs {
    next: JobId,
    inflight: HashMap<JobId, JobFor>,
    /// Webhook batches being sent right now.
    webhooks: usize,
}

impl Jobs {
    pub fn webhooks_running(&self) -> usize {
        self.webhooks
    }

    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }
}

/// Routing state of a connection: kept only for raw-mode connections when routing is on.
#[derive(Default)]
pub struct RouteState {
    /// The handshake's CGI environment, the base of every routed request's.
    pub env: Vec<(String, String)>,
    pub inflight: usize,
    pub waiting: VecDeque<String>,
}

impl RouteState {
    pub fn new(env: Vec<(String, String)>) -> RouteState {
        RouteState {
            env,
            ..Default::default()
        }
    }
}

/// Asks the loop for a job; its outcome comes back to [`done`] (or [`refused`]).
pub fn start(st: &mut State, job: Job, why: JobFor) -> JobId {
    let id = st.jobs.next;
    st.jobs.next += 1;
    if matches!(why, JobFor::Webhook(_)) {
        st.jobs.webhooks += 1;
    }
    st.jobs.inflight.insert(id, why);
    st.effects.jobs.push((id, job));
    st.stats.workers_started += 1;
    id
}

fn job(
    cfg: &Config,
    handler: &HandlerConfig,
    purpose: &str,
    mut env: Vec<(String, String)>,
    stdin: Vec<u8>,
    timeout_secs: u64,
) -> Job {
    if handler.handler == "http" {
        env.push((
            "FERROCAST_HTTP_TIMEOUT_SECS".into(),
            timeout_secs.to_string(),
        ));
        env.push((
            "FERROCAST_MAX_OUTPUT_BYTES".into(),
            cfg.max_worker_output_bytes.to_string(),
        ));
    }
    Job {
        handler: Handler::Exec {
            argv: handler_argv(handler, purpose),
        },
        env,
        stdin,
        deadline: Duration::from_secs(timeout_secs),
        max_output: cfg.max_worker_output_bytes,
    }
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

/// Starts validating a handshake; the connection waits in `Validating`.
pub fn start_validation(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    mode: Mode,
    accept: String,
    env: Vec<(String, String)>,
    rest: &[u8],
) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    conn.phase = Phase::Validating;
    conn.inbuf = rest.to_vec();
    // The worker's deadline rules now; the handshake timer must not fire.
    conn.timer_due = u32::MAX;
    let conn_id = conn.id;
    let cfg = &st.cfg;
    let job = job(
        cfg,
        &cfg.validate,
        "validate",
        env,
        Vec::new(),
        cfg.validate_timeout_secs,
    );
    start(
        st,
        job,
        JobFor::Validate {
            key,
            conn_id,
            mode,
            accept,
        },
    );
}

/// A raw-mode message for the application.
pub fn route_message(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let max_inflight = st.cfg.max_inflight_per_connection;
    let state = peer.conn.route.get_or_insert_with(Default::default);
    if state.inflight < max_inflight {
        return submit_route(st, peer, text);
    }
    if state.waiting.len() >= MAX_WAITING_PER_CONNECTION {
        return peer.reply("[ferrocast] too many requests waiting for the application; slow down");
    }
    state.waiting.push_back(text.to_string());
}

fn submit_route(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let user = match &peer.conn.user {
        Some(u) => u.to_string(),
        None => peer.socket_id(st.process_id),
    };
    let Some(state) = peer.conn.route.as_mut() else {
        return;
    };
    state.inflight += 1;
    let mut env = state.env.clone();
    set_var(&mut env, "REQUEST_URI", text);
    set_var(&mut env, "FERROCAST_USER_ID", &user);
    let cfg = &st.cfg;
    let job = job(
        cfg,
        &cfg.route,
        "route",
        env,
        text.as_bytes().to_vec(),
        cfg.route_timeout_secs,
    );
    let (key, conn_id) = (peer.key, peer.conn.id);
    start(st, job, JobFor::Route { key, conn_id });
}

/// A line from a user's FIFO: routed to the application on the user's behalf (`user_fifo:
/// route`) or delivered to every connection of the user.
pub fn user_line(st: &mut State, user: &str, line: &[u8]) {
    if line.is_empty() {
        return;
    }
    if st.cfg.user_fifo == "route" && st.cfg.route.enabled() {
        let mut env = vec![(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )];
        let text = String::from_utf8_lossy(line).into_owned();
        set_var(&mut env, "REQUEST_URI", &text);
        set_var(&mut env, "FERROCAST_USER_ID", user);
        let cfg = &st.cfg;
        let job = job(
            cfg,
            &cfg.route,
            "route",
            env,
            line.to_vec(),
            cfg.route_timeout_secs,
        );
        start(
            st,
            job,
            JobFor::UserRoute {
                user: user.to_string(),
            },
        );
    } else {
        st.publish(Publication::User {
            user: user.to_string(),
            frame: ws::text_lossy(line),
        });
    }
}

/// The connections of a validated user (the audience of its FIFO).
pub fn user_conns<'a>(st: &'a State, user: &str) -> impl Iterator<Item = usize> + 'a {
    st.sessions
        .of_user(0, user, Via::Validation)
        .iter()
        .copied()
}

/// Where a user's FIFO lives: `users/<name>.fifo` beside the broadcast FIFO.
pub fn user_fifo_path(cfg: &Config, user: &str) -> PathBuf {
    let dir = cfg.fifo.parent().unwrap_or(Path::new("."));
    dir.join("users")
        .join(format!("{}.fifo", user_file_name(user)))
}

/// A job ended.
pub fn done(conns: &mut Conns, st: &mut State, id: JobId, outcome: Outcome) {
    let Some(why) = st.jobs.inflight.remove(&id) else {
        return;
    };
    if !matches!(outcome, Outcome::Exited { code: 0, .. }) {
        st.stats.workers_failed += 1;
    }
    match why {
        JobFor::Validate {
            key,
            conn_id,
            mode,
            accept,
        } => finish_validation(conns, st, key, conn_id, mode, &accept, &outcome),
        JobFor::Route { key, conn_id } => {
            if conns.get(key).is_some_and(|c| c.id == conn_id) {
                for text in route_replies(&outcome, st.cfg.max_worker_output_bytes) {
                    conns.send(key, &ws::text(text.as_bytes()));
                }
                next_route(conns, st, key);
            }
        }
        JobFor::Webhook(delivery) => {
            st.jobs.webhooks = st.jobs.webhooks.saturating_sub(1);
            webhooks::finished(st, delivery, outcome);
        }
        JobFor::UserRoute { user } => {
            for text in route_replies(&outcome, st.cfg.max_worker_output_bytes) {
                st.publish(Publication::User {
                    user: user.clone(),
                    frame: ws::text(text.as_bytes()),
                });
            }
        }
    }
}

/// The worker queue was full: the job never ran.
pub fn refused(conns: &mut Conns, st: &mut State, id: JobId) {
    let Some(why) = st.jobs.inflight.remove(&id) else {
        return;
    };
    st.stats.workers_started = st.stats.workers_started.saturating_sub(1);
    st.stats.workers_refused += 1;
    match why {
        JobFor::Validate { key, .. } => {
            warn!(
                "refusing a handshake: all {} workers busy and the queue is full",
                st.cfg.max_workers
            );
            let body = http::error_body("too many handshakes being validated; retry");
            let answer = http::response(503, &[("Retry-After", "1")], &body);
            close::respond_and_close(conns, st, key, answer);
        }
        JobFor::Route { key, conn_id } => {
            if let Some(state) = conns
                .get_mut(key)
                .filter(|c| c.id == conn_id)
                .and_then(|c| c.route.as_mut())
            {
                state.inflight = state.inflight.saturating_sub(1);
                let busy = "[ferrocast] the application is busy (worker queue full); try again";
                conns.send(key, &ws::text(busy.as_bytes()));
            }
        }
        JobFor::UserRoute { user } => warn!("dropped a line for {user}: worker queue full"),
        JobFor::Webhook(d) => {
            st.jobs.webhooks = st.jobs.webhooks.saturating_sub(1);
            webhooks::failed(st, d, "worker queue full");
        }
    }
}

fn next_route(conns: &mut Conns, st: &mut State, key: usize) {
    let Some((conn, lists)) = conns.split(key) else {
        return;
    };
    let Some(state) = conn.route.as_mut() else {
        return;
    };
    state.inflight = state.inflight.saturating_sub(1);
    if let Some(next) = state.waiting.pop_front() {
        let mut peer = Peer::new(key, conn, lists);
        submit_route(st, &mut peer, &next);
    }
}

fn finish_validation(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    conn_id: u64,
    mode: Mode,
    accept: &str,
    outcome: &Outcome,
) {
    let Some(conn) = conns
        .get_mut(key)
        .filter(|c| c.id == conn_id && c.phase == Phase::Validating)
    else {
        return; // the client left meanwhile
    };
    let peer = conn.peer;
    let user = match validation_verdict(outcome, st.cfg.validate_timeout_secs) {
        Ok(user) => user,
        Err(refusal) => return refuse_validation(conns, st, key, peer, refusal),
    };
    log::debug!("validated {peer} as {user}");
    let rest = std::mem::take(&mut conn.inbuf);
    conn.user = Some(user.as_str().into());
    upgrade::open(conns, st, key, mode, accept, None, &rest);
    if conns.get(key).map(|c| c.phase) != Some(Phase::Open) {
        return;
    }
    if st.sessions.user_attached(0, &user, key, Via::Validation) && st.cfg.user_fifo != "off" {
        st.effects.user_fifos.push(UserFifo::Open(user.clone()));
    }
    membership::user_changed(st, 0, &user);
}

fn refuse_validation(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    peer: SocketAddr,
    refusal: Refusal,
) {
    let Refusal { forbidden, why } = refusal;
    let status = if forbidden { 403 } else { 401 };
    info!("validation refused {peer} ({status}): {why}");
    let detail = format!("validation refused {peer}: {why}");
    super::console::event(st, "worker", None, None, None, Some(&detail));
    let message = if forbidden {
        "forbidden"
    } else {
        "not logged in"
    };
    let answer = http::response(status, &[], &http::error_body(message));
    close::respond_and_close(conns, st, key, answer);
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
