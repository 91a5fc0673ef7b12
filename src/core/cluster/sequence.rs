//! Channel history across nodes: one stream per channel for the whole cluster, numbered by
//! Redis, so a client that comes back on another node resumes where it left off.
//!
//! A publication on a channel with history, made on a node scaling through Redis, is not
//! delivered at once: the node hands it to a Lua script ([`NUMBER`]) that, in one atomic step,
//! gives it the next offset of each of its channels' streams (making an epoch for a stream
//! Redis does not hold) and publishes it to every node with those positions. Every node, its
//! origin included, delivers and keeps it when Redis hands it back: Redis's single order of
//! messages on the nodes' channel is every node's order, so every node keeps the same
//! publication under the same position. The cost is one Redis round trip before delivery, paid
//! only on channels with history; publications on other channels go out at once, as before.
//!
//! A node that holds no position for a stream (it has not seen a publication on it yet) asks
//! Redis for it ([`POSITION`]) before a subscription with positions goes ahead: that
//! connection's input waits for the answer (it is "parked"), and the subscription is then
//! handled as if it had just arrived.
//!
//! Without Redis (the link is down, or does not answer) a node numbers alone, in an epoch of
//! its own: its clients keep their live messages, and a client coming back is told what cannot
//! be recovered rather than given a partial replay.

use std::time::{Duration, Instant};

use log::warn;

use super::numbering::{PATIENCE, STREAM_GRACE_MS};
pub use super::numbering::{Parked, Sequencer};
use super::wire::{Body, Envelope};
use crate::core::history::Position;
use crate::core::peer::Peer;
use crate::core::publication::{Origin, Publication};
use crate::core::state::State;
use crate::scaling::redis::{QUEUE_FULL, UNAVAILABLE};
use crate::scaling::resp::Reply;

/// Whether a publication made here goes through Redis to be numbered: scaling through Redis,
/// the link up, and a channel with history among its channels.
pub fn wanted(st: &State, app: usize, channels: &[String]) -> bool {
    let up = st.io.link.is_some_and(|l| l.up);
    let Some(c) = st.cluster.as_ref().filter(|_| up) else {
        return false;
    };
    let cfg = &st.apps.get(app).cfg;
    !c.sequencer.busy() && channels.iter().any(|ch| cfg.history_rule(ch).is_some())
}

/// How long Redis keeps the streams of these channels when idle (ms).
fn lifetime(st: &State, app: usize, channels: &[String]) -> u64 {
    let cfg = &st.apps.get(app).cfg;
    let ttl = channels
        .iter()
        .filter_map(|ch| cfg.history_rule(ch))
        .map(|r| r.ttl_secs)
        .max()
        .unwrap_or(0);
    ttl.saturating_mul(1000).saturating_add(STREAM_GRACE_MS)
}

/// Hands a publication made here to Redis to be numbered ([`wanted`] said so). `p` is a
/// [`Publication::Event`].
pub fn submit(st: &mut State, p: Publication) {
    let Publication::Event {
        app,
        ref channels,
        ref event,
        ref data,
        ref except,
        ..
    } = p
    else {
        return;
    };
    let cfg = &st.apps.get(app).cfg;
    let sequenced: Vec<String> = (channels.iter())
        .filter(|ch| cfg.history_rule(ch).is_some())
        .cloned()
        .collect();
    let ms = lifetime(st, app, channels);
    let app_id = cfg.id.clone();
    let now = st.clock.now();
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let tag = c.sequencer.tag();
    let body = Body::Publish {
        channels: channels.clone(),
        event: event.clone(),
        data: data.clone(),
        except: except.clone(),
        sequenced: sequenced.clone(),
        id: Some(tag),
    };
    let Some(envelope) = c.envelope(Some(&app_id), body) else {
        return;
    };
    let op = (c.sequencer).number(tag, &app_id, &sequenced, envelope, ms);
    c.sequencer.wait(tag, p, now);
    st.effects.link.push(op);
}

/// Parks a subscription with positions when this node holds no position for its channel's
/// stream: asks Redis for it, and the connection's input waits. Returns whether it did.
pub fn park(st: &mut State, peer: &mut Peer<'_>, app: usize, channel: &str, text: &str) -> bool {
    let up = st.io.link.is_some_and(|l| l.up);
    let cfg = &st.apps.get(app).cfg;
    let Some(rule) = cfg.history_rule(channel) else {
        return false;
    };
    let ms = (rule.ttl_secs.saturating_mul(1000)).saturating_add(STREAM_GRACE_MS);
    if !up || st.history.follows(app as u16, channel) {
        return false;
    }
    let app_id = cfg.id.clone();
    let now = st.clock.now();
    let Some(c) = st.cluster.as_mut().filter(|c| !c.sequencer.busy()) else {
        return false;
    };
    let parked = Parked {
        key: peer.key,
        conn_id: peer.conn.id,
        text: text.to_string(),
        app,
        channel: channel.to_string(),
        since: now,
    };
    let op = c.sequencer.park(&app_id, ms, parked);
    st.effects.link.push(op);
    peer.conn.wait();
    true
}

/// Redis answered one of this module's commands. Returns the subscription to handle again,
/// when the answer was for one.
pub fn on_reply(st: &mut State, tag: u64, reply: Reply) -> Option<Parked> {
    let c = st.cluster.as_mut()?;
    if let Some(parked) = c.sequencer.take_parked(tag) {
        let at = position_reply(&reply);
        if at.is_none() {
            note_error(st, &reply);
        }
        follow(st, &parked, at);
        return Some(parked);
    }
    // Numbered: the publication is delivered when it comes back. Refused: delivered here alone.
    if let Reply::Error(e) = &reply
        && let Some(p) = c.sequencer.take_waiting(tag)
    {
        alone(st, p, e);
        note_error(st, &reply);
    }
    None
}

/// `{epoch, offset}` from the position script.
fn position_reply(reply: &Reply) -> Option<Position> {
    let Reply::Array(parts) = reply else {
        return None;
    };
    match parts.as_slice() {
        [Reply::Bulk(epoch), Reply::Integer(offset)] => Some(Position {
            epoch: String::from_utf8(epoch.clone()).ok()?,
            offset: u64::try_from(*offset).ok()?,
        }),
        _ => None,
    }
}

/// The node follows the stream from the position Redis gave, or (none: Redis did not answer)
/// in an epoch of its own.
fn follow(st: &mut State, parked: &Parked, at: Option<Position>) {
    let Some(rule) = st.apps.get(parked.app).cfg.history_rule(&parked.channel) else {
        return;
    };
    let rule = (rule.size, Duration::from_secs(rule.ttl_secs));
    let app = parked.app as u16;
    match at {
        Some(at) => st.history.adopt(app, &parked.channel, &at, rule),
        None => {
            st.history.touch(app, &parked.channel, rule.0, rule.1);
        }
    }
}

/// Logs, once, an error Redis itself gave (not the link's own "unavailable").
fn note_error(st: &mut State, reply: &Reply) {
    let Reply::Error(e) = reply else {
        return;
    };
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    if e != UNAVAILABLE && e != QUEUE_FULL && c.sequencer.first_refusal() {
        warn!(
            "Redis refused to number a publication for channel history ({e}): this node \
             numbers alone; history across nodes needs Redis 5 or later with scripting"
        );
    }
}

/// A publication Redis did not number: delivered here, numbered by this node alone. When Redis
/// itself refused the script, the other nodes never got it: it goes to them as a plain
/// publication.
fn alone(st: &mut State, mut p: Publication, error: &str) {
    // The loops of one process still reach one another when Redis does not answer.
    let on_bus = st.cluster.as_ref().is_some_and(|c| c.prompt);
    let origin = if (error == UNAVAILABLE || error == QUEUE_FULL) && !on_bus {
        Origin::Alone
    } else {
        Origin::Unnumbered
    };
    if let Publication::Event { origin: o, .. } = &mut p {
        *o = origin;
        st.publish(p);
    }
}

/// A numbered publication came back from Redis. `own`: this node made it (`id` is its tag).
/// Returns what to deliver here, with the positions of its channels with history.
pub fn arrived(st: &mut State, own: bool, app: usize, env: Envelope) -> Option<Publication> {
    let Body::Publish {
        channels,
        event,
        data,
        except,
        sequenced,
        id,
    } = env.body
    else {
        return None;
    };
    if own {
        let c = st.cluster.as_mut()?;
        // Gone when the node stopped waiting (Redis was slow or cut): it was delivered then.
        c.sequencer.take_waiting(id?)?;
    }
    if sequenced.len() != env.positions.len() {
        warn!(
            "a numbered publication from node {} had {} positions for {} channels",
            env.node,
            env.positions.len(),
            sequenced.len()
        );
    }
    let positions = sequenced
        .into_iter()
        .zip(env.positions)
        .map(|(ch, (epoch, offset))| (ch, Position { epoch, offset }))
        .collect();
    Some(Publication::Numbered {
        app,
        channels,
        event,
        data,
        except,
        positions,
    })
}

/// The link went down: everything waiting for Redis goes on without it. Returns the parked
/// subscriptions to handle again.
pub fn on_link_down(st: &mut State) -> Vec<Parked> {
    release(st, |_| true)
}

/// Once a second: what waited too long for Redis goes on without it.
pub fn sweep(st: &mut State) -> Vec<Parked> {
    let now = st.clock.now();
    release(st, |since| now.saturating_duration_since(since) >= PATIENCE)
}

fn release(st: &mut State, due: impl Fn(Instant) -> bool) -> Vec<Parked> {
    let Some(c) = st.cluster.as_mut() else {
        return Vec::new();
    };
    let (late, parked) = c.sequencer.take_due(due);
    for p in late {
        alone(st, p, UNAVAILABLE);
    }
    for p in &parked {
        follow(st, p, None);
    }
    parked
}
