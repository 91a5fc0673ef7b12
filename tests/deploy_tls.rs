//! Deployment: ferrocast serving `wss://` and `https://` itself (`tls.cert` / `tls.key`).
//!
//! Everything is real: a self-signed certificate made here with rcgen, the real binary, a
//! rustls client that trusts exactly that certificate, tungstenite on top of it for WebSocket.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct Pair {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn make_pair() -> Pair {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen: generate a self-signed certificate");
    Pair {
        cert_der: ck.cert.der().clone(),
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

impl Pair {
    /// Writes cert and key to `dir/{name}.crt` / `dir/{name}.key`.
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        self.write_to(&cert, &key);
        (cert, key)
    }

    /// Replaces the files atomically (write aside, rename), as a certificate renewal tool does.
    fn write_to(&self, cert: &Path, key: &Path) {
        for (path, text) in [(cert, &self.cert_pem), (key, &self.key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write PEM");
            std::fs::rename(&tmp, path).expect("rename PEM");
        }
    }
}

fn tls_args(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--set".into(),
        format!("tls.cert={}", cert.display()),
        "--set".into(),
        format!("tls.key={}", key.display()),
    ]
}

// ---------------------------------------------------------------------------------------------
// TLS client
// ---------------------------------------------------------------------------------------------

/// A rustls client configuration that trusts exactly `roots`.
fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("add root certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Connects to 127.0.0.1:port and completes the TLS handshake for server name `name`
/// (`localhost` or `127.0.0.1`); every step bounded by `T`.
fn tls_connect(port: u16, name: &str, cfg: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(T))?;
    sock.set_write_timeout(Some(T))?;
    let _ = sock.set_nodelay(true);
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let conn = ClientConnection::new(cfg.clone(), server_name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, sock);
    let deadline = Instant::now() + T;
    while stream.conn.is_handshaking() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ));
        }
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// The leaf certificate the server presented.
fn peer_leaf(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented no certificate")
        .clone()
        .into_owned()
}

/// `GET path` over a fresh TLS connection; returns (status, body). The server may end the
/// connection without close_notify: whatever arrived before that is the answer.
fn https_get(port: u16, path: &str, cfg: &Arc<ClientConfig>) -> (u16, String) {
    let mut s = tls_connect(port, "localhost", cfg).expect("TLS connect for https GET");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("send https request");
    s.flush().unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + T;
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(resp) = parse_http(&buf) {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "no complete https answer within {T:?}: {:?}",
            String::from_utf8_lossy(&buf)
        );
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!(
                "https read error: {e}; got so far {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    parse_http(&buf).unwrap_or_else(|| {
        panic!(
            "incomplete https answer: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// (status, body) once the head and a Content-Length body are complete.
fn parse_http(buf: &[u8]) -> Option<(u16, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let clen = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())?;
    if buf.len() < end + clen {
        return None;
    }
    Some((
        status,
        String::from_utf8_lossy(&buf[end..end + clen]).into_owned(),
    ))
}

/// A `wss://` client on the channel protocol.
struct Wss {
    ws: WebSocket<TlsStream>,
}

impl Wss {
    fn connect(port: u16, cfg: &Arc<ClientConfig>) -> Wss {
        let stream = tls_connect(port, "localhost", cfg).expect("TLS connect for wss");
        let req = format!("wss://localhost:{port}/ws")
            .into_client_request()
            .unwrap();
        match tungstenite::client::client(req, stream) {
            Ok((ws, resp)) => {
                assert_eq!(resp.status().as_u16(), 101);
                Wss { ws }
            }
            Err(e) => panic!("wss handshake failed: {e:?}"),
        }
    }

    fn peer_leaf(&self) -> CertificateDer<'static> {
        peer_leaf(self.ws.get_ref())
    }

    fn send_json(&mut self, v: &Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .expect("wss send");
    }

    fn recv_text(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no text message over wss within {timeout:?}"
            );
            self.ws.get_ref().sock.set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(t)) => return t.as_str().to_string(),
                Ok(Message::Close(c)) => panic!("wss connection closed by the server: {c:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("wss read error: {e}"),
            }
        }
    }

    fn recv_json(&mut self) -> Value {
        let t = self.recv_text(T);
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t:?}"))
    }

    fn subscribe(&mut self, channel: &str) {
        self.send_json(&json!({"action": "subscribe", "channel": channel}));
        let v = self.recv_json();
        assert_reply(
            &v,
            &json!({"event": "subscribed", "channel": channel}),
            "wss subscribe",
        );
    }

    fn ping_pong(&mut self) {
        self.send_json(&json!({"action": "ping"}));
        let v = self.recv_json();
        assert_reply(&v, &json!({"event": "pong"}), "wss ping");
    }
}

fn start_tls_server(cert: &Path, key: &Path) -> Server {
    let args = tls_args(cert, key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args, &[]);
    assert!(
        server.logs_text().contains("listening on wss://"),
        "with tls.cert/tls.key the server must announce wss://; logs:\n{}",
        server.logs_text()
    );
    server
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn wss_subscribe_and_receive_fifo_broadcast_and_https_up() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (cert, key) = pair.write(dir.path(), "server");
    let server = start_tls_server(&cert, &key);
    let cfg = client_config(&[&pair.cert_der]);

    let mut c = Wss::connect(server.port(), &cfg);
    assert_eq!(
        c.peer_leaf(),
        pair.cert_der,
        "the server must present the configured certificate"
    );
    c.subscribe("orders");
    server.publish_json(&json!({"channel": "orders", "data": "hi"}));
    assert_eq!(c.recv_text(T), "hi");

    // The certificate is valid for the IP address too (server name 127.0.0.1).
    let s = tls_connect(server.port(), "127.0.0.1", &cfg)
        .expect("TLS handshake with server name 127.0.0.1");
    drop(s);

    let (status, body) = https_get(server.port(), "/up", &cfg);
    assert_eq!(status, 200, "https GET /up: body {body:?}");
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/up body is not JSON ({e}): {body:?}"));
    assert_eq!(v["status"], "ok", "/up body {v}");

    // Older clients (TLS 1.2 only) are served too.
    let mut store = RootCertStore::empty();
    store.add(pair.cert_der.clone()).unwrap();
    let tls12 = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    );
    let (status, _) = https_get(server.port(), "/up", &tls12);
    assert_eq!(status, 200, "https GET /up over TLS 1.2");

    // A client that trusts another certificate refuses this server (the trust really is checked).
    let other = make_pair();
    let err = tls_connect(
        server.port(),
        "localhost",
        &client_config(&[&other.cert_der]),
    );
    assert!(
        err.is_err(),
        "a client trusting another root must not accept the server's certificate"
    );
}

#[test]
fn plaintext_client_on_tls_port_fails_fast_and_tls_client_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (cert, key) = pair.write(dir.path(), "server");
    let server = start_tls_server(&cert, &key);
    let cfg = client_config(&[&pair.cert_der]);

    let mut tls_client = Wss::connect(server.port(), &cfg);
    tls_client.subscribe("orders");

    // 1. A plain-text WebSocket handshake: no 101, and the server ends the connection.
    let mut raw = RawConn::connect(&server.addr());
    raw.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .expect("send plain-text handshake");
    let (bytes, eof) = raw.read_to_end(T);
    assert!(
        eof,
        "server kept a plain-text connection open on its TLS port for {T:?} (got {bytes:?})"
    );
    assert!(
        !bytes.starts_with(b"HTTP/"),
        "plain-text request on the TLS port got an HTTP answer: {:?}",
        String::from_utf8_lossy(&bytes)
    );

    // 2. The same through a real ws:// client: an error, not a hang.
    match connect_timeout(&server.addr(), "/ws", &[], T) {
        Ok(_) => panic!("a ws:// (plain-text) client completed a handshake on the TLS port"),
        Err(ConnectError::NoAnswer) => {
            panic!("ws:// client on the TLS port: no answer within {T:?} (hang)")
        }
        Err(ConnectError::Refused(r)) if r.status == 101 => panic!("101 over plain text"),
        Err(_) => {}
    }

    // 3. Plain HTTP GET /up: no HTTP answer either, and the connection ends.
    let mut raw = RawConn::connect(&server.addr());
    raw.send(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send plain-text GET");
    let (bytes, eof) = raw.read_to_end(T);
    assert!(
        eof,
        "plain-text GET /up: connection still open after {T:?} (got {bytes:?})"
    );
    assert!(
        !bytes.starts_with(b"HTTP/"),
        "plain-text GET /up on the TLS port got an HTTP answer: {:?}",
        String::from_utf8_lossy(&bytes)
    );

    // The TLS client connected all along still works.
    server.publish_json(&json!({"channel": "orders", "data": "still here"}));
    assert_eq!(tls_client.recv_text(T), "still here");
    tls_client.ping_pong();
}

#[test]
fn missing_certificate_file_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (_cert, key) = pair.write(dir.path(), "server");
    let missing = dir.path().join("no-such-cert.pem");
    let fifo = dir.path().join("b.fifo");
    let args = tls_args(&missing, &key);
    let mut all = vec!["websocket", "--port", "0", "--fifo", fifo.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    let out = run_cli(&all, &[], None);
    assert!(
        !out.status.success() && out.code().is_some(),
        "server must exit non-zero with a missing certificate; {}",
        out.describe()
    );
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "the error must name the certificate file {}; {}",
        missing.display(),
        out.describe()
    );
    assert!(!out.stderr.contains("listening on"), "{}", out.describe());

    // A missing key file too.
    let (cert, _) = pair.write(dir.path(), "server2");
    let missing_key = dir.path().join("no-such-key.pem");
    let args = tls_args(&cert, &missing_key);
    let mut all = vec!["websocket", "--port", "0", "--fifo", fifo.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    let out = run_cli(&all, &[], None);
    assert!(!out.status.success(), "missing key: {}", out.describe());
    assert!(
        out.stderr.contains(missing_key.to_str().unwrap()),
        "error must name the key file; {}",
        out.describe()
    );
}

#[test]
fn key_not_matching_certificate_is_a_startup_error_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_pair();
    let b = make_pair();
    let (cert_a, _key_a) = a.write(dir.path(), "a");
    let (_cert_b, key_b) = b.write(dir.path(), "b");
    let fifo = dir.path().join("b.fifo");
    let args = tls_args(&cert_a, &key_b);
    let mut all = vec!["websocket", "--port", "0", "--fifo", fifo.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    let out = run_cli(&all, &[], None);
    assert!(
        !out.status.success() && out.code().is_some(),
        "server must exit non-zero when the key does not match the certificate; {}",
        out.describe()
    );
    for f in [&cert_a, &key_b] {
        assert!(
            out.stderr.contains(f.to_str().unwrap()),
            "the error must name {}; {}",
            f.display(),
            out.describe()
        );
    }
    assert!(!out.stderr.contains("listening on"), "{}", out.describe());
}

#[test]
fn sighup_reloads_rotated_certificate_for_new_connections_old_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_pair();
    let (cert, key) = old.write(dir.path(), "server");
    let server = start_tls_server(&cert, &key);
    let trust_old = client_config(&[&old.cert_der]);

    let mut old_conn = Wss::connect(server.port(), &trust_old);
    assert_eq!(old_conn.peer_leaf(), old.cert_der);
    old_conn.subscribe("orders");

    // Renewal: a new pair at the same paths, then SIGHUP.
    let new = make_pair();
    new.write_to(&cert, &key);
    let mark = server.log_mark();
    server.signal(Signal::SIGHUP);
    assert!(
        server.wait_for_reload(mark, T).is_some(),
        "no `configuration reloaded` after SIGHUP; logs:\n{}",
        server.logs_text()
    );

    let trust_both = client_config(&[&old.cert_der, &new.cert_der]);
    let mut fresh = Wss::connect(server.port(), &trust_both);
    assert!(
        fresh.peer_leaf() == new.cert_der,
        "after SIGHUP a new connection must get the new certificate (got the {} one); logs:\n{}",
        if fresh.peer_leaf() == old.cert_der {
            "old"
        } else {
            "unknown"
        },
        server.logs_text()
    );
    // A client that trusts only the new certificate now connects.
    let only_new = client_config(&[&new.cert_der]);
    let s = tls_connect(server.port(), "localhost", &only_new)
        .expect("client trusting only the new certificate");
    assert_eq!(peer_leaf(&s), new.cert_der);
    drop(s);
    fresh.subscribe("orders");

    // The connection made before the reload still works both ways, on the old certificate.
    server.publish_json(&json!({"channel": "orders", "data": "after reload"}));
    assert_eq!(old_conn.recv_text(T), "after reload");
    assert_eq!(fresh.recv_text(T), "after reload");
    old_conn.ping_pong();
    assert_eq!(old_conn.peer_leaf(), old.cert_der);
}

#[test]
fn sighup_with_a_broken_certificate_keeps_serving_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (cert, key) = pair.write(dir.path(), "server");
    let server = start_tls_server(&cert, &key);
    let cfg = client_config(&[&pair.cert_der]);
    let mut c = Wss::connect(server.port(), &cfg);
    c.subscribe("orders");

    // A half-finished renewal: the key file replaced by another key.
    let other = make_pair();
    std::fs::write(&key, &other.key_pem).unwrap();
    let mark = server.log_mark();
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log_since(mark, "TLS reload failed", T)
            .is_some(),
        "a broken certificate/key pair on SIGHUP must be logged; logs:\n{}",
        server.logs_text()
    );
    let s = tls_connect(server.port(), "localhost", &cfg)
        .expect("new connection after a failed reload");
    assert_eq!(
        peer_leaf(&s),
        pair.cert_der,
        "a failed reload must keep the current certificate"
    );
    drop(s);
    server.publish_json(&json!({"channel": "orders", "data": "ok"}));
    assert_eq!(c.recv_text(T), "ok");
}

#[test]
fn wss_large_and_bursty_broadcasts_arrive_whole_and_in_order() {
    // Messages larger than one TLS record (16 KiB) and bursts that fill the socket buffer
    // exercise the partial-write path of the TLS layer.
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (cert, key) = pair.write(dir.path(), "server");
    let server = start_tls_server(&cert, &key);
    let cfg = client_config(&[&pair.cert_der]);
    let mut c = Wss::connect(server.port(), &cfg);
    c.subscribe("orders");

    let big: String = (0..50_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    server.publish_json(&json!({"channel": "orders", "data": big}));
    let got = c.recv_text(T);
    assert_eq!(
        got.len(),
        big.len(),
        "50 KB message over wss arrived with another length"
    );
    assert!(got == big, "50 KB message over wss arrived corrupted");

    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(
            &json!({"channel": "orders", "data": format!("m{i}-{}", "x".repeat(200))}).to_string(),
        );
        lines.push('\n');
    }
    server.publish(lines.as_bytes());
    for i in 0..2000 {
        let t = c.recv_text(T);
        assert_eq!(
            t,
            format!("m{i}-{}", "x".repeat(200)),
            "message {i} of a burst over wss"
        );
    }
    c.ping_pong();
}

fn start_tls_server_with(cert: &Path, key: &Path, extra: &[&str]) -> Server {
    let args = tls_args(cert, key);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

#[test]
fn silent_and_stalled_clients_on_the_tls_port_are_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (cert, key) = pair.write(dir.path(), "server");
    let server = start_tls_server_with(&cert, &key, &["--set", "handshake_timeout_secs=2"]);
    let cfg = client_config(&[&pair.cert_der]);

    // Sends nothing at all.
    let mut silent = RawConn::connect(&server.addr());
    // Completes TLS, then never sends the HTTP request.
    let mut stalled = tls_connect(server.port(), "localhost", &cfg).expect("TLS connect");
    // A working client meanwhile.
    let mut c = Wss::connect(server.port(), &cfg);
    c.subscribe("orders");

    let (_, eof) = silent.read_to_end(T);
    assert!(
        eof,
        "a silent client on the TLS port was kept open past handshake_timeout_secs"
    );
    let mut buf = [0u8; 1024];
    stalled.sock.set_read_timeout(Some(T)).unwrap();
    let t0 = Instant::now();
    let r = loop {
        match stalled.read(&mut buf) {
            Ok(0) => break Ok(0),
            Ok(n) => {
                // A 408 is allowed; keep reading to the end.
                let _ = n;
                continue;
            }
            Err(e) => break Err(e),
        }
    };
    match r {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            panic!(
                "a TLS client that sent no request was kept open for {:?}",
                t0.elapsed()
            )
        }
        Err(_) => {} // reset / unexpected EOF: closed
    }
    server.publish_json(&json!({"channel": "orders", "data": "alive"}));
    assert_eq!(c.recv_text(T), "alive");
}

#[test]
fn tls_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair();
    let (cert, key) = pair.write(dir.path(), "server");
    let server = start_tls_server_with(&cert, &key, &["--set", "outbound_queue_bytes=65536"]);
    let cfg = client_config(&[&pair.cert_der]);

    // Subscribe, then never read again.
    let mut lazy = Wss::connect(server.port(), &cfg);
    lazy.subscribe("orders");
    let mut good = Wss::connect(server.port(), &cfg);
    good.subscribe("orders");

    let payload = "y".repeat(8000);
    let mark = server.log_mark();
    let deadline = Instant::now() + T;
    let mut sent = 0;
    while server
        .wait_for_log_since(mark, "slow consumer", Duration::from_millis(1))
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "a TLS client that reads nothing was never closed as a slow consumer after {sent} messages \
             of 8000 bytes (outbound_queue_bytes=65536); logs:\n{}",
            server.logs_text()
        );
        let mut lines = String::new();
        for _ in 0..50 {
            lines.push_str(&json!({"channel": "orders", "data": payload}).to_string());
            lines.push('\n');
        }
        server.publish(lines.as_bytes());
        sent += 50;
        // The reading client drains what it got so far.
        for _ in 0..50 {
            assert_eq!(good.recv_text(T).len(), payload.len());
        }
    }
    server.publish_json(&json!({"channel": "orders", "data": "after"}));
    assert_eq!(good.recv_text(T), "after");
}
