//! The HTTP API: Pusher's REST calls (`/apps/{id}/…`) and cadsock's `/internal/broadcast`.
//! Parsing and authentication are `pusher/rest.rs` and `pusher/auth.rs`; executing a call on
//! the state is here.

use std::collections::BTreeSet;

use log::warn;
use serde_json::{Map, Value, json};

use super::answer::{Decision, respond, respond_error};
use super::publication::{Origin, Publication};
use super::state::State;
use super::{cluster, console};
use crate::http::Request;
use crate::pusher::rest::{self, Endpoint, Info, RestError};
use crate::ws;

/// A REST call, or 404 when `rel` names none.
pub fn call(st: &mut State, req: &Request, rel: &str, body: &[u8]) -> Decision {
    // pusher (PyPI) 3.x posts terminate_connections without the /apps/{id} prefix; the app is
    // the one whose key signed the request.
    if req.method == "POST"
        && let Some(user) = rel
            .strip_prefix("/users/")
            .and_then(|r| r.strip_suffix("/terminate_connections"))
    {
        let app = crate::query::param(req.query(), "auth_key")
            .and_then(|k| st.apps.by_key(&k))
            .unwrap_or(0);
        let app_id = st.apps.get(app).cfg.id.clone();
        let user = crate::query::decode_part(user).unwrap_or_default();
        return execute(st, req, &app_id, Endpoint::TerminateUser(user), body);
    }
    match rest::route(req.method, rel) {
        Some(Ok((app_id, endpoint))) => execute(st, req, app_id, endpoint, body),
        Some(Err(e)) => respond_error(e.status, &e.message),
        None => respond_error(404, "not found"),
    }
}

fn execute(
    st: &mut State,
    req: &Request,
    app_id: &str,
    endpoint: Endpoint,
    body: &[u8],
) -> Decision {
    let result = admit(st, req, app_id, &endpoint, body).and_then(|app| match endpoint {
        Endpoint::Events => rest::parse_events(body, &st.apps.get(app).cfg)
            .and_then(|e| trigger(st, app, vec![e], false)),
        Endpoint::BatchEvents => rest::parse_batch(body, &st.apps.get(app).cfg)
            .and_then(|events| trigger(st, app, events, true)),
        Endpoint::Channels => query_channels(st, app, req),
        Endpoint::Channel(name) => query_channel(st, app, req, &name),
        Endpoint::ChannelUsers(name) => query_users(st, app, &name),
        Endpoint::TerminateUser(user) => {
            cluster::terminate(st, app, &user);
            st.terminate_user(app, &user);
            Ok(json!({}))
        }
    });
    let (status, decision) = match result {
        Ok(body) => (200, respond(200, &body)),
        Err(e) => (e.status, respond_error(e.status, &e.message)),
    };
    *st.stats.rest_calls.entry(status).or_insert(0) += 1;
    decision
}

/// The app of a REST call, once its credentials, its state and its rate limit allow it.
fn admit(
    st: &mut State,
    req: &Request,
    app_id: &str,
    endpoint: &Endpoint,
    body: &[u8],
) -> Result<usize, RestError> {
    let Some(app) = st.apps.by_id(app_id) else {
        return Err(error(404, format!("unknown app id \"{app_id}\"")));
    };
    let now_unix = st.clock.wall_ms() / 1000;
    let cfg = &st.apps.get(app).cfg;
    let auth = req.header("authorization");
    if let Err(e) = rest::authenticate(
        cfg,
        req.method,
        req.path(),
        req.query(),
        body,
        auth,
        now_unix,
    ) {
        warn!("REST {} {}: {}", req.method, req.path(), e.message);
        let detail = format!("REST {} {}: {}", req.method, req.path(), e.message);
        console::event(st, "error", None, None, None, Some(&detail));
        return Err(e);
    }
    if !cfg.enabled {
        return Err(error(403, "application is disabled".into()));
    }
    if endpoint.is_read() && !super::shared_counts::take_rate(st, app, true, 1) {
        st.stats.rate_limited += 1;
        return Err(error(429, "over max_read_requests_per_second".into()));
    }
    Ok(app)
}

fn error(status: u16, message: String) -> RestError {
    RestError { status, message }
}

fn trigger(
    st: &mut State,
    app: usize,
    events: Vec<rest::Event>,
    batch: bool,
) -> Result<Value, RestError> {
    let count = events
        .iter()
        .map(|e| u32::try_from(e.channels.len()).unwrap_or(u32::MAX))
        .fold(0u32, u32::saturating_add);
    if !super::shared_counts::take_rate(st, app, false, count) {
        st.stats.rate_limited += 1;
        return Err(error(429, "over max_backend_events_per_second".into()));
    }
    let any_info = events.iter().any(|e| e.info.any());
    let mut infos = Vec::new();
    for event in events {
        if event.info.any() {
            let channels: Map<String, Value> = event
                .channels
                .iter()
                .map(|c| (c.clone(), channel_info(st, app, c, event.info)))
                .collect();
            infos.push(Value::Object(channels));
        } else {
            infos.push(json!({}));
        }
        st.stats.api_publishes += 1;
        st.publish(Publication::Event {
            app,
            channels: event.channels,
            event: event.name,
            data: event.data,
            except: event.socket_id,
            origin: Origin::Here("rest"),
        });
    }
    Ok(match (batch, any_info) {
        (_, false) => json!({}),
        (false, true) => json!({ "channels": infos.into_iter().next().unwrap_or(json!({})) }),
        (true, true) => json!({ "batch": infos }),
    })
}

/// The attributes `info` asks for, for one channel, across the cluster.
fn channel_info(st: &State, app: usize, name: &str, info: Info) -> Value {
    let mut out = Map::new();
    let (subscribers, members) = cluster_channel(st, app, name);
    if info.subscription_count {
        out.insert("subscription_count".into(), json!(subscribers));
    }
    if info.user_count {
        out.insert("user_count".into(), json!(members.len()));
    }
    Value::Object(out)
}

/// Subscribers and presence member ids of a channel on this node and the others.
fn cluster_channel(st: &State, app: usize, name: &str) -> (usize, BTreeSet<String>) {
    let local = st.hub.channel_named(app, name);
    let (remote_subscribers, remote_members) = cluster::remote_channel(st, app, name);
    let mut members: BTreeSet<String> = remote_members.into_keys().collect();
    if let Some(c) = local {
        members.extend(c.members().map(|(u, _)| u.to_string()));
    }
    let subscribers = local
        .map_or(0, |c| c.count())
        .saturating_add(remote_subscribers);
    (subscribers, members)
}

fn query_channels(st: &State, app: usize, req: &Request) -> Result<Value, RestError> {
    let prefix = crate::query::param(req.query(), "filter_by_prefix").unwrap_or_default();
    let info = Info::parse(crate::query::param(req.query(), "info").as_deref())?;
    if info.user_count && !prefix.starts_with("presence-") {
        return Err(error(
            400,
            "info=user_count needs filter_by_prefix=presence-".into(),
        ));
    }
    if info.subscription_count || info.cache || info.history {
        return Err(error(
            400,
            "only info=user_count is available when listing channels".into(),
        ));
    }
    let mut names: BTreeSet<String> = st
        .hub
        .channels(app)
        .map(|ch| ch.name().to_string())
        .collect();
    names.extend(cluster::remote_channels(st, app));
    let channels: Map<String, Value> = names
        .into_iter()
        .filter(|name| name.starts_with(&prefix) && !name.starts_with('#'))
        .map(|name| {
            let attrs = channel_info(st, app, &name, info);
            (name, attrs)
        })
        .collect();
    Ok(json!({ "channels": channels }))
}

fn query_channel(st: &State, app: usize, req: &Request, name: &str) -> Result<Value, RestError> {
    let info = Info::parse(crate::query::param(req.query(), "info").as_deref())?;
    if info.user_count && !name.starts_with("presence-") {
        return Err(error(
            400,
            "info=user_count is only for presence channels".into(),
        ));
    }
    let occupied = cluster_channel(st, app, name).0 > 0;
    let mut out = match channel_info(st, app, name, info) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    out.insert("occupied".into(), json!(occupied));
    if info.history {
        let stream = st.history.stream(app as u16, name).map(|(at, kept, bytes)| {
            json!({"epoch": at.epoch, "offset": at.offset, "retained": kept, "bytes": bytes})
        });
        out.insert("history".into(), stream.unwrap_or(Value::Null));
    }
    if info.cache
        && let Some((frame, left)) = st.hub.cache().get(app as u16, name, st.clock.now())
    {
        let text = String::from_utf8_lossy(ws::payload(frame));
        let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        out.insert(
            "cache".into(),
            json!({"event": event.get("event"), "data": event.get("data"), "ttl": left.as_secs()}),
        );
    }
    Ok(Value::Object(out))
}

fn query_users(st: &State, app: usize, name: &str) -> Result<Value, RestError> {
    if !name.starts_with("presence-") {
        return Err(error(
            400,
            "users can only be listed for presence channels".into(),
        ));
    }
    let users: Vec<Value> = cluster_channel(st, app, name)
        .1
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(json!({ "users": users }))
}

/// cadsock's broadcast endpoint: form fields `channel` and `message`, bearer token required.
pub fn internal_broadcast(st: &mut State, req: &Request, body: &[u8]) -> Decision {
    let token = &st.cfg.internal_token;
    if token.is_empty() {
        return respond_error(
            404,
            "/internal/broadcast is disabled: set internal_token to enable it",
        );
    }
    let given = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .or_else(|| req.header("x-ferrocast-token"))
        .unwrap_or("");
    if !crate::pusher::auth::secret_eq(token.as_bytes(), given.trim().as_bytes()) {
        return respond_error(401, "invalid token");
    }
    let form = String::from_utf8_lossy(body);
    let field = |name: &str| crate::query::param(&form, name);
    let (Some(channel), Some(message)) = (field("channel"), field("message")) else {
        return respond_error(400, "form fields \"channel\" and \"message\" are required");
    };
    if !crate::channels::valid_name(&channel) {
        return respond_error(400, "invalid channel name");
    }
    st.publish(Publication::Event {
        app: 0,
        channels: vec![channel],
        event: field("event").unwrap_or_else(|| "message".into()),
        data: message,
        except: None,
        origin: Origin::Here("internal"),
    });
    st.stats.api_publishes += 1;
    respond(200, &json!({}))
}
