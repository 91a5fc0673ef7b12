//! The socket under one of the link's connections: TCP to a Redis server, or one end of a
//! socketpair to the local bus of a process with several loops (`loops/bus.rs`), which speaks
//! the same protocol.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Takes over one end of a socketpair made before this process was forked.
    ///
    /// # Safety
    /// `fd` must be an open, connected Unix stream socket that nothing else in this process
    /// owns.
    pub(super) unsafe fn from_socketpair(fd: RawFd) -> io::Result<Stream> {
        // SAFETY: the caller hands over sole ownership of an open descriptor.
        let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        std.set_nonblocking(true)?;
        Ok(Stream::Unix(UnixStream::from_std(std)))
    }

    /// The connection's pending error, if any (a failed non-blocking connect).
    pub(super) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Whether the connection is established: a socketpair always is.
    pub(super) fn is_connected(&self) -> io::Result<bool> {
        match self {
            Stream::Tcp(s) => match s.peer_addr() {
                Ok(_) => {
                    let _ = s.set_nodelay(true);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
            Stream::Unix(_) => Ok(true),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, token, interests),
            Stream::Unix(s) => s.register(r, token, interests),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, token, interests),
            Stream::Unix(s) => s.reregister(r, token, interests),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}
