//! Channel history: a bounded ring of recent publications per channel, so a client that comes
//! back can be given what it missed (`recover` on subscribe). Each stream has an epoch, new
//! whenever the stream starts afresh (first publication, or after it was dropped), and each
//! publication a strictly increasing offset within it: a client that names an epoch and offset
//! is either given every later publication, or told it cannot be — never a partial replay
//! presented as complete.
//!
//! Memory: every stream keeps at most its rule's `size` entries for its `ttl`, and all of them
//! together at most `max_history_bytes`, oldest first out across streams. An entry is the bare
//! frame the live path encoded (shared with the queues it went to) and the event's name; the
//! other forms of a replayed publication are made again only when a client recovers.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use std::rc::Rc;

use crate::ws::{self, Frame};

/// What one publication left for later.
#[derive(Clone)]
pub struct Kept {
    pub offset: u64,
    /// The event's name (Pusher clients get it).
    pub event: Rc<str>,
    /// The payload as channel-protocol clients get it: a text frame of the data.
    pub plain: Frame,
}

impl Kept {
    /// The published data.
    pub fn data(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(ws::payload(&self.plain))
    }
}

struct Entry {
    kept: Kept,
    at: Instant,
    seq: u64,
}

struct Stream {
    epoch: Box<str>,
    last: u64,
    size: usize,
    ttl: Duration,
    entries: VecDeque<Entry>,
}

/// A stream's position: its epoch and its last offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// What a recovering client gets.
pub enum Recovery {
    /// Every publication after its position (possibly none), in order.
    Complete(Vec<Kept>),
    /// The gap is not (or no longer) all here: what it missed cannot be given.
    Lost,
}

type Key = (u16, Box<str>);

pub struct History {
    streams: HashMap<Key, Stream>,
    /// Every kept entry in publication order, for oldest-first eviction across streams: entries
    /// already gone (by size or age) are skipped when they come up.
    order: VecDeque<(u64, Key)>,
    seq: u64,
    bytes: usize,
    max_bytes: usize,
    /// Tells epochs of this process apart from those of others and of earlier runs.
    process: u32,
    streams_made: u64,
    pub evicted: u64,
}

/// What one entry costs besides its frames.
const ENTRY_OVERHEAD: usize = 64;

fn cost(k: &Kept) -> usize {
    k.plain.len() + k.event.len() + ENTRY_OVERHEAD
}

impl History {
    pub fn new(max_bytes: usize, process: u32) -> History {
        History {
            streams: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            bytes: 0,
            max_bytes,
            process,
            streams_made: 0,
            evicted: 0,
        }
    }

    pub fn set_max_bytes(&mut self, max_bytes: usize, occupied: &dyn Fn(u16, &str) -> bool) {
        self.max_bytes = max_bytes;
        self.shrink(occupied);
    }

    /// The position the next publication of a channel will get: (epoch, offset). Makes the
    /// stream when there is none.
    pub fn next_position(
        &mut self,
        app: u16,
        channel: &str,
        size: usize,
        ttl: Duration,
    ) -> Position {
        let at = self.touch(app, channel, size, ttl);
        Position {
            epoch: at.epoch,
            offset: at.offset + 1,
        }
    }

    /// A channel's stream as it is now (its last offset), made when there is none: a client
    /// subscribing with positions learns where it starts, even before anything is published.
    pub fn touch(&mut self, app: u16, channel: &str, size: usize, ttl: Duration) -> Position {
        let key: Key = (app, channel.into());
        if !self.streams.contains_key(&key) {
            self.streams_made += 1;
            let epoch = format!("{:x}-{:x}", self.process, self.streams_made).into_boxed_str();
            let stream = Stream {
                epoch,
                last: 0,
                size,
                ttl,
                entries: VecDeque::new(),
            };
            self.streams.insert(key.clone(), stream);
        }
        let s = self.streams.get_mut(&key).expect("just made");
        s.size = size.max(1);
        s.ttl = ttl;
        Position {
            epoch: s.epoch.to_string(),
            offset: s.last,
        }
    }

    /// Keeps a publication (at the offset [`History::next_position`] gave). `occupied` says
    /// whether a channel has subscribers here: an emptied stream is kept (its epoch and offset)
    /// while it does, so they are not told they missed something when nothing was lost.
    pub fn append(
        &mut self,
        app: u16,
        channel: &str,
        kept: Kept,
        now: Instant,
        occupied: &dyn Fn(u16, &str) -> bool,
    ) {
        let key: Key = (app, channel.into());
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.last = kept.offset;
        self.seq += 1;
        self.bytes += cost(&kept);
        s.entries.push_back(Entry {
            kept,
            at: now,
            seq: self.seq,
        });
        while s.entries.len() > s.size {
            if let Some(e) = s.entries.pop_front() {
                self.bytes -= cost(&e.kept);
            }
        }
        self.order.push_back((self.seq, key));
        self.shrink(occupied);
    }

    /// Drops the oldest entries, across streams, until the total is within the bound.
    fn shrink(&mut self, occupied: &dyn Fn(u16, &str) -> bool) {
        while self.bytes > self.max_bytes {
            let Some((seq, key)) = self.order.pop_front() else {
                return;
            };
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if s.entries.front().is_some_and(|e| e.seq == seq) {
                let e = s.entries.pop_front().expect("checked");
                self.bytes -= cost(&e.kept);
                self.evicted += 1;
                // Nothing left to give: the stream goes, and its next publication starts a new
                // epoch (a client at the old one is told it missed something).
                if s.entries.is_empty() && !occupied(key.0, &key.1) {
                    self.streams.remove(&key);
                }
            }
        }
    }

    /// Forgets what is past its age; a stream left empty goes unless its channel has
    /// subscribers, and a later publication starts a new epoch. Cheap when nothing is due
    /// (called once a second).
    pub fn expire(&mut self, now: Instant, occupied: &dyn Fn(u16, &str) -> bool) {
        while let Some((seq, key)) = self.order.front() {
            let Some(s) = self.streams.get_mut(key) else {
                self.order.pop_front();
                continue;
            };
            match s.entries.front() {
                Some(e) if e.seq == *seq => {
                    if now.saturating_duration_since(e.at) < s.ttl {
                        break;
                    }
                    let e = s.entries.pop_front().expect("checked");
                    self.bytes -= cost(&e.kept);
                    if s.entries.is_empty() && !occupied(key.0, &key.1) {
                        let key = key.clone();
                        self.streams.remove(&key);
                    }
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// A channel lost its last subscriber here: a stream with nothing kept goes.
    pub fn vacated(&mut self, app: u16, channel: &str) {
        let key: Key = (app, channel.into());
        if self.streams.get(&key).is_some_and(|s| s.entries.is_empty()) {
            self.streams.remove(&key);
        }
    }

    /// The stream's position, if it has one.
    pub fn position(&self, app: u16, channel: &str) -> Option<Position> {
        let s = self.streams.get(&(app, Box::from(channel)))?;
        Some(Position {
            epoch: s.epoch.to_string(),
            offset: s.last,
        })
    }

    /// A stream's last offset and how many publications it keeps (the console).
    pub fn summary(&self, app: u16, channel: &str) -> Option<(u64, usize)> {
        let s = self.streams.get(&(app, Box::from(channel)))?;
        Some((s.last, s.entries.len()))
    }

    /// A stream's position, how many publications it keeps and their bytes (REST `info=history`).
    pub fn stream(&self, app: u16, channel: &str) -> Option<(Position, usize, usize)> {
        let s = self.streams.get(&(app, Box::from(channel)))?;
        let bytes = s.entries.iter().map(|e| cost(&e.kept)).sum();
        let at = Position {
            epoch: s.epoch.to_string(),
            offset: s.last,
        };
        Some((at, s.entries.len(), bytes))
    }

    /// What a client at `from` missed on a channel.
    pub fn recover(&self, app: u16, channel: &str, from: &Position, now: Instant) -> Recovery {
        let Some(s) = self.streams.get(&(app, Box::from(channel))) else {
            return Recovery::Lost;
        };
        if *s.epoch != *from.epoch || from.offset > s.last {
            return Recovery::Lost;
        }
        let live = |e: &&Entry| now.saturating_duration_since(e.at) < s.ttl;
        let missed: Vec<Kept> = s
            .entries
            .iter()
            .filter(live)
            .filter(|e| e.kept.offset > from.offset)
            .map(|e| e.kept.clone())
            .collect();
        // Complete only if the first one missed is here: offsets have no holes within a stream.
        let complete =
            from.offset == s.last || missed.first().is_some_and(|k| k.offset == from.offset + 1);
        if complete {
            Recovery::Complete(missed)
        } else {
            Recovery::Lost
        }
    }

    /// Rebuilds the eviction order from the entries' ages (after a restore), oldest first.
    fn renumber(&mut self) {
        let mut all: Vec<(Instant, usize, Key)> = Vec::new();
        for (key, s) in &self.streams {
            for (i, e) in s.entries.iter().enumerate() {
                all.push((e.at, i, key.clone()));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        self.order.clear();
        self.seq = 0;
        for (_, i, key) in all {
            self.seq += 1;
            if let Some(e) = self
                .streams
                .get_mut(&key)
                .and_then(|s| s.entries.get_mut(i))
            {
                e.seq = self.seq;
            }
            self.order.push_back((self.seq, key));
        }
    }

    /// Entries kept and the bytes they hold (for `/metrics`).
    pub fn sizes(&self) -> (usize, usize) {
        let entries = self.streams.values().map(|s| s.entries.len()).sum();
        (entries, self.bytes)
    }
}

#[path = "history_snapshot.rs"]
mod snapshot;

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
