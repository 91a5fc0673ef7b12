//! What waits to be written to one connection, under the one output bound.
//!
//! Every byte queued for a connection counts, whatever it is (a broadcast, a reply, a pong, an
//! HTTP answer, a console event), as Redis's `client-output-buffer-limit` counts every reply.
//! Two marks: past `pause` the server stops reading from the connection (a client cannot make
//! it produce replies faster than it takes them); past `hard`, judged after the kernel had its
//! chance to take what it would, the connection is a slow consumer and is closed. Within one
//! loop turn the queue may grow past `hard` by what one turn's input can add (bounded by the
//! read budgets; [`TURN_SLACK`] is the safety cap) before that judgement, so a client that
//! reads is never cut for a burst that one `writev` would have taken.
//!
//! Frames are shared `Rc<[u8]>`: queueing a broadcast costs a pointer, not a copy.

use std::collections::VecDeque;
use std::io::IoSlice;

use crate::ws::Frame;

/// How far past `hard` a queue may grow within one turn, at most: more than the read budgets
/// let one turn's input produce for one connection (broadcast frames are shared, so this is
/// mostly pointers).
pub const TURN_SLACK: usize = 1024 * 1024;

/// The output bounds of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub pause: usize,
    pub hard: usize,
}

#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<Frame>,
    /// Bytes of the front frame already written.
    offset: usize,
    bytes: usize,
    /// Over the bound: nothing more is queued; the connection is being closed.
    overflowed: bool,
}

impl Outbox {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Queues a frame within the bound; false (and overflowed from now on) past `hard` plus the
    /// turn's slack. A frame always fits an empty queue, so one large answer is never refused
    /// on its own.
    pub fn offer(&mut self, frame: &Frame, bounds: Bounds) -> bool {
        if self.overflowed {
            return false;
        }
        let after = self.bytes.saturating_add(frame.len());
        let cap = bounds.hard.saturating_add(bounds.hard.max(TURN_SLACK));
        if after > cap && !self.queue.is_empty() {
            self.overflowed = true;
            return false;
        }
        self.push(frame.clone());
        true
    }

    /// Queues a frame best-effort: dropped (false) when the queue is past `limit`. For feeds
    /// that may lose events rather than close (the debug console).
    pub fn offer_droppable(&mut self, frame: &Frame, limit: usize) -> bool {
        if self.overflowed || (self.bytes.saturating_add(frame.len()) > limit && !self.is_empty()) {
            return false;
        }
        self.push(frame.clone());
        true
    }

    /// Queues a frame whatever the bound: only for the last thing a connection is sent (a close
    /// frame, a final answer) and the server's own pings, which a client cannot multiply.
    pub fn push(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.queue.push_back(frame);
    }

    /// After a flush: whether the client left more than `hard` untaken (a slow consumer).
    pub fn judge(&mut self, bounds: Bounds) -> bool {
        if self.bytes > bounds.hard {
            self.overflowed = true;
        }
        self.overflowed
    }

    /// Drops everything queued that has not started going out, keeping a half-written frame so
    /// the stream stays well-formed.
    pub fn discard(&mut self) {
        let keep = usize::from(self.offset > 0);
        while self.queue.len() > keep {
            if let Some(f) = self.queue.pop_back() {
                self.bytes -= f.len();
            }
        }
        self.queue.shrink_to_fit();
    }

    /// Fills `iov` with the queued bytes, front first; returns how many slices it used.
    pub fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, frame) in self.queue.iter().take(iov.len()).enumerate() {
            let start = if i == 0 { self.offset } else { 0 };
            iov[i] = IoSlice::new(&frame[start..]);
            n += 1;
        }
        n
    }

    /// The unwritten rest of the front frame.
    pub fn front(&self) -> Option<&[u8]> {
        self.queue.front().map(|f| &f[self.offset..])
    }

    /// `written` bytes went out.
    pub fn advance(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if written >= left {
                written -= left;
                self.offset = 0;
                self.queue.pop_front();
            } else {
                self.offset += written;
                written = 0;
            }
        }
        // A burst can grow the queue's ring; give the memory back once it drained.
        if self.queue.is_empty() && self.queue.capacity() > 16 {
            self.queue = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        pause: 10,
        hard: 20,
    };

    fn frame(n: usize) -> Frame {
        vec![b'x'; n].into()
    }

    #[test]
    fn one_bound_for_everything() {
        let mut o = Outbox::default();
        assert!(
            o.offer(&frame(2 * TURN_SLACK), B),
            "a frame always fits an empty queue"
        );
        assert!(!o.offer(&frame(1), B));
        assert!(o.overflowed());
        let mut o = Outbox::default();
        for _ in 0..(B.hard + TURN_SLACK) / 1000 {
            assert!(o.offer(&frame(1000), B));
        }
        assert!(
            !o.offer(&frame(1000), B),
            "the hard bound and the slack are the most a turn may queue"
        );
        let mut o = Outbox::default();
        assert!(o.offer(&frame(15), B));
        assert!(o.offer(&frame(15), B));
        o.advance(12);
        assert!(!o.judge(B), "18 bytes left: under the bound");
        assert!(o.offer(&frame(5), B));
        assert!(
            o.judge(B),
            "23 bytes untaken after the flush: a slow consumer"
        );
    }

    #[test]
    fn writes_advance_across_frames() {
        let mut o = Outbox::default();
        o.push(frame(5));
        o.push(frame(5));
        o.advance(7);
        assert_eq!(o.bytes(), 3);
        assert_eq!(o.front().map(<[u8]>::len), Some(3));
        o.discard();
        assert_eq!(o.bytes(), 3, "the half-written frame stays");
        o.advance(3);
        assert!(o.is_empty());
    }
}
