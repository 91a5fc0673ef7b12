//! What crosses between nodes through Redis: one JSON envelope per message, its origin node
//! inside, so a node ignores its own.

use serde::{Deserialize, Serialize};

use super::replica;

/// What crosses between nodes. `node` is the origin, so a node ignores its own messages.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub node: String,
    /// App id (not index: nodes may list apps in another order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// A publication's positions in its channels' streams, one per name of its `sequenced`
    /// list, as `[epoch, offset]`: Redis numbers it (`sequence.rs`), putting this field first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<(String, u64)>,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// An event on channels, as one publication (FIFO line, REST, internal broadcast,
    /// console). `channel` with one name is accepted from nodes of earlier versions.
    Publish {
        #[serde(alias = "channel", deserialize_with = "one_or_many")]
        channels: Vec<String>,
        event: String,
        data: String,
        /// The socket id to leave out: it may live on any node, whichever node the event entered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
        /// The channels with history, which Redis numbers (`sequence.rs`); empty for a
        /// publication delivered on its origin at once.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sequenced: Vec<String>,
        /// The origin's tag for a numbered publication: it knows its own when it comes back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A FIFO line for every raw and channel client.
    Global { line: String },
    /// A client event, already in its final JSON form.
    Frame { channel: String, text: String },
    /// A user's first connection to a presence channel on the origin node, or its last one left.
    Presence {
        channel: String,
        user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<serde_json::Value>,
        joined: bool,
    },
    /// The origin's whole channel state, as of its state number `seq`.
    State {
        channels: Vec<replica::StateEntry>,
        #[serde(default)]
        seq: u64,
    },
    /// The origin's channels that changed since state number `seq - 1`.
    Delta {
        seq: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<replica::StateEntry>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<replica::ChannelRef>,
    },
    /// "Still here, at state number `seq`", every [`replica::STATE_EVERY`] without changes.
    Heartbeat { seq: u64 },
    /// "Send your full state": to every node (`to` empty: a node that just (re)connected) or
    /// to one whose changes this node cannot apply (it missed one).
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// A channel got its first subscriber on the origin (at `occupied_at`), or lost its last
    /// one (at `vacated_at`); times are the origin's wall clock in ms. Sent at once so the
    /// nodes agree on who fires `channel_occupied` and `channel_vacated`.
    Occupancy {
        channel: String,
        occupied_at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vacated_at: Option<u64>,
    },
    /// REST terminate_connections: every node closes that user's signed-in connections.
    Terminate { user_id: String },
    /// A line for every connection of a validated user, read from the user's FIFO (or a
    /// routed reply to one) on the origin.
    User { user_id: String, text: String },
    /// The origin is gone (a loop that died, said by its supervisor): its members leave now
    /// rather than when it falls silent for `node_timeout_secs`.
    Gone,
}

/// A channel list sent as an array, or as one name.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Names::deserialize(d)? {
        Names::One(name) => vec![name],
        Names::Many(names) => names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip() {
        let e = Envelope {
            node: "a".into(),
            app: Some("app-id".into()),
            body: Body::Publish {
                channels: vec!["c".into(), "d".into()],
                event: "e".into(),
                data: "{\"x\":1}".into(),
                except: Some("1.2".into()),
                sequenced: Vec::new(),
                id: None,
            },
            positions: Vec::new(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"kind\":\"publish\""), "{text}");
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), e);
        let g: Envelope =
            serde_json::from_str(r#"{"node":"b","kind":"global","line":"hi"}"#).unwrap();
        assert_eq!(g.body, Body::Global { line: "hi".into() });
        let old: Envelope = serde_json::from_str(
            r#"{"node":"b","kind":"publish","channel":"c","event":"e","data":"d"}"#,
        )
        .unwrap();
        assert!(matches!(old.body, Body::Publish { channels, .. } if channels == ["c"]));
    }
}
