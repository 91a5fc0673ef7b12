//! The connection timers: a hashed timing wheel with one-second slots.
//!
//! Every connection has at most one live deadline (handshake, next ping check, close linger).
//! Entries are never cancelled: a connection remembers the due time of its live entry, and an
//! entry that fires for a closed connection or with another due time is ignored. That makes
//! scheduling O(1) and keeps the per-connection cost of timers to one `u32`.

const SLOTS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: usize,
    /// The connection's unique id, so an entry never fires for a reused slab slot.
    pub id: u64,
    pub due: u32,
}

pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    /// Last second processed.
    current: u32,
    spare: Vec<Entry>,
}

impl Wheel {
    pub fn new(now: u32) -> Wheel {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            current: now,
            spare: Vec::new(),
        }
    }

    /// Schedules an entry; a due time in the past fires on the next advance.
    pub fn schedule(&mut self, key: usize, id: u64, due: u32) -> u32 {
        let due = due.max(self.current + 1);
        self.slots[due as usize % SLOTS].push(Entry { key, id, due });
        due
    }

    /// Moves time to `now`, appending every entry that came due to `fired`.
    pub fn advance(&mut self, now: u32, fired: &mut Vec<Entry>) {
        while self.current < now {
            self.current += 1;
            let idx = self.current as usize % SLOTS;
            std::mem::swap(&mut self.slots[idx], &mut self.spare);
            for e in self.spare.drain(..) {
                if e.due <= self.current {
                    fired.push(e);
                } else {
                    // Due a whole turn or more later: wait for another lap.
                    self.slots[idx].push(e);
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_laps() {
        let mut w = Wheel::new(0);
        w.schedule(1, 10, 3);
        w.schedule(2, 20, 3 + SLOTS as u32);
        w.schedule(3, 30, 0); // past: next second
        let mut fired = Vec::new();
        w.advance(1, &mut fired);
        assert_eq!(fired.iter().map(|e| e.key).collect::<Vec<_>>(), vec![3]);
        fired.clear();
        w.advance(3, &mut fired);
        assert_eq!(fired.iter().map(|e| e.key).collect::<Vec<_>>(), vec![1]);
        fired.clear();
        w.advance(2 + SLOTS as u32, &mut fired);
        assert!(fired.is_empty());
        w.advance(3 + SLOTS as u32, &mut fired);
        assert_eq!(fired.iter().map(|e| e.key).collect::<Vec<_>>(), vec![2]);
    }
}
