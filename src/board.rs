//! A board in shared memory where each loop of a process pins a snapshot of its numbers (its
//! `/metrics` samples), so any loop can answer `/metrics`, `/up` and the console for the whole
//! process without asking the others. Made by the supervisor before it forks; each loop writes
//! its own slot only. A slot is a sequence lock: a reader copies, then checks the writer did
//! not move meanwhile (and tries again if it did).

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Bytes per loop's slot. Only the pages a loop writes take memory.
const SLOT_BYTES: usize = 4 << 20;
/// The slot's header: the sequence number and the length of the snapshot.
const HEADER: usize = 16;
/// Reads of a slot that is being written, before the reader gives up on it for this time.
const TRIES: usize = 16;

/// Keys the counts table holds (addresses, apps, the total) before it stops taking new ones.
const COUNT_KEYS: usize = 1 << 18;
/// Rate limits (apps' REST rates) the process can hold.
const BUCKETS: usize = 1 << 16;
/// Slots tried for a key before the table is taken for full.
const PROBES: usize = 64;

#[derive(Clone, Debug)]
pub struct Board {
    base: *mut u8,
    /// The counts table: per key, its hash and one count per loop (each loop writes its own).
    counts: *mut u8,
    /// Token buckets every loop takes from: per key, its hash and its state.
    buckets: *mut u8,
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
        let base = shared_map(len)?;
        let counts = shared_map(COUNT_KEYS * stride(slots))?;
        let buckets = shared_map(BUCKETS * 16)?;
        // Never unmapped: it lives as long as the processes that share it.
        Ok(Board {
            base,
            counts,
            buckets,
            slots,
            me: None,
        })
    }

    /// How many loops share the board.
    pub fn loops(&self) -> usize {
        self.slots
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

    /// Empties a slot and a loop's counts: it died (the supervisor), so its numbers leave the
    /// sums.
    pub fn clear(&self, slot: usize) {
        if slot < self.slots {
            let seq = self.seq(slot);
            seq.fetch_add(1, Ordering::AcqRel);
            self.len(slot).store(0, Ordering::Relaxed);
            seq.fetch_add(1, Ordering::AcqRel);
            for i in 0..COUNT_KEYS {
                if self.key_at(i).load(Ordering::Relaxed) != 0 {
                    self.count_at(i, slot).store(0, Ordering::Relaxed);
                }
            }
        }
    }

    fn key_at(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i < COUNT_KEYS, inside the counts mapping; 8-aligned (stride is).
        unsafe { &*self.counts.add(i * stride(self.slots)).cast::<AtomicU64>() }
    }

    fn count_at(&self, i: usize, slot: usize) -> &AtomicU32 {
        // SAFETY: slot < slots, so inside key i's stride; 4-aligned.
        unsafe {
            &*self
                .counts
                .add(i * stride(self.slots) + 8 + 4 * slot)
                .cast::<AtomicU32>()
        }
    }

    /// The table index of `key`, claimed when absent and `claim`; `None` when the table has no
    /// room for it (its limit then counts this loop alone).
    fn find(&self, key: &str, claim: bool) -> Option<usize> {
        let h = hash(key);
        for probe in 0..PROBES {
            let i = (h as usize).wrapping_add(probe) % COUNT_KEYS;
            let slot = self.key_at(i);
            match slot.load(Ordering::Acquire) {
                k if k == h => return Some(i),
                0 if !claim => return None,
                0 => match slot.compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(i),
                    Err(k) if k == h => return Some(i),
                    Err(_) => continue,
                },
                _ => continue,
            }
        }
        if claim {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                log::warn!("the loops' table of counts is full: limits on new keys count one loop");
            }
        }
        None
    }

    /// This loop's count of `key` (connections from an address, of an app, in all).
    pub fn set_count(&self, key: &str, n: usize) {
        let Some(me) = self.me else {
            return;
        };
        let Some(i) = self.find(key, n > 0) else {
            return;
        };
        self.count_at(i, me)
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Release);
    }

    /// Takes `n` tokens from the bucket `key` (refilled at `rate` per second, holding at most
    /// `rate`), shared by every loop: the rate is the process's, as with one loop. `None` when
    /// the table has no room for the key.
    pub fn take_tokens(&self, key: &str, rate: u32, n: u32) -> Option<bool> {
        let h = hash(key);
        let slot = (0..PROBES).find_map(|probe| {
            let i = (h as usize).wrapping_add(probe) % BUCKETS;
            // SAFETY: i < BUCKETS, inside the buckets mapping, 16-aligned.
            let k = unsafe { &*self.buckets.add(i * 16).cast::<AtomicU64>() };
            let claimed = match k.load(Ordering::Acquire) {
                0 => k
                    .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
                    .map_or_else(
                        |k| k == h,
                        |_| {
                            // A new bucket starts full.
                            self.bucket_state(i)
                                .store(bucket(u64::from(rate) * 1000, now_ms()), Ordering::Release);
                            true
                        },
                    ),
                k => k == h,
            };
            claimed.then_some(i)
        })?;
        let state = self.bucket_state(slot);
        let (full, want) = (u64::from(rate) * 1000, u64::from(n) * 1000);
        let mut current = state.load(Ordering::Acquire);
        loop {
            let now = now_ms();
            let (tokens, last) = (current >> 32, current & 0xffff_ffff);
            let elapsed = (now.wrapping_sub(last)) & 0xffff_ffff;
            let tokens = tokens
                .saturating_add(elapsed.saturating_mul(u64::from(rate)))
                .min(full);
            let (ok, left) = match tokens.checked_sub(want) {
                Some(left) => (true, left),
                None => (false, tokens),
            };
            match state.compare_exchange(
                current,
                bucket(left, now),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(ok),
                Err(seen) => current = seen,
            }
        }
    }

    fn bucket_state(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i < BUCKETS; the state is the second word of the bucket's 16 bytes.
        unsafe { &*self.buckets.add(i * 16 + 8).cast::<AtomicU64>() }
    }

    /// The other loops' counts of `key`, added up.
    pub fn others_count(&self, key: &str) -> usize {
        let Some(i) = self.find(key, false) else {
            return 0;
        };
        (0..self.slots)
            .filter(|&s| Some(s) != self.me)
            .map(|s| self.count_at(i, s).load(Ordering::Acquire) as usize)
            .sum()
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

/// A bucket's state: thousandths of tokens (high half, at most u32::MAX) and the time of
/// the last refill in ms (low half, wrapping).
fn bucket(milli_tokens: u64, at_ms: u64) -> u64 {
    (milli_tokens.min(u64::from(u32::MAX)) << 32) | (at_ms & 0xffff_ffff)
}

/// Milliseconds of the monotonic clock, the same in every process of the machine.
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + ts.tv_nsec as u64 / 1_000_000
}

/// Bytes per key of the counts table: the hash and a count per loop, 8-aligned.
fn stride(slots: usize) -> usize {
    (8 + 4 * slots).next_multiple_of(8)
}

/// A key's hash, never 0 (0 marks a free slot). The same in every process of one binary.
fn hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish().max(1)
}

/// A shared anonymous mapping, zeroed; its pages take memory once written.
fn shared_map(len: usize) -> io::Result<*mut u8> {
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
    Ok(base.cast())
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

    #[test]
    fn a_bucket_is_shared_by_every_loop() {
        let board = Board::new(2).unwrap();
        let (a, b) = (board.for_loop(0), board.for_loop(1));
        assert_eq!(a.take_tokens("rest:app", 3, 2), Some(true));
        assert_eq!(b.take_tokens("rest:app", 3, 1), Some(true));
        assert_eq!(a.take_tokens("rest:app", 3, 1), Some(false));
        assert_eq!(b.take_tokens("other", 3, 3), Some(true));
    }

    #[test]
    fn counts_are_summed_over_the_other_loops_and_a_dead_loops_leave() {
        let board = Board::new(3).unwrap();
        let (a, b, c) = (board.for_loop(0), board.for_loop(1), board.for_loop(2));
        a.set_count("ip:127.0.0.1", 2);
        b.set_count("ip:127.0.0.1", 3);
        assert_eq!(c.others_count("ip:127.0.0.1"), 5);
        assert_eq!(a.others_count("ip:127.0.0.1"), 3);
        assert_eq!(a.others_count("ip:10.0.0.1"), 0);
        board.clear(1);
        assert_eq!(c.others_count("ip:127.0.0.1"), 2);
        b.set_count("total", 0);
        assert_eq!(a.others_count("total"), 0);
    }
}
