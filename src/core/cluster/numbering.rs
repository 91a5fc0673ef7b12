//! What this node waits for from Redis to number publications on channels with history
//! (`sequence.rs` is the glue with the rest of the core): the scripts, the publications sent to
//! be numbered, and the subscriptions parked until their stream's position is known.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::core::effects::LinkOp;
use crate::core::publication::Publication;

/// Numbers a publication in its channels' streams and publishes it with its positions.
/// KEYS[1]: the counter of epochs; KEYS[2..]: one stream per channel with history (a hash of
/// `epoch` and `offset`). ARGV[1]: the nodes' channel; ARGV[2]: the envelope (a JSON object);
/// ARGV[3]: how long an idle stream is kept (ms).
pub const NUMBER: &str = r#"
local at = {}
for i = 2, #KEYS do
  local epoch = redis.call('HGET', KEYS[i], 'epoch')
  if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x.%x', tonumber(t[1]), redis.call('INCR', KEYS[1]))
    redis.call('HSET', KEYS[i], 'epoch', epoch)
  end
  local offset = redis.call('HINCRBY', KEYS[i], 'offset', 1)
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
  at[#at + 1] = string.format('["%s",%d]', epoch, offset)
end
redis.call('PUBLISH', ARGV[1], '{"positions":[' .. table.concat(at, ',') .. '],' .. string.sub(ARGV[2], 2))
return #at
"#;

/// A stream's position, made when Redis holds none. KEYS as for [`NUMBER`] with one stream;
/// ARGV[1]: how long an idle stream is kept (ms). Returns `{epoch, offset}`.
pub const POSITION: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x.%x', tonumber(t[1]), redis.call('INCR', KEYS[1]))
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {epoch, tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')}
"#;

/// Sets a stream's position when Redis holds none, or holds an earlier one in the same epoch:
/// the streams a restarted process took over go on where they were, and a node that numbered
/// alone in an epoch Redis had taken from it (while Redis was away) is not numbered over.
/// KEYS[1]: the stream; ARGV: epoch, offset, how long an idle stream is kept (ms).
pub const SEED: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') or 0
if not epoch or (epoch == ARGV[1] and offset < tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'offset', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"#;

/// Reply tags of this module: above those of the heartbeat key's commands.
const FIRST_TAG: u64 = 1 << 62;
/// How long a publication or a parked subscription waits for Redis before the node goes on
/// alone (the link answers every command when it goes down; this is the last resort).
pub(super) const PATIENCE: Duration = Duration::from_secs(10);
/// Publications and subscriptions waiting for Redis, at most; past that a node numbers alone.
const MAX_WAITING: usize = 65_536;
/// An idle stream outlives its history by this much in Redis, so a client that was away
/// longer than the history lasts is still told it lost something rather than given a new
/// epoch's publications as if they followed.
pub(super) const STREAM_GRACE_MS: u64 = 24 * 3600 * 1000;

/// A publication sent to be numbered: delivered here when Redis hands it back.
struct Waiting {
    publication: Publication,
    since: Instant,
}

/// A subscription whose stream position is being read from Redis: its connection's input waits.
pub struct Parked {
    pub key: usize,
    pub conn_id: u64,
    /// The subscription request, handled again once the position is known.
    pub text: String,
    pub app: usize,
    pub channel: String,
    pub since: Instant,
}

pub struct Sequencer {
    /// `{prefix}:history:` (stream keys) and the counter of epochs.
    stream_prefix: String,
    epochs_key: Vec<u8>,
    /// The nodes' channel (the script publishes on it).
    channel: Vec<u8>,
    next_tag: u64,
    waiting: BTreeMap<u64, Waiting>,
    parked: HashMap<u64, Parked>,
    /// A Redis error was logged (once: a Redis without scripting would log it per message).
    warned: bool,
}

impl Sequencer {
    pub fn new(prefix: &str) -> Sequencer {
        Sequencer {
            stream_prefix: format!("{prefix}:history:"),
            epochs_key: format!("{prefix}:history-epochs").into_bytes(),
            channel: format!("{prefix}#broadcast").into_bytes(),
            next_tag: FIRST_TAG,
            waiting: BTreeMap::new(),
            parked: HashMap::new(),
            warned: false,
        }
    }

    /// Whether a reply tag is this module's.
    pub fn owns(tag: u64) -> bool {
        tag >= FIRST_TAG
    }

    /// A channel's stream key: the app id's length first, so no two (app, channel) pairs share
    /// one.
    fn stream_key(&self, app_id: &str, channel: &str) -> Vec<u8> {
        let p = &self.stream_prefix;
        format!("{p}{}:{app_id}:{channel}", app_id.len()).into_bytes()
    }

    /// A reply tag for the next command.
    pub fn tag(&mut self) -> u64 {
        self.next_tag = self.next_tag.wrapping_add(1).max(FIRST_TAG);
        self.next_tag
    }

    /// Whether a publication waits to be numbered (a restarting loop waits for it: it must be
    /// kept in the history it hands on).
    pub fn numbering(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether as much waits for Redis as the node lets wait.
    pub fn busy(&self) -> bool {
        self.waiting.len() + self.parked.len() >= MAX_WAITING
    }

    /// The command (under `tag`) that numbers a publication in the streams of its channels
    /// with history (`sequenced`) and publishes `envelope` with the positions. `ms`: how long
    /// Redis keeps an idle stream.
    pub fn number(
        &self,
        tag: u64,
        app_id: &str,
        sequenced: &[String],
        envelope: Vec<u8>,
        ms: u64,
    ) -> LinkOp {
        let keys = 1 + sequenced.len();
        let mut args = vec![b"EVAL".to_vec(), NUMBER.into(), keys.to_string().into()];
        args.push(self.epochs_key.clone());
        args.extend(sequenced.iter().map(|ch| self.stream_key(app_id, ch)));
        args.extend([self.channel.clone(), envelope, ms.to_string().into_bytes()]);
        LinkOp::Command { tag, args }
    }

    /// The command that seeds a stream's position (fire and forget: tag 0, the tag whose
    /// errors are only logged).
    pub fn seed(&self, app_id: &str, channel: &str, at: (&str, u64), ms: u64) -> LinkOp {
        let args = vec![
            b"EVAL".to_vec(),
            SEED.into(),
            b"1".to_vec(),
            self.stream_key(app_id, channel),
            at.0.as_bytes().to_vec(),
            at.1.to_string().into_bytes(),
            ms.to_string().into_bytes(),
        ];
        LinkOp::Command { tag: 0, args }
    }

    /// The publication sent under `tag` waits for Redis to hand it back.
    pub fn wait(&mut self, tag: u64, publication: Publication, since: Instant) {
        self.waiting.insert(tag, Waiting { publication, since });
    }

    /// The command that reads (or makes) a stream's position for `parked`, which waits for it.
    pub fn park(&mut self, app_id: &str, ms: u64, parked: Parked) -> LinkOp {
        let tag = self.tag();
        let args = vec![
            b"EVAL".to_vec(),
            POSITION.into(),
            b"2".to_vec(),
            self.epochs_key.clone(),
            self.stream_key(app_id, &parked.channel),
            ms.to_string().into_bytes(),
        ];
        self.parked.insert(tag, parked);
        LinkOp::Command { tag, args }
    }

    pub fn take_parked(&mut self, tag: u64) -> Option<Parked> {
        self.parked.remove(&tag)
    }

    pub fn take_waiting(&mut self, tag: u64) -> Option<Publication> {
        self.waiting.remove(&tag).map(|w| w.publication)
    }

    /// What has waited since `due` says: the publications (in the order they were made) and
    /// the parked subscriptions.
    /// Cheap when nothing is due (called every turn): publications wait in the order they were
    /// made, so the first one not due ends the search.
    pub fn take_due(&mut self, due: impl Fn(Instant) -> bool) -> (Vec<Publication>, Vec<Parked>) {
        let mut late = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if !due(entry.get().since) {
                break;
            }
            late.push(entry.remove().publication);
        }
        if self.parked.is_empty() {
            return (late, Vec::new());
        }
        let tags: Vec<u64> = (self.parked.iter())
            .filter(|(_, p)| due(p.since))
            .map(|(t, _)| *t)
            .collect();
        let parked = tags.iter().filter_map(|t| self.parked.remove(t)).collect();
        (late, parked)
    }

    /// True the first time only: a Redis that refuses scripts would log once per message.
    pub fn first_refusal(&mut self) -> bool {
        !std::mem::replace(&mut self.warned, true)
    }
}
