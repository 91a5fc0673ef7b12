//! Several nodes, one set of channels: this node's side of scaling through Redis. Every
//! publication accepted here is delivered locally at once and handed to the other nodes
//! ([`LinkOp`]s the loop gives to the Redis link); what they publish arrives through
//! [`on_message`]. This node's channels, presence members and user counts are replicated to
//! the others as numbered changes (and kept in an expiring heartbeat key); theirs are kept in
//! a [`replica::Replica`]. Local delivery never waits for Redis.

pub mod heartbeat;
pub mod replica;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::Value;

use super::apps::Apps;
use super::hub::Hub;
use super::publish::{Origin, Publication};
use super::state::State;
use crate::config::ScalingConfig;
use crate::pusher::protocol as pp;
use crate::scaling::resp::Reply;
use crate::ws::{self, Frame};
use heartbeat::{Heartbeat, StoredNode};
use replica::{ChannelState, MemberEvent, NodeState, Replica};
use wire::{Body, Envelope};

/// What the loop must do with the Redis link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    /// Publish on the nodes' channel (dropped and counted while Redis is down).
    Publish(Vec<u8>),
    /// A command; its reply comes back to [`on_reply`] with `tag`.
    Command { tag: u64, args: Vec<Vec<u8>> },
}

/// This node, as the cluster sees it, and what it knows of the others.
pub struct Cluster {
    node_id: String,
    replica: Replica,
    heartbeat: Heartbeat,
    /// This node's state number: +1 for every full state or set of changes sent.
    seq: u64,
    /// Local channels changed since the last send, (app index, channel).
    changed: HashSet<(usize, Box<str>)>,
    /// Users whose connection count here changed since the last send (for the Redis key).
    changed_users: HashSet<(usize, Box<str>)>,
    /// When this node last sent its state, changes or a heartbeat.
    last_sent: Instant,
    node_timeout: Duration,
    /// Nodes the app rate limits are divided between.
    rate_share: usize,
    pub received: u64,
}

impl Cluster {
    /// The cluster side of a node scaling through Redis; `None` for a single node.
    /// `cfg.node_id` must be set (the loop makes one up when the configuration has none).
    pub fn new(cfg: &ScalingConfig, now: Instant) -> Option<Cluster> {
        if cfg.driver != "redis" {
            return None;
        }
        let node_timeout = Duration::from_secs(cfg.node_timeout_secs);
        Some(Cluster {
            heartbeat: Heartbeat::new(&cfg.prefix, &cfg.node_id, node_timeout),
            node_id: cfg.node_id.clone(),
            replica: Replica::default(),
            seq: 0,
            changed: HashSet::new(),
            changed_users: HashSet::new(),
            last_sent: now.checked_sub(replica::STATE_EVERY).unwrap_or(now),
            node_timeout,
            rate_share: 1,
            received: 0,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// A local channel changed (subscribers, members, or vacated): the others hear of it at
    /// the next tick.
    pub fn channel_changed(&mut self, app: usize, channel: &str) {
        self.changed.insert((app, channel.into()));
    }

    /// A user's connection count here changed.
    pub fn user_changed(&mut self, app: usize, user: &str) {
        self.changed_users.insert((app, user.into()));
    }

    /// Shutting down: this node's key goes.
    pub fn leave(&mut self, ops: &mut Vec<LinkOp>) {
        self.heartbeat.leave(ops);
    }

    fn send(&self, app: Option<&str>, body: Body, ops: &mut Vec<LinkOp>) {
        let envelope = Envelope {
            node: self.node_id.clone(),
            app: app.map(str::to_string),
            body,
        };
        if let Ok(payload) = serde_json::to_vec(&envelope) {
            ops.push(LinkOp::Publish(payload));
        }
    }

    /// Tells the others a user appeared in (`info`: `Some`) or left (`None`) a presence
    /// channel of app `app_id` here; returns whether the user is present through another node
    /// (then the change is no news here).
    pub fn presence_news(
        &mut self,
        app_id: &str,
        channel: &str,
        member: (&str, Option<Option<&Value>>),
        ops: &mut Vec<LinkOp>,
    ) -> bool {
        let (user, info) = member;
        let body = Body::Presence {
            channel: channel.into(),
            user_id: user.into(),
            info: info.flatten().cloned(),
            joined: info.is_some(),
        };
        self.send(Some(app_id), body, ops);
        self.replica.member_elsewhere(app_id, channel, user, None)
    }
}

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

fn is_local_member(hub: &Hub, apps: &Apps, app_id: &str, channel: &str, user: &str) -> bool {
    apps.by_id(app_id)
        .and_then(|app| hub.channel_named(app, channel))
        .is_some_and(|c| c.has_member(user))
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
    state
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
        let (app_id, channel, text) = match &event {
            MemberEvent::Added {
                app,
                channel,
                user_id,
                info,
            } => (
                app,
                channel,
                pp::member_added(channel, user_id, info.as_ref()),
            ),
            MemberEvent::Removed {
                app,
                channel,
                user_id,
            } => (app, channel, pp::member_removed(channel, user_id)),
        };
        if let Some(app) = st.apps.by_id(app_id) {
            let frame = ws::text(text.as_bytes());
            st.publish(Publication::frame(app, channel, frame, None, false));
        }
    }
}

/// Re-divides the app rate limits when nodes come or go.
fn share_rates(st: &mut State) {
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let nodes = 1 + c.replica.node_count();
    if nodes != c.rate_share {
        c.rate_share = nodes;
        st.apps.share_rates(nodes, st.clock.now());
        info!("{nodes} node(s) in the cluster: each enforces 1/{nodes} of every app rate limit");
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
        cluster, hub, apps, ..
    } = st;
    let Some(c) = cluster.as_mut() else {
        return;
    };
    let timeout = c.node_timeout;
    let (dead, events) = c.replica.expire(now, timeout, |a, ch, u| {
        is_local_member(hub, apps, a, ch, u)
    });
    for node in &dead {
        warn!(
            "node {node} sent nothing for {}s; removing its members",
            timeout.as_secs()
        );
    }
    announce(st, events);
    share_rates(st);
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
        cluster, hub, apps, ..
    } = st;
    let Some(c) = cluster.as_mut() else {
        return;
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
            is_local_member(hub, apps, a, ch, u)
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
        Ok(env) if env.node != c.node_id => env,
        Ok(_) => return,
        Err(e) => return warn!("ignored a malformed message from another node: {e}"),
    };
    c.received += 1;
    let app = match env.app.as_deref() {
        None => 0,
        Some(id) => match st.apps.by_id(id) {
            Some(app) => app,
            None => return,
        },
    };
    match env.body {
        Body::Publish {
            channels,
            event,
            data,
            except,
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
        Body::Terminate { user_id } => super::rest::terminate_local(st, app, &user_id),
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
        effects,
        ..
    } = &mut *st;
    let Some(c) = cluster.as_mut() else {
        return;
    };
    let local = |a: &str, ch: &str, u: &str| is_local_member(hub, apps, a, ch, u);
    let from = From {
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
}

/// Where a change comes from.
struct From<'a> {
    node: &'a str,
    app_id: &'a str,
    now: Instant,
}

impl Cluster {
    /// Folds one message about another node's state into the replica: the member events it
    /// implies here, and whether that node asked for this node's full state.
    fn fold(
        &mut self,
        from: &From<'_>,
        body: Body,
        local: impl Fn(&str, &str, &str) -> bool,
        ops: &mut Vec<LinkOp>,
    ) -> (Vec<MemberEvent>, bool) {
        let (node, now) = (from.node, from.now);
        let events = match body {
            Body::Presence {
                channel,
                user_id,
                info,
                joined,
            } => {
                let here = local(from.app_id, &channel, &user_id);
                let delta = replica::Delta {
                    node,
                    app: from.app_id,
                    channel: &channel,
                    user: &user_id,
                    info,
                    joined,
                };
                self.replica
                    .presence(delta, here, now)
                    .into_iter()
                    .collect()
            }
            Body::State { channels, seq } => self.fold_state(node, channels, seq, now, local),
            Body::Delta {
                seq,
                changed,
                removed,
            } => match self.replica.apply(node, seq, changed, removed, now, local) {
                Some(events) => events,
                None => self.ask_state(node, ops),
            },
            Body::Heartbeat { seq } if !self.replica.heartbeat(node, seq, now) => {
                self.ask_state(node, ops)
            }
            Body::Occupancy {
                channel,
                occupied_at,
                vacated_at,
            } => {
                let app = from.app_id;
                self.replica
                    .occupancy(node, app, &channel, occupied_at, vacated_at, now);
                Vec::new()
            }
            Body::Sync { to } => {
                let asked = to.is_none() || to.as_deref() == Some(self.node_id.as_str());
                return (Vec::new(), asked);
            }
            _ => Vec::new(),
        };
        (events, false)
    }

    /// A node's full state replaces what this replica had of it.
    fn fold_state(
        &mut self,
        node: &str,
        channels: Vec<replica::StateEntry>,
        seq: u64,
        now: Instant,
        local: impl Fn(&str, &str, &str) -> bool,
    ) -> Vec<MemberEvent> {
        let known = self.replica.node_count();
        let state = replica::from_entries(channels);
        let events = self.replica.replace(node, state, Some(seq), now, local);
        if self.replica.node_count() > known {
            let others = self.replica.node_count();
            info!("node {node} joined the cluster ({others} other node(s))");
        }
        events
    }

    /// This replica missed one of `node`'s changes: it asks that node for its full state.
    fn ask_state(&self, node: &str, ops: &mut Vec<LinkOp>) -> Vec<MemberEvent> {
        debug!("out of step with node {node}: asking for its full state");
        let to = Some(node.to_string());
        self.send(None, Body::Sync { to }, ops);
        Vec::new()
    }
}
