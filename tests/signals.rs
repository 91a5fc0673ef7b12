//! SIGTERM/SIGINT shutdown and SIGHUP reload.
mod common;
use common::*;

fn shutdown_closes_clients_with_1001(sig: Signal) {
    let mut s = Server::start(&[], &[]);
    let mut a = s.channel_client();
    a.subscribe("x");
    let mut r = s.ws("/raw");
    r.raw_ping_pong();
    let mut raw = s.raw();
    raw.handshake("/ws");
    assert!(is_fifo(s.fifo()));
    s.signal(sig);
    assert_eq!(a.expect_close(T).0, 1001, "{sig:?}: channel client");
    assert_eq!(r.expect_close(T).0, 1001, "{sig:?}: raw-mode client");
    assert_eq!(raw.expect_close(T).0, 1001, "{sig:?}: hand-rolled client");
    // Let the clients finish their side of the close handshake.
    drop(a);
    drop(r);
    drop(raw);
    let st = s.wait_exit(T);
    assert_eq!(
        st.code(),
        Some(0),
        "{sig:?}: exit status; logs:\n{}",
        s.logs_text()
    );
    assert!(!s.fifo().exists(), "{sig:?}: FIFO removed on exit");
}

#[test]
fn sigterm_closes_clients_1001_removes_fifo_exits_0() {
    shutdown_closes_clients_with_1001(Signal::SIGTERM);
}

#[test]
fn sigint_closes_clients_1001_removes_fifo_exits_0() {
    shutdown_closes_clients_with_1001(Signal::SIGINT);
}

#[test]
fn sigterm_with_client_that_never_answers_close_still_exits() {
    // A client that ignores the close frame must not keep the server alive past shutdown_timeout_secs.
    let mut s = Server::start(&["--set", "shutdown_timeout_secs=1"], &[]);
    let mut raw = s.raw();
    raw.handshake("/raw");
    s.signal(Signal::SIGTERM);
    assert_eq!(raw.expect_close(T).0, 1001);
    // do not answer, keep the socket open
    let st = s.wait_exit(T);
    assert_eq!(st.code(), Some(0));
    assert!(!s.fifo().exists());
    drop(raw);
}

#[test]
fn sigterm_with_no_clients_exits_0() {
    let mut s = Server::start(&[], &[]);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(T).code(), Some(0));
    assert!(!s.fifo().exists());
}

#[test]
fn sighup_reloads_allowed_origins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "ferrocast.json",
        &json!({"allowed_origins": ["http://a.example"]}),
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    let mut existing = s
        .try_ws("/ws", &[("Origin", "http://a.example")])
        .expect("a allowed");
    existing.subscribe("keep");
    assert_eq!(
        s.try_ws("/ws", &[("Origin", "http://b.example")])
            .err()
            .and_then(|e| e.status()),
        Some(403)
    );

    write_config(
        dir.path(),
        "ferrocast.json",
        &json!({"allowed_origins": ["http://b.example"]}),
    );
    let mark = s.log_mark();
    s.signal(Signal::SIGHUP);
    assert!(
        s.wait_for_reload(mark, T).is_some(),
        "no `configuration reloaded` log line:\n{}",
        s.logs_text()
    );
    s.try_ws("/ws", &[("Origin", "http://b.example")])
        .expect("b allowed after reload")
        .ping_pong();
    assert_eq!(
        s.try_ws("/ws", &[("Origin", "http://a.example")])
            .err()
            .and_then(|e| e.status()),
        Some(403)
    );
    // Existing connections survive a reload.
    s.publish_json(&json!({"channel":"keep","data":"after reload"}));
    assert_eq!(existing.recv_text(T), "after reload");
}

#[test]
fn sighup_reloads_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "c.json", &json!({"max_message_bytes": 10000}));
    let s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    limit_drops_on_reload(&s, || {
        write_config(dir.path(), "c.json", &json!({"max_message_bytes": 1000}));
    });
}

#[test]
fn sighup_reads_the_env_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::write(&env, "FERROCAST_MAX_MESSAGE_BYTES=10000\n").unwrap();
    let s = Server::start(&["--env-file", env.to_str().unwrap()], &[]);
    limit_drops_on_reload(&s, || {
        std::fs::write(&env, "FERROCAST_MAX_MESSAGE_BYTES=1000\n").unwrap();
    });
}

/// A 3000-byte message passes `max_message_bytes` before `lower` and a SIGHUP, not after.
fn limit_drops_on_reload(s: &Server, lower: impl FnOnce()) {
    let mut before = s.channel_client();
    before.send_text(&"a".repeat(3000));
    assert_eq!(
        before.recv_json(T)["event"],
        "error",
        "3000 bytes is under the first limit"
    );
    lower();
    let mark = s.log_mark();
    s.signal(Signal::SIGHUP);
    assert!(s.wait_for_reload(mark, T).is_some(), "{}", s.logs_text());
    let mut after = s.channel_client();
    after.send_text(&"a".repeat(3000));
    assert_eq!(
        after.expect_close(T).0,
        1009,
        "new limit applies after reload"
    );
}

#[test]
fn sighup_with_broken_file_keeps_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"allowed_origins": ["http://a.example"]}),
    );
    let mut s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    std::fs::write(&cfg, b"{ this is not json").unwrap();
    let mark = s.log_mark();
    s.signal(Signal::SIGHUP);
    // Wait for the server to have handled the signal: it logs something about the file.
    assert!(
        s.wait_for_log_where(mark, T, |l| !l.contains("configuration reloaded")
            && (l.contains("c.json") || l.to_lowercase().contains("config")))
            .is_some(),
        "no log line about the failed reload:\n{}",
        s.logs_text()
    );
    assert!(
        s.running(),
        "a bad config file on SIGHUP must not kill the server"
    );
    s.try_ws("/ws", &[("Origin", "http://a.example")])
        .expect("old config still in force")
        .ping_pong();
    assert_eq!(
        s.try_ws("/ws", &[("Origin", "http://b.example")])
            .err()
            .and_then(|e| e.status()),
        Some(403)
    );
}
