//! The loop: one `mio::Poll` on one thread owns every socket, the FIFOs, the forked workers,
//! the Redis link and the signals. It knows no protocol. Each turn it waits for readiness,
//! reads what arrived and hands it to the core (`core::Core`), lets time pass, applies what the
//! core asked for (drop sockets, start jobs, talk to Redis, open per-user FIFOs), and writes
//! what the core queued: one `writev` per connection per turn.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::broadcast_fifo::Reader;
use crate::config::{Config, Sources};
use crate::core::{self, Core, Effects, UserFifo};
use crate::fifo::Fifo;
use crate::job::Outcome;
use crate::link::Link;
use crate::loops::Place;
use crate::socket::{Flushed, Socket};
use crate::user_fifos::UserFifos;
use crate::worker::{self, Workers};
use crate::{identity, listener, time};

mod lifecycle;
mod siblings;

const LISTENER: Token = Token(usize::MAX - 1);
const FIFO: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const REDIS_SUB: Token = Token(usize::MAX - 4);
const REDIS_CMD: Token = Token(usize::MAX - 5);
/// First token of the worker range ([`worker::TOKEN_SPAN`] tokens).
const WORKER_TOKENS: usize = 1 << 40;
/// First token of the per-user FIFOs.
const USER_FIFO_TOKENS: usize = 1 << 39;

/// Reads per readiness event before a connection yields to the others.
const READ_BUDGET: usize = 16;
/// Accepts per turn before the loop serves the connections it has.
const ACCEPT_BUDGET: usize = 256;
/// Pause after EMFILE/ENFILE before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
/// How often a supervisor's loop pins its numbers for the others: how old a sibling's part of
/// `/metrics` may be.
const BOARD_EVERY: Duration = Duration::from_millis(100);
/// The shortest time between two pins of a busy loop.
const BOARD_MIN: Duration = Duration::from_millis(2);
const SCRATCH_BYTES: usize = 64 * 1024;
/// FIFO bytes read per turn before the loop serves its clients again.
const FIFO_READ_BUDGET: usize = 2 * SCRATCH_BYTES;

/// What a server starts with besides its configuration.
pub struct Prepared {
    pub listener: TcpListener,
    pub fifo: Reader,
    pub place: Option<Place>,
}

/// How the loop ended.
pub enum Exit {
    Stopped,
    /// SIGUSR2: exec a fresh copy of ourselves that takes over these descriptors.
    Restart(Handoff),
    /// One of a supervisor's loops stopped for a restart, with the channel history when it is
    /// the loop that hands it on (the supervisor keeps the listener and the FIFO).
    LoopRestart(Option<Vec<u8>>),
}

/// What a restarting server passes to its successor: the listening socket (queued connections
/// included) and the FIFO (bytes written meanwhile included, lock still held).
pub struct Handoff {
    pub listener: std::os::fd::OwnedFd,
    pub fifo: std::os::fd::OwnedFd,
    /// Channel history, for the next process to take over (`FERROCAST_HISTORY_FD`).
    pub history: Vec<u8>,
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

/// Why a worker runs, on the loop's side.
enum Purpose {
    /// A job the core asked for.
    Core(core::JobId),
    /// The Redis host name, resolved in a child (`getaddrinfo` blocks).
    Resolve,
}

/// What the current turn left for its end, and the counters only the loop sees.
#[derive(Default)]
struct Turn {
    /// Connections to flush besides those the core queued for (writable, TLS records).
    writable: Vec<usize>,
    /// Swap buffer for the core's dirty list.
    dirty: Vec<usize>,
    /// Swap buffer for the core's effects.
    effects: Effects,
    /// Connections that used their read budget (or resumed) and have more to read.
    read_again: Vec<usize>,
    accept_again: bool,
    fifo_again: bool,
    user_fifos_again: Vec<Token>,
    /// The once-a-second work last ran in this second.
    last_second: u64,
    write_calls: u64,
    fifo_yields: u64,
    fifo_dropped: u64,
}

pub struct Server {
    poll: Poll,
    sources: Sources,
    core: Core,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    sockets: Slab<Socket>,
    fifo: Reader,
    /// Set when a supervisor forked this loop (`loops`).
    place: Option<Place>,
    user_fifos: UserFifos,
    signals: Signals,
    workers: Workers,
    purposes: HashMap<worker::JobId, Purpose>,
    finished: Vec<(worker::JobId, Outcome)>,
    link: Option<Link>,
    scratch: Vec<u8>,
    turn: Turn,
    accept_paused_until: Option<Instant>,
    emfile_logged: bool,
    shutdown_deadline: Option<Instant>,
    /// The listener kept across a SIGUSR2 restart.
    restart_listener: Option<TcpListener>,
    /// When this loop last pinned its numbers on the board of a supervisor's loops.
    pinned_at: Instant,
    /// When this server was made (a loop's patience for its siblings).
    started: Instant,
    /// A turn did something since the last pin.
    unpinned: bool,
    /// A SIGHUP's reload is not complete yet (the app store's table is read again).
    reload_pending: bool,
    /// The FIFO waits to be read: the publications held for barriers were at their bound.
    fifo_held: bool,
    pinned_sessions: usize,
    /// Connections and FIFO lines are taken (at once, or for a loop once it is on the bus).
    serving: bool,
    /// Half of systemd's `WatchdogSec`, when it is set, and when it was last told.
    watchdog: Option<(Duration, Instant)>,
}

impl Server {
    /// A server of its own: binds (or takes over) the listener and opens the FIFO.
    pub fn bind(sources: Sources, mut cfg: Config) -> Result<Server, StartError> {
        if cfg.scaling.driver == "redis" && cfg.scaling.node_id.is_empty() {
            cfg.scaling.node_id = identity::node_id();
        }
        let listener = match listener::activated()? {
            Some(l) => l,
            None => listener::bind(&cfg)?,
        };
        let fifo = Fifo::open_or_adopt(&cfg.fifo, cfg.fifo_mode_bits().unwrap_or(0o660))?;
        let prepared = Prepared {
            listener,
            fifo: Reader::Own(fifo),
            place: None,
        };
        Server::start(sources, cfg, prepared)
    }

    /// A server on a listener and FIFO made for it: by [`Server::bind`], or by a supervisor
    /// for one of its loops.
    pub fn start(sources: Sources, mut cfg: Config, p: Prepared) -> Result<Server, StartError> {
        if let Some(place) = &p.place {
            place.adjust(&mut cfg);
        }
        let poll = Poll::new().map_err(StartError::Poll)?;
        let bus = p.place.as_ref().map(|place| place.bus);
        let link = Link::start(&cfg, &poll, (REDIS_SUB, REDIS_CMD), bus)?;
        let tls = match (&cfg.tls.cert, &cfg.tls.key) {
            (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
            _ => None,
        };
        let mut listener = p.listener;
        let local_addr = listener.local_addr().map_err(StartError::Poll)?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGCHLD]).map_err(StartError::Poll)?;
        let registry = poll.registry();
        // A loop on the bus serves once it is on it: until then, connections wait in the
        // listener's backlog and lines in the FIFO (`serve`).
        let on_bus = link.as_ref().is_some_and(Link::is_bus);
        if !on_bus {
            registry
                .register(&mut listener, LISTENER, Interest::READABLE)
                .and_then(|()| p.fifo.register(registry, FIFO))
                .map_err(StartError::Poll)?;
        }
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let mut workers = Workers::new(cfg.max_workers, cfg.max_queued_jobs, WORKER_TOKENS);
        if let Some(place) = &p.place {
            workers.share_with(place.board.clone());
        }
        let shared = p.place.is_some();
        let mut core = Core::new(cfg, identity::process_id(), Instant::now(), time::unix_ms());
        core.set_local_port(local_addr.port());
        if let Some(place) = &p.place {
            core.set_board(place.board.clone());
        }
        crate::handoff::adopt_history(&mut core);
        Ok(Server {
            poll,
            sources,
            core,
            listener: Some(listener),
            local_addr,
            tls,
            sockets: Slab::new(),
            fifo: p.fifo,
            place: p.place,
            user_fifos: UserFifos::new(USER_FIFO_TOKENS, shared),
            signals,
            workers,
            purposes: HashMap::new(),
            finished: Vec::new(),
            link,
            scratch: vec![0; SCRATCH_BYTES],
            turn: Turn::default(),
            accept_paused_until: None,
            emfile_logged: false,
            shutdown_deadline: None,
            restart_listener: None,
            pinned_at: Instant::now(),
            started: Instant::now(),
            unpinned: true,
            reload_pending: false,
            fifo_held: false,
            pinned_sessions: 0,
            serving: false,
            watchdog: crate::systemd::watchdog_interval().map(|d| (d / 2, Instant::now())),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until SIGTERM/SIGINT (or SIGUSR2) and the shutdown drain finish.
    pub fn run(mut self) -> io::Result<Exit> {
        if !self.link.as_ref().is_some_and(Link::is_bus) {
            self.serving = true;
            self.announce();
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.core.set_time(Instant::now(), time::unix_ms());
            self.core.set_io_status(self.io_status());
            for event in events.iter() {
                self.dispatch(event);
            }
            self.unpinned |= !events.is_empty();
            self.end_turn();
            // Drained: no connection left, and no publication still out to be numbered (it
            // must reach the history handed on).
            if let Some(deadline) = self.shutdown_deadline
                && ((self.sockets.is_empty() && !self.core.numbering() && self.last_to_go())
                    || Instant::now() >= deadline)
            {
                break;
            }
        }
        self.finish()
    }

    /// A loop on the bus is on it: it takes connections and FIFO lines from now on.
    fn serve(&mut self) {
        self.serving = true;
        if let Some(listener) = self.listener.as_mut() {
            let registry = self.poll.registry();
            let registered = registry
                .register(listener, LISTENER, Interest::READABLE)
                .and_then(|()| self.fifo.register(registry, FIFO));
            if let Err(e) = registered {
                error!("cannot serve: {e}");
                std::process::exit(1);
            }
        }
        self.announce();
    }

    fn announce(&self) {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        info!(
            "ferrocast {} listening on {scheme}://{}{}/, FIFO {}",
            env!("CARGO_PKG_VERSION"),
            self.local_addr,
            self.core.cfg().prefix(),
            self.fifo.describe()
        );
        if let Some(place) = &self.place {
            info!(
                "loop {} (pid {}) gives socket ids {}.N",
                place.index,
                std::process::id(),
                self.core.state().process_id
            );
            return; // the supervisor speaks to systemd
        }
        if let Err(e) = crate::systemd::ready(&format!("serving on {}", self.local_addr)) {
            warn!("cannot notify systemd: {e}");
        }
    }

    /// One readiness event, to whoever owns its token.
    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            LISTENER => self.accept(),
            FIFO => self.read_fifo(FIFO_READ_BUDGET),
            SIGNALS => self.handle_signals(),
            token if self.workers.owns(token) => {
                let registry = self.poll.registry();
                self.workers.on_ready(registry, token, &mut self.finished);
            }
            token if self.user_fifos.owns(token) => self.read_user_fifo(token),
            token if self.link.as_ref().is_some_and(|l| l.owns(token)) => {
                if let Some(link) = self.link.as_mut() {
                    link.on_ready(self.poll.registry(), token);
                }
            }
            Token(key) => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read_conn(key, event.is_read_closed() || event.is_error());
                }
                if event.is_writable() {
                    self.turn.writable.push(key);
                }
            }
        }
    }

    /// The work every turn ends with: deferred reads, jobs, time, the cluster, the core's
    /// effects, and the writes.
    fn end_turn(&mut self) {
        self.retry_deferred();
        self.workers
            .retry_queued(self.poll.registry(), &mut self.finished);
        if self.workers.running() > 0 {
            let registry = self.poll.registry();
            self.workers
                .expire(registry, Instant::now(), &mut self.finished);
        }
        self.finish_jobs();
        self.once_a_second();
        self.core.tick();
        self.serve_link();
        self.resume_fifo();
        self.apply_effects();
        self.flush();
        let mut resumed = std::mem::take(&mut self.turn.read_again);
        self.core.end_of_turn(&mut resumed);
        self.turn.read_again = resumed;
        // Slow consumers' close frames (and anything they caused) go out this turn too.
        self.apply_effects();
        self.flush();
        self.pin_board();
        self.report_reload();
    }

    fn poll_timeout(&self) -> Duration {
        let t = &self.turn;
        if !t.read_again.is_empty()
            || t.accept_again
            || t.fifo_again
            || !t.user_fifos_again.is_empty()
        {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut wake = self
            .core
            .next_wake()
            .unwrap_or(now + Duration::from_secs(1));
        if let Some(until) = self.accept_paused_until {
            wake = wake.min(until);
        }
        if let Some(deadline) = self.workers.next_deadline() {
            wake = wake.min(deadline);
        }
        let mut timeout = wake.saturating_duration_since(now);
        if self.place.is_some() {
            // The board stays fresh while idle, and soon after a busy turn.
            timeout = timeout.min(if self.unpinned {
                BOARD_MIN
            } else {
                BOARD_EVERY
            });
        }
        if let Some(t) = self.link.as_ref().and_then(|l| l.poll_timeout(now)) {
            timeout = timeout.min(t);
        }
        timeout
    }

    fn io_status(&self) -> core::IoStatus {
        core::IoStatus {
            write_calls: self.turn.write_calls,
            workers_running: self.workers.running(),
            workers_queued: self.workers.queued(),
            fifo_yields: self.turn.fifo_yields,
            fifo_dropped: self.turn.fifo_dropped,
            link: self.link.as_ref().map(Link::status),
        }
    }

    // ---- connections ----------------------------------------------------------------------

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        self.turn.accept_again = false;
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.add_conn(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if listener::is_fd_exhaustion(&e) => return self.pause_accepting(&e),
                // The peer gave up before we got to it; nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return error!("accept failed: {e}"),
            }
        }
        self.turn.accept_again = true;
    }

    /// Out of descriptors: retrying at once would spin, so the pending connection stays in the
    /// backlog until a descriptor frees up.
    fn pause_accepting(&mut self, e: &io::Error) {
        if !self.emfile_logged {
            warn!(
                "cannot accept connections: {e}; pausing accepts (raise the open file limit, e.g. LimitNOFILE=)"
            );
            self.emfile_logged = true;
        }
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
    }

    fn add_conn(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        // Small frames must leave at once: latency matters more than packet count here, and
        // batching happens in writev anyway.
        let _ = stream.set_nodelay(true);
        let tls = match &self.tls {
            None => None,
            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                Ok(session) => Some(Box::new(session)),
                Err(e) => return error!("cannot start TLS for {peer}: {e}"),
            },
        };
        let entry = self.sockets.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            return error!("cannot register connection from {peer}: {e}");
        }
        entry.insert(Socket::new(stream, tls));
        self.core.open(key, peer);
    }

    /// Reads what a connection sent and hands it to the core, within the read budget.
    /// `closing`: the event says the peer's side is shut, so a short read is not the end.
    fn read_conn(&mut self, key: usize, closing: bool) {
        // What was read while the connection was paused is handled before anything new.
        if !self.sockets.contains(key) || !self.core.resume(key) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut spent = true;
        for _ in 0..READ_BUDGET {
            let Some(socket) = self.sockets.get_mut(key) else {
                spent = false;
                break;
            };
            let n = match socket.read(&mut scratch) {
                Ok(0) => {
                    self.core.on_eof(key);
                    spent = false;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    spent = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("connection {key}: read error: {e}");
                    self.core.on_gone(key, "read error");
                    spent = false;
                    break;
                }
            };
            let (tls, tls_out) = (socket.is_tls(), socket.tls_wants_write());
            self.core.on_bytes(key, &mut scratch[..n]);
            if tls_out {
                self.turn.writable.push(key);
            }
            // A short read means the socket is drained, unless the peer's FIN came with the
            // data: then the next read is the 0 that says so, and no new event would come.
            let drained = n < scratch.len() && !tls && !closing;
            if drained || !self.core.wants_input(key) {
                spent = false;
                break;
            }
        }
        self.scratch = scratch;
        if spent && self.core.wants_input(key) {
            // Edge-triggered: no new event would come for what is left.
            self.turn.read_again.push(key);
        }
    }

    fn retry_deferred(&mut self) {
        if self.turn.accept_again {
            self.accept();
        }
        if self.turn.fifo_again {
            self.read_fifo(FIFO_READ_BUDGET);
        }
        for token in std::mem::take(&mut self.turn.user_fifos_again) {
            self.read_user_fifo(token);
        }
        for key in std::mem::take(&mut self.turn.read_again) {
            self.read_conn(key, false);
        }
    }

    /// Writes what the core queued (and what sockets became writable for), one `writev` per
    /// connection; a closing connection's write side is shut once all of it is out.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.turn.dirty);
        self.core.take_dirty(&mut dirty);
        dirty.append(&mut self.turn.writable);
        for key in dirty.drain(..) {
            let (Some(socket), Some(out)) = (self.sockets.get_mut(key), self.core.outbox_mut(key))
            else {
                continue;
            };
            let flushed = socket.flush(out);
            let result = match flushed {
                Ok((state, calls)) => {
                    self.turn.write_calls += calls as u64;
                    let shut = self.core.flushed(key) && state == Flushed::All;
                    if shut {
                        socket.finish().map(|_| ())
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                debug!("connection {key}: write error: {e}");
                self.core.on_gone(key, "write error");
            }
        }
        self.turn.dirty = dirty;
        // Write errors close connections: their sockets go now.
        self.drop_closed();
    }

    /// Drops the sockets of connections the core let go.
    fn drop_closed(&mut self) {
        let mut fx = std::mem::take(&mut self.turn.effects);
        self.core.swap_effects(&mut fx);
        for key in fx.closed.drain(..) {
            if let Some(mut socket) = self.sockets.try_remove(key) {
                let _ = self.poll.registry().deregister(socket.stream_mut());
            }
            // A descriptor came free: if accepts were paused for lack of them, try now.
            if self.accept_paused_until.is_some() {
                self.accept_paused_until = Some(Instant::now());
            }
        }
        self.pending_effects(&mut fx);
        self.turn.effects = fx;
    }

    // ---- the core's requests ---------------------------------------------------------------

    /// Applies what the core asked for (a refused job may ask for more: applied too).
    fn apply_effects(&mut self) {
        for _ in 0..8 {
            self.drop_closed();
            if !self.core.has_effects() {
                return;
            }
        }
    }

    /// Jobs, link operations and user FIFOs (sockets are dropped by [`Server::drop_closed`]).
    fn pending_effects(&mut self, fx: &mut Effects) {
        for (id, job) in fx.jobs.drain(..) {
            let registry = self.poll.registry();
            match self.workers.submit(registry, job, &mut self.finished) {
                Ok(wid) => {
                    self.purposes.insert(wid, Purpose::Core(id));
                }
                Err(_) => self.core.on_job_refused(id),
            }
        }
        if let Some(link) = self.link.as_mut() {
            link.apply(self.poll.registry(), fx.link.drain(..));
        }
        for op in fx.user_fifos.drain(..) {
            let registry = self.poll.registry();
            match op {
                UserFifo::Open(user) => {
                    let cfg = self.core.cfg();
                    let path = core::jobs::user_fifo_path(cfg, &user);
                    let mode = cfg.fifo_mode_bits().unwrap_or(0o660);
                    if self.user_fifos.open(registry, &user, &path, mode)
                        && let Some(link) = self.link.as_mut()
                    {
                        link.reader(registry, &user, true);
                    }
                }
                UserFifo::Close(user) => {
                    if self.user_fifos.close(registry, &user)
                        && let Some(link) = self.link.as_mut()
                    {
                        link.reader(registry, &user, false);
                    }
                }
            }
        }
    }

    fn finish_jobs(&mut self) {
        for (wid, outcome) in std::mem::take(&mut self.finished) {
            match self.purposes.remove(&wid) {
                Some(Purpose::Core(id)) => self.core.on_job_done(id, outcome),
                Some(Purpose::Resolve) => self.resolved(&outcome),
                None => {}
            }
        }
    }

    // ---- FIFOs -----------------------------------------------------------------------------

    /// Reads and publishes FIFO lines, up to `budget` bytes: the rest waits for the next turn,
    /// so a flood of lines delays a client's reply by one budget's worth of work at most.
    fn read_fifo(&mut self, budget: usize) {
        if !self.core.fifo_room() {
            // Read again once the bus's barriers let some go (not at once: no busy turns).
            (self.fifo_held, self.turn.fifo_again) = (true, false);
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let read = self.fifo.read(&mut self.core, &mut scratch, budget);
        self.scratch = scratch;
        self.turn.fifo_dropped += read.dropped;
        self.turn.fifo_again = read.more;
        self.turn.fifo_yields += u64::from(read.more);
    }

    fn read_user_fifo(&mut self, token: Token) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let max_line = self.core.cfg().max_fifo_line_bytes;
        let core = &mut self.core;
        if let Some((user, fifo)) = self.user_fifos.get_mut(token) {
            let result = fifo.read_lines_within(&mut scratch, max_line, FIFO_READ_BUDGET, |line| {
                core.on_user_line(user, line)
            });
            match result {
                Ok(stats) if stats.more => {
                    self.turn.fifo_yields += 1;
                    self.turn.user_fifos_again.push(token);
                }
                Ok(_) => {}
                Err(e) => warn!("reading the FIFO of {user}: {e}"),
            }
        }
        self.scratch = scratch;
    }

    /// Re-creates the FIFO if someone deleted or replaced it.
    fn check_fifo(&mut self) {
        let (core, scratch) = (&mut self.core, &mut self.scratch);
        self.fifo.check(self.poll.registry(), FIFO, |old| {
            old.read(core, scratch, usize::MAX);
        });
    }

    // ---- time ------------------------------------------------------------------------------

    fn once_a_second(&mut self) {
        if let Some((every, last)) = self.watchdog
            && last.elapsed() >= every
        {
            let _ = crate::systemd::watchdog();
            self.watchdog = Some((every, Instant::now()));
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
        let second = self.core.state().clock.uptime().as_secs();
        if second != self.turn.last_second {
            self.turn.last_second = second;
            self.check_fifo();
        }
    }

    // ---- the Redis link --------------------------------------------------------------------

    /// The Redis link's timers, writes and news for the core; a host-name lookup it asks for
    /// goes to a worker.
    fn serve_link(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let registry = self.poll.registry();
        let resolve = link.serve(registry, &mut self.core);
        for user in link.take_granted() {
            self.user_fifos.grant(registry, &user);
        }
        if link.bus_lost() {
            // Its clients reconnect to the other loops (or to the loop that replaces this one).
            std::process::exit(1);
        }
        if let Some(signal) = link.take_stop() {
            return self.begin_shutdown(signal);
        }
        let Some((host, port)) = resolve else {
            if !self.serving && link.connected() && self.siblings_on_bus() {
                self.serve();
            }
            return;
        };
        let job = crate::link::resolve_job(&host, port);
        match self.workers.submit(registry, job, &mut self.finished) {
            Ok(wid) => {
                self.purposes.insert(wid, Purpose::Resolve);
            }
            Err(_) => link.resolved(
                registry,
                Err(format!("cannot resolve {host}: worker queue full")),
            ),
        }
    }

    fn resolved(&mut self, outcome: &Outcome) {
        if let Some(link) = self.link.as_mut() {
            let result =
                crate::link::resolved_addresses(outcome).map_err(|why| format!("resolving: {why}"));
            link.resolved(self.poll.registry(), result);
        }
    }
}
