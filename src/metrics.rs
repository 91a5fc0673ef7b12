//! `/metrics` in the Prometheus text format.

use std::fmt::Write as _;

use crate::server::Server;

pub fn render(server: &Server) -> String {
    let s = &server.stats;
    let mut out = String::with_capacity(2048);
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP ferrocast_{name} {help}\n# TYPE ferrocast_{name} counter\nferrocast_{name} {value}"
        );
    };
    counter(
        "connections_opened_total",
        "TCP connections accepted.",
        s.connections_opened,
    );
    counter(
        "connections_closed_total",
        "TCP connections closed.",
        s.connections_closed,
    );
    counter(
        "messages_in_total",
        "WebSocket messages received from clients.",
        s.messages_in,
    );
    counter(
        "frames_out_total",
        "Frames queued to clients (one per recipient).",
        s.frames_out,
    );
    counter(
        "write_calls_total",
        "writev calls made to client sockets.",
        s.write_calls,
    );
    counter(
        "fifo_lines_total",
        "Lines read from the broadcast FIFO.",
        s.fifo_lines,
    );
    counter(
        "fifo_dropped_total",
        "FIFO lines dropped for exceeding max_fifo_line_bytes.",
        s.fifo_dropped,
    );
    counter(
        "slow_consumers_total",
        "Connections closed for exceeding outbound_queue_bytes.",
        s.slow_consumers,
    );
    counter(
        "api_publishes_total",
        "Events published through the HTTP API.",
        s.api_publishes,
    );
    counter(
        "client_events_total",
        "Pusher client events forwarded.",
        s.client_events,
    );
    counter(
        "rate_limited_total",
        "Requests and client events refused by a rate limit.",
        s.rate_limited,
    );
    counter(
        "workers_started_total",
        "Forked handler jobs started.",
        s.workers_started,
    );
    counter(
        "workers_refused_total",
        "Handler jobs refused because the worker queue was full.",
        s.workers_refused,
    );
    counter(
        "workers_failed_total",
        "Handler jobs that failed, crashed or timed out.",
        s.workers_failed,
    );
    counter(
        "webhooks_sent_total",
        "Webhook batches delivered.",
        server.webhooks.sent,
    );
    counter(
        "webhook_failures_total",
        "Webhook send attempts that failed (each is retried or dropped).",
        server.webhooks.failed_attempts,
    );
    counter(
        "webhooks_dropped_total",
        "Webhook batches given up on (tries exhausted or queue full).",
        server.webhooks.dropped,
    );
    let _ = writeln!(
        out,
        "# HELP ferrocast_rest_calls_total REST API responses by status.\n# TYPE ferrocast_rest_calls_total counter"
    );
    for (status, n) in &s.rest_calls {
        let _ = writeln!(out, "ferrocast_rest_calls_total{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP ferrocast_connections Open WebSocket sessions.\n# TYPE ferrocast_connections gauge\nferrocast_connections {}",
        server.sessions
    );
    let _ = writeln!(
        out,
        "# HELP ferrocast_app_connections Open Pusher connections per app.\n# TYPE ferrocast_app_connections gauge"
    );
    for app in server.apps.iter() {
        let _ = writeln!(
            out,
            "ferrocast_app_connections{{app=\"{}\"}} {}",
            escape(&app.cfg.id),
            app.connections
        );
    }
    let channels: usize = server.channels.iter().map(|c| c.len()).sum();
    let _ = writeln!(
        out,
        "# HELP ferrocast_channels Occupied channels.\n# TYPE ferrocast_channels gauge\nferrocast_channels {channels}"
    );
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
