//! Webhook batches: what happened on an app's channels, collected, signed and queued for sending
//! (the core's side of noticing and sending is `notify.rs`).
//!
//! Events are collected per webhook for `webhook_batch_ms` (or up to `webhook_max_batch`
//! events), signed with the app secret, and sent by a forked worker (the loop never waits on the
//! network). Failed sends are retried with backoff; what cannot be sent is dropped, counted and
//! logged, never silently lost.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{WebhookConfig, WebhookSettings};

/// When a channel was vacated, and how long its record lasts.
#[derive(Debug, Clone, Copy)]
pub struct Vacating {
    pub grace: Duration,
    pub keep: Duration,
    pub now: Instant,
    pub at_ms: u64,
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
    /// The latest subscriber count of a channel whose occupation is being decided: sent after
    /// `channel_occupied`, as a single node sends them.
    held_counts: HashMap<(usize, String), usize>,
    pub sent: u64,
    pub failed_attempts: u64,
    pub dropped: u64,
}

impl Webhooks {
    /// Adds an event for every webhook of the app that wants it.
    pub fn emit(
        &mut self,
        app: usize,
        hooks: &[WebhookConfig],
        batching: bool,
        event: Value,
        now: Instant,
    ) {
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
                        since: now,
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
    /// A channel emptied here at `when.at_ms` (wall clock; `when.now` on the loop's clock):
    /// its record waits out the grace period, then is kept (and shown to the other nodes)
    /// for `keep`. Returns `at_ms`.
    pub fn vacated(&mut self, app: usize, channel: &str, occupied_at: u64, when: Vacating) -> u64 {
        let Vacating {
            grace,
            keep,
            now,
            at_ms,
        } = when;
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
    pub fn occupy_later(&mut self, app: usize, channel: &str, at_ms: u64, due: Instant) {
        self.occupying
            .push_back((app, channel.to_string(), at_ms, due));
    }

    /// Holds a `subscription_count` event back while the channel's occupation is decided;
    /// false when none is.
    pub fn hold_count(&mut self, app: usize, channel: &str, count: usize) -> bool {
        let deciding = self.occupying.iter().any(|o| o.0 == app && o.1 == channel);
        if deciding {
            self.held_counts.insert((app, channel.to_string()), count);
        }
        deciding
    }

    /// The count held back for a channel whose occupation was just decided.
    pub fn take_held_count(&mut self, app: usize, channel: &str) -> Option<usize> {
        self.held_counts.remove(&(app, channel.to_string()))
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
        wall_ms: u64,
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
                let body = json!({ "time_ms": wall_ms, "events": chunk }).to_string();
                let signature =
                    crate::pusher::auth::webhook_signature(&secret_of(b.app), body.as_bytes());
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
    pub fn failed(
        &mut self,
        mut d: Delivery,
        reason: &str,
        settings: &WebhookSettings,
        now: Instant,
    ) {
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
        d.not_before = now + Duration::from_secs(1 << d.attempt.saturating_sub(1).min(5));
        d.attempt += 1;
        self.queue(d, settings);
    }

    /// The next delivery whose time has come.
    pub fn next_ready(&mut self, now: Instant) -> Option<Delivery> {
        let pos = self.pending.iter().position(|d| d.not_before <= now)?;
        self.pending.remove(pos)
    }

    /// Whether there is anything to seal, decide or send (the core then ticks often).
    pub fn has_work(&self) -> bool {
        self.batches.iter().any(|b| !b.events.is_empty())
            || self.undecided > 0
            || !self.occupying.is_empty()
            || !self.pending.is_empty()
    }
}

#[cfg(test)]
#[path = "webhooks_tests.rs"]
mod tests;
