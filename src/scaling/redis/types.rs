//! What the link reports and how it is tuned.

use std::time::{Duration, Instant};

use super::Reply;
use super::resp::Limits;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("rediss:// TLS setup: {0}")]
    Tls(String),
    #[error("invalid redis url: {0}")]
    InvalidUrl(String),
    #[error("the subscriber and command connections need different tokens")]
    SameToken,
}

/// What the link reports to the server loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A message published on a subscribed channel (or one matching a pattern).
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// The reply to `command(tag, ..)`.
    Reply { tag: u64, reply: Reply },
    /// (Re)connected, authenticated, database selected and every channel and
    /// pattern resubscribed. Reconcile cluster state now.
    Up,
    /// The link went down (reported once per outage, not per attempt).
    Down { reason: String },
    /// Resolve this host name and call [`RedisLink::resolved`] with its addresses.
    Resolve { host: String, port: u16 },
}

/// Tunables; the defaults suit a production server.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Limit for TCP connect + AUTH/SELECT/SUBSCRIBE handshake.
    pub connect_timeout: Duration,
    /// A PING is sent on each idle-or-not connection this often while up...
    pub ping_interval: Duration,
    /// ...and the link is declared down if its reply takes longer than this.
    pub ping_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Bytes of commands/publishes queued or awaiting a reply, at most.
    pub max_queue_bytes: usize,
    /// Bounds on replies read from Redis.
    pub limits: Limits,
    /// Largest buffered, still incomplete reply.
    pub max_reply_bytes: usize,
    /// `rediss://`: a PEM file of CA certificates to trust, besides the system's bundle (for a
    /// Redis with a private CA).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The local bus of a process with several loops instead of a Redis server: the loop's
    /// ends of its two socketpairs, used once (`loops/bus.rs`).
    pub bus: Option<BusEnds>,
}

/// A loop's ends of the two socketpairs to the local bus (subscriber, commands).
#[derive(Debug, Clone, Copy)]
pub struct BusEnds {
    pub sub: Option<std::os::fd::RawFd>,
    pub cmd: Option<std::os::fd::RawFd>,
}

impl BusEnds {
    pub(super) fn take(&mut self, which: super::conn::Which) -> Option<std::os::fd::RawFd> {
        match which {
            super::conn::Which::Sub => self.sub.take(),
            super::conn::Which::Cmd => self.cmd.take(),
        }
    }
}

impl Default for LinkOptions {
    fn default() -> Self {
        let limits = Limits::default();
        LinkOptions {
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_queue_bytes: 32 << 20,
            limits,
            max_reply_bytes: limits.max_bulk + (1 << 20),
            tls_ca_file: None,
            bus: None,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Publishes dropped because the link was down, the queue was full, or
    /// the connection failed before Redis confirmed them.
    pub dropped_publishes: u64,
    /// Commands answered with `UNAVAILABLE` or `QUEUE_FULL` by the link.
    pub failed_commands: u64,
    /// Commands and publishes refused because the queue was full.
    pub queue_overflows: u64,
    /// Publishes Redis answered with an error.
    pub publish_errors: u64,
    pub messages_received: u64,
    /// Times the link came up (first connection included).
    pub connects: u64,
    /// Outages (up → down, or first connection failed).
    pub outages: u64,
    /// Failed connection attempts, first ones included.
    pub failed_attempts: u64,
    /// Times a connection used its read budget and yielded with more to read.
    pub read_yields: u64,
}

/// A snapshot for `/up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// "idle" (not started), "connecting", "up" or "down".
    pub state: &'static str,
    pub up: bool,
    /// Since when the link is up, or since when it is down.
    pub since: Option<Instant>,
    /// The reason of the current (or last) outage.
    pub last_error: Option<String>,
}
