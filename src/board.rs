//! A board in shared memory where each loop of a process pins a snapshot of its numbers (its
//! `/metrics` samples), so any loop can answer `/metrics`, `/up` and the console for the whole
//! process without asking the others. Made by the supervisor before it forks; each loop writes
//! its own slot only. A slot is a sequence lock: a reader copies, then checks the writer did
//! not move meanwhile (and tries again if it did).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Bytes per loop's slot. Only the pages a loop writes take memory.
const SLOT_BYTES: usize = 4 << 20;
/// The slot's header: the sequence number and the length of the snapshot.
const HEADER: usize = 16;
/// Reads of a slot that is being written, before the reader gives up on it for this time.
const TRIES: usize = 16;

#[derive(Clone, Debug)]
pub struct Board {
    base: *mut u8,
    slots: usize,
    /// This process's slot (`None` in the supervisor).
    me: Option<usize>,
}

impl Board {
    /// A board for `slots` loops, shared with every process forked after.
    pub fn new(slots: usize) -> io::Result<Board> {
        let len = slots
            .checked_mul(SLOT_BYTES)
            .ok_or_else(|| io::Error::other("board too large"))?;
        // SAFETY: a fresh anonymous shared mapping; nothing else refers to it yet.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Never unmapped: it lives as long as the processes that share it.
        Ok(Board {
            base: base.cast(),
            slots,
            me: None,
        })
    }

    /// The same board, as loop `index` sees it.
    pub fn for_loop(&self, index: usize) -> Board {
        Board {
            me: Some(index).filter(|&i| i < self.slots),
            ..self.clone()
        }
    }

    fn seq(&self, slot: usize) -> &AtomicU64 {
        // SAFETY: in bounds (slot < slots), 8-aligned (page-aligned mapping, SLOT_BYTES a
        // multiple of 8); the mapping outlives every `Board`.
        unsafe { &*self.base.add(slot * SLOT_BYTES).cast::<AtomicU64>() }
    }

    fn len(&self, slot: usize) -> &AtomicU64 {
        // SAFETY: as `seq`, 8 bytes further.
        unsafe { &*self.base.add(slot * SLOT_BYTES + 8).cast::<AtomicU64>() }
    }

    /// Pins this loop's snapshot (cut to the slot's size).
    pub fn pin(&self, snapshot: &[u8]) {
        let Some(me) = self.me else {
            return;
        };
        let n = snapshot.len().min(SLOT_BYTES - HEADER);
        let seq = self.seq(me);
        seq.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
        self.len(me).store(n as u64, Ordering::Relaxed);
        // SAFETY: the slot's data area, in bounds; only this process writes this slot.
        unsafe {
            let data = self.base.add(me * SLOT_BYTES + HEADER);
            std::ptr::copy_nonoverlapping(snapshot.as_ptr(), data, n);
        }
        fence(Ordering::Release);
        seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Empties a slot: its loop died (the supervisor), so its numbers leave the sums.
    pub fn clear(&self, slot: usize) {
        if slot < self.slots {
            let seq = self.seq(slot);
            seq.fetch_add(1, Ordering::AcqRel);
            self.len(slot).store(0, Ordering::Relaxed);
            seq.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The other loops' snapshots (a slot being rewritten all the while is left out).
    pub fn others(&self) -> Vec<Vec<u8>> {
        (0..self.slots)
            .filter(|&s| Some(s) != self.me)
            .filter_map(|s| self.read(s))
            .filter(|snapshot| !snapshot.is_empty())
            .collect()
    }

    fn read(&self, slot: usize) -> Option<Vec<u8>> {
        let seq = self.seq(slot);
        for _ in 0..TRIES {
            let before = seq.load(Ordering::Acquire);
            if !before.is_multiple_of(2) {
                std::hint::spin_loop();
                continue;
            }
            let n = (self.len(slot).load(Ordering::Relaxed) as usize).min(SLOT_BYTES - HEADER);
            let mut out = vec![0u8; n];
            // SAFETY: the slot's data area, in bounds. A concurrent write is detected by the
            // sequence number below and the copy thrown away.
            unsafe {
                let data = self.base.add(slot * SLOT_BYTES + HEADER);
                std::ptr::copy_nonoverlapping(data, out.as_mut_ptr(), n);
            }
            fence(Ordering::Acquire);
            if seq.load(Ordering::Acquire) == before {
                return Some(out);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_loop_reads_what_another_pinned() {
        let board = Board::new(3).unwrap();
        let (a, b) = (board.for_loop(0), board.for_loop(1));
        a.pin(b"ferrocast_connections 3\n");
        b.pin(b"ferrocast_connections 4\n");
        assert_eq!(b.others(), vec![b"ferrocast_connections 3\n".to_vec()]);
        assert_eq!(a.others(), vec![b"ferrocast_connections 4\n".to_vec()]);
        // SAFETY: the child only writes to the shared board and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                board.for_loop(2).pin(b"from the child");
                std::process::exit(0);
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert!(a.others().contains(&b"from the child".to_vec()));
        board.clear(1);
        assert_eq!(a.others(), vec![b"from the child".to_vec()]);
    }
}
