//! The Pusher HTTP API: which endpoint a request names, and whether its body and query make a
//! valid call. Authentication is `auth.rs`; executing the call is the server's (it owns the state).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth;
use crate::config::AppConfig;

/// An error answered with this status and `{"error": message}`.
#[derive(Debug, PartialEq, Eq)]
pub struct RestError {
    pub status: u16,
    pub message: String,
}

fn err(status: u16, message: impl Into<String>) -> RestError {
    RestError {
        status,
        message: message.into(),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    Events,
    BatchEvents,
    Channels,
    Channel(String),
    ChannelUsers(String),
    TerminateUser(String),
}

impl Endpoint {
    /// Queries count against `max_read_requests_per_second`; triggers against backend events.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Endpoint::Channels | Endpoint::Channel(_) | Endpoint::ChannelUsers(_)
        )
    }
}

/// `/apps/{id}/…` → (app id, endpoint). `None` when the path is not an API path at all.
pub fn route<'p>(
    method: &str,
    rel_path: &'p str,
) -> Option<Result<(&'p str, Endpoint), RestError>> {
    let rest = rel_path.strip_prefix("/apps/")?;
    let (app_id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let parts: Vec<&str> = tail.split('/').collect();
    let endpoint = match (method, parts.as_slice()) {
        ("POST", ["events"]) => Endpoint::Events,
        ("POST", ["batch_events"]) => Endpoint::BatchEvents,
        ("GET", ["channels"]) => Endpoint::Channels,
        ("GET", ["channels", name]) => Endpoint::Channel(percent_decode(name)),
        ("GET", ["channels", name, "users"]) => Endpoint::ChannelUsers(percent_decode(name)),
        ("POST", ["users", user, "terminate_connections"]) => {
            Endpoint::TerminateUser(percent_decode(user))
        }
        (
            _,
            ["events"]
            | ["batch_events"]
            | ["channels"]
            | ["channels", _]
            | ["channels", _, "users"],
        )
        | (_, ["users", _, "terminate_connections"]) => {
            return Some(Err(err(405, format!("{method} is not allowed here"))));
        }
        _ => return Some(Err(err(404, "no such API endpoint"))),
    };
    Some(Ok((app_id, endpoint)))
}

fn percent_decode(s: &str) -> String {
    auth::parse_query(&format!("x={s}"))
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// Checks the request's credentials: a Pusher signature, or `Authorization: Bearer <secret>`.
pub fn authenticate(
    app: &AppConfig,
    method: &str,
    full_path: &str,
    query: &str,
    body: &[u8],
    authorization: Option<&str>,
    now_unix: u64,
) -> Result<(), RestError> {
    if let Some(header) = authorization
        && header
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("bearer ")
    {
        return if auth::verify_bearer(header, &app.secret) {
            Ok(())
        } else {
            Err(err(401, "invalid bearer token"))
        };
    }
    let req = auth::RestRequest {
        method,
        path: full_path,
        query,
        body,
    };
    let lookup = |key: &str| (key == app.key).then(|| app.secret.clone());
    auth::verify_rest_request(&req, lookup, now_unix, auth::DEFAULT_MAX_SKEW_SECS)
        .map(|_| ())
        .map_err(|e| err(e.status(), e.to_string()))
}

/// What `info=` asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub user_count: bool,
    pub subscription_count: bool,
    pub cache: bool,
    /// ferrocast's own: the channel's history stream (epoch, offset, what it keeps).
    pub history: bool,
}

impl Info {
    pub fn parse(list: Option<&str>) -> Result<Info, RestError> {
        let mut info = Info::default();
        for item in list
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                "cache" => info.cache = true,
                "history" => info.history = true,
                other => return Err(err(400, format!("unknown info attribute \"{other}\""))),
            }
        }
        Ok(info)
    }

    pub fn any(&self) -> bool {
        self.user_count || self.subscription_count || self.cache || self.history
    }
}

/// One event to publish.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub channels: Vec<String>,
    /// Sent to clients as a string.
    pub data: String,
    pub socket_id: Option<String>,
    pub info: Info,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    name: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
    info: Option<String>,
}

#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow)]
    batch: Option<Vec<WireEvent<'a>>>,
}

pub fn parse_events(body: &[u8], app: &AppConfig) -> Result<Event, RestError> {
    let wire: WireEvent =
        serde_json::from_slice(body).map_err(|e| err(400, format!("invalid JSON body: {e}")))?;
    validate_event(wire, app, true)
}

pub fn parse_batch(body: &[u8], app: &AppConfig) -> Result<Vec<Event>, RestError> {
    let wire: WireBatch =
        serde_json::from_slice(body).map_err(|e| err(400, format!("invalid JSON body: {e}")))?;
    let batch = wire.batch.ok_or_else(|| err(400, "missing \"batch\""))?;
    if batch.len() > app.max_event_batch_size {
        return Err(err(
            400,
            format!(
                "batch of {} events is over the limit of {}",
                batch.len(),
                app.max_event_batch_size
            ),
        ));
    }
    batch
        .into_iter()
        .map(|e| validate_event(e, app, false))
        .collect()
}

fn validate_event(wire: WireEvent, app: &AppConfig, allow_many: bool) -> Result<Event, RestError> {
    let name = wire.name.ok_or_else(|| err(400, "missing \"name\""))?;
    if name.is_empty() || name.len() > app.max_event_name_length {
        return Err(err(
            400,
            format!(
                "event name must be 1-{} characters",
                app.max_event_name_length
            ),
        ));
    }
    let channels = match (wire.channel, wire.channels) {
        (Some(c), None) => vec![c],
        (None, Some(cs)) if allow_many => cs,
        (None, Some(_)) => return Err(err(400, "batch events take \"channel\", not \"channels\"")),
        (Some(_), Some(_)) => return Err(err(400, "give \"channel\" or \"channels\", not both")),
        (None, None) => return Err(err(400, "missing \"channel\" or \"channels\"")),
    };
    if channels.is_empty() {
        return Err(err(400, "\"channels\" is empty"));
    }
    if channels.len() > app.max_event_channels_at_once {
        return Err(err(
            400,
            format!(
                "{} channels is over the limit of {}",
                channels.len(),
                app.max_event_channels_at_once
            ),
        ));
    }
    for c in &channels {
        if !valid_channel(c, app) {
            return Err(err(400, format!("invalid channel name \"{c}\"")));
        }
    }
    let raw = wire.data.ok_or_else(|| err(400, "missing \"data\""))?;
    // Pusher takes data as a string; BlazeCast also accepts an object and sends its JSON text.
    let data = serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string());
    if data.len() > app.max_event_payload_kb * 1024 {
        return Err(err(
            413,
            format!(
                "event data of {} bytes is over the limit of {} KB",
                data.len(),
                app.max_event_payload_kb
            ),
        ));
    }
    if let Some(s) = &wire.socket_id
        && !valid_socket_id(s)
    {
        return Err(err(400, format!("invalid socket_id \"{s}\"")));
    }
    let info = Info::parse(wire.info.as_deref())?;
    if info.user_count && channels.iter().any(|c| !c.starts_with("presence-")) {
        return Err(err(400, "info=user_count is only for presence channels"));
    }
    Ok(Event {
        name,
        channels,
        data,
        socket_id: wire.socket_id,
        info,
    })
}

/// Channel names, including `#server-to-user-{id}`.
pub fn valid_channel(name: &str, app: &AppConfig) -> bool {
    if name.len() > app.max_channel_name_length {
        return false;
    }
    match name.strip_prefix("#server-to-user-") {
        Some(user) => !user.is_empty() && crate::channels::valid_name(user),
        None => crate::channels::valid_name(name),
    }
}

/// `\d+\.\d+`.
pub fn valid_socket_id(s: &str) -> bool {
    let Some((a, b)) = s.split_once('.') else {
        return false;
    };
    !a.is_empty()
        && !b.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
        && b.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppConfig {
        AppConfig::default()
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("POST", "/apps/1/events").unwrap().unwrap(),
            ("1", Endpoint::Events)
        );
        assert_eq!(
            route("GET", "/apps/1/channels/presence-a/users")
                .unwrap()
                .unwrap(),
            ("1", Endpoint::ChannelUsers("presence-a".into()))
        );
        assert_eq!(
            route("POST", "/apps/1/users/u%201/terminate_connections")
                .unwrap()
                .unwrap(),
            ("1", Endpoint::TerminateUser("u 1".into()))
        );
        assert_eq!(
            route("GET", "/apps/1/events").unwrap().unwrap_err().status,
            405
        );
        assert_eq!(
            route("GET", "/apps/1/nothing").unwrap().unwrap_err().status,
            404
        );
        assert!(route("GET", "/up").is_none());
    }

    #[test]
    fn event_validation() {
        let ok = parse_events(br#"{"name":"e","channel":"c","data":"{\"a\":1}"}"#, &app()).unwrap();
        assert_eq!(ok.channels, vec!["c"]);
        assert_eq!(ok.data, "{\"a\":1}");
        let obj = parse_events(
            br#"{"name":"e","channels":["a","b"],"data":{"a":1}}"#,
            &app(),
        )
        .unwrap();
        assert_eq!(obj.data, r#"{"a":1}"#);
        let cases: &[(&[u8], u16)] = &[
            (
                br#"{"name":"e","channel":"c","channels":["d"],"data":"x"}"#,
                400,
            ),
            (br#"{"name":"e","data":"x"}"#, 400),
            (br#"{"channel":"c","data":"x"}"#, 400),
            (br#"{"name":"e","channel":"c"}"#, 400),
            (br#"{"name":"e","channel":"bad name","data":"x"}"#, 400),
            (
                br#"{"name":"e","channel":"c","data":"x","socket_id":"abc"}"#,
                400,
            ),
            (
                br#"{"name":"e","channel":"c","data":"x","info":"user_count"}"#,
                400,
            ),
            (b"not json", 400),
        ];
        for (body, status) in cases {
            assert_eq!(
                parse_events(body, &app()).unwrap_err().status,
                *status,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            r#"{{"name":"e","channel":"c","data":"{}"}}"#,
            "x".repeat(10 * 1024 + 1)
        );
        assert_eq!(
            parse_events(big.as_bytes(), &app()).unwrap_err().status,
            413
        );
        let many: Vec<String> = (0..101).map(|i| format!("\"c{i}\"")).collect();
        let body = format!(
            r#"{{"name":"e","channels":[{}],"data":"x"}}"#,
            many.join(",")
        );
        assert_eq!(
            parse_events(body.as_bytes(), &app()).unwrap_err().status,
            400
        );
    }

    #[test]
    fn batch_validation() {
        let ok = parse_batch(br#"{"batch":[{"name":"a","channel":"c","data":"1"},{"name":"b","channel":"d","data":"2"}]}"#, &app()).unwrap();
        assert_eq!(ok.len(), 2);
        let items: Vec<String> = (0..11)
            .map(|_| r#"{"name":"a","channel":"c","data":"1"}"#.to_string())
            .collect();
        let body = format!(r#"{{"batch":[{}]}}"#, items.join(","));
        assert_eq!(
            parse_batch(body.as_bytes(), &app()).unwrap_err().status,
            400
        );
    }

    #[test]
    fn bearer_and_signature() {
        let a = app();
        assert!(
            authenticate(
                &a,
                "GET",
                "/apps/app-id/channels",
                "",
                b"",
                Some("Bearer app-secret"),
                0
            )
            .is_ok()
        );
        assert_eq!(
            authenticate(
                &a,
                "GET",
                "/apps/app-id/channels",
                "",
                b"",
                Some("Bearer nope"),
                0
            )
            .unwrap_err()
            .status,
            401
        );
        let now = 1_700_000_000;
        let query = auth::sign_rest_request(
            "POST",
            "/apps/app-id/events",
            &[],
            b"{}",
            "app-key",
            "app-secret",
            now,
        );
        assert!(authenticate(&a, "POST", "/apps/app-id/events", &query, b"{}", None, now).is_ok());
        assert_eq!(
            authenticate(&a, "POST", "/apps/app-id/events", &query, b"{} ", None, now)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authenticate(
                &a,
                "POST",
                "/apps/app-id/events",
                &query,
                b"{}",
                None,
                now + 700
            )
            .unwrap_err()
            .status,
            401
        );
    }
}
