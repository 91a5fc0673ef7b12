//! The configured apps: their settings, live counters and rate limits.

use std::time::Instant;

use crate::config::{AppConfig, WebhookConfig};

/// A token bucket allowing `rate` events per second with a burst of `rate`. Rate 0 = unlimited.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: u32,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: u32, now: Instant) -> RateLimit {
        RateLimit {
            rate,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Takes `n` tokens if available.
    pub fn try_take(&mut self, n: u32, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// A configured app and its live counters.
pub struct App {
    pub cfg: AppConfig,
    /// Its webhooks and hooks as one list of targets (`AppConfig::notify_targets`).
    pub targets: Vec<WebhookConfig>,
    pub connections: usize,
    pub backend_events: RateLimit,
    pub read_requests: RateLimit,
}

pub struct Apps {
    apps: Vec<App>,
    /// Live nodes sharing the rate limits (1 without scaling).
    nodes: u32,
}

impl Apps {
    pub fn new(configs: Vec<AppConfig>, now: Instant) -> Apps {
        Apps {
            nodes: 1,
            apps: configs
                .into_iter()
                .map(|cfg| App {
                    backend_events: RateLimit::new(cfg.max_backend_events_per_second, now),
                    read_requests: RateLimit::new(cfg.max_read_requests_per_second, now),
                    connections: 0,
                    targets: cfg.notify_targets(),
                    cfg,
                })
                .collect(),
        }
    }

    /// With several nodes, each enforces its share of every app-wide rate (rounded up), so the
    /// cluster as a whole allows about the configured rate without a Redis round trip per
    /// request. Called when the number of live nodes changes.
    pub fn share_rates(&mut self, nodes: usize, now: Instant) {
        let nodes = nodes.max(1) as u32;
        self.nodes = nodes;
        for app in &mut self.apps {
            app.backend_events =
                RateLimit::new(app.cfg.max_backend_events_per_second.div_ceil(nodes), now);
            app.read_requests =
                RateLimit::new(app.cfg.max_read_requests_per_second.div_ceil(nodes), now);
        }
    }

    /// Nodes the rates are divided between.
    pub fn nodes(&self) -> usize {
        self.nodes as usize
    }

    /// Applies a reloaded configuration, keeping live counters of apps that still exist (by id).
    pub fn reload(&mut self, configs: Vec<AppConfig>, now: Instant) -> Result<(), String> {
        // Connections hold app indexes: apps may change settings but not be removed or reordered
        // while running.
        if configs.len() != self.apps.len()
            || configs
                .iter()
                .zip(&self.apps)
                .any(|(c, a)| c.id != a.cfg.id)
        {
            return Err("the list of apps changed; restart to add, remove or reorder apps".into());
        }
        for (app, cfg) in self.apps.iter_mut().zip(configs) {
            app.targets = cfg.notify_targets();
            app.cfg = cfg;
        }
        self.share_rates(self.nodes as usize, now);
        Ok(())
    }

    pub fn by_key(&self, key: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.cfg.key == key)
    }

    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.cfg.id == id)
    }

    pub fn get(&self, idx: usize) -> &App {
        &self.apps[idx]
    }

    pub fn get_mut(&mut self, idx: usize) -> &mut App {
        &mut self.apps[idx]
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limit_refills() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2, t0);
        assert!(r.try_take(1, t0));
        assert!(r.try_take(1, t0));
        assert!(!r.try_take(1, t0));
        assert!(r.try_take(1, t0 + Duration::from_millis(600)));
        let mut unlimited = RateLimit::new(0, t0);
        assert!((0..1000).all(|_| unlimited.try_take(1, t0)));
    }
}
