//! `http` handlers and webhook URLs over `https://`: rustls in the child that makes the call,
//! the system's CA bundle plus `tls_ca_file`, the host name checked, and a log line that says
//! what is wrong with a certificate. The endpoint is a rustls server in this test process, with
//! a certificate from a CA made here.
mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for the test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// An endpoint's certificate for `names`, signed by `ca`, and its key.
fn leaf(ca: &Ca, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    let cert = params.signed_by(&key, &ca.issuer).expect("certificate");
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    (vec![cert.der().clone()], der.into())
}

/// An HTTPS endpoint on 127.0.0.1 that answers every request `200 {"id":"u-tls"}`; returns its
/// port and the number of requests it answered. Its thread ends with the test process.
fn https_endpoint(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> (u16, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(T));
            let mut tls = rustls::StreamOwned::new(conn, stream);
            if answer(&mut tls).is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, answered)
}

/// Reads one request (head and Content-Length body) and answers it.
fn answer(tls: &mut impl ReadWrite) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_start = loop {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < body_start + length {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = r#"{"id":"u-tls"}"#;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(reply.as_bytes())?;
    tls.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn start(dir: &Path, cfg: Value) -> Server {
    let path = write_config(dir, "ferrocast.json", &cfg);
    Server::start(&["--config", &path.display().to_string()], &[])
}

#[test]
fn https_handlers_trust_the_ca_file_and_check_the_host_name() {
    let ours = ca("ferrocast test CA");
    let other = ca("another CA");
    let (chain, key) = leaf(&ours, &["localhost"]);
    let (port, answered) = https_endpoint(chain, key);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, &ours.pem).expect("write CA");
    std::fs::write(&other_file, &other.pem).expect("write CA");
    let url = format!("https://localhost:{port}/ws-auth");
    let validate = |url: &str| json!({"handler": "http", "url": url});

    // Trusted through tls_ca_file: the handshake is validated over HTTPS.
    let s = start(
        dir.path(),
        json!({"validate": validate(&url), "tls_ca_file": ca_file}),
    );
    s.try_ws("/chat", &[])
        .unwrap_or_else(|e| panic!("refused: {e:?}\n{}", s.logs_text()));
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    drop(s);

    let refused = |cfg: Value, why: &str| {
        let s = start(dir.path(), cfg);
        expect_refused(&s, "/chat", None, 401);
        assert!(
            s.wait_for_log(why, T).is_some(),
            "no \"{why}\" in the log:\n{}",
            s.logs_text()
        );
    };
    // The system's CAs only, or another CA: the certificate is not trusted.
    let untrusted = "not signed by a trusted CA";
    refused(json!({"validate": validate(&url)}), untrusted);
    refused(
        json!({"validate": validate(&url), "tls_ca_file": other_file}),
        untrusted,
    );
    // A trusted certificate for another name.
    let by_ip = format!("https://127.0.0.1:{port}/ws-auth");
    refused(
        json!({"validate": validate(&by_ip), "tls_ca_file": ca_file}),
        "not valid for this host name",
    );
    assert_eq!(
        answered.load(Ordering::SeqCst),
        1,
        "refused certificates got no request"
    );
}

#[test]
fn webhooks_go_to_https_urls() {
    let ours = ca("ferrocast test CA");
    let (chain, key) = leaf(&ours, &["localhost"]);
    let (port, answered) = https_endpoint(chain, key);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ours.pem).expect("write CA");
    let s = start(
        dir.path(),
        json!({"tls_ca_file": ca_file,
               "apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                         "webhooks": [{"url": format!("https://localhost:{port}/pusher/webhook")}]}]}),
    );
    let mut c = s.ws("/app/app-key?protocol=7");
    assert_eq!(c.recv_json(T)["event"], "pusher:connection_established");
    c.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "orders"}}));
    assert!(
        wait_until(T, || answered.load(Ordering::SeqCst) == 1),
        "the webhook did not arrive\n{}",
        s.logs_text()
    );
}

#[test]
fn a_ca_file_without_certificates_is_a_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let cfg = write_config(dir.path(), "ferrocast.json", &json!({"tls_ca_file": empty}));
    let out = run_cli(
        &["config", "--check", "--config", &cfg.display().to_string()],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("tls_ca_file") && out.stderr.contains("no PEM certificate"),
        "{}",
        out.stderr
    );
}
