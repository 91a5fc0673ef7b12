//! The live debug console's feed: events and once-a-second snapshots for every connected
//! console (the page and its login are `console_http.rs`).
//!
//! Events are formatted only while a console is connected; otherwise each hook costs one
//! emptiness check. The feed is best-effort: a console that cannot keep up loses events (past
//! its pause mark) rather than making the server queue for it.

use serde_json::{Value, json};

use super::cluster;
use super::conns::Conns;
use super::effects::LinkOp;
use super::metrics_merge::others_sum;
use super::state::State;
use crate::ws::{self, Frame};

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
    if st.consoles.elsewhere() {
        st.effects
            .link
            .push(LinkOp::Loops(text.clone().into_bytes()));
    }
    if st.consoles.here() {
        st.pending.console.push(ws::text(text.as_bytes()));
    }
}

/// An event another loop recorded, for this loop's consoles.
pub fn relayed(st: &mut State, text: &[u8]) {
    if st.consoles.here() {
        st.pending.console.push(ws::text(text));
    }
}

/// Queues recorded events to the consoles (dropped for a console past its pause mark).
pub fn deliver(conns: &mut Conns, st: &mut State, frames: &mut Vec<Frame>) {
    for frame in frames.drain(..) {
        for &key in st.consoles.feeds() {
            conns.send_droppable(key, &frame);
        }
    }
}

/// The once-a-second snapshot for the consoles' counters, chart and channel table.
pub fn stats(st: &mut State) {
    if !st.consoles.here() {
        return;
    }
    let mut channels = Vec::new();
    for app in 0..st.apps.len() {
        let app_id = &st.apps.get(app).cfg.id;
        for ch in st.hub.channels(app).take(500) {
            let history = st.history.summary(app as u16, ch.name());
            let (remote, members) = cluster::remote_channel(st, app, ch.name());
            channels.push(json!({
                "app": app_id, "name": ch.name(), "subscribers": ch.count() + remote,
                "members": ch.member_count().map(|n| {
                    n + members.keys().filter(|u| !ch.has_member(u)).count()
                }),
                "history": history.map(|(offset, kept)| json!({"offset": offset, "kept": kept})),
            }));
        }
        // The other loops' (and nodes') channels this loop has no subscriber of.
        for name in cluster::remote_channels(st, app).into_iter().take(500) {
            if st.hub.channel_named(app, &name).is_some() || name.starts_with('#') {
                continue;
            }
            let (remote, members) = cluster::remote_channel(st, app, &name);
            let history = st.history.summary(app as u16, &name);
            channels.push(json!({
                "app": app_id, "name": name, "subscribers": remote,
                "members": (!members.is_empty()).then_some(members.len()),
                "history": history.map(|(offset, kept)| json!({"offset": offset, "kept": kept})),
            }));
        }
    }
    let s = &st.stats;
    // With several loops, the counts are the whole process's (the other loops' from the board).
    let others = st.board.as_ref().map(|b| b.others()).unwrap_or_default();
    let all = |mine: u64, key: &str| mine.saturating_add(others_sum(&others, key));
    let text = json!({
        "type": "stats", "t": st.clock.wall_ms(),
        "connections": all(st.sessions.open() as u64, "ferrocast_connections"),
        "loops": 1 + others.len(),
        "connections_opened": all(s.connections_opened, "ferrocast_connections_opened_total"),
        "connections_closed": all(s.connections_closed, "ferrocast_connections_closed_total"),
        "messages_in": all(s.messages_in, "ferrocast_messages_in_total"),
        "frames_out": all(s.frames_out, "ferrocast_frames_out_total"),
        "api_publishes": all(s.api_publishes, "ferrocast_api_publishes_total"),
        "fifo_lines": all(s.fifo_lines, "ferrocast_fifo_lines_total"),
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
