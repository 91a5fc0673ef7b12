//! When the app store's table was last read, and whether a read runs or is asked for
//! (`app_sync.rs` is the glue that reads it).

use std::time::{Duration, Instant};

#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Now,
    Later,
}

#[derive(Default)]
pub struct StoreSync {
    running: bool,
    asked: bool,
    last: Option<Instant>,
    /// The last read failed: the apps already read are used meanwhile.
    failing: bool,
}

impl StoreSync {
    /// SIGHUP: read the table at once (or right after the read that runs).
    pub fn ask(&mut self) {
        self.asked = true;
    }

    /// Whether a read is to start now (then it counts as running): the first one, one asked
    /// for, or `ttl` after the last.
    pub fn due(&mut self, now: Instant, ttl: Duration) -> Due {
        if self.running {
            return Due::Later;
        }
        let due = match self.last {
            None => true,
            Some(at) => self.asked || now.saturating_duration_since(at) >= ttl,
        };
        if !due {
            return Due::Later;
        }
        (self.running, self.asked, self.last) = (false, false, Some(now));
        self.running = true;
        Due::Now
    }

    /// A read ended, well or not. Returns whether that changes whether the store is failing
    /// (so it is logged once per outage).
    pub fn ended(&mut self, ok: bool) -> bool {
        self.running = false;
        let changed = self.failing == ok;
        self.failing = !ok;
        changed
    }

    /// Whether the last read of the table failed (for `/up`).
    pub fn failing(&self) -> bool {
        self.failing
    }
}
