//! The local bus of a process with several loops: what Redis is to the nodes of a cluster, the
//! supervisor is to its loops. Each loop's Redis link talks to it over two socketpairs made
//! before the fork (subscriber, commands), in the same protocol, so the cluster layer
//! (channels, presence, counts, rate shares, numbered history) works unchanged between loops:
//! a publication is written to each sibling once, whatever its number of subscribers.
//!
//! The bus owns the connections, the subscriptions and the keys (`store.rs`). It never blocks:
//! a loop that stops reading is cut off past [`MAX_UNSENT`] (it then exits and is replaced).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, warn};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::readers::Readers;
use super::store::{Publish, Store};
use super::upstream::{News, Upstream};
use crate::scaling::resp::{self, Decoder, Limits, Reply};

/// Bytes waiting for one loop at most; past this the loop is taken for stuck.
const MAX_UNSENT: usize = 256 << 20;
/// Bytes read from one connection per readiness event before the others get a turn.
const READ_BUDGET: usize = 256 << 10;
const READ_CHUNK: usize = 64 << 10;
/// Bytes read from one connection before a barrier is set: everything there, within reason.
const DRAIN_BUDGET: usize = 16 << 20;
/// Times the loops are read again for barriers asked while they were read for others.
const DRAIN_ROUNDS: usize = 4;

struct BusConn {
    stream: UnixStream,
    /// The loop this connection belongs to.
    owner: usize,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    decoder: Decoder,
    subscribed: Vec<Vec<u8>>,
    /// Replies in the order the commands came (one sent to Redis may still be awaited):
    /// `first_slot` numbers the front one.
    replies: VecDeque<Option<Reply>>,
    first_slot: u64,
}

pub struct Bus {
    token_base: usize,
    conns: Slab<BusConn>,
    /// Channel → subscribed connections.
    channels: HashMap<Vec<u8>, Vec<usize>>,
    store: Store,
    /// Connections with bytes to write this turn.
    dirty: Vec<usize>,
    /// Redis, when the process scales through it: the loops' commands go there instead.
    upstream: Option<Upstream>,
    /// The channel the loops hear on whether Redis answers (`up` / `down`), and the one
    /// messages from other machines go to.
    notices: Vec<u8>,
    broadcast: Vec<u8>,
    upstream_up: bool,
    /// The channel barriers' markers go on, and the barriers asked for while reading:
    /// (connection, marker).
    barrier: Vec<u8>,
    barriers: Vec<(usize, Vec<u8>)>,
    /// Which loop reads each user's FIFO, and the channel a loop hears it is the one on.
    readers: Readers,
    reader: Vec<u8>,
    /// Loops that said their reload is complete, since the supervisor last asked.
    reloaded: Vec<usize>,
    /// Connections whose read budget ran out with bytes left: read again next turn (no new
    /// readiness event would come for them).
    again: Vec<usize>,
}

/// Why a connection closed, for the supervisor (which loop lost its bus).
pub struct Closed {
    pub owner: usize,
}

impl Bus {
    /// A bus whose loops use the channels `{prefix}#broadcast` and `{prefix}#bus` (notices).
    pub fn new(token_base: usize, prefix: &str) -> Bus {
        Bus {
            token_base,
            conns: Slab::new(),
            channels: HashMap::new(),
            store: Store::default(),
            dirty: Vec::new(),
            upstream: None,
            notices: format!("{prefix}#bus").into_bytes(),
            broadcast: format!("{prefix}#broadcast").into_bytes(),
            upstream_up: true,
            barrier: format!("{prefix}#barrier").into_bytes(),
            barriers: Vec::new(),
            readers: Readers::default(),
            reader: format!("{prefix}#reader").into_bytes(),
            reloaded: Vec::new(),
            again: Vec::new(),
        }
    }

    /// Scales through Redis: the loops' commands and publications go there too.
    pub fn set_upstream(&mut self, upstream: Upstream) {
        self.upstream = Some(upstream);
    }

    pub fn upstream_mut(&mut self) -> Option<&mut Upstream> {
        self.upstream.as_mut()
    }

    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    /// Redis's timers and news: replies to the loops, other machines' messages, its status.
    /// Returns a host name to resolve, when the link asks for one.
    pub fn pump(&mut self, registry: &Registry) -> Option<(String, u16)> {
        let news = match self.upstream.as_mut() {
            Some(u) => u.pump(registry),
            None => return None,
        };
        let mut resolve = None;
        for n in news {
            match n {
                News::Reply { conn, slot, reply } => self.fill(conn, slot, reply),
                News::Deliver(payload) => {
                    let channel = self.broadcast.clone();
                    self.fan_out(&channel, &payload);
                }
                News::Status(up) if up != self.upstream_up => {
                    self.upstream_up = up;
                    let notices = self.notices.clone();
                    self.fan_out(&notices, status(up));
                }
                News::Status(_) => {}
                News::Resolve(host, port) => resolve = Some((host, port)),
            }
        }
        resolve
    }

    /// Serves the supervisor's end of a socketpair for loop `owner`.
    pub fn add(
        &mut self,
        registry: &Registry,
        mut stream: UnixStream,
        owner: usize,
    ) -> io::Result<()> {
        let entry = self.conns.vacant_entry();
        let token = Token(self.token_base + entry.key());
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        entry.insert(BusConn {
            stream,
            owner,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            decoder: Decoder::new(Limits::default()),
            subscribed: Vec::new(),
            replies: VecDeque::new(),
            first_slot: 0,
        });
        Ok(())
    }

    /// Closes every connection of loop `owner` (it died).
    pub fn drop_owner(&mut self, registry: &Registry, owner: usize) {
        let keys: Vec<usize> = (self.conns.iter())
            .filter(|(_, c)| c.owner == owner)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.close(registry, key);
        }
    }

    /// The connections' descriptors: a freshly forked loop closes its copies of its siblings'.
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.conns
            .iter()
            .map(|(_, c)| c.stream.as_raw_fd())
            .collect()
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// A readiness event: reads and answers what the connection sent. Returns the loops whose
    /// connection closed.
    pub fn on_ready(&mut self, registry: &Registry, token: Token, now: Instant) -> Vec<Closed> {
        let mut closed = Vec::new();
        if let Some(key) = token.0.checked_sub(self.token_base) {
            self.read_or_close(registry, key, now, READ_BUDGET, &mut closed);
            self.set_barriers(registry, now, &mut closed);
        }
        closed
    }

    /// The loops that said their reload is complete since the last call.
    pub fn take_reloaded(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.reloaded)
    }

    /// Whether connections wait to be read again (the supervisor then polls without waiting).
    pub fn has_backlog(&self) -> bool {
        !self.again.is_empty()
    }

    /// Reads the connections whose budget ran out last turn.
    pub fn read_backlog(&mut self, registry: &Registry, now: Instant) -> Vec<Closed> {
        let mut closed = Vec::new();
        for key in std::mem::take(&mut self.again) {
            self.read_or_close(registry, key, now, READ_BUDGET, &mut closed);
        }
        self.set_barriers(registry, now, &mut closed);
        closed
    }

    fn read_or_close(
        &mut self,
        registry: &Registry,
        key: usize,
        now: Instant,
        budget: usize,
        closed: &mut Vec<Closed>,
    ) {
        match self.read(key, now, budget) {
            Ok(spent) => {
                self.dirty.push(key);
                if spent && !self.again.contains(&key) {
                    self.again.push(key);
                }
            }
            Err(why) => {
                let Some(owner) = self.conns.get(key).map(|c| c.owner) else {
                    return;
                };
                debug!("local bus: loop {owner}'s connection closed: {why}");
                self.close(registry, key);
                closed.push(Closed { owner });
            }
        }
    }

    /// Sets the barriers the loops asked for (`core/barrier.rs`): every loop's connection is
    /// read to its end first, so what any loop wrote before the question, in particular a
    /// change it made before answering the client who now asks, is sent before the marker.
    fn set_barriers(&mut self, registry: &Registry, now: Instant, closed: &mut Vec<Closed>) {
        for round in 0..=DRAIN_ROUNDS {
            let asked = std::mem::take(&mut self.barriers);
            if asked.is_empty() {
                return;
            }
            if round < DRAIN_ROUNDS {
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.read_or_close(registry, key, now, DRAIN_BUDGET, closed);
                }
            }
            for (key, marker) in asked {
                self.mark(key, &marker);
            }
        }
    }

    /// Puts a barrier's marker on the subscriber connection of the loop that asked, behind
    /// every message sent it so far.
    fn mark(&mut self, key: usize, marker: &[u8]) {
        if let Some(owner) = self.conns.get(key).map(|c| c.owner) {
            let channel = self.barrier.clone();
            self.tell(owner, &channel, marker);
        }
    }

    /// A message for one loop only, on its subscriber connection (behind every message sent it
    /// so far).
    fn tell(&mut self, owner: usize, channel: &[u8], payload: &[u8]) {
        let broadcast = &self.broadcast;
        let sub = (self.conns.iter())
            .find(|(_, c)| c.owner == owner && c.subscribed.contains(broadcast))
            .map(|(k, _)| k);
        if let Some(sub) = sub {
            self.reply(sub, &message(channel, payload));
        }
    }

    /// `READER CLAIM|RELEASE user`: a loop opened or closed a user's FIFO (`readers.rs`); the
    /// loop that is to read it now hears so.
    fn reader_command(&mut self, key: usize, args: &[Vec<u8>]) -> Reply {
        let Some(owner) = self.conns.get(key).map(|c| c.owner) else {
            return Reply::Status(b"OK".to_vec());
        };
        let grant = match args {
            [_, op, user] if op.eq_ignore_ascii_case(b"CLAIM") => self.readers.claim(user, owner),
            [_, op, user] if op.eq_ignore_ascii_case(b"RELEASE") => {
                self.readers.release(user, owner)
            }
            _ => return Reply::Error("ERR usage: READER CLAIM|RELEASE user".into()),
        };
        if let (Some(to), Some(user)) = (grant, args.get(2)) {
            let channel = self.reader.clone();
            self.tell(to, &channel, user);
        }
        Reply::Status(b"OK".to_vec())
    }

    /// Reads what the connection sent, up to `budget` bytes, and runs its commands. Returns
    /// whether the budget ran out (bytes may be left).
    fn read(&mut self, key: usize, now: Instant, budget: usize) -> Result<bool, String> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut taken = 0;
        while taken < budget {
            let Some(c) = self.conns.get_mut(key) else {
                return Ok(false);
            };
            match c.stream.read(&mut chunk) {
                Ok(0) => return Err("end of stream".into()),
                Ok(n) => {
                    taken += n;
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    self.serve(key, now)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(true)
    }

    /// Runs every complete command in the connection's buffer.
    fn serve(&mut self, key: usize, now: Instant) -> Result<(), String> {
        let unix_secs = crate::time::unix_ms() / 1000;
        let mut start = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return Ok(());
            };
            let (command, used) = match c.decoder.decode(&c.rbuf[start..]) {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(e) => return Err(format!("protocol error: {e}")),
            };
            start += used;
            let Some(mut args) = arguments(command) else {
                return Err("a command that is not an array of strings".into());
            };
            if let Some(name) = args.first_mut() {
                name.make_ascii_uppercase();
            }
            self.command(key, &args, now, unix_secs);
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.rbuf.drain(..start);
        }
        Ok(())
    }

    fn command(&mut self, key: usize, args: &[Vec<u8>], now: Instant, unix_secs: u64) {
        let reply = match args.first().map(Vec::as_slice) {
            Some(b"PING") => self.ping(key),
            Some(b"SUBSCRIBE") => return self.subscribe(key, &args[1..]),
            // The bus's own command (`core/barrier.rs`): the marker follows once every loop
            // was read; with Redis behind, too, as it orders this machine's loops.
            Some(b"READER") => self.reader_command(key, args),
            Some(b"RELOADED") => {
                if let Some(c) = self.conns.get(key) {
                    self.reloaded.push(c.owner);
                }
                Reply::Status(b"OK".to_vec())
            }
            Some(b"BARRIER") => match args {
                [_, marker] => {
                    self.barriers.push((key, marker.clone()));
                    Reply::Status(b"OK".to_vec())
                }
                _ => Reply::Error("ERR wrong number of arguments for 'barrier' command".into()),
            },
            Some(b"PUBLISH") => match args {
                [_, channel, payload] => Reply::Integer(self.publish(channel, payload)),
                _ => Reply::Error("ERR wrong number of arguments for 'publish' command".into()),
            },
            _ if self.upstream.is_some() => return self.forward(key, args),
            _ => {
                let mut published = Vec::new();
                let reply = self.store.run(args, now, unix_secs, &mut published);
                for Publish { channel, payload } in published {
                    self.publish(&channel, &payload);
                }
                reply
            }
        };
        self.reply(key, &reply);
    }

    fn ping(&self, key: usize) -> Reply {
        match self.conns.get(key) {
            // A subscribed connection answers as Redis does in that mode.
            Some(c) if !c.subscribed.is_empty() => {
                Reply::Array(vec![Reply::Bulk(b"pong".to_vec()), Reply::Bulk(Vec::new())])
            }
            _ => Reply::Status(b"PONG".to_vec()),
        }
    }

    fn subscribe(&mut self, key: usize, channels: &[Vec<u8>]) {
        for channel in channels {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if !c.subscribed.contains(channel) {
                c.subscribed.push(channel.clone());
                self.channels.entry(channel.clone()).or_default().push(key);
            }
            let count = self.conns.get(key).map_or(0, |c| c.subscribed.len());
            let confirm = Reply::Array(vec![
                Reply::Bulk(b"subscribe".to_vec()),
                Reply::Bulk(channel.clone()),
                Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX)),
            ]);
            self.reply(key, &confirm);
            if *channel == self.notices && self.upstream.is_some() {
                // A loop that joins hears where Redis stands.
                let notice = message(channel, status(self.upstream_up));
                self.reply(key, &notice);
            }
        }
    }

    /// A command for Redis: its reply takes the connection's next slot, filled when it comes.
    fn forward(&mut self, key: usize, args: &[Vec<u8>]) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let slot = c.first_slot + c.replies.len() as u64;
        c.replies.push_back(None);
        if let Some(u) = self.upstream.as_mut() {
            u.forward(key, slot, args);
        }
    }

    /// Redis answered a forwarded command.
    fn fill(&mut self, key: usize, slot: u64, reply: Reply) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(at) = slot
            .checked_sub(c.first_slot)
            .and_then(|i| c.replies.get_mut(i as usize))
        else {
            return;
        };
        *at = Some(reply);
        self.release(key);
    }

    /// Writes the replies that are ready, in order.
    fn release(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        while let Some(Some(_)) = c.replies.front() {
            if let Some(Some(reply)) = c.replies.pop_front() {
                resp::encode_reply(&mut c.wbuf, &reply);
            }
            c.first_slot += 1;
        }
        self.dirty.push(key);
    }

    /// Writes a message to every subscriber of `channel` (the publishing loop's included, as
    /// Redis does), and to Redis when the process scales through it; returns how many loops.
    pub fn publish(&mut self, channel: &[u8], payload: &[u8]) -> i64 {
        // The loops' own channel (notices, console events) stays on this machine.
        if let Some(u) = self.upstream.as_mut().filter(|_| channel == self.broadcast) {
            u.publish(channel, payload);
        }
        self.fan_out(channel, payload)
    }

    /// Writes a message to every loop subscribed to `channel`.
    fn fan_out(&mut self, channel: &[u8], payload: &[u8]) -> i64 {
        let Some(subs) = self.channels.get(channel) else {
            return 0;
        };
        let mut head = Vec::with_capacity(32 + channel.len());
        head.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
        resp::encode_reply(&mut head, &Reply::Bulk(channel.to_vec()));
        let len = format!("${}\r\n", payload.len());
        for &key in subs {
            if let Some(c) = self.conns.get_mut(key) {
                c.wbuf.extend_from_slice(&head);
                c.wbuf.extend_from_slice(len.as_bytes());
                c.wbuf.extend_from_slice(payload);
                c.wbuf.extend_from_slice(b"\r\n");
                self.dirty.push(key);
            }
        }
        i64::try_from(subs.len()).unwrap_or(i64::MAX)
    }

    fn reply(&mut self, key: usize, reply: &Reply) {
        if let Some(c) = self.conns.get_mut(key) {
            c.replies.push_back(Some(reply.clone()));
        }
        self.release(key);
    }

    /// Writes what this turn queued; a loop that has let [`MAX_UNSENT`] pile up is cut off.
    /// Returns the loops whose connection closed.
    pub fn flush(&mut self, registry: &Registry) -> Vec<Closed> {
        let mut closed = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            let failed = match write_out(c) {
                Ok(()) if c.wbuf.len() > MAX_UNSENT => {
                    Some(format!("it left {} bytes unread", c.wbuf.len()))
                }
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failed {
                let owner = c.owner;
                warn!("local bus: cutting off loop {owner}: {why}");
                self.close(registry, key);
                closed.push(Closed { owner });
            }
        }
        closed
    }

    fn close(&mut self, registry: &Registry, key: usize) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        if let Some(u) = self.upstream.as_mut() {
            u.forget(key);
        }
        let _ = registry.deregister(&mut c.stream);
        // The loop is gone (its other connection goes too): the FIFOs it read, others read.
        let channel = self.reader.clone();
        for (user, to) in self.readers.forget(c.owner) {
            self.tell(to, &channel, &user);
        }
        for channel in c.subscribed {
            if let Some(subs) = self.channels.get_mut(&channel) {
                subs.retain(|&k| k != key);
                if subs.is_empty() {
                    self.channels.remove(&channel);
                }
            }
        }
    }
}

fn write_out(c: &mut BusConn) -> io::Result<()> {
    let mut done = 0;
    while done < c.wbuf.len() {
        match c.stream.write(&c.wbuf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.wbuf.drain(..done);
    Ok(())
}

/// A notice's text: whether Redis answers.
fn status(up: bool) -> &'static [u8] {
    if up { b"up" } else { b"down" }
}

/// A pushed message, as Redis sends one to a subscriber.
fn message(channel: &[u8], payload: &[u8]) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(b"message".to_vec()),
        Reply::Bulk(channel.to_vec()),
        Reply::Bulk(payload.to_vec()),
    ])
}

/// A command's arguments: an array of bulk strings.
fn arguments(command: Reply) -> Option<Vec<Vec<u8>>> {
    let Reply::Array(items) = command else {
        return None;
    };
    items
        .into_iter()
        .map(|item| match item {
            Reply::Bulk(b) => Some(b),
            _ => None,
        })
        .collect()
}
