//! Who watches whom: the watchlists of signed-in Pusher connections (`watchlist` in their
//! `user_data`), indexed by the user watched, so a user coming online or going offline reaches
//! its watchers without a scan. Adding and removing are O(length of the watchlist).

use std::collections::{HashMap, HashSet};

/// A connection's app and its watchlist (no duplicates).
struct Watchlist {
    app: usize,
    users: Box<[Box<str>]>,
}

#[derive(Default)]
pub struct Watchers {
    /// (app, watched user) → the connections watching them.
    by_user: HashMap<(usize, Box<str>), HashSet<usize>>,
    /// Connection → its app and its watchlist.
    by_conn: HashMap<usize, Watchlist>,
}

impl Watchers {
    /// Connection `key` of `app` watches `list` (replacing what it watched before).
    pub fn set(&mut self, key: usize, app: usize, list: Vec<String>) {
        self.forget(key);
        let mut unique: Vec<Box<str>> = Vec::with_capacity(list.len());
        for user in list {
            if !unique.iter().any(|u| **u == *user) {
                unique.push(user.into());
            }
        }
        if unique.is_empty() {
            return;
        }
        for user in &unique {
            self.by_user
                .entry((app, user.clone()))
                .or_default()
                .insert(key);
        }
        let users = unique.into_boxed_slice();
        self.by_conn.insert(key, Watchlist { app, users });
    }

    /// Connection `key` watches nothing any more (it closed, or signed in again).
    pub fn forget(&mut self, key: usize) {
        let Some(Watchlist { app, users }) = self.by_conn.remove(&key) else {
            return;
        };
        for user in users.into_vec() {
            let index = (app, user);
            if let Some(set) = self.by_user.get_mut(&index) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_user.remove(&index);
                }
            }
        }
    }

    /// The connections watching `user` of `app`.
    pub fn of(&self, app: usize, user: &str) -> impl Iterator<Item = usize> + '_ {
        self.by_user
            .get(&(app, Box::from(user)))
            .into_iter()
            .flatten()
            .copied()
    }

    /// The connections with a watchlist.
    pub fn connections(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_conn.keys().copied()
    }

    /// Connections with a watchlist, and (app, user) pairs watched: for `/metrics` and tests.
    pub fn sizes(&self) -> (usize, usize) {
        (self.by_conn.len(), self.by_user.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_indexed_both_ways_and_forgotten() {
        let mut w = Watchers::default();
        w.set(1, 0, vec!["a".into(), "b".into(), "a".into()]);
        w.set(2, 0, vec!["a".into()]);
        w.set(3, 1, vec!["a".into()]);
        let mut of_a: Vec<usize> = w.of(0, "a").collect();
        of_a.sort();
        assert_eq!(of_a, [1, 2]);
        assert_eq!(w.sizes(), (3, 3));
        w.set(1, 0, vec!["c".into()]);
        assert_eq!(w.of(0, "b").count(), 0, "replaced");
        w.forget(1);
        w.forget(2);
        w.forget(3);
        w.forget(3);
        assert_eq!(w.sizes(), (0, 0));
    }
}
