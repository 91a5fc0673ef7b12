//! Layered configuration: flags > environment (`FERROCAST_*`) > JSON file > embedded defaults.
//!
//! Every layer is merged as JSON into the serialized defaults and the result is deserialized once,
//! so a wrong type or an unknown key is reported the same way whichever layer it came from, with the
//! key's path in the message.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One webhook of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// POST the batch here (http only; the worker's client).
    pub url: String,
    /// Or run this command with the batch on stdin (e.g. `["php", "artisan", "pusher:webhook"]`).
    pub exec: Vec<String>,
    /// `channel_occupied`, `channel_vacated`, `member_added`, `member_removed`, `client_event`,
    /// `cache_miss`, `subscription_count`. Empty = all.
    pub event_types: Vec<String>,
    /// Only channels whose name starts with this.
    pub channel_prefix: String,
    /// Only channels whose name ends with this.
    pub channel_suffix: String,
}

pub const EVENT_TYPES: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

impl WebhookConfig {
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.url.is_empty() == self.exec.is_empty() {
            return Err(format!("{at}: give either url or exec"));
        }
        if !self.url.is_empty() {
            crate::httpclient::parse_url(&self.url).map_err(|e| format!("{at}.url: {e}"))?;
        }
        if let Some(bad) = self
            .event_types
            .iter()
            .find(|t| !EVENT_TYPES.contains(&t.as_str()))
        {
            return Err(format!("{at}.event_types: unknown event type \"{bad}\""));
        }
        Ok(())
    }

    pub fn wants(&self, name: &str, channel: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == name))
            && channel.starts_with(&self.channel_prefix)
            && channel.ends_with(&self.channel_suffix)
    }
}

/// Server-wide webhook settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// How long events are collected into one request. 100 ms: short enough that the app
    /// hears of a vacated channel at once, long enough that a burst of joins is one request.
    pub batch_ms: u64,
    pub max_batch: usize,
    pub timeout_secs: u64,
    /// Sends per batch, the first included.
    pub tries: u32,
    /// Batches waiting to be sent (or retried); past this the oldest is dropped and counted.
    pub max_pending: usize,
    /// A channel vacated and re-occupied within this time fires neither event (no flapping).
    pub vacate_grace_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            batch_ms: 100,
            max_batch: 50,
            timeout_secs: 5,
            tries: 3,
            max_pending: 1000,
            vacate_grace_ms: 1000,
        }
    }
}

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
    /// Largest WebSocket message accepted after reassembly (close 1009 past it).
    pub max_message_bytes: usize,
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
    /// Who a connection belongs to, decided before the 101 by a forked handler.
    pub validate: HandlerConfig,
    /// What answers a raw-mode client's messages (CarbonPHP's startApplication).
    pub route: HandlerConfig,
    pub validate_timeout_secs: u64,
    pub route_timeout_secs: u64,
    /// Handler processes running at once; more jobs wait in a queue of `max_queued_jobs`.
    pub max_workers: usize,
    pub max_queued_jobs: usize,
    /// Output a handler may return; the rest is cut (and the client told).
    pub max_worker_output_bytes: usize,
    /// Routed requests of one connection running at once (1 keeps replies in request order).
    pub max_inflight_per_connection: usize,
    /// Per-user FIFOs (`<fifo dir>/users/<id>.fifo`): `deliver` a line to the user's
    /// connections, `route` it to the application on the user's behalf, or `off`.
    pub user_fifo: String,
    /// Batching, timeouts and retries of every app's webhooks.
    pub webhooks: WebhookSettings,
}

/// A forked handler: `none`, `exec` (run `command`, no shell) or `http` (call `url`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerConfig {
    pub handler: String,
    pub command: Vec<String>,
    pub url: String,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            handler: "none".into(),
            command: Vec::new(),
            url: String::new(),
        }
    }
}

impl HandlerConfig {
    pub fn enabled(&self) -> bool {
        self.handler != "none"
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        match self.handler.as_str() {
            "none" => Ok(()),
            "exec" if self.command.is_empty() => {
                Err(format!("{key}.command: give the program and its arguments"))
            }
            "exec" => Ok(()),
            "http" => crate::httpclient::parse_url(&self.url)
                .map(|_| ())
                .map_err(|e| format!("{key}.url: {e}")),
            other => Err(format!(
                "{key}.handler: \"{other}\" is not none, exec or http"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// `local` (one node) or `redis`.
    pub driver: String,
    /// `redis://[user:password@]host:port/db`.
    pub redis_url: String,
    /// Prefix of every Redis key and channel, so several deployments can share a Redis.
    pub prefix: String,
    /// This node's name in the cluster; generated (host-pid-random) when empty.
    pub node_id: String,
    /// How long a silent node is considered alive.
    pub node_timeout_secs: u64,
    /// `rediss://`: CA certificates (PEM) to trust besides the system's, for a private CA.
    pub redis_ca_file: Option<PathBuf>,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            driver: "local".into(),
            redis_url: "redis://127.0.0.1:6379/0".into(),
            prefix: "ferrocast".into(),
            node_id: String::new(),
            node_timeout_secs: 10,
            redis_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// Under the server's `path` prefix.
    pub path: String,
    /// Login with user `token` and this password, besides any app's key and secret.
    pub token: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: false,
            path: "/console".into(),
            token: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// One Pusher application: credentials and the limits Socket Rush and BlazeCast users know.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    pub name: String,
    pub enabled: bool,
    /// 0 = unlimited.
    pub max_connections: usize,
    /// `client-*` events on private and presence channels.
    pub enable_client_messages: bool,
    /// REST `events`/`batch_events` per second; 0 = unlimited.
    pub max_backend_events_per_second: u32,
    /// Client events per second per connection; 0 = unlimited.
    pub max_client_events_per_second: u32,
    /// REST queries per second; 0 = unlimited.
    pub max_read_requests_per_second: u32,
    pub max_presence_members_per_channel: usize,
    pub max_presence_member_size_kb: usize,
    pub max_channel_name_length: usize,
    pub max_event_channels_at_once: usize,
    pub max_event_name_length: usize,
    pub max_event_payload_kb: usize,
    pub max_event_batch_size: usize,
    /// Sent to clients in `pusher:connection_established`.
    pub activity_timeout: u64,
    pub allowed_origins: Vec<String>,
    /// Even public channels need an auth signature.
    pub require_channel_authorization: bool,
    /// Close connections that do not `pusher:signin` within `user_authentication_timeout_secs`.
    pub require_user_authentication: bool,
    pub user_authentication_timeout_secs: u64,
    /// Where to tell the application what happens on its channels.
    pub webhooks: Vec<WebhookConfig>,
    /// Socket Rush's switch: keep the list but send nothing.
    pub webhooks_enabled: bool,
    /// Collect events for `webhooks.batch_ms`; off = one request per event.
    pub webhook_batching: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            id: "app-id".into(),
            key: "app-key".into(),
            secret: "app-secret".into(),
            name: "default".into(),
            enabled: true,
            max_connections: 0,
            enable_client_messages: false,
            max_backend_events_per_second: 0,
            max_client_events_per_second: 10,
            max_read_requests_per_second: 0,
            max_presence_members_per_channel: 100,
            max_presence_member_size_kb: 2,
            max_channel_name_length: 200,
            max_event_channels_at_once: 100,
            max_event_name_length: 200,
            max_event_payload_kb: 10,
            max_event_batch_size: 10,
            activity_timeout: 120,
            allowed_origins: vec!["*".into()],
            require_channel_authorization: false,
            require_user_authentication: false,
            user_authentication_timeout_secs: 30,
            webhooks: Vec::new(),
            webhooks_enabled: true,
            webhook_batching: true,
        }
    }
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
            validate: HandlerConfig::default(),
            route: HandlerConfig::default(),
            validate_timeout_secs: 5,
            route_timeout_secs: 30,
            max_workers: 64,
            max_queued_jobs: 256,
            max_worker_output_bytes: 1024 * 1024,
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: the configuration must be a JSON object")]
    NotObject { path: PathBuf },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("--set {arg}: {message}")]
    Set { arg: String, message: String },
}

/// Where the configuration comes from: kept so that SIGHUP can rebuild it from the same sources.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// `key=value` pairs from flags, applied last (explicit flags are turned into these too).
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// Builds the effective configuration from defaults, file, environment and flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("FERROCAST_"))
            .collect();
        self.load_with_env(&env)
    }

    pub fn load_with_env(&self, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let defaults = serde_json::to_value(Config::default()).expect("defaults serialize");
        let mut merged = defaults.clone();
        let origin = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Syntax {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                if !file.is_object() {
                    return Err(ConfigError::NotObject { path: path.clone() });
                }
                merge(&mut merged, file);
                path.display().to_string()
            }
            None => "configuration".to_string(),
        };
        for (var, raw) in env {
            let key = nested_key(
                &defaults,
                &var.trim_start_matches("FERROCAST_").to_ascii_lowercase(),
            );
            // Variables that are not configuration keys (FERROCAST_SOCKET_ID given to workers,
            // say) are ignored rather than refused: the environment is shared with other tools.
            let Some(default) = lookup(&defaults, &key) else {
                continue;
            };
            let value = parse_scalar(default, raw).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            set_path(&mut merged, &key, value);
        }
        for (key, raw) in &self.overrides {
            let arg = format!("{key}={raw}");
            let default = lookup(&defaults, key).ok_or_else(|| ConfigError::Set {
                arg: arg.clone(),
                message: format!("unknown key \"{key}\""),
            })?;
            let value = parse_scalar(default, raw).map_err(|message| ConfigError::Set {
                arg: arg.clone(),
                message,
            })?;
            set_path(&mut merged, key, value);
        }
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let message = match unknown_field(&inner) {
                Some(key) if path == "." => format!("unknown key \"{key}\""),
                Some(key) => format!("{path}: unknown key \"{key}\""),
                None => format!("{path}: {inner}"),
            };
            ConfigError::Invalid {
                origin: origin.clone(),
                message,
            }
        })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(config)
    }
}

/// `tls_cert` → `tls.cert` when `tls` is an object key, so env vars reach nested settings.
fn nested_key(defaults: &Value, flat: &str) -> String {
    if lookup(defaults, flat).is_some() {
        return flat.to_string();
    }
    if let Some(map) = defaults.as_object() {
        for (k, v) in map {
            if v.is_object()
                && let Some(rest) = flat
                    .strip_prefix(k.as_str())
                    .and_then(|r| r.strip_prefix('_'))
            {
                return format!("{k}.{rest}");
            }
        }
    }
    flat.to_string()
}

/// serde says "unknown field `x`, expected one of …"; users think in keys.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

impl Config {
    fn validate(&self) -> Result<(), String> {
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(format!("path: \"{}\" must start with '/'", self.path));
        }
        let mode = self.fifo_mode_bits()?;
        if mode & 0o002 != 0 {
            return Err(format!(
                "fifo_mode: {:o} would let any local user broadcast; use 0660 and a shared group",
                mode
            ));
        }
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
        if self.fifo.as_os_str().is_empty() {
            return Err("fifo: must not be empty".into());
        }
        crate::proxy::parse_list(&self.trusted_proxies)?;
        if !self.console.path.starts_with('/') || self.console.path.len() < 2 {
            return Err(format!(
                "console.path: \"{}\" must start with '/'",
                self.console.path
            ));
        }
        self.validate.validate("validate")?;
        self.route.validate("route")?;
        if !matches!(self.user_fifo.as_str(), "deliver" | "route" | "off") {
            return Err(format!(
                "user_fifo: \"{}\" is not deliver, route or off",
                self.user_fifo
            ));
        }
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
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err("tls: give both cert and key (PEM files), or neither".into());
        }
        self.check_durations()?;
        let apps = self.effective_apps();
        for (i, app) in apps.iter().enumerate() {
            if app.id.is_empty() || app.key.is_empty() || app.secret.is_empty() {
                return Err(format!("apps[{i}]: id, key and secret must not be empty"));
            }
            for (j, hook) in app.webhooks.iter().enumerate() {
                hook.validate(&format!("apps[{i}].webhooks[{j}]"))?;
            }
            if app.activity_timeout == 0 {
                return Err(format!("apps[{i}].activity_timeout: must be at least 1"));
            }
            for (name, secs) in [
                ("activity_timeout", app.activity_timeout),
                (
                    "user_authentication_timeout_secs",
                    app.user_authentication_timeout_secs,
                ),
            ] {
                if secs > MAX_DURATION_SECS {
                    return Err(format!(
                        "apps[{i}].{name}: {secs} is over {MAX_DURATION_SECS} (30 days)"
                    ));
                }
            }
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
    pub fn masked_json(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("config serializes");
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
        changed
    }
}

pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let secret = key == "secret"
                    || key == "token"
                    || key == "password"
                    || key.ends_with("_secret")
                    || key.ends_with("_token");
                if secret && v.is_string() && !v.as_str().unwrap_or("").is_empty() {
                    *v = Value::String("********".into());
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// Recursively merges `overlay` into `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Finds a key (dotted for nested objects, or with `_` joining nested keys as env vars do).
fn lookup<'a>(defaults: &'a Value, key: &str) -> Option<&'a Value> {
    let mut node = defaults;
    for part in key.split('.') {
        node = node.as_object()?.get(part)?;
    }
    Some(node)
}

fn set_path(root: &mut Value, key: &str, value: Value) {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !node.get(*part).is_some_and(Value::is_object) {
            node[*part] = Value::Object(Map::new());
        }
        node = &mut node[*part];
    }
    node[parts[parts.len() - 1]] = value;
}

/// Parses a flag or environment value by the type of the key's default.
fn parse_scalar(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match default {
        Value::Bool(_) => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got \"{raw}\"")),
        },
        Value::Number(_) => raw
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number, got \"{raw}\"")),
        Value::Array(_) if raw.starts_with('[') => {
            serde_json::from_str(raw).map_err(|e| format!("not a JSON array: {e}"))
        }
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        Value::Object(_) => {
            serde_json::from_str(raw).map_err(|e| format!("not a JSON object: {e}"))
        }
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Null => Ok(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.into()))),
    }
}

/// Reads only the file layer, for `ferrocast config --check FILE`.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    Sources {
        file: Some(path.to_path_buf()),
        overrides: Vec::new(),
    }
    .load_with_env(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("c.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ferrocast-cfg-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let (_d, path) = write(r#"{"port": 9000, "max_connections": 5}"#);
        let sources = Sources {
            file: Some(path),
            overrides: vec![("max_connections".into(), "7".into())],
        };
        let env = vec![
            ("FERROCAST_PORT".to_string(), "9100".to_string()),
            ("FERROCAST_MAX_CONNECTIONS".to_string(), "6".to_string()),
            ("FERROCAST_SOCKET_ID".to_string(), "1.2".to_string()),
        ];
        let c = sources.load_with_env(&env).unwrap();
        assert_eq!(c.port, 9100);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.host, "127.0.0.1");
    }

    #[test]
    fn unknown_key_is_named() {
        let (_d, path) = write(r#"{"prot": 1}"#);
        let err = check_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown key \"prot\""), "{err}");
    }

    #[test]
    fn wrong_type_names_key() {
        let (_d, path) = write(r#"{"port": "x"}"#);
        let err = check_file(&path).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn env_lists_split_on_commas() {
        let env = vec![(
            "FERROCAST_ALLOWED_ORIGINS".to_string(),
            "http://a, http://b".to_string(),
        )];
        let c = Sources::default().load_with_env(&env).unwrap();
        assert_eq!(c.allowed_origins, vec!["http://a", "http://b"]);
    }

    #[test]
    fn nested_env_keys() {
        let env = vec![
            ("FERROCAST_TLS_CERT".to_string(), "/c.pem".to_string()),
            ("FERROCAST_TLS_KEY".to_string(), "/k.pem".to_string()),
        ];
        let c = Sources::default().load_with_env(&env).unwrap();
        assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/c.pem")));
        let one = vec![("FERROCAST_TLS_CERT".to_string(), "/c.pem".to_string())];
        assert!(Sources::default().load_with_env(&one).is_err());
    }

    #[test]
    fn bad_env_number_is_reported() {
        let env = vec![("FERROCAST_PORT".to_string(), "eighty".to_string())];
        let err = Sources::default()
            .load_with_env(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("FERROCAST_PORT"), "{err}");
    }

    #[test]
    fn world_writable_fifo_refused() {
        let env = vec![("FERROCAST_FIFO_MODE".to_string(), "0666".to_string())];
        assert!(Sources::default().load_with_env(&env).is_err());
    }

    #[test]
    fn secrets_are_masked() {
        let mut v = serde_json::json!({"apps":[{"key":"k","secret":"s"}],"token":"t","x":"y"});
        mask_secrets(&mut v);
        assert_eq!(v["apps"][0]["secret"], "********");
        assert_eq!(v["apps"][0]["key"], "k");
        assert_eq!(v["token"], "********");
        assert_eq!(v["x"], "y");
    }
}
