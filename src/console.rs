//! The live debug console: an embedded page behind a login, fed over an internal WebSocket.
//!
//! Events are formatted only while a console is connected; otherwise each hook costs one
//! emptiness check. The feed is best-effort: a console that cannot keep up loses events rather
//! than making the server queue for it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

use crate::conn::Phase;
use crate::server::Server;
use crate::ws;

const PAGE: &str = include_str!("console.html");
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Console sessions handed out at login.
#[derive(Default)]
pub struct Sessions {
    tokens: HashMap<String, Instant>,
}

impl Sessions {
    pub fn create(&mut self) -> String {
        self.tokens.retain(|_, until| *until > Instant::now());
        let token = random_token();
        self.tokens
            .insert(token.clone(), Instant::now() + SESSION_TTL);
        token
    }

    pub fn valid(&self, token: &str) -> bool {
        self.tokens.iter().any(|(t, until)| {
            *until > Instant::now()
                && crate::pusher::auth::secret_eq(t.as_bytes(), token.as_bytes())
        })
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) never blocks once the kernel pool is seeded, which it is long before a
    // console login.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // Fall back to something unpredictable enough for a local debug session.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&(t ^ (std::process::id() as u128) << 64).to_le_bytes());
    }
    hex::encode(bytes)
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks `Authorization: Basic` against the apps' key/secret pairs and the console token.
pub fn basic_auth_ok(server: &Server, header: Option<&str>) -> bool {
    let Some(encoded) = header.and_then(|h| {
        h.strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
    }) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = text.split_once(':') else {
        return false;
    };
    let eq = |a: &str, b: &str| crate::pusher::auth::secret_eq(a.as_bytes(), b.as_bytes());
    let token = &server.cfg.console.token;
    if !token.is_empty() && user == "token" && eq(password, token) {
        return true;
    }
    server
        .apps
        .iter()
        .any(|app| eq(user, &app.cfg.key) && eq(password, &app.cfg.secret))
}

/// The page with its session and paths: `{{BASE}}` is the console's own path (server prefix
/// and `console.path`), `{{PREFIX}}` the server's URL prefix.
pub fn page(session: &str, base: &str, prefix: &str) -> String {
    PAGE.replace("{{SESSION}}", session)
        .replace("{{BASE}}", base)
        .replace("{{PREFIX}}", prefix)
}

impl Server {
    /// Sends one event to every connected console.
    pub(crate) fn console_event(
        &mut self,
        kind: &str,
        socket_id: Option<&str>,
        channel: Option<&str>,
        event: Option<&str>,
        detail: Option<&str>,
    ) {
        if self.consoles.is_empty() {
            return;
        }
        let text = json!({
            "type": "event", "t": unix_ms(), "kind": kind, "socket_id": socket_id,
            "channel": channel, "event": event, "detail": detail,
        })
        .to_string();
        self.console_send(&text);
    }

    fn console_send(&mut self, text: &str) {
        let frame = ws::text(text.as_bytes());
        // Best effort within the connection's output bound: past the pause mark, events are
        // dropped rather than queued.
        let (pause, _) = self.cfg.output_bounds();
        for i in 0..self.consoles.len() {
            let key = self.consoles[i];
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.phase == Phase::Open && conn.enqueue(&frame, pause) {
                self.mark_dirty(key);
            }
        }
    }

    /// The once-a-second snapshot for the consoles' counters, chart and channel table.
    pub(crate) fn console_stats(&mut self) {
        if self.consoles.is_empty() {
            return;
        }
        let mut channels = Vec::new();
        for app in 0..self.apps.len() {
            let app_id = &self.apps.get(app).cfg.id;
            for ch in self.hub.channels(app).take(500) {
                channels.push(json!({
                    "app": app_id, "name": ch.name(), "subscribers": ch.count(),
                    "members": ch.member_count(),
                }));
            }
        }
        let s = &self.stats;
        let text = json!({
            "type": "stats", "t": unix_ms(), "connections": self.sessions,
            "connections_opened": s.connections_opened, "connections_closed": s.connections_closed,
            "messages_in": s.messages_in, "frames_out": s.frames_out,
            "api_publishes": s.api_publishes, "fifo_lines": s.fifo_lines,
            "workers": self.worker_stats(),
            "channels": channels,
        })
        .to_string();
        self.console_send(&text);
    }

    pub(crate) fn console_hello(&mut self, key: usize) {
        let apps: Vec<Value> = self
            .apps
            .iter()
            .map(|a| json!({"id": a.cfg.id, "name": a.cfg.name}))
            .collect();
        let started_ms = unix_ms().saturating_sub(self.started.elapsed().as_millis() as u64);
        let text = json!({"type": "hello", "version": env!("CARGO_PKG_VERSION"), "apps": apps, "started_ms": started_ms})
            .to_string();
        self.reply(key, &text);
    }

    /// Worker counters for the console (zeros until workers exist).
    pub(crate) fn worker_stats(&self) -> Value {
        json!({
            "running": self.workers.running(),
            "queued": self.workers.queued(),
            "started": self.stats.workers_started,
            "failed": self.stats.workers_failed,
        })
    }
}
