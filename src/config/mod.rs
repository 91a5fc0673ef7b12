//! Layered configuration: flags > environment (`FERROCAST_*`) > JSON file > embedded defaults.
//!
//! Every layer is merged as JSON into the serialized defaults and the result is deserialized once,
//! so a wrong type or an unknown key is reported the same way whichever layer it came from, with the
//! key's path in the message.

mod dotenv;
mod load;
mod parts;
mod socket_rush;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use load::{ConfigError, Sources, check_file, mask_secrets, mask_url_password};
pub use parts::{
    AppConfig, AppStoreConfig, ConsoleConfig, EVENT_TYPES, HandlerConfig, HistoryRule, HookConfig,
    LIFECYCLE_EVENTS, ScalingConfig, TlsConfig, WebhookConfig, WebhookSettings, fastcgi_target,
};

/// Longest time any setting may name, in seconds.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;

/// The whole configuration. Field names are the JSON keys; `FERROCAST_<KEY>` overrides each one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to bind (a name is resolved once at start).
    pub host: String,
    pub port: u16,
    /// When the port is taken, try the next ones (up to +1000), as CarbonPHP's
    /// `--autoAssignAnyOpenPort` does.
    pub auto_port: bool,
    /// URL prefix under which every endpoint lives, e.g. `/realtime` behind a proxy. Empty = root.
    pub path: String,
    /// The global broadcast FIFO.
    pub fifo: PathBuf,
    /// Octal permission bits of the FIFOs we create. Never world-writable.
    pub fifo_mode: String,
    /// `*`, exact origins (`https://app.example.com`) or wildcard subdomains (`https://*.example.com`).
    pub allowed_origins: Vec<String>,
    /// Largest HTTP request head accepted (431 past it).
    pub max_request_bytes: usize,
    /// Largest WebSocket message accepted after reassembly and inflating (close 1009 past it).
    pub max_message_bytes: usize,
    /// permessage-deflate: `on` (offered by every browser; one compressed copy per broadcast)
    /// or `off`.
    pub compression: String,
    /// Messages under this many bytes go uncompressed.
    pub compression_min_bytes: usize,
    /// Memory for every channel's history together (apps' `history` rules); oldest out first.
    pub max_history_bytes: usize,
    /// Largest FIFO line; longer lines are dropped with one log line.
    pub max_fifo_line_bytes: usize,
    /// Silence after which the server pings a client.
    pub ping_interval_secs: u64,
    /// Silence after which a client is disconnected.
    pub activity_timeout_secs: u64,
    /// Time allowed to send a complete HTTP request head.
    pub handshake_timeout_secs: u64,
    /// 0 = unlimited.
    pub max_connections: usize,
    /// WebSocket sessions from one client address (after `trusted_proxies`); 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Bytes queued for one client before it is considered a slow consumer and closed. Every
    /// byte counts: broadcasts, replies, pongs, errors, HTTP responses, console events.
    pub outbound_queue_bytes: usize,
    /// Bytes queued for one client past which the server stops reading from it until it has
    /// taken them (backpressure); 0 = a quarter of `outbound_queue_bytes`.
    pub outbound_pause_bytes: usize,
    /// How long a SIGTERM waits for queued messages to drain.
    pub shutdown_timeout_secs: u64,
    /// Memory for the last events of cache channels (oldest dropped first past it).
    pub max_cache_bytes: usize,
    /// How long a cache channel keeps its last event (Pusher: 30 minutes).
    pub cache_ttl_secs: u64,
    /// Largest HTTP request body (REST API) accepted (413 past it).
    pub max_body_bytes: usize,
    /// The default Pusher app, used when `apps` is empty (`--app-id`, `FERROCAST_APP_ID`, …).
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    /// Pusher apps. When empty, one app is made from `app_id`/`app_key`/`app_secret`.
    pub apps: Vec<AppConfig>,
    /// Bearer token for cadsock's `POST /internal/broadcast`. Empty = endpoint disabled.
    pub internal_token: String,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Serve `wss://`/`https://` with these PEM files (both or neither).
    pub tls: TlsConfig,
    /// The live debug console.
    pub console: ConsoleConfig,
    /// Several nodes sharing channels through Redis.
    pub scaling: ScalingConfig,
    /// Apps from a database table, besides `apps`.
    pub app_store: AppStoreConfig,
    /// Who a connection belongs to, decided before the 101 by a forked handler.
    pub validate: HandlerConfig,
    /// What answers a raw-mode client's messages (CarbonPHP's startApplication).
    pub route: HandlerConfig,
    pub validate_timeout_secs: u64,
    pub route_timeout_secs: u64,
    /// Event loops: single-threaded processes forked at start that share the listener and,
    /// through a local bus, every channel (`loops/`). A number, or `auto` for one per core.
    pub loops: Loops,
    /// Handler processes running at once, for the whole process (divided between the loops);
    /// more jobs wait in a queue of `max_queued_jobs`.
    pub max_workers: usize,
    pub max_queued_jobs: usize,
    /// Output a handler may return; the rest is cut (and the client told).
    pub max_worker_output_bytes: usize,
    /// A CA certificate (PEM) trusted for `https://` handlers and webhooks, beside the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Routed requests of one connection running at once (1 keeps replies in request order).
    pub max_inflight_per_connection: usize,
    /// Per-user FIFOs (`<fifo dir>/users/<id>.fifo`): `deliver` a line to the user's
    /// connections, `route` it to the application on the user's behalf, or `off`.
    pub user_fifo: String,
    /// Batching, timeouts and retries of every app's webhooks.
    pub webhooks: WebhookSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8080,
            auto_port: false,
            path: String::new(),
            fifo: default_fifo_path(),
            fifo_mode: "0660".into(),
            allowed_origins: vec!["*".into()],
            max_request_bytes: 10_000,
            max_message_bytes: 10_000,
            compression: "on".into(),
            compression_min_bytes: 256,
            max_history_bytes: 64 << 20,
            max_fifo_line_bytes: 64 * 1024,
            ping_interval_secs: 30,
            activity_timeout_secs: 120,
            handshake_timeout_secs: 10,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_channels_per_connection: 100,
            outbound_queue_bytes: 1024 * 1024,
            outbound_pause_bytes: 0,
            shutdown_timeout_secs: 5,
            max_body_bytes: 256 * 1024,
            max_cache_bytes: 64 * 1024 * 1024,
            cache_ttl_secs: 30 * 60,
            app_id: "app-id".into(),
            app_key: "app-key".into(),
            app_secret: "app-secret".into(),
            apps: Vec::new(),
            internal_token: String::new(),
            trusted_proxies: Vec::new(),
            tls: TlsConfig::default(),
            console: ConsoleConfig::default(),
            scaling: ScalingConfig::default(),
            app_store: AppStoreConfig::default(),
            validate: HandlerConfig::default(),
            route: HandlerConfig::default(),
            validate_timeout_secs: 5,
            route_timeout_secs: 30,
            loops: Loops::Count(1),
            max_workers: 64,
            max_queued_jobs: 256,
            max_worker_output_bytes: 1024 * 1024,
            tls_ca_file: None,
            max_inflight_per_connection: 1,
            user_fifo: "deliver".into(),
            webhooks: Default::default(),
        }
    }
}

/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else `$XDG_RUNTIME_DIR`, else `/tmp/ferrocast-$UID`.
pub fn default_fifo_path() -> PathBuf {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")
        // systemd passes several directories separated by ':'; the first is ours.
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/ferrocast-{}", nix::unistd::getuid())));
    dir.join("broadcast.fifo")
}

impl Config {
    /// Checks what deserializing cannot: values, and how settings fit together.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.check_paths()?;
        self.check_timing_and_sizes()?;
        self.validate.validate("validate")?;
        self.route.validate("route")?;
        self.check_workers_and_scaling()?;
        self.check_durations()?;
        self.check_apps()
    }

    fn check_paths(&self) -> Result<(), String> {
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(format!("path: \"{}\" must start with '/'", self.path));
        }
        let mode = self.fifo_mode_bits()?;
        if mode & 0o002 != 0 {
            return Err(format!(
                "fifo_mode: {mode:o} would let any local user broadcast; use 0660 and a shared group"
            ));
        }
        if self.fifo.as_os_str().is_empty() {
            return Err("fifo: must not be empty".into());
        }
        if let Some(file) = &self.tls_ca_file {
            crate::tls::check_ca_file(file).map_err(|e| format!("tls_ca_file: {e}"))?;
        }
        crate::proxy::parse_list(&self.trusted_proxies)?;
        if !self.console.path.starts_with('/') || self.console.path.len() < 2 {
            return Err(format!(
                "console.path: \"{}\" must start with '/'",
                self.console.path
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err("tls: give both cert and key (PEM files), or neither".into());
        }
        Ok(())
    }

    fn check_timing_and_sizes(&self) -> Result<(), String> {
        if self.ping_interval_secs == 0 {
            return Err("ping_interval_secs: must be at least 1".into());
        }
        if self.activity_timeout_secs < self.ping_interval_secs {
            return Err(format!(
                "activity_timeout_secs ({}) must not be shorter than ping_interval_secs ({})",
                self.activity_timeout_secs, self.ping_interval_secs
            ));
        }
        if self.handshake_timeout_secs == 0 {
            return Err("handshake_timeout_secs: must be at least 1".into());
        }
        if self.max_message_bytes == 0 || self.max_request_bytes < 64 {
            return Err("max_message_bytes must be > 0 and max_request_bytes ≥ 64".into());
        }
        if self.outbound_queue_bytes < 1024 {
            return Err("outbound_queue_bytes: must be at least 1024".into());
        }
        if self.outbound_pause_bytes > self.outbound_queue_bytes {
            return Err(format!(
                "outbound_pause_bytes ({}) must not exceed outbound_queue_bytes ({}): reading must pause before a client is closed",
                self.outbound_pause_bytes, self.outbound_queue_bytes
            ));
        }
        Ok(())
    }

    fn check_workers_and_scaling(&self) -> Result<(), String> {
        if !matches!(self.compression.as_str(), "on" | "off") {
            return Err(format!(
                "compression: \"{}\" is not on or off",
                self.compression
            ));
        }
        if !matches!(self.user_fifo.as_str(), "deliver" | "route" | "off") {
            return Err(format!(
                "user_fifo: \"{}\" is not deliver, route or off",
                self.user_fifo
            ));
        }
        self.loops.validate()?;
        if self.max_workers == 0 || self.max_inflight_per_connection == 0 {
            return Err("max_workers and max_inflight_per_connection must be at least 1".into());
        }
        if !matches!(self.scaling.driver.as_str(), "local" | "redis") {
            return Err(format!(
                "scaling.driver: \"{}\" is not local or redis",
                self.scaling.driver
            ));
        }
        if self.scaling.driver == "redis" {
            crate::scaling::redis::RedisUrl::parse(&self.scaling.redis_url)
                .map_err(|e| format!("scaling.redis_url: {e}"))?;
        }
        self.app_store.validate()
    }

    fn check_apps(&self) -> Result<(), String> {
        let apps = self.effective_apps();
        for (i, app) in apps.iter().enumerate() {
            app.validate(&format!("apps[{i}]"))?;
            for other in &apps[..i] {
                if other.id == app.id || other.key == app.key {
                    return Err(format!(
                        "apps[{i}]: id \"{}\" or key \"{}\" is used by another app",
                        app.id, app.key
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every time setting is added to the server's clock: bounded so that no sum can overflow.
    fn check_durations(&self) -> Result<(), String> {
        let w = &self.webhooks;
        for (name, secs) in [
            ("ping_interval_secs", self.ping_interval_secs),
            ("activity_timeout_secs", self.activity_timeout_secs),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("shutdown_timeout_secs", self.shutdown_timeout_secs),
            ("cache_ttl_secs", self.cache_ttl_secs),
            ("validate_timeout_secs", self.validate_timeout_secs),
            ("route_timeout_secs", self.route_timeout_secs),
            ("scaling.node_timeout_secs", self.scaling.node_timeout_secs),
            ("webhooks.timeout_secs", w.timeout_secs),
            ("webhooks.batch_ms", w.batch_ms / 1000),
            ("webhooks.vacate_grace_ms", w.vacate_grace_ms / 1000),
        ] {
            if secs > MAX_DURATION_SECS {
                return Err(format!(
                    "{name}: over {MAX_DURATION_SECS} seconds (30 days) is not a timeout this server can keep"
                ));
            }
        }
        Ok(())
    }

    /// The configured apps, or the single default app built from `app_id`/`app_key`/`app_secret`.
    pub fn effective_apps(&self) -> Vec<AppConfig> {
        if !self.apps.is_empty() {
            return self.apps.clone();
        }
        vec![AppConfig {
            id: self.app_id.clone(),
            key: self.app_key.clone(),
            secret: self.app_secret.clone(),
            ..AppConfig::default()
        }]
    }

    pub fn fifo_mode_bits(&self) -> Result<u32, String> {
        u32::from_str_radix(self.fifo_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "fifo_mode: \"{}\" is not an octal mode like 0660",
                    self.fifo_mode
                )
            })
    }

    /// The output bounds of one connection: (pause reading past, close past).
    /// The payload size from which frames go compressed; `None` when compression is off.
    pub fn compression_from(&self) -> Option<usize> {
        (self.compression == "on").then_some(self.compression_min_bytes)
    }

    pub fn output_bounds(&self) -> (usize, usize) {
        let pause = match self.outbound_pause_bytes {
            0 => self.outbound_queue_bytes / 4,
            n => n,
        };
        (pause, self.outbound_queue_bytes)
    }

    /// The path prefix without a trailing slash ("" for root).
    pub fn prefix(&self) -> &str {
        self.path.trim_end_matches('/')
    }

    /// The configuration as JSON with every secret replaced, for `ferrocast config` and logs.
    /// What `ferrocast config` prints: the configuration with secrets masked, and `apps` as in
    /// force — the default app too, so every per-app setting shows with its value.
    pub fn masked_json(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("config serializes");
        value["apps"] = serde_json::to_value(self.effective_apps()).expect("apps serialize");
        mask_secrets(&mut value);
        value
    }

    /// Keeps the settings fixed at start from the running configuration, so what the server
    /// reports (`ferrocast config`, /up) after a reload is what is in force.
    pub fn keep_fixed(&mut self, running: &Config) {
        self.host = running.host.clone();
        self.port = running.port;
        self.auto_port = running.auto_port;
        self.path = running.path.clone();
        self.fifo = running.fifo.clone();
        self.fifo_mode = running.fifo_mode.clone();
        self.max_workers = running.max_workers;
        self.max_queued_jobs = running.max_queued_jobs;
        self.loops = running.loops;
        self.scaling = running.scaling.clone();
    }

    /// Settings a SIGHUP cannot change in a running process.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.host != new.host || self.port != new.port || self.auto_port != new.auto_port {
            changed.push("host/port");
        }
        if self.path != new.path {
            changed.push("path");
        }
        if self.fifo != new.fifo || self.fifo_mode != new.fifo_mode {
            changed.push("fifo");
        }
        if self.max_workers != new.max_workers || self.max_queued_jobs != new.max_queued_jobs {
            changed.push("max_workers/max_queued_jobs");
        }
        if self.scaling != new.scaling {
            changed.push("scaling");
        }
        if self.loops != new.loops {
            changed.push("loops");
        }
        changed
    }
}

mod loops;
pub use loops::Loops;

#[cfg(test)]
mod tests;
