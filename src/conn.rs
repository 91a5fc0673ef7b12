//! One client connection: its socket, where it is in its life, what it has half-read and what
//! waits to be written.
//!
//! Kept small on purpose: an idle subscribed connection owns no read buffer (partial input is
//! kept only while a frame is incomplete), its outbound queue holds shared frames rather than
//! copies, and timers cost one `u32`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::channels::ChannelId;
use crate::ws::{Frame, Reassembly};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head.
    Request,
    /// A WebSocket session.
    Open,
    /// A response or close frame is queued; once written we shut down our side and wait for EOF.
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
}

/// Most iovecs handed to one `writev`.
const MAX_IOV: usize = 64;

pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    pub mode: Mode,
    /// Unique for the life of the process; the second half of the socket id.
    pub id: u64,
    /// Seconds (server clock) when bytes last arrived.
    pub last_seen: u32,
    /// Due time of the connection's live timer entry.
    pub timer_due: u32,
    /// Bytes read but not yet consumed (an incomplete request head or frame). Usually empty.
    pub inbuf: Vec<u8>,
    /// A fragmented message in flight.
    pub fragments: Option<Box<Reassembly>>,
    out: VecDeque<Frame>,
    /// Bytes of `out.front()` already written.
    out_offset: usize,
    out_bytes: usize,
    pub subs: Vec<ChannelId>,
    /// Already in the server's list of connections to flush this turn.
    pub dirty: bool,
    /// Over its queue limit: no more frames are queued; it is being closed.
    pub overflowed: bool,
    /// Our write side is shut (after the last queued byte went out in `Closing`).
    pub write_shut: bool,
    /// Pusher protocol state; `None` for other connections.
    pub pusher: Option<Box<crate::pusher::PusherConn>>,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing left to write.
    All,
    /// The socket is full; a writable event will tell us when to go on.
    Blocked,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, id: u64, now: u32) -> Conn {
        Conn {
            stream,
            peer,
            phase: Phase::Request,
            mode: Mode::Http,
            id,
            last_seen: now,
            timer_due: 0,
            inbuf: Vec::new(),
            fragments: None,
            out: VecDeque::new(),
            out_offset: 0,
            out_bytes: 0,
            subs: Vec::new(),
            dirty: false,
            overflowed: false,
            write_shut: false,
            pusher: None,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.out_bytes
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queues a frame unless that would take the queue past `limit`; returns false then.
    pub fn enqueue(&mut self, frame: &Frame, limit: usize) -> bool {
        if self.out_bytes + frame.len() > limit && !self.out.is_empty() {
            return false;
        }
        self.push(frame.clone());
        true
    }

    /// Queues a frame regardless of the limit (responses and close frames we must send).
    pub fn push(&mut self, frame: Frame) {
        self.out_bytes += frame.len();
        self.out.push_back(frame);
    }

    /// Drops everything queued that has not started going out, keeping a half-written frame so
    /// the stream stays well-formed.
    pub fn discard_queue(&mut self) {
        let keep = if self.out_offset > 0 { 1 } else { 0 };
        while self.out.len() > keep {
            if let Some(f) = self.out.pop_back() {
                self.out_bytes -= f.len();
            }
        }
        self.out.shrink_to_fit();
    }

    /// Writes queued frames, gathering up to 64 per `writev`, until done or the socket is full.
    /// Returns the number of syscalls made and how far it got.
    pub fn flush(&mut self) -> io::Result<(Flushed, usize)> {
        let mut calls = 0;
        while !self.out.is_empty() {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, frame) in self.out.iter().take(MAX_IOV).enumerate() {
                let start = if i == 0 { self.out_offset } else { 0 };
                iov[i] = IoSlice::new(&frame[start..]);
                n += 1;
            }
            calls += 1;
            let written = match self.stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, calls));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(written);
        }
        // A burst can grow the queue's ring; give the memory back once it drained.
        if self.out.capacity() > 16 {
            self.out = VecDeque::new();
        }
        Ok((Flushed::All, calls))
    }

    fn advance(&mut self, mut written: usize) {
        self.out_bytes -= written;
        while written > 0 {
            let Some(front) = self.out.front() else { break };
            let left = front.len() - self.out_offset;
            if written >= left {
                written -= left;
                self.out_offset = 0;
                self.out.pop_front();
            } else {
                self.out_offset += written;
                written = 0;
            }
        }
    }

    /// Releases the read-side buffers once they hold nothing worth keeping.
    pub fn trim_buffers(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = Vec::new();
        }
    }

    /// Index of the app whose channels this connection uses (channel-protocol and raw
    /// connections use the first app's).
    pub fn app(&self) -> usize {
        self.pusher.as_ref().map(|p| p.app as usize).unwrap_or(0)
    }

    /// The Pusher-style socket id `"<process>.<connection>"`.
    pub fn socket_id(&self, process: u32) -> String {
        format!("{process}.{}", self.id)
    }
}
