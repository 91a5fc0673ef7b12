//! A Pusher client's messages: subscriptions with channel authorization, presence membership,
//! user sign-in and client events.

use std::time::Instant;

use log::debug;
use serde_json::Value;

use super::auth;
use super::protocol::{self as pp, ChannelKind, ClientMessage};
use crate::core::hub::ChannelId;
use crate::server::Server;
use crate::ws;

impl Server {
    pub(crate) fn on_pusher_message(&mut self, key: usize, text: &str) {
        let message = match pp::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.reply(key, &pp::error(None, &e));
                return;
            }
        };
        match message {
            ClientMessage::Ping => self.reply(key, pp::pong()),
            ClientMessage::Pong => {}
            ClientMessage::Subscribe {
                channel,
                auth,
                channel_data,
            } => self.pusher_subscribe(key, &channel, auth.as_deref(), channel_data.as_deref()),
            ClientMessage::Unsubscribe { channel } => self.leave_by_name(key, &channel),
            ClientMessage::Signin { auth, user_data } => self.pusher_signin(key, &auth, &user_data),
            ClientMessage::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(key, &event, &channel, data),
            ClientMessage::Other(event) => debug!("connection {key}: ignored event {event}"),
        }
    }

    fn pusher_subscribe(
        &mut self,
        key: usize,
        channel: &str,
        auth_sig: Option<&str>,
        channel_data: Option<&str>,
    ) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(p) = conn.pusher.as_ref() else {
            return;
        };
        let app = p.app as usize;
        let signed_in = p.user_id.clone();
        let socket_id = conn.socket_id(self.process_id);
        let cfg = &self.apps.get(app).cfg;
        let refuse = |server: &mut Server, message: &str, status: u16| {
            server.reply(
                key,
                &pp::subscription_error(channel, "AuthError", message, status),
            );
        };
        if !super::rest::valid_channel(channel, cfg) {
            let msg = format!(
                "Invalid channel name: use 1-{} characters of A-Z a-z 0-9 _ - = @ , . ;",
                cfg.max_channel_name_length
            );
            self.reply(key, &pp::error(None, &msg));
            return;
        }
        let kind = pp::channel_kind(channel);
        let needs_auth = match kind {
            ChannelKind::Public => cfg.require_channel_authorization,
            ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence => true,
            ChannelKind::ServerToUser => false,
        };
        if kind == ChannelKind::ServerToUser {
            let wanted = channel.trim_start_matches("#server-to-user-");
            if signed_in.as_deref() != Some(wanted) {
                refuse(
                    self,
                    "Only the signed-in user may subscribe to their #server-to-user channel",
                    403,
                );
                return;
            }
        }
        if needs_auth {
            let data = if kind == ChannelKind::Presence {
                channel_data
            } else {
                None
            };
            let ok = auth_sig.is_some_and(|a| {
                auth::verify_channel_auth(&cfg.key, &cfg.secret, &socket_id, channel, data, a)
            });
            if !ok {
                debug!("connection {key}: invalid signature for {channel}");
                refuse(
                    self,
                    &format!("Invalid signature for channel {channel}"),
                    401,
                );
                return;
            }
        }
        let mut member = None;
        if kind == ChannelKind::Presence {
            let Some(raw) = channel_data else {
                refuse(self, "Presence channels need channel_data", 400);
                return;
            };
            if raw.len() > cfg.max_presence_member_size_kb * 1024 {
                refuse(
                    self,
                    &format!(
                        "Presence member data over {} KB",
                        cfg.max_presence_member_size_kb
                    ),
                    413,
                );
                return;
            }
            let parsed: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            let user_id = match parsed.get("user_id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    refuse(self, "channel_data needs a user_id", 400);
                    return;
                }
            };
            member = Some((user_id, parsed.get("user_info").cloned()));
        }
        let max_members = cfg.max_presence_members_per_channel;
        // Refuse before joining when the presence channel is full and this user is new to it.
        if let Some((user_id, _)) = &member {
            let (_, mut everyone) = self.remote_channel(app, channel);
            if let Some(c) = self.hub.channel_named(app, channel) {
                everyone.extend(c.members().map(|(u, _)| (u.to_string(), None)));
            }
            let full = everyone.len() >= max_members && !everyone.contains_key(user_id.as_str());
            if full {
                refuse(
                    self,
                    &format!("Presence channel is full ({max_members} members)"),
                    403,
                );
                return;
            }
        }
        if self.over_channel_limit(key, channel) {
            let msg = format!(
                "Cannot subscribe to {channel}: already in max_channels_per_connection ({}) channels",
                self.cfg.max_channels_per_connection
            );
            self.reply(key, &pp::error(None, &msg));
            return;
        }
        let Some((id, new)) = self.join(key, channel) else {
            return;
        };
        if kind == ChannelKind::Presence {
            if new && let Some((user_id, info)) = member {
                self.join_presence(key, app, id, user_id, info);
            }
            let snapshot = self.presence_snapshot(app, id, channel);
            self.reply(key, &pp::subscription_succeeded(channel, Some(&snapshot)));
        } else {
            self.reply(key, &pp::subscription_succeeded(channel, None));
        }
        if pp::is_cache_channel(channel) {
            let cached = self
                .hub
                .cache()
                .get(app as u16, channel, Instant::now())
                .map(|(f, _)| f.clone());
            match cached {
                Some(frame) => self.send_frame(key, frame),
                None => {
                    self.reply(key, &pp::cache_miss(channel));
                    self.webhook(
                        app,
                        serde_json::json!({"name": "cache_miss", "channel": channel}),
                    );
                }
            }
        }
    }

    /// The `{"ids","hash","count"}` of a presence channel across the cluster.
    fn presence_snapshot(&self, app: usize, id: ChannelId, channel: &str) -> Value {
        let (_, mut members) = self.remote_channel(app, channel);
        if let Some(c) = self.hub.channel(app, id) {
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

    /// Adds a presence member; `member_added` goes to the others only on the user's first
    /// connection to the channel.
    fn join_presence(
        &mut self,
        key: usize,
        app: usize,
        id: ChannelId,
        user_id: String,
        info: Option<Value>,
    ) {
        if !self.hub.add_member(key, id, &user_id, info.clone()) {
            return;
        }
        let Some(name) = self.hub.channel(app, id).map(|c| c.name().to_string()) else {
            return;
        };
        self.send_presence(app, &name, &user_id, info.as_ref(), true);
        // A user already present through another node is not news.
        if !self.member_on_other_nodes(app, &name, &user_id) {
            let frame = ws::text(pp::member_added(&name, &user_id, info.as_ref()).as_bytes());
            self.publish_frame(app, id, &frame, Some(key));
            self.console_event("member_added", None, Some(&name), None, Some(&user_id));
            self.webhook(
                app,
                serde_json::json!({"name": "member_added", "channel": name, "user_id": user_id}),
            );
        }
    }

    /// A presence channel lost the last connection of `user`: `member_removed` goes to the
    /// others (the leaving connection is no longer among them).
    pub(crate) fn member_removed(&mut self, app: usize, name: &str, user: &str) {
        self.send_presence(app, name, user, None, false);
        if self.member_on_other_nodes(app, name, user) {
            return;
        }
        if let Some(id) = self.hub.lookup(app, name) {
            let frame = ws::text(pp::member_removed(name, user).as_bytes());
            self.publish_frame(app, id, &frame, None);
        }
        self.console_event("member_removed", None, Some(name), None, Some(user));
        self.webhook(
            app,
            serde_json::json!({"name": "member_removed", "channel": name, "user_id": user}),
        );
    }

    fn pusher_signin(&mut self, key: usize, auth_sig: &str, user_data: &str) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(p) = conn.pusher.as_ref() else {
            return;
        };
        let cfg = &self.apps.get(p.app as usize).cfg;
        let socket_id = conn.socket_id(self.process_id);
        let valid = auth::verify_user_auth(&cfg.key, &cfg.secret, &socket_id, user_data, auth_sig);
        let user_id =
            serde_json::from_str::<Value>(user_data)
                .ok()
                .and_then(|v| match v.get("id") {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                });
        match (valid, user_id) {
            (true, Some(user_id)) => {
                let Some(p) = self.conns.get_mut(key).and_then(|c| c.pusher.as_mut()) else {
                    return;
                };
                let before = p.user_id.replace(user_id.as_str().into());
                p.signin_deadline = None;
                let app = p.app as usize;
                if let Some(before) = before {
                    self.user_detached(app, &before, key);
                }
                self.user_attached(app, &user_id, key);
                self.reply(key, &pp::signin_success(user_data));
            }
            (valid, _) => {
                let why = if valid {
                    "user_data needs an id"
                } else {
                    "Invalid signature for pusher:signin"
                };
                self.reply(key, &pp::error(Some(pp::code::UNAUTHORIZED), why));
                self.close_with(key, pp::code::UNAUTHORIZED, why);
            }
        }
    }

    fn client_event(
        &mut self,
        key: usize,
        event: &str,
        channel: &str,
        data: &serde_json::value::RawValue,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // Looked up now (the connection is borrowed below), refused in its turn.
        let subscribed = self
            .hub
            .lookup(conn.app(), channel)
            .filter(|&id| self.hub.is_subscribed(key, id));
        let Some(p) = conn.pusher.as_mut() else {
            return;
        };
        let app = p.app as usize;
        let cfg = &self.apps.get(app).cfg;
        let error = |server: &mut Server, message: &str| {
            server.reply(key, &pp::error(None, message));
        };
        if !cfg.enable_client_messages {
            return error(
                self,
                "Client events are not enabled for this app (enable_client_messages)",
            );
        }
        let kind = pp::channel_kind(channel);
        if !matches!(kind, ChannelKind::Private | ChannelKind::Presence) {
            return error(
                self,
                "Client events are only allowed on private and presence channels",
            );
        }
        if event.len() > cfg.max_event_name_length
            || data.get().len() > cfg.max_event_payload_kb * 1024
        {
            return error(self, "Client event name or data over the app's limits");
        }
        let Some(id) = subscribed else {
            return error(
                self,
                &format!("Client event on {channel}, which this connection has not subscribed to"),
            );
        };
        if !p.client_events.try_take(1, Instant::now()) {
            self.stats.rate_limited += 1;
            self.reply(
                key,
                &pp::error(
                    Some(pp::code::CLIENT_EVENT_RATE),
                    "Client event rejected due to rate limit",
                ),
            );
            return;
        }
        let user_id = self.hub.member_of(key, id).map(str::to_string);
        let frame = ws::text(pp::client_event(event, channel, data, user_id.as_deref()).as_bytes());
        self.stats.client_events += 1;
        self.publish_frame(app, id, &frame, Some(key));
        if self.webhooks_on(app) {
            let socket_id = self.conns.get(key).map(|c| c.socket_id(self.process_id));
            let mut hook = serde_json::json!({
                "name": "client_event", "channel": channel, "event": event,
                // Pusher sends the event's data as a string: a string as itself, anything else
                // as its JSON text.
                "data": serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_string()), "socket_id": socket_id,
            });
            if let Some(u) = &user_id {
                hook["user_id"] = serde_json::Value::String(u.clone());
            }
            self.webhook(app, hook);
        }
        if let Some(scaling) = self.scaling.as_mut() {
            let app_id = self.apps.get(app).cfg.id.clone();
            let text = String::from_utf8_lossy(ws::payload(&frame)).into_owned();
            scaling.send(
                Some(&app_id),
                crate::scaling::Body::Frame {
                    channel: channel.to_string(),
                    text,
                },
            );
        }
        if !self.consoles.is_empty() {
            let socket_id = self.conns.get(key).map(|c| c.socket_id(self.process_id));
            self.console_event(
                "client_event",
                socket_id.as_deref(),
                Some(channel),
                Some(event),
                user_id.as_deref(),
            );
        }
    }

    /// Closes a connection that was required to sign in and has not.
    pub(crate) fn check_signin(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        let Some(p) = conn.pusher.as_ref() else {
            return false;
        };
        match p.signin_deadline {
            Some(deadline) if self.now >= deadline => {
                let why = "Connection not signed in within the time allowed";
                self.reply(key, &pp::error(Some(pp::code::UNAUTHORIZED), why));
                self.close_with(key, pp::code::UNAUTHORIZED, why);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn schedule_signin_check(&mut self, key: usize, after_secs: u32) {
        if let Some(conn) = self.conns.get_mut(key) {
            let due = self.now + after_secs;
            if due < conn.timer_due || conn.timer_due == 0 {
                conn.timer_due = self.timers.schedule(key, conn.id, due);
            }
        }
    }
}
