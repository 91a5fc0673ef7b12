//! When channels are next told their subscriber count (`count_news.rs` says what is told and
//! to whom): the first change of a channel is due at once, later ones when the interval since
//! its last telling is over. A channel quiet for an interval is forgotten, so what is kept
//! follows the recent changes, not the number of channels.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// (app index, channel name).
pub type Key = (usize, Box<str>);

#[derive(Default)]
pub struct SubCounts {
    /// Channels told lately or waiting to be: when last told, whether a telling is queued.
    channels: HashMap<Key, Told>,
    /// What time will bring, in order: a telling, or forgetting a channel's last telling.
    queue: BTreeMap<(Instant, u64), Due>,
    seq: u64,
}

struct Told {
    at: Option<Instant>,
    queued: bool,
}

enum Due {
    Tell(Key),
    /// Forget `Key` if it was last told at this instant and nothing is queued.
    Forget(Key, Instant),
}

impl SubCounts {
    /// The count of channel `key` changed: queue a telling, at once or when the channel's
    /// interval since the last one is over.
    pub fn changed(&mut self, key: Key, now: Instant, interval: Duration) {
        let told = self.channels.entry(key.clone()).or_insert(Told {
            at: None,
            queued: false,
        });
        if told.queued {
            return;
        }
        told.queued = true;
        let when = told.at.map_or(now, |at| (at + interval).max(now));
        self.push(when, Due::Tell(key));
    }

    fn push(&mut self, when: Instant, due: Due) {
        self.seq += 1;
        self.queue.insert((when, self.seq), due);
    }

    /// When the next telling is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(when, _)| *when)
    }

    /// Channels due to be told by `now`, recorded as told now.
    pub fn take_due(&mut self, now: Instant, interval_of: impl Fn(usize) -> Duration) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Due::Tell(key) => {
                    if let Some(told) = self.channels.get_mut(&key) {
                        told.queued = false;
                        told.at = Some(now);
                    }
                    let forget_at = now + interval_of(key.0);
                    self.push(forget_at, Due::Forget(key.clone(), now));
                    due.push(key);
                }
                Due::Forget(key, at) => {
                    if self
                        .channels
                        .get(&key)
                        .is_some_and(|t| !t.queued && t.at == Some(at))
                    {
                        self.channels.remove(&key);
                    }
                }
            }
        }
        due
    }
}

#[cfg(test)]
#[path = "sub_counts_tests.rs"]
mod tests;
