//! Users online: signed in (`pusher:signin`) on this node or another. A user comes online
//! with their first signed-in connection anywhere in the cluster and goes offline with their
//! last; the connections whose watchlist names them are told
//! (`pusher_internal:watchlist_events`), and a connection signing in with a watchlist is told
//! the state of each user on it.
//!
//! With Redis scaling, "signed in here" travels as the members of a reserved entry of each
//! node's replicated state ([`cluster::ONLINE`]): the replica's rule for presence members — an
//! event when a user's presence anywhere changes between nowhere and somewhere — is exactly the
//! rule for online and offline, including a dead node's users going offline once.

use super::cluster::{self, ONLINE, node::MemberChange};
use super::publication::Publication;
use super::state::{State, Via};
use crate::pusher::protocol as pp;

/// Whether `app` has watchlist events on.
fn enabled(st: &State, app: usize) -> bool {
    app < st.apps.len() && st.apps.get(app).cfg.watchlist_events
}

/// Whether `user` has a signed-in connection anywhere in the cluster.
fn is_online(st: &State, app: usize, user: &str) -> bool {
    !st.sessions.of_user(app, user, Via::Signin).is_empty()
        || cluster::online_elsewhere(st, app, user)
}

/// `user`'s first signed-in connection here opened.
pub fn came_online(st: &mut State, app: usize, user: &str) {
    changed(st, app, MemberChange::Joined { user, info: None });
}

/// `user`'s last signed-in connection here closed (or signed in as someone else).
pub fn went_offline(st: &mut State, app: usize, user: &str) {
    changed(st, app, MemberChange::Left { user });
}

fn changed(st: &mut State, app: usize, change: MemberChange<'_>) {
    if !enabled(st, app) {
        return;
    }
    let (user, online) = match change {
        MemberChange::Joined { user, .. } => (user, true),
        MemberChange::Left { user } => (user, false),
    };
    let app_id = &st.apps.get(app).cfg.id;
    let elsewhere = st
        .cluster
        .as_mut()
        .is_some_and(|c| c.presence_news(app_id, ONLINE, change, &mut st.effects.link));
    if !elsewhere {
        st.publish(Publication::Watch {
            app,
            user: user.to_string(),
            online,
        });
    }
}

/// Connection `key` signed in to `app` with `list` as its watchlist: what it watches from now
/// on, and the frame telling it who of them is online and who is not (`None` for no list).
pub fn watch(st: &mut State, key: usize, app: usize, list: Vec<String>) -> Option<String> {
    st.watchers.forget(key);
    if !enabled(st, app) || list.is_empty() {
        return None;
    }
    let (online, offline): (Vec<&str>, Vec<&str>) = list
        .iter()
        .map(String::as_str)
        .partition(|u| is_online(st, app, u));
    let text = pp::watchlist_events(&online, &offline);
    st.watchers.set(key, app, list);
    Some(text)
}
