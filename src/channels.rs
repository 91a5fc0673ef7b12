//! The channel registry: which connections listen on which channel.
//!
//! Subscribers are dense vectors of connection keys, so a broadcast walks a contiguous array and
//! touches nothing per recipient but the recipient itself. Channels exist only while someone is
//! subscribed.

use std::collections::HashMap;

use slab::Slab;

pub type ChannelId = u32;

/// Longest channel name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// One subscription, as its connection records it: the channel and where the connection sits
/// in that channel's subscriber list, so leaving is a swap-remove, never a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub channel: ChannelId,
    pub pos: u32,
}

/// One subscriber, as its channel records it: the connection and where this subscription sits
/// in the connection's own list (the other half of the cross-reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    pub key: u32,
    pub slot: u32,
}

impl Subscriber {
    pub fn key(self) -> usize {
        self.key as usize
    }
}

pub struct Channel {
    pub name: Box<str>,
    /// Subscribed connections, in no particular order.
    pub subscribers: Vec<Subscriber>,
    /// Presence channels: who is here. `None` for every other kind.
    pub members: Option<Box<Members>>,
    /// Wall-clock ms of the first subscription, kept only where the cluster needs it to agree
    /// on who fires `channel_occupied`; 0 otherwise (read: long ago).
    pub occupied_at: u64,
}

/// Presence members keyed by user id (compared as strings), with how many of this channel's
/// connections each one holds: `member_added` fires on the first, `member_removed` after the last.
#[derive(Default)]
pub struct Members {
    pub users: HashMap<Box<str>, Member>,
}

pub struct Member {
    pub info: Option<serde_json::Value>,
    pub connections: u32,
}

#[derive(Default)]
pub struct Channels {
    by_name: HashMap<Box<str>, ChannelId>,
    slots: Slab<Channel>,
}

/// What removing a subscriber changed besides itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    /// The subscriber that took the removed one's place: its connection must record the new
    /// position (`Sub::pos`) in the subscription at `slot` of its list.
    pub moved: Option<Subscriber>,
    /// The channel lost its last subscriber and is gone.
    pub vacated: bool,
}

/// Names of 1..=200 characters of `[A-Za-z0-9_\-=@,.;]` (the Pusher channel name alphabet).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

impl Channels {
    pub fn lookup(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: ChannelId) -> Option<&Channel> {
        self.slots.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.slots.get_mut(id as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ChannelId, &Channel)> {
        self.slots.iter().map(|(id, c)| (id as ChannelId, c))
    }

    /// Adds connection `key` to the channel (creating it); `slot` is where the connection will
    /// keep the returned [`Sub`] in its own list. The caller guarantees `key` is not already a
    /// subscriber (each connection keeps the list of its channels).
    pub fn subscribe(&mut self, name: &str, key: usize, slot: usize) -> Sub {
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let id = self.slots.insert(Channel {
                    name: name.into(),
                    subscribers: Vec::new(),
                    members: None,
                    occupied_at: 0,
                }) as ChannelId;
                self.by_name.insert(name.into(), id);
                id
            }
        };
        let subscribers = &mut self.slots[id as usize].subscribers;
        let pos = subscribers.len() as u32;
        subscribers.push(Subscriber {
            key: key as u32,
            slot: slot as u32,
        });
        Sub { channel: id, pos }
    }

    /// Removes the subscription `sub` in O(1); drops the channel when it empties.
    pub fn unsubscribe(&mut self, sub: Sub) -> Removed {
        let Some(channel) = self.slots.get_mut(sub.channel as usize) else {
            return Removed {
                moved: None,
                vacated: false,
            };
        };
        let pos = sub.pos as usize;
        if pos < channel.subscribers.len() {
            channel.subscribers.swap_remove(pos);
        }
        let moved = channel.subscribers.get(pos).copied();
        if channel.subscribers.is_empty() {
            let channel = self.slots.remove(sub.channel as usize);
            self.by_name.remove(&channel.name);
            return Removed {
                moved: None,
                vacated: true,
            };
        }
        let len = channel.subscribers.len();
        if channel.subscribers.capacity() > 64 && len * 4 < channel.subscribers.capacity() {
            channel.subscribers.shrink_to(len * 2);
        }
        Removed {
            moved,
            vacated: false,
        }
    }

    /// A connection moved its subscription to this channel within its own list (its list had a
    /// swap-remove): record the new `slot` at the subscriber's position.
    pub fn moved_slot(&mut self, sub: Sub, slot: usize) {
        if let Some(s) = self
            .slots
            .get_mut(sub.channel as usize)
            .and_then(|c| c.subscribers.get_mut(sub.pos as usize))
        {
            s.slot = slot as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("orders"));
        assert!(valid_name("private-a_b-c=d@e,f.g;h"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name("slash/no"));
        assert!(!valid_name(&"a".repeat(201)));
        assert!(valid_name(&"a".repeat(200)));
    }

    #[test]
    fn subscribe_unsubscribe_lifecycle() {
        let mut c = Channels::default();
        let a1 = c.subscribe("a", 1, 0);
        let a2 = c.subscribe("a", 2, 0);
        assert_eq!(a1.channel, a2.channel);
        assert_eq!((a1.pos, a2.pos), (0, 1));
        // Removing the first moves the last into its place: its connection is told.
        let r = c.unsubscribe(a1);
        assert_eq!(r.moved, Some(Subscriber { key: 2, slot: 0 }));
        assert!(!r.vacated);
        let r = c.unsubscribe(Sub {
            channel: a2.channel,
            pos: 0,
        });
        assert_eq!(
            r,
            Removed {
                moved: None,
                vacated: true
            }
        );
        assert!(c.lookup("a").is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn positions_stay_true_through_any_removal_order() {
        let mut c = Channels::default();
        let n = 1000;
        // subs[k] is connection k's record of its one subscription.
        let mut subs: Vec<Option<Sub>> = (0..n).map(|k| Some(c.subscribe("x", k, 0))).collect();
        let mut order: Vec<usize> = (0..n).collect();
        let mut seed = 7u64;
        for i in (1..n).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for k in order {
            let sub = subs[k].take().expect("subscribed");
            let ch = c.get(sub.channel).expect("exists");
            assert_eq!(ch.subscribers[sub.pos as usize].key(), k);
            let r = c.unsubscribe(sub);
            if let Some(m) = r.moved {
                subs[m.key()].as_mut().expect("still subscribed").pos = sub.pos;
            }
        }
        assert!(c.is_empty());
    }
}
