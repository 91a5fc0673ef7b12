//! Channel history for Pusher clients (`clients/js/ferrocast-recovery.js` beside stock pusher-js
//! or Laravel Echo). pusher-js drops unknown fields of the messages it gets, so positions
//! travel as `pusher_internal:ferrocast_position` events, which it hands to no callback: "the
//! next event is offset N" before each event of a channel with history, and "everything up to
//! N was given" after a subscription. The script reads them off the connection, and on a
//! resubscription asks for what followed its last complete position: the missed events come
//! as normal events, in order, before anything live, or the channel gets
//! `ferrocast:recovery_failed`.

use std::time::Duration;

use super::history::{Position, Recovery};
use super::peer::Peer;
use super::state::State;
use crate::pusher::protocol as pp;

/// After a subscription's answer (and cached event): positions from now on, the replay a
/// returning client asked for, and where the stream stands.
pub fn subscribed(
    st: &mut State,
    peer: &mut Peer<'_>,
    app: usize,
    channel: &str,
    resume: pp::Resume,
) {
    if resume.positions {
        peer.conn.positions = true;
    }
    let Some(rule) = st.apps.get(app).cfg.history_rule(channel) else {
        if resume.recover.is_some() {
            peer.reply(&pp::recovery_failed(channel, None));
        }
        return;
    };
    let (size, ttl) = (rule.size, Duration::from_secs(rule.ttl_secs));
    let mut complete = true;
    let from = resume
        .recover
        .map(|(epoch, offset)| Position { epoch, offset });
    if let Some(from) = &from {
        complete = replay(st, peer, app, channel, from.clone());
    }
    if !peer.conn.positions && complete {
        return;
    }
    let mut at = st.history.touch(app as u16, channel, size, ttl);
    if complete {
        at = furthest(at, from);
    }
    if !complete {
        peer.reply(&pp::recovery_failed(channel, Some((&at.epoch, at.offset))));
    }
    if peer.conn.positions {
        peer.reply(&pp::position(channel, &at.epoch, "at", at.offset));
    }
}

/// Where a client that recovered stands: this node's position, or its own when it is further
/// in the same epoch (it saw, on another node, what is still on its way here).
pub fn furthest(here: Position, client: Option<Position>) -> Position {
    match client {
        Some(c) if c.epoch == here.epoch && c.offset > here.offset => c,
        _ => here,
    }
}

/// Sends what a client missed since `from`, each event after its position; whether it was all.
fn replay(st: &mut State, peer: &mut Peer<'_>, app: usize, channel: &str, from: Position) -> bool {
    match st
        .history
        .recover(app as u16, channel, &from, st.clock.now())
    {
        Recovery::Complete(missed) => {
            st.stats.history_replayed += missed.len() as u64;
            for kept in missed {
                let next = pp::position(channel, &from.epoch, "next", kept.offset);
                peer.reply(&next);
                peer.reply(&pp::event(&kept.event, channel, &kept.data(), None));
            }
            true
        }
        Recovery::Lost => false,
    }
}
