//! What the other nodes hold: their channels' subscriber counts and presence members.
//!
//! Each node keeps a replica of every other node's state, fed by presence and occupancy news
//! (sent at once, so `member_added` is timely), by the channels that changed (sent within a
//! second, numbered), and by a heartbeat every [`STATE_EVERY`] when nothing changed. A node
//! whose replica misses a number asks that node for its full state; nothing is sent in full
//! otherwise, so the traffic follows the changes, not the size of the state. A node that stops
//! sending is forgotten after `node_timeout_secs` by every other node on its own — no locks, no
//! coordination — and the members only it held are announced as removed. The same state is
//! kept in Redis as an expiring hash per node (`Scaling::store`), read by nodes as they join.
//!
//! Cluster-wide semantics follow from one rule: a member event is emitted locally when the user's
//! presence in a channel *anywhere* changes between "nowhere" and "somewhere".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How often a node with no changes to send says it is alive (and at which state number).
pub const STATE_EVERY: Duration = Duration::from_secs(2);

/// One channel as a node reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChannelState {
    pub subscribers: usize,
    /// Presence members: user id → user info.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub members: HashMap<String, Option<Value>>,
    /// When the channel got its first subscriber on the node (wall-clock ms; 0: long ago).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied_at: Option<u64>,
    /// When the channel last emptied on the node (wall-clock ms), while the node keeps that
    /// record: of several nodes that empty a channel, the last one sends `channel_vacated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacated_at: Option<u64>,
}

/// A node's channels keyed by (app id, channel name).
pub type NodeState = HashMap<(String, String), ChannelState>;

/// Wire form of a node's state (tuple keys do not serialize as JSON object keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateEntry {
    pub app: String,
    pub channel: String,
    #[serde(flatten)]
    pub state: ChannelState,
}

pub fn to_entries(state: &NodeState) -> Vec<StateEntry> {
    state
        .iter()
        .map(|((app, channel), s)| StateEntry {
            app: app.clone(),
            channel: channel.clone(),
            state: s.clone(),
        })
        .collect()
}

/// A channel a node no longer reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelRef {
    pub app: String,
    pub channel: String,
}

pub fn from_entries(entries: Vec<StateEntry>) -> NodeState {
    entries
        .into_iter()
        .map(|e| ((e.app, e.channel), e.state))
        .collect()
}

/// A member change that should be announced to this node's subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberEvent {
    Added {
        app: String,
        channel: String,
        user_id: String,
        info: Option<Value>,
    },
    Removed {
        app: String,
        channel: String,
        user_id: String,
    },
}

struct Remote {
    last_seen: Instant,
    state: NodeState,
    /// The node's state number this replica is at; `None` when unknown (ask for a full state).
    seq: Option<u64>,
}

/// A user's arrival in (or departure from) a presence channel on `node`.
pub struct Delta<'a> {
    pub node: &'a str,
    pub app: &'a str,
    pub channel: &'a str,
    pub user: &'a str,
    pub info: Option<Value>,
    pub joined: bool,
}

#[derive(Default)]
pub struct Replica {
    nodes: HashMap<String, Remote>,
    /// Channels whose subscriber count on another node changed since the last
    /// [`Replica::take_counts_changed`] (for `pusher_internal:subscription_count`).
    counts_changed: Vec<(String, String)>,
}

/// Whether a channel's subscriber count differs between two states of it.
fn count_differs(old: Option<&ChannelState>, new: Option<&ChannelState>) -> bool {
    old.map_or(0, |c| c.subscribers) != new.map_or(0, |c| c.subscribers)
}

impl Replica {
    /// The channels whose count changed elsewhere since the last call, as (app id, channel).
    pub fn take_counts_changed(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.counts_changed)
    }

    /// Whether `user` is in `channel` on any other node, leaving out `except_node`.
    pub fn member_elsewhere(
        &self,
        app: &str,
        channel: &str,
        user: &str,
        except_node: Option<&str>,
    ) -> bool {
        self.nodes.iter().any(|(id, r)| {
            Some(id.as_str()) != except_node
                && r.state
                    .get(&(app.to_string(), channel.to_string()))
                    .is_some_and(|c| c.members.contains_key(user))
        })
    }

    /// Subscribers and members of a channel on the other nodes.
    pub fn channel(&self, app: &str, channel: &str) -> (usize, HashMap<String, Option<Value>>) {
        let key = (app.to_string(), channel.to_string());
        let mut subscribers: usize = 0;
        let mut members = HashMap::new();
        for r in self.nodes.values() {
            if let Some(c) = r.state.get(&key) {
                // Counts come from other nodes' messages: never trusted to add up.
                subscribers = subscribers.saturating_add(c.subscribers);
                for (u, info) in &c.members {
                    members.entry(u.clone()).or_insert_with(|| info.clone());
                }
            }
        }
        (subscribers, members)
    }

    /// Whether another node emptied the channel after `at_ms` (ties go to the larger node id),
    /// so that node, not `me`, sends `channel_vacated`.
    pub fn vacated_later(&self, app: &str, channel: &str, at_ms: u64, me: &str) -> bool {
        let key = (app.to_string(), channel.to_string());
        self.nodes.iter().any(|(id, r)| {
            r.state
                .get(&key)
                .and_then(|c| c.vacated_at)
                .is_some_and(|t| (t, id.as_str()) > (at_ms, me))
        })
    }

    /// Whether another node held the channel when `me` occupied it at `at_ms`, or let it go
    /// less than `grace_ms` before (a quick return, not news). Ties go to the smaller node id.
    /// A node that held it since before `at_ms` fired (or will fire) `channel_occupied`.
    pub fn held_before(
        &self,
        app: &str,
        channel: &str,
        at_ms: u64,
        me: &str,
        grace_ms: u64,
    ) -> bool {
        let key = (app.to_string(), channel.to_string());
        self.nodes.iter().any(|(id, r)| {
            r.state.get(&key).is_some_and(|c| {
                let since = c.occupied_at.unwrap_or(0);
                let until = match c.vacated_at {
                    Some(t) if c.subscribers == 0 => t.saturating_add(grace_ms),
                    _ if c.subscribers > 0 => u64::MAX,
                    _ => 0,
                };
                (since, id.as_str()) < (at_ms, me) && until > at_ms
            })
        })
    }

    /// A channel of `node` got its first subscriber (`vacated_at` none) or lost its last one
    /// (sent at once, ahead of the node's next full state).
    pub fn occupancy(
        &mut self,
        node: &str,
        app: &str,
        channel: &str,
        occupied_at: u64,
        vacated_at: Option<u64>,
        now: Instant,
    ) {
        let entry = self.heard_from(node, app, channel, now);
        entry.occupied_at = Some(occupied_at);
        entry.vacated_at = vacated_at;
        entry.subscribers = match vacated_at {
            None => entry.subscribers.max(1),
            Some(_) => 0,
        };
    }

    /// `node` is alive; its entry for the channel, to update.
    fn heard_from(
        &mut self,
        node: &str,
        app: &str,
        channel: &str,
        now: Instant,
    ) -> &mut ChannelState {
        let remote = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| Remote {
                last_seen: now,
                state: NodeState::new(),
                seq: None,
            });
        remote.last_seen = now;
        remote
            .state
            .entry((app.to_string(), channel.to_string()))
            .or_default()
    }

    /// Every occupied channel of `app` on the other nodes.
    pub fn channels(&self, app: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .nodes
            .values()
            .flat_map(|r| r.state.iter())
            // `#` entries are the server's own (signed-in users), not channels.
            .filter(|((a, ch), c)| a == app && c.subscribers > 0 && !ch.starts_with('#'))
            .map(|((_, ch), _)| ch.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn knows(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A presence delta from another node. `local` says whether this node itself has the user
    /// in the channel. Returns the event to announce here, if any.
    pub fn presence(&mut self, delta: Delta<'_>, local: bool, now: Instant) -> Option<MemberEvent> {
        let Delta {
            node,
            app,
            channel,
            user,
            info,
            joined,
        } = delta;
        let elsewhere = local || self.member_elsewhere(app, channel, user, Some(node));
        let entry = self.heard_from(node, app, channel, now);
        let had = entry.members.contains_key(user);
        if joined {
            entry.members.insert(user.to_string(), info.clone());
            (!had && !elsewhere).then(|| MemberEvent::Added {
                app: app.into(),
                channel: channel.into(),
                user_id: user.into(),
                info,
            })
        } else {
            entry.members.remove(user);
            (had && !elsewhere).then(|| MemberEvent::Removed {
                app: app.into(),
                channel: channel.into(),
                user_id: user.into(),
            })
        }
    }

    /// A full state from `node` at its sequence number `seq` (`None`: read from its Redis key,
    /// sequence unknown). `is_local(app, channel, user)` says whether this node holds the user.
    /// Returns the member events the change implies here.
    pub fn replace(
        &mut self,
        node: &str,
        state: NodeState,
        seq: Option<u64>,
        now: Instant,
        is_local: impl Fn(&str, &str, &str) -> bool,
    ) -> Vec<MemberEvent> {
        let old = self.nodes.remove(node).map(|r| r.state).unwrap_or_default();
        let mut events = Vec::new();
        for (key, c) in &state {
            self.member_changes(key, old.get(key), Some(c), &is_local, &mut events);
            if count_differs(old.get(key), Some(c)) {
                self.counts_changed.push(key.clone());
            }
        }
        for (key, c) in &old {
            if !state.contains_key(key) {
                self.member_changes(key, Some(c), None, &is_local, &mut events);
                self.counts_changed.push(key.clone());
            }
        }
        self.nodes.insert(
            node.to_string(),
            Remote {
                last_seen: now,
                state,
                seq,
            },
        );
        events
    }

    /// The channels of `node` that changed since its state number `seq - 1`. `None` when this
    /// replica is not at `seq - 1` (a message was lost, or the node is new here): ask the node
    /// for its full state.
    pub fn apply(
        &mut self,
        node: &str,
        seq: u64,
        changed: Vec<StateEntry>,
        removed: Vec<ChannelRef>,
        now: Instant,
        is_local: impl Fn(&str, &str, &str) -> bool,
    ) -> Option<Vec<MemberEvent>> {
        let in_sync = self.heartbeat(node, seq.wrapping_sub(1), now);
        let mut remote = self.nodes.remove(node)?;
        if !in_sync {
            remote.seq = None;
            self.nodes.insert(node.to_string(), remote);
            return None;
        }
        let mut events = Vec::new();
        for e in changed {
            let key = (e.app, e.channel);
            self.member_changes(
                &key,
                remote.state.get(&key),
                Some(&e.state),
                &is_local,
                &mut events,
            );
            if count_differs(remote.state.get(&key), Some(&e.state)) {
                self.counts_changed.push(key.clone());
            }
            remote.state.insert(key, e.state);
        }
        for r in removed {
            let key = (r.app, r.channel);
            if let Some(old) = remote.state.remove(&key) {
                self.member_changes(&key, Some(&old), None, &is_local, &mut events);
                self.counts_changed.push(key);
            }
        }
        remote.seq = Some(seq);
        self.nodes.insert(node.to_string(), remote);
        Some(events)
    }

    /// `node` is alive at state number `seq`. Whether this replica is at that number too.
    pub fn heartbeat(&mut self, node: &str, seq: u64, now: Instant) -> bool {
        match self.nodes.get_mut(node) {
            Some(r) => {
                r.last_seen = now;
                r.seq == Some(seq)
            }
            None => false,
        }
    }

    /// Member events for one channel of a node going from `old` to `new`, the node itself
    /// being out of `self.nodes` meanwhile (so "elsewhere" means the other nodes).
    fn member_changes(
        &self,
        (app, channel): &(String, String),
        old: Option<&ChannelState>,
        new: Option<&ChannelState>,
        is_local: &impl Fn(&str, &str, &str) -> bool,
        events: &mut Vec<MemberEvent>,
    ) {
        let news = |user: &str| {
            !is_local(app, channel, user) && !self.member_elsewhere(app, channel, user, None)
        };
        let had = |user: &str| old.is_some_and(|o| o.members.contains_key(user));
        let has = |user: &str| new.is_some_and(|n| n.members.contains_key(user));
        for (user, info) in new.map(|n| &n.members).into_iter().flatten() {
            if !had(user) && news(user) {
                events.push(MemberEvent::Added {
                    app: app.clone(),
                    channel: channel.clone(),
                    user_id: user.clone(),
                    info: info.clone(),
                });
            }
        }
        for user in old.map(|o| o.members.keys()).into_iter().flatten() {
            if !has(user) && news(user) {
                events.push(MemberEvent::Removed {
                    app: app.clone(),
                    channel: channel.clone(),
                    user_id: user.clone(),
                });
            }
        }
    }

    /// Forgets nodes silent for longer than `timeout`; returns their names and the member
    /// removals to announce here.
    pub fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        is_local: impl Fn(&str, &str, &str) -> bool,
    ) -> (Vec<String>, Vec<MemberEvent>) {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        let mut events = Vec::new();
        for id in &dead {
            events.extend(self.remove(id, &is_local));
        }
        (dead, events)
    }

    /// Forgets a node: its members that no node (this one included) still holds leave.
    pub fn remove(
        &mut self,
        id: &str,
        is_local: impl Fn(&str, &str, &str) -> bool,
    ) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        let Some(r) = self.nodes.remove(id) else {
            return events;
        };
        for ((app, channel), c) in r.state {
            self.counts_changed.push((app.clone(), channel.clone()));
            for user in c.members.keys() {
                if !is_local(&app, &channel, user)
                    && !self.member_elsewhere(&app, &channel, user, None)
                {
                    events.push(MemberEvent::Removed {
                        app: app.clone(),
                        channel: channel.clone(),
                        user_id: user.clone(),
                    });
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str, _: &str, _: &str) -> bool {
        false
    }

    #[test]
    fn member_events_fire_once_across_nodes() {
        let mut c = Replica::default();
        let t = Instant::now();
        let added = c.presence(
            Delta {
                node: "b",
                app: "a1",
                channel: "presence-x",
                user: "u",
                info: None,
                joined: true,
            },
            false,
            t,
        );
        assert!(matches!(added, Some(MemberEvent::Added { .. })));
        // Same user on a third node: already somewhere.
        assert_eq!(
            c.presence(
                Delta {
                    node: "c",
                    app: "a1",
                    channel: "presence-x",
                    user: "u",
                    info: None,
                    joined: true
                },
                false,
                t
            ),
            None
        );
        // Leaves b: still on c.
        assert_eq!(
            c.presence(
                Delta {
                    node: "b",
                    app: "a1",
                    channel: "presence-x",
                    user: "u",
                    info: None,
                    joined: false
                },
                false,
                t
            ),
            None
        );
        // Leaves c: gone everywhere.
        assert!(matches!(
            c.presence(
                Delta {
                    node: "c",
                    app: "a1",
                    channel: "presence-x",
                    user: "u",
                    info: None,
                    joined: false
                },
                false,
                t
            ),
            Some(MemberEvent::Removed { .. })
        ));
        // Joins remotely while here locally: nothing to announce.
        assert_eq!(
            c.presence(
                Delta {
                    node: "b",
                    app: "a1",
                    channel: "presence-x",
                    user: "v",
                    info: None,
                    joined: true
                },
                true,
                t
            ),
            None
        );
    }

    #[test]
    fn dead_nodes_take_their_members_with_them() {
        let mut c = Replica::default();
        let t0 = Instant::now();
        let mut state = NodeState::new();
        let mut ch = ChannelState {
            subscribers: 2,
            ..Default::default()
        };
        ch.members.insert("u".into(), None);
        state.insert(("a1".into(), "presence-x".into()), ch);
        let events = c.replace("b", state, Some(1), t0, none);
        assert_eq!(events.len(), 1);
        assert_eq!(c.channel("a1", "presence-x").0, 2);
        assert_eq!(c.channels("a1"), vec!["presence-x"]);
        let (dead, events) = c.expire(t0 + Duration::from_secs(11), Duration::from_secs(10), none);
        assert_eq!(dead, vec!["b"]);
        assert!(
            matches!(events.as_slice(), [MemberEvent::Removed { user_id, .. }] if user_id == "u")
        );
        assert_eq!(c.node_count(), 0);
    }

    #[test]
    fn state_diff_announces_changes_only() {
        let mut c = Replica::default();
        let t = Instant::now();
        let mk = |users: &[&str]| {
            let mut s = NodeState::new();
            let mut ch = ChannelState {
                subscribers: users.len(),
                ..Default::default()
            };
            for u in users {
                ch.members.insert(u.to_string(), None);
            }
            s.insert(("a".into(), "presence-y".into()), ch);
            s
        };
        assert_eq!(c.replace("b", mk(&["1", "2"]), None, t, none).len(), 2);
        assert!(c.replace("b", mk(&["1", "2"]), None, t, none).is_empty());
        let ev = c.replace("b", mk(&["2", "3"]), None, t, none);
        assert_eq!(ev.len(), 2, "{ev:?}");
        let wire = to_entries(&mk(&["9"]));
        assert_eq!(
            from_entries(serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap()),
            mk(&["9"])
        );
    }

    #[test]
    fn one_node_fires_occupied_and_one_fires_vacated() {
        let t = Instant::now();
        let mut c = Replica::default();
        // "b" occupied the channel at 1000 and still holds it.
        c.occupancy("b", "app", "ch", 1000, None, t);
        assert!(c.held_before("app", "ch", 1001, "a", 500), "b was first");
        assert!(!c.held_before("app", "ch", 999, "a", 500), "a was first");
        assert!(
            c.held_before("app", "ch", 1000, "c", 500),
            "a tie goes to the smaller id"
        );
        assert!(!c.held_before("app", "ch", 1000, "a", 500));
        // "b" let it go at 1200: an occupation before 1700 is a quick return.
        c.occupancy("b", "app", "ch", 1000, Some(1200), t);
        assert!(c.held_before("app", "ch", 1100, "a", 500), "overlapped b");
        assert!(
            c.held_before("app", "ch", 1600, "a", 500),
            "within b's grace"
        );
        assert!(
            !c.held_before("app", "ch", 1700, "a", 500),
            "after b's grace"
        );
        // Whoever vacated last sends channel_vacated.
        assert!(c.vacated_later("app", "ch", 1100, "a"));
        assert!(!c.vacated_later("app", "ch", 1300, "a"));
        assert!(c.vacated_later("app", "ch", 1200, "a"), "tie: larger id");
        assert!(!c.vacated_later("app", "ch", 1200, "c"));
        // A record of another app or channel says nothing.
        assert!(!c.held_before("app", "other", 1100, "a", 500));
        assert!(!c.vacated_later("app2", "ch", 1100, "a"));
        // The records survive the trip through a full state.
        let wire = to_entries(&c.nodes["b"].state);
        let back: Vec<StateEntry> =
            serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap();
        assert_eq!(from_entries(back), c.nodes["b"].state);
    }

    #[test]
    fn changes_apply_in_order_and_a_gap_asks_for_the_full_state() {
        let t = Instant::now();
        let mut c = Replica::default();
        let entry = |ch: &str, subscribers: usize, members: &[&str]| StateEntry {
            app: "app".into(),
            channel: ch.into(),
            state: ChannelState {
                subscribers,
                members: members.iter().map(|m| (m.to_string(), None)).collect(),
                ..Default::default()
            },
        };
        // Unknown node: its changes cannot be applied, its heartbeat is not in step.
        assert!(
            c.apply("b", 1, vec![entry("x", 1, &[])], vec![], t, none)
                .is_none()
        );
        assert!(!c.heartbeat("b", 1, t));
        c.replace(
            "b",
            from_entries(vec![entry("x", 1, &[])]),
            Some(5),
            t,
            none,
        );
        assert!(c.heartbeat("b", 5, t));
        // In step: applied, with the member events they imply.
        let ev = c
            .apply(
                "b",
                6,
                vec![entry("presence-p", 2, &["u1", "u2"])],
                vec![],
                t,
                none,
            )
            .expect("in step");
        assert_eq!(ev.len(), 2);
        assert_eq!(c.channel("app", "presence-p").0, 2);
        let ev = c
            .apply(
                "b",
                7,
                vec![entry("presence-p", 1, &["u2"])],
                vec![ChannelRef {
                    app: "app".into(),
                    channel: "x".into(),
                }],
                t,
                none,
            )
            .expect("in step");
        assert!(matches!(&ev[..], [MemberEvent::Removed { user_id, .. }] if user_id == "u1"));
        assert_eq!(c.channel("app", "x").0, 0);
        assert_eq!(c.channels("app"), vec!["presence-p".to_string()]);
        // A lost message: the next change is refused, and so is everything until a full state.
        assert!(
            c.apply("b", 9, vec![entry("y", 1, &[])], vec![], t, none)
                .is_none()
        );
        assert!(c.apply("b", 10, vec![], vec![], t, none).is_none());
        assert!(!c.heartbeat("b", 10, t));
        assert_eq!(c.channel("app", "y").0, 0, "nothing applied out of order");
        c.replace(
            "b",
            from_entries(vec![entry("y", 1, &[])]),
            Some(11),
            t,
            none,
        );
        assert!(c.apply("b", 12, vec![], vec![], t, none).is_some());
        assert!(c.knows("b"));
    }
}
