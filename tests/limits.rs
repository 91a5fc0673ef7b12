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

    // Open clients until the server stops answering new ones.
    let mut clients = Vec::new();
    let mut stalled = None;
    for _ in 0..(LIMIT as usize + 20) {
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
        clients.len() < LIMIT as usize,
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
