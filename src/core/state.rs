//! Everything the core holds besides the connections: what a protocol handler may use while it
//! holds its own connection. Each part is an owner of its own (hub, apps, sessions, jobs,
//! webhooks, cluster, consoles, timers); this file only puts them side by side, with the
//! clock, the counters and the work a handler leaves for the core to finish.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::cache::CacheStore;
use super::cluster::node::Cluster;
use super::consoles::Consoles;
use super::effects::{Effects, JobId};
use super::history::History;
use super::hub::Hub;
use super::outbox::Bounds;
use super::pending::{Closing, Pending};
use super::publication::Publication;
use super::sub_counts::SubCounts;
use super::watchlist::Watchers;
use super::{apps, jobs, timers, webhooks};
use crate::config::Config;
use crate::proxy::Trusted;
use crate::pusher::protocol as pp;

/// The core's clocks, set by the loop every turn.
pub struct Clock {
    started: Instant,
    now: Instant,
    wall_ms: u64,
}

impl Clock {
    pub fn new(now: Instant, wall_ms: u64) -> Clock {
        Clock {
            started: now,
            now,
            wall_ms,
        }
    }

    pub fn set(&mut self, now: Instant, wall_ms: u64) {
        if now > self.now {
            self.now = now;
        }
        self.wall_ms = wall_ms;
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whole seconds since the start: the connection timers' clock.
    pub fn secs(&self) -> u32 {
        u32::try_from(self.now.duration_since(self.started).as_secs()).unwrap_or(u32::MAX)
    }

    pub fn uptime(&self) -> Duration {
        self.now.duration_since(self.started)
    }

    pub fn wall_ms(&self) -> u64 {
        self.wall_ms
    }

    /// The next whole second of the connection clock.
    pub fn next_second(&self) -> Instant {
        self.started + Duration::from_secs(u64::from(self.secs()) + 1)
    }
}

/// Counters for `/up`, `/metrics` and the console.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub messages_in: u64,
    pub frames_out: u64,
    pub fifo_lines: u64,
    /// Forked handler jobs started, refused (queue full) and failed (non-zero exit, signal,
    /// timeout, spawn error).
    pub workers_started: u64,
    pub workers_refused: u64,
    pub workers_failed: u64,
    pub slow_consumers: u64,
    /// Times a connection's input was paused because its output queue was past
    /// `outbound_pause_bytes` (copied from the connections' lists).
    pub output_pauses: u64,
    /// Frames compressed for permessage-deflate connections (once per broadcast), and their
    /// payload bytes before and after (copied from the connections' lists).
    pub deflated_frames: u64,
    pub deflated_bytes_in: u64,
    pub deflated_bytes_out: u64,
    /// Events published through the HTTP API (REST and /internal/broadcast).
    pub api_publishes: u64,
    pub client_events: u64,
    pub rate_limited: u64,
    /// Publications given again from history to clients that came back.
    pub history_replayed: u64,
    /// REST responses by status.
    pub rest_calls: std::collections::BTreeMap<u16, u64>,
}

/// What only the loop knows, handed to the core each turn for `/up`, `/metrics` and the console.
#[derive(Debug, Default, Clone, Copy)]
pub struct IoStatus {
    pub write_calls: u64,
    pub workers_running: usize,
    pub workers_queued: usize,
    /// Turns the FIFOs yielded to the clients with lines still to read.
    pub fifo_yields: u64,
    pub fifo_dropped: u64,
    /// The Redis link, when scaling through Redis.
    pub link: Option<LinkStatus>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStatus {
    pub up: bool,
    /// Messages handed to Redis for the other nodes.
    pub published: u64,
    pub dropped_publishes: u64,
    pub read_yields: u64,
}

/// Open WebSocket sessions: how many, from where, and for which users.
#[derive(Default)]
pub struct Sessions {
    open: usize,
    /// Per client address, kept only when `max_connections_per_ip` is set.
    per_ip: HashMap<IpAddr, u32>,
    /// Per (app, user id): the user's connections.
    users: HashMap<(usize, Box<str>), UserConns>,
}

/// How a connection came to belong to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `pusher:signin`.
    Signin,
    /// A validation handler said so (raw and channel clients, app 0).
    Validation,
}

/// One user's connections, by how they were attributed. A user's own: a handful.
#[derive(Default)]
struct UserConns {
    signed_in: Vec<usize>,
    validated: Vec<usize>,
}

impl UserConns {
    fn list(&mut self, via: Via) -> &mut Vec<usize> {
        match via {
            Via::Signin => &mut self.signed_in,
            Via::Validation => &mut self.validated,
        }
    }

    fn count(&self) -> u32 {
        (self.signed_in.len() + self.validated.len()) as u32
    }
}

impl Sessions {
    pub fn open(&self) -> usize {
        self.open
    }

    pub fn at_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).map_or(0, |&n| n as usize)
    }

    pub fn opened(&mut self, ip: IpAddr, count_ip: bool) {
        self.open += 1;
        if count_ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
    }

    pub fn closed(&mut self, ip: IpAddr) {
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// A connection of `user` opened (validated, or signed in with Pusher). Returns whether
    /// it is the user's first connection attributed that way.
    pub fn user_attached(&mut self, app: usize, user: &str, key: usize, via: Via) -> bool {
        let list = self.users.entry((app, user.into())).or_default().list(via);
        list.push(key);
        list.len() == 1
    }

    /// A connection of `user` closed (or signed in as someone else). Returns whether it was
    /// the user's last connection attributed that way.
    pub fn user_detached(&mut self, app: usize, user: &str, key: usize, via: Via) -> bool {
        let index = (app, Box::<str>::from(user));
        let Some(conns) = self.users.get_mut(&index) else {
            return false;
        };
        let list = conns.list(via);
        let Some(pos) = list.iter().position(|&k| k == key) else {
            return false;
        };
        list.swap_remove(pos);
        let last = list.is_empty();
        if conns.count() == 0 {
            self.users.remove(&index);
        }
        last
    }

    /// The connections of a user attributed one way.
    pub fn of_user(&self, app: usize, user: &str, via: Via) -> &[usize] {
        self.users
            .get(&(app, Box::from(user)))
            .map_or(&[], |u| match via {
                Via::Signin => &u.signed_in,
                Via::Validation => &u.validated,
            })
    }

    /// Connections of the user here, however attributed (for the cluster's heartbeat key).
    pub fn user_count(&self, app: usize, user: &str) -> u32 {
        self.users
            .get(&(app, Box::from(user)))
            .map_or(0, UserConns::count)
    }

    pub fn users(&self) -> impl Iterator<Item = (usize, &str, u32)> {
        self.users
            .iter()
            .map(|((app, user), conns)| (*app, &**user, conns.count()))
    }
}

pub struct State {
    pub cfg: Config,
    pub clock: Clock,
    /// First half of every socket id: distinguishes this process from others (and restarts).
    pub process_id: u32,
    next_conn_id: u64,
    pub hub: Hub,
    pub apps: apps::Apps,
    pub sessions: Sessions,
    pub jobs: jobs::Jobs,
    pub webhooks: webhooks::Webhooks,
    pub cluster: Option<Cluster>,
    pub consoles: Consoles,
    pub timers: timers::Wheel,
    pub stats: Stats,
    pub io: IoStatus,
    pub trusted_proxies: Vec<Trusted>,
    pub pending: Pending,
    pub effects: Effects,
    /// A shutdown began: no new sessions, `/up` says stopping.
    pub stopping: bool,
    /// Stamp of the publication being delivered (see `Conn::publish_stamp`).
    pub publish_stamp: u32,
    /// The connection-clock second the once-a-second work last ran in.
    pub last_second: u32,
    /// The listening port (`SERVER_PORT` for handlers).
    pub local_port: u16,
    /// When channels are next told their subscriber counts.
    pub sub_counts: SubCounts,
    /// Who watches whom (Pusher watchlists).
    pub watchers: Watchers,
    /// One inflater for every connection's compressed messages (no context between them).
    pub inflating: Inflating,
    /// Channels' recent publications, for clients that come back.
    pub history: History,
    /// When the app store's table is read.
    pub store_sync: super::store_sync::StoreSync,
    /// The other loops' numbers, when this is one of several loops (`/metrics`, `/up`).
    pub board: Option<crate::board::Board>,
    /// Questions waiting for the local bus's barrier, when this is one of several loops.
    pub barriers: super::barrier::Barriers,
}

/// The inflater of clients' compressed messages and its output buffer, kept between messages.
#[derive(Default)]
pub struct Inflating {
    pub inflater: crate::deflate::Inflater,
    pub buf: Vec<u8>,
}

impl State {
    pub fn new(cfg: Config, process_id: u32, now: Instant, wall_ms: u64) -> State {
        let apps = apps::Apps::new(cfg.effective_apps(), now);
        let cache = CacheStore::new(cfg.max_cache_bytes, Duration::from_secs(cfg.cache_ttl_secs));
        let cluster = Cluster::new(&cfg.scaling, now);
        State {
            hub: Hub::new(apps.len(), cache),
            apps,
            clock: Clock::new(now, wall_ms),
            process_id,
            next_conn_id: 1,
            sessions: Sessions::default(),
            jobs: jobs::Jobs::default(),
            webhooks: webhooks::Webhooks::default(),
            cluster,
            consoles: Consoles::default(),
            timers: timers::Wheel::new(0),
            stats: Stats::default(),
            io: IoStatus::default(),
            trusted_proxies: crate::proxy::parse_list(&cfg.trusted_proxies).unwrap_or_default(),
            pending: Pending::default(),
            effects: Effects::default(),
            stopping: false,
            publish_stamp: 0,
            last_second: 0,
            local_port: 0,
            sub_counts: SubCounts::default(),
            watchers: Watchers::default(),
            inflating: Inflating::default(),
            history: History::new(cfg.max_history_bytes, process_id),
            store_sync: Default::default(),
            cfg,
            board: None,
            barriers: Default::default(),
        }
    }

    pub fn next_conn_id(&mut self) -> u64 {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        id
    }

    /// Asks the loop for a job; its outcome comes back to `outcomes::done`.
    pub fn start_job(&mut self, job: crate::job::Job, why: jobs::JobFor) -> JobId {
        self.stats.workers_started += 1;
        self.jobs.start(job, why, &mut self.effects.jobs)
    }

    /// Hands a publication to the one publish path (delivered when the handler returns).
    pub fn publish(&mut self, p: Publication) {
        self.pending.publications.push(p);
    }

    /// Closes every connection of the app signed in (`pusher:signin`) as `user`, found through
    /// the per-user index. As Pusher documents, connections that only joined presence channels
    /// under that id are left alone: presence ids are asserted by the app's auth endpoint, not
    /// proven by the user.
    pub fn terminate_user(&mut self, app: usize, user: &str) {
        let keys = self.sessions.of_user(app, user, Via::Signin).to_vec();
        log::info!(
            "terminating {} connection(s) of user \"{user}\"",
            keys.len()
        );
        let text = pp::error(
            Some(pp::code::UNAUTHORIZED),
            "Connection terminated by the server",
        );
        for key in keys {
            let notice = Closing::Notice(text.clone(), pp::code::UNAUTHORIZED, "terminated");
            self.pending.closes.push((key, notice));
        }
    }

    /// Our connection id inside a socket id of this process ("<process>.<id>").
    pub fn parse_socket_id(&self, socket_id: &str) -> Option<u64> {
        let (process, id) = socket_id.split_once('.')?;
        if process.parse::<u32>().ok()? != self.process_id {
            return None;
        }
        id.parse().ok()
    }

    /// When the core needs its next tick at the latest.
    pub fn next_wake(&self) -> Option<Instant> {
        let now = self.clock.now();
        let mut wake = self.clock.next_second();
        if self.stopping {
            wake = wake.min(now + Duration::from_millis(100));
        }
        if self.webhooks.has_work() {
            wake = wake.min(now + Duration::from_millis(20));
        }
        if let Some(due) = self.sub_counts.next_due() {
            wake = wake.min(due.max(now));
        }
        Some(wake)
    }

    /// The app's socket-id-keyed frame for the console and others: `"<process>.<id>"`.
    pub fn socket_id_of(&self, id: u64) -> String {
        format!("{}.{id}", self.process_id)
    }
}

/// Applies a reloaded configuration; returns the output bounds in force now.
pub fn reload(st: &mut State, mut new: Config) -> Bounds {
    for what in st.cfg.restart_only_changes(&new) {
        log::warn!("configuration reload: {what} changed but needs a restart to take effect");
    }
    st.store_sync.ask();
    if let Err(e) = st.apps.reload(new.effective_apps(), st.clock.now()) {
        log::warn!("configuration reload: {e}; app settings were not changed");
    }
    // A disabled app's cached events are not served again: forget them now.
    for app in 0..st.apps.len() {
        if !st.apps.get(app).cfg.enabled {
            st.hub.cache_mut().forget_app(app as u16);
        }
    }
    st.hub
        .cache_mut()
        .set_limits(new.max_cache_bytes, Duration::from_secs(new.cache_ttl_secs));
    let hub = &st.hub;
    let occupied = |app: u16, channel: &str| hub.lookup(app as usize, channel).is_some();
    st.history.set_max_bytes(new.max_history_bytes, &occupied);
    st.trusted_proxies = crate::proxy::parse_list(&new.trusted_proxies).unwrap_or_default();
    // Settings fixed at start keep their running values, so what the server reports
    // (`ferrocast config`, /up) is what is in force.
    new.keep_fixed(&st.cfg);
    st.cfg = new;
    let (pause, hard) = st.cfg.output_bounds();
    log::info!("configuration reloaded");
    Bounds { pause, hard }
}
