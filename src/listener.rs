//! The listening socket: bound here with a deep backlog (mio's default of 1024 overflows under a
//! reconnect storm), or taken over from systemd socket activation.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};

use log::info;
use mio::net::TcpListener;
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, setsockopt, sockopt,
};

use crate::config::Config;

/// Whether an accept failed for lack of descriptors (or memory): retrying at once would spin.
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Pending connections the kernel may hold for us. Clamped by net.core.somaxconn.
const BACKLOG: i32 = 4096;
/// How far `auto_port` searches.
const AUTO_PORT_RANGE: u16 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot resolve host \"{host}\": {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        source: nix::Error,
        hint: &'static str,
    },
    #[error("no free port in {first}..={last} on {host} (auto_port)")]
    NoFreePort { host: String, first: u16, last: u16 },
    #[error(
        "socket activation passed fd {0}, which is not a listening TCP socket; check ListenStream= in ferrocast.socket"
    )]
    NotAListener(i32),
    #[error("socket activation: {0}")]
    Activation(std::io::Error),
}

/// The listener systemd passed us (`LISTEN_FDS`), if any. With socket activation the kernel
/// keeps queueing connections while the service restarts, so a restart refuses none.
pub fn activated() -> Result<Option<TcpListener>, ListenError> {
    let mut fds = crate::systemd::listen_fds();
    if fds.is_empty() {
        return Ok(None);
    }
    if fds.len() > 1 {
        log::warn!(
            "socket activation passed {} sockets; using the first",
            fds.len()
        );
    }
    let fd = fds.swap_remove(0);
    if !crate::systemd::listen_fd_is_tcp_listener(std::os::fd::AsFd::as_fd(&fd)) {
        return Err(ListenError::NotAListener(std::os::fd::AsRawFd::as_raw_fd(
            &fd,
        )));
    }
    let std_listener = std::net::TcpListener::from(fd);
    std_listener
        .set_nonblocking(true)
        .map_err(ListenError::Activation)?;
    info!(
        "using the inherited listening socket (LISTEN_FDS: systemd socket activation or a restart)"
    );
    Ok(Some(TcpListener::from_std(std_listener)))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, ListenError> {
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    (host_for_lookup, port)
        .to_socket_addrs()
        .map_err(|e| ListenError::Resolve {
            host: host.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ListenError::Resolve {
            host: host.into(),
            reason: "no address".into(),
        })
}

/// Binds `host:port`; with `auto_port`, walks up to +1000 ports past a taken one.
pub fn bind(cfg: &Config) -> Result<TcpListener, ListenError> {
    let last = if cfg.auto_port && cfg.port != 0 {
        cfg.port.saturating_add(AUTO_PORT_RANGE)
    } else {
        cfg.port
    };
    for port in cfg.port..=last {
        let addr = resolve(&cfg.host, port)?;
        match bind_addr(addr) {
            Ok(l) => {
                if port != cfg.port {
                    info!("port {} is taken; auto_port chose {port}", cfg.port);
                }
                return Ok(l);
            }
            Err(nix::Error::EADDRINUSE) if port < last => continue,
            Err(source) => {
                let hint = match source {
                    nix::Error::EADDRINUSE => {
                        " (another process uses this port; stop it, pick another `port`, or pass --auto-port)"
                    }
                    nix::Error::EACCES => " (ports below 1024 need privileges)",
                    nix::Error::EADDRNOTAVAIL => " (this machine has no such address)",
                    _ => "",
                };
                if cfg.auto_port && source == nix::Error::EADDRINUSE {
                    return Err(ListenError::NoFreePort {
                        host: cfg.host.clone(),
                        first: cfg.port,
                        last,
                    });
                }
                return Err(ListenError::Bind { addr, source, hint });
            }
        }
    }
    unreachable!("the loop returns on its last port")
}

fn bind_addr(addr: SocketAddr) -> Result<TcpListener, nix::Error> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Lets a restarted server bind while old connections sit in TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    // SAFETY: the fd is a freshly created, bound, listening, non-blocking TCP socket we own.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd.into_raw_fd()) };
    Ok(TcpListener::from_std(std_listener))
}
