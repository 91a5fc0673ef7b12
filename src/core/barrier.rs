//! Reading after the other loops' writes. A loop of several learns what its siblings changed
//! (subscribers, presence members, numbered publications, cache channels) over the local bus,
//! a moment after they changed it. A client that was answered by one loop and asks another at
//! once must still see the change, as it would with one loop. So before a loop answers from
//! shared state (a REST read, a presence, cache or positioned subscription, a sign-in), it asks
//! the bus for a barrier: the bus first reads everything the loops wrote to it, then puts a
//! marker behind what it has sent this loop. When the marker arrives, everything the siblings
//! did before the question is here, and the question is handled again. The request waits,
//! and the connection's later input behind it; other connections go on.
//!
//! FIFO lines wait the same way: a script that published through REST on one loop and then
//! writes a line to the FIFO another loop reads expects the line after the publication. The
//! line is read at once (so what it follows is whatever was written before it), and what it
//! publishes goes out once the barrier asked right after is passed; the publications this
//! loop makes meanwhile (REST, client events) go out behind it, in their order.
//!
//! This module holds what waits; `held.rs` decides what must wait and handles what a
//! barrier lets go. The loop that changed something writes the change to the bus before its own answer to the
//! client (the link's writes come before the clients' in a turn), which is what makes one
//! round trip enough. The questions of one turn share one barrier.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::effects::LinkOp;
use super::publication::Publication;

/// How long what waits for a barrier waits at most before it goes on anyway (the bus is then
/// stuck, and the supervisor replaces this loop soon).
const PATIENCE: Duration = Duration::from_secs(2);

/// Bytes of publications held for barriers at most: the loop stops reading the broadcast FIFO
/// past this (`Barriers::has_room`), and what still comes (a user's FIFO) lets all that waited
/// go out at once, in order, rather than wait without bound. About eight turns of FIFO reads,
/// so a flood never has more than that to send in one turn.
const MAX_HELD_BYTES: usize = 1 << 20;

#[derive(Default)]
pub struct Barriers {
    /// The last barrier asked for.
    asked: u64,
    /// A barrier was asked for and not yet handed to the link: this turn's questions share it.
    open: bool,
    waiting: Vec<Waiter>,
    /// Publications made here, in their order, with the barrier each waits for: FIFO lines'
    /// (each asks for one), and those made behind them.
    held: VecDeque<(u64, Instant, Publication)>,
    held_bytes: usize,
    /// The loop is stopping: what it reads from now on goes out at once, before its goodbye.
    off: bool,
    /// The connection (key, id) whose question passed its barrier and is being handled again:
    /// it goes through without another (kept here, not on every connection).
    passing: Option<(usize, u64)>,
}

/// A question waiting for its barrier: a WebSocket message (handled again from its text) or
/// an HTTP request (left in the connection's buffer, parsed again).
pub struct Waiter {
    pub key: usize,
    pub conn_id: u64,
    barrier: u64,
    pub text: Option<String>,
    since: Instant,
}

/// What a barrier let go: publications first (read before the questions were put, or at the
/// same time), then the questions.
#[derive(Default)]
pub struct Released {
    pub publications: Vec<Publication>,
    pub waiters: Vec<Waiter>,
}

impl Barriers {
    /// The link took this turn's operations: a question from now on needs a new barrier.
    pub fn seal(&mut self) {
        self.open = false;
    }

    /// Whether the loop may read more FIFO lines to hold (see [`MAX_HELD_BYTES`]).
    pub fn has_room(&self) -> bool {
        self.held_bytes < MAX_HELD_BYTES
    }

    /// Publications waiting for a barrier (`/metrics`).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether publications wait to go out (a stopping loop sends them first).
    pub fn holds_publications(&self) -> bool {
        !self.held.is_empty()
    }

    /// The question of this connection is handled again now, past its barrier.
    pub fn set_passing(&mut self, conn: Option<(usize, u64)>) {
        self.passing = conn;
    }

    /// Whether this connection's question is the one passing its barrier (once).
    pub fn take_passing(&mut self, conn: (usize, u64)) -> bool {
        let passing = self.passing == Some(conn);
        if passing {
            self.passing = None;
        }
        passing
    }

    /// Whether the loop stopped holding anything (it is stopping).
    pub fn is_off(&self) -> bool {
        self.off
    }

    fn ask(&mut self, effects: &mut Vec<LinkOp>) -> u64 {
        if !self.open {
            self.asked += 1;
            self.open = true;
            effects.push(LinkOp::Barrier(self.asked));
        }
        self.asked
    }

    /// A question waits for the next barrier (asked for in `effects` when this turn has none).
    pub fn hold(
        &mut self,
        (key, conn_id): (usize, u64),
        text: Option<&str>,
        now: Instant,
        effects: &mut Vec<LinkOp>,
    ) {
        let barrier = self.ask(effects);
        self.waiting.push(Waiter {
            key,
            conn_id,
            barrier,
            text: text.map(str::to_string),
            since: now,
        });
    }

    /// A publication about to go out: one read from a FIFO waits for a barrier, one made here
    /// behind it waits too. Returns it when it goes out now (past [`MAX_HELD_BYTES`], what
    /// waited goes first, into `released`).
    pub fn hold_publication(
        &mut self,
        p: Publication,
        now: Instant,
        effects: &mut Vec<LinkOp>,
        released: &mut Released,
    ) -> Option<Publication> {
        let behind = p.made_here() && !self.held.is_empty();
        if !(p.from_fifo() || behind) {
            return Some(p);
        }
        if self.held_bytes.saturating_add(p.weight()) > MAX_HELD_BYTES {
            released
                .publications
                .extend(self.held.drain(..).map(|(_, _, p)| p));
            self.held_bytes = 0;
            return Some(p);
        }
        let barrier = match self.held.back() {
            Some((n, _, _)) if !p.from_fifo() => *n,
            _ => self.ask(effects),
        };
        self.held_bytes += p.weight();
        self.held.push_back((barrier, now, p));
        None
    }

    /// The loop stops: nothing waits from now on, and what waited goes on at once.
    pub fn stop(&mut self) -> Released {
        self.off = true;
        self.release(|_, _| true)
    }

    /// The bus's marker for barrier `passed` arrived: what it covers goes on.
    pub fn passed(&mut self, passed: u64) -> Released {
        self.release(|barrier, _| barrier <= passed)
    }

    /// What waited past [`PATIENCE`] (or everything: `all`) goes on with what this loop knows.
    pub fn give_up(&mut self, now: Instant, all: bool) -> Released {
        if self.waiting.is_empty() && self.held.is_empty() {
            return Released::default();
        }
        self.release(|_, since| all || now.saturating_duration_since(since) >= PATIENCE)
    }

    fn release(&mut self, due: impl Fn(u64, Instant) -> bool) -> Released {
        let mut released = Released::default();
        // Publications go in their order: the first that must wait holds those behind it.
        while let Some((barrier, since, _)) = self.held.front() {
            if !due(*barrier, *since) {
                break;
            }
            if let Some((_, _, p)) = self.held.pop_front() {
                self.held_bytes = self.held_bytes.saturating_sub(p.weight());
                released.publications.push(p);
            }
        }
        let (go, stay) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| due(w.barrier, w.since));
        self.waiting = stay;
        released.waiters = go;
        released
    }
}

/// How long what waits may wait, for the warning that says it went on without the bus.
pub fn patience() -> Duration {
    PATIENCE
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Barriers, Released};
    use crate::core::effects::LinkOp;
    use crate::core::publication::{Origin, Publication};

    fn event(data: &str, origin: &'static str) -> Publication {
        Publication::Event {
            app: 0,
            channels: vec!["c".into()],
            event: "e".into(),
            data: data.into(),
            except: None,
            origin: Origin::Here(origin),
        }
    }

    fn data(released: &Released) -> Vec<String> {
        (released.publications.iter())
            .filter_map(|p| match p {
                Publication::Event { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_questions_of_one_turn_share_a_barrier_and_the_next_turn_asks_again() {
        let (mut b, now, mut ops) = (Barriers::default(), Instant::now(), Vec::new());
        b.hold((1, 10), Some("a"), now, &mut ops);
        b.hold((2, 20), None, now, &mut ops);
        assert!(matches!(ops[..], [LinkOp::Barrier(1)]), "one barrier asked");
        b.seal();
        b.hold((3, 30), Some("c"), now, &mut ops);
        assert!(matches!(ops[..], [LinkOp::Barrier(1), LinkOp::Barrier(2)]));
        let first = b.passed(1);
        let keys: Vec<usize> = first.waiters.iter().map(|w| w.key).collect();
        assert_eq!(keys, [1, 2]);
        assert!(b.passed(1).waiters.is_empty(), "released once");
        assert_eq!(b.passed(2).waiters.len(), 1);
    }

    #[test]
    fn fifo_publications_wait_and_what_is_made_behind_them_keeps_its_place() {
        let (mut b, now, mut ops) = (Barriers::default(), Instant::now(), Vec::new());
        let mut released = Released::default();
        let rest = b.hold_publication(event("rest 0", "rest"), now, &mut ops, &mut released);
        assert!(
            rest.is_some(),
            "nothing held: a REST publication goes at once"
        );
        assert!(
            b.hold_publication(event("fifo 1", "fifo"), now, &mut ops, &mut released)
                .is_none()
        );
        b.seal();
        assert!(
            b.hold_publication(event("rest 2", "rest"), now, &mut ops, &mut released)
                .is_none()
        );
        assert!(
            b.hold_publication(event("fifo 3", "fifo"), now, &mut ops, &mut released)
                .is_none()
        );
        assert!(b.holds_publications());
        assert_eq!(data(&b.passed(1)), ["fifo 1", "rest 2"]);
        assert_eq!(data(&b.passed(2)), ["fifo 3"]);
        assert!(!b.holds_publications());
    }

    #[test]
    fn what_waits_too_long_goes_on_and_a_stopping_loop_holds_nothing() {
        let (mut b, now, mut ops) = (Barriers::default(), Instant::now(), Vec::new());
        let mut released = Released::default();
        b.hold((1, 10), Some("a"), now, &mut ops);
        b.hold_publication(event("fifo", "fifo"), now, &mut ops, &mut released);
        assert!(
            b.give_up(now + Duration::from_millis(100), false)
                .waiters
                .is_empty()
        );
        let late = b.give_up(now + Duration::from_secs(3), false);
        assert_eq!(
            (late.waiters.len(), data(&late)),
            (1, vec!["fifo".to_string()])
        );
        b.hold_publication(event("fifo 2", "fifo"), now, &mut ops, &mut released);
        assert_eq!(data(&b.stop()), ["fifo 2"]);
        assert!(b.is_off());
    }
}
