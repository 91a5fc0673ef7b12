//! The cluster's two numbering scripts (`core/cluster/numbering.rs`), run natively: the bus
//! has no Lua, and it knows the only scripts its loops send. Each runs whole before the next
//! command, as a script does in Redis.

use std::time::{Duration, Instant};

use super::{Entry, Publish, Store, Value, arity};
use crate::core::cluster::numbering::{NUMBER, POSITION, SEED};
use crate::scaling::resp::Reply;

impl Store {
    pub(super) fn eval(
        &mut self,
        args: &[Vec<u8>],
        now: Instant,
        unix_secs: u64,
        published: &mut Vec<Publish>,
    ) -> Reply {
        let Some((script, rest)) = args.split_first() else {
            return arity("eval");
        };
        let Some((nkeys, rest)) = rest.split_first() else {
            return arity("eval");
        };
        let Some(nkeys) = std::str::from_utf8(nkeys)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= rest.len())
        else {
            return Reply::Error("ERR Number of keys can't be greater than number of args".into());
        };
        let (keys, argv) = rest.split_at(nkeys);
        if script.as_slice() == NUMBER.as_bytes() {
            self.number(keys, argv, now, unix_secs, published)
        } else if script.as_slice() == POSITION.as_bytes() {
            self.position(keys, argv, now, unix_secs)
        } else if script.as_slice() == SEED.as_bytes() {
            self.seed(keys, argv, now)
        } else {
            Reply::Error("ERR ferrocast's local bus runs only the cluster's own scripts".into())
        }
    }

    /// A stream's epoch, made (from the clock and the epoch counter) when it has none.
    fn epoch(&mut self, counter: &[u8], stream: &[u8], now: Instant, unix_secs: u64) -> String {
        if let Some(Entry {
            value: Value::Hash(h),
            ..
        }) = self.live(stream, now)
            && let Some(e) = h.get(b"epoch".as_slice())
        {
            return String::from_utf8_lossy(e).into_owned();
        }
        let entry = self.entry(counter, now, || Value::Counter(0));
        let n = match &mut entry.value {
            Value::Counter(n) => {
                *n = n.saturating_add(1);
                *n
            }
            other => {
                *other = Value::Counter(1);
                1
            }
        };
        let epoch = format!("{unix_secs:x}.{n:x}");
        let entry = self.stream(stream, now);
        if let Value::Hash(h) = &mut entry.value {
            h.insert(b"epoch".to_vec(), epoch.clone().into_bytes());
        }
        epoch
    }

    /// A stream's hash, made empty when absent (or of another kind, which only a foreign
    /// writer could have left).
    fn stream(&mut self, key: &[u8], now: Instant) -> &mut Entry {
        let fresh = || Value::Hash(Default::default());
        let entry = self.entry(key, now, fresh);
        if !matches!(entry.value, Value::Hash(_)) {
            entry.value = fresh();
        }
        entry
    }

    fn offset(entry: &Entry) -> i64 {
        match &entry.value {
            Value::Hash(h) => h
                .get(b"offset".as_slice())
                .and_then(|o| std::str::from_utf8(o).ok()?.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    fn keep(entry: &mut Entry, ms: &[u8], now: Instant) {
        let ms = std::str::from_utf8(ms)
            .ok()
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(0);
        entry.expires = now.checked_add(Duration::from_millis(ms));
    }

    /// [`NUMBER`]: the next offset in every stream, then the envelope published with them.
    fn number(
        &mut self,
        keys: &[Vec<u8>],
        argv: &[Vec<u8>],
        now: Instant,
        unix_secs: u64,
        published: &mut Vec<Publish>,
    ) -> Reply {
        let ([counter, streams @ ..], [channel, envelope, ms, ..]) = (keys, argv) else {
            return arity("eval");
        };
        let Some(body) = envelope.strip_prefix(b"{") else {
            return Reply::Error("ERR the envelope is not a JSON object".into());
        };
        let mut at = Vec::with_capacity(streams.len());
        for stream in streams {
            let epoch = self.epoch(counter, stream, now, unix_secs);
            let entry = self.stream(stream, now);
            let offset = Self::offset(entry).saturating_add(1);
            if let Value::Hash(h) = &mut entry.value {
                h.insert(b"offset".to_vec(), offset.to_string().into_bytes());
            }
            Self::keep(entry, ms, now);
            at.push(format!("[\"{epoch}\",{offset}]"));
        }
        let mut payload = format!("{{\"positions\":[{}],", at.join(",")).into_bytes();
        payload.extend_from_slice(body);
        published.push(Publish {
            channel: channel.clone(),
            payload,
        });
        Reply::Integer(i64::try_from(at.len()).unwrap_or(i64::MAX))
    }

    /// [`POSITION`]: a stream's epoch (made when absent) and its offset.
    fn position(
        &mut self,
        keys: &[Vec<u8>],
        argv: &[Vec<u8>],
        now: Instant,
        unix_secs: u64,
    ) -> Reply {
        let ([counter, stream, ..], [ms, ..]) = (keys, argv) else {
            return arity("eval");
        };
        let epoch = self.epoch(counter, stream, now, unix_secs);
        let entry = self.stream(stream, now);
        Self::keep(entry, ms, now);
        let offset = Self::offset(entry);
        Reply::Array(vec![
            Reply::Bulk(epoch.into_bytes()),
            Reply::Integer(offset),
        ])
    }

    /// [`SEED`]: a stream's position, set only when the stream is unknown.
    fn seed(&mut self, keys: &[Vec<u8>], argv: &[Vec<u8>], now: Instant) -> Reply {
        let ([stream, ..], [epoch, offset, ms, ..]) = (keys, argv) else {
            return arity("eval");
        };
        if let Some(Entry {
            value: Value::Hash(h),
            ..
        }) = self.live(stream, now)
        {
            let number = |v: Option<&Vec<u8>>| {
                let text = v.and_then(|v| std::str::from_utf8(v).ok());
                text.and_then(|t| t.parse::<u64>().ok())
            };
            let behind = h.get(b"epoch".as_slice()) == Some(epoch)
                && number(h.get(b"offset".as_slice())).unwrap_or(0)
                    < number(Some(offset)).unwrap_or(0);
            if !behind {
                return Reply::Integer(0);
            }
        }
        let entry = self.stream(stream, now);
        if let Value::Hash(h) = &mut entry.value {
            h.insert(b"epoch".to_vec(), epoch.clone());
            h.insert(b"offset".to_vec(), offset.clone());
        }
        Self::keep(entry, ms, now);
        Reply::Integer(1)
    }
}
