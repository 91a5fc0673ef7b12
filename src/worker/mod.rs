//! Forked workers: run a job in a child process, answer over a socketpair, never block the loop.
//!
//! The server is one `mio` loop on one thread. A job (validate a handshake, route a request, …)
//! runs in a child process whose stdout is one end of an `AF_UNIX` socketpair; the parent keeps the
//! other end, non-blocking, registered `READABLE` in the loop's registry. The loop calls:
//!
//! * [`Workers::submit`] to start a job (or queue it when `max_workers` already run; a full queue is
//!   refused with [`QueueFull`] so the caller answers with an error, never drops silently),
//! * [`Workers::on_ready`] when a token [`Workers::owns`] fires (child output, or room in the child's
//!   stdin pipe),
//! * [`Workers::reap`] on `SIGCHLD` (`waitpid(-1, WNOHANG)` until nothing is left),
//! * [`Workers::expire`] every turn, with [`Workers::next_deadline`] bounding the poll timeout.
//!
//! A job is finished when its output reached EOF **and** its process was reaped, in either order,
//! or when it passed its deadline (its whole process group gets `SIGKILL`, the job is answered
//! [`Outcome::TimedOut`] at once and the pid is still reaped later: no zombies).
//!
//! # Starting the child
//!
//! Three strategies, all with the same result (own process group, every signal reset to
//! its default and unblocked, stdin/stdout on fds 0/1, stderr inherited so script errors reach the
//! server's log, environment replaced by the job's, every other fd closed by `O_CLOEXEC`):
//!
//! * [`Strategy::PosixSpawn`] (default): `posix_spawn(3)`; glibc implements it with
//!   `clone(CLONE_VM | CLONE_VFORK)`, so no page tables are copied and its cost does not grow with
//!   the server's memory. Exec errors come back as an error code (→ [`Outcome::SpawnFailed`]).
//! * [`Strategy::Fork`]: `fork(2)` then, in the child, only async-signal-safe calls (`setpgid`,
//!   `sigaction`, `sigprocmask`, `dup2`, `execve`, `_exit`) on data prepared before the fork. All
//!   signals are blocked in the parent around the fork so the server's handlers never run in the
//!   child. An exec failure writes nothing and `_exit(127)`s (→ `Exited { code: 127 }`).
//! * [`Strategy::Command`]: `std::process::Command` with `process_group(0)` and `env_clear()`. std
//!   uses `posix_spawnp` for it (no `pre_exec` closure, the program is a path), but it inherits the
//!   parent's signal mask and only resets `SIGPIPE`: a signal the server *ignores* stays ignored in
//!   the child. The `Child` is dropped without waiting (std then neither waits nor kills; it holds no
//!   pidfd since none was requested), and the pid is reaped here with `waitpid` — sound, but the
//!   signal caveat makes it the least exact of the three.
//!
//! Measured (`examples/bench.rs`, 2000 × `/bin/true`, 2-vCPU VM, noisy): with a tiny parent all
//! three are alike (~1000–1250 jobs/s, ~0.8–1 ms of loop time per job at 32 workers; fork can be
//! cheapest with few workers). Fork degrades with the parent's RSS — 16 MB: 625 jobs/s vs ~1280;
//! 128 MB: 170 vs ~800; 512 MB: ~30–45; 2 GB: ~14 — while posix_spawn stays flat. A server with
//! many connections is tens of MB or more, hence the default. glibc leaves its two internal
//! signals (32, 33; unusable by programs) ignored in a posix_spawn child.
//!
//! `argv[0]` is resolved in the parent against the job's `PATH` (else the server's, else
//! `/usr/local/bin:/usr/bin:/bin`), so a missing program is a `SpawnFailed("no such file: …")`
//! without any fork, and every strategy execs an explicit path.
//!
//! # Stdin
//!
//! A `pipe2(O_CLOEXEC)`; the parent's write end is non-blocking. As much of the job's stdin as fits
//! is written *before* the child starts (a pipe holds 64 KiB by default, so usually all of it and
//! the write end is closed at once); any remainder is written when the pipe is writable (the
//! stdin token). A child that exits without reading makes the write fail with `EPIPE` (Rust
//! ignores `SIGPIPE` in the server); the rest is dropped.
//!
//! # Threads
//!
//! Forking a multi-threaded process is only safe if the child calls nothing but async-signal-safe
//! functions, which the fork path honours; the server nevertheless must have exactly one thread.
//! Debug builds assert it (`Threads:` in `/proc/self/status`) before each `fork`. The default test
//! harness runs tests on threads, so the check can be turned off with
//! [`Workers::set_single_thread_check`]; the forking integration tests run with `harness = false`,
//! in the main thread, and keep it on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::time::Instant;

use mio::net::UnixStream;
use mio::unix::pipe::Sender;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{AccessFlags, Pid, access};

mod fastcgi;
mod spawn;
use fastcgi::FastCgi;
pub use spawn::thread_count;
use spawn::{prepare, spawn};

/// Identifies a job from [`Workers::submit`] to its [`Outcome`].
pub type JobId = u64;

pub use crate::job::{Handler, Job, Outcome};

/// [`Workers::submit`] refused a job: `max_workers` run and `max_queued` wait already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("worker queue is full")]
pub struct QueueFull;

/// How a child process is started (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    PosixSpawn,
    Fork,
    Command,
}

/// Tokens `[token_base, token_base + TOKEN_SPAN)` belong to the workers: two per child slot
/// from the start, one per FastCGI request from the middle.
pub const TOKEN_SPAN: usize = 1 << 32;
const FASTCGI_TOKENS: usize = TOKEN_SPAN / 2;
/// Bytes read from one child in one `on_ready` call before yielding back to the loop.
const READ_BUDGET: usize = 1 << 20;
/// The board's count of running workers (`Workers::share_with`).
const WORKERS_KEY: &str = "workers";
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

struct StdinFeed {
    tx: Sender,
    data: Vec<u8>,
    pos: usize,
}

struct Running {
    id: JobId,
    pid: Pid,
    deadline: Instant,
    max_output: usize,
    /// `None` once the output reached EOF (or failed).
    out: Option<UnixStream>,
    buf: Vec<u8>,
    truncated: bool,
    /// `Some` once reaped.
    status: Option<WaitStatus>,
    stdin: Option<StdinFeed>,
}

/// The pool of worker processes: running jobs, their queue, and their reaping.
pub struct Workers {
    max_workers: usize,
    max_queued: usize,
    token_base: usize,
    strategy: Strategy,
    check_single_thread: bool,
    next_id: JobId,
    slots: Vec<Option<Running>>,
    free: Vec<usize>,
    running: usize,
    by_pid: HashMap<Pid, usize>,
    queue: VecDeque<(JobId, Job)>,
    /// Killed past their deadline and already answered, not yet reaped.
    dying: HashSet<Pid>,
    /// Requests to FastCGI applications (counted in `running` too).
    fastcgi: FastCgi,
    /// With several loops: `max_workers` is the process's, so each loop counts the others'
    /// running workers (pinned on the board) with its own.
    board: Option<crate::board::Board>,
    /// Children reaped that were not workers (a supervisor's loops), for the caller, when it
    /// asked for them (`keep_strangers`).
    strangers: Vec<WaitStatus>,
    keep_strangers: bool,
}

impl Workers {
    /// `max_workers` is at least 1 and at most 2^30 (two tokens per child slot must fit below
    /// the FastCGI tokens).
    pub fn new(max_workers: usize, max_queued: usize, token_base: usize) -> Workers {
        let max_workers = max_workers.clamp(1, FASTCGI_TOKENS / 2);
        Workers {
            max_workers,
            max_queued,
            token_base,
            strategy: Strategy::default(),
            check_single_thread: cfg!(debug_assertions),
            next_id: 1,
            slots: Vec::new(),
            free: Vec::new(),
            running: 0,
            by_pid: HashMap::new(),
            queue: VecDeque::new(),
            dying: HashSet::new(),
            fastcgi: FastCgi::new(token_base.saturating_add(FASTCGI_TOKENS), max_workers),
            board: None,
            strangers: Vec::new(),
            keep_strangers: false,
        }
    }

    /// The caller has children of its own (a supervisor's loops): their ends are kept for it.
    pub fn keep_strangers(&mut self) {
        self.keep_strangers = true;
    }

    /// Children that ended and were not workers (a supervisor's loops), since the last call.
    pub fn take_strangers(&mut self) -> Vec<WaitStatus> {
        std::mem::take(&mut self.strangers)
    }

    /// One of several loops: `max_workers` bounds the workers of every loop together.
    pub fn share_with(&mut self, board: crate::board::Board) {
        self.board = Some(board);
    }

    /// Whether one more job may start: fewer than `max_workers` run here and in the other
    /// loops. (Two loops that start one at the same instant may go one over, each.)
    fn room(&self) -> bool {
        let others = self
            .board
            .as_ref()
            .map_or(0, |b| b.others_count(WORKERS_KEY));
        self.running.saturating_add(others) < self.max_workers
    }

    /// Tells the other loops how many run here.
    fn pin_running(&self) {
        if let Some(b) = &self.board {
            b.set_count(WORKERS_KEY, self.running);
        }
    }

    /// Jobs wait in the queue for another loop's worker to end: tried again every turn.
    pub fn retry_queued(&mut self, registry: &Registry, out: &mut Vec<(JobId, Outcome)>) {
        if self.board.is_some() && !self.queue.is_empty() {
            self.fill(registry, out);
        }
    }

    pub fn with_strategy(mut self, strategy: Strategy) -> Workers {
        self.strategy = strategy;
        self
    }

    /// Debug builds assert a single thread before every `fork`; tests on the default (threaded)
    /// harness turn that off. Has no effect in release builds.
    pub fn set_single_thread_check(&mut self, on: bool) {
        self.check_single_thread = on;
    }

    /// Starts the job now if fewer than `max_workers` run, else queues it. A job that cannot be
    /// started at all is answered in `out` (`SpawnFailed`) with the id this call returns.
    pub fn submit(
        &mut self,
        registry: &Registry,
        job: Job,
        out: &mut Vec<(JobId, Outcome)>,
    ) -> Result<JobId, QueueFull> {
        let can_run = self.room() && self.queue.is_empty();
        if !can_run && self.queue.len() >= self.max_queued {
            return Err(QueueFull);
        }
        let id = self.next_id;
        self.next_id += 1;
        if can_run {
            self.start(registry, id, job, out);
            self.pin_running();
        } else {
            self.queue.push_back((id, job));
        }
        Ok(id)
    }

    pub fn owns(&self, token: Token) -> bool {
        token
            .0
            .checked_sub(self.token_base)
            .is_some_and(|off| off < TOKEN_SPAN)
    }

    /// A worker token is ready: read the child's output (bounded by `max_output`, the excess read
    /// and discarded) or feed its stdin, or serve a FastCGI request's connection. Pushes the job
    /// to `out` if it is now finished.
    pub fn on_ready(&mut self, registry: &Registry, token: Token, out: &mut Vec<(JobId, Outcome)>) {
        if self.fastcgi.owns(token) {
            if let Some(done) = self.fastcgi.on_ready(registry, token) {
                self.running -= 1;
                self.pin_running();
                out.push(done);
                self.fill(registry, out);
            }
            return;
        }
        let Some(off) = token.0.checked_sub(self.token_base) else {
            return;
        };
        let (slot, is_stdin) = (off / 2, off % 2 == 1);
        let Some(run) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return; // stale event for a finished job
        };
        if is_stdin {
            run.feed_stdin(registry);
        } else {
            run.drain_output(registry, token);
        }
        if run.out.is_none() && run.status.is_some() {
            out.push(self.finish(registry, slot, false));
            self.fill(registry, out);
        }
    }

    /// `SIGCHLD` arrived: reap every exited child. Unknown pids (children started elsewhere,
    /// orphans adopted by a subreaper) are reaped and ignored.
    pub fn reap(&mut self, registry: &Registry, out: &mut Vec<(JobId, Outcome)>) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    break;
                }
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if self.dying.remove(&pid) {
                        continue;
                    }
                    let Some(&slot) = self.by_pid.get(&pid) else {
                        log::debug!("reaped pid {pid} that is not a worker: {status:?}");
                        if self.keep_strangers {
                            self.strangers.push(status);
                        }
                        continue;
                    };
                    let Some(run) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    run.status = Some(status);
                    if run.out.is_none() {
                        out.push(self.finish(registry, slot, false));
                    }
                }
            }
        }
        self.fill(registry, out);
    }

    /// Kills (process group, `SIGKILL`) and answers `TimedOut` every job past its deadline, then
    /// starts queued jobs in the freed slots.
    pub fn expire(&mut self, registry: &Registry, now: Instant, out: &mut Vec<(JobId, Outcome)>) {
        for slot in 0..self.slots.len() {
            let Some(run) = self.slots[slot].as_ref() else {
                continue;
            };
            if run.deadline > now {
                continue;
            }
            let reaped = run.status.is_some();
            let pid = run.pid;
            kill_group(pid, reaped);
            if !reaped {
                self.dying.insert(pid);
            }
            out.push(self.finish(registry, slot, true));
        }
        self.running -= self.fastcgi.expire(registry, now, out);
        self.pin_running();
        self.fill(registry, out);
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The earliest deadline of a running job, to bound the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        let children = self.slots.iter().flatten().map(|r| r.deadline);
        children.chain(self.fastcgi.next_deadline()).min()
    }

    /// Shutdown: drop the queue, `SIGKILL` every job's process group and reap the children
    /// (blocking: `SIGKILL` cannot be caught, so this returns promptly).
    pub fn kill_all(&mut self) {
        self.queue.clear();
        self.fastcgi.clear();
        for run in self.slots.iter_mut().filter_map(Option::take) {
            let reaped = run.status.is_some();
            kill_group(run.pid, reaped);
            if !reaped {
                self.dying.insert(run.pid);
            }
            // Dropping `run` closes its fds, which also removes them from the poll.
        }
        self.free = (0..self.slots.len()).rev().collect();
        self.running = 0;
        self.pin_running();
        self.by_pid.clear();
        for pid in self.dying.drain() {
            while let Err(Errno::EINTR) = waitpid(pid, None) {}
        }
    }

    // ---- internals -----------------------------------------------------------------------------

    fn fill(&mut self, registry: &Registry, out: &mut Vec<(JobId, Outcome)>) {
        while self.room() {
            let Some((id, job)) = self.queue.pop_front() else {
                break;
            };
            self.start(registry, id, job, out);
            self.pin_running();
        }
    }

    fn start(&mut self, registry: &Registry, id: JobId, job: Job, out: &mut Vec<(JobId, Outcome)>) {
        if matches!(job.handler, Handler::FastCgi { .. }) {
            match self.fastcgi.start(registry, id, job) {
                Ok(None) => self.running += 1,
                Ok(Some(outcome)) => out.push((id, outcome)),
                Err(reason) => {
                    log::warn!("job {id}: {reason}");
                    out.push((id, Outcome::SpawnFailed(reason)));
                }
            }
            return;
        }
        match self.try_start(registry, id, job) {
            Ok(()) => {}
            Err(reason) => {
                log::warn!("job {id}: {reason}");
                out.push((id, Outcome::SpawnFailed(reason)));
            }
        }
    }

    fn try_start(&mut self, registry: &Registry, id: JobId, job: Job) -> Result<(), String> {
        let prepared = prepare(&job)?;
        let (parent_out, child_out) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        parent_out
            .set_nonblocking(true)
            .map_err(|e| format!("socketpair: {e}"))?;
        let (stdin_r, stdin_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        // The child's ends become fds 0 and 1: keep them out of 0..=2 so one dup2 cannot clobber
        // the other (possible if the server runs with a closed stdin/stdout).
        let child_out = above_stdio(child_out.into())?;
        let stdin_r = above_stdio(stdin_r)?;

        let mut feed = None;
        if !job.stdin.is_empty() {
            let mut tx = Sender::from(stdin_w);
            tx.set_nonblocking(true).map_err(|e| format!("pipe: {e}"))?;
            let pos = write_some(&mut tx, &job.stdin, 0);
            if pos < job.stdin.len() {
                feed = Some(StdinFeed {
                    tx,
                    data: job.stdin,
                    pos,
                });
            }
        } // else: the write end is closed here, the child reads EOF at once.

        self.assert_single_thread();
        let pid = spawn(self.strategy, &prepared, stdin_r, child_out)?;
        // The child's ends were moved into `spawn` and are closed now: EOF on our end means the
        // child (and everything it started that kept stdout) is done writing.

        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let mut out = UnixStream::from_std(parent_out);
        let out_token = Token(self.token_base + 2 * slot);
        let mut registered = registry.register(&mut out, out_token, Interest::READABLE);
        if let (Ok(()), Some(f)) = (&registered, feed.as_mut()) {
            registered = registry.register(&mut f.tx, Token(out_token.0 + 1), Interest::WRITABLE);
        }
        if let Err(e) = registered {
            let _ = registry.deregister(&mut out);
            kill_group(pid, false);
            self.dying.insert(pid);
            self.free.push(slot);
            return Err(format!("register: {e}"));
        }
        self.slots[slot] = Some(Running {
            id,
            pid,
            deadline: Instant::now() + job.deadline,
            max_output: job.max_output,
            out: Some(out),
            buf: Vec::new(),
            truncated: false,
            status: None,
            stdin: feed,
        });
        self.by_pid.insert(pid, slot);
        self.running += 1;
        Ok(())
    }

    fn assert_single_thread(&self) {
        #[cfg(debug_assertions)]
        if self.check_single_thread && self.strategy == Strategy::Fork {
            let threads = thread_count();
            debug_assert!(
                threads == Some(1),
                "fork with {threads:?} threads: the server must stay single-threaded"
            );
        }
    }

    fn finish(&mut self, registry: &Registry, slot: usize, timed_out: bool) -> (JobId, Outcome) {
        let Some(mut run) = self.slots.get_mut(slot).and_then(Option::take) else {
            return (
                0,
                Outcome::SpawnFailed("internal: empty worker slot".into()),
            );
        };
        self.free.push(slot);
        self.running -= 1;
        self.pin_running();
        self.by_pid.remove(&run.pid);
        if let Some(mut s) = run.out.take() {
            let _ = registry.deregister(&mut s);
        }
        if let Some(mut f) = run.stdin.take() {
            let _ = registry.deregister(&mut f.tx);
        }
        let outcome = if timed_out {
            Outcome::TimedOut
        } else {
            match run.status {
                Some(WaitStatus::Exited(_, code)) => Outcome::Exited {
                    code,
                    stdout: run.buf,
                    truncated: run.truncated,
                },
                Some(WaitStatus::Signaled(_, signal, _)) => Outcome::Signaled {
                    signal: signal as i32,
                    stdout: run.buf,
                    truncated: run.truncated,
                },
                other => {
                    Outcome::SpawnFailed(format!("internal: unexpected wait status {other:?}"))
                }
            }
        };
        (run.id, outcome)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl Running {
    fn drain_output(&mut self, registry: &Registry, token: Token) {
        let Some(stream) = self.out.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 32 * 1024];
        let mut budget = READ_BUDGET;
        let eof = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    let room = self.max_output.saturating_sub(self.buf.len());
                    let keep = n.min(room);
                    if keep < n {
                        self.truncated = true;
                    }
                    if keep > 0 {
                        // Grow geometrically but never past max_output: memory stays bounded.
                        let want = self.buf.len() + keep;
                        if want > self.buf.capacity() {
                            let target = (self.buf.capacity() * 2).clamp(want, self.max_output);
                            self.buf.reserve_exact(target - self.buf.len());
                        }
                        self.buf.extend_from_slice(&chunk[..keep]);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        // Let the loop serve others; re-arming the edge-triggered registration
                        // delivers a new event since data is still pending.
                        if let Err(e) = registry.reregister(stream, token, Interest::READABLE) {
                            log::warn!("reregister worker output: {e}");
                            break true;
                        }
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reading worker output: {e}");
                    break true;
                }
            }
        };
        if eof && let Some(mut s) = self.out.take() {
            let _ = registry.deregister(&mut s);
        }
    }

    fn feed_stdin(&mut self, registry: &Registry) {
        let Some(f) = self.stdin.as_mut() else {
            return;
        };
        f.pos = write_some(&mut f.tx, &f.data, f.pos);
        if f.pos >= f.data.len() {
            // Done (or the child closed its end): closing ours gives the child EOF.
            if let Some(mut f) = self.stdin.take() {
                let _ = registry.deregister(&mut f.tx);
            }
        }
    }
}

/// Writes from `pos` until done or the pipe is full; returns the new position (`data.len()` when
/// finished *or* when the reader is gone, since the rest can never be delivered).
fn write_some(tx: &mut Sender, data: &[u8], mut pos: usize) -> usize {
    while pos < data.len() {
        match tx.write(&data[pos..]) {
            Ok(0) => return data.len(),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return pos,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    log::warn!("writing worker stdin: {e}");
                }
                return data.len();
            }
        }
    }
    pos
}

/// `SIGKILL` to the whole process group (the child is its leader). If the leader was already
/// reaped its pid may in theory be reused, so only the group is signalled then (a group id stays
/// reserved while any member lives).
fn kill_group(pid: Pid, reaped: bool) {
    match kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL) {
        Ok(()) => {}
        // Not (yet) a group leader (cannot happen: the fork path sets the group from both sides).
        Err(Errno::ESRCH) if !reaped => {
            let _ = kill(pid, Signal::SIGKILL);
        }
        Err(_) => {}
    }
}

fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, String> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(|e| format!("dup: {e}"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// A framing error for [`encode_result`] / [`decode_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("result of {len} bytes is over the {limit}-byte limit")]
    TooLong { len: u64, limit: usize },
    #[error("{extra} unexpected bytes after the result")]
    Trailing { extra: usize },
}

/// Alias matching the decoder's name in the design notes.
pub type DecodeError = FrameError;

/// Frames one result as `u32` big-endian length + bytes (what an in-process job, e.g. a future
/// `Handler::Http`, writes to its end of the socketpair before exiting).
pub fn encode_result(bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(bytes.len()).map_err(|_| FrameError::TooLong {
        len: bytes.len() as u64,
        limit: u32::MAX as usize,
    })?;
    let mut framed = Vec::with_capacity(4 + bytes.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    Ok(framed)
}

/// Decodes what a child wrote so far. `Ok(None)`: incomplete, read more (the reader can stop
/// accepting bytes past `4 + len`). A length over `limit` is rejected as soon as the 4-byte
/// header is in, before anything is buffered for it; bytes after the one result are an error.
pub fn decode_result(buf: &[u8], limit: usize) -> Result<Option<&[u8]>, FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header);
    let Some(len) = usize::try_from(len).ok().filter(|&l| l <= limit) else {
        return Err(FrameError::TooLong {
            len: u64::from(len),
            limit,
        });
    };
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Ok(None),
        std::cmp::Ordering::Equal => Ok(Some(rest)),
        std::cmp::Ordering::Greater => Err(FrameError::Trailing {
            extra: rest.len() - len,
        }),
    }
}

#[cfg(test)]
mod tests;
