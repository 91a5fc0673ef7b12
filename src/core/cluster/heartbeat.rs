//! This node's heartbeat key in Redis, and reading the other nodes' keys as it joins.
//!
//! The key is a hash of the node's channels (field `["app","channel"]`, value the channel's
//! JSON state), its users' connection counts (field `["user","app","id"]`), and `_at`,
//! expiring `node_timeout_secs` after the last write. A node that starts while another is
//! unresponsive still learns what that one holds, and `redis-cli HGETALL` shows it.

use std::collections::HashMap;
use std::time::Duration;

use super::replica::{ChannelRef, ChannelState, NodeState, StateEntry};
use crate::core::effects::LinkOp;
use crate::scaling::resp::Reply;

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
    pub age: Duration,
    pub state: NodeState,
}

pub struct Heartbeat {
    node_id: String,
    /// `{prefix}:nodes` (a set of node ids), `{prefix}:node:` (each node's key prefix) and this
    /// node's own key.
    nodes_key: Vec<u8>,
    node_key_prefix: String,
    own_key: Vec<u8>,
    node_timeout: Duration,
    /// Heartbeat keys being read: reply tag → node id.
    reading: HashMap<u64, String>,
    next_tag: u64,
    leaving: bool,
}

fn command(ops: &mut Vec<LinkOp>, tag: u64, args: Vec<Vec<u8>>) {
    ops.push(LinkOp::Command { tag, args });
}

impl Heartbeat {
    pub fn new(prefix: &str, node_id: &str, node_timeout: Duration) -> Heartbeat {
        Heartbeat {
            node_id: node_id.to_string(),
            nodes_key: format!("{prefix}:nodes").into_bytes(),
            node_key_prefix: format!("{prefix}:node:"),
            own_key: format!("{prefix}:node:{node_id}").into_bytes(),
            node_timeout,
            reading: HashMap::new(),
            next_tag: FIRST_READ,
            leaving: false,
        }
    }

    /// Writes the key: `full` rewrites the hash; otherwise only what changed is written
    /// (nothing but `_at` and the expiry for a heartbeat). A user count of 0 removes the user.
    pub fn store(
        &mut self,
        full: bool,
        changes: (&[StateEntry], &[ChannelRef]),
        users: &[(String, String, u32)],
        now_ms: u64,
        ops: &mut Vec<LinkOp>,
    ) {
        if self.leaving {
            return;
        }
        let name = self.own_key.clone();
        if full {
            command(ops, TAG_WRITE, vec![b"DEL".to_vec(), name.clone()]);
        }
        let mut hset = vec![
            b"HSET".to_vec(),
            name.clone(),
            AT_FIELD.to_vec(),
            now_ms.to_string().into_bytes(),
        ];
        for e in changes.0 {
            if let (Ok(field), Ok(value)) = (
                serde_json::to_vec(&(&e.app, &e.channel)),
                serde_json::to_vec(&e.state),
            ) {
                hset.extend([field, value]);
            }
        }
        let mut hdel = vec![b"HDEL".to_vec(), name.clone()];
        hdel.extend(
            changes
                .1
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
                hset.extend([field, count.to_string().into_bytes()]);
            }
        }
        command(ops, TAG_WRITE, hset);
        if hdel.len() > 2 {
            command(ops, TAG_WRITE, hdel);
        }
        let ttl = self.node_timeout.as_millis().max(1).to_string();
        command(
            ops,
            TAG_WRITE,
            vec![b"PEXPIRE".to_vec(), name, ttl.into_bytes()],
        );
        // Idempotent, and puts the id back if Redis restarted empty.
        let sadd = vec![
            b"SADD".to_vec(),
            self.nodes_key.clone(),
            self.node_id.clone().into_bytes(),
        ];
        command(ops, TAG_WRITE, sadd);
    }

    /// Shutting down: remove this node's key, so a node starting meanwhile does not take this
    /// one's last state for live.
    pub fn leave(&mut self, ops: &mut Vec<LinkOp>) {
        self.leaving = true;
        command(ops, TAG_WRITE, vec![b"DEL".to_vec(), self.own_key.clone()]);
        let srem = vec![
            b"SREM".to_vec(),
            self.nodes_key.clone(),
            self.node_id.clone().into_bytes(),
        ];
        command(ops, TAG_WRITE, srem);
    }

    /// Asks Redis which nodes there are, to read their keys (just connected).
    pub fn load_nodes(&mut self, ops: &mut Vec<LinkOp>) {
        command(
            ops,
            TAG_MEMBERS,
            vec![b"SMEMBERS".to_vec(), self.nodes_key.clone()],
        );
    }

    /// Handles a command reply; returns a node state read from its heartbeat key.
    pub fn on_reply(
        &mut self,
        tag: u64,
        reply: Reply,
        now_ms: u64,
        ops: &mut Vec<LinkOp>,
    ) -> Option<StoredNode> {
        match (tag, reply) {
            (TAG_WRITE, Reply::Error(e)) => {
                log::debug!("heartbeat key not written: {e}");
                None
            }
            (TAG_MEMBERS, Reply::Array(ids)) => {
                self.read_keys(ids, ops);
                None
            }
            (tag, reply) if tag >= FIRST_READ => {
                let node = self.reading.remove(&tag)?;
                match reply {
                    Reply::Array(fields) if !fields.is_empty() => {
                        read_heartbeat(node, fields, now_ms)
                    }
                    Reply::Array(_) => {
                        // Expired: the node is gone; tidy the set.
                        let srem = vec![b"SREM".to_vec(), self.nodes_key.clone(), node.into()];
                        command(ops, TAG_WRITE, srem);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Reads the key of every other node in the set.
    fn read_keys(&mut self, ids: Vec<Reply>, ops: &mut Vec<LinkOp>) {
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
            command(ops, tag, vec![b"HGETALL".to_vec(), name.into_bytes()]);
            self.reading.insert(tag, id);
        }
    }
}

/// A node's state from the `HGETALL` of its heartbeat key; fields that do not parse are
/// skipped with a warning.
fn read_heartbeat(node: String, fields: Vec<Reply>, now_ms: u64) -> Option<StoredNode> {
    let mut at_ms = None;
    let mut state = NodeState::new();
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
            serde_json::from_slice::<ChannelState>(&value),
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
        age: Duration::from_millis(now_ms.saturating_sub(at_ms)),
        state,
    })
}
