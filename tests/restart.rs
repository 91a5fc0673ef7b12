//! `ferrocast restart`: clients are closed with 1012 so they reconnect at once, the process is
//! replaced in place (same pid, same listening socket, same FIFO), and no connection is refused
//! meanwhile.

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Server, T, run_cli, wait_until};

#[test]
fn restart_closes_with_1012_and_refuses_nothing() {
    let server = Server::start(&[], &[]);
    let pid = server.pid();
    let mut old = server.channel_client();
    old.subscribe("news");

    // Hammer the port from another thread for the whole restart: every connect must succeed.
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, attempts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (stop, refused, attempts) = (stop.clone(), refused.clone(), attempts.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if TcpStream::connect(&addr).is_err() {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mark = server.log_mark();
    let fifo = server.fifo().to_str().unwrap().to_string();
    let out = run_cli(&["restart", "--fifo", &fifo], &[], None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let (code, _) = old.expect_close(T);
    assert_eq!(code, 1012, "clients are told the service restarts");
    assert!(
        server
            .wait_for_log_since(mark, "restarting in place", T)
            .is_some(),
        "{}",
        server.logs_text()
    );
    // The new image logs its own start line.
    assert!(
        server
            .wait_for_log_since(mark, "listening on ws://", T)
            .is_some(),
        "the new process never started:\n{}",
        server.logs_text()
    );

    let mut new = server.channel_client();
    new.subscribe("news");
    server.publish_line(r#"{"channel":"news","data":"after the restart"}"#);
    assert_eq!(
        new.recv_text(T),
        "after the restart",
        "the FIFO survived the restart"
    );
    assert_eq!(server.pid(), pid);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "same process, new image"
    );

    assert!(wait_until(T, || attempts.load(Ordering::Relaxed) > 20));
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "a connection was refused during the restart"
    );
}

#[test]
fn restart_without_a_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("none.fifo");
    let out = run_cli(&["restart", "--fifo", fifo.to_str().unwrap()], &[], None);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("no ferrocast server is reading"),
        "{}",
        out.describe()
    );
}
