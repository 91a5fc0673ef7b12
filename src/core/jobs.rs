//! The jobs the core asks forked workers for (session validation, application routing,
//! per-user FIFO lines, webhooks), and the pure parts of them: the environment a handler sees,
//! the decoding of what it answers.
//!
//! The core never waits on a child: it asks for a job (`Effects::jobs`), the connection waits
//! in a state of its own, and the outcome arrives later as an input like any other
//! (`outcomes.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::conns::Mode;
use super::effects::JobId;
use super::webhooks::Delivery;
use crate::config::{Config, HandlerConfig};
use crate::http::Request;
use crate::job::{Handler, Job, Outcome};

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
    /// A read of the app store's table.
    AppSync,
    /// An app asked for by key or id, not read yet; connections wait for it.
    AppLookup(super::store_sync::Lookup),
    /// A worker waiting for the app store's table to change (PostgreSQL's NOTIFY).
    AppChanges,
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
    /// Records a job and asks the loop for it (`out`: the effects' job list).
    pub fn start(&mut self, job: Job, why: JobFor, out: &mut Vec<(JobId, Job)>) -> JobId {
        let id = self.next;
        self.next += 1;
        if matches!(why, JobFor::Webhook(_)) {
            self.webhooks += 1;
        }
        self.inflight.insert(id, why);
        out.push((id, job));
        id
    }

    /// What a job that ended (or never ran) was for.
    pub fn finish(&mut self, id: JobId) -> Option<JobFor> {
        let why = self.inflight.remove(&id)?;
        if matches!(why, JobFor::Webhook(_)) {
            self.webhooks = self.webhooks.saturating_sub(1);
        }
        Some(why)
    }

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

/// A job for a handler (`validate` or `route`) with its environment and input.
pub fn job(
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
        push_ca_file(cfg, &mut env);
    }
    let runner = match handler.fastcgi_target() {
        Some(target) if handler.handler == "fastcgi" => Handler::FastCgi {
            target,
            script: handler.script.clone().into(),
        },
        _ => Handler::Exec {
            argv: handler_argv(handler, purpose),
        },
    };
    Job {
        handler: runner,
        env,
        stdin,
        deadline: Duration::from_secs(timeout_secs),
        max_output: cfg.max_worker_output_bytes,
    }
}

/// Tells an `https://` call in a child which extra CA to trust (`tls_ca_file`).
pub fn push_ca_file(cfg: &Config, env: &mut Vec<(String, String)>) {
    if let Some(file) = &cfg.tls_ca_file {
        env.push(("FERROCAST_TLS_CA_FILE".into(), file.display().to_string()));
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

/// Where a user's FIFO lives: `users/<name>.fifo` beside the broadcast FIFO.
pub fn user_fifo_path(cfg: &Config, user: &str) -> PathBuf {
    let dir = cfg.fifo.parent().unwrap_or(Path::new("."));
    dir.join("users")
        .join(format!("{}.fifo", user_file_name(user)))
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
        Outcome::Exited { stdout, .. }
        | Outcome::Signaled { stdout, .. }
        | Outcome::Answered { body: stdout, .. } => String::from_utf8_lossy(stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Outcome::TimedOut | Outcome::SpawnFailed(_) => String::new(),
    };
    // A FastCGI script refuses with `http_response_code(403)` as well as with the word.
    let forbidden =
        first == "forbidden" || matches!(outcome, Outcome::Answered { status: 403, .. });
    let success = matches!(
        outcome,
        Outcome::Exited { code: 0, .. }
            | Outcome::Answered {
                status: 200..=299,
                ..
            }
    );
    if success && !forbidden && !first.is_empty() && first.len() <= MAX_USER_ID {
        return Ok(first);
    }
    let why = match outcome {
        _ if forbidden => "the handler said forbidden".to_string(),
        Outcome::Exited { code: 0, .. }
        | Outcome::Answered {
            status: 200..=299, ..
        } => {
            format!("no user id (1 to {MAX_USER_ID} bytes) on the first line of the answer")
        }
        Outcome::Exited { code, .. } => format!("exit {code}"),
        Outcome::Answered { status, .. } => format!("the application answered {status}"),
        Outcome::Signaled { signal, .. } => format!("killed by signal {signal}"),
        Outcome::TimedOut => format!("no answer within validate_timeout_secs ({timeout_secs})"),
        Outcome::SpawnFailed(e) => format!("could not start: {e}"),
    };
    Err(Refusal { forbidden, why })
}

/// Sets (or replaces) one variable of a handler's environment.
pub fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
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
        }
        | Outcome::Answered {
            status: 200..=399,
            body: stdout,
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
        Outcome::Answered { status, .. } => {
            vec![format!(
                "[ferrocast] the application failed (status {status})"
            )]
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
        let req = crate::http::parse(raw, 10_000).unwrap().unwrap();
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
