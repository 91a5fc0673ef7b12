//! The whole server driven without sockets, from arbitrary bytes: clients of every protocol
//! (and raw garbage), FIFO lines, REST calls, other nodes' messages, job outcomes, reads of any
//! size, timer ticks, EOFs and disconnects, in any order. After every step the invariants are
//! checked; at the end every client's stream is checked for exactly-once, in-order delivery.
//!
//! Used by `tests/core_sim.rs` (random inputs, in CI) and `fuzz/fuzz_targets/core.rs`
//! (coverage-guided, long campaigns).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrocast::config::{AppConfig, Config, HandlerConfig, HistoryRule, HookConfig, WebhookConfig};
use ferrocast::deflate::{Compressor, Inflater};

thread_local! {
    /// The clients' compressor and inflater, made once: each message stands alone anyway.
    static COMPRESSOR: std::cell::RefCell<Compressor> = std::cell::RefCell::new(Compressor::default());
    static INFLATER: std::cell::RefCell<Inflater> = std::cell::RefCell::new(Inflater::default());
}
use ferrocast::core::{Core, IoStatus, JobId, LinkStatus, Mode, Phase};
use ferrocast::scaling::resp::Reply;

#[path = "bus.rs"]
mod bus;
#[path = "redis.rs"]
mod redis;
use ferrocast::job::Outcome;

const CHANNELS: [&str; 4] = ["a", "b", "cache-c", "presence-d"];
const HARD: usize = 1024;
/// The most one simulated read hands the core.
const READ_BYTES: usize = 4096;
/// The most a queue may hold: the bound, a turn's slack, and one frame that fits an empty
/// queue whatever its size (the largest answer here is well under 64 KiB).
const QUEUE_CAP: usize = HARD + ferrocast::core::outbox::TURN_SLACK + 64 * 1024;

/// Reads decisions from the fuzzer's bytes; zeros when they run out.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        b
    }

    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n.max(1)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.to_vec()
    }
}

/// What a simulated client is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Http,
    Channel,
    Pusher,
    Raw,
}

struct Client {
    kind: Kind,
    /// Bytes the client has read, not yet parsed.
    rx: Vec<u8>,
    /// Past the HTTP head (WebSocket clients).
    upgraded: bool,
    socket_id: Option<String>,
    /// Publications it must receive, in order: (seq, channel) — channel "" for one-per-publication.
    expected: Vec<(u64, String)>,
    received: Vec<(u64, String)>,
    close_code: Option<u16>,
    gone: bool,
    /// How much it reads per turn (0: never reads).
    appetite: usize,
    /// What it sent that the server has not read yet.
    unsent: Vec<u8>,
    /// It offered permessage-deflate (and, being a WebSocket client, must get it).
    deflate: bool,
    /// Channel → (epoch, last offset) from `pusher_internal:ferrocast_position`: within an
    /// epoch, offsets must follow on without a hole.
    positions: HashMap<String, (String, u64)>,
}

pub struct Sim {
    core: Core,
    now: Instant,
    wall: u64,
    clients: HashMap<usize, Client>,
    free: Vec<usize>,
    next_key: usize,
    seq: u64,
    jobs: Vec<JobId>,
    redis: redis::Redis,
    /// One loop of several: the barriers of its bus, and what it holds for them.
    bus: bus::Bus,
}

fn config(driver: &str) -> Config {
    let app = AppConfig {
        enable_client_messages: true,
        webhooks: vec![WebhookConfig {
            exec: vec!["true".into()],
            ..Default::default()
        }],
        max_client_events_per_second: 0,
        subscription_count_events: true,
        watchlist_events: true,
        max_watchlist_users: 3,
        history: vec![HistoryRule {
            prefix: String::new(),
            size: 4,
            ttl_secs: 2,
        }],
        hooks: vec![HookConfig {
            handler: "exec".into(),
            command: vec!["true".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut cfg = Config {
        outbound_queue_bytes: HARD,
        max_channels_per_connection: 3,
        max_message_bytes: 512,
        max_request_bytes: 1024,
        max_body_bytes: 2048,
        apps: vec![app],
        route: HandlerConfig {
            handler: "exec".into(),
            command: vec!["cat".into()],
            ..Default::default()
        },
        validate: HandlerConfig {
            handler: "exec".into(),
            command: vec!["validate".into()],
            ..Default::default()
        },
        internal_token: "s3cret".into(),
        max_cache_bytes: 8192,
        compression_min_bytes: 16,
        max_history_bytes: 2048,
        ..Config::default()
    };
    cfg.scaling.driver = driver.into();
    cfg.scaling.node_id = "me".into();
    cfg
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with_driver("redis")
    }

    /// A node scaling through Redis (`redis`), or one loop of several on their bus (`bus`).
    fn with_driver(driver: &str) -> Sim {
        let now = Instant::now();
        Sim {
            core: Core::new(config(driver), 42, now, 1_700_000_000_000),
            now,
            wall: 1_700_000_000_000,
            clients: HashMap::new(),
            free: Vec::new(),
            next_key: 0,
            seq: 0,
            jobs: Vec::new(),
            redis: redis::Redis::new(),
            bus: bus::Bus::new(driver == "bus"),
        }
    }

    /// Runs the whole input, checking after every step; panics on a broken invariant.
    pub fn run(data: &[u8]) {
        Sim::run_with(Sim::new(), data);
    }

    /// The same, for one loop of several: its questions, REST calls and FIFO lines wait for
    /// the barriers of the bus, which the input sets when it says.
    pub fn run_on_bus(data: &[u8]) {
        Sim::run_with(Sim::with_driver("bus"), data);
    }

    fn run_with(mut sim: Sim, data: &[u8]) {
        let mut input = Input::new(data);
        let mut steps = 0;
        while !input.is_empty() && steps < 2000 {
            sim.step(&mut input);
            sim.check();
            steps += 1;
        }
        sim.answer_all();
        sim.drain_all();
        sim.check_streams();
        if std::env::var_os("FERROCAST_SIM_STATS").is_some() {
            let got: usize = sim.clients.values().map(|c| c.received.len()).sum();
            let closes = sim
                .clients
                .values()
                .filter(|c| c.close_code.is_some())
                .count();
            let slow = sim
                .clients
                .values()
                .filter(|c| c.close_code == Some(1008))
                .count();
            let s = &sim.core.state().stats;
            eprintln!(
                "steps {steps} clients {} publications {} delivered {got} closes {closes} slow {slow} messages_in {} frames_out {} workers {}",
                sim.clients.len(),
                sim.seq,
                s.messages_in,
                s.frames_out,
                s.workers_started
            );
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.below(if self.bus.on { 28 } else { 27 });
        if std::env::var_os("FERROCAST_SIM_TRACE").is_some() {
            eprintln!("op {op}");
        }
        match op {
            0..=2 => self.open(input),
            3..=9 => self.send_message(input),
            10..=12 => self.publish_fifo(input),
            13 => self.publish_global(input),
            14 => self.publish_rest(input),
            15 => self.send_raw(input),
            16..=18 => self.end_turn(),
            19 => self.advance(input),
            20 => self.disconnect(input),
            23 => self.user_line(input),
            21 => self.answer_job(input),
            24 => self.redis_link(),
            25 | 26 => self.redis_answers(input),
            27 => self.set_barrier(),
            _ => self.node_publishes(input),
        }
    }

    fn pick(&mut self, input: &mut Input<'_>) -> Option<usize> {
        let mut keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.gone)
            .map(|(&k, _)| k)
            .collect();
        keys.sort_unstable();
        (!keys.is_empty()).then(|| keys[input.below(keys.len())])
    }

    fn open(&mut self, input: &mut Input<'_>) {
        let kinds = [
            Kind::Http,
            Kind::Channel,
            Kind::Channel,
            Kind::Pusher,
            Kind::Pusher,
            Kind::Raw,
        ];
        let kind = kinds[input.below(kinds.len())];
        let key = self.free.pop().unwrap_or_else(|| {
            self.next_key += 1;
            self.next_key - 1
        });
        let peer: SocketAddr = format!("127.0.0.{}:4000", 1 + input.below(3))
            .parse()
            .unwrap();
        self.core.open(key, peer);
        let appetite = [0, 64, 1 << 20][input.below(3)];
        let deflate = kind != Kind::Http && input.below(2) == 1;
        self.clients.insert(
            key,
            Client {
                kind,
                rx: Vec::new(),
                upgraded: kind == Kind::Http,
                socket_id: None,
                expected: Vec::new(),
                received: Vec::new(),
                close_code: None,
                gone: false,
                appetite,
                unsent: Vec::new(),
                deflate,
                positions: HashMap::new(),
            },
        );
        let path = match kind {
            Kind::Http => return,
            Kind::Channel => "/ws",
            Kind::Pusher => "/app/app-key?protocol=7",
            Kind::Raw => "/chat",
        };
        let offer = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        )
        .into_bytes();
        // Any split: the head may arrive in two reads.
        let cut = input.below(req.len());
        let mut rest = req.split_off(cut);
        self.feed(key, &mut req);
        self.feed(key, &mut rest);
    }

    /// What a client sends. The loop reads a connection only while the core wants its input
    /// (not while its output is paused): until then the bytes wait, as they would in the
    /// kernel's buffers, and are read when the core resumes the connection.
    fn feed(&mut self, key: usize, data: &mut [u8]) {
        if data.is_empty() || self.core.phase(key).is_none() {
            return;
        }
        let Some(c) = self.clients.get_mut(&key) else {
            return;
        };
        c.unsent.extend_from_slice(data);
        self.pump(key);
    }

    /// Reads what a client sent, as the loop does: a read at a time, while the core wants it.
    fn pump(&mut self, key: usize) {
        while self.core.phase(key).is_some() && self.core.wants_input(key) {
            let Some(c) = self.clients.get_mut(&key) else {
                return;
            };
            if c.unsent.is_empty() {
                return;
            }
            let n = c.unsent.len().min(READ_BYTES);
            let mut read: Vec<u8> = c.unsent.drain(..n).collect();
            self.core.on_bytes(key, &mut read);
        }
    }

    /// A well-formed message of the client's protocol.
    fn send_message(&mut self, input: &mut Input<'_>) {
        let Some(key) = self.pick(input) else {
            return;
        };
        let ch = CHANNELS[input.below(CHANNELS.len())];
        let kind = self.clients[&key].kind;
        let text = match (kind, input.below(8)) {
            (Kind::Http, _) => return self.http_request(key, input),
            (Kind::Channel, 0..=4) => format!(r#"{{"action":"subscribe","channel":"{ch}"}}"#),
            (Kind::Channel, 5) => format!(r#"{{"action":"unsubscribe","channel":"{ch}"}}"#),
            (Kind::Channel, _) => r#"{"action":"ping"}"#.to_string(),
            (Kind::Pusher, 0..=3) => self.pusher_subscribe(key, ch, input.below(2) == 0),
            (Kind::Pusher, 4) => {
                format!(r#"{{"event":"pusher:unsubscribe","data":{{"channel":"{ch}"}}}}"#)
            }
            (Kind::Pusher, 5) => format!(
                r#"{{"event":"client-x","channel":"{ch}","data":{{"n":{}}}}}"#,
                input.byte()
            ),
            (Kind::Pusher, 6) => self.pusher_signin(key, input),
            (Kind::Pusher, _) => r#"{"event":"pusher:ping","data":{}}"#.to_string(),
            (Kind::Raw, _) => ["ping", "route me", "x"][input.below(3)].to_string(),
        };
        let compressed = self.clients[&key].deflate && input.below(2) == 1;
        let mut frame = match COMPRESSOR.with_borrow_mut(|c| c.compress(text.as_bytes())) {
            Some(packed) if compressed => {
                let mut f = masked(0x1, &packed);
                f[0] |= 0x40;
                f
            }
            _ => masked(0x1, text.as_bytes()),
        };
        self.feed(key, &mut frame);
    }

    /// A signed `pusher:signin` as one of four users, watching up to four of them.
    fn pusher_signin(&mut self, key: usize, input: &mut Input<'_>) -> String {
        let socket_id = self.clients[&key].socket_id.clone().unwrap_or_default();
        let watchlist: Vec<String> = (0..input.below(5))
            .map(|_| format!("u{}", input.below(4)))
            .collect();
        let user_data =
            serde_json::json!({"id": format!("u{}", input.below(4)), "watchlist": watchlist})
                .to_string();
        let auth =
            ferrocast::pusher::auth::user_auth("app-key", "app-secret", &socket_id, &user_data);
        serde_json::json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})
            .to_string()
    }

    /// A `pusher:subscribe`; `positions`: as `ferrocast-recovery.js` sends it.
    fn pusher_subscribe(&mut self, key: usize, ch: &str, positions: bool) -> String {
        let extra = if positions {
            r#","positions":true"#
        } else {
            ""
        };
        let socket_id = self.clients[&key].socket_id.clone().unwrap_or_default();
        if ch.starts_with("presence-") {
            let data = format!(r#"{{"user_id":"u{}"}}"#, key % 3);
            let auth = ferrocast::pusher::auth::channel_auth(
                "app-key",
                "app-secret",
                &socket_id,
                ch,
                Some(&data),
            );
            let data = serde_json::to_string(&data).unwrap();
            format!(
                r#"{{"event":"pusher:subscribe","data":{{"channel":"{ch}","auth":"{auth}","channel_data":{data}{extra}}}}}"#
            )
        } else {
            format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{ch}"{extra}}}}}"#)
        }
    }

    fn http_request(&mut self, key: usize, input: &mut Input<'_>) {
        let body = input.bytes(64);
        // Any Content-Length, true or not: the framing must hold whatever is declared.
        let declared = match input.below(4) {
            0 => body.len().to_string(),
            1 => format!("{}", u64::MAX - input.byte() as u64),
            2 => format!("{}", input.byte()),
            _ => "1".repeat(1 + input.below(30)),
        };
        let path = [
            "/up",
            "/metrics",
            "/apps/app-id/events",
            "/internal/broadcast",
        ][input.below(4)];
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nContent-Length: {declared}\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&body);
        self.feed(key, &mut req);
    }

    /// Arbitrary bytes from any client, cut anywhere.
    fn send_raw(&mut self, input: &mut Input<'_>) {
        let Some(key) = self.pick(input) else {
            return;
        };
        let mut data = input.bytes(200);
        if input.below(2) == 0 {
            data = masked(input.byte() & 0x0f, &data);
        }
        self.feed(key, &mut data);
    }

    /// The channel-protocol and Pusher clients that must receive a publication to `channels`.
    fn expect(&mut self, seq: u64, channels: &[&str]) {
        for (&key, client) in self.clients.iter_mut() {
            if client.gone || self.core.phase(key) != Some(Phase::Open) {
                continue;
            }
            let subscribed: Vec<&str> = channels
                .iter()
                .copied()
                .filter(|c| self.core.is_subscribed(key, c))
                .collect();
            match self.core.mode(key) {
                Some(Mode::Channel) if !subscribed.is_empty() => {
                    client.expected.push((seq, String::new()));
                }
                // A Pusher subscription to a cache channel starts with its last event, which
                // is not a new publication: cache channels are not counted for Pusher clients.
                Some(Mode::Pusher) => {
                    for c in subscribed.into_iter().filter(|c| !c.starts_with("cache-")) {
                        client.expected.push((seq, c.to_string()));
                    }
                }
                _ => {}
            }
        }
    }

    /// A publication made here is delivered at once, unless Redis numbers it first (every
    /// channel has history here): then its subscribers are those of when it comes back.
    fn expect_here(&mut self, seq: u64, channels: &[&str]) {
        if !self.redis.up {
            self.expect(seq, channels);
        }
    }

    fn channels(&self, input: &mut Input<'_>) -> Vec<&'static str> {
        let mask = 1 + input.below(7);
        (0..3)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| CHANNELS[i])
            .collect()
    }

    /// A publication's payload: its number, and some bulk so queues fill.
    fn payload(&self, mark: char, input: &mut Input<'_>) -> String {
        format!("{mark}{}:{}", self.seq, "x".repeat(input.below(5) * 100))
    }

    fn publish_fifo(&mut self, input: &mut Input<'_>) {
        let channels = self.channels(input);
        self.seq += 1;
        let data = self.payload('P', input);
        let line = serde_json::json!({"channels": channels, "data": data});
        self.expect_here(self.seq, &channels);
        if self.holds() {
            self.bus.hold(self.seq, Some(channels), self.now);
        }
        self.core.on_fifo_line(line.to_string().as_bytes());
    }

    fn publish_global(&mut self, input: &mut Input<'_>) {
        self.seq += 1;
        let line = self.payload('G', input);
        if self.holds() {
            self.bus.hold(self.seq, None, self.now);
        } else {
            self.expect_global(self.seq);
        }
        self.core.on_fifo_line(line.as_bytes());
    }

    /// A global line goes out now: the channel-protocol and raw clients of this moment get it.
    fn expect_global(&mut self, seq: u64) {
        for (&key, client) in self.clients.iter_mut() {
            let open = self.core.phase(key) == Some(Phase::Open);
            if !client.gone
                && open
                && matches!(self.core.mode(key), Some(Mode::Channel | Mode::Raw))
            {
                client.expected.push((seq, "*".into()));
            }
        }
    }

    /// Whether the loop holds what it reads from the FIFO for a barrier: one of several, its
    /// bus up.
    fn holds(&self) -> bool {
        self.bus.on && self.redis.up
    }

    /// FIFO publications the loop let go: global lines reach this moment's clients; events go
    /// to the bus to be numbered (expected when it answers).
    fn expect_released(&mut self, released: Vec<bus::Held>) {
        for h in released.into_iter().filter(|h| h.channels.is_none()) {
            self.expect_global(h.seq);
        }
    }

    /// The bus sets the loop's next barrier: what waited for it goes on.
    fn set_barrier(&mut self) {
        if let Some((n, released)) = self.bus.set_next() {
            self.expect_released(released);
            self.core.on_barrier(n);
            self.apply_effects();
        }
    }

    /// A REST trigger, through an HTTP connection of its own that reads its answer.
    fn publish_rest(&mut self, input: &mut Input<'_>) {
        let channels = self.channels(input);
        self.seq += 1;
        let data = self.payload('P', input);
        let body = serde_json::json!({"name": "e", "channels": channels, "data": data}).to_string();
        let key = self.free.pop().unwrap_or_else(|| {
            self.next_key += 1;
            self.next_key - 1
        });
        self.core.open(key, "127.0.0.9:1".parse().unwrap());
        self.expect_here(self.seq, &channels);
        let mut req = format!(
            "POST /apps/app-id/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer app-secret\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        self.core.on_bytes(key, &mut req);
        self.apply_effects();
        // One of several loops answers once the bus set its barrier.
        while self.bus.asked() && self.core.queued_bytes(key) == 0 {
            self.set_barrier();
        }
        let answer = self.take(key, usize::MAX);
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "REST: {}",
            String::from_utf8_lossy(&answer)
        );
        // Its key comes back through the effects, like every dropped connection's.
        self.core.on_gone(key, "done");
        self.apply_effects();
    }

    /// Another node published to channels: delivered here like a local publication.
    fn node_publishes(&mut self, input: &mut Input<'_>) {
        if input.below(4) == 0 {
            // Anything (but a valid message, which could forge a publication marker): must be
            // refused without harm.
            let junk = input.bytes(120);
            if serde_json::from_slice::<serde_json::Value>(&junk).is_err() {
                self.core.on_node_message(&junk);
            }
            return;
        }
        let channels = self.channels(input);
        self.seq += 1;
        let mut env = serde_json::json!({
            "node": "other", "app": "app-id", "kind": "publish", "channels": channels,
            "event": "e", "data": self.payload('P', input),
        });
        self.expect(self.seq, &channels);
        if !self.redis.up || input.below(2) == 0 {
            return self.core.on_node_message(env.to_string().as_bytes());
        }
        // Numbered by Redis for the other node (every channel has history here).
        env["sequenced"] = serde_json::json!(channels);
        let keys: Vec<Vec<u8>> = channels.iter().map(|c| redis::stream_key(c)).collect();
        let at = self.redis.number(&keys).join(",");
        let env = env.to_string();
        let message = format!("{{\"positions\":[{at}],{}", &env[1..]);
        self.core.on_node_message(message.as_bytes());
    }

    fn answer_job(&mut self, input: &mut Input<'_>) {
        if self.jobs.is_empty() {
            return;
        }
        let id = self.jobs.swap_remove(input.below(self.jobs.len()));
        match input.below(5) {
            0 => self.core.on_job_refused(id),
            1 => self.core.on_job_done(id, Outcome::TimedOut),
            2 => {
                // A validation verdict naming one of three users (or a route reply).
                let stdout = format!("u{}\n", input.below(3)).into_bytes();
                self.core.on_job_done(
                    id,
                    Outcome::Exited {
                        code: 0,
                        stdout,
                        truncated: false,
                    },
                );
            }
            _ => {
                // Never a publication's marker: route replies are not publications.
                let mut stdout = b"out:".to_vec();
                stdout.extend(input.bytes(100));
                let code = i32::from(input.below(3) == 0);
                self.core.on_job_done(
                    id,
                    Outcome::Exited {
                        code,
                        stdout,
                        truncated: false,
                    },
                );
            }
        }
    }

    /// A line on a validated user's FIFO (delivered to the user's connections, or routed).
    fn user_line(&mut self, input: &mut Input<'_>) {
        let user = format!("u{}", input.below(3));
        let mut line = b"user:".to_vec();
        line.extend(input.bytes(40).into_iter().filter(|&b| b != b'\n'));
        self.core.on_user_line(&user, &line);
    }

    fn advance(&mut self, input: &mut Input<'_>) {
        let secs = [0, 1, 3, 31, 130][input.below(5)];
        self.now += Duration::from_millis(secs * 1000 + input.byte() as u64);
        self.wall += secs * 1000;
        self.core.set_time(self.now, self.wall);
        // What waited 10 s for Redis is delivered here alone at this tick, then what waited
        // 2 s for a barrier goes on (the loop does both in that order).
        for n in self.redis.forget(self.now, Duration::from_secs(10)) {
            self.expect_numbered(&n.envelope);
        }
        let late = self.bus.late(self.now);
        self.expect_released(late);
        self.core.tick();
        self.apply_effects();
    }

    fn disconnect(&mut self, input: &mut Input<'_>) {
        let Some(key) = self.pick(input) else {
            return;
        };
        if input.below(2) == 0 {
            self.core.on_eof(key);
        } else {
            self.core.on_gone(key, "reset");
        }
    }

    /// The end of a loop turn: every client reads what it will, the bound is judged, effects
    /// are applied (dropped connections, jobs).
    fn end_turn(&mut self) {
        let mut dirty = Vec::new();
        self.core.take_dirty(&mut dirty);
        // A socket that took part of its queue is written again when it can take more.
        let waiting = self
            .clients
            .keys()
            .copied()
            .filter(|&k| self.core.queued_bytes(k) > 0);
        let mut keys: Vec<usize> = dirty.into_iter().chain(waiting).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let appetite = self.clients.get(&key).map_or(usize::MAX, |c| c.appetite);
            self.read(key, appetite);
        }
        let mut resumed = Vec::new();
        self.core.end_of_turn(&mut resumed);
        for key in resumed {
            self.core.resume(key);
        }
        let mut waiting: Vec<usize> = (self.clients.iter())
            .filter(|(_, c)| !c.unsent.is_empty())
            .map(|(&k, _)| k)
            .collect();
        waiting.sort_unstable(); // the same input must replay the same way
        for key in waiting {
            self.pump(key);
        }
        self.apply_effects();
    }

    fn apply_effects(&mut self) {
        let fx = self.core.take_effects();
        for key in fx.closed {
            if let Some(c) = self.clients.get_mut(&key) {
                c.gone = true;
            }
            self.free.push(key);
        }
        self.jobs.extend(fx.jobs.into_iter().map(|(id, _)| id));
        for op in fx.link {
            if let Some(op) = self.bus.take(op) {
                self.redis.take(op, self.now);
            }
        }
    }

    // ---- Redis, for channel history across nodes --------------------------------------------

    /// The link to Redis goes down (what waited for it is delivered here alone) or comes up.
    fn redis_link(&mut self) {
        // A loop's bus does not come and go: a loop that loses it ends (another starts).
        if self.bus.on && self.redis.up {
            return;
        }
        self.redis.up = !self.redis.up;
        let link = Some(LinkStatus {
            up: self.redis.up,
            ..Default::default()
        });
        self.core.set_io_status(IoStatus {
            link,
            ..Default::default()
        });
        if self.redis.up {
            self.core.on_link_up();
        } else {
            for n in self.redis.forget(self.now, Duration::ZERO) {
                self.expect_numbered(&n.envelope);
            }
            self.core.on_link_down();
        }
        self.apply_effects();
    }

    /// Redis answers the next command: runs the script (delivering a numbered publication to
    /// every node, this one included, in either order with the reply), or fails it.
    fn redis_answers(&mut self, input: &mut Input<'_>) {
        if !self.redis.up {
            return;
        }
        if let Some(n) = self.redis.peek() {
            self.expect_numbered(&n.envelope);
        }
        let fail = ["redis unavailable", "ERR scripting is disabled"];
        // The loops' bus runs the scripts itself and never refuses one.
        if !self.bus.on && input.below(8) == 0 {
            let why = fail[input.below(2)].to_string();
            if let Some(tag) = self.redis.skip() {
                self.core.on_link_reply(tag, Reply::Error(why));
            }
            return self.apply_effects();
        }
        match self.redis.answer() {
            Some(redis::Answer::Numbered { tag, message }) => {
                let reply_first = input.below(2) == 0;
                if reply_first {
                    self.core.on_link_reply(tag, Reply::Integer(1));
                }
                self.core.on_node_message(&message);
                if !reply_first {
                    self.core.on_link_reply(tag, Reply::Integer(1));
                }
            }
            Some(redis::Answer::Position { tag, reply }) => self.core.on_link_reply(tag, reply),
            None => {}
        }
        self.apply_effects();
    }

    /// Redis answers everything still waiting (the end of a run).
    fn answer_all(&mut self) {
        loop {
            if self.bus.asked() {
                self.set_barrier();
            } else if self.redis.up && self.redis.waiting() {
                let mut ok = Input::new(&[1]);
                self.redis_answers(&mut ok);
            } else {
                return;
            }
        }
    }

    /// A numbered publication is delivered now: the subscribers of this moment expect it.
    fn expect_numbered(&mut self, envelope: &serde_json::Value) {
        let data = envelope["data"].as_str().unwrap_or("");
        let seq = data.strip_prefix('P').and_then(|r| r.split(':').next());
        let Some(seq) = seq.and_then(|n| n.parse::<u64>().ok()) else {
            return;
        };
        let channels: Vec<String> = (envelope["channels"].as_array().into_iter().flatten())
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
        self.expect(seq, &channels);
    }

    /// The client reads up to `n` bytes of its queue.
    fn read(&mut self, key: usize, n: usize) {
        let bytes = self.take(key, n);
        if let Some(c) = self.clients.get_mut(&key) {
            c.rx.extend_from_slice(&bytes);
            c.parse();
        }
        if self.core.flushed(key) {
            // The loop would shut its side now and wait for the client's EOF.
            self.core.on_eof(key);
        }
    }

    fn take(&mut self, key: usize, mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(outbox) = self.core.outbox_mut(key) else {
            return out;
        };
        while n > 0 {
            let Some(front) = outbox.front() else { break };
            let k = front.len().min(n);
            out.extend_from_slice(&front[..k]);
            outbox.advance(k);
            n -= k;
        }
        out
    }

    /// Every client reads everything, until nothing is queued.
    fn drain_all(&mut self) {
        for c in self.clients.values_mut() {
            c.appetite = usize::MAX;
        }
        for _ in 0..4 {
            self.end_turn();
        }
    }

    /// Invariants after every step.
    fn check(&mut self) {
        if let Err(e) = self.core.audit() {
            panic!("core invariant broken: {e}");
        }
        let bounds = self.core.cfg().output_bounds();
        for &key in self.clients.keys() {
            let queued = self.core.queued_bytes(key);
            assert!(
                queued <= QUEUE_CAP,
                "connection {key}: {queued} bytes queued"
            );
            let buffered = self.core.buffered_bytes(key);
            let cfg = self.core.cfg();
            let limit = cfg.max_request_bytes + cfg.max_body_bytes + cfg.max_message_bytes + 8192;
            assert!(
                buffered <= limit,
                "connection {key}: {buffered} bytes buffered"
            );
            assert!(bounds.0 <= bounds.1);
        }
        self.apply_effects();
        for (key, c) in &self.clients {
            if c.gone {
                assert!(
                    self.core.phase(*key).is_none() && self.core.queued_bytes(*key) == 0,
                    "connection {key} was dropped but the core still holds it"
                );
            }
        }
    }

    /// Every client's stream: what it got of what it must get, exactly once, in order.
    fn check_streams(&self) {
        for (key, c) in &self.clients {
            let slow = c.close_code == Some(1008);
            let got = &c.received;
            let want = &c.expected;
            assert!(
                got.len() <= want.len() && want[..got.len()] == got[..],
                "connection {key} ({:?}): received {got:?}, expected {want:?}",
                c.kind
            );
            let closed = slow || c.gone || c.close_code.is_some();
            assert!(
                got.len() == want.len() || closed,
                "connection {key} ({:?}) open and missing publications: received {got:?}, expected {want:?}",
                c.kind
            );
        }
    }
}

impl Client {
    /// Parses what the client read: the HTTP head, then server frames.
    fn parse(&mut self) {
        if !self.upgraded {
            let Some(end) = self.rx.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            assert!(
                self.rx.starts_with(b"HTTP/1.1 "),
                "not HTTP: {:?}",
                &self.rx[..end]
            );
            self.upgraded = self.rx.starts_with(b"HTTP/1.1 101");
            if self.upgraded {
                let head = String::from_utf8_lossy(&self.rx[..end]).to_ascii_lowercase();
                assert_eq!(
                    head.contains("sec-websocket-extensions: permessage-deflate"),
                    self.deflate,
                    "compression agreed exactly when offered: {head}"
                );
            }
            self.rx.drain(..end + 4);
            if !self.upgraded {
                self.rx.clear();
                return;
            }
        }
        if self.kind == Kind::Http {
            self.rx.clear();
            return;
        }
        while let Some((opcode, rsv1, payload, used)) = server_frame(&self.rx) {
            self.rx.drain(..used);
            assert!(
                !rsv1 || self.deflate,
                "a compressed frame to a client that did not ask"
            );
            let payload = if rsv1 {
                let mut out = Vec::new();
                INFLATER
                    .with_borrow_mut(|i| i.inflate(&payload, 1 << 24, &mut out))
                    .expect("the server's compressed frames inflate");
                out
            } else {
                payload
            };
            assert!(self.close_code.is_none(), "a frame after the close frame");
            match opcode {
                0x1 => self.text(&payload),
                0x8 => {
                    self.close_code = Some(
                        payload
                            .get(..2)
                            .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                    );
                }
                0x9 | 0xA => {}
                other => panic!("unexpected opcode {other}"),
            }
        }
    }

    fn text(&mut self, payload: &[u8]) {
        let text = String::from_utf8(payload.to_vec()).expect("server text is UTF-8");
        let v: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if let Some(v) = &v
            && v["event"] == "pusher:connection_established"
        {
            let data: serde_json::Value =
                serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
            self.socket_id = data["socket_id"].as_str().map(str::to_string);
            return;
        }
        if let Some(v) = &v
            && v["event"] == "pusher_internal:ferrocast_position"
        {
            return self.position(v);
        }
        let (data, channel) = match &v {
            Some(v) if v["data"].is_string() && self.kind == Kind::Pusher => (
                v["data"].as_str().unwrap().to_string(),
                v["channel"].as_str().unwrap_or("").to_string(),
            ),
            _ => (text.clone(), String::new()),
        };
        if channel.starts_with("cache-") {
            return;
        }
        let number = |rest: &str| rest.split(':').next().and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = data.strip_prefix('P').and_then(number) {
            self.received.push((seq, channel));
        } else if let Some(seq) = data.strip_prefix('G').and_then(number) {
            self.received.push((seq, "*".into()));
        }
    }
}

impl Client {
    /// A position announcement: a new starting point (`at`), or the next event's offset, which
    /// must follow the last one in the same epoch.
    fn position(&mut self, v: &serde_json::Value) {
        let channel = v["channel"].as_str().unwrap_or("").to_string();
        let d: serde_json::Value =
            serde_json::from_str(v["data"].as_str().unwrap_or("{}")).expect("position data");
        let epoch = d["epoch"].as_str().expect("epoch").to_string();
        if let Some(at) = d["at"].as_u64() {
            self.positions.insert(channel, (epoch, at));
            return;
        }
        let next = d["next"].as_u64().expect("next or at");
        if let Some((e, last)) = self.positions.get(&channel) {
            assert!(
                *e != epoch || next == last + 1,
                "channel {channel}: offset {next} announced after {last} in epoch {epoch}"
            );
        }
        self.positions.insert(channel, (epoch, next));
    }
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let mask = [1u8, 2, 3, 4];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One unmasked server frame at the front of `b`: (opcode, payload, bytes used).
fn server_frame(b: &[u8]) -> Option<(u8, bool, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert!(b[0] & 0x80 != 0, "server frames are final");
    assert!(b[0] & 0x30 == 0, "RSV2 and RSV3 are never set");
    let rsv1 = b[0] & 0x40 != 0;
    assert!(
        !rsv1 || b[0] & 0x0f <= 0x2,
        "control frames are never compressed"
    );
    assert!(b[1] & 0x80 == 0, "server frames are not masked");
    let (len, h): (usize, usize) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let end = h.checked_add(len)?;
    (b.len() >= end).then(|| (b[0] & 0x0f, rsv1, b[h..end].to_vec(), end))
}
