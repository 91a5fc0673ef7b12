//! The supervisor's loop: the local bus, the signals, the loops' lives and deaths.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use super::bus::Bus;
use super::upstream::Upstream;
use crate::config::{Config, Sources};
use crate::fifo::Fifo;
use crate::server::{Exit, Handoff, StartError};
use crate::worker::{self, Workers};

const SIGNALS: Token = Token(0);
const BUS_TOKENS: usize = 1;
/// Redis, when the loops scale through it (the bus's connections stay far below).
const UPSTREAM: (Token, Token) = (Token(1 << 30), Token((1 << 30) + 1));
/// The resolver of Redis's host name (a forked `ferrocast resolve`).
const WORKER_TOKENS: usize = 1 << 40;
/// A loop that dies this soon after it started is restarted after a growing pause, so a loop
/// that cannot start does not make the supervisor fork without end.
const QUICK_DEATH: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// How long the other loops wait for the FIFO reader's word to stop before the signal itself.
const STOP_WORD: Duration = Duration::from_secs(2);

/// One loop's process.
pub(super) struct Slot {
    pub(super) pid: Option<Pid>,
    pub(super) started: Instant,
    pub(super) start_at: Option<Instant>,
    pub(super) quick_deaths: u32,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Serving,
    Stopping,
    Restarting,
}

pub struct Supervisor {
    pub(super) poll: Poll,
    /// `None` only in a freshly forked loop, which drops the supervisor's handlers.
    pub(super) signals: Option<Signals>,
    pub(super) bus: Bus,
    pub(super) sources: Sources,
    pub(super) cfg: Config,
    pub(super) listener: std::net::TcpListener,
    pub(super) fifo: Option<Fifo>,
    /// A memory file the first loop writes the channel history into on a restart.
    pub(super) history: File,
    pub(super) slots: Vec<Slot>,
    pub(super) board: crate::board::Board,
    /// The loops' node names in the cluster (`loop-N` on the bus alone).
    pub(super) names: Vec<String>,
    /// Resolves Redis's host name; also reaps the loops.
    workers: Workers,
    resolving: Option<worker::JobId>,
    finished: Vec<(worker::JobId, crate::job::Outcome)>,
    /// When the signal goes to every loop, if the FIFO reader's word has not stopped them.
    stop_all_at: Option<(Instant, Signal)>,
    /// After a SIGHUP: the loops whose reload is not complete yet (systemd hears `READY=1`
    /// once none is left).
    reloading: Option<Vec<usize>>,
    phase: Phase,
    watchdog: Option<(Duration, Instant)>,
}

impl Supervisor {
    /// Binds (or takes over) the listener and opens the FIFO, as a single loop would.
    pub fn bind(sources: Sources, cfg: Config) -> Result<Supervisor, StartError> {
        let listener = match crate::listener::activated()? {
            Some(l) => l,
            None => crate::listener::bind(&cfg)?,
        };
        // What would stop every loop from starting is said once, here, before any fork.
        if let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) {
            crate::tls::load(cert, key)?;
        }
        let fifo = Fifo::open_or_adopt(&cfg.fifo, cfg.fifo_mode_bits().unwrap_or(0o660))?;
        // Made before the forks, so every loop signs and checks console logins alike.
        crate::secret::process_key();
        let poll = Poll::new().map_err(StartError::Poll)?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGCHLD]).map_err(StartError::Poll)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let history = nix::sys::memfd::memfd_create(
            c"ferrocast-loops-history",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| StartError::Poll(e.into()))?;
        let count = cfg.loops.resolve();
        let board = crate::board::Board::new(count).map_err(StartError::Poll)?;
        let names = super::node_names(&cfg, count);
        let mut bus = Bus::new(BUS_TOKENS, &cfg.scaling.prefix);
        if cfg.scaling.driver == "redis" {
            bus.set_upstream(Upstream::start(
                &cfg,
                poll.registry(),
                UPSTREAM,
                names.clone(),
            )?);
        }
        let mut workers = Workers::new(1, 4, WORKER_TOKENS);
        workers.keep_strangers();
        let now = Instant::now();
        Ok(Supervisor {
            poll,
            signals: Some(signals),
            bus,
            sources,
            cfg,
            listener: std::net::TcpListener::from(listener),
            fifo: Some(fifo),
            history: File::from(history),
            slots: (0..count)
                .map(|_| Slot {
                    pid: None,
                    started: now,
                    start_at: Some(now),
                    quick_deaths: 0,
                })
                .collect(),
            board,
            names,
            workers,
            resolving: None,
            finished: Vec::new(),
            stop_all_at: None,
            reloading: None,
            phase: Phase::Serving,
            watchdog: crate::systemd::watchdog_interval().map(|d| (d / 2, now)),
        })
    }

    /// Runs the loops until SIGTERM/SIGINT (or SIGUSR2) and their drains finish.
    pub fn run(mut self) -> io::Result<Exit> {
        self.start_due();
        // The history a restart handed on is for the first loops only: one that replaces a
        // dead loop later starts without it (and asks the bus where each stream stands).
        // SAFETY: this process has one thread.
        unsafe { std::env::remove_var("FERROCAST_HISTORY_FD") };
        let addr = self.listener.local_addr()?;
        let fifo = self.fifo.as_ref().map(|f| f.path().display().to_string());
        info!(
            "ferrocast {} supervising {} loops on {addr}{}, FIFO {}",
            env!("CARGO_PKG_VERSION"),
            self.slots.len(),
            self.cfg.prefix(),
            fifo.unwrap_or_default()
        );
        // The listener is bound: connections wait in its backlog until a loop accepts them.
        if let Err(e) = crate::systemd::ready(&format!("serving on {addr}")) {
            warn!("cannot notify systemd: {e}");
        }
        let mut events = Events::with_capacity(256);
        let mut last_second = Instant::now();
        while self.phase == Phase::Serving || self.slots.iter().any(|s| s.pid.is_some()) {
            match self.poll.poll(&mut events, Some(self.timeout())) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.dispatch(event.token());
            }
            for closed in self.bus.read_backlog(self.poll.registry(), Instant::now()) {
                self.cut_off(closed.owner);
            }
            self.note_reloads();
            self.pump_upstream();
            for closed in self.bus.flush(self.poll.registry()) {
                self.cut_off(closed.owner);
            }
            self.start_due();
            if last_second.elapsed() >= Duration::from_secs(1) {
                last_second = Instant::now();
                self.once_a_second();
            }
        }
        self.finish()
    }

    fn timeout(&self) -> Duration {
        let now = Instant::now();
        let next = self.slots.iter().filter_map(|s| s.start_at).min();
        let mut timeout = next
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(Duration::from_secs(1));
        if let Some(t) = self.bus.upstream().and_then(|u| u.poll_timeout(now)) {
            timeout = timeout.min(t);
        }
        if let Some(deadline) = self.workers.next_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(now));
        }
        if self.bus.has_backlog() {
            timeout = Duration::ZERO;
        }
        timeout
    }

    fn dispatch(&mut self, token: Token) {
        if token == SIGNALS {
            return self.handle_signals();
        }
        let registry = self.poll.registry();
        if self.workers.owns(token) {
            return self.workers.on_ready(registry, token, &mut self.finished);
        }
        if let Some(u) = self.bus.upstream_mut().filter(|u| u.owns(token)) {
            return u.on_ready(registry, token);
        }
        for closed in self.bus.on_ready(registry, token, Instant::now()) {
            self.cut_off(closed.owner);
        }
    }

    /// Redis's news for the loops; its host name resolved in a child (`getaddrinfo` blocks).
    fn pump_upstream(&mut self) {
        let registry = self.poll.registry();
        if self.workers.running() > 0 {
            self.workers
                .expire(registry, Instant::now(), &mut self.finished);
        }
        for (id, outcome) in std::mem::take(&mut self.finished) {
            if self.resolving == Some(id) {
                self.resolving = None;
                let result = crate::link::resolved_addresses(&outcome)
                    .map_err(|why| format!("resolving: {why}"));
                if let Some(u) = self.bus.upstream_mut() {
                    u.resolved(registry, result);
                }
            }
        }
        let Some((host, port)) = self.bus.pump(registry) else {
            return;
        };
        let job = crate::link::resolve_job(&host, port);
        match self.workers.submit(registry, job, &mut self.finished) {
            Ok(id) => self.resolving = Some(id),
            Err(_) => {
                if let Some(u) = self.bus.upstream_mut() {
                    u.resolved(registry, Err(format!("cannot resolve {host}: busy")));
                }
            }
        }
    }

    /// A loop whose bus connection broke cannot share channels: it goes, and another comes.
    fn cut_off(&mut self, index: usize) {
        if self.phase != Phase::Serving {
            return; // a loop that ends closes its side first
        }
        if let Some(pid) = self.slots.get(index).and_then(|s| s.pid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }

    fn once_a_second(&mut self) {
        if let Some((at, signal)) = self.stop_all_at
            && Instant::now() >= at
        {
            self.stop_all_at = None;
            self.forward(signal);
        }
        self.bus.store_mut().sweep(Instant::now());
        self.check_fifo();
        if let Some((every, last)) = self.watchdog
            && last.elapsed() >= every
        {
            let _ = crate::systemd::watchdog();
            self.watchdog = Some((every, Instant::now()));
        }
    }

    /// Re-creates the FIFO if someone removed or replaced it; the loop that reads it follows.
    fn check_fifo(&mut self) {
        let Some(fifo) = self.fifo.as_ref().filter(|f| f.is_detached()) else {
            return;
        };
        match fifo.reopen() {
            Ok(new) => {
                warn!(
                    "FIFO {} was removed or replaced; re-created it",
                    new.path().display()
                );
                self.fifo = Some(new);
            }
            Err(e) => error!(
                "FIFO {} is gone and cannot be re-created: {e}",
                fifo.path().display()
            ),
        }
    }

    fn handle_signals(&mut self) {
        let pending: Vec<i32> = match self.signals.as_mut() {
            Some(s) => s.pending().collect(),
            None => Vec::new(),
        };
        for signal in pending {
            match signal {
                SIGCHLD => self.reap(),
                SIGHUP => {
                    info!("received SIGHUP: the loops reload the configuration");
                    let _ = crate::systemd::reloading();
                    self.forward(Signal::SIGHUP);
                    let live = (self.slots.iter().enumerate())
                        .filter(|(_, s)| s.pid.is_some())
                        .map(|(i, _)| i);
                    self.reloading = Some(live.collect());
                }
                SIGTERM | SIGINT | SIGUSR2 => self.stop(signal),
                _ => {}
            }
        }
    }

    /// Loops that completed their reload (or died: a new one reads the configuration afresh);
    /// once none is left, the reload is over for systemd.
    fn note_reloads(&mut self) {
        let done = self.bus.take_reloaded();
        let Some(waiting) = self.reloading.as_mut() else {
            return;
        };
        let slots = &self.slots;
        waiting.retain(|i| !done.contains(i) && slots.get(*i).is_some_and(|s| s.pid.is_some()));
        if waiting.is_empty() {
            self.reloading = None;
            info!("every loop reloaded its configuration");
            let _ = crate::systemd::ready("configuration reloaded");
        }
    }

    fn stop(&mut self, signal: i32) {
        if self.phase != Phase::Serving {
            return;
        }
        let (phase, forward) = match signal {
            SIGUSR2 => (Phase::Restarting, Signal::SIGUSR2),
            SIGINT => (Phase::Stopping, Signal::SIGINT),
            _ => (Phase::Stopping, Signal::SIGTERM),
        };
        info!("received {forward}: the loops drain their connections");
        let _ = crate::systemd::stopping();
        self.phase = phase;
        for slot in &mut self.slots {
            slot.start_at = None;
        }
        // A stop goes to the loop that reads the FIFO: it reads what scripts wrote, and tells
        // the others on the bus after what it published, so none closes its clients before
        // they have it. The others get the signal too a moment later, should it not say so.
        match self.slots.first().and_then(|s| s.pid) {
            Some(reader) if phase == Phase::Stopping => {
                let _ = kill(reader, forward);
                self.stop_all_at = Some((Instant::now() + STOP_WORD, forward));
            }
            _ => self.forward(forward),
        }
    }

    fn forward(&self, signal: Signal) {
        for pid in self.slots.iter().filter_map(|s| s.pid) {
            let _ = kill(pid, signal);
        }
    }

    /// Collects every loop that ended; one that died while serving is replaced.
    fn reap(&mut self) {
        let registry = self.poll.registry();
        self.workers.reap(registry, &mut self.finished);
        for status in self.workers.take_strangers() {
            let (pid, how) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exited with {code}")),
                WaitStatus::Signaled(pid, sig, _) => (pid, format!("was killed by {sig}")),
                _ => continue,
            };
            let Some(index) = self.slots.iter().position(|s| s.pid == Some(pid)) else {
                continue;
            };
            self.slots[index].pid = None;
            debug!("loop {index} (pid {pid}) {how}");
            self.board.clear(index);
            let registry = self.poll.registry();
            self.bus.drop_owner(registry, index);
            if self.phase == Phase::Serving {
                warn!("loop {index} (pid {pid}) {how}; its clients reconnect to the others");
                self.forget(index);
                self.schedule(index);
            }
        }
    }

    /// The dead loop leaves the other loops' view at once: its members are announced as
    /// removed (once, by the loops that hold their channels), its counts go.
    fn forget(&mut self, index: usize) {
        let Some(node) = self.names.get(index).cloned() else {
            return;
        };
        let prefix = &self.cfg.scaling.prefix;
        let (key, nodes) = (format!("{prefix}:node:{node}"), format!("{prefix}:nodes"));
        match self.bus.upstream_mut() {
            Some(u) => {
                u.command(&[b"DEL", key.as_bytes()]);
                u.command(&[b"SREM", nodes.as_bytes(), node.as_bytes()]);
            }
            None => {
                let store = self.bus.store_mut();
                store.remove(key.as_bytes());
                store.remove_member(nodes.as_bytes(), node.as_bytes());
            }
        }
        let gone = serde_json::json!({ "node": node, "kind": "gone" }).to_string();
        let channel = format!("{prefix}#broadcast");
        self.bus.publish(channel.as_bytes(), gone.as_bytes());
    }

    fn schedule(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let now = Instant::now();
        if now.saturating_duration_since(slot.started) < QUICK_DEATH {
            slot.quick_deaths = slot.quick_deaths.saturating_add(1);
        } else {
            slot.quick_deaths = 0;
        }
        let pause = Duration::from_millis(100)
            .saturating_mul(1 << slot.quick_deaths.min(10))
            .min(MAX_PAUSE);
        let pause = if slot.quick_deaths == 0 {
            Duration::ZERO
        } else {
            pause
        };
        slot.start_at = Some(now + pause);
    }

    /// Forks the loops whose time has come.
    fn start_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            if self.phase == Phase::Serving && self.slots[index].start_at.is_some_and(|t| t <= now)
            {
                self.slots[index].start_at = None;
                self.slots[index].started = now;
                if let Err(e) = self.spawn(index) {
                    error!("cannot start loop {index}: {e}");
                    self.schedule(index);
                }
            }
        }
    }

    fn finish(mut self) -> io::Result<Exit> {
        let Some(fifo) = self.fifo.take() else {
            return Ok(Exit::Stopped);
        };
        if self.phase == Phase::Restarting {
            info!("restarting in place");
            let history = read_history(&self.history)?;
            debug!("handing on {} bytes of history", history.len());
            return Ok(Exit::Restart(Handoff {
                listener: self.listener.into(),
                fifo: fifo.into_fd()?,
                history,
            }));
        }
        fifo.remove();
        info!("ferrocast stopped");
        Ok(Exit::Stopped)
    }
}

/// The history the first loop wrote before a restart (empty when it wrote none).
fn read_history(file: &File) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}
