//! Several nodes, one set of channels: every broadcast accepted on a node is delivered locally at
//! once and published to Redis with the node's id; every node delivers what the others published.
//!
//! The Redis link lives in the same poll loop (no threads: the server forks). Local delivery never
//! waits for Redis; while Redis is away, nodes serve their own clients and `/up` says `degraded`.

pub mod bridge;
pub mod cluster;
pub mod redis;
pub mod resp;

use std::time::Instant;

use log::info;
use serde::{Deserialize, Serialize};

use crate::config::ScalingConfig;
use redis::{LinkEvent, RedisLink};
use resp::Reply;

/// Reply tags of the heartbeat-key commands. Writes are fire-and-forget; `SMEMBERS` lists the
/// nodes at start-up; each `HGETALL` of a node's key gets a tag of its own from `FIRST_READ` up.
const TAG_WRITE: u64 = 0;
const TAG_MEMBERS: u64 = 1;
const FIRST_READ: u64 = 2;

/// The field of a node's heartbeat hash that holds when it was last written (wall-clock ms).
const AT_FIELD: &[u8] = b"_at";

/// A node's state read from its heartbeat key.
pub struct StoredNode {
    pub node: String,
    pub age: std::time::Duration,
    pub state: cluster::NodeState,
}

/// What crosses between nodes. `node` is the origin, so a node ignores its own messages.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub node: String,
    /// App id (not index: nodes may list apps in another order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// An event on channels, as one publication (FIFO line, REST, internal broadcast,
    /// console). `channel` with one name is accepted from nodes of earlier versions.
    Publish {
        #[serde(alias = "channel", deserialize_with = "one_or_many")]
        channels: Vec<String>,
        event: String,
        data: String,
        /// The socket id to leave out: it may live on any node, whichever node the event entered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
    },
    /// A FIFO line for every raw and channel client.
    Global { line: String },
    /// A client event, already in its final JSON form.
    Frame { channel: String, text: String },
    /// A user's first connection to a presence channel on the origin node, or its last one left.
    Presence {
        channel: String,
        user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<serde_json::Value>,
        joined: bool,
    },
    /// The origin's whole channel state, as of its state number `seq`.
    State {
        channels: Vec<cluster::StateEntry>,
        #[serde(default)]
        seq: u64,
    },
    /// The origin's channels that changed since state number `seq - 1`.
    Delta {
        seq: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<cluster::StateEntry>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<cluster::ChannelRef>,
    },
    /// "Still here, at state number `seq`", every [`cluster::STATE_EVERY`] without changes.
    Heartbeat { seq: u64 },
    /// "Send your full state": to every node (`to` empty: a node that just (re)connected) or
    /// to one whose changes this node cannot apply (it missed one).
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// A channel got its first subscriber on the origin (at `occupied_at`), or lost its last
    /// one (at `vacated_at`); times are the origin's wall clock in ms. Sent at once so the
    /// nodes agree on who fires `channel_occupied` and `channel_vacated`.
    Occupancy {
        channel: String,
        occupied_at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vacated_at: Option<u64>,
    },
    /// REST terminate_connections: every node closes that user's signed-in connections.
    Terminate { user_id: String },
}

/// A channel list sent as an array, or as one name.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Names::deserialize(d)? {
        Names::One(name) => vec![name],
        Names::Many(names) => names,
    })
}

pub struct Scaling {
    pub link: RedisLink,
    pub node_id: String,
    channel: Vec<u8>,
    pub received: u64,
    pub published: u64,
    pub started_at: Instant,
    /// The other nodes' channels and members.
    pub cluster: cluster::Cluster,
    /// When this node last sent its state, changes or a heartbeat.
    pub last_sent: Instant,
    /// This node's state number: +1 for every full state or set of changes sent.
    pub seq: u64,
    /// Local channels changed since the last send, (app index, channel): sent at the next tick.
    pub changed: std::collections::HashSet<(usize, Box<str>)>,
    /// Users whose connection count here changed since the last send (for the Redis key).
    pub changed_users: std::collections::HashSet<(usize, Box<str>)>,
    pub node_timeout: std::time::Duration,
    /// `{prefix}:nodes` (a set of node ids), `{prefix}:node:` (each node's key prefix) and
    /// this node's own key.
    nodes_key: Vec<u8>,
    node_key_prefix: String,
    own_key: Vec<u8>,
    /// Heartbeat keys being read: reply tag → node id.
    reading: std::collections::HashMap<u64, String>,
    next_tag: u64,
    /// Node states read from Redis, for the server to fold into the cluster.
    pub stored: Vec<StoredNode>,
    /// A host name the link asked to have resolved (by a worker: `getaddrinfo` blocks).
    pub resolve: Option<(String, u16)>,
    leaving: bool,
}

impl Scaling {
    pub fn new(
        cfg: &ScalingConfig,
        sub: mio::Token,
        cmd: mio::Token,
    ) -> Result<Scaling, redis::LinkError> {
        let opts = redis::LinkOptions {
            tls_ca_file: cfg.redis_ca_file.clone(),
            ..Default::default()
        };
        let link = RedisLink::with_options(&cfg.redis_url, sub, cmd, opts)?;
        let node_id = if cfg.node_id.is_empty() {
            generate_node_id()
        } else {
            cfg.node_id.clone()
        };
        info!(
            "scaling through Redis at {} as node {node_id}",
            link.url().redacted()
        );
        let own_key = format!("{}:node:{node_id}", cfg.prefix).into_bytes();
        Ok(Scaling {
            link,
            node_id,
            channel: format!("{}#broadcast", cfg.prefix).into_bytes(),
            received: 0,
            published: 0,
            started_at: Instant::now(),
            cluster: cluster::Cluster::default(),
            last_sent: Instant::now() - cluster::STATE_EVERY,
            seq: 0,
            changed: Default::default(),
            changed_users: Default::default(),
            node_timeout: std::time::Duration::from_secs(cfg.node_timeout_secs),
            nodes_key: format!("{}:nodes", cfg.prefix).into_bytes(),
            node_key_prefix: format!("{}:node:", cfg.prefix),
            own_key,
            reading: Default::default(),
            next_tag: FIRST_READ,
            stored: Vec::new(),
            resolve: None,
            leaving: false,
        })
    }

    /// This node's heartbeat key: a hash of its channels (field `["app","channel"]`, value the
    /// channel's JSON state), its users' connection counts (field `["user","app","id"]`), and
    /// `_at`, expiring `node_timeout_secs` after the last write. A node that starts while
    /// another is unresponsive still learns what that one holds, and `redis-cli HGETALL` shows
    /// it. `full` rewrites the hash; otherwise only what changed is written (nothing but `_at`
    /// and the expiry for a heartbeat). A user count of 0 removes the user.
    pub fn store(
        &mut self,
        full: bool,
        changed: &[cluster::StateEntry],
        removed: &[cluster::ChannelRef],
        users: &[(String, String, u32)],
    ) {
        if self.leaving {
            return;
        }
        let name = self.own_key.clone();
        if full {
            self.link.command(TAG_WRITE, &[b"DEL", &name]);
        }
        let at = crate::console::unix_ms().to_string();
        let mut hset: Vec<Vec<u8>> = vec![
            b"HSET".to_vec(),
            name.clone(),
            AT_FIELD.to_vec(),
            at.into_bytes(),
        ];
        for e in changed {
            if let (Ok(field), Ok(value)) = (
                serde_json::to_vec(&(&e.app, &e.channel)),
                serde_json::to_vec(&e.state),
            ) {
                hset.push(field);
                hset.push(value);
            }
        }
        let mut hdel: Vec<Vec<u8>> = vec![b"HDEL".to_vec(), name.clone()];
        hdel.extend(
            removed
                .iter()
                .filter_map(|r| serde_json::to_vec(&(&r.app, &r.channel)).ok()),
        );
        for (app, user, count) in users {
            let Ok(field) = serde_json::to_vec(&("user", app, user)) else {
                continue;
            };
            if *count == 0 {
                hdel.push(field);
            } else {
                hset.push(field);
                hset.push(count.to_string().into_bytes());
            }
        }
        self.command(&hset);
        if hdel.len() > 2 {
            self.command(&hdel);
        }
        let ttl = self.node_timeout.as_millis().max(1).to_string();
        self.link
            .command(TAG_WRITE, &[b"PEXPIRE", &name, ttl.as_bytes()]);
        // Idempotent, and puts the id back if Redis restarted empty.
        let nodes_key = self.nodes_key.clone();
        self.link
            .command(TAG_WRITE, &[b"SADD", &nodes_key, self.node_id.as_bytes()]);
    }

    fn command(&mut self, args: &[Vec<u8>]) {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.link.command(TAG_WRITE, &args);
    }

    /// Shutting down: remove this node's heartbeat key, so a node starting meanwhile does not
    /// take this one's last state for live.
    pub fn leave_cluster(&mut self) {
        self.leaving = true;
        let name = self.own_key.clone();
        self.link.command(TAG_WRITE, &[b"DEL", &name]);
        let nodes_key = self.nodes_key.clone();
        self.link
            .command(TAG_WRITE, &[b"SREM", &nodes_key, self.node_id.as_bytes()]);
    }

    /// Asks Redis which nodes there are, to read their heartbeat keys (just connected).
    pub fn load_nodes(&mut self) {
        let nodes_key = self.nodes_key.clone();
        self.link.command(TAG_MEMBERS, &[b"SMEMBERS", &nodes_key]);
    }

    /// Handles a command reply; returns a node state read from its heartbeat key.
    pub fn on_reply(&mut self, tag: u64, reply: Reply) -> Option<StoredNode> {
        match (tag, reply) {
            (TAG_WRITE, Reply::Error(e)) => {
                log::debug!("heartbeat key not written: {e}");
                None
            }
            (TAG_MEMBERS, Reply::Array(ids)) => {
                for id in ids {
                    let Reply::Bulk(id) = id else { continue };
                    let Ok(id) = String::from_utf8(id) else {
                        continue;
                    };
                    if id == self.node_id {
                        continue;
                    }
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    let name = format!("{}{id}", self.node_key_prefix);
                    self.link.command(tag, &[b"HGETALL", name.as_bytes()]);
                    self.reading.insert(tag, id);
                }
                None
            }
            (tag, reply) if tag >= FIRST_READ => {
                let node = self.reading.remove(&tag)?;
                match reply {
                    Reply::Array(fields) if !fields.is_empty() => read_heartbeat(node, fields),
                    Reply::Array(_) => {
                        // Expired: the node is gone; tidy the set.
                        let nodes_key = self.nodes_key.clone();
                        self.link
                            .command(TAG_WRITE, &[b"SREM", &nodes_key, node.as_bytes()]);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A local channel changed (subscribers, members, or vacated): the other nodes hear of it
    /// at the next tick.
    pub fn channel_changed(&mut self, app: usize, channel: &str) {
        self.changed.insert((app, channel.into()));
    }

    /// A user's connection count here changed.
    pub fn user_changed(&mut self, app: usize, user: &str) {
        self.changed_users.insert((app, user.into()));
    }

    pub fn start(&mut self, registry: &mio::Registry) {
        self.link.subscribe(&self.channel.clone());
        self.link.start(registry, Instant::now());
    }

    /// Publishes to the other nodes (dropped and counted while Redis is down).
    pub fn send(&mut self, app: Option<&str>, body: Body) {
        let envelope = Envelope {
            node: self.node_id.clone(),
            app: app.map(str::to_string),
            body,
        };
        if let Ok(payload) = serde_json::to_vec(&envelope) {
            let channel = self.channel.clone();
            if self.link.publish(&channel, &payload) {
                self.published += 1;
            }
        }
    }

    /// Envelopes from other nodes among the link's events, and whether the link just came up
    /// (time to exchange state).
    pub fn incoming(&mut self, events: &mut Vec<LinkEvent>) -> (Vec<Envelope>, bool) {
        let mut out = Vec::new();
        let mut came_up = false;
        for event in events.drain(..) {
            match event {
                LinkEvent::Up => came_up = true,
                LinkEvent::Resolve { host, port } => self.resolve = Some((host, port)),
                LinkEvent::Reply { tag, reply } => {
                    if let Some(stored) = self.on_reply(tag, reply) {
                        self.stored.push(stored);
                    }
                }
                LinkEvent::Message { channel, payload } if channel == self.channel => {
                    match serde_json::from_slice::<Envelope>(&payload) {
                        Ok(env) if env.node != self.node_id => {
                            self.received += 1;
                            out.push(env);
                        }
                        Ok(_) => {}
                        Err(e) => log::warn!("ignored a malformed message from another node: {e}"),
                    }
                }
                // The link logs outages and recoveries itself, once each.
                _ => {}
            }
        }
        (out, came_up)
    }
}

/// A node's state from the `HGETALL` of its heartbeat key; fields that do not parse are
/// skipped with a warning.
fn read_heartbeat(node: String, fields: Vec<Reply>) -> Option<StoredNode> {
    let mut at_ms = None;
    let mut state = cluster::NodeState::new();
    let mut pairs = fields.into_iter();
    while let (Some(Reply::Bulk(field)), Some(Reply::Bulk(value))) = (pairs.next(), pairs.next()) {
        if field == AT_FIELD {
            at_ms = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if serde_json::from_slice::<(String, String, String)>(&field).is_ok() {
            continue; // a user's connection count: for operators, not replicated
        }
        match (
            serde_json::from_slice::<(String, String)>(&field),
            serde_json::from_slice::<cluster::ChannelState>(&value),
        ) {
            (Ok(key), Ok(channel)) => {
                state.insert(key, channel);
            }
            _ => log::warn!("ignored a malformed field in node {node}'s heartbeat key"),
        }
    }
    let Some(at_ms) = at_ms else {
        log::warn!("ignored node {node}'s heartbeat key: no _at field");
        return None;
    };
    Some(StoredNode {
        node,
        age: std::time::Duration::from_millis(crate::console::unix_ms().saturating_sub(at_ms)),
        state,
    })
}

fn generate_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip() {
        let e = Envelope {
            node: "a".into(),
            app: Some("app-id".into()),
            body: Body::Publish {
                channels: vec!["c".into(), "d".into()],
                event: "e".into(),
                data: "{\"x\":1}".into(),
                except: Some("1.2".into()),
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"kind\":\"publish\""), "{text}");
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), e);
        let g: Envelope =
            serde_json::from_str(r#"{"node":"b","kind":"global","line":"hi"}"#).unwrap();
        assert_eq!(g.body, Body::Global { line: "hi".into() });
        let old: Envelope = serde_json::from_str(
            r#"{"node":"b","kind":"publish","channel":"c","event":"e","data":"d"}"#,
        )
        .unwrap();
        assert!(matches!(old.body, Body::Publish { channels, .. } if channels == ["c"]));
    }
}
