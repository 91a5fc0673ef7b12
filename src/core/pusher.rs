//! A Pusher client's messages: subscriptions with channel authorization, presence membership,
//! user sign-in and client events.

use log::debug;
use serde_json::Value;

use super::cluster::sequence;
use super::hub::ChannelId;
use super::notify;
use super::peer::Peer;
use super::publication::Publication;
use super::state::{State, Via};
use super::{cluster, console, held, hooks, membership, online, resume};
use crate::config::AppConfig;
use crate::pusher::auth;
use crate::pusher::protocol::{self as pp, ChannelKind, ClientMessage};
use crate::ws;

pub fn on_text(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let message = match pp::parse(text) {
        Ok(m) => m,
        Err(e) => return peer.reply(&pp::error(None, &e)),
    };
    match message {
        ClientMessage::Ping => peer.reply(pp::pong()),
        ClientMessage::Pong => {}
        ClientMessage::Subscribe {
            channel,
            auth,
            channel_data,
            resume,
        } => {
            // With positions on a channel whose stream this node does not follow yet, in a
            // cluster: Redis gives the position first.
            let app = peer.conn.app();
            let positioned = resume.positions || resume.recover.is_some();
            // Members, a cache channel's event and history may come from other loops: they
            // must all be here first.
            let shared = positioned
                || pp::is_cache_channel(&channel)
                || pp::channel_kind(&channel) == ChannelKind::Presence;
            if shared && held::hold_message(st, peer, text) {
                return;
            }
            if positioned && sequence::park(st, peer, app, &channel, text) {
                return;
            }
            let signed = (auth.as_deref(), channel_data.as_deref());
            subscribe(st, peer, &channel, signed, resume)
        }
        ClientMessage::Unsubscribe { channel } => {
            membership::leave(st, peer.key, peer.conn, &channel)
        }
        // The watchlist's users may be signed in on other loops.
        ClientMessage::Signin { .. } if held::hold_message(st, peer, text) => {}
        ClientMessage::Signin { auth, user_data } => signin(st, peer, &auth, &user_data),
        // After what the other loops published before it, as with one loop.
        ClientMessage::ClientEvent { .. } if held::hold_message(st, peer, text) => {}
        ClientMessage::ClientEvent {
            event,
            channel,
            data,
        } => client_event(st, peer, &event, &channel, data),
        ClientMessage::Other(event) => debug!("connection {}: ignored event {event}", peer.key),
    }
}

pub fn on_binary(peer: &mut Peer<'_>) {
    peer.reply(&pp::error(None, "binary messages are not supported"));
}

/// Why a subscription is refused: `pusher:subscription_error` with this message and status,
/// or (`status` 0) a plain `pusher:error`.
struct Refusal(String, u16);

fn subscribe(
    st: &mut State,
    peer: &mut Peer<'_>,
    channel: &str,
    (auth_sig, channel_data): (Option<&str>, Option<&str>),
    resume: pp::Resume,
) {
    let Some(app) = peer.conn.pusher.as_ref().map(|p| p.app as usize) else {
        return;
    };
    let member = match admit(st, peer, app, channel, auth_sig, channel_data) {
        Ok(member) => member,
        Err(Refusal(message, 0)) => return peer.reply(&pp::error(None, &message)),
        Err(Refusal(message, status)) => {
            let frame = pp::subscription_error(channel, "AuthError", &message, status);
            return peer.reply(&frame);
        }
    };
    let (id, new) = membership::join(st, peer.key, peer.conn, app, channel);
    if pp::channel_kind(channel) == ChannelKind::Presence {
        if new && let Some((user, info)) = member {
            join_presence(st, peer.key, app, id, &user, info);
        }
        let snapshot = presence_snapshot(st, app, id, channel);
        peer.reply(&pp::subscription_succeeded(channel, Some(&snapshot)));
    } else {
        peer.reply(&pp::subscription_succeeded(channel, None));
    }
    if pp::is_cache_channel(channel) {
        send_cached(st, peer, app, channel);
    }
    resume::subscribed(st, peer, app, channel, resume);
}

/// The checks a subscription must pass, in Pusher's order; the presence member it makes.
fn admit(
    st: &State,
    peer: &Peer<'_>,
    app: usize,
    channel: &str,
    auth_sig: Option<&str>,
    channel_data: Option<&str>,
) -> Result<Option<(String, Option<Value>)>, Refusal> {
    let cfg = &st.apps.get(app).cfg;
    if !crate::pusher::rest::valid_channel(channel, cfg) {
        return Err(Refusal(
            format!(
                "Invalid channel name: use 1-{} characters of A-Z a-z 0-9 _ - = @ , . ;",
                cfg.max_channel_name_length
            ),
            0,
        ));
    }
    let kind = pp::channel_kind(channel);
    let signed_in = peer.conn.pusher.as_ref().and_then(|p| p.user_id.as_deref());
    if kind == ChannelKind::ServerToUser
        && signed_in != Some(channel.trim_start_matches("#server-to-user-"))
    {
        return Err(Refusal(
            "Only the signed-in user may subscribe to their #server-to-user channel".into(),
            403,
        ));
    }
    let needs_auth = match kind {
        ChannelKind::Public => cfg.require_channel_authorization,
        ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence => true,
        ChannelKind::ServerToUser => false,
    };
    if needs_auth {
        let socket_id = peer.socket_id(st.process_id);
        let data = channel_data.filter(|_| kind == ChannelKind::Presence);
        let ok = auth_sig.is_some_and(|a| {
            auth::verify_channel_auth(&cfg.key, &cfg.secret, &socket_id, channel, data, a)
        });
        if !ok {
            debug!("connection {}: invalid signature for {channel}", peer.key);
            return Err(Refusal(
                format!("Invalid signature for channel {channel}"),
                401,
            ));
        }
    }
    let member = match kind {
        ChannelKind::Presence => Some(presence_member(cfg, channel_data)?),
        _ => None,
    };
    if let Some((user, _)) = &member {
        presence_room(st, app, channel, user)?;
    }
    if membership::over_limit(st, peer.key, app, channel) {
        return Err(Refusal(
            format!(
                "Cannot subscribe to {channel}: already in max_channels_per_connection ({}) channels",
                st.cfg.max_channels_per_connection
            ),
            0,
        ));
    }
    Ok(member)
}

/// The member a presence subscription's `channel_data` describes.
fn presence_member(
    cfg: &AppConfig,
    channel_data: Option<&str>,
) -> Result<(String, Option<Value>), Refusal> {
    let Some(raw) = channel_data else {
        return Err(Refusal("Presence channels need channel_data".into(), 400));
    };
    if raw.len() > cfg.max_presence_member_size_kb.saturating_mul(1024) {
        return Err(Refusal(
            format!(
                "Presence member data over {} KB",
                cfg.max_presence_member_size_kb
            ),
            413,
        ));
    }
    let parsed: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let user = match parsed.get("user_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Refusal("channel_data needs a user_id".into(), 400)),
    };
    Ok((user, parsed.get("user_info").cloned()))
}

/// Refuses a user new to a presence channel that is full (across the cluster).
fn presence_room(st: &State, app: usize, channel: &str, user: &str) -> Result<(), Refusal> {
    let max = st.apps.get(app).cfg.max_presence_members_per_channel;
    let (_, mut everyone) = cluster::remote_channel(st, app, channel);
    if let Some(c) = st.hub.channel_named(app, channel) {
        everyone.extend(c.members().map(|(u, _)| (u.to_string(), None)));
    }
    if everyone.len() >= max && !everyone.contains_key(user) {
        return Err(Refusal(
            format!("Presence channel is full ({max} members)"),
            403,
        ));
    }
    Ok(())
}

fn join_presence(
    st: &mut State,
    key: usize,
    app: usize,
    id: ChannelId,
    user: &str,
    info: Option<Value>,
) {
    if st.hub.add_member(key, id, user, info.clone()) {
        membership::member_added(st, key, app, id, user, info.as_ref());
    }
}

/// The `{"ids","hash","count"}` of a presence channel across the cluster.
fn presence_snapshot(st: &State, app: usize, id: ChannelId, channel: &str) -> Value {
    let (_, mut members) = cluster::remote_channel(st, app, channel);
    if let Some(c) = st.hub.channel(app, id) {
        for (user, member) in c.members() {
            members.insert(user.to_string(), member.info.clone());
        }
    }
    let ids: Vec<&String> = members.keys().collect();
    let hash: serde_json::Map<String, Value> = members
        .iter()
        .map(|(u, info)| (u.clone(), info.clone().unwrap_or(Value::Null)))
        .collect();
    serde_json::json!({"ids": ids, "hash": hash, "count": members.len()})
}

/// A cache channel's last event, or `pusher:cache_miss` (and its webhook).
fn send_cached(st: &mut State, peer: &mut Peer<'_>, app: usize, channel: &str) {
    let now = st.clock.now();
    match st.hub.cache().get(app as u16, channel, now) {
        Some((frame, _)) => peer.send(frame.clone()),
        None => {
            peer.reply(&pp::cache_miss(channel));
            notify::emit(
                st,
                app,
                serde_json::json!({"name": "cache_miss", "channel": channel}),
            );
        }
    }
}

fn signin(st: &mut State, peer: &mut Peer<'_>, auth_sig: &str, user_data: &str) {
    let Some(app) = peer.conn.pusher.as_ref().map(|p| p.app as usize) else {
        return;
    };
    let cfg = &st.apps.get(app).cfg;
    let socket_id = peer.socket_id(st.process_id);
    let valid = auth::verify_user_auth(&cfg.key, &cfg.secret, &socket_id, user_data, auth_sig);
    let user = if valid {
        signed_user(user_data, cfg.max_watchlist_users)
    } else {
        Err("Invalid signature for pusher:signin".to_string())
    };
    let (user_id, watchlist) = match user {
        Ok(user) => user,
        Err(why) => {
            peer.reply(&pp::error(Some(pp::code::UNAUTHORIZED), &why));
            return peer.close(pp::code::UNAUTHORIZED, &why);
        }
    };
    let Some(p) = peer.conn.pusher.as_mut() else {
        return;
    };
    let before = p.user_id.replace(user_id.as_str().into());
    p.signin_deadline = None;
    if let Some(before) = before {
        if st
            .sessions
            .user_detached(app, &before, peer.key, Via::Signin)
        {
            online::went_offline(st, app, &before);
        }
        membership::user_changed(st, app, &before);
    }
    if st
        .sessions
        .user_attached(app, &user_id, peer.key, Via::Signin)
    {
        online::came_online(st, app, &user_id);
    }
    membership::user_changed(st, app, &user_id);
    hooks::signed_in(st, peer.conn);
    peer.reply(&pp::signin_success(user_data));
    if let Some(state) = online::watch(st, peer.key, app, watchlist) {
        peer.reply(&state);
    }
}

/// The user id and watchlist of a signed `user_data`, or why they are refused.
fn signed_user(user_data: &str, max_watchlist: usize) -> Result<(String, Vec<String>), String> {
    let value = serde_json::from_str::<Value>(user_data).unwrap_or(Value::Null);
    let id = match value.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("user_data needs an id".into()),
    };
    let watchlist = match value.get("watchlist") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .ok_or("user_data.watchlist must list user ids (strings or numbers)")?,
        Some(_) => return Err("user_data.watchlist must be an array of user ids".into()),
    };
    if watchlist.len() > max_watchlist {
        return Err(format!(
            "user_data.watchlist has {} user ids; this app allows {max_watchlist}",
            watchlist.len()
        ));
    }
    Ok((id, watchlist))
}

fn client_event(
    st: &mut State,
    peer: &mut Peer<'_>,
    event: &str,
    channel: &str,
    data: &serde_json::value::RawValue,
) {
    let Some(app) = peer.conn.pusher.as_ref().map(|p| p.app as usize) else {
        return;
    };
    let cfg = &st.apps.get(app).cfg;
    let refused = if !cfg.enable_client_messages {
        Some("Client events are not enabled for this app (enable_client_messages)".to_string())
    } else if !matches!(
        pp::channel_kind(channel),
        ChannelKind::Private | ChannelKind::Presence
    ) {
        Some("Client events are only allowed on private and presence channels".to_string())
    } else if event.len() > cfg.max_event_name_length
        || data.get().len() > cfg.max_event_payload_kb.saturating_mul(1024)
    {
        Some("Client event name or data over the app's limits".to_string())
    } else {
        None
    };
    if let Some(why) = refused {
        return peer.reply(&pp::error(None, &why));
    }
    let Some(id) = st
        .hub
        .lookup(app, channel)
        .filter(|&id| st.hub.is_subscribed(peer.key, id))
    else {
        let why = format!("Client event on {channel}, which this connection has not subscribed to");
        return peer.reply(&pp::error(None, &why));
    };
    let now = st.clock.now();
    let allowed = peer
        .conn
        .pusher
        .as_mut()
        .is_some_and(|p| p.client_events.try_take(1, now));
    if !allowed {
        st.stats.rate_limited += 1;
        let frame = pp::error(
            Some(pp::code::CLIENT_EVENT_RATE),
            "Client event rejected due to rate limit",
        );
        return peer.reply(&frame);
    }
    let user_id = st.hub.member_of(peer.key, id).map(str::to_string);
    let frame = ws::text(pp::client_event(event, channel, data, user_id.as_deref()).as_bytes());
    st.stats.client_events += 1;
    st.publish(Publication::frame(
        app,
        channel,
        frame,
        Some(peer.key),
        true,
    ));
    let socket_id = peer.socket_id(st.process_id);
    client_event_notices(
        st,
        app,
        channel,
        event,
        data,
        &socket_id,
        user_id.as_deref(),
    );
}

/// The webhook and console record of a client event.
fn client_event_notices(
    st: &mut State,
    app: usize,
    channel: &str,
    event: &str,
    data: &serde_json::value::RawValue,
    socket_id: &str,
    user_id: Option<&str>,
) {
    if notify::enabled(st, app) {
        let mut hook = serde_json::json!({
            "name": "client_event", "channel": channel, "event": event,
            // Pusher sends the event's data as a string: a string as itself, anything else
            // as its JSON text.
            "data": serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_string()),
            "socket_id": socket_id,
        });
        if let Some(u) = user_id {
            hook["user_id"] = Value::String(u.to_string());
        }
        notify::emit(st, app, hook);
    }
    console::event(
        st,
        "client_event",
        Some(socket_id),
        Some(channel),
        Some(event),
        user_id,
    );
}

/// Closes a connection that was required to sign in and has not; whether it did.
pub fn check_signin(st: &State, peer: &mut Peer<'_>) -> bool {
    match peer.conn.pusher.as_ref().and_then(|p| p.signin_deadline) {
        Some(deadline) if st.clock.secs() >= deadline => {
            let why = "Connection not signed in within the time allowed";
            peer.reply(&pp::error(Some(pp::code::UNAUTHORIZED), why));
            peer.close(pp::code::UNAUTHORIZED, why);
            true
        }
        _ => false,
    }
}
