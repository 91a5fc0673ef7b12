//! Lifecycle hooks: the application hears of connections, subscriptions and sign-ins (per app
//! `hooks`), for every protocol. Events go into the same batches as webhooks — signed, sent by
//! forked workers or FastCGI requests, retried, bounded — so a slow or dead application loses
//! batches (counted and logged) but never delays a client.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::conns::{Conn, Mode};
use super::notify;
use super::state::State;

/// Whether `app` has hooks (checked before any event is built).
pub fn enabled(st: &State, app: usize) -> bool {
    app < st.apps.len() && !st.apps.get(app).cfg.hooks.is_empty()
}

fn protocol(mode: Mode) -> &'static str {
    match mode {
        Mode::Pusher => "pusher",
        Mode::Channel => "channel",
        Mode::Raw => "raw",
        _ => "other",
    }
}

/// The fields every event about connection `conn` carries.
fn about(st: &State, name: &str, conn: &Conn) -> Value {
    let mut event = json!({
        "name": name,
        "socket_id": conn.socket_id(st.process_id),
        "remote_address": remote(conn.peer),
        "protocol": protocol(conn.mode),
    });
    if let Some(user) = conn.user_id() {
        event["user_id"] = Value::String(user.to_string());
    }
    event
}

fn remote(peer: SocketAddr) -> String {
    peer.ip().to_string()
}

/// A session opened (after its validation, for raw and channel clients).
pub fn connected(st: &mut State, conn: &Conn) {
    let app = conn.app();
    if enabled(st, app) {
        let event = about(st, "connected", conn);
        notify::emit_to_targets(st, app, event);
    }
}

/// A session ended: why (and the close code sent, if any), and how long it lasted.
pub fn disconnected(st: &mut State, conn: &Conn, code: Option<u16>, reason: &str) {
    let app = conn.app();
    if enabled(st, app) {
        let mut event = about(st, "disconnected", conn);
        // A close the client started is answered with its code and no reason of ours.
        let reason = if reason.is_empty() {
            "closed by the client"
        } else {
            reason
        };
        event["reason"] = Value::String(reason.to_string());
        if let Some(code) = code {
            event["code"] = json!(code);
        }
        event["duration_secs"] = json!(st.clock.secs().saturating_sub(conn.since));
        notify::emit_to_targets(st, app, event);
    }
}

/// Connection `conn` signed in (`pusher:signin`).
pub fn signed_in(st: &mut State, conn: &Conn) {
    let app = conn.app();
    if enabled(st, app) {
        let event = about(st, "signed_in", conn);
        notify::emit_to_targets(st, app, event);
    }
}

/// Connection `conn` subscribed to `channel` (or unsubscribed: `joined` false).
pub fn subscription(st: &mut State, conn: &Conn, channel: &str, joined: bool) {
    let app = conn.app();
    if enabled(st, app) {
        let name = if joined { "subscribed" } else { "unsubscribed" };
        let mut event = about(st, name, conn);
        event["channel"] = Value::String(channel.to_string());
        notify::emit_to_targets(st, app, event);
    }
}
