//! `pusher_internal:subscription_count` (pusher-js: `channel.bind("pusher:subscription_count")`):
//! a channel's subscribers are told its cluster-wide subscriber count when it changes, for apps
//! with `subscription_count_events`, never on presence channels (Pusher's rule: they have
//! `pusher:member_added`/`_removed` and a member count of their own).
//!
//! Throttled per channel ([`super::sub_counts::SubCounts`] keeps the time): the first change is
//! told at once (at the end of the turn, after the joining client's `subscription_succeeded`),
//! later ones at most once per `subscription_count_interval_ms`, and what is told is the count
//! at sending time, so the last word is always the latest value. A burst of a thousand joins
//! costs one frame per subscriber per interval, not a thousand.

use std::time::Duration;

use serde_json::json;

use super::apps::Apps;
use super::conns::Conns;
use super::state::State;
use super::{cluster, publish};
use crate::pusher::protocol::{self as pp, ChannelKind};
use crate::ws;

/// Whether `app` tells `channel`'s subscribers its count.
fn counted(st: &State, app: usize, channel: &str) -> bool {
    app < st.apps.len()
        && st.apps.get(app).cfg.subscription_count_events
        && !channel.starts_with('#')
        && matches!(
            pp::channel_kind(channel),
            ChannelKind::Public | ChannelKind::Private | ChannelKind::Encrypted
        )
}

fn interval(apps: &Apps, app: usize) -> Duration {
    let ms = if app < apps.len() {
        apps.get(app).cfg.subscription_count_interval_ms
    } else {
        0
    };
    Duration::from_millis(ms)
}

/// The number of subscribers of `app`'s `channel` changed, here or on another node.
pub fn changed(st: &mut State, app: usize, channel: &str) {
    if !counted(st, app, channel) {
        return;
    }
    let (now, interval) = (st.clock.now(), interval(&st.apps, app));
    st.sub_counts.changed((app, channel.into()), now, interval);
}

/// Tells the channels that are due. Called every turn (cheap when nothing is).
pub fn pump(conns: &mut Conns, st: &mut State) {
    if st.sub_counts.next_due().is_none_or(|d| d > st.clock.now()) {
        return;
    }
    let now = st.clock.now();
    let apps = &st.apps;
    let due = st.sub_counts.take_due(now, |app| interval(apps, app));
    for (app, channel) in due {
        // Settings may have changed since; nobody here: nobody to tell.
        if !counted(st, app, &channel) || st.hub.lookup(app, &channel).is_none() {
            continue;
        }
        let count = cluster::subscribers(st, app, &channel);
        let data = json!({ "subscription_count": count }).to_string();
        let text = pp::event("pusher_internal:subscription_count", &channel, &data, None);
        let frame = ws::text(text.as_bytes());
        publish::to_pusher_subscribers(conns, st, app, &channel, &frame);
    }
}
