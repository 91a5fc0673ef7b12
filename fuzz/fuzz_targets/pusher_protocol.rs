//! Pusher protocol v7 client messages: `pusher::protocol::parse`, and the frames the server
//! builds from what it parsed (client events are forwarded with the client's raw `data`).
#![no_main]

use std::sync::OnceLock;

use ferrocast::pusher::protocol::{self as pp, ClientMessage};
use libfuzzer_sys::fuzz_target;

/// `FERROCAST_FUZZ_SKIP_KNOWN=1` steps around bugs already reported (kept as regression inputs in
/// fuzz/regressions/pusher_protocol/) so a campaign can look for new ones: client-event `data`
/// that serde_json's RawValue accepts but a full parse rejects (numbers out of range, e.g.
/// `1E99999`) is forwarded verbatim, so subscribers get a frame that is not valid JSON.
fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("FERROCAST_FUZZ_SKIP_KNOWN").is_some())
}

fn json_ok(s: &str) {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(s) {
        panic!("server frame is not JSON ({e}): {s:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match pp::parse(text) {
        Ok(ClientMessage::Subscribe { channel, .. })
        | Ok(ClientMessage::Unsubscribe { channel }) => {
            let _ = pp::channel_kind(&channel);
            let _ = pp::is_cache_channel(&channel);
            json_ok(&pp::subscription_succeeded(&channel, None));
            json_ok(&pp::subscription_error(&channel, "AuthError", "x", 401));
        }
        Ok(ClientMessage::ClientEvent {
            event,
            channel,
            data,
        }) => {
            assert!(event.starts_with("client-"));
            if skip_known() && serde_json::from_str::<serde_json::Value>(data.get()).is_err() {
                return;
            }
            json_ok(&pp::client_event(&event, &channel, data, Some("u")));
            json_ok(&pp::client_event(&event, &channel, data, None));
        }
        Ok(ClientMessage::Signin { user_data, .. }) => json_ok(&pp::signin_success(&user_data)),
        Ok(ClientMessage::Other(e)) => json_ok(&pp::event(&e, "c", "d", None)),
        Ok(ClientMessage::Ping) | Ok(ClientMessage::Pong) => {}
        Err(e) => json_ok(&pp::error(None, &e)),
    }
});
