//! The channel registry (Redis's `pubsub.c`, for our protocols): which connections listen on
//! which channel of which app, who is present in presence channels, and who hears global FIFO
//! lines. The last events of cache channels live beside it, in [`CacheStore`].
//!
//! Invariants kept here and nowhere else:
//! - a subscription is recorded on both sides, each side knowing the other's position, so
//!   joining and leaving are O(1) whatever the channel's size (a mass disconnect is O(N));
//! - a channel exists exactly while it has a subscriber, and its count is its list's length;
//! - a presence member is counted once per user, however many of the user's connections are
//!   in the channel: the first connection adds the member, the last one removes it;
//! - a connection is in the global list at most once, at the position it records.

use std::collections::HashMap;

use serde_json::Value;
use slab::Slab;

use super::cache::CacheStore;

pub use super::subs::ChannelId;
use super::subs::{NO_CHANNEL, Sub, SubList};

/// `Listener::global_pos` of a connection that does not hear global lines.
const NOT_GLOBAL: u32 = u32::MAX;

/// One subscriber, as its channel records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    key: u32,
    /// Position of this subscription in the connection's own list.
    slot: u32,
}

impl Subscriber {
    /// The connection's key.
    pub fn key(self) -> usize {
        self.key as usize
    }
}

pub struct Channel {
    name: Box<str>,
    subscribers: Vec<Subscriber>,
    /// Presence channels: who is here. `None` for every other kind.
    presence: Option<Box<Presence>>,
    /// Wall-clock ms of the first subscription, where the cluster needs it to agree on who
    /// fires `channel_occupied`; 0 otherwise (read: long ago).
    occupied_at: u64,
}

/// A presence channel's members, by user id and by connection.
#[derive(Default)]
struct Presence {
    users: HashMap<Box<str>, Member>,
    by_conn: HashMap<u32, Box<str>>,
}

pub struct Member {
    pub info: Option<Value>,
    /// This channel's connections that hold the membership.
    connections: u32,
}

impl Channel {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn subscribers(&self) -> &[Subscriber] {
        &self.subscribers
    }

    pub fn count(&self) -> usize {
        self.subscribers.len()
    }

    pub fn occupied_at(&self) -> u64 {
        self.occupied_at
    }

    /// Presence members (user id, member), none for other kinds of channel.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Member)> {
        self.presence
            .iter()
            .flat_map(|p| p.users.iter().map(|(u, m)| (&**u, m)))
    }

    pub fn member_count(&self) -> Option<usize> {
        self.presence.as_ref().map(|p| p.users.len())
    }

    pub fn has_member(&self, user: &str) -> bool {
        self.presence
            .as_ref()
            .is_some_and(|p| p.users.contains_key(user))
    }
}

/// One app's channels.
#[derive(Default)]
struct Registry {
    by_name: HashMap<Box<str>, ChannelId>,
    slots: Slab<Channel>,
}

/// What the hub knows of one connection.
struct Listener {
    app: u16,
    global_pos: u32,
    subs: SubList,
}

impl Default for Listener {
    fn default() -> Listener {
        Listener {
            app: 0,
            global_pos: NOT_GLOBAL,
            subs: SubList::default(),
        }
    }
}

/// The outcome of a subscription request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The connection was already subscribed: nothing changed.
    Already(ChannelId),
    /// Newly subscribed; `created` when the channel did not exist before.
    New {
        id: ChannelId,
        created: bool,
        count: usize,
    },
}

impl Subscribed {
    pub fn id(self) -> ChannelId {
        match self {
            Subscribed::Already(id) | Subscribed::New { id, .. } => id,
        }
    }
}

/// What leaving a channel changed, for webhooks, the cluster and the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub app: usize,
    pub channel: Box<str>,
    /// Subscribers left (0 when vacated: the channel is gone).
    pub count: usize,
    pub occupied_at: u64,
    /// The presence member this was the user's last connection for.
    pub member_removed: Option<Box<str>>,
}

impl Left {
    pub fn vacated(&self) -> bool {
        self.count == 0
    }
}

pub struct Hub {
    apps: Vec<Registry>,
    /// Indexed by connection key.
    listeners: Vec<Listener>,
    global: Vec<u32>,
    cache: CacheStore,
}

impl Hub {
    pub fn new(apps: usize, cache: CacheStore) -> Hub {
        Hub {
            apps: (0..apps).map(|_| Registry::default()).collect(),
            listeners: Vec::new(),
            global: Vec::new(),
            cache,
        }
    }

    /// Room for apps added while running (read from the app store).
    pub fn ensure_apps(&mut self, apps: usize) {
        while self.apps.len() < apps {
            self.apps.push(Registry::default());
        }
    }

    pub fn cache(&self) -> &CacheStore {
        &self.cache
    }

    pub fn cache_mut(&mut self) -> &mut CacheStore {
        &mut self.cache
    }

    /// Occupied channels, all apps together.
    pub fn len(&self) -> usize {
        self.apps.iter().map(|r| r.slots.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lookup(&self, app: usize, name: &str) -> Option<ChannelId> {
        self.apps.get(app)?.by_name.get(name).copied()
    }

    pub fn channel(&self, app: usize, id: ChannelId) -> Option<&Channel> {
        self.apps.get(app)?.slots.get(id as usize)
    }

    pub fn channel_named(&self, app: usize, name: &str) -> Option<&Channel> {
        self.channel(app, self.lookup(app, name)?)
    }

    pub fn channels(&self, app: usize) -> impl Iterator<Item = &Channel> {
        self.apps
            .get(app)
            .into_iter()
            .flat_map(|r| r.slots.iter().map(|(_, c)| c))
    }

    /// Records the first channel of a new subscription in `occupied_at` (cluster webhooks).
    pub fn set_occupied_at(&mut self, app: usize, id: ChannelId, at_ms: u64) {
        if let Some(c) = self
            .apps
            .get_mut(app)
            .and_then(|r| r.slots.get_mut(id as usize))
        {
            c.occupied_at = at_ms;
        }
    }

    /// A connection's channels are those of `app` from now on (set when its protocol is known).
    pub fn attach(&mut self, key: usize, app: usize) {
        self.listener_mut(key).app = app as u16;
    }

    /// How many channels the connection is subscribed to.
    pub fn subscriptions(&self, key: usize) -> usize {
        self.listeners.get(key).map_or(0, |l| l.subs.len())
    }

    pub fn is_subscribed(&self, key: usize, id: ChannelId) -> bool {
        self.sub_index(key, id).is_some()
    }

    /// Subscribes connection `key` to `name` of its app.
    pub fn subscribe(&mut self, key: usize, name: &str) -> Subscribed {
        let l = self.listener_mut(key);
        let (app, slot) = (l.app as usize, l.subs.len());
        let registry = &mut self.apps[app];
        let existing = registry.by_name.get(name).copied();
        if let Some(id) = existing
            && self.listeners[key].subs.iter().any(|s| s.channel == id)
        {
            return Subscribed::Already(id);
        }
        let id = match existing {
            Some(id) => id,
            None => {
                let id = registry.slots.insert(Channel {
                    name: name.into(),
                    subscribers: Vec::new(),
                    presence: None,
                    occupied_at: 0,
                });
                // Four billion channels would not fit in memory first; `NO_CHANNEL` stays free.
                let id = ChannelId::try_from(id)
                    .ok()
                    .filter(|&id| id != NO_CHANNEL)
                    .expect("channel ids fit in u32");
                registry.by_name.insert(name.into(), id);
                id
            }
        };
        let subscribers = &mut registry.slots[id as usize].subscribers;
        let pos = subscribers.len() as u32;
        subscribers.push(Subscriber {
            key: key as u32,
            slot: slot as u32,
        });
        let count = subscribers.len();
        self.listeners[key].subs.push(Sub { channel: id, pos });
        Subscribed::New {
            id,
            created: existing.is_none(),
            count,
        }
    }

    /// Makes the subscribed connection `key` a presence member of channel `id` as `user`.
    /// Returns whether the user is new to the channel (its first connection there).
    pub fn add_member(
        &mut self,
        key: usize,
        id: ChannelId,
        user: &str,
        info: Option<Value>,
    ) -> bool {
        if !self.is_subscribed(key, id) {
            return false;
        }
        let app = self.listeners[key].app as usize;
        let Some(channel) = self.apps[app].slots.get_mut(id as usize) else {
            return false;
        };
        let presence = channel.presence.get_or_insert_with(Default::default);
        if presence.by_conn.contains_key(&(key as u32)) {
            return false;
        }
        presence.by_conn.insert(key as u32, user.into());
        match presence.users.get_mut(user) {
            Some(m) => {
                m.connections += 1;
                false
            }
            None => {
                presence.users.insert(
                    user.into(),
                    Member {
                        info,
                        connections: 1,
                    },
                );
                true
            }
        }
    }

    /// The presence member id connection `key` holds in channel `id`.
    pub fn member_of(&self, key: usize, id: ChannelId) -> Option<&str> {
        let app = self.listeners.get(key)?.app as usize;
        let presence = self.channel(app, id)?.presence.as_ref()?;
        presence.by_conn.get(&(key as u32)).map(|u| &**u)
    }

    /// Unsubscribes connection `key` from `name`; `None` when it was not subscribed.
    pub fn unsubscribe(&mut self, key: usize, name: &str) -> Option<Left> {
        let app = self.listeners.get(key)?.app as usize;
        let id = self.lookup(app, name)?;
        let i = self.sub_index(key, id)?;
        Some(self.remove_sub(key, i))
    }

    /// Ends everything connection `key` had here: its subscriptions (last first) and its place
    /// among the global listeners. Returns what each subscription's end changed.
    pub fn detach(&mut self, key: usize) -> Vec<Left> {
        let Some(l) = self.listeners.get(key) else {
            return Vec::new();
        };
        let mut left = Vec::with_capacity(l.subs.len());
        while let Some(i) = self.listeners[key].subs.len().checked_sub(1) {
            left.push(self.remove_sub(key, i));
        }
        self.unlisten_global(key);
        self.listeners[key] = Listener::default();
        left
    }

    /// From now on connection `key` hears global lines.
    pub fn listen_global(&mut self, key: usize) {
        let pos = self.global.len() as u32;
        let l = self.listener_mut(key);
        if l.global_pos == NOT_GLOBAL {
            l.global_pos = pos;
            self.global.push(key as u32);
        }
    }

    /// The connections that hear global lines.
    pub fn global(&self) -> impl Iterator<Item = usize> + '_ {
        self.global.iter().map(|&k| k as usize)
    }

    fn unlisten_global(&mut self, key: usize) {
        let pos = std::mem::replace(&mut self.listeners[key].global_pos, NOT_GLOBAL);
        if pos == NOT_GLOBAL {
            return;
        }
        self.global.swap_remove(pos as usize);
        if let Some(&moved) = self.global.get(pos as usize) {
            self.listeners[moved as usize].global_pos = pos;
        }
    }

    /// Checks every invariant this module keeps (for tests and fuzzing): both sides of every
    /// subscription agree, no channel is empty, names index the right channels, presence
    /// members are counted once per user, the global list and positions agree.
    pub fn audit(&self) -> Result<(), String> {
        for (key, l) in self.listeners.iter().enumerate() {
            for (slot, s) in l.subs.iter().enumerate() {
                let ch = self.apps[l.app as usize]
                    .slots
                    .get(s.channel as usize)
                    .ok_or(format!("connection {key} in a channel that is gone"))?;
                let back = ch.subscribers.get(s.pos as usize).copied();
                if back.map(|b| (b.key(), b.slot as usize)) != Some((key, slot)) {
                    return Err(format!("connection {key}: sides disagree in {}", ch.name));
                }
            }
            if l.global_pos != NOT_GLOBAL
                && self.global.get(l.global_pos as usize) != Some(&(key as u32))
            {
                return Err(format!("connection {key}: wrong global position"));
            }
        }
        for r in &self.apps {
            for (id, ch) in r.slots.iter() {
                if ch.subscribers.is_empty() || r.by_name.get(&ch.name) != Some(&(id as ChannelId))
                {
                    return Err(format!("channel {} kept empty or misnamed", ch.name));
                }
                if let Some(p) = &ch.presence {
                    let held: u32 = p.users.values().map(|m| m.connections).sum();
                    if held as usize != p.by_conn.len() {
                        return Err(format!("presence counts of {} disagree", ch.name));
                    }
                }
            }
        }
        Ok(())
    }

    /// The connections the hub knows anything of (subscriptions or global lines).
    pub fn attached(&self) -> impl Iterator<Item = usize> + '_ {
        self.listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.subs.is_empty() || l.global_pos != NOT_GLOBAL)
            .map(|(k, _)| k)
    }

    fn listener_mut(&mut self, key: usize) -> &mut Listener {
        if self.listeners.len() <= key {
            self.listeners.resize_with(key + 1, Listener::default);
        }
        &mut self.listeners[key]
    }

    /// Where the subscription to `id` is in the connection's list (from the end: the newest are
    /// there, and closing takes them from there).
    fn sub_index(&self, key: usize, id: ChannelId) -> Option<usize> {
        self.listeners.get(key)?.subs.slot_of(id)
    }

    /// Removes the connection's `i`th subscription from both sides in O(1).
    fn remove_sub(&mut self, key: usize, i: usize) -> Left {
        let l = &mut self.listeners[key];
        let app = l.app as usize;
        let Some(sub) = l.subs.swap_remove(i) else {
            unreachable!("remove_sub is given a slot of the list")
        };
        if let Some(moved) = l.subs.get(i) {
            // The connection's last subscription took slot i: its channel must know.
            let ch = &mut self.apps[app].slots[moved.channel as usize];
            ch.subscribers[moved.pos as usize].slot = i as u32;
        }
        let registry = &mut self.apps[app];
        let channel = &mut registry.slots[sub.channel as usize];
        let pos = sub.pos as usize;
        channel.subscribers.swap_remove(pos);
        if let Some(moved) = channel.subscribers.get(pos).copied() {
            // Another connection's subscription took position `pos` in the channel.
            self.listeners[moved.key()]
                .subs
                .set_pos(moved.slot as usize, pos as u32);
        }
        let member_removed = channel
            .presence
            .as_mut()
            .and_then(|p| p.remove_conn(key as u32));
        let count = channel.subscribers.len();
        let occupied_at = channel.occupied_at;
        let name = if count == 0 {
            let gone = registry.slots.remove(sub.channel as usize);
            registry.by_name.remove(&gone.name);
            gone.name
        } else {
            shrink(&mut channel.subscribers);
            channel.name.clone()
        };
        Left {
            app,
            channel: name,
            count,
            occupied_at,
            member_removed,
        }
    }
}

impl Presence {
    /// The connection leaves; returns the user when it was the user's last connection here.
    fn remove_conn(&mut self, key: u32) -> Option<Box<str>> {
        let user = self.by_conn.remove(&key)?;
        let m = self.users.get_mut(&user)?;
        m.connections -= 1;
        if m.connections > 0 {
            return None;
        }
        self.users.remove(&user);
        Some(user)
    }
}

/// Gives memory back when a channel that was large has mostly emptied.
fn shrink(subscribers: &mut Vec<Subscriber>) {
    let len = subscribers.len();
    if subscribers.capacity() > 64 && len * 4 < subscribers.capacity() {
        subscribers.shrink_to(len * 2);
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
