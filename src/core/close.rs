//! Where connections end: the one place that decides it, and what ending releases.
//!
//! Three ways: a close frame (a WebSocket session: the frame goes out, then the loop shuts our
//! side and lingers for the peer's EOF), a final HTTP answer (the same, with the answer), or at
//! once (the peer is gone, the handshake timed out): the state is dropped and the loop drops
//! the socket. Whichever way, the session's memberships end first, exactly once.

use log::{debug, info, warn};

use super::conns::{Conns, Mode, Phase};
use super::effects::{Stop, UserFifo};
use super::pending::Closing;
use super::state::{State, Via};
use super::{hooks, membership, online};
use crate::ws::{self, close};

/// How long a closing connection may linger waiting for the peer's EOF.
const LINGER_SECS: u32 = 3;

pub fn apply(conns: &mut Conns, st: &mut State, key: usize, closing: Closing) {
    match closing {
        Closing::Frame(code, reason) => close_with(conns, st, key, code, &reason),
        Closing::Notice(text, code, reason) => {
            conns.send(key, &ws::text(text.as_bytes()));
            close_with(conns, st, key, code, reason);
        }
    }
}

/// Sends a close frame and lingers until the peer closes (or the linger time passes).
pub fn close_with(conns: &mut Conns, st: &mut State, key: usize, code: u16, reason: &str) {
    if conns.get(key).map(|c| c.phase) != Some(Phase::Open) {
        return;
    }
    release(conns, st, key, Some(code), reason);
    conns.push(key, ws::close_frame(code, reason));
    linger(conns, st, key);
}

/// Sends a final answer (an HTTP response) and lingers like a close.
pub fn respond_and_close(conns: &mut Conns, st: &mut State, key: usize, bytes: Vec<u8>) {
    if !conns
        .get(key)
        .is_some_and(|c| matches!(c.phase, Phase::Request | Phase::Validating))
    {
        return;
    }
    release(conns, st, key, None, "answered");
    conns.push(key, bytes.into());
    linger(conns, st, key);
}

/// The peer shut its side (EOF). What it is still owed (answers to what it sent with its last
/// bytes) goes out first: the connection ends once its queue is written.
pub fn peer_done(conns: &mut Conns, st: &mut State, key: usize) {
    if !conns.has_output(key) {
        return close_now(conns, st, key, "peer closed");
    }
    release(conns, st, key, None, "peer closed");
    if let Some(conn) = conns.get_mut(key) {
        conn.peer_done = true;
    }
    linger(conns, st, key);
}

/// Drops the connection at once: its state goes, and the loop drops its socket.
pub fn close_now(conns: &mut Conns, st: &mut State, key: usize, why: &str) {
    if conns.get(key).is_none() {
        return;
    }
    release(conns, st, key, None, why);
    if let Some(conn) = conns.remove(key) {
        debug!("connection {key} from {} closed: {why}", conn.peer);
    }
    st.stats.connections_closed += 1;
    st.effects.closed.push(key);
}

/// A connection whose client took less than its queue's bound: its queue is dropped and it
/// gets 1008.
pub fn slow_consumer(conns: &mut Conns, st: &mut State, key: usize) {
    let Some(conn) = conns.get(key) else {
        return;
    };
    st.stats.slow_consumers += 1;
    let (peer, queued) = (conn.peer, conn.queued_bytes());
    if conn.mode == Mode::Http {
        warn!(
            "closing connection {key} from {peer}: its HTTP answers are not read (over outbound_queue_bytes)"
        );
        return close_now(conns, st, key, "slow consumer");
    }
    warn!(
        "closing connection {key} from {peer}: slow consumer, over outbound_queue_bytes ({queued} queued)"
    );
    conns.discard_queue(key);
    close_with(conns, st, key, close::POLICY, "slow consumer");
    let detail = format!("slow consumer {peer} closed (over outbound_queue_bytes)");
    super::console::event(st, "error", None, None, None, Some(&detail));
}

/// Closes every connection for a shutdown: sessions get a close frame, the rest go at once.
pub fn shutdown(conns: &mut Conns, st: &mut State, how: Stop) {
    if st.stopping {
        return;
    }
    st.stopping = true;
    let (code, reason) = match how {
        Stop::GoingAway => (close::GOING_AWAY, "server shutting down"),
        Stop::Restart => (close::RESTART, "server restarting"),
    };
    info!("closing {} connection(s)", st.sessions.open());
    if let Some(cluster) = st.cluster.as_mut() {
        cluster.leave(&mut st.effects.link);
    }
    let keys: Vec<usize> = conns.keys().collect();
    for key in keys {
        match conns.get(key).map(|c| c.phase) {
            Some(Phase::Open) => close_with(conns, st, key, code, reason),
            Some(Phase::Request | Phase::Validating) => close_now(conns, st, key, "shutdown"),
            Some(Phase::Closing) | None => {}
        }
    }
}

/// From here the connection only drains its queue: no input is handled, and the timer gives
/// the peer `LINGER_SECS` to close its side.
fn linger(conns: &mut Conns, st: &mut State, key: usize) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    conn.phase = Phase::Closing;
    conn.inbuf = Vec::new();
    conn.fragments = None;
    conn.timer_due = st
        .timers
        .schedule(key, conn.id, st.clock.secs() + LINGER_SECS);
}

/// Ends a session's membership in everything: channels, presence, counts, the user's FIFO,
/// the consoles, and tells the app's hooks `why` (with the close `code` sent, if any).
/// Idempotent: the connection leaves the `Open` phase.
fn release(conns: &mut Conns, st: &mut State, key: usize, code: Option<u16>, why: &str) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    if conn.phase != Phase::Open {
        // Only a session has memberships; the hub may still know an attached connection that
        // never opened (it is reset either way).
        st.hub.detach(key);
        return;
    }
    if conn.mode != Mode::Console {
        hooks::disconnected(st, conn, code, why);
    }
    conn.phase = Phase::Closing;
    let pusher = conn.pusher.take();
    let user = conn.user.take();
    let (peer, mode, id) = (conn.peer, conn.mode, conn.id);
    if mode == Mode::Console {
        st.consoles.remove(key);
        super::shared_counts::sync_consoles(st);
        return;
    }
    if st.consoles.listening() {
        let socket_id = st.socket_id_of(id);
        super::console::event(st, "connection_closed", Some(&socket_id), None, None, None);
    }
    st.sessions.closed(peer.ip());
    super::shared_counts::sync_sessions(st, peer.ip());
    if let Some(p) = pusher {
        let app = p.app as usize;
        let counts = st.apps.get_mut(app);
        counts.connections = counts.connections.saturating_sub(1);
        super::shared_counts::sync_app(st, app);
        if let Some(user) = p.user_id {
            if st.sessions.user_detached(app, &user, key, Via::Signin) {
                online::went_offline(st, app, &user);
            }
            membership::user_changed(st, app, &user);
            st.watchers.forget(key);
        }
    }
    if let Some(user) = user {
        if st.sessions.user_detached(0, &user, key, Via::Validation) {
            // The user's FIFO goes with its last connection.
            let user = user.to_string();
            st.effects.user_fifos.push(UserFifo::Close(user));
        }
        membership::user_changed(st, 0, &user);
    }
    for left in st.hub.detach(key) {
        membership::left(st, id, left);
    }
}
