//! What a FIFO line (or `ferrocast broadcast`) asks to publish.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A line addressed to channels. Anything else is a global raw line.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish {
    pub channels: Vec<String>,
    pub event: Option<String>,
    /// The payload as channel-protocol subscribers receive it: a string `data` verbatim, any
    /// other JSON value as its compact text.
    pub data: String,
    /// The socket id to leave out (the connection that caused the event).
    pub socket_id: Option<String>,
    /// Which app's channels (Pusher); the first app when absent.
    pub app: Option<String>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    event: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    socket_id: Option<String>,
    app: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Publish(Publish),
    /// Sent verbatim to every raw-mode and channel-mode client.
    Global(&'a [u8]),
    /// Addressed to channels but unusable; the reason is logged.
    Invalid(String),
}

pub fn parse_line(line: &[u8]) -> Line<'_> {
    let trimmed = line.trim_ascii_start();
    if !trimmed.starts_with(b"{") {
        return Line::Global(line);
    }
    let Ok(wire) = serde_json::from_slice::<Wire>(line) else {
        return Line::Global(line);
    };
    let channels = match (wire.channel, wire.channels) {
        (None, None) => return Line::Global(line),
        (Some(c), None) => vec![c],
        (None, Some(cs)) => cs,
        (Some(_), Some(_)) => {
            return Line::Invalid("give either \"channel\" or \"channels\", not both".into());
        }
    };
    if channels.is_empty() {
        return Line::Invalid("\"channels\" is empty".into());
    }
    if let Some(bad) = channels.iter().find(|c| !crate::channels::valid_name(c)) {
        return Line::Invalid(format!("invalid channel name \"{bad}\""));
    }
    let Some(raw) = wire.data.or(wire.message) else {
        return Line::Invalid("no \"data\" (or \"message\") to publish".into());
    };
    // A string is sent as itself; any other value as its compact JSON text.
    let data = match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => raw.get().to_string(),
    };
    Line::Publish(Publish {
        channels,
        event: wire.event,
        data,
        socket_id: wire.socket_id,
        app: wire.app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lines() {
        let Line::Publish(p) = parse_line(br#"{"channel":"orders","data":"shipped #42"}"#) else {
            panic!()
        };
        assert_eq!(p.channels, vec!["orders"]);
        assert_eq!(p.data, "shipped #42");
        let Line::Publish(p) = parse_line(
            br#"{"channels":["a","b"],"event":"e","data":{"x": [1, 2]},"socket_id":"1.2"}"#,
        ) else {
            panic!()
        };
        assert_eq!(p.channels, vec!["a", "b"]);
        assert_eq!(p.data, r#"{"x":[1,2]}"#);
        assert_eq!(p.socket_id.as_deref(), Some("1.2"));
        let Line::Publish(p) = parse_line(br#"{"channel":"a","message":"m"}"#) else {
            panic!()
        };
        assert_eq!(p.data, "m");
    }

    #[test]
    fn global_lines() {
        assert_eq!(parse_line(b"hello"), Line::Global(b"hello"));
        assert_eq!(
            parse_line(br#"{"type":"refresh"}"#),
            Line::Global(br#"{"type":"refresh"}"#)
        );
        assert_eq!(parse_line(b"{broken"), Line::Global(b"{broken"));
    }

    #[test]
    fn invalid_lines() {
        assert!(matches!(
            parse_line(br#"{"channel":"a"}"#),
            Line::Invalid(_)
        ));
        assert!(matches!(
            parse_line(br#"{"channel":"a b","data":1}"#),
            Line::Invalid(_)
        ));
        assert!(matches!(
            parse_line(br#"{"channels":[],"data":1}"#),
            Line::Invalid(_)
        ));
    }
}
