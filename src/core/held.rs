//! What must wait for a barrier of the local bus (`barrier.rs` explains why and holds it),
//! and what a barrier lets go, handled: publications in their order, then the questions as if
//! they had just arrived.

use log::warn;

use super::barrier::{self, Released};
use super::conns::{Conn, Conns};
use super::peer::Peer;
use super::publication::Publication;
use super::state::State;
use super::{input, publish};

/// Whether anything waits for barriers: this is one of several loops, on its bus, and not
/// stopping.
fn wanted(st: &State) -> bool {
    !st.barriers.is_off()
        && st.cluster.as_ref().is_some_and(|c| c.on_bus())
        && st.io.link.is_some_and(|l| l.up)
}

/// A WebSocket message that reads shared state waits for a barrier, unless it just passed one.
/// Returns whether it waits.
pub fn hold_message(st: &mut State, peer: &mut Peer<'_>, text: &str) -> bool {
    hold(st, peer.key, peer.conn, Some(text))
}

/// An HTTP request waits for a barrier (left in the connection's buffer), unless it just
/// passed one. Returns whether it waits.
pub fn hold_request(st: &mut State, key: usize, conn: &mut Conn) -> bool {
    hold(st, key, conn, None)
}

fn hold(st: &mut State, key: usize, conn: &mut Conn, text: Option<&str>) -> bool {
    if st.barriers.take_passing((key, conn.id)) || !wanted(st) {
        return false;
    }
    let now = st.clock.now();
    (st.barriers).hold((key, conn.id), text, now, &mut st.effects.link);
    conn.wait();
    true
}

/// A publication about to go out: returned when it goes now, else held (`barrier.rs`). Past
/// the bound, what waited before it goes out first, here.
pub fn hold_publication(conns: &mut Conns, st: &mut State, p: Publication) -> Option<Publication> {
    if !wanted(st) {
        return Some(p);
    }
    let now = st.clock.now();
    let mut released = Released::default();
    let p = (st.barriers).hold_publication(p, now, &mut st.effects.link, &mut released);
    release(conns, st, released);
    p
}

/// The bus's marker for barrier `n` arrived.
pub fn passed(conns: &mut Conns, st: &mut State, n: u64) {
    let released = st.barriers.passed(n);
    release(conns, st, released);
}

/// What waited too long (or everything, `all`: the bus refused, or the link went down) goes
/// on with what this loop knows.
pub fn give_up(conns: &mut Conns, st: &mut State, all: bool) {
    let released = st.barriers.give_up(st.clock.now(), all);
    let n = released.publications.len() + released.waiters.len();
    if n > 0 && !all {
        warn!(
            "the local bus set no barrier within {}s: {n} question(s) and publication(s) go on with this loop's state",
            barrier::patience().as_secs()
        );
    }
    release(conns, st, released);
}

/// The loop stops: what waits goes now, and nothing waits any more.
pub fn stop(conns: &mut Conns, st: &mut State) {
    let released = st.barriers.stop();
    release(conns, st, released);
}

/// Handles what a barrier let go. The caller settles after.
pub fn release(conns: &mut Conns, st: &mut State, released: Released) {
    for p in released.publications {
        publish::deliver(conns, st, p);
    }
    for w in released.waiters {
        if conns.get(w.key).is_none_or(|c| c.id != w.conn_id) {
            continue;
        }
        st.barriers.set_passing(Some((w.key, w.conn_id)));
        match w.text {
            Some(text) => input::rerun_text(conns, st, w.key, &text),
            None => {
                conns.unwait(w.key);
                input::handle_buffered(conns, st, w.key);
            }
        }
        st.barriers.set_passing(None);
    }
}
