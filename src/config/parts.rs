//! The configuration's sections: handlers, scaling, console, TLS, apps and their webhooks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One webhook of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// POST the batch here (`http://` or `https://`; a worker makes the call).
    pub url: String,
    /// Or run this command with the batch on stdin (e.g. `["php", "artisan", "pusher:webhook"]`).
    pub exec: Vec<String>,
    /// Or ask the FastCGI application at `socket` or `address` to run this script, the batch as
    /// a POST body with the `X-Pusher-Key` and `X-Pusher-Signature` headers.
    pub script: String,
    pub socket: String,
    pub address: String,
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
        let kinds = [
            !self.url.is_empty(),
            !self.exec.is_empty(),
            !self.script.is_empty(),
        ];
        if kinds.iter().filter(|&&k| k).count() != 1 {
            return Err(format!("{at}: give one of url, exec or script (FastCGI)"));
        }
        if !self.url.is_empty() {
            crate::httpclient::parse_url(&self.url).map_err(|e| format!("{at}.url: {e}"))?;
        }
        if !self.script.is_empty() {
            fastcgi_target(&self.socket, &self.address, &self.script, at)?;
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

    /// Whether this webhook takes event `name` on `channel`. Without `event_types` it takes
    /// every Pusher webhook event, not the lifecycle events of `hooks`.
    pub fn wants(&self, name: &str, channel: &str) -> bool {
        let wanted = if self.event_types.is_empty() {
            EVENT_TYPES.contains(&name)
        } else {
            self.event_types.iter().any(|t| t == name)
        };
        wanted
            && channel.starts_with(&self.channel_prefix)
            && channel.ends_with(&self.channel_suffix)
    }
}

/// History for the channels whose names start with `prefix` (empty: every channel).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryRule {
    pub prefix: String,
    /// Publications kept per channel.
    pub size: usize,
    /// How long each is kept.
    pub ttl_secs: u64,
}

impl Default for HistoryRule {
    fn default() -> Self {
        HistoryRule {
            prefix: String::new(),
            size: 100,
            ttl_secs: 300,
        }
    }
}

/// The lifecycle events `hooks` can ask for.
pub const LIFECYCLE_EVENTS: [&str; 5] = [
    "connected",
    "disconnected",
    "subscribed",
    "unsubscribed",
    "signed_in",
];

/// One lifecycle hook of an app: connections, subscriptions and sign-ins told to the
/// application by a handler (as `validate` and `route` are), batched and signed as webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// Some of [`LIFECYCLE_EVENTS`]; empty = all.
    pub events: Vec<String>,
    /// `exec`, `http` or `fastcgi`, with its settings as for `validate`.
    pub handler: String,
    pub command: Vec<String>,
    pub url: String,
    pub socket: String,
    pub address: String,
    pub script: String,
}

impl HookConfig {
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if !matches!(self.handler.as_str(), "exec" | "http" | "fastcgi") {
            return Err(format!(
                "{at}.handler: \"{}\" is not exec, http or fastcgi",
                self.handler
            ));
        }
        if let Some(bad) = self
            .events
            .iter()
            .find(|e| !LIFECYCLE_EVENTS.contains(&e.as_str()))
        {
            return Err(format!(
                "{at}.events: \"{bad}\" is not one of {}",
                LIFECYCLE_EVENTS.join(", ")
            ));
        }
        let handler = HandlerConfig {
            handler: self.handler.clone(),
            command: self.command.clone(),
            url: self.url.clone(),
            socket: self.socket.clone(),
            address: self.address.clone(),
            script: self.script.clone(),
        };
        handler.validate(at)
    }

    /// The hook as a webhook target: the same batching, signing, retries and bounded queue.
    pub fn as_webhook(&self) -> WebhookConfig {
        let events = if self.events.is_empty() {
            LIFECYCLE_EVENTS.iter().map(|e| e.to_string()).collect()
        } else {
            self.events.clone()
        };
        let mut target = WebhookConfig {
            event_types: events,
            ..WebhookConfig::default()
        };
        match self.handler.as_str() {
            "exec" => target.exec = self.command.clone(),
            "http" => target.url = self.url.clone(),
            _ => {
                target.script = self.script.clone();
                target.socket = self.socket.clone();
                target.address = self.address.clone();
            }
        }
        target
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

/// A handler: `none`, `exec` (run `command`, no shell), `http` (call `url`) or `fastcgi` (ask
/// the FastCGI application at `socket` or `address` to run `script`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerConfig {
    pub handler: String,
    pub command: Vec<String>,
    pub url: String,
    /// `fastcgi`: the application's Unix socket, e.g. `/run/php/ferrocast.sock`.
    pub socket: String,
    /// `fastcgi`: the application's TCP address (an IP address and port), e.g. `127.0.0.1:9000`.
    pub address: String,
    /// `fastcgi`: the script's absolute path, as the application sees it (`SCRIPT_FILENAME`).
    pub script: String,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            handler: "none".into(),
            command: Vec::new(),
            url: String::new(),
            socket: String::new(),
            address: String::new(),
            script: String::new(),
        }
    }
}

impl HandlerConfig {
    pub fn enabled(&self) -> bool {
        self.handler != "none"
    }

    pub fn validate(&self, key: &str) -> Result<(), String> {
        match self.handler.as_str() {
            "none" => Ok(()),
            "exec" if self.command.is_empty() => {
                Err(format!("{key}.command: give the program and its arguments"))
            }
            "exec" => Ok(()),
            "http" => crate::httpclient::parse_url(&self.url)
                .map(|_| ())
                .map_err(|e| format!("{key}.url: {e}")),
            "fastcgi" => self.validate_fastcgi(key),
            other => Err(format!(
                "{key}.handler: \"{other}\" is not none, exec, http or fastcgi"
            )),
        }
    }

    fn validate_fastcgi(&self, key: &str) -> Result<(), String> {
        fastcgi_target(&self.socket, &self.address, &self.script, key).map(|_| ())
    }

    /// The FastCGI application to ask, for a validated `fastcgi` handler.
    pub fn fastcgi_target(&self) -> Option<crate::job::FcgiTarget> {
        fastcgi_target(&self.socket, &self.address, &self.script, "").ok()
    }
}

/// Where a FastCGI application listens (a Unix `socket` path or an IP `address`, one of them),
/// checked with the `script` to run; `key` names the setting in errors.
pub fn fastcgi_target(
    socket: &str,
    address: &str,
    script: &str,
    key: &str,
) -> Result<crate::job::FcgiTarget, String> {
    use crate::job::FcgiTarget;
    if !script.starts_with('/') {
        return Err(format!(
            "{key}.script: give the script's absolute path, e.g. /srv/app/ws/validate.php"
        ));
    }
    match (socket.is_empty(), address.is_empty()) {
        (false, true) => Ok(FcgiTarget::Unix(socket.into())),
        (true, false) => address.parse().map(FcgiTarget::Tcp).map_err(|_| {
            format!(
                "{key}.address: \"{address}\" is not an IP address and port, e.g. 127.0.0.1:9000"
            )
        }),
        _ => Err(format!(
            "{key}: give the FastCGI application's socket (a Unix socket path) or its address (IP:port), one of them"
        )),
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

/// Where apps come from besides the `apps` list: a database table (`migrations/`), read by
/// forked workers so the loop never waits on the database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AppStoreConfig {
    /// `file` (the `apps` list only), `mysql` (MySQL or MariaDB) or `postgres`.
    pub driver: String,
    /// `mysql://user:password@host:3306/db` or `postgres://user:password@host:5432/db`;
    /// FERROCAST_APP_STORE_URL keeps the password out of the file.
    pub url: String,
    /// The table of apps: a plain SQL name (letters, digits, `_`).
    pub table: String,
    /// How long an app read from the table is used before it is read again.
    pub cache_ttl_secs: u64,
    /// How long "no such key or id" is remembered, so a flood of unknown keys is not a flood of
    /// queries.
    pub negative_ttl_secs: u64,
    /// TLS to the database (asked for in the URL: `sslmode=require` for PostgreSQL,
    /// `ssl-mode=REQUIRED` for MySQL): CA certificates (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for AppStoreConfig {
    fn default() -> Self {
        AppStoreConfig {
            driver: "file".into(),
            url: String::new(),
            table: "ferrocast_apps".into(),
            cache_ttl_secs: 60,
            negative_ttl_secs: 10,
            ca_file: None,
        }
    }
}

impl AppStoreConfig {
    pub fn validate(&self) -> Result<(), String> {
        let scheme = match self.driver.as_str() {
            "file" => return Ok(()),
            "mysql" => "mysql://",
            "postgres" => "postgres",
            other => {
                return Err(format!(
                    "app_store.driver: \"{other}\" is not file, mysql or postgres"
                ));
            }
        };
        if !self.url.starts_with(scheme) {
            return Err(format!(
                "app_store.url: a {} URL ({scheme}…) is needed for driver {}",
                self.driver, self.driver
            ));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let t = &self.table;
        if t.is_empty()
            || t.len() > 64
            || !t.chars().all(plain)
            || t.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "app_store.table: \"{t}\" must be 1-64 letters, digits or _ (not starting with a digit)"
            ));
        }
        Ok(())
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
    /// Tell the application of connections, subscriptions and sign-ins (BlazeCast's
    /// connection events, what Laravel Reverb users ask for).
    pub hooks: Vec<HookConfig>,
    /// Collect events for `webhooks.batch_ms`; off = one request per event.
    pub webhook_batching: bool,
    /// Tell a channel's subscribers its count (`pusher_internal:subscription_count`).
    pub subscription_count_events: bool,
    /// At most one count per channel per this many milliseconds.
    pub subscription_count_interval_ms: u64,
    /// Tell signed-in users when the users of their `watchlist` come online or go offline.
    pub watchlist_events: bool,
    /// The longest watchlist a sign-in may carry.
    pub max_watchlist_users: usize,
    /// Which channels keep their recent publications for clients that come back (off unless
    /// listed); the longest matching prefix decides.
    pub history: Vec<HistoryRule>,
}

impl AppConfig {
    /// The history rule of a channel: the longest prefix that matches.
    pub fn history_rule(&self, channel: &str) -> Option<&HistoryRule> {
        self.history
            .iter()
            .filter(|r| channel.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
    }

    /// Where the app's webhooks and hooks go, in one list (webhooks first): a delivery names
    /// its target by position.
    pub fn notify_targets(&self) -> Vec<WebhookConfig> {
        let hooks = self.hooks.iter().map(HookConfig::as_webhook);
        self.webhooks.iter().cloned().chain(hooks).collect()
    }

    /// Checks one app's settings; `at` names it in messages (`apps[2]`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.id.is_empty() || self.key.is_empty() || self.secret.is_empty() {
            return Err(format!("{at}: id, key and secret must not be empty"));
        }
        for (j, hook) in self.webhooks.iter().enumerate() {
            hook.validate(&format!("{at}.webhooks[{j}]"))?;
        }
        for (j, hook) in self.hooks.iter().enumerate() {
            hook.validate(&format!("{at}.hooks[{j}]"))?;
        }
        for (j, rule) in self.history.iter().enumerate() {
            if !(1..=100_000).contains(&rule.size)
                || rule.ttl_secs == 0
                || rule.ttl_secs > super::MAX_DURATION_SECS
            {
                return Err(format!(
                    "{at}.history[{j}]: size must be 1 to 100000 and ttl_secs 1 to {} (30 days)",
                    super::MAX_DURATION_SECS
                ));
            }
        }
        if self.subscription_count_interval_ms == 0
            || self.subscription_count_interval_ms > super::MAX_DURATION_SECS * 1000
        {
            return Err(format!(
                "{at}.subscription_count_interval_ms: must be between 1 and {} (30 days)",
                super::MAX_DURATION_SECS * 1000
            ));
        }
        if self.activity_timeout == 0 {
            return Err(format!("{at}.activity_timeout: must be at least 1"));
        }
        for (name, secs) in [
            ("activity_timeout", self.activity_timeout),
            (
                "user_authentication_timeout_secs",
                self.user_authentication_timeout_secs,
            ),
        ] {
            if secs > super::MAX_DURATION_SECS {
                return Err(format!(
                    "{at}.{name}: {secs} is over {} (30 days)",
                    super::MAX_DURATION_SECS
                ));
            }
        }
        Ok(())
    }
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
            hooks: Vec::new(),
            webhook_batching: true,
            subscription_count_events: false,
            subscription_count_interval_ms: 1000,
            watchlist_events: false,
            max_watchlist_users: 100,
            history: Vec::new(),
        }
    }
}
