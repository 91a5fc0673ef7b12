//! Non-blocking Redis link for multi-node scaling.
//!
//! Two TCP connections, both `mio::net::TcpStream`s registered in the
//! server's own `Poll` under tokens the server chooses:
//!
//! * the **subscriber** connection: `SUBSCRIBE`/`PSUBSCRIBE`, receives pushed
//!   messages ([`LinkEvent::Message`]);
//! * the **command** connection: `PUBLISH` and state commands, pipelined.
//!   Replies are matched FIFO to the `u64` tag given with each command and
//!   come back as [`LinkEvent::Reply`].
//!
//! No thread is ever started and no call blocks. A host name that is not an
//! IP literal is resolved again before every connection attempt, so a
//! failover to a new address is followed; the link asks its caller for the
//! addresses ([`LinkEvent::Resolve`]) and waits for [`RedisLink::resolved`],
//! because `getaddrinfo` blocks and must run outside the loop (the server
//! hands it to a forked worker).
//!
//! Life cycle: `new` (parse URL) → `start` (connect) → the server calls
//! `on_ready` for events on either token, `tick` at least every
//! [`RedisLink::poll_timeout`] (a few times a second is plenty), and `flush`
//! once per loop turn after it has queued publishes/commands (queued bytes are
//! written by `flush`, `on_ready` and `tick`; `flush` gathers everything a turn
//! queued into one `write`).
//!
//! Outage: when either connection fails the link goes *down*: one
//! [`LinkEvent::Down`] and one `warn!`, every command awaiting a reply gets
//! `Reply::Error("redis unavailable")`, unconfirmed publishes are counted as
//! dropped, and reconnection is tried with capped exponential backoff (with
//! jitter). While down, `publish` drops (counted) and `command` answers with
//! the same error at the next `on_ready`/`tick`. When both connections are
//! back, authenticated, on the right database and resubscribed, one
//! [`LinkEvent::Up`] and one `info!`: the caller reconciles its state then.
//!
//! While a connection attempt is in flight (state "connecting"), commands and
//! publishes are queued (bounded) behind the handshake; they fail as above if
//! the attempt fails.

mod conn;
mod replies;
mod stream;
mod types;
mod url;

pub use super::resp::Reply;
use super::resp::{self, Decoder, Limits};
use conn::{Conn, Expect, Which, tls_config};
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stream::Stream;
pub use types::{BusEnds, LinkError, LinkEvent, LinkOptions, LinkStats, LinkStatus};
pub use url::RedisUrl;

/// Error text of replies to commands that could not be sent or answered.
pub const UNAVAILABLE: &str = "redis unavailable";
/// Error text of replies to commands refused because the queue is full.
pub const QUEUE_FULL: &str = "redis queue full";

/// Channels/patterns per SUBSCRIBE command when resubscribing.
const SUBSCRIBE_CHUNK: usize = 256;
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per call before the link yields to the rest of the loop
/// (a flood of messages must not starve the clients); the rest is read at the next `tick`.
/// One chunk: a chunk of cluster messages is a few milliseconds of work for the core.
const READ_BUDGET: usize = READ_CHUNK;
/// Buffers larger than this are shrunk once empty.
const KEEP_CAPACITY: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Waiting for the caller to resolve the host name.
    Resolving {
        deadline: Instant,
    },
    Connecting {
        deadline: Instant,
    },
    Up,
    Backoff {
        retry_at: Instant,
    },
}

/// The Redis link. See the module documentation.
pub struct RedisLink {
    /// `rediss://`: the TLS client configuration shared by both connections.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    url: RedisUrl,
    opts: LinkOptions,
    sub: Conn,
    cmd: Conn,
    state: State,
    /// Connection attempts so far: picks among a host name's addresses.
    attempt: usize,
    backoff: Duration,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    /// Events produced outside `on_ready`/`tick`, or before the caller's
    /// vector was at hand; appended to it at the end of those calls.
    out: Vec<LinkEvent>,
    /// Sum of `Pending::size` on the command connection.
    queued_bytes: usize,
    /// A Down event was emitted and no Up since.
    reported_down: bool,
    since: Option<Instant>,
    last_error: Option<String>,
    stats: LinkStats,
    rng: u64,
}

impl RedisLink {
    /// Parse `url`; no I/O yet.
    pub fn new(url: &str, sub_token: Token, cmd_token: Token) -> Result<RedisLink, LinkError> {
        RedisLink::with_options(url, sub_token, cmd_token, LinkOptions::default())
    }

    pub fn with_options(
        url: &str,
        sub_token: Token,
        cmd_token: Token,
        opts: LinkOptions,
    ) -> Result<RedisLink, LinkError> {
        if sub_token == cmd_token {
            return Err(LinkError::SameToken);
        }
        let url = RedisUrl::parse(url)?;
        let now = Instant::now();
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let tls = if url.tls {
            Some(tls_config(opts.tls_ca_file.as_deref())?)
        } else {
            None
        };
        Ok(RedisLink {
            tls,
            sub: Conn::new(sub_token, opts.limits, now),
            cmd: Conn::new(cmd_token, opts.limits, now),
            backoff: opts.backoff_min,
            url,
            opts,
            state: State::Idle,
            attempt: 0,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            out: Vec::new(),
            queued_bytes: 0,
            reported_down: false,
            since: None,
            last_error: None,
            stats: LinkStats::default(),
            rng: seed | 1,
        })
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Begin connecting both sockets (non-blocking). Failures are reported as
    /// a `Down` event at the next `tick`.
    pub fn start(&mut self, registry: &Registry, now: Instant) {
        if self.state == State::Idle {
            self.begin_connect(registry, now);
        }
    }

    /// Close both connections and stop (e.g. on shutdown). Commands awaiting
    /// replies are answered with `UNAVAILABLE` at the next `tick`.
    pub fn shutdown(&mut self, registry: &Registry) {
        self.drop_conns(registry);
        self.state = State::Idle;
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    pub fn owns(&self, token: Token) -> bool {
        token == self.sub.token || token == self.cmd.token
    }

    pub fn dropped_publishes(&self) -> u64 {
        self.stats.dropped_publishes
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    pub fn status(&self) -> LinkStatus {
        let state = match self.state {
            State::Idle => "idle",
            State::Up => "up",
            State::Resolving { .. } | State::Connecting { .. } if !self.reported_down => {
                "connecting"
            }
            State::Resolving { .. } | State::Connecting { .. } | State::Backoff { .. } => "down",
        };
        LinkStatus {
            state,
            up: self.is_up(),
            since: self.since,
            last_error: self.last_error.clone(),
        }
    }

    /// Bytes of commands/publishes queued or awaiting replies.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// How long the server may sleep in `poll` before calling `tick`
    /// (`Some(ZERO)` when events or writes are waiting, `None`: no deadline).
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.out.is_empty()
            || self.sub.unsent()
            || self.cmd.unsent()
            || self.sub.more_to_read
            || self.cmd.more_to_read
        {
            return Some(Duration::ZERO);
        }
        let at = match self.state {
            State::Idle => return None,
            State::Resolving { deadline } | State::Connecting { deadline } => deadline,
            State::Backoff { retry_at } => retry_at,
            State::Up => [&self.sub, &self.cmd]
                .iter()
                .map(|c| match c.health_sent {
                    // Waiting for a PONG: the next deadline is its timeout.
                    Some(sent) => sent + self.opts.ping_timeout,
                    None => c.last_health + self.opts.ping_interval,
                })
                .min()
                .unwrap_or(now),
        };
        Some(at.saturating_duration_since(now))
    }

    /// Subscribe to `channel` now (if connected) and after every reconnect.
    pub fn subscribe(&mut self, channel: &[u8]) {
        if self.channels.insert(channel.to_vec()) && self.sub.stream.is_some() {
            self.sub.send(&[b"SUBSCRIBE", channel], None, 0);
        }
    }

    pub fn unsubscribe(&mut self, channel: &[u8]) {
        if self.channels.remove(channel) && self.sub.stream.is_some() {
            self.sub.send(&[b"UNSUBSCRIBE", channel], None, 0);
        }
    }

    pub fn psubscribe(&mut self, pattern: &[u8]) {
        if self.patterns.insert(pattern.to_vec()) && self.sub.stream.is_some() {
            self.sub.send(&[b"PSUBSCRIBE", pattern], None, 0);
        }
    }

    pub fn punsubscribe(&mut self, pattern: &[u8]) {
        if self.patterns.remove(pattern) && self.sub.stream.is_some() {
            self.sub.send(&[b"PUNSUBSCRIBE", pattern], None, 0);
        }
    }

    fn accepting(&self) -> bool {
        matches!(self.state, State::Up | State::Connecting { .. })
    }

    /// Queue a command; its reply comes back as `LinkEvent::Reply { tag, .. }`.
    /// Never blocks: when the link is down or the queue is full, the reply is
    /// an error (`UNAVAILABLE` / `QUEUE_FULL`) delivered at the next
    /// `on_ready`/`tick`.
    pub fn command(&mut self, tag: u64, args: &[&[u8]]) {
        let err = if !self.accepting() {
            UNAVAILABLE
        } else {
            let size = resp::encoded_command_len(args);
            if self.queued_bytes + size <= self.opts.max_queue_bytes {
                self.queued_bytes += size;
                self.cmd.send(args, Some(Expect::Tag(tag)), size);
                return;
            }
            self.stats.queue_overflows += 1;
            QUEUE_FULL
        };
        self.stats.failed_commands += 1;
        self.out.push(LinkEvent::Reply {
            tag,
            reply: Reply::Error(err.into()),
        });
    }

    /// Fire-and-forget PUBLISH. Dropped (and counted) while down or when the
    /// queue is full. Returns whether it was queued.
    pub fn publish(&mut self, channel: &[u8], payload: &[u8]) -> bool {
        if self.accepting() {
            let args: [&[u8]; 3] = [b"PUBLISH", channel, payload];
            let size = resp::encoded_command_len(&args);
            if self.queued_bytes + size <= self.opts.max_queue_bytes {
                self.queued_bytes += size;
                self.cmd.send(&args, Some(Expect::Publish), size);
                return true;
            }
            self.stats.queue_overflows += 1;
        }
        self.stats.dropped_publishes += 1;
        false
    }

    /// Write what was queued this loop turn (one `write` per connection).
    pub fn flush(&mut self, registry: &Registry, events: &mut Vec<LinkEvent>) {
        for which in [Which::Sub, Which::Cmd] {
            if let Err(reason) = self.conn_mut(which).write_out() {
                self.fail(
                    registry,
                    Instant::now(),
                    format!("{} connection: {reason}", which.name()),
                );
                break;
            }
        }
        events.append(&mut self.out);
    }

    /// Handle readiness of one of the link's tokens.
    pub fn on_ready(&mut self, registry: &Registry, token: Token, events: &mut Vec<LinkEvent>) {
        let which = if token == self.sub.token {
            Which::Sub
        } else if token == self.cmd.token {
            Which::Cmd
        } else {
            return;
        };
        if self.conn_mut(which).stream.is_some() {
            if let Err(reason) = self.service(which) {
                self.fail(
                    registry,
                    Instant::now(),
                    format!("{} connection: {reason}", which.name()),
                );
            } else if let Err(reason) = self.conn_mut(which).write_out() {
                self.fail(
                    registry,
                    Instant::now(),
                    format!("{} connection: {reason}", which.name()),
                );
            }
        }
        events.append(&mut self.out);
    }

    /// Timers: reconnect after backoff, connect/handshake timeout, health
    /// pings. Also delivers deferred events and writes queued bytes.
    pub fn tick(&mut self, registry: &Registry, now: Instant, events: &mut Vec<LinkEvent>) {
        for which in [Which::Sub, Which::Cmd] {
            let c = self.conn_mut(which);
            if c.more_to_read {
                let token = c.token;
                self.on_ready(registry, token, events);
            }
        }
        match self.state {
            State::Idle => {}
            State::Resolving { deadline } => {
                if now >= deadline {
                    let host = self.url.host.clone();
                    self.fail(registry, now, format!("resolving {host} timed out"));
                }
            }
            State::Backoff { retry_at } => {
                if now >= retry_at {
                    self.begin_connect(registry, now);
                }
            }
            State::Connecting { deadline } => {
                if now >= deadline {
                    let what = if self.sub.connected && self.cmd.connected {
                        "handshake"
                    } else {
                        "connect"
                    };
                    self.fail(
                        registry,
                        now,
                        format!("{what} timed out after {:?}", self.opts.connect_timeout),
                    );
                }
            }
            State::Up => self.health(registry, now),
        }
        self.flush(registry, events);
    }

    fn health(&mut self, registry: &Registry, now: Instant) {
        for which in [Which::Sub, Which::Cmd] {
            let interval = self.opts.ping_interval;
            let timeout = self.opts.ping_timeout;
            let c = self.conn_mut(which);
            if let Some(sent) = c.health_sent {
                if now.duration_since(sent) >= timeout {
                    let reason = format!(
                        "{} connection: no reply to PING within {timeout:?}",
                        which.name()
                    );
                    self.fail(registry, now, reason);
                    return;
                }
            } else if now.duration_since(c.last_health) >= interval {
                c.send(&[b"PING"], Some(Expect::Health), 0);
                c.health_sent = Some(now);
                c.last_health = now;
            }
        }
    }

    fn conn_mut(&mut self, which: Which) -> &mut Conn {
        match which {
            Which::Sub => &mut self.sub,
            Which::Cmd => &mut self.cmd,
        }
    }

    /// Starts a connection attempt: at once to an IP literal, otherwise after the caller has
    /// resolved the host name afresh (a failover to a new address is followed).
    fn begin_connect(&mut self, registry: &Registry, now: Instant) {
        match self.url.host.parse::<IpAddr>() {
            Ok(ip) => self.connect_to(registry, now, SocketAddr::new(ip, self.url.port)),
            Err(_) => {
                self.state = State::Resolving {
                    deadline: now + self.opts.connect_timeout,
                };
                self.out.push(LinkEvent::Resolve {
                    host: self.url.host.clone(),
                    port: self.url.port,
                });
            }
        }
    }

    /// The addresses of the host name asked for with [`LinkEvent::Resolve`], or why there are
    /// none. Answers that arrive after the attempt gave up are ignored.
    pub fn resolved(
        &mut self,
        registry: &Registry,
        now: Instant,
        result: Result<Vec<SocketAddr>, String>,
    ) {
        if !matches!(self.state, State::Resolving { .. }) {
            return;
        }
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                // Successive attempts go round the addresses.
                let addr = addrs[self.attempt % addrs.len()];
                self.attempt = self.attempt.wrapping_add(1);
                self.connect_to(registry, now, addr);
            }
            Ok(_) => {
                let reason = format!("{} resolves to no address", self.url.host);
                self.fail(registry, now, reason);
            }
            Err(reason) => self.fail(registry, now, reason),
        }
    }

    fn connect_to(&mut self, registry: &Registry, now: Instant, addr: SocketAddr) {
        debug!("redis link: connecting to {addr} ({})", self.url.redacted());
        for which in [Which::Sub, Which::Cmd] {
            let token = self.conn_mut(which).token;
            let made = match self.opts.bus.as_mut().and_then(|b| b.take(which)) {
                // SAFETY: the bus's descriptors were handed to this link alone (`LinkOptions`).
                Some(fd) => unsafe { Stream::from_socketpair(fd) },
                None => TcpStream::connect(addr).map(Stream::Tcp),
            };
            let mut stream = match made {
                Ok(s) => s,
                Err(e) => {
                    self.fail(registry, now, format!("connect to {addr} failed: {e}"));
                    return;
                }
            };
            if let Err(e) =
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                self.fail(registry, now, format!("cannot register redis socket: {e}"));
                return;
            }
            let session = match &self.tls {
                None => None,
                Some(config) => {
                    let made = rustls::pki_types::ServerName::try_from(self.url.host.clone())
                        .map_err(|e| format!("TLS server name {}: {e}", self.url.host))
                        .and_then(|name| {
                            rustls::ClientConnection::new(config.clone(), name)
                                .map_err(|e| format!("TLS session: {e}"))
                        });
                    match made {
                        Ok(session) => Some(Box::new(session)),
                        Err(reason) => {
                            self.fail(registry, now, reason);
                            return;
                        }
                    }
                }
            };
            let c = self.conn_mut(which);
            c.tls = session;
            c.stream = Some(stream);
            c.connected = false;
            c.handshaken = false;
            c.last_health = now;
            c.health_sent = None;
        }
        self.state = State::Connecting {
            deadline: now + self.opts.connect_timeout,
        };
        self.queue_handshake();
    }

    fn queue_handshake(&mut self) {
        let (user, pass) = (self.url.username.clone(), self.url.password.clone());
        for c in [&mut self.sub, &mut self.cmd] {
            match (&user, &pass) {
                (Some(u), Some(p)) => c.send(
                    &[b"AUTH", u.as_bytes(), p.as_bytes()],
                    Some(Expect::Auth),
                    0,
                ),
                (None, Some(p)) => c.send(&[b"AUTH", p.as_bytes()], Some(Expect::Auth), 0),
                _ => {}
            }
        }
        if self.url.db != 0 {
            let db = self.url.db.to_string();
            self.cmd
                .send(&[b"SELECT", db.as_bytes()], Some(Expect::Select), 0);
        }
        self.cmd.send(&[b"PING"], Some(Expect::Hello), 0);
        for (verb, set) in [
            (&b"SUBSCRIBE"[..], &self.channels),
            (&b"PSUBSCRIBE"[..], &self.patterns),
        ] {
            let all: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
            for chunk in all.chunks(SUBSCRIBE_CHUNK) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
                args.push(verb);
                args.extend_from_slice(chunk);
                resp::encode_command(&mut self.sub.wbuf, &args);
            }
        }
        // Its reply comes after every subscribe confirmation.
        self.sub.send(&[b"PING"], Some(Expect::Hello), 0);
    }

    /// Finish connecting, read and parse everything available.
    fn service(&mut self, which: Which) -> Result<(), String> {
        if !self.conn_mut(which).check_connected()? {
            return Ok(());
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut taken = 0usize;
        self.conn_mut(which).more_to_read = false;
        loop {
            if taken >= READ_BUDGET {
                // The rest waits for the next turn (`tick`), after the clients had theirs.
                self.stats.read_yields += 1;
                self.conn_mut(which).more_to_read = true;
                return Ok(());
            }
            let c = self.conn_mut(which);
            let Some(s) = c.stream.as_mut() else {
                return Ok(());
            };
            if let Some(tls) = c.tls.as_mut() {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => return Err("connection closed by redis".into()),
                    Ok(n) => {
                        taken += n;
                        c.rbuf.extend_from_slice(&chunk[..n]);
                        self.parse(which)?;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("TLS read failed: {e}")),
                }
                match tls.read_tls(s) {
                    Ok(0) => return Err("connection closed by redis".into()),
                    Ok(_) => {
                        if let Err(e) = tls.process_new_packets() {
                            let _ = tls.write_tls(s);
                            return Err(format!("TLS: {e}"));
                        }
                        // Handshake messages (and alerts) may need to go out now.
                        c.write_out()?;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read failed: {e}")),
                }
            }
            match s.read(&mut chunk) {
                Ok(0) => return Err("connection closed by redis".into()),
                Ok(n) => {
                    taken += n;
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    self.parse(which)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    fn check_up(&mut self) {
        let connecting = matches!(self.state, State::Connecting { .. });
        if !connecting || !self.sub.handshaken || !self.cmd.handshaken {
            return;
        }
        let now = Instant::now();
        if self.reported_down {
            let down_for = self
                .since
                .map(|s| now.duration_since(s))
                .unwrap_or_default();
            info!(
                "redis link up again ({}) after {down_for:.1?} down; cluster delivery resumed",
                self.url.redacted()
            );
        } else if self.opts.bus.is_some() {
            debug!("local bus link up");
        } else {
            info!("redis link up ({})", self.url.redacted());
        }
        self.state = State::Up;
        self.reported_down = false;
        self.since = Some(now);
        self.backoff = self.opts.backoff_min;
        self.stats.connects += 1;
        self.sub.last_health = now;
        self.cmd.last_health = now;
        self.out.push(LinkEvent::Up);
    }

    /// Close both connections; answer every awaited tag with UNAVAILABLE and
    /// count unconfirmed publishes as dropped.
    fn drop_conns(&mut self, registry: &Registry) {
        self.sub.close(registry);
        self.cmd.close(registry);
        self.sub.pending.clear();
        for p in self.cmd.pending.drain(..) {
            match p.expect {
                Expect::Tag(tag) => {
                    self.stats.failed_commands += 1;
                    self.out.push(LinkEvent::Reply {
                        tag,
                        reply: Reply::Error(UNAVAILABLE.into()),
                    });
                }
                Expect::Publish => self.stats.dropped_publishes += 1,
                _ => {}
            }
        }
        self.queued_bytes = 0;
    }

    fn fail(&mut self, registry: &Registry, now: Instant, reason: String) {
        self.stats.failed_attempts += 1;
        if !self.reported_down {
            warn!(
                "redis link down ({}): {reason}; serving local clients only, reconnecting",
                self.url.redacted()
            );
            self.reported_down = true;
            self.since = Some(now);
            self.stats.outages += 1;
            self.out.push(LinkEvent::Down {
                reason: reason.clone(),
            });
        } else {
            debug!("redis reconnect attempt failed: {reason}");
        }
        self.drop_conns(registry);
        self.last_error = Some(reason);
        let delay = self.jitter(self.backoff);
        self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
        self.state = State::Backoff {
            retry_at: now + delay,
        };
    }

    /// `d` scaled by a factor in [0.75, 1.25) so nodes do not reconnect in step.
    fn jitter(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let f = 0.75 + (self.rng % 1000) as f64 / 2000.0;
        d.mul_f64(f)
    }
}

#[cfg(test)]
mod tests;
