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
    /// Its position came from the cluster (Redis or the loops' bus), whatever the epoch's
    /// form: a stream seeded from a restarted process keeps that process's epoch there.
    clustered: bool,
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

/// Whether an epoch was given by the cluster (the stream kept in Redis) rather than by one
/// process: cluster epochs are "{seconds:x}.{n:x}", a process's "{process:x}-{n:x}".
pub fn is_cluster_epoch(epoch: &str) -> bool {
    epoch.contains('.')
}

/// Whether cluster epoch `a` was made after cluster epoch `b` (by Redis's clock, then its
/// counter of epochs); false when either is not a cluster epoch.
fn newer_cluster_epoch(a: &str, b: &str) -> bool {
    let parse = |e: &str| -> Option<(u64, u64)> {
        let (secs, n) = e.split_once('.')?;
        Some((
            u64::from_str_radix(secs, 16).ok()?,
            u64::from_str_radix(n, 16).ok()?,
        ))
    };
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a > b)
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
    /// stream when there is none. A stream that followed the cluster's numbering starts a new
    /// epoch of this process: this node numbers alone while Redis is out of reach, and must not
    /// hand out offsets the cluster gives to other publications.
    pub fn next_position(
        &mut self,
        app: u16,
        channel: &str,
        size: usize,
        ttl: Duration,
    ) -> Position {
        let key: Key = (app, channel.into());
        if self
            .streams
            .get(&key)
            .is_some_and(|s| s.clustered || is_cluster_epoch(&s.epoch))
        {
            let epoch = self.new_epoch();
            self.restart(&key, epoch, 0);
        }
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
            let epoch = self.new_epoch();
            self.make(key.clone(), epoch, 0);
        }
        let s = self.streams.get_mut(&key).expect("just made");
        s.size = size.max(1);
        s.ttl = ttl;
        Position {
            epoch: s.epoch.to_string(),
            offset: s.last,
        }
    }

    /// Whether this node follows the stream of a channel (it has a position for it).
    pub fn follows(&self, app: u16, channel: &str) -> bool {
        self.streams.contains_key(&(app, Box::from(channel)))
    }

    /// Readies the stream for a publication the cluster numbered (`at`, from the stream kept in
    /// Redis), so that every node keeps it under the same position. Returns false when this
    /// node has that offset already (a repeat: there is nothing to keep). A position that does
    /// not follow on (another epoch, or offsets this node never saw because it was cut off
    /// from Redis) starts the stream afresh there: what it kept can no longer be given whole.
    pub fn place(
        &mut self,
        app: u16,
        channel: &str,
        at: &Position,
        rule: (usize, Duration),
    ) -> bool {
        let key: Key = (app, channel.into());
        let Some(before) = at.offset.checked_sub(1) else {
            return false; // offsets start at 1
        };
        match self.streams.get(&key) {
            None => self.make(key.clone(), at.epoch.as_str().into(), before),
            Some(s) if *s.epoch == *at.epoch && at.offset <= s.last => return false,
            Some(s) if *s.epoch == *at.epoch && s.last.checked_add(1) == Some(at.offset) => {}
            Some(_) => self.restart(&key, at.epoch.as_str().into(), before),
        }
        let s = self.streams.get_mut(&key).expect("made above");
        (s.size, s.ttl, s.clustered) = (rule.0.max(1), rule.1, true);
        true
    }

    /// The cluster's position of a stream this node did not follow (a subscription asked Redis
    /// for it): this node follows it from there, unless it already follows that epoch (and may
    /// be further) or a newer one.
    pub fn adopt(&mut self, app: u16, channel: &str, at: &Position, rule: (usize, Duration)) {
        let key: Key = (app, channel.into());
        match self.streams.get(&key) {
            None => self.make(key.clone(), at.epoch.as_str().into(), at.offset),
            Some(s) if *s.epoch == *at.epoch => {}
            Some(s) if newer_cluster_epoch(&s.epoch, &at.epoch) => {}
            Some(_) => self.restart(&key, at.epoch.as_str().into(), at.offset),
        }
        if let Some(s) = self.streams.get_mut(&key) {
            (s.size, s.ttl, s.clustered) = (rule.0.max(1), rule.1, true);
        }
    }

    fn new_epoch(&mut self) -> Box<str> {
        self.streams_made += 1;
        format!("{:x}-{:x}", self.process, self.streams_made).into_boxed_str()
    }

    fn make(&mut self, key: Key, epoch: Box<str>, last: u64) {
        let stream = Stream {
            epoch,
            last,
            clustered: false,
            size: 1,
            ttl: Duration::ZERO,
            entries: VecDeque::new(),
        };
        self.streams.insert(key, stream);
    }

    /// Starts a stream afresh at `epoch`, `last`: what it kept goes (its places in the eviction
    /// order are skipped when they come up).
    fn restart(&mut self, key: &Key, epoch: Box<str>, last: u64) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        for e in s.entries.drain(..) {
            self.bytes -= cost(&e.kept);
        }
        s.epoch = epoch;
        s.last = last;
        s.clustered = false;
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
        if *s.epoch != *from.epoch {
            return Recovery::Lost;
        }
        // Ahead of this node: the client saw, on another node, publications still on their way
        // here. They reach it live, and it drops what it has by offset.
        if from.offset >= s.last {
            return Recovery::Complete(Vec::new());
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
    /// Every stream's app, channel, position and time to live (to seed the loops' bus with
    /// the streams a restart handed on).
    pub fn positions(&self) -> impl Iterator<Item = (u16, &str, Position, Duration)> + '_ {
        self.streams.iter().map(|((app, channel), s)| {
            let at = Position {
                epoch: s.epoch.to_string(),
                offset: s.last,
            };
            (*app, &**channel, at, s.ttl)
        })
    }

    /// The cluster was told every stream's position (a loop seeds its bus): from now on it
    /// numbers in these epochs too, so this node numbering alone starts epochs of its own.
    pub fn shared_all(&mut self) {
        for s in self.streams.values_mut() {
            s.clustered = true;
        }
    }

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
