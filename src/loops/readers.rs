//! Who reads a user's FIFO when the user's connections are on several loops. Every such loop
//! keeps the FIFO open (so it stays, and scripts can write to it), but one reads it: the first
//! to claim it, then the next when that one lets it go. A line is read once, in the FIFO's
//! order, and reaches the user's connections on the other loops over the bus in that order;
//! two readers would each deliver their own lines first and so reorder them.

use std::collections::{HashMap, VecDeque};

#[derive(Default)]
pub struct Readers {
    /// User → the loops that hold the user's FIFO open, the reader first.
    queues: HashMap<Vec<u8>, VecDeque<usize>>,
}

impl Readers {
    /// Loop `owner` opened the user's FIFO. Returns `owner` when it is to read it now.
    pub fn claim(&mut self, user: &[u8], owner: usize) -> Option<usize> {
        let queue = self.queues.entry(user.to_vec()).or_default();
        if !queue.contains(&owner) {
            queue.push_back(owner);
        }
        (queue.front() == Some(&owner)).then_some(owner)
    }

    /// Loop `owner` closed the user's FIFO. Returns the loop that reads it from now on, when
    /// `owner` was the reader and another holds it.
    pub fn release(&mut self, user: &[u8], owner: usize) -> Option<usize> {
        let queue = self.queues.get_mut(user)?;
        let was_reader = queue.front() == Some(&owner);
        queue.retain(|&o| o != owner);
        let next = queue.front().copied().filter(|_| was_reader);
        if queue.is_empty() {
            self.queues.remove(user);
        }
        next
    }

    /// Loop `owner` is gone: the FIFOs it read go to the next loops. Returns (user, new reader).
    pub fn forget(&mut self, owner: usize) -> Vec<(Vec<u8>, usize)> {
        let users: Vec<Vec<u8>> = (self.queues.iter())
            .filter(|(_, q)| q.contains(&owner))
            .map(|(u, _)| u.clone())
            .collect();
        let mut grants = Vec::new();
        for user in users {
            if let Some(next) = self.release(&user, owner) {
                grants.push((user, next));
            }
        }
        grants
    }
}

#[cfg(test)]
mod tests {
    use super::Readers;

    #[test]
    fn the_first_loop_reads_and_the_next_takes_over_when_it_lets_go() {
        let mut r = Readers::default();
        assert_eq!(r.claim(b"alice", 1), Some(1));
        assert_eq!(r.claim(b"alice", 0), None);
        assert_eq!(
            r.claim(b"alice", 1),
            Some(1),
            "a second claim changes nothing"
        );
        assert_eq!(
            r.release(b"alice", 0),
            None,
            "not the reader: nobody new reads"
        );
        assert_eq!(r.claim(b"alice", 2), None);
        assert_eq!(r.release(b"alice", 1), Some(2));
        assert_eq!(r.release(b"alice", 2), None);
        assert_eq!(
            r.claim(b"alice", 0),
            Some(0),
            "a FIFO nobody held starts afresh"
        );
    }

    #[test]
    fn a_loop_that_dies_hands_on_what_it_read() {
        let mut r = Readers::default();
        r.claim(b"alice", 0);
        r.claim(b"bob", 0);
        r.claim(b"bob", 1);
        r.claim(b"carol", 1);
        r.claim(b"carol", 0);
        assert_eq!(r.forget(0), vec![(b"bob".to_vec(), 1)]);
        assert_eq!(r.release(b"carol", 1), None, "loop 0 no longer holds it");
        assert_eq!(r.claim(b"alice", 1), Some(1));
    }
}
