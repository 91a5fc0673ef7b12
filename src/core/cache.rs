//! The last event of every cache channel (Pusher's `cache-*` channels): kept for a fixed time
//! to live (`cache_ttl_secs`, 30 minutes as on Pusher), then dropped; bounded in bytes
//! (`max_cache_bytes`), oldest first out.
//!
//! Because every entry lives for the same time, the order of expiry is the order of insertion:
//! a queue of `(expiry, key)` records finds what is due without scanning. A channel published
//! again leaves its older record behind as stale (its expiry no longer matches the entry's);
//! stale records are skipped when they reach the front, and the queue is rebuilt when they
//! outnumber the live ones, so it never holds more than about twice the entries.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ws::Frame;

/// What one entry costs beyond its name and frame: the map slot, the queue record, the `Rc`.
const ENTRY_OVERHEAD: usize = 96;

type Key = (u16, Box<str>);

struct Entry {
    frame: Frame,
    expires: Instant,
}

pub struct CacheStore {
    entries: HashMap<Key, Entry>,
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
    max_bytes: usize,
    ttl: Duration,
    /// Entries dropped to make room, and dropped because their time ran out.
    pub evicted: u64,
    pub expired: u64,
}

impl CacheStore {
    pub fn new(max_bytes: usize, ttl: Duration) -> CacheStore {
        CacheStore {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
            ttl,
            evicted: 0,
            expired: 0,
        }
    }

    /// New limits (configuration reload): a shorter time to live applies to new entries, a
    /// smaller size at the next insertion.
    pub fn set_limits(&mut self, max_bytes: usize, ttl: Duration) {
        self.max_bytes = max_bytes;
        self.ttl = ttl;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Remembers `frame` as the channel's last event, making room by dropping the entries
    /// closest to expiry. An entry larger than the whole store is not kept.
    pub fn insert(&mut self, app: u16, channel: &str, frame: Frame, now: Instant) {
        let key: Key = (app, channel.into());
        let cost = entry_cost(&key, &frame);
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= entry_cost(&key, &old.frame);
        }
        if cost > self.max_bytes {
            return;
        }
        while self.bytes + cost > self.max_bytes && self.pop_oldest() {
            self.evicted += 1;
        }
        let expires = now + self.ttl;
        self.order.push_back((expires, key.clone()));
        self.entries.insert(key, Entry { frame, expires });
        self.bytes += cost;
        if self.order.len() > 2 * self.entries.len() + 64 {
            self.rebuild_order();
        }
    }

    /// The channel's last event and how long it has left, unless it expired.
    pub fn get(&self, app: u16, channel: &str, now: Instant) -> Option<(&Frame, Duration)> {
        let entry = self.entries.get(&(app, Box::<str>::from(channel)))?;
        let left = entry.expires.checked_duration_since(now)?;
        (!left.is_zero()).then_some((&entry.frame, left))
    }

    /// Drops every entry whose time ran out. Called once a second.
    pub fn expire(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if self.pop_oldest() {
                self.expired += 1;
            }
        }
    }

    /// Drops every entry of an app (disabled, or gone from the configuration).
    pub fn forget_app(&mut self, app: u16) {
        let before = self.entries.len();
        self.entries.retain(|(a, _), _| *a != app);
        if self.entries.len() != before {
            self.bytes = self
                .entries
                .iter()
                .map(|(k, e)| entry_cost(k, &e.frame))
                .sum();
            self.rebuild_order();
        }
    }

    /// Removes the record at the front of the queue and, unless it was stale, its entry.
    /// Returns whether an entry went.
    fn pop_oldest(&mut self) -> bool {
        let Some((expires, key)) = self.order.pop_front() else {
            return false;
        };
        match self.entries.get(&key) {
            Some(e) if e.expires == expires => {
                let e = self.entries.remove(&key).expect("just found");
                self.bytes -= entry_cost(&key, &e.frame);
                true
            }
            _ => false,
        }
    }

    fn rebuild_order(&mut self) {
        let mut order: Vec<(Instant, Key)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.expires, k.clone()))
            .collect();
        order.sort_unstable_by_key(|(t, _)| *t);
        self.order = order.into();
    }
}

fn entry_cost(key: &Key, frame: &Frame) -> usize {
    key.1.len() + frame.len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1800);

    fn frame(n: usize) -> Frame {
        vec![b'x'; n].into()
    }

    #[test]
    fn entries_expire_and_leave() {
        let t0 = Instant::now();
        let mut c = CacheStore::new(1 << 20, TTL);
        c.insert(0, "cache-a", frame(10), t0);
        assert!(c.get(0, "cache-a", t0).is_some());
        assert!(c.get(1, "cache-a", t0).is_none());
        c.expire(t0 + TTL - Duration::from_secs(1));
        assert_eq!(c.len(), 1);
        c.expire(t0 + TTL);
        assert_eq!((c.len(), c.bytes(), c.expired), (0, 0, 1));
    }

    #[test]
    fn republishing_renews_and_stale_records_stay_bounded() {
        let t0 = Instant::now();
        let mut c = CacheStore::new(1 << 20, TTL);
        for i in 0..10_000u64 {
            c.insert(0, "cache-a", frame(10), t0 + Duration::from_millis(i));
        }
        assert_eq!(c.len(), 1);
        assert!(c.order.len() <= 2 * c.len() + 64, "{}", c.order.len());
        // The first publish's expiry passes; the latest keeps the entry.
        c.expire(t0 + TTL + Duration::from_millis(5));
        assert_eq!(c.len(), 1);
        c.expire(t0 + TTL + Duration::from_secs(10));
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn bounded_in_bytes_oldest_out() {
        let t0 = Instant::now();
        let one = entry_cost(&(0, "cache-00".into()), &frame(100));
        let mut c = CacheStore::new(one * 10, TTL);
        for i in 0..25 {
            c.insert(
                0,
                &format!("cache-{i:02}"),
                frame(100),
                t0 + Duration::from_secs(i),
            );
        }
        assert_eq!(c.len(), 10);
        assert!(c.bytes() <= one * 10);
        assert_eq!(c.evicted, 15);
        assert!(c.get(0, "cache-00", t0).is_none());
        assert!(c.get(0, "cache-24", t0).is_some());
        // Larger than the whole store: not kept, and nothing else is pushed out for it.
        c.insert(0, "cache-huge", frame(one * 11), t0);
        assert_eq!(c.len(), 10);
    }

    #[test]
    fn forgetting_an_app_drops_its_entries() {
        let t0 = Instant::now();
        let mut c = CacheStore::new(1 << 20, TTL);
        c.insert(0, "cache-a", frame(10), t0);
        c.insert(1, "cache-a", frame(10), t0);
        c.forget_app(0);
        assert_eq!(c.len(), 1);
        assert!(c.get(1, "cache-a", t0).is_some());
        assert_eq!(c.bytes(), entry_cost(&(1, "cache-a".into()), &frame(10)));
    }
}
