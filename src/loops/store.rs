//! The keys of the local bus: the part of Redis's data model the cluster layer uses (hashes,
//! sets, expiry) and the two numbering scripts, run natively. One store per process with
//! several loops; the loops reach it through `bus.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::scaling::resp::Reply;

enum Value {
    Hash(HashMap<Vec<u8>, Vec<u8>>),
    Set(HashSet<Vec<u8>>),
    Counter(i64),
}

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

/// What a command asks the bus to do besides answering: publish on a channel.
pub struct Publish {
    pub channel: Vec<u8>,
    pub payload: Vec<u8>,
}

#[derive(Default)]
pub struct Store {
    keys: HashMap<Vec<u8>, Entry>,
}

fn wrong_type() -> Reply {
    Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into())
}

fn arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn int(n: usize) -> Reply {
    Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Store {
    /// Runs one command (`args[0]` upper-cased by the caller); a publication it makes is
    /// pushed to `published`.
    pub fn run(
        &mut self,
        args: &[Vec<u8>],
        now: Instant,
        unix_secs: u64,
        published: &mut Vec<Publish>,
    ) -> Reply {
        let Some(name) = args.first() else {
            return Reply::Error("ERR empty command".into());
        };
        let rest = &args[1..];
        match name.as_slice() {
            b"DEL" => self.del(rest, now),
            b"HSET" => self.hset(rest, now),
            b"HDEL" => self.hdel(rest, now),
            b"HGETALL" => self.hgetall(rest, now),
            b"PEXPIRE" => self.pexpire(rest, now),
            b"SADD" => self.sadd(rest, now),
            b"SREM" => self.srem(rest, now),
            b"SMEMBERS" => self.smembers(rest, now),
            b"EVAL" => self.eval(rest, now, unix_secs, published),
            _ => Reply::Error(format!(
                "ERR unknown command '{}' on ferrocast's local bus",
                String::from_utf8_lossy(name)
            )),
        }
    }

    /// The live entry of a key (an expired one is dropped first).
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        if self
            .keys
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            self.keys.remove(key);
        }
        self.keys.get_mut(key)
    }

    /// Drops expired keys (once a second; reads drop them too).
    pub fn sweep(&mut self, now: Instant) {
        self.keys.retain(|_, e| e.expires.is_none_or(|t| t > now));
    }

    /// Removes a key (a dead loop's heartbeat key).
    pub fn remove(&mut self, key: &[u8]) {
        self.keys.remove(key);
    }

    /// Removes a member from a set (a dead loop from the set of nodes).
    pub fn remove_member(&mut self, key: &[u8], member: &[u8]) {
        if let Some(Entry {
            value: Value::Set(s),
            ..
        }) = self.keys.get_mut(key)
        {
            s.remove(member);
        }
    }

    fn del(&mut self, keys: &[Vec<u8>], now: Instant) -> Reply {
        if keys.is_empty() {
            return arity("del");
        }
        let mut n = 0;
        for k in keys {
            if self.live(k, now).is_some() {
                self.keys.remove(k);
                n += 1;
            }
        }
        int(n)
    }

    /// The live entry of a key, made with `fresh` when absent.
    fn entry(&mut self, key: &[u8], now: Instant, fresh: fn() -> Value) -> &mut Entry {
        self.live(key, now);
        self.keys.entry(key.to_vec()).or_insert_with(|| Entry {
            value: fresh(),
            expires: None,
        })
    }

    fn hash(&mut self, key: &[u8], now: Instant) -> Result<&mut HashMap<Vec<u8>, Vec<u8>>, Reply> {
        match &mut self.entry(key, now, || Value::Hash(HashMap::new())).value {
            Value::Hash(h) => Ok(h),
            _ => Err(wrong_type()),
        }
    }

    fn set(&mut self, key: &[u8], now: Instant) -> Result<&mut HashSet<Vec<u8>>, Reply> {
        match &mut self.entry(key, now, || Value::Set(HashSet::new())).value {
            Value::Set(s) => Ok(s),
            _ => Err(wrong_type()),
        }
    }

    /// Redis has no empty hashes or sets: one emptied by a command goes.
    fn drop_if_empty(&mut self, key: &[u8]) {
        let empty = match self.keys.get(key).map(|e| &e.value) {
            Some(Value::Hash(h)) => h.is_empty(),
            Some(Value::Set(s)) => s.is_empty(),
            _ => false,
        };
        if empty {
            self.keys.remove(key);
        }
    }

    fn hset(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        if args.len() < 3 || args.len().is_multiple_of(2) {
            return arity("hset");
        }
        let h = match self.hash(&args[0], now) {
            Ok(h) => h,
            Err(e) => return e,
        };
        let mut added = 0;
        for pair in args[1..].chunks_exact(2) {
            added += usize::from(h.insert(pair[0].clone(), pair[1].clone()).is_none());
        }
        int(added)
    }

    fn hdel(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        if args.len() < 2 {
            return arity("hdel");
        }
        if self.live(&args[0], now).is_none() {
            return Reply::Integer(0);
        }
        let h = match self.hash(&args[0], now) {
            Ok(h) => h,
            Err(e) => return e,
        };
        let n = args[1..].iter().filter(|f| h.remove(*f).is_some()).count();
        self.drop_if_empty(&args[0]);
        int(n)
    }

    fn hgetall(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        let [key] = args else {
            return arity("hgetall");
        };
        match self.live(key, now).map(|e| &e.value) {
            None => Reply::Array(Vec::new()),
            Some(Value::Hash(h)) => Reply::Array(
                h.iter()
                    .flat_map(|(f, v)| [Reply::Bulk(f.clone()), Reply::Bulk(v.clone())])
                    .collect(),
            ),
            Some(_) => wrong_type(),
        }
    }

    fn pexpire(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        let [key, ms] = args else {
            return arity("pexpire");
        };
        let Some(ms) = std::str::from_utf8(ms)
            .ok()
            .and_then(|m| m.parse::<u64>().ok())
        else {
            return Reply::Error("ERR value is not an integer or out of range".into());
        };
        match self.live(key, now) {
            Some(e) => {
                e.expires = now.checked_add(Duration::from_millis(ms));
                Reply::Integer(1)
            }
            None => Reply::Integer(0),
        }
    }

    fn sadd(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        if args.len() < 2 {
            return arity("sadd");
        }
        match self.set(&args[0], now) {
            Ok(s) => int(args[1..].iter().filter(|m| s.insert((*m).clone())).count()),
            Err(e) => e,
        }
    }

    fn srem(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        if args.len() < 2 {
            return arity("srem");
        }
        if self.live(&args[0], now).is_none() {
            return Reply::Integer(0);
        }
        let n = match self.set(&args[0], now) {
            Ok(s) => args[1..].iter().filter(|m| s.remove(*m)).count(),
            Err(e) => return e,
        };
        self.drop_if_empty(&args[0]);
        int(n)
    }

    fn smembers(&mut self, args: &[Vec<u8>], now: Instant) -> Reply {
        let [key] = args else {
            return arity("smembers");
        };
        match self.live(key, now).map(|e| &e.value) {
            None => Reply::Array(Vec::new()),
            Some(Value::Set(s)) => Reply::Array(s.iter().cloned().map(Reply::Bulk).collect()),
            Some(_) => wrong_type(),
        }
    }
}

#[path = "store_scripts.rs"]
mod scripts;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
