//! The server without its sockets: every state and every rule, driven by the loop in
//! `server.rs` (or by a test, or a fuzzer) with plain inputs, and answering with output it can
//! apply. No socket, file or process is touched here.
//!
//! Inputs: a connection opened ([`Core::open`]), bytes arrived on it ([`Core::on_bytes`]), it
//! is gone ([`Core::on_gone`]), a FIFO line ([`Core::on_fifo_line`], [`Core::on_user_line`]),
//! a job finished ([`Core::on_job_done`]), something from the other nodes
//! ([`Core::on_node_message`], …), the time ([`Core::set_time`], [`Core::tick`]), a signal
//! ([`Core::shutdown`], [`Core::reload`]).
//!
//! Outputs: bytes queued per connection (the loop writes them: [`Core::outbox_mut`] for each
//! of [`Core::take_dirty`]), and [`Effects`]: sockets to drop, jobs to start, messages for the
//! other nodes, per-user FIFOs to open or close.
//!
//! Who decides that a connection closes: the core, in one place ([`close`]). A protocol handler
//! gets its own connection ([`Peer`]) and the shared state ([`State`]); it queues replies to its
//! connection, asks for its close, and hands publications to [`State::publish`]. It never
//! reaches another connection, so nothing closes under its feet; the core applies what it asked
//! for when it returns, then delivers the publications (the one publish path), then closes
//! what must close.

mod answer;
mod app_sync;
pub mod apps;
mod barrier;
pub mod cache;
mod channel;
mod close;
pub mod cluster;
pub mod conns;
mod console;
mod console_http;
pub mod consoles;
mod count_news;
mod deflated;
mod effects;
mod held;
mod history;
mod hooks;
mod http;
pub mod hub;
mod input;
pub mod jobs;
mod membership;
mod metrics;
mod metrics_merge;
mod notify;
mod online;
pub mod outbox;
mod outcomes;
mod peer;
mod pending;
mod publication;
mod publish;
mod pusher;
mod rest;
mod resume;
mod routing;
mod shared_counts;
mod state;
mod store_sync;
mod sub_counts;
mod subs;
mod ticks;
pub mod timers;
mod upgrade;
mod watchlist;
pub mod webhooks;

use std::net::SocketAddr;
use std::time::Instant;

use crate::config::Config;
use crate::job::Outcome;
pub use conns::{Mode, Phase};
pub use effects::{Effects, JobId, LinkOp, Stop, UserFifo};
pub use publication::{Origin, Publication};
pub use state::{IoStatus, LinkStatus, State, Stats};

pub struct Core {
    conns: conns::Conns,
    st: State,
}

impl Core {
    pub fn new(cfg: Config, process_id: u32, now: Instant, wall_ms: u64) -> Core {
        let bounds = outbox::Bounds {
            pause: cfg.output_bounds().0,
            hard: cfg.output_bounds().1,
        };
        let conns = conns::Conns::new(bounds, cfg.compression_from());
        Core {
            conns,
            st: State::new(cfg, process_id, now, wall_ms),
        }
    }

    pub fn cfg(&self) -> &Config {
        &self.st.cfg
    }

    pub fn state(&self) -> &State {
        &self.st
    }

    /// Connections the core holds (any phase).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether a publication made here waits for Redis (or the loops' bus) to number it, or a
    /// publication held for the bus's barrier.
    pub fn numbering(&self) -> bool {
        self.st.cluster.as_ref().is_some_and(|c| c.numbering())
            || self.st.barriers.holds_publications()
    }

    /// Open WebSocket sessions.
    pub fn sessions(&self) -> usize {
        self.st.sessions.open()
    }

    /// The listening port, for the CGI environment of handlers (`SERVER_PORT`).
    pub fn set_local_port(&mut self, port: u16) {
        self.st.local_port = port;
    }

    /// Whether [`Core::take_effects`] has anything.
    pub fn has_effects(&self) -> bool {
        !self.st.effects.is_empty()
    }

    /// Brings the clocks forward; call before every batch of inputs.
    pub fn set_time(&mut self, now: Instant, wall_ms: u64) {
        self.st.clock.set(now, wall_ms);
    }

    /// Counters only the loop knows, for `/up`, `/metrics` and the console.
    pub fn set_io_status(&mut self, io: IoStatus) {
        self.st.io = io;
    }

    pub fn take_effects(&mut self) -> Effects {
        self.st.barriers.seal();
        std::mem::take(&mut self.st.effects)
    }

    /// Swaps what the core asked for with `into`, which the caller has emptied: both sides keep
    /// their capacity, so a turn that closes connections allocates nothing for the list.
    pub fn swap_effects(&mut self, into: &mut Effects) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.st.effects, into);
        self.st.barriers.seal();
    }

    /// The connections with queued output (the list is swapped with `into`).
    pub fn take_dirty(&mut self, into: &mut Vec<usize>) {
        self.conns.take_dirty(into);
    }

    pub fn outbox_mut(&mut self, key: usize) -> Option<&mut outbox::Outbox> {
        self.conns.outbox_mut(key)
    }

    /// Whether the loop should read from this connection (not while its output is paused).
    pub fn wants_input(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|c| !c.is_paused())
    }

    /// Where a connection is in its life (`None`: gone).
    pub fn phase(&self, key: usize) -> Option<Phase> {
        self.conns.get(key).map(|c| c.phase)
    }

    /// When the core next needs [`Core::tick`] (at the latest).
    pub fn next_wake(&self) -> Option<Instant> {
        self.st.next_wake()
    }

    /// A connection was accepted under `key`.
    pub fn open(&mut self, key: usize, peer: SocketAddr) {
        let id = self.st.next_conn_id();
        let now = self.st.clock.secs();
        let mut conn = conns::Conn::new(id, peer, now);
        let due = now + self.st.cfg.handshake_timeout_secs as u32;
        conn.timer_due = self.st.timers.schedule(key, id, due);
        self.conns.insert(key, conn);
        self.st.stats.connections_opened += 1;
        log::debug!("connection {key} from {peer}");
    }

    /// Bytes arrived on a connection (decrypted already, when it is TLS).
    pub fn on_bytes(&mut self, key: usize, data: &mut [u8]) {
        self.refresh_stats();
        input::on_bytes(&mut self.conns, &mut self.st, key, data);
        self.settle();
    }

    /// Handles what a paused connection had read, now that its queue drained. Returns whether
    /// the loop may read more from it.
    pub fn resume(&mut self, key: usize) -> bool {
        input::handle_buffered(&mut self.conns, &mut self.st, key);
        self.settle();
        self.wants_input(key)
    }

    /// The peer shut its side (a read returned 0): the connection ends once what it is owed
    /// is written.
    pub fn on_eof(&mut self, key: usize) {
        close::peer_done(&mut self.conns, &mut self.st, key);
        self.settle();
    }

    /// Reading or writing failed: the connection ends at once.
    pub fn on_gone(&mut self, key: usize, why: &str) {
        close::close_now(&mut self.conns, &mut self.st, key, why);
        self.settle();
    }

    /// A connection was flushed (as far as the socket took): judges its output bound and
    /// resumes it if its queue drained. Returns whether the loop should now shut its side of a
    /// closing connection (everything was written).
    pub fn flushed(&mut self, key: usize) -> bool {
        self.conns.flushed(key);
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        if conn.phase != Phase::Closing || self.conns.has_output(key) {
            return false;
        }
        if conn.peer_done {
            // Everything is out and the peer closed already: nothing to wait for.
            close::close_now(&mut self.conns, &mut self.st, key, "peer closed");
            self.settle();
            return false;
        }
        true
    }

    /// Closes the slow consumers found this turn, and lists connections to read again.
    pub fn end_of_turn(&mut self, resumed: &mut Vec<usize>) {
        for key in self.conns.take_overflowed() {
            close::slow_consumer(&mut self.conns, &mut self.st, key);
        }
        resumed.extend(self.conns.take_resumed());
        self.settle();
    }

    /// One line from the broadcast FIFO.
    pub fn on_fifo_line(&mut self, line: &[u8]) {
        publish::fifo_line(&mut self.st, line);
        self.settle();
    }

    /// One line from a user's FIFO.
    pub fn on_user_line(&mut self, user: &str, line: &[u8]) {
        routing::user_line(&mut self.st, user, line);
        self.settle();
    }

    /// A job from [`Effects::jobs`] ended (or could not start: [`Outcome::SpawnFailed`]).
    pub fn on_job_done(&mut self, id: JobId, outcome: Outcome) {
        if let Some(key) = outcomes::done(&mut self.conns, &mut self.st, id, outcome) {
            // A handshake that opened may have frames waiting behind it.
            input::handle_buffered(&mut self.conns, &mut self.st, key);
        }
        self.settle();
    }

    /// The worker queue refused a job: answered like any failure, with the reason.
    pub fn on_job_refused(&mut self, id: JobId) {
        outcomes::refused(&mut self.conns, &mut self.st, id);
        self.settle();
    }

    /// A message another node published.
    pub fn on_node_message(&mut self, payload: &[u8]) {
        cluster::on_message(&mut self.st, payload);
        self.settle();
    }

    /// A word for the other loops of this process only, after what this turn published.
    pub fn tell_loops(&mut self, text: &str) {
        self.st
            .effects
            .link
            .push(effects::LinkOp::Loops(text.as_bytes().to_vec()));
    }

    /// A message another loop of this process sent to its siblings only (console events).
    pub fn on_loops_message(&mut self, payload: &[u8]) {
        console::relayed(&mut self.st, payload);
        self.settle();
    }

    /// The reply to a command from [`LinkOp::Command`].
    pub fn on_link_reply(&mut self, tag: u64, reply: crate::scaling::resp::Reply) {
        if cluster::sequence::Sequencer::owns(tag) {
            if let Some(parked) = cluster::sequence::on_reply(&mut self.st, tag, reply) {
                input::rerun(&mut self.conns, &mut self.st, parked);
            }
        } else {
            cluster::on_reply(&mut self.st, tag, reply);
        }
        self.settle();
    }

    /// The local bus's marker for barrier `n`: the questions that waited for it go on.
    pub fn on_barrier(&mut self, n: u64) {
        held::passed(&mut self.conns, &mut self.st, n);
        self.settle();
    }

    /// The loop begins to stop: FIFO lines read from now on are handled at once (and those
    /// held for a barrier now), so they reach clients before their close frames.
    pub fn stop_holding(&mut self) {
        held::stop(&mut self.conns, &mut self.st);
        self.settle();
    }

    /// The local bus refused a barrier: what waits goes on with what this loop knows.
    pub fn on_barrier_refused(&mut self) {
        held::give_up(&mut self.conns, &mut self.st, true);
        self.settle();
    }

    /// The Redis link went down: what waited for Redis goes on without it.
    pub fn on_link_down(&mut self) {
        held::give_up(&mut self.conns, &mut self.st, true);
        let parked = cluster::sequence::on_link_down(&mut self.st);
        self.rerun(parked);
    }

    /// Subscriptions that waited for Redis, handled now: after the publications made before
    /// them, which Redis did not number either, are delivered.
    fn rerun(&mut self, parked: Vec<cluster::sequence::Parked>) {
        self.settle();
        for p in parked {
            input::rerun(&mut self.conns, &mut self.st, p);
        }
        self.settle();
    }

    /// The Redis link came up (first time, or after an outage): exchange state.
    pub fn on_link_up(&mut self) {
        cluster::on_link_up(&mut self.st);
        self.settle();
    }

    /// Timers: connection deadlines, pings, webhooks, the cluster, the console, the cache.
    pub fn tick(&mut self) {
        ticks::tick(&mut self.conns, &mut self.st);
        self.settle();
        let parked = cluster::sequence::sweep(&mut self.st);
        self.rerun(parked);
        // What waited too long for a barrier goes on last: what waited for numbering went
        // out first, to the subscribers it was meant for.
        held::give_up(&mut self.conns, &mut self.st, false);
        self.settle();
    }

    /// Closes every connection for a shutdown (close frames for sessions, the rest at once).
    pub fn shutdown(&mut self, how: Stop) {
        close::shutdown(&mut self.conns, &mut self.st, how);
        self.settle();
    }

    /// The board of a process's loops: `/metrics`, `/up` and the console add the other loops'
    /// numbers to this one's.
    pub fn set_board(&mut self, board: crate::board::Board) {
        self.st.store_sync.share(board.loops());
        self.st.board = Some(board);
    }

    /// This loop's own metrics, for the board.
    pub fn local_metrics(&mut self) -> String {
        self.refresh_stats();
        metrics::render_local(&self.st)
    }

    /// The counters the connections keep themselves, into the stats (`/metrics` reads these).
    fn refresh_stats(&mut self) {
        self.st.stats.output_pauses = self.conns.pauses();
        let d = self.conns.deflated();
        let stats = &mut self.st.stats;
        (
            stats.deflated_frames,
            stats.deflated_bytes_in,
            stats.deflated_bytes_out,
        ) = (d.compressed, d.bytes_in, d.bytes_out);
    }

    /// Channel history for the next process (`ferrocast restart`).
    pub fn history_snapshot(&self) -> Vec<u8> {
        self.st.history.snapshot(self.st.clock.now())
    }

    /// Takes over a predecessor's channel history; how many streams.
    pub fn restore_history(&mut self, bytes: &[u8]) -> Result<usize, String> {
        let now = self.st.clock.now();
        self.st.history.restore(bytes, now)
    }

    /// Applies a reloaded configuration (settings fixed at start keep their values).
    pub fn reload(&mut self, new: Config) {
        let bounds = state::reload(&mut self.st, new);
        self.conns.set_bounds(bounds);
        let compression = self.st.cfg.compression_from();
        self.conns.deflated().set_min_bytes(compression);
    }

    /// Whether the loop may read the broadcast FIFO now: not while the publications it holds
    /// for the bus's barriers are at their bound (it reads again once they went out).
    pub fn fifo_room(&self) -> bool {
        self.st.barriers.has_room()
    }

    /// Whether the last reload is complete: the app store's table, when there is one, read
    /// again since.
    pub fn reload_settled(&self) -> bool {
        self.st.cfg.app_store.driver == "file" || self.st.store_sync.settled()
    }

    /// Checks the invariants that span owners (for tests and fuzzing): the hub's own, every
    /// connection the hub knows is an open session, the session count matches the sessions.
    pub fn audit(&self) -> Result<(), String> {
        self.st.hub.audit()?;
        let watchers = self.st.watchers.connections();
        for key in self.st.hub.attached().chain(watchers) {
            match self.conns.get(key) {
                Some(c) if c.phase == Phase::Open => {}
                _ => {
                    return Err(format!(
                        "the hub or a watchlist still knows connection {key}, not open"
                    ));
                }
            }
        }
        let open = self
            .conns
            .keys()
            .filter_map(|k| self.conns.get(k))
            .filter(|c| c.phase == Phase::Open && c.mode != Mode::Console)
            .count();
        if open != self.st.sessions.open() {
            return Err(format!(
                "{open} open sessions, {} counted",
                self.st.sessions.open()
            ));
        }
        Ok(())
    }

    /// Whether a connection is subscribed to `channel` of its app.
    pub fn is_subscribed(&self, key: usize, channel: &str) -> bool {
        let app = self.conns.get(key).map_or(0, |c| c.app());
        self.st
            .hub
            .lookup(app, channel)
            .is_some_and(|id| self.st.hub.is_subscribed(key, id))
    }

    /// Bytes read from a connection and not handled yet (0 when gone).
    pub fn buffered_bytes(&self, key: usize) -> usize {
        self.conns.get(key).map_or(0, |c| c.inbuf.len())
    }

    /// The protocol a connection speaks (`None`: gone).
    pub fn mode(&self, key: usize) -> Option<Mode> {
        self.conns.get(key).map(|c| c.mode)
    }

    /// Bytes queued for a connection (0 when gone).
    pub fn queued_bytes(&self, key: usize) -> usize {
        self.conns.get(key).map_or(0, |c| c.queued_bytes())
    }

    /// Delivers what the last input asked for: closes of other connections, publications,
    /// console events; repeated until nothing is left (a close can publish a member_removed).
    fn settle(&mut self) {
        loop {
            let mut closes = std::mem::take(&mut self.st.pending.closes);
            let mut publications = std::mem::take(&mut self.st.pending.publications);
            let mut console = std::mem::take(&mut self.st.pending.console);
            if closes.is_empty() && publications.is_empty() && console.is_empty() {
                return;
            }
            for (key, closing) in closes.drain(..) {
                close::apply(&mut self.conns, &mut self.st, key, closing);
            }
            for p in publications.drain(..) {
                if let Some(p) = held::hold_publication(&mut self.conns, &mut self.st, p) {
                    publish::deliver(&mut self.conns, &mut self.st, p);
                }
            }
            console::deliver(&mut self.conns, &mut self.st, &mut console);
            // The lists go back (with their capacity) unless handling them queued more: then
            // the next round takes those.
            let pending = &mut self.st.pending;
            if pending.closes.is_empty() {
                pending.closes = closes;
            }
            if pending.publications.is_empty() {
                pending.publications = publications;
            }
            if pending.console.is_empty() {
                pending.console = console;
            }
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
