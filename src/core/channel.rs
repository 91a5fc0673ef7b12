//! The simple protocols: the channel protocol (`{"action":"subscribe","channel":"c"}`, as
//! cadsock and FrankenPHP realtime speak it) and raw mode (CarbonPHP's: messages go to the
//! application, global lines come back).

use log::debug;

use super::cluster::sequence;
use super::history::{Position, Recovery};
use super::peer::Peer;
use super::state::State;
use super::{held, membership, routing};
use crate::channel_protocol as proto;
use crate::pusher::protocol as pp;

pub fn on_text(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let socket_id = peer.socket_id(st.process_id);
    match proto::parse_with_options(text) {
        Ok((proto::Request::Subscribe(name), options)) => {
            let positioned = options.positions || options.recover.is_some();
            // History and a cache channel's event may come from other loops: here first.
            let shared = positioned || pp::is_cache_channel(&name);
            if shared && held::hold_message(st, peer, text) {
                return;
            }
            if positioned && sequence::park(st, peer, 0, &name, text) {
                return;
            }
            subscribe(st, peer, &name, &socket_id, options)
        }
        Ok((proto::Request::Unsubscribe(name), _)) => {
            membership::leave(st, peer.key, peer.conn, &name);
            peer.reply(&proto::unsubscribed(&name));
        }
        Ok((proto::Request::Ping, _)) => peer.reply(&proto::pong(&socket_id)),
        Err(message) => peer.reply(&proto::error(&message)),
    }
}

fn subscribe(
    st: &mut State,
    peer: &mut Peer<'_>,
    name: &str,
    socket_id: &str,
    options: proto::Options,
) {
    if pp::channel_kind(name) != pp::ChannelKind::Public {
        // private-, presence- and encrypted channels carry what only authorized Pusher clients
        // may see; the channel protocol has no way to authorize.
        let msg = format!(
            "\"{name}\" needs authorization: subscribe through the Pusher protocol at /app/{{key}}"
        );
        return peer.reply(&proto::error(&msg));
    }
    if membership::over_limit(st, peer.key, 0, name) {
        let msg = format!(
            "cannot subscribe to \"{name}\": already in max_channels_per_connection ({}) channels",
            st.cfg.max_channels_per_connection
        );
        return peer.reply(&proto::error(&msg));
    }
    if options.positions {
        peer.conn.positions = true;
    }
    membership::join(st, peer.key, peer.conn, 0, name);
    let from = (options.recover).map(|(epoch, offset)| Position { epoch, offset });
    let recovered = from.as_ref().map(|from| replay(st, peer, name, from));
    // A client with positions learns where it starts, even before anything is published.
    let rule = st.apps.get(0).cfg.history_rule(name);
    let at = match rule {
        Some(r) if peer.conn.positions => {
            let ttl = std::time::Duration::from_secs(r.ttl_secs);
            Some(st.history.touch(0, name, r.size, ttl))
        }
        _ => st.history.position(0, name),
    };
    let at = match (at, recovered) {
        (Some(here), Some(true)) => Some(super::resume::furthest(here, from)),
        (at, _) => at,
    };
    let at = at.as_ref().map(|p| (p.epoch.as_str(), p.offset));
    peer.reply(&proto::subscribed_at(name, socket_id, at, recovered));
}

/// Gives a client coming back what it missed on `name` since `from`, in order, before any
/// live message; whether that was everything.
fn replay(st: &mut State, peer: &mut Peer<'_>, name: &str, from: &Position) -> bool {
    match st.history.recover(0, name, from, st.clock.now()) {
        Recovery::Complete(missed) => {
            st.stats.history_replayed += missed.len() as u64;
            for kept in missed {
                let frame = if peer.conn.positions {
                    let text = proto::positioned(name, &kept.data(), &from.epoch, kept.offset);
                    crate::ws::text(text.as_bytes())
                } else {
                    kept.plain
                };
                peer.send(frame);
            }
            true
        }
        Recovery::Lost => false,
    }
}

pub fn on_binary(peer: &mut Peer<'_>) {
    peer.reply(&proto::error(
        "binary messages are not supported; send JSON text",
    ));
}

pub fn on_raw_text(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    if text == "ping" {
        // Answered here, as CarbonPHP does: no process for a keep-alive.
        peer.reply("pong");
    } else if st.cfg.route.enabled() {
        routing::route_message(st, peer, text);
    } else {
        debug!(
            "connection {}: no application router configured; ignored a {}-byte message",
            peer.key,
            text.len()
        );
    }
}
