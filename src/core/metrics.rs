//! `/up` (JSON) and `/metrics` (the Prometheus text format).

use std::fmt::Write as _;

use serde_json::json;

use super::state::State;

/// The text being written, one metric family at a time.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.0,
            "# HELP ferrocast_{name} {help}\n# TYPE ferrocast_{name} {kind}"
        );
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "ferrocast_{name}{labels} {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

/// The whole process's exposition: this loop's, with the other loops' added when there are.
pub fn render(server: &State) -> String {
    let own = render_local(server);
    match &server.board {
        Some(board) => super::metrics_merge::merge(&own, &board.others()),
        None => own,
    }
}

/// This loop's own samples (what it pins on the board for the others).
pub fn render_local(server: &State) -> String {
    let mut out = Exposition(String::with_capacity(4096));
    for (name, help, value) in traffic(server).into_iter().chain(work(server)) {
        out.one(name, "counter", help, value);
    }
    out.family(
        "rest_calls_total",
        "counter",
        "REST API responses by status.",
    );
    for (status, n) in &server.stats.rest_calls {
        out.sample("rest_calls_total", &format!("{{status=\"{status}\"}}"), n);
    }
    for (name, help, value) in gauges(server) {
        out.one(name, "gauge", help, value);
    }
    out.family(
        "app_connections",
        "gauge",
        "Open Pusher connections per app.",
    );
    for app in server.apps.iter() {
        let labels = format!("{{app=\"{}\"}}", escape(&app.cfg.id));
        out.sample("app_connections", &labels, app.connections);
    }
    out.0
}

type Family = (&'static str, &'static str, u64);

/// Counters of connections, messages and their bounds.
fn traffic(server: &State) -> [Family; 15] {
    let s = &server.stats;
    [
        (
            "connections_opened_total",
            "TCP connections accepted.",
            s.connections_opened,
        ),
        (
            "connections_closed_total",
            "TCP connections closed.",
            s.connections_closed,
        ),
        (
            "messages_in_total",
            "WebSocket messages received from clients.",
            s.messages_in,
        ),
        (
            "frames_out_total",
            "Frames queued to clients (one per recipient).",
            s.frames_out,
        ),
        (
            "write_calls_total",
            "writev calls made to client sockets.",
            server.io.write_calls,
        ),
        (
            "fifo_lines_total",
            "Lines read from the broadcast FIFO.",
            s.fifo_lines,
        ),
        (
            "fifo_dropped_total",
            "FIFO lines dropped for exceeding max_fifo_line_bytes.",
            server.io.fifo_dropped,
        ),
        (
            "slow_consumers_total",
            "Connections closed because their output queue passed outbound_queue_bytes.",
            s.slow_consumers,
        ),
        (
            "output_pauses_total",
            "Times a connection's input was paused because its output queue passed outbound_pause_bytes.",
            s.output_pauses,
        ),
        (
            "deflated_frames_total",
            "Frames compressed for permessage-deflate connections (once per broadcast).",
            s.deflated_frames,
        ),
        (
            "deflated_bytes_in_total",
            "Payload bytes of the frames compressed, before compressing.",
            s.deflated_bytes_in,
        ),
        (
            "deflated_bytes_out_total",
            "Payload bytes of the frames compressed, after compressing.",
            s.deflated_bytes_out,
        ),
        (
            "api_publishes_total",
            "Events published through the HTTP API.",
            s.api_publishes,
        ),
        (
            "client_events_total",
            "Pusher client events forwarded.",
            s.client_events,
        ),
        (
            "rate_limited_total",
            "Requests and client events refused by a rate limit.",
            s.rate_limited,
        ),
    ]
}

/// Counters of workers, webhooks, the cache and the read budgets.
fn work(server: &State) -> [Family; 14] {
    let s = &server.stats;
    let w = &server.webhooks;
    [
        (
            "workers_started_total",
            "Forked handler jobs started.",
            s.workers_started,
        ),
        (
            "workers_refused_total",
            "Handler jobs refused because the worker queue was full.",
            s.workers_refused,
        ),
        (
            "workers_failed_total",
            "Handler jobs that failed, crashed or timed out.",
            s.workers_failed,
        ),
        ("webhooks_sent_total", "Webhook batches delivered.", w.sent),
        (
            "webhook_failures_total",
            "Webhook send attempts that failed (each is retried or dropped).",
            w.failed_attempts,
        ),
        (
            "webhooks_dropped_total",
            "Webhook batches given up on (tries exhausted or queue full).",
            w.dropped,
        ),
        (
            "cache_evictions_total",
            "Cache-channel events dropped to stay within max_cache_bytes.",
            server.hub.cache().evicted,
        ),
        (
            "cache_expirations_total",
            "Cache-channel events dropped when their time to live ran out.",
            server.hub.cache().expired,
        ),
        (
            "fifo_read_pauses_total",
            "Turns the broadcast FIFO yielded to the clients with lines still to read.",
            server.io.fifo_yields,
        ),
        (
            "redis_read_pauses_total",
            "Turns the Redis link yielded to the clients with replies still to read.",
            server.io.link.map_or(0, |l| l.read_yields),
        ),
        (
            "history_evicted_total",
            "Publications dropped from channel history to stay within max_history_bytes.",
            server.history.evicted,
        ),
        (
            "app_store_reads_total",
            "Reads of the app store's whole table.",
            server.store_sync.reads(),
        ),
        (
            "app_store_lookups_total",
            "Lookups of one app not read yet (by key to connect, by id for REST).",
            server.store_sync.lookups(),
        ),
        (
            "history_replayed_total",
            "Publications given again from history to clients that came back.",
            server.stats.history_replayed,
        ),
    ]
}

fn gauges(server: &State) -> [Family; 9] {
    let channels = server.hub.len();
    let (watching, watched) = server.watchers.sizes();
    let (kept, kept_bytes) = server.history.sizes();
    [
        (
            "connections",
            "Open WebSocket sessions.",
            server.sessions.open() as u64,
        ),
        ("channels", "Occupied channels.", channels as u64),
        (
            "cache_channels",
            "Cache channels holding a last event.",
            server.hub.cache().len() as u64,
        ),
        (
            "cache_bytes",
            "Memory held for cache channels' last events (bound: max_cache_bytes).",
            server.hub.cache().bytes() as u64,
        ),
        (
            "watchlist_connections",
            "Signed-in connections with a watchlist.",
            watching as u64,
        ),
        (
            "watchlist_users",
            "Users on some connection's watchlist.",
            watched as u64,
        ),
        (
            "history_messages",
            "Publications kept in channel history.",
            kept as u64,
        ),
        (
            "history_bytes",
            "Memory held by channel history (bound: max_history_bytes).",
            kept_bytes as u64,
        ),
        (
            "barrier_held_publications",
            "FIFO publications waiting for the local bus's barrier (several loops).",
            server.barriers.held() as u64,
        ),
    ]
}

/// The `/up` document.
pub fn health(st: &State) -> String {
    let link = st.io.link;
    let status = if st.stopping {
        "stopping"
    } else if link.is_some_and(|l| !l.up) || st.store_sync.failing() {
        // Serving local clients, but not reaching the other nodes (or not reading new apps).
        "degraded"
    } else {
        "ok"
    };
    let others = st.board.as_ref().map(|b| b.others()).unwrap_or_default();
    let theirs = |key| super::metrics_merge::others_sum(&others, key);
    let connections = (st.sessions.open() as u64).saturating_add(theirs("ferrocast_connections"));
    let frames_out = st
        .stats
        .frames_out
        .saturating_add(theirs("ferrocast_frames_out_total"));
    let write_calls = st
        .io
        .write_calls
        .saturating_add(theirs("ferrocast_write_calls_total"));
    json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "connections": connections,
        "channels": st.hub.len().max(theirs("ferrocast_channels") as usize),
        "loops": 1 + others.len(),
        "uptime_secs": st.clock.uptime().as_secs(),
        "frames_out": frames_out,
        "write_calls": write_calls,
        "scaling": st.cluster.as_ref().zip(link).map(|(c, l)| json!({
            "driver": st.cfg.scaling.driver,
            "node": c.node_id(),
            "redis": if l.up { "up" } else { "down" },
            "published": l.published,
            "received": c.received,
            "dropped": l.dropped_publishes,
        })),
    })
    .to_string()
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
