//! The loop's side of the Redis link: the connection itself (`scaling::redis`), the channel the
//! nodes publish on, what the core asked to send, and the host-name lookups it needs, which run
//! in a forked worker because `getaddrinfo` blocks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::info;
use mio::{Poll, Registry, Token};

use crate::config::Config;
use crate::core::{Core, LinkOp, LinkStatus};
use crate::job::{Handler, Job, Outcome};
use crate::scaling::redis::{BusEnds, LinkError, LinkEvent, LinkOptions, RedisLink};
use crate::scaling::resp::Reply;

/// The tag of barrier commands: their replies are the link's, not the core's (the marker that
/// matters comes on the subscriber connection).
const BARRIER_TAG: u64 = u64::MAX;
/// The tag of the link's own bus commands (users' FIFOs, reloads): their replies matter only
/// when they are errors.
const QUIET_TAG: u64 = u64::MAX - 1;

/// How long a resolver child may take (the link's own connect timeout also applies).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Link {
    redis: RedisLink,
    /// The channel the nodes publish on.
    channel: Vec<u8>,
    events: Vec<LinkEvent>,
    published: u64,
    /// The link is to the supervisor's local bus (`loops/bus.rs`), not to Redis.
    bus: bool,
    /// The bus connection broke: the supervisor is gone or cut this loop off.
    bus_lost: bool,
    /// On the bus: the channel the supervisor tells whether Redis answers on, and what it
    /// last said (a loop behind a bus without Redis hears nothing and stays up).
    notices: Vec<u8>,
    upstream_up: bool,
    /// On the bus: the channel its barriers' markers come on (`core/barrier.rs`).
    barrier: Vec<u8>,
    /// On the bus: the channel this loop hears on which users' FIFOs it reads, and the users
    /// it heard of since the loop last asked (`loops/readers.rs`).
    reader: Vec<u8>,
    granted: Vec<String>,
    /// The loop that reads the FIFO stopped (`stop:SIGNAL`): this one stops too, after what
    /// that one published before.
    stop: Option<i32>,
}

impl Link {
    /// The link, created and connecting, when scaling through Redis or, for one of several
    /// loops, through the supervisor's bus (`bus`: this loop's ends of its socketpairs).
    pub fn start(
        cfg: &Config,
        poll: &Poll,
        tokens: (Token, Token),
        bus: Option<BusEnds>,
    ) -> Result<Option<Link>, LinkError> {
        let (url, bus) = match (cfg.scaling.driver.as_str(), bus) {
            // The address is never dialled: the socketpairs are already connected.
            ("bus", Some(ends)) => ("redis://127.0.0.1:1/0", Some(ends)),
            ("redis", _) => (cfg.scaling.redis_url.as_str(), None),
            _ => return Ok(None),
        };
        let opts = LinkOptions {
            tls_ca_file: cfg.scaling.redis_ca_file.clone(),
            bus,
            ..Default::default()
        };
        let mut redis = RedisLink::with_options(url, tokens.0, tokens.1, opts)?;
        match bus {
            Some(_) => info!(
                "sharing channels with the other loops as {}",
                cfg.scaling.node_id
            ),
            None => info!(
                "scaling through Redis at {} as node {}",
                redis.url().redacted(),
                cfg.scaling.node_id
            ),
        }
        let channel = format!("{}#broadcast", cfg.scaling.prefix).into_bytes();
        redis.subscribe(&channel);
        let notices = format!("{}#bus", cfg.scaling.prefix).into_bytes();
        if bus.is_some() {
            redis.subscribe(&notices);
        }
        redis.start(poll.registry(), Instant::now());
        Ok(Some(Link {
            barrier: format!("{}#barrier", cfg.scaling.prefix).into_bytes(),
            reader: format!("{}#reader", cfg.scaling.prefix).into_bytes(),
            granted: Vec::new(),
            redis,
            channel,
            events: Vec::new(),
            published: 0,
            bus: bus.is_some(),
            bus_lost: false,
            notices,
            upstream_up: true,
            stop: None,
        }))
    }

    /// The signal the loop that reads the FIFO stopped on, once it said so.
    pub fn take_stop(&mut self) -> Option<i32> {
        self.stop.take()
    }

    /// Whether the link itself is up (to the bus: whatever Redis behind it does).
    pub fn connected(&self) -> bool {
        self.redis.is_up()
    }

    /// Whether this is the bus to the other loops of a process (not Redis).
    pub fn is_bus(&self) -> bool {
        self.bus
    }

    /// Whether the bus to the other loops broke: this loop cannot share channels any more and
    /// must end (the supervisor starts another).
    pub fn bus_lost(&self) -> bool {
        self.bus_lost
    }

    pub fn owns(&self, token: Token) -> bool {
        self.redis.owns(token)
    }

    pub fn on_ready(&mut self, registry: &Registry, token: Token) {
        self.redis.on_ready(registry, token, &mut self.events);
    }

    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.redis.poll_timeout(now)
    }

    pub fn status(&self) -> LinkStatus {
        LinkStatus {
            up: self.redis.is_up() && self.upstream_up,
            published: self.published,
            dropped_publishes: self.redis.dropped_publishes(),
            read_yields: self.redis.stats().read_yields,
        }
    }

    /// Timers and writes of the link, then what it received, to the core. Returns the host
    /// name to resolve when the link asks for one.
    pub fn serve(&mut self, registry: &Registry, core: &mut Core) -> Option<(String, u16)> {
        self.redis.tick(registry, Instant::now(), &mut self.events);
        self.redis.flush(registry, &mut self.events);
        let mut resolve = None;
        for event in std::mem::take(&mut self.events) {
            match event {
                LinkEvent::Message { channel, payload } if channel == self.channel => {
                    core.on_node_message(&payload);
                }
                LinkEvent::Message { channel, payload } if self.bus && channel == self.barrier => {
                    match std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|t| t.parse().ok())
                    {
                        Some(n) => core.on_barrier(n),
                        None => log::warn!("ignored a malformed barrier marker from the bus"),
                    }
                }
                LinkEvent::Message { channel, payload } if self.bus && channel == self.reader => {
                    self.granted
                        .push(String::from_utf8_lossy(&payload).into_owned());
                }
                LinkEvent::Reply {
                    tag: QUIET_TAG,
                    reply: Reply::Error(e),
                } => log::warn!("the local bus refused a command: {e}"),
                LinkEvent::Reply {
                    tag: BARRIER_TAG,
                    reply: Reply::Error(e),
                } => {
                    log::warn!("the local bus refused a barrier: {e}");
                    core.on_barrier_refused();
                }
                LinkEvent::Reply {
                    tag: QUIET_TAG | BARRIER_TAG,
                    ..
                } => {}
                // The supervisor's word on Redis: to this loop, its own link went up or down.
                LinkEvent::Message { channel, payload }
                    if self.bus
                        && channel == self.notices
                        && payload != b"up"
                        && payload != b"down" =>
                {
                    core.on_loops_message(&payload);
                }
                LinkEvent::Message { channel, payload } if self.bus && channel == self.notices => {
                    let up = payload == b"up";
                    if up != self.upstream_up {
                        self.upstream_up = up;
                        match up {
                            true => core.on_link_up(),
                            false => core.on_link_down(),
                        }
                    }
                }
                LinkEvent::Down { reason } if self.bus => {
                    log::error!("lost the local bus to the other loops: {reason}");
                    self.bus_lost = true;
                }
                LinkEvent::Down { .. } => core.on_link_down(),
                LinkEvent::Message { .. } => {}
                LinkEvent::Reply { tag, reply } => core.on_link_reply(tag, reply),
                LinkEvent::Up => core.on_link_up(),
                LinkEvent::Resolve { host, port } => resolve = Some((host, port)),
            }
        }
        resolve
    }

    /// What the core asked to send, written at once (a publication on a channel with history
    /// waits for Redis's answer to be delivered at all).
    pub fn apply(&mut self, registry: &Registry, ops: impl Iterator<Item = LinkOp>) {
        let mut any = false;
        for op in ops {
            match op {
                LinkOp::Publish(payload) => {
                    if self.redis.publish(&self.channel, &payload) {
                        self.published += 1;
                    }
                }
                LinkOp::Loops(payload) if self.bus => {
                    self.redis.publish(&self.notices, &payload);
                }
                LinkOp::Loops(_) => {}
                LinkOp::Barrier(n) if self.bus => {
                    let n = n.to_string();
                    self.redis.command(BARRIER_TAG, &[b"BARRIER", n.as_bytes()]);
                }
                LinkOp::Barrier(_) => {}
                LinkOp::Command { tag, args } => {
                    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    self.redis.command(tag, &args);
                }
            }
            any = true;
        }
        if any {
            self.redis.flush(registry, &mut self.events);
        }
    }

    /// On the bus: this loop opened (`claim`) or closed a user's FIFO; the bus says which loop
    /// reads it ([`Link::take_granted`]).
    pub fn reader(&mut self, registry: &Registry, user: &str, claim: bool) {
        let op: &[u8] = if claim { b"CLAIM" } else { b"RELEASE" };
        self.tell_bus(registry, &[b"READER", op, user.as_bytes()]);
    }

    /// On the bus: this loop's reload is complete (the supervisor tells systemd once every
    /// loop's is).
    pub fn reloaded(&mut self, registry: &Registry) {
        self.tell_bus(registry, &[b"RELOADED"]);
    }

    /// A command of the bus's own, written at once; its reply matters only when it is an error.
    fn tell_bus(&mut self, registry: &Registry, args: &[&[u8]]) {
        if self.bus {
            self.redis.command(QUIET_TAG, args);
            self.redis.flush(registry, &mut self.events);
        }
    }

    /// The users whose FIFO this loop reads from now on.
    pub fn take_granted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.granted)
    }

    /// The outcome of a resolver job (or why none ran).
    pub fn resolved(&mut self, registry: &Registry, result: Result<Vec<SocketAddr>, String>) {
        self.redis.resolved(registry, Instant::now(), result);
    }
}

/// The job that resolves a host name in a child (`ferrocast resolve`), so a slow or dead DNS
/// server delays the link, never the clients.
pub fn resolve_job(host: &str, port: u16) -> Job {
    Job {
        handler: Handler::Exec {
            argv: vec![
                "/proc/self/exe".into(),
                "resolve".into(),
                host.into(),
                port.to_string(),
            ],
        },
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        stdin: Vec::new(),
        deadline: RESOLVE_TIMEOUT,
        max_output: 64 * 1024,
    }
}

/// The addresses a `ferrocast resolve` child printed, one per line.
pub fn resolved_addresses(outcome: &Outcome) -> Result<Vec<SocketAddr>, String> {
    match outcome {
        Outcome::Exited {
            code: 0, stdout, ..
        } => {
            let addrs: Vec<SocketAddr> = String::from_utf8_lossy(stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if addrs.is_empty() {
                Err("no address".into())
            } else {
                Ok(addrs)
            }
        }
        Outcome::Exited { code, .. } => Err(format!("the resolver failed (exit {code})")),
        Outcome::Signaled { signal, .. } => Err(format!("the resolver died (signal {signal})")),
        Outcome::TimedOut => Err(format!("no answer within {}s", RESOLVE_TIMEOUT.as_secs())),
        Outcome::SpawnFailed(e) => Err(format!("cannot start the resolver: {e}")),
        Outcome::Answered { status, .. } => Err(format!("the resolver answered {status}")),
    }
}
