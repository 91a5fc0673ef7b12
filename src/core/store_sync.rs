//! When the app store's table was last read, and whether a read runs or is asked for
//! (`app_sync.rs` is the glue that reads it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An app asked for by key (a WebSocket connect) or by id (a REST call).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    Key(String),
    Id(String),
}

/// Distinct lookups running at once, at most; past that a request for an app not read yet is
/// answered as for an unknown app.
const MAX_LOOKUPS: usize = 64;
/// "No such app" answers remembered, at most (a flood of distinct unknown keys).
const MAX_UNKNOWN: usize = 100_000;
/// Lookups started per second, at most: distinct unknown keys are not remembered before their
/// first lookup, so a flood of them must not become a flood of queries. Past it, a request for
/// an app not read yet is answered as for an unknown app (a client retries).
const LOOKUPS_PER_SECOND: u32 = 20;

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
    /// Lookups running, and the connections (key, id) waiting for each.
    lookups: HashMap<Lookup, Vec<(usize, u64)>>,
    /// Keys and ids the store said it does not have, until when that is believed.
    unknown: HashMap<Lookup, Instant>,
    /// The second lookups are counted in, and how many started in it.
    window: Option<(Instant, u32)>,
    /// A worker waits for the table's NOTIFY; or, after one failed, when to try again.
    watching: bool,
    watch_again: Option<Instant>,
    reads: u64,
    started: u64,
    /// Loops of the process sharing the database's bounds (each takes this part of them).
    loops: u32,
    /// A read once the watcher that replaced one that saw a change surely listens: a change
    /// made between the two watchers is read then, not a `cache_ttl_secs` later.
    again_at: Option<Instant>,
}

/// How long after a change the table is read once more (a new watcher listens well before).
const READ_AGAIN_AFTER: Duration = Duration::from_secs(3);

/// What a connection asking for an app not read yet does.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// Waits for the lookup that runs already.
    Joined,
    /// Waits for a lookup to start now.
    Start,
    /// Goes on at once: the app is known not to exist, or too many lookups run.
    No,
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
        let again = self.again_at.is_some_and(|t| now >= t);
        let due = match self.last {
            None => true,
            Some(at) => self.asked || again || now.saturating_duration_since(at) >= ttl,
        };
        if !due {
            return Due::Later;
        }
        (self.running, self.asked, self.last) = (true, false, Some(now));
        if again {
            self.again_at = None;
        }
        self.reads += 1;
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

    /// Whether no read asked for (by a SIGHUP) is still to run or running.
    pub fn settled(&self) -> bool {
        !self.asked && !self.running
    }

    /// Whether the last read of the table failed (for `/up`).
    /// One of `loops` loops of a process: the lookup bounds are the machine's, divided.
    pub fn share(&mut self, loops: usize) {
        self.loops = u32::try_from(loops).unwrap_or(u32::MAX);
    }

    pub fn failing(&self) -> bool {
        self.failing
    }

    /// Connection `waiter` asks for an app not read yet.
    pub fn wait_for(&mut self, what: &Lookup, waiter: (usize, u64), now: Instant) -> Wait {
        if self.unknown.get(what).is_some_and(|&until| now < until) {
            return Wait::No;
        }
        if let Some(waiters) = self.lookups.get_mut(what) {
            waiters.push(waiter);
            return Wait::Joined;
        }
        let most = (MAX_LOOKUPS / self.loops.max(1) as usize).max(1);
        if self.lookups.len() >= most || !self.within_rate(now) {
            return Wait::No;
        }
        self.started += 1;
        self.lookups.insert(what.clone(), vec![waiter]);
        Wait::Start
    }

    fn within_rate(&mut self, now: Instant) -> bool {
        let window = match self.window {
            Some((at, n)) if now.saturating_duration_since(at) < Duration::from_secs(1) => (at, n),
            _ => (now, 0),
        };
        let ok = window.1 < (LOOKUPS_PER_SECOND / self.loops.max(1)).max(1);
        self.window = Some((window.0, window.1 + u32::from(ok)));
        ok
    }

    /// Whether to start a worker that waits for the table's changes now (then it counts as
    /// running).
    pub fn watch(&mut self, now: Instant) -> bool {
        if self.watching || self.watch_again.is_some_and(|at| now < at) {
            return false;
        }
        self.watching = true;
        true
    }

    /// The worker waiting for changes ended: `changed` ids were announced (the table is read
    /// again at once), or it failed (`ok` false: tried again in `backoff`).
    pub fn watched(&mut self, ok: bool, changed: bool, now: Instant, backoff: Duration) {
        self.watching = false;
        self.watch_again = (!ok).then_some(now + backoff);
        if changed {
            self.asked = true;
            self.again_at = Some(now + READ_AGAIN_AFTER);
        }
    }

    /// Reads of the whole table started.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Lookups of one app started.
    pub fn lookups(&self) -> u64 {
        self.started
    }

    /// A lookup ended: the connections that waited for it. `found` false: the store has no
    /// such app (or did not answer), believed for `negative`.
    pub fn looked_up(
        &mut self,
        what: &Lookup,
        found: bool,
        now: Instant,
        negative: Duration,
    ) -> Vec<(usize, u64)> {
        if !found {
            if self.unknown.len() >= MAX_UNKNOWN {
                self.unknown.retain(|_, until| now < *until);
                if self.unknown.len() >= MAX_UNKNOWN {
                    self.unknown.clear();
                }
            }
            self.unknown.insert(what.clone(), now + negative);
        } else {
            self.unknown.remove(what);
        }
        self.lookups.remove(what).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_shared_remembered_and_rate_bounded() {
        let (mut s, t) = (StoreSync::default(), Instant::now());
        let k = |n: u32| Lookup::Key(format!("k{n}"));
        assert_eq!(s.wait_for(&k(0), (1, 1), t), Wait::Start);
        assert_eq!(
            s.wait_for(&k(0), (2, 2), t),
            Wait::Joined,
            "one query for both"
        );
        let ten = Duration::from_secs(10);
        assert_eq!(s.looked_up(&k(0), false, t, ten), [(1, 1), (2, 2)]);
        assert_eq!(
            s.wait_for(&k(0), (3, 3), t),
            Wait::No,
            "remembered as unknown"
        );
        assert_eq!(
            s.wait_for(&k(0), (3, 3), t + ten),
            Wait::Start,
            "until negative_ttl"
        );
        // The rest of this second's budget, then no more until the next second.
        let started: Vec<Wait> = (1..40)
            .map(|n| s.wait_for(&k(n), (9, 9), t + ten))
            .collect();
        let n = started.iter().filter(|w| **w == Wait::Start).count();
        assert_eq!(n as u32, LOOKUPS_PER_SECOND - 1);
        assert_eq!(s.lookups(), u64::from(LOOKUPS_PER_SECOND) + 1);
    }
}
