//! What joining and leaving channels means beyond the hub: presence events for the other
//! subscribers, webhooks, the cluster's replica of this node, the console. Kept in step in
//! this one place, whoever caused the change (a client, a close, a shutdown).

use serde_json::{Value, json};

use super::cluster::node::MemberChange;
use super::conns::Conn;
use super::hub::{ChannelId, Left, Subscribed};
use super::publication::Publication;
use super::state::State;
use super::{console, count_news, hooks, notify};
use crate::pusher::protocol as pp;
use crate::ws;

/// Connection `key` (`conn_id`) subscribed to `name` of `app`: channel `id`, `created` when
/// it is new, `count` subscribers now.
fn joined(st: &mut State, key: usize, conn_id: u64, app: usize, name: &str, new: Subscribed) {
    let Subscribed::New { id, created, count } = new else {
        return;
    };
    if notify::enabled(st, app) {
        if created {
            notify::occupied(st, app, id, name);
        }
        // The channel's count everywhere: the other loops' (and nodes') subscribers too.
        let count = count + super::cluster::remote_channel(st, app, name).0;
        notify::count(st, app, name, count);
    }
    if let Some(cluster) = st.cluster.as_mut() {
        cluster.channel_changed(app, name);
    }
    count_news::changed(st, app, name);
    log::debug!("connection {key} subscribed to {name}");
    if st.consoles.listening() {
        let socket_id = st.socket_id_of(conn_id);
        console::event(st, "subscribed", Some(&socket_id), Some(name), None, None);
    }
}

/// Connection `conn_id` left a channel (unsubscribed, or closed).
pub fn left(st: &mut State, conn_id: u64, left: Left) {
    let app = left.app;
    if st.consoles.listening() {
        let socket_id = st.socket_id_of(conn_id);
        console::event(
            st,
            "unsubscribed",
            Some(&socket_id),
            Some(&left.channel),
            None,
            None,
        );
    }
    if let Some(user) = &left.member_removed {
        member_removed(st, app, &left.channel, user);
    }
    if let Some(cluster) = st.cluster.as_mut() {
        cluster.channel_changed(app, &left.channel);
    }
    count_news::changed(st, app, &left.channel);
    if left.vacated() {
        // A stream kept only for its subscribers (nothing in it) goes with the last of them.
        st.history.vacated(app as u16, &left.channel);
    }
    if notify::enabled(st, app) {
        // The channel's count everywhere: other loops (and nodes) may still hold it when this
        // one let its last subscriber go.
        let remote = super::cluster::remote_channel(st, app, &left.channel).0;
        if left.vacated() {
            notify::vacated(st, app, &left.channel, left.occupied_at);
        }
        if !left.vacated() || remote > 0 {
            notify::count(st, app, &left.channel, left.count + remote);
        }
    }
}

/// A user's first connection joined a presence channel here: `member_added` goes to the
/// others, unless the user was already present through another node.
pub fn member_added(
    st: &mut State,
    key: usize,
    app: usize,
    id: ChannelId,
    user: &str,
    info: Option<&Value>,
) {
    let Some(name) = st.hub.channel(app, id).map(|c| c.name().to_string()) else {
        return;
    };
    let app_id = &st.apps.get(app).cfg.id;
    let elsewhere = st.cluster.as_mut().is_some_and(|c| {
        c.presence_news(
            app_id,
            &name,
            MemberChange::Joined { user, info },
            &mut st.effects.link,
        )
    });
    if elsewhere {
        return;
    }
    let frame = ws::text(pp::member_added(&name, user, info).as_bytes());
    st.publish(Publication::frame(app, &name, frame, Some(key), false));
    console::event(st, "member_added", None, Some(&name), None, Some(user));
    notify::emit(
        st,
        app,
        json!({"name": "member_added", "channel": name, "user_id": user}),
    );
}

/// A presence channel lost the last connection of `user` here.
pub fn member_removed(st: &mut State, app: usize, name: &str, user: &str) {
    let app_id = &st.apps.get(app).cfg.id;
    let elsewhere = st.cluster.as_mut().is_some_and(|c| {
        c.presence_news(
            app_id,
            name,
            MemberChange::Left { user },
            &mut st.effects.link,
        )
    });
    if elsewhere {
        return;
    }
    let frame = ws::text(pp::member_removed(name, user).as_bytes());
    st.publish(Publication::frame(app, name, frame, None, false));
    console::event(st, "member_removed", None, Some(name), None, Some(user));
    notify::emit(
        st,
        app,
        json!({"name": "member_removed", "channel": name, "user_id": user}),
    );
}

/// A user's connection count here changed (for the cluster's heartbeat key).
pub fn user_changed(st: &mut State, app: usize, user: &str) {
    if let Some(cluster) = st.cluster.as_mut() {
        cluster.user_changed(app, user);
    }
}

/// Subscribes connection `key` to `name` of its app, with every notice that goes with it.
/// Returns the channel and whether the subscription is new.
pub fn join(st: &mut State, key: usize, conn: &Conn, app: usize, name: &str) -> (ChannelId, bool) {
    match st.hub.subscribe(key, name) {
        Subscribed::Already(id) => (id, false),
        new @ Subscribed::New { id, .. } => {
            joined(st, key, conn.id, app, name, new);
            hooks::subscription(st, conn, name, true);
            (id, true)
        }
    }
}

/// Unsubscribes connection `key` from `name` (nothing when it was not subscribed).
pub fn leave(st: &mut State, key: usize, conn: &Conn, name: &str) {
    if let Some(gone) = st.hub.unsubscribe(key, name) {
        left(st, conn.id, gone);
        hooks::subscription(st, conn, name, false);
    }
}

/// Whether subscribing to `name` would take the connection past `max_channels_per_connection`.
pub fn over_limit(st: &State, key: usize, app: usize, name: &str) -> bool {
    let already = st
        .hub
        .lookup(app, name)
        .is_some_and(|id| st.hub.is_subscribed(key, id));
    !already && st.hub.subscriptions(key) >= st.cfg.max_channels_per_connection
}
