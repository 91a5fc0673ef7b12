//! Plain HTTP on the WebSocket port keeps HTTP/1.1 connections open, so REST publishers do not
//! pay a TCP handshake per event; pipelined requests are answered in order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, T};

fn read_all(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(T)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn keep_alive_and_pipelining() {
    let server = Server::start(&[], &[]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let one = "GET /up HTTP/1.1\r\nHost: x\r\n\r\n";
    let last = "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    s.write_all(format!("{}{last}", one.repeat(20)).as_bytes())
        .unwrap();
    let text = read_all(s);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 20, "{text}");
    assert_eq!(text.matches("Connection: keep-alive").count(), 20, "{text}");
    assert!(
        text.ends_with("{\"error\":\"not found\"}"),
        "the last answer closes: {text}"
    );
    assert_eq!(text.matches("Connection: close").count(), 1, "{text}");
}

#[test]
fn rest_events_share_one_connection() {
    let server = Server::start(&[], &[]);
    let mut sub = server.channel_client();
    sub.subscribe("ka");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    for i in 0..3 {
        let body = format!(r#"{{"name":"e","channel":"ka","data":"event {i}"}}"#);
        let req = format!(
            "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        assert_eq!(sub.recv_text(T), format!("event {i}"));
    }
    s.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = read_all(s);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 4, "{text}");
}

#[test]
fn http_1_0_is_answered_and_closed() {
    let server = Server::start(&[], &[]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET /up HTTP/1.0\r\n\r\n").unwrap();
    let text = read_all(s);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
}
