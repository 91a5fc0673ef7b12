//! The live debug console: an embedded page behind a login, fed over an internal WebSocket.
//!
//! Events are formatted only while a console is connected; otherwise each hook costs one
//! emptiness check. The feed is best-effort: a console that cannot keep up loses events (past
//! its pause mark) rather than making the server queue for it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::conns::Conns;
use super::http::{Decision, respond, respond_error};
use super::publish::{Origin, Publication};
use super::state::State;
use crate::http::{self, Request};
use crate::ws::{self, Frame};

const PAGE: &str = include_str!("../console.html");
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The consoles: their feed connections and the logins handed out.
#[derive(Default)]
pub struct Consoles {
    feeds: Vec<usize>,
    logins: HashMap<String, Instant>,
}

impl Consoles {
    pub fn listening(&self) -> bool {
        !self.feeds.is_empty()
    }

    pub fn add(&mut self, key: usize) {
        self.feeds.push(key);
    }

    pub fn remove(&mut self, key: usize) {
        self.feeds.retain(|&k| k != key);
    }

    fn login(&mut self, now: Instant) -> String {
        self.logins.retain(|_, until| *until > now);
        let token = crate::secret::random_token();
        self.logins.insert(token.clone(), now + SESSION_TTL);
        token
    }

    fn valid(&self, token: &str, now: Instant) -> bool {
        self.logins.iter().any(|(t, until)| {
            *until > now && crate::pusher::auth::secret_eq(t.as_bytes(), token.as_bytes())
        })
    }
}

/// Records one event for every connected console.
pub fn event(
    st: &mut State,
    kind: &str,
    socket_id: Option<&str>,
    channel: Option<&str>,
    event: Option<&str>,
    detail: Option<&str>,
) {
    if !st.consoles.listening() {
        return;
    }
    let text = json!({
        "type": "event", "t": st.clock.wall_ms(), "kind": kind, "socket_id": socket_id,
        "channel": channel, "event": event, "detail": detail,
    })
    .to_string();
    st.pending.console.push(ws::text(text.as_bytes()));
}

/// Queues recorded events to the consoles (dropped for a console past its pause mark).
pub fn deliver(conns: &mut Conns, st: &mut State, frames: Vec<Frame>) {
    for frame in &frames {
        for &key in &st.consoles.feeds {
            conns.send_droppable(key, frame);
        }
    }
}

/// The once-a-second snapshot for the consoles' counters, chart and channel table.
pub fn stats(st: &mut State) {
    if !st.consoles.listening() {
        return;
    }
    let mut channels = Vec::new();
    for app in 0..st.apps.len() {
        let app_id = &st.apps.get(app).cfg.id;
        for ch in st.hub.channels(app).take(500) {
            channels.push(json!({
                "app": app_id, "name": ch.name(), "subscribers": ch.count(),
                "members": ch.member_count(),
            }));
        }
    }
    let s = &st.stats;
    let text = json!({
        "type": "stats", "t": st.clock.wall_ms(), "connections": st.sessions.open(),
        "connections_opened": s.connections_opened, "connections_closed": s.connections_closed,
        "messages_in": s.messages_in, "frames_out": s.frames_out,
        "api_publishes": s.api_publishes, "fifo_lines": s.fifo_lines,
        "workers": workers(st),
        "channels": channels,
    })
    .to_string();
    st.pending.console.push(ws::text(text.as_bytes()));
}

/// Worker counters for the console.
fn workers(st: &State) -> Value {
    json!({
        "running": st.io.workers_running,
        "queued": st.io.workers_queued,
        "started": st.stats.workers_started,
        "failed": st.stats.workers_failed,
    })
}

/// The first message of a new feed.
pub fn hello(conns: &mut Conns, st: &State, key: usize) {
    let apps: Vec<Value> = st
        .apps
        .iter()
        .map(|a| json!({"id": a.cfg.id, "name": a.cfg.name}))
        .collect();
    let started_ms = st
        .clock
        .wall_ms()
        .saturating_sub(st.clock.uptime().as_millis() as u64);
    let text = json!({"type": "hello", "version": env!("CARGO_PKG_VERSION"), "apps": apps, "started_ms": started_ms});
    conns.send(key, &ws::text(text.to_string().as_bytes()));
}

/// The part of `rel` under the console's path ("" for the page itself), when enabled.
pub fn route<'r>(st: &State, rel: &'r str) -> Option<&'r str> {
    if !st.cfg.console.enabled {
        return None;
    }
    rel.strip_prefix(st.cfg.console.path.trim_end_matches('/'))
        .filter(|sub| matches!(*sub, "" | "/" | "/feed" | "/publish"))
}

/// Whether a feed upgrade carries a valid login (`?session=`).
pub fn feed_allowed(st: &State, req: &Request) -> bool {
    let session = crate::query::param(req.query(), "session").unwrap_or_default();
    st.consoles.valid(&session, st.clock.now())
}

pub fn http(st: &mut State, req: &Request, sub: &str, body: &[u8]) -> Decision {
    match (req.method, sub) {
        ("GET", "" | "/") => page(st, req),
        ("POST", "/publish") => publish(st, req, body),
        _ => respond_error(404, "not found"),
    }
}

fn page(st: &mut State, req: &Request) -> Decision {
    if !basic_auth_ok(st, req.header("authorization")) {
        return Decision::Respond(http::response(
            401,
            &[(
                "WWW-Authenticate",
                "Basic realm=\"ferrocast console\", charset=\"UTF-8\"",
            )],
            &http::error_body("log in with an app's key and secret"),
        ));
    }
    let session = st.consoles.login(st.clock.now());
    let base = format!(
        "{}{}",
        st.cfg.prefix(),
        st.cfg.console.path.trim_end_matches('/')
    );
    // `{{BASE}}` is the console's own path (server prefix and `console.path`), `{{PREFIX}}`
    // the server's URL prefix.
    let page = PAGE
        .replace("{{SESSION}}", &session)
        .replace("{{BASE}}", &base)
        .replace("{{PREFIX}}", st.cfg.prefix());
    Decision::Respond(http::response_with(
        200,
        "text/html; charset=utf-8",
        &[("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")],
        &page,
    ))
}

/// The console's publish form.
fn publish(st: &mut State, req: &Request, body: &[u8]) -> Decision {
    let session = req.header("x-console-session").unwrap_or("");
    if !st.consoles.valid(session, st.clock.now()) {
        return respond_error(401, "console session expired: log in again");
    }
    #[derive(serde::Deserialize)]
    struct Form {
        app: Option<String>,
        channel: String,
        event: String,
        data: String,
    }
    let form: Form = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(e) => return respond_error(400, &format!("invalid JSON: {e}")),
    };
    let app = match form.app.as_deref() {
        None | Some("") => 0,
        Some(id) => match st.apps.by_id(id) {
            Some(a) => a,
            None => return respond_error(400, &format!("unknown app \"{id}\"")),
        },
    };
    if !crate::pusher::rest::valid_channel(&form.channel, &st.apps.get(app).cfg)
        || form.event.is_empty()
    {
        return respond_error(400, "a valid channel and an event name are required");
    }
    st.publish(Publication::Event {
        app,
        channels: vec![form.channel],
        event: form.event,
        data: form.data,
        except: None,
        origin: Origin::Here("console"),
    });
    respond(200, &json!({}))
}

/// Checks `Authorization: Basic` against the apps' key/secret pairs and the console token.
fn basic_auth_ok(st: &State, header: Option<&str>) -> bool {
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
    let token = &st.cfg.console.token;
    if !token.is_empty() && user == "token" && eq(token, password) {
        return true;
    }
    st.apps
        .iter()
        .any(|app| eq(&app.cfg.key, user) && eq(&app.cfg.secret, password))
}
