//! Time in the core: the connection timers (a hashed timing wheel with one-second slots), and
//! the work each tick does.
//!
//! Every connection has at most one live deadline (handshake, next ping check, close linger).
//! Entries are never cancelled: a connection remembers the due time of its live entry, and an
//! entry that fires for a closed connection or with another due time is ignored. That makes
//! scheduling O(1) and keeps the per-connection cost of timers to one `u32`.

use log::{debug, info};

use super::conns::{Conns, Mode, Phase};
use super::state::State;
use super::{Peer, close, cluster, console, pusher, webhooks};
use crate::pusher::protocol as pp;
use crate::ws::{self, close as code};

const SLOTS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: usize,
    /// The connection's unique id, so an entry never fires for a reused slab slot.
    pub id: u64,
    pub due: u32,
}

pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    /// Last second processed.
    current: u32,
    spare: Vec<Entry>,
}

impl Wheel {
    pub fn new(now: u32) -> Wheel {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            current: now,
            spare: Vec::new(),
        }
    }

    /// Schedules an entry; a due time in the past fires on the next advance.
    pub fn schedule(&mut self, key: usize, id: u64, due: u32) -> u32 {
        let due = due.max(self.current + 1);
        self.slots[due as usize % SLOTS].push(Entry { key, id, due });
        due
    }

    /// Moves time to `now`, appending every entry that came due to `fired`.
    pub fn advance(&mut self, now: u32, fired: &mut Vec<Entry>) {
        while self.current < now {
            self.current += 1;
            let idx = self.current as usize % SLOTS;
            std::mem::swap(&mut self.slots[idx], &mut self.spare);
            for e in self.spare.drain(..) {
                if e.due <= self.current {
                    fired.push(e);
                } else {
                    // Due a whole turn or more later: wait for another lap.
                    self.slots[idx].push(e);
                }
            }
        }
    }
}

/// Everything time drives: called every loop turn (cheap when nothing is due).
pub fn tick(conns: &mut Conns, st: &mut State) {
    if st.webhooks.has_work() {
        webhooks::pump(st);
    }
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
    console::stats(st);
    // Vacate records outlive their decision while other nodes may need them; the pump
    // forgets expired ones (and this node's changes tell the others).
    if st.webhooks.vacates().next().is_some() {
        webhooks::pump(st);
    }
    cluster::tick(st);
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
            let notice = close::Closing::Notice(
                text,
                pp::code::PONG_NOT_RECEIVED,
                "Pong reply not received",
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_laps() {
        let mut w = Wheel::new(0);
        w.schedule(1, 10, 3);
        w.schedule(2, 20, 3 + SLOTS as u32);
        w.schedule(3, 30, 0); // past: next second
        let mut fired = Vec::new();
        w.advance(1, &mut fired);
        assert_eq!(fired.iter().map(|e| e.key).collect::<Vec<_>>(), vec![3]);
        fired.clear();
        w.advance(3, &mut fired);
        assert_eq!(fired.iter().map(|e| e.key).collect::<Vec<_>>(), vec![1]);
        fired.clear();
        w.advance(2 + SLOTS as u32, &mut fired);
        assert!(fired.is_empty());
        w.advance(3 + SLOTS as u32, &mut fired);
        assert_eq!(fired.iter().map(|e| e.key).collect::<Vec<_>>(), vec![2]);
    }
}
