//! A supervisor's loop among its siblings: its numbers pinned on the board for them, and
//! waiting for all of them to be on the bus before it serves.

use std::time::{Duration, Instant};

use super::{BOARD_EVERY, BOARD_MIN, Server};

/// The board's count of loops on the bus (`siblings_on_bus`).
const ON_BUS_KEY: &str = "on_bus";
/// How long a loop waits for its siblings to be on the bus before it serves anyway (one died
/// and is not back).
const JOIN_PATIENCE: Duration = Duration::from_secs(5);

impl Server {
    /// Whether every loop is on the bus (or this one waited long enough for a dead one): what
    /// one loop publishes must reach each sibling, so none serves before all listen.
    pub(super) fn siblings_on_bus(&self) -> bool {
        let Some(place) = &self.place else {
            return true;
        };
        place.board.set_count(ON_BUS_KEY, 1);
        let on = place.board.others_count(ON_BUS_KEY) + 1;
        on >= place.count || self.started.elapsed() >= JOIN_PATIENCE
    }

    /// After a turn that did something (at most every BOARD_MIN), and every BOARD_EVERY: this
    /// loop's numbers for its siblings, so a sibling's `/metrics` a moment later counts what
    /// this loop just did, frames it compressed while flushing included. (Some 20 µs.)
    pub(super) fn pin_board(&mut self) {
        let due = self.pinned_at.elapsed();
        // A session opened or closed is pinned at once: `/up` on a sibling counts it.
        let sessions = self.core.sessions();
        if let Some(place) = &self.place
            && ((self.unpinned && due >= BOARD_MIN)
                || due >= BOARD_EVERY
                || sessions != self.pinned_sessions)
        {
            place.board.pin(self.core.local_metrics().as_bytes());
            self.pinned_at = Instant::now();
            self.unpinned = false;
            self.pinned_sessions = sessions;
        }
    }

    /// Whether this loop may end its drain: the one that reads the FIFO goes last, so what
    /// scripts write while the others drain is still read, and kept in the history it hands on.
    pub(super) fn last_to_go(&self) -> bool {
        let Some(place) = &self.place else {
            return true;
        };
        if self.fifo.reads() {
            place.board.others_count(ON_BUS_KEY) == 0
        } else {
            place.board.set_count(ON_BUS_KEY, 0);
            true
        }
    }

    /// The FIFO that waited for held publications to go out is read again once they did.
    pub(super) fn resume_fifo(&mut self) {
        if self.fifo_held && self.core.fifo_room() {
            self.fifo_held = false;
            self.turn.fifo_again = true;
        }
    }
}
