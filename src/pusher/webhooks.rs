//! Webhooks: what happened on an app's channels, told to the application in Pusher's format.
//!
//! Events are collected per webhook for `webhook_batch_ms` (or up to `webhook_max_batch`
//! events), signed with the app secret, and sent by a forked worker (the loop never waits on the
//! network). Failed sends are retried with backoff; what cannot be sent is dropped, counted and
//! logged, never silently lost.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

    fn wants(&self, name: &str, channel: &str) -> bool {
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

/// A signed batch on its way.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub app: usize,
    pub hook: usize,
    pub body: String,
    pub signature: String,
    pub attempt: u32,
    pub not_before: Instant,
}

struct Batch {
    app: usize,
    hook: usize,
    /// The app's `webhook_batching`: off = every event is sent on its own, at once.
    batching: bool,
    events: Vec<Value>,
    since: Instant,
}

/// A channel that emptied on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Vacate {
    pub app: usize,
    pub channel: String,
    /// Wall-clock milliseconds: comparable with the other nodes' records.
    pub at_ms: u64,
    /// When the occupation that just ended began (0: unknown, long ago).
    pub occupied_at: u64,
    due: Instant,
    /// Until when the record is kept (and shown to the other nodes).
    expires: Instant,
    /// `channel_vacated` was sent or ruled out.
    resolved: bool,
}

/// How often the vacated records are scanned for due ones.
const SCAN_EVERY: Duration = Duration::from_millis(10);

#[derive(Default)]
pub struct Webhooks {
    batches: Vec<Batch>,
    /// Ready to send (or waiting for their retry time).
    pub pending: VecDeque<Delivery>,
    /// Channels that lost their last subscriber here, waiting out the grace period and then
    /// (with several nodes) kept a while so the other nodes can tell who vacated last. Keyed by
    /// (app, channel): a busy server creates and drops channels all the time.
    vacating: HashMap<(usize, String), Vacate>,
    /// How many of them are undecided (so "is there work" costs nothing).
    undecided: usize,
    /// When `vacating` was last scanned for due records.
    last_scan: Option<Instant>,
    /// Records dropped since the server last looked (the other nodes should forget them).
    pub forgotten: Vec<(usize, String)>,
    /// Channels occupied here awaiting the cluster's word: (app, channel, at ms, due), in due
    /// order (the window is the same for all).
    occupying: VecDeque<(usize, String, u64, Instant)>,
    pub sent: u64,
    pub failed_attempts: u64,
    pub dropped: u64,
}

impl Webhooks {
    /// Adds an event for every webhook of the app that wants it.
    pub fn emit(&mut self, app: usize, hooks: &[WebhookConfig], batching: bool, event: Value) {
        let name = event["name"].as_str().unwrap_or("");
        let channel = event["channel"].as_str().unwrap_or("");
        for (i, hook) in hooks.iter().enumerate() {
            if !hook.wants(name, channel) {
                continue;
            }
            let batch = match self
                .batches
                .iter_mut()
                .position(|b| b.app == app && b.hook == i)
            {
                Some(pos) => &mut self.batches[pos],
                None => {
                    self.batches.push(Batch {
                        app,
                        hook: i,
                        batching,
                        events: Vec::new(),
                        since: Instant::now(),
                    });
                    self.batches.last_mut().expect("just pushed")
                }
            };
            // Only the latest count of a channel matters within one batch.
            if batching && name == "subscription_count" {
                batch
                    .events
                    .retain(|e| !(e["name"] == "subscription_count" && e["channel"] == channel));
            }
            batch.events.push(event.clone());
        }
    }

    /// A channel emptied: its `channel_vacated` waits out the grace period. The record is kept
    /// `keep` longer (zero on a single node).
    pub fn vacated(
        &mut self,
        app: usize,
        channel: &str,
        occupied_at: u64,
        grace: Duration,
        keep: Duration,
    ) -> u64 {
        let now = Instant::now();
        let at_ms = crate::console::unix_ms();
        let record = Vacate {
            app,
            channel: channel.to_string(),
            at_ms,
            occupied_at,
            due: now + grace,
            expires: now + grace + keep,
            resolved: false,
        };
        self.undecided += 1;
        if let Some(old) = self.vacating.insert((app, channel.to_string()), record)
            && !old.resolved
        {
            self.undecided -= 1;
        }
        at_ms
    }

    /// With several nodes, a channel's first subscriber here is news only if no other node
    /// occupied it first: the decision waits `window`, for the other nodes' word to arrive.
    pub fn occupy_later(&mut self, app: usize, channel: &str, at_ms: u64, window: Duration) {
        self.occupying
            .push_back((app, channel.to_string(), at_ms, Instant::now() + window));
    }

    /// Occupations whose decision window is over: (app, channel, occupied at).
    pub fn due_occupied(&mut self, now: Instant) -> Vec<(usize, String, u64)> {
        let mut out = Vec::new();
        while self.occupying.front().is_some_and(|o| o.3 <= now) {
            if let Some((app, channel, at_ms, _)) = self.occupying.pop_front() {
                out.push((app, channel, at_ms));
            }
        }
        out
    }

    /// A channel gained its first subscriber. False when its vacated event is still undecided
    /// (a quick resubscribe): then neither the vacated nor the occupied event is sent.
    pub fn occupied(&mut self, app: usize, channel: &str) -> bool {
        match self.vacating.remove(&(app, channel.to_string())) {
            Some(v) if !v.resolved => {
                self.undecided -= 1;
                false
            }
            _ => true,
        }
    }

    /// Undecided vacated channels whose grace period is over; forgets expired records. An
    /// undecided record that outlives its keep time is given up: the cluster stayed occupied,
    /// so the node that empties it last sends the event.
    /// Scans at most every [`SCAN_EVERY`]: the records can be many, the loop turns often.
    pub fn due_vacated(&mut self, now: Instant) -> Vec<(usize, String, u64)> {
        if self
            .last_scan
            .is_some_and(|t| now >= t && now - t < SCAN_EVERY)
        {
            return Vec::new();
        }
        self.last_scan = Some(now);
        let (undecided, forgotten) = (&mut self.undecided, &mut self.forgotten);
        self.vacating.retain(|_, v| {
            let keep = v.expires > now || (!v.resolved && v.expires == v.due);
            if !keep {
                *undecided -= usize::from(!v.resolved);
                forgotten.push((v.app, v.channel.clone()));
            }
            keep
        });
        self.vacating
            .values()
            .filter(|v| !v.resolved && v.due <= now)
            .map(|v| (v.app, v.channel.clone(), v.at_ms))
            .collect()
    }

    /// The vacated event of this channel was sent, or left to another node.
    pub fn resolve(&mut self, app: usize, channel: &str, now: Instant) {
        let key = (app, channel.to_string());
        let Some(v) = self.vacating.get_mut(&key) else {
            return;
        };
        if !v.resolved {
            v.resolved = true;
            self.undecided -= 1;
        }
        if v.expires <= now {
            self.vacating.remove(&key);
            self.forgotten.push(key);
        }
    }

    /// The record of a channel vacated here, if it is still kept.
    pub fn vacate_record(&self, app: usize, channel: &str) -> Option<&Vacate> {
        self.vacating.get(&(app, channel.to_string()))
    }

    /// Records of channels vacated here, for the other nodes' replicas.
    pub fn vacates(&self) -> impl Iterator<Item = &Vacate> {
        self.vacating.values()
    }

    /// Turns full or old-enough batches into signed deliveries.
    pub fn seal(
        &mut self,
        now: Instant,
        settings: &WebhookSettings,
        secret_of: impl Fn(usize) -> String,
    ) {
        let mut i = 0;
        while i < self.batches.len() {
            let b = &self.batches[i];
            let (window, max) = if b.batching {
                (
                    Duration::from_millis(settings.batch_ms),
                    settings.max_batch.max(1),
                )
            } else {
                (Duration::ZERO, 1)
            };
            let ready = !b.events.is_empty()
                && (b.events.len() >= max || now.saturating_duration_since(b.since) >= window);
            if !ready {
                i += 1;
                continue;
            }
            let b = self.batches.swap_remove(i);
            let max = if b.batching {
                settings.max_batch.max(1)
            } else {
                1
            };
            for chunk in b.events.chunks(max) {
                let body =
                    json!({ "time_ms": crate::console::unix_ms(), "events": chunk }).to_string();
                let signature = super::auth::webhook_signature(&secret_of(b.app), body.as_bytes());
                self.queue(
                    Delivery {
                        app: b.app,
                        hook: b.hook,
                        body,
                        signature,
                        attempt: 1,
                        not_before: now,
                    },
                    settings,
                );
            }
        }
    }

    fn queue(&mut self, d: Delivery, settings: &WebhookSettings) {
        if self.pending.len() >= settings.max_pending
            && let Some(old) = self.pending.pop_front()
        {
            self.dropped += 1;
            log::warn!(
                "webhook queue full ({} batches): dropped a batch for app {} webhook {}",
                settings.max_pending,
                old.app,
                old.hook
            );
        }
        self.pending.push_back(d);
    }

    /// A send failed: retry after 1 s, 2 s, 4 s … or drop after `tries`.
    pub fn failed(&mut self, mut d: Delivery, reason: &str, settings: &WebhookSettings) {
        self.failed_attempts += 1;
        if d.attempt >= settings.tries {
            self.dropped += 1;
            log::warn!(
                "webhook for app {} (webhook {}) dropped after {} tries: {reason}",
                d.app,
                d.hook,
                d.attempt
            );
            return;
        }
        log::info!(
            "webhook for app {} failed (try {}): {reason}; retrying",
            d.app,
            d.attempt
        );
        d.not_before = Instant::now() + Duration::from_secs(1 << (d.attempt - 1).min(5));
        d.attempt += 1;
        self.queue(d, settings);
    }

    /// The next delivery whose time has come.
    pub fn next_ready(&mut self, now: Instant) -> Option<Delivery> {
        let pos = self.pending.iter().position(|d| d.not_before <= now)?;
        self.pending.remove(pos)
    }

    pub fn has_batches(&self) -> bool {
        self.batches.iter().any(|b| !b.events.is_empty())
            || self.undecided > 0
            || !self.occupying.is_empty()
            || !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(types: &[&str], prefix: &str) -> WebhookConfig {
        WebhookConfig {
            url: "http://127.0.0.1:1/h".into(),
            event_types: types.iter().map(|s| s.to_string()).collect(),
            channel_prefix: prefix.into(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_batches_and_signs() {
        let hooks = [hook(&["channel_occupied"], "private-"), hook(&[], "")];
        let mut w = Webhooks::default();
        w.emit(
            0,
            &hooks,
            true,
            json!({"name":"channel_occupied","channel":"private-a"}),
        );
        w.emit(
            0,
            &hooks,
            true,
            json!({"name":"channel_occupied","channel":"public"}),
        );
        w.emit(
            0,
            &hooks,
            true,
            json!({"name":"subscription_count","channel":"public","subscription_count":1}),
        );
        w.emit(
            0,
            &hooks,
            true,
            json!({"name":"subscription_count","channel":"public","subscription_count":2}),
        );
        let settings = WebhookSettings::default();
        let later = Instant::now() + Duration::from_secs(1);
        w.seal(later, &settings, |_| "secret".into());
        assert_eq!(w.pending.len(), 2);
        let first = w.pending.iter().find(|d| d.hook == 0).unwrap();
        let v: Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
        assert!(super::super::auth::verify_webhook_signature(
            "secret",
            first.body.as_bytes(),
            &first.signature
        ));
        let all = w.pending.iter().find(|d| d.hook == 1).unwrap();
        let v: Value = serde_json::from_str(&all.body).unwrap();
        assert_eq!(
            v["events"].as_array().unwrap().len(),
            3,
            "the counts of one channel coalesce: {v}"
        );
        assert!(v["time_ms"].as_u64().unwrap() > 0);
    }

    #[test]
    fn without_batching_every_event_is_its_own_request() {
        let hooks = [hook(&[], "")];
        let mut w = Webhooks::default();
        w.emit(
            1,
            &hooks,
            false,
            json!({"name":"channel_occupied","channel":"a"}),
        );
        w.emit(
            1,
            &hooks,
            false,
            json!({"name":"subscription_count","channel":"a","subscription_count":1}),
        );
        w.emit(
            0,
            &hooks,
            true,
            json!({"name":"channel_occupied","channel":"b"}),
        );
        w.seal(Instant::now(), &WebhookSettings::default(), |_| "s".into());
        assert_eq!(
            w.pending.len(),
            2,
            "the unbatched app's two events go at once, one each"
        );
        assert!(w.pending.iter().all(|d| d.app == 1));
        assert!(
            w.has_batches(),
            "the batching app still waits for its window"
        );
    }

    #[test]
    fn retries_then_drops() {
        let settings = WebhookSettings::default();
        let mut w = Webhooks::default();
        let d = Delivery {
            app: 0,
            hook: 0,
            body: "{}".into(),
            signature: String::new(),
            attempt: 1,
            not_before: Instant::now(),
        };
        w.failed(d, "500", &settings);
        let d = w.pending.pop_front().unwrap();
        assert_eq!(d.attempt, 2);
        assert!(d.not_before > Instant::now());
        w.failed(d, "500", &settings);
        let d = w.pending.pop_front().unwrap();
        w.failed(d, "500", &settings);
        assert!(w.pending.is_empty());
        assert_eq!(w.dropped, 1);
    }

    #[test]
    fn quick_resubscribe_does_not_flap() {
        let mut w = Webhooks::default();
        w.vacated(0, "a", 0, Duration::from_secs(1), Duration::ZERO);
        assert!(!w.occupied(0, "a"));
        assert!(
            w.due_vacated(Instant::now() + Duration::from_secs(2))
                .is_empty()
        );
        w.vacated(0, "b", 0, Duration::from_millis(0), Duration::ZERO);
        let due = w.due_vacated(Instant::now() + Duration::from_millis(1));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1.as_str()), (0, "b"));
        w.resolve(0, "b", Instant::now() + Duration::from_millis(1));
        assert!(
            !w.has_batches(),
            "a single node forgets a sent vacate at once"
        );
        assert!(w.occupied(0, "b"));
    }

    #[test]
    fn cluster_vacate_records_outlive_the_decision() {
        let mut w = Webhooks::default();
        let t0 = Instant::now();
        w.vacated(0, "a", 0, Duration::from_secs(1), Duration::from_secs(10));
        w.vacated(0, "w", 0, Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(w.due_vacated(t0 + Duration::from_secs(2)).len(), 2);
        w.resolve(0, "a", t0 + Duration::from_secs(2));
        // "a" is decided but still shown to the other nodes; "w" waits for the cluster.
        assert_eq!(w.vacates().count(), 2);
        let due = w.due_vacated(t0 + Duration::from_secs(3));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, "w");
        // Both expire after the keep time; the undecided one is given up.
        assert!(w.has_batches(), "\"w\" is still undecided");
        assert!(w.due_vacated(t0 + Duration::from_secs(12)).is_empty());
        assert_eq!(w.vacates().count(), 0);
        assert!(!w.has_batches());
        // A decided record does not hold back the next occupied event.
        w.vacated(0, "b", 0, Duration::ZERO, Duration::from_secs(10));
        w.resolve(0, "b", Instant::now());
        assert!(w.occupied(0, "b"));
        assert_eq!(w.vacates().count(), 0);
    }
}
