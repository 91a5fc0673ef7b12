//! The loops' bus as one loop of several sees it: the barriers the loop asked for (set when the
//! input says so), and the FIFO publications it holds for them (`core/barrier.rs`), so the
//! clients that must receive one are those of when it goes out. A loop's bus does not come and
//! go: a loop that loses it ends, and another starts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferrocast::core::LinkOp;

/// How long the loop holds what waits for a barrier before it lets it go anyway.
const PATIENCE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Bus {
    /// This loop is one of several (`scaling.driver` is `bus`).
    pub on: bool,
    /// Barriers asked for and not set yet, in order.
    asked: VecDeque<u64>,
    /// What the loop holds, in its order.
    held: VecDeque<Held>,
}

/// A publication read from the FIFO and held: its number, its channels (none: a global line),
/// the barrier it waits for (known once the loop's effects show it) and since when.
pub struct Held {
    pub seq: u64,
    pub channels: Option<Vec<&'static str>>,
    barrier: Option<u64>,
    at: Instant,
}

impl Bus {
    pub fn new(on: bool) -> Bus {
        Bus {
            on,
            ..Default::default()
        }
    }

    /// A FIFO publication the loop holds now.
    pub fn hold(&mut self, seq: u64, channels: Option<Vec<&'static str>>, at: Instant) {
        (self.held).push_back(Held {
            seq,
            channels,
            barrier: None,
            at,
        });
    }

    /// An operation for the link: a barrier is the bus's (the publications held since the
    /// loop's last effects wait for it). Returns the others.
    pub fn take(&mut self, op: LinkOp) -> Option<LinkOp> {
        let LinkOp::Barrier(n) = op else {
            return Some(op);
        };
        self.asked.push_back(n);
        for h in self.held.iter_mut().filter(|h| h.barrier.is_none()) {
            h.barrier = Some(n);
        }
        None
    }

    /// The next barrier to set, with what it lets go.
    pub fn set_next(&mut self) -> Option<(u64, Vec<Held>)> {
        let n = self.asked.pop_front()?;
        Some((n, self.release(|h| h.barrier.is_some_and(|b| b <= n))))
    }

    pub fn asked(&self) -> bool {
        !self.asked.is_empty()
    }

    /// What waited past the loop's patience at `now`.
    pub fn late(&mut self, now: Instant) -> Vec<Held> {
        self.release(|h| now.saturating_duration_since(h.at) >= PATIENCE)
    }

    /// From the front, in order: the first that must wait holds those behind it.
    fn release(&mut self, due: impl Fn(&Held) -> bool) -> Vec<Held> {
        let mut out = Vec::new();
        while self.held.front().is_some_and(&due) {
            out.extend(self.held.pop_front());
        }
        out
    }
}
