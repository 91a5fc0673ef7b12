//! The bus's way to the other machines when the process scales through Redis: one Redis link
//! for all its loops. Each loop is a node of the cluster (`{node_id}-{N}`). The bus hands what
//! a loop publishes to its siblings at once and to Redis; it sends the loops' commands (state
//! keys, numbering scripts) to Redis and their replies back; it hands the loops what the other
//! machines publish, and what Redis numbered. Whether Redis answers is told to the loops on
//! their notice channel, so each loop behaves as a node whose link went down or up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::info;
use mio::{Registry, Token};

use crate::config::Config;
use crate::scaling::redis::{LinkError, LinkEvent, LinkOptions, RedisLink, Reply};

/// What the link brought, for the bus.
pub enum News {
    /// The reply to a loop's command: for connection `conn`, in its reply slot `slot`.
    Reply {
        conn: usize,
        slot: u64,
        reply: Reply,
    },
    /// A message for every loop: another machine's, or one Redis numbered.
    Deliver(Vec<u8>),
    /// Redis became reachable (`true`) or not.
    Status(bool),
    /// A host name to resolve (outside the loop: `getaddrinfo` blocks).
    Resolve(String, u16),
}

pub struct Upstream {
    link: RedisLink,
    broadcast: Vec<u8>,
    /// The loops' node names: their messages coming back from Redis were delivered here.
    local: Vec<String>,
    /// Forwarded commands: tag → (connection, reply slot).
    waiting: HashMap<u64, (usize, u64)>,
    next_tag: u64,
    events: Vec<LinkEvent>,
}

/// The tag of the bus's own commands, whose replies nobody waits for.
const OWN: u64 = 0;

impl Upstream {
    pub fn start(
        cfg: &Config,
        registry: &Registry,
        tokens: (Token, Token),
        local: Vec<String>,
    ) -> Result<Upstream, LinkError> {
        let opts = LinkOptions {
            tls_ca_file: cfg.scaling.redis_ca_file.clone(),
            ..Default::default()
        };
        let mut link = RedisLink::with_options(&cfg.scaling.redis_url, tokens.0, tokens.1, opts)?;
        info!(
            "the loops scale through Redis at {} as nodes {}",
            link.url().redacted(),
            local.join(", ")
        );
        let broadcast = format!("{}#broadcast", cfg.scaling.prefix).into_bytes();
        link.subscribe(&broadcast);
        link.start(registry, Instant::now());
        Ok(Upstream {
            link,
            broadcast,
            local,
            waiting: HashMap::new(),
            next_tag: OWN + 1,
            events: Vec::new(),
        })
    }

    pub fn owns(&self, token: Token) -> bool {
        self.link.owns(token)
    }

    pub fn on_ready(&mut self, registry: &Registry, token: Token) {
        self.link.on_ready(registry, token, &mut self.events);
    }

    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.link.poll_timeout(now)
    }

    /// Sends a loop's command on; its reply goes to `conn`'s slot `slot`.
    pub fn forward(&mut self, conn: usize, slot: u64, args: &[Vec<u8>]) {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(OWN + 1);
        self.waiting.insert(tag, (conn, slot));
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.link.command(tag, &args);
    }

    /// A command of the bus's own (a dead loop's keys), whose reply is not awaited.
    pub fn command(&mut self, args: &[&[u8]]) {
        self.link.command(OWN, args);
    }

    pub fn publish(&mut self, channel: &[u8], payload: &[u8]) {
        self.link.publish(channel, payload);
    }

    /// Timers and writes of the link, then what it brought.
    pub fn pump(&mut self, registry: &Registry) -> Vec<News> {
        self.link.tick(registry, Instant::now(), &mut self.events);
        self.link.flush(registry, &mut self.events);
        let mut news = Vec::new();
        for event in std::mem::take(&mut self.events) {
            match event {
                LinkEvent::Reply { tag, reply } => {
                    if let Some((conn, slot)) = self.waiting.remove(&tag) {
                        news.push(News::Reply { conn, slot, reply });
                    }
                }
                LinkEvent::Message { channel, payload } if channel == self.broadcast => {
                    if !self.echo(&payload) {
                        news.push(News::Deliver(payload));
                    }
                }
                LinkEvent::Message { .. } => {}
                LinkEvent::Up => news.push(News::Status(true)),
                LinkEvent::Down { .. } => news.push(News::Status(false)),
                LinkEvent::Resolve { host, port } => news.push(News::Resolve(host, port)),
            }
        }
        news
    }

    /// Whether a message is a loop's own, back from Redis (delivered by the bus already). One
    /// Redis numbered is not: every loop takes it from Redis, its origin included.
    fn echo(&self, payload: &[u8]) -> bool {
        if payload.starts_with(b"{\"positions\"") {
            return false;
        }
        let Some(rest) = payload.strip_prefix(b"{\"node\":\"") else {
            return false;
        };
        let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
        self.local.iter().any(|n| n.as_bytes() == &rest[..end])
    }

    /// The addresses of the host name asked for with [`News::Resolve`], or why there are none.
    pub fn resolved(&mut self, registry: &Registry, result: Result<Vec<SocketAddr>, String>) {
        self.link.resolved(registry, Instant::now(), result);
    }

    /// A loop's connection closed: replies to it are dropped when they come.
    pub fn forget(&mut self, conn: usize) {
        self.waiting.retain(|_, (c, _)| *c != conn);
    }
}
