//! What time drives: connection deadlines (handshakes, pings, activity, sign-in, linger),
//! webhook batches, the cache's expiry, the console's snapshot, the cluster's heartbeat.

use log::{debug, info};

use super::conns::{Conns, Mode, Phase};
use super::peer::Peer;
use super::pending::Closing;
use super::state::State;
use super::timers::Entry;
use super::{app_sync, close, cluster, console, count_news, notify, pusher};
use crate::pusher::protocol as pp;
use crate::ws::{self, close as code};

/// Everything time drives: called every loop turn (cheap when nothing is due).
pub fn tick(conns: &mut Conns, st: &mut State) {
    count_news::pump(conns, st);
    if st.webhooks.has_work() {
        notify::pump(st);
    }
    cluster::prompt(st);
    super::shared_counts::sync_consoles(st);
    let now = st.clock.secs();
    if now == st.last_second {
        return;
    }
    st.last_second = now;
    let mut fired = Vec::new();
    st.timers.advance(now, &mut fired);
    for entry in fired {
        on_timer(conns, st, entry);
    }
    let instant = st.clock.now();
    st.hub.cache_mut().expire(instant);
    let hub = &st.hub;
    let occupied = |app: u16, channel: &str| hub.lookup(app as usize, channel).is_some();
    st.history.expire(instant, &occupied);
    console::stats(st);
    // Vacate records outlive their decision while other nodes may need them; the pump
    // forgets expired ones (and this node's changes tell the others).
    if st.webhooks.vacates().next().is_some() {
        notify::pump(st);
    }
    cluster::tick(st);
    app_sync::tick(st);
}

/// A connection's deadline: its handshake, its next ping or activity check, its sign-in,
/// the end of its linger.
fn on_timer(conns: &mut Conns, st: &mut State, entry: Entry) {
    let Some(conn) = conns.get(entry.key) else {
        return;
    };
    if conn.id != entry.id || conn.timer_due != entry.due {
        return;
    }
    let key = entry.key;
    match conn.phase {
        Phase::Request if conn.inbuf.is_empty() => {
            close::close_now(conns, st, key, "handshake timeout")
        }
        Phase::Request => {
            debug!(
                "connection {key} from {}: no complete request in time",
                conn.peer
            );
            let body = crate::http::error_body("request not completed in time");
            close::respond_and_close(conns, st, key, crate::http::response(408, &[], &body));
        }
        Phase::Open => session_timer(conns, st, key),
        Phase::Closing => close::close_now(conns, st, key, "closed"),
        // The validation job's own deadline decides.
        Phase::Validating => {}
    }
}

/// An open session's timer: the sign-in deadline, the activity timeout, or a ping.
fn session_timer(conns: &mut Conns, st: &mut State, key: usize) {
    let Some((conn, lists)) = conns.split(key) else {
        return;
    };
    let now = st.clock.secs();
    let mut peer = Peer::new(key, conn, lists);
    if pusher::check_signin(st, &mut peer) {
        if let Some(closing) = peer.closing {
            close::apply(conns, st, key, closing);
        }
        return;
    }
    let idle = now.saturating_sub(peer.conn.last_seen);
    let ping_every = st.cfg.ping_interval_secs as u32;
    let timeout = st.cfg.activity_timeout_secs as u32;
    let is_pusher = peer.conn.mode == Mode::Pusher;
    if idle >= timeout {
        info!(
            "connection {key} from {}: no activity for {idle}s; closing",
            peer.conn.peer
        );
        if is_pusher {
            // pusher-js reconnects on 4200-4299.
            let text = pp::error(Some(pp::code::PONG_NOT_RECEIVED), "Pong reply not received");
            let notice =
                Closing::Notice(text, pp::code::PONG_NOT_RECEIVED, "Pong reply not received");
            return close::apply(conns, st, key, notice);
        }
        return close::close_with(conns, st, key, code::NORMAL, "activity timeout");
    }
    let last_seen = peer.conn.last_seen;
    let next = if idle >= ping_every {
        let ping = if is_pusher {
            ws::text(pp::ping().as_bytes())
        } else {
            ws::encode(ws::OP_PING, b"").into()
        };
        peer.out.push(key, peer.conn, ping);
        (now + ping_every).min(last_seen + timeout)
    } else {
        last_seen + ping_every
    };
    let signin = peer
        .conn
        .pusher
        .as_ref()
        .and_then(|p| p.signin_deadline)
        .unwrap_or(u32::MAX);
    peer.conn.timer_due = st.timers.schedule(key, peer.conn.id, next.min(signin));
}
