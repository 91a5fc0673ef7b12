//! The server's side of scaling: what it sends to the other nodes and what it does with what
//! they send. Local delivery always happens first and never waits for Redis.

use std::time::Instant;

use log::{info, warn};
use serde_json::Value;

use super::Body;
use super::cluster::{self, MemberEvent, NodeState};
use crate::pusher::protocol as pp;
use crate::server::Server;
use crate::ws;

/// A local channel's state for the other nodes.
fn channel_state(ch: &crate::core::hub::Channel) -> cluster::ChannelState {
    cluster::ChannelState {
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
fn vacated_state(v: &crate::pusher::webhooks::Vacate) -> cluster::ChannelState {
    cluster::ChannelState {
        occupied_at: Some(v.occupied_at),
        vacated_at: Some(v.at_ms),
        ..Default::default()
    }
}

impl Server {
    /// Publishes an event to channels here and on every other node, as one publication: a
    /// channel-protocol client subscribed to several of the channels receives it once, on
    /// every node. `except` is the socket id of the connection that caused it, wherever that
    /// connection lives; `source` names where it came from for the console.
    pub(crate) fn broadcast_event(
        &mut self,
        app: usize,
        channels: &[String],
        event: &str,
        data: &str,
        except: Option<&str>,
        source: &str,
    ) {
        self.publish_here(app, channels, event, data, except);
        for name in channels {
            self.console_event("publish", None, Some(name), Some(event), Some(source));
        }
        if let Some(scaling) = self.scaling.as_mut() {
            let app_id = self.apps.get(app).cfg.id.clone();
            scaling.send(
                Some(&app_id),
                Body::Publish {
                    channels: channels.to_vec(),
                    event: event.into(),
                    data: data.into(),
                    except: except.map(str::to_string),
                },
            );
        }
    }

    /// Delivers one publication to this node's subscribers of `channels`.
    fn publish_here(
        &mut self,
        app: usize,
        channels: &[String],
        event: &str,
        data: &str,
        except: Option<&str>,
    ) {
        // The connection to leave out may be ours even when the event entered through another
        // node (the app's REST call went there).
        let local_except = except.and_then(|s| self.parse_socket_id(s));
        let mut plain = None;
        self.publish_stamp = self.publish_stamp.wrapping_add(1);
        for name in channels {
            self.publish(app, name, event, data, local_except, &mut plain);
        }
    }

    /// Tells the other nodes a user appeared in or left a presence channel on this node.
    pub(crate) fn send_presence(
        &mut self,
        app: usize,
        channel: &str,
        user_id: &str,
        info: Option<&Value>,
        joined: bool,
    ) {
        if let Some(scaling) = self.scaling.as_mut() {
            let app_id = self.apps.get(app).cfg.id.clone();
            scaling.send(
                Some(&app_id),
                Body::Presence {
                    channel: channel.into(),
                    user_id: user_id.into(),
                    info: info.cloned(),
                    joined,
                },
            );
        }
    }

    /// Whether a presence user is on another node (so a local join or leave is not news).
    pub(crate) fn member_on_other_nodes(&self, app: usize, channel: &str, user_id: &str) -> bool {
        self.scaling.as_ref().is_some_and(|s| {
            s.cluster
                .member_elsewhere(&self.apps.get(app).cfg.id, channel, user_id, None)
        })
    }

    /// Subscribers and presence members the other nodes hold for a channel.
    pub(crate) fn remote_channel(
        &self,
        app: usize,
        channel: &str,
    ) -> (usize, std::collections::HashMap<String, Option<Value>>) {
        match &self.scaling {
            Some(s) => s.cluster.channel(&self.apps.get(app).cfg.id, channel),
            None => (0, Default::default()),
        }
    }

    /// Tells the other nodes a channel got its first subscriber here or lost its last one.
    pub(crate) fn send_occupancy(
        &mut self,
        app: usize,
        channel: &str,
        occupied_at: u64,
        vacated_at: Option<u64>,
    ) {
        if let Some(scaling) = self.scaling.as_mut() {
            let app_id = self.apps.get(app).cfg.id.clone();
            scaling.send(
                Some(&app_id),
                Body::Occupancy {
                    channel: channel.into(),
                    occupied_at,
                    vacated_at,
                },
            );
        }
    }

    /// Whether this node's occupation of a channel (at `at_ms`) is news for the cluster: no
    /// other node held it then, or let it go moments before.
    pub(crate) fn first_occupation(&self, app: usize, channel: &str, at_ms: u64) -> bool {
        let Some(s) = self.scaling.as_ref() else {
            return true;
        };
        let grace = self.cfg.webhooks.vacate_grace_ms;
        let app_id = &self.apps.get(app).cfg.id;
        !s.cluster
            .held_before(app_id, channel, at_ms, &s.node_id, grace)
    }

    /// Whether another node emptied the channel after this node did (at `at_ms`).
    pub(crate) fn vacated_later_elsewhere(&self, app: usize, channel: &str, at_ms: u64) -> bool {
        self.scaling.as_ref().is_some_and(|s| {
            s.cluster
                .vacated_later(&self.apps.get(app).cfg.id, channel, at_ms, &s.node_id)
        })
    }

    /// Occupied channels of an app on the other nodes.
    pub(crate) fn remote_channels(&self, app: usize) -> Vec<String> {
        match &self.scaling {
            Some(s) => s.cluster.channels(&self.apps.get(app).cfg.id),
            None => Vec::new(),
        }
    }

    /// This node's channels, for the other nodes' replicas.
    fn local_state(&self) -> NodeState {
        let mut state = NodeState::new();
        for app in 0..self.apps.len() {
            let app_id = &self.apps.get(app).cfg.id;
            for ch in self.hub.channels(app) {
                state.insert((app_id.clone(), ch.name().to_string()), channel_state(ch));
            }
        }
        for v in self.webhooks.vacates() {
            let app_id = &self.apps.get(v.app).cfg.id;
            state
                .entry((app_id.clone(), v.channel.clone()))
                .or_insert_with(|| vacated_state(v));
        }
        state
    }

    /// One local channel as the other nodes see it; `None` when this node no longer has it.
    fn local_channel(&self, app: usize, name: &str) -> Option<cluster::ChannelState> {
        if let Some(ch) = self.hub.channel_named(app, name) {
            return Some(channel_state(ch));
        }
        self.webhooks.vacate_record(app, name).map(vacated_state)
    }

    /// Sends the whole state (a node (re)connected, or one asked for it) and rewrites the
    /// heartbeat key.
    fn send_state(&mut self) {
        let entries = cluster::to_entries(&self.local_state());
        let users: Vec<(String, String, u32)> = self
            .user_conns
            .iter()
            .map(|((app, user), keys)| {
                let n = keys.len() as u32;
                (self.apps.get(*app).cfg.id.clone(), user.to_string(), n)
            })
            .collect();
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.seq += 1;
            scaling.changed.clear();
            scaling.changed_users.clear();
            scaling.store(true, &entries, &[], &users);
            let seq = scaling.seq;
            scaling.send(
                None,
                Body::State {
                    channels: entries,
                    seq,
                },
            );
            scaling.last_sent = Instant::now();
        }
    }

    /// Sends the channels that changed since the last send, or a heartbeat when none did.
    fn send_changes(&mut self) {
        let Some(scaling) = self.scaling.as_mut() else {
            return;
        };
        let users: Vec<(String, String, u32)> = std::mem::take(&mut scaling.changed_users)
            .into_iter()
            .map(|(app, user)| {
                let n = self
                    .user_conns
                    .get(&(app, user.clone()))
                    .map_or(0, |keys| keys.len() as u32);
                (self.apps.get(app).cfg.id.clone(), user.into(), n)
            })
            .collect();
        let Some(scaling) = self.scaling.as_mut() else {
            return;
        };
        if scaling.changed.is_empty() {
            scaling.store(false, &[], &[], &users);
            let seq = scaling.seq;
            scaling.send(None, Body::Heartbeat { seq });
            scaling.last_sent = Instant::now();
            return;
        }
        let keys = std::mem::take(&mut scaling.changed);
        let (mut changed, mut removed) = (Vec::new(), Vec::new());
        for (app, name) in keys {
            let app_id = self.apps.get(app).cfg.id.clone();
            match self.local_channel(app, &name) {
                Some(state) => changed.push(cluster::StateEntry {
                    app: app_id,
                    channel: name.into(),
                    state,
                }),
                None => removed.push(cluster::ChannelRef {
                    app: app_id,
                    channel: name.into(),
                }),
            }
        }
        let Some(scaling) = self.scaling.as_mut() else {
            return;
        };
        scaling.seq += 1;
        scaling.store(false, &changed, &removed, &users);
        let seq = scaling.seq;
        scaling.send(
            None,
            Body::Delta {
                seq,
                changed,
                removed,
            },
        );
        scaling.last_sent = Instant::now();
    }

    /// Asks `node` for its full state: this replica missed one of its changes.
    fn resync(&mut self, node: &str) {
        if let Some(scaling) = self.scaling.as_mut() {
            log::debug!("out of step with node {node}: asking for its full state");
            scaling.send(
                None,
                Body::Sync {
                    to: Some(node.to_string()),
                },
            );
        }
    }

    fn is_local_member(&self, app_id: &str, channel: &str, user: &str) -> bool {
        let Some(app) = self.apps.by_id(app_id) else {
            return false;
        };
        self.hub
            .channel_named(app, channel)
            .is_some_and(|c| c.has_member(user))
    }

    /// Announces member changes that happened on other nodes to this node's subscribers.
    fn announce(&mut self, events: Vec<MemberEvent>) {
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
            let Some(app) = self.apps.by_id(app_id) else {
                continue;
            };
            if let Some(id) = self.hub.lookup(app, channel) {
                self.publish_frame(app, id, &ws::text(text.as_bytes()), None);
            }
        }
    }

    /// Once a second: send our state when due, forget silent nodes.
    pub(crate) fn scaling_tick(&mut self) {
        if self.scaling.is_none() {
            return;
        }
        // Vacate records outlive their decision while the other nodes may need them; the
        // webhook pump forgets expired ones (and this node's changes tell the others).
        if !self.webhooks.has_batches() && self.webhooks.vacates().next().is_some() {
            self.pump_webhooks();
        }
        let Some(scaling) = self.scaling.as_ref() else {
            return;
        };
        if (!scaling.changed.is_empty()
            || !scaling.changed_users.is_empty()
            || scaling.last_sent.elapsed() >= cluster::STATE_EVERY)
            && scaling.link.is_up()
        {
            self.send_changes();
        }
        let Some(scaling) = self.scaling.as_mut() else {
            return;
        };
        let timeout = scaling.node_timeout;
        let mut cluster = std::mem::take(&mut scaling.cluster);
        let (dead, events) = cluster.expire(Instant::now(), timeout, |a, c, u| {
            self.is_local_member(a, c, u)
        });
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.cluster = cluster;
        }
        for node in &dead {
            warn!(
                "node {node} sent nothing for {}s; removing its members",
                timeout.as_secs()
            );
        }
        self.announce(events);
        self.share_rates_with_nodes();
    }

    /// Folds in node states read from Redis heartbeat keys, for nodes not heard from otherwise
    /// (what a node sends over pub/sub is fresher than its key).
    fn adopt_stored_nodes(&mut self) {
        let Some(scaling) = self.scaling.as_mut() else {
            return;
        };
        if scaling.stored.is_empty() {
            return;
        }
        let stored = std::mem::take(&mut scaling.stored);
        let timeout = scaling.node_timeout;
        let mut cluster = std::mem::take(&mut scaling.cluster);
        let mut events = Vec::new();
        for node in stored {
            let Some(seen) = Instant::now().checked_sub(node.age) else {
                continue;
            };
            if node.age >= timeout || cluster.knows(&node.node) {
                continue;
            }
            info!(
                "node {} known from its heartbeat key ({} ms old)",
                node.node,
                node.age.as_millis()
            );
            events.extend(
                cluster.replace(&node.node, node.state, None, seen, |a, c, u| {
                    self.is_local_member(a, c, u)
                }),
            );
        }
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.cluster = cluster;
        }
        self.announce(events);
        self.share_rates_with_nodes();
    }

    /// Re-divides the app rate limits when nodes come or go.
    fn share_rates_with_nodes(&mut self) {
        let nodes = self
            .scaling
            .as_ref()
            .map(|s| 1 + s.cluster.node_count())
            .unwrap_or(1);
        if nodes != self.rate_share_nodes {
            self.rate_share_nodes = nodes;
            self.apps.share_rates(nodes);
            info!(
                "{nodes} node(s) in the cluster: each enforces 1/{nodes} of every app rate limit"
            );
        }
    }

    /// Delivers what other nodes published and folds their state into ours.
    pub(crate) fn deliver_from_other_nodes(&mut self) {
        let Some(scaling) = self.scaling.as_mut() else {
            return;
        };
        let mut events = std::mem::take(&mut self.link_events);
        let (envelopes, came_up) = scaling.incoming(&mut events);
        self.link_events = events;
        if let Some((host, port)) = scaling.resolve.take() {
            self.start_resolve(host, port);
        }
        if came_up {
            // Reconcile: tell everyone what we hold and ask for what they hold; the heartbeat
            // keys answer for nodes too busy (or frozen) to.
            self.send_state();
            if let Some(scaling) = self.scaling.as_mut() {
                scaling.send(None, Body::Sync { to: None });
                scaling.load_nodes();
            }
        }
        self.adopt_stored_nodes();
        for env in envelopes {
            let app = match env.app.as_deref() {
                None => 0,
                Some(id) => match self.apps.by_id(id) {
                    Some(app) => app,
                    None => continue,
                },
            };
            let now = Instant::now();
            match env.body {
                Body::Publish {
                    channels,
                    event,
                    data,
                    except,
                } => self.publish_here(app, &channels, &event, &data, except.as_deref()),
                Body::Global { line } => self.publish_global(&ws::text(line.as_bytes())),
                Body::Frame { channel, text } => {
                    if let Some(id) = self.hub.lookup(app, &channel) {
                        self.publish_frame(app, id, &ws::text(text.as_bytes()), None);
                    }
                }
                Body::Presence {
                    channel,
                    user_id,
                    info,
                    joined,
                } => {
                    let app_id = self.apps.get(app).cfg.id.clone();
                    let local = self.is_local_member(&app_id, &channel, &user_id);
                    let delta = cluster::Delta {
                        node: &env.node,
                        app: &app_id,
                        channel: &channel,
                        user: &user_id,
                        info,
                        joined,
                    };
                    let event = self
                        .scaling
                        .as_mut()
                        .and_then(|s| s.cluster.presence(delta, local, now));
                    self.announce(event.into_iter().collect());
                }
                Body::State { channels, seq } => {
                    let Some(scaling) = self.scaling.as_mut() else {
                        continue;
                    };
                    let mut cluster = std::mem::take(&mut scaling.cluster);
                    let known = cluster.node_count();
                    let events = cluster.replace(
                        &env.node,
                        cluster::from_entries(channels),
                        Some(seq),
                        now,
                        |a, c, u| self.is_local_member(a, c, u),
                    );
                    if cluster.node_count() > known {
                        info!(
                            "node {} joined the cluster ({} other node(s))",
                            env.node,
                            cluster.node_count()
                        );
                    }
                    if let Some(scaling) = self.scaling.as_mut() {
                        scaling.cluster = cluster;
                    }
                    self.announce(events);
                    self.share_rates_with_nodes();
                }
                Body::Occupancy {
                    channel,
                    occupied_at,
                    vacated_at,
                } => {
                    let app_id = self.apps.get(app).cfg.id.clone();
                    if let Some(s) = self.scaling.as_mut() {
                        s.cluster.occupancy(
                            &env.node,
                            &app_id,
                            &channel,
                            occupied_at,
                            vacated_at,
                            now,
                        );
                    }
                }
                Body::Delta {
                    seq,
                    changed,
                    removed,
                } => {
                    let Some(scaling) = self.scaling.as_mut() else {
                        continue;
                    };
                    let mut cluster = std::mem::take(&mut scaling.cluster);
                    let events = cluster.apply(&env.node, seq, changed, removed, now, |a, c, u| {
                        self.is_local_member(a, c, u)
                    });
                    if let Some(scaling) = self.scaling.as_mut() {
                        scaling.cluster = cluster;
                    }
                    match events {
                        Some(events) => self.announce(events),
                        None => self.resync(&env.node),
                    }
                }
                Body::Heartbeat { seq } => {
                    let in_step = self
                        .scaling
                        .as_mut()
                        .is_some_and(|s| s.cluster.heartbeat(&env.node, seq, now));
                    if !in_step {
                        self.resync(&env.node);
                    }
                }
                Body::Sync { to } => {
                    let me = self.scaling.as_ref().map(|s| s.node_id.as_str());
                    if to.is_none() || to.as_deref() == me {
                        self.send_state();
                    }
                }
                Body::Terminate { user_id } => {
                    self.terminate_local(app, &user_id);
                }
            }
        }
    }
}
