//! Connection limits: max_connections and running out of file descriptors.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn max_connections_reached_is_503() {
    let s = Server::start(&["--set", "max_connections=2"], &[]);
    let mut a = s.channel_client();
    let mut b = s.ws("/raw");
    a.ping_pong();
    b.raw_ping_pong();
    let err = s
        .try_ws("/ws", &[])
        .err()
        .expect("third connection must be refused");
    assert_eq!(err.status(), Some(503), "{err:?}");
    a.close();
    // A slot is free again once the server has seen the close.
    let mut c = None;
    assert!(
        wait_until(T, || match s.try_ws("/ws", &[]) {
            Ok(cl) => {
                c = Some(cl);
                true
            }
            Err(e) => {
                assert_eq!(e.status(), Some(503), "{e:?}");
                false
            }
        }),
        "a new connection is accepted after one closed"
    );
    c.unwrap().ping_pong();
    b.raw_ping_pong();
}

#[test]
fn out_of_file_descriptors_then_recovers() {
    const LIMIT: u64 = 40;
    let s = Server::start_opts(Opts {
        nofile: Some(LIMIT),
        ..Default::default()
    });
    let mut first = s.channel_client();
    first.subscribe("emfile");

    // Open clients until the server stops answering new ones (each loop is a process with
    // its own descriptors).
    let mut clients = Vec::new();
    let mut stalled = None;
    for _ in 0..(LIMIT as usize * common::loop_count() + 20) {
        match connect_timeout(&s.addr(), "/raw", &[], Duration::from_secs(3)) {
            Ok(c) => clients.push(c),
            Err(e) => {
                stalled = Some(e);
                break;
            }
        }
    }
    let stalled = stalled.unwrap_or_else(|| {
        panic!(
            "{} clients accepted with RLIMIT_NOFILE={LIMIT}",
            clients.len() + 1
        )
    });
    eprintln!("{} clients accepted, then: {stalled:?}", clients.len());
    assert!(
        clients.len() >= 5,
        "only {} clients before the stall ({stalled:?})",
        clients.len()
    );
    assert!(
        clients.len() < LIMIT as usize * common::loop_count(),
        "more connections than descriptors"
    );

    // The server keeps serving the existing client, FIFO included.
    first.ping_pong();
    s.publish_json(&json!({"channel":"emfile","data":"while full"}));
    assert_eq!(first.recv_text(T), "while full");

    // Free descriptors: new clients are accepted again.
    let n = clients.len();
    for c in clients.drain(..n / 2) {
        c.close();
    }
    let mut fresh = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            match connect_timeout(&s.addr(), "/ws", &[], Duration::from_secs(3)) {
                Ok(c) => {
                    fresh = Some(c);
                    true
                }
                Err(_) => false,
            }
        }),
        "no new connection accepted after closing {} clients",
        n / 2
    );
    fresh.unwrap().ping_pong();
    first.ping_pong();
    // The remaining old clients still work.
    for c in clients.iter_mut() {
        c.raw_ping_pong();
    }
}

#[test]
fn max_connections_per_ip_is_429_for_that_address_only() {
    let s = Server::start(&["--set", "max_connections_per_ip=2"], &[]);
    let mut a = s.channel_client();
    let _b = s.channel_client();
    let err = s
        .try_ws("/ws", &[])
        .err()
        .expect("a third connection from 127.0.0.1 must be refused");
    assert_eq!(err.status(), Some(429), "{err:?}");
    // Another address is not affected: connect from 127.0.0.2.
    let other = socket2_connect_from("127.0.0.2", &s.addr());
    let mut raw = RawConn::from_stream(other);
    raw.handshake("/ws");
    // Closing one frees a slot for the first address.
    a.ping_pong();
    a.close();
    assert!(
        wait_until(T, || s.try_ws("/ws", &[]).is_ok()),
        "a slot never came free"
    );
}

/// A TCP connection from a chosen loopback source address.
fn socket2_connect_from(source: &str, target: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let src: std::net::SocketAddrV4 = format!("{source}:0").parse().unwrap();
    let dst: std::net::SocketAddrV4 = target.parse().unwrap();
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::SockaddrIn::from(src),
    )
    .unwrap();
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::SockaddrIn::from(dst),
    )
    .unwrap();
    unsafe { std::net::TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) }
}

#[test]
fn max_channels_per_connection_is_an_error_not_a_disconnect() {
    let s = Server::start(&["--set", "max_channels_per_connection=3"], &[]);
    let mut c = s.channel_client();
    for ch in ["a", "b", "c"] {
        c.subscribe(ch);
    }
    c.send_json(&json!({"action": "subscribe", "channel": "d"}));
    let v = c.recv_json(T);
    assert_eq!(v["event"], "error", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("max_channels_per_connection"),
        "{v}"
    );
    // Re-subscribing to a channel it already has is fine, and leaving one makes room.
    c.subscribe("a");
    c.unsubscribe("b");
    c.subscribe("d");
    c.ping_pong();
}
