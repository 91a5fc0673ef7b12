//! Model-based test: a small reference model of channels, subscriptions and delivery, run side
//! by side with the real core (driven without sockets) on random operation sequences; what
//! every client receives must be the same in both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use ferrocast::config::Config;
use ferrocast::core::Core;
use proptest::prelude::*;

const CHANNELS: [&str; 4] = ["a", "b", "c", "d"];
const MAX_CHANNELS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(Vec<usize>, u16),
    Global(u16),
    Close(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Connect),
        4 => (0..6usize, 0..4usize).prop_map(|(c, ch)| Op::Subscribe(c, ch)),
        2 => (0..6usize, 0..4usize).prop_map(|(c, ch)| Op::Unsubscribe(c, ch)),
        4 => (proptest::collection::vec(0..4usize, 1..4), any::<u16>())
            .prop_map(|(chs, n)| Op::Publish(chs, n)),
        1 => any::<u16>().prop_map(Op::Global),
        1 => (0..6usize).prop_map(Op::Close),
    ]
}

/// The reference: who is connected, who listens where, and what each client must receive.
#[derive(Default)]
struct Model {
    clients: Vec<Option<BTreeSet<usize>>>,
    inbox: BTreeMap<usize, Vec<String>>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Connect => self.clients.push(Some(BTreeSet::new())),
            Op::Subscribe(c, ch) => self.with(*c, |subs, inbox| {
                if subs.contains(ch) || subs.len() < MAX_CHANNELS {
                    subs.insert(*ch);
                    inbox.push(format!("subscribed {}", CHANNELS[*ch]));
                } else {
                    inbox.push("error".into());
                }
            }),
            Op::Unsubscribe(c, ch) => self.with(*c, |subs, inbox| {
                subs.remove(ch);
                inbox.push(format!("unsubscribed {}", CHANNELS[*ch]));
            }),
            Op::Publish(chs, n) => {
                for (i, subs) in self.clients.iter().enumerate() {
                    if subs
                        .as_ref()
                        .is_some_and(|s| chs.iter().any(|ch| s.contains(ch)))
                    {
                        self.inbox.entry(i).or_default().push(format!("P{n}"));
                    }
                }
            }
            Op::Global(n) => {
                for (i, subs) in self.clients.iter().enumerate() {
                    if subs.is_some() {
                        self.inbox.entry(i).or_default().push(format!("G{n}"));
                    }
                }
            }
            Op::Close(c) => {
                if let Some(slot) = self.clients.get_mut(*c) {
                    *slot = None;
                }
            }
        }
    }

    fn with(&mut self, c: usize, f: impl FnOnce(&mut BTreeSet<usize>, &mut Vec<String>)) {
        if let Some(Some(subs)) = self.clients.get_mut(c) {
            f(subs, self.inbox.entry(c).or_default());
        }
    }
}

/// The real core, with one channel-protocol client per model client (key = index).
struct Real {
    core: Core,
    open: Vec<bool>,
    inbox: BTreeMap<usize, Vec<String>>,
}

impl Real {
    fn new() -> Real {
        let cfg = Config {
            max_channels_per_connection: MAX_CHANNELS,
            ..Config::default()
        };
        Real {
            core: Core::new(cfg, 1, Instant::now(), 0),
            open: Vec::new(),
            inbox: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Connect => {
                let key = self.open.len();
                self.core
                    .open(key, "127.0.0.1:9".parse::<SocketAddr>().unwrap());
                self.send(key, UPGRADE.as_bytes());
                self.open.push(true);
                self.read(key);
            }
            Op::Subscribe(c, ch) => self.message(*c, "subscribe", ch),
            Op::Unsubscribe(c, ch) => self.message(*c, "unsubscribe", ch),
            Op::Publish(chs, n) => {
                let names: Vec<&str> = chs.iter().map(|&i| CHANNELS[i]).collect();
                let line = serde_json::json!({"channels": names, "data": format!("P{n}")});
                self.core.on_fifo_line(line.to_string().as_bytes());
            }
            Op::Global(n) => self.core.on_fifo_line(format!("G{n}").as_bytes()),
            Op::Close(c) => {
                if self.open.get(*c) == Some(&true) {
                    self.core.on_gone(*c, "closed by the test");
                    self.open[*c] = false;
                }
            }
        }
        for key in 0..self.open.len() {
            if self.open[key] {
                self.read(key);
            }
        }
    }

    fn message(&mut self, c: usize, action: &str, ch: &usize) {
        if self.open.get(c) == Some(&true) {
            let text = format!(r#"{{"action":"{action}","channel":"{}"}}"#, CHANNELS[*ch]);
            self.send(c, &masked(text.as_bytes()));
        }
    }

    fn send(&mut self, key: usize, bytes: &[u8]) {
        self.core.on_bytes(key, &mut bytes.to_vec());
    }

    /// What the client received since the last read, as the model writes it.
    fn read(&mut self, key: usize) {
        let mut bytes = Vec::new();
        if let Some(out) = self.core.outbox_mut(key) {
            while let Some(front) = out.front() {
                let n = front.len();
                bytes.extend_from_slice(front);
                out.advance(n);
            }
        }
        let start = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        let mut i = start;
        while i + 2 <= bytes.len() {
            let len = (bytes[i + 1] & 0x7f) as usize;
            let text = String::from_utf8_lossy(&bytes[i + 2..i + 2 + len]).into_owned();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let seen = match v["event"].as_str() {
                Some(e @ ("subscribed" | "unsubscribed")) => {
                    format!("{e} {}", v["channel"].as_str().unwrap_or(""))
                }
                Some("error") => "error".into(),
                _ => text,
            };
            self.inbox.entry(key).or_default().push(seen);
            i += 2 + len;
        }
    }
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn masked(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_core_delivers_what_the_model_says(ops in proptest::collection::vec(op(), 1..80)) {
        let (mut model, mut real) = (Model::default(), Real::new());
        for op in &ops {
            model.apply(op);
            real.apply(op);
            prop_assert!(real.core.audit().is_ok(), "{:?}", real.core.audit());
        }
        prop_assert_eq!(&model.inbox, &real.inbox);
    }
}
