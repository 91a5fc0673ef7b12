//! The HTTP side of a connection: requests framed exactly (keep-alive and pipelining), routed
//! to a WebSocket upgrade, the REST API, `/internal/broadcast`, the console, health and
//! metrics. A request that cannot be framed is answered and its connection closed; a
//! keep-alive connection only goes on past a request it consumed whole.

use log::{debug, info};

use super::answer::{Decision, respond_error};
use super::conns::{Conn, Conns, Phase};
use super::state::State;
use super::{app_sync, close, console_http, held, metrics, rest, upgrade};
use crate::http::{self, Request};

/// Handles every complete request in the connection's buffer (several when pipelined).
pub fn handle_requests(conns: &mut Conns, st: &mut State, key: usize) {
    loop {
        // Pipelined requests wait while earlier answers are not taken.
        if conns.pause_if_over(key) {
            return;
        }
        let Some(conn) = conns.get_mut(key).filter(|c| c.phase == Phase::Request) else {
            return;
        };
        let inbuf = std::mem::take(&mut conn.inbuf);
        let decision = match http::parse(&inbuf, st.cfg.max_request_bytes) {
            Ok(None) => Decision::NeedMore,
            Err(http::ParseError::TooLarge) => respond_error(431, "request head too large"),
            Err(http::ParseError::Malformed) => respond_error(400, "malformed HTTP request"),
            Ok(Some(req)) => route(st, key, conn, &req, &inbuf),
        };
        match decision {
            Decision::NeedMore | Decision::Wait => {
                conn.inbuf = inbuf;
                return;
            }
            Decision::Respond(bytes) => return close::respond_and_close(conns, st, key, bytes),
            Decision::Upgrade(up) => {
                let rest = &inbuf[up.head_len..];
                return upgrade::begin(conns, st, key, up, rest);
            }
            Decision::RespondKeepAlive(bytes, consumed) => {
                // The next request gets a fresh handshake_timeout_secs; an idle keep-alive
                // connection is closed when it passes. One timer entry per second at most:
                // entries are never cancelled, so each one costs until it fires.
                let due = st.clock.secs() + st.cfg.handshake_timeout_secs as u32;
                if conn.timer_due != due {
                    conn.timer_due = st.timers.schedule(key, conn.id, due);
                }
                conn.inbuf = inbuf[consumed..].to_vec();
                let more = !conn.inbuf.is_empty();
                if !conns.send(key, &bytes.into()) || !more {
                    return;
                }
            }
        }
    }
}

/// Which answer a complete head gets.
fn route(st: &mut State, key: usize, conn: &mut Conn, req: &Request, buf: &[u8]) -> Decision {
    if !st.trusted_proxies.is_empty() {
        let ip = crate::proxy::client_ip(
            conn.peer.ip(),
            req.header("x-forwarded-for"),
            &st.trusted_proxies,
        );
        if ip != conn.peer.ip() {
            conn.peer = std::net::SocketAddr::new(ip, 0);
        }
    }
    let Some(rel) = req
        .path()
        .strip_prefix(st.cfg.prefix())
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return respond_error(404, "not found");
    };
    let rel = if rel.is_empty() { "/" } else { rel };
    if let Some(what) = app_sync::missing(st, rel)
        && app_sync::look_up(st, conn, key, what)
    {
        return Decision::Wait;
    }
    if http::wants_upgrade(req) {
        return upgrade::check(st, conn, req, rel);
    }
    // Plain HTTP: the whole body first.
    let end = match http::framing(req, buf.len(), st.cfg.max_body_bytes) {
        http::Framing::Complete { end } => end,
        http::Framing::NeedBody => return Decision::NeedMore,
        http::Framing::Refuse(status, why) => {
            info!(
                "connection {key}: {} {}: {why} ({status})",
                req.method,
                req.path()
            );
            let why = match status {
                413 => format!("{why} ({})", st.cfg.max_body_bytes),
                _ => why.to_string(),
            };
            return respond_error(status, &why);
        }
    };
    let body = &buf[req.head_len..end];
    if after_the_others(rel) && held::hold_request(st, key, conn) {
        return Decision::Wait;
    }
    debug!("connection {key}: {} {}", req.method, req.target);
    match dispatch(st, req, rel, body) {
        // Only a request framed exactly may be followed by another on this connection: `end`
        // covers at least the head, so the next pass starts past it.
        Decision::Respond(mut bytes) if req.keep_alive() => {
            http::keep_connection_open(&mut bytes);
            Decision::RespondKeepAlive(bytes, end)
        }
        other => other,
    }
}

/// Whether a request is handled after what the other loops did before it came (`barrier.rs`):
/// the REST API, whose reads count what they hold and whose publications go out after theirs,
/// and `/internal/broadcast`.
fn after_the_others(rel: &str) -> bool {
    rel.starts_with("/apps/") || rel.starts_with("/users/") || rel == "/internal/broadcast"
}

/// Answers a complete plain-HTTP request.
fn dispatch(st: &mut State, req: &Request, rel: &str, body: &[u8]) -> Decision {
    if let Some(sub) = console_http::route(st, rel) {
        return console_http::http(st, req, sub, body);
    }
    match (req.method, rel) {
        ("GET" | "HEAD", "/up" | "/pusher/health") => {
            Decision::Respond(http::response(200, &[], &metrics::health(st)))
        }
        ("GET", "/metrics") => Decision::Respond(http::response_typed(
            200,
            "text/plain; version=0.0.4",
            &metrics::render(st),
        )),
        ("POST", "/internal/broadcast") => rest::internal_broadcast(st, req, body),
        _ => rest::call(st, req, rel, body),
    }
}
