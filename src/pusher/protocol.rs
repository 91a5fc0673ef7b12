//! Pusher Channels protocol v7 messages: what clients send and the exact JSON the server sends.
//!
//! The server's `data` fields are JSON *strings* wherever Pusher sends strings
//! (`connection_established`, `subscription_succeeded`, member events, published events),
//! because pusher-js parses them a second time.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Error codes of the protocol, in one place.
pub mod code {
    pub const APP_NOT_FOUND: u16 = 4001;
    pub const APP_DISABLED: u16 = 4003;
    pub const OVER_QUOTA: u16 = 4004;
    pub const PATH_NOT_FOUND: u16 = 4005;
    pub const INVALID_VERSION: u16 = 4006;
    pub const UNSUPPORTED_VERSION: u16 = 4007;
    pub const NO_VERSION: u16 = 4008;
    pub const UNAUTHORIZED: u16 = 4009;
    pub const OVER_CAPACITY: u16 = 4100;
    pub const RECONNECT: u16 = 4200;
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    pub const CLOSED_AFTER_INACTIVITY: u16 = 4202;
    pub const CLIENT_EVENT_RATE: u16 = 4301;
}

/// Protocol versions whose framing we speak (pusher-js 8 sends 7).
pub const MIN_PROTOCOL: u32 = 5;
pub const MAX_PROTOCOL: u32 = 7;

/// A message from a client, borrowed from the frame.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Ping,
    Pong,
    Subscribe {
        channel: String,
        auth: Option<String>,
        /// The raw string the client signed; presence member data.
        channel_data: Option<String>,
        /// ferrocast's additions (`clients/js/ferrocast-recovery.js`).
        resume: Resume,
    },
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    /// `client-*` event to forward.
    ClientEvent {
        event: Cow<'a, str>,
        channel: String,
        data: &'a RawValue,
    },
    /// Anything else the server does not act on (logged at debug).
    Other(Cow<'a, str>),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    channel: Option<String>,
}

#[derive(Deserialize, Default)]
struct SubscribeData {
    channel: Option<String>,
    auth: Option<String>,
    channel_data: Option<String>,
    #[serde(default)]
    positions: bool,
    recover: Option<RecoverData>,
}

#[derive(Deserialize)]
struct RecoverData {
    epoch: String,
    offset: u64,
}

/// What a subscribe adds for channel history: positions with every event, and where the
/// client left off.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    pub positions: bool,
    pub recover: Option<(String, u64)>,
}

#[derive(Deserialize, Default)]
struct SigninData {
    auth: Option<String>,
    user_data: Option<String>,
}

/// pusher-js sends `data` as an object; some clients send it as a JSON string of one.
fn data_object<T: for<'de> Deserialize<'de> + Default>(
    data: Option<&RawValue>,
) -> Result<T, String> {
    let Some(raw) = data else {
        return Ok(T::default());
    };
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
        serde_json::from_str(&inner).map_err(|e| format!("data: {e}"))
    } else {
        serde_json::from_str(text).map_err(|e| format!("data: {e}"))
    }
}

pub fn parse(text: &str) -> Result<ClientMessage<'_>, String> {
    let env: Envelope =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON message: {e}"))?;
    match env.event.as_ref() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:pong" => Ok(ClientMessage::Pong),
        "pusher:subscribe" => {
            let d: SubscribeData = data_object(env.data)?;
            let resume = Resume {
                positions: d.positions,
                recover: d.recover.map(|r| (r.epoch, r.offset)),
            };
            Ok(ClientMessage::Subscribe {
                channel: d.channel.ok_or("pusher:subscribe needs data.channel")?,
                auth: d.auth,
                channel_data: d.channel_data,
                resume,
            })
        }
        "pusher:unsubscribe" => {
            let d: SubscribeData = data_object(env.data)?;
            Ok(ClientMessage::Unsubscribe {
                channel: d.channel.ok_or("pusher:unsubscribe needs data.channel")?,
            })
        }
        "pusher:signin" => {
            let d: SigninData = data_object(env.data)?;
            Ok(ClientMessage::Signin {
                auth: d.auth.ok_or("pusher:signin needs data.auth")?,
                user_data: d.user_data.ok_or("pusher:signin needs data.user_data")?,
            })
        }
        e if e.starts_with("client-") => {
            let channel = env.channel.ok_or("client events need a channel")?;
            let data = env.data.ok_or("client events need data")?;
            // The data is forwarded as the client wrote it, so it must be JSON every receiver
            // accepts: RawValue checks syntax but not number ranges (1e999 is not a number).
            serde_json::from_str::<Value>(data.get())
                .map_err(|e| format!("client event data is not valid JSON: {e}"))?;
            Ok(ClientMessage::ClientEvent {
                event: env.event,
                channel,
                data,
            })
        }
        _ => Ok(ClientMessage::Other(env.event)),
    }
}

pub fn connection_established(socket_id: &str, activity_timeout: u64) -> String {
    let data = json!({"socket_id": socket_id, "activity_timeout": activity_timeout}).to_string();
    json!({"event": "pusher:connection_established", "data": data}).to_string()
}

pub fn error(code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

pub fn pong() -> &'static str {
    r#"{"event":"pusher:pong","data":{}}"#
}

pub fn ping() -> &'static str {
    r#"{"event":"pusher:ping","data":{}}"#
}

pub fn subscription_succeeded(channel: &str, presence: Option<&Value>) -> String {
    let data = match presence {
        Some(p) => json!({ "presence": p }).to_string(),
        None => "{}".to_string(),
    };
    json!({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data})
        .to_string()
}

pub fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> String {
    json!({
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": kind, "error": message, "status": status}
    })
    .to_string()
}

pub fn signin_success(user_data: &str) -> String {
    json!({"event": "pusher:signin_success", "data": {"user_data": user_data}}).to_string()
}

/// `pusher_internal:watchlist_events` (pusher-js: `pusher.user.watchlist.bind("online", …)`):
/// one event per non-empty list.
pub fn watchlist_events(online: &[&str], offline: &[&str]) -> String {
    let events: Vec<Value> = [("online", online), ("offline", offline)]
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(name, ids)| json!({"name": name, "user_ids": ids}))
        .collect();
    let data = json!({ "events": events }).to_string();
    json!({"event": "pusher_internal:watchlist_events", "data": data}).to_string()
}

/// ferrocast's history for Pusher clients running `clients/js/ferrocast-recovery.js`: where a
/// channel's stream is. `next`: the event that follows has this offset; `at`: everything up to
/// this offset was given. A `pusher_internal:` event, so pusher-js hands it to no callback.
pub fn position(channel: &str, epoch: &str, kind: &str, offset: u64) -> String {
    let data = json!({ "epoch": epoch, kind: offset }).to_string();
    json!({"event": "pusher_internal:ferrocast_position", "channel": channel, "data": data})
        .to_string()
}

/// The channel's `ferrocast:recovery_failed` event: what the client missed cannot be given;
/// `at` is where the stream is now (reload, then carry on from there).
pub fn recovery_failed(channel: &str, at: Option<(&str, u64)>) -> String {
    let data = match at {
        Some((epoch, offset)) => json!({ "epoch": epoch, "offset": offset }),
        None => json!({}),
    };
    event(
        "ferrocast:recovery_failed",
        channel,
        &data.to_string(),
        None,
    )
}

pub fn member_added(channel: &str, user_id: &str, user_info: Option<&Value>) -> String {
    let mut data = json!({ "user_id": user_id });
    if let Some(info) = user_info {
        data["user_info"] = info.clone();
    }
    json!({"event": "pusher_internal:member_added", "channel": channel, "data": data.to_string()})
        .to_string()
}

pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = json!({ "user_id": user_id }).to_string();
    json!({"event": "pusher_internal:member_removed", "channel": channel, "data": data}).to_string()
}

pub fn cache_miss(channel: &str) -> String {
    json!({"event": "pusher:cache_miss", "channel": channel, "data": "{}"}).to_string()
}

/// A published event as subscribers receive it; `data` is sent as a string.
pub fn event(event: &str, channel: &str, data: &str, user_id: Option<&str>) -> String {
    let mut v = json!({"event": event, "channel": channel, "data": data});
    if let Some(u) = user_id {
        v["user_id"] = Value::String(u.to_string());
    }
    v.to_string()
}

/// A client event forwarded as the client sent its data (object or string), as Pusher does.
pub fn client_event(event: &str, channel: &str, data: &RawValue, user_id: Option<&str>) -> String {
    let mut out = String::with_capacity(data.get().len() + event.len() + channel.len() + 48);
    out.push_str("{\"event\":");
    out.push_str(&Value::String(event.to_string()).to_string());
    out.push_str(",\"channel\":");
    out.push_str(&Value::String(channel.to_string()).to_string());
    out.push_str(",\"data\":");
    out.push_str(data.get());
    if let Some(u) = user_id {
        out.push_str(",\"user_id\":");
        out.push_str(&Value::String(u.to_string()).to_string());
    }
    out.push('}');
    out
}

/// The kinds of channel, by name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    Presence,
    Encrypted,
    /// `#server-to-user-{id}`: only that signed-in user.
    ServerToUser,
}

pub fn channel_kind(name: &str) -> ChannelKind {
    let base = name.strip_prefix("cache-").unwrap_or(name);
    if name.starts_with("#server-to-user-") {
        ChannelKind::ServerToUser
    } else if base.starts_with("private-encrypted-") {
        ChannelKind::Encrypted
    } else if base.starts_with("private-") {
        ChannelKind::Private
    } else if base.starts_with("presence-") {
        ChannelKind::Presence
    } else {
        ChannelKind::Public
    }
}

/// `cache-`, `private-cache-`, `presence-cache-`, `private-encrypted-cache-` replay their last event.
pub fn is_cache_channel(name: &str) -> bool {
    name.starts_with("cache-")
        || name.starts_with("private-cache-")
        || name.starts_with("presence-cache-")
        || name.starts_with("private-encrypted-cache-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_frames() {
        assert_eq!(
            connection_established("123.456", 120),
            r#"{"data":"{\"activity_timeout\":120,\"socket_id\":\"123.456\"}","event":"pusher:connection_established"}"#
        );
        assert_eq!(
            subscription_succeeded("my-channel", None),
            r#"{"channel":"my-channel","data":"{}","event":"pusher_internal:subscription_succeeded"}"#
        );
        let presence = json!({"ids":["1"],"hash":{"1":{"name":"a"}},"count":1});
        assert_eq!(
            subscription_succeeded("presence-x", Some(&presence)),
            r#"{"channel":"presence-x","data":"{\"presence\":{\"count\":1,\"hash\":{\"1\":{\"name\":\"a\"}},\"ids\":[\"1\"]}}","event":"pusher_internal:subscription_succeeded"}"#
        );
        assert_eq!(
            error(Some(4001), "App key k does not exist"),
            r#"{"data":{"code":4001,"message":"App key k does not exist"},"event":"pusher:error"}"#
        );
        assert_eq!(
            member_removed("presence-x", "7"),
            r#"{"channel":"presence-x","data":"{\"user_id\":\"7\"}","event":"pusher_internal:member_removed"}"#
        );
        assert_eq!(
            event("e", "c", "{\"a\":1}", None),
            r#"{"channel":"c","data":"{\"a\":1}","event":"e"}"#
        );
        let raw: Box<RawValue> = serde_json::from_str(r#"{"typing":true}"#).unwrap();
        assert_eq!(
            client_event("client-t", "private-c", &raw, Some("u1")),
            r#"{"event":"client-t","channel":"private-c","data":{"typing":true},"user_id":"u1"}"#
        );
    }

    #[test]
    fn parses_client_messages() {
        match parse(r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel":"private-a","channel_data":"{\"user_id\":1}"}}"#).unwrap() {
            ClientMessage::Subscribe { channel, auth, channel_data, .. } => {
                assert_eq!(channel, "private-a");
                assert_eq!(auth.as_deref(), Some("k:s"));
                assert_eq!(channel_data.as_deref(), Some("{\"user_id\":1}"));
            }
            other => panic!("{other:?}"),
        }
        // data as a JSON string (older clients)
        assert!(matches!(
            parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#).unwrap(),
            ClientMessage::Subscribe { .. }
        ));
        assert!(matches!(
            parse(r#"{"event":"pusher:ping","data":{}}"#).unwrap(),
            ClientMessage::Ping
        ));
        assert!(matches!(
            parse(r#"{"event":"client-x","channel":"private-a","data":{"k":1}}"#).unwrap(),
            ClientMessage::ClientEvent { .. }
        ));
        assert!(parse("nope").is_err());
        assert!(parse(r#"{"event":"pusher:subscribe","data":{}}"#).is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(channel_kind("orders"), ChannelKind::Public);
        assert_eq!(channel_kind("private-a"), ChannelKind::Private);
        assert_eq!(channel_kind("private-cache-a"), ChannelKind::Private);
        assert_eq!(channel_kind("presence-a"), ChannelKind::Presence);
        assert_eq!(channel_kind("private-encrypted-a"), ChannelKind::Encrypted);
        assert_eq!(channel_kind("#server-to-user-5"), ChannelKind::ServerToUser);
        assert!(is_cache_channel("cache-a"));
        assert!(is_cache_channel("presence-cache-a"));
        assert!(!is_cache_channel("private-a"));
    }
}
