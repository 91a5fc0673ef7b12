//! The poll loop: one `mio::Poll` on one thread owns every socket, the FIFO and the signals.
//!
//! Each turn: wait for readiness, handle every event (reading as much as is there, queueing what
//! must be written), then flush every connection that got output in one `writev` each, so a burst
//! of broadcasts costs one syscall per recipient rather than one per message.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use std::collections::HashMap;

use crate::channel_protocol as proto;
use crate::config::{Config, Sources};
use crate::conn::{Conn, Flushed, Mode, Phase};
use crate::core::hub::{ChannelId, Hub, Left, Subscribed};
use crate::fifo::Fifo;
use crate::http;
use crate::listener;
use crate::message::{self, Line};
use crate::pusher::Apps;
use crate::pusher::protocol as pp;
use crate::timers::{Entry, Wheel};
use crate::ws::{self, Frame, Inbound, MessageRef, Parsed, close};

const LISTENER: Token = Token(usize::MAX - 1);
const FIFO: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const REDIS_SUB: Token = Token(usize::MAX - 4);
const REDIS_CMD: Token = Token(usize::MAX - 5);

/// Reads per readiness event before a connection yields to the others.
const READ_BUDGET: usize = 16;
/// Accepts per turn before the loop serves the connections it has.
const ACCEPT_BUDGET: usize = 256;
/// How long a closing connection may linger waiting for the peer's EOF.
const LINGER_SECS: u32 = 3;
/// Pause after EMFILE/ENFILE before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
const SCRATCH_BYTES: usize = 64 * 1024;
/// FIFO bytes read per turn before the loop serves its clients again.
pub(crate) const FIFO_READ_BUDGET: usize = 2 * SCRATCH_BYTES;

/// How the loop ended.
pub enum Exit {
    Stopped,
    /// SIGUSR2: exec a fresh copy of ourselves that takes over these descriptors.
    Restart(Handoff),
}

/// What a restarting server passes to its successor: the listening socket (queued connections
/// included) and the FIFO (bytes written meanwhile included, lock still held).
pub struct Handoff {
    pub listener: std::os::fd::OwnedFd,
    pub fifo: std::os::fd::OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    #[error(transparent)]
    Fifo(#[from] crate::fifo::FifoError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("scaling: {0}")]
    Scaling(#[from] crate::scaling::redis::LinkError),
    #[error("cannot set up the event loop: {0}")]
    Poll(io::Error),
}

/// Counters for `/up` (and later `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub messages_in: u64,
    pub frames_out: u64,
    pub write_calls: u64,
    pub fifo_lines: u64,
    pub fifo_dropped: u64,
    /// Forked handler jobs started, refused (queue full) and failed (non-zero exit, signal,
    /// timeout, spawn error).
    pub workers_started: u64,
    pub workers_refused: u64,
    pub workers_failed: u64,
    pub slow_consumers: u64,
    /// Times a connection's input was paused because its output queue was past
    /// `outbound_pause_bytes`.
    pub output_pauses: u64,
    /// Turns the FIFOs yielded to the clients with lines still to read.
    pub fifo_yields: u64,
    /// Events published through the HTTP API (REST and /internal/broadcast).
    pub api_publishes: u64,
    pub client_events: u64,
    pub rate_limited: u64,
    /// REST responses by status.
    pub rest_calls: std::collections::BTreeMap<u16, u64>,
}

pub struct Server {
    pub(crate) poll: Poll,
    pub(crate) cfg: Config,
    pub(crate) sources: Sources,
    pub(crate) listener: Option<TcpListener>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) fifo: Fifo,
    pub(crate) signals: Signals,
    pub(crate) conns: Slab<Conn>,
    /// Open WebSocket sessions (for `max_connections`).
    pub(crate) sessions: usize,
    /// Channels, subscriptions, presence, cache channels and global listeners.
    pub(crate) hub: Hub,
    pub(crate) apps: Apps,
    pub(crate) timers: Wheel,
    pub(crate) fired: Vec<Entry>,
    pub(crate) started: Instant,
    pub(crate) now: u32,
    pub(crate) scratch: Vec<u8>,
    /// Connections with queued output, flushed at the end of the turn.
    pub(crate) dirty: Vec<usize>,
    /// Connections over their queue limit, closed at the end of the turn.
    pub(crate) overflowed: Vec<usize>,
    /// Connections that used their read budget and have more to read.
    pub(crate) read_again: Vec<usize>,
    /// The FIFO (and per-user FIFOs) used their read budget and have more to read.
    pub(crate) fifo_again: bool,
    pub(crate) user_fifos_again: Vec<Token>,
    pub(crate) accept_again: bool,
    pub(crate) accept_paused_until: Option<Instant>,
    pub(crate) emfile_logged: bool,
    pub(crate) next_conn_id: u64,
    /// First half of every socket id: distinguishes this process from others (and restarts).
    pub(crate) process_id: u32,
    pub(crate) shutdown_deadline: Option<Instant>,
    pub(crate) ping: Frame,
    pub(crate) webhooks: crate::pusher::webhooks::Webhooks,
    /// Webhook batches being sent by workers right now.
    pub(crate) webhook_jobs: usize,
    /// Forked handler processes and what each one is for.
    pub(crate) workers: crate::worker::Workers,
    pub(crate) jobs: HashMap<crate::worker::JobId, crate::jobs::JobFor>,
    pub(crate) finished_jobs: Vec<(crate::worker::JobId, crate::worker::Outcome)>,
    pub(crate) user_fifos: crate::jobs::UserFifos,
    /// Nodes the app rate limits are currently divided between.
    pub(crate) rate_share_nodes: usize,
    /// The Redis link to the other nodes (`scaling.driver: redis`).
    pub(crate) scaling: Option<crate::scaling::Scaling>,
    pub(crate) link_events: Vec<crate::scaling::redis::LinkEvent>,
    /// Connections of open debug consoles.
    pub(crate) consoles: Vec<usize>,
    pub(crate) console_sessions: crate::console::Sessions,
    /// The server second the once-a-second work last ran in.
    pub(crate) last_tick_second: u32,
    /// Stamp of the publish in progress, so a multi-channel message reaches a channel-protocol
    /// client once even when it listens on several of the channels.
    pub(crate) publish_stamp: u32,
    /// Open sessions per client address, kept only when `max_connections_per_ip` is set.
    pub(crate) per_ip: HashMap<std::net::IpAddr, u32>,
    /// Open connections per (app, user id): validated users and Pusher sign-ins.
    pub(crate) user_conns: HashMap<(usize, Box<str>), Vec<usize>>,

    /// The listener kept across a SIGUSR2 restart.
    pub(crate) restart_listener: Option<TcpListener>,
    /// Set when serving `wss://`; replaced on SIGHUP.
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub(crate) trusted_proxies: Vec<crate::proxy::Trusted>,
    /// Half of systemd's `WatchdogSec`, when it is set.
    pub(crate) watchdog_every: Option<Duration>,
    pub(crate) last_watchdog: Instant,
    pub(crate) stats: Stats,
}

impl Server {
    pub fn bind(sources: Sources, cfg: Config) -> Result<Server, StartError> {
        let poll = Poll::new().map_err(StartError::Poll)?;
        let apps = Apps::new(cfg.effective_apps());
        let mut scaling = match cfg.scaling.driver.as_str() {
            "redis" => Some(crate::scaling::Scaling::new(
                &cfg.scaling,
                REDIS_SUB,
                REDIS_CMD,
            )?),
            _ => None,
        };
        if let Some(s) = scaling.as_mut() {
            s.start(poll.registry());
        }
        let tls = match (&cfg.tls.cert, &cfg.tls.key) {
            (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
            _ => None,
        };
        let mut listener = match listener::activated()? {
            Some(l) => l,
            None => listener::bind(&cfg)?,
        };
        let local_addr = listener.local_addr().map_err(StartError::Poll)?;
        let fifo = open_fifo(&cfg)?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGCHLD]).map_err(StartError::Poll)?;
        let registry = poll.registry();
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(StartError::Poll)?;
        registry
            .register(&mut SourceFd(&fifo.raw_fd()), FIFO, Interest::READABLE)
            .map_err(StartError::Poll)?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let process_id = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 20)) as u32
            % 1_000_000_000;
        Ok(Server {
            poll,
            sources,
            listener: Some(listener),
            local_addr,
            fifo,
            signals,
            conns: Slab::new(),
            sessions: 0,
            hub: Hub::new(
                apps.len(),
                crate::core::cache::CacheStore::new(
                    cfg.max_cache_bytes,
                    Duration::from_secs(cfg.cache_ttl_secs),
                ),
            ),
            apps,
            timers: Wheel::new(0),
            fired: Vec::new(),
            started: Instant::now(),
            now: 0,
            scratch: vec![0; SCRATCH_BYTES],
            dirty: Vec::new(),
            overflowed: Vec::new(),
            read_again: Vec::new(),
            fifo_again: false,
            user_fifos_again: Vec::new(),
            accept_again: false,
            accept_paused_until: None,
            emfile_logged: false,
            next_conn_id: 1,
            process_id,
            shutdown_deadline: None,
            ping: ws::encode(ws::OP_PING, b"").into(),
            webhooks: Default::default(),
            webhook_jobs: 0,
            workers: crate::worker::Workers::new(
                cfg.max_workers,
                cfg.max_queued_jobs,
                crate::jobs::WORKER_TOKENS,
            ),
            jobs: HashMap::new(),
            finished_jobs: Vec::new(),
            user_fifos: Default::default(),
            rate_share_nodes: 1,
            scaling,
            link_events: Vec::new(),
            consoles: Vec::new(),
            console_sessions: Default::default(),
            last_tick_second: 0,
            publish_stamp: 0,
            per_ip: HashMap::new(),
            user_conns: HashMap::new(),

            restart_listener: None,
            tls,
            trusted_proxies: crate::proxy::parse_list(&cfg.trusted_proxies).unwrap_or_default(),
            watchdog_every: crate::systemd::watchdog_interval().map(|d| d / 2),
            last_watchdog: Instant::now(),
            stats: Stats::default(),
            cfg,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until SIGTERM/SIGINT and the shutdown drain finish.
    pub fn run(mut self) -> io::Result<Exit> {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        info!(
            "ferrocast {} listening on {scheme}://{}{}/, FIFO {}",
            env!("CARGO_PKG_VERSION"),
            self.local_addr,
            self.cfg.prefix(),
            self.fifo.path().display()
        );
        if let Err(e) = crate::systemd::ready(&format!("serving on {}", self.local_addr)) {
            warn!("cannot notify systemd: {e}");
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.started.elapsed().as_secs() as u32;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    FIFO => self.read_fifo(FIFO_READ_BUDGET),
                    SIGNALS => self.handle_signals(),
                    token if self.workers.owns(token) => {
                        self.workers
                            .on_ready(self.poll.registry(), token, &mut self.finished_jobs);
                    }
                    token if Server::owns_user_fifo(token) => self.read_user_fifo(token),
                    token if self.scaling.as_ref().is_some_and(|s| s.link.owns(token)) => {
                        if let Some(scaling) = self.scaling.as_mut() {
                            scaling.link.on_ready(
                                self.poll.registry(),
                                token,
                                &mut self.link_events,
                            );
                        }
                    }
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_conn(key);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            self.retry_deferred();
            if self.workers.running() > 0 {
                self.workers.expire(
                    self.poll.registry(),
                    Instant::now(),
                    &mut self.finished_jobs,
                );
            }
            if !self.finished_jobs.is_empty() {
                self.finish_jobs();
            }
            if self.webhooks.has_batches() {
                self.pump_webhooks();
            }
            self.tick();
            if let Some(scaling) = self.scaling.as_mut() {
                scaling
                    .link
                    .tick(self.poll.registry(), Instant::now(), &mut self.link_events);
                scaling
                    .link
                    .flush(self.poll.registry(), &mut self.link_events);
                self.deliver_from_other_nodes();
            }
            self.close_overflowed();
            self.flush_dirty();
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || Instant::now() >= deadline)
            {
                break;
            }
        }
        let left = self.conns.len();
        if left > 0 {
            warn!(
                "shutdown timeout reached with {left} connection(s) still flushing; closing them"
            );
        }
        self.workers.kill_all();
        self.remove_all_user_fifos();
        if let Some(listener) = self.restart_listener.take() {
            info!("restarting in place");
            let fifo = self.fifo.into_fd()?;
            let std_listener: std::net::TcpListener = listener.into();
            return Ok(Exit::Restart(Handoff {
                listener: std_listener.into(),
                fifo,
            }));
        }
        self.fifo.remove();
        info!("ferrocast stopped");
        Ok(Exit::Stopped)
    }

    fn poll_timeout(&self) -> Duration {
        if !self.read_again.is_empty()
            || self.accept_again
            || self.fifo_again
            || !self.user_fifos_again.is_empty()
        {
            return Duration::ZERO;
        }
        // Wake at the next second boundary for timers.
        let elapsed = self.started.elapsed();
        let mut timeout = Duration::from_secs(elapsed.as_secs() + 1) - elapsed;
        if let Some(until) = self.accept_paused_until {
            timeout = timeout.min(until.saturating_duration_since(Instant::now()));
        }
        if self.shutdown_deadline.is_some() {
            timeout = timeout.min(Duration::from_millis(100));
        }
        if self.webhooks.has_batches() {
            timeout = timeout.min(Duration::from_millis(20));
        }
        if let Some(deadline) = self.workers.next_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        if let Some(t) = self
            .scaling
            .as_ref()
            .and_then(|s| s.link.poll_timeout(Instant::now()))
        {
            timeout = timeout.min(t);
        }
        timeout
    }

    // ---- accepting -------------------------------------------------------------------------

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        self.accept_again = false;
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.add_conn(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_fd_exhaustion(&e) => {
                    // Retrying at once would spin: the pending connection stays in the backlog
                    // until a descriptor frees up.
                    if !self.emfile_logged {
                        warn!(
                            "cannot accept connections: {e}; pausing accepts (raise the open file limit, e.g. LimitNOFILE=)"
                        );
                        self.emfile_logged = true;
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // The peer gave up before we got to it; nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    error!("accept failed: {e}");
                    return;
                }
            }
        }
        self.accept_again = true;
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        // Small frames must leave at once: latency matters more than packet count here, and
        // batching happens in writev anyway.
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot register connection from {peer}: {e}");
            return;
        }
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let mut conn = Conn::new(stream, peer, id, self.now);
        if let Some(tls) = &self.tls {
            match rustls::ServerConnection::new(tls.clone()) {
                Ok(session) => conn.tls = Some(Box::new(session)),
                Err(e) => {
                    error!("cannot start TLS for {peer}: {e}");
                    return;
                }
            }
        }
        conn.timer_due =
            self.timers
                .schedule(key, id, self.now + self.cfg.handshake_timeout_secs as u32);
        entry.insert(conn);
        self.stats.connections_opened += 1;
        debug!("connection {key} from {peer}");
    }

    // ---- reading ---------------------------------------------------------------------------

    fn read_conn(&mut self, key: usize) {
        // What was read while the connection was paused is handled before anything new.
        if !self.handle_buffered(key) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if conn.paused {
                // Its replies wait to be taken: the flush that drains them resumes reading.
                break;
            }
            let n = match conn.read_plain(&mut scratch) {
                Ok(0) => {
                    self.close_now(key, "peer closed");
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("connection {key}: read error: {e}");
                    self.close_now(key, "read error");
                    break;
                }
            };
            conn.last_seen = self.now;
            match conn.phase {
                Phase::Request => {
                    conn.inbuf.extend_from_slice(&scratch[..n]);
                    self.handle_request(key);
                }
                Phase::Open => {
                    if conn.inbuf.is_empty() {
                        let used = self.handle_frames(key, &mut scratch[..n]);
                        self.keep_unconsumed(key, &scratch[used..n]);
                    } else {
                        conn.inbuf.extend_from_slice(&scratch[..n]);
                        self.handle_inbuf_frames(key);
                    }
                }
                // Frames sent right behind the handshake wait for the verdict, within reason.
                Phase::Validating => {
                    conn.inbuf.extend_from_slice(&scratch[..n]);
                    if conn.inbuf.len() > self.cfg.max_request_bytes + self.cfg.max_message_bytes {
                        self.close_now(key, "sent too much before the handshake completed");
                        break;
                    }
                }
                // Waiting for the peer's EOF: input is discarded.
                Phase::Closing => {}
            }
            if let Some(conn) = self.conns.get(key)
                && conn.tls_wants_write()
            {
                self.mark_dirty(key);
            }
            if n < scratch.len() && self.conns.get(key).is_some_and(|c| c.tls.is_none()) {
                // A short read means the socket is drained; skip the WouldBlock round trip.
                break;
            }
            if !self.conns.contains(key) {
                break;
            }
        }
        self.scratch = scratch;
        if let Some(conn) = self.conns.get(key)
            && conn.phase != Phase::Closing
            && !conn.paused
            && self.read_again.last() != Some(&key)
        {
            // The budget ran out with data possibly left (edge-triggered: no new event would
            // come); or we stopped on a short read, in which case the retry finds WouldBlock.
            if conn.inbuf.len() >= SCRATCH_BYTES {
                self.read_again.push(key);
            }
        }
    }

    /// Handles input kept in the connection's buffer (a paused connection's backlog). Returns
    /// whether reading may go on.
    fn handle_buffered(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        if conn.paused || conn.inbuf.is_empty() {
            return !conn.paused;
        }
        match conn.phase {
            Phase::Request => self.handle_request(key),
            Phase::Open => self.handle_inbuf_frames(key),
            Phase::Validating | Phase::Closing => {}
        }
        self.conns.get(key).is_some_and(|c| !c.paused)
    }

    /// Handles the complete frames at the front of the connection's buffer, keeping the rest.
    fn handle_inbuf_frames(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut buf = std::mem::take(&mut conn.inbuf);
        let used = self.handle_frames(key, &mut buf);
        buf.drain(..used);
        if let Some(conn) = self.conns.get_mut(key)
            && conn.phase == Phase::Open
        {
            conn.inbuf = buf;
            conn.trim_buffers();
        }
    }

    pub(crate) fn keep_unconsumed(&mut self, key: usize, rest: &[u8]) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.phase == Phase::Open
            && !rest.is_empty()
        {
            conn.inbuf.extend_from_slice(rest);
        }
    }

    fn retry_deferred(&mut self) {
        if self.accept_again {
            self.accept();
        }
        if self.fifo_again {
            self.read_fifo(FIFO_READ_BUDGET);
        }
        for token in std::mem::take(&mut self.user_fifos_again) {
            self.read_user_fifo(token);
        }
        for key in std::mem::take(&mut self.read_again) {
            self.read_conn(key);
        }
    }

    /// Parses frames from `buf`, handles every complete message; returns the bytes consumed.
    pub(crate) fn handle_frames(&mut self, key: usize, buf: &mut [u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return used;
            };
            if conn.phase != Phase::Open {
                return buf.len();
            }
            if self.pause_if_over(key) {
                return used;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return used;
            };
            let parsed = ws::parse_frame(
                &mut buf[used..],
                &mut conn.fragments,
                self.cfg.max_message_bytes,
            );
            let (consumed, message) = match parsed {
                Ok(Parsed::Incomplete) => return used,
                Ok(Parsed::Frame { consumed, message }) => (consumed, message),
                Err(v) => {
                    info!(
                        "connection {key} from {}: {} (close {})",
                        conn.peer, v.reason, v.code
                    );
                    self.close_with(key, v.code, v.reason);
                    return buf.len();
                }
            };
            let frame_start = used;
            used += consumed;
            let Some(msg) = message else { continue };
            let reassembled = match msg {
                MessageRef::Reassembled { .. } => conn.fragments.take(),
                MessageRef::InBuf { .. } => None,
            };
            let inbound = ws::view(&buf[frame_start..], reassembled.as_deref(), msg);
            match inbound {
                Ok(m) => self.on_message(key, m),
                Err(v) => {
                    info!("connection {key}: {} (close {})", v.reason, v.code);
                    self.close_with(key, v.code, v.reason);
                    return buf.len();
                }
            }
        }
    }

    fn on_message(&mut self, key: usize, msg: Inbound<'_>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match msg {
            Inbound::Ping(payload) => {
                let pong = ws::encode(ws::OP_PONG, payload).into();
                self.send_frame(key, pong);
            }
            Inbound::Pong => {}
            Inbound::Close(code, _reason) => {
                // Echo the peer's code, as RFC 6455 §5.5.1 suggests.
                let code = code.unwrap_or(close::NORMAL);
                self.close_with(key, code, "");
            }
            Inbound::Text(text) => {
                self.stats.messages_in += 1;
                match conn.mode {
                    Mode::Channel => self.on_channel_message(key, text),
                    Mode::Raw => self.on_raw_message(key, text),
                    Mode::Pusher => self.on_pusher_message(key, text),
                    Mode::Http | Mode::Console => {}
                }
            }
            Inbound::Binary(bytes) => {
                self.stats.messages_in += 1;
                match conn.mode {
                    Mode::Channel => {
                        self.reply(
                            key,
                            &proto::error("binary messages are not supported; send JSON text"),
                        );
                    }
                    Mode::Pusher => {
                        self.reply(key, &pp::error(None, "binary messages are not supported"))
                    }
                    _ => debug!(
                        "connection {key}: ignored a binary message of {} bytes",
                        bytes.len()
                    ),
                }
            }
        }
    }

    fn on_raw_message(&mut self, key: usize, text: &str) {
        if text == "ping" {
            // Answered here, as CarbonPHP does: no process for a keep-alive.
            self.reply(key, "pong");
        } else if self.cfg.route.enabled() {
            self.route_message(key, text);
        } else {
            debug!(
                "connection {key}: no application router configured; ignored a {}-byte message",
                text.len()
            );
        }
    }

    fn on_channel_message(&mut self, key: usize, text: &str) {
        let socket_id = match self.conns.get(key) {
            Some(c) => c.socket_id(self.process_id),
            None => return,
        };
        match proto::parse(text) {
            Ok(proto::Request::Subscribe(name)) => {
                if pp::channel_kind(&name) != pp::ChannelKind::Public {
                    // private-, presence- and encrypted channels carry what only authorized Pusher
                    // clients may see; the channel protocol has no way to authorize.
                    let msg = format!(
                        "\"{name}\" needs authorization: subscribe through the Pusher protocol at /app/{{key}}"
                    );
                    self.reply(key, &proto::error(&msg));
                    return;
                }
                if self.over_channel_limit(key, &name) {
                    let msg = format!(
                        "cannot subscribe to \"{name}\": already in max_channels_per_connection ({}) channels",
                        self.cfg.max_channels_per_connection
                    );
                    self.reply(key, &proto::error(&msg));
                    return;
                }
                self.join(key, &name);
                self.reply(key, &proto::subscribed(&name, &socket_id));
            }
            Ok(proto::Request::Unsubscribe(name)) => {
                self.leave_by_name(key, &name);
                self.reply(key, &proto::unsubscribed(&name));
            }
            Ok(proto::Request::Ping) => self.reply(key, &proto::pong(&socket_id)),
            Err(message) => self.reply(key, &proto::error(&message)),
        }
    }

    /// Whether subscribing to `name` would take the connection past `max_channels_per_connection`.
    pub(crate) fn over_channel_limit(&self, key: usize, name: &str) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        let already = self
            .hub
            .lookup(conn.app(), name)
            .is_some_and(|id| self.hub.is_subscribed(key, id));
        !already && self.hub.subscriptions(key) >= self.cfg.max_channels_per_connection
    }

    /// Adds the connection to a channel of its app; returns the channel and whether it was new
    /// for this connection.
    pub(crate) fn join(&mut self, key: usize, name: &str) -> Option<(ChannelId, bool)> {
        let conn = self.conns.get(key)?;
        let app = conn.app();
        let (id, created, count) = match self.hub.subscribe(key, name) {
            Subscribed::Already(id) => return Some((id, false)),
            Subscribed::New { id, created, count } => (id, created, count),
        };
        if self.webhooks_on(app) {
            if created {
                self.webhook_occupied(app, id, name);
            }
            self.webhook_count(app, name, count);
        }
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.channel_changed(app, name);
        }
        debug!("connection {key} subscribed to {name}");
        if !self.consoles.is_empty()
            && let Some(conn) = self.conns.get(key)
        {
            let socket_id = conn.socket_id(self.process_id);
            self.console_event("subscribed", Some(&socket_id), Some(name), None, None);
        }
        Some((id, true))
    }

    pub(crate) fn leave_by_name(&mut self, key: usize, name: &str) {
        if let Some(left) = self.hub.unsubscribe(key, name) {
            self.on_left(key, left);
        }
    }

    /// What a connection leaving a channel means for the others: presence, webhooks, the
    /// cluster and the console.
    pub(crate) fn on_left(&mut self, key: usize, left: Left) {
        let app = left.app;
        if !self.consoles.is_empty()
            && let Some(conn) = self.conns.get(key)
        {
            let socket_id = conn.socket_id(self.process_id);
            self.console_event(
                "unsubscribed",
                Some(&socket_id),
                Some(&left.channel),
                None,
                None,
            );
        }
        if let Some(user) = &left.member_removed {
            self.member_removed(app, &left.channel, user);
        }
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.channel_changed(app, &left.channel);
        }
        if self.webhooks_on(app) {
            if left.vacated() {
                self.webhook_vacated(app, &left.channel, left.occupied_at);
            } else {
                self.webhook_count(app, &left.channel, left.count);
            }
        }
    }

    /// A connection of `user` opened (validated, or signed in with Pusher).
    pub(crate) fn user_attached(&mut self, app: usize, user: &str, key: usize) {
        self.user_conns
            .entry((app, user.into()))
            .or_default()
            .push(key);
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.user_changed(app, user);
        }
    }

    /// A connection of `user` closed (or signed in as someone else).
    pub(crate) fn user_detached(&mut self, app: usize, user: &str, key: usize) {
        let index = (app, Box::<str>::from(user));
        if let Some(keys) = self.user_conns.get_mut(&index) {
            // A user's own connections: a handful, not the server's.
            if let Some(pos) = keys.iter().position(|&k| k == key) {
                keys.swap_remove(pos);
            }
            if keys.is_empty() {
                self.user_conns.remove(&index);
            }
        }
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.user_changed(app, user);
        }
    }

    /// Sends one text message to one connection.
    pub(crate) fn reply(&mut self, key: usize, text: &str) {
        self.send_frame(key, ws::text(text.as_bytes()));
    }

    /// Queues a frame for one open connection within its output bound, like any broadcast: a
    /// client that asks for replies faster than it reads them is a slow consumer too (and is
    /// paused long before that, see [`Server::pause_if_over`]).
    pub(crate) fn send_frame(&mut self, key: usize, frame: Frame) {
        let limit = self.cfg.outbound_queue_bytes;
        if let Some(conn) = self.conns.get_mut(key) {
            deliver(
                conn,
                key,
                &frame,
                limit,
                &mut self.dirty,
                &mut self.overflowed,
            );
        }
    }

    /// Stops handling a connection's input while its queue is past `outbound_pause_bytes`;
    /// returns whether it is paused. The flush that drains the queue resumes it.
    pub(crate) fn pause_if_over(&mut self, key: usize) -> bool {
        let (pause, _) = self.cfg.output_bounds();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if !conn.paused && conn.over(pause) {
            conn.paused = true;
            self.stats.output_pauses += 1;
            debug!(
                "connection {key}: {} bytes queued; not reading until it takes them",
                conn.queued_bytes()
            );
        }
        conn.paused
    }

    pub(crate) fn respond_and_close(&mut self, key: usize, bytes: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.push(bytes.into());
        self.begin_closing(key);
    }

    // ---- publishing ------------------------------------------------------------------------

    /// Reads and publishes FIFO lines, up to `budget` bytes: the rest waits for the next turn,
    /// so a flood of lines delays a client's reply by one budget's worth of work at most.
    fn read_fifo(&mut self, budget: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let max_line = self.cfg.max_fifo_line_bytes;
        let result = self
            .fifo
            .read_lines_within(&mut scratch, max_line, budget, |line| {
                lines.push(line.to_vec())
            });
        self.scratch = scratch;
        self.fifo_again = false;
        match result {
            Ok(stats) => {
                if stats.more {
                    self.fifo_again = true;
                    self.stats.fifo_yields += 1;
                }
                for len in &stats.dropped {
                    warn!(
                        "dropped a FIFO line of {len} bytes: over max_fifo_line_bytes ({})",
                        self.cfg.max_fifo_line_bytes
                    );
                }
                self.stats.fifo_dropped += stats.dropped.len() as u64;
            }
            Err(e) => error!("reading FIFO {}: {e}", self.fifo.path().display()),
        }
        for line in &lines {
            self.publish_line(line);
        }
    }

    fn publish_line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.stats.fifo_lines += 1;
        match message::parse_line(line) {
            Line::Global(bytes) => {
                let frame = ws::text(bytes);
                self.publish_global(&frame);
                if let Some(scaling) = self.scaling.as_mut() {
                    let line = String::from_utf8_lossy(bytes).into_owned();
                    scaling.send(None, crate::scaling::Body::Global { line });
                }
                self.console_event("publish", None, None, None, Some("fifo, to every client"));
            }
            Line::Publish(p) => {
                let app = match p.app.as_deref() {
                    None => 0,
                    Some(id) => match self.apps.by_id(id) {
                        Some(app) => app,
                        None => {
                            warn!("ignored a FIFO line for unknown app \"{id}\"");
                            return;
                        }
                    },
                };
                let event = p.event.as_deref().unwrap_or("message");
                let except = p.socket_id.as_deref();
                self.broadcast_event(app, &p.channels, event, &p.data, except, "fifo");
            }
            Line::Invalid(why) => {
                warn!("ignored a FIFO line: {why}");
            }
        }
    }

    /// Our connection id inside a socket id of this process ("<process>.<id>").
    pub(crate) fn parse_socket_id(&self, socket_id: &str) -> Option<u64> {
        let (process, id) = socket_id.split_once('.')?;
        if process.parse::<u32>().ok()? != self.process_id {
            return None;
        }
        id.parse().ok()
    }

    /// Publishes an event to one channel of an app. Each protocol's frame is encoded at most
    /// once (`plain` may be shared by the caller across channels: it does not name the channel)
    /// and the same bytes are queued to every subscriber but the connection `except`.
    pub(crate) fn publish(
        &mut self,
        app: usize,
        channel: &str,
        event: &str,
        data: &str,
        except: Option<u64>,
        plain: &mut Option<Frame>,
    ) {
        let mut pusher_frame: Option<Frame> = None;
        if pp::is_cache_channel(channel) {
            let frame = ws::text(pp::event(event, channel, data, None).as_bytes());
            self.hub
                .cache_mut()
                .insert(app as u16, channel, frame.clone(), Instant::now());
            pusher_frame = Some(frame);
        }
        let Some(ch) = self.hub.channel_named(app, channel) else {
            return;
        };
        let limit = self.cfg.outbound_queue_bytes;
        let mut delivered = 0u64;
        for key in ch.subscribers().iter().map(|s| s.key()) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if Some(conn.id) == except {
                continue;
            }
            let frame = match conn.mode {
                // Pusher events name their channel: one per channel is right.
                Mode::Pusher => pusher_frame.get_or_insert_with(|| {
                    ws::text(pp::event(event, channel, data, None).as_bytes())
                }),
                // The bare payload does not: send it once per publish.
                _ => {
                    if conn.publish_stamp == self.publish_stamp {
                        continue;
                    }
                    conn.publish_stamp = self.publish_stamp;
                    plain.get_or_insert_with(|| ws::text(data.as_bytes()))
                }
            };
            delivered += deliver(
                conn,
                key,
                frame,
                limit,
                &mut self.dirty,
                &mut self.overflowed,
            ) as u64;
        }
        self.stats.frames_out += delivered;
    }

    /// Queues `frame` to every subscriber of a channel but `except` (client events, member
    /// events: frames already in their final form).
    pub(crate) fn publish_frame(
        &mut self,
        app: usize,
        id: ChannelId,
        frame: &Frame,
        except: Option<usize>,
    ) {
        let Some(ch) = self.hub.channel(app, id) else {
            return;
        };
        let limit = self.cfg.outbound_queue_bytes;
        let mut delivered = 0u64;
        for key in ch.subscribers().iter().map(|s| s.key()) {
            if Some(key) == except {
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            delivered += deliver(
                conn,
                key,
                frame,
                limit,
                &mut self.dirty,
                &mut self.overflowed,
            ) as u64;
        }
        self.stats.frames_out += delivered;
    }

    /// Queues `frame` to every raw-mode and channel-mode session (CarbonPHP's global pipe).
    pub(crate) fn publish_global(&mut self, frame: &Frame) {
        let limit = self.cfg.outbound_queue_bytes;
        let mut delivered = 0u64;
        for key in self.hub.global() {
            if let Some(conn) = self.conns.get_mut(key) {
                delivered += deliver(
                    conn,
                    key,
                    frame,
                    limit,
                    &mut self.dirty,
                    &mut self.overflowed,
                ) as u64;
            }
        }
        self.stats.frames_out += delivered;
    }

    // ---- writing ---------------------------------------------------------------------------

    pub(crate) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    fn flush_dirty(&mut self) {
        let (pause, _) = self.cfg.output_bounds();
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            match conn.flush() {
                Ok((state, calls)) => {
                    self.stats.write_calls += calls as u64;
                    if conn.paused && !conn.over(pause) {
                        conn.paused = false;
                        // Its backlog, then the socket, at the start of the next turn.
                        self.read_again.push(key);
                    }
                    if state == Flushed::All && conn.phase == Phase::Closing && !conn.write_shut {
                        // Our side is done: FIN tells the peer, and we wait for its EOF so the
                        // kernel does not reset the connection over unread input.
                        match conn.finish_write() {
                            Ok(true) => {
                                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                                conn.write_shut = true;
                            }
                            Ok(false) => {}
                            Err(_) => {
                                self.close_now(key, "write error");
                                continue;
                            }
                        }
                    }
                }
                Err(e) => {
                    debug!("connection {key}: write error: {e}");
                    self.close_now(key, "write error");
                }
            }
        }
        // Keep the allocation for the next turn.
        self.dirty = dirty;
    }

    fn close_overflowed(&mut self) {
        for key in std::mem::take(&mut self.overflowed) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            self.stats.slow_consumers += 1;
            warn!(
                "closing connection {key} from {}: slow consumer, over outbound_queue_bytes ({} queued)",
                conn.peer,
                conn.queued_bytes()
            );
            conn.discard_queue();
            let detail = format!(
                "slow consumer {} closed (over outbound_queue_bytes)",
                conn.peer
            );
            self.close_with(key, close::POLICY, "slow consumer");
            self.console_event("error", None, None, None, Some(&detail));
        }
    }

    // ---- closing ---------------------------------------------------------------------------

    /// Sends a close frame and lingers until the peer closes (or the linger time passes).
    pub(crate) fn close_with(&mut self, key: usize, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        conn.push(ws::close_frame(code, reason));
        self.begin_closing(key);
    }

    pub(crate) fn begin_closing(&mut self, key: usize) {
        self.release(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.phase = Phase::Closing;
        conn.inbuf = Vec::new();
        conn.fragments = None;
        conn.timer_due = self.timers.schedule(key, conn.id, self.now + LINGER_SECS);
        self.mark_dirty(key);
    }

    /// Ends a session's membership in everything: channels, presence, app counts. Idempotent.
    fn release(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Open && conn.mode == Mode::Console {
            self.consoles.retain(|&k| k != key);
        } else if conn.phase == Phase::Open {
            if !self.consoles.is_empty() {
                let socket_id = conn.socket_id(self.process_id);
                self.console_event("connection_closed", Some(&socket_id), None, None, None);
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            self.sessions -= 1;
            if self.cfg.max_connections_per_ip > 0 {
                let ip = conn.peer.ip();
                if let Some(n) = self.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
            }
            if let Some(p) = &conn.pusher {
                let (app, user) = (p.app as usize, p.user_id.clone());
                let counts = self.apps.get_mut(app);
                counts.connections = counts.connections.saturating_sub(1);
                if let Some(user) = user {
                    self.user_detached(app, &user, key);
                }
            }
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Open
            && let Some(user) = conn.user.take()
        {
            let app = conn.app();
            self.user_detached(app, &user, key);
            self.drop_user_conn(&user, key);
        }
        for left in self.hub.detach(key) {
            self.on_left(key, left);
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.pusher = None;
            if conn.phase == Phase::Open {
                conn.phase = Phase::Closing;
            }
        }
    }

    /// Drops the connection at once.
    pub(crate) fn close_now(&mut self, key: usize, why: &str) {
        if !self.conns.contains(key) {
            return;
        }
        self.release(key);
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.stats.connections_closed += 1;
        debug!("connection {key} from {} closed: {why}", conn.peer);
        // A descriptor came free: if accepts were paused for lack of them, try again now.
        if self.accept_paused_until.is_some() {
            self.accept_paused_until = Some(Instant::now());
        }
    }

    // ---- time ------------------------------------------------------------------------------

    fn tick(&mut self) {
        if let Some(interval) = self.watchdog_every
            && self.last_watchdog.elapsed() >= interval
        {
            let _ = crate::systemd::watchdog();
            self.last_watchdog = Instant::now();
        }
        if let Some(until) = self.accept_paused_until
            && Instant::now() >= until
        {
            self.accept_paused_until = None;
            self.accept();
            if self.accept_paused_until.is_none() && self.emfile_logged {
                info!("accepting connections again");
                self.emfile_logged = false;
            }
        }
        if self.now == self.last_tick_second {
            return;
        }
        self.last_tick_second = self.now;
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.advance(self.now, &mut fired);
        for entry in fired.drain(..) {
            self.on_timer(entry);
        }
        self.fired = fired;
        self.check_fifo();
        self.hub.cache_mut().expire(Instant::now());
        self.console_stats();
        self.scaling_tick();
    }

    fn on_timer(&mut self, entry: Entry) {
        let Some(conn) = self.conns.get_mut(entry.key) else {
            return;
        };
        if conn.id != entry.id || conn.timer_due != entry.due {
            return;
        }
        let key = entry.key;
        match conn.phase {
            Phase::Request => {
                debug!(
                    "connection {key} from {}: no complete request in time",
                    conn.peer
                );
                if conn.inbuf.is_empty() {
                    self.close_now(key, "handshake timeout");
                } else {
                    self.respond_and_close(
                        key,
                        http::response(
                            408,
                            &[],
                            &http::error_body("request not completed in time"),
                        ),
                    );
                }
            }
            Phase::Open => {
                if self.check_signin(key) {
                    return;
                }
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let idle = self.now.saturating_sub(conn.last_seen);
                let ping_every = self.cfg.ping_interval_secs as u32;
                let timeout = self.cfg.activity_timeout_secs as u32;
                let pusher = conn.mode == Mode::Pusher;
                if idle >= timeout {
                    info!(
                        "connection {key} from {}: no activity for {idle}s; closing",
                        conn.peer
                    );
                    if pusher {
                        // pusher-js reconnects on 4200-4299.
                        self.reply(
                            key,
                            &pp::error(
                                Some(pp::code::PONG_NOT_RECEIVED),
                                "Pong reply not received",
                            ),
                        );
                        self.close_with(
                            key,
                            pp::code::PONG_NOT_RECEIVED,
                            "Pong reply not received",
                        );
                    } else {
                        self.close_with(key, close::NORMAL, "activity timeout");
                    }
                    return;
                }
                let last_seen = conn.last_seen;
                let next = if idle >= ping_every {
                    if pusher {
                        conn.push(ws::text(pp::ping().as_bytes()));
                    } else {
                        conn.push(self.ping.clone());
                    }
                    self.mark_dirty(key);
                    (self.now + ping_every).min(last_seen + timeout)
                } else {
                    last_seen + ping_every
                };
                if let Some(conn) = self.conns.get_mut(key) {
                    let signin = conn
                        .pusher
                        .as_ref()
                        .and_then(|p| p.signin_deadline)
                        .unwrap_or(u32::MAX);
                    conn.timer_due = self.timers.schedule(key, conn.id, next.min(signin));
                }
            }
            Phase::Closing => self.close_now(key, "closed"),
            // The validation job's own deadline decides.
            Phase::Validating => {}
        }
    }

    /// Re-creates the FIFO if someone deleted or replaced it.
    fn check_fifo(&mut self) {
        if !self.fifo.is_detached() {
            return;
        }
        match self.fifo.reopen() {
            Ok(new) => {
                // Deliver what the old one still holds, then switch.
                self.read_fifo(usize::MAX);
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&self.fifo.raw_fd()));
                if let Err(e) = self.poll.registry().register(
                    &mut SourceFd(&new.raw_fd()),
                    FIFO,
                    Interest::READABLE,
                ) {
                    error!("cannot watch the re-created FIFO: {e}");
                }
                self.fifo = new;
                warn!(
                    "FIFO {} was removed or replaced; re-created it",
                    self.fifo.path().display()
                );
            }
            Err(e) => error!(
                "FIFO {} is gone and cannot be re-created: {e}",
                self.fifo.path().display()
            ),
        }
    }

    // ---- signals ---------------------------------------------------------------------------

    fn handle_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT | SIGUSR2 => self.begin_shutdown(signal),
                SIGHUP => self.reload(),
                SIGCHLD => self
                    .workers
                    .reap(self.poll.registry(), &mut self.finished_jobs),
                _ => {}
            }
        }
    }

    fn begin_shutdown(&mut self, signal: i32) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let (name, code, reason) = match signal {
            SIGINT => ("SIGINT", close::GOING_AWAY, "server shutting down"),
            // Restart: browsers reconnect at once on 1012, and the new process is already
            // listening on the same socket by then.
            SIGUSR2 => ("SIGUSR2 (restart)", close::RESTART, "server restarting"),
            _ => ("SIGTERM", close::GOING_AWAY, "server shutting down"),
        };
        info!("received {name}; closing {} connection(s)", self.sessions);
        // systemd shows "deactivating" from here, not after the drain.
        let _ = crate::systemd::stopping();
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            if signal == SIGUSR2 {
                // Kept open: connections arriving meanwhile wait in its backlog for the new
                // process.
                self.restart_listener = Some(listener);
            }
        }
        if let Some(scaling) = self.scaling.as_mut() {
            scaling.leave_cluster();
        }
        // Whatever scripts wrote before the signal is delivered before the goodbye.
        self.read_fifo(usize::MAX);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns[key].phase {
                Phase::Open => self.close_with(key, code, reason),
                Phase::Request | Phase::Validating => self.close_now(key, "shutdown"),
                Phase::Closing => {}
            }
        }
        self.shutdown_deadline =
            Some(Instant::now() + Duration::from_secs(self.cfg.shutdown_timeout_secs));
    }

    fn reload(&mut self) {
        let _ = crate::systemd::reloading();
        self.reload_config();
        let _ = crate::systemd::ready("configuration reloaded");
    }

    fn reload_config(&mut self) {
        match self.sources.load() {
            Ok(new) => {
                for what in self.cfg.restart_only_changes(&new) {
                    warn!(
                        "configuration reload: {what} changed but needs a restart to take effect"
                    );
                }
                if let Err(e) = self.apps.reload(new.effective_apps()) {
                    warn!("configuration reload: {e}; app settings were not changed");
                }
                // A disabled app's cached events are not served again: forget them now.
                for app in 0..self.apps.len() {
                    if !self.apps.get(app).cfg.enabled {
                        self.hub.cache_mut().forget_app(app as u16);
                    }
                }
                self.hub
                    .cache_mut()
                    .set_limits(new.max_cache_bytes, Duration::from_secs(new.cache_ttl_secs));
                self.trusted_proxies =
                    crate::proxy::parse_list(&new.trusted_proxies).unwrap_or_default();
                match (&new.tls.cert, &new.tls.key, self.tls.is_some()) {
                    (Some(cert), Some(key), true) => match crate::tls::load(cert, key) {
                        Ok(config) => {
                            self.tls = Some(config);
                            info!("TLS certificate reloaded from {}", cert.display());
                        }
                        Err(e) => error!("TLS reload failed, keeping the current certificate: {e}"),
                    },
                    (_, _, had) if had != new.tls.cert.is_some() => {
                        warn!("configuration reload: turning TLS on or off needs a restart");
                    }
                    _ => {}
                }
                // Settings fixed at start keep their running values, so what the server reports
                // (`ferrocast config`, /up) is what is in force.
                let old = std::mem::replace(&mut self.cfg, new);
                self.cfg.host = old.host;
                self.cfg.port = old.port;
                self.cfg.auto_port = old.auto_port;
                self.cfg.path = old.path;
                self.cfg.fifo = old.fifo;
                self.cfg.fifo_mode = old.fifo_mode;
                self.cfg.max_workers = old.max_workers;
                self.cfg.max_queued_jobs = old.max_queued_jobs;
                self.cfg.scaling = old.scaling;
                info!("configuration reloaded");
            }
            Err(e) => error!("configuration reload failed, keeping the running configuration: {e}"),
        }
    }
}

/// Queues a broadcast frame to one recipient, noting it for the end-of-turn flush or, when it is
/// over its limit, for closing.
pub(crate) fn deliver(
    conn: &mut Conn,
    key: usize,
    frame: &Frame,
    limit: usize,
    dirty: &mut Vec<usize>,
    overflowed: &mut Vec<usize>,
) -> bool {
    if conn.overflowed || conn.phase != Phase::Open {
        return false;
    }
    if !conn.enqueue(frame, limit) {
        // The limit is on what the client has not taken: let the kernel take what it will
        // before judging. A reading client drains here; a stalled one stays full.
        let _ = conn.flush();
        if !conn.enqueue(frame, limit) {
            conn.overflowed = true;
            overflowed.push(key);
            return false;
        }
    }
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
    true
}

/// Opens the FIFO, or takes over the one a restarting predecessor handed on.
fn open_fifo(cfg: &Config) -> Result<Fifo, crate::fifo::FifoError> {
    let mode = cfg.fifo_mode_bits().unwrap_or(0o660);
    let handed = std::env::var("FERROCAST_FIFO_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    if let Some(raw) = handed {
        // SAFETY: the variable is removed at once and only ever set by our own restart, which
        // leaves this descriptor open for us; the process has no other thread.
        unsafe { std::env::remove_var("FERROCAST_FIFO_FD") };
        if nix::fcntl::fcntl(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_ok()
        {
            // SAFETY: checked open above; nothing else in this process refers to it.
            let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
            return Fifo::adopt(&cfg.fifo, mode, fd);
        }
    }
    Fifo::open(&cfg.fifo, mode)
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
