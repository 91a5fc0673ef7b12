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
/// nodes at start-up; each `GET` of a node's key gets a tag of its own from `FIRST_GET` up.
const TAG_WRITE: u64 = 0;
const TAG_MEMBERS: u64 = 1;
const FIRST_GET: u64 = 2;

/// What a node keeps under `{prefix}:node:{id}`, refreshed with every state it sends and
/// expiring `node_timeout_secs` after the last: a node that starts while another is
/// unresponsive still learns what that one holds, and operators can read the cluster with
/// `redis-cli`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatKey {
    /// Writer's wall clock (ms): how old the key is when read.
    pub at_ms: u64,
    pub channels: Vec<cluster::StateEntry>,
}

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
    /// An event on a channel (FIFO line, REST, internal broadcast, console).
    Publish {
        channel: String,
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
    /// The origin's whole channel state; also its heartbeat.
    State { channels: Vec<cluster::StateEntry> },
    /// "Send me your state": a node that just (re)connected.
    Sync,
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

pub struct Scaling {
    pub link: RedisLink,
    pub node_id: String,
    channel: Vec<u8>,
    pub received: u64,
    pub published: u64,
    pub started_at: Instant,
    /// The other nodes' channels and members.
    pub cluster: cluster::Cluster,
    pub last_state_sent: Instant,
    /// Local channels changed since the last state was sent: send it at the next tick.
    pub state_dirty: bool,
    pub node_timeout: std::time::Duration,
    /// `{prefix}:nodes` (a set of node ids) and `{prefix}:node:` (each node's key prefix).
    nodes_key: Vec<u8>,
    node_key_prefix: String,
    /// Heartbeat keys being read: reply tag → node id.
    reading: std::collections::HashMap<u64, String>,
    next_tag: u64,
    /// Node states read from Redis, for the server to fold into the cluster.
    pub stored: Vec<StoredNode>,
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
        Ok(Scaling {
            link,
            node_id,
            channel: format!("{}#broadcast", cfg.prefix).into_bytes(),
            received: 0,
            published: 0,
            started_at: Instant::now(),
            cluster: cluster::Cluster::default(),
            last_state_sent: Instant::now() - cluster::STATE_EVERY,
            state_dirty: false,
            node_timeout: std::time::Duration::from_secs(cfg.node_timeout_secs),
            nodes_key: format!("{}:nodes", cfg.prefix).into_bytes(),
            node_key_prefix: format!("{}:node:", cfg.prefix),
            reading: Default::default(),
            next_tag: FIRST_GET,
            stored: Vec::new(),
            leaving: false,
        })
    }

    /// Refreshes this node's heartbeat key with the state just sent to the others.
    pub fn store_state(&mut self, channels: Vec<cluster::StateEntry>) {
        if self.leaving {
            return;
        }
        let key = HeartbeatKey {
            at_ms: crate::console::unix_ms(),
            channels,
        };
        let Ok(value) = serde_json::to_vec(&key) else {
            return;
        };
        let ttl = self.node_timeout.as_millis().max(1).to_string();
        let name = format!("{}{}", self.node_key_prefix, self.node_id);
        self.link.command(
            TAG_WRITE,
            &[b"SET", name.as_bytes(), &value, b"PX", ttl.as_bytes()],
        );
        let nodes_key = self.nodes_key.clone();
        self.link
            .command(TAG_WRITE, &[b"SADD", &nodes_key, self.node_id.as_bytes()]);
    }

    /// Shutting down: remove this node's heartbeat key, so a node starting meanwhile does not
    /// take this one's last state for live.
    pub fn leave_cluster(&mut self) {
        self.leaving = true;
        let name = format!("{}{}", self.node_key_prefix, self.node_id);
        self.link.command(TAG_WRITE, &[b"DEL", name.as_bytes()]);
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
                    self.link.command(tag, &[b"GET", name.as_bytes()]);
                    self.reading.insert(tag, id);
                }
                None
            }
            (tag, reply) if tag >= FIRST_GET => {
                let node = self.reading.remove(&tag)?;
                match reply {
                    Reply::Bulk(value) => match serde_json::from_slice::<HeartbeatKey>(&value) {
                        Ok(key) => Some(StoredNode {
                            node,
                            age: std::time::Duration::from_millis(
                                crate::console::unix_ms().saturating_sub(key.at_ms),
                            ),
                            state: cluster::from_entries(key.channels),
                        }),
                        Err(e) => {
                            log::warn!("ignored node {node}'s heartbeat key: {e}");
                            None
                        }
                    },
                    Reply::Nil => {
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
                channel: "c".into(),
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
    }
}
