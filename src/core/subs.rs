//! One connection's subscriptions, as the hub records them: the first one inline, because most
//! connections hold exactly one channel and a heap block for it would cost more than the rest of
//! the connection's subscription state; the others in a vector.
//!
//! Slots are numbered `0..len()`; removal is swap-remove (the last slot moves into the gap), which
//! is what lets each channel keep the slot of its subscribers and removal stay O(1).

/// A channel's index in its app's registry.
pub type ChannelId = u32;

/// One subscription, as its connection records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub channel: ChannelId,
    /// Position in the channel's subscriber list.
    pub pos: u32,
}

/// `first.channel` of an empty list. The hub never hands out this id (see `Hub::subscribe`).
pub const NO_CHANNEL: ChannelId = ChannelId::MAX;

pub struct SubList {
    first: Sub,
    rest: Vec<Sub>,
}

impl Default for SubList {
    fn default() -> SubList {
        SubList {
            first: Sub {
                channel: NO_CHANNEL,
                pos: 0,
            },
            rest: Vec::new(),
        }
    }
}

impl SubList {
    pub fn len(&self) -> usize {
        if self.first.channel == NO_CHANNEL {
            0
        } else {
            1 + self.rest.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.channel == NO_CHANNEL
    }

    pub fn get(&self, slot: usize) -> Option<Sub> {
        match slot {
            0 if !self.is_empty() => Some(self.first),
            0 => None,
            n => self.rest.get(n - 1).copied(),
        }
    }

    /// Records that the subscription in `slot` moved to position `pos` of its channel.
    pub fn set_pos(&mut self, slot: usize, pos: u32) {
        let sub = match slot {
            0 => Some(&mut self.first),
            n => self.rest.get_mut(n - 1),
        };
        if let Some(sub) = sub {
            sub.pos = pos;
        }
    }

    /// Adds a subscription in slot `len()`.
    pub fn push(&mut self, sub: Sub) {
        debug_assert_ne!(sub.channel, NO_CHANNEL);
        if self.is_empty() {
            self.first = sub;
        } else {
            self.rest.push(sub);
        }
    }

    /// Removes the subscription in `slot`; the last one takes its place. `None` past the end.
    pub fn swap_remove(&mut self, slot: usize) -> Option<Sub> {
        let removed = self.get(slot)?;
        match self.rest.pop() {
            // The last one was `first` itself: the list is empty now.
            None => self.first.channel = NO_CHANNEL,
            Some(last) if slot == 0 => self.first = last,
            Some(last) if slot <= self.rest.len() => self.rest[slot - 1] = last,
            Some(_) => {} // `slot` was the last one: popping it was the removal.
        }
        Some(removed)
    }

    /// The slot of the subscription to `channel`, searched from the newest.
    pub fn slot_of(&self, channel: ChannelId) -> Option<usize> {
        match self.rest.iter().rposition(|s| s.channel == channel) {
            Some(i) => Some(i + 1),
            None => (!self.is_empty() && self.first.channel == channel).then_some(0),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Sub> + '_ {
        let first = (!self.is_empty()).then_some(self.first);
        first.into_iter().chain(self.rest.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(channel: ChannelId) -> Sub {
        Sub {
            channel,
            pos: channel * 10,
        }
    }

    fn channels(l: &SubList) -> Vec<ChannelId> {
        l.iter().map(|s| s.channel).collect()
    }

    #[test]
    fn swap_remove_moves_the_last_into_the_gap() {
        let mut l = SubList::default();
        assert_eq!((l.len(), l.get(0), l.swap_remove(0)), (0, None, None));
        for c in 1..=4 {
            l.push(sub(c));
        }
        assert_eq!(channels(&l), [1, 2, 3, 4]);
        assert_eq!(
            (l.slot_of(1), l.slot_of(4), l.slot_of(5)),
            (Some(0), Some(3), None)
        );
        assert_eq!(l.swap_remove(0), Some(sub(1)));
        assert_eq!(channels(&l), [4, 2, 3]);
        assert_eq!(l.swap_remove(1), Some(sub(2)));
        assert_eq!(channels(&l), [4, 3]);
        assert_eq!(l.swap_remove(1), Some(sub(3)));
        assert_eq!(channels(&l), [4]);
        assert_eq!(l.swap_remove(5), None);
        l.set_pos(0, 7);
        assert_eq!(l.get(0), Some(Sub { channel: 4, pos: 7 }));
        assert_eq!(l.swap_remove(0), Some(Sub { channel: 4, pos: 7 }));
        assert!(l.is_empty() && l.iter().next().is_none() && l.slot_of(4).is_none());
        l.push(sub(9));
        assert_eq!((channels(&l), l.len()), (vec![9], 1));
    }

    #[test]
    fn a_listener_with_one_subscription_allocates_nothing() {
        let mut l = SubList::default();
        l.push(sub(1));
        assert_eq!(l.rest.capacity(), 0);
        assert!(std::mem::size_of::<SubList>() <= 32);
    }
}
