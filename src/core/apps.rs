//! The configured apps: their settings, live counters and rate limits.

use std::collections::HashMap;
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

/// The apps: those of the configuration file first (their indexes fixed for the life of the
/// process), then those read from the app store's table, appended as they appear. Connections
/// hold app indexes, so an app is never removed or moved: one gone from the table is disabled.
pub struct Apps {
    apps: Vec<App>,
    /// How many come from the configuration (the first ones).
    from_file: usize,
    by_key: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    /// Live nodes sharing the rate limits (1 without scaling).
    nodes: u32,
}

/// The most apps a process holds (indexes are 16 bits in the per-channel stores).
pub const MAX_APPS: usize = u16::MAX as usize;

fn app(cfg: AppConfig, now: Instant) -> App {
    App {
        backend_events: RateLimit::new(cfg.max_backend_events_per_second, now),
        read_requests: RateLimit::new(cfg.max_read_requests_per_second, now),
        connections: 0,
        targets: cfg.notify_targets(),
        cfg,
    }
}

impl Apps {
    pub fn new(configs: Vec<AppConfig>, now: Instant) -> Apps {
        let apps: Vec<App> = configs.into_iter().map(|cfg| app(cfg, now)).collect();
        let by_key = (apps.iter().enumerate())
            .map(|(i, a)| (a.cfg.key.clone(), i))
            .collect();
        let by_id = (apps.iter().enumerate())
            .map(|(i, a)| (a.cfg.id.clone(), i))
            .collect();
        Apps {
            nodes: 1,
            from_file: apps.len(),
            apps,
            by_key,
            by_id,
        }
    }

    /// Takes the app store's apps (all of its table): new ones are added, known ones get their
    /// new settings (a rotated secret, a new key), and those gone from the table are disabled.
    /// Apps of the configuration file are not touched (an id or key they use is skipped).
    /// Returns the apps this disabled (their connections are to be closed).
    pub fn sync(&mut self, stored: Vec<AppConfig>, now: Instant) -> Vec<usize> {
        let mut disabled = Vec::new();
        let mut seen = vec![false; self.apps.len()];
        for cfg in stored {
            if let Some(i) = self.take(cfg, now, &mut disabled) {
                seen.resize(self.apps.len(), false);
                seen[i] = true;
            }
        }
        seen.resize(self.apps.len(), false);
        let stored = self
            .apps
            .iter_mut()
            .zip(seen)
            .enumerate()
            .skip(self.from_file);
        for (i, (app, seen)) in stored {
            if !seen && app.cfg.enabled {
                app.cfg.enabled = false;
                disabled.push(i);
            }
        }
        self.share_rates(self.nodes as usize, now);
        disabled
    }

    /// One app read from the store (a lookup by key or id): added, or its settings changed.
    /// Returns the apps this disabled.
    pub fn upsert(&mut self, cfg: AppConfig, now: Instant) -> Vec<usize> {
        let mut disabled = Vec::new();
        if let Some(i) = self.take(cfg, now, &mut disabled) {
            let nodes = self.nodes.max(1);
            let app = &mut self.apps[i];
            app.backend_events =
                RateLimit::new(app.cfg.max_backend_events_per_second.div_ceil(nodes), now);
            app.read_requests =
                RateLimit::new(app.cfg.max_read_requests_per_second.div_ceil(nodes), now);
        }
        disabled
    }

    /// Adds or updates one stored app; its index, unless it was refused.
    fn take(&mut self, cfg: AppConfig, now: Instant, disabled: &mut Vec<usize>) -> Option<usize> {
        let id = cfg.id.clone();
        match self.by_id.get(&cfg.id).copied() {
            Some(i) if i < self.from_file => {
                log::warn!(
                    "app store: app \"{id}\" is also in the configuration file; the file's is used"
                );
                None
            }
            Some(i) if self.by_key.get(&cfg.key).is_some_and(|&j| j != i) => {
                log::warn!("app store: app \"{id}\" has the key of another app; not changed");
                Some(i)
            }
            Some(i) => {
                let old = &self.apps[i].cfg;
                if old.enabled && !cfg.enabled {
                    disabled.push(i);
                }
                if old.key != cfg.key {
                    self.by_key.remove(&old.key);
                    self.by_key.insert(cfg.key.clone(), i);
                }
                self.apps[i].targets = cfg.notify_targets();
                self.apps[i].cfg = cfg;
                Some(i)
            }
            None if self.by_key.contains_key(&cfg.key) => {
                log::warn!("app store: app \"{id}\" has the key of another app; skipped");
                None
            }
            None if self.apps.len() >= MAX_APPS => {
                log::warn!("app store: more than {MAX_APPS} apps; app \"{id}\" skipped");
                None
            }
            None => {
                let i = self.apps.len();
                self.by_key.insert(cfg.key.clone(), i);
                self.by_id.insert(id, i);
                self.apps.push(app(cfg, now));
                Some(i)
            }
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
        if configs.len() != self.from_file
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
        // Keys may have moved between apps: the index is made again.
        self.by_key = (self.apps.iter().enumerate())
            .map(|(i, a)| (a.cfg.key.clone(), i))
            .collect();
        self.share_rates(self.nodes as usize, now);
        Ok(())
    }

    pub fn by_key(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
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
#[path = "apps_tests.rs"]
mod tests;
