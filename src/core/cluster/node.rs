//! This node as the cluster sees it: its id, its state number, what changed since it last
//! told the others, its heartbeat key, and its replica of the others.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use log::{debug, info};
use serde_json::Value;

use super::heartbeat::Heartbeat;
use super::numbering::Sequencer;
use super::replica::{self, MemberEvent, Replica};
use super::wire::{Body, Envelope};
use crate::config::ScalingConfig;
use crate::core::effects::LinkOp;

/// This node, as the cluster sees it, and what it knows of the others.
pub struct Cluster {
    pub(super) node_id: String,
    pub(super) replica: Replica,
    pub(super) heartbeat: Heartbeat,
    /// This node's state number: +1 for every full state or set of changes sent.
    pub(super) seq: u64,
    /// Local channels changed since the last send, (app index, channel).
    pub(super) changed: HashSet<(usize, Box<str>)>,
    /// Users whose connection count here changed since the last send (for the Redis key).
    pub(super) changed_users: HashSet<(usize, Box<str>)>,
    /// When this node last sent its state, changes or a heartbeat.
    pub(super) last_sent: Instant,
    pub(super) node_timeout: Duration,
    /// Changes go out every turn, not once a second: the loops of one process on their local
    /// bus, which must answer like one loop.
    pub(super) prompt: bool,
    /// Nodes the app rate limits are divided between.
    pub(super) rate_share: usize,
    pub received: u64,
    /// Publications on channels with history, numbered by Redis (`sequence.rs`).
    pub(super) sequencer: Sequencer,
}

impl Cluster {
    /// The cluster side of a node scaling through Redis; `None` for a single node.
    /// `cfg.node_id` must be set (the loop makes one up when the configuration has none).
    pub fn new(cfg: &ScalingConfig, now: Instant) -> Option<Cluster> {
        if cfg.driver != "redis" && cfg.driver != "bus" {
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
            prompt: cfg.driver == "bus",
            rate_share: 1,
            received: 0,
            sequencer: Sequencer::new(&cfg.prefix),
        })
    }

    /// Whether this is one of several loops of a process, on their local bus.
    pub fn on_bus(&self) -> bool {
        self.prompt
    }

    /// Whether a publication made here waits to be numbered.
    pub fn numbering(&self) -> bool {
        self.sequencer.numbering()
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

    pub(super) fn send(&self, app: Option<&str>, body: Body, ops: &mut Vec<LinkOp>) {
        if let Some(payload) = self.envelope(app, body) {
            ops.push(LinkOp::Publish(payload));
        }
    }

    /// A message for the other nodes, as it crosses Redis.
    pub(super) fn envelope(&self, app: Option<&str>, body: Body) -> Option<Vec<u8>> {
        let envelope = Envelope {
            node: self.node_id.clone(),
            app: app.map(str::to_string),
            positions: Vec::new(),
            body,
        };
        serde_json::to_vec(&envelope).ok()
    }

    /// Tells the others a user joined or left a presence channel of app `app_id` here;
    /// returns whether the user is present through another node (then the change is no news
    /// here).
    pub fn presence_news(
        &mut self,
        app_id: &str,
        channel: &str,
        change: MemberChange<'_>,
        ops: &mut Vec<LinkOp>,
    ) -> bool {
        let (user, info, joined) = match change {
            MemberChange::Joined { user, info } => (user, info.cloned(), true),
            MemberChange::Left { user } => (user, None, false),
        };
        let body = Body::Presence {
            channel: channel.into(),
            user_id: user.into(),
            info,
            joined,
        };
        self.send(Some(app_id), body, ops);
        self.replica.member_elsewhere(app_id, channel, user, None)
    }
}

/// A presence member's change on this node, as the other nodes hear of it.
pub enum MemberChange<'a> {
    Joined {
        user: &'a str,
        info: Option<&'a Value>,
    },
    Left {
        user: &'a str,
    },
}

/// Where a change comes from.
pub(super) struct Source<'a> {
    pub(super) node: &'a str,
    pub(super) app_id: &'a str,
    pub(super) now: Instant,
}

impl Cluster {
    /// Folds one message about another node's state into the replica: the member events it
    /// implies here, and whether that node asked for this node's full state.
    pub(super) fn fold(
        &mut self,
        from: &Source<'_>,
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
            Body::Gone => {
                info!("node {node} is gone; removing its members");
                self.replica.remove(node, local)
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
