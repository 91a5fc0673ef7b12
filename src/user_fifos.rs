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
    /// The loops of one process read users' FIFOs together (`Fifo::open_shared_reader`).
    shared: bool,
    by_user: HashMap<String, (Fifo, usize)>,
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

    /// Opens (creating) the user's FIFO and watches it.
    pub fn open(&mut self, registry: &Registry, user: &str, path: &Path, mode: u32) {
        if self.by_user.contains_key(user) {
            return;
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
                    Err(e) => return warn!("per-user FIFO for {user}: {e}"),
                }
            }
            Err(e) => return warn!("per-user FIFO for {user}: {e}"),
        };
        let slot = self.slots.insert(user.to_string());
        let token = Token(self.token_base + slot);
        let fd = fifo.raw_fd();
        if let Err(e) = registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
            warn!("cannot watch {}: {e}", path.display());
            self.slots.remove(slot);
            fifo.remove();
            return;
        }
        self.by_user.insert(user.to_string(), (fifo, slot));
    }

    /// The user's last connection closed: the FIFO goes.
    pub fn close(&mut self, registry: &Registry, user: &str) {
        if let Some((fifo, slot)) = self.by_user.remove(user) {
            let _ = registry.deregister(&mut SourceFd(&fifo.raw_fd()));
            self.slots.try_remove(slot);
            match self.shared {
                true => fifo.remove_if_last(),
                false => fifo.remove(),
            }
        }
    }

    /// The user and FIFO behind a token.
    pub fn get_mut(&mut self, token: Token) -> Option<(&str, &mut Fifo)> {
        let user = self.slots.get(token.0.checked_sub(self.token_base)?)?;
        let (fifo, _) = self.by_user.get_mut(user)?;
        Some((user.as_str(), fifo))
    }

    /// Removes every FIFO from the file system (shutdown).
    pub fn remove_all(&mut self) {
        for (_, (fifo, _)) in self.by_user.drain() {
            match self.shared {
                true => fifo.remove_if_last(),
                false => fifo.remove(),
            }
        }
    }
}
