//! Redis as the simulated node sees it, for channel history across nodes: the streams the
//! numbering scripts keep, and the commands waiting for their answer (answered in order, like
//! one connection).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ferrocast::core::LinkOp;
use ferrocast::core::cluster::numbering::SEED;
use ferrocast::scaling::resp::Reply;

pub struct Redis {
    pub up: bool,
    /// Commands waiting for their answer, with when they were sent.
    queue: VecDeque<(u64, Vec<Vec<u8>>, Instant)>,
    /// Stream key → (epoch, last offset).
    streams: HashMap<Vec<u8>, (String, u64)>,
    epochs: u64,
}

/// What Redis does with the next command.
pub enum Answer {
    /// The numbering script ran: `message` went to every node (this one included).
    Numbered { tag: u64, message: Vec<u8> },
    /// The position script's reply.
    Position { tag: u64, reply: Reply },
}

/// A command of the numbering script: its tag and the envelope it carries.
pub struct Numbering {
    pub tag: u64,
    pub envelope: serde_json::Value,
}

impl Redis {
    pub fn new() -> Redis {
        Redis {
            up: false,
            queue: VecDeque::new(),
            streams: HashMap::new(),
            epochs: 0,
        }
    }

    /// A command for the link: scripts wait in line; the rest (heartbeat keys) is not modelled.
    pub fn take(&mut self, op: LinkOp, now: Instant) {
        if let LinkOp::Command { tag, args } = op
            && args.first().is_some_and(|a| a == b"EVAL")
        {
            self.queue.push_back((tag, args, now));
        }
    }

    pub fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The numbering commands sent `patience` or longer before `now`, in order, forgotten: the
    /// node went on without their answer. A zero `patience` forgets every command (Redis went
    /// away).
    pub fn forget(&mut self, now: Instant, patience: Duration) -> Vec<Numbering> {
        let mut gone = Vec::new();
        while let Some((tag, args, at)) = self.queue.front() {
            if now.saturating_duration_since(*at) < patience {
                break;
            }
            gone.extend(numbering(*tag, args));
            self.queue.pop_front();
        }
        gone
    }

    /// The next command, if it is a numbering one (to learn what it delivers before it runs).
    pub fn peek(&self) -> Option<Numbering> {
        let (tag, args, _) = self.queue.front()?;
        numbering(*tag, args)
    }

    pub fn skip(&mut self) -> Option<u64> {
        self.queue.pop_front().map(|(tag, _, _)| tag)
    }

    /// Runs the next command as Redis would.
    pub fn answer(&mut self) -> Option<Answer> {
        let (tag, args, _) = self.queue.pop_front()?;
        // A loop on the bus seeds the positions it holds: taken when the bus holds none, or an
        // earlier one in that epoch.
        if args.get(1).is_some_and(|s| s == SEED.as_bytes()) {
            let (key, epoch, offset) = (args.get(3)?, args.get(4)?, args.get(5)?);
            let epoch = String::from_utf8_lossy(epoch).into_owned();
            let offset: u64 = std::str::from_utf8(offset).ok()?.parse().ok()?;
            let taken = match self.streams.get(key) {
                None => true,
                Some((e, o)) => *e == epoch && *o < offset,
            };
            if taken {
                self.streams.insert(key.clone(), (epoch, offset));
            }
            let reply = Reply::Integer(i64::from(taken));
            return Some(Answer::Position { tag, reply });
        }
        let nkeys: usize = std::str::from_utf8(&args[2]).ok()?.parse().ok()?;
        let keys = &args[4..3 + nkeys];
        if args[1].windows(7).any(|w| w == b"PUBLISH") {
            let envelope = &args[3 + nkeys + 1];
            let at = self.number(keys);
            let mut message = format!("{{\"positions\":[{}],", at.join(",")).into_bytes();
            message.extend_from_slice(&envelope[1..]);
            return Some(Answer::Numbered { tag, message });
        }
        let (epoch, offset) = self.stream(&keys[0]).clone();
        let reply = Reply::Array(vec![
            Reply::Bulk(epoch.into_bytes()),
            Reply::Integer(offset as i64),
        ]);
        Some(Answer::Position { tag, reply })
    }

    /// The next offset of each stream, as `["epoch",offset]`.
    pub fn number(&mut self, keys: &[Vec<u8>]) -> Vec<String> {
        (keys.iter())
            .map(|k| {
                let s = self.stream(k);
                s.1 += 1;
                format!("[\"{}\",{}]", s.0, s.1)
            })
            .collect()
    }

    fn stream(&mut self, key: &[u8]) -> &mut (String, u64) {
        if !self.streams.contains_key(key) {
            self.epochs += 1;
            let epoch = format!("6000000.{:x}", self.epochs);
            self.streams.insert(key.to_vec(), (epoch, 0));
        }
        self.streams.get_mut(key).expect("made above")
    }
}

fn numbering(tag: u64, args: &[Vec<u8>]) -> Option<Numbering> {
    if !args.get(1)?.windows(7).any(|w| w == b"PUBLISH") {
        return None;
    }
    let nkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
    let envelope = serde_json::from_slice(args.get(3 + nkeys + 1)?).ok()?;
    Some(Numbering { tag, envelope })
}

/// A stream key as the node makes it.
pub fn stream_key(channel: &str) -> Vec<u8> {
    format!("ferrocast:history:6:app-id:{channel}").into_bytes()
}
