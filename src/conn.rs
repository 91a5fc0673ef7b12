//! One client connection: its socket, where it is in its life, what it has half-read and what
//! waits to be written.
//!
//! Kept small on purpose: an idle subscribed connection owns no read buffer (partial input is
//! kept only while a frame is incomplete), its outbound queue holds shared frames rather than
//! copies, and timers cost one `u32`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::ws::{Frame, Reassembly};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head.
    Request,
    /// The handshake waits for a forked validation handler's verdict.
    Validating,
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
    /// The debug console's event feed.
    Console,
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
    /// Already in the server's list of connections to flush this turn.
    pub dirty: bool,
    /// Over its queue limit: no more frames are queued; it is being closed.
    pub overflowed: bool,
    /// Our write side is shut (after the last queued byte went out in `Closing`).
    pub write_shut: bool,
    /// Its queue passed `outbound_pause_bytes`: nothing more is read from it (or handled from
    /// what was read) until the queue drains below that.
    pub paused: bool,
    /// See `Server::publish_stamp`.
    pub publish_stamp: u32,
    /// Pusher protocol state; `None` for other connections.
    pub pusher: Option<Box<crate::pusher::PusherConn>>,
    /// The user a validation handler said this connection belongs to.
    pub user: Option<Box<str>>,
    /// Routing to the application (raw mode with a `route` handler).
    pub route: Option<Box<crate::jobs::RouteState>>,
    /// TLS session when the listener serves `wss://`.
    pub tls: Option<Box<rustls::ServerConnection>>,
    close_notify_sent: bool,
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
            dirty: false,
            overflowed: false,
            write_shut: false,
            paused: false,
            publish_stamp: 0,
            pusher: None,
            tls: None,
            user: None,
            route: None,
            close_notify_sent: false,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.out_bytes
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queues a frame unless that would take the queue past `limit`; returns false then. A frame
    /// always fits an empty queue, so one large response is never refused on its own.
    pub fn enqueue(&mut self, frame: &Frame, limit: usize) -> bool {
        if self.out_bytes.saturating_add(frame.len()) > limit && !self.out.is_empty() {
            return false;
        }
        self.push(frame.clone());
        true
    }

    /// Whether the queue is past the point where the server stops reading from this client.
    pub fn over(&self, pause: usize) -> bool {
        self.out_bytes > pause
    }

    /// Queues a frame regardless of the limit: only for the last thing a connection is sent
    /// (a close frame, a final response) and the server's own pings, which the client did not
    /// ask for and cannot multiply.
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

    /// Reads application bytes: straight from the socket, or decrypted from TLS records.
    /// `Ok(0)` is end of stream; `WouldBlock` means nothing more for now.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Tell the peer why (a TLS alert) before giving up on it.
                        let _ = tls.write_tls(&mut self.stream);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// TLS has handshake or alert bytes to send even with nothing queued.
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes queued frames, gathering up to 64 per `writev`, until done or the socket is full.
    /// Returns the number of syscalls made and how far it got.
    pub fn flush(&mut self) -> io::Result<(Flushed, usize)> {
        if self.tls.is_some() {
            return self.flush_tls();
        }
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

    /// TLS: frames are copied into the session (which encrypts them) a bounded amount at a time,
    /// so the queue limit still measures what the client has not taken.
    fn flush_tls(&mut self) -> io::Result<(Flushed, usize)> {
        let mut calls = 0;
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Ok((Flushed::All, calls));
            };
            while tls.wants_write() {
                calls += 1;
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((Flushed::Blocked, calls));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.out.is_empty() {
                return Ok((Flushed::All, calls));
            }
            let mut fed = 0;
            while fed < 64 * 1024 {
                let Some(front) = self.out.front() else { break };
                let chunk = &front[self.out_offset..];
                let n = tls.writer().write(chunk)?;
                fed += n;
                let whole = n == chunk.len();
                advance_queue(&mut self.out, &mut self.out_offset, &mut self.out_bytes, n);
                if !whole || n == 0 {
                    break;
                }
            }
            if fed == 0 && !tls.wants_write() {
                // The session's buffer is full and nothing is pending: wait for the socket.
                return Ok((Flushed::Blocked, calls));
            }
        }
    }

    /// After the last frame: TLS sends close_notify; returns true once everything is out and the
    /// write side can be shut.
    pub fn finish_write(&mut self) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_mut()
            && !self.close_notify_sent
        {
            tls.send_close_notify();
            self.close_notify_sent = true;
        }
        if self.tls_wants_write() {
            let (state, _) = self.flush_tls()?;
            return Ok(state == Flushed::All);
        }
        Ok(true)
    }

    fn advance(&mut self, written: usize) {
        advance_queue(
            &mut self.out,
            &mut self.out_offset,
            &mut self.out_bytes,
            written,
        );
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

/// Drops `written` bytes from the front of a frame queue.
fn advance_queue(
    out: &mut VecDeque<Frame>,
    offset: &mut usize,
    bytes: &mut usize,
    mut written: usize,
) {
    *bytes -= written;
    while written > 0 {
        let Some(front) = out.front() else { break };
        let left = front.len() - *offset;
        if written >= left {
            written -= left;
            *offset = 0;
            out.pop_front();
        } else {
            *offset += written;
            written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_state_stays_small() {
        // The per-connection budget (≤ 1 KiB of RSS per idle subscribed connection, DESIGN.md)
        // starts here: the struct itself, before the slab slot, the socket and the kernel.
        let size = std::mem::size_of::<super::Conn>();
        println!("Conn is {size} bytes");
        assert!(size <= 256, "Conn grew to {size} bytes");
    }
}
