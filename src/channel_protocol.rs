//! The simple channel protocol of cadsock and FrankenPHP realtime:
//! `{"action":"subscribe"|"unsubscribe","channel":NAME}` in, the published payload out.

use serde::Deserialize;
use serde_json::json;

use crate::channels::valid_name;

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Subscribe(String),
    Unsubscribe(String),
    Ping,
}

/// What a subscribe may add (channel history): where the client left off, and whether it wants
/// the position of every message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `"recover": {"epoch": …, "offset": …}`.
    pub recover: Option<(String, u64)>,
    /// `"positions": true`: messages come as `{"event":"message",…,"epoch":…,"offset":…}`.
    pub positions: bool,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    action: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<std::borrow::Cow<'a, str>>,
    recover: Option<serde_json::Value>,
    positions: Option<bool>,
}

/// Parses one client message; the error is the text sent back in `{"event":"error"}`.
pub fn parse(text: &str) -> Result<Request, String> {
    parse_with_options(text).map(|(request, _)| request)
}

/// [`parse`], with what a subscribe adds.
pub fn parse_with_options(text: &str) -> Result<(Request, Options), String> {
    let wire: Wire = serde_json::from_str(text).map_err(|_| {
        "messages must be JSON objects like {\"action\":\"subscribe\",\"channel\":\"news\"}"
            .to_string()
    })?;
    let options = Options {
        recover: wire.recover.as_ref().map(recover_position).transpose()?,
        positions: wire.positions.unwrap_or(false),
    };
    parse_wire(wire).map(|request| (request, options))
}

/// `{"epoch": "…", "offset": N}`.
fn recover_position(v: &serde_json::Value) -> Result<(String, u64), String> {
    let epoch = v
        .get("epoch")
        .and_then(|e| e.as_str())
        .filter(|e| e.len() <= 64);
    let offset = v.get("offset").and_then(|o| o.as_u64());
    match (epoch, offset) {
        (Some(e), Some(o)) => Ok((e.to_string(), o)),
        _ => Err("\"recover\" needs {\"epoch\": a string of up to 64 characters, \"offset\": a whole number}".into()),
    }
}

fn parse_wire(wire: Wire<'_>) -> Result<Request, String> {
    let action = wire.action.ok_or("missing \"action\"")?;
    let channel = || -> Result<String, String> {
        let name = wire.channel.as_deref().ok_or("missing \"channel\"")?;
        if !valid_name(name) {
            return Err(format!(
                "invalid channel name \"{}\": use 1-200 characters of A-Z a-z 0-9 _ - = @ , . ;",
                name.chars().take(210).collect::<String>()
            ));
        }
        Ok(name.to_string())
    };
    match action.as_ref() {
        "subscribe" => Ok(Request::Subscribe(channel()?)),
        "unsubscribe" => Ok(Request::Unsubscribe(channel()?)),
        "ping" => Ok(Request::Ping),
        other => Err(format!(
            "unknown action \"{}\": expected subscribe, unsubscribe or ping",
            other.chars().take(64).collect::<String>()
        )),
    }
}

pub fn subscribed(channel: &str, socket_id: &str) -> String {
    json!({"event": "subscribed", "channel": channel, "socket_id": socket_id}).to_string()
}

pub fn unsubscribed(channel: &str) -> String {
    json!({"event": "unsubscribed", "channel": channel}).to_string()
}

pub fn pong(socket_id: &str) -> String {
    json!({"event": "pong", "socket_id": socket_id}).to_string()
}

/// The answer to a subscribe on a channel with history: where its stream is, and for a
/// `recover`, whether everything missed was given (just before this).
pub fn subscribed_at(
    channel: &str,
    socket_id: &str,
    position: Option<(&str, u64)>,
    recovered: Option<bool>,
) -> String {
    let mut v = json!({"event": "subscribed", "channel": channel, "socket_id": socket_id});
    if let Some((epoch, offset)) = position {
        v["epoch"] = json!(epoch);
        v["offset"] = json!(offset);
    }
    if let Some(r) = recovered {
        v["recovered"] = json!(r);
    }
    v.to_string()
}

/// A published message with its place in the channel's history (clients with `positions`).
pub fn positioned(channel: &str, data: &str, epoch: &str, offset: u64) -> String {
    json!({"event": "message", "channel": channel, "data": data, "epoch": epoch, "offset": offset})
        .to_string()
}

pub fn error(message: &str) -> String {
    json!({"event": "error", "message": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions() {
        assert_eq!(
            parse(r#"{"action":"subscribe","channel":"orders"}"#),
            Ok(Request::Subscribe("orders".into()))
        );
        assert_eq!(
            parse(r#"{"channel":"a\u0062","action":"unsubscribe"}"#),
            Ok(Request::Unsubscribe("ab".into()))
        );
        assert_eq!(parse(r#"{"action":"ping"}"#), Ok(Request::Ping));
    }

    #[test]
    fn errors_are_explained() {
        assert!(parse("nope").unwrap_err().contains("JSON"));
        assert!(
            parse(r#"{"action":"dance"}"#)
                .unwrap_err()
                .contains("unknown action")
        );
        assert!(
            parse(r#"{"action":"subscribe"}"#)
                .unwrap_err()
                .contains("missing")
        );
        assert!(
            parse(r#"{"action":"subscribe","channel":"a b"}"#)
                .unwrap_err()
                .contains("invalid channel")
        );
        assert!(parse(r#"{"action":5}"#).is_err());
    }
}
