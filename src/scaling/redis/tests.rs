//! Tests of the Redis link: URL parsing and backoff as unit tests; the rest
//! against a private `redis-server` (started per test on a free loopback
//! port, killed at the end) or a fake TCP server, driven by a small mio loop
//! on the test's own thread.
//!
//! These tests need `redis-server` on PATH (`tests/run.sh` installs it) and fail
//! without it rather than pass untested.

use super::*;
use mio::net::TcpListener;
use mio::{Events, Poll};
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------- helpers

fn redis_available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "redis-server not found: install it (apt-get install redis-server)"
    );
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    fn start(extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok()
                    && let Ok(n) = s.read(&mut buf)
                    && (buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
                {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, auth: &str, db: u32) -> String {
        format!("redis://{auth}127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fast_opts() -> LinkOptions {
    LinkOptions {
        backoff_max: Duration::from_millis(800),
        ..LinkOptions::default()
    }
}

fn link_n(url: &str, n: usize, opts: LinkOptions) -> RedisLink {
    RedisLink::with_options(url, Token(10 * n), Token(10 * n + 1), opts).expect("valid url")
}

/// A tiny server loop: the links, and optionally a fake Redis on `Token(1000)`.
struct Driver {
    poll: Poll,
    events: Events,
    fake: Option<FakeServer>,
}

/// Accepts every connection and writes `greeting` to it at once.
struct FakeServer {
    listener: TcpListener,
    greeting: Vec<u8>,
    conns: Vec<mio::net::TcpStream>,
    accepted: usize,
}

const FAKE: Token = Token(1000);

impl Driver {
    fn new() -> Driver {
        Driver {
            poll: Poll::new().expect("poll"),
            events: Events::with_capacity(256),
            fake: None,
        }
    }

    fn with_fake(greeting: &[u8]) -> (Driver, String) {
        let mut d = Driver::new();
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        d.poll
            .registry()
            .register(&mut listener, FAKE, Interest::READABLE)
            .expect("register");
        d.fake = Some(FakeServer {
            listener,
            greeting: greeting.to_vec(),
            conns: Vec::new(),
            accepted: 0,
        });
        (d, format!("redis://{addr}"))
    }

    fn turn(&mut self, links: &mut [&mut RedisLink], out: &mut [Vec<LinkEvent>]) {
        self.poll
            .poll(&mut self.events, Some(Duration::from_millis(5)))
            .expect("poll");
        let registry = self.poll.registry();
        for ev in self.events.iter() {
            if ev.token() == FAKE {
                if let Some(f) = self.fake.as_mut() {
                    while let Ok((mut s, _)) = f.listener.accept() {
                        let _ = s.write(&f.greeting);
                        f.accepted += 1;
                        f.conns.push(s); // kept open, never read
                    }
                }
                continue;
            }
            for (i, l) in links.iter_mut().enumerate() {
                if l.owns(ev.token()) {
                    l.on_ready(registry, ev.token(), &mut out[i]);
                }
            }
        }
        let now = Instant::now();
        for (i, l) in links.iter_mut().enumerate() {
            l.tick(registry, now, &mut out[i]);
        }
    }

    /// Turn the loop until `done(out)` or `timeout`; returns whether done.
    fn run_until(
        &mut self,
        links: &mut [&mut RedisLink],
        out: &mut [Vec<LinkEvent>],
        timeout: Duration,
        mut done: impl FnMut(&[Vec<LinkEvent>]) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(out) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.turn(links, out);
        }
    }

    fn run_for(&mut self, links: &mut [&mut RedisLink], out: &mut [Vec<LinkEvent>], d: Duration) {
        self.run_until(links, out, d, |_| false);
    }

    fn start(&mut self, links: &mut [&mut RedisLink]) {
        let now = Instant::now();
        for l in links.iter_mut() {
            l.start(self.poll.registry(), now);
        }
    }

    fn flush(&mut self, links: &mut [&mut RedisLink], out: &mut [Vec<LinkEvent>]) {
        for (i, l) in links.iter_mut().enumerate() {
            l.flush(self.poll.registry(), &mut out[i]);
        }
    }
}

fn count(events: &[LinkEvent], f: impl Fn(&LinkEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn ups(events: &[LinkEvent]) -> usize {
    count(events, |e| *e == LinkEvent::Up)
}

fn downs(events: &[LinkEvent]) -> usize {
    count(events, |e| matches!(e, LinkEvent::Down { .. }))
}

fn down_reason(events: &[LinkEvent]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            LinkEvent::Down { reason } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn messages(events: &[LinkEvent]) -> Vec<(Vec<u8>, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Message { channel, payload } => Some((channel.clone(), payload.clone())),
            _ => None,
        })
        .collect()
}

fn reply_for(events: &[LinkEvent], want: u64) -> Vec<Reply> {
    events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Reply { tag, reply } if *tag == want => Some(reply.clone()),
            _ => None,
        })
        .collect()
}

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- unit tests

#[test]
fn url_parsing() {
    let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
    assert_eq!((u.username, u.password), (None, None));

    let u = RedisUrl::parse("redis://localhost").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.db), ("localhost", 6379, 0));

    let u = RedisUrl::parse("redis://:p%40ss%3Aw@redis.internal:7000").unwrap();
    assert_eq!(u.password.as_deref(), Some("p@ss:w"));
    assert_eq!(u.username, None);
    assert_eq!(u.redacted(), "redis://:***@redis.internal:7000/0");

    let u = RedisUrl::parse("redis://alice:s3cr@t@[::1]:6390/15").unwrap();
    assert_eq!(u.username.as_deref(), Some("alice"));
    assert_eq!(u.password.as_deref(), Some("s3cr@t"));
    assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 6390, 15));
    assert_eq!(u.redacted(), "redis://alice:***@[::1]:6390/15");
    assert!(!format!("{u:?}").contains("s3cr"));

    let u = RedisUrl::parse("redis://[::1]").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 6379));
    let u = RedisUrl::parse("redis://h/").unwrap();
    assert_eq!(u.db, 0);

    let u = RedisUrl::parse("rediss://cache:6380").unwrap();
    assert!(u.tls);
    assert_eq!(u.redacted(), "rediss://cache:6380/0");

    for bad in [
        "http://h",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:99999",
        "redis://h:abc",
        "redis://h/x",
        "redis://h/-1",
        "redis://h?db=1",
        "redis://alice@h",
        "redis://[::1",
        "redis://[zz]:1",
        "redis://:%zz@h",
        "unix:///tmp/redis.sock",
    ] {
        assert!(
            matches!(RedisUrl::parse(bad), Err(LinkError::InvalidUrl(_))),
            "{bad} should be rejected"
        );
    }
    // The password never appears in an error.
    let e = RedisUrl::parse("redis://:topsecret@h:bad")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("topsecret"), "{e}");

    assert_eq!(
        RedisLink::new("redis://h", Token(1), Token(1)).err(),
        Some(LinkError::SameToken)
    );
}

#[test]
fn backoff_doubles_with_jitter_and_caps() {
    let poll = Poll::new().unwrap();
    let mut link = RedisLink::new("redis://127.0.0.1:1", Token(1), Token(2)).unwrap();
    let mut base = Duration::from_millis(100);
    let now = Instant::now();
    for i in 0..10 {
        link.fail(poll.registry(), now, format!("attempt {i}"));
        let State::Backoff { retry_at } = link.state else {
            panic!("not in backoff")
        };
        let d = retry_at - now;
        assert!(
            d >= base.mul_f64(0.75) && d < base.mul_f64(1.25),
            "attempt {i}: {d:?} vs {base:?}"
        );
        base = (base * 2).min(Duration::from_secs(5));
    }
    // One Down event and one outage however many attempts failed.
    assert_eq!(downs(&link.out), 1);
    assert_eq!(link.stats().outages, 1);
    assert_eq!(link.stats().failed_attempts, 10);
    assert_eq!(link.status().state, "down");
    assert_eq!(link.status().last_error.as_deref(), Some("attempt 9"));
}

#[test]
fn not_started_link_rejects_without_blocking() {
    let poll = Poll::new().unwrap();
    let mut link = RedisLink::new("redis://127.0.0.1:1", Token(1), Token(2)).unwrap();
    assert_eq!(link.status().state, "idle");
    assert!(!link.publish(b"c", b"x"));
    link.command(9, &[b"PING"]);
    assert_eq!(link.poll_timeout(Instant::now()), Some(Duration::ZERO));
    let mut ev = Vec::new();
    link.tick(poll.registry(), Instant::now(), &mut ev);
    assert_eq!(
        ev,
        vec![LinkEvent::Reply {
            tag: 9,
            reply: Reply::Error(UNAVAILABLE.into())
        }]
    );
    assert_eq!(link.dropped_publishes(), 1);
    assert_eq!(link.poll_timeout(Instant::now()), None);
}

// ---------------------------------------------------------------- real redis

#[test]
fn publish_reaches_other_link() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let url = server.url("", 0);
    let mut d = Driver::new();
    let mut a = link_n(&url, 0, fast_opts());
    let mut b = link_n(&url, 1, fast_opts());
    b.subscribe(b"fc:broadcast");
    b.psubscribe(b"fc:chan:*");
    let mut out = vec![Vec::new(), Vec::new()];
    d.start(&mut [&mut a, &mut b]);
    assert!(
        d.run_until(&mut [&mut a, &mut b], &mut out, WAIT, |o| ups(&o[0]) == 1
            && ups(&o[1]) == 1)
    );
    assert!(a.is_up() && b.is_up());
    assert_eq!(a.status().state, "up");

    for i in 0..100 {
        assert!(a.publish(b"fc:broadcast", format!("m{i}").as_bytes()));
    }
    a.publish(b"fc:chan:lobby", b"pattern hit");
    a.publish(b"fc:other", b"nobody listens");
    // Subscribing while up works at once too.
    b.subscribe(b"late");
    d.flush(&mut [&mut a, &mut b], &mut out);
    assert!(d.run_until(
        &mut [&mut a, &mut b],
        &mut out,
        WAIT,
        |o| messages(&o[1]).len() >= 101
    ));
    let got = messages(&out[1]);
    for (i, (ch, payload)) in got[..100].iter().enumerate() {
        assert_eq!(ch, b"fc:broadcast");
        assert_eq!(payload, format!("m{i}").as_bytes());
    }
    assert_eq!(
        got[100],
        (b"fc:chan:lobby".to_vec(), b"pattern hit".to_vec())
    );
    // SUBSCRIBE late was queued before the publish below, on another
    // connection; wait until redis saw it (PUBSUB NUMSUB) before publishing.
    assert!(d.run_until(&mut [&mut a, &mut b], &mut out, WAIT, |_| true));
    let mut n = 0;
    loop {
        a.command(77 + n, &[b"PUBSUB", b"NUMSUB", b"late"]);
        d.flush(&mut [&mut a, &mut b], &mut out);
        let tag = 77 + n;
        assert!(d.run_until(&mut [&mut a, &mut b], &mut out, WAIT, |o| {
            !reply_for(&o[0], tag).is_empty()
        }));
        if reply_for(&out[0], tag)[0]
            == Reply::Array(vec![Reply::Bulk(b"late".to_vec()), Reply::Integer(1)])
        {
            break;
        }
        n += 1;
        assert!(n < 100);
    }
    a.publish(b"late", b"hello late");
    d.flush(&mut [&mut a, &mut b], &mut out);
    assert!(d.run_until(
        &mut [&mut a, &mut b],
        &mut out,
        WAIT,
        |o| messages(&o[1]).len() == 102
    ));
    assert_eq!(messages(&out[1])[101].1, b"hello late");
    assert!(messages(&out[0]).is_empty());
    assert_eq!(a.stats().dropped_publishes, 0);
    assert_eq!(b.stats().messages_received, 102);
    assert_eq!(a.queued_bytes(), 0);
}

#[test]
fn pipelined_replies_match_tags() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let mut d = Driver::new();
    let mut a = link_n(&server.url("", 0), 0, fast_opts());
    let mut out = vec![Vec::new()];
    d.start(&mut [&mut a]);
    // Queued while connecting: sent after the handshake.
    a.command(5000, &[b"SET", b"early", b"1"]);
    assert!(d.run_until(&mut [&mut a], &mut out, WAIT, |o| ups(&o[0]) == 1));

    for i in 0..100u64 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        a.command(i, &[b"SET", k.as_bytes(), v.as_bytes()]);
        a.publish(b"nobody", b"interleaved");
        a.command(1000 + i, &[b"GET", k.as_bytes()]);
    }
    a.command(2000, &[b"INCR", b"k0"]); // not an integer: error reply
    a.command(2001, &[b"NOSUCHCOMMAND"]);
    a.command(2002, &[b"GET", b"missing"]);
    a.command(2003, &[b"EXPIRE", b"k1", b"60"]);
    a.command(2004, &[b"HSET", b"h", b"f1", b"a", b"f2", b"b"]);
    a.command(2005, &[b"HGETALL", b"h"]);
    assert!(a.queued_bytes() > 0);
    d.flush(&mut [&mut a], &mut out);
    assert!(d.run_until(&mut [&mut a], &mut out, WAIT, |o| {
        !reply_for(&o[0], 2005).is_empty()
    }));

    let tags: Vec<u64> = out[0]
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Reply { tag, .. } => Some(*tag),
            _ => None,
        })
        .collect();
    let mut expected = vec![5000];
    for i in 0..100 {
        expected.push(i);
        expected.push(1000 + i);
    }
    expected.extend(2000..=2005);
    assert_eq!(tags, expected, "replies in command order, one per tag");
    assert_eq!(
        reply_for(&out[0], 5000),
        vec![Reply::Status(b"OK".to_vec())]
    );
    for i in 0..100u64 {
        assert_eq!(reply_for(&out[0], i), vec![Reply::Status(b"OK".to_vec())]);
        assert_eq!(
            reply_for(&out[0], 1000 + i),
            vec![Reply::Bulk(format!("v{i}").into_bytes())]
        );
    }
    assert!(reply_for(&out[0], 2000)[0].is_error());
    assert!(reply_for(&out[0], 2001)[0].is_error());
    assert_eq!(reply_for(&out[0], 2002), vec![Reply::Nil]);
    assert_eq!(reply_for(&out[0], 2003), vec![Reply::Integer(1)]);
    assert_eq!(reply_for(&out[0], 2004), vec![Reply::Integer(2)]);
    assert_eq!(
        reply_for(&out[0], 2005),
        vec![Reply::Array(
            [&b"f1"[..], b"a", b"f2", b"b"]
                .iter()
                .map(|b| Reply::Bulk(b.to_vec()))
                .collect()
        )]
    );
    assert_eq!(a.queued_bytes(), 0);
    assert_eq!(a.stats().publish_errors, 0);
    assert_eq!(downs(&out[0]), 0);
}

#[test]
fn auth_with_password_and_acl_user() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start(&[
        "--requirepass",
        "sekret",
        "--user",
        "alice",
        "on",
        ">wonder",
        "~*",
        "&*",
        "+@all",
    ]);
    let mut d = Driver::new();
    let mut pass = link_n(&server.url(":sekret@", 0), 0, fast_opts());
    let mut alice = link_n(&server.url("alice:wonder@", 0), 1, fast_opts());
    let mut wrong = link_n(&server.url(":nope@", 0), 2, fast_opts());
    let mut none = link_n(&server.url("", 0), 3, fast_opts());
    pass.subscribe(b"c");
    alice.subscribe(b"c");
    none.subscribe(b"c");
    let mut out = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut links = [&mut pass, &mut alice, &mut wrong, &mut none];
    d.start(&mut links);
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| ups(&o[0]) == 1
        && ups(&o[1]) == 1
        && downs(&o[2]) == 1
        && downs(&o[3]) == 1));
    let r = down_reason(&out[2]);
    assert!(r.contains("AUTH failed") && r.contains("WRONGPASS"), "{r}");
    let r = down_reason(&out[3]);
    assert!(r.contains("NOAUTH"), "{r}");

    links[1].command(1, &[b"ACL", b"WHOAMI"]);
    d.flush(&mut links, &mut out);
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| {
        !reply_for(&o[1], 1).is_empty()
    }));
    assert_eq!(reply_for(&out[1], 1), vec![Reply::Bulk(b"alice".to_vec())]);

    // The failing links keep retrying quietly: still one Down each.
    d.run_for(&mut links, &mut out, Duration::from_millis(1500));
    assert_eq!(downs(&out[2]), 1);
    assert_eq!(downs(&out[3]), 1);
    assert_eq!(ups(&out[2]) + ups(&out[3]), 0);
    assert!(links[2].stats().failed_attempts >= 2);
    assert!(links[0].is_up() && links[1].is_up());
}

#[test]
fn select_database() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let mut d = Driver::new();
    let mut db3 = link_n(&server.url("", 3), 0, fast_opts());
    let mut db0 = link_n(&server.url("", 0), 1, fast_opts());
    let mut bad = link_n(&server.url("", 999), 2, fast_opts());
    let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut links = [&mut db3, &mut db0, &mut bad];
    d.start(&mut links);
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| ups(&o[0]) == 1
        && ups(&o[1]) == 1
        && downs(&o[2]) == 1));
    let r = down_reason(&out[2]);
    assert!(r.contains("SELECT 999 failed"), "{r}");

    links[0].command(1, &[b"SET", b"where", b"three"]);
    links[0].command(2, &[b"GET", b"where"]);
    links[1].command(3, &[b"GET", b"where"]);
    d.flush(&mut links, &mut out);
    assert!(d.run_until(
        &mut links,
        &mut out,
        WAIT,
        |o| !reply_for(&o[0], 2).is_empty() && !reply_for(&o[1], 3).is_empty()
    ));
    assert_eq!(reply_for(&out[0], 2), vec![Reply::Bulk(b"three".to_vec())]);
    assert_eq!(reply_for(&out[1], 3), vec![Reply::Nil]);
}

#[test]
fn outage_then_recovery() {
    if !redis_available() {
        return;
    }
    let mut server = RedisServer::start(&[]);
    let url = server.url("", 0);
    let mut d = Driver::new();
    let mut a = link_n(&url, 0, fast_opts());
    let mut b = link_n(&url, 1, fast_opts());
    b.subscribe(b"fc:broadcast");
    let mut out = vec![Vec::new(), Vec::new()];
    let mut links = [&mut a, &mut b];
    d.start(&mut links);
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| ups(&o[0]) == 1
        && ups(&o[1]) == 1));
    links[0].publish(b"fc:broadcast", b"before");
    d.flush(&mut links, &mut out);
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| messages(&o[1]).len() == 1));

    server.kill();
    assert!(
        d.run_until(&mut links, &mut out, WAIT, |o| downs(&o[0]) == 1
            && downs(&o[1]) == 1)
    );
    assert!(!links[0].is_up() && !links[1].is_up());
    let st = links[0].status();
    assert_eq!(st.state, "down");
    assert!(st.last_error.is_some());

    for _ in 0..5 {
        assert!(!links[0].publish(b"fc:broadcast", b"lost"));
    }
    assert!(links[0].dropped_publishes() >= 5);
    links[0].command(42, &[b"SET", b"x", b"1"]);
    d.turn(&mut links, &mut out);
    assert_eq!(
        reply_for(&out[0], 42),
        vec![Reply::Error(UNAVAILABLE.into())]
    );

    // Several reconnect attempts fail: still exactly one Down per link.
    d.run_for(&mut links, &mut out, Duration::from_millis(2500));
    assert_eq!(downs(&out[0]), 1);
    assert_eq!(downs(&out[1]), 1);
    assert!(
        links[0].stats().failed_attempts >= 3,
        "{:?}",
        links[0].stats()
    );

    server.spawn();
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| ups(&o[0]) == 2
        && ups(&o[1]) == 2));
    assert!(links[0].is_up() && links[1].is_up());
    // The Down comes before the second Up.
    let pos = |o: &[LinkEvent], want: &dyn Fn(&LinkEvent) -> bool| o.iter().rposition(want);
    assert!(
        pos(&out[1], &|e| *e == LinkEvent::Up)
            > pos(&out[1], &|e| matches!(e, LinkEvent::Down { .. }))
    );

    // Subscription restored: messages flow again.
    links[0].publish(b"fc:broadcast", b"after");
    d.flush(&mut links, &mut out);
    assert!(d.run_until(&mut links, &mut out, WAIT, |o| messages(&o[1]).len() == 2));
    assert_eq!(messages(&out[1])[1].1, b"after");
    assert!(!messages(&out[1]).iter().any(|(_, p)| p == b"lost"));
    assert_eq!(downs(&out[0]), 1);
    assert_eq!(links[0].stats().outages, 1);
    assert_eq!(links[0].stats().connects, 2);
    assert_eq!(links[1].stats().connects, 2);
}

#[test]
fn first_connection_refused_reports_one_down() {
    // No redis needed: a closed port refuses at once.
    let port = free_port();
    let mut d = Driver::new();
    let mut a = link_n(&format!("redis://127.0.0.1:{port}"), 0, fast_opts());
    let mut out = vec![Vec::new()];
    d.start(&mut [&mut a]);
    assert_eq!(a.status().state, "connecting");
    assert!(d.run_until(&mut [&mut a], &mut out, WAIT, |o| downs(&o[0]) == 1));
    assert!(
        down_reason(&out[0]).contains("refused"),
        "{}",
        down_reason(&out[0])
    );
    d.run_for(&mut [&mut a], &mut out, Duration::from_millis(1200));
    assert_eq!(downs(&out[0]), 1);
    assert!(a.stats().failed_attempts >= 2);
}

// ---------------------------------------------------------------- fake servers

/// Garbage, oversize or too-deep replies take the link down (once), without
/// a panic or a large allocation, and it keeps reconnecting.
#[test]
fn garbage_replies_take_link_down() {
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend_from_slice(b"*1\r\n");
    }
    let long_line = {
        let mut v = b"+".to_vec();
        v.extend(std::iter::repeat_n(b'x', 200_000));
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ("binary", (0u8..=255).cycle().take(5000).collect()),
        ("oversize bulk", b"$68719476736\r\nxxxxxxxx".to_vec()),
        ("huge array", b"*99999999999\r\n".to_vec()),
        ("deep", deep),
        ("long line", long_line),
        ("bad terminator", b"$3\r\nabcXY".to_vec()),
        ("resp3", b"%1\r\n+a\r\n+b\r\n".to_vec()),
    ];
    for (name, garbage) in cases {
        let (mut d, url) = Driver::with_fake(&garbage);
        let mut a = link_n(&url, 0, fast_opts());
        let mut out = vec![Vec::new()];
        d.start(&mut [&mut a]);
        let mut max_rbuf = 0;
        let end = Instant::now() + WAIT;
        while downs(&out[0]) == 0 {
            assert!(Instant::now() < end, "{name}: no Down");
            d.turn(&mut [&mut a], &mut out);
            max_rbuf = max_rbuf
                .max(a.sub.rbuf.capacity())
                .max(a.cmd.rbuf.capacity());
        }
        let r = down_reason(&out[0]);
        assert!(r.contains("protocol error"), "{name}: {r}");
        // It reconnects (to the same garbage) without reporting again.
        d.run_for(&mut [&mut a], &mut out, Duration::from_millis(400));
        assert_eq!(downs(&out[0]), 1, "{name}");
        assert_eq!(ups(&out[0]), 0, "{name}");
        assert!(
            d.fake.as_ref().map(|f| f.accepted).unwrap_or(0) >= 4,
            "{name}"
        );
        assert!(
            max_rbuf <= 1 << 20,
            "{name}: read buffer grew to {max_rbuf}"
        );
    }
}

/// A peer that sends half a reply and then nothing: handshake timeout.
#[test]
fn partial_reply_times_out() {
    let (mut d, url) = Driver::with_fake(b"+PO");
    let opts = LinkOptions {
        connect_timeout: Duration::from_millis(300),
        ..fast_opts()
    };
    let mut a = link_n(&url, 0, opts);
    let mut out = vec![Vec::new()];
    d.start(&mut [&mut a]);
    a.command(1, &[b"PING"]);
    assert!(d.run_until(&mut [&mut a], &mut out, WAIT, |o| downs(&o[0]) == 1));
    let r = down_reason(&out[0]);
    assert!(r.contains("handshake timed out"), "{r}");
    assert_eq!(
        reply_for(&out[0], 1),
        vec![Reply::Error(UNAVAILABLE.into())]
    );
}

/// A Redis that completes the handshake and then stops answering: the queue
/// stays bounded (overflow → error events), and the health PING takes the
/// link down; every accepted tag gets exactly one reply.
#[test]
fn stalled_redis_bounded_queue_and_ping_timeout() {
    let (mut d, url) = Driver::with_fake(b"+PONG\r\n");
    let opts = LinkOptions {
        max_queue_bytes: 4096,
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(400),
        ..fast_opts()
    };
    let mut a = link_n(&url, 0, opts);
    let mut out = vec![Vec::new()];
    d.start(&mut [&mut a]);
    assert!(d.run_until(&mut [&mut a], &mut out, WAIT, |o| ups(&o[0]) == 1));
    // A health PING is now outstanding (never answered): the loop may sleep
    // until its timeout, it must not spin.
    d.run_for(&mut [&mut a], &mut out, Duration::from_millis(150));
    assert!(a.sub.health_sent.is_some() && a.cmd.health_sent.is_some());
    let t = a.poll_timeout(Instant::now()).unwrap_or_default();
    assert!(t > Duration::from_millis(100), "{t:?}");

    for tag in 0..1000u64 {
        a.command(tag, &[b"SET", b"key", b"some value"]);
        a.publish(b"ch", b"payload");
        assert!(a.queued_bytes() <= 4096);
    }
    assert!(a.stats().queue_overflows > 0);
    let overflowed = a.stats().queue_overflows;
    d.flush(&mut [&mut a], &mut out);
    let queue_full = count(
        &out[0],
        |e| matches!(e, LinkEvent::Reply { reply: Reply::Error(m), .. } if m == QUEUE_FULL),
    );
    assert!(queue_full > 900, "{queue_full}");

    assert!(d.run_until(&mut [&mut a], &mut out, WAIT, |o| downs(&o[0]) == 1));
    let r = down_reason(&out[0]);
    assert!(r.contains("no reply to PING"), "{r}");
    for tag in 0..1000u64 {
        assert_eq!(reply_for(&out[0], tag).len(), 1, "tag {tag}");
    }
    let unavailable = count(
        &out[0],
        |e| matches!(e, LinkEvent::Reply { reply: Reply::Error(m), .. } if m == UNAVAILABLE),
    );
    assert_eq!(queue_full + unavailable, 1000);
    assert_eq!(a.queued_bytes(), 0);
    // Publishes: every one either overflowed or was lost with the connection.
    assert_eq!(a.dropped_publishes() + a.stats().failed_commands, 2000);
    assert!(overflowed >= queue_full as u64);
}
