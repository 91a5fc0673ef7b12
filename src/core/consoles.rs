//! The debug consoles: their feed connections and the logins handed out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The consoles: their feed connections and the logins handed out.
#[derive(Default)]
pub struct Consoles {
    feeds: Vec<usize>,
    logins: HashMap<String, Instant>,
}

impl Consoles {
    pub fn listening(&self) -> bool {
        !self.feeds.is_empty()
    }

    pub fn add(&mut self, key: usize) {
        self.feeds.push(key);
    }

    /// The feed connections.
    pub fn feeds(&self) -> &[usize] {
        &self.feeds
    }

    pub fn remove(&mut self, key: usize) {
        self.feeds.retain(|&k| k != key);
    }

    pub fn login(&mut self, now: Instant) -> String {
        self.logins.retain(|_, until| *until > now);
        let token = crate::secret::random_token();
        self.logins.insert(token.clone(), now + SESSION_TTL);
        token
    }

    pub fn valid(&self, token: &str, now: Instant) -> bool {
        self.logins.iter().any(|(t, until)| {
            *until > now && crate::pusher::auth::secret_eq(t.as_bytes(), token.as_bytes())
        })
    }
}
