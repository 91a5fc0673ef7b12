//! The debug consoles: their feed connections and the logins handed out.

/// How long a login lasts (ms).
const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;

/// The consoles: their feed connections. Logins are signed tokens, so that any loop of a
/// process checks the ones another handed out.
#[derive(Default)]
pub struct Consoles {
    feeds: Vec<usize>,
    /// Another loop of this process has a console: events are formatted for it too.
    elsewhere: bool,
}

impl Consoles {
    /// Whether a console anywhere in the process listens (events are formatted then).
    pub fn listening(&self) -> bool {
        !self.feeds.is_empty() || self.elsewhere
    }

    /// Whether a console of this loop listens.
    pub fn here(&self) -> bool {
        !self.feeds.is_empty()
    }

    pub fn elsewhere(&self) -> bool {
        self.elsewhere
    }

    pub fn set_elsewhere(&mut self, on: bool) {
        self.elsewhere = on;
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

    /// A login until `SESSION_TTL_MS` from `now_ms` (wall clock): `<expiry>.<signature>`.
    pub fn login(&mut self, now_ms: u64) -> String {
        let until = now_ms.saturating_add(SESSION_TTL_MS).to_string();
        let sig = crate::pusher::auth::sign(crate::secret::process_key(), &until);
        format!("{until}.{sig}")
    }

    pub fn valid(&self, token: &str, now_ms: u64) -> bool {
        let Some((until, sig)) = token.split_once('.') else {
            return false;
        };
        let live = until.parse::<u64>().is_ok_and(|u| u > now_ms);
        let want = crate::pusher::auth::sign(crate::secret::process_key(), until);
        crate::secret::equal(want.as_bytes(), sig.as_bytes()) && live
    }
}
