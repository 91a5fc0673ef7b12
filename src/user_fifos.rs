//! Per-user FIFOs (CarbonPHP's user pipes): `users/<name>.fifo` beside the broadcast FIFO, one
//! per validated user while the user has a connection. The core decides when one opens and
//! closes; this is the loop's side: the open files and their poll tokens.

use std::collections::HashMap;
use std::path::Path;

use log::warn;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::fifo::{Fifo, FifoError};

pub struct UserFifos {
    token_base: usize,
    /// The loops of one process hold users' FIFOs together (`Fifo::open_shared_reader`), and
    /// one of them reads each: the one the bus grants it to (`loops/readers.rs`).
    shared: bool,
    /// User → the FIFO, its slot, and whether this loop reads it (watches it).
    by_user: HashMap<String, (Fifo, usize, bool)>,
    /// Slot → user, for tokens.
    slots: Slab<String>,
}

impl UserFifos {
    pub fn new(token_base: usize, shared: bool) -> UserFifos {
        UserFifos {
            token_base,
            shared,
            by_user: HashMap::new(),
            slots: Slab::new(),
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 - self.token_base < (1 << 32)
    }

    /// Opens (creating) the user's FIFO and watches it; shared by loops, it is watched once the
    /// bus grants it ([`UserFifos::grant`]). Returns whether it opened.
    pub fn open(&mut self, registry: &Registry, user: &str, path: &Path, mode: u32) -> bool {
        if self.by_user.contains_key(user) {
            return false;
        }
        let open = if self.shared {
            Fifo::open_shared_reader
        } else {
            Fifo::open
        };
        let fifo = match open(path, mode) {
            Ok(f) => f,
            // `users/` is ours: a plain file there is what a script writing to an absent user's
            // FIFO leaves behind. Replace it.
            Err(FifoError::NotAFifo { .. }) => {
                warn!(
                    "{} is a plain file, not a FIFO; replacing it",
                    path.display()
                );
                let _ = std::fs::remove_file(path);
                match open(path, mode) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!("per-user FIFO for {user}: {e}");
                        return false;
                    }
                }
            }
            Err(e) => {
                warn!("per-user FIFO for {user}: {e}");
                return false;
            }
        };
        let slot = self.slots.insert(user.to_string());
        self.by_user.insert(user.to_string(), (fifo, slot, false));
        if !self.shared {
            self.grant(registry, user);
        }
        true
    }

    /// This loop reads the user's FIFO from now on (what waits in it comes as an event).
    pub fn grant(&mut self, registry: &Registry, user: &str) {
        let Some((fifo, slot, reading)) = self.by_user.get_mut(user).filter(|f| !f.2) else {
            return;
        };
        let token = Token(self.token_base + *slot);
        let fd = fifo.raw_fd();
        match registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
            Ok(()) => *reading = true,
            Err(e) => warn!("cannot watch {}: {e}", fifo.path().display()),
        }
    }

    /// The user's last connection closed: the FIFO goes. Returns whether it was open.
    pub fn close(&mut self, registry: &Registry, user: &str) -> bool {
        let Some((fifo, slot, reading)) = self.by_user.remove(user) else {
            return false;
        };
        if reading {
            let _ = registry.deregister(&mut SourceFd(&fifo.raw_fd()));
        }
        self.slots.try_remove(slot);
        match self.shared {
            true => fifo.remove_if_last(),
            false => fifo.remove(),
        }
        true
    }

    /// The user and FIFO behind a token.
    pub fn get_mut(&mut self, token: Token) -> Option<(&str, &mut Fifo)> {
        let user = self.slots.get(token.0.checked_sub(self.token_base)?)?;
        let (fifo, _, _) = self.by_user.get_mut(user)?;
        Some((user.as_str(), fifo))
    }

    /// Removes every FIFO from the file system (shutdown).
    pub fn remove_all(&mut self) {
        for (_, (fifo, _, _)) in self.by_user.drain() {
            match self.shared {
                true => fifo.remove_if_last(),
                false => fifo.remove(),
            }
        }
    }
}
