//! The server's life after start: signals, reloads, the shutdown drain and what is left when
//! the loop ends.

use std::io;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};

use super::{Exit, Handoff, Server};
use crate::config::Config;
use crate::core::Stop;

impl Server {
    // ---- signals ---------------------------------------------------------------------------

    pub(super) fn handle_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT | SIGUSR2 => self.begin_shutdown(signal),
                SIGHUP => self.reload(),
                SIGCHLD => {
                    let registry = self.poll.registry();
                    self.workers.reap(registry, &mut self.finished);
                }
                _ => {}
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self, signal: i32) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let (name, how) = match signal {
            SIGINT => ("SIGINT", Stop::GoingAway),
            // Restart: browsers reconnect at once on 1012, and the new process is already
            // listening on the same socket by then.
            SIGUSR2 => ("SIGUSR2 (restart)", Stop::Restart),
            _ => ("SIGTERM", Stop::GoingAway),
        };
        info!("received {name}");
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
        // Whatever scripts wrote before the signal is delivered before the goodbye.
        self.core.stop_holding();
        self.read_fifo(usize::MAX);
        if self.place.is_some() && self.fifo.reads() && signal != SIGUSR2 {
            // The other loops stop on this word, once they have what was just published.
            self.core.tell_loops(&format!("stop:{signal}"));
        }
        self.core.shutdown(how);
        let draining = format!("draining {} connection(s)", self.core.connections());
        let _ = crate::systemd::status(&draining);
        let timeout = self.core.cfg().shutdown_timeout_secs;
        self.shutdown_deadline = Some(Instant::now() + Duration::from_secs(timeout));
    }

    fn reload(&mut self) {
        let _ = crate::systemd::reloading();
        match self.sources.load() {
            Ok(mut new) => {
                if let Some(place) = &self.place {
                    place.adjust(&mut new);
                }
                self.reload_tls(&new);
                self.core.reload(new);
            }
            Err(e) => {
                error!("configuration reload failed, keeping the running configuration: {e}")
            }
        }
        self.reload_pending = true;
    }

    /// Once a reload is complete (the app store's table read again too): systemd hears
    /// `READY=1`, or, for one of several loops, the supervisor, which tells systemd once every
    /// loop's is.
    pub(super) fn report_reload(&mut self) {
        if !self.reload_pending || !self.core.reload_settled() {
            return;
        }
        self.reload_pending = false;
        match (&self.place, self.link.as_mut()) {
            (Some(_), Some(link)) => link.reloaded(self.poll.registry()),
            _ => {
                let _ = crate::systemd::ready("configuration reloaded");
            }
        }
    }

    fn reload_tls(&mut self, new: &Config) {
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
    }

    /// After the loop: what is left closes, and the FIFO is removed or handed on.
    pub(super) fn finish(mut self) -> io::Result<Exit> {
        let left = self.sockets.len();
        if left > 0 {
            warn!(
                "shutdown timeout reached with {left} connection(s) still flushing; closing them"
            );
        }
        self.workers.kill_all();
        self.user_fifos.remove_all();
        if self.place.is_some() {
            return self.finish_loop();
        }
        if let Some(listener) = self.restart_listener.take() {
            info!("restarting in place");
            let Some(fifo) = self.fifo.finish(true)? else {
                return Err(io::Error::other("no FIFO to hand on"));
            };
            let std_listener: std::net::TcpListener = listener.into();
            return Ok(Exit::Restart(Handoff {
                listener: std_listener.into(),
                fifo,
                history: self.core.history_snapshot(),
            }));
        }
        self.fifo.finish(false)?;
        info!("ferrocast stopped");
        Ok(Exit::Stopped)
    }

    /// The end of a supervisor's loop: the listener and the FIFO stay with the supervisor; on a
    /// restart the first loop hands on the channel history (every loop holds the same).
    fn finish_loop(mut self) -> io::Result<Exit> {
        self.fifo.finish(false)?;
        let first = self.place.as_ref().is_some_and(|p| p.index == 0);
        if self.restart_listener.take().is_some() {
            let history = first.then(|| self.core.history_snapshot());
            return Ok(Exit::LoopRestart(history));
        }
        Ok(Exit::Stopped)
    }
}
