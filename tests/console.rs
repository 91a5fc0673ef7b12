//! The debug console's HTTP side: off by default, behind a login, and served at a configured path.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, T};

fn get(server: &Server, path: &str, auth: Option<&str>) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(a) = auth {
        use base64::Engine;
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(a)
        ));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn console_is_off_unless_enabled() {
    let s = Server::start(&[], &[]);
    assert!(get(&s, "/console", Some("app-key:app-secret")).starts_with("HTTP/1.1 404"));
}

#[test]
fn console_at_a_configured_path_with_its_feed() {
    let s = Server::start(
        &[
            "--console",
            "--set",
            "console.path=/debug",
            "--set",
            "console.token=t0k",
        ],
        &[],
    );
    assert!(get(&s, "/debug", None).starts_with("HTTP/1.1 401"));
    assert!(get(&s, "/debug", Some("app-key:wrong")).starts_with("HTTP/1.1 401"));
    assert!(get(&s, "/console", Some("app-key:app-secret")).starts_with("HTTP/1.1 404"));
    let page = get(&s, "/debug", Some("token:t0k"));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(r#"var BASE = "/debug";"#),
        "the page's endpoints follow console.path"
    );
    let session = page
        .split("var SESSION = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page carries its session")
        .to_string();
    assert!(session.len() >= 32, "{session}");
    // The feed lives under the configured path and needs that session.
    assert!(s.try_ws("/debug/feed?session=nope", &[]).is_err());
    let mut feed = s.ws(&format!("/debug/feed?session={session}"));
    let hello = feed.recv_json(T);
    assert_eq!(hello["type"], "hello", "{hello}");
}
