//! Every connection's state (no socket: the loop holds those) and the output queue of each,
//! under the one bound. Keys are chosen by the loop, which owns the sockets: a key is reused
//! only after the loop dropped the socket that had it.
//!
//! Kept small on purpose: an idle subscribed connection owns no read buffer (partial input is
//! kept only while a frame is incomplete), its outbound queue holds shared frames rather than
//! copies, and timers cost one `u32`.

use std::net::SocketAddr;

use std::collections::VecDeque;

use super::apps::RateLimit;
use super::deflated::Deflated;
use super::outbox::{Bounds, Outbox};
use crate::ws::{Frame, Reassembly};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head.
    Request,
    /// The handshake waits for a forked validation handler's verdict.
    Validating,
    /// A WebSocket session.
    Open,
    /// A response or close frame is queued; once written the loop shuts our side and waits
    /// for the peer's EOF (or the linger timer).
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP request (no upgrade yet or none coming).
    Http,
    /// CarbonPHP style: receives global broadcasts, its messages go to the application.
    Raw,
    /// `{"action":"subscribe",...}` channel protocol.
    Channel,
    /// Pusher Channels protocol v7 (`/app/{key}`).
    Pusher,
    /// The debug console's event feed.
    Console,
}

/// What a Pusher connection carries beyond a plain one; boxed so other connections pay 8 bytes.
pub struct PusherConn {
    pub app: u16,
    /// Set by `pusher:signin`.
    pub user_id: Option<Box<str>>,
    pub client_events: RateLimit,
    /// With `require_user_authentication`: when (server clock) the connection must have signed in.
    pub signin_deadline: Option<u32>,
}

/// Routing state of a connection: kept only for raw-mode connections when routing is on.
#[derive(Default)]
pub struct RouteState {
    /// The handshake's CGI environment, the base of every routed request's.
    pub env: Vec<(String, String)>,
    pub inflight: usize,
    pub waiting: VecDeque<String>,
}

impl RouteState {
    pub fn new(env: Vec<(String, String)>) -> RouteState {
        RouteState {
            env,
            ..Default::default()
        }
    }
}

pub struct Conn {
    /// Unique for the life of the process; the second half of the socket id.
    pub id: u64,
    pub peer: SocketAddr,
    pub phase: Phase,
    pub mode: Mode,
    /// Seconds (server clock) when bytes last arrived.
    pub last_seen: u32,
    /// When the connection was accepted (the connection clock's second).
    pub since: u32,
    /// It negotiated permessage-deflate: data frames of `send` go compressed.
    pub deflate: bool,
    /// A channel-protocol client that asked for positions: messages of channels with history
    /// come with their epoch and offset, one per channel.
    pub positions: bool,
    /// Due time of the connection's live timer entry.
    pub timer_due: u32,
    /// Bytes read but not yet handled (an incomplete request or frame, or a paused
    /// connection's backlog). Usually empty.
    pub inbuf: Vec<u8>,
    /// A fragmented message in flight.
    pub fragments: Option<Box<Reassembly>>,
    out: Outbox,
    /// Already in the list of connections to flush this turn.
    dirty: bool,
    /// Past the pause mark: its input waits until its queue drains.
    paused: bool,
    /// A request of its waits for Redis (a subscription parked by `cluster/sequence.rs`): its
    /// later input waits behind it, in order.
    waiting: bool,
    /// The peer shut its side (EOF): once its queue is out, the connection ends.
    pub peer_done: bool,
    /// The stamp of the last publication this connection received a bare payload of, so a
    /// publication to several channels reaches a channel-protocol client once.
    pub publish_stamp: u32,
    /// Pusher protocol state; `None` for other connections.
    pub pusher: Option<Box<PusherConn>>,
    /// The user a validation handler said this connection belongs to.
    pub user: Option<Box<str>>,
    /// Routing to the application (raw mode with a `route` handler).
    pub route: Option<Box<RouteState>>,
}

impl Conn {
    pub fn new(id: u64, peer: SocketAddr, now: u32) -> Conn {
        Conn {
            id,
            peer,
            phase: Phase::Request,
            mode: Mode::Http,
            last_seen: now,
            since: now,
            deflate: false,
            positions: false,
            timer_due: 0,
            inbuf: Vec::new(),
            fragments: None,
            out: Outbox::default(),
            dirty: false,
            paused: false,
            waiting: false,
            peer_done: false,
            publish_stamp: 0,
            pusher: None,
            user: None,
            route: None,
        }
    }

    /// The Pusher-style socket id `"<process>.<connection>"`.
    pub fn socket_id(&self, process: u32) -> String {
        format!("{process}.{}", self.id)
    }

    /// Index of the app whose channels this connection uses (channel-protocol and raw
    /// connections use the first app's).
    pub fn app(&self) -> usize {
        self.pusher.as_ref().map_or(0, |p| p.app as usize)
    }

    /// The user the connection belongs to: signed in (Pusher) or validated (raw, channel).
    pub fn user_id(&self) -> Option<&str> {
        match &self.pusher {
            Some(p) => p.user_id.as_deref(),
            None => self.user.as_deref(),
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.out.bytes()
    }

    pub fn is_paused(&self) -> bool {
        self.paused || self.waiting
    }

    /// Its input waits until [`Conns::unwait`].
    pub fn wait(&mut self) {
        self.waiting = true;
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    pub fn overflowed(&self) -> bool {
        self.out.overflowed()
    }

    /// Releases the read-side buffers once they hold nothing worth keeping.
    pub fn trim_buffers(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = Vec::new();
        }
    }
}

/// The connections, by key.
pub struct Conns {
    slots: Vec<Option<Conn>>,
    len: usize,
    lists: Lists,
}

/// The output bound and the lists the end of a turn works through.
pub struct Lists {
    bounds: Bounds,
    /// Connections with queued output, flushed at the end of the turn.
    dirty: Vec<usize>,
    /// Connections over their bound, closed at the end of the turn.
    overflowed: Vec<usize>,
    /// Connections whose queue drained below the pause mark: their input is handled again.
    resumed: Vec<usize>,
    /// Times a connection was paused.
    pauses: u64,
    /// Compressed copies of frames, for connections that negotiated permessage-deflate.
    deflated: Deflated,
}

impl Lists {
    /// Queues a frame to a connection within the bound (a broadcast, a reply, an HTTP answer:
    /// everything counts). Returns whether it was queued; one that does not fit marks the
    /// connection for closing as a slow consumer.
    pub fn send(&mut self, key: usize, conn: &mut Conn, frame: &Frame) -> bool {
        if !matches!(conn.phase, Phase::Open | Phase::Request) {
            return false;
        }
        let compressed;
        let frame = if conn.deflate && conn.phase == Phase::Open {
            compressed = self.deflated.variant(frame);
            &compressed
        } else {
            frame
        };
        let was = conn.out.overflowed();
        if !conn.out.offer(frame, self.bounds) {
            if !was {
                self.overflowed.push(key);
            }
            return false;
        }
        self.mark(key, conn);
        true
    }

    /// Queues a frame whatever the bound (close frames, final answers, the server's pings).
    pub fn push(&mut self, key: usize, conn: &mut Conn, frame: Frame) {
        conn.out.push(frame);
        self.mark(key, conn);
    }

    fn mark(&mut self, key: usize, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Pauses the connection's input if its queue is past the pause mark; whether it is paused.
    pub fn pause_if_over(&mut self, conn: &mut Conn) -> bool {
        if !conn.paused && conn.out.bytes() > self.bounds.pause {
            conn.paused = true;
            self.pauses += 1;
        }
        conn.paused
    }
}

impl Conns {
    /// `compression`: frames from this many payload bytes up go compressed to connections
    /// that negotiated it; `None`: compression is off.
    pub fn new(bounds: Bounds, compression: Option<usize>) -> Conns {
        Conns {
            slots: Vec::new(),
            len: 0,
            lists: Lists {
                bounds,
                dirty: Vec::new(),
                overflowed: Vec::new(),
                resumed: Vec::new(),
                pauses: 0,
                deflated: Deflated::new(compression),
            },
        }
    }

    /// What [`Lists::send`] compresses; reloaded with the configuration.
    pub fn deflated(&mut self) -> &mut Deflated {
        &mut self.lists.deflated
    }

    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.lists.bounds = bounds;
    }

    pub fn pauses(&self) -> u64 {
        self.lists.pauses
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a connection under the key the loop chose (free: its socket is new).
    pub fn insert(&mut self, key: usize, conn: Conn) {
        if self.slots.len() <= key {
            self.slots.resize_with(key + 1, || None);
        }
        assert!(
            self.slots[key].is_none(),
            "connection key {key} reused while taken"
        );
        self.slots[key] = Some(conn);
        self.len += 1;
    }

    pub fn remove(&mut self, key: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(key)?.take()?;
        self.len -= 1;
        Some(conn)
    }

    pub fn get(&self, key: usize) -> Option<&Conn> {
        self.slots.get(key)?.as_ref()
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slots.get_mut(key)?.as_mut()
    }

    /// One connection and the output lists, to work on both at once.
    pub fn split(&mut self, key: usize) -> Option<(&mut Conn, &mut Lists)> {
        let conn = self.slots.get_mut(key)?.as_mut()?;
        Some((conn, &mut self.lists))
    }

    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(k, c)| c.as_ref().map(|_| k))
    }

    /// See [`Lists::send`].
    pub fn send(&mut self, key: usize, frame: &Frame) -> bool {
        match self.split(key) {
            Some((conn, lists)) => lists.send(key, conn, frame),
            None => false,
        }
    }

    /// Queues a frame to a console feed, dropped past the pause mark (best effort).
    pub fn send_droppable(&mut self, key: usize, frame: &Frame) -> bool {
        let Some((conn, lists)) = self.split(key) else {
            return false;
        };
        let frame = if conn.deflate {
            lists.deflated.variant(frame)
        } else {
            frame.clone()
        };
        if conn.phase != Phase::Open || !conn.out.offer_droppable(&frame, lists.bounds.pause) {
            return false;
        }
        lists.mark(key, conn);
        true
    }

    /// See [`Lists::push`].
    pub fn push(&mut self, key: usize, frame: Frame) {
        if let Some((conn, lists)) = self.split(key) {
            lists.push(key, conn, frame);
        }
    }

    /// Marks a connection for the end-of-turn flush (TLS records may be waiting).
    pub fn touch(&mut self, key: usize) {
        if let Some((conn, lists)) = self.split(key) {
            lists.mark(key, conn);
        }
    }

    /// See [`Lists::pause_if_over`].
    pub fn pause_if_over(&mut self, key: usize) -> bool {
        match self.split(key) {
            Some((conn, lists)) => lists.pause_if_over(conn),
            None => false,
        }
    }

    /// The connections to flush this turn (swapped into `into`, which should be empty).
    pub fn take_dirty(&mut self, into: &mut Vec<usize>) {
        std::mem::swap(&mut self.lists.dirty, into);
        for &key in into.iter() {
            if let Some(c) = self.slots.get_mut(key).and_then(Option::as_mut) {
                c.dirty = false;
            }
        }
    }

    /// The queue the loop writes from.
    pub fn outbox_mut(&mut self, key: usize) -> Option<&mut Outbox> {
        Some(&mut self.slots.get_mut(key)?.as_mut()?.out)
    }

    /// After a flush: judges the bound (a slow consumer is marked for closing) and resumes a
    /// paused connection whose queue drained below the pause mark.
    pub fn flushed(&mut self, key: usize) {
        let Some((conn, lists)) = self.split(key) else {
            return;
        };
        let was = conn.out.overflowed();
        if conn.phase == Phase::Open && conn.out.judge(lists.bounds) && !was {
            lists.overflowed.push(key);
        }
        if conn.paused && conn.out.bytes() <= lists.bounds.pause {
            conn.paused = false;
            lists.resumed.push(key);
        }
    }

    pub fn take_overflowed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.lists.overflowed)
    }

    /// What a connection waited for came: its input is handled again (unless its queue
    /// holds it back).
    pub fn unwait(&mut self, key: usize) {
        let Some((conn, lists)) = self.split(key) else {
            return;
        };
        if conn.waiting {
            conn.waiting = false;
            if !conn.paused {
                lists.resumed.push(key);
            }
        }
    }

    pub fn take_resumed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.lists.resumed)
    }

    /// Drops a slow consumer's queue (keeping a half-written frame) before its close frame.
    pub fn discard_queue(&mut self, key: usize) {
        if let Some(conn) = self.get_mut(key) {
            conn.out.discard();
        }
    }

    pub fn has_output(&self, key: usize) -> bool {
        self.get(key).is_some_and(|c| !c.out.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_state_stays_small() {
        // The per-connection budget (≤ 1 KiB of RSS per idle subscribed connection) starts
        // here: the state itself, before the socket, the hub's record and the kernel.
        let size = std::mem::size_of::<Option<super::Conn>>();
        println!("Conn is {size} bytes");
        assert!(size <= 256, "Conn grew to {size} bytes");
    }
}
