//! History handed from a restarting process to its successor (`ferrocast restart`), so a
//! deploy loses nothing a client could recover: every stream with its epoch, its last offset
//! and what it keeps, with each entry's age.
//!
//! Format (all integers little-endian): `FCH2`, then per stream: app u16, channel, epoch (each
//! u32 length + bytes), last u64, size u32, ttl seconds u64, entry count u32; per entry: offset
//! u64, age in ms u64, then the event's name and the plain frame (u32 length + bytes each).
//! Read with every length checked: a short or malformed snapshot is refused whole.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Entry, History, Kept, Stream};
use crate::ws::Frame;

const MAGIC: &[u8; 4] = b"FCH2";

impl History {
    /// Every stream, for the next process.
    pub fn snapshot(&self, now: Instant) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for ((app, channel), s) in &self.streams {
            out.extend_from_slice(&app.to_le_bytes());
            put_bytes(&mut out, channel.as_bytes());
            put_bytes(&mut out, s.epoch.as_bytes());
            out.extend_from_slice(&s.last.to_le_bytes());
            out.extend_from_slice(&(s.size as u32).to_le_bytes());
            out.extend_from_slice(&s.ttl.as_secs().to_le_bytes());
            out.extend_from_slice(&(s.entries.len() as u32).to_le_bytes());
            for e in &s.entries {
                let age = now.saturating_duration_since(e.at).as_millis() as u64;
                out.extend_from_slice(&e.kept.offset.to_le_bytes());
                out.extend_from_slice(&age.to_le_bytes());
                put_bytes(&mut out, e.kept.event.as_bytes());
                put_bytes(&mut out, &e.kept.plain);
            }
        }
        out
    }

    /// Takes over a predecessor's streams (into an empty history); how many.
    pub fn restore(&mut self, bytes: &[u8], now: Instant) -> Result<usize, String> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a history snapshot".into());
        }
        let mut streams = Vec::new();
        while r.at < bytes.len() {
            streams.push(read_stream(&mut r, now)?);
        }
        let count = streams.len();
        for (key, stream) in streams {
            self.bytes += stream
                .entries
                .iter()
                .map(|e| super::cost(&e.kept))
                .sum::<usize>();
            self.streams.insert(key, stream);
        }
        // The eviction order, oldest first across streams, from the entries' ages.
        self.renumber();
        Ok(count)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or("history snapshot cut short")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| "bad u16")?,
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "bad u32")?,
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "bad u64")?,
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self) -> Result<Box<str>, String> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(Box::from)
            .map_err(|_| "history snapshot: a name is not UTF-8".to_string())
    }

    fn frame(&mut self) -> Result<Frame, String> {
        Ok(self.bytes()?.into())
    }
}

fn read_stream(r: &mut Reader<'_>, now: Instant) -> Result<((u16, Box<str>), Stream), String> {
    let app = r.u16()?;
    let channel = r.text()?;
    let epoch = r.text()?;
    let last = r.u64()?;
    let size = (r.u32()? as usize).max(1);
    let ttl = Duration::from_secs(r.u64()?);
    let n = r.u32()?;
    let mut entries = VecDeque::new();
    for _ in 0..n {
        let offset = r.u64()?;
        let age = Duration::from_millis(r.u64()?);
        let event: std::rc::Rc<str> = r.text()?.into();
        let kept = Kept {
            offset,
            event,
            plain: r.frame()?,
        };
        let at = now.checked_sub(age).unwrap_or(now);
        entries.push_back(Entry { kept, at, seq: 0 });
    }
    // Numbering goes on in its epoch after a restart (the loops seed the bus with it).
    let stream = Stream {
        epoch,
        last,
        clustered: false,
        size,
        ttl,
        entries,
    };
    Ok(((app, channel), stream))
}
