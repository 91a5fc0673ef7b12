//! Several nodes, one set of channels: this node's side of scaling through Redis. Every
//! publication accepted here is delivered locally at once and handed to the other nodes
//! ([`LinkOp`]s the loop gives to the Redis link); what they publish arrives through
//! [`on_message`]. This node's channels, presence members and user counts are replicated to
//! the others as numbered changes (and kept in an expiring heartbeat key); theirs are kept in
//! a [`replica::Replica`]. Local delivery never waits for Redis.

pub mod heartbeat;
pub mod numbering;
pub mod replica;
pub mod sequence;
pub mod wire;

use std::collections::HashMap;

use log::{info, warn};
use serde_json::Value;

pub mod node;

use node::Source;

use super::apps::Apps;
use super::count_news;
use super::hub::Hub;
use super::publication::{Origin, Publication};
use super::state::{Sessions, State, Via};
use crate::pusher::protocol as pp;
use crate::scaling::resp::Reply;
use crate::ws::{self, Frame};
use heartbeat::StoredNode;
use replica::{ChannelState, MemberEvent, NodeState};
use wire::{Body, Envelope};

fn send(st: &mut State, app: Option<usize>, body: Body) {
    let app_id = app.map(|a| st.apps.get(a).cfg.id.clone());
    if let Some(cluster) = st.cluster.as_ref() {
        cluster.send(app_id.as_deref(), body, &mut st.effects.link);
    }
}

/// A publication made here, for the other nodes (as one message, whatever its channels).
pub fn publish(
    st: &mut State,
    app: usize,
    channels: Vec<String>,
    event: String,
    data: String,
    except: Option<String>,
) {
    if st.cluster.is_some() {
        let body = Body::Publish {
            channels,
            event,
            data,
            except,
            sequenced: Vec::new(),
            id: None,
        };
        send(st, Some(app), body);
    }
}

/// A client event, in its final form, for the other nodes' subscribers.
pub fn frame(st: &mut State, app: usize, channel: String, frame: &Frame) {
    if st.cluster.is_some() {
        let text = String::from_utf8_lossy(ws::payload(frame)).into_owned();
        send(st, Some(app), Body::Frame { channel, text });
    }
}

/// A global FIFO line, for the other nodes' clients.
pub fn global(st: &mut State, line: &[u8]) {
    if st.cluster.is_some() {
        let line = String::from_utf8_lossy(line).into_owned();
        send(st, None, Body::Global { line });
    }
}

/// A user's FIFO line (or a routed reply), for the user's connections on the other nodes.
pub fn user(st: &mut State, user: &str, frame: &Frame) {
    if st.cluster.is_some() {
        let text = String::from_utf8_lossy(ws::payload(frame)).into_owned();
        let user_id = user.to_string();
        send(st, None, Body::User { user_id, text });
    }
}

/// REST terminate_connections: every node closes that user's signed-in connections.
pub fn terminate(st: &mut State, app: usize, user: &str) {
    if st.cluster.is_some() {
        let user_id = user.to_string();
        send(st, Some(app), Body::Terminate { user_id });
    }
}

/// Tells the others a channel got its first subscriber here or lost its last one.
pub fn occupancy(
    st: &mut State,
    app: usize,
    channel: &str,
    occupied_at: u64,
    vacated_at: Option<u64>,
) {
    if st.cluster.is_some() {
        let body = Body::Occupancy {
            channel: channel.into(),
            occupied_at,
            vacated_at,
        };
        send(st, Some(app), body);
    }
}

/// Subscribers and presence members the other nodes hold for a channel.
pub fn remote_channel(
    st: &State,
    app: usize,
    channel: &str,
) -> (usize, HashMap<String, Option<Value>>) {
    match &st.cluster {
        Some(c) => c.replica.channel(&st.apps.get(app).cfg.id, channel),
        None => (0, HashMap::new()),
    }
}

/// The replicated entry whose members are an app's signed-in users on a node (for watchlists,
/// `online.rs`). Not a channel name a client can use: `#` names are the server's own.
pub const ONLINE: &str = "#online";

/// Whether `user` of `app` is signed in on another node.
pub fn online_elsewhere(st: &State, app: usize, user: &str) -> bool {
    st.cluster.as_ref().is_some_and(|c| {
        c.replica
            .member_elsewhere(&st.apps.get(app).cfg.id, ONLINE, user, None)
    })
}

/// A channel's subscribers in the whole cluster: here and on the other nodes.
pub fn subscribers(st: &State, app: usize, channel: &str) -> usize {
    let here = st.hub.channel_named(app, channel).map_or(0, |c| c.count());
    here.saturating_add(remote_channel(st, app, channel).0)
}

/// Occupied channels of an app on the other nodes.
pub fn remote_channels(st: &State, app: usize) -> Vec<String> {
    match &st.cluster {
        Some(c) => c.replica.channels(&st.apps.get(app).cfg.id),
        None => Vec::new(),
    }
}

/// Whether this node's occupation of a channel (at `at_ms`) is news for the cluster: no other
/// node held it then, or let it go moments before.
pub fn first_occupation(st: &State, app: usize, channel: &str, at_ms: u64) -> bool {
    let Some(c) = &st.cluster else {
        return true;
    };
    let grace = st.cfg.webhooks.vacate_grace_ms;
    let app_id = &st.apps.get(app).cfg.id;
    !c.replica
        .held_before(app_id, channel, at_ms, &c.node_id, grace)
}

/// Whether another node emptied the channel after this node did (at `at_ms`).
pub fn vacated_later_elsewhere(st: &State, app: usize, channel: &str, at_ms: u64) -> bool {
    st.cluster.as_ref().is_some_and(|c| {
        c.replica
            .vacated_later(&st.apps.get(app).cfg.id, channel, at_ms, &c.node_id)
    })
}

/// The state a replica asks about this node: who is in a presence channel here, who is signed
/// in here ([`ONLINE`]).
struct Here<'a> {
    hub: &'a Hub,
    apps: &'a Apps,
    sessions: &'a Sessions,
}

impl Here<'_> {
    fn has_member(&self, app_id: &str, channel: &str, user: &str) -> bool {
        let Some(app) = self.apps.by_id(app_id) else {
            return false;
        };
        if channel == ONLINE {
            return !self.sessions.of_user(app, user, Via::Signin).is_empty();
        }
        self.hub
            .channel_named(app, channel)
            .is_some_and(|c| c.has_member(user))
    }
}

/// A local channel's state for the other nodes.
fn channel_state(ch: &super::hub::Channel) -> ChannelState {
    ChannelState {
        subscribers: ch.count(),
        members: ch
            .members()
            .map(|(u, m)| (u.to_string(), m.info.clone()))
            .collect(),
        occupied_at: Some(ch.occupied_at()),
        vacated_at: None,
    }
}

/// A channel this node emptied moments ago, for the other nodes.
fn vacated_state(v: &super::webhooks::Vacate) -> ChannelState {
    ChannelState {
        occupied_at: Some(v.occupied_at),
        vacated_at: Some(v.at_ms),
        ..Default::default()
    }
}

/// One local channel as the other nodes see it; `None` when this node no longer has it.
fn local_channel(st: &State, app: usize, name: &str) -> Option<ChannelState> {
    if let Some(ch) = st.hub.channel_named(app, name) {
        return Some(channel_state(ch));
    }
    st.webhooks.vacate_record(app, name).map(vacated_state)
}

/// This node's channels, for the other nodes' replicas.
fn local_state(st: &State) -> NodeState {
    let mut state = NodeState::new();
    for app in 0..st.apps.len() {
        let app_id = &st.apps.get(app).cfg.id;
        for ch in st.hub.channels(app) {
            state.insert((app_id.clone(), ch.name().to_string()), channel_state(ch));
        }
    }
    for v in st.webhooks.vacates() {
        let app_id = &st.apps.get(v.app).cfg.id;
        state
            .entry((app_id.clone(), v.channel.clone()))
            .or_insert_with(|| vacated_state(v));
    }
    online_state(st, &mut state);
    state
}

/// The signed-in users of each app with watchlists on, as the members of its [`ONLINE`] entry.
/// Sent whole only with the full state; changes travel as presence news (`online.rs`).
fn online_state(st: &State, state: &mut NodeState) {
    for (app, user, _) in st.sessions.users() {
        let cfg = &st.apps.get(app).cfg;
        if !cfg.watchlist_events || st.sessions.of_user(app, user, Via::Signin).is_empty() {
            continue;
        }
        let entry = state
            .entry((cfg.id.clone(), ONLINE.to_string()))
            .or_default();
        entry.members.insert(user.to_string(), None);
        entry.subscribers = entry.members.len();
    }
}

/// Users' connection counts as (app id, user, count).
fn user_counts<'a>(
    st: &State,
    users: impl Iterator<Item = &'a (usize, Box<str>)>,
) -> Vec<(String, String, u32)> {
    users
        .map(|(app, user)| {
            let n = st.sessions.user_count(*app, user);
            (st.apps.get(*app).cfg.id.clone(), user.to_string(), n)
        })
        .collect()
}

/// Sends the whole state (a node (re)connected, or one asked for it) and rewrites the
/// heartbeat key.
fn send_state(st: &mut State) {
    let entries = replica::to_entries(&local_state(st));
    let users: Vec<(String, String, u32)> = st
        .sessions
        .users()
        .map(|(app, user, n)| (st.apps.get(app).cfg.id.clone(), user.to_string(), n))
        .collect();
    let now_ms = st.clock.wall_ms();
    let now = st.clock.now();
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    c.seq += 1;
    c.changed.clear();
    c.changed_users.clear();
    let ops = &mut st.effects.link;
    c.heartbeat
        .store(true, (&entries, &[]), &users, now_ms, ops);
    let seq = c.seq;
    c.send(
        None,
        Body::State {
            channels: entries,
            seq,
        },
        ops,
    );
    c.last_sent = now;
}

/// Sends the channels that changed since the last send, or a heartbeat when none did.
fn send_changes(st: &mut State) {
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let changed_users = std::mem::take(&mut c.changed_users);
    let keys = std::mem::take(&mut c.changed);
    let users = user_counts(st, changed_users.iter());
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    for (app, name) in keys {
        let app_id = st.apps.get(app).cfg.id.clone();
        match local_channel(st, app, &name) {
            Some(state) => changed.push(replica::StateEntry {
                app: app_id,
                channel: name.into(),
                state,
            }),
            None => removed.push(replica::ChannelRef {
                app: app_id,
                channel: name.into(),
            }),
        }
    }
    let (now_ms, now) = (st.clock.wall_ms(), st.clock.now());
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let ops = &mut st.effects.link;
    c.last_sent = now;
    if changed.is_empty() && removed.is_empty() {
        c.heartbeat.store(false, (&[], &[]), &users, now_ms, ops);
        return c.send(None, Body::Heartbeat { seq: c.seq }, ops);
    }
    c.seq += 1;
    c.heartbeat
        .store(false, (&changed, &removed), &users, now_ms, ops);
    let seq = c.seq;
    c.send(
        None,
        Body::Delta {
            seq,
            changed,
            removed,
        },
        ops,
    );
}

/// Announces member changes that happened on other nodes to this node's subscribers.
fn announce(st: &mut State, events: Vec<MemberEvent>) {
    for event in events {
        let (app_id, channel, user, info, joined) = match event {
            MemberEvent::Added {
                app,
                channel,
                user_id,
                info,
            } => (app, channel, user_id, info, true),
            MemberEvent::Removed {
                app,
                channel,
                user_id,
            } => (app, channel, user_id, None, false),
        };
        let Some(app) = st.apps.by_id(&app_id) else {
            continue;
        };
        if channel == ONLINE {
            let online = joined;
            st.publish(Publication::Watch { app, user, online });
            continue;
        }
        let text = if joined {
            pp::member_added(&channel, &user, info.as_ref())
        } else {
            pp::member_removed(&channel, &user)
        };
        let frame = ws::text(text.as_bytes());
        st.publish(Publication::frame(app, &channel, frame, None, false));
    }
}

/// Re-divides the app rate limits when nodes come or go. The loops of a process take from one
/// bucket on the board instead (`shared_counts.rs`), divided between the machines.
fn share_rates(st: &mut State) {
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let nodes = 1 + c.replica.node_count();
    if nodes == c.rate_share {
        return;
    }
    c.rate_share = nodes;
    if c.prompt {
        let machines = machines(st);
        let loops = st.board.as_ref().map_or(1, |b| b.loops());
        info!(
            "{machines} node(s) in the cluster, {loops} loop(s) each: this one's loops share 1/{machines} of every app rate limit"
        );
        return;
    }
    st.apps.share_rates(nodes, st.clock.now());
    info!("{nodes} node(s) in the cluster: each enforces 1/{nodes} of every app rate limit");
}

/// The processes in the cluster, for loops on a bus: its nodes over this process's loops
/// (every process of a cluster runs as many, as their configurations should say).
pub fn machines(st: &State) -> usize {
    let nodes = 1 + st.cluster.as_ref().map_or(0, |c| c.replica.node_count());
    let loops = st.board.as_ref().map_or(1, |b| b.loops()).max(1);
    nodes.div_ceil(loops).max(1)
}

/// Every turn: on the local bus, this loop's changes go out at once (a REST call or a
/// subscription on a sibling loop a moment later sees them).
pub fn prompt(st: &mut State) {
    let Some(c) = st.cluster.as_ref() else {
        return;
    };
    let pending = !c.changed.is_empty() || !c.changed_users.is_empty();
    if c.prompt && pending && st.io.link.is_some_and(|l| l.up) {
        send_changes(st);
    }
}

/// Once a second: send our changes when due, forget silent nodes.
pub fn tick(st: &mut State) {
    let Some(c) = st.cluster.as_ref() else {
        return;
    };
    let link_up = st.io.link.is_some_and(|l| l.up);
    let due = !c.changed.is_empty()
        || !c.changed_users.is_empty()
        || st.clock.now().saturating_duration_since(c.last_sent) >= replica::STATE_EVERY;
    if due && link_up {
        send_changes(st);
    }
    let now = st.clock.now();
    let State {
        cluster,
        hub,
        apps,
        sessions,
        ..
    } = st;
    let Some(c) = cluster.as_mut() else {
        return;
    };
    let timeout = c.node_timeout;
    let here = Here {
        hub,
        apps,
        sessions,
    };
    let (dead, events) = c
        .replica
        .expire(now, timeout, |a, ch, u| here.has_member(a, ch, u));
    for node in &dead {
        warn!(
            "node {node} sent nothing for {}s; removing its members",
            timeout.as_secs()
        );
    }
    announce(st, events);
    share_rates(st);
    counts_changed(st);
}

/// The link came up: tell everyone what we hold and ask for what they hold; the heartbeat
/// keys answer for nodes too busy (or frozen) to.
pub fn on_link_up(st: &mut State) {
    if st.cluster.is_none() {
        return;
    }
    send_state(st);
    if let Some(c) = st.cluster.as_mut() {
        let ops = &mut st.effects.link;
        c.send(None, Body::Sync { to: None }, ops);
        c.heartbeat.load_nodes(ops);
    }
    seed_streams(st);
}

/// On the loops' bus, the streams this loop took over from a restarted process seed their
/// positions there first (each loop took over the same), so numbering goes on in their epochs
/// rather than starting new ones. Redis keeps its own across a node's restart.
fn seed_streams(st: &mut State) {
    let Some(c) = st.cluster.as_ref().filter(|c| c.prompt) else {
        return;
    };
    let mut ops = Vec::new();
    for (app, channel, at, ttl) in st.history.positions() {
        if (app as usize) < st.apps.len() {
            let app_id = &st.apps.get(app as usize).cfg.id;
            let ms = (ttl.as_millis() as u64).saturating_add(numbering::STREAM_GRACE_MS);
            ops.push(
                c.sequencer
                    .seed(app_id, channel, (&at.epoch, at.offset), ms),
            );
        }
    }
    st.effects.link.extend(ops);
    st.history.shared_all();
}

/// A reply to a heartbeat-key command.
pub fn on_reply(st: &mut State, tag: u64, reply: Reply) {
    let now_ms = st.clock.wall_ms();
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    if let Some(stored) = c
        .heartbeat
        .on_reply(tag, reply, now_ms, &mut st.effects.link)
    {
        adopt_stored_node(st, stored);
    }
}

/// Folds in a node state read from its heartbeat key, for a node not heard from otherwise
/// (what a node sends over pub/sub is fresher than its key).
fn adopt_stored_node(st: &mut State, node: StoredNode) {
    let now = st.clock.now();
    let State {
        cluster,
        hub,
        apps,
        sessions,
        ..
    } = st;
    let Some(c) = cluster.as_mut() else {
        return;
    };
    let here = Here {
        hub,
        apps,
        sessions,
    };
    let Some(seen) = now.checked_sub(node.age) else {
        return;
    };
    if node.age >= c.node_timeout || c.replica.knows(&node.node) {
        return;
    }
    info!(
        "node {} known from its heartbeat key ({} ms old)",
        node.node,
        node.age.as_millis()
    );
    let events = c
        .replica
        .replace(&node.node, node.state, None, seen, |a, ch, u| {
            here.has_member(a, ch, u)
        });
    announce(st, events);
    share_rates(st);
}

/// A message another node published.
pub fn on_message(st: &mut State, payload: &[u8]) {
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let env = match serde_json::from_slice::<Envelope>(payload) {
        Ok(env) => env,
        Err(e) => return warn!("ignored a malformed message from another node: {e}"),
    };
    // A node ignores its own messages, but for the publications Redis numbered: those it
    // delivers when they come back.
    let own = env.node == c.node_id;
    if own && env.positions.is_empty() {
        return;
    }
    c.received += u64::from(!own);
    let app = match env.app.as_deref() {
        None => 0,
        Some(id) => match st.apps.by_id(id) {
            Some(app) => app,
            None => return,
        },
    };
    if !env.positions.is_empty() {
        if let Some(p) = sequence::arrived(st, own, app, env) {
            st.publish(p);
        }
        return;
    }
    match env.body {
        Body::Publish {
            channels,
            event,
            data,
            except,
            ..
        } => st.publish(Publication::Event {
            app,
            channels,
            event,
            data,
            except,
            origin: Origin::Node,
        }),
        Body::Global { line } => st.publish(Publication::Global {
            line: line.into_bytes(),
            origin: Origin::Node,
        }),
        Body::Frame { channel, text } => {
            let frame = ws::text(text.as_bytes());
            st.publish(Publication::frame(app, &channel, frame, None, false));
        }
        Body::Terminate { user_id } => st.terminate_user(app, &user_id),
        Body::User { user_id, text } => st.publish(Publication::User {
            user: user_id,
            frame: ws::text(text.as_bytes()),
            origin: Origin::Node,
        }),
        body => replicate(st, &env.node, app, body),
    }
}

/// A change of another node's state: folded into the replica, with the member events it
/// implies here.
fn replicate(st: &mut State, node: &str, app: usize, body: Body) {
    let now = st.clock.now();
    let app_id = st.apps.get(app).cfg.id.clone();
    let State {
        cluster,
        hub,
        apps,
        sessions,
        effects,
        ..
    } = &mut *st;
    let Some(c) = cluster.as_mut() else {
        return;
    };
    let here = Here {
        hub,
        apps,
        sessions,
    };
    let local = |a: &str, ch: &str, u: &str| here.has_member(a, ch, u);
    let from = Source {
        node,
        app_id: &app_id,
        now,
    };
    let (events, state_asked) = c.fold(&from, body, local, &mut effects.link);
    if state_asked {
        send_state(st);
    }
    announce(st, events);
    share_rates(st);
    counts_changed(st);
}

/// Channels whose count changed on other nodes: their subscribers here may be told.
fn counts_changed(st: &mut State) {
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    for (app_id, channel) in c.replica.take_counts_changed() {
        if let Some(app) = st.apps.by_id(&app_id) {
            count_news::changed(st, app, &channel);
        }
    }
}
