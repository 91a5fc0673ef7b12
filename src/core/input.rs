//! Bytes from a connection: HTTP requests while it is one, WebSocket frames once it is a
//! session, each message handed to its protocol's handler with the connection as a [`Peer`].
//! Input stops being handled while the connection's output is past the pause mark; what was
//! read waits in its buffer and is handled when the queue drains ([`handle_buffered`]).

use log::{debug, info};

use super::cluster::sequence::Parked;
use super::conns::{Conns, Mode, Phase};
use super::peer::Peer;
use super::state::State;
use super::{channel, close, http, pusher};
use crate::deflate::InflateError;
use crate::ws::{self, Inbound, MessageRef, Parsed, close as code};

pub fn on_bytes(conns: &mut Conns, st: &mut State, key: usize, data: &mut [u8]) {
    let now = st.clock.secs();
    let limit = st
        .cfg
        .max_request_bytes
        .saturating_add(st.cfg.max_message_bytes);
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    conn.last_seen = now;
    match conn.phase {
        Phase::Request => {
            conn.inbuf.extend_from_slice(data);
            requests(conns, st, key);
        }
        Phase::Open if conn.inbuf.is_empty() => {
            let used = handle_frames(conns, st, key, data);
            keep_unconsumed(conns, key, &data[used..]);
        }
        Phase::Open => {
            conn.inbuf.extend_from_slice(data);
            handle_inbuf_frames(conns, st, key);
        }
        // Frames sent right behind the handshake wait for the verdict, within reason.
        Phase::Validating => {
            conn.inbuf.extend_from_slice(data);
            if conn.inbuf.len() > limit {
                close::close_now(
                    conns,
                    st,
                    key,
                    "sent too much before the handshake completed",
                );
            }
        }
        // Waiting for the peer's EOF: input is discarded.
        Phase::Closing => {}
    }
}

/// Handles input kept in the connection's buffer (a paused connection's backlog).
pub fn handle_buffered(conns: &mut Conns, st: &mut State, key: usize) {
    let Some(conn) = conns.get(key) else {
        return;
    };
    if conn.is_paused() || conn.inbuf.is_empty() {
        return;
    }
    match conn.phase {
        Phase::Request => requests(conns, st, key),
        Phase::Open => handle_inbuf_frames(conns, st, key),
        Phase::Validating | Phase::Closing => {}
    }
}

/// HTTP requests, then, when one opened a session, the frames that came right behind it.
fn requests(conns: &mut Conns, st: &mut State, key: usize) {
    http::handle_requests(conns, st, key);
    if conns
        .get(key)
        .is_some_and(|c| c.phase == Phase::Open && !c.inbuf.is_empty())
    {
        handle_inbuf_frames(conns, st, key);
    }
}

/// Frames sent right behind a request head or kept while paused: handled from the buffer.
pub fn handle_inbuf_frames(conns: &mut Conns, st: &mut State, key: usize) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    let mut buf = std::mem::take(&mut conn.inbuf);
    let used = handle_frames(conns, st, key, &mut buf);
    buf.drain(..used);
    if let Some(conn) = conns.get_mut(key)
        && conn.phase == Phase::Open
    {
        conn.inbuf = buf;
        conn.trim_buffers();
    }
}

fn keep_unconsumed(conns: &mut Conns, key: usize, rest: &[u8]) {
    if let Some(conn) = conns.get_mut(key)
        && conn.phase == Phase::Open
        && !rest.is_empty()
    {
        conn.inbuf.extend_from_slice(rest);
    }
}

/// Parses frames from `buf` and handles every complete message; returns the bytes consumed.
/// Stops early when the connection pauses (its replies wait to be taken) or closes.
pub fn handle_frames(conns: &mut Conns, st: &mut State, key: usize, buf: &mut [u8]) -> usize {
    let max = st.cfg.max_message_bytes;
    let mut used = 0;
    loop {
        let Some((conn, lists)) = conns.split(key) else {
            return used;
        };
        if conn.phase != Phase::Open {
            return buf.len();
        }
        if conn.is_waiting() {
            return used;
        }
        if lists.pause_if_over(conn) {
            debug!(
                "connection {key}: {} bytes queued; not reading until it takes them",
                conn.queued_bytes()
            );
            return used;
        }
        let deflate = conn.deflate;
        let parsed = ws::parse_frame_as(&mut buf[used..], &mut conn.fragments, max, deflate);
        let (consumed, message) = match parsed {
            Ok(Parsed::Incomplete) => return used,
            Ok(Parsed::Frame { consumed, message }) => (consumed, message),
            Err(v) => {
                info!(
                    "connection {key} from {}: {} (close {})",
                    conn.peer, v.reason, v.code
                );
                close::close_with(conns, st, key, v.code, v.reason);
                return buf.len();
            }
        };
        let start = used;
        used += consumed;
        let Some(msg) = message else { continue };
        let reassembled = match msg {
            MessageRef::Reassembled { .. } => conn.fragments.take(),
            MessageRef::InBuf { .. } => None,
        };
        let raw = msg.raw(&buf[start..], reassembled.as_deref());
        let handled = if msg.compressed() {
            inflated(conns, st, key, msg.opcode(), raw)
        } else {
            ws::view_payload(msg.opcode(), raw).map(|m| on_message(conns, st, key, m))
        };
        if let Err(v) = handled {
            info!("connection {key}: {} (close {})", v.reason, v.code);
            close::close_with(conns, st, key, v.code, v.reason);
            return buf.len();
        }
    }
}

/// A compressed message, inflated within `max_message_bytes` (a bomb stops there), then
/// handled as any other.
fn inflated(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    opcode: u8,
    raw: &[u8],
) -> Result<(), ws::Violation> {
    let mut out = std::mem::take(&mut st.inflating.buf);
    let result = match st
        .inflating
        .inflater
        .inflate(raw, st.cfg.max_message_bytes, &mut out)
    {
        Ok(()) => ws::view_payload(opcode, &out).map(|m| on_message(conns, st, key, m)),
        Err(InflateError::TooBig) => Err(ws::Violation {
            code: code::TOO_BIG,
            reason: "message too big once inflated",
        }),
        Err(InflateError::Malformed) => Err(ws::Violation {
            code: code::INVALID_DATA,
            reason: "invalid compressed data",
        }),
    };
    st.inflating.buf = out;
    result
}

/// A message that waited for Redis (a parked subscription, `cluster/sequence.rs`), handled now
/// as if it had just arrived; then the input that waited behind it.
pub fn rerun(conns: &mut Conns, st: &mut State, parked: Parked) {
    if conns.get(parked.key).is_none_or(|c| c.id != parked.conn_id) {
        return;
    }
    rerun_text(conns, st, parked.key, &parked.text);
}

/// A message that waited (for Redis or a barrier of the local bus), handled now; the caller
/// checked the connection is still the one that sent it.
pub fn rerun_text(conns: &mut Conns, st: &mut State, key: usize, text: &str) {
    conns.unwait(key);
    // A connection that began to close meanwhile handles nothing more.
    if conns.get(key).is_none_or(|c| c.phase != Phase::Open) {
        return;
    }
    st.stats.messages_in = st.stats.messages_in.saturating_sub(1);
    on_message(conns, st, key, Inbound::Text(text));
}

/// One complete message or control frame of a session.
fn on_message(conns: &mut Conns, st: &mut State, key: usize, msg: Inbound<'_>) {
    let Some((conn, lists)) = conns.split(key) else {
        return;
    };
    let mut peer = Peer::new(key, conn, lists);
    match msg {
        Inbound::Ping(payload) => peer.send(ws::encode(ws::OP_PONG, payload).into()),
        Inbound::Pong => {}
        // Echo the peer's code, as RFC 6455 §5.5.1 suggests.
        Inbound::Close(c, _) => peer.close(c.unwrap_or(code::NORMAL), ""),
        Inbound::Text(text) => {
            st.stats.messages_in += 1;
            match peer.conn.mode {
                Mode::Channel => channel::on_text(st, &mut peer, text),
                Mode::Raw => channel::on_raw_text(st, &mut peer, text),
                Mode::Pusher => pusher::on_text(st, &mut peer, text),
                Mode::Http | Mode::Console => {}
            }
        }
        Inbound::Binary(bytes) => {
            st.stats.messages_in += 1;
            match peer.conn.mode {
                Mode::Channel => channel::on_binary(&mut peer),
                Mode::Pusher => pusher::on_binary(&mut peer),
                _ => debug!(
                    "connection {key}: ignored a binary message of {} bytes",
                    bytes.len()
                ),
            }
        }
    }
    if let Some(closing) = peer.closing {
        close::apply(conns, st, key, closing);
    }
}
