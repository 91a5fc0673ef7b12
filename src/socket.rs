//! One client socket: TCP, and TLS over it when the listener serves `wss://`. Reads hand
//! application bytes to the loop; flushes write a connection's queue with one `writev` per
//! 64 frames, so a burst of broadcasts costs one syscall per recipient, not one per message.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;

use crate::core::outbox::Outbox;

/// Most iovecs handed to one `writev`.
const MAX_IOV: usize = 64;
/// Plaintext handed to a TLS session per round, so the queue bound still measures what the
/// client has not taken.
const TLS_FEED: usize = 64 * 1024;

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing left to write.
    All,
    /// The socket is full; a writable event will tell us when to go on.
    Blocked,
}

pub struct Socket {
    stream: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    close_notify_sent: bool,
    /// Our write side is shut (after the last queued byte of a closing connection).
    write_shut: bool,
}

impl Socket {
    pub fn new(stream: TcpStream, tls: Option<Box<rustls::ServerConnection>>) -> Socket {
        Socket {
            stream,
            tls,
            close_notify_sent: false,
            write_shut: false,
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads application bytes: straight from the socket, or decrypted from TLS records.
    /// `Ok(0)` is end of stream; `WouldBlock` means nothing more for now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

    /// Writes queued frames until done or the socket is full; returns how far it got and the
    /// number of syscalls made.
    pub fn flush(&mut self, out: &mut Outbox) -> io::Result<(Flushed, usize)> {
        if self.tls.is_some() {
            return self.flush_tls(out);
        }
        let mut calls = 0;
        while !out.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = out.slices(&mut iov);
            calls += 1;
            match self.stream.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => out.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, calls));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((Flushed::All, calls))
    }

    /// TLS: frames are copied into the session (which encrypts them) a bounded amount at a
    /// time.
    fn flush_tls(&mut self, out: &mut Outbox) -> io::Result<(Flushed, usize)> {
        let mut calls = 0;
        let Some(tls) = self.tls.as_mut() else {
            return Ok((Flushed::All, calls));
        };
        loop {
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
            if out.is_empty() {
                return Ok((Flushed::All, calls));
            }
            let mut fed = 0;
            while fed < TLS_FEED {
                let Some(chunk) = out.front() else { break };
                let n = tls.writer().write(chunk)?;
                let whole = n == chunk.len();
                fed += n;
                out.advance(n);
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

    /// After the last queued byte of a closing connection: TLS sends close_notify, then our
    /// write side is shut (FIN), so the peer knows and closes its side; we then wait for its
    /// EOF, so the kernel does not reset the connection over unread input. Returns whether the
    /// write side is shut now.
    pub fn finish(&mut self) -> io::Result<bool> {
        if self.write_shut {
            return Ok(true);
        }
        if let Some(tls) = self.tls.as_mut()
            && !self.close_notify_sent
        {
            tls.send_close_notify();
            self.close_notify_sent = true;
        }
        if self.tls_wants_write() {
            let (state, _) = self.flush_tls(&mut Outbox::default())?;
            if state == Flushed::Blocked {
                return Ok(false);
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.write_shut = true;
        Ok(true)
    }
}
