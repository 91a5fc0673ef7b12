//! The server's side of webhooks: noticing events, and handing signed batches to workers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::webhooks::Delivery;
use crate::core::hub::ChannelId;
use crate::jobs::JobFor;
use crate::server::Server;
use crate::worker::{Handler, Job, Outcome};

/// How long a node waits, after occupying a channel, for the other nodes to say whether they
/// held it first. Occupancy news crosses Redis in about a millisecond; this leaves room for a
/// busy node.
const OCCUPY_WINDOW: Duration = Duration::from_millis(500);

impl Server {
    /// Whether anyone listens to this app's webhooks (cheap: checked before building events).
    pub(crate) fn webhooks_on(&self, app: usize) -> bool {
        let cfg = &self.apps.get(app).cfg;
        cfg.webhooks_enabled && !cfg.webhooks.is_empty()
    }

    pub(crate) fn webhook(&mut self, app: usize, event: Value) {
        if !self.webhooks_on(app) {
            return;
        }
        let cfg = &self.apps.get(app).cfg;
        let (hooks, batching) = (cfg.webhooks.clone(), cfg.webhook_batching);
        self.webhooks.emit(app, &hooks, batching, event);
    }

    /// A channel got its first subscriber on this node.
    ///
    /// With several nodes, the cluster fires `channel_occupied` once: each node tells the others
    /// at once when it occupies a channel, waits [`OCCUPY_WINDOW`] for their word, and fires
    /// only if no node held the channel earlier (or emptied it within the grace period).
    pub(crate) fn webhook_occupied(&mut self, app: usize, id: ChannelId, channel: &str) {
        if !self.webhooks_on(app) {
            return;
        }
        let news = self.webhooks.occupied(app, channel);
        if self.scaling.is_none() {
            if news {
                self.webhook(app, json!({"name": "channel_occupied", "channel": channel}));
            }
            return;
        }
        // A quick return within the grace period keeps the earlier occupation's time.
        let at_ms = if news { crate::console::unix_ms() } else { 0 };
        self.hub.set_occupied_at(app, id, at_ms);
        self.send_occupancy(app, channel, at_ms, None);
        if news {
            self.webhooks
                .occupy_later(app, channel, at_ms, OCCUPY_WINDOW);
        }
    }

    /// A channel lost its last subscriber on this node (announced after the grace period).
    /// With several nodes the record is kept, and shown to the others, for a node timeout:
    /// long enough for every node to see who emptied the channel last.
    pub(crate) fn webhook_vacated(&mut self, app: usize, channel: &str, occupied_at: u64) {
        if self.webhooks_on(app) {
            let grace = Duration::from_millis(self.cfg.webhooks.vacate_grace_ms);
            let keep = self
                .scaling
                .as_ref()
                .map_or(Duration::ZERO, |s| s.node_timeout);
            let at_ms = self
                .webhooks
                .vacated(app, channel, occupied_at, grace, keep);
            self.send_occupancy(app, channel, occupied_at, Some(at_ms));
        }
    }

    pub(crate) fn webhook_count(&mut self, app: usize, channel: &str, count: usize) {
        if self.webhooks_on(app) {
            self.webhook(
                app,
                json!({"name": "subscription_count", "channel": channel, "subscription_count": count}),
            );
        }
    }

    /// Seals due batches and starts sending what is ready. Called every loop turn while there
    /// is webhook work.
    pub(crate) fn pump_webhooks(&mut self) {
        let now = Instant::now();
        for (app, channel, at_ms) in self.webhooks.due_occupied(now) {
            if self.first_occupation(app, &channel, at_ms) {
                self.webhook(app, json!({"name": "channel_occupied", "channel": channel}));
            }
        }
        for (app, channel, at_ms) in self.webhooks.due_vacated(now) {
            if self.hub.lookup(app, &channel).is_some() {
                self.webhooks.resolve(app, &channel, now);
                continue;
            }
            if self.remote_channel(app, &channel).0 > 0 {
                // Occupied on another node (as far as its last state says): wait. Whichever
                // node empties the channel last sends the event, so it is sent once.
                continue;
            }
            if !self.vacated_later_elsewhere(app, &channel, at_ms) {
                self.webhook(app, json!({"name": "channel_vacated", "channel": channel}));
            }
            self.webhooks.resolve(app, &channel, now);
        }
        for (app, channel) in std::mem::take(&mut self.webhooks.forgotten) {
            if let Some(scaling) = self.scaling.as_mut() {
                scaling.channel_changed(app, &channel);
            }
        }
        let settings = self.cfg.webhooks.clone();
        let apps = &self.apps;
        self.webhooks
            .seal(now, &settings, |app| apps.get(app).cfg.secret.clone());
        // Leave room for validation and routing: webhooks use at most half the workers.
        let budget = (self.cfg.max_workers / 2).max(1);
        while self.webhook_jobs < budget {
            let Some(delivery) = self.webhooks.next_ready(now) else {
                break;
            };
            self.send_webhook(delivery);
        }
    }

    fn send_webhook(&mut self, d: Delivery) {
        let app = self.apps.get(d.app);
        let Some(hook) = app.cfg.webhooks.get(d.hook) else {
            return;
        };
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("FERROCAST_WEBHOOK_KEY".to_string(), app.cfg.key.clone()),
            (
                "FERROCAST_WEBHOOK_SIGNATURE".to_string(),
                d.signature.clone(),
            ),
            (
                "FERROCAST_HTTP_TIMEOUT_SECS".to_string(),
                self.cfg.webhooks.timeout_secs.to_string(),
            ),
        ];
        let argv = if hook.url.is_empty() {
            hook.exec.clone()
        } else {
            vec![
                "/proc/self/exe".into(),
                "http-request".into(),
                "webhook".into(),
                hook.url.clone(),
            ]
        };
        env.push(("CONTENT_TYPE".into(), "application/json".into()));
        let job = Job {
            handler: Handler::Exec { argv },
            env,
            stdin: d.body.clone().into_bytes(),
            deadline: Duration::from_secs(self.cfg.webhooks.timeout_secs + 1),
            max_output: 64 * 1024,
        };
        match self
            .workers
            .submit(self.poll.registry(), job, &mut self.finished_jobs)
        {
            Ok(id) => {
                self.webhook_jobs += 1;
                self.jobs.insert(id, JobFor::Webhook(d));
                self.stats.workers_started += 1;
            }
            Err(_) => {
                let settings = self.cfg.webhooks.clone();
                self.webhooks.failed(d, "worker queue full", &settings);
            }
        }
    }

    pub(crate) fn finish_webhook(&mut self, d: Delivery, outcome: Outcome) {
        self.webhook_jobs = self.webhook_jobs.saturating_sub(1);
        let reason = match outcome {
            Outcome::Exited { code: 0, .. } => {
                self.webhooks.sent += 1;
                self.console_event(
                    "webhook",
                    None,
                    None,
                    None,
                    Some(&format!(
                        "sent a batch for app {}",
                        self.apps.get(d.app).cfg.id
                    )),
                );
                return;
            }
            Outcome::Exited { code, .. } => format!("receiver failed or refused (exit {code})"),
            Outcome::Signaled { signal, .. } => format!("sender killed by signal {signal}"),
            Outcome::TimedOut => "no answer in time".to_string(),
            Outcome::SpawnFailed(e) => e,
        };
        self.console_event(
            "webhook",
            None,
            None,
            None,
            Some(&format!("failed: {reason}")),
        );
        let settings = self.cfg.webhooks.clone();
        self.webhooks.failed(d, &reason, &settings);
    }
}
