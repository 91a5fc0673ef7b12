//! One of the link's two connections (subscriber, commands): its socket, TLS session, buffers
//! and the replies it waits for.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Auth,
    Select,
    /// The PING that ends the handshake.
    Hello,
    /// Periodic health PING.
    Health,
    Tag(u64),
    Publish,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) expect: Expect,
    /// Bytes counted against `max_queue_bytes`.
    pub(super) size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Sub,
    Cmd,
}

impl Which {
    pub(super) fn name(self) -> &'static str {
        match self {
            Which::Sub => "subscriber",
            Which::Cmd => "command",
        }
    }
}

pub(super) struct Conn {
    pub(super) token: Token,
    pub(super) stream: Option<Stream>,
    /// The TLS session over `stream` (`rediss://`).
    pub(super) tls: Option<Box<rustls::ClientConnection>>,
    pub(super) connected: bool,
    pub(super) handshaken: bool,
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) rbuf: Vec<u8>,
    pub(super) decoder: Decoder,
    pub(super) pending: VecDeque<Pending>,
    pub(super) health_sent: Option<Instant>,
    pub(super) last_health: Instant,
    /// The last read stopped at the read budget: more may be waiting in the socket.
    pub(super) more_to_read: bool,
}

impl Conn {
    pub(super) fn new(token: Token, limits: Limits, now: Instant) -> Conn {
        Conn {
            token,
            stream: None,
            tls: None,
            connected: false,
            handshaken: false,
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: Vec::new(),
            decoder: Decoder::new(limits),
            pending: VecDeque::new(),
            health_sent: None,
            last_health: now,
            more_to_read: false,
        }
    }

    pub(super) fn send(&mut self, args: &[&[u8]], expect: Option<Expect>, size: usize) {
        resp::encode_command(&mut self.wbuf, args);
        if let Some(expect) = expect {
            self.pending.push_back(Pending { expect, size });
        }
    }

    pub(super) fn close(&mut self, registry: &Registry) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        self.tls = None;
        self.connected = false;
        self.handshaken = false;
        self.wbuf.clear();
        self.wpos = 0;
        self.rbuf.clear();
        if self.rbuf.capacity() > KEEP_CAPACITY {
            self.rbuf.shrink_to(READ_CHUNK);
        }
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf.shrink_to(READ_CHUNK);
        }
        self.decoder.reset();
        self.health_sent = None;
        self.more_to_read = false;
        // `pending` is drained by the caller, which answers the tags.
    }

    pub(super) fn unsent(&self) -> bool {
        self.stream.is_some()
            && (self.wpos < self.wbuf.len() || self.tls.as_ref().is_some_and(|t| t.wants_write()))
    }

    /// Has the non-blocking connect finished? Err when it failed.
    pub(super) fn check_connected(&mut self) -> Result<bool, String> {
        if self.connected {
            return Ok(true);
        }
        let Some(s) = self.stream.as_ref() else {
            return Ok(false);
        };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => return Err(format!("connect failed: {e}")),
            Ok(None) => {}
        }
        match s.is_connected() {
            Ok(connected) => {
                self.connected = connected;
                Ok(connected)
            }
            Err(e) => Err(format!("connect failed: {e}")),
        }
    }

    /// Write queued bytes until done or `WouldBlock`.
    pub(super) fn write_out(&mut self) -> Result<(), String> {
        if !self.connected {
            return Ok(());
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        if let Some(tls) = self.tls.as_mut() {
            // Commands go into the session (buffered until the handshake is done), then
            // records go out until the socket is full.
            while self.wpos < self.wbuf.len() {
                match tls.writer().write(&self.wbuf[self.wpos..]) {
                    Ok(0) => break,
                    Ok(n) => self.wpos += n,
                    Err(e) => return Err(format!("TLS write failed: {e}")),
                }
            }
            while tls.wants_write() {
                match tls.write_tls(s) {
                    Ok(0) => return Err("write returned 0".into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("write failed: {e}")),
                }
            }
        }
        while self.wpos < self.wbuf.len() && self.tls.is_none() {
            match s.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > KEEP_CAPACITY {
                self.wbuf.shrink_to(READ_CHUNK);
            }
        } else if self.wpos >= KEEP_CAPACITY {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }
}

/// The client configuration of `rediss://`: the system's CA bundle plus `tls_ca_file`.
pub(super) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, LinkError> {
    crate::tls::client_config(ca_file).map_err(LinkError::Tls)
}
