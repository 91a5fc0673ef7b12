//! The simple protocols: the channel protocol (`{"action":"subscribe","channel":"c"}`, as
//! cadsock and FrankenPHP realtime speak it) and raw mode (CarbonPHP's: messages go to the
//! application, global lines come back).

use log::debug;

use super::peer::Peer;
use super::state::State;
use super::{membership, routing};
use crate::channel_protocol as proto;
use crate::pusher::protocol as pp;

pub fn on_text(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let socket_id = peer.socket_id(st.process_id);
    match proto::parse(text) {
        Ok(proto::Request::Subscribe(name)) => subscribe(st, peer, &name, &socket_id),
        Ok(proto::Request::Unsubscribe(name)) => {
            membership::leave(st, peer.key, peer.conn, &name);
            peer.reply(&proto::unsubscribed(&name));
        }
        Ok(proto::Request::Ping) => peer.reply(&proto::pong(&socket_id)),
        Err(message) => peer.reply(&proto::error(&message)),
    }
}

fn subscribe(st: &mut State, peer: &mut Peer<'_>, name: &str, socket_id: &str) {
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
    membership::join(st, peer.key, peer.conn, 0, name);
    peer.reply(&proto::subscribed(name, socket_id));
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
