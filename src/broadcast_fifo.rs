//! The loop's side of the broadcast FIFO: reading its lines into the core, re-creating it when
//! someone removed it, and what becomes of it when the loop ends. With several loops the
//! supervisor opens it and the first loop reads it ([`Reader::Shared`]): the supervisor keeps
//! the lock and the file, so a loop that dies or restarts leaves both in place.

use std::io;
use std::os::fd::OwnedFd;

use log::{error, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::core::Core;
use crate::fifo::Fifo;

/// Whose the FIFO is.
pub enum Reader {
    /// This process opened it: it re-creates it, and removes it on stop.
    Own(Fifo),
    /// A supervisor opened it and keeps it; this loop reads it.
    Shared(Fifo),
    /// Another loop reads it.
    None,
}

/// What a read did, for the loop's counters.
#[derive(Default)]
pub struct Read {
    /// The budget ran out with more to read.
    pub more: bool,
    /// Lines dropped for their length.
    pub dropped: u64,
}

impl Reader {
    fn fifo(&self) -> Option<&Fifo> {
        match self {
            Reader::Own(f) | Reader::Shared(f) => Some(f),
            Reader::None => None,
        }
    }

    fn fifo_mut(&mut self) -> Option<&mut Fifo> {
        match self {
            Reader::Own(f) | Reader::Shared(f) => Some(f),
            Reader::None => None,
        }
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        match self.fifo() {
            Some(f) => registry.register(&mut SourceFd(&f.raw_fd()), token, Interest::READABLE),
            None => Ok(()),
        }
    }

    /// Whether this process reads the FIFO.
    pub fn reads(&self) -> bool {
        self.fifo().is_some()
    }

    /// The path, for the start-up line.
    pub fn describe(&self) -> String {
        match self.fifo() {
            Some(f) => f.path().display().to_string(),
            None => "read by the first loop".into(),
        }
    }

    /// Reads and publishes lines, up to `budget` bytes.
    pub fn read(&mut self, core: &mut Core, scratch: &mut [u8], budget: usize) -> Read {
        let max_line = core.cfg().max_fifo_line_bytes;
        let Some(fifo) = self.fifo_mut() else {
            return Read::default();
        };
        let result =
            fifo.read_lines_within(scratch, max_line, budget, |line| core.on_fifo_line(line));
        match result {
            Ok(stats) => {
                for len in &stats.dropped {
                    warn!(
                        "dropped a FIFO line of {len} bytes: over max_fifo_line_bytes ({max_line})"
                    );
                }
                Read {
                    more: stats.more,
                    dropped: stats.dropped.len() as u64,
                }
            }
            Err(e) => {
                error!("reading FIFO {}: {e}", fifo.path().display());
                Read::default()
            }
        }
    }

    /// Re-creates the FIFO if someone deleted or replaced it (after `drain` delivered what the
    /// old one still holds). A supervisor's FIFO is the supervisor's to re-create: its reader
    /// follows once the new one is there.
    pub fn check(&mut self, registry: &Registry, token: Token, drain: impl FnOnce(&mut Self)) {
        let (fifo, shared) = match self {
            Reader::Own(f) => (f, false),
            Reader::Shared(f) => (f, true),
            Reader::None => return,
        };
        if !fifo.is_detached() {
            return;
        }
        let reopened = if shared {
            Fifo::open_shared(fifo.path(), fifo.mode())
        } else {
            fifo.reopen()
        };
        match reopened {
            Ok(new) => {
                drain(self);
                if let Some(old) = self.fifo() {
                    let _ = registry.deregister(&mut SourceFd(&old.raw_fd()));
                }
                if let Err(e) =
                    registry.register(&mut SourceFd(&new.raw_fd()), token, Interest::READABLE)
                {
                    error!("cannot watch the re-created FIFO: {e}");
                }
                let path = new.path().display().to_string();
                let old = std::mem::replace(
                    self,
                    if shared {
                        Reader::Shared(new)
                    } else {
                        Reader::Own(new)
                    },
                );
                if let Reader::Shared(old) = old {
                    drop(old.into_fd()); // its lock is the supervisor's
                }
                match shared {
                    true => info!("FIFO {path} was re-created; reading the new one"),
                    false => warn!("FIFO {path} was removed or replaced; re-created it"),
                }
            }
            Err(_) if shared => {} // the supervisor has not re-created it yet
            Err(e) => error!(
                "FIFO {} is gone and cannot be re-created: {e}",
                fifo.path().display()
            ),
        }
    }

    /// The loop ended: the FIFO is handed on (`restart`), removed, or left to the supervisor.
    pub fn finish(self, restart: bool) -> io::Result<Option<OwnedFd>> {
        match self {
            Reader::Own(fifo) if restart => fifo.into_fd().map(Some),
            Reader::Own(fifo) => {
                fifo.remove();
                Ok(None)
            }
            // Dropping it would unlock the supervisor's description.
            Reader::Shared(fifo) => {
                drop(fifo.into_fd()?);
                Ok(None)
            }
            Reader::None => Ok(None),
        }
    }
}
