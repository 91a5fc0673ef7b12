//! Forking a loop, and what the new process does before it serves: it lets go of everything
//! of the supervisor's it inherited (signal handlers, the bus's other connections, the poll),
//! and runs a server on the shared listener.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;

use log::error;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::{ForkResult, fork};

use super::Place;
use super::supervisor::Supervisor;
use crate::broadcast_fifo::Reader;
use crate::fifo::Fifo;
use crate::scaling::redis::BusEnds;
use crate::server::{Exit, Prepared, Server};

/// The two socketpairs of a loop's bus link: (supervisor's end, loop's end) each.
type Pairs = ((UnixStream, UnixStream), (UnixStream, UnixStream));

/// Variables meant for the supervisor alone: systemd talks to it, not to its loops.
const SUPERVISOR_ONLY: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

impl Supervisor {
    /// Forks loop `index`.
    pub(super) fn spawn(&mut self, index: usize) -> io::Result<()> {
        let pairs = (UnixStream::pair()?, UnixStream::pair()?);
        // Signals wait until the new process has its own handlers: the supervisor's, which
        // it inherits, would tell the supervisor.
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))?;
        let supervisor = nix::unistd::getpid();
        // SAFETY: this process has no other thread; the child only runs this crate's code.
        let forked = unsafe { fork() };
        match forked {
            Ok(ForkResult::Child) => {
                let code = self.become_loop(index, pairs, supervisor, old);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
                let ((sub, _), (cmd, _)) = pairs;
                for end in [sub, cmd] {
                    end.set_nonblocking(true)?;
                    let end = mio::net::UnixStream::from_std(end);
                    self.bus.add(self.poll.registry(), end, index)?;
                }
                self.slots[index].pid = Some(child);
                Ok(())
            }
            Err(e) => {
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
                Err(e.into())
            }
        }
    }

    /// The new loop's life; returns its exit status.
    fn become_loop(
        &mut self,
        index: usize,
        pairs: Pairs,
        supervisor: nix::unistd::Pid,
        mask: SigSet,
    ) -> i32 {
        // SAFETY: plain calls on this process; it has one thread.
        unsafe {
            // A loop does not outlive its supervisor (kill -9 of the service included).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        if nix::unistd::getppid() != supervisor {
            return 1;
        }
        self.let_go();
        let ((_, sub), (_, cmd)) = pairs;
        let bus = BusEnds {
            sub: Some(sub.into_raw_fd()),
            cmd: Some(cmd.into_raw_fd()),
        };
        let place = Place {
            index,
            count: self.slots.len(),
            bus,
            node_id: self.names.get(index).cloned().unwrap_or_default(),
            board: self.board.for_loop(index),
        };
        let server = self.loop_server(place);
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                error!("loop {index} cannot start: {e}");
                return 1;
            }
        };
        match server.run() {
            Ok(Exit::LoopRestart(Some(history))) => match write_history(&self.history, &history) {
                Ok(()) => {
                    log::debug!("loop {index} handed on {} bytes of history", history.len());
                    0
                }
                Err(e) => {
                    error!("restart: channel history not handed on: {e}");
                    1
                }
            },
            Ok(_) => 0,
            Err(e) => {
                error!("loop {index} failed: {e}");
                1
            }
        }
    }

    /// Drops what the new process inherited of the supervisor: its signal handlers, the poll
    /// and the bus's connections to the other loops (which must see EOF when the supervisor's
    /// end closes), and the variables systemd set for the supervisor.
    fn let_go(&mut self) {
        drop(self.signals.take());
        // SAFETY: descriptors this process inherited and never uses again; the supervisor's
        // structures that hold them are never dropped here (the process exits).
        unsafe {
            for fd in self.bus.raw_fds() {
                libc::close(fd);
            }
            libc::close(self.poll.as_raw_fd());
        }
        for var in SUPERVISOR_ONLY {
            // SAFETY: this process has one thread.
            unsafe { std::env::remove_var(var) };
        }
    }

    fn loop_server(&self, place: Place) -> Result<Server, crate::server::StartError> {
        let listener = self
            .listener
            .try_clone()
            .map_err(crate::server::StartError::Poll)?;
        let fifo = match (&self.fifo, place.index) {
            (Some(f), 0) => {
                let fd = f.dup_fd().map_err(crate::server::StartError::Poll)?;
                Reader::Shared(Fifo::adopt(f.path(), f.mode(), fd)?)
            }
            _ => Reader::None,
        };
        let prepared = Prepared {
            listener: mio::net::TcpListener::from_std(listener),
            fifo,
            place: Some(place),
        };
        Server::start(self.sources.clone(), self.cfg.clone(), prepared)
    }
}

/// The first loop hands the channel history to the supervisor, for the next process.
fn write_history(file: &File, bytes: &[u8]) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(bytes, 0)
}
